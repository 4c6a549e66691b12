// SPDX-License-Identifier: GPL-2.0

//! Shrinkers: the memory manager asks a cache to give back what it keeps when memory runs low
//! (and on `echo 2 > /proc/sys/vm/drop_caches`).

use super::global::Global;
use super::rcu;
use core::{ffi::c_void, marker::PhantomData, ptr::NonNull};
use kernel::{bindings, c_str, ffi::c_ulong, prelude::*};

/// A cache the memory manager may shrink.
pub(crate) trait Shrink: Send + Sync + 'static {
    /// An object the cache gives up; dropping it frees it, and may sleep.
    type Item;

    /// How many objects it could free now.
    fn count(&self) -> usize;

    /// Gives up one object (the one to free first), if it has any.
    fn take(&self) -> Option<Self::Item>;
}

/// A shrinker for the value of a [`Global`], registered for as long as this value lives. It
/// reaches the value only while the value is published.
///
/// # Invariants
///
/// `ptr` came from `shrinker_alloc()`, was registered with `shrinker_register()`, and its
/// `private_data` is the `&'static Global<T>` given to [`Registration::register`].
pub(crate) struct Registration<T: Shrink> {
    ptr: NonNull<bindings::shrinker>,
    _global: PhantomData<&'static Global<T>>,
}

// SAFETY: The shrinker is only freed through this value (in `Drop`), from any thread.
unsafe impl<T: Shrink> Send for Registration<T> {}
// SAFETY: `&Registration` gives no access to the shrinker.
unsafe impl<T: Shrink> Sync for Registration<T> {}

impl<T: Shrink> Registration<T> {
    /// Registers a shrinker named `name` (debugfs) for `global`'s value.
    pub(crate) fn register(name: &'static CStr, global: &'static Global<T>) -> Result<Self> {
        // SAFETY: A "%s" format with one C string argument; `shrinker_alloc()` copies the
        // name it formats. It returns null on failure.
        let raw =
            unsafe { bindings::shrinker_alloc(0, c_str!("%s").as_char_ptr(), name.as_char_ptr()) };
        let ptr = NonNull::new(raw).ok_or(ENOMEM)?;
        // SAFETY: The shrinker was just allocated and is not registered yet: nobody else reads
        // it. `global` lives forever; the trampolines cast `private_data` back to it.
        unsafe {
            (*raw).count_objects = Some(count_trampoline::<T>);
            (*raw).scan_objects = Some(scan_trampoline::<T>);
            (*raw).private_data = (global as *const Global<T>).cast_mut().cast::<c_void>();
            bindings::shrinker_register(raw);
        }
        // INVARIANT: Allocated, set up and registered above.
        Ok(Self {
            ptr,
            _global: PhantomData,
        })
    }
}

impl<T: Shrink> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the shrinker is registered; `shrinker_free()`
        // unregisters it, waits for the callbacks running, and frees it.
        unsafe { bindings::shrinker_free(self.ptr.as_ptr()) };
    }
}

/// The value of the [`Global`] a registered shrinker `s` is for, if it is published.
///
/// # Safety
///
/// `s` is a shrinker set up by [`Registration::register`] for `T`.
unsafe fn with_value<T: Shrink, R>(
    s: *mut bindings::shrinker,
    f: impl FnOnce(&T) -> R,
) -> Option<R> {
    // SAFETY: `private_data` is the `&'static Global<T>` stored by `register` (see the safety
    // section), never changed afterwards.
    let global = unsafe { &*(*s).private_data.cast::<Global<T>>() };
    rcu::read_section(|rcu| global.get(rcu).map(f))
}

/// # Safety
///
/// Called by the memory manager for a shrinker set up by [`Registration::register`] for `T`,
/// while it is registered.
unsafe extern "C" fn count_trampoline<T: Shrink>(
    s: *mut bindings::shrinker,
    _sc: *mut bindings::shrink_control,
) -> c_ulong {
    // SAFETY: See the function's safety section.
    match unsafe { with_value::<T, _>(s, T::count) } {
        Some(n) if n > 0 => n,
        // SHRINK_EMPTY: nothing to free.
        _ => c_ulong::MAX - 1,
    }
}

/// # Safety
///
/// Called by the memory manager for a shrinker set up by [`Registration::register`] for `T`,
/// while it is registered, with `sc` valid for the call.
unsafe extern "C" fn scan_trampoline<T: Shrink>(
    s: *mut bindings::shrinker,
    sc: *mut bindings::shrink_control,
) -> c_ulong {
    // SAFETY: `sc` is valid for the call (see the safety section).
    let n = unsafe { (*sc).nr_to_scan };
    let mut freed: c_ulong = 0;
    while freed < n {
        // SAFETY: See the function's safety section.
        let Some(Some(item)) = (unsafe { with_value::<T, _>(s, T::take) }) else {
            break;
        };
        // Freed outside the RCU read-side section, where it may sleep.
        drop(item);
        freed += 1;
    }
    if freed > 0 {
        freed
    } else {
        // SHRINK_STOP: nothing more to free now.
        c_ulong::MAX
    }
}
