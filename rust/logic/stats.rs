// SPDX-License-Identifier: GPL-2.0

//! Per-CPU statistics: what counts as local, and the `/proc/net/fastsocket` table.
//!
//! Pure logic, no `kernel::` imports: also built and tested on the host (`rust/logic`).

use core::fmt::{self, Write};

/// Whether an accept is local: the handshake completed on the CPU that accepts.
///
/// `incoming_cpu` is the CPU that last processed the child's packets, `None` if unknown.
pub fn is_local(incoming_cpu: Option<u32>, accept_cpu: u32) -> bool {
    incoming_cpu == Some(accept_cpu)
}

/// Counts of one CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// Connections accepted on this CPU.
    pub accepts: u64,
    /// Of those, the ones whose handshake completed on this CPU.
    pub local: u64,
    /// Connections waiting now in the accept queues of in-scope listeners whose handshake
    /// completed on this CPU (a gauge, read from the queues, not a counter).
    pub queued: u64,
    /// Handshakes completed on this CPU that woke a waiter on this CPU first.
    pub wake_local: u64,
    /// Handshakes completed on this CPU with no waiter here that woke a task blocked in
    /// `accept()` or `epoll_wait()` elsewhere onto this CPU.
    pub wake_pulled: u64,
    /// Handshakes completed on this CPU with no waiter here: woken in the stock order.
    pub wake_fallback: u64,
    /// Handshakes completed on this CPU with no waiter here, but the worker that accepted here
    /// lately still here (busy) or displaced from here: the other workers' wake-up was held
    /// back for a bound, for a worker to come back.
    pub wake_held: u64,
    /// Of the wake-ups held on this CPU (`wake_held`), those the hold's timer did not deliver
    /// because their connections were taken before it ran (by the worker they were held for,
    /// as a rule): a worker elsewhere spared a wake-up that would have found nothing.
    pub wake_dropped: u64,
    /// Of the wake-ups held on this CPU (`wake_held`), those the hold's timer delivered by
    /// moving a task blocked in `accept()` or `epoll_wait()` elsewhere onto this CPU, which
    /// was idle by then (`listen_pull`): how waiters that gathered on another CPU are spread.
    pub wake_held_pulled: u64,
    /// Accepts on this CPU that took a connection from this CPU's queue of its listener.
    pub queue_local: u64,
    /// Accepts on this CPU that took (stole) a connection from another CPU's queue.
    pub queue_steal: u64,
    /// Connections of this CPU's queues that another CPU's accept took (stole).
    pub queue_stolen: u64,
    /// Handshakes completed on this CPU, for a listener with per-CPU queues, whose connection
    /// went to the listener's own queue instead (module off for it, TCP Fast Open, closing).
    pub queue_fallback: u64,
    /// Local port searches (autobinding `connect()`, `bind()` to port 0) on this CPU that got
    /// a port this CPU owns (Receive Flow Deliver).
    pub rfd_ports: u64,
    /// Local port searches on this CPU that found no free port this CPU owns and went on with
    /// the stock search.
    pub rfd_fallback: u64,
    /// Segments whose RPS decision on this CPU steered them to the CPU owning their
    /// destination port, another one.
    pub rfd_steered: u64,
    /// Segments whose RPS decision on this CPU found this CPU owning their destination port.
    pub rfd_local: u64,
    /// Sockets created on this CPU that got a closed socket's dentry and inode from the
    /// module's cache (lightweight socket files).
    pub vfs_reused: u64,
    /// Sockets created on this CPU, with the cache on, that found no reusable pair in it and
    /// got a new inode and dentry.
    pub vfs_new: u64,
    /// Closed sockets whose dentry and inode this CPU's cache kept for reuse (the cache is
    /// shared by every namespace: so is this count).
    pub vfs_kept: u64,
    /// Pairs waiting in this CPU's cache now (a gauge shared by every namespace, not a
    /// counter).
    pub vfs_idle: u64,
}

impl CpuStats {
    /// Accepts whose handshake completed on another CPU (stolen from it).
    pub fn remote(&self) -> u64 {
        self.accepts.saturating_sub(self.local)
    }

    /// The value of column `name` of [`COLUMNS`] (`remote` is derived), `None` for `cpu` or
    /// an unknown name.
    pub fn get(&self, name: &str) -> Option<u64> {
        match name {
            "remote" => Some(self.remote()),
            _ => self.counts().find(|(n, _)| *n == name).map(|(_, v)| *v),
        }
    }

    /// The stored counts with their column names, in table order.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, &u64)> {
        counts!(self, &).into_iter()
    }
}

/// The stored counts of a [`CpuStats`] `$s` with their column names, in table order:
/// `counts!(s, &)` or `counts!(s, &mut)`, one list of fields for readers and writers.
macro_rules! counts {
    ($s:expr, $($r:tt)+) => {
        [
            ("accepts", $($r)+ $s.accepts),
            ("local", $($r)+ $s.local),
            ("queued", $($r)+ $s.queued),
            ("wake_local", $($r)+ $s.wake_local),
            ("wake_pulled", $($r)+ $s.wake_pulled),
            ("wake_fallback", $($r)+ $s.wake_fallback),
            ("wake_held", $($r)+ $s.wake_held),
            ("wake_dropped", $($r)+ $s.wake_dropped),
            ("wake_held_pulled", $($r)+ $s.wake_held_pulled),
            ("queue_local", $($r)+ $s.queue_local),
            ("queue_steal", $($r)+ $s.queue_steal),
            ("queue_stolen", $($r)+ $s.queue_stolen),
            ("queue_fallback", $($r)+ $s.queue_fallback),
            ("rfd_ports", $($r)+ $s.rfd_ports),
            ("rfd_fallback", $($r)+ $s.rfd_fallback),
            ("rfd_steered", $($r)+ $s.rfd_steered),
            ("rfd_local", $($r)+ $s.rfd_local),
            ("vfs_reused", $($r)+ $s.vfs_reused),
            ("vfs_new", $($r)+ $s.vfs_new),
            ("vfs_kept", $($r)+ $s.vfs_kept),
            ("vfs_idle", $($r)+ $s.vfs_idle),
        ]
    };
}
pub(crate) use counts;

/// The columns of `/proc/net/fastsocket`, in order: the CPU, then one per count of
/// [`CpuStats`] (`remote` derived from `accepts` and `local`). Readers (the test runner,
/// `fastsocket-stat`) find columns by these names, as later features add columns.
pub const COLUMNS: [&str; 23] = [
    "cpu",
    "accepts",
    "local",
    "remote",
    "queued",
    "wake_local",
    "wake_pulled",
    "wake_fallback",
    "wake_held",
    "wake_dropped",
    "wake_held_pulled",
    "queue_local",
    "queue_steal",
    "queue_stolen",
    "queue_fallback",
    "rfd_ports",
    "rfd_fallback",
    "rfd_steered",
    "rfd_local",
    "vfs_reused",
    "vfs_new",
    "vfs_kept",
    "vfs_idle",
];

/// Writes the table of `/proc/net/fastsocket`: a header ([`COLUMNS`]), then one row per CPU.
///
/// Columns are separated by spaces and named in the header; readers should find columns by
/// name, as later features add columns.
pub fn write_table(
    out: &mut dyn Write,
    rows: impl Iterator<Item = (u32, CpuStats)>,
) -> fmt::Result {
    for (i, name) in COLUMNS.iter().enumerate() {
        out.write_str(if i == 0 { "" } else { " " })?;
        out.write_str(name)?;
    }
    out.write_str("\n")?;
    for (cpu, c) in rows {
        write!(out, "{cpu}")?;
        for name in &COLUMNS[1..] {
            write!(out, " {}", c.get(name).unwrap_or(0))?;
        }
        out.write_str("\n")?;
    }
    Ok(())
}
