//! Accept latency under back-to-back load (no pacing: a worker is often busy when the next
//! handshake completes), with the module loaded against the module not loaded (stock) in
//! the same run, arms alternated. Only the documented bound is asserted, never a speed: a
//! connection kept for its CPU's worker is takeable at most `listen_hold_ms` after its hold
//! began (100 ms plus `listen_hold_ms` if that worker is gone, see Documentation/listen.md),
//! plus timer granularity; [`BOUND`] leaves a wide margin for the emulated guest.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::SeqCst;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{Context, Ctx, TestResult, ACCEPT_TIMEOUT};
use crate::client::{BurstClients, Timed};
use crate::module;
use crate::netns::{NetnsPair, ServerSide};
use crate::procfs::{self, CpuStats};
use crate::server::{self, AcceptServer, ServerOpts, BACKLOG, READ_TIMEOUT};
use crate::sys::{self, SharedWorkers};

/// Requests per arm and round.
const REQUESTS: usize = 300;
/// Client threads, each making requests back to back: one per CPU, and for skewed RPS
/// four per CPU, more than the handshakes' CPU's worker alone can serve.
const CLIENTS: usize = 2;
const SKEWED_CLIENTS_PER_CPU: usize = 4;
/// Rounds of (module, stock), the order alternating.
const ROUNDS: usize = 2;
/// `listen_hold_ms` of the module arms.
const HOLD_MS: &str = "5";
/// The most any connection may wait with the module (the documented bound is
/// `listen_hold_ms`, or 100 ms plus that for a dead worker; the rest is margin for TCG).
const BOUND: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arm {
    Module,
    Stock,
}

impl fmt::Display for Arm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arm::Module => "module",
            Arm::Stock => "stock (not loaded)",
        })
    }
}

/// The arms of round `round`: module first in even rounds, stock first in odd ones.
fn arms(round: usize) -> [Arm; 2] {
    if round.is_multiple_of(2) {
        [Arm::Module, Arm::Stock]
    } else {
        [Arm::Stock, Arm::Module]
    }
}

/// Loads the module with the test's knobs, or unloads it.
fn set_arm(ctx: &Ctx, arm: Arm) -> TestResult {
    match arm {
        Arm::Module => {
            ctx.ensure_loaded()?;
            for (knob, value) in [
                (procfs::ENABLED, "1"),
                (procfs::LISTEN_PORTS, "all"),
                (procfs::LISTEN_HOLD_MS, HOLD_MS),
            ] {
                procfs::write_knob(knob, value.as_bytes())
                    .context(format!("writing {value:?} to {knob}"))?;
            }
            Ok(())
        }
        Arm::Stock if module::is_loaded() => module::rmmod(),
        Arm::Stock => Ok(()),
    }
}

/// p50, p99 and max of some durations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spread {
    pub n: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Spread {
    pub fn of(mut samples: Vec<Duration>) -> Spread {
        samples.sort_unstable();
        let n = samples.len();
        // The smallest sample at or above the fraction `q` of the samples (nearest rank).
        let rank = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        if n == 0 {
            return Spread::default();
        }
        Spread {
            n,
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples[n - 1],
        }
    }
}

impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.n
        )
    }
}

/// What one arm measured.
#[derive(Default)]
struct Samples {
    /// From the client's connect() returning to the server's accept() returning.
    accept: Vec<Duration>,
    /// From the client's connect() returning to its reply.
    round_trip: Vec<Duration>,
    local: usize,
    /// Wake-up counters (module arms only).
    wakes: CpuStats,
}

impl Samples {
    fn add(&mut self, other: Samples) {
        self.accept.extend(other.accept);
        self.round_trip.extend(other.round_trip);
        self.local += other.local;
        let (a, b) = (&mut self.wakes, other.wakes);
        a.wake_local += b.wake_local;
        a.wake_pulled += b.wake_pulled;
        a.wake_fallback += b.wake_fallback;
        a.wake_held += b.wake_held;
    }
}

/// Fails unless every request was answered.
fn check_answered(done: &[Timed]) -> TestResult {
    let failed: Vec<String> = done
        .iter()
        .filter_map(|t| {
            t.reply
                .as_ref()
                .err()
                .map(|e| format!("port {}: {e}", t.local_port))
        })
        .collect();
    ensure!(
        failed.is_empty(),
        "{} of {} requests failed (a lost connection): {}",
        failed.len(),
        done.len(),
        failed
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(())
}

/// `count` back-to-back requests to `server`; pairs each with its accept by client port.
fn measure(
    pair: &NetnsPair,
    server: &AcceptServer,
    count: usize,
    clients: usize,
    arm: Arm,
) -> TestResult<Samples> {
    let before = (arm == Arm::Module)
        .then(procfs::read_counters)
        .transpose()?;
    let first = server.accepted();
    let done =
        BurstClients::start(pair.client_ns(), server.addr(), clients, Some(count))?.finish()?;
    check_answered(&done).context(arm)?;
    server
        .wait_for(first + count, ACCEPT_TIMEOUT)
        .context(arm)?;
    let wakes = match before {
        Some(before) => procfs::read_counters()?.since(&before)?.total(),
        None => CpuStats::default(),
    };
    let accepted = server.snapshot();
    let accepted = &accepted[first..];
    ensure!(
        accepted.len() == count,
        "{arm}: {count} requests answered, the server accepted {}",
        accepted.len()
    );
    let mut by_port: HashMap<u16, Vec<Instant>> = HashMap::new();
    for a in accepted {
        by_port.entry(a.peer_port).or_default().push(a.at);
    }
    let mut samples = Samples {
        local: server::count_local(accepted),
        wakes,
        ..Samples::default()
    };
    for t in &done {
        samples.round_trip.push(t.round_trip());
        // The accept of this client port nearest to the connect (ports may be reused).
        let nearest = by_port.get(&t.local_port).and_then(|ats| {
            ats.iter().copied().min_by_key(|&at| {
                if at > t.connected {
                    at - t.connected
                } else {
                    t.connected - at
                }
            })
        });
        let at = nearest
            .ok_or_else(|| format!("{arm}: no accept recorded for client port {}", t.local_port))?;
        // The accept may return before the client's connect() does: the client's ACK
        // reaches the listener before the client task is back in userspace.
        samples
            .accept
            .push(at.saturating_duration_since(t.connected));
    }
    Ok(samples)
}

/// Measures `server` under back-to-back load with the module and stock, alternating,
/// prints the figures and asserts the bound with the module.
fn compare(
    ctx: &Ctx,
    variant: &str,
    pair: &NetnsPair,
    server: &AcceptServer,
    clients: usize,
) -> TestResult {
    let mut module = Samples::default();
    let mut stock = Samples::default();
    for round in 0..ROUNDS {
        for arm in arms(round) {
            set_arm(ctx, arm)?;
            let samples = measure(pair, server, REQUESTS, clients, arm)?;
            match arm {
                Arm::Module => module.add(samples),
                Arm::Stock => stock.add(samples),
            }
        }
    }
    set_arm(ctx, Arm::Module)?;
    let total = REQUESTS * ROUNDS;
    let (m_accept, s_accept) = (Spread::of(module.accept), Spread::of(stock.accept));
    info!("accept latency {variant}, {clients} clients back to back, module: {m_accept}");
    info!("accept latency {variant}, {clients} clients back to back, stock:  {s_accept}");
    info!(
        "round trip {variant}, module: {}",
        Spread::of(module.round_trip)
    );
    info!(
        "round trip {variant}, stock:  {}",
        Spread::of(stock.round_trip)
    );
    info!(
        "locality {variant} back to back: module {:.1}%, stock {:.1}%",
        super::percent(module.local, total),
        super::percent(stock.local, total)
    );
    let w = module.wakes;
    info!(
        "wake-ups {variant} (module): {} local, {} pulled, {} fallback, {} held",
        w.wake_local, w.wake_pulled, w.wake_fallback, w.wake_held
    );
    ensure!(
        w.wake_held > 0,
        "{variant}: no wake-up was held with the module in {total} requests: the bound was \
         not exercised"
    );
    ensure!(
        m_accept.max < BOUND,
        "with the module a connection waited {:?} for its accept (bound {BOUND:?} with \
         listen_hold_ms={HOLD_MS}; stock max {:?})",
        m_accept.max,
        s_accept.max
    );
    Ok(())
}

/// (a) Blocking accept() workers pinned one per CPU, handshakes on every CPU.
pub fn accept_latency_pinned(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    let server = AcceptServer::start_with(&ServerOpts::pinned(pair.server_ip(false), &ctx.cpus))?;
    let clients = ctx.cpus.len().max(CLIENTS);
    let result = compare(ctx, "pinned", &pair, &server, clients);
    let stopped = server.stop();
    result?;
    stopped.map(|_| ())
}

/// (b) Every handshake on one CPU (the RPS mask of the receiving veth), blocking accept()
/// workers pinned one per CPU: the workers elsewhere get a connection only when the hold
/// lets them.
pub fn accept_latency_skewed_rps(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    let rx_cpu = ctx.cpus[0];
    pair.set_rps(&[rx_cpu]).context("setting the RPS mask")?;
    let server = AcceptServer::start_with(&ServerOpts::pinned(pair.server_ip(false), &ctx.cpus))?;
    let clients = SKEWED_CLIENTS_PER_CPU * ctx.cpus.len();
    let variant = format!("skewed-rps (handshakes on cpu {rx_cpu})");
    let result = compare(ctx, &variant, &pair, &server, clients);
    let stopped = server.stop();
    result?;
    stopped.map(|_| ())
}

/// How long worker A stays stalled (its CPU's wake-ups held) before it is killed.
const STALLED_BEFORE_KILL: Duration = Duration::from_millis(20);
/// How long the module arm waits for a first wake-up held for the stalled A before the
/// `STALLED_BEFORE_KILL` (A counts as present for `PRESENT_MS`, 100 ms, after its last accept).
const HELD_WITHIN: Duration = Duration::from_millis(100);
/// Load after the kill.
const AFTER_KILL: Duration = Duration::from_secs(1);
/// One client of the killed-worker scenario, so that B waits in `accept()` whenever a
/// handshake completes: a connection kept for the stalled A then withholds B's wake-up
/// (`wake_held`). With two, B is mostly serving the other client's connection by then, and
/// the stack's wake-up, which finds no waiter, counts as `wake_fallback` even though the
/// connection is kept for A all the same.
const KILLED_CLIENTS: usize = 1;
/// Attempts of a module arm of the killed-worker scenario to hold a wake-up for the stalled A.
const KILLED_TRIES: usize = 3;

/// What one arm of the killed-worker scenario measured.
struct Killed {
    /// Round trips of the requests that connected after A stalled.
    after_stall: Vec<Duration>,
    requests: usize,
    /// Wake-ups held after A stalled (module arms only).
    held_after_stall: u64,
}

/// Forked workers A (pinned to the handshakes' CPU) and B (another CPU) serve a back-to-back
/// client ([`KILLED_CLIENTS`]); A stalls (stops accepting, as if busy for good: its CPU's
/// wake-ups are held for it), is killed `STALLED_BEFORE_KILL` later, and B must serve every
/// connection.
fn killed_arm(pair: &NetnsPair, cpus: &[usize], arm: Arm) -> TestResult<Killed> {
    let (a_cpu, b_cpu) = (cpus[cpus.len() - 1], cpus[0]);
    pair.set_rps(&[a_cpu]).context("setting the RPS mask")?;
    let bind = SocketAddr::new(pair.server_ip(false), 0);
    let listener = sys::tcp_listen(bind, BACKLOG, false).context(format!("listening on {bind}"))?;
    let addr = listener.local_addr().context("local_addr")?;
    let shared = SharedWorkers::new(2).context("shared memory")?;
    let (a, b) = (&shared.get()[0], &shared.get()[1]);
    let mut victim =
        sys::fork_accept_worker(&listener, a_cpu, b'A', READ_TIMEOUT, a).context("fork")?;
    let _other =
        sys::fork_accept_worker(&listener, b_cpu, b'B', READ_TIMEOUT, b).context("fork")?;
    let clients = BurstClients::start(pair.client_ns(), addr, KILLED_CLIENTS, None)?;

    let wait = |what: &str, done: &dyn Fn() -> bool| -> TestResult {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            ensure!(Instant::now() < deadline, "{arm}: {what} within 30 s");
            thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    };
    wait("worker A did not serve 3 connections", &|| {
        a.served.load(SeqCst) >= 3
    })?;
    a.stall_after.store(a.served.load(SeqCst) + 1, SeqCst);
    wait("worker A did not stall", &|| a.stalled.load(SeqCst) != 0)?;
    let stalled_at = Instant::now();
    let counters = (arm == Arm::Module)
        .then(procfs::read_counters)
        .transpose()?;
    // With the module, A is killed once a wake-up was held for it (the scenario under test),
    // or after `HELD_WITHIN` if none was: on a slow host the clients' next handshake on A's
    // CPU may take longer than `STALLED_BEFORE_KILL` (the caller then runs the arm again).
    if let Some(before) = &counters {
        let deadline = stalled_at + HELD_WITHIN;
        while procfs::read_counters()?.since(before)?.total().wake_held == 0
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(2));
        }
    }
    thread::sleep(STALLED_BEFORE_KILL);
    victim.signal(Signal::SIGKILL).context("killing worker A")?;
    victim
        .wait_timeout(Duration::from_secs(10))
        .context("waitpid")?
        .ok_or("worker A did not die within 10 s of SIGKILL")?;
    thread::sleep(AFTER_KILL);
    let done = clients.stop()?;

    let held_after_stall = match counters {
        Some(before) => procfs::read_counters()?.since(&before)?.total().wake_held,
        None => 0,
    };
    check_answered(&done).context(arm)?;
    let served = (a.served.load(SeqCst), b.served.load(SeqCst));
    ensure!(
        served.0 + served.1 == done.len() as u64,
        "{arm}: the workers served {} and {}, the clients got {} answers",
        served.0,
        served.1,
        done.len()
    );
    for (name, w) in [("A", a), ("B", b)] {
        let errors = w.errors.load(SeqCst);
        ensure!(
            errors == 0,
            "{arm}: worker {name} had {errors} errors, the last: {}",
            std::io::Error::from_raw_os_error(w.last_errno.load(SeqCst) as i32)
        );
    }
    Ok(Killed {
        after_stall: done
            .iter()
            .filter(|t| t.connected >= stalled_at)
            .map(Timed::round_trip)
            .collect(),
        requests: done.len(),
        held_after_stall,
    })
}

/// (c) A worker dies while a wake-up is held for its CPU: the others serve its connections
/// within the bound.
///
/// The module holds for A only while A counts as present (`PRESENT_MS`, 100 ms after its last
/// accept), and the first holds often come before the runner has seen A stall: a module arm
/// in which no wake-up was held for the stalled A did not test anything, so it is run again,
/// up to [`KILLED_TRIES`] times. Every attempt's requests count (all answered, within
/// [`BOUND`]); the test fails if a round's module arm never held a wake-up for A.
pub fn accept_latency_worker_killed(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    let mut module = (Vec::new(), 0);
    let mut stock = (Vec::new(), 0);
    let (mut held, mut tries) = (0, 0);
    for round in 0..ROUNDS {
        for arm in arms(round) {
            let into = match arm {
                Arm::Module => &mut module,
                Arm::Stock => &mut stock,
            };
            for attempt in 1..=KILLED_TRIES {
                set_arm(ctx, arm)?;
                let killed = killed_arm(&pair, &ctx.cpus, arm)?;
                into.0.extend(killed.after_stall);
                into.1 += killed.requests;
                if arm == Arm::Stock {
                    break;
                }
                tries += 1;
                held += killed.held_after_stall;
                if killed.held_after_stall > 0 {
                    break;
                }
                ensure!(
                    attempt < KILLED_TRIES,
                    "round {round}: in {KILLED_TRIES} attempts no wake-up was held for worker A \
                     after it stalled: the scenario did not exercise the hold"
                );
                info!("round {round}: no wake-up was held for the stalled worker A, again");
            }
        }
    }
    set_arm(ctx, Arm::Module)?;
    let (m, s) = (Spread::of(module.0), Spread::of(stock.0));
    info!(
        "round trip after worker A stalled (killed {STALLED_BEFORE_KILL:?} later), module: {m} of {} requests",
        module.1
    );
    info!(
        "round trip after worker A stalled (killed {STALLED_BEFORE_KILL:?} later), stock:  {s} of {} requests",
        stock.1
    );
    info!("wake-ups held after worker A stalled (module): {held} in {tries} module arms");
    ensure!(
        m.max < BOUND,
        "with the module a request waited {:?} after worker A stalled (bound {BOUND:?} with \
         listen_hold_ms={HOLD_MS}; stock max {:?})",
        m.max,
        s.max
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads() {
        let ms = Duration::from_millis;
        let s = Spread::of((1..=100).rev().map(ms).collect());
        assert_eq!((s.n, s.p50, s.p99, s.max), (100, ms(50), ms(99), ms(100)));
        let s = Spread::of(vec![ms(3)]);
        assert_eq!((s.p50, s.p99, s.max), (ms(3), ms(3), ms(3)));
        assert_eq!(Spread::of(Vec::new()), Spread::default());
        assert!(Spread::of(vec![ms(1), ms(2)])
            .to_string()
            .contains("max 2.00 ms (n=2)"));
    }

    /// Needs root and iproute2: `sudo cargo test -- --ignored`. Stock arms only (no module).
    #[test]
    #[ignore = "needs root and iproute2"]
    fn measures_stock_arms() {
        let cpus = procfs::online_cpus().unwrap();
        let n = (150..175).find(|&n| !NetnsPair::in_use(n)).unwrap();
        let pair = NetnsPair::create(n, ServerSide::Current, &cpus).unwrap();
        let server =
            AcceptServer::start_with(&ServerOpts::pinned(pair.server_ip(false), &cpus)).unwrap();
        let samples = measure(&pair, &server, 200, 2, Arm::Stock).unwrap();
        assert_eq!(samples.accept.len(), 200);
        eprintln!("accept {}", Spread::of(samples.accept));
        eprintln!("round trip {}", Spread::of(samples.round_trip));
        server.stop().unwrap();
        let killed = killed_arm(&pair, &cpus, Arm::Stock).unwrap();
        eprintln!(
            "killed: {} of {} requests",
            Spread::of(killed.after_stall),
            killed.requests
        );
    }

    #[test]
    fn arms_alternate() {
        assert_eq!(arms(0), [Arm::Module, Arm::Stock]);
        assert_eq!(arms(1), [Arm::Stock, Arm::Module]);
    }
}
