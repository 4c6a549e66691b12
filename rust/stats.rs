// SPDX-License-Identifier: GPL-2.0

//! Per-CPU counters of one network namespace.

use crate::logic::stats::{is_local, CpuStats};
use crate::sys::percpu::PerCpu;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;

/// Counters of one CPU. Written on that CPU (atomics keep a migrated writer correct), read by
/// anyone.
#[derive(Default)]
pub(crate) struct CpuCounters {
    accepts: AtomicU64,
    local: AtomicU64,
    wake_local: AtomicU64,
    wake_pulled: AtomicU64,
    wake_fallback: AtomicU64,
    wake_held: AtomicU64,
    queue_local: AtomicU64,
    queue_steal: AtomicU64,
    queue_stolen: AtomicU64,
    queue_fallback: AtomicU64,
    rfd_searches: AtomicU64,
    rfd_fallback: AtomicU64,
    rfd_steered: AtomicU64,
    rfd_local: AtomicU64,
    vfs_reused: AtomicU64,
    vfs_new: AtomicU64,
}

/// How a listener's waiters were woken for a connection that completed on some CPU.
pub(crate) enum Wake {
    /// A waiter on that CPU was tried first.
    Local,
    /// No waiter there: a task blocked in `accept()` or `epoll_wait()` elsewhere was woken there.
    Pulled,
    /// No waiter there: the stock order.
    Fallback,
    /// No waiter there, but the worker that accepted there lately is still there (or displaced
    /// from there): the others were held back.
    Held,
}

/// Per-CPU counters of one namespace.
pub(crate) struct Counters(PerCpu<CpuCounters>);

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Zeroed counters for every possible CPU.
    pub(crate) fn new() -> Result<Self> {
        Ok(Self(PerCpu::new()?))
    }

    /// Counts an accept on `cpu` of a child whose handshake completed on `incoming_cpu`.
    pub(crate) fn record_accept(&self, cpu: u32, incoming_cpu: Option<u32>) {
        let Some(c) = self.0.get(cpu) else { return };
        bump(&c.accepts);
        if is_local(incoming_cpu, cpu) {
            bump(&c.local);
        }
    }

    /// Counts how the waiters were woken for a handshake completed on `cpu`.
    pub(crate) fn record_wake(&self, cpu: u32, wake: Wake) {
        let Some(c) = self.0.get(cpu) else { return };
        bump(match wake {
            Wake::Local => &c.wake_local,
            Wake::Pulled => &c.wake_pulled,
            Wake::Fallback => &c.wake_fallback,
            Wake::Held => &c.wake_held,
        });
    }

    /// Counts a connection that completed on `cpu` and joined that CPU's queue of its
    /// listener (`queued`), or went to the listener's own queue instead.
    pub(crate) fn record_queue_add(&self, cpu: u32, queued: bool) {
        if let (Some(c), false) = (self.0.get(cpu), queued) {
            bump(&c.queue_fallback);
        }
    }

    /// Counts an accept on `cpu` that took a connection from CPU `from`'s queue.
    pub(crate) fn record_queue_take(&self, cpu: u32, from: u32) {
        if cpu == from {
            if let Some(c) = self.0.get(cpu) {
                bump(&c.queue_local);
            }
            return;
        }
        if let Some(c) = self.0.get(cpu) {
            bump(&c.queue_steal);
        }
        if let Some(c) = self.0.get(from) {
            bump(&c.queue_stolen);
        }
    }

    /// Counts a local port search (`connect()`, `bind()` to port 0) that started on `cpu`
    /// with the ports `cpu` owns.
    pub(crate) fn record_rfd_search(&self, cpu: u32) {
        if let Some(c) = self.0.get(cpu) {
            bump(&c.rfd_searches);
        }
    }

    /// Counts a local port search on `cpu` that found no free port of `cpu`'s and went on
    /// with the stock search.
    pub(crate) fn record_rfd_fallback(&self, cpu: u32) {
        if let Some(c) = self.0.get(cpu) {
            bump(&c.rfd_fallback);
        }
    }

    /// Counts a segment whose RPS decision on `cpu` chose `target`, its port's owner.
    pub(crate) fn record_rfd_steer(&self, cpu: u32, target: u32) {
        if let Some(c) = self.0.get(cpu) {
            bump(if cpu == target {
                &c.rfd_local
            } else {
                &c.rfd_steered
            });
        }
    }

    /// Counts a socket created on `cpu` with the pair cache on: `reused` if it got a pair
    /// from the cache.
    pub(crate) fn record_vfs_get(&self, cpu: u32, reused: bool) {
        if let Some(c) = self.0.get(cpu) {
            bump(if reused { &c.vfs_reused } else { &c.vfs_new });
        }
    }

    /// A snapshot of every possible CPU's counters.
    pub(crate) fn snapshot(&self) -> impl Iterator<Item = (u32, CpuStats)> + '_ {
        self.0.iter().map(|(cpu, c)| {
            let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
            (
                cpu,
                CpuStats {
                    accepts: get(&c.accepts),
                    local: get(&c.local),
                    // A gauge read from the queues, not counted here.
                    queued: 0,
                    wake_local: get(&c.wake_local),
                    wake_pulled: get(&c.wake_pulled),
                    wake_fallback: get(&c.wake_fallback),
                    wake_held: get(&c.wake_held),
                    // Counted by the hold's timer (`CpuListen`), not here.
                    wake_dropped: 0,
                    wake_held_pulled: 0,
                    queue_local: get(&c.queue_local),
                    queue_steal: get(&c.queue_steal),
                    queue_stolen: get(&c.queue_stolen),
                    queue_fallback: get(&c.queue_fallback),
                    rfd_ports: get(&c.rfd_searches).saturating_sub(get(&c.rfd_fallback)),
                    rfd_fallback: get(&c.rfd_fallback),
                    rfd_steered: get(&c.rfd_steered),
                    rfd_local: get(&c.rfd_local),
                    vfs_reused: get(&c.vfs_reused),
                    vfs_new: get(&c.vfs_new),
                    // Read from the cache, shared by every namespace: not counted here.
                    vfs_kept: 0,
                    vfs_idle: 0,
                },
            )
        })
    }
}
