//! Per-CPU accept queues (the local listen table): a TCP listener in scope when it starts
//! listening (`enabled`, `listen_ports`, `listen_queues`) gets one accept queue per CPU; a
//! connection joins the queue of the CPU its handshake completed on, accept() on CPU c takes
//! from c's queue, else steals another CPU's oldest, else takes from the listener's own queue.
//! What must not change: the backlog is one figure over all queues, and closing the listener,
//! unloading the module, turning a knob off, a sharer closing or a worker dying loses nothing.
//!
//! Handshakes are placed on a CPU by the client: RPS is off on the server's veth end and each
//! client thread is pinned, so the veth hands a client's segments to the stack on the
//! client's CPU and its handshake (and its request byte) is processed there.
//!
//! Stock arms run with the module unloaded (`rmmod`, then `insmod` again after the arm).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering::SeqCst;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::socket::SockFlag;
use nix::sys::wait::WaitStatus;

use super::{percent, Context, Ctx, KnobGuard, TestResult};
use crate::client::{self, RequestError};
use crate::module;
use crate::netns::{self, NetnsPair, ServerSide};
use crate::procfs::{self, Counters};
use crate::server::{AcceptServer, ServerOpts, DEFAULT_REPLY, READ_TIMEOUT};
use crate::sys::{self, SharedWorkers};

/// How long a connect() of a held connection may take (the guest is emulated).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the listener's queue may take to show connections whose connect() returned (the
/// client's ACK may still be on its way), and how long draining a queue may take.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two looks at a queue that is settling.
const SETTLE_PAUSE: Duration = Duration::from_millis(10);

/// The CPUs the tests use, at least two.
pub(super) fn cpus(ctx: &Ctx) -> TestResult<Vec<usize>> {
    ensure!(
        ctx.cpus.len() >= 2,
        "needs at least 2 online CPUs, the guest has {:?}",
        ctx.cpus
    );
    Ok(ctx.cpus.clone())
}

/// Turns RPS off on the server's veth end, so that each handshake completes on the CPU of the
/// (pinned) client thread that made it.
fn steer_by_client_cpu(pair: &NetnsPair) -> TestResult {
    pair.set_rps(&[])
        .context("turning RPS off on the server's veth end")
}

/// Runs `f(cpu)` at once on one thread per CPU of `cpus`, each in namespace `ns` and pinned to
/// its CPU; returns the results in the order of `cpus` once every thread has ended.
pub(super) fn on_each_cpu<T, F>(ns: &str, cpus: &[usize], f: F) -> TestResult<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> TestResult<T> + Clone + Send + 'static,
{
    let pins: Vec<Option<usize>> = cpus.iter().copied().map(Some).collect();
    let cpus = cpus.to_vec();
    on_threads(ns, &pins, move |i| f(cpus[i]))
}

/// Runs `f(i)` at once on one thread per entry `i` of `pins`, each in namespace `ns`, pinned to
/// the entry's CPU if it names one; returns the results in the order of `pins` once every
/// thread has ended.
pub(super) fn on_threads<T, F>(ns: &str, pins: &[Option<usize>], f: F) -> TestResult<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> TestResult<T> + Clone + Send + 'static,
{
    let mut handles = Vec::new();
    for (i, &pin) in pins.iter().enumerate() {
        let f = f.clone();
        let handle = netns::spawn_in(ns, move || {
            if let Some(cpu) = pin {
                sys::pin_current_thread(cpu)
                    .context(format!("pinning a client thread to cpu {cpu}"))?;
            }
            f(i)
        })
        .context(format!("starting a client thread in {ns}"))?;
        let name = match pin {
            Some(cpu) => format!("client thread on cpu {cpu}"),
            None => format!("unpinned client thread {i}"),
        };
        handles.push((name, handle));
    }
    // Every thread is joined before the first error is returned.
    let results: Vec<TestResult<T>> = handles
        .into_iter()
        .map(|(name, handle)| match handle.join() {
            Ok(Ok(result)) => result.context(&name),
            Ok(Err(e)) => Err(format!("entering {ns}: {e}")),
            Err(_) => Err(format!("the {name} panicked")),
        })
        .collect();
    results.into_iter().collect()
}

/// Runs `f` on a thread in namespace `ns` pinned to `cpu`.
pub(super) fn on_cpu_in<T, F>(ns: &str, cpu: usize, f: F) -> TestResult<T>
where
    T: Send + 'static,
    F: Fn(usize) -> TestResult<T> + Clone + Send + 'static,
{
    on_each_cpu(ns, &[cpu], f)?
        .pop()
        .ok_or_else(|| "a client thread returned nothing".to_string())
}

/// Runs `f` with the module unloaded (stock), loading it again afterwards even if `f` failed.
pub(super) fn stock<T>(ctx: &Ctx, f: impl FnOnce() -> TestResult<T>) -> TestResult<T> {
    if module::is_loaded() {
        module::rmmod().context("unloading the module for the stock arm")?;
    }
    let result = f();
    let reloaded = ctx
        .insmod()
        .context("loading the module again after the stock arm");
    let value = result?;
    reloaded?;
    Ok(value)
}

/// The module's counters in the calling thread's namespace.
fn counters() -> TestResult<Counters> {
    procfs::read_counters()
}

/// `queued` per CPU, for messages.
fn queued_per_cpu(counters: &Counters) -> Vec<(usize, u64)> {
    counters
        .per_cpu
        .iter()
        .map(|(&cpu, s)| (cpu, s.queued))
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// The queue columns of a counters' increase, per CPU, for messages.
fn queue_columns(delta: &Counters) -> String {
    delta
        .per_cpu
        .iter()
        .filter(|(_, s)| s.queue_local + s.queue_steal + s.queue_stolen + s.queue_fallback > 0)
        .map(|(cpu, s)| {
            format!(
                "cpu{cpu}: queue_local {} queue_steal {} queue_stolen {} queue_fallback {}",
                s.queue_local, s.queue_steal, s.queue_stolen, s.queue_fallback
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The accept queue lengths of the listeners on `port` in the calling thread's namespace
/// (several with SO_REUSEPORT), summed.
fn listen_queue(port: u16) -> TestResult<u32> {
    Ok(procfs::read_tcp_listen_queues(port)?.iter().sum())
}

/// Waits until the listeners on `port` queue `want` connections in all; returns the last
/// figure (which differs from `want` if it did not get there within [`SETTLE_TIMEOUT`]).
pub(super) fn wait_listen_queue(port: u16, want: u32) -> TestResult<u32> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let queued = listen_queue(port)?;
        if queued == want || Instant::now() > deadline {
            return Ok(queued);
        }
        thread::sleep(SETTLE_PAUSE);
    }
}

/// A listener (reuseport: with SO_REUSEPORT) on an ephemeral port of the pair's server IPv4
/// address, or on `port`.
fn listen_on(
    pair: &NetnsPair,
    port: u16,
    backlog: i32,
    reuseport: bool,
) -> TestResult<TcpListener> {
    let bind = SocketAddr::new(pair.server_ip(false), port);
    sys::tcp_listen(bind, backlog, reuseport)
        .context(format!("listening on {bind} with backlog {backlog}"))
}

/// Sets the module's knobs for per-CPU queues on every port: `enabled=1`,
/// `listen_ports=all`, `listen_queues=1`; restored when the guards drop.
fn queues_on() -> TestResult<[KnobGuard; 3]> {
    Ok([
        KnobGuard::enabled("1")?,
        KnobGuard::listen_ports("all")?,
        KnobGuard::listen_queues("1")?,
    ])
}

// ---------------------------------------------------------------------------------------------
// 1. The backlog is one figure over all queues.

/// The backlog of the listener nobody accepts from.
const OVERFLOW_BACKLOG: i32 = 8;
/// Connection attempts on it.
const OVERFLOW_ATTEMPTS: usize = 64;
/// SYN retransmissions of an attempt (`TCP_SYNCNT`) before its connect() gives up: a dropped
/// attempt ends within a few seconds.
const OVERFLOW_SYN_RETRIES: i32 = 1;
/// TcpExt counters of connections refused for a full accept queue.
const OVERFLOW_COUNTERS: [&str; 2] = ["ListenOverflows", "ListenDrops"];

/// What one arm of [`percpu_backlog_overflow`] saw; module and stock must see the same.
#[derive(Debug, PartialEq, Eq)]
struct BacklogRun {
    /// Attempts whose connect() succeeded, made one at a time.
    connected: usize,
    /// Attempts whose connect() timed out (every SYN dropped).
    timed_out: usize,
    /// Attempts that failed otherwise.
    errors: Vec<String>,
    /// The listener's queue (`sk_ack_backlog`, ss Recv-Q) once every attempt had ended.
    queued: u32,
    /// Increase of ListenOverflows and ListenDrops over the attempts.
    overflows: u64,
    drops: u64,
    /// Connections accepted afterwards.
    accepted: usize,
}

impl fmt::Display for BacklogRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connected, {} timed out, {} other errors {:?}; queue {}; ListenOverflows +{}, \
             ListenDrops +{}; {} accepted",
            self.connected,
            self.timed_out,
            self.errors.len(),
            self.errors,
            self.queued,
            self.overflows,
            self.drops,
            self.accepted
        )
    }
}

/// One connection attempt from a thread pinned to `cpu` in the client namespace.
fn attempt(pair: &NetnsPair, addr: SocketAddr, cpu: usize) -> TestResult<io::Result<TcpStream>> {
    on_cpu_in(pair.client_ns(), cpu, move |_| {
        Ok(sys::tcp_connect_syn_retries(addr, OVERFLOW_SYN_RETRIES))
    })
}

/// Accepts, on a thread pinned to `cpu`, the `count` connections queued on the non-blocking
/// `listener`; then checks that nothing more is queued.
fn accept_all_queued(listener: &TcpListener, cpu: usize, count: u32) -> TestResult<usize> {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                sys::pin_current_thread(cpu).context(format!("pinning to cpu {cpu}"))?;
                let deadline = Instant::now() + SETTLE_TIMEOUT;
                let mut accepted = Vec::new();
                while accepted.len() < count as usize {
                    match sys::accept4(listener, SockFlag::SOCK_CLOEXEC) {
                        Ok(conn) => accepted.push(conn),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            ensure!(
                                !left.is_zero(),
                                "accepted only {} of the {count} queued connections within \
                                 {SETTLE_TIMEOUT:?}",
                                accepted.len()
                            );
                            ensure!(
                                sys::poll_readable_until(listener, deadline)
                                    .context("poll on the listener")?,
                                "accepted {} of the {count} queued connections, then poll on \
                                 the listener was not woken within {SETTLE_TIMEOUT:?}: a lost \
                                 wake-up",
                                accepted.len()
                            );
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("accept4: {e}")),
                    }
                }
                match sys::accept4(listener, SockFlag::SOCK_CLOEXEC) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(accepted.len()),
                    Ok(_) => Err(format!(
                        "accepted more than the {count} connections the queue showed"
                    )),
                    Err(e) => Err(format!("accept4 on the drained queue: {e}")),
                }
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Listens with backlog [`OVERFLOW_BACKLOG`] and never accepts while [`OVERFLOW_ATTEMPTS`]
/// connections are attempted, from client threads pinned to the CPUs in turn: one at a time
/// (each waited for until the queue shows it) until one times out, then the rest at once;
/// then accepts every queued connection. `module`: check the module's figures too.
fn backlog_arm(
    pair: &NetnsPair,
    cpus: &[usize],
    label: &str,
    module: bool,
) -> TestResult<BacklogRun> {
    let listener = listen_on(pair, 0, OVERFLOW_BACKLOG, false)?;
    let addr = listener.local_addr().context("local_addr")?;
    let port = addr.port();
    let before_counters = module.then(counters).transpose()?;
    let before = procfs::read_netstat("TcpExt", &OVERFLOW_COUNTERS)?;

    let (mut conns, mut timed_out, mut errors) = (Vec::new(), 0, Vec::new());
    let mut next = 0;
    // One at a time: each handshake is in the queue before the next SYN arrives, so the SYN
    // that finds the queue full is the first one refused, in stock and with the module alike.
    while next < OVERFLOW_ATTEMPTS {
        let cpu = cpus[next % cpus.len()];
        next += 1;
        match attempt(pair, addr, cpu)? {
            Ok(conn) => {
                conns.push(conn);
                let queued = wait_listen_queue(port, conns.len() as u32)?;
                if queued != conns.len() as u32 {
                    // The handshake completed for the client but not in the queue (full when
                    // the ACK arrived): the comparison with stock tells whether that is right.
                    info!("{label}: attempt {next}: connected, but the queue shows {queued}");
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                timed_out += 1;
                break;
            }
            Err(e) => {
                errors.push(format!("attempt {next} on cpu {cpu}: {e}"));
                break;
            }
        }
    }
    let sequential = next;
    // The rest at once: the queue is full and nobody accepts, so every SYN is refused.
    let rest: Vec<usize> = (next..OVERFLOW_ATTEMPTS).collect();
    let outcomes = thread::scope(|scope| {
        let threads: Vec<_> = rest
            .iter()
            .map(|&i| {
                (
                    i,
                    scope.spawn(move || attempt(pair, addr, cpus[i % cpus.len()])),
                )
            })
            .collect();
        threads
            .into_iter()
            .map(|(i, t)| {
                let outcome = t
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                outcome.map(|o| (i, o))
            })
            .collect::<TestResult<Vec<_>>>()
    })?;
    for (i, outcome) in outcomes {
        match outcome {
            Ok(conn) => conns.push(conn),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => timed_out += 1,
            Err(e) => errors.push(format!(
                "attempt {} on cpu {}: {e}",
                i + 1,
                cpus[i % cpus.len()]
            )),
        }
    }
    let queued = listen_queue(port)?;
    let after = procfs::read_netstat("TcpExt", &OVERFLOW_COUNTERS)?;
    let delta = |i: usize| {
        after[i].checked_sub(before[i]).ok_or_else(|| {
            format!(
                "{} went down from {} to {}",
                OVERFLOW_COUNTERS[i], before[i], after[i]
            )
        })
    };
    let (overflows, drops) = (delta(0)?, delta(1)?);
    if module {
        let now = counters()?;
        info!(
            "{label}: {} queued per cpu {:?} (queue {queued})",
            procfs::COUNTERS,
            queued_per_cpu(&now)
        );
        ensure!(
            now.total().queued == u64::from(queued),
            "{label}: {} shows {} queued {:?}, the listener's queue (sk_ack_backlog) is {queued}",
            procfs::COUNTERS,
            now.total().queued,
            queued_per_cpu(&now)
        );
        ensure!(
            queued_per_cpu(&now).len() >= 2,
            "set-up: the queued connections sit on fewer than 2 CPUs ({:?}), so the backlog \
             was not shared by several per-CPU queues",
            queued_per_cpu(&now)
        );
    }

    listener
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    let accepted = accept_all_queued(&listener, cpus[0], queued).context(label)?;
    let left = listen_queue(port)?;
    ensure!(
        left == 0,
        "{label}: the queue shows {left} after accepting them all"
    );
    if let Some(before) = before_counters {
        let now = counters()?;
        let delta = now.since(&before)?.total();
        info!(
            "{label}: accepts took {} from their CPU's queue, stole {}; {} handshakes fell back \
             to the listener's own queue",
            delta.queue_local, delta.queue_steal, delta.queue_fallback
        );
        ensure!(
            now.total().queued == 0,
            "{label}: {} shows {:?} queued after every connection was accepted",
            procfs::COUNTERS,
            queued_per_cpu(&now)
        );
        ensure!(
            delta.queue_fallback == 0 && delta.queue_local + delta.queue_steal == accepted as u64,
            "{label}: {accepted} accepts, but the per-CPU queues gave {} (queue_local {} + \
             queue_steal {}) and {} handshakes fell back to the listener's own queue: the \
             listener did not use its per-CPU queues",
            delta.queue_local + delta.queue_steal,
            delta.queue_local,
            delta.queue_steal,
            delta.queue_fallback
        );
    }
    let run = BacklogRun {
        connected: conns.len(),
        timed_out,
        errors,
        queued,
        overflows,
        drops,
        accepted,
    };
    info!(
        "{label}: {sequential} attempts one at a time, then {} at once: {run}",
        rest.len()
    );
    Ok(run)
}

/// A listener with backlog 8 that nobody accepts from, 64 connection attempts with one SYN
/// retransmission each: with per-CPU queues (the listener created after the knobs were set)
/// exactly as many connections complete and queue, ListenOverflows and ListenDrops rise by as
/// much and the clients see the same outcomes as stock (the module unloaded); every queued
/// connection is then accepted.
pub fn percpu_backlog_overflow(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let cpus = cpus(ctx)?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    steer_by_client_cpu(&pair)?;
    let module = {
        let _knobs = queues_on()?;
        backlog_arm(&pair, &cpus, "per-CPU queues", true)?
    };
    let stock = stock(ctx, || {
        backlog_arm(&pair, &cpus, "stock (module unloaded)", false)
    })?;
    info!("backlog {OVERFLOW_BACKLOG}, {OVERFLOW_ATTEMPTS} attempts: per-CPU queues: {module}");
    info!("backlog {OVERFLOW_BACKLOG}, {OVERFLOW_ATTEMPTS} attempts: stock: {stock}");
    ensure!(
        stock.connected == stock.queued as usize
            && stock.accepted == stock.connected
            && stock.timed_out > 0
            && stock.overflows >= stock.timed_out as u64,
        "stock did not behave as the test expects (every connected attempt queued and \
         accepted, the others refused for overflow): {stock}"
    );
    ensure!(
        module == stock,
        "with per-CPU queues: {module}\nstock: {stock}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Nothing lost.

/// Connections queued in each arm of the nothing-lost tests, spread evenly over the CPUs.
const HELD_TOTAL: usize = 1000;
/// The listeners' backlog there: room for all of them.
const HELD_BACKLOG: i32 = 4096;
/// How long the clients may wait for all their replies once the server accepts.
const REPLY_DEADLINE: Duration = Duration::from_secs(60);
/// Open files the runner needs: the held connections, the accepted ones, and some.
const OPEN_FILES: u64 = 8192;
/// Connections worker A serves before it stops (and is then killed).
const STALL_AFTER: u64 = 100;
/// The reply bytes of the forked workers A (first CPU) and B (second CPU).
const WORKER_REPLIES: [u8; 2] = [b'A', b'B'];

/// What happens once the connections are queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// `rmmod` (module arm only), then the connections are accepted with the module gone.
    Unload,
    /// `enabled=0` (module arm only), then accept.
    Disable,
    /// `listen_queues=0` (module arm only), then accept.
    QueuesOff,
    /// Two SO_REUSEPORT listeners hold the connections; one closes with
    /// `net.ipv4.tcp_migrate_req=1`, the other accepts them all.
    SharerClose,
    /// Forked workers A and B share the listener; A stops after [`STALL_AFTER`] connections
    /// and is killed while B keeps accepting.
    WorkerKilled,
}

/// Connections made by client threads pinned to each CPU and held open, each having sent its
/// one-byte request; nobody reads them until the server answers.
struct Held {
    /// Per CPU, the connections whose handshake completed there.
    by_cpu: Vec<(usize, Vec<TcpStream>)>,
}

impl Held {
    fn connect(
        pair: &NetnsPair,
        addr: SocketAddr,
        cpus: &[usize],
        per_cpu: usize,
    ) -> TestResult<Held> {
        let streams = on_each_cpu(pair.client_ns(), cpus, move |cpu| {
            (0..per_cpu)
                .map(|i| {
                    let mut conn = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).context(
                        format!("connection {} of {per_cpu} on cpu {cpu} to {addr}", i + 1),
                    )?;
                    conn.write_all(&[1])
                        .context(format!("request of connection {} on cpu {cpu}", i + 1))?;
                    Ok(conn)
                })
                .collect::<TestResult<Vec<_>>>()
        })?;
        Ok(Held {
            by_cpu: cpus.iter().copied().zip(streams).collect(),
        })
    }

    fn len(&self) -> usize {
        self.by_cpu.iter().map(|(_, s)| s.len()).sum()
    }

    /// Reads every connection's reply, all within [`REPLY_DEADLINE`], and closes them.
    fn read_replies(self) -> Replies {
        let deadline = Instant::now() + REPLY_DEADLINE;
        let mut replies = Replies::default();
        for (cpu, streams) in self.by_cpu {
            for mut conn in streams {
                // At least 1 ms: a zero read timeout means none.
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                let mut byte = [0u8];
                let result = conn
                    .set_read_timeout(Some(left))
                    .and_then(|()| conn.read_exact(&mut byte));
                match result {
                    Ok(()) => *replies.by_byte.entry(byte[0]).or_default() += 1,
                    Err(e) => {
                        match e.kind() {
                            io::ErrorKind::ConnectionReset => replies.resets += 1,
                            io::ErrorKind::UnexpectedEof => replies.closed += 1,
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                                replies.no_reply += 1
                            }
                            _ => replies.other += 1,
                        }
                        if replies.errors.len() < 5 {
                            replies
                                .errors
                                .push(format!("a connection of cpu {cpu}: {e}"));
                        }
                    }
                }
            }
        }
        replies
    }
}

/// What the clients read.
#[derive(Debug, Default)]
struct Replies {
    by_byte: BTreeMap<u8, usize>,
    /// Connections reset (ECONNRESET).
    resets: usize,
    /// Closed without a reply (EOF).
    closed: usize,
    /// No reply by the deadline.
    no_reply: usize,
    /// Other errors.
    other: usize,
    /// The first few errors.
    errors: Vec<String>,
}

impl Replies {
    fn replied(&self) -> usize {
        self.by_byte.values().sum()
    }
}

/// What one arm of a nothing-lost test saw; the module arm must see what the stock one does.
#[derive(Debug, PartialEq, Eq)]
struct Served {
    /// Connections the clients completed and held.
    connected: usize,
    /// The listeners' queue (sk_ack_backlog, ss Recv-Q) before the action.
    queued: u32,
    /// The same right after the action (not for a killed worker: the workers are accepting).
    queued_after: Option<u32>,
    /// Connections the server accepted.
    accepted: usize,
    /// Replies the clients read, and by which worker when there are several.
    replied: usize,
    by_worker: Vec<(char, usize)>,
    /// Connections reset, closed without a reply, not answered in time, failed otherwise.
    resets: usize,
    closed: usize,
    no_reply: usize,
    other: usize,
}

impl fmt::Display for Served {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} connected, {} queued", self.connected, self.queued)?;
        if let Some(after) = self.queued_after {
            write!(f, " ({after} after the action)")?;
        }
        write!(f, ", {} accepted, {} replied", self.accepted, self.replied)?;
        if !self.by_worker.is_empty() {
            write!(f, " {:?}", self.by_worker)?;
        }
        write!(
            f,
            ", {} reset, {} closed without a reply, {} without a reply in time, {} other errors",
            self.resets, self.closed, self.no_reply, self.other
        )
    }
}

impl Served {
    /// Every connection queued, accepted and answered, none reset.
    fn check_all_served(&self, label: &str, errors: &[String]) -> TestResult {
        let n = self.connected;
        ensure!(
            self.queued as usize == n
                && self.queued_after.is_none_or(|q| q as usize == n)
                && self.accepted == n
                && self.replied == n
                && self.resets + self.closed + self.no_reply + self.other == 0,
            "{label}: {self}; first errors: {errors:?}"
        );
        Ok(())
    }
}

/// Sets a sysctl of the calling thread's namespace (outside the module's) and writes the old
/// value back when dropped.
struct SysctlGuard {
    path: &'static str,
    old: String,
}

impl SysctlGuard {
    fn set(path: &'static str, value: &str) -> TestResult<SysctlGuard> {
        let old = fs::read_to_string(path).context(format!("reading {path}"))?;
        fs::write(path, value).context(format!("writing {value:?} to {path}"))?;
        Ok(SysctlGuard {
            path,
            old: old.trim().to_owned(),
        })
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        if let Err(e) = fs::write(self.path, &self.old) {
            eprintln!(
                "fastsocket-tests: cleanup: restoring {}={}: {e}",
                self.path, self.old
            );
        }
    }
}

const TCP_MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Loads the module again when dropped, unless it is loaded: after an arm that unloaded it.
struct Reload<'a>(&'a Ctx);

impl Reload<'_> {
    /// Loads it now.
    fn now(self) -> TestResult {
        let result = self.0.insmod();
        std::mem::forget(self);
        result
    }
}

impl Drop for Reload<'_> {
    fn drop(&mut self) {
        if !module::is_loaded() {
            if let Err(e) = self.0.insmod() {
                eprintln!("fastsocket-tests: cleanup: loading the module again: {e}");
            }
        }
    }
}

/// Checks the module's `queued` gauge: `want` per CPU of `cpus` (`None`: `total` in all).
fn check_gauge(
    label: &str,
    when: &str,
    want: Option<(&[usize], usize)>,
    total: usize,
) -> TestResult {
    let now = counters()?;
    let per_cpu = queued_per_cpu(&now);
    ensure!(
        now.total().queued == total as u64,
        "{label}: {when}: {} shows {} queued {per_cpu:?}, expected {total}",
        procfs::COUNTERS,
        now.total().queued
    );
    if let Some((cpus, each)) = want {
        let off: Vec<_> = cpus
            .iter()
            .map(|&c| (c, now.cpu(c).queued))
            .filter(|&(_, n)| n != each as u64)
            .collect();
        ensure!(
            off.is_empty(),
            "set-up: {label}: {when}: {} queued per cpu {per_cpu:?}, expected {each} on each of \
             {cpus:?} (the handshakes of a client thread pinned to a CPU complete there)",
            procfs::COUNTERS
        );
    }
    Ok(())
}

/// One arm: queues [`HELD_TOTAL`] connections from client threads pinned to each CPU with
/// nobody accepting, does `action` and has everything accepted; `module`: the module is
/// loaded and its knobs set for per-CPU queues (else stock: the module unloaded, and the
/// actions on the module itself are skipped).
fn held_arm(
    ctx: &Ctx,
    pair: &NetnsPair,
    cpus: &[usize],
    action: Action,
    module: bool,
) -> TestResult<Served> {
    let label = format!(
        "{action:?}, {}",
        if module {
            "per-CPU queues"
        } else {
            "stock (module unloaded)"
        }
    );
    let label = label.as_str();
    let per_cpu = HELD_TOTAL / cpus.len();
    let total = per_cpu * cpus.len();
    let _knobs = module.then(queues_on).transpose()?;
    let _migrate = (action == Action::SharerClose)
        .then(|| SysctlGuard::set(TCP_MIGRATE_REQ, "1"))
        .transpose()?;
    // Listeners after the knobs: scope is decided at listen().
    let mut listener = Some(listen_on(
        pair,
        0,
        HELD_BACKLOG,
        action == Action::SharerClose,
    )?);
    let addr = listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .context("local_addr")?
        .ok_or("no listener")?;
    let port = addr.port();
    let sharer = (action == Action::SharerClose)
        .then(|| listen_on(pair, port, HELD_BACKLOG, true))
        .transpose()?;

    let start = Instant::now();
    let held = Held::connect(pair, addr, cpus, per_cpu)?;
    let connected = held.len();
    let queued = wait_listen_queue(port, total as u32)?;
    info!(
        "{label}: {connected} connections held ({per_cpu} from each of cpus {cpus:?}) in {:.1} s, \
         queue {queued}",
        start.elapsed().as_secs_f64()
    );
    ensure!(
        queued == total as u32,
        "{label}: {connected} connections made, but the listener's queue shows {queued} after \
         {SETTLE_TIMEOUT:?}"
    );
    let before = if module {
        check_gauge(label, "before the action", Some((cpus, per_cpu)), total)?;
        Some(counters()?)
    } else {
        None
    };

    // The action, and who accepts afterwards.
    let mut _disabled = None;
    let mut reload = None;
    let mut workers = None;
    let mut killed = None;
    let server_listener = match action {
        Action::Unload | Action::Disable | Action::QueuesOff => {
            if module {
                match action {
                    Action::Unload => {
                        module::rmmod().context(format!("{label}: rmmod"))?;
                        reload = Some(Reload(ctx));
                    }
                    Action::Disable => _disabled = Some(KnobGuard::enabled("0")?),
                    _ => _disabled = Some(KnobGuard::listen_queues("0")?),
                }
            }
            listener.take()
        }
        Action::SharerClose => {
            let split = procfs::read_tcp_listen_queues(port)?;
            info!("{label}: the two SO_REUSEPORT listeners queue {split:?}; closing one");
            ensure!(
                split.len() == 2 && split.iter().all(|&n| n > 0),
                "set-up: {label}: expected both SO_REUSEPORT listeners to queue connections, \
                 they queue {split:?}"
            );
            // The only descriptor of that listener: close() stops it at once.
            drop(listener.take());
            sharer
        }
        Action::WorkerKilled => {
            let l = listener.take().ok_or("no listener")?;
            let shared = SharedWorkers::new(WORKER_REPLIES.len()).context("shared memory")?;
            shared.get()[0].stall_after.store(STALL_AFTER, SeqCst);
            let mut children = Vec::new();
            for (i, &reply) in WORKER_REPLIES.iter().enumerate() {
                let cpu = cpus[i % cpus.len()];
                children.push(
                    sys::fork_accept_worker(&l, cpu, reply, READ_TIMEOUT, &shared.get()[i])
                        .context("fork")?,
                );
            }
            // A stops (between two connections, none in flight) and is killed while B works.
            let deadline = Instant::now() + SETTLE_TIMEOUT;
            while shared.get()[0].stalled.load(SeqCst) == 0 {
                ensure!(
                    Instant::now() < deadline,
                    "{label}: worker A did not serve {STALL_AFTER} connections within \
                     {SETTLE_TIMEOUT:?} (it served {})",
                    shared.get()[0].served.load(SeqCst)
                );
                thread::sleep(SETTLE_PAUSE);
            }
            let mut a = children.remove(0);
            let b_at_kill = shared.get()[1].served.load(SeqCst);
            a.signal(Signal::SIGKILL).context("killing worker A")?;
            let status = a
                .wait_timeout(Duration::from_secs(10))
                .context("waitpid")?
                .ok_or("worker A did not die within 10 s of SIGKILL")?;
            info!(
                "{label}: worker A (cpu {}) served {} and was killed ({}); B had served {b_at_kill}",
                cpus[0],
                shared.get()[0].served.load(SeqCst),
                sys::describe_wait_status(status)
            );
            ensure!(
                b_at_kill + STALL_AFTER < total as u64,
                "set-up: {label}: worker B had served {b_at_kill} of {total} when A was killed: \
                 nothing was left for B after the kill"
            );
            killed = Some(status);
            workers = Some((shared, children, l));
            None
        }
    };
    let queued_after = match action {
        Action::WorkerKilled => None,
        _ => Some(listen_queue(port)?),
    };
    if module
        && matches!(
            action,
            Action::Disable | Action::QueuesOff | Action::SharerClose
        )
    {
        // Still queued, on the per-CPU queues (or migrated to the sharer's).
        check_gauge(label, "after the action", None, total)?;
    }

    let server = server_listener
        .map(|l| AcceptServer::serve(l, &ServerOpts::pinned(pair.server_ip(false), cpus)))
        .transpose()?;
    let replies = held.read_replies();
    let (accepted, by_worker) = match (server, &workers) {
        (Some(server), _) => {
            let accepted = server.stop().context(label)?.len();
            let by_worker = if action == Action::SharerClose {
                vec![('B', accepted)]
            } else {
                Vec::new()
            };
            (accepted, by_worker)
        }
        (None, Some((shared, _, _))) => {
            for (i, w) in shared.get().iter().enumerate() {
                let errors = w.errors.load(SeqCst);
                ensure!(
                    errors == 0,
                    "{label}: worker {} had {errors} errors, the last: {}",
                    WORKER_REPLIES[i] as char,
                    io::Error::from_raw_os_error(w.last_errno.load(SeqCst) as i32)
                );
            }
            let served: Vec<(char, usize)> = WORKER_REPLIES
                .iter()
                .zip(shared.get())
                .map(|(&r, w)| (r as char, w.served.load(SeqCst) as usize))
                .collect();
            for &(worker, n) in &served {
                let got = replies.by_byte.get(&(worker as u8)).copied().unwrap_or(0);
                ensure!(
                    got == n,
                    "{label}: worker {worker} served {n}, the clients got {got} of its replies"
                );
            }
            (served.iter().map(|&(_, n)| n).sum(), served)
        }
        (None, None) => return Err(format!("{label}: nobody accepted")),
    };
    if let Some(status) = killed {
        ensure!(
            matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
            "{label}: worker A ended with {}",
            sys::describe_wait_status(status)
        );
    }
    drop(workers);

    let left = listen_queue(port)?;
    ensure!(
        left == 0,
        "{label}: the listener's queue shows {left} after the clients had their replies"
    );
    if module {
        if let Some(reload) = reload.take() {
            // (The reloaded module's gauge reads 0 by construction: the listener's queue,
            // checked above, is what says nothing was left behind.)
            reload
                .now()
                .context(format!("{label}: loading the module again"))?;
        } else {
            check_gauge(label, "after accepting them all", None, 0)?;
            let delta = counters()?.since(before.as_ref().ok_or("no counters")?)?;
            let total_delta = delta.total();
            info!("{label}: {}", queue_columns(&delta));
            ensure!(
                total_delta.queue_local + total_delta.queue_steal == accepted as u64,
                "{label}: {accepted} accepts, but the per-CPU queues gave {} (queue_local {} + \
                 queue_steal {}): the connections were not on the per-CPU queues",
                total_delta.queue_local + total_delta.queue_steal,
                total_delta.queue_local,
                total_delta.queue_steal
            );
        }
    }
    let served = Served {
        connected,
        queued,
        queued_after,
        accepted,
        replied: replies.replied(),
        by_worker,
        resets: replies.resets,
        closed: replies.closed,
        no_reply: replies.no_reply,
        other: replies.other,
    };
    info!(
        "{label}: {served} in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    served.check_all_served(label, &replies.errors)?;
    Ok(served)
}

/// Runs the stock arm (module unloaded) of `action` and then its module arms, one per entry of
/// `module_arms` (all `action` but for the knob-off test, whose two arms differ), and checks
/// each against stock.
fn nothing_lost(ctx: &mut Ctx, stock_action: Action, module_arms: &[Action]) -> TestResult {
    ctx.ensure_loaded()?;
    let cpus = cpus(ctx)?;
    let limit = sys::raise_open_files_limit(OPEN_FILES).context("raising RLIMIT_NOFILE")?;
    ensure!(
        limit >= 2 * HELD_TOTAL as u64 + 64,
        "set-up: the runner may open only {limit} files, {HELD_TOTAL} connections need more"
    );
    let pair = ctx.netns_pair(ServerSide::Current)?;
    steer_by_client_cpu(&pair)?;
    let ctx: &Ctx = ctx;
    let stock = stock(ctx, || held_arm(ctx, &pair, &cpus, stock_action, false))?;
    for &action in module_arms {
        ctx.ensure_loaded()?;
        let module = held_arm(ctx, &pair, &cpus, action, true)?;
        info!("{action:?}: per-CPU queues: {module}; stock: {stock}");
        ensure!(
            module == stock,
            "{action:?}: with per-CPU queues: {module}\nstock: {stock}"
        );
    }
    Ok(())
}

/// (a) About 1000 connections queued over the CPUs' queues, then `rmmod`: every one is given
/// back to the listener's own queue and accepted with the module gone, as stock serves them.
pub fn percpu_nothing_lost_unload(ctx: &mut Ctx) -> TestResult {
    nothing_lost(ctx, Action::Unload, &[Action::Unload])
}

/// (b) and (c): `enabled=0`, and then `listen_queues=0`, with the connections queued: the
/// per-CPU queues keep being drained, every connection is served as stock serves them.
pub fn percpu_nothing_lost_knobs_off(ctx: &mut Ctx) -> TestResult {
    nothing_lost(ctx, Action::Disable, &[Action::Disable, Action::QueuesOff])
}

/// (d) Two SO_REUSEPORT listeners, `tcp_migrate_req=1`: one closes with its share queued, the
/// other accepts them all, as stock migrates them.
pub fn percpu_nothing_lost_sharer_close(ctx: &mut Ctx) -> TestResult {
    nothing_lost(ctx, Action::SharerClose, &[Action::SharerClose])
}

/// (e) Forked workers share the listener with the connections queued; worker A is killed
/// while B keeps accepting: B serves the rest, as in stock.
pub fn percpu_nothing_lost_worker_killed(ctx: &mut Ctx) -> TestResult {
    nothing_lost(ctx, Action::WorkerKilled, &[Action::WorkerKilled])
}

// ---------------------------------------------------------------------------------------------
// 3 and 4. Stealing and falling back under load.

/// Requests per client thread (one pinned to each CPU) of the load tests.
const REQUESTS_PER_CPU: usize = 150;
/// The most `queue_fallback` may be, in percent of the connections.
const MAX_FALLBACK_PERCENT: u64 = 1;

/// What the pinned client threads saw.
struct Load {
    requests: usize,
    replies: BTreeMap<u8, usize>,
    failures: Vec<String>,
    resets: usize,
}

/// Makes [`REQUESTS_PER_CPU`] requests back to back from a client thread pinned to each CPU
/// of `cpus`, all threads at once.
fn pinned_load(pair: &NetnsPair, addr: SocketAddr, cpus: &[usize]) -> TestResult<Load> {
    let per_thread = on_each_cpu(pair.client_ns(), cpus, move |_| {
        Ok((0..REQUESTS_PER_CPU)
            .map(|_| client::request(addr))
            .collect::<Vec<_>>())
    })?;
    let mut load = Load {
        requests: 0,
        replies: BTreeMap::new(),
        failures: Vec::new(),
        resets: 0,
    };
    for (&cpu, results) in cpus.iter().zip(per_thread) {
        for result in results {
            load.requests += 1;
            match result {
                Ok(byte) => *load.replies.entry(byte).or_default() += 1,
                Err(e) => {
                    if let RequestError::Reply(e) | RequestError::Send(e) = &e {
                        if e.kind() == io::ErrorKind::ConnectionReset {
                            load.resets += 1;
                        }
                    }
                    load.failures.push(format!("client on cpu {cpu}: {e}"));
                }
            }
        }
    }
    Ok(load)
}

impl Load {
    fn check_answered(&self, reply: u8) -> TestResult {
        let answered = self.replies.get(&reply).copied().unwrap_or(0);
        ensure!(
            answered == self.requests && self.failures.is_empty(),
            "{} requests, {answered} answered with {reply:#04x} (replies {:?}), {} failed ({} \
             resets): {:?}",
            self.requests,
            self.replies,
            self.failures.len(),
            self.resets,
            &self.failures[..self.failures.len().min(5)]
        );
        Ok(())
    }
}

/// One blocking-accept worker pinned to the first CPU, client threads pinned to every CPU
/// making [`REQUESTS_PER_CPU`] requests each: every connection is accepted and answered; the
/// worker's CPU steals (`queue_steal`) exactly what the other CPUs' queues lose
/// (`queue_stolen`), and userspace sees as many accepts of connections completed elsewhere.
pub fn percpu_steal_single_worker(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let cpus = cpus(ctx)?;
    let worker = cpus[0];
    let _knobs = queues_on()?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    steer_by_client_cpu(&pair)?;
    let server = AcceptServer::start_with(&ServerOpts::pinned(pair.server_ip(false), &[worker]))?;
    let before = counters()?;
    let start = Instant::now();
    let load = pinned_load(&pair, server.addr(), &cpus)?;
    let elapsed = start.elapsed();
    load.check_answered(DEFAULT_REPLY)?;
    let accepted = server.stop()?;
    let delta = counters()?.since(&before)?;
    let total = delta.total();
    let w = delta.cpu(worker);
    let others: Vec<usize> = cpus.iter().copied().filter(|&c| c != worker).collect();
    let stolen: u64 = others.iter().map(|&c| delta.cpu(c).queue_stolen).sum();
    let fallback_elsewhere: u64 = others.iter().map(|&c| delta.cpu(c).queue_fallback).sum();
    let remote = accepted
        .iter()
        .filter(|a| usize::try_from(a.incoming_cpu) != Ok(worker))
        .count();
    let by_cpu: BTreeMap<i32, usize> = accepted.iter().fold(BTreeMap::new(), |mut m, a| {
        *m.entry(a.incoming_cpu).or_default() += 1;
        m
    });
    info!(
        "{} requests from {} pinned client threads in {:.1} s, one worker on cpu {worker}: \
         handshakes per cpu {by_cpu:?}; cpu {worker} took {} from its queue and stole {}, the \
         others lost {stolen}; {} handshakes fell back to the listener's own queue",
        load.requests,
        cpus.len(),
        elapsed.as_secs_f64(),
        w.queue_local,
        w.queue_steal,
        total.queue_fallback
    );
    info!("counters: {}", queue_columns(&delta));
    ensure!(
        accepted.len() == load.requests && total.accepts == load.requests as u64,
        "{} requests answered, the server accepted {}, {} counted {} accepts",
        load.requests,
        accepted.len(),
        procfs::COUNTERS,
        total.accepts
    );
    ensure!(
        remote > 0,
        "set-up: no connection completed its handshake off cpu {worker} (per cpu {by_cpu:?}): \
         nothing to steal"
    );
    ensure!(
        w.queue_steal > 0,
        "cpu {worker}, the only one accepting, stole nothing (queue_steal 0) of the {remote} \
         connections that completed on other CPUs"
    );
    ensure!(
        w.queue_steal == stolen,
        "cpu {worker} stole {} connections (queue_steal), the other CPUs lost {stolen} \
         (queue_stolen): {}",
        w.queue_steal,
        queue_columns(&delta)
    );
    ensure!(
        total.queue_steal == w.queue_steal
            && total.queue_local == w.queue_local
            && w.queue_stolen == 0,
        "only cpu {worker} accepts, but the counters show accepts from other CPUs' queues or \
         connections stolen from cpu {worker}: {}",
        queue_columns(&delta)
    );
    ensure!(
        total.queue_local + total.queue_steal + total.queue_fallback == load.requests as u64,
        "{} accepts, but queue_local {} + queue_steal {} + queue_fallback {} (taken from the \
         listener's own queue) = {}",
        load.requests,
        total.queue_local,
        total.queue_steal,
        total.queue_fallback,
        total.queue_local + total.queue_steal + total.queue_fallback
    );
    ensure!(
        remote as u64 == w.queue_steal + fallback_elsewhere,
        "userspace accepted {remote} connections whose handshake completed off cpu {worker} \
         (SO_INCOMING_CPU), the counters say {} were stolen and {fallback_elsewhere} fell back \
         to the listener's own queue",
        w.queue_steal
    );
    Ok(())
}

/// Blocking-accept workers pinned to every CPU, client threads pinned to every CPU making
/// requests back to back: at most 1% of the handshakes fall back to the listener's own queue
/// (`queue_fallback`), and every accept is counted once, from a per-CPU queue (`queue_local`,
/// `queue_steal`) or, for those that fell back, from the listener's own queue.
pub fn percpu_fallback_under_1pct(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let cpus = cpus(ctx)?;
    let _knobs = queues_on()?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    steer_by_client_cpu(&pair)?;
    let server = AcceptServer::start(pair.server_ip(false), &cpus, None)?;
    let before = counters()?;
    let start = Instant::now();
    let load = pinned_load(&pair, server.addr(), &cpus)?;
    let elapsed = start.elapsed();
    load.check_answered(DEFAULT_REPLY)?;
    let accepted = server.stop()?;
    let delta = counters()?.since(&before)?;
    let total = delta.total();
    let fallback = percent(total.queue_fallback as usize, load.requests);
    info!(
        "{} requests from {} pinned client threads in {:.1} s, a pinned worker on each cpu: \
         queue_fallback {} ({fallback:.2}%), queue_local {} ({:.1}% of accepts), queue_steal {}; \
         wake-ups {} local, {} pulled, {} fallback, {} held",
        load.requests,
        cpus.len(),
        elapsed.as_secs_f64(),
        total.queue_fallback,
        total.queue_local,
        percent(total.queue_local as usize, accepted.len()),
        total.queue_steal,
        total.wake_local,
        total.wake_pulled,
        total.wake_fallback,
        total.wake_held
    );
    info!("counters: {}", queue_columns(&delta));
    ensure!(
        accepted.len() == load.requests && total.accepts == load.requests as u64,
        "{} requests answered, the server accepted {}, {} counted {} accepts",
        load.requests,
        accepted.len(),
        procfs::COUNTERS,
        total.accepts
    );
    ensure!(
        total.queue_fallback * 100 <= MAX_FALLBACK_PERCENT * load.requests as u64,
        "{} of {} handshakes ({fallback:.2}%) went to the listener's own queue instead of their \
         CPU's (queue_fallback), more than {MAX_FALLBACK_PERCENT}%",
        total.queue_fallback,
        load.requests
    );
    ensure!(
        total.queue_local + total.queue_steal + total.queue_fallback == total.accepts,
        "{} accepts of the listener, but queue_local {} + queue_steal {} + queue_fallback {} \
         (accepted from the listener's own queue) = {}",
        total.accepts,
        total.queue_local,
        total.queue_steal,
        total.queue_fallback,
        total.queue_local + total.queue_steal + total.queue_fallback
    );
    ensure!(
        total.queue_stolen == total.queue_steal,
        "queue_steal {} but queue_stolen {}: {}",
        total.queue_steal,
        total.queue_stolen,
        queue_columns(&delta)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::CpuStats;

    #[test]
    fn served_runs_compare_and_check() {
        let all = Served {
            connected: 10,
            queued: 10,
            queued_after: Some(10),
            accepted: 10,
            replied: 10,
            by_worker: vec![('B', 10)],
            resets: 0,
            closed: 0,
            no_reply: 0,
            other: 0,
        };
        assert!(all.check_all_served("x", &[]).is_ok());
        let reset = Served {
            replied: 9,
            resets: 1,
            ..all
        };
        assert!(reset.check_all_served("x", &[]).is_err());
        let text = reset.to_string();
        assert!(
            text.contains("1 reset") && text.contains("(10 after the action)"),
            "{text}"
        );
        let lost = Served {
            connected: 10,
            queued: 10,
            queued_after: Some(9),
            accepted: 10,
            replied: 10,
            by_worker: Vec::new(),
            resets: 0,
            closed: 0,
            no_reply: 0,
            other: 0,
        };
        assert!(lost.check_all_served("x", &[]).is_err());
        let killed = Served {
            queued_after: None,
            ..lost
        };
        assert!(killed.check_all_served("x", &[]).is_ok());
    }

    /// The stock arms on the host's kernel (no module), and the premise of the steering: with
    /// RPS off, a pinned client's handshakes complete on its CPU. Needs root and iproute2:
    /// `sudo cargo test -- --ignored`.
    #[test]
    #[ignore = "needs root and iproute2"]
    fn stock_arms_on_the_host() {
        let cpus = procfs::online_cpus().unwrap();
        assert!(cpus.len() >= 2, "needs 2 CPUs");
        let n = (125..150).find(|&n| !NetnsPair::in_use(n)).unwrap();
        let pair = NetnsPair::create(n, ServerSide::Current, &cpus).unwrap();
        steer_by_client_cpu(&pair).unwrap();
        sys::raise_open_files_limit(OPEN_FILES).unwrap();

        let server =
            AcceptServer::start_with(&ServerOpts::pinned(pair.server_ip(false), &cpus[..1]))
                .unwrap();
        let addr = server.addr();
        let load = pinned_load(&pair, addr, &cpus).unwrap();
        load.check_answered(DEFAULT_REPLY).unwrap();
        let accepted = server.stop().unwrap();
        for &cpu in &cpus {
            let here = accepted
                .iter()
                .filter(|a| a.incoming_cpu == cpu as i32)
                .count();
            assert_eq!(here, REQUESTS_PER_CPU, "handshakes on cpu {cpu}");
        }

        let run = backlog_arm(&pair, &cpus, "host", false).unwrap();
        eprintln!("backlog: {run}");
        assert_eq!(run.connected, OVERFLOW_BACKLOG as usize + 1, "{run}");
        assert_eq!(run.queued as usize, run.connected, "{run}");
        assert_eq!(run.accepted, run.connected, "{run}");
        assert_eq!(run.timed_out, OVERFLOW_ATTEMPTS - run.connected, "{run}");
        assert!(run.overflows >= run.timed_out as u64, "{run}");

        let ctx = Ctx::new("/nonexistent/fastsocket.ko".into(), cpus.clone());
        for action in [Action::Unload, Action::SharerClose, Action::WorkerKilled] {
            let served = held_arm(&ctx, &pair, &cpus, action, false).unwrap();
            eprintln!("{action:?}: {served}");
        }
    }

    #[test]
    fn counter_columns_are_listed_per_cpu() {
        let header = "cpu accepts local remote wake_local wake_fallback queue_local queue_steal \
                      queue_stolen queue_fallback";
        let c = Counters::parse(&format!(
            "{header}\n0 5 3 2 0 0 3 2 0 0\n1 0 0 0 0 0 0 0 2 0\n"
        ))
        .unwrap();
        assert_eq!(
            queue_columns(&c),
            "cpu0: queue_local 3 queue_steal 2 queue_stolen 0 queue_fallback 0; \
             cpu1: queue_local 0 queue_steal 0 queue_stolen 2 queue_fallback 0"
        );
        let _: CpuStats = c.total();
    }
}
