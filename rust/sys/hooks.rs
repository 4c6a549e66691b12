// SPDX-License-Identifier: GPL-2.0

//! The ops table the patched kernel calls (`struct fastsocket_ops`, see
//! `include/net/fastsocket.h` as added by `patches/`).
//!
//! A module implements [`Hooks`], builds a [`HooksVTable`] for it with [`vtable`] and keeps a
//! [`Registration`] alive while the hooks may run.

use super::net::{RcuReadSection, Sock};
use kernel::{bindings, build_error, error::to_result, prelude::*, types::Opaque};

/// The hooks a fastsocket module implements.
///
/// Hooks run on the hot path of every connection: they must not sleep and should not allocate.
#[vtable]
pub(crate) trait Hooks {
    /// Name shown in `/proc/net/fastsocket_hooks` while registered.
    const NAME: &'static CStr;

    /// `child` was just accepted from `listener`, on the CPU running the hook.
    fn accept(_rcu: &RcuReadSection<'_>, _listener: &Sock, _child: &Sock) {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }
}

/// The C ops table for some [`Hooks`] implementation.
pub(crate) struct HooksVTable(Opaque<bindings::fastsocket_ops>);

// SAFETY: The table is built at compile time and never written afterwards; the kernel only
// reads it.
unsafe impl Sync for HooksVTable {}

/// Builds the ops table for `T`; meant for a `static`.
pub(crate) const fn vtable<T: Hooks>() -> HooksVTable {
    HooksVTable(Opaque::new(bindings::fastsocket_ops {
        name: T::NAME.as_char_ptr(),
        accept: if T::HAS_ACCEPT {
            Some(accept_trampoline::<T>)
        } else {
            None
        },
    }))
}

/// # Safety
///
/// Called by the kernel from `fastsocket_accept()`: `sk` and `newsk` are valid sockets, and
/// the call runs inside `rcu_read_lock()`.
unsafe extern "C" fn accept_trampoline<T: Hooks>(
    sk: *mut bindings::sock,
    newsk: *mut bindings::sock,
) {
    // SAFETY: The kernel holds `rcu_read_lock()` around the call.
    let rcu = unsafe { RcuReadSection::assume() };
    // SAFETY: Both sockets are valid for the duration of the call.
    let (listener, child) = unsafe { (Sock::from_raw(sk), Sock::from_raw(newsk)) };
    T::accept(&rcu, listener, child);
}

/// The hooks of one module, registered with the kernel for as long as this value lives.
///
/// # Invariants
///
/// `vtable` is registered with `fastsocket_register_ops()`.
pub(crate) struct Registration {
    vtable: &'static HooksVTable,
}

impl Registration {
    /// Registers `vtable`; fails with `EBUSY` if another module's hooks are registered.
    pub(crate) fn register(vtable: &'static HooksVTable) -> Result<Self> {
        // SAFETY: `vtable` is a valid ops table that lives forever.
        to_result(unsafe { bindings::fastsocket_register_ops(vtable.0.get()) })?;
        // INVARIANT: Registered just above.
        Ok(Self { vtable })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `vtable` is registered. The call returns once no hook
        // of it runs any more (it waits for an RCU grace period).
        unsafe { bindings::fastsocket_unregister_ops(self.vtable.0.get()) };
    }
}
