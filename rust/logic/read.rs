// SPDX-License-Identifier: GPL-2.0

//! Reading the table of `/proc/net/fastsocket` back (the test runner): what a reader needs
//! beyond [`stats`](crate::stats), which the module writes the table with. Host only: the
//! module does not include this file.

use crate::stats::{counts, CpuStats};

/// The columns of [`COLUMNS`](crate::stats::COLUMNS) that are gauges (a value now, which may
/// go down), not counters.
pub const GAUGES: [&str; 2] = ["queued", "vfs_idle"];

/// The columns of the socket inode cache. They do not count the namespace's connections:
/// `vfs_kept` and `vfs_idle` are the cache's, one per CPU for the whole machine (the same in
/// every namespace, moving whatever its knobs say), and `vfs_reused` and `vfs_new` count the
/// sockets created by the namespace's tasks, which may be sockets of another namespace (a
/// listener of another namespace accepted from a task of this one).
pub const CACHE_COLUMNS: [&str; 4] = ["vfs_reused", "vfs_new", "vfs_kept", "vfs_idle"];

/// A reader's operations on one CPU's counts.
pub trait Counts {
    /// All handshakes counted by the wake-up path.
    fn wakes(&self) -> u64;

    /// The stored count of column `name` (every column of
    /// [`COLUMNS`](crate::stats::COLUMNS) but `cpu` and the derived `remote`), `None` for
    /// another name.
    fn get_mut(&mut self, name: &str) -> Option<&mut u64>;

    /// [`CpuStats::counts`], writable, in the same order.
    fn counts_mut(&mut self) -> impl Iterator<Item = (&'static str, &mut u64)>;

    /// The counts of the namespace's connections: these counts with the [`CACHE_COLUMNS`]
    /// zeroed.
    fn connections(&self) -> Self;
}

impl Counts for CpuStats {
    fn wakes(&self) -> u64 {
        self.wake_local + self.wake_pulled + self.wake_fallback + self.wake_held
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut u64> {
        self.counts_mut().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn counts_mut(&mut self) -> impl Iterator<Item = (&'static str, &mut u64)> {
        counts!(self, &mut).into_iter()
    }

    fn connections(&self) -> Self {
        let mut only = *self;
        for (name, count) in only.counts_mut() {
            if CACHE_COLUMNS.contains(&name) {
                *count = 0;
            }
        }
        only
    }
}
