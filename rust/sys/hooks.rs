// SPDX-License-Identifier: GPL-2.0

//! The ops table the patched kernel calls (`struct fastsocket_ops`, see
//! `include/net/fastsocket.h` as added by `patches/`).
//!
//! A module implements [`Hooks`], builds a [`HooksVTable`] for it with [`vtable`] and keeps a
//! [`Registration`] alive while the hooks may run.

use super::net::{RcuReadSection, Sock};
use core::ffi::{c_int, c_uint};
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

    /// `child` completed its handshake on the running CPU and was queued on `listener`.
    ///
    /// Returns `true` if the hook woke the listener's waiters (with
    /// [`Sock::wake_listener_on`]), `false` to let the stack wake them as usual.
    fn child_ready(_rcu: &RcuReadSection<'_>, _listener: &Sock, _child: &Sock) -> bool {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// A task is about to take a connection from `listener`'s queue, or asks whether it could
    /// (poll, blocking `accept()`).
    ///
    /// Returns which connections to prefer, `None` to treat the queue as stock does.
    fn accept_pick(_rcu: &RcuReadSection<'_>, _listener: &Sock) -> Option<AcceptPick> {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// No connection of the task's CPU is among the first ones scanned: may the task take
    /// `child`, queued on `listener`, whose handshake completed on another CPU? If not, it looks
    /// absent to the task (poll, `accept()`) until a later wake-up. Called with the queue's
    /// spinlock held.
    fn may_take(_rcu: &RcuReadSection<'_>, _listener: &Sock, _child: &Sock) -> bool {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }
}

/// Which queued connection `accept()` should take.
pub(crate) struct AcceptPick {
    /// Prefer a connection whose handshake completed on this CPU...
    pub(crate) cpu: u32,
    /// ...among the first `scan` queued ones (at least 1); otherwise take the oldest.
    pub(crate) scan: u32,
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
        child_ready: if T::HAS_CHILD_READY {
            Some(child_ready_trampoline::<T>)
        } else {
            None
        },
        accept_pick: if T::HAS_ACCEPT_PICK {
            Some(accept_pick_trampoline::<T>)
        } else {
            None
        },
        may_take: if T::HAS_MAY_TAKE {
            Some(may_take_trampoline::<T>)
        } else {
            None
        },
    }))
}

/// # Safety
///
/// Called by the kernel from `fastsocket_accept()` at the end of `inet_csk_accept()`: `sk` is
/// the listener and `newsk` the connection just taken from its queue, both valid
/// `inet_connection_sock`s, and the call runs inside `rcu_read_lock()`.
unsafe extern "C" fn accept_trampoline<T: Hooks>(
    sk: *mut bindings::sock,
    newsk: *mut bindings::sock,
) {
    // SAFETY: The kernel holds `rcu_read_lock()` around the call.
    let rcu = unsafe { RcuReadSection::assume() };
    // SAFETY: Both sockets are valid `inet_connection_sock`s for the duration of the call.
    let (listener, child) = unsafe { (Sock::from_raw(sk), Sock::from_raw(newsk)) };
    T::accept(&rcu, listener, child);
}

/// # Safety
///
/// Called by the kernel from `fastsocket_child_ready()` in `tcp_child_process()`: `sk` is a
/// TCP listener and `child` the connection just queued on it, both valid, and the call runs
/// inside `rcu_read_lock()` with bottom halves disabled (packet receive).
unsafe extern "C" fn child_ready_trampoline<T: Hooks>(
    sk: *mut bindings::sock,
    child: *mut bindings::sock,
) -> bool {
    // SAFETY: The kernel holds `rcu_read_lock()` around the call.
    let rcu = unsafe { RcuReadSection::assume() };
    // SAFETY: Both sockets are valid TCP sockets (`inet_connection_sock`s) for the duration of
    // the call.
    let (listener, child) = unsafe { (Sock::from_raw(sk), Sock::from_raw(child)) };
    T::child_ready(&rcu, listener, child)
}

/// # Safety
///
/// Called by the kernel from the accept-queue pick of `inet_csk_accept()` or from the
/// readiness check of such a listener: `sk` is a valid listening `inet_connection_sock`,
/// `cpu` a valid pointer, and the call runs inside `rcu_read_lock()`.
unsafe extern "C" fn accept_pick_trampoline<T: Hooks>(
    sk: *mut bindings::sock,
    cpu: *mut c_int,
) -> c_uint {
    // SAFETY: The kernel holds `rcu_read_lock()` around the call.
    let rcu = unsafe { RcuReadSection::assume() };
    // SAFETY: The socket is a valid `inet_connection_sock` for the duration of the call.
    let listener = unsafe { Sock::from_raw(sk) };
    match T::accept_pick(&rcu, listener) {
        Some(pick) if pick.scan > 0 => {
            // SAFETY: `cpu` is valid for writes (see the safety section). CPU ids fit in c_int.
            unsafe { *cpu = pick.cpu as c_int };
            pick.scan
        }
        _ => 0,
    }
}

/// # Safety
///
/// Called by the kernel from the accept-queue pick or readiness check: `sk` is a valid
/// listening `inet_connection_sock`, `child` a connection queued on it (so an
/// `inet_connection_sock` too) that the queue's lock keeps there, and the call runs inside
/// `rcu_read_lock()`.
unsafe extern "C" fn may_take_trampoline<T: Hooks>(
    sk: *mut bindings::sock,
    child: *mut bindings::sock,
) -> bool {
    // SAFETY: The kernel holds `rcu_read_lock()` around the call.
    let rcu = unsafe { RcuReadSection::assume() };
    // SAFETY: Both sockets are valid `inet_connection_sock`s for the duration of the call (the
    // child is queued and the queue is locked).
    let (listener, child) = unsafe { (Sock::from_raw(sk), Sock::from_raw(child)) };
    T::may_take(&rcu, listener, child)
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
