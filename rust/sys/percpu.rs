// SPDX-License-Identifier: GPL-2.0

//! Per-CPU data from the kernel's per-CPU allocator.

use super::cpu;
use core::{ffi::c_void, marker::PhantomData, mem, ptr::NonNull};
use kernel::{bindings, prelude::*};

/// One `T` for every possible CPU, in per-CPU memory.
///
/// `T` is shared between CPUs (a reader sums all CPUs while writers update their own), so it
/// must be [`Sync`]; counters are atomics.
///
/// # Invariants
///
/// `ptr` was returned by `__alloc_percpu()` for `size_of::<T>()` bytes aligned to
/// `align_of::<T>()`, and the slot of every possible CPU holds an initialised `T`.
pub(crate) struct PerCpu<T: Default + Sync> {
    ptr: NonNull<c_void>,
    _owns: PhantomData<T>,
}

// SAFETY: The slots are only reached through `&T`, and `T: Sync`.
unsafe impl<T: Default + Sync + Send> Send for PerCpu<T> {}
// SAFETY: As above: shared access only hands out `&T`.
unsafe impl<T: Default + Sync> Sync for PerCpu<T> {}

impl<T: Default + Sync> PerCpu<T> {
    /// Allocates per-CPU storage and sets every possible CPU's slot to `T::default()`.
    pub(crate) fn new() -> Result<Self> {
        Self::new_with(|_| {})
    }

    /// Like [`PerCpu::new`], then calls `init` on each slot at its final address (for objects
    /// the kernel keeps pointers to, such as timers).
    pub(crate) fn new_with(init: impl Fn(&T)) -> Result<Self> {
        // SAFETY: Any size and a power-of-two alignment are valid arguments; a null return
        // means failure.
        let raw = unsafe { bindings::__alloc_percpu(mem::size_of::<T>(), mem::align_of::<T>()) };
        let ptr = NonNull::new(raw).ok_or(ENOMEM)?;
        for cpu in cpu::possible() {
            // SAFETY: `cpu` is possible, so `per_cpu_ptr()` gives its slot of the fresh
            // allocation, sized and aligned for `T` and not yet shared.
            unsafe {
                bindings::per_cpu_ptr(ptr.as_ptr(), cpu)
                    .cast::<T>()
                    .write(T::default())
            };
        }
        // INVARIANT: Allocated above, every possible CPU's slot initialised.
        let this = Self {
            ptr,
            _owns: PhantomData,
        };
        for (_, slot) in this.iter() {
            init(slot);
        }
        Ok(this)
    }

    /// The slot of `cpu`, or `None` if `cpu` is not a possible CPU.
    pub(crate) fn get(&self, cpu: u32) -> Option<&T> {
        if !cpu::is_possible(cpu) {
            return None;
        }
        // SAFETY: By the type invariant the slot of the possible CPU `cpu` holds a `T`, which
        // lives as long as `self`.
        Some(unsafe { &*bindings::per_cpu_ptr(self.ptr.as_ptr(), cpu).cast::<T>() })
    }

    /// Every possible CPU with its slot.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        cpu::possible().filter_map(move |cpu| Some((cpu, self.get(cpu)?)))
    }
}

impl<T: Default + Sync> Drop for PerCpu<T> {
    fn drop(&mut self) {
        for cpu in cpu::possible() {
            // SAFETY: By the type invariant the slot holds a `T`; nobody can use it any more
            // since we have `&mut self`.
            unsafe {
                core::ptr::drop_in_place(bindings::per_cpu_ptr(self.ptr.as_ptr(), cpu).cast::<T>())
            };
        }
        // SAFETY: `ptr` came from `__alloc_percpu()` and is freed once, here.
        unsafe { bindings::free_percpu(self.ptr.as_ptr()) };
    }
}
