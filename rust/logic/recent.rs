// SPDX-License-Identifier: GPL-2.0

//! Which listeners a CPU accepted from lately.
//!
//! One small direct-mapped table per CPU, written by `accept()` on that CPU and read by the
//! softirq of that CPU: a colliding entry only makes the answer "not seen", which is safe.
//!
//! Pure logic, no `kernel::` imports: also built and tested on the host (`rust/logic`).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const SLOTS: usize = 16;

/// Listener identities with the time of their last accept on one CPU.
#[derive(Default)]
pub struct RecentListeners {
    keys: [AtomicUsize; SLOTS],
    times: [AtomicU64; SLOTS],
}

fn slot(key: usize) -> usize {
    // Socket addresses are at least 64-byte aligned: mix the bits above that.
    ((key >> 6) ^ (key >> 12) ^ (key >> 18)) % SLOTS
}

impl RecentListeners {
    /// Records an accept from listener `key` at time `now`.
    pub fn note(&self, key: usize, now: u64) {
        let i = slot(key);
        self.keys[i].store(key, Ordering::Relaxed);
        self.times[i].store(now, Ordering::Relaxed);
    }

    /// Whether listener `key` had an accept at most `window` before `now`.
    pub fn seen_within(&self, key: usize, now: u64, window: u64) -> bool {
        let i = slot(key);
        self.keys[i].load(Ordering::Relaxed) == key
            && now.wrapping_sub(self.times[i].load(Ordering::Relaxed)) <= window
    }
}
