// SPDX-License-Identifier: GPL-2.0

//! The inode objects of sockets (`struct socket_alloc`, the socket and its sockfs inode), kept
//! by the module between one socket and the next (see `include/net/fastsocket.h`).

use super::rcu::GraceState;
use core::ptr::NonNull;
use kernel::bindings;

/// The inode object of a socket that was closed and torn down, kept instead of freed.
///
/// RCU readers that found the socket before it was torn down (wake-ups through its wait
/// queue) may still read the object until a grace period has passed since it was kept: it
/// goes to a new socket only through [`KeptInode::reuse`], which checks that. Dropping it
/// frees it after a grace period, as the kernel would have.
///
/// # Invariants
///
/// `ptr` is a torn-down `struct socket_alloc` that the kernel handed over through the
/// `inode_put` hook before `since` was taken; this value owns it.
pub(crate) struct KeptInode {
    ptr: NonNull<bindings::socket_alloc>,
    since: GraceState,
}

// SAFETY: The object is plain memory owned by this value, not tied to a thread or a CPU.
unsafe impl Send for KeptInode {}
// SAFETY: `&KeptInode` gives no access to the object.
unsafe impl Sync for KeptInode {}

impl KeptInode {
    /// Takes ownership of an object the kernel hands over.
    ///
    /// # Safety
    ///
    /// `ptr` is the object passed to the `inode_put` hook that is calling this, and the hook
    /// returns true (kept) unless it gives the object back with [`KeptInode::into_raw`].
    pub(crate) unsafe fn from_raw(ptr: *mut bindings::socket_alloc) -> Self {
        // INVARIANT: See the safety section; `since` is taken after the teardown.
        Self {
            // SAFETY: The kernel never passes a null object.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            since: GraceState::now(),
        }
    }

    /// When it was kept: a grace period started after this makes it reusable.
    pub(crate) fn since(&self) -> GraceState {
        self.since
    }

    /// The object, ready for a new socket, once a grace period has passed since it was kept;
    /// otherwise itself back.
    pub(crate) fn reuse(self) -> Result<ReusableInode, Self> {
        if self.since.passed() {
            Ok(ReusableInode(self))
        } else {
            Err(self)
        }
    }

    /// Gives the object back to the kernel, which frees it (the `inode_put` hook returns
    /// false).
    pub(crate) fn into_raw(self) -> *mut bindings::socket_alloc {
        let raw = self.ptr.as_ptr();
        core::mem::forget(self);
        raw
    }
}

impl Drop for KeptInode {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the object is owned here and given up once; the
        // kernel frees it after a grace period.
        unsafe { bindings::fastsocket_sock_inode_free(self.ptr.as_ptr()) };
    }
}

/// An inode object no RCU reader can reach any more, for the kernel to set up as a new
/// socket's.
pub(crate) struct ReusableInode(KeptInode);

impl ReusableInode {
    /// Hands the object to the kernel (the `inode_get` hook's result).
    pub(crate) fn into_raw(self) -> *mut bindings::socket_alloc {
        self.0.into_raw()
    }
}
