// SPDX-License-Identifier: GPL-2.0

//! The ops table the patched kernel calls (`struct fastsocket_ops`, see
//! `include/net/fastsocket.h` as added by `patches/`).
//!
//! A module implements [`Hooks`], builds a [`HooksVTable`] for it with [`vtable`] and keeps a
//! [`Registration`] alive while the hooks may run.
//!
//! A listener's queues are typeless in the kernel: the queues of `T` are found with `T`'s table
//! ([`queues_of`], [`detach`]), and the kernel hands them out only while that table is
//! registered, which it never does while a listener holds queues of another registration.

use super::net::{Net, RcuReadSection, Sock, SockGuard};
use super::rcu::{Published, RcuBox, RcuDrop};
use super::reqq::Req;
use super::sockfs::{KeptPair, ReusablePair};
use crate::logic::rfd::Walk;
use core::{
    ffi::{c_int, c_uint},
    marker::PhantomData,
    ptr,
};
use kernel::{bindings, build_error, error::to_result, prelude::*, types::Opaque};

/// The hooks a fastsocket module implements.
///
/// Hooks run on the hot path of every connection: they must not sleep and should not allocate.
#[vtable]
pub(crate) trait Hooks: 'static {
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

    /// What the module keeps with each listener in its scope: its per-CPU queues, dropped in an
    /// RCU callback once the listener no longer reaches them.
    type Queues: RcuDrop;

    /// `listener` just started listening (`listen()`, process context, its socket lock held).
    ///
    /// Returns the queues to keep with it, already allocated for RCU readers (so that nothing
    /// can fail once the module noted the listener), or `None` to leave it stock: none of the
    /// hooks is ever called for a listener without queues. The queues stay with the listener
    /// until it stops listening ([`Hooks::listen_stop`]) or the module takes them back
    /// ([`detach`]). A module detaches every listener before its [`Registration`] is dropped:
    /// queues left behind stay with their listeners, unused, with their connections (a
    /// warning says so), and the kernel registers no table again until reboot. A module
    /// that implements `listen` implements `listen_stop`.
    fn listen(_rcu: &RcuReadSection<'_>, _listener: &Sock) -> Option<Published<Self::Queues>> {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Queues `req`, a connection that completed its handshake (on the running CPU, in
    /// softirq; or on a closing listener, in process context, when connections migrate),
    /// or gives it back for `listener`'s own accept queue. Never a TCP Fast Open child.
    fn queue_add<'a>(
        _rcu: &RcuReadSection<'_>,
        _listener: &'a Sock,
        _queues: &Self::Queues,
        _req: Req<'a>,
    ) -> Result<(), Req<'a>> {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Takes a connection the calling task (in `accept()`) may take, if there is one.
    fn queue_remove<'a>(
        _rcu: &RcuReadSection<'_>,
        _listener: &'a Sock,
        _queues: &Self::Queues,
    ) -> Option<Req<'a>> {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Whether [`Hooks::queue_remove`] would find a connection for the calling task (poll,
    /// blocking `accept()`).
    fn queue_ready(_rcu: &RcuReadSection<'_>, _listener: &Sock, _queues: &Self::Queues) -> bool {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// `listener` stopped listening (closed, shut down or disconnected; its socket lock held,
    /// process context) and no hook reaches `queues` from it any more: give every connection
    /// in them back to the listener's own queue, where the stack closes or migrates them.
    /// Dropping `queues` frees them after a grace period.
    fn listen_stop(_rcu: &RcuReadSection<'_>, _listener: &Sock, _queues: Published<Self::Queues>) {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// `sk`, a TCP socket, needs a local port of `search.low..search.high` (`connect()` or
    /// `bind()` to port 0, process context, on the CPU running it). Returns the ports to try in
    /// pass `pass` (0, 1, ...) before the stock search, each then checked as stock checks
    /// them, or `None` to leave `sk` to the stock search. A walk must keep to the range: the
    /// kernel falls back to the stock search, with a warning, if it does not.
    fn port_walk(
        _rcu: &RcuReadSection<'_>,
        _sk: &Sock,
        _pass: u32,
        _search: PortSearch,
    ) -> Option<Walk> {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// A device of `net` with RPS or RFS configured received a TCP segment from port `sport` to
    /// port `dport`: the CPU to process it on, or `None` for the stock choice. Softirq or BHs
    /// off; offline CPUs are ignored.
    fn rps_cpu(_rcu: &RcuReadSection<'_>, _net: &Net, _sport: u16, _dport: u16) -> Option<u32> {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// A socket is being created (`sock_alloc()`, process context): a dentry and inode kept
    /// by [`Hooks::pair_put`] for it, or `None` for new ones.
    fn pair_get(_rcu: &RcuReadSection<'_>) -> Option<ReusablePair> {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// A socket's file was closed and nothing else refers to its dentry and inode (process
    /// context): keep them (`Ok`), or give them back (`Err`) for the kernel to drop.
    fn pair_put(_rcu: &RcuReadSection<'_>, _pair: KeptPair) -> Result<(), KeptPair> {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }
}

/// A local port search of the kernel (see [`Hooks::port_walk`]).
#[derive(Clone, Copy)]
pub(crate) struct PortSearch {
    /// The lowest port of the range.
    pub(crate) low: u32,
    /// One past the highest port of the range.
    pub(crate) high: u32,
    /// Where the stock search would start, relative to `low` (its randomness and parity).
    pub(crate) offset: u32,
}

/// Takes back the queues that `table`'s hooks gave a listener locked by the caller, for a
/// module that is going away: `None` if it has none (any more), or if `table` is not
/// registered. Hooks already running may still use them: dropping the returned value frees
/// them after a grace period.
pub(crate) fn detach<T: Hooks>(
    table: &'static HooksVTable<T>,
    listener: &SockGuard<'_>,
) -> Option<Published<T::Queues>> {
    // SAFETY: The guard proves the socket is valid and locked, as the function requires;
    // `table` is a valid ops table.
    let raw =
        unsafe { bindings::fastsocket_listen_detach(listener.sock().as_raw(), table.0.get()) };
    // SAFETY: The kernel returns queues only while `table` is registered, and every listener's
    // queues then came from its `listen` hook, `listen_trampoline::<T>` (it registers no table
    // while a listener holds queues of another registration); the call unpublished them: the
    // caller owns them.
    (!raw.is_null()).then(|| unsafe { Published::from_raw(raw.cast()) })
}

/// Which queued connection `accept()` should take.
pub(crate) struct AcceptPick {
    /// Prefer a connection whose handshake completed on this CPU...
    pub(crate) cpu: u32,
    /// ...among the first `scan` queued ones (at least 1); otherwise take the oldest.
    pub(crate) scan: u32,
}

/// The C ops table for the [`Hooks`] implementation `T`.
///
/// # Invariants
///
/// The table was built by [`vtable::<T>`]: its `listen` hook is `listen_trampoline::<T>` or
/// none.
pub(crate) struct HooksVTable<T: Hooks>(Opaque<bindings::fastsocket_ops>, PhantomData<T>);

// SAFETY: The table is built at compile time and never written afterwards; the kernel only
// reads it.
unsafe impl<T: Hooks> Sync for HooksVTable<T> {}

/// Which of a [`Hooks`] implementation's hooks an ops table installs.
pub(crate) enum HookSet {
    /// Every hook it implements.
    All,
    /// Only lightweight socket files' (`pair_get`, `pair_put`): the other features' static
    /// keys stay off.
    SocketFiles,
}

/// Builds the ops table for `T` with the hooks of `set`; meant for a `static`.
pub(crate) const fn vtable<T: Hooks>(set: HookSet) -> HooksVTable<T> {
    if T::HAS_LISTEN && !T::HAS_LISTEN_STOP {
        build_error!("a Hooks type with listen must implement listen_stop");
    }
    let all = matches!(set, HookSet::All);
    // INVARIANT: `listen` is `listen_trampoline::<T>` or none.
    let ops = Opaque::new(bindings::fastsocket_ops {
        name: T::NAME.as_char_ptr(),
        accept: if all && T::HAS_ACCEPT {
            Some(accept_trampoline::<T>)
        } else {
            None
        },
        child_ready: if all && T::HAS_CHILD_READY {
            Some(child_ready_trampoline::<T>)
        } else {
            None
        },
        accept_pick: if all && T::HAS_ACCEPT_PICK {
            Some(accept_pick_trampoline::<T>)
        } else {
            None
        },
        may_take: if all && T::HAS_MAY_TAKE {
            Some(may_take_trampoline::<T>)
        } else {
            None
        },
        listen: if all && T::HAS_LISTEN {
            Some(listen_trampoline::<T>)
        } else {
            None
        },
        queue_add: if all && T::HAS_QUEUE_ADD {
            Some(queue_add_trampoline::<T>)
        } else {
            None
        },
        queue_remove: if all && T::HAS_QUEUE_REMOVE {
            Some(queue_remove_trampoline::<T>)
        } else {
            None
        },
        queue_ready: if all && T::HAS_QUEUE_READY {
            Some(queue_ready_trampoline::<T>)
        } else {
            None
        },
        listen_stop: if all && T::HAS_LISTEN_STOP {
            Some(listen_stop_trampoline::<T>)
        } else {
            None
        },
        port_walk: if all && T::HAS_PORT_WALK {
            Some(port_walk_trampoline::<T>)
        } else {
            None
        },
        rps_cpu: if all && T::HAS_RPS_CPU {
            Some(rps_cpu_trampoline::<T>)
        } else {
            None
        },
        pair_get: if T::HAS_PAIR_GET {
            Some(pair_get_trampoline::<T>)
        } else {
            None
        },
        pair_put: if T::HAS_PAIR_PUT {
            Some(pair_put_trampoline::<T>)
        } else {
            None
        },
    });
    HooksVTable(ops, PhantomData)
}

/// The queues that `table`'s hooks keep with `listener`, if it has some and `table` is
/// registered, for an RCU read-side section.
pub(crate) fn queues_of<'a, T: Hooks>(
    table: &'static HooksVTable<T>,
    listener: &Sock,
    rcu: &'a RcuReadSection<'_>,
) -> Option<&'a T::Queues> {
    // SAFETY: The socket is valid for `&listener`, `table` is a valid ops table, and `rcu`
    // proves the RCU read-side section the call needs. A socket that is not a TCP listener
    // has no queues (its accept queue's pointer is null).
    let q = unsafe { bindings::fastsocket_listen_queues(listener.as_raw(), table.0.get()) };
    // SAFETY: Read inside the section `rcu` proves, while `table` is registered: the queues
    // came from its `listen` hook, `listen_trampoline::<T>` (see `detach`).
    (!q.is_null()).then(|| unsafe { queues::<T>(q, rcu) })
}

/// # Safety
///
/// Called by the kernel from `fastsocket_listen()` in `inet_csk_listen_start()`: `sk` is a
/// valid TCP listener, locked by the caller, and the call runs inside `rcu_read_lock()`. The
/// kernel keeps the returned pointer in the listener until `listen_stop_trampoline::<T>` or
/// [`detach`] takes it back, and passes it only to the hooks of the table that holds this
/// function (`T`'s) while that table is registered.
unsafe extern "C" fn listen_trampoline<T: Hooks>(
    sk: *mut bindings::sock,
) -> *mut bindings::fastsocket_queues {
    // SAFETY: The kernel holds `rcu_read_lock()` around the call.
    let rcu = unsafe { RcuReadSection::assume() };
    // SAFETY: The socket is a valid `inet_connection_sock` for the duration of the call.
    let listener = unsafe { Sock::from_raw(sk) };
    T::listen(&rcu, listener).map_or(ptr::null_mut(), |queues| queues.into_raw().cast())
}

/// # Safety
///
/// `q` is the queues pointer of a listener, read inside the RCU read-side section `rcu`
/// proves while a table of `T` was registered: it came from `listen_trampoline::<T>` (see
/// [`detach`]) and is freed only after a grace period once taken back.
unsafe fn queues<'a, T: Hooks>(
    q: *mut bindings::fastsocket_queues,
    rcu: &'a RcuReadSection<'_>,
) -> &'a T::Queues {
    // SAFETY: See the function's safety section.
    unsafe { RcuBox::<T::Queues>::borrow(q.cast_const().cast(), rcu) }
}

/// # Safety
///
/// Called by the kernel from `inet_csk_reqsk_queue_add()` for listener `sk` (valid, TCP) with
/// its queues `q` read under `rcu_read_lock()`, held around the call, and `req`, whose `sk` is
/// a child that completed its handshake, unlinked and owned by the caller, not yet counted.
/// If this returns true the queues own `req`; else the caller still does.
unsafe extern "C" fn queue_add_trampoline<T: Hooks>(
    sk: *mut bindings::sock,
    q: *mut bindings::fastsocket_queues,
    req: *mut bindings::request_sock,
) -> bool {
    // SAFETY: The kernel holds `rcu_read_lock()` around the call.
    let rcu = unsafe { RcuReadSection::assume() };
    // SAFETY: See the safety section.
    let (listener, queues) = unsafe { (Sock::from_raw(sk), queues::<T>(q, &rcu)) };
    // SAFETY: `req` is owned by the caller, not yet counted, and queued for `listener`; if it
    // comes back, its ownership returns to the caller through `into_raw()`.
    let incoming = unsafe { Req::from_raw(req, listener) };
    match T::queue_add(&rcu, listener, queues, incoming) {
        Ok(()) => true,
        Err(back) if back.is(req) => {
            back.into_raw();
            false
        }
        // Another connection of `listener` came back (one a hook took from its queues): the
        // hook kept `req` or dropped it (which queued it on the listener), so the caller must
        // not queue it again. The other one goes to the listener's own queue.
        Err(other) => {
            drop(other);
            true
        }
    }
}

/// # Safety
///
/// Called by the kernel from `inet_csk_accept()` for listener `sk` (valid, TCP) with its
/// queues `q` read under `rcu_read_lock()`, held around the call; a returned request passes to
/// the caller, which accepts its child.
unsafe extern "C" fn queue_remove_trampoline<T: Hooks>(
    sk: *mut bindings::sock,
    q: *mut bindings::fastsocket_queues,
) -> *mut bindings::request_sock {
    // SAFETY: The kernel holds `rcu_read_lock()` around the call.
    let rcu = unsafe { RcuReadSection::assume() };
    // SAFETY: See the safety section.
    let (listener, queues) = unsafe { (Sock::from_raw(sk), queues::<T>(q, &rcu)) };
    T::queue_remove(&rcu, listener, queues).map_or(ptr::null_mut(), Req::into_raw)
}

/// # Safety
///
/// Called by the kernel from the readiness check of listener `sk` (valid, TCP) with its
/// queues `q` read under `rcu_read_lock()`, held around the call.
unsafe extern "C" fn queue_ready_trampoline<T: Hooks>(
    sk: *mut bindings::sock,
    q: *mut bindings::fastsocket_queues,
) -> bool {
    // SAFETY: The kernel holds `rcu_read_lock()` around the call.
    let rcu = unsafe { RcuReadSection::assume() };
    // SAFETY: See the safety section.
    let (listener, queues) = unsafe { (Sock::from_raw(sk), queues::<T>(q, &rcu)) };
    T::queue_ready(&rcu, listener, queues)
}

/// # Safety
///
/// Called by the kernel from `inet_csk_listen_stop()` with listener `sk` (valid, locked) and
/// the queues `q` it just took off it, inside `rcu_read_lock()`: ownership of `q` passes to
/// the callee.
unsafe extern "C" fn listen_stop_trampoline<T: Hooks>(
    sk: *mut bindings::sock,
    q: *mut bindings::fastsocket_queues,
) {
    // SAFETY: The kernel holds `rcu_read_lock()` around the call.
    let rcu = unsafe { RcuReadSection::assume() };
    // SAFETY: The socket is valid for the duration of the call.
    let listener = unsafe { Sock::from_raw(sk) };
    // SAFETY: `q` came from `listen_trampoline::<T>`, the `listen` hook of the registered table
    // whose hook this is (see `detach`), and was unpublished by the caller, which hands it over.
    let queues = unsafe { Published::from_raw(q.cast()) };
    T::listen_stop(&rcu, listener, queues);
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

/// # Safety
///
/// Called by the kernel from a local port search (`__inet_hash_connect()`,
/// `inet_csk_find_open_port()`) through `fastsocket_port_walk()`: `sk` is a valid TCP socket,
/// `walk` valid for writes, and the call runs inside `rcu_read_lock()`.
unsafe extern "C" fn port_walk_trampoline<T: Hooks>(
    sk: *const bindings::sock,
    pass: c_uint,
    low: c_int,
    high: c_int,
    offset: u32,
    walk: *mut bindings::fastsocket_port_walk,
) -> bool {
    // SAFETY: The kernel holds `rcu_read_lock()` around the call.
    let rcu = unsafe { RcuReadSection::assume() };
    // SAFETY: The socket is a valid TCP socket, an `inet_connection_sock`, for the call.
    let sk = unsafe { Sock::from_raw(sk.cast_mut()) };
    // The kernel's ranges lie within 1..=65536.
    let (Ok(low), Ok(high)) = (u32::try_from(low), u32::try_from(high)) else {
        return false;
    };
    let search = PortSearch { low, high, offset };
    let Some(w) = T::port_walk(&rcu, sk, pass, search) else {
        return false;
    };
    // Ports and steps below 65537: they fit. A walk out of the range is refused by the kernel.
    let out = bindings::fastsocket_port_walk {
        port: w.port as c_int,
        end: w.end as c_int,
        span: w.span,
        step: w.step as c_int,
    };
    // SAFETY: `walk` is valid for writes (see the safety section).
    unsafe { walk.write(out) };
    true
}

/// # Safety
///
/// Called by the kernel from `get_rps_cpu()` through `fastsocket_rps_cpu()`: `net` is the
/// namespace of the receiving device, valid for the call, which runs inside
/// `rcu_read_lock()`.
unsafe extern "C" fn rps_cpu_trampoline<T: Hooks>(
    net: *const bindings::net,
    sport: u16,
    dport: u16,
) -> c_int {
    // SAFETY: The kernel holds `rcu_read_lock()` around the call.
    let rcu = unsafe { RcuReadSection::assume() };
    // SAFETY: The namespace of a device that is receiving is alive for the call.
    let net = unsafe { Net::from_raw(net.cast_mut()) };
    T::rps_cpu(&rcu, net, sport, dport)
        .and_then(|cpu| c_int::try_from(cpu).ok())
        .unwrap_or(-1)
}

/// # Safety
///
/// Called by the kernel from `sock_alloc()` through `fastsocket_sock_pair_get()`, in process
/// context inside `rcu_read_lock()`; a returned dentry passes to the kernel with its
/// reference, and the kernel sets up a new socket in its inode.
unsafe extern "C" fn pair_get_trampoline<T: Hooks>() -> *mut bindings::dentry {
    // SAFETY: The kernel holds `rcu_read_lock()` around the call.
    let rcu = unsafe { RcuReadSection::assume() };
    T::pair_get(&rcu).map_or(ptr::null_mut(), ReusablePair::into_raw)
}

/// # Safety
///
/// Called by the kernel from `sock_close()` through `__fastsocket_sock_pair_put()`, in process
/// context inside `rcu_read_lock()`, with `dentry`, a closed socket's, and a reference to it:
/// if this returns true the module owns that reference, else the kernel still does.
unsafe extern "C" fn pair_put_trampoline<T: Hooks>(dentry: *mut bindings::dentry) -> bool {
    // SAFETY: The kernel holds `rcu_read_lock()` around the call.
    let rcu = unsafe { RcuReadSection::assume() };
    // SAFETY: `dentry` and its reference are handed over; if they come back, `into_raw()`
    // returns them to the kernel with `false`.
    let kept = unsafe { KeptPair::from_raw(dentry) };
    match T::pair_put(&rcu, kept) {
        Ok(()) => true,
        Err(back) if back.is(dentry) => {
            back.into_raw();
            false
        }
        // Another pair came back (one a hook took from its cache): the hook kept `dentry` or
        // dropped it, so the kernel must not drop it again. The other one cannot be dropped
        // inside this RCU read-side section (`dput()` may sleep): it leaks.
        Err(other) => {
            core::mem::forget(other);
            true
        }
    }
}

/// The hooks of one module, registered with the kernel for as long as this value lives.
///
/// # Invariants
///
/// `vtable` is registered with `fastsocket_register_ops()`.
pub(crate) struct Registration<T: Hooks> {
    vtable: &'static HooksVTable<T>,
}

impl<T: Hooks> Registration<T> {
    /// Registers `vtable`; fails with `EBUSY` if another module's hooks are registered, or
    /// listeners still hold queues of hooks that were unregistered without taking them back.
    pub(crate) fn register(vtable: &'static HooksVTable<T>) -> Result<Self> {
        // SAFETY: `vtable` is a valid ops table that lives forever.
        to_result(unsafe { bindings::fastsocket_register_ops(vtable.0.get()) })?;
        // INVARIANT: Registered just above.
        Ok(Self { vtable })
    }
}

impl<T: Hooks> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `vtable` is registered. The call returns once no hook
        // of it runs any more (it waits for an RCU grace period).
        unsafe { bindings::fastsocket_unregister_ops(self.vtable.0.get()) };
    }
}
