// SPDX-License-Identifier: GPL-2.0

//! Per-CPU accept counters of one network namespace.

use crate::logic::stats::{is_local, AcceptCounts};
use crate::sys::percpu::PerCpu;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;

/// Counters of one CPU. Written by that CPU (in practice; atomics keep a migrated writer
/// correct), read by anyone.
#[derive(Default)]
pub(crate) struct CpuCounters {
    accepts: AtomicU64,
    local: AtomicU64,
}

/// Per-CPU counters of one namespace.
pub(crate) struct Counters(PerCpu<CpuCounters>);

impl Counters {
    /// Zeroed counters for every possible CPU.
    pub(crate) fn new() -> Result<Self> {
        Ok(Self(PerCpu::new()?))
    }

    /// Counts an accept on `cpu` of a child whose handshake completed on `incoming_cpu`.
    pub(crate) fn record_accept(&self, cpu: u32, incoming_cpu: Option<u32>) {
        let Some(c) = self.0.get(cpu) else { return };
        c.accepts.fetch_add(1, Ordering::Relaxed);
        if is_local(incoming_cpu, cpu) {
            c.local.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A snapshot of every possible CPU's counters.
    pub(crate) fn snapshot(&self) -> impl Iterator<Item = (u32, AcceptCounts)> + '_ {
        self.0.iter().map(|(cpu, c)| {
            (
                cpu,
                AcceptCounts {
                    accepts: c.accepts.load(Ordering::Relaxed),
                    local: c.local.load(Ordering::Relaxed),
                },
            )
        })
    }
}
