// SPDX-License-Identifier: GPL-2.0

//! Lightweight socket files, first step: a per-CPU cache of socket inode objects.
//!
//! Without the module every socket takes its inode object (`struct socket_alloc`: the socket
//! and its sockfs inode) from the slab, and every close queues an RCU callback that returns it
//! a grace period later, cold. With the module loaded the closing CPU keeps the torn-down
//! object (at most [`CAPACITY`] per CPU, oldest first); a socket created on that CPU by a task
//! of a namespace with `net.fastsocket.vfs` on takes the oldest one once a grace period has
//! passed since it was kept, instead of a new one. The kernel initialises it as it does a new
//! one, so nothing a program sees changes. Objects that find the cache full are freed as
//! without the module; the memory manager's shrinker frees kept ones when memory runs low,
//! and unloading the module frees every kept object. See `Documentation/vfs.md`.

use crate::logic::fifo::Fifo;
use crate::netstate::NetState;
use crate::sys::{
    global::{Global, Installed},
    net::{Net, RcuReadSection},
    percpu::{Alloc, PerCpu},
    rcu::GraceState,
    shrinker::{self, Shrink},
    sockfs::{KeptInode, ReusableInode},
};
use kernel::{c_str, new_spinlock, prelude::*, sync::SpinLock};

/// The most objects one CPU keeps: about 200 KiB of socket inode objects per CPU.
pub(crate) const CAPACITY: usize = 256;

/// One CPU's kept objects, oldest first.
struct Kept {
    fifo: Fifo<KeptInode, KVec<Option<KeptInode>>>,
    /// The grace-period state this CPU last made sure a grace period would end.
    started: Option<GraceState>,
    /// Objects this CPU kept since the module loaded.
    total: u64,
}

impl Kept {
    fn new() -> Result<Self> {
        let mut slots = KVec::with_capacity(CAPACITY, GFP_KERNEL)?;
        for _ in 0..CAPACITY {
            slots.push(None, GFP_KERNEL)?;
        }
        Ok(Self {
            fifo: Fifo::new(slots).ok_or(EINVAL)?,
            started: None,
            total: 0,
        })
    }
}

/// One CPU's cache.
#[pin_data]
struct CpuCache {
    #[pin]
    kept: SpinLock<Kept>,
}

impl CpuCache {
    fn new() -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            kept <- new_spinlock!(Kept::new()?),
        })
    }
}

/// Every CPU's kept socket inode objects.
pub(crate) struct InodeCache(PerCpu<CpuCache>);

/// The cache, reached by the hooks while the module is loaded.
static CACHE: Global<InodeCache> = Global::new();

impl InodeCache {
    /// Sets up an empty cache for every possible CPU and publishes it to the hooks; dropping
    /// the result frees every object it still keeps.
    pub(crate) fn install() -> Result<Installed<InodeCache>> {
        let cpus = PerCpu::pin_init_with(Alloc::MaySleep, |_| CpuCache::new())?;
        CACHE.install(Self(cpus))
    }

    /// Lets the memory manager shrink the cache (every CPU's kept objects) while the result
    /// lives; it must be dropped before the module's code goes away.
    pub(crate) fn shrinker() -> Result<shrinker::Registration<InodeCache>> {
        shrinker::Registration::register(c_str!("fastsocket-sock-inodes"), &CACHE)
    }

    fn take(&self) -> Option<ReusableInode> {
        self.0.local().kept.lock().fifo.pop_if(KeptInode::reuse)
    }

    fn keep(&self, inode: KeptInode) -> Result<(), KeptInode> {
        let mut kept = self.0.local().kept.lock();
        let since = inode.since();
        kept.fifo.push(inode)?;
        kept.total += 1;
        // Without a grace period under way the object would wait for someone else's: start
        // one, once per grace-period state.
        if kept.started != Some(since) {
            kept.started = Some(GraceState::start());
        }
        Ok(())
    }
}

impl Shrink for InodeCache {
    fn count(&self) -> usize {
        self.0.iter().map(|(_, c)| c.kept.lock().fifo.len()).sum()
    }

    /// Frees the oldest objects, CPU by CPU (after a grace period, as the kernel would).
    fn scan(&self, n: usize) -> usize {
        let mut freed = 0;
        for (_, cache) in self.0.iter() {
            let mut kept = cache.kept.lock();
            while freed < n && kept.fifo.pop_if(Ok::<_, KeptInode>).is_some() {
                freed += 1;
            }
        }
        freed
    }
}

/// How many objects `cpu`'s cache keeps now, and kept in all since the module loaded.
pub(crate) fn cpu_counts(rcu: &RcuReadSection<'_>, cpu: u32) -> (u64, u64) {
    CACHE
        .get(rcu)
        .and_then(|cache| cache.0.get(cpu))
        .map_or((0, 0), |c| {
            let kept = c.kept.lock();
            (kept.fifo.len() as u64, kept.total)
        })
}

/// The namespace state of the calling task, if the cache is on there.
fn state_of_current<'a>(rcu: &'a RcuReadSection<'_>) -> Option<&'a NetState> {
    NetState::of(Net::current(rcu)?, rcu).filter(|state| state.vfs())
}

/// A socket is being created by the calling task: an object from this CPU's cache, if the
/// cache is on in the task's namespace and one is reusable.
pub(crate) fn inode_get(rcu: &RcuReadSection<'_>) -> Option<ReusableInode> {
    let state = state_of_current(rcu)?;
    let got = CACHE.get(rcu)?.take();
    state.counters.record_vfs_get(got.is_some());
    got
}

/// A socket was closed and torn down: keep its object if this CPU's cache has room.
///
/// Whatever the namespace: the objects are all alike, only taking one is the namespace's
/// choice, and not looking the namespace up keeps the close path cheap (a closing socket's
/// namespace is not at hand, and the task's may not be the socket's).
pub(crate) fn inode_put(rcu: &RcuReadSection<'_>, inode: KeptInode) -> Result<(), KeptInode> {
    match CACHE.get(rcu) {
        Some(cache) => cache.keep(inode),
        None => Err(inode),
    }
}
