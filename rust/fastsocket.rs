// SPDX-License-Identifier: GPL-2.0

//! fastsocket: per-CPU TCP socket tables for unchanged servers.
//!
//! The patched kernel calls the hooks registered here (see `sys::hooks`); the module keeps its
//! state per network namespace (`netstate`) and shows it in `/proc/net/fastsocket`, with its
//! knobs in `/proc/sys/net/fastsocket/`. See `Documentation/architecture.md`.

use kernel::{c_str, prelude::*};

// `unsafe` only in `sys`: the features may not write it (`netstate` only through
// `sys::pernet::per_net!`, which allows its own `unsafe impl`).
#[forbid(unsafe_code)]
mod listen;
#[deny(unsafe_code)]
mod netstate;
#[forbid(unsafe_code)]
mod rfd;
#[forbid(unsafe_code)]
mod stats;
mod sys;
#[forbid(unsafe_code)]
mod vfs;

/// The pure-logic files (`rust/logic/*.rs`), which the host crate in `rust/logic` also builds
/// as a library for `cargo test`, hence their `pub` items.
#[expect(unreachable_pub)]
#[forbid(unsafe_code)]
mod logic {
    pub(crate) mod fifo;
    pub(crate) mod ports;
    pub(crate) mod recent;
    pub(crate) mod rfd;
    pub(crate) mod spacing;
    pub(crate) mod stats;
}

use listen::queues::{self, Queues};
use logic::rfd::Walk;
use netstate::NetState;
use sys::global::Installed;
use sys::pernet::PerNetRegistration;
use sys::shrinker;
use sys::{
    cpu,
    hooks::{self, AcceptPick, HookSet, Hooks, HooksVTable, PortSearch},
    net::{Net, RcuReadSection, Sock},
    rcu::{self, Published},
    reqq::Req,
    sockfs::{KeptPair, ReusablePair},
};

module! {
    type: FastSocket,
    name: "fastsocket",
    author: "fastsocket-rs developers",
    description: "Per-CPU TCP socket tables for unchanged servers",
    license: "GPL",
}

/// The module's hooks.
pub(crate) struct FastSocketHooks;

#[vtable]
impl Hooks for FastSocketHooks {
    const NAME: &'static CStr = c_str!("fastsocket");

    fn accept(rcu: &RcuReadSection<'_>, listener: &Sock, child: &Sock) {
        let Some(state) = NetState::of(listener.net(), rcu) else {
            return;
        };
        if state.enabled() {
            state
                .counters
                .record_accept(cpu::current(), child.incoming_cpu());
            listen::accepted(state, listener);
        }
    }

    fn child_ready(rcu: &RcuReadSection<'_>, listener: &Sock, _child: &Sock) -> bool {
        NetState::of(listener.net(), rcu).is_some_and(|state| listen::child_ready(state, listener))
    }

    fn accept_pick(rcu: &RcuReadSection<'_>, listener: &Sock) -> Option<AcceptPick> {
        listen::accept_pick(NetState::of(listener.net(), rcu)?, listener)
    }

    fn may_take(rcu: &RcuReadSection<'_>, listener: &Sock, child: &Sock) -> bool {
        NetState::of(listener.net(), rcu)
            .map_or(true, |state| listen::may_take(state, listener, child))
    }

    type Queues = Queues;

    fn listen(rcu: &RcuReadSection<'_>, listener: &Sock) -> Option<Published<Queues>> {
        queues::listen(NetState::of(listener.net(), rcu)?, listener)
    }

    fn queue_add<'a>(
        rcu: &RcuReadSection<'_>,
        listener: &'a Sock,
        queues: &Queues,
        req: Req<'a>,
    ) -> Result<(), Req<'a>> {
        queues::add(NetState::of(listener.net(), rcu), listener, queues, req)
    }

    fn queue_remove<'a>(
        rcu: &RcuReadSection<'_>,
        listener: &'a Sock,
        queues: &Queues,
    ) -> Option<Req<'a>> {
        queues::remove(NetState::of(listener.net(), rcu), listener, queues)
    }

    fn queue_ready(rcu: &RcuReadSection<'_>, listener: &Sock, queues: &Queues) -> bool {
        queues::ready(NetState::of(listener.net(), rcu), listener, queues)
    }

    fn listen_stop(rcu: &RcuReadSection<'_>, listener: &Sock, queues: Published<Queues>) {
        queues::stop(NetState::of(listener.net(), rcu), listener, queues);
    }

    fn port_walk(
        rcu: &RcuReadSection<'_>,
        sk: &Sock,
        pass: u32,
        search: PortSearch,
    ) -> Option<Walk> {
        rfd::port_walk(NetState::of(sk.net(), rcu)?, pass, search)
    }

    fn rps_cpu(rcu: &RcuReadSection<'_>, net: &Net, sport: u16, dport: u16) -> Option<u32> {
        rfd::rps_cpu(NetState::of(net, rcu)?, net, sport, dport)
    }

    fn pair_get(rcu: &RcuReadSection<'_>) -> Option<ReusablePair> {
        vfs::pair_get(rcu)
    }

    fn pair_put(rcu: &RcuReadSection<'_>, pair: KeptPair) -> Result<(), KeptPair> {
        vfs::pair_put(rcu, pair)
    }
}

/// The table on a kernel with several possible CPUs: every hook.
pub(crate) static HOOKS: HooksVTable<FastSocketHooks> = hooks::vtable(HookSet::All);

/// The table on a kernel with one possible CPU: lightweight socket files' hooks only. Every
/// handshake, accept and segment is on that CPU already, so accept locality and Receive Flow
/// Deliver have nothing to steer: their hooks stay unregistered and their static keys off,
/// which spares every connection their cost. `nr_cpu_ids` is fixed at boot: no CPU can come
/// later.
static HOOKS_ONE_CPU: HooksVTable<FastSocketHooks> =
    hooks::vtable::<FastSocketHooks>(HookSet::SocketFiles);

struct FastSocket {
    // Fields drop in order. The namespaces' state goes first: each gives its listeners'
    // queued connections back to their own queues while the hooks still serve them (they
    // find no state from then on). Then the hooks, then the queues freed after a grace
    // period, whose code is the module's.
    _net: PerNetRegistration<NetState>,
    _hooks: hooks::Registration<FastSocketHooks>,
    // No hook reaches the socket pair cache any more: its shrinker goes, then the cache
    // drops what it keeps.
    _vfs_shrinker: shrinker::Registration<vfs::PairCache>,
    _vfs: Installed<vfs::PairCache>,
    _rcu: RcuBarrier,
}

/// Waits, when dropped, for the RCU callbacks the module queued.
struct RcuBarrier;

impl Drop for RcuBarrier {
    fn drop(&mut self) {
        rcu::barrier();
    }
}

impl kernel::Module for FastSocket {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let vfs = vfs::PairCache::install()?;
        let vfs_shrinker = vfs::PairCache::shrinker()?;
        let (table, features) = if cpu::nr_ids() > 1 {
            (&HOOKS, "accept locality on net.fastsocket.listen_ports, Receive Flow Deliver on net.fastsocket.rfd, socket pair cache on net.fastsocket.vfs")
        } else {
            (&HOOKS_ONE_CPU, "one possible CPU: socket pair cache on net.fastsocket.vfs; accept locality and Receive Flow Deliver off (nothing to steer)")
        };
        // The hooks first: they find no state (and leave the stock paths to the sockets, but
        // for the pair cache, installed above) until the namespaces have theirs, and a module
        // that cannot have them (another one holds them: `EBUSY`) fails here, before its
        // namespaces' set-up turns any feature on, so that it never turns off the features of
        // the module that holds them.
        let hooks = hooks::Registration::register(table)?;
        let net = NetState::register()?;
        pr_info!("loaded: {features}, counters in /proc/net/fastsocket\n");
        Ok(Self {
            _net: net,
            _hooks: hooks,
            _vfs_shrinker: vfs_shrinker,
            _vfs: vfs,
            _rcu: RcuBarrier,
        })
    }
}
