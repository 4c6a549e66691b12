// SPDX-License-Identifier: GPL-2.0

//! What the module keeps in each network namespace: its knobs and counters.

use crate::logic::stats::write_table;
use crate::stats::Counters;
use crate::sys::{
    net::{Net, RcuReadSection},
    pernet::{NetData, PerNet, PerNetRegistration},
    sysctl::{IntKnob, Knobs},
};
use core::fmt;
use kernel::{c_str, prelude::*};

/// Index of `net.fastsocket.enabled` in [`KNOBS`].
const ENABLED: usize = 0;

/// The knobs under `/proc/sys/net/fastsocket/` of each namespace.
static KNOBS: [IntKnob; 1] = [IntKnob {
    name: c_str!("enabled"),
    min: 0,
    max: 1,
    default: 1,
}];

/// The state of every namespace.
static PER_NET: PerNet<NetState> = PerNet::new();

/// The module's state in one network namespace.
pub(crate) struct NetState {
    // Dropped first: no write can race with the teardown of the rest.
    knobs: Knobs<1>,
    /// Per-CPU counters, shown in `/proc/net/fastsocket`.
    pub(crate) counters: Counters,
}

impl NetState {
    /// The state of `net`, `None` while the module is not set up.
    pub(crate) fn of<'a>(net: &'a Net, rcu: &'a RcuReadSection<'_>) -> Option<&'a Self> {
        PER_NET.get(net, rcu)
    }

    /// Whether the operator enabled the module in this namespace (`net.fastsocket.enabled`).
    pub(crate) fn enabled(&self) -> bool {
        self.knobs.get(ENABLED) != 0
    }

    /// Starts keeping a `NetState` in every namespace.
    pub(crate) fn register() -> Result<PerNetRegistration<Self>> {
        PER_NET.register()
    }
}

impl NetData for NetState {
    const PROC_NAME: &'static CStr = c_str!("fastsocket");

    fn per_net() -> &'static PerNet<Self> {
        &PER_NET
    }

    fn init(net: &Net) -> Result<Self> {
        Ok(Self {
            knobs: Knobs::register(net, c_str!("net/fastsocket"), &KNOBS)?,
            counters: Counters::new()?,
        })
    }

    fn show(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        write_table(out, self.counters.snapshot())
    }
}
