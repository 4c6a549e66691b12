// SPDX-License-Identifier: GPL-2.0

//! The kernel's tick clock.

use kernel::bindings;

/// The current time in jiffies.
pub(crate) fn jiffies() -> u64 {
    // SAFETY: `jiffies` is a word-sized counter updated by the timer interrupt; a volatile read
    // of it is what the C `jiffies` macro does.
    unsafe { core::ptr::read_volatile(&raw const bindings::jiffies) as u64 }
}

/// `ms` milliseconds in jiffies, rounded up.
pub(crate) fn ms_to_jiffies(ms: u32) -> u64 {
    // SAFETY: A pure conversion.
    unsafe { bindings::__msecs_to_jiffies(ms) as u64 }
}
