// SPDX-License-Identifier: GPL-2.0

//! Tasks named by their pid.
//!
//! A pid is a name, not a reference: by the time it is looked up the task may have exited and
//! the number may name another task. Answers given from one are hints for placement, never for
//! correctness.

use super::rcu;
use core::ptr;
use kernel::bindings;

/// The pid (thread id, in the initial pid namespace) of the calling task.
pub(crate) fn current_pid() -> i32 {
    kernel::current!().pid()
}

/// The CPU the task with pid `pid` (initial pid namespace) runs, waits to run or last ran on,
/// and whether it is runnable (running or waiting to run, not asleep) as it was looked up, if
/// that task exists.
pub(crate) fn state_of(pid: i32) -> Option<(u32, bool)> {
    if pid <= 0 {
        return None;
    }
    rcu::read_section(|_| {
        // SAFETY: `init_pid_ns` lives for the kernel's lifetime; `find_pid_ns()` only reads
        // the namespace's pid table under RCU, which the section holds.
        let found = unsafe { bindings::find_pid_ns(pid, ptr::addr_of_mut!(bindings::init_pid_ns)) };
        if found.is_null() {
            return None;
        }
        // SAFETY: `found` is a live `struct pid` for the rest of the RCU section.
        let task = unsafe { bindings::pid_task(found, bindings::pid_type_PIDTYPE_PID) };
        if task.is_null() {
            return None;
        }
        // SAFETY: A task found through its pid under RCU is not freed before the section ends;
        // `task_cpu()` only reads one of its fields.
        let cpu = unsafe { bindings::task_cpu(task) };
        // SAFETY: As above; `__state` is written concurrently by its task and its wakers, so it
        // is read once, volatile, as `task_is_running()` does with `READ_ONCE()`.
        let state = unsafe { ptr::read_volatile(ptr::addr_of!((*task).__state)) };
        Some((cpu, state == bindings::TASK_RUNNING))
    })
}
