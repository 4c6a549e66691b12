// SPDX-License-Identifier: GPL-2.0

//! Listener wake-ups held back on one CPU and released by a timer.
//!
//! When a connection completes on a CPU whose worker is busy, the module may keep the other
//! workers asleep for a short bound so that the local worker, coming back to `accept()`, takes
//! it. [`HeldWakes`] keeps a reference on each such listener and wakes it, as the stack would
//! have, once the bound passed since it was held or since the local worker last accepted from
//! it (whichever is later), or when it is dropped: a held wake-up is delayed, never lost.

use super::cpu;
use super::net::{ListenerWake, Sock, WakeHow};
use super::time;
use core::{
    ptr,
    sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering},
};
use kernel::{bindings, types::Opaque};

/// How many listeners one CPU may hold at once; more are woken right away.
const SLOTS: usize = 8;

/// The held listeners of one CPU.
///
/// # Invariants
///
/// Each non-null slot owns a reference (`sock_hold()`) on a listening socket whose exclusive
/// waiters were not woken; its deadline says when they must be. Once [`HeldWakes::init`] ran,
/// `timer` is set up to call [`release_timer`] for this object, which does not move any more
/// (it lives in per-CPU memory).
#[repr(C)]
pub(crate) struct HeldWakes {
    // First field: the timer callback finds the object from it.
    timer: Opaque<bindings::timer_list>,
    slots: [AtomicPtr<bindings::sock>; SLOTS],
    deadlines: [AtomicU64; SLOTS],
    /// Whether the timer's wake-up may pull a blocked `accept()` or `epoll_wait()` here.
    pull: AtomicBool,
}

impl Default for HeldWakes {
    fn default() -> Self {
        Self {
            deadlines: Default::default(),
            // SAFETY: An all-zero `timer_list` is a valid, never armed timer.
            timer: Opaque::new(unsafe { core::mem::MaybeUninit::zeroed().assume_init() }),
            slots: [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS],
            pull: AtomicBool::new(false),
        }
    }
}

// SAFETY: The slots are atomics owning socket references (which may be released from any
// CPU); the timer is only touched through the kernel's timer API, which is thread-safe.
unsafe impl Send for HeldWakes {}
// SAFETY: As above.
unsafe impl Sync for HeldWakes {}

impl HeldWakes {
    /// Sets up the timer; called once the object sits at its final address.
    pub(crate) fn init(&self) {
        // SAFETY: `timer` is zeroed and not yet set up; the object does not move any more (see
        // the type invariant). Pinned: the timer fires on the CPU that armed it.
        unsafe {
            bindings::timer_setup(
                self.timer.get(),
                Some(release_timer),
                bindings::TIMER_PINNED,
            )
        };
    }

    /// Holds the wake-up of `listener` for up to `bound` jiffies. Returns `false` (and holds
    /// nothing) if no slot is free; the caller must then wake the listener itself. When the
    /// bound ends, the timer (on this CPU, where the held connections completed) wakes the
    /// listener as the stack would, except that with `pull` it may wake a task blocked in
    /// `accept()` or `epoll_wait()` onto this CPU (see [`Sock::wake_listener_on`]).
    ///
    /// Called in softirq context on the CPU this object belongs to.
    pub(crate) fn hold(&self, listener: &Sock, bound: u64, pull: bool) -> bool {
        self.pull.store(pull, Ordering::Relaxed);
        let sk = listener.as_raw();
        let deadline = time::jiffies() + bound;
        if let Some(i) = self
            .slots
            .iter()
            .position(|s| s.load(Ordering::Relaxed) == sk)
        {
            // Already held: push the deadline so that it covers this connection too (the timer
            // re-arms itself for it).
            self.deadlines[i].fetch_max(deadline, Ordering::Relaxed);
            return true;
        }
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.load(Ordering::Relaxed).is_null())
        else {
            return false;
        };
        let deadline = time::jiffies() + bound;
        self.deadlines[i].store(deadline, Ordering::Relaxed);
        // SAFETY: The listener is valid; the reference taken here is owned by the slot.
        unsafe { bindings::sock_hold(sk) };
        self.slots[i].store(sk, Ordering::Release);
        self.arm(deadline);
        true
    }

    /// Whether a wake-up of `listener` is held here, i.e. the timer has yet to wake it.
    pub(crate) fn is_held(&self, listener: &Sock) -> bool {
        let sk = listener.as_raw();
        self.slots.iter().any(|s| s.load(Ordering::Acquire) == sk)
    }

    /// The local worker just accepted from `listener`: it is alive, so what is still held for
    /// it gets a fresh `bound` from now.
    pub(crate) fn refresh(&self, listener: &Sock, bound: u64) {
        let sk = listener.as_raw();
        if let Some(i) = self
            .slots
            .iter()
            .position(|s| s.load(Ordering::Relaxed) == sk)
        {
            let deadline = time::jiffies() + bound;
            self.deadlines[i].fetch_max(deadline, Ordering::Relaxed);
        }
    }

    fn arm(&self, deadline: u64) {
        // SAFETY: The timer was set up by `init`. `timer_reduce()` arms it, or keeps an earlier
        // expiry.
        unsafe { bindings::timer_reduce(self.timer.get(), deadline as _) };
    }

    /// Wakes each held listener whose deadline passed (all of them with `all`) as the stack
    /// would (from the timer, on this CPU, possibly pulling a waiter here), drops the
    /// references, and re-arms the timer for the others.
    fn release(&self, all: bool) {
        let how = WakeHow {
            pull: !all && self.pull.load(Ordering::Relaxed),
            hold: false,
        };
        let now = time::jiffies();
        let mut next = None;
        for (slot, deadline) in self.slots.iter().zip(&self.deadlines) {
            if slot.load(Ordering::Relaxed).is_null() {
                continue;
            }
            let due = deadline.load(Ordering::Relaxed);
            if !all && due > now {
                next = Some(next.map_or(due, |n: u64| n.min(due)));
                continue;
            }
            let sk = slot.swap(ptr::null_mut(), Ordering::Acquire);
            if !sk.is_null() {
                // SAFETY: By the type invariant the slot owned a reference on `sk`, which keeps
                // it valid until the `sock_put()` below.
                let listener = unsafe { Sock::from_raw(sk) };
                if !how.pull
                    || matches!(
                        listener.wake_listener_on(cpu::current(), how),
                        ListenerWake::Custom
                    )
                {
                    listener.data_ready();
                }
                // SAFETY: The slot's reference is ours now; `listener` is not used any more.
                unsafe { bindings::sock_put(sk) };
            }
        }
        if let Some(next) = next {
            self.arm(next);
        }
    }
}

impl Drop for HeldWakes {
    fn drop(&mut self) {
        // SAFETY: Set up by `init` (or all-zero, which `timer_delete_sync()` treats as never
        // armed); waits for a running callback.
        unsafe { bindings::timer_delete_sync(self.timer.get()) };
        self.release(true);
    }
}

/// # Safety
///
/// Called by the timer core for the timer of a [`HeldWakes`].
unsafe extern "C" fn release_timer(timer: *mut bindings::timer_list) {
    // SAFETY: The timer is the first field of a `HeldWakes` (see `init`), alive until its drop,
    // which waits for this callback.
    let held = unsafe { &*timer.cast::<HeldWakes>() };
    held.release(false);
}
