//! Worker processes sharing one listener (fork after listen), disappearing under load.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering::SeqCst;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{Context, Ctx, KnobGuard, TestResult};
use crate::client::{LoopClient, LoopStats};
use crate::netns::{NetnsPair, ServerSide};
use crate::procfs;
use crate::server::{BACKLOG, READ_TIMEOUT};
use crate::sys::{self, ChildProcess, SharedWorkers};

/// Reply bytes of worker A (pinned to the first CPU) and B (the second).
const REPLIES: [u8; 2] = [b'A', b'B'];
/// How often the runner interrupts worker A's accept() (SIGUSR1) until it has seen the
/// close request.
const CLOSE_SIGNAL_PERIOD: Duration = Duration::from_millis(20);
/// Load before and after the event.
const BEFORE: Duration = Duration::from_secs(1);
const AFTER: Duration = Duration::from_secs(2);
/// At least this many requests must be answered after the event.
const MIN_AFTER: usize = 5;

struct Workers {
    listener: TcpListener,
    shared: SharedWorkers,
    children: Vec<Option<ChildProcess>>,
}

impl Workers {
    /// Listens on `ip` and forks worker A pinned to `cpus[0]` and B pinned to `cpus[1]`.
    fn start(ip: std::net::IpAddr, cpus: &[usize]) -> TestResult<Workers> {
        let bind = SocketAddr::new(ip, 0);
        let listener =
            sys::tcp_listen(bind, BACKLOG, false).context(format!("listening on {bind}"))?;
        let shared = SharedWorkers::new(REPLIES.len()).context("shared memory")?;
        let mut children = Vec::new();
        for (i, &reply) in REPLIES.iter().enumerate() {
            let cpu = cpus[i % cpus.len()];
            let child =
                sys::fork_accept_worker(&listener, cpu, reply, READ_TIMEOUT, &shared.get()[i])
                    .context("fork")?;
            children.push(Some(child));
        }
        Ok(Workers {
            listener,
            shared,
            children,
        })
    }

    fn addr(&self) -> TestResult<SocketAddr> {
        self.listener.local_addr().context("local_addr")
    }

    fn served(&self, i: usize) -> usize {
        self.shared.get()[i].served.load(SeqCst) as usize
    }

    /// Fails if a worker counted errors.
    fn check_errors(&self) -> TestResult {
        for (i, shared) in self.shared.get().iter().enumerate() {
            let errors = shared.errors.load(SeqCst);
            ensure!(
                errors == 0,
                "worker {} had {errors} errors, the last: {}",
                REPLIES[i] as char,
                std::io::Error::from_raw_os_error(shared.last_errno.load(SeqCst) as i32)
            );
        }
        Ok(())
    }

    /// Fails if a worker still in `children` has died.
    fn check_alive(&mut self) -> TestResult {
        for (i, child) in self.children.iter_mut().enumerate() {
            let Some(child) = child else { continue };
            if let Some(status) = child.wait_timeout(Duration::ZERO).context("waitpid")? {
                return Err(format!(
                    "worker {} ended: {}",
                    REPLIES[i] as char,
                    sys::describe_wait_status(status)
                ));
            }
        }
        Ok(())
    }
}

/// Fails unless every request of the load was answered without error, and enough of them
/// after the event at `at_event` connections.
fn check_load(stats: &LoopStats, at_event: usize, event: &str) -> TestResult {
    info!(
        "{} requests, {} answered ({} after {event}), replies {:?}",
        stats.connected,
        stats.answered(),
        stats.connected.saturating_sub(at_event),
        stats
            .replies
            .iter()
            .map(|(&r, &n)| format!("{}: {n}", r as char))
            .collect::<Vec<_>>()
    );
    stats.check_all_answered()?;
    ensure!(
        stats.connected >= at_event + MIN_AFTER,
        "only {} requests after {event}",
        stats.connected.saturating_sub(at_event)
    );
    Ok(())
}

/// Waits until `client` has made `count` connections.
fn wait_connected(client: &LoopClient, count: usize) -> TestResult {
    let deadline = Instant::now() + super::ACCEPT_TIMEOUT;
    while client.connected() < count {
        ensure!(
            Instant::now() < deadline,
            "the client made only {} connections in {:?}",
            client.connected(),
            super::ACCEPT_TIMEOUT
        );
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Runs `scenario` with the module on and prints the wake-up counters' increase.
fn with_module(ctx: &mut Ctx, scenario: fn(&NetnsPair, &[usize]) -> TestResult) -> TestResult {
    ctx.ensure_loaded()?;
    let _enabled = KnobGuard::enabled("1")?;
    let _ports = KnobGuard::listen_ports("all")?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    let before = procfs::read_counters()?;
    scenario(&pair, &ctx.cpus)?;
    let delta = procfs::read_counters()?.since(&before)?.total();
    info!(
        "accepts {} ({} local), wake-ups {} local, {} fallback, {} held",
        delta.accepts, delta.local, delta.wake_local, delta.wake_fallback, delta.wake_held
    );
    Ok(())
}

pub fn worker_killed_under_load(ctx: &mut Ctx) -> TestResult {
    with_module(ctx, kill_one_under_load)
}

pub fn listener_closed_by_one_sharer(ctx: &mut Ctx) -> TestResult {
    with_module(ctx, close_in_one_under_load)
}

/// Worker A is killed (SIGKILL) under load; B must serve every later request.
fn kill_one_under_load(pair: &NetnsPair, cpus: &[usize]) -> TestResult {
    let mut workers = Workers::start(pair.server_ip(false), cpus)?;
    let client = LoopClient::start(pair.client_ns(), workers.addr()?)?;
    thread::sleep(BEFORE);
    wait_connected(&client, 1)?;

    // Killed between two requests of the client, so that no request is in flight in the
    // victim: any error afterwards is a connection the listener lost or never woke for.
    let mut victim = workers.children[0].take().ok_or("worker A missing")?;
    let ended = client.run_between(move || {
        victim.signal(Signal::SIGKILL)?;
        victim.wait_timeout(Duration::from_secs(10))
    })?;
    let killed_at = Instant::now();
    let status = ended
        .context("killing worker A")?
        .ok_or("worker A did not die within 10 s of SIGKILL")?;
    let connected_at_kill = client.connected();
    let served_a = workers.served(0);
    thread::sleep(AFTER.saturating_sub(killed_at.elapsed()));
    let stats = client.stop()?;

    info!(
        "worker A ({}) served {served_a}, worker B served {}",
        sys::describe_wait_status(status),
        workers.served(1)
    );
    check_load(&stats, connected_at_kill, "the kill")?;
    ensure!(
        served_a + workers.served(1) == stats.answered(),
        "the workers served {} and {}, the client got {} answers",
        served_a,
        workers.served(1),
        stats.answered()
    );
    workers.check_errors()?;
    workers.check_alive()
}

/// Worker A closes its listener fd under load and stays alive without accepting; B must
/// serve every later request.
fn close_in_one_under_load(pair: &NetnsPair, cpus: &[usize]) -> TestResult {
    let mut workers = Workers::start(pair.server_ip(false), cpus)?;
    let client = LoopClient::start(pair.client_ns(), workers.addr()?)?;
    thread::sleep(BEFORE);
    wait_connected(&client, 1)?;

    let a = &workers.shared.get()[0];
    let a_process = workers.children[0].as_ref().ok_or("worker A missing")?;
    a.close_request.store(1, SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    // The signal interrupts A's accept(); sent until A saw the request, as it may arrive
    // between A's look at the request and its accept().
    while a.closed.load(SeqCst) == 0 {
        ensure!(
            Instant::now() < deadline,
            "worker A did not close its listener within 10 s"
        );
        a_process.signal(Signal::SIGUSR1).context("SIGUSR1")?;
        thread::sleep(CLOSE_SIGNAL_PERIOD);
    }
    let connected_at_close = client.connected();
    let served_a = workers.served(0);
    thread::sleep(AFTER);
    let stats = client.stop()?;

    info!(
        "worker A served {served_a} before closing its listener fd, worker B served {}",
        workers.served(1)
    );
    check_load(&stats, connected_at_close, "the close")?;
    ensure!(
        workers.served(0) == served_a,
        "worker A served {} more after closing its listener fd",
        workers.served(0) - served_a
    );
    ensure!(
        workers.served(0) + workers.served(1) == stats.answered(),
        "the workers served {} and {}, the client got {} answers",
        workers.served(0),
        workers.served(1),
        stats.answered()
    );
    workers.check_errors()?;
    workers.check_alive()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root and iproute2: `sudo cargo test -- --ignored`.
    #[test]
    #[ignore = "needs root and iproute2"]
    fn workers_survive_a_kill_and_a_close() {
        let cpus = procfs::online_cpus().unwrap();
        let n = (175..200).find(|&n| !NetnsPair::in_use(n)).unwrap();
        let pair = NetnsPair::create(n, ServerSide::Current, &cpus).unwrap();
        kill_one_under_load(&pair, &cpus).unwrap();
        close_in_one_under_load(&pair, &cpus).unwrap();
    }
}
