// SPDX-License-Identifier: GPL-2.0

//! Which listeners a CPU accepted from lately, and which task did.
//!
//! One small direct-mapped table per CPU, written by `accept()` on that CPU (and its times by
//! the listener wake-up there, [`RecentListeners::refresh`]) and read by the softirq of that
//! CPU and by other CPUs' accepts: a colliding entry only makes the answer "not seen", which
//! is safe.
//! The three words of an entry are written one by one: a reader racing with a writer may see
//! one listener's key with another's time or task, which only changes a hint.
//!
//! Times are jiffies as the kernel keeps them, one machine word that wraps (after 49.7 days at
//! `HZ=1000` where a word is 32 bits): they are only ever compared through their wrapping
//! difference, as the kernel's `time_after()` does, never as plain numbers.
//!
//! Pure logic, no `kernel::` imports: also built and tested on the host (`rust/logic`).

use core::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

const SLOTS: usize = 16;

/// Listener identities with the time of their last accept on one CPU.
#[derive(Default)]
pub struct RecentListeners {
    keys: [AtomicUsize; SLOTS],
    times: [AtomicUsize; SLOTS],
    /// The acceptor: its pid in the initial pid namespace (0: none yet).
    tasks: [AtomicI32; SLOTS],
}

fn slot(key: usize) -> usize {
    // Socket addresses are at least 64-byte aligned: mix the bits above that.
    ((key >> 6) ^ (key >> 12) ^ (key >> 18)) % SLOTS
}

impl RecentListeners {
    /// Records an accept from listener `key` at time `now` (jiffies) by task `task` (its pid in
    /// the initial pid namespace).
    pub fn note(&self, key: usize, now: usize, task: i32) {
        let i = slot(key);
        self.keys[i].store(key, Ordering::Relaxed);
        self.times[i].store(now, Ordering::Relaxed);
        self.tasks[i].store(task, Ordering::Relaxed);
    }

    /// Records that a waiter of listener `key` sitting on this CPU was woken at `now`: the
    /// last acceptor noted for `key` (whatever its age) is taken to be present again from
    /// then, as if it had just accepted. Nothing if `key` has no entry (never accepted here,
    /// or its entry was taken by a colliding listener): presence still needs an accept here.
    pub fn refresh(&self, key: usize, now: usize) {
        let i = slot(key);
        if self.keys[i].load(Ordering::Relaxed) == key {
            self.times[i].store(now, Ordering::Relaxed);
        }
    }

    /// The task that accepted from listener `key` last, if that was at most `window` before
    /// `now` (as [`Self::seen_within`]).
    pub fn acceptor_within(&self, key: usize, now: usize, window: usize) -> Option<i32> {
        self.seen_within(key, now, window)
            .then(|| self.tasks[slot(key)].load(Ordering::Relaxed))
    }

    /// Whether listener `key` had an accept at most `window` before `now` (jiffies, `window`
    /// well below half the word's range).
    ///
    /// Wrap-safe: the age is the wrapping difference `now - then`, so a note just before the
    /// counter wrapped is still seen just after it, and a note stamped later than `now` (by a
    /// racing CPU) has a huge age and is not seen. An entry exactly a multiple of the word's
    /// range old aliases as recent, as with `time_after()`: it only costs a short hold.
    pub fn seen_within(&self, key: usize, now: usize, window: usize) -> bool {
        let i = slot(key);
        self.keys[i].load(Ordering::Relaxed) == key
            && now.wrapping_sub(self.times[i].load(Ordering::Relaxed)) <= window
    }
}
