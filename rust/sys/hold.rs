// SPDX-License-Identifier: GPL-2.0

//! Listener wake-ups held back on one CPU and released by a timer.
//!
//! When a connection completes on a CPU whose worker is busy, the module may keep the other
//! workers asleep for a short bound so that the local worker, coming back to `accept()`, takes
//! it. [`HeldWakes`] keeps a reference on each such listener in a slot, with the number of
//! exclusive wake-ups held for it and a deadline fixed when the slot was claimed: nothing
//! extends it. A slot is short (the bound) or long ([`LONG_HOLDS`] bounds, for a worker the
//! caller knows to be runnable on the CPU); a short hold only ever joins a short slot. When
//! the deadline passes (or when the object is dropped) the timer wakes the listener as many
//! times as wake-ups were held, at least once, as the stack would have, but no more times than
//! the connections the caller's `queued` function says may still be waiting for them (those
//! queued on this CPU, as a rule): a held wake-up is delayed by at most its slot's length
//! (plus the timer's one-jiffy granularity), never lost, and one whose connection was
//! accepted meanwhile (by the CPU's own worker, as a rule) is dropped (it would only wake a
//! worker to find nothing to accept and sleep again).
//!
//! # Concurrency
//!
//! The object belongs to one CPU: [`HeldWakes::hold`] runs there (softirq). Its timer is
//! pinned, but when the CPU goes offline the timer core migrates a pending timer to another
//! CPU, whose callback can then run while `hold()` runs again on the original CPU once it is
//! back online. So every slot changes only through atomic operations with a single owner for
//! each step, and any number of holders and releasers may run at once:
//!
//! - a free slot (`sk` null) is claimed by a compare-exchange of `sk` from null to a marker;
//!   the claimer takes the listener's reference, stores the listener in `sk`, then publishes
//!   the slot's state (`meta`: deadline, count, generation, live bit) with a release store;
//! - a holder adds to the count of a live slot with a compare-exchange of the whole `meta`
//!   word it read, after checking `sk`; the generation, bumped at every claim, makes the
//!   exchange fail if the slot was released (and possibly claimed again) in between;
//! - a releaser owns a slot's release by the compare-exchange that clears the live bit of the
//!   `meta` it read, which also fixes the count it wakes; it then takes `sk` with a swap (which
//!   frees the slot) and puts the reference.
//!
//! So each claimed reference is put exactly once, and each counted wake-up is either counted
//! before the release's exchange (and woken by it) or not counted (and the holder moves on to
//! another slot or tells its caller to wake now). The one tolerated race is the generation
//! wrapping: a holder delayed across 2^15 claims of one slot could add its count to a later
//! occupant of the same listener, which wakes it at that occupant's deadline instead.

use super::cpu;
use super::net::{ListenerWake, Sock, WakeHow};
use super::time;
use core::{
    ptr::{self, NonNull},
    sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering},
};
use kernel::{bindings, container_of, prelude::*, types::Opaque};

/// How many listeners one CPU may hold at once; more are woken right away.
const SLOTS: usize = 8;

/// `meta` bit: the slot holds wake-ups that no releaser owns yet.
const LIVE: u64 = 1;
/// `meta` bits 1..=16: how many exclusive wake-ups are held.
const COUNT_SHIFT: u32 = 1;
const COUNT_MAX: u64 = 0xffff;
/// `meta` bits 17..=30: the generation, bumped when the slot is claimed.
const GEN_SHIFT: u32 = 17;
const GEN_MASK: u64 = 0x3fff;
/// `meta` bit 31: the slot is long ([`Length::Long`]).
const LONG: u64 = 1 << 31;
/// `meta` bits 32..=63: the deadline, the low 32 bits of a jiffies value.
const DEADLINE_SHIFT: u32 = 32;

fn count(meta: u64) -> u64 {
    (meta >> COUNT_SHIFT) & COUNT_MAX
}

fn deadline32(meta: u64) -> u32 {
    (meta >> DEADLINE_SHIFT) as u32
}

fn length_of(meta: u64) -> Length {
    if meta & LONG != 0 {
        Length::Long
    } else {
        Length::Short
    }
}

/// How many bounds a long hold lasts.
pub(crate) const LONG_HOLDS: usize = 4;

/// How long a hold lasts, in bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Length {
    /// One bound.
    Short,
    /// [`LONG_HOLDS`] bounds.
    Long,
}

impl Length {
    /// The hold's length in jiffies for a bound of `bound` jiffies.
    pub(crate) fn of(self, bound: usize) -> usize {
        match self {
            Length::Short => bound,
            Length::Long => bound.saturating_mul(LONG_HOLDS),
        }
    }

    /// Whether a hold of this length may join a slot of length `slot` (never a longer one).
    fn may_join(self, slot: Length) -> bool {
        self == Length::Long || slot == Length::Short
    }
}

/// Whether the deadline in `meta` passed at `now`: wrap-safe on 32 bits, valid because a
/// deadline is at most [`LONG_HOLDS`] times `listen_hold_ms` (at most a second: 4 s, far
/// below 2^31 jiffies) after its claim.
fn is_due(meta: u64, now: usize) -> bool {
    (now as u32).wrapping_sub(deadline32(meta)) as i32 >= 0
}

/// The full jiffies value of the deadline in `meta`, `now` being within 2^31 jiffies of it.
fn deadline_near(meta: u64, now: usize) -> usize {
    let delta = deadline32(meta).wrapping_sub(now as u32) as i32;
    now.wrapping_add(delta as isize as usize)
}

/// The marker of a slot being claimed: never the address of a socket.
fn claiming() -> *mut bindings::sock {
    NonNull::dangling().as_ptr()
}

/// One held listener.
struct Slot {
    /// The listener, null if the slot is free, [`claiming`] while being claimed.
    sk: AtomicPtr<bindings::sock>,
    /// Deadline, count, generation and live bit (see the constants above).
    meta: AtomicU64,
}

/// The held listeners of one CPU.
///
/// # Invariants
///
/// - `timer` was set up (`timer_setup()`) to call [`release_timer`] when the object was
///   initialised in place, and the object does not move until dropped (it is pinned).
/// - A slot whose `sk` is neither null nor [`claiming`] owns a reference
///   ([`Sock::try_hold`]) on a listening socket. While its `meta` is live, the exclusive
///   waiters of that listener are owed `count` wake-ups (at least one either way), less those
///   beyond the connections `queued` counts then, by the deadline in `meta`, and the timer is
///   pending or running for a time no later than that deadline (plus the
///   granularity of the timer wheel). Once a releaser cleared the live bit, that releaser owns
///   the reference and the wake-ups.
/// - `cpu` is the CPU the object belongs to.
/// - `queued` is safe to call from the timer (softirq) and from the drop.
#[pin_data(PinnedDrop)]
pub(crate) struct HeldWakes {
    #[pin]
    timer: Opaque<bindings::timer_list>,
    slots: [Slot; SLOTS],
    cpu: u32,
    /// How many connections of a listener the wake-ups held on `cpu` may still be for.
    queued: fn(&Sock, u32) -> u32,
    /// Whether the timer's wake-up may pull a blocked `accept()` or `epoll_wait()` here.
    pull: AtomicBool,
    /// Held wake-ups not delivered: their connections were taken before the deadline.
    dropped: AtomicU64,
    /// Releases of withheld wake-ups that pulled a blocked task onto `cpu`.
    pulled: AtomicU64,
}

// SAFETY: The slots are atomics owning socket references, which may be put from any CPU; the
// timer is only touched through the kernel's timer API, which serialises itself.
unsafe impl Send for HeldWakes {}
// SAFETY: As above: every shared access goes through atomics or the timer API.
unsafe impl Sync for HeldWakes {}

impl HeldWakes {
    /// An initialiser of the held wake-ups of `cpu`, which sets up the timer in place.
    /// `queued(listener, cpu)` tells the timer how many connections of `listener` its held
    /// wake-ups may still be for: at least every connection that completed on `cpu` and is
    /// still queued (it may count more, never fewer). It runs in softirq, without sleeping.
    pub(crate) fn new(cpu: u32, queued: fn(&Sock, u32) -> u32) -> impl PinInit<Self, Error> {
        // INVARIANT: The timer is set up at the object's final, pinned address.
        try_pin_init!(Self {
            timer <- Opaque::ffi_init(|timer| {
                // SAFETY: `timer` points to the uninitialised `timer_list` of the object being
                // initialised in place, which is pinned; `release_timer` finds the object from
                // it. Pinned: armed from `cpu`, it fires there while that CPU is online.
                unsafe {
                    bindings::timer_setup(timer, Some(release_timer), bindings::TIMER_PINNED)
                }
            }),
            slots: [const {
                Slot {
                    sk: AtomicPtr::new(ptr::null_mut()),
                    meta: AtomicU64::new(0),
                }
            }; SLOTS],
            cpu,
            queued,
            pull: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            pulled: AtomicU64::new(0),
        })
    }

    /// Holds a wake-up of `listener` for at most `length` (of `bound` jiffies) from now: with
    /// `withheld`, one
    /// exclusive wake-up the caller did not deliver (it is counted and delivered by the timer);
    /// without, the caller woke a waiter already and only wants the connection kept for this
    /// CPU ([`HeldWakes::is_held_for`]) until the timer's wake-up. Returns `false` (and holds
    /// nothing) if no slot can take it; the caller must then wake the listener itself. The
    /// timer wakes the listener as the stack would, except that with `pull` it may wake a task
    /// blocked in `accept()` or `epoll_wait()` onto this CPU (see [`Sock::wake_listener_on`]).
    ///
    /// The hold joins a slot of `listener` no longer than itself with at least half its own
    /// length left (whose deadline stays: nothing extends a deadline), else claims a free slot
    /// of its length, else joins any live slot of `listener` no longer than itself (a shorter
    /// hold). So each hold lasts at most its length, and at least half of it while slots are
    /// free.
    ///
    /// Called with bottom halves disabled on the CPU this object belongs to.
    pub(crate) fn hold(
        &self,
        listener: &Sock,
        bound: usize,
        length: Length,
        pull: bool,
        withheld: bool,
    ) -> bool {
        self.pull.store(pull, Ordering::Relaxed);
        let sk = listener.as_raw();
        let now = time::jiffies();
        let len = length.of(bound);
        // A fresh slot has at least half the hold's length left.
        let fresh = |meta: u64| {
            length.may_join(length_of(meta))
                && deadline32(meta).wrapping_sub(now as u32) as i32 >= (len / 2) as i32
        };
        if self.join(sk, withheld, fresh) {
            return true;
        }
        let deadline = now.wrapping_add(len);
        for slot in &self.slots {
            if slot
                .sk
                .compare_exchange(
                    ptr::null_mut(),
                    claiming(),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                continue;
            }
            // The slot is ours until its `meta` is live; nobody else writes `meta` meanwhile.
            let old = slot.meta.load(Ordering::Relaxed);
            let generation = ((old >> GEN_SHIFT) + 1) & GEN_MASK;
            let long = if length == Length::Long { LONG } else { 0 };
            let meta = (u64::from(deadline as u32) << DEADLINE_SHIFT)
                | long
                | (generation << GEN_SHIFT)
                | (u64::from(withheld) << COUNT_SHIFT)
                | LIVE;
            // The reference taken here is owned by the slot (type invariant) once `sk` names
            // it. A listener whose close dropped its last one (a syncookie's ACK reached it
            // without a reference) is not held: the caller wakes it now, as stock would.
            if !listener.try_hold() {
                slot.sk.store(ptr::null_mut(), Ordering::Release);
                return false;
            }
            slot.sk.store(sk, Ordering::Release);
            slot.meta.store(meta, Ordering::Release);
            // INVARIANT: The timer fires by the slot's deadline.
            self.arm(deadline);
            return true;
        }
        // No free slot: a shorter hold is still a hold.
        self.join(sk, withheld, |meta| length.may_join(length_of(meta)))
    }

    /// Joins a live slot of `sk` whose `meta` passes `pick`, adding one wake-up to its count
    /// with `withheld`. Returns whether it did.
    fn join(&self, sk: *mut bindings::sock, withheld: bool, pick: impl Fn(u64) -> bool) -> bool {
        for slot in &self.slots {
            loop {
                let meta = slot.meta.load(Ordering::Acquire);
                if meta & LIVE == 0 || slot.sk.load(Ordering::Acquire) != sk || !pick(meta) {
                    break;
                }
                if !withheld {
                    return true;
                }
                if count(meta) == COUNT_MAX {
                    break;
                }
                let added = meta + (1 << COUNT_SHIFT);
                if slot
                    .meta
                    .compare_exchange(meta, added, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return true;
                }
            }
        }
        false
    }

    /// Whether a wake-up of `listener` is held here for a connection whose last segment came
    /// at `since` (jiffies, truncated to 32 bits), i.e. the timer has yet to release a slot of
    /// `listener` claimed no later than one jiffy after `since` (the jiffy may tick between
    /// the segment and the claim). `bound` is the bound the slot's length was given in, from
    /// which the claim time is found back from the deadline (if `listen_hold_ms` changed
    /// meanwhile, the answer is off by that change, but never holds past the slot's fixed
    /// deadline).
    ///
    /// A slot claimed later was claimed for younger connections: an older one that sits in the
    /// queue must not be kept by it, or successive holds could keep it for ever.
    pub(crate) fn is_held_for(&self, listener: &Sock, since: u32, bound: usize) -> bool {
        let sk = listener.as_raw();
        self.slots.iter().any(|s| {
            let meta = s.meta.load(Ordering::Acquire);
            let claimed = deadline32(meta).wrapping_sub(length_of(meta).of(bound) as u32);
            meta & LIVE != 0
                && s.sk.load(Ordering::Acquire) == sk
                && since.wrapping_add(1).wrapping_sub(claimed) as i32 >= 0
        })
    }

    fn arm(&self, deadline: usize) {
        // SAFETY: The timer was set up when the object was initialised (type invariant).
        // `timer_reduce()` arms it, or keeps an earlier expiry; it is ignored after the
        // shutdown in `drop`, which only runs once nobody holds through `&self` any more.
        unsafe { bindings::timer_reduce(self.timer.get(), deadline as _) };
    }

    /// Wakes each held listener whose deadline passed (all of them with `all`) and drops the
    /// references, then re-arms the timer for the others.
    fn release(&self, all: bool) {
        // Pull only from the timer on this object's own CPU: a migrated timer runs elsewhere.
        let pull = !all && self.pull.load(Ordering::Relaxed) && cpu::current() == self.cpu;
        let now = time::jiffies();
        let mut next: Option<usize> = None;
        for slot in &self.slots {
            loop {
                let meta = slot.meta.load(Ordering::Acquire);
                if meta & LIVE == 0 {
                    break;
                }
                if !all && !is_due(meta, now) {
                    let due = deadline_near(meta, now);
                    next = Some(match next {
                        Some(n) if time::is_after_eq(due, n) => n,
                        _ => due,
                    });
                    break;
                }
                if slot
                    .meta
                    .compare_exchange(meta, meta & !LIVE, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    continue;
                }
                // We own this occupant's release: its `sk` was stored before `meta` went live
                // and only its releaser changes it.
                let sk = slot.sk.swap(ptr::null_mut(), Ordering::AcqRel);
                if sk.is_null() || sk == claiming() {
                    // Cannot happen (see above); never turn the marker into a socket.
                    break;
                }
                // SAFETY: By the type invariant the slot owned a reference on `sk`, a listener
                // given to `hold()` as a `&Sock` (so an `inet_connection_sock`); the reference
                // is ours now and keeps the socket valid until `sock_put()`.
                let dropped = self.wake(unsafe { Sock::from_raw(sk) }, count(meta), pull);
                self.dropped.fetch_add(dropped, Ordering::Relaxed);
                // SAFETY: The slot's reference is ours; the socket is not used any more.
                unsafe { bindings::sock_put(sk) };
                break;
            }
        }
        if let Some(next) = next {
            self.arm(next);
        }
    }

    /// Delivers `count` held exclusive wake-ups of `listener`, at least one, and at most one per
    /// connection they may still be for (`queued`); returns how many of the `count` it did not
    /// deliver. Every connection a wake-up was held for completed on this object's CPU and
    /// was queued before its hold; so a count of 0 means they were all taken, and a
    /// connection queued after the read gets its own wake-up (or hold) from the path that
    /// queues it.
    fn wake(&self, listener: &Sock, count: u64, pull: bool) -> u64 {
        let how = WakeHow {
            pull,
            hold: false,
            spread: false,
        };
        let queued = u64::from((self.queued)(listener, self.cpu));
        for i in 0..count.max(1).min(queued) {
            if i > 0 || !how.pull {
                listener.data_ready();
                continue;
            }
            match listener.wake_listener_on(cpu::current(), how) {
                ListenerWake::Custom => listener.data_ready(),
                // Counted for withheld wake-ups only: a slot that only kept the connection
                // (count 0) woke a waiter already.
                ListenerWake::Pulled if count > 0 => {
                    self.pulled.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        count.saturating_sub(queued)
    }

    /// Held wake-ups this object did not deliver because their connections were taken before
    /// the deadline (by the worker they were held for, as a rule).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Releases of withheld wake-ups (held with `withheld`) that found this object's CPU idle
    /// and no waiter sitting there, and moved a task blocked elsewhere onto it (only with
    /// `pull`, see [`HeldWakes::hold`]).
    pub(crate) fn pulled(&self) -> u64 {
        self.pulled.load(Ordering::Relaxed)
    }
}

#[pinned_drop]
impl PinnedDrop for HeldWakes {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: Set up when initialised (type invariant). Waits for a running callback and
        // keeps the timer from being armed again.
        unsafe { bindings::timer_shutdown_sync(self.timer.get()) };
        // Nobody else runs on the object any more: every live slot is released here.
        self.release(true);
    }
}

/// # Safety
///
/// Called by the timer core for the timer of a [`HeldWakes`], set up in [`HeldWakes::new`].
unsafe extern "C" fn release_timer(timer: *mut bindings::timer_list) {
    // SAFETY: The timer is the `timer` field of a pinned `HeldWakes` (`Opaque` is transparent
    // over its `timer_list`), which stays alive until its drop waits for this callback.
    let held = unsafe { &*container_of!(timer, HeldWakes, timer) };
    held.release(false);
}
