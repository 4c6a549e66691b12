// SPDX-License-Identifier: GPL-2.0

//! The dentry and inode of closed sockets, kept by the module between one socket and the next
//! (see `include/net/fastsocket.h`).

use super::rcu::GraceState;
use core::ptr::NonNull;
use kernel::bindings;

/// The dentry of a socket whose file was closed, with its inode (the socket object), kept
/// instead of dropped.
///
/// RCU readers that found the socket before it was closed (wake-ups through its wait queue)
/// may still read the inode until a grace period has passed since it was kept: it goes to a
/// new socket only through [`KeptPair::reuse`], which checks that. Dropping it drops the
/// dentry and the inode as the kernel would have, with `dput()`, which may sleep: it must be
/// dropped in process context, outside spinlocks and RCU read-side sections.
///
/// # Invariants
///
/// `ptr` is a closed socket's dentry that the kernel handed over, with one reference, through
/// the `pair_put` hook before `since` was taken; this value owns that reference.
pub(crate) struct KeptPair {
    ptr: NonNull<bindings::dentry>,
    since: GraceState,
}

// SAFETY: The reference is owned by this value, not tied to a thread or a CPU.
unsafe impl Send for KeptPair {}
// SAFETY: `&KeptPair` gives no access to the dentry.
unsafe impl Sync for KeptPair {}

impl KeptPair {
    /// Takes over a closed socket's dentry and its reference from the kernel.
    ///
    /// # Safety
    ///
    /// `ptr` is the dentry passed to the `pair_put` hook that is calling this, and the hook
    /// returns true (kept) unless it gives the dentry back with [`KeptPair::into_raw`].
    pub(crate) unsafe fn from_raw(ptr: *mut bindings::dentry) -> Self {
        // INVARIANT: See the safety section; `since` is taken after the close.
        Self {
            // SAFETY: The kernel never passes a null dentry.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            since: GraceState::now(),
        }
    }

    /// When it was kept: a grace period started after this makes it reusable.
    pub(crate) fn since(&self) -> GraceState {
        self.since
    }

    /// The pair, ready for a new socket, once a grace period has passed since it was kept;
    /// otherwise itself back.
    pub(crate) fn reuse(self) -> Result<ReusablePair, Self> {
        if self.since.passed() {
            Ok(ReusablePair(self))
        } else {
            Err(self)
        }
    }

    /// Whether this is the pair of dentry `dentry`.
    pub(crate) fn is(&self, dentry: *const bindings::dentry) -> bool {
        core::ptr::eq(self.ptr.as_ptr(), dentry)
    }

    /// Gives the dentry and its reference back to the kernel (the `pair_put` hook returns
    /// false, and the kernel drops it).
    pub(crate) fn into_raw(self) -> *mut bindings::dentry {
        let raw = self.ptr.as_ptr();
        core::mem::forget(self);
        raw
    }
}

impl Drop for KeptPair {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the reference is owned here and given up once.
        unsafe { bindings::dput(self.ptr.as_ptr()) };
    }
}

/// A kept dentry and inode no RCU reader can reach any more, for the kernel to set up as a
/// new socket's.
pub(crate) struct ReusablePair(KeptPair);

impl ReusablePair {
    /// Hands the dentry and its reference to the kernel (the `pair_get` hook's result).
    pub(crate) fn into_raw(self) -> *mut bindings::dentry {
        self.0.into_raw()
    }
}
