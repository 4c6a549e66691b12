// SPDX-License-Identifier: GPL-2.0

//! A bounded first-in first-out queue over storage the caller allocates once.
//!
//! Pure logic, no `kernel::` imports: also built and tested on the host (`rust/logic`).

use core::marker::PhantomData;
use core::ops::DerefMut;

/// At most `slots.len()` values, oldest first, in `slots` (a `KVec` in the module, a `Vec` on
/// the host), which never grows.
///
/// # Invariants
///
/// `len <= slots.len()`, `head < slots.len()` (when there are slots), and the slots `head,
/// head + 1, ...` (modulo `slots.len()`), `len` of them, hold `Some`, every other slot `None`.
pub struct Fifo<T, S> {
    slots: S,
    head: usize,
    len: usize,
    _values: PhantomData<T>,
}

impl<T, S: DerefMut<Target = [Option<T>]>> Fifo<T, S> {
    /// An empty queue holding at most `slots.len()` values; every slot must be `None`
    /// (`None` if one is not).
    pub fn new(slots: S) -> Option<Self> {
        slots.iter().all(Option::is_none).then_some(Self {
            slots,
            head: 0,
            len: 0,
            _values: PhantomData,
        })
    }

    /// How many values it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Appends `value` as the newest, or gives it back if the queue is full.
    pub fn push(&mut self, value: T) -> Result<(), T> {
        let cap = self.slots.len();
        if self.len == cap {
            return Err(value);
        }
        self.slots[(self.head + self.len) % cap] = Some(value);
        self.len += 1;
        Ok(())
    }

    /// Takes the oldest value, if `take` accepts it (it gets the value and gives it back as
    /// `Err` to leave it queued).
    pub fn pop_if<R>(&mut self, take: impl FnOnce(T) -> Result<R, T>) -> Option<R> {
        if self.len == 0 {
            return None;
        }
        let oldest = self.slots[self.head].take()?;
        match take(oldest) {
            Ok(r) => {
                self.head = (self.head + 1) % self.slots.len();
                self.len -= 1;
                Some(r)
            }
            Err(back) => {
                self.slots[self.head] = Some(back);
                None
            }
        }
    }
}
