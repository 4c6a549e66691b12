// SPDX-License-Identifier: GPL-2.0

//! State kept for every network namespace (`struct pernet_operations`), with a read-only file
//! in the namespace's `/proc/net`.

use super::net::{Net, RcuReadSection};
use super::text::TextBuf;
use core::{
    ffi::{c_int, c_uint, c_void},
    fmt,
    marker::PhantomData,
    mem::{self, MaybeUninit},
    ptr,
    sync::atomic::{AtomicBool, Ordering},
};
use kernel::{bindings, prelude::*, types::Opaque};

/// The state a module keeps in every network namespace.
pub(crate) trait NetData: Sized + Send + Sync + 'static {
    /// Name of the file in `/proc/net` that shows the state.
    const PROC_NAME: &'static CStr;

    /// The one [`PerNet`] holding this type.
    fn per_net() -> &'static PerNet<Self>;

    /// Creates the state of a new namespace (or of every existing one at registration).
    fn init(net: &Net) -> Result<Self>;

    /// Writes the contents of the `/proc/net` file of `net` (process context).
    fn show(&self, net: &Net, out: &mut dyn fmt::Write) -> fmt::Result;
}

/// A `T` in every network namespace, in the namespace's generic storage (`net_generic()`).
///
/// Meant for a `static`; [`PerNet::register`] makes it live.
pub(crate) struct PerNet<T: NetData> {
    ops: Opaque<bindings::pernet_operations>,
    id: Opaque<c_uint>,
    live: AtomicBool,
    _holds: PhantomData<T>,
}

// SAFETY: `ops` and `id` are written only by `register` (once, before the kernel sees them)
// and by the kernel under its pernet mutex; `T` itself is `Sync`.
unsafe impl<T: NetData> Sync for PerNet<T> {}

impl<T: NetData> PerNet<T> {
    const ALIGN_OK: () = assert!(
        mem::align_of::<T>() <= 8,
        "net_generic storage is 8-aligned"
    );

    /// A not yet registered `PerNet`.
    pub(crate) const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::ALIGN_OK;
        // SAFETY: All-zero is a valid `pernet_operations` (no callbacks, empty list head that
        // the kernel initialises on registration).
        let mut ops: bindings::pernet_operations = unsafe { MaybeUninit::zeroed().assume_init() };
        ops.init = Some(init_trampoline::<T>);
        ops.exit = Some(exit_trampoline::<T>);
        ops.size = mem::size_of::<T>();
        Self {
            ops: Opaque::new(ops),
            id: Opaque::new(0),
            live: AtomicBool::new(false),
            _holds: PhantomData,
        }
    }

    /// Creates the state in every network namespace, now and whenever one is created, until
    /// the returned registration is dropped.
    pub(crate) fn register(&'static self) -> Result<PerNetRegistration<T>> {
        // SAFETY: Not registered yet (a second registration would fail in the kernel before
        // touching `id`), so nothing else accesses `ops`.
        unsafe { (*self.ops.get()).id = self.id.get() };
        // SAFETY: `ops` is valid, lives forever and is filled in above.
        kernel::error::to_result(unsafe { bindings::register_pernet_subsys(self.ops.get()) })?;
        self.live.store(true, Ordering::Release);
        Ok(PerNetRegistration(self))
    }

    fn slot(&self, net: *const bindings::net) -> *mut T {
        // SAFETY: Registered, so `id` is fixed and every namespace has storage for it.
        unsafe { bindings::net_generic(net, *self.id.get()).cast() }
    }

    /// The state of `net`, or `None` while not registered.
    pub(crate) fn get<'a>(&self, net: &'a Net, _rcu: &'a RcuReadSection<'_>) -> Option<&'a T> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: While live, every namespace that has sockets holds an initialised `T`. The
        // registration clears `live` and waits for a grace period before freeing it; `_rcu`
        // proves we are inside a read-side section, so it outlives `'a`.
        Some(unsafe { &*self.slot(net.as_raw()) })
    }
}

/// Keeps a [`PerNet`] registered.
pub(crate) struct PerNetRegistration<T: NetData>(&'static PerNet<T>);

impl<T: NetData> Drop for PerNetRegistration<T> {
    fn drop(&mut self) {
        self.0.live.store(false, Ordering::Release);
        // SAFETY: Always safe to call from process context.
        unsafe { bindings::synchronize_rcu() };
        // SAFETY: Registered in `register`; runs the exit callback of every namespace.
        unsafe { bindings::unregister_pernet_subsys(self.0.ops.get()) };
    }
}

/// # Safety
///
/// Called by the kernel for a namespace being set up, with `T`'s storage zeroed and unused.
unsafe extern "C" fn init_trampoline<T: NetData>(net: *mut bindings::net) -> c_int {
    // SAFETY: The namespace is valid during its set-up.
    let state = match T::init(unsafe { Net::from_raw(net) }) {
        Ok(state) => state,
        Err(e) => return e.to_errno(),
    };
    let slot = T::per_net().slot(net);
    // SAFETY: The slot is ours, sized and aligned for `T` (see `ALIGN_OK`) and unused.
    unsafe { slot.write(state) };
    // The file is created once the state exists and removed before it goes (see exit).
    // SAFETY: `proc_net` is valid during set-up; the name is a static string.
    let pde = unsafe {
        bindings::proc_create_net_single(
            T::PROC_NAME.as_char_ptr(),
            0o444,
            (*net).proc_net,
            Some(show_trampoline::<T>),
            ptr::null_mut(),
        )
    };
    if pde.is_null() {
        // SAFETY: Written above, not shared yet.
        unsafe { ptr::drop_in_place(slot) };
        return ENOMEM.to_errno();
    }
    0
}

/// # Safety
///
/// Called by the kernel for a namespace being torn down whose `init_trampoline` succeeded.
unsafe extern "C" fn exit_trampoline<T: NetData>(net: *mut bindings::net) {
    // SAFETY: `proc_net` is valid until the namespace is gone; this waits for readers of the
    // file to finish.
    unsafe { bindings::remove_proc_entry(T::PROC_NAME.as_char_ptr(), (*net).proc_net) };
    // SAFETY: The slot holds the `T` written by `init_trampoline`. No hook can reach it: hooks
    // run for sockets, which hold the namespace alive, and the file is gone.
    unsafe { ptr::drop_in_place(T::per_net().slot(net)) };
}

/// # Safety
///
/// Called by the kernel for a read of the file made by `init_trampoline`: `seq` is valid and
/// its private data is the file's namespace (`proc_create_net_single()`).
unsafe extern "C" fn show_trampoline<T: NetData>(
    seq: *mut bindings::seq_file,
    _v: *mut c_void,
) -> c_int {
    // SAFETY: See the function's safety section.
    let net = unsafe { (*seq).private.cast::<bindings::net>() };
    // SAFETY: The file exists only while the namespace's `T` does, and removing it waits for
    // this call to return.
    let state = unsafe { &*T::per_net().slot(net) };
    // SAFETY: The namespace outlives its file, which is being read.
    let net_ref = unsafe { Net::from_raw(net) };
    let mut buf = TextBuf::default();
    if state.show(net_ref, &mut buf).is_err() {
        return ENOMEM.to_errno();
    }
    // SAFETY: `seq` is valid and `buf` holds `len` initialised bytes.
    unsafe { bindings::seq_write(seq, buf.0.as_ptr().cast(), buf.0.len()) }
}
