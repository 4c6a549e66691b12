//! The listener's one accept queue as the stack reports it: `ss` Recv-Q and Send-Q, and the
//! TcpExt overflow counters, with the module on and with it off.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::socket::SockFlag;

use super::{in_ns, Context, Ctx, KnobGuard, TestResult};
use crate::netns::{self, NetnsPair, ServerSide};
use crate::{procfs, sys};

/// The backlog passed to listen().
const BACKLOG: u32 = 8;
/// `sk_acceptq_is_full()` is `ack_backlog > max_ack_backlog`: one more than the backlog fits,
/// plus, in stock Linux too, one per other CPU completing a handshake at the same moment (the
/// check and the enqueue are not atomic). The guest has 2 vCPUs.
const QUEUE_LIMIT: u32 = BACKLOG + 2;
/// Connections made (and never accepted) before the burst.
const FIRST: u32 = 4;
/// Parallel connection attempts of the burst.
const BURST: usize = 20;
/// Connect timeout of a burst attempt: a dropped SYN is retried once after 1 s.
const BURST_CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Connect timeout of the first connections, which the queue has room for.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the queue may take to show connections the client already sees connected,
/// and how long accepting the queued connections may take.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two `ss` samples during the burst.
const SAMPLE_PAUSE: Duration = Duration::from_millis(20);
/// Pause between two samples of /proc/net/tcp during the burst.
const PROC_SAMPLE_PAUSE: Duration = Duration::from_millis(2);
/// Final ACKs still in flight when the burst's attempts have ended.
const AFTER_BURST_PAUSE: Duration = Duration::from_millis(200);
/// TcpExt counters of connections refused for a full accept queue.
const OVERFLOW_COUNTERS: [&str; 2] = ["ListenOverflows", "ListenDrops"];

/// Recv-Q and Send-Q of a listening socket as `ss -ltn` shows them: the accept queue's
/// length and the listener's backlog (0 where ss reads /proc/net/tcp, without sock_diag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ListenQueue {
    recv_q: u32,
    send_q: u32,
}

/// Finds the one listener on `port` in `ss -ltnH` output.
fn parse_ss_listen(text: &str, port: u16) -> Result<ListenQueue, String> {
    let suffix = format!(":{port}");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.len() >= 4 && fields[3].ends_with(&suffix))
        .collect();
    let [row] = rows.as_slice() else {
        return Err(format!(
            "expected one socket on port {port}, found {}: {text:?}",
            rows.len()
        ));
    };
    if row[0] != "LISTEN" {
        return Err(format!("the socket on port {port} is in state {}", row[0]));
    }
    let number = |i: usize, what: &str| {
        row[i]
            .parse::<u32>()
            .map_err(|e| format!("bad {what} {:?}: {e}", row[i]))
    };
    Ok(ListenQueue {
        recv_q: number(1, "Recv-Q")?,
        send_q: number(2, "Send-Q")?,
    })
}

/// `ss -ltnH sport = :<port>` in namespace `ns` (the runner's if `None`).
fn ss_listen(ns: Option<&str>, port: u16) -> TestResult<ListenQueue> {
    let filter = format!(":{port}");
    let ss_args = ["-ltnH", "sport", "=", filter.as_str()];
    let mut cmd = match ns {
        None => Command::new("ss"),
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, "ss"]);
            cmd
        }
    };
    cmd.args(ss_args);
    let out = cmd.output().context(format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    parse_ss_listen(&String::from_utf8_lossy(&out.stdout), port).context(format!("{cmd:?}"))
}

/// Polls `ss` until the queue of the listener on `port` holds at least `want` connections
/// or [`SETTLE_TIMEOUT`] passes; returns the last sample.
fn wait_recv_q(ns: Option<&str>, port: u16, want: u32) -> TestResult<ListenQueue> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let queue = ss_listen(ns, port)?;
        if queue.recv_q >= want || Instant::now() > deadline {
            return Ok(queue);
        }
        thread::sleep(SAMPLE_PAUSE);
    }
}

/// TcpExt ListenOverflows and ListenDrops of namespace `ns` (the runner's if `None`).
fn overflow_counters(ns: Option<&str>) -> TestResult<[u64; 2]> {
    let read = || procfs::read_netstat("TcpExt", &OVERFLOW_COUNTERS);
    let values = match ns {
        None => read()?,
        Some(ns) => in_ns(ns, read)?,
    };
    Ok([values[0], values[1]])
}

/// The longest queue seen in a number of samples.
#[derive(Clone, Copy, Debug, Default)]
struct Sampled {
    peak: u32,
    samples: usize,
}

impl Sampled {
    fn add(&mut self, queue: u32) {
        self.peak = self.peak.max(queue);
        self.samples += 1;
    }
}

/// Samples the queue with `ss` until every thread of `attempts` has ended, and once more.
fn sample_ss<T>(ns: Option<&str>, port: u16, attempts: &[JoinHandle<T>]) -> TestResult<Sampled> {
    let mut sampled = Sampled::default();
    loop {
        let done = attempts.iter().all(JoinHandle::is_finished);
        sampled.add(ss_listen(ns, port)?.recv_q);
        if done {
            return Ok(sampled);
        }
        thread::sleep(SAMPLE_PAUSE);
    }
}

/// Samples the queue in the calling thread's /proc/net/tcp (what `ss` shows without
/// sock_diag, much faster than running it) until `stop` is set.
fn sample_proc(port: u16, stop: &AtomicBool) -> TestResult<Sampled> {
    let mut sampled = Sampled::default();
    while !stop.load(Ordering::SeqCst) {
        sampled.add(procfs::read_tcp_listen_queue(port)?);
        thread::sleep(PROC_SAMPLE_PAUSE);
    }
    Ok(sampled)
}

/// Accepts `count` connections from the non-blocking `listener`.
fn accept_queued(listener: &TcpListener, count: u32) -> TestResult<Vec<TcpStream>> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut accepted = Vec::new();
    while accepted.len() < count as usize {
        ensure!(
            Instant::now() < deadline,
            "accepted only {} of the {count} queued connections within {SETTLE_TIMEOUT:?}",
            accepted.len()
        );
        ensure!(
            sys::poll_readable_until(listener, deadline).context("poll on the listener")?,
            "accepted {} of the {count} queued connections, then poll on the listener was not \
             woken within {SETTLE_TIMEOUT:?}: a lost wake-up",
            accepted.len()
        );
        while accepted.len() < count as usize {
            match sys::accept4(listener, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
                Ok(conn) => accepted.push(conn),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("accept4: {e}")),
            }
        }
    }
    Ok(accepted)
}

/// What one run of [`queue_experiment`] saw.
#[derive(Debug)]
struct Run {
    /// The queue after the first connections.
    first: ListenQueue,
    /// The longest queue seen by `ss` from the first connections on.
    peak: u32,
    /// `ss` samples taken during the burst (besides many faster ones of /proc/net/tcp).
    samples: usize,
    /// The queue once the burst was over.
    after: u32,
    /// Burst attempts that connected and that timed out.
    connected: usize,
    timed_out: usize,
    /// Other failures of burst attempts.
    errors: Vec<String>,
    /// Increase of ListenOverflows and ListenDrops over the burst.
    overflows: u64,
    drops: u64,
    /// Connections accepted at the end.
    accepted: usize,
}

/// Checks that the `queued` column of the module's counters in `ns` adds up to `expected`.
fn check_queued(ns: Option<&str>, label: &str, expected: u32) -> TestResult {
    let counters = match ns {
        None => procfs::read_counters(),
        Some(ns) => in_ns(ns, procfs::read_counters),
    }?;
    let total = counters.total().queued;
    let per_cpu = counters
        .per_cpu
        .iter()
        .map(|(cpu, stats)| format!("cpu{cpu} {}", stats.queued))
        .collect::<Vec<_>>();
    info!("{label}: {} queued {per_cpu:?}", procfs::COUNTERS);
    ensure!(
        total == u64::from(expected),
        "{label}: {} shows {total} queued ({per_cpu:?}), expected {expected}",
        procfs::COUNTERS
    );
    Ok(())
}

/// Listens with backlog [`BACKLOG`] and never accepts; connects [`FIRST`] times, then
/// checks the module's per-CPU `queued` figures add up to them (`on`: the module counts this
/// listener), then tries [`BURST`] more connections at once, sampling the queue with `ss`
/// throughout;
/// finally accepts every queued connection.
fn queue_experiment(pair: &NetnsPair, label: &str, on: bool) -> TestResult<Run> {
    let ns = pair.server_ns();
    let bind = SocketAddr::new(pair.server_ip(false), 0);
    let listen = || sys::tcp_listen(bind, BACKLOG as i32, false);
    let listener = match ns {
        None => listen(),
        Some(ns) => netns::run_in(ns, listen).and_then(|r| r),
    }
    .context(format!("listening on {bind} with backlog {BACKLOG}"))?;
    let addr = listener.local_addr().context("local_addr")?;
    let port = addr.port();

    // The kernel completes these handshakes on its own; nobody accepts them.
    let first_conns = netns::run_in(pair.client_ns(), || {
        (0..FIRST)
            .map(|_| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT))
            .collect::<io::Result<Vec<_>>>()
    })
    .and_then(|r| r)
    .context(format!("{label}: connecting {FIRST} times to {addr}"))?;
    let first = wait_recv_q(ns, port, FIRST)?;
    info!(
        "{label}: Recv-Q {} Send-Q {} after {FIRST} connections to {addr}",
        first.recv_q, first.send_q
    );
    ensure!(
        first.recv_q == FIRST,
        "{label}: after {FIRST} connections ss shows Recv-Q {}, expected {FIRST}",
        first.recv_q
    );
    // The module's per-CPU queue lengths add up to the same queue (0 where it is off). The
    // host-side experiment runs without the module.
    if crate::module::is_loaded() {
        check_queued(ns, label, if on { FIRST } else { 0 })?;
    }
    // For a listener, ss (over sock_diag) shows the backlog as Send-Q.
    ensure!(
        first.send_q == BACKLOG,
        "{label}: ss shows Send-Q {}, expected the backlog {BACKLOG}",
        first.send_q
    );

    let before = overflow_counters(ns)?;
    let attempts = (0..BURST)
        .map(|_| {
            netns::spawn_in(pair.client_ns(), move || {
                TcpStream::connect_timeout(&addr, BURST_CONNECT_TIMEOUT)
            })
        })
        .collect::<io::Result<Vec<JoinHandle<_>>>>()
        .context("starting the connection burst")?;
    let stop = AtomicBool::new(false);
    let (ss_sampled, proc_sampled) = thread::scope(|scope| {
        let sampler = scope.spawn(|| match ns {
            None => sample_proc(port, &stop),
            Some(ns) => in_ns(ns, || sample_proc(port, &stop)),
        });
        let ss_sampled = sample_ss(ns, port, &attempts);
        stop.store(true, Ordering::SeqCst);
        let proc_sampled = sampler
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        TestResult::Ok((ss_sampled?, proc_sampled?))
    })?;
    let mut burst_conns = Vec::new();
    let (mut timed_out, mut errors) = (0, Vec::new());
    for attempt in attempts {
        match attempt.join() {
            Ok(Ok(Ok(conn))) => burst_conns.push(conn),
            Ok(Ok(Err(e))) if e.kind() == io::ErrorKind::TimedOut => timed_out += 1,
            Ok(Ok(Err(e))) => errors.push(e.to_string()),
            Ok(Err(e)) => return Err(format!("entering {}: {e}", pair.client_ns())),
            Err(_) => return Err("a connecting thread panicked".into()),
        }
    }
    thread::sleep(AFTER_BURST_PAUSE);
    let after = ss_listen(ns, port)?.recv_q;
    let peak = ss_sampled.peak.max(proc_sampled.peak).max(after);
    let later = overflow_counters(ns)?;
    let delta = |i: usize| {
        later[i].checked_sub(before[i]).ok_or_else(|| {
            format!(
                "{} went down from {} to {}",
                OVERFLOW_COUNTERS[i], before[i], later[i]
            )
        })
    };
    let (overflows, drops) = (delta(0)?, delta(1)?);
    info!(
        "{label}: burst of {BURST}: {} connected, {timed_out} timed out, {} other errors {errors:?}; \
         Recv-Q peak {} over {} ss samples, {} over {} samples of /proc/net/tcp, {after} after; ListenOverflows +{overflows}, ListenDrops +{drops}",
        burst_conns.len(),
        errors.len(),
        ss_sampled.peak,
        ss_sampled.samples,
        proc_sampled.peak,
        proc_sampled.samples
    );

    listener
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    let accepted = accept_queued(&listener, after).context(label)?.len();
    info!("{label}: accepted {accepted} queued connections");
    // Closes the client ends, then the listener (and with it what it still queues).
    let connected = burst_conns.len();
    drop((first_conns, burst_conns, listener));
    Ok(Run {
        first,
        peak,
        samples: ss_sampled.samples,
        after,
        connected,
        timed_out,
        errors,
        overflows,
        drops,
        accepted,
    })
}

pub fn ss_queue_length_and_backlog(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    let module = {
        let _enabled = KnobGuard::enabled("1")?;
        let _ports = KnobGuard::listen_ports("all")?;
        queue_experiment(&pair, "module on", true)?
    };
    let stock = super::percpu::stock(ctx, || {
        queue_experiment(&pair, "stock (module not loaded)", false)
    })?;
    info!(
        "Recv-Q after the burst: module {}, stock {} (limit {QUEUE_LIMIT}); ListenOverflows +{} / +{}, ListenDrops +{} / +{}",
        module.after, stock.after, module.overflows, stock.overflows, module.drops, stock.drops
    );
    for (label, run) in [("module on", &module), ("stock", &stock)] {
        ensure!(
            run.peak <= QUEUE_LIMIT,
            "{label}: ss showed Recv-Q {} with backlog {BACKLOG}, at most {QUEUE_LIMIT} fit ({run:?})",
            run.peak
        );
        ensure!(
            run.overflows > 0,
            "{label}: {BURST} connection attempts on a listener with {} of {QUEUE_LIMIT} queued did not raise ListenOverflows ({run:?})",
            run.first.recv_q
        );
        ensure!(
            run.after >= run.first.recv_q && run.accepted == run.after as usize,
            "{label}: queue {} after the burst, {} accepted ({run:?})",
            run.after,
            run.accepted
        );
        ensure!(
            run.samples > 0 && run.connected + run.timed_out + run.errors.len() == BURST,
            "{label}: {BURST} attempts, {} connected, {} timed out, {} failed otherwise",
            run.connected,
            run.timed_out,
            run.errors.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the module (stock queueing). Needs root, iproute2 and ss:
    /// `sudo cargo test -- --ignored`.
    #[test]
    #[ignore = "needs root, iproute2 and ss"]
    fn fills_the_queue_to_the_backlog_plus_one() {
        let cpus = procfs::online_cpus().unwrap();
        let n = (150..175).find(|&n| !NetnsPair::in_use(n)).unwrap();
        for side in [ServerSide::Current, ServerSide::Named] {
            let pair = NetnsPair::create(n, side, &cpus).unwrap();
            let run = queue_experiment(&pair, &format!("{side:?}"), false).unwrap();
            eprintln!("{side:?}: {run:?}");
            assert_eq!(run.first.recv_q, FIRST);
            assert!(run.peak <= QUEUE_LIMIT, "{run:?}");
            assert!(run.overflows > 0, "{run:?}");
            assert_eq!(run.accepted, run.after as usize);
        }
    }

    #[test]
    fn parses_ss_listeners() {
        let text = "LISTEN 4      8          10.77.1.1:40000      0.0.0.0:*\n";
        assert_eq!(
            parse_ss_listen(text, 40000).unwrap(),
            ListenQueue {
                recv_q: 4,
                send_q: 8
            }
        );
        let v6 = "LISTEN 0 511 [fd77:1::1]:8080 [::]:*\n";
        assert_eq!(parse_ss_listen(v6, 8080).unwrap().send_q, 511);
        assert!(parse_ss_listen(text, 4000).is_err(), "another port");
        assert!(parse_ss_listen("", 40000).is_err());
        assert!(parse_ss_listen(&format!("{text}{text}"), 40000).is_err());
        assert!(parse_ss_listen("ESTAB 0 0 10.77.1.1:40000 10.77.1.2:5\n", 40000).is_err());
        assert!(parse_ss_listen("LISTEN x 8 10.77.1.1:40000 0.0.0.0:*\n", 40000).is_err());
    }
}
