// SPDX-License-Identifier: GPL-2.0

//! Sockets and network namespaces, borrowed from the C stack.

use core::{
    ffi::{c_int, c_ulong, c_void},
    marker::PhantomData,
    ptr::{self, NonNull},
    sync::atomic::{AtomicU32, Ordering},
};
use kernel::{bindings, types::Opaque};

/// A network namespace (`struct net`).
///
/// Only ever used by reference to a namespace whose `struct net` the caller knows to be
/// allocated: one of its sockets is valid (see [`Sock::net`]), or the kernel is initialising
/// or tearing it down. The namespace may be dying (its refcount zero, its pernet exits about to
/// run): state kept per namespace must be reached through [`super::pernet::PerNet::get`], which
/// says when it is gone.
#[repr(transparent)]
pub(crate) struct Net(Opaque<bindings::net>);

impl Net {
    /// Borrows a namespace from a C pointer.
    ///
    /// # Safety
    ///
    /// `ptr` is valid and the namespace stays alive for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::net) -> &'a Self {
        // SAFETY: `Net` is a transparent wrapper of `struct net`; the caller guarantees
        // validity for `'a`.
        unsafe { &*ptr.cast() }
    }

    /// The network namespace of the calling task, `None` once the task has left its
    /// namespaces (an exiting task closes its last files after that).
    pub(crate) fn current<'a>(_rcu: &'a RcuReadSection<'_>) -> Option<&'a Self> {
        // SAFETY: `get_current()` is the running task. Only the task itself replaces or
        // clears its `nsproxy` (setns(), unshare(), exit), and it does not run while this
        // does (it runs this, or this interrupts it).
        let nsproxy = unsafe { (*bindings::get_current()).nsproxy };
        if nsproxy.is_null() {
            return None;
        }
        // SAFETY: A task's `nsproxy` holds a reference on its `net_ns`, which therefore
        // outlives this call and the caller's use of it within `_rcu`.
        Some(unsafe { Self::from_raw((*nsproxy).net_ns) })
    }

    /// The C pointer, for calls into the kernel.
    pub(crate) fn as_raw(&self) -> *mut bindings::net {
        self.0.get()
    }

    /// The namespace's ephemeral port range, `net.ipv4.ip_local_port_range` (both ends
    /// included; IPv6 uses it too).
    pub(crate) fn local_port_range(&self) -> (u16, u16) {
        // Read in place as `inet_get_local_port_range()` reads it (the receive hook asks for
        // every segment to an ephemeral port): both ends in one word, low in the low half.
        // SAFETY: The namespace is valid for `&self`; the word is read once, as READ_ONCE()
        // does, since the sysctl may write it meanwhile.
        let range =
            unsafe { ptr::read_volatile(&raw const (*self.0.get()).ipv4.ip_local_ports.range) };
        (range as u16, (range >> 16) as u16)
    }

    /// Whether `port` is in `net.ipv4.ip_local_reserved_ports`.
    pub(crate) fn is_reserved_port(&self, port: u16) -> bool {
        #[cfg(CONFIG_SYSCTL)]
        {
            // Tested in place, as `inet_is_local_reserved_port()` tests it.
            // SAFETY: The namespace is valid for `&self`; the pointer is set when it is
            // created and not changed until it is freed.
            let bits = unsafe { (*self.0.get()).ipv4.sysctl_local_reserved_ports };
            if bits.is_null() {
                return false;
            }
            let (word, bit) = (
                usize::from(port) / c_ulong::BITS as usize,
                u32::from(port) % c_ulong::BITS,
            );
            // SAFETY: The bitmap has a bit for each of the 65,536 ports (`kzalloc(65536 / 8)` in
            // `ipv4_sysctl_init_net()`) and lives as long as the namespace; the sysctl may
            // write the word meanwhile, so it is read once, as `test_bit()` does.
            let w = unsafe { ptr::read_volatile(bits.add(word)) };
            (w >> bit) & 1 != 0
        }
        #[cfg(not(CONFIG_SYSCTL))]
        {
            let _ = port;
            false
        }
    }

    /// Adds to `counts[c]`, for each TCP listener of this namespace that `want` accepts, how
    /// many connections wait in its accept queue whose handshake completed on CPU c.
    ///
    /// `want` runs with a hash bucket lock held: it must not sleep. Process context only.
    pub(crate) fn count_queued<F: Fn(&Sock) -> bool>(&self, want: F, counts: &mut [u32]) {
        let nr = u32::try_from(counts.len()).unwrap_or(u32::MAX);
        // SAFETY: The namespace is valid for `&self`; `want_trampoline::<F>` gets `&want`
        // back as its argument, and both outlive the call; `counts` has `nr` entries.
        unsafe {
            bindings::fastsocket_count_queued(
                self.0.get(),
                Some(want_trampoline::<F>),
                (&want as *const F).cast_mut().cast(),
                counts.as_mut_ptr(),
                nr,
            )
        };
    }
}

/// # Safety
///
/// `sk` is a TCP listening socket (from the TCP listening hash) valid for the call, `arg`
/// points to an `F` ([`Net::count_queued`]).
unsafe extern "C" fn want_trampoline<F: Fn(&Sock) -> bool>(
    sk: *const bindings::sock,
    arg: *mut c_void,
) -> bool {
    // SAFETY: See the function's safety section; a TCP socket is an `inet_connection_sock`.
    let (want, sk) = unsafe { (&*arg.cast::<F>(), Sock::from_raw(sk.cast_mut())) };
    want(sk)
}

/// A socket (`struct sock`), borrowed for the duration of a hook.
///
/// # Invariants
///
/// The socket is an `inet_connection_sock`: a listener or a connection of TCP, an MPTCP
/// subflow or DCCP (the protocols whose listeners `inet_csk_accept()` and `tcp_child_process()`
/// serve, and whose local port searches call the port hook, the only places the hooks run).
#[repr(transparent)]
pub(crate) struct Sock(Opaque<bindings::sock>);

impl Sock {
    /// Borrows a socket from a C pointer.
    ///
    /// # Safety
    ///
    /// `ptr` is valid, points to an `inet_connection_sock`, and the socket stays alive for
    /// `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::sock) -> &'a Self {
        // SAFETY: `Sock` is a transparent wrapper of `struct sock`; the caller guarantees
        // validity for `'a`.
        // INVARIANT: The caller guarantees an `inet_connection_sock`.
        unsafe { &*ptr.cast() }
    }

    /// The network namespace the socket lives in. It may be dying (see [`Net`]).
    pub(crate) fn net(&self) -> &Net {
        // SAFETY: The socket is valid for `&self`. A user socket (`sk_net_refcnt` set) holds a
        // reference on its namespace; a kernel socket does not, but the kernel's rule for
        // those is that their creator releases them before the namespace is freed (typically
        // in its pernet exit, and `cleanup_net()` frees the `struct net` only after every
        // pernet exit ran). So the `struct net` stays allocated for as long as the socket is
        // valid, hence for `&self`; the namespace may be dying meanwhile. The field is read in
        // place, as `sock_net()` reads it: every hook call looks its namespace up.
        #[cfg(CONFIG_NET_NS)]
        // SAFETY: As above; `skc_net` is set when the socket is created and not changed after.
        unsafe {
            Net::from_raw((*self.0.get()).__sk_common.skc_net.net)
        }
        #[cfg(not(CONFIG_NET_NS))]
        // SAFETY: As above.
        unsafe {
            Net::from_raw(bindings::sock_net(self.0.get()))
        }
    }

    /// The C pointer, for calls into the kernel.
    pub(crate) fn as_raw(&self) -> *mut bindings::sock {
        self.0.get()
    }

    /// Takes a reference to the socket unless its refcount already reached zero (it is being
    /// freed, after a grace period for a listener); whether it took one. The caller owns the
    /// reference taken and gives it back with `sock_put()`.
    pub(crate) fn try_hold(&self) -> bool {
        // SAFETY: The socket's memory is valid for `&self`; `refcount_inc_not_zero()` takes a
        // reference only while another one is held, so never on a socket being freed.
        unsafe { bindings::refcount_inc_not_zero(&raw mut (*self.0.get()).__sk_common.skc_refcnt) }
    }

    /// An identity for tables keyed by socket; never turned back into a pointer.
    pub(crate) fn id(&self) -> usize {
        self.0.get() as usize
    }

    /// The local port (`inet_num`): for a listener, the port it listens on.
    pub(crate) fn local_port(&self) -> u16 {
        // SAFETY: The socket is valid for `&self` and, by the type invariant, an `inet_sock`:
        // this reads its `inet_num` (`skc_num`), set when the socket binds, as the C macro does;
        // in place, since several hooks ask for every connection.
        unsafe {
            ptr::read_volatile(
                &raw const (*self.0.get())
                    .__sk_common
                    .__bindgen_anon_3
                    .__bindgen_anon_1
                    .skc_num,
            )
        }
    }

    /// Wakes the waiters of this listening socket as `sock_def_readable()` does, but among the
    /// exclusive ones (blocking `accept()`, `EPOLLEXCLUSIVE`) tries one on `cpu` first. If
    /// none sits on `cpu`: with `how.pull` and `cpu` the current CPU, a task blocked in
    /// `accept()` or in `epoll_wait()` (`EPOLLEXCLUSIVE`) that may run on `cpu` is tried first
    /// and woken onto it
    /// ([`ListenerWake::Pulled`]); else with `how.hold`, only the non-exclusive waiters are
    /// woken and the result is [`ListenerWake::Held`]: the caller must then wake the listener
    /// later (see [`super::hold::HeldWakes`]). With `how.spread` (and `how.pull`), the same is
    /// done when `cpu` is busy and at least as many waiters that may run on it wait as CPUs
    /// are online, so that two of them share a CPU: the caller's later wake-up with `how.pull`
    /// moves one onto `cpu` once it is idle.
    ///
    /// Only meaningful where a connection was just queued or held on `cpu`: in
    /// [`super::hooks::Hooks::child_ready`] or the timer of [`super::hold::HeldWakes`], in place
    /// of the stack's wake-up.
    pub(crate) fn wake_listener_on(&self, cpu: u32, how: WakeHow) -> ListenerWake {
        let mut flags = 0;
        if how.pull {
            flags |= bindings::FASTSOCKET_WAKE_PULL;
        }
        if how.hold {
            flags |= bindings::FASTSOCKET_WAKE_HOLD;
        }
        if how.spread {
            flags |= bindings::FASTSOCKET_WAKE_SPREAD;
        }
        // SAFETY: The socket is valid for `&self`; the function takes the locks it needs.
        let woke = unsafe { bindings::fastsocket_wake_listener(self.0.get(), cpu as c_int, flags) };
        match woke {
            bindings::FASTSOCKET_WOKE_LOCAL => ListenerWake::Local,
            bindings::FASTSOCKET_WOKE_PULLED => ListenerWake::Pulled,
            bindings::FASTSOCKET_WOKE_ANY => ListenerWake::Other,
            bindings::FASTSOCKET_WOKE_HELD => ListenerWake::Held,
            _ => ListenerWake::Custom,
        }
    }

    /// Wakes the waiters of this listening socket the way the stack does
    /// (`sk->sk_data_ready()`).
    pub(crate) fn data_ready(&self) {
        // SAFETY: The socket is valid for `&self`.
        unsafe { bindings::sk_data_ready(self.0.get()) };
    }

    /// When (in jiffies, truncated to 32 bits) the socket last received a segment: for a
    /// queued child, when its handshake completed, or later if data came since.
    pub(crate) fn last_rcv_jiffies32(&self) -> u32 {
        // SAFETY: The socket is valid for `&self` and, by the type invariant, an
        // `inet_connection_sock`, which is what `inet_csk()` casts it to; the field is read once,
        // as READ_ONCE() does (segments update it meanwhile).
        unsafe {
            ptr::read_volatile(
                &raw const (*self.0.get().cast::<bindings::inet_connection_sock>())
                    .icsk_ack
                    .lrcvtime,
            )
        }
    }

    /// Whether the socket is in `TCP_LISTEN`, as its accept queue's users see it (a plain read:
    /// the caller holds a lock that orders it with the state change it cares about).
    pub(crate) fn is_listening(&self) -> bool {
        // SAFETY: The socket is valid for `&self`; `skc_state` is one byte, read once.
        let state =
            unsafe { ptr::read_volatile(ptr::addr_of!((*self.0.get()).__sk_common.skc_state)) };
        u32::from(state) == bindings::TCP_LISTEN
    }

    /// Whether this listener's own accept queue (not a module's queues of it) is empty now, as
    /// `reqsk_queue_empty()` reads it: a hint, the queue may change at once.
    pub(crate) fn own_queue_is_empty(&self) -> bool {
        // SAFETY: The socket is valid for `&self` and an `inet_connection_sock` (type
        // invariant); the head pointer is read once, as `READ_ONCE()` does, and never dereferenced.
        let head = unsafe {
            ptr::read_volatile(ptr::addr_of!(
                (*self.0.get().cast::<bindings::inet_connection_sock>())
                    .icsk_accept_queue
                    .rskq_accept_head
            ))
        };
        head.is_null()
    }

    /// This listener's count of queued connections (`sk_ack_backlog`, as `READ_ONCE()` reads
    /// it): the connections in its own accept queue and in a module's queues of it, each
    /// counted where it is queued and uncounted where it is taken.
    pub(crate) fn acceptq_len(&self) -> u32 {
        // SAFETY: The socket is valid for `&self`; `sk_ack_backlog` is an aligned `u32`, read
        // with a relaxed atomic load as `READ_ONCE()` reads it. The kernel's writers that may
        // run concurrently with a hook are atomic (`fastsocket_acceptq_add()` with the
        // locality key on) or `WRITE_ONCE()` (a single store of a naturally aligned word,
        // which a concurrent load sees whole); its one plain store, `inet_csk_listen_start()`'s
        // reset to 0, runs before the listener is hashed, so before any hook can reach it.
        let backlog =
            unsafe { AtomicU32::from_ptr(ptr::addr_of_mut!((*self.0.get()).sk_ack_backlog)) };
        backlog.load(Ordering::Relaxed)
    }

    /// Adds `n` (negative: takes) to this listener's count of queued connections
    /// (`sk_ack_backlog`), atomically, as `fastsocket_acceptq_add()` does while a module may
    /// keep queues. For [`super::reqq`] only, which calls it for a listener whose queue it
    /// holds the open lock of.
    pub(super) fn acceptq_add(&self, n: i32) {
        // SAFETY: The socket is valid for `&self`; `sk_ack_backlog` is an aligned `u32`. The
        // caller holds the lock of an open queue of this listener's (see above): the queues are
        // open while the module's hooks are registered with the locality key on and the
        // listener listens, and are closed under that lock before `inet_csk_listen_stop()`
        // drains the listener's own queue, the one place that then changes the count without
        // an atomic (under `rskq_lock`, as `fastsocket_reqsk_queue_requeue()` does); every other
        // change of it meanwhile is `fastsocket_acceptq_add()`'s atomic one.
        let backlog =
            unsafe { AtomicU32::from_ptr(ptr::addr_of_mut!((*self.0.get()).sk_ack_backlog)) };
        backlog.fetch_add(n as u32, Ordering::Relaxed);
    }

    /// Locks the socket (`lock_sock()`), which may sleep: process context only.
    pub(crate) fn lock(&self) -> SockGuard<'_> {
        // SAFETY: The socket is valid for `&self`; subclass 0 is what `lock_sock()` uses.
        unsafe { bindings::lock_sock_nested(self.0.get(), 0) };
        // INVARIANT: Locked just above.
        SockGuard(self)
    }

    /// The CPU that last processed a packet for this socket (for a freshly accepted socket:
    /// the CPU that completed its handshake), or `None` if unknown.
    pub(crate) fn incoming_cpu(&self) -> Option<u32> {
        // SAFETY: The socket is valid for `&self`; `sk_incoming_cpu` is read once, as
        // READ_ONCE() does (segments update it meanwhile).
        let cpu = unsafe {
            ptr::read_volatile(
                &raw const (*self.0.get())
                    .__sk_common
                    .__bindgen_anon_7
                    .skc_incoming_cpu,
            )
        };
        u32::try_from(cpu).ok()
    }
}

/// A socket locked with `lock_sock()`, unlocked when dropped.
///
/// # Invariants
///
/// The running task owns the socket's lock.
pub(crate) struct SockGuard<'a>(&'a Sock);

impl SockGuard<'_> {
    /// The locked socket.
    pub(crate) fn sock(&self) -> &Sock {
        self.0
    }
}

impl Drop for SockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the task owns the socket's lock.
        unsafe { bindings::release_sock(self.0.as_raw()) };
    }
}

/// A reference to a socket ([`Sock::try_hold`]), released when dropped (`sock_put()`).
///
/// # Invariants
///
/// `0` is a valid `inet_connection_sock` on which this value holds a reference.
pub(crate) struct SockRef(NonNull<bindings::sock>);

// SAFETY: A socket reference may be held and dropped on any CPU or thread.
unsafe impl Send for SockRef {}
// SAFETY: Shared access only hands out `&Sock`, which any thread may use.
unsafe impl Sync for SockRef {}

impl SockRef {
    /// Takes a reference to `sk`, unless its last one was dropped already: a `&Sock` keeps its
    /// memory valid, not its refcount above zero. A TCP listener is freed after an RCU grace
    /// period (`SOCK_RCU_FREE`), so a softirq that found it in the hash table without taking a
    /// reference (a syncookie's ACK) may run while a `close()` drops its last one.
    pub(crate) fn try_new(sk: &Sock) -> Option<Self> {
        sk.try_hold().then(|| {
            // INVARIANT: The reference was just taken; `Sock`s are `inet_connection_sock`s.
            // SAFETY: A `&Sock` is never null.
            Self(unsafe { NonNull::new_unchecked(sk.as_raw()) })
        })
    }
}

impl core::ops::Deref for SockRef {
    type Target = Sock;

    fn deref(&self) -> &Sock {
        // SAFETY: By the type invariant the socket lives while the reference is held.
        unsafe { Sock::from_raw(self.0.as_ptr()) }
    }
}

impl Drop for SockRef {
    fn drop(&mut self) {
        // SAFETY: By the type invariant this value holds a reference, dropped once, here.
        unsafe { bindings::sock_put(self.0.as_ptr()) };
    }
}

/// What [`Sock::wake_listener_on`] may do when no exclusive waiter sits on the wanted CPU.
#[derive(Clone, Copy, Default)]
pub(crate) struct WakeHow {
    /// Wake a task blocked in `accept()` or `epoll_wait()` onto the CPU, if its affinity allows
    /// it.
    pub(crate) pull: bool,
    /// Else wake no exclusive waiter: the caller wakes them later.
    pub(crate) hold: bool,
    /// Else, if the CPU is busy and two waiters share another CPU, wake no exclusive waiter
    /// either: the caller's later wake-up with `pull` spreads them.
    pub(crate) spread: bool,
}

/// What [`Sock::wake_listener_on`] did.
pub(crate) enum ListenerWake {
    /// A waiter on the wanted CPU was tried first.
    Local,
    /// A task blocked in `accept()` or `epoll_wait()` elsewhere was tried first and woken onto
    /// the wanted CPU.
    Pulled,
    /// No waiter sits on the wanted CPU: woken in the stock order.
    Other,
    /// No waiter sits on the wanted CPU: only non-exclusive waiters were woken, the caller
    /// owns the wake-up of the exclusive ones.
    Held,
    /// The socket has its own `sk_data_ready()`: nothing was woken, the stack must call it.
    Custom,
}

/// Proof that the caller is inside an RCU read-side critical section.
///
/// Objects freed only after a grace period may be borrowed for the lifetime of this token. The
/// section belongs to the running context, so the token is neither [`Send`] nor [`Sync`]: it
/// cannot prove anything on another thread.
pub(crate) struct RcuReadSection<'a>(PhantomData<(&'a (), *mut ())>);

impl RcuReadSection<'_> {
    /// Asserts that the caller is inside an RCU read-side critical section.
    ///
    /// # Safety
    ///
    /// The caller holds `rcu_read_lock()` (or runs with preemption or bottom halves disabled)
    /// for the whole lifetime of the returned token.
    pub(crate) unsafe fn assume() -> Self {
        Self(PhantomData)
    }
}
