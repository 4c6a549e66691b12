// SPDX-License-Identifier: GPL-2.0

//! Lightweight socket files: a per-CPU cache of closed sockets' dentries with their inodes.
//!
//! Without the module every socket builds an inode (`new_inode_pseudo()`: a slab object, its
//! set-up, LSM and counters) and a dentry (`d_alloc_pseudo()`, `d_instantiate()`), and its
//! close tears both down, the inode through an RCU callback. With the module loaded the
//! closing CPU keeps the dentry with its inode (at most [`CAPACITY`] per CPU, oldest first)
//! when the kernel offers them (nothing else refers to them, and nothing set on them would
//! show in a later socket); a socket created on that CPU by a task of a namespace with
//! `net.fastsocket.vfs` on takes the oldest pair once a grace period has passed since it was
//! kept: the kernel sets the socket up in it as in a new inode (new inode number, owner,
//! mode) and builds the file on the dentry if it has the new socket's protocol's name (a new
//! dentry otherwise). Pairs that find the cache full are dropped as without the module; the
//! memory manager's shrinker drops kept ones when memory runs low, and unloading the module
//! drops every kept pair. See `Documentation/vfs.md`.

use crate::logic::fifo::Fifo;
use crate::netstate::NetState;
use crate::sys::{
    cpu,
    global::{Global, Installed},
    net::{Net, RcuReadSection},
    percpu::{Alloc, PerCpu},
    rcu::GraceState,
    shrinker::{self, Shrink},
    sockfs::{KeptPair, ReusablePair},
};
use kernel::{c_str, new_spinlock, prelude::*, sync::SpinLock};

/// The most pairs one CPU keeps: about 1 MiB per CPU on the perf kernel (`objsize` in
/// `/proc/slabinfo`: 832 bytes a `sock_inode_cache` object, 192 a dentry). Fewer fall short
/// of a grace period's worth of closes in a connection storm (64 saved a quarter of what
/// 1,024 did in the prototype, see `Documentation/vfs.md`).
pub(crate) const CAPACITY: usize = 1024;

/// One CPU's kept pairs, oldest first.
struct Kept {
    fifo: Fifo<KeptPair, KVec<Option<KeptPair>>>,
    /// The grace-period state this CPU last made sure a grace period would end.
    started: Option<GraceState>,
    /// Pairs this CPU kept since the module loaded.
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

/// Every CPU's kept pairs.
pub(crate) struct PairCache(PerCpu<CpuCache>);

/// The cache, reached by the hooks while the module is loaded.
static CACHE: Global<PairCache> = Global::new();

impl PairCache {
    /// Sets up an empty cache for every possible CPU and publishes it to the hooks; dropping
    /// the result (in process context) drops every pair it still keeps.
    pub(crate) fn install() -> Result<Installed<PairCache>> {
        let cpus = PerCpu::pin_init_with(Alloc::MaySleep, |_| CpuCache::new())?;
        CACHE.install(Self(cpus))
    }

    /// Lets the memory manager shrink the cache (every CPU's kept pairs) while the result
    /// lives; it must be dropped before the module's code goes away.
    pub(crate) fn shrinker() -> Result<shrinker::Registration<PairCache>> {
        shrinker::Registration::register(c_str!("fastsocket-sock-pairs"), &CACHE)
    }

    /// The oldest pair `cpu` keeps, if a grace period has passed since it was kept.
    fn take_on(&self, cpu: u32) -> Option<ReusablePair> {
        self.0.get(cpu)?.kept.lock().fifo.pop_if(KeptPair::reuse)
    }

    fn keep(&self, pair: KeptPair) -> Result<(), KeptPair> {
        let mut kept = self.0.local().kept.lock();
        let since = pair.since();
        kept.fifo.push(pair)?;
        kept.total += 1;
        // Without a grace period under way the pair would wait for someone else's: start
        // one, once per grace-period state.
        if kept.started != Some(since) {
            kept.started = Some(GraceState::start());
        }
        Ok(())
    }
}

impl Shrink for PairCache {
    type Item = KeptPair;

    fn count(&self) -> usize {
        self.0.iter().map(|(_, c)| c.kept.lock().fifo.len()).sum()
    }

    /// The oldest pair of the first CPU that keeps one.
    fn take(&self) -> Option<KeptPair> {
        self.0
            .iter()
            .find_map(|(_, cache)| cache.kept.lock().fifo.pop_if(Ok::<_, KeptPair>))
    }
}

/// How many pairs `cpu`'s cache keeps now, and kept in all since the module loaded.
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

/// A socket is being created by the calling task: a pair from this CPU's cache, if the cache
/// is on in the task's namespace and one is reusable.
pub(crate) fn pair_get(rcu: &RcuReadSection<'_>) -> Option<ReusablePair> {
    let state = state_of_current(rcu)?;
    let cpu = cpu::current();
    let got = CACHE.get(rcu)?.take_on(cpu);
    state.counters.record_vfs_get(cpu, got.is_some());
    got
}

/// A socket's file was closed: keep its dentry and inode if this CPU's cache has room (the
/// kernel drops what comes back).
///
/// Whatever the namespace: the pairs are all alike, only taking one is the namespace's
/// choice, and not looking the namespace up keeps the close path cheap (a closing socket's
/// namespace is not at hand, and the task's may not be the socket's).
pub(crate) fn pair_put(rcu: &RcuReadSection<'_>, pair: KeptPair) -> Result<(), KeptPair> {
    match CACHE.get(rcu) {
        Some(cache) => cache.keep(pair),
        None => Err(pair),
    }
}
