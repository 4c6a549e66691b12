// SPDX-License-Identifier: GPL-2.0

//! A value that a module sets up when it loads and that its hooks, running in RCU read-side
//! sections, reach through a `static`.

use super::net::RcuReadSection;
use core::{
    ptr,
    sync::atomic::{AtomicPtr, Ordering},
};
use kernel::{bindings, prelude::*};

/// A `T` on the heap, published in a `static` while an [`Installed`] lives.
///
/// # Invariants
///
/// `ptr` is null, or came from `KBox::into_raw()` in [`Global::install`] and is owned by the
/// one [`Installed`] for `self`, which frees it only after unpublishing it and waiting for a
/// grace period.
pub(crate) struct Global<T: Send + Sync> {
    ptr: AtomicPtr<T>,
}

/// Keeps the value of a [`Global`] published; dropping it unpublishes the value, waits for
/// the RCU readers that may still use it, and drops it.
pub(crate) struct Installed<T: Send + Sync + 'static> {
    global: &'static Global<T>,
}

impl<T: Send + Sync> Global<T> {
    /// Nothing published yet.
    pub(crate) const fn new() -> Self {
        Self {
            ptr: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Publishes `value`; fails with `EBUSY` if a value is published already.
    pub(crate) fn install(&'static self, value: T) -> Result<Installed<T>> {
        let raw = KBox::into_raw(KBox::new(value, GFP_KERNEL)?);
        if self
            .ptr
            .compare_exchange(ptr::null_mut(), raw, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // SAFETY: `raw` came from `KBox::into_raw()` just above and was not published.
            drop(unsafe { KBox::from_raw(raw) });
            return Err(EBUSY);
        }
        // INVARIANT: Published just above; the `Installed` owns it.
        Ok(Installed { global: self })
    }

    /// The published value, for an RCU read-side section.
    pub(crate) fn get<'a>(&'a self, _rcu: &'a RcuReadSection<'_>) -> Option<&'a T> {
        let raw = self.ptr.load(Ordering::Acquire);
        // SAFETY: By the type invariant a non-null pointer is a live `T`, freed only a grace
        // period after it was unpublished, so not before the section `_rcu` proves ends.
        unsafe { raw.as_ref() }
    }
}

impl<T: Send + Sync + 'static> Drop for Installed<T> {
    fn drop(&mut self) {
        let raw = self.global.ptr.swap(ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: Process context (a module's exit or a failed init), where sleeping is allowed.
        unsafe { bindings::synchronize_rcu() };
        if !raw.is_null() {
            // SAFETY: `raw` came from `KBox::into_raw()` in `install` (type invariant), was
            // unpublished above and no reader has it any more after the grace period.
            drop(unsafe { KBox::from_raw(raw) });
        }
    }
}
