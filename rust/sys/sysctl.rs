// SPDX-License-Identifier: GPL-2.0

//! Integer knobs in `/proc/sys`, one set per network namespace.
//!
//! Reading is open to all; writing needs `CAP_NET_ADMIN` in the namespace's user namespace,
//! and a value outside the knob's range is refused with `EINVAL`.

use super::net::Net;
use core::{
    ffi::{c_int, c_void},
    ptr::{self, NonNull},
    sync::atomic::{AtomicBool, AtomicI32, Ordering},
};
use kernel::{bindings, prelude::*};

/// Description of one integer knob.
pub(crate) struct IntKnob {
    /// File name under the table's path.
    pub(crate) name: &'static CStr,
    /// Smallest accepted value.
    pub(crate) min: c_int,
    /// Largest accepted value.
    pub(crate) max: c_int,
    /// Value in a new namespace.
    pub(crate) default: c_int,
}

struct Table<const N: usize> {
    entries: [bindings::ctl_table; N],
    values: [AtomicI32; N],
}

/// `N` knobs registered under one path in one namespace; unregistered on drop.
///
/// # Invariants
///
/// `header` was returned by `register_net_sysctl_sz()` for `table.entries`, whose `data`
/// point into `table.values`, `extra1` at a `&'static IntKnob` and `extra2` at the namespace.
pub(crate) struct Knobs<const N: usize> {
    table: KBox<Table<N>>,
    header: NonNull<bindings::ctl_table_header>,
}

// SAFETY: The C table is not written after registration and the values are atomics; the
// header is only used to unregister.
unsafe impl<const N: usize> Send for Knobs<N> {}
// SAFETY: As above.
unsafe impl<const N: usize> Sync for Knobs<N> {}

impl<const N: usize> Knobs<N> {
    /// Registers `knobs` under `path` (e.g. `net/fastsocket`) in `net`.
    pub(crate) fn register(
        net: &Net,
        path: &'static CStr,
        knobs: &'static [IntKnob; N],
    ) -> Result<Self> {
        let mut table = KBox::new(
            Table {
                entries: core::array::from_fn(|_| bindings::ctl_table::default()),
                values: core::array::from_fn(|i| AtomicI32::new(knobs[i].default)),
            },
            GFP_KERNEL,
        )?;
        let Table { entries, values } = &mut *table;
        for ((entry, value), knob) in entries.iter_mut().zip(values.iter()).zip(knobs) {
            entry.procname = knob.name.as_char_ptr();
            entry.data = value.as_ptr().cast();
            entry.maxlen = core::mem::size_of::<c_int>() as c_int;
            entry.mode = 0o644;
            entry.proc_handler = Some(knob_handler);
            entry.extra1 = ptr::from_ref(knob).cast_mut().cast();
            entry.extra2 = net.as_raw().cast();
        }
        // SAFETY: `net` is valid, `path` is static and `entries` is a valid table at a stable
        // heap address that outlives the registration (see `Drop`).
        let header = unsafe {
            bindings::register_net_sysctl_sz(
                net.as_raw(),
                path.as_char_ptr(),
                table.entries.as_mut_ptr(),
                N,
            )
        };
        let header = NonNull::new(header).ok_or(ENOMEM)?;
        // INVARIANT: Registered above with the entries filled in as described.
        Ok(Self { table, header })
    }

    /// The current value of knob `index`.
    pub(crate) fn get(&self, index: usize) -> c_int {
        self.table.values[index].load(Ordering::Relaxed)
    }
}

impl<const N: usize> Drop for Knobs<N> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `header` is registered; this waits for running handlers
        // before the table is freed.
        unsafe { bindings::unregister_net_sysctl_table(self.header.as_ptr()) };
    }
}

/// Set once the first rejected write has been logged.
static REJECT_LOGGED: AtomicBool = AtomicBool::new(false);

/// # Safety
///
/// Called by the sysctl core for one of the entries built in [`Knobs::register`], with the
/// arguments of a `proc_handler`.
unsafe extern "C" fn knob_handler(
    table: *const bindings::ctl_table,
    write: c_int,
    buffer: *mut c_void,
    lenp: *mut usize,
    ppos: *mut bindings::loff_t,
) -> c_int {
    // SAFETY: By the type invariant of `Knobs`, `extra1` points at a static `IntKnob` and
    // `extra2` at the namespace, which outlives its sysctl table.
    let (knob, net) = unsafe {
        (
            &*(*table).extra1.cast::<IntKnob>(),
            (*table).extra2.cast::<bindings::net>(),
        )
    };
    if write != 0 {
        // SAFETY: `net` is valid (see above) and so is its `user_ns`.
        let admin =
            unsafe { bindings::ns_capable((*net).user_ns, bindings::CAP_NET_ADMIN as c_int) };
        if !admin {
            return EPERM.to_errno();
        }
    }
    // SAFETY: `table` is valid; a copy with the range in extra1/extra2 is what
    // `proc_dointvec_minmax()` expects.
    let mut bounded = unsafe { ptr::read(table) };
    bounded.extra1 = ptr::from_ref(&knob.min).cast_mut().cast();
    bounded.extra2 = ptr::from_ref(&knob.max).cast_mut().cast();
    // SAFETY: `bounded` is valid for the call and the other arguments come from the core.
    let ret = unsafe { bindings::proc_dointvec_minmax(&bounded, write, buffer, lenp, ppos) };
    if write != 0 && ret == EINVAL.to_errno() && !REJECT_LOGGED.swap(true, Ordering::Relaxed) {
        pr_warn!(
            "rejected a write to net.fastsocket.{}: expects an integer in {}..={} (logged once)\n",
            knob.name,
            knob.min,
            knob.max
        );
    }
    ret
}
