// SPDX-License-Identifier: GPL-2.0

//! Per-CPU data from the kernel's per-CPU allocator.

use super::cpu;
use super::rcu::RcuDrop;
use core::{ffi::c_void, marker::PhantomData, mem, ptr::NonNull};
use kernel::{bindings, prelude::*};

/// How an allocation may wait for memory.
pub(crate) enum Alloc {
    /// It may sleep (`GFP_KERNEL`): process context, no lock held.
    MaySleep,
    /// It must not sleep (`GFP_ATOMIC`): under a spinlock or in an RCU read-side section.
    Atomic,
}

/// One `T` for every possible CPU, in per-CPU memory.
///
/// `T` is shared between CPUs (a reader sums all CPUs while writers update their own), so it
/// must be [`Sync`]; counters are atomics. Each CPU's `T` is initialised in place and stays at
/// its address until the `PerCpu` is dropped (the per-CPU allocation never moves, whatever
/// happens to the `PerCpu` value itself): it is pinned, so it may hold objects the kernel keeps
/// pointers to, such as timers. Only shared references are handed out, never `&mut T`.
///
/// # Invariants
///
/// `ptr` was returned by `__alloc_percpu()` for `size_of::<T>()` bytes aligned to
/// `align_of::<T>()`, and the slot of every possible CPU holds a `T` initialised in place that
/// is dropped there, in [`Drop::drop`], before the memory is freed.
pub(crate) struct PerCpu<T: Sync> {
    ptr: NonNull<c_void>,
    _owns: PhantomData<T>,
}

// SAFETY: The slots are only reached through `&T` (so `T: Sync` is needed), and the value that
// drops them may move to another thread (so `T: Send` is needed).
unsafe impl<T: Sync + Send> Send for PerCpu<T> {}
// SAFETY: Shared access only hands out `&T`, and `T: Sync`.
unsafe impl<T: Sync> Sync for PerCpu<T> {}
// SAFETY: Dropping drops every slot's `T`, which may be dropped in an RCU callback, then calls
// `free_percpu()`, which may be called in softirq context; the type borrows nothing (`T` is
// `'static`).
unsafe impl<T: RcuDrop> RcuDrop for PerCpu<T> {}

/// `per_cpu_ptr(ptr, cpu)`: the address of `cpu`'s slot of the per-CPU allocation `ptr`.
///
/// # Safety
///
/// `ptr` came from the per-CPU allocator and `cpu` is a possible CPU.
unsafe fn per_cpu_ptr(ptr: *mut c_void, cpu: u32) -> *mut c_void {
    #[cfg(all(CONFIG_X86_64, CONFIG_SMP))]
    {
        // On x86-64 a CPU's slot lies `__per_cpu_offset[cpu]` bytes from `ptr`, which is what
        // `per_cpu_ptr()` computes; done in place because it runs for every connection.
        // SAFETY: `__per_cpu_offset` is set during boot for every possible CPU and only read
        // afterwards; a possible CPU is below `NR_CPUS`, the array's length.
        let offset = unsafe { bindings::__per_cpu_offset[cpu as usize] };
        ptr.wrapping_byte_add(offset)
    }
    #[cfg(not(all(CONFIG_X86_64, CONFIG_SMP)))]
    // SAFETY: As the function's safety section requires.
    unsafe {
        bindings::per_cpu_ptr(ptr, cpu)
    }
}

impl<T: Sync> PerCpu<T> {
    const SIZE_OK: () = assert!(
        mem::size_of::<T>() > 0,
        "__alloc_percpu() needs a non-zero size"
    );

    /// Allocates per-CPU storage and sets every possible CPU's slot to `T::default()`.
    pub(crate) fn new() -> Result<Self>
    where
        T: Default,
    {
        Self::pin_init_with(Alloc::MaySleep, |_| T::default())
    }

    /// Allocates per-CPU storage (`how`: [`Alloc::Atomic`] where the caller may not sleep)
    /// and initialises the slot of every possible CPU in place with the initialiser
    /// `init(cpu)` returns. If one fails, the slots initialised before it are dropped, the
    /// storage is freed and its error returned.
    pub(crate) fn pin_init_with<I, F>(how: Alloc, mut init: F) -> Result<Self>
    where
        I: PinInit<T, Error>,
        F: FnMut(u32) -> I,
    {
        #[allow(clippy::let_unit_value)]
        let () = Self::SIZE_OK;
        let gfp = match how {
            Alloc::MaySleep => bindings::GFP_KERNEL,
            Alloc::Atomic => bindings::GFP_ATOMIC,
        };
        // SAFETY: A non-zero size, a power-of-two alignment (below a page for any type built
        // here) and these flags are valid arguments; a null return means failure.
        let raw =
            unsafe { bindings::__alloc_percpu_gfp(mem::size_of::<T>(), mem::align_of::<T>(), gfp) };
        let ptr = NonNull::new(raw).ok_or(ENOMEM)?;
        for cpu in cpu::possible() {
            // SAFETY: `cpu` is possible, so `per_cpu_ptr()` gives its slot of the fresh
            // allocation: sized and aligned for `T`, not initialised and not shared. The slot
            // does not move until it is dropped (in `Drop::drop` or just below), so it may be
            // treated as pinned. On error the initialiser left it uninitialised.
            let res =
                unsafe { init(cpu).__pinned_init(per_cpu_ptr(ptr.as_ptr(), cpu).cast::<T>()) };
            if let Err(e) = res {
                for done in cpu::possible().take_while(|&done| done < cpu) {
                    // SAFETY: The slots of the possible CPUs below `cpu` were initialised
                    // above (the possible mask is fixed after boot), are not shared, and are
                    // dropped once, here.
                    unsafe {
                        core::ptr::drop_in_place(per_cpu_ptr(ptr.as_ptr(), done).cast::<T>())
                    };
                }
                // SAFETY: `ptr` came from `__alloc_percpu()`, no slot holds a value any more,
                // and it is freed once, here.
                unsafe { bindings::free_percpu(ptr.as_ptr()) };
                return Err(e);
            }
        }
        // INVARIANT: Allocated above, every possible CPU's slot initialised in place.
        Ok(Self {
            ptr,
            _owns: PhantomData,
        })
    }

    /// The slot of `cpu`, or `None` if `cpu` is not a possible CPU.
    pub(crate) fn get(&self, cpu: u32) -> Option<&T> {
        if !cpu::is_possible(cpu) {
            return None;
        }
        // SAFETY: By the type invariant the slot of the possible CPU `cpu` holds a `T`, which
        // lives as long as `self`.
        Some(unsafe { &*per_cpu_ptr(self.ptr.as_ptr(), cpu).cast::<T>() })
    }

    /// The slot of the CPU the caller runs on (it may migrate right after: the slot of the CPU
    /// it ran on then, which is as good for data other CPUs may also use).
    pub(crate) fn local(&self) -> &T {
        // SAFETY: The running CPU is a possible CPU, so by the type invariant its slot holds a
        // `T`, which lives as long as `self`; `per_cpu_ptr()` only computes its address.
        unsafe { &*per_cpu_ptr(self.ptr.as_ptr(), cpu::current()).cast::<T>() }
    }

    /// Every possible CPU with its slot.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        cpu::possible().filter_map(move |cpu| Some((cpu, self.get(cpu)?)))
    }
}

impl<T: Sync> Drop for PerCpu<T> {
    fn drop(&mut self) {
        for cpu in cpu::possible() {
            // SAFETY: By the type invariant the slot holds a `T`, dropped in place (as pinning
            // requires) and once; nobody can use it any more since we have `&mut self`.
            unsafe { core::ptr::drop_in_place(per_cpu_ptr(self.ptr.as_ptr(), cpu).cast::<T>()) };
        }
        // SAFETY: `ptr` came from `__alloc_percpu()` and is freed once, here.
        unsafe { bindings::free_percpu(self.ptr.as_ptr()) };
    }
}
