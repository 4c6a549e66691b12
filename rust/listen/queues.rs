// SPDX-License-Identifier: GPL-2.0

//! The local listen table: per-CPU accept queues for the listeners in scope.
//!
//! Data flow and locks:
//!
//! - `listen()` (process context, the listener's socket lock): a TCP listener in scope
//!   (`enabled`, `listen_ports`) gets one [`ReqQueue`] per possible CPU and is
//!   noted in its namespace's [`Listeners`], so that a module going away finds it. Scope is
//!   decided here, once: a listener that started listening out of scope, or before the module
//!   was loaded, stays stock until it listens again.
//! - A handshake completes on CPU c (softirq): the child joins c's queue under c's queue lock
//!   only, and is counted in the listener's `sk_ack_backlog` (atomically); the listener's
//!   waiters are then woken as accept locality does (see [`super::child_ready`]). A child the
//!   per-CPU queues do not take goes to the listener's own queue as stock: counted as
//!   `queue_fallback` when `listen_queues` is off or the listener is closing (accept locality
//!   still picks and holds there), not counted when the module is off for the listener
//!   (`enabled`, `listen_ports`).
//! - `accept()` on CPU c, before the listener's socket lock: the oldest child of c's queue;
//!   else the oldest child of another CPU's queue that [`super::may_take`] lets c take
//!   (steal), trying the CPUs after c first; else, under the socket lock as stock, the
//!   listener's own queue; else the task waits. A child is kept for its CPU at most as long
//!   as accept locality keeps one on the listener's own queue (`listen_hold_ms` after its CPU
//!   held the listener's wake-up for it), so that is the steal bound.
//! - Readiness (poll, epoll, blocking accept) on CPU c: c's queue has a child, or another
//!   CPU's oldest child may be stolen by c, or the listener's own queue has one for c.
//! - The listener stops listening (close, shutdown, disconnect), or the module is unloaded:
//!   every queue is closed and its children go, oldest first per CPU, to the tail of the
//!   listener's own queue, where the stack closes, migrates (`tcp_migrate_req`) or accepts
//!   them as stock. Nothing is lost; the queues are freed after a grace period.

use crate::listen::{may_take, may_take_from, worker_present, PRESENT_MS};
use crate::netstate::NetState;
use crate::sys::{
    cpu, hooks,
    net::{Sock, SockRef},
    percpu::{Alloc, PerCpu},
    rcu::{self, Published, RcuBox},
    reqq::{Req, ReqQueue},
    time,
};
use crate::HOOKS;
use kernel::{new_spinlock, prelude::*, sync::SpinLock};

/// The per-CPU queues of one listener.
pub(crate) type Queues = PerCpu<ReqQueue>;

impl Queues {
    /// Closes every queue and gives their connections back to `listener`'s own queue. Returns
    /// how many moved.
    pub(crate) fn close(&self, listener: &Sock) -> u32 {
        self.iter().map(|(_, q)| q.close(listener)).sum()
    }

    /// How many connections wait now in `cpu`'s queue (0 for a CPU without one).
    fn len_on(&self, cpu: u32) -> u32 {
        self.get(cpu).map_or(0, ReqQueue::len)
    }

    /// Adds to `counts[c]` the connections waiting now in CPU c's queue.
    pub(crate) fn count(&self, counts: &mut [u32]) {
        for (cpu, q) in self.iter() {
            if let Some(n) = counts.get_mut(cpu as usize) {
                *n += q.len();
            }
        }
    }
}

/// The listeners of one namespace that have queues, so that a module going away can give
/// their connections back. Each entry holds a reference on its listener.
pub(crate) struct Listeners {
    inner: Pin<KBox<SpinLock<ListenerList>>>,
}

struct ListenerList {
    /// The listeners noted; a slot freed by a listener that stopped is reused.
    socks: KVec<Option<SockRef>>,
    /// The namespace's state is going away: no listener is added any more.
    closed: bool,
}

impl Listeners {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            inner: KBox::pin_init(
                new_spinlock!(ListenerList {
                    socks: KVec::new(),
                    closed: false,
                }),
                GFP_KERNEL,
            )?,
        })
    }

    /// Notes `listener`; false if the namespace's state is going away or memory is short.
    fn add(&self, listener: &Sock) -> bool {
        let mut list = self.inner.lock();
        if list.closed {
            return false;
        }
        let Some(sock) = SockRef::try_new(listener) else {
            return false;
        };
        match list.socks.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => {
                *slot = Some(sock);
                true
            }
            None => list.socks.push(Some(sock), GFP_ATOMIC).is_ok(),
        }
    }

    /// Forgets `listener`.
    fn remove(&self, listener: &Sock) {
        let gone = {
            let mut list = self.inner.lock();
            list.socks
                .iter_mut()
                .find(|slot| slot.as_ref().is_some_and(|s| s.id() == listener.id()))
                .and_then(Option::take)
        };
        // The listener's own reference outlives this one (it is closing, not freed).
        drop(gone);
    }

    /// Calls `f` on every listener noted, under the list's spinlock: `f` must not sleep.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Sock)) {
        let list = self.inner.lock();
        for sock in list.socks.iter().flatten() {
            f(sock);
        }
    }

    /// Closes the list and takes every listener out of it.
    fn take_all(&self) -> KVec<Option<SockRef>> {
        let mut list = self.inner.lock();
        list.closed = true;
        core::mem::take(&mut list.socks)
    }
}

impl Drop for Listeners {
    /// The namespace's state goes away (the namespace exits, or the module is unloaded, in
    /// which case its hooks are still registered): every listener noted gives its queues'
    /// connections back to its own queue and loses its queues. Process context (pernet exit).
    fn drop(&mut self) {
        for listener in self.take_all().into_iter().flatten() {
            let locked = listener.lock();
            if let Some(queues) = hooks::detach(&HOOKS, &locked) {
                // Waiters saw these connections in the per-CPU queues; they stay queued, but
                // wake one waiter per connection, as their arrival did.
                for _ in 0..queues.get().close(&listener) {
                    listener.data_ready();
                }
            }
        }
    }
}

/// The queues for `listener`, which just started listening, if it is in scope. They are
/// allocated even with `listen_queues` off, which only keeps new connections out of them:
/// the listener is in scope, and turning the knob on later applies to it.
pub(crate) fn listen(state: &NetState, listener: &Sock) -> Option<Published<Queues>> {
    if !state.listen_applies(listener) {
        return None;
    }
    // No sleeping: the hook runs inside an RCU read-side section.
    let queues = Queues::pin_init_with(Alloc::Atomic, |_| ReqQueue::new()).ok()?;
    // Allocated for RCU readers before the listener is noted: once it is, nothing fails (its
    // queues would be lost with the reference the note holds).
    let queues = RcuBox::publish(queues, GFP_ATOMIC).ok()?;
    state.listeners.add(listener).then_some(queues)
}

/// Queues `req`, which completed its handshake on this CPU, on this CPU's queue of
/// `listener`; gives it back for the listener's own queue if the module is off for it.
pub(crate) fn add<'a>(
    state: Option<&NetState>,
    listener: &'a Sock,
    queues: &Queues,
    req: Req<'a>,
) -> Result<(), Req<'a>> {
    let Some(state) = state else {
        return Err(req);
    };
    // The CPU the stack processed the handshake on; a closing listener's connections
    // migrating here keep theirs.
    let cpu = req.child().incoming_cpu().unwrap_or_else(cpu::current);
    // Off in this namespace, or the listener out of scope now: stock, and not counted.
    if !state.listen_applies(listener) {
        return Err(req);
    }
    let res = match queues.get(cpu) {
        Some(q) if state.listen_queues() => q.push(listener, req),
        _ => Err(req),
    };
    state.counters.record_queue_add(cpu, res.is_ok());
    res
}

/// A connection for `accept()` on this CPU: the oldest of this CPU's queue, unless another
/// CPU's oldest is older still, not kept for its CPU, and either no worker accepted there in
/// the last [`PRESENT_MS`] or it has waited that long (then that one: this bounds how long a
/// connection waits when its CPU's worker is gone while this CPU always has work of its own,
/// and leaves a CPU whose worker is only slower its own connections); if this CPU's queue is
/// empty, the oldest of another CPU's queue that is not kept.
///
/// Other CPUs' queues are only locked to take a connection seen (without their lock) to be
/// takeable, so under load with a worker on every CPU each accept takes its own CPU's queue
/// lock only.
pub(crate) fn remove<'a>(
    state: Option<&NetState>,
    listener: &'a Sock,
    queues: &Queues,
) -> Option<Req<'a>> {
    let here = cpu::current();
    let local = queues.get(here);
    let now = time::jiffies() as u32;
    // Ages, not times: jiffies wrap at 32 bits.
    let local_age = local
        .and_then(ReqQueue::head_rcv)
        .map(|t| now.wrapping_sub(t));
    let patience = time::ms_to_jiffies(PRESENT_MS);
    for (from, q) in others(queues, here) {
        let Some(rcv) = q.head_rcv() else { continue };
        let age = now.wrapping_sub(rcv);
        let leave_it = |own| {
            own >= age
                || ((age as usize) < patience
                    && state.is_some_and(|s| worker_present(s, listener, from)))
        };
        if local_age.is_some_and(leave_it) {
            continue;
        }
        // Seen without the lock first, checked again with it.
        if state.is_some_and(|s| !may_take_from(s, listener, from, rcv)) {
            continue;
        }
        let takeable = |child: &Sock| state.map_or(true, |s| may_take(s, listener, child));
        if let Some(req) = q.pop_if(listener, takeable) {
            if let Some(state) = state {
                state.counters.record_queue_take(here, from);
            }
            return Some(req);
        }
    }
    let req = local.and_then(|q| q.pop_if(listener, |_| true))?;
    if let Some(state) = state {
        state.counters.record_queue_take(here, here);
    }
    Some(req)
}

/// Whether [`remove`] would find a connection for this CPU.
pub(crate) fn ready(state: Option<&NetState>, listener: &Sock, queues: &Queues) -> bool {
    let here = cpu::current();
    if queues.get(here).is_some_and(|q| q.len() > 0) {
        return true;
    }
    // As in `remove`: seen without the other queue's lock first, checked again with it.
    let takeable = |child: &Sock| state.map_or(true, |s| may_take(s, listener, child));
    others(queues, here).any(|(from, q)| {
        q.head_rcv().is_some_and(|rcv| {
            state.map_or(true, |s| may_take_from(s, listener, from, rcv)) && q.head_is(takeable)
        })
    })
}

/// How many of `listener`'s connections a wake-up held on `cpu` may still be for (see
/// [`HeldWakes::new`]): those in `cpu`'s queue, or, while the listener's own queue has
/// some (connections the per-CPU queues did not take, or gave back), all of its connections.
/// A connection leaves `cpu`'s queue for the listener's own one only when the queues close,
/// which wakes a waiter for it; reading `cpu`'s queue first, a connection moving meanwhile is
/// counted in one place or the other.
///
/// [`HeldWakes::new`]: crate::sys::hold::HeldWakes::new
pub(crate) fn queued_on(listener: &Sock, cpu: u32) -> u32 {
    rcu::read_section(|rcu| {
        let here = hooks::queues_of(&HOOKS, listener, rcu).map(|q| q.len_on(cpu));
        match here {
            Some(n) if listener.own_queue_is_empty() => n,
            _ => listener.acceptq_len(),
        }
    })
}

/// `listener` stopped listening: its connections go back to its own queue.
pub(crate) fn stop(state: Option<&NetState>, listener: &Sock, queues: Published<Queues>) {
    queues.get().close(listener);
    if let Some(state) = state {
        state.listeners.remove(listener);
    }
}

/// The other CPUs' queues, those after `here` first, so that stealing CPUs spread out.
fn others(queues: &Queues, here: u32) -> impl Iterator<Item = (u32, &ReqQueue)> {
    let after = queues.iter().filter(move |&(c, _)| c > here);
    let before = queues.iter().filter(move |&(c, _)| c < here);
    Iterator::chain(after, before)
}
