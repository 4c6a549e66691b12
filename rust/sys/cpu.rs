// SPDX-License-Identifier: GPL-2.0

//! CPU numbers.

use core::{ffi::c_ulong, mem};
use kernel::bindings;

/// The CPU the caller runs on.
///
/// The caller may migrate right after reading it; use it for statistics and placement hints,
/// never as a lock.
pub(crate) fn current() -> u32 {
    // SAFETY: `raw_smp_processor_id()` only reads a per-CPU variable of the running CPU.
    unsafe { bindings::raw_smp_processor_id() }
}

/// The number of CPU ids the kernel may use: every possible CPU is below it.
pub(crate) fn nr_ids() -> u32 {
    // SAFETY: `nr_cpu_ids` is set once during early boot and only read afterwards.
    unsafe { bindings::nr_cpu_ids }
}

/// Whether `cpu` is a possible CPU, i.e. has per-CPU storage.
///
/// Read in place, as `cpu_possible()` does: this runs for every connection, and a call to the
/// C helper costs more than the test.
pub(crate) fn is_possible(cpu: u32) -> bool {
    const WORDS: usize = mem::size_of::<bindings::cpumask>() / mem::size_of::<c_ulong>();
    let (word, bit) = ((cpu / c_ulong::BITS) as usize, cpu % c_ulong::BITS);
    if cpu >= nr_ids() || word >= WORDS {
        return false;
    }
    // SAFETY: `__cpu_possible_mask` is set during early boot and only read afterwards; `word`
    // is within the array (checked above), and indexing the place reads that one word without
    // taking a reference to the mask.
    let w = unsafe { bindings::__cpu_possible_mask.bits[word] };
    (w >> bit) & 1 != 0
}

/// The possible CPUs, in ascending order.
pub(crate) fn possible() -> impl Iterator<Item = u32> {
    (0..nr_ids()).filter(|&cpu| is_possible(cpu))
}
