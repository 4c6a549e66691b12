// SPDX-License-Identifier: GPL-2.0

//! Queues of established connections kept for a listener outside its own accept queue.
//!
//! A connection waiting to be accepted is a `struct request_sock` whose `sk` is the child
//! socket; the listener's own queue links them through `dl_next`, under `rskq_lock`. A
//! [`ReqQueue`] links them the same way under a lock of its own, and counts them in the
//! listener's `sk_ack_backlog` as the stack does (atomically: see `fastsocket_acceptq_add()`),
//! so backlog limits, `ss` and `/proc/net/tcp` see one figure over all queues.

use super::lock::{new_spinlock_bh, SpinLockBh};
use super::net::Sock;
use super::rcu::RcuDrop;
use core::{
    ptr::{self, NonNull},
    sync::atomic::{AtomicU32, Ordering},
};
use kernel::{bindings, prelude::*};

/// A connection on its way into a [`ReqQueue`] of `listener` or out of one to `accept()`.
///
/// Dropping it gives it back to the tail of its listener's own accept queue, counted in its
/// backlog, where `accept()` and the listener's close find it. (On a listener whose close
/// already emptied its queue it would stay there until the listener is freed: the hooks hand
/// a [`Req`] on or back before they return.)
///
/// # Invariants
///
/// `req` is a `request_sock` whose `sk` is a child that completed its handshake, not counted
/// in `listener`'s `sk_ack_backlog` (a queue counts what it links), linked in no queue, and
/// owned by this value (it holds the reference the accept queue would hold).
pub(crate) struct Req<'a> {
    req: NonNull<bindings::request_sock>,
    listener: &'a Sock,
}

impl<'a> Req<'a> {
    /// Takes ownership of a connection the stack hands to a hook.
    ///
    /// # Safety
    ///
    /// `req` is a `request_sock` whose `sk` is a child that completed its handshake, linked in
    /// no queue and not counted in `listener`'s backlog, whose ownership passes to the
    /// returned value, and `listener` is the listener it is queued for.
    pub(crate) unsafe fn from_raw(req: *mut bindings::request_sock, listener: &'a Sock) -> Self {
        // INVARIANT: See the safety section; not counted (`push` counts it, `pop_if` uncounts
        // it before it builds one).
        Self {
            // SAFETY: The caller passes a valid pointer.
            req: unsafe { NonNull::new_unchecked(req) },
            listener,
        }
    }

    /// Gives up ownership, for the stack, which accepts or queues the connection.
    pub(crate) fn into_raw(self) -> *mut bindings::request_sock {
        let req = self.req.as_ptr();
        core::mem::forget(self);
        req
    }

    /// Whether this is the request `req`.
    pub(crate) fn is(&self, req: *const bindings::request_sock) -> bool {
        ptr::eq(self.req.as_ptr(), req)
    }

    /// The child socket.
    pub(crate) fn child(&self) -> &Sock {
        // SAFETY: By the type invariant `req` is valid and its `sk` is a child TCP socket that
        // lives at least as long as the request owns it, i.e. as long as `self`.
        unsafe { Sock::from_raw((*self.req.as_ptr()).sk) }
    }
}

impl Drop for Req<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the connection is owned, unlinked and not counted on
        // `listener`: the function counts it (`true`) under the listener's `rskq_lock`, as the
        // queue it joins counts what it links, and takes ownership.
        unsafe {
            bindings::fastsocket_reqsk_queue_requeue(
                self.listener.as_raw(),
                self.req.as_ptr(),
                true,
            )
        };
    }
}

/// The linked connections of a [`ReqQueue`].
///
/// # Invariants
///
/// `head` is null and `tail` is null, or `head` starts a chain linked by `dl_next` that ends
/// with `tail`, whose `dl_next` is null; each request in it is owned by the queue, as a [`Req`]
/// is, and counted in the backlog of the listener the queue belongs to.
struct Fifo {
    head: *mut bindings::request_sock,
    tail: *mut bindings::request_sock,
    /// Set for good by [`ReqQueue::close`]: nothing is queued any more.
    closed: bool,
}

// SAFETY: The requests are kernel objects that any CPU may use; the queue's lock serialises
// every access to the chain.
unsafe impl Send for Fifo {}

/// A FIFO of established connections of one listener, under a BH spinlock of its own.
///
/// The queue belongs to one listener, which every call names: its connections are counted in
/// that listener's backlog. Once [`ReqQueue::close`]d it takes nothing more.
#[pin_data(PinnedDrop)]
pub(crate) struct ReqQueue {
    #[pin]
    fifo: SpinLockBh<Fifo>,
    /// How many connections are linked, for readers that do not take the lock.
    len: AtomicU32,
    /// When the oldest connection's child last received a segment (jiffies, 32 bits) as it
    /// became the oldest, for readers that do not take the lock.
    head_rcv: AtomicU32,
}

// SAFETY: Dropping a queue takes its BH spinlock, which may be taken in softirq context, and
// logs a line; it neither sleeps nor borrows anything.
unsafe impl RcuDrop for ReqQueue {}

impl ReqQueue {
    /// An empty queue.
    pub(crate) fn new() -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            fifo <- new_spinlock_bh!(Fifo {
                head: ptr::null_mut(),
                tail: ptr::null_mut(),
                closed: false,
            }),
            len: AtomicU32::new(0),
            head_rcv: AtomicU32::new(0),
        }? Error)
    }

    /// How many connections wait here now (read without the lock: it may be stale).
    pub(crate) fn len(&self) -> u32 {
        self.len.load(Ordering::Relaxed)
    }

    /// When the oldest connection waiting here last received a segment as it became the
    /// oldest (jiffies, 32 bits), `None` if there is none (read without the lock: it may be
    /// stale, and a segment since may have made the connection younger).
    pub(crate) fn head_rcv(&self) -> Option<u32> {
        (self.len() > 0).then(|| self.head_rcv.load(Ordering::Relaxed))
    }

    /// Queues `req`, counting it in the backlog of `listener`, whose queue this is. Gives it
    /// back if the queue is closed or `listener` left `TCP_LISTEN` (both seen under the lock
    /// that [`ReqQueue::close`] takes), for the stack to deal with.
    pub(crate) fn push<'a>(&self, listener: &Sock, req: Req<'a>) -> Result<(), Req<'a>> {
        let mut fifo = self.fifo.lock();
        if fifo.closed || !listener.is_listening() {
            return Err(req);
        }
        if fifo.tail.is_null() {
            self.head_rcv
                .store(req.child().last_rcv_jiffies32(), Ordering::Relaxed);
        }
        let raw = req.into_raw();
        // SAFETY: `raw` is an owned, unlinked request (invariant of `Req`); the lock is held,
        // so by the invariant of `Fifo` `tail` is null or the valid last request of the chain.
        unsafe {
            (*raw).dl_next = ptr::null_mut();
            if fifo.tail.is_null() {
                fifo.head = raw;
            } else {
                (*fifo.tail).dl_next = raw;
            }
        }
        // INVARIANT: `raw` ends the chain, owned by the queue, and is counted below, before
        // the lock is released.
        fifo.tail = raw;
        listener.acceptq_add(1);
        self.len.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Takes the oldest connection if `take` agrees, given its child, uncounting it from the
    /// backlog of `listener`, whose queue this is. `take` runs with the queue's lock held.
    pub(crate) fn pop_if<'a>(
        &self,
        listener: &'a Sock,
        take: impl FnOnce(&Sock) -> bool,
    ) -> Option<Req<'a>> {
        if self.len() == 0 {
            return None;
        }
        let mut fifo = self.fifo.lock();
        let head = NonNull::new(fifo.head)?;
        // SAFETY: By the invariant of `Fifo` the head is a valid owned request whose child
        // lives as long as the request is queued, which the lock guarantees during the call.
        let child = unsafe { Sock::from_raw((*head.as_ptr()).sk) };
        if !take(child) {
            return None;
        }
        // SAFETY: The head is valid (see above); unlinking it keeps the chain well formed.
        fifo.head = unsafe { (*head.as_ptr()).dl_next };
        match NonNull::new(fifo.head) {
            None => fifo.tail = ptr::null_mut(),
            Some(next) => {
                // SAFETY: The new head is a valid queued request (invariant of `Fifo`) whose
                // child lives while it is queued, under the lock.
                let child = unsafe { Sock::from_raw((*next.as_ptr()).sk) };
                self.head_rcv
                    .store(child.last_rcv_jiffies32(), Ordering::Relaxed);
            }
        }
        self.len.fetch_sub(1, Ordering::Relaxed);
        listener.acceptq_add(-1);
        // SAFETY: The request was owned by the queue and is now unlinked, and uncounted from
        // `listener` just above, as a connection leaving for `accept()` is.
        Some(unsafe { Req::from_raw(head.as_ptr(), listener) })
    }

    /// Whether the oldest connection is one `take` agrees to, given its child (`take` runs
    /// with the queue's lock held).
    pub(crate) fn head_is(&self, take: impl FnOnce(&Sock) -> bool) -> bool {
        if self.len() == 0 {
            return false;
        }
        let fifo = self.fifo.lock();
        NonNull::new(fifo.head).is_some_and(|head| {
            // SAFETY: By the invariant of `Fifo` the head is a valid request whose child lives
            // while it is queued, which the lock guarantees during the call.
            take(unsafe { Sock::from_raw((*head.as_ptr()).sk) })
        })
    }

    /// Closes the queue for good and gives every connection in it back to the tail of the
    /// listener's own accept queue, oldest first, still counted. Returns how many moved.
    pub(crate) fn close(&self, listener: &Sock) -> u32 {
        let mut chain = {
            let mut fifo = self.fifo.lock();
            fifo.closed = true;
            fifo.tail = ptr::null_mut();
            self.len.store(0, Ordering::Relaxed);
            core::mem::replace(&mut fifo.head, ptr::null_mut())
        };
        let mut moved = 0;
        while let Some(req) = NonNull::new(chain) {
            // SAFETY: The chain was taken whole from the queue under its lock: every request
            // in it is valid and owned here, and read before it is handed on.
            chain = unsafe { (*req.as_ptr()).dl_next };
            // SAFETY: The request is owned, counted on `listener` (so `false`: not counted
            // again), and unlinked from the rest of the chain (its `dl_next` is reset by the
            // callee).
            unsafe {
                bindings::fastsocket_reqsk_queue_requeue(listener.as_raw(), req.as_ptr(), false)
            };
            moved += 1;
        }
        moved
    }
}

#[pinned_drop]
impl PinnedDrop for ReqQueue {
    fn drop(self: Pin<&mut Self>) {
        // A queue is closed before its listener's queues are dropped (see `hooks`): any
        // connection left would be lost, so say so.
        let fifo = self.fifo.lock();
        if !fifo.head.is_null() {
            pr_err!("a per-CPU accept queue was dropped with connections in it\n");
        }
    }
}
