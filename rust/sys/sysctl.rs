// SPDX-License-Identifier: GPL-2.0

//! Knobs in `/proc/sys`, one set per network namespace: integers ([`Knobs`]) and text parsed
//! by the module ([`TextKnob`]).
//!
//! Reading is open to all; writing needs `CAP_NET_ADMIN` in the namespace's user namespace,
//! and a value the knob does not accept is refused with `EINVAL` (logged once).
//!
//! Knobs are registered while their namespace is set up ([`NetInit`]), which unregisters them
//! when it is torn down whatever became of the values: a value kept longer only reads.

use super::net::Net;
use super::pernet::{NetBound, NetInit};
use super::text::TextBuf;
use core::{
    cell::UnsafeCell,
    ffi::{c_int, c_void},
    fmt, ptr,
    sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering},
};
use kernel::{bindings, prelude::*, sync::Arc};

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

/// A sysctl table, registered from [`Registration::register`] until it is revoked: by its
/// namespace's teardown (see [`NetInit::bind`]) or by dropping its owner, whichever comes
/// first.
///
/// # Invariants
///
/// `header` is null, or was returned by `register_net_sysctl_sz()` for a namespace that has not
/// been torn down yet, and not unregistered yet.
struct Registration {
    header: AtomicPtr<bindings::ctl_table_header>,
}

impl Registration {
    /// Not registered yet.
    const fn new() -> Self {
        // INVARIANT: Null.
        Self {
            header: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Registers the `len` entries at `entries` under `path` in `net`.
    ///
    /// # Safety
    ///
    /// Called at most once. `entries` is valid and stays at its address, unchanged, until
    /// `self` is revoked or dropped, and the caller revokes it before `net` is torn down.
    unsafe fn register(
        &self,
        net: &Net,
        path: &'static CStr,
        entries: *mut bindings::ctl_table,
        len: usize,
    ) -> Result {
        // SAFETY: `net` is valid, `path` is static, and the caller keeps `entries` alive.
        let header = unsafe {
            bindings::register_net_sysctl_sz(net.as_raw(), path.as_char_ptr(), entries, len)
        };
        if header.is_null() {
            return Err(ENOMEM);
        }
        // INVARIANT: Just registered, in a namespace that the caller keeps alive until it
        // revokes the registration.
        self.header.store(header, Ordering::Release);
        Ok(())
    }

    /// Unregisters the table if it is registered and no other call is unregistering it.
    /// Returns once no handler runs any more, or at once if another call is unregistering it.
    fn revoke(&self) {
        let header = self.header.swap(ptr::null_mut(), Ordering::AcqRel);
        if !header.is_null() {
            // SAFETY: By the type invariant a non-null header is registered in a namespace
            // that is alive; the swap made this call the only one to unregister it.
            unsafe { bindings::unregister_net_sysctl_table(header) };
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.revoke();
    }
}

/// A feature whose hooks the kernel calls for a namespace only while the module turned it on
/// there (`fastsocket_net_set()`); its static key is on while some namespace has it.
#[derive(Clone, Copy)]
pub(crate) enum NetFeature {
    /// Receive Flow Deliver: the port search and receive steering hooks.
    Rfd,
    /// The socket inode cache: its hooks for sockets created by the namespace's tasks.
    Vfs,
    /// Receive Flow Deliver's steering, asked for segments from a same-host peer namespace's
    /// connections.
    RfdPeer,
}

impl NetFeature {
    fn raw(self) -> u32 {
        match self {
            Self::Rfd => bindings::FASTSOCKET_NET_RFD,
            Self::Vfs => bindings::FASTSOCKET_NET_VFS,
            Self::RfdPeer => bindings::FASTSOCKET_NET_RFD_PEER,
        }
    }
}

/// A [`NetFeature`] that follows a namespace's knobs: on while `on` says so of their values.
pub(crate) struct Switch<const N: usize> {
    /// The feature switched.
    pub(crate) feature: NetFeature,
    /// Whether the knobs' values want the feature on.
    pub(crate) on: fn(&KnobValues<'_, N>) -> bool,
}

/// The values of a set of `N` knobs, as read now.
pub(crate) struct KnobValues<'a, const N: usize>(&'a [AtomicI32; N]);

impl<const N: usize> KnobValues<'_, N> {
    /// The current value of knob `index`.
    pub(crate) fn get(&self, index: usize) -> c_int {
        self.0[index].load(Ordering::Relaxed)
    }
}

/// # Invariants
///
/// While `registration` is registered, it is for `entries`, whose `data` point into `values`,
/// `extra1` at a `&'static IntKnob` and `extra2` at this table, and `net` is its namespace.
struct Table<const N: usize> {
    // Declared first: unregistered (which waits for running handlers) before the rest is
    // freed.
    registration: Registration,
    // The kernel holds a pointer to them while registered.
    entries: UnsafeCell<[bindings::ctl_table; N]>,
    values: [AtomicI32; N],
    net: *mut bindings::net,
    switches: &'static [Switch<N>],
}

// SAFETY: The C table is not written after registration and the values are atomics; the
// registration is only used to unregister, once, and the namespace pointer only to switch
// features, which the kernel serialises, while the knobs are registered.
unsafe impl<const N: usize> Send for Table<N> {}
// SAFETY: As above.
unsafe impl<const N: usize> Sync for Table<N> {}

impl<const N: usize> NetBound for Table<N> {
    fn revoke(&self) {
        self.registration.revoke();
    }
}

impl<const N: usize> Table<N> {
    /// Turns each switch's feature on or off in the namespace as the values say now.
    ///
    /// A write racing with this one may change the values between the read and the
    /// kernel's update: each switch is read again after its update and updated again if it
    /// changed, so that whichever caller updates last leaves the feature as the values say.
    /// The kernel turns the features off itself when the namespace goes, and in every
    /// namespace when the module unregisters its hooks.
    fn sync(&self) {
        let values = KnobValues(&self.values);
        for switch in self.switches {
            let want = |values: &KnobValues<'_, N>| (switch.on)(values);
            let mut on = want(&values);
            loop {
                // SAFETY: `net` is the namespace of the knobs: `sync` runs from
                // `Knobs::register` (its caller's namespace, being set up) and from writes to
                // the registered knobs, whose namespace is alive while they are registered;
                // the call may sleep, as the callers (process context, no lock held) may.
                unsafe { bindings::fastsocket_net_set(self.net, switch.feature.raw(), on) };
                let now = want(&values);
                if now == on {
                    break;
                }
                on = now;
            }
        }
    }
}

/// `N` knobs registered under one path in one namespace, with the [`Switch`]es that follow
/// them; unregistered when the namespace is torn down.
pub(crate) struct Knobs<const N: usize> {
    table: Arc<Table<N>>,
}

impl<const N: usize> Knobs<N> {
    /// Registers `knobs` under `path` (e.g. `net/fastsocket`) in the namespace being set up,
    /// and turns the features of `switches` on or off as the knobs say, now and after each
    /// write.
    ///
    /// Process context (may sleep).
    pub(crate) fn register(
        init: &mut NetInit<'_>,
        path: &'static CStr,
        knobs: &'static [IntKnob; N],
        switches: &'static [Switch<N>],
    ) -> Result<Self> {
        let net = init.net();
        let table = Arc::new(
            Table {
                registration: Registration::new(),
                entries: UnsafeCell::new(core::array::from_fn(|_| Default::default())),
                values: core::array::from_fn(|i| AtomicI32::new(knobs[i].default)),
                net: net.as_raw(),
                switches,
            },
            GFP_KERNEL,
        )?;
        let this: &Table<N> = &table;
        let extra2: *mut c_void = ptr::from_ref(this).cast_mut().cast();
        // SAFETY: Not registered yet: nothing else refers to the entries.
        let entries = unsafe { &mut *this.entries.get() };
        for ((entry, value), knob) in entries.iter_mut().zip(this.values.iter()).zip(knobs) {
            entry.procname = knob.name.as_char_ptr();
            entry.data = value.as_ptr().cast();
            entry.maxlen = core::mem::size_of::<c_int>() as c_int;
            entry.mode = 0o644;
            entry.proc_handler = Some(knob_handler::<N>);
            entry.extra1 = ptr::from_ref(knob).cast_mut().cast();
            entry.extra2 = extra2;
        }
        // SAFETY: Registered once, here. `entries` lives in the `Arc`, unchanged, as long as
        // the registration, which is dropped first; `bind` below revokes it when the namespace
        // is torn down (and dropping `table` at once if it fails).
        // INVARIANT: Registered with the entries filled in as described.
        unsafe {
            this.registration
                .register(net, path, this.entries.get().cast(), N)?
        };
        init.bind(table.clone())?;
        table.sync();
        Ok(Self { table })
    }

    /// The current value of knob `index`.
    pub(crate) fn get(&self, index: usize) -> c_int {
        KnobValues(&self.table.values).get(index)
    }
}

/// Set once the first rejected write has been logged.
static REJECT_LOGGED: AtomicBool = AtomicBool::new(false);

fn log_rejected(name: &CStr, expects: fmt::Arguments<'_>) {
    if !REJECT_LOGGED.swap(true, Ordering::Relaxed) {
        pr_warn!(
            "rejected a write to net.fastsocket.{}: expects {} (logged once)\n",
            name,
            expects
        );
    }
}

/// Whether the caller may change knobs of `net`.
///
/// # Safety
///
/// `net` is a valid namespace.
unsafe fn may_write(net: *const bindings::net) -> bool {
    // SAFETY: `net` is valid (see the safety section) and so is its `user_ns`.
    unsafe { bindings::ns_capable((*net).user_ns, bindings::CAP_NET_ADMIN as c_int) }
}

/// # Safety
///
/// Called by the sysctl core for one of the entries built in [`Knobs::register`] for `N`
/// knobs, with the arguments of a `proc_handler`.
unsafe extern "C" fn knob_handler<const N: usize>(
    table: *const bindings::ctl_table,
    write: c_int,
    buffer: *mut c_void,
    lenp: *mut usize,
    ppos: *mut bindings::loff_t,
) -> c_int {
    // SAFETY: By the type invariant of `Table`, `extra1` points at a static `IntKnob` and
    // `extra2` at the knobs' `Table<N>`, which outlives their registration.
    let (knob, knobs) = unsafe {
        (
            &*(*table).extra1.cast::<IntKnob>(),
            &*(*table).extra2.cast::<Table<N>>(),
        )
    };
    // SAFETY: The knobs are registered, so their namespace is alive (type invariant of
    // `Table`).
    if write != 0 && !unsafe { may_write(knobs.net) } {
        return EPERM.to_errno();
    }
    // SAFETY: `table` is valid; a copy with the range in extra1/extra2 is what
    // `proc_dointvec_minmax()` expects.
    let mut bounded = unsafe { ptr::read(table) };
    bounded.extra1 = ptr::from_ref(&knob.min).cast_mut().cast();
    bounded.extra2 = ptr::from_ref(&knob.max).cast_mut().cast();
    // SAFETY: `bounded` is valid for the call and the other arguments come from the core.
    let ret = unsafe { bindings::proc_dointvec_minmax(&bounded, write, buffer, lenp, ppos) };
    if write != 0 && ret == EINVAL.to_errno() {
        log_rejected(
            knob.name,
            format_args!("an integer in {}..={}", knob.min, knob.max),
        );
    }
    if write != 0 && ret == 0 {
        knobs.sync();
    }
    ret
}

/// A value behind a [`TextKnob`], parsed and shown by the module.
pub(crate) trait TextValue: Send + Sync {
    /// What a valid value looks like, for the log line of a rejected write.
    const EXPECTS: &'static str;

    /// The longest text a write may hold, in bytes; longer writes get `EINVAL` before any
    /// parsing, whoever makes them.
    const MAX_LEN: usize;

    /// Writes the current value.
    fn show(&self, out: &mut dyn fmt::Write) -> fmt::Result;

    /// Replaces the value by `text` (surrounding whitespace removed); on error the value is
    /// unchanged.
    fn store(&self, text: &str) -> Result;
}

/// # Invariants
///
/// While `registration` is registered, it is for `entry`, whose `data` points at `value`,
/// `extra1` at the static knob name and `extra2` at its namespace.
struct TextTable<T> {
    // Declared first: unregistered before the rest is freed.
    registration: Registration,
    // The kernel holds a pointer to it while registered.
    entry: UnsafeCell<bindings::ctl_table>,
    value: T,
}

// SAFETY: The C table is not written after registration and `T` is `Send + Sync`; the
// registration is only used to unregister, once.
unsafe impl<T: TextValue> Send for TextTable<T> {}
// SAFETY: As above.
unsafe impl<T: TextValue> Sync for TextTable<T> {}

impl<T: TextValue> NetBound for TextTable<T> {
    fn revoke(&self) {
        self.registration.revoke();
    }
}

/// One text knob in one namespace, holding its value; unregistered when the namespace is torn
/// down.
pub(crate) struct TextKnob<T: TextValue> {
    table: Arc<TextTable<T>>,
}

impl<T: TextValue + 'static> TextKnob<T> {
    /// Registers knob `name` under `path` in the namespace being set up, holding `value`.
    pub(crate) fn register(
        init: &mut NetInit<'_>,
        path: &'static CStr,
        name: &'static CStr,
        value: T,
    ) -> Result<Self> {
        let net = init.net();
        let table = Arc::new(
            TextTable {
                registration: Registration::new(),
                entry: UnsafeCell::new(Default::default()),
                value,
            },
            GFP_KERNEL,
        )?;
        let this: &TextTable<T> = &table;
        // SAFETY: Not registered yet: nothing else refers to the entry.
        let entry = unsafe { &mut *this.entry.get() };
        entry.procname = name.as_char_ptr();
        entry.data = ptr::from_ref(&this.value).cast_mut().cast();
        // Documents the bound; the handler enforces it (the core does not for custom handlers).
        entry.maxlen = c_int::try_from(T::MAX_LEN).unwrap_or(c_int::MAX);
        entry.mode = 0o644;
        entry.proc_handler = Some(text_handler::<T>);
        entry.extra1 = name.as_char_ptr().cast_mut().cast();
        entry.extra2 = net.as_raw().cast();
        // SAFETY: Registered once, here. `entry` lives in the `Arc`, unchanged, as long as the
        // registration, which is dropped first; `bind` below revokes it when the namespace is
        // torn down (and dropping `table` at once if it fails).
        // INVARIANT: Registered with the entry filled in as described.
        unsafe { this.registration.register(net, path, this.entry.get(), 1)? };
        init.bind(table.clone())?;
        Ok(Self { table })
    }

    /// The value.
    pub(crate) fn get(&self) -> &T {
        &self.table.value
    }
}

/// # Safety
///
/// Called by the sysctl core for the entry built in [`TextKnob::register`], with the arguments
/// of a `proc_handler`: `buffer` is a kernel buffer of `*lenp` bytes.
unsafe extern "C" fn text_handler<T: TextValue>(
    table: *const bindings::ctl_table,
    write: c_int,
    buffer: *mut c_void,
    lenp: *mut usize,
    ppos: *mut bindings::loff_t,
) -> c_int {
    // SAFETY: By the type invariant of `TextTable`, `data` points at the `T`, `extra1` at the
    // static name and `extra2` at the namespace; all outlive the registration.
    let (value, name, net) = unsafe {
        (
            &*(*table).data.cast::<T>(),
            CStr::from_char_ptr((*table).extra1.cast()),
            (*table).extra2.cast::<bindings::net>(),
        )
    };
    // SAFETY: `lenp` and `ppos` are valid pointers from the core.
    let (len, pos) = unsafe { (*lenp, *ppos) };
    let Ok(pos) = usize::try_from(pos) else {
        return EINVAL.to_errno();
    };
    if write != 0 {
        // SAFETY: `net` is valid, see above.
        if !unsafe { may_write(net) } {
            return EPERM.to_errno();
        }
        // A value is written in one piece, from the start, and is short: any user may own a
        // namespace, so the cost of a write must not depend on what it writes.
        if pos != 0 || len > T::MAX_LEN {
            log_rejected(
                name,
                format_args!("{} (at most {} bytes)", T::EXPECTS, T::MAX_LEN),
            );
            return EINVAL.to_errno();
        }
        // SAFETY: The core passes `len` readable bytes in `buffer`.
        let bytes = unsafe { core::slice::from_raw_parts(buffer.cast::<u8>(), len) };
        let res = core::str::from_utf8(bytes)
            .map_err(|_| EINVAL)
            .and_then(|t| value.store(t.trim()));
        if let Err(e) = res {
            log_rejected(name, format_args!("{}", T::EXPECTS));
            return e.to_errno();
        }
        // SAFETY: `ppos` is valid; the whole write was consumed.
        unsafe { *ppos += len as bindings::loff_t };
        return 0;
    }
    let mut text = TextBuf::default();
    if value.show(&mut text).is_err() || fmt::Write::write_str(&mut text, "\n").is_err() {
        return ENOMEM.to_errno();
    }
    let n = text.0.len().saturating_sub(pos).min(len);
    if n > 0 {
        // SAFETY: `buffer` has room for `len >= n` bytes and `text` holds `pos + n` bytes.
        unsafe { ptr::copy_nonoverlapping(text.0.as_ptr().add(pos), buffer.cast::<u8>(), n) };
    }
    // SAFETY: `lenp` and `ppos` are valid pointers from the core.
    unsafe {
        *lenp = n;
        *ppos += n as bindings::loff_t;
    }
    0
}
