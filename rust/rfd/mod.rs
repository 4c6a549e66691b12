// SPDX-License-Identifier: GPL-2.0

//! Receive Flow Deliver: an active connection lives on the CPU that opened it.
//!
//! - port choice (process context, the CPU running `connect()` or `bind()` to port 0): the
//!   kernel's port search first walks the ports of the range that this CPU owns
//!   ([`cpu_of`](crate::logic::rfd::cpu_of)), in the stock search's parity order, then falls back
//!   to the stock search;
//! - receive steering (softirq, the RPS decision of the receiving device): a TCP segment to
//!   such a port, from a port outside the ephemeral range, is processed on the CPU that owns
//!   its destination port ([`steer`]).
//!
//! - the other end of a same-host connection (softirq, a namespace with
//!   `net.fastsocket.rfd_peer` on receiving from its veth peer's namespace): the kernel asks
//!   [`rps_cpu`] for the peer's namespace with the ports swapped, as for that namespace's own
//!   reply, so both ends run on the CPU that opened the connection.
//!
//! All only while `net.fastsocket.rfd` and `net.fastsocket.enabled` are on in the socket's,
//! or the receiving device's (for a peer's segment: the peer's) namespace. None takes a lock or
//! keeps state per connection: turning the feature off or unloading the module leaves every
//! connection with the stock steering. See `Documentation/rfd.md`.

use crate::logic::rfd::{steer, walk, Ephemeral, Walk};
use crate::netstate::NetState;
use crate::sys::{cpu, hooks::PortSearch, net::Net};

/// The ports pass `pass` of a port search on the running CPU tries first, if any.
pub(crate) fn port_walk(state: &NetState, pass: u32, search: PortSearch) -> Option<Walk> {
    if !state.rfd() {
        return None;
    }
    let cpu = cpu::current();
    let w = walk(
        pass,
        cpu,
        cpu::nr_ids(),
        search.low,
        search.high,
        search.offset,
    );
    if pass == 0 {
        state.counters.record_rfd_search(cpu);
    }
    if w.is_none() {
        // Every port of the CPU's share was taken, or it owns none in the range.
        state.counters.record_rfd_fallback(cpu);
    }
    w
}

/// The CPU to process a segment from `sport` to `dport`, received in `net`, on.
pub(crate) fn rps_cpu(state: &NetState, net: &Net, sport: u16, dport: u16) -> Option<u32> {
    if !state.rfd() {
        return None;
    }
    let (low, high) = net.local_port_range();
    let target = steer(sport, dport, Ephemeral { low, high }, cpu::nr_ids(), |p| {
        net.is_reserved_port(p)
    })?;
    state.counters.record_rfd_steer(cpu::current(), target);
    Some(target)
}
