// SPDX-License-Identifier: GPL-2.0

//! The kernel's tick clock.
//!
//! Jiffies are one machine word (`unsigned long`) that wraps; like the kernel's `time_after()`,
//! compare them only through [`is_after_eq`] or a wrapping difference, never as plain numbers.

use kernel::bindings;

/// The current time in jiffies.
pub(crate) fn jiffies() -> usize {
    // SAFETY: `jiffies` is a word-sized counter updated by the timer interrupt; a volatile read
    // of it is what the C `jiffies` macro does.
    unsafe { core::ptr::read_volatile(&raw const bindings::jiffies) as usize }
}

/// `ms` milliseconds in jiffies, rounded up.
pub(crate) fn ms_to_jiffies(ms: u32) -> usize {
    const HZ: u32 = bindings::CONFIG_HZ;
    // Where a jiffy is a whole number of milliseconds (HZ 100, 250, 1000...), what
    // `__msecs_to_jiffies()` computes, in place: it runs for every connection.
    if HZ <= 1000 && 1000 % HZ == 0 && ms <= i32::MAX as u32 {
        let per = 1000 / HZ;
        return (ms.div_ceil(per)) as usize;
    }
    // SAFETY: A pure conversion.
    unsafe { bindings::__msecs_to_jiffies(ms) as usize }
}

/// Whether time `a` is at or after time `b` (`time_after_eq(a, b)`): valid while the two are
/// less than half the word's range apart.
pub(crate) fn is_after_eq(a: usize, b: usize) -> bool {
    a.wrapping_sub(b) as isize >= 0
}
