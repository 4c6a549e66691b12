// SPDX-License-Identifier: GPL-2.0

//! State kept for every network namespace (`struct pernet_operations`), with a read-only file
//! in the namespace's `/proc/net`.

use super::net::{Net, RcuReadSection};
use super::rcu::read_section;
use super::text::TextBuf;
use core::{
    cell::UnsafeCell,
    ffi::{c_int, c_uint, c_void},
    fmt,
    marker::PhantomData,
    mem::{self, MaybeUninit},
    ptr,
    sync::atomic::{AtomicU8, Ordering},
};
use kernel::{bindings, prelude::*, sync::Arc, types::Opaque};

/// The one [`PerNet`] of a type, whose id the kernel's callbacks use. Implement it with
/// [`per_net!`].
///
/// # Safety
///
/// [`PerNetOf::per_net`] returns the same `PerNet` on every call.
pub(crate) unsafe trait PerNetOf: Sized + Send + Sync + 'static {
    /// The one [`PerNet`] holding this type.
    fn per_net() -> &'static PerNet<Self>
    where
        Self: NetData;
}

/// Implements [`PerNetOf`] for a type with a `static` [`PerNet`] of its own.
macro_rules! per_net {
    ($t:ty) => {
        // SAFETY: `per_net()` returns the one `static` below on every call.
        #[allow(unsafe_code)]
        unsafe impl $crate::sys::pernet::PerNetOf for $t {
            fn per_net() -> &'static $crate::sys::pernet::PerNet<Self>
            where
                Self: $crate::sys::pernet::NetData,
            {
                static PER_NET: $crate::sys::pernet::PerNet<$t> =
                    $crate::sys::pernet::PerNet::new();
                &PER_NET
            }
        }
    };
}
pub(crate) use per_net;

/// The state a module keeps in every network namespace.
pub(crate) trait NetData: PerNetOf {
    /// Name of the file in `/proc/net` that shows the state.
    const PROC_NAME: &'static CStr;

    /// Creates the state of a new namespace (or of every existing one at registration).
    fn init(init: &mut NetInit<'_>) -> Result<Self>;

    /// Writes the contents of the `/proc/net` file of `net` (process context).
    fn show(&self, net: &Net, out: &mut dyn fmt::Write) -> fmt::Result;
}

/// Something registered in a namespace that must be undone before the namespace goes (a
/// sysctl table, for instance).
pub(crate) trait NetBound: Send + Sync {
    /// Undoes the registration if no other call did or is doing it; once every call returned,
    /// nothing of the namespace is used any more. May sleep.
    fn revoke(&self);
}

/// A namespace being set up, for [`NetData::init`]: what is bound to it with
/// [`NetInit::bind`] is revoked when it is torn down (or when its set-up fails), before its
/// `T` is dropped, whatever became of the values that refer to it.
pub(crate) struct NetInit<'a> {
    net: &'a Net,
    bound: KVec<Arc<dyn NetBound>>,
}

impl<'a> NetInit<'a> {
    /// The namespace.
    pub(crate) fn net(&self) -> &'a Net {
        self.net
    }

    /// Revokes `what` when the namespace is torn down; if this fails, `what` is revoked now.
    pub(crate) fn bind(&mut self, what: Arc<dyn NetBound>) -> Result {
        let keep = what.clone();
        self.bound.push(what, GFP_KERNEL).map_err(|_| {
            keep.revoke();
            ENOMEM
        })
    }
}

/// Revokes each of `bound`, last bound first.
fn revoke_all(bound: &[Arc<dyn NetBound>]) {
    for what in bound.iter().rev() {
        what.revoke();
    }
}

impl Drop for NetInit<'_> {
    fn drop(&mut self) {
        revoke_all(&self.bound);
    }
}

/// A namespace's storage for `T` (`net_generic()`), zeroed by the kernel when allocated.
///
/// `state` is [`EMPTY`] (zero) until `value` and `bound` are initialised and the namespace's
/// set-up succeeded, [`LIVE`] from then on, and [`DEAD`] from the namespace's `pre_exit` on.
#[repr(C)]
struct Slot<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
    bound: UnsafeCell<MaybeUninit<KVec<Arc<dyn NetBound>>>>,
}

/// The slot's `T` is not initialised, or its namespace's set-up failed.
const EMPTY: u8 = 0;
/// The slot's `T` is initialised and its namespace alive.
const LIVE: u8 = 1;
/// The namespace is being torn down: the `T` is dropped after the next grace period.
const DEAD: u8 = 2;

/// [`PerNet::registered`]: not registered.
const UNREGISTERED: u8 = 0;
/// [`PerNet::registered`]: being registered or unregistered.
const CHANGING: u8 = 1;
/// [`PerNet::registered`]: registered, `id` fixed.
const REGISTERED: u8 = 2;

/// A `T` in every network namespace, in the namespace's generic storage (`net_generic()`).
///
/// Meant for a `static`; [`PerNet::register`] makes it live.
///
/// # Invariants
///
/// While `registered` is [`REGISTERED`], `ops` is registered with the kernel, `id` holds the
/// id the kernel gave it, and every namespace's storage for that id is a [`Slot<T>`] (or
/// absent, when the namespace's set-up failed).
pub(crate) struct PerNet<T: NetData> {
    ops: Opaque<bindings::pernet_operations>,
    id: Opaque<c_uint>,
    registered: AtomicU8,
    _holds: PhantomData<T>,
}

// SAFETY: `ops` and `id` are written only by `register` (after winning `registered`, before
// the kernel sees them) and by the kernel under its `pernet_ops_rwsem`; they are read by the
// kernel and, through `get`, once `registered` says the kernel wrote them. `T` is `Send + Sync`.
unsafe impl<T: NetData> Sync for PerNet<T> {}

impl<T: NetData> PerNet<T> {
    const ALIGN_OK: () = assert!(
        mem::align_of::<Slot<T>>() <= 8,
        "net_generic storage is kzalloc()ed, 8-aligned"
    );

    /// A not yet registered `PerNet`.
    pub(crate) const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::ALIGN_OK;
        // SAFETY: All-zero is a valid `pernet_operations` (no callbacks, empty list head that
        // the kernel initialises on registration).
        let mut ops: bindings::pernet_operations = unsafe { MaybeUninit::zeroed().assume_init() };
        ops.init = Some(init_trampoline::<T>);
        ops.pre_exit = Some(pre_exit_trampoline::<T>);
        ops.exit = Some(exit_trampoline::<T>);
        ops.size = mem::size_of::<Slot<T>>();
        Self {
            ops: Opaque::new(ops),
            id: Opaque::new(0),
            registered: AtomicU8::new(UNREGISTERED),
            _holds: PhantomData,
        }
    }

    /// Creates the state in every network namespace, now and whenever one is created, until
    /// the returned registration is dropped.
    ///
    /// Fails with `EBUSY` if this `PerNet` is registered already, and with `EINVAL` if it is
    /// not `T::per_net()` (whose id the kernel's callbacks use).
    pub(crate) fn register(&'static self) -> Result<PerNetRegistration<T>> {
        if !ptr::eq(self, T::per_net()) {
            return Err(EINVAL);
        }
        self.registered
            .compare_exchange(UNREGISTERED, CHANGING, Ordering::Acquire, Ordering::Relaxed)
            .map_err(|_| EBUSY)?;
        // SAFETY: `registered` went from `UNREGISTERED` to `CHANGING` here, so the kernel does
        // not use `ops` (a registration failed or was undone before) and nobody else writes it.
        unsafe { (*self.ops.get()).id = self.id.get() };
        // SAFETY: `ops` is valid, lives forever and is filled in; it is not registered.
        let res =
            kernel::error::to_result(unsafe { bindings::register_pernet_subsys(self.ops.get()) });
        if let Err(e) = res {
            self.registered.store(UNREGISTERED, Ordering::Release);
            return Err(e);
        }
        // INVARIANT: Registered, `id` written by the kernel before it ran any `init`.
        self.registered.store(REGISTERED, Ordering::Release);
        Ok(PerNetRegistration(self))
    }

    /// The slot of `net`, null if it has none, as `net_generic()` returns it: the array of
    /// storage pointers is read under RCU, the storage itself stays until the namespace's
    /// pernet operations are freed.
    ///
    /// # Safety
    ///
    /// `self` is registered (the kernel wrote `id`), and `net` is valid.
    unsafe fn slot(&self, net: *const bindings::net) -> *mut Slot<T> {
        // SAFETY: Registered and `net` valid, as the caller promises; `rcu` is the section
        // the read needs. The slot read is the storage pointer, which outlives the section.
        read_section(|rcu| unsafe { self.slot_rcu(net, rcu) })
    }

    /// [`PerNet::slot`] inside the caller's RCU read-side section, read in place as
    /// `net_generic()` reads it (every hook call looks its namespace up, and a call to a C
    /// helper costs more than the read).
    ///
    /// # Safety
    ///
    /// `self` is registered (the kernel wrote `id`), and `net` is valid.
    unsafe fn slot_rcu(
        &self,
        net: *const bindings::net,
        _rcu: &RcuReadSection<'_>,
    ) -> *mut Slot<T> {
        // SAFETY: `net` is valid. Its `gen` array is replaced under RCU (the old one freed
        // after a grace period), and the caller's section holds; every array has an entry for
        // each registered id, and the storage pointers `ptr[]` open `struct net_generic`.
        // `id` was written by the kernel (see the safety section) and not since.
        unsafe {
            let gen = ptr::read_volatile(&raw const (*net).gen);
            ptr::read(gen.cast::<*mut c_void>().add(*self.id.get() as usize)).cast()
        }
    }

    /// The state of `net`; `None` while not registered, before the namespace's set-up
    /// succeeded, and once its teardown started.
    pub(crate) fn get<'a>(&self, net: &'a Net, rcu: &'a RcuReadSection<'_>) -> Option<&'a T> {
        if self.registered.load(Ordering::Acquire) != REGISTERED {
            return None;
        }
        // SAFETY: Registered (checked above) and `net` is valid for `&net`.
        let slot = unsafe { self.slot_rcu(net.as_raw(), rcu) };
        if slot.is_null() {
            return None;
        }
        // SAFETY: The storage is allocated. On teardown, `ops_free_list()` frees it after every
        // pernet exit ran, by when the hooks' ways to `net` are gone: its sockets (user sockets
        // hold the namespace, kernel sockets are released by their subsystem's exit, see
        // `Sock::net`) and its devices, through which receive steering reaches it (the
        // receiving device's namespace, or its veth peer's): the devices' pernet exit
        // unregisters them, and `unregister_netdevice_many()` waits for a grace period
        // (`synchronize_net()`) once they are unlisted, so no RCU reader that found one (`rcu`
        // proves we are in such a section) outlives the storage. During set-up, no hook runs
        // for the namespace: userspace cannot reach it before `setup_net()` returns and its
        // loopback device is down, so no connection completes or is accepted in it. (If our
        // `init` fails, `ops_init()` frees the storage at once, without a grace period: `state`
        // is still `EMPTY` until then.)
        let state = unsafe { (*slot).state.load(Ordering::Acquire) };
        if state != LIVE {
            return None;
        }
        // SAFETY: `LIVE` was stored (with Release, read with Acquire above) after `value` was
        // initialised. The `T` is dropped by `exit_trampoline`, which the kernel runs only
        // after `pre_exit_trampoline` stored `DEAD` and a grace period passed
        // (`ops_undo_list()` in net/core/net_namespace.c calls `synchronize_rcu()` or
        // `synchronize_rcu_expedited()` between the `pre_exit` and `exit` callbacks, both on
        // namespace cleanup and on unregistration). `rcu` proves we are inside a read-side
        // section that began before that grace period ended, and it outlives `'a`.
        Some(unsafe { (*(*slot).value.get()).assume_init_ref() })
    }
}

/// Keeps a [`PerNet`] registered.
///
/// # Invariants
///
/// The `PerNet` is registered (its `registered` is `REGISTERED`) by this value.
pub(crate) struct PerNetRegistration<T: NetData>(&'static PerNet<T>);

impl<T: NetData> Drop for PerNetRegistration<T> {
    fn drop(&mut self) {
        self.0.registered.store(CHANGING, Ordering::Release);
        // SAFETY: Registered (type invariant). Runs `pre_exit`, waits for a grace period, then
        // runs `exit` for every namespace; afterwards the kernel no longer uses `ops`.
        unsafe { bindings::unregister_pernet_subsys(self.0.ops.get()) };
        self.0.registered.store(UNREGISTERED, Ordering::Release);
    }
}

/// # Safety
///
/// Called by the kernel (`ops_init()`) for a namespace being set up, with `T`'s storage
/// allocated zeroed and published in `net_generic()`, after `id` was written.
unsafe extern "C" fn init_trampoline<T: NetData>(net: *mut bindings::net) -> c_int {
    let mut init = NetInit {
        // SAFETY: The namespace is valid during its set-up.
        net: unsafe { Net::from_raw(net) },
        bound: KVec::new(),
    };
    // On failure, dropping `init` revokes what was bound.
    let state = match T::init(&mut init) {
        Ok(state) => state,
        Err(e) => return e.to_errno(),
    };
    // SAFETY: `id` was written by the kernel before calling us, and `net` is valid.
    let slot = unsafe { T::per_net().slot(net) };
    // SAFETY: The slot is ours, allocated zeroed for a `Slot<T>` (see `ALIGN_OK`); `value` and
    // `bound` are not initialised and nobody reads them while `state` is `EMPTY`.
    unsafe {
        debug_assert_eq!((*slot).state.load(Ordering::Relaxed), EMPTY);
        (*(*slot).value.get()).write(state);
        (*(*slot).bound.get()).write(mem::take(&mut init.bound));
    }
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
        // SAFETY: Written above; `state` is still `EMPTY`, so `get` never handed them out.
        unsafe { drop_slot(slot) };
        return ENOMEM.to_errno();
    }
    // Written last: `get` hands out the `T` from here on.
    // SAFETY: The slot is valid, see above.
    unsafe { (*slot).state.store(LIVE, Ordering::Release) };
    0
}

/// # Safety
///
/// Called by the kernel (`ops_pre_exit_list()`) for a namespace being torn down whose
/// `init_trampoline` succeeded, before a grace period and `exit_trampoline`.
unsafe extern "C" fn pre_exit_trampoline<T: NetData>(net: *mut bindings::net) {
    // SAFETY: The slot holds the `T` written by `init_trampoline`; `net` is valid.
    unsafe {
        (*T::per_net().slot(net))
            .state
            .store(DEAD, Ordering::Release)
    };
}

/// # Safety
///
/// Called by the kernel (`ops_exit_list()`) for a namespace being torn down whose
/// `init_trampoline` succeeded, after `pre_exit_trampoline` and a grace period.
unsafe extern "C" fn exit_trampoline<T: NetData>(net: *mut bindings::net) {
    // SAFETY: `proc_net` is valid until the namespace is gone; this waits for readers of the
    // file to finish.
    unsafe { bindings::remove_proc_entry(T::PROC_NAME.as_char_ptr(), (*net).proc_net) };
    // SAFETY: `net` is valid and `id` written (the kernel calls us).
    let slot = unsafe { T::per_net().slot(net) };
    // SAFETY: The slot holds the `T` written by `init_trampoline`, and nothing uses it any
    // more: the file is gone, and hooks get it only through `PerNet::get`, which returned
    // `None` since `pre_exit_trampoline` stored `DEAD`, while the grace period the kernel
    // waited for since then ended every read-side section that got it before.
    unsafe { drop_slot(slot) };
}

/// Revokes what the namespace's set-up bound to it, then drops its `T`.
///
/// # Safety
///
/// `slot` holds the `T` and the bound values written by `init_trampoline`, which nobody uses
/// any more, and are not used after this call.
unsafe fn drop_slot<T: NetData>(slot: *mut Slot<T>) {
    // SAFETY: See the function's safety section.
    unsafe {
        let bound = (*(*slot).bound.get()).assume_init_read();
        revoke_all(&bound);
        (*(*slot).value.get()).assume_init_drop();
    }
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
    // SAFETY: The file exists only while the namespace's `T` does (from after its write in
    // `init_trampoline` to before its drop in `exit_trampoline`, whose removal of the file
    // waits for this call to return); `id` was written since the kernel set the namespace up.
    let state = unsafe { (*(*T::per_net().slot(net)).value.get()).assume_init_ref() };
    // SAFETY: The namespace outlives its file, which is being read.
    let net_ref = unsafe { Net::from_raw(net) };
    let mut buf = TextBuf::default();
    if state.show(net_ref, &mut buf).is_err() {
        return ENOMEM.to_errno();
    }
    // SAFETY: `seq` is valid and `buf` holds `len` initialised bytes.
    unsafe { bindings::seq_write(seq, buf.0.as_ptr().cast(), buf.0.len()) }
}
