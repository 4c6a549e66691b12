//! Accept locality of TCP listeners, measured from userspace, and the accept paths that
//! must keep working around it: epoll modes, poll, select, accept4 flags, SO_REUSEPORT.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use nix::sys::socket::SockFlag;
use nix::unistd::gettid;

use super::{connect_paced, percent, percpu, Context, Ctx, KnobGuard, TestResult, ACCEPT_TIMEOUT};
use crate::netns::{self, NetnsPair, ServerSide};
use crate::server::{self, AcceptServer, EpollMode, ServerOpts, Waiter};
use crate::{client, procfs, sys, tracefs};

/// Requests per locality measurement (each with the module on and with it off).
const LOCALITY_REQUESTS: usize = 300;
/// Requests per server in the functional tests.
const REQUESTS: usize = 100;
/// Pause after each request of a locality measurement, so that the worker that answered
/// is back waiting before the next handshake: the premise of accept locality is a worker
/// waiting on the handshake's CPU (without it the client may preempt the worker between
/// its reply and its next accept). This pacing measures the premise only: back-to-back
/// load, where a worker is often busy when the next handshake completes, is measured
/// (locality, accept latency against stock, the bound of the hold) by the
/// `accept_latency_*` tests.
const LOCALITY_PAUSE: Duration = Duration::from_millis(5);

/// `listen_hold_ms` of the module arm for pinned workers, whose locality is held to 99%: a
/// connection is kept for the worker woken on its CPU for this long. The default 5 ms is
/// shorter than the stalls of an emulated vCPU on a busy host (2026-12-06: 290-298 of 300
/// local, every wake-up local, the misses taken by the other CPU's worker after 5 ms);
/// the paced tests check the mechanism, `make bench` measures the default under load.
const PINNED_HOLD_MS: &str = "50";

/// How many accepts were local out of how many.
#[derive(Clone, Copy, Debug)]
pub struct Share {
    pub local: usize,
    pub total: usize,
}

impl Share {
    pub fn percent(&self) -> f64 {
        percent(self.local, self.total)
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1}% ({}/{})", self.percent(), self.local, self.total)
    }
}

/// Makes `count` requests and returns the locality of their accepts as userspace saw it.
fn measure(pair: &NetnsPair, server: &AcceptServer, count: usize) -> TestResult<Share> {
    let first = server.accepted();
    connect_paced(pair, server, count, LOCALITY_PAUSE)?;
    let accepted = server.snapshot();
    let new = &accepted[first..];
    ensure!(
        new.len() == count,
        "{count} requests, but the server accepted {} connections",
        new.len()
    );
    let misses: Vec<String> = new
        .iter()
        .filter(|a| !a.is_local())
        .map(|a| format!("{}->{}", a.incoming_cpu, a.cpu))
        .collect();
    if !misses.is_empty() && misses.len() <= 10 {
        info!(
            "remote accepts (handshake CPU->accept CPU): {}",
            misses.join(" ")
        );
    }
    Ok(Share {
        local: server::count_local(new),
        total: new.len(),
    })
}

/// Runs `f` on a server started with `opts`, then stops it.
fn with_server<T>(
    opts: &ServerOpts,
    f: impl FnOnce(&AcceptServer) -> TestResult<T>,
) -> TestResult<T> {
    let server = AcceptServer::start_with(opts)?;
    let result = f(&server);
    let stopped = server.stop();
    let value = result?;
    stopped?;
    Ok(value)
}

/// Measures locality on a server started with `opts` with the module on (enabled=1,
/// listen_ports=all), then stock (the module unloaded, on a server started then: a listener
/// gets its per-CPU queues when it starts listening), prints both and fails if the module's
/// share is below `min_percent`.
fn compare_locality(
    ctx: &Ctx,
    variant: &str,
    pair: &NetnsPair,
    opts: &ServerOpts,
    min_percent: usize,
) -> TestResult {
    let pinned = !variant.starts_with("unpinned");
    let (module, wakes) = with_server(opts, |server| {
        let _ports = KnobGuard::listen_ports("all")?;
        let _enabled = KnobGuard::enabled("1")?;
        let _hold = pinned
            .then(|| KnobGuard::listen_hold_ms(PINNED_HOLD_MS))
            .transpose()?;
        let before = procfs::read_counters()?;
        let share = measure(pair, server, LOCALITY_REQUESTS)?;
        let delta = procfs::read_counters()?.since(&before)?.total();
        // The module counts where accept() ran, userspace where the thread runs just after
        // it returned: an unpinned thread may move in between (on its way out of the
        // syscall, where a wake-up on its CPU lets the other one pull it), so only pinned ones
        // agree exactly; unpinned ones may differ by 3% of the accepts (5 of 300 with
        // `EPOLLEXCLUSIVE` in a boot of 2026-12-07, which the 1% allowed before failed).
        let slack = if pinned {
            0
        } else {
            (share.total * 3).div_ceil(100) as u64
        };
        ensure!(
            delta.accepts == share.total as u64 && delta.local.abs_diff(share.local as u64) <= slack,
            "{}: accepts rose by {} and local by {}, userspace saw {share} (allowed difference {slack})",
            procfs::COUNTERS,
            delta.accepts,
            delta.local
        );
        Ok((share, delta))
    })?;
    let stock = percpu::stock(ctx, || {
        with_server(opts, |server| measure(pair, server, LOCALITY_REQUESTS))
    })?;
    info!("locality {variant}: module {module}, stock {stock}");
    info!(
        "wake-ups {variant} (module): {} local, {} pulled, {} fallback, {} held",
        wakes.wake_local, wakes.wake_pulled, wakes.wake_fallback, wakes.wake_held
    );
    ensure!(
        module.local * 100 >= min_percent * module.total,
        "locality {variant} with the module is {module}, expected at least {min_percent}% (stock: {stock})"
    );
    Ok(())
}

fn locality_test(
    ctx: &mut Ctx,
    variant: &str,
    ipv6: bool,
    opts: impl FnOnce(ServerOpts) -> ServerOpts,
    min_percent: usize,
) -> TestResult {
    ctx.ensure_loaded()?;
    // On one CPU every accept is local: the test would measure nothing.
    percpu::cpus(ctx)?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    let opts = opts(ServerOpts::pinned(pair.server_ip(ipv6), &ctx.cpus));
    compare_locality(ctx, variant, &pair, &opts, min_percent)
}

pub fn listen_locality_pinned(ctx: &mut Ctx) -> TestResult {
    locality_test(ctx, "pinned", false, |opts| opts, 99)
}

/// Locality required of unpinned workers. A task is pulled onto the handshake's CPU only when
/// that CPU is idle (issue 8 item 9: never move a task onto a busy CPU); the test's own client
/// shares the guest's CPUs, so some handshakes complete on a CPU busy with it. Before the
/// spread (see [`gathered_waiters_spread`]), workers that had gathered on the other CPU stayed
/// there as long as that lasted: `EPOLLEXCLUSIVE` 87.7-88.7% in some runs of 2026-12-05, and a
/// failed CI. Since, in four boots of 2026-12-05: blocking accept() 96.0-99.7%,
/// `EPOLLEXCLUSIVE` 99.3-100% (stock 39-47%), with no fallback wake-up left: the remaining
/// misses (up to 12 of 300) followed local or held wake-ups. On slower or busier hosts of
/// 2026-12-06 `EPOLLEXCLUSIVE` gave 82.0-97.0% (a CI run 86.3%, stock 35-55%): where the
/// scheduler places a woken unpinned task when its CPU is busy, and whether a busy CPU frees
/// up within the hold, depend on how the host runs the vCPUs. The floor keeps the module
/// clearly apart from stock; `make bench` measures locality under load.
const UNPINNED_MIN_PERCENT: usize = 80;

/// Threads that may run anywhere: the wake-up pulls a blocked accept() onto the handshake's
/// CPU when none waits there and that CPU is idle. Also prints the figure without the pull (`listen_pull=0`).
pub fn listen_locality_unpinned(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    percpu::cpus(ctx)?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    let threads = ctx.cpus.len();
    let opts = ServerOpts::pinned(pair.server_ip(false), &ctx.cpus).unpinned(threads);
    compare_locality(ctx, "unpinned", &pair, &opts, UNPINNED_MIN_PERCENT)?;
    let no_pull = with_server(&opts, |server| {
        let _enabled = KnobGuard::enabled("1")?;
        let _ports = KnobGuard::listen_ports("all")?;
        let _pull = KnobGuard::listen_pull("0")?;
        measure(&pair, server, LOCALITY_REQUESTS)
    })?;
    info!("locality unpinned, module with listen_pull=0: {no_pull}");
    Ok(())
}

/// Unpinned threads waiting in their own epoll instances with `EPOLLEXCLUSIVE` (how nginx
/// workers wait by default): the wake-up pulls the epoll_wait() task onto the handshake's CPU.
pub fn listen_locality_unpinned_epoll_exclusive(ctx: &mut Ctx) -> TestResult {
    let threads = ctx.cpus.len();
    locality_test(
        ctx,
        "unpinned-epoll-exclusive",
        false,
        |opts| {
            opts.unpinned(threads)
                .waiter(Waiter::Epoll(EpollMode::Exclusive))
        },
        UNPINNED_MIN_PERCENT,
    )
}

pub fn listen_locality_epoll_exclusive(ctx: &mut Ctx) -> TestResult {
    locality_test(
        ctx,
        "epoll-exclusive",
        false,
        |opts| opts.waiter(Waiter::Epoll(EpollMode::Exclusive)),
        99,
    )
}

pub fn listen_locality_ipv6(ctx: &mut Ctx) -> TestResult {
    locality_test(ctx, "pinned-ipv6", true, |opts| opts, 99)
}

/// Level- and edge-triggered epoll, select and poll servers: every request answered.
pub fn listen_epoll_modes(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let _enabled = KnobGuard::enabled("1")?;
    let _ports = KnobGuard::listen_ports("all")?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    let ip = pair.server_ip(false);
    let variants: [(&str, ServerOpts); 4] = [
        (
            "epoll-level",
            ServerOpts::pinned(ip, &ctx.cpus).waiter(Waiter::Epoll(EpollMode::Level)),
        ),
        (
            "epoll-edge",
            ServerOpts::pinned(ip, &ctx.cpus).waiter(Waiter::Epoll(EpollMode::Edge)),
        ),
        (
            "select",
            ServerOpts::pinned(ip, &ctx.cpus)
                .unpinned(1)
                .waiter(Waiter::Select),
        ),
        (
            "poll",
            ServerOpts::pinned(ip, &ctx.cpus)
                .unpinned(1)
                .waiter(Waiter::Poll),
        ),
    ];
    for (variant, opts) in variants {
        let server = AcceptServer::start_with(&opts).context(variant)?;
        let share = measure(&pair, &server, REQUESTS).context(variant)?;
        let accepted = server.stop().context(variant)?;
        ensure!(
            accepted.len() == REQUESTS,
            "{variant}: {REQUESTS} requests answered, but the server accepted {}",
            accepted.len()
        );
        info!("locality {variant} (module): {share}");
    }
    Ok(())
}

/// Waits until `listener` has a connection queued, so that a blocking accept cannot hang.
fn wait_queued(listener: &std::net::TcpListener) -> TestResult {
    let ready = sys::poll_readable(listener, ACCEPT_TIMEOUT).context("poll")?;
    ensure!(ready, "no connection queued within {ACCEPT_TIMEOUT:?}");
    Ok(())
}

pub fn accept4_flags(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let _enabled = KnobGuard::enabled("1")?;
    let _ports = KnobGuard::listen_ports("all")?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    let bind = SocketAddr::new(pair.server_ip(false), 0);
    let listener =
        sys::tcp_listen(bind, server::BACKLOG, false).context(format!("listening on {bind}"))?;
    let addr = listener.local_addr().context("local_addr")?;
    let before = procfs::read_counters()?;

    let mut clients = netns::run_in(pair.client_ns(), || {
        (0..2)
            .map(|_| TcpStream::connect_timeout(&addr, ACCEPT_TIMEOUT))
            .collect::<io::Result<Vec<_>>>()
    })
    .context("client")?
    .context(format!("connecting to {addr}"))?;

    wait_queued(&listener)?;
    let mut with_flags = sys::accept4(&listener, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC)
        .context("accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)")?;
    let flags = sys::fd_flags(&with_flags).context("fcntl")?;
    ensure!(
        flags.nonblocking && flags.cloexec,
        "accept4(SOCK_NONBLOCK | SOCK_CLOEXEC) gave an fd with {flags:?}"
    );
    wait_queued(&listener)?;
    let mut plain = sys::accept_plain(&listener).context("accept")?;
    let flags = sys::fd_flags(&plain).context("fcntl")?;
    ensure!(
        !flags.nonblocking && !flags.cloexec,
        "plain accept gave an fd with {flags:?}"
    );

    // Both fds carry their connection: each client gets one of the two bytes.
    with_flags
        .write_all(b"n")
        .context("writing to the accept4 fd")?;
    plain
        .write_all(b"p")
        .context("writing to the plain accept fd")?;
    let mut got = Vec::new();
    for stream in &mut clients {
        stream
            .set_read_timeout(Some(client::REPLY_TIMEOUT))
            .context("SO_RCVTIMEO")?;
        let mut byte = [0u8];
        stream.read_exact(&mut byte).context("client read")?;
        got.push(byte[0]);
    }
    got.sort_unstable();
    ensure!(
        got == b"np",
        "the clients read {got:?}, expected the bytes {:?}",
        b"np"
    );

    listener.set_nonblocking(true).context("O_NONBLOCK")?;
    match sys::accept4(&listener, SockFlag::SOCK_CLOEXEC) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => {
            return Err(format!(
                "non-blocking accept on an empty queue: {e}, expected EAGAIN"
            ))
        }
        Ok(_) => return Err("non-blocking accept on an empty queue returned a connection".into()),
    }
    match sys::accept_plain(&listener) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => {
            return Err(format!(
                "non-blocking plain accept on an empty queue: {e}, expected EAGAIN"
            ))
        }
        Ok(_) => {
            return Err("non-blocking plain accept on an empty queue returned a connection".into())
        }
    }
    // A listener that stopped listening: EINVAL, as stock.
    sys::shutdown_listener(&listener).context("shutdown(SHUT_RDWR)")?;
    match sys::accept4(&listener, SockFlag::SOCK_CLOEXEC) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        other => {
            return Err(format!(
                "non-blocking accept after shutdown(SHUT_RDWR): {other:?}, expected EINVAL"
            ))
        }
    }
    let delta = procfs::read_counters()?.since(&before)?.total();
    ensure!(
        delta.accepts == 2,
        "2 accepts raised {} accepts by {}",
        procfs::COUNTERS,
        delta.accepts
    );
    Ok(())
}

pub fn reuseport_group(ctx: &mut Ctx) -> TestResult {
    const COUNT: usize = 200;
    ctx.ensure_loaded()?;
    let _enabled = KnobGuard::enabled("1")?;
    let _ports = KnobGuard::listen_ports("all")?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    let ip = pair.server_ip(false);
    let cpu = |i: usize| ctx.cpus[i % ctx.cpus.len()];
    let first =
        AcceptServer::start_with(&ServerOpts::pinned(ip, &[cpu(0)]).reuseport().reply(b'1'))
            .context("first listener")?;
    let port = first.addr().port();
    let second = AcceptServer::start_with(
        &ServerOpts::pinned(ip, &[cpu(1)])
            .reuseport()
            .port(port)
            .reply(b'2'),
    )
    .context("second listener")?;

    let replies = client::request_many(pair.client_ns(), first.addr(), COUNT, Duration::ZERO)?;
    let (got1, got2) = (
        replies.get(&b'1').copied().unwrap_or(0),
        replies.get(&b'2').copied().unwrap_or(0),
    );
    ensure!(
        got1 + got2 == COUNT,
        "replies {replies:?} (byte: count): expected only b'1' and b'2'"
    );
    first.wait_for(got1, ACCEPT_TIMEOUT)?;
    second.wait_for(got2, ACCEPT_TIMEOUT)?;
    let (accepted1, accepted2) = (first.stop()?.len(), second.stop()?.len());
    info!("reuseport: listener 1 accepted {accepted1}, listener 2 accepted {accepted2}");
    ensure!(
        (accepted1, accepted2) == (got1, got2),
        "the listeners accepted {accepted1} and {accepted2}, but answered {got1} and {got2}"
    );
    ensure!(
        accepted1 > 0 && accepted2 > 0,
        "one listener of the group got no connection: {accepted1} and {accepted2}"
    );
    Ok(())
}

/// The CPU thread `tid` sleeps on, once it sleeps (in accept(), for the callers), polled until
/// `deadline`: setting up a scenario, not waiting for a wake-up.
fn asleep_on(tid: libc::pid_t, deadline: std::time::Instant) -> TestResult<usize> {
    loop {
        let (state, cpu) = sys::thread_state(tid).context("reading a worker's state")?;
        if state == 'S' {
            return Ok(cpu);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "worker {tid} did not sleep in accept() in time"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The only worker, unpinned, asleep in accept() on another CPU than the handshake's, which
/// it accepted on just before: it is the waiter, not a busy worker that will come back (nor
/// one displaced onto a CPU where another worker accepts), so no wake-up may be held for it (before the hold checked where the last acceptor is, 85 of
/// 200 handshakes of one such worker were held, and `make vfsbench` measured one blocking
/// worker at 0.27-0.29x stock's connections per second).
///
/// Each round pins the worker to CPU a, has a client on a connect (so the worker accepts on
/// a, where the handshake completed), moves the worker to CPU b and unpins it: it sleeps in
/// accept() with b its CPU. A client on a then connects at once, with a busy (so nothing is
/// pulled there) and the worker's accept there well within `PRESENT_MS`: the wake-up must
/// not be held. Rounds alternate a and b.
pub fn sleeping_worker_not_held(ctx: &mut Ctx) -> TestResult {
    const ROUNDS: usize = 20;
    /// The module's `PRESENT_MS`: a round whose second handshake came later than this after
    /// the first accept tests nothing.
    const PRESENT: Duration = Duration::from_millis(100);
    /// The default `listen_hold_ms` (5) plus the timer's jiffy, with a margin.
    const RESERVE_EXPIRY: Duration = Duration::from_millis(15);
    let cpus = super::percpu::cpus(ctx)?;
    let (cpu_a, cpu_b) = (cpus[0], cpus[1]);
    ctx.ensure_loaded()?;
    let _enabled = KnobGuard::enabled("1")?;
    let _ports = KnobGuard::listen_ports("all")?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    pair.set_rps(&[])
        .context("turning RPS off on the server's veth end")?;
    let listener = std::sync::Arc::new(
        sys::tcp_listen(SocketAddr::new(pair.server_ip(false), 0), 64, false)
            .context("listening")?,
    );
    let served = std::sync::Arc::clone(&listener);
    let addr = listener.local_addr().context("listener address")?;
    let (to_worker, orders) = std::sync::mpsc::channel::<(usize, usize)>();
    let (to_main, events) =
        std::sync::mpsc::channel::<TestResult<(libc::pid_t, std::time::Instant)>>();
    let all = cpus.clone();
    let worker = std::thread::spawn(move || {
        let serve = |listener: &std::net::TcpListener| -> TestResult<std::time::Instant> {
            let (mut conn, _) = listener.accept().context("accept")?;
            let at = std::time::Instant::now();
            let mut byte = [0u8; 1];
            conn.read_exact(&mut byte).context("reading the request")?;
            conn.write_all(b"1").context("replying")?;
            Ok(at)
        };
        for (here, then) in orders {
            let round = || -> TestResult<std::time::Instant> {
                sys::pin_current_thread(here).context(format!("pinning to cpu {here}"))?;
                let _ = to_main.send(Ok((gettid().as_raw(), std::time::Instant::now())));
                let at = serve(&served)?;
                // The accept on `here` reserved it for this worker until the hold's timer
                // (`listen_hold_ms`, 5): asleep in accept() by then, the worker would be woken
                // and pulled back onto `here`, an idle CPU (in one `make test` of 2026-12-05
                // that happened in all 20 rounds and the test tested nothing). Let it pass.
                std::thread::sleep(RESERVE_EXPIRY);
                sys::pin_current_thread(then).context(format!("pinning to cpu {then}"))?;
                sys::set_current_thread_cpus(&all).context("unpinning")?;
                let _ = to_main.send(Ok((gettid().as_raw(), at)));
                serve(&served)
            };
            let res = round().map(|at| (gettid().as_raw(), at));
            let _ = to_main.send(res);
        }
    });
    let client = pair.client_ns().to_string();
    let request_on = |cpu: usize| -> TestResult {
        let reply = super::in_ns(&client, move || {
            sys::pin_current_thread(cpu).context(format!("pinning the client to cpu {cpu}"))?;
            client::request(addr).map_err(|e| format!("request: {e}"))
        })?;
        ensure!(reply == b'1', "reply {reply}");
        Ok(())
    };
    let next = |what: &str| -> TestResult<(libc::pid_t, std::time::Instant)> {
        events
            .recv_timeout(ACCEPT_TIMEOUT)
            .map_err(|e| format!("waiting for the worker ({what}): {e}"))?
    };
    let (mut held, mut timely, mut wakes) = (0u64, 0usize, Vec::new());
    let mut rounds = || -> TestResult {
        for round in 0..ROUNDS {
            let (a, b) = if round % 2 == 0 {
                (cpu_a, cpu_b)
            } else {
                (cpu_b, cpu_a)
            };
            to_worker.send((a, b)).map_err(|_| "the worker is gone")?;
            next("pinned")?;
            request_on(a)?;
            let (tid, first_accept) = next("moved")?;
            // Asleep in accept() before the handshake on a: on b, unless something moved it (then
            // the round tests nothing); look after a while, so that a late wake-up of the
            // first accept's hold would have shown.
            std::thread::sleep(Duration::from_millis(20));
            let asleep_on = asleep_on(tid, std::time::Instant::now() + ACCEPT_TIMEOUT)
                .context(format!("round {round}"))?;
            let before = procfs::read_counters()?;
            request_on(a)?;
            let since = first_accept.elapsed();
            next("served")?;
            let delta = procfs::read_counters()?.since(&before)?.total();
            // The module must have decided this handshake's wake-up (else `held == 0` below
            // would hold with the hook never called).
            let decided =
                delta.wake_local + delta.wake_pulled + delta.wake_fallback + delta.wake_held;
            ensure!(
                decided == 1,
                "round {round}: the module counted {decided} wake-up decisions for one handshake"
            );
            held += delta.wake_held;
            timely += usize::from(since < PRESENT && asleep_on == b);
            wakes.push(format!(
                "{}/{}/{}/{}",
                delta.wake_local, delta.wake_pulled, delta.wake_fallback, delta.wake_held
            ));
        }
        Ok(())
    };
    let result = rounds();
    // Whatever happened, end the worker: no more orders, and its accept() returns.
    drop(to_worker);
    sys::shutdown_listener(&listener).context("shutting the listener down")?;
    worker.join().map_err(|_| "the worker panicked")?;
    result?;
    info!(
        "{ROUNDS} rounds, {timely} with the worker asleep on the other CPU and the second \
         handshake within {PRESENT:?} of the first accept: wake-ups local/pulled/fallback/held \
         per round {}",
        wakes.join(" ")
    );
    ensure!(
        timely > 0,
        "no round had the worker asleep on the other CPU and its second handshake within \
         {PRESENT:?} of the first accept: nothing tested"
    );
    ensure!(
        held == 0,
        "{held} wake-ups were held for a worker that was the one waiting (of {ROUNDS} rounds)"
    );
    Ok(())
}

/// What one round of [`gathered_waiters_spread`] saw.
struct SpreadRound {
    /// Both workers were asleep in accept() on the CPU they were put on before the handshake.
    gathered: bool,
    /// The CPU the worker ran on once accept() returned (`sched_getcpu()`).
    accepted_on: usize,
    /// The module counted the accept on the handshake's CPU (where accept() ran: the worker
    /// may move between its return and `sched_getcpu()`).
    accepted_on_a: bool,
    /// Wake-ups the module held for the handshake.
    held: u64,
    /// Wake-ups the module left to the stock order.
    fallback: u64,
    /// Workers moved onto the handshake's CPU at once (`wake_pulled`).
    pulled_now: u64,
    /// Workers moved onto it by a held wake-up's timer (`wake_held_pulled`).
    held_pulled: u64,
    /// The CPU moves of the worker that accepted, from the handshake on (source, destination;
    /// the `sched:sched_migrate_task` tracepoint).
    moves: Vec<(u64, u64)>,
}

impl SpreadRound {
    /// Whether the worker that accepted was moved onto `a` (by the module's pull, or the
    /// scheduler) before it accepted: a worker that had gathered on the other CPU can accept
    /// on `a` only so.
    fn moved_onto(&self, a: usize) -> bool {
        self.moves.iter().any(|&(_, to)| to == a as u64)
    }

    /// Whether the worker that accepted was moved off `a` after it was moved onto it: the
    /// scheduler's doing (its load balancing, a wake-up elsewhere), not the module's, which
    /// moves a task onto a CPU only.
    fn moved_off(&self, a: usize) -> bool {
        let a = a as u64;
        self.moves
            .iter()
            .position(|&(_, to)| to == a)
            .is_some_and(|i| self.moves[i + 1..].iter().any(|&(from, _)| from == a))
    }
}

/// The name of the workers of [`gathered_waiters_spread`], whose moves are traced.
const SPREAD_WORKER: &str = "fs-spread";
/// The tracepoint of a task's move to another CPU.
const MIGRATE: &str = "sched/sched_migrate_task";

/// One round: a listener, two unpinned workers asleep in accept() on `b`, and a client on `a`
/// (busy with it while its connect() completes the handshake, RPS being off). `trace` records
/// the workers' moves; it is emptied once they are asleep.
fn spread_round(
    pair: &NetnsPair,
    trace: &tracefs::Instance,
    all: &[usize],
    a: usize,
    b: usize,
) -> TestResult<SpreadRound> {
    let listener = std::sync::Arc::new(
        sys::tcp_listen(SocketAddr::new(pair.server_ip(false), 0), 64, false)
            .context("listening")?,
    );
    let addr = listener.local_addr().context("listener address")?;
    let (to_main, events) = std::sync::mpsc::channel::<TestResult<Option<(usize, u64)>>>();
    let (ready_tx, ready) = std::sync::mpsc::channel::<libc::pid_t>();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (listener, to_main, ready_tx) = (
                std::sync::Arc::clone(&listener),
                to_main.clone(),
                ready_tx.clone(),
            );
            let all = all.to_vec();
            let work = move || {
                let res = (|| -> TestResult<Option<(usize, u64)>> {
                    sys::pin_current_thread(b).context(format!("pinning to cpu {b}"))?;
                    sys::set_current_thread_cpus(&all).context("unpinning")?;
                    let _ = ready_tx.send(gettid().as_raw());
                    // After the round's shutdown(), the worker that got nothing sees an error.
                    let Ok((mut conn, _)) = listener.accept() else {
                        return Ok(None);
                    };
                    let cpu = sys::current_cpu().context("sched_getcpu")?;
                    let mut byte = [0u8; 1];
                    conn.read_exact(&mut byte).context("reading the request")?;
                    conn.write_all(b"1").context("replying")?;
                    Ok(Some((cpu, gettid().as_raw() as u64)))
                })();
                let _ = to_main.send(res);
            };
            std::thread::Builder::new()
                .name(SPREAD_WORKER.into())
                .spawn(work)
        })
        .collect::<io::Result<Vec<_>>>()
        .context("starting the workers")?;
    drop((to_main, ready_tx));
    let run = || -> TestResult<(bool, procfs::Counters)> {
        let tids = [
            ready.recv_timeout(ACCEPT_TIMEOUT),
            ready.recv_timeout(ACCEPT_TIMEOUT),
        ];
        let deadline = std::time::Instant::now() + ACCEPT_TIMEOUT;
        let mut gathered = true;
        for tid in tids {
            let tid = tid.map_err(|e| format!("waiting for a worker to start: {e}"))?;
            gathered &= asleep_on(tid, deadline)? == b;
        }
        // Their moves from here on: an asleep task moves only when it is woken.
        trace.clear()?;
        let before = procfs::read_counters()?;
        let reply = super::in_ns(pair.client_ns(), move || {
            sys::pin_current_thread(a).context(format!("pinning the client to cpu {a}"))?;
            client::request(addr).map_err(|e| format!("request: {e}"))
        })?;
        ensure!(reply == b'1', "reply {reply}");
        Ok((gathered, procfs::read_counters()?.since(&before)?))
    };
    let result = run();
    sys::shutdown_listener(&listener).context("shutting the listener down")?;
    for worker in workers {
        worker.join().map_err(|_| "a worker panicked")?;
    }
    let (gathered, delta) = result?;
    let total = delta.total();
    let mut accepted = Vec::new();
    for res in events.try_iter() {
        accepted.extend(res?);
    }
    ensure!(
        accepted.len() == 1,
        "one request, accepted {} times",
        accepted.len()
    );
    let (accepted_on, tid) = accepted[0];
    let (text, _) = trace.read_whole()?;
    let moves = text
        .lines()
        .filter_map(tracefs::parse_event)
        .filter(|e| e.name == "sched_migrate_task" && e.field("pid") == Some(tid))
        .map(|e| {
            e.field("orig_cpu")
                .zip(e.field("dest_cpu"))
                .ok_or_else(|| format!("a move without its CPUs: {e:?}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(SpreadRound {
        gathered,
        accepted_on,
        accepted_on_a: delta.cpu(a).accepts == 1,
        held: total.wake_held,
        fallback: total.wake_fallback,
        pulled_now: total.wake_pulled,
        held_pulled: total.wake_held_pulled,
        moves,
    })
}

/// Unpinned workers that gathered on one CPU are spread again: two workers asleep in
/// accept() on CPU b, none on a, and a handshake on a while a is busy (the client's own
/// connect() completes it there, RPS off). No task is moved onto a busy CPU, but as two
/// waiters share b, the module holds the wake-up (`wake_held`) and the hold's timer, with a
/// idle by then, pulls one onto a (`wake_held_pulled`): the connection is accepted on a, and
/// the next ones on a find a worker there. Without this, such workers stayed on b as long as
/// the handshakes came on a busy CPU (the unpinned `EPOLLEXCLUSIVE` locality test got
/// 87.7-88.7% in runs where that happened). Each round uses a new listener and two new
/// workers, a `SPREAD_MS` apart. The same rounds with `listen_pull=0` (nothing moved, no
/// spread) are printed beside.
///
/// No round with the workers gathered may leave the wake-up to the stock order: that is
/// decided when the handshake completes. Usually the client keeps a busy and the wake-up is
/// held; where the handshake's last segment is processed once the client sleeps, a is idle and
/// a worker is pulled at once (`wake_pulled`; 2 rounds of 16 in a boot of 2026-12-05). The
/// held wake-up's pull happens only if a is idle when the hold's timer fires, which the test
/// does not control: some other task may run there just then (one round of 8 in a `make
/// test` of 2026-12-05; 6 of 15 early in CI's run of 2026-12-07, a udev worker handling the
/// pair's new devices, since waited for), and the stock order then wakes a worker on b, as
/// documented. So the rounds go on (up to `MAX_ROUNDS`) until `PULLS` of them moved a worker
/// onto a; every such round must have its accept counted on a by the module, at least half of
/// them must be the timer's (the spread itself), and the held rounds that moved nobody may be
/// at most half as many as those that did.
///
/// Once woken onto a, the worker is the scheduler's: where another task is queued on a before
/// it runs, the load balancing of the idle b may take it back (47 of 410 worker wake-ups in
/// the trace of listen.md's "How unpinned workers gather"), and in one round of 12 in CI's
/// run of 2026-12-07 the accept ran on b. So the test traces the workers' moves
/// (`sched:sched_migrate_task`, from the handshake on): a round that moved a worker onto a may
/// accept elsewhere only if the trace shows the worker that accepted moved onto a and then
/// off it, in at most a quarter of such rounds, and such rounds do not count towards
/// `PULLS`. Every round accepted on a must show its worker moved onto a (a check on the trace
/// itself).
pub fn gathered_waiters_spread(ctx: &mut Ctx) -> TestResult {
    /// Rounds with the workers gathered that moved one onto the handshake's CPU (and the
    /// scheduler did not move it off), to be seen.
    const PULLS: usize = 12;
    /// Rounds at most with `listen_pull=1`.
    const MAX_ROUNDS: usize = 40;
    /// Rounds with `listen_pull=0`, for the comparison printed.
    const STOCK_ROUNDS: usize = 16;
    /// The module's `SPREAD_MS`, plus a margin: one spread per CPU per period.
    const SPREAD_PERIOD: Duration = Duration::from_millis(120);
    /// What the rounds of one setting saw, of those with the workers gathered.
    #[derive(Default)]
    struct Seen {
        gathered: usize,
        local: usize,
        held: usize,
        stock: usize,
        /// Rounds that moved a worker onto a, at once or by the timer.
        pulled: usize,
        /// Of those, the timer's.
        timer: usize,
        /// Of those, accepted on a (the module's count).
        pulled_local: usize,
        /// Of those, accepted elsewhere by the worker moved onto a, which the scheduler then
        /// moved off a before it accepted (the trace).
        moved_off: usize,
        /// Rounds accepted on a whose worker the trace shows moved onto a.
        traced_local: usize,
        /// Held rounds that moved nobody.
        not_pulled: usize,
        rounds: Vec<String>,
    }
    let cpus = super::percpu::cpus(ctx)?;
    let (cpu_a, cpu_b) = (cpus[0], cpus[1]);
    ctx.ensure_loaded()?;
    let _enabled = KnobGuard::enabled("1")?;
    let _ports = KnobGuard::listen_ports("all")?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    pair.set_rps(&[])
        .context("turning RPS off on the server's veth end")?;
    // Enabled once for the whole test (the debug kernel has no jump labels: nothing is
    // patched), recording the workers' moves only.
    let mut trace =
        tracefs::Instance::create(&format!("fastsocket-spread-{}", std::process::id()), 64)?;
    trace.enable(MIGRATE, &format!("comm == \"{SPREAD_WORKER}\""))?;
    let trace = trace;
    let rounds = |label: &str, max: usize, pulls: usize| -> TestResult<Seen> {
        let mut seen = Seen::default();
        for round in 0..max {
            if seen.pulled - seen.moved_off >= pulls {
                break;
            }
            let (a, b) = if round % 2 == 0 {
                (cpu_a, cpu_b)
            } else {
                (cpu_b, cpu_a)
            };
            std::thread::sleep(SPREAD_PERIOD);
            let r = spread_round(&pair, &trace, &cpus, a, b)
                .context(format!("{label} round {round}"))?;
            let pulled = r.pulled_now + r.held_pulled > 0;
            let moved_off = pulled && !r.accepted_on_a && r.moved_off(a);
            if r.gathered {
                seen.gathered += 1;
                seen.local += usize::from(r.accepted_on_a);
                seen.held += usize::from(r.held > 0);
                seen.stock += usize::from(r.fallback > 0);
                seen.pulled += usize::from(pulled);
                seen.timer += usize::from(r.held_pulled > 0);
                seen.pulled_local += usize::from(pulled && r.accepted_on_a);
                seen.moved_off += usize::from(moved_off);
                seen.traced_local += usize::from(r.accepted_on_a && r.moved_onto(a));
                seen.not_pulled += usize::from(r.held > 0 && !pulled);
            }
            seen.rounds.push(format!(
                "{a}:{}{}",
                r.accepted_on,
                match (r.gathered, pulled) {
                    (false, _) => "(moved)",
                    (true, true) if moved_off => "(moved off it)",
                    (true, true) if r.held_pulled > 0 => "",
                    (true, true) => "(at once)",
                    (true, false) if r.held > 0 => "(held, not pulled)",
                    (true, false) => "(not held)",
                }
            ));
        }
        Ok(seen)
    };
    let spread = rounds("spread", MAX_ROUNDS, PULLS)?;
    let stock = {
        let _pull = KnobGuard::listen_pull("0")?;
        rounds("listen_pull=0", STOCK_ROUNDS, usize::MAX)?
    };
    info!(
        "handshake CPU:accept CPU (sched_getcpu()) per round, workers gathered on the other \
         CPU: {}; {} of {} rounds accepted on the handshake's CPU (the module's count), {} held \
         the wake-up, {} left it to the stock order; a worker was moved onto the handshake's \
         CPU in {} ({} by the timer), accepted there in {}, moved off it by the scheduler \
         before its accept in {}; {} held and moved nobody; the trace saw the worker move onto \
         the handshake's CPU in {} of the {} rounds accepted there",
        spread.rounds.join(" "),
        spread.local,
        spread.gathered,
        spread.held,
        spread.stock,
        spread.pulled,
        spread.timer,
        spread.pulled_local,
        spread.moved_off,
        spread.not_pulled,
        spread.traced_local,
        spread.local
    );
    info!(
        "with listen_pull=0: {}; {} of {} on the handshake's CPU",
        stock.rounds.join(" "),
        stock.local,
        stock.gathered
    );
    ensure!(
        spread.stock == 0,
        "{} of {} rounds with the workers gathered on another CPU left the wake-up to the stock \
         order",
        spread.stock,
        spread.gathered
    );
    ensure!(
        spread.traced_local == spread.local,
        "the trace shows no move onto the handshake's CPU in {} of the {} rounds accepted there \
         by a worker gathered on the other CPU",
        spread.local - spread.traced_local,
        spread.local
    );
    ensure!(
        spread.pulled_local + spread.moved_off == spread.pulled,
        "{} of {} rounds that moved a worker onto the handshake's CPU accepted elsewhere, the \
         worker not moved off it",
        spread.pulled - spread.pulled_local - spread.moved_off,
        spread.pulled
    );
    ensure!(
        spread.moved_off * 4 <= spread.pulled,
        "in {} of {} rounds that moved a worker onto the handshake's CPU, the scheduler moved it \
         off before it accepted",
        spread.moved_off,
        spread.pulled
    );
    ensure!(
        spread.pulled - spread.moved_off >= PULLS,
        "only {} of {} rounds ({} with both workers asleep on the CPU they were put on) moved a \
         worker onto the handshake's CPU that the scheduler left there, expected {PULLS}",
        spread.pulled - spread.moved_off,
        spread.rounds.len(),
        spread.gathered
    );
    ensure!(
        spread.timer * 2 >= spread.pulled,
        "only {} of the {} rounds that moved a worker were the held wake-up's timer",
        spread.timer,
        spread.pulled
    );
    ensure!(
        spread.not_pulled * 2 <= spread.pulled,
        "{} rounds held the wake-up and moved nobody, against {} that moved a worker",
        spread.not_pulled,
        spread.pulled
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::SpreadRound;

    fn round(moves: &[(u64, u64)]) -> SpreadRound {
        SpreadRound {
            gathered: true,
            accepted_on: 1,
            accepted_on_a: false,
            held: 1,
            fallback: 0,
            pulled_now: 0,
            held_pulled: 1,
            moves: moves.to_vec(),
        }
    }

    #[test]
    fn a_worker_moved_off_the_handshakes_cpu_only_after_it_was_moved_onto_it() {
        // Pulled onto 0, then moved back to 1 by the scheduler.
        let back = round(&[(1, 0), (0, 1)]);
        assert!(back.moved_onto(0) && back.moved_off(0));
        // Pulled and left there.
        let stayed = round(&[(1, 0)]);
        assert!(stayed.moved_onto(0) && !stayed.moved_off(0));
        // Never moved, or moved off 0 before it was ever moved onto it.
        for moves in [&[][..], &[(0, 1)], &[(0, 1), (1, 2)]] {
            let r = round(moves);
            assert!(!r.moved_onto(0) && !r.moved_off(0), "{moves:?}");
        }
        // Moved off 0 first, onto it later, and off again.
        let twice = round(&[(0, 1), (1, 0), (0, 1)]);
        assert!(twice.moved_onto(0) && twice.moved_off(0));
        // Onto 1 first, then off it: moved off 1 as well.
        assert!(twice.moved_onto(1) && twice.moved_off(1));
    }
}
