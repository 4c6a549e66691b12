// SPDX-License-Identifier: GPL-2.0

//! Accept locality: a connection whose handshake completed on CPU c goes to a worker on c.
//!
//! Two decisions, both on the listener's one accept queue, so that backlog accounting, `ss`,
//! `SO_REUSEPORT`, poll/epoll readiness and closing the listener behave exactly as stock:
//!
//! - wake-up (softirq, CPU c): among the exclusive waiters (blocking `accept()`,
//!   `EPOLLEXCLUSIVE` epoll instances) try first one whose task sits on c, else (with
//!   `listen_pull`) a task blocked in `accept()` or `epoll_wait()` whose affinity allows c,
//!   woken onto c; non-exclusive waiters are all woken as before. If no exclusive waiter sits
//!   on c or may be pulled there, but the worker that accepted from this listener on c
//!   lately is still on c (running or runnable there, or asleep in something else with c its
//!   last CPU: it is busy and will be back) or was displaced onto a CPU another worker
//!   accepts on (see `keeps_for_worker`), the exclusive wake-up is held on c instead: for
//!   `listen_hold_ms`, or [`LONG_HOLDS`](crate::sys::hold::LONG_HOLDS) times that where the
//!   worker is runnable on c (running or preempted there: it comes back to `accept()` once it
//!   is done with what it serves). It joins a slot of the listener claimed on c, no longer
//!   than itself, with at least half its length left (adding to its count of held wake-ups),
//!   or claims one whose deadline is its length later; nothing extends a deadline, and when it
//!   passes, c's timer wakes the listener as many times as wake-ups were held in the slot (at
//!   least once), as stock would have, but no more than connections wait in c's queue (those
//!   c's worker accepted meanwhile need no other worker). With `listen_pull`,
//!   the same is done once per [`SPREAD_MS`] on c when c is busy with another task, no waiter
//!   sits there and two waiters share another CPU (workers that gathered there): the timer's
//!   wake-up then pulls one onto c if c is idle by then, so that the next connections on c
//!   find a worker there;
//! - accept and readiness (process context, CPU c): take the oldest connection that completed
//!   on c among the first `listen_scan` queued; else the oldest one other CPUs may take: a
//!   connection is kept for its own CPU while that CPU holds a wake-up of the listener claimed
//!   no later than the connection's last segment, the worker that accepted from it there last
//!   did so (or a waiter there was woken for the listener) in the last `PRESENT_MS` and is
//!   still there (or displaced), and the connection is younger than `listen_hold_ms`, or,
//!   while that worker is runnable on c, younger than the long hold. A kept connection looks
//!   absent to other CPUs' poll and accept.
//!
//! The bound: a connection kept for its CPU becomes takeable by any worker, and the wake-up
//! held for it is delivered, at most `listen_hold_ms` after its CPU held the listener's
//! wake-up for it, or at most the long hold (4 x `listen_hold_ms`) where the worker there was
//! runnable on it then (a connection past `listen_hold_ms` stays kept only while it still
//! is), whether or not a worker is left there; plus one jiffy (the jiffy a segment and a
//! claim may straddle) and the timer's granularity: one jiffy for holds under 64 jiffies (the
//! default 5 ms and its 20 ms long hold), up to an eighth of the hold above. A segment
//! reaching a queued connection makes it count as arriving anew.

pub(crate) mod queues;

use crate::logic::{
    ports::{PortSet, MAX_TEXT, WORDS},
    recent::RecentListeners,
    spacing::Spacing,
};
use crate::netstate::NetState;
use crate::stats::Wake;
use crate::sys::{
    cpu,
    hold::{HeldWakes, Length},
    hooks::AcceptPick,
    net::{ListenerWake, Sock, WakeHow},
    sysctl::TextValue,
    task, time,
};
use core::{
    fmt,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};
use kernel::prelude::*;

/// The listening ports accept locality applies to (`net.fastsocket.listen_ports`).
pub(crate) struct ListenPorts {
    /// Its bitmap on the heap: 8 KiB would not fit a kernel stack's frame.
    set: PortSet<KVec<AtomicU64>>,
    /// Serialises writers, so that concurrent writes cannot mix two lists.
    writing: AtomicBool,
}

impl ListenPorts {
    /// Every port (the knob's default, `all`).
    pub(crate) fn new() -> Result<Self> {
        let mut words = KVec::with_capacity(WORDS, GFP_KERNEL)?;
        for _ in 0..WORDS {
            words.push(AtomicU64::new(0), GFP_KERNEL)?;
        }
        Ok(Self {
            set: PortSet::with_words(true, words).ok_or(EINVAL)?,
            writing: AtomicBool::new(false),
        })
    }

    /// Whether `port` is in scope.
    pub(crate) fn contains(&self, port: u16) -> bool {
        self.set.contains(port)
    }
}

impl TextValue for ListenPorts {
    const EXPECTS: &'static str = "all, or ports and ranges like 80,8000-8099, or nothing";

    fn show(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        self.set.write(out)
    }

    const MAX_LEN: usize = MAX_TEXT;

    fn store(&self, text: &str) -> Result {
        // The new bitmap is built here first: one parse, one write of each word.
        let mut scratch = KVec::from_elem(0u64, WORDS, GFP_KERNEL)?;
        if self.writing.swap(true, Ordering::Acquire) {
            return Err(EBUSY);
        }
        let res = self.set.store(text, &mut scratch).map_err(|_| EINVAL);
        self.writing.store(false, Ordering::Release);
        res
    }
}

/// A worker on a CPU counts as present for a listener this long after its last accept there:
/// long enough for a busy worker's next accept, short enough that a worker which moved to
/// another CPU stops reserving this one soon.
pub(crate) const PRESENT_MS: u32 = 100;

/// At most one wake-up per CPU is held this often to spread waiters that gathered on another
/// CPU (see [`WakeHow::spread`]): where the CPU stays busy, so that the timer cannot pull a
/// waiter onto it, this bounds the cost to one hold (`listen_hold_ms`) per period.
pub(crate) const SPREAD_MS: u32 = 100;

/// Whether and how long a CPU keeps a listener's connections for the worker that accepted
/// from it there lately (see [`keeps_for_worker`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keep {
    /// Not kept: nobody is known to come back to the CPU.
    No,
    /// Kept for `listen_hold_ms`: the worker is asleep there (in something else than
    /// `accept()` or `epoll_wait()` on the listener) or was displaced.
    Away,
    /// Kept for up to [`LONG_HOLDS`](crate::sys::hold::LONG_HOLDS) times `listen_hold_ms`,
    /// and past `listen_hold_ms` only while it stays so: the worker is runnable on the CPU
    /// (running there, or preempted there), so it comes back to `accept()` as soon as it is
    /// done with what it serves.
    Busy,
}

/// Whether `cpu` (whose state is `cpu_state`) keeps `listener`'s connections for the worker
/// that accepted from it there lately (in the last [`PRESENT_MS`]), and holds its wake-up:
///
/// - [`Keep::Busy`]: that worker is runnable on `cpu` (running there or waiting to);
/// - [`Keep::Away`]: it is asleep with `cpu` its last CPU (busy with something else, it will
///   be back), or it was displaced: it sits on a CPU whose own last acceptor of `listener` is
///   another task. The hold's timer then wakes a waiter onto `cpu` (if `cpu` is idle by
///   then), which puts a worker back where the connections come from.
///
/// [`Keep::No`] when that worker is gone, or sits on a CPU where it is the last acceptor
/// itself (or where nobody accepted lately): it moved there, so nobody is known to come back
/// to `cpu`. This is the case of an unpinned worker alone (or with fewer workers than CPUs):
/// holding for it would only make it, the one waiter, wait for the hold's timer.
fn keeps_for_worker(
    state: &NetState,
    cpu_state: &CpuListen,
    listener: &Sock,
    cpu: u32,
    now: usize,
) -> Keep {
    let window = time::ms_to_jiffies(PRESENT_MS);
    let Some(pid) = cpu_state.recent.acceptor_within(listener.id(), now, window) else {
        return Keep::No;
    };
    match task::state_of(pid) {
        Some((on, true)) if on == cpu => Keep::Busy,
        Some((on, false)) if on == cpu => Keep::Away,
        Some((on, _))
            if state.listen_cpu(on).is_some_and(|there| {
                there
                    .recent
                    .acceptor_within(listener.id(), now, window)
                    .is_some_and(|owner| owner != pid)
            }) =>
        {
            Keep::Away
        }
        _ => Keep::No,
    }
}

/// Per-CPU state of accept locality in one namespace.
#[pin_data]
pub(crate) struct CpuListen {
    /// Wake-ups held back for a busy local worker.
    #[pin]
    held: HeldWakes,
    /// Listeners accepted from on this CPU lately.
    recent: RecentListeners,
    /// The last wake-up held here to spread waiters.
    spread: Spacing,
}

impl CpuListen {
    /// Wake-ups held here that the hold's timer did not deliver, their connections taken
    /// before it ran (`wake_dropped`).
    pub(crate) fn held_dropped(&self) -> u64 {
        self.held.dropped()
    }

    /// Wake-ups held here whose timer moved a task blocked elsewhere onto this CPU
    /// (`wake_held_pulled`).
    pub(crate) fn held_pulled(&self) -> u64 {
        self.held.pulled()
    }

    /// An initialiser of the state of `cpu`, built in place (its timer must not move).
    pub(crate) fn new(cpu: u32) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            held <- HeldWakes::new(cpu, queues::queued_on),
            recent: RecentListeners::default(),
            spread: Spacing::default(),
        })
    }
}

/// Wakes the waiters of `listener`, whose queue just got a connection that completed on this
/// CPU. Returns `false` if the stack must wake them itself.
pub(crate) fn child_ready(state: &NetState, listener: &Sock) -> bool {
    if !state.listen_applies(listener) {
        return false;
    }
    let cpu = cpu::current();
    let Some(here) = state.listen_cpu(cpu) else {
        return false;
    };
    let bound = time::ms_to_jiffies(state.listen_hold_ms());
    let now = time::jiffies();
    let pull = state.listen_pull();
    let keep = if bound > 0 {
        keeps_for_worker(state, here, listener, cpu, now)
    } else {
        Keep::No
    };
    let hold = keep != Keep::No;
    // A busy worker's wake-up is held long (it is on its way back); others short.
    let length = if keep == Keep::Busy {
        Length::Long
    } else {
        Length::Short
    };
    let how = WakeHow {
        pull,
        hold,
        spread: pull && bound > 0 && !hold && here.spread.open(now, time::ms_to_jiffies(SPREAD_MS)),
    };
    let wake = match listener.wake_listener_on(cpu, how) {
        woke @ (ListenerWake::Local | ListenerWake::Pulled) => {
            // Reserve it for the woken worker (no wake-up is owed: one was delivered); a full
            // table only costs locality. The waiter sits on this CPU now, so the worker that
            // last accepted here counts as present again (`keeps_for_worker` still checks
            // where it is): without this, a waiter that had not accepted for `PRESENT_MS`
            // could see its connection taken by a worker still in its accept loop elsewhere.
            // The woken waiter is runnable on this CPU: a long reservation, kept past
            // `listen_hold_ms` only while the worker `keeps_for_worker` finds stays so.
            if bound > 0 {
                here.recent.refresh(listener.id(), now);
                here.held
                    .hold(listener, bound, Length::Long, how.pull, false);
            }
            match woke {
                ListenerWake::Local => Wake::Local,
                _ => Wake::Pulled,
            }
        }
        ListenerWake::Other => {
            // Woken in the stock order: keep it for the busy local worker all the same, until
            // the timer wakes the listener again.
            if how.hold {
                here.held.hold(listener, bound, length, how.pull, false);
            }
            Wake::Fallback
        }
        // The exclusive wake-up was withheld: the slot counts it and the timer delivers it.
        ListenerWake::Held if here.held.hold(listener, bound, length, how.pull, true) => {
            if !how.hold {
                // Held to spread the waiters: not again on this CPU for a while.
                here.spread.note(now);
            }
            Wake::Held
        }
        ListenerWake::Held => {
            // No slot to remember it: wake now rather than lose the wake-up.
            listener.data_ready();
            Wake::Fallback
        }
        ListenerWake::Custom => return false,
    };
    state.counters.record_wake(cpu, wake);
    true
}

/// Notes that a worker on this CPU accepted from `listener`.
pub(crate) fn accepted(state: &NetState, listener: &Sock) {
    if !state.listen_applies(listener) {
        return;
    }
    // Only noted: an accept does not extend what this CPU holds (see the module's bound).
    if let Some(here) = state.listen_cpu(cpu::current()) {
        here.recent
            .note(listener.id(), time::jiffies(), task::current_pid());
    }
}

/// Whether a task on this CPU may take `child`, queued on `listener`, whose handshake completed
/// on another CPU: not while the child is younger than `listen_hold_ms` (since its last
/// segment), the worker that accepted from `listener` on its CPU lately is still there (or
/// displaced, see [`keeps_for_worker`]), and that CPU still holds a
/// wake-up of `listener` claimed by the child's last segment at the latest. The last condition
/// makes the hold's timer the bound: a slot's deadline is fixed when claimed, once the timer
/// released it the tasks it wakes may take the child (so no wake-up is lost to a child that
/// got data late), and a slot claimed later for younger connections does not keep it.
pub(crate) fn may_take(state: &NetState, listener: &Sock, child: &Sock) -> bool {
    child.incoming_cpu().map_or(true, |cpu| {
        may_take_from(state, listener, cpu, child.last_rcv_jiffies32())
    })
}

/// [`may_take`] for a child whose handshake completed on `cpu` and whose last segment came
/// at `last` (jiffies, 32 bits).
pub(crate) fn may_take_from(state: &NetState, listener: &Sock, cpu: u32, last: u32) -> bool {
    let bound = time::ms_to_jiffies(state.listen_hold_ms());
    if bound == 0 {
        return true;
    }
    let Some(there) = state.listen_cpu(cpu) else {
        return true;
    };
    let now = time::jiffies();
    // Jiffies wrap (at 32 bits in the socket): compare ages, not times.
    let age = (now as u32).wrapping_sub(last) as usize;
    // Cheapest first: the age, the held slots, then the worker (a pid look-up).
    let kept = age < Length::Long.of(bound)
        && there.held.is_held_for(listener, last, bound)
        && match keeps_for_worker(state, there, listener, cpu, now) {
            Keep::No => false,
            Keep::Away => age < bound,
            Keep::Busy => true,
        };
    !kept
}

/// Whether a worker on `cpu` accepted from `listener` in the last [`PRESENT_MS`] and is still
/// there (or displaced, see [`keeps_for_worker`]).
pub(crate) fn worker_present(state: &NetState, listener: &Sock, cpu: u32) -> bool {
    state.listen_cpu(cpu).is_some_and(|there| {
        keeps_for_worker(state, there, listener, cpu, time::jiffies()) != Keep::No
    })
}

/// Which queued connection an `accept()` on `listener`, running on this CPU, should take.
pub(crate) fn accept_pick(state: &NetState, listener: &Sock) -> Option<AcceptPick> {
    if !state.listen_applies(listener) {
        return None;
    }
    let scan = state.listen_scan();
    (scan > 0).then(|| AcceptPick {
        cpu: cpu::current(),
        scan,
    })
}
