// SPDX-License-Identifier: GPL-2.0

//! fastsocket: per-CPU TCP socket tables for unchanged servers.
//!
//! The patched kernel calls the hooks registered here (see `sys::hooks`); the module keeps its
//! state per network namespace (`netstate`) and shows it in `/proc/net/fastsocket`, with its
//! knobs in `/proc/sys/net/fastsocket/`. See `Documentation/architecture.md`.

use kernel::{c_str, prelude::*};

mod listen;
mod netstate;
mod stats;
mod sys;

/// The pure-logic files (`rust/logic/*.rs`), which the host crate in `rust/logic` also builds
/// as a library for `cargo test`, hence their `pub` items.
#[expect(unreachable_pub)]
mod logic {
    pub(crate) mod ports;
    pub(crate) mod recent;
    pub(crate) mod stats;
}

use netstate::NetState;
use sys::pernet::PerNetRegistration;
use sys::{
    cpu,
    hooks::{self, AcceptPick, Hooks, HooksVTable},
    net::{RcuReadSection, Sock},
};

module! {
    type: FastSocket,
    name: "fastsocket",
    author: "fastsocket-rs developers",
    description: "Per-CPU TCP socket tables for unchanged servers",
    license: "GPL",
}

struct FastSocketHooks;

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
}

static HOOKS: HooksVTable = hooks::vtable::<FastSocketHooks>();

struct FastSocket {
    // Fields drop in order: the hooks are gone before the state they use.
    _hooks: hooks::Registration,
    _net: PerNetRegistration<NetState>,
}

impl kernel::Module for FastSocket {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let net = NetState::register()?;
        let hooks = hooks::Registration::register(&HOOKS)?;
        pr_info!("loaded: accept locality on net.fastsocket.listen_ports, counters in /proc/net/fastsocket\n");
        Ok(Self {
            _hooks: hooks,
            _net: net,
        })
    }
}
