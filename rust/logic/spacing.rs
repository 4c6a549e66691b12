// SPDX-License-Identifier: GPL-2.0

//! About one event per window of time: a gate that lets a costly action through, then again
//! only when the window has passed since the last one that was done.
//!
//! Times are jiffies as the kernel keeps them, one machine word that wraps: only their wrapping
//! difference is compared, as the kernel's `time_after()` does.
//!
//! Pure logic, no `kernel::` imports: also built and tested on the host (`rust/logic`).

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// When the gate last let an event through.
#[derive(Default)]
pub struct Spacing {
    /// The time of the last event passed, if `armed`.
    last: AtomicUsize,
    /// Whether an event ever passed (until then any time passes).
    armed: AtomicBool,
}

impl Spacing {
    /// Whether an event at `now` may pass: none passed in the last `window` (jiffies, well
    /// below half the word's range).
    pub fn open(&self, now: usize, window: usize) -> bool {
        !self.armed.load(Ordering::Relaxed)
            || now.wrapping_sub(self.last.load(Ordering::Relaxed)) >= window
    }

    /// Counts an event at `now` as the last one passed. Racing callers may both pass and
    /// note: the gate only spaces events out, it does not count them.
    pub fn note(&self, now: usize) {
        self.last.store(now, Ordering::Relaxed);
        self.armed.store(true, Ordering::Relaxed);
    }
}
