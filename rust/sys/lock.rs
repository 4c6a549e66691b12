// SPDX-License-Identifier: GPL-2.0

//! A spinlock that also disables bottom halves (`spin_lock_bh()`), for data shared between
//! process context and packet receive (softirq) on the same CPU.
//!
//! A [`Backend`] for the kernel crate's [`Lock`], as `kernel::sync::lock::spinlock` is for
//! `spin_lock()`.

use kernel::{
    bindings,
    sync::lock::{Backend, Lock},
};

/// A spinlock taken with bottom halves disabled. Build one with [`new_spinlock_bh!`].
pub(crate) type SpinLockBh<T> = Lock<T, SpinLockBhBackend>;

/// Creates a [`SpinLockBh`] initialiser with a lockdep class of its own call site.
macro_rules! new_spinlock_bh {
    ($inner:expr $(,)?) => {
        $crate::sys::lock::SpinLockBh::new(
            $inner,
            ::kernel::optional_name!(),
            ::kernel::static_lock_class!(),
        )
    };
}
pub(crate) use new_spinlock_bh;

/// The kernel's `spinlock_t`, locked with `spin_lock_bh()`.
pub(crate) struct SpinLockBhBackend;

// SAFETY: The underlying kernel `spinlock_t` object ensures mutual exclusion, and
// `spin_lock_bh()` keeps a softirq on this CPU from spinning on it while it is held.
unsafe impl Backend for SpinLockBhBackend {
    type State = bindings::spinlock_t;
    type GuardState = ();

    unsafe fn init(
        ptr: *mut Self::State,
        name: *const kernel::ffi::c_char,
        key: *mut bindings::lock_class_key,
    ) {
        // SAFETY: The safety requirements ensure that `ptr` is valid for writes, and `name` and
        // `key` are valid for read indefinitely.
        unsafe { bindings::__spin_lock_init(ptr, name, key) }
    }

    unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
        // SAFETY: The safety requirements of this function ensure that `ptr` points to valid
        // memory, and that it has been initialised before.
        unsafe { bindings::spin_lock_bh(ptr) }
    }

    unsafe fn unlock(ptr: *mut Self::State, _guard_state: &Self::GuardState) {
        // SAFETY: The safety requirements of this function ensure that `ptr` is valid and that
        // the caller is the owner of the spinlock, taken with `spin_lock_bh()`.
        unsafe { bindings::spin_unlock_bh(ptr) }
    }
}
