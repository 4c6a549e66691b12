// SPDX-License-Identifier: GPL-2.0

//! What the module keeps in each network namespace: its knobs and counters.

use crate::listen::{queues::Listeners, CpuListen, ListenPorts};
use crate::logic::stats::write_table;
use crate::stats::Counters;
use crate::sys::{
    cpu, hooks,
    net::{Net, RcuReadSection, Sock},
    percpu::{Alloc, PerCpu},
    pernet::{per_net, NetData, NetInit, PerNetOf, PerNetRegistration},
    rcu,
    sysctl::{IntKnob, KnobValues, Knobs, NetFeature, Switch, TextKnob},
};
use crate::vfs;
use crate::HOOKS;
use core::fmt;
use kernel::{c_str, prelude::*};

/// Index of `net.fastsocket.enabled` in [`KNOBS`].
const ENABLED: usize = 0;
/// Index of `net.fastsocket.listen_scan` in [`KNOBS`].
const LISTEN_SCAN: usize = 1;
/// Index of `net.fastsocket.listen_hold_ms` in [`KNOBS`].
const LISTEN_HOLD_MS: usize = 2;
/// Index of `net.fastsocket.listen_pull` in [`KNOBS`].
const LISTEN_PULL: usize = 3;
/// Index of `net.fastsocket.listen_queues` in [`KNOBS`].
const LISTEN_QUEUES: usize = 4;
/// Index of `net.fastsocket.rfd` in [`KNOBS`].
const RFD: usize = 5;
/// Index of `net.fastsocket.vfs` in [`KNOBS`].
const VFS: usize = 6;
/// Index of `net.fastsocket.rfd_peer` in [`KNOBS`].
const RFD_PEER: usize = 7;

/// The integer knobs under `/proc/sys/net/fastsocket/` of each namespace.
static KNOBS: [IntKnob; 8] = [
    // The module's master switch in this namespace.
    IntKnob {
        name: c_str!("enabled"),
        min: 0,
        max: 1,
        default: 1,
    },
    // How many queued connections accept() scans for one that completed on its CPU (0: take
    // the oldest, as stock).
    IntKnob {
        name: c_str!("listen_scan"),
        min: 0,
        max: 4096,
        default: 64,
    },
    // How long the other workers may be left asleep for a busy worker on the CPU a connection
    // completed on (0: never).
    IntKnob {
        name: c_str!("listen_hold_ms"),
        min: 0,
        max: 1000,
        default: 5,
    },
    // Whether a task blocked in accept() or epoll_wait() may be woken onto the CPU a connection
    // completed on when no waiter sits there (only where its affinity allows it).
    IntKnob {
        name: c_str!("listen_pull"),
        min: 0,
        max: 1,
        default: 1,
    },
    // Whether listeners in scope get per-CPU accept queues (the local listen table) when they
    // start listening, and new connections join them (0: the listener's own queue only).
    IntKnob {
        name: c_str!("listen_queues"),
        min: 0,
        max: 1,
        default: 1,
    },
    // Receive Flow Deliver: whether connect() and bind() to port 0 prefer the ports the
    // running CPU owns, and segments to those ports are processed on their owner (see
    // Documentation/rfd.md).
    IntKnob {
        name: c_str!("rfd"),
        min: 0,
        max: 1,
        default: 1,
    },
    // Lightweight socket files: whether sockets created and closed by tasks of this namespace
    // reuse closed sockets' dentries and inodes kept per CPU (see Documentation/vfs.md).
    IntKnob {
        name: c_str!("vfs"),
        min: 0,
        max: 1,
        default: 1,
    },
    // Whether segments this namespace receives from a same-host peer namespace (over veth)
    // with Receive Flow Deliver on, from a port of that namespace's ephemeral range, are
    // processed where that namespace's RFD processes its end of the connection: both ends
    // of a same-host connection on the CPU that opened it (see Documentation/rfd.md).
    // Off by default: passive connections keep the stock steering.
    IntKnob {
        name: c_str!("rfd_peer"),
        min: 0,
        max: 1,
        default: 0,
    },
];

/// The features the kernel calls the module for only where they are on.
static SWITCHES: [Switch<8>; 3] = [
    Switch {
        feature: NetFeature::Rfd,
        on: rfd_on,
    },
    Switch {
        feature: NetFeature::Vfs,
        on: vfs_on,
    },
    Switch {
        feature: NetFeature::RfdPeer,
        on: rfd_peer_on,
    },
];

/// Receive Flow Deliver's hooks are called for a namespace only with `enabled` and `rfd` on
/// there, and only if the module registered them (several possible CPUs, see
/// `HOOKS_ONE_CPU`): elsewhere segments and port searches do not reach the module.
fn rfd_on(knobs: &KnobValues<'_, 8>) -> bool {
    knobs.get(ENABLED) != 0 && knobs.get(RFD) != 0 && cpu::nr_ids() > 1
}

/// Segments from a same-host peer's connections reach the module for a namespace only with
/// `enabled` and `rfd_peer` on there (and several possible CPUs); the module then answers as
/// the peer's namespace would, if that one has Receive Flow Deliver on.
fn rfd_peer_on(knobs: &KnobValues<'_, 8>) -> bool {
    knobs.get(ENABLED) != 0 && knobs.get(RFD_PEER) != 0 && cpu::nr_ids() > 1
}

/// The socket pair cache's hooks are called for the sockets a namespace's tasks create only
/// with `enabled` and `vfs` on there.
fn vfs_on(knobs: &KnobValues<'_, 8>) -> bool {
    knobs.get(ENABLED) != 0 && knobs.get(VFS) != 0
}

/// The module's state in one network namespace.
pub(crate) struct NetState {
    // Unregistered before the state is dropped (see `NetInit`): no write races with its
    // teardown.
    knobs: Knobs<8>,
    listen_ports: TextKnob<ListenPorts>,
    /// The listeners of this namespace that have per-CPU queues; dropping it gives their
    /// connections back to the listeners' own queues.
    pub(crate) listeners: Listeners,
    // After the knobs: dropping it wakes every held listener.
    listen_cpus: PerCpu<CpuListen>,
    /// Per-CPU counters, shown in `/proc/net/fastsocket`.
    pub(crate) counters: Counters,
}

impl NetState {
    /// The state of `net`, `None` while the module is not set up.
    pub(crate) fn of<'a>(net: &'a Net, rcu: &'a RcuReadSection<'_>) -> Option<&'a Self> {
        Self::per_net().get(net, rcu)
    }

    /// Whether the operator enabled the module in this namespace (`net.fastsocket.enabled`).
    pub(crate) fn enabled(&self) -> bool {
        self.knobs.get(ENABLED) != 0
    }

    /// Whether accept locality applies to `listener` (`net.fastsocket.listen_ports`).
    pub(crate) fn listen_applies(&self, listener: &Sock) -> bool {
        self.enabled() && self.listen_ports.get().contains(listener.local_port())
    }

    /// `net.fastsocket.listen_hold_ms`.
    pub(crate) fn listen_hold_ms(&self) -> u32 {
        self.knobs.get(LISTEN_HOLD_MS).unsigned_abs()
    }

    /// `net.fastsocket.listen_pull`.
    pub(crate) fn listen_pull(&self) -> bool {
        self.knobs.get(LISTEN_PULL) != 0
    }

    /// `net.fastsocket.listen_queues`.
    pub(crate) fn listen_queues(&self) -> bool {
        self.knobs.get(LISTEN_QUEUES) != 0
    }

    /// Whether Receive Flow Deliver is on (`net.fastsocket.rfd` and `enabled`).
    pub(crate) fn rfd(&self) -> bool {
        self.enabled() && self.knobs.get(RFD) != 0
    }

    /// Whether the socket pair cache is on (`net.fastsocket.vfs` and `enabled`).
    pub(crate) fn vfs(&self) -> bool {
        self.enabled() && self.knobs.get(VFS) != 0
    }

    /// Accept-locality state of `cpu`.
    pub(crate) fn listen_cpu(&self, cpu: u32) -> Option<&CpuListen> {
        self.listen_cpus.get(cpu)
    }

    /// `net.fastsocket.listen_scan`.
    pub(crate) fn listen_scan(&self) -> u32 {
        self.knobs.get(LISTEN_SCAN).unsigned_abs()
    }

    /// Starts keeping a `NetState` in every namespace.
    pub(crate) fn register() -> Result<PerNetRegistration<Self>> {
        Self::per_net().register()
    }
}

per_net!(NetState);

impl NetData for NetState {
    const PROC_NAME: &'static CStr = c_str!("fastsocket");

    fn init(init: &mut NetInit<'_>) -> Result<Self> {
        let path = c_str!("net/fastsocket");
        Ok(Self {
            knobs: Knobs::register(init, path, &KNOBS, &SWITCHES)?,
            listen_ports: TextKnob::register(
                init,
                path,
                c_str!("listen_ports"),
                ListenPorts::new()?,
            )?,
            listeners: Listeners::new()?,
            listen_cpus: PerCpu::pin_init_with(Alloc::MaySleep, CpuListen::new)?,
            counters: Counters::new()?,
        })
    }

    fn show(&self, net: &Net, out: &mut dyn fmt::Write) -> fmt::Result {
        // Connections waiting now, by handshake CPU, on the listeners in scope.
        let mut queued =
            KVec::from_elem(0u32, cpu::nr_ids() as usize, GFP_KERNEL).map_err(|_| fmt::Error)?;
        net.count_queued(|listener| self.listen_applies(listener), &mut queued);
        rcu::read_section(|rcu| {
            self.listeners.for_each(|listener| {
                if let Some(queues) = hooks::queues_of(&HOOKS, listener, rcu) {
                    queues.count(&mut queued);
                }
            })
        });
        let rows = self.counters.snapshot().map(|(c, mut stats)| {
            stats.queued = queued.get(c as usize).copied().unwrap_or(0).into();
            (stats.vfs_idle, stats.vfs_kept) = rcu::read_section(|rcu| vfs::cpu_counts(rcu, c));
            let here = self.listen_cpu(c);
            stats.wake_dropped = here.map_or(0, |l| l.held_dropped());
            stats.wake_held_pulled = here.map_or(0, |l| l.held_pulled());
            (c, stats)
        });
        write_table(out, rows)
    }
}
