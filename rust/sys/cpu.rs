// SPDX-License-Identifier: GPL-2.0

//! CPU numbers.

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
pub(crate) fn is_possible(cpu: u32) -> bool {
    // SAFETY: `cpu_possible()` tests a bit in a mask that is fixed after boot; it accepts any
    // value below `nr_cpu_ids`, which we check first.
    cpu < nr_ids() && unsafe { bindings::cpu_possible(cpu) }
}

/// The possible CPUs, in ascending order.
pub(crate) fn possible() -> impl Iterator<Item = u32> {
    (0..nr_ids()).filter(|&cpu| is_possible(cpu))
}
