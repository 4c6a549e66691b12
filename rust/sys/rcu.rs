// SPDX-License-Identifier: GPL-2.0

//! Objects the kernel reaches through RCU-protected pointers, freed after a grace period.

use super::net::RcuReadSection;
use core::{ffi::c_void, marker::PhantomData, ptr::NonNull};
use kernel::{bindings, prelude::*, types::Opaque};

/// A type whose values may be dropped in an RCU callback, as a [`Published`] drops its value.
///
/// # Safety
///
/// Dropping a value of the type is allowed in softirq context (bottom halves off, as RCU
/// callbacks run): it does not sleep, takes no lock that process context holds with bottom
/// halves on, and borrows nothing (`'static`), since it runs after its owner is gone.
pub(crate) unsafe trait RcuDrop: Send + Sync + 'static {}

/// A `T` on the heap whose address may be published to RCU readers, and which is dropped
/// only after a grace period once its owner, a [`Published`], is dropped.
#[pin_data]
pub(crate) struct RcuBox<T: RcuDrop> {
    #[pin]
    head: Opaque<bindings::callback_head>,
    value: T,
}

/// An [`RcuBox`] published as a raw pointer: ownership is held by whoever has the pointer
/// (a field of a kernel object), not by a Rust value.
///
/// # Invariants
///
/// `ptr` came from [`RcuBox::publish`] and is owned by this value: the box is alive.
pub(crate) struct Published<T: RcuDrop> {
    ptr: NonNull<RcuBox<T>>,
    _owns: PhantomData<T>,
}

impl<T: RcuDrop> RcuBox<T> {
    /// Allocates `value` (with `flags`) and gives up its ownership as a raw pointer, to be
    /// stored where RCU readers find it.
    pub(crate) fn publish(value: T, flags: kernel::alloc::Flags) -> Result<Published<T>> {
        let boxed = KBox::pin_init(
            pin_init!(Self {
                head: Opaque::uninit(),
                value,
            }),
            flags,
        )?;
        // SAFETY: The box is not moved out of: it is freed through `KBox::from_raw()` in
        // `drop_trampoline`, so its content stays pinned.
        let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(boxed) });
        // INVARIANT: Just published.
        Ok(Published {
            // SAFETY: `KBox::into_raw()` never returns null.
            ptr: unsafe { NonNull::new_unchecked(raw) },
            _owns: PhantomData,
        })
    }

    /// Borrows the value behind a published pointer for an RCU read-side section.
    ///
    /// # Safety
    ///
    /// `ptr` came from [`Published::into_raw`] and was read, inside the section `rcu` proves,
    /// from where it was published; whoever takes it back ([`Published::from_raw`]) does so
    /// after unpublishing it.
    pub(crate) unsafe fn borrow<'a>(ptr: *const c_void, _rcu: &'a RcuReadSection<'_>) -> &'a T {
        // SAFETY: By the safety section the box is alive until a grace period after the
        // section began, so for `'a`.
        unsafe { &(*ptr.cast::<Self>()).value }
    }
}

impl<T: RcuDrop> Published<T> {
    /// The pointer to publish.
    pub(crate) fn into_raw(self) -> *mut c_void {
        let raw = self.ptr.as_ptr().cast();
        core::mem::forget(self);
        raw
    }

    /// Takes back a pointer that was published and is now unpublished.
    ///
    /// # Safety
    ///
    /// `ptr` came from [`Published::into_raw`], for the same `T`, and the caller owns it now:
    /// it was unpublished and nothing else will give it up.
    pub(crate) unsafe fn from_raw(ptr: *mut c_void) -> Self {
        // INVARIANT: See the safety section.
        Self {
            // SAFETY: Pointers from `into_raw()` are never null.
            ptr: unsafe { NonNull::new_unchecked(ptr.cast()) },
            _owns: PhantomData,
        }
    }

    /// The value.
    pub(crate) fn get(&self) -> &T {
        // SAFETY: By the type invariant the box is alive while `self` is.
        unsafe { &self.ptr.as_ref().value }
    }
}

impl<T: RcuDrop> Drop for Published<T> {
    /// Drops the value after a grace period: every RCU read-side section that may have found
    /// the pointer has ended by then. The owner unpublished it first.
    fn drop(&mut self) {
        let raw = self.ptr.as_ptr();
        // SAFETY: `raw` is a valid box (invariant of `Published`), given to RCU once, here;
        // `drop_trampoline::<T>` reclaims it. `head` is used by RCU only until the callback.
        unsafe { bindings::call_rcu((*raw).head.get(), Some(drop_trampoline::<T>)) };
    }
}

/// # Safety
///
/// Called by RCU once, after a grace period, with the `head` of an [`RcuBox<T>`] that the
/// drop of its [`Published`] gave it.
unsafe extern "C" fn drop_trampoline<T: RcuDrop>(head: *mut bindings::callback_head) {
    // SAFETY: `head` is the `head` field of an `RcuBox<T>` (see the safety section): step back
    // by its offset to the box (container_of).
    let raw = unsafe {
        head.cast::<u8>()
            .sub(core::mem::offset_of!(RcuBox<T>, head))
            .cast::<RcuBox<T>>()
    };
    // SAFETY: The box came from `KBox::into_raw()` in `publish` and is reclaimed once, here;
    // no reader can still reach it after the grace period. `T: RcuDrop` may be dropped in this
    // context.
    drop(unsafe { KBox::from_raw(raw) });
}

/// Waits for every drop queued by a [`Published`] to have run: a module calls it before its
/// code goes away.
pub(crate) fn barrier() {
    // SAFETY: `rcu_barrier()` may sleep and is called from process context (module exit).
    unsafe { bindings::rcu_barrier() };
}

/// Runs `f` inside an RCU read-side critical section (`rcu_read_lock()`), which it must not
/// leave by sleeping.
pub(crate) fn read_section<R>(f: impl FnOnce(&RcuReadSection<'_>) -> R) -> R {
    // SAFETY: Any context may enter a read-side section; it is left below.
    unsafe { bindings::rcu_read_lock() };
    // SAFETY: The section is held for the whole life of the token, which cannot leave `f`.
    let res = f(&unsafe { RcuReadSection::assume() });
    // SAFETY: Entered above.
    unsafe { bindings::rcu_read_unlock() };
    res
}

/// A point in RCU's time: [`GraceState::passed`] says whether a full grace period has elapsed
/// since, so that no read-side section that began before it can still be running.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct GraceState(kernel::ffi::c_ulong);

impl GraceState {
    /// Now (`get_state_synchronize_rcu()`). Starts no grace period: one that someone else
    /// starts later ends it.
    pub(crate) fn now() -> Self {
        // SAFETY: Reads RCU's grace-period counter; callable from any context but NMI.
        Self(unsafe { bindings::get_state_synchronize_rcu() })
    }

    /// Now, making sure a grace period that ends it is under way
    /// (`start_poll_synchronize_rcu()`; it takes an RCU node lock when it has to start one).
    pub(crate) fn start() -> Self {
        // SAFETY: Callable from any context but NMI; it does not sleep.
        Self(unsafe { bindings::start_poll_synchronize_rcu() })
    }

    /// Whether a full grace period has passed since `self` was taken.
    pub(crate) fn passed(self) -> bool {
        // SAFETY: Compares `self.0`, a value from one of the two functions above, with RCU's
        // counter; any context but NMI.
        unsafe { bindings::poll_state_synchronize_rcu(self.0) }
    }
}
