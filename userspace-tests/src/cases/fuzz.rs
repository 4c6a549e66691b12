//! Hardening (issue 11): Debian's syscall fuzzers and a load/unload soak, on the debug kernel
//! with the module loaded and every feature on, while unchanged nginx serves wrk.
//!
//! - `fuzz_trinity`: trinity as nobody, restricted to the networking syscalls and to
//!   `PF_INET`, then `PF_INET6` sockets;
//! - `fuzz_stress_ng`: stress-ng's socket stressors (TCP listen/accept/connect, epoll,
//!   socket abuse, descriptor passing, sock_diag), IPv4 then IPv6;
//! - `soak_load_unload`: cycles of insmod, knobs on, `enabled=0`, rmmod under continuous
//!   load, with the kernel's slab, per-CPU and vmalloc memory measured across the cycles.
//!
//! Every run is bounded by a count (syscalls, bogo operations, connections); a time limit
//! only turns a hang into a failure. Pass: no splat (the runner's kernel log check adds
//! kmemleak), wrk saw no error while the fuzzers ran, a final wrk run has no error and the
//! module still unloads. `make soak` (scripts/soak.sh) runs the same tests for longer:
//! [`SOAK_MINUTES`] of fuzzing, split between the two fuzzers, and [`SOAK_CYCLES`] cycles.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use procfs_core::{FromRead, Meminfo};

use super::apps::{
    check_body, start_haproxy, start_nginx, wrk_until, Daemon, Listener, Load, WorkDir,
    FUZZ_WRK_TIMEOUT, WRK_TIMEOUT,
};
use super::log::KernelWatch;
use super::{Context, Ctx, TestResult, ACCEPT_TIMEOUT};
use crate::client::LoopClient;
use crate::netns::{NetnsPair, ServerSide};
use crate::server::AcceptServer;
use crate::{module, procfs};

/// Environment variable: minutes of fuzzing in all (half trinity, half stress-ng) instead
/// of the CI slice's counts.
pub const SOAK_MINUTES: &str = "FASTSOCKET_SOAK_MINUTES";
/// Environment variable: load/unload cycles instead of [`CI_CYCLES`].
pub const SOAK_CYCLES: &str = "FASTSOCKET_SOAK_CYCLES";

/// The tests' watchdog limit: generous enough for a soak's share of fuzzing; the CI slice
/// takes about a minute each.
pub const LIMIT_SECS: u64 = 2 * 3600;
/// A soak's fuzzing stops starting rounds this long before the watchdog's limit.
const LIMIT_MARGIN: Duration = Duration::from_secs(600);

const TRINITY: &str = "/usr/bin/trinity";
const STRESS_NG: &str = "/usr/bin/stress-ng";
/// The unprivileged user trinity runs as (nobody).
const NOBODY: u32 = 65534;
/// The networking syscalls trinity calls (both ABIs where the kernel has them).
const TRINITY_SYSCALLS: &[&str] = &[
    "socket",
    "bind",
    "listen",
    "accept",
    "accept4",
    "connect",
    "getsockname",
    "getpeername",
    "setsockopt",
    "getsockopt",
    "shutdown",
    "close",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "ioctl",
    "fcntl",
];
/// trinity's socket families, one run each.
const TRINITY_DOMAINS: [&str; 2] = ["INET", "INET6"];
/// Syscalls per trinity run in the CI slice: about 12 s each under TCG with the load
/// (trinity made 40-90 syscalls a second there).
const CI_TRINITY_SYSCALLS: u64 = 500;
/// Syscalls per trinity run of a soak (runs repeat until its time is up): about a minute.
const SOAK_TRINITY_SYSCALLS: u64 = 4000;
/// How long one trinity run may take before it counts as hung.
const TRINITY_TIMEOUT: Duration = Duration::from_secs(900);

/// stress-ng's stressors and their bogo-op counts in the CI slice, per address family: the
/// TCP ones (and `udp`) take the family as an option, the others (`sockmany` and
/// `sockabuse`, IPv4 only, `sockfd`, unix sockets, `sockdiag`, whose bogo ops are the
/// attributes of the AF_UNIX sock_diag replies it asks for: `CONFIG_UNIX_DIAG` in
/// configs/base.config, and `rawsock`, raw IPv4 sockets) run with IPv4. `udp`, `rawsock`,
/// `sockfd` and `sockdiag` do not reach the listen or connect hooks; their sockets go
/// through the socket inode cache like every other.
const CI_STRESSORS_V4: &[(&str, u64)] = &[
    ("sock", 50),
    ("epoll", 50),
    ("udp", 1000),
    ("sockmany", 250),
    ("sockabuse", 10),
    ("sockfd", 250),
    ("sockdiag", 2000),
    ("rawsock", 1000),
];
const CI_STRESSORS_V6: &[(&str, u64)] = &[("sock", 50), ("epoll", 50), ("udp", 1000)];
/// The stressors that take `--NAME-domain`.
const DOMAIN_STRESSORS: [&str; 3] = ["sock", "epoll", "udp"];
/// A soak's rounds run this many times the CI slice's counts (the counts of the shortened
/// soak of Documentation/reliability.md).
const SOAK_STRESS_SCALE: u64 = 10;
/// How long one stress-ng run may take before it counts as hung.
const STRESS_TIMEOUT: Duration = Duration::from_secs(300);

/// Requests of the final wrk run after the fuzzing (one 5 s run gives about 1,400).
const FINAL_REQUESTS: u64 = 1000;

/// Load/unload cycles in the CI slice.
const CI_CYCLES: usize = 10;
/// Connections the cycle's own server accepts in each state: loaded with every feature on,
/// loaded with `enabled=0`, unloaded.
const CYCLE_CONNECTIONS: usize = 30;
/// Growth of the module-related kernel memory (kmalloc caches, per-CPU, vmalloc) over the
/// cycles counted as clear growth: more than this per cycle, on top of the noise allowance.
const GROWTH_PER_CYCLE: u64 = 16 << 10;
/// What the kernel's allocations move by under steady load whatever the module does
/// (in-flight skbs and sockets, RCU-deferred frees, thread stacks of the load's processes).
const GROWTH_NOISE: u64 = 1 << 20;

/// The soak's figures from the environment, if set.
fn env_number(name: &str) -> TestResult<Option<u64>> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| format!("{name}={text:?}: {e}")),
        Err(_) => Ok(None),
    }
}

/// Whether this run is `make soak` (which sets [`SOAK_MINUTES`]) rather than the CI slice.
pub(super) fn is_soak() -> TestResult<bool> {
    Ok(env_number(SOAK_MINUTES)?.is_some())
}

/// How long one fuzzer runs in a soak (half of [`SOAK_MINUTES`]), `None` for the CI slice.
fn soak_share() -> TestResult<Option<Duration>> {
    let Some(minutes) = env_number(SOAK_MINUTES)? else {
        return Ok(None);
    };
    let share = Duration::from_secs(minutes * 60 / 2);
    let most = Duration::from_secs(LIMIT_SECS) - LIMIT_MARGIN;
    if share > most {
        info!("{SOAK_MINUTES}={minutes}: each fuzzer runs {most:?}, the most the watchdog allows");
    }
    Ok(Some(share.min(most)))
}

/// A seed for the fuzzers, printed so that a run can be repeated.
fn seed() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos() ^ d.as_secs() as u32)
}

/// Sets every feature knob the loaded module has to on, for all ports.
fn all_features_on() -> TestResult {
    for (knob, value) in [
        (procfs::ENABLED, "1"),
        (procfs::LISTEN_PORTS, "all"),
        (procfs::LISTEN_PULL, "1"),
        (procfs::LISTEN_QUEUES, "1"),
        (procfs::RFD, "1"),
        (procfs::VFS, "1"),
        (procfs::RFD_PEER, "1"),
    ] {
        if Path::new(&procfs::knob_path(knob)).exists() {
            procfs::write_knob(knob, value.as_bytes())
                .context(format!("writing {value:?} to {knob}"))?;
        }
    }
    Ok(())
}

/// A port of `ip` that is free right now.
fn free_addr(ip: std::net::IpAddr) -> TestResult<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).context("finding a free port")?;
    listener.local_addr().context("local_addr")
}

/// A fresh directory for a fuzzer's files (its working directory), under /tmp.
fn scratch_dir(name: &str) -> TestResult<PathBuf> {
    let path = std::env::temp_dir().join(format!("fastsocket-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&path);
    fs::create_dir_all(&path).context(format!("creating {}", path.display()))?;
    Ok(path)
}

/// nginx in the runner's namespace, served to wrk in the pair's client namespace; optionally
/// haproxy too, in front of a second nginx on the loopback (its backend connections are active
/// ones, which Receive Flow Deliver handles while the module is on).
struct Served {
    pair: NetnsPair,
    url: String,
    /// nginx's listener.
    listener: Listener<'static>,
    nginx: Daemon,
    proxy: Option<Proxied>,
    dir: WorkDir,
}

struct Proxied {
    url: String,
    /// haproxy's frontend and the nginx behind it.
    listeners: [Listener<'static>; 2],
    haproxy: Daemon,
    backend: Daemon,
    _backend_dir: WorkDir,
}

impl Served {
    fn start(ctx: &mut Ctx, name: &str) -> TestResult<Served> {
        let pair = ctx.netns_pair(ServerSide::Current)?;
        let addr = free_addr(pair.server_ip(false))?;
        let dir = WorkDir::new(name)?;
        let nginx = start_nginx(&dir, &[addr], "")?;
        let url = format!("http://{addr}/");
        check_body(&pair, &url)?;
        Ok(Served {
            pair,
            url,
            listener: Listener {
                ns: None,
                port: addr.port(),
            },
            nginx,
            proxy: None,
            dir,
        })
    }

    /// Adds haproxy (a thread per CPU) in front of a second nginx, loaded with the first.
    fn with_haproxy(mut self, ctx: &Ctx) -> TestResult<Served> {
        let frontend = free_addr(self.pair.server_ip(false))?;
        let backend = free_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
        let backend_dir = WorkDir::new("backend")?;
        let nginx = start_nginx(&backend_dir, &[backend], "")?;
        let haproxy = start_haproxy(&self.dir, ctx.cpus.len(), frontend, backend)?;
        let url = format!("http://{frontend}/");
        check_body(&self.pair, &url)?;
        self.proxy = Some(Proxied {
            url,
            listeners: [frontend, backend].map(|addr| Listener {
                ns: None,
                port: addr.port(),
            }),
            haproxy,
            backend: nginx,
            _backend_dir: backend_dir,
        });
        Ok(self)
    }

    /// The URLs wrk loads, with the listeners each reaches: nginx's, and haproxy's if there
    /// is one.
    fn urls(&self) -> Vec<(&str, &[Listener<'static>])> {
        std::iter::once((self.url.as_str(), std::slice::from_ref(&self.listener)))
            .chain(
                self.proxy
                    .as_ref()
                    .map(|p| (p.url.as_str(), p.listeners.as_slice())),
            )
            .collect()
    }

    /// Runs `work` while wrk loads nginx (and haproxy, at the same time), run after run until
    /// `work` returns; every wrk run must be free of errors. The load returned is the sum.
    fn under_load<T>(&self, work: impl FnOnce() -> TestResult<T>) -> TestResult<(T, Load)> {
        let stop = AtomicBool::new(false);
        let (result, loads) = thread::scope(|scope| {
            let loads: Vec<_> = self
                .urls()
                .into_iter()
                .map(|(url, listeners)| {
                    let stop = &stop;
                    scope.spawn(move || {
                        let mut total = Load {
                            requests: 0,
                            seconds: 0.0,
                            runs: 0,
                        };
                        while !stop.load(Ordering::SeqCst) {
                            let run = wrk_until(&self.pair, url, 1, FUZZ_WRK_TIMEOUT, listeners)
                                .map_err(|e| {
                                    format!(
                                        "wrk run {} on {url} during the work: {e}",
                                        total.runs + 1
                                    )
                                })?;
                            total.requests += run.requests;
                            total.seconds += run.seconds;
                            total.runs += run.runs;
                        }
                        Ok::<(&str, Load), String>((url, total))
                    })
                })
                .collect();
            let result = work();
            stop.store(true, Ordering::SeqCst);
            let loads: Vec<TestResult<(&str, Load)>> = loads
                .into_iter()
                .map(|l| {
                    l.join()
                        .unwrap_or_else(|_| Err("a wrk thread panicked".into()))
                })
                .collect();
            (result, loads)
        });
        let result = result?;
        let mut sum = Load {
            requests: 0,
            seconds: 0.0,
            runs: 0,
        };
        for load in loads {
            let (url, load) = load?;
            if self.proxy.is_some() {
                info!(
                    "wrk on {url}: {} requests in {} run(s), 0 errors",
                    load.requests, load.runs
                );
            }
            sum.requests += load.requests;
            sum.seconds += load.seconds;
            sum.runs += load.runs;
        }
        Ok((result, sum))
    }

    /// The end of a fuzzing test: a final wrk run with no error (and one through haproxy), the
    /// module unloads with nginx's listener in scope and loads again, both still answer.
    fn finish(mut self, ctx: &Ctx) -> TestResult {
        let nginx = [self.listener];
        let last = wrk_until(&self.pair, &self.url, FINAL_REQUESTS, WRK_TIMEOUT, &nginx)
            .context("final wrk run")?;
        info!(
            "final wrk run: {} requests in {} run(s), 0 errors",
            last.requests, last.runs
        );
        if let Some(proxy) = &self.proxy {
            let last = wrk_until(
                &self.pair,
                &proxy.url,
                FINAL_REQUESTS,
                WRK_TIMEOUT,
                &proxy.listeners,
            )
            .context("final wrk run through haproxy")?;
            info!(
                "final wrk run through haproxy: {} requests in {} run(s), 0 errors",
                last.requests, last.runs
            );
        }
        module::rmmod().context("unloading the module after the fuzzing")?;
        ctx.insmod()?;
        all_features_on()?;
        for (url, _) in self.urls() {
            check_body(&self.pair, url)?;
        }
        let proxy = self
            .proxy
            .take()
            .map(|mut p| [p.haproxy.stop(), p.backend.stop()]);
        let nginx = self.nginx.stop();
        proxy.into_iter().flatten().chain([nginx]).collect()
    }
}

// ---- trinity ----

/// trinity's closing line: `Ran N syscalls. Successes: S  Failures: F`.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
struct TrinityRun {
    syscalls: u64,
    successes: u64,
    failures: u64,
}

fn parse_trinity(output: &str) -> Option<TrinityRun> {
    let line = output.lines().rev().find_map(|l| {
        let at = l.find("Ran ")?;
        Some(&l[at + 4..])
    })?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |after: &str| {
        let i = words.iter().position(|w| *w == after)?;
        words.get(i + 1)?.parse().ok()
    };
    Some(TrinityRun {
        syscalls: words.first()?.parse().ok()?,
        successes: number("Successes:")?,
        failures: number("Failures:")?,
    })
}

/// The last lines of a command's output, for failure messages.
fn tail(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Runs `cmd` under coreutils' `timeout`, which ends it (exit 124) if it hangs.
fn run_bounded(cmd: &[&str], dir: &Path, limit: Duration) -> TestResult<Output> {
    let out = Command::new("timeout")
        .args(["-k", "10", &format!("{}", limit.as_secs())])
        .args(cmd)
        .current_dir(dir)
        .output()
        .context(format!("running {}", cmd[0]))?;
    ensure!(
        out.status.code() != Some(124) && out.status.code() != Some(137),
        "{} did not finish within {limit:?}; its last output:\n{}",
        cmd.join(" "),
        tail(&out)
    );
    Ok(out)
}

/// One trinity run as nobody: `syscalls` networking syscalls on `domain` sockets.
fn run_trinity(dir: &Path, domain: &str, syscalls: u64, children: usize) -> TestResult<TrinityRun> {
    // A socket cache of the other family would hand its sockets out.
    let _ = fs::remove_file(dir.join("trinity.socketcache"));
    let seed = seed().to_string();
    let (count, children) = (syscalls.to_string(), children.to_string());
    let ids = NOBODY.to_string();
    let mut cmd = vec![
        "setpriv",
        "--reuid",
        &ids,
        "--regid",
        &ids,
        "--clear-groups",
        "--",
        TRINITY,
        "-q",
        "-q",
        "-l",
        "off",
        "--enable-fds=sockets,epoll",
        "-P",
        domain,
        "-C",
        &children,
        "-N",
        &count,
        "-s",
        &seed,
    ];
    for name in TRINITY_SYSCALLS {
        cmd.extend(["-c", name]);
    }
    let out = run_bounded(&cmd, dir, TRINITY_TIMEOUT)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let run = parse_trinity(&stdout).ok_or_else(|| {
        format!(
            "trinity -P {domain} -s {seed} ({}): no \"Ran N syscalls\" line:\n{}",
            out.status,
            tail(&out)
        )
    })?;
    ensure!(
        out.status.success() && run.syscalls >= syscalls,
        "trinity -P {domain} -s {seed} ({}) ran {} of {syscalls} syscalls:\n{}",
        out.status,
        run.syscalls,
        tail(&out)
    );
    info!(
        "trinity -P {domain} -s {seed}: {} syscalls ({} succeeded, {} failed)",
        run.syscalls, run.successes, run.failures
    );
    Ok(run)
}

/// Runs the trinity rounds: each family once (CI), or in turn until `soak` is over.
fn trinity_rounds(dir: &Path, children: usize, soak: Option<Duration>) -> TestResult<TrinityRun> {
    let start = Instant::now();
    let per_run = if soak.is_some() {
        SOAK_TRINITY_SYSCALLS
    } else {
        CI_TRINITY_SYSCALLS
    };
    let mut total = TrinityRun::default();
    for round in 0.. {
        let done = match soak {
            None => round >= TRINITY_DOMAINS.len(),
            Some(share) => round >= TRINITY_DOMAINS.len() && start.elapsed() >= share,
        };
        if done {
            break;
        }
        let domain = TRINITY_DOMAINS[round % TRINITY_DOMAINS.len()];
        let run = run_trinity(dir, domain, per_run, children)?;
        total.syscalls += run.syscalls;
        total.successes += run.successes;
        total.failures += run.failures;
    }
    Ok(total)
}

pub fn fuzz_trinity(ctx: &mut Ctx) -> TestResult {
    let soak = soak_share()?;
    ctx.ensure_loaded()?;
    all_features_on()?;
    let mut watch = KernelWatch::start()?;
    let served = Served::start(ctx, "trinity")?;
    let cwd = scratch_dir("trinity")?;
    chown(&cwd, Some(NOBODY), Some(NOBODY)).context(format!("chown {}", cwd.display()))?;
    // trinity's default: four per CPU (a blocking call holds its child up to a second).
    let children = 4 * ctx.cpus.len();
    let start = Instant::now();
    let outcome = served.under_load(|| trinity_rounds(&cwd, children, soak));
    let took = start.elapsed();
    let _ = fs::remove_dir_all(&cwd);
    let (total, load) = outcome?;
    info!(
        "trinity ({children} children, as nobody, {} syscalls on PF_INET and PF_INET6 sockets): \
         {} syscalls in {took:.1?} ({:.0}/s), {} succeeded, {} failed; nginx meanwhile served \
         {} wrk requests in {} run(s), 0 errors",
        TRINITY_SYSCALLS.len(),
        total.syscalls,
        total.syscalls as f64 / took.as_secs_f64().max(1e-9),
        total.successes,
        total.failures,
        load.requests,
        load.runs
    );
    served.finish(ctx)?;
    watch.check(false)
}

// ---- stress-ng ----

/// Bogo operations per stressor in stress-ng's `--metrics-brief` table
/// (`stress-ng: metrc: [pid] sock  2000  1.23 ...`).
fn parse_stress_ng(output: &str) -> BTreeMap<String, u64> {
    let mut ops = BTreeMap::new();
    for line in output.lines() {
        let Some((_, rest)) = line.split_once("metrc:") else {
            continue;
        };
        let Some((_, row)) = rest.split_once("] ") else {
            continue;
        };
        // The miscellaneous metrics that follow have numbers too, but not bogo ops.
        if row.contains("miscellaneous metrics") {
            break;
        }
        let mut fields = row.split_whitespace();
        if let (Some(name), Some(Ok(count))) = (fields.next(), fields.next().map(str::parse)) {
            ops.entry(name.to_owned()).or_insert(count);
        }
    }
    ops
}

/// One stress-ng run of `stressors` (name, bogo ops) with the TCP ones on `domain`.
fn run_stress_ng(
    dir: &Path,
    domain: &str,
    stressors: &[(&str, u64)],
) -> TestResult<BTreeMap<String, u64>> {
    let path = dir.to_string_lossy().into_owned();
    let mut args: Vec<String> = [
        STRESS_NG,
        "--metrics-brief",
        "--temp-path",
        &path,
        "--timeout",
        &format!("{}s", STRESS_TIMEOUT.as_secs()),
        "--sock-opts",
        "random",
    ]
    .map(str::to_owned)
    .to_vec();
    for &(name, count) in stressors {
        args.extend([format!("--{name}"), "1".into()]);
        args.extend([format!("--{name}-ops"), count.to_string()]);
        if DOMAIN_STRESSORS.contains(&name) {
            args.extend([format!("--{name}-domain"), domain.into()]);
        }
    }
    let cmd: Vec<&str> = args.iter().map(String::as_str).collect();
    // stress-ng's own --timeout ends the stressors; ours is a margin behind it.
    let out = run_bounded(&cmd, dir, STRESS_TIMEOUT + Duration::from_secs(120))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ops = parse_stress_ng(&text);
    ensure!(
        out.status.success(),
        "stress-ng ({domain}) failed ({}):\n{}",
        out.status,
        tail(&out)
    );
    for &(name, count) in stressors {
        let done = ops.get(name).copied().unwrap_or(0);
        ensure!(
            done >= count,
            "stress-ng --{name} ({domain}) did {done} of {count} bogo ops:\n{}",
            tail(&out)
        );
    }
    let summary: Vec<String> = stressors
        .iter()
        .map(|(name, _)| format!("{name} {}", ops[*name]))
        .collect();
    info!("stress-ng ({domain}) bogo ops: {}", summary.join(", "));
    Ok(ops)
}

/// The stress-ng rounds: IPv4 then IPv6 once (CI), or in turn until `soak` is over.
fn stress_rounds(dir: &Path, soak: Option<Duration>) -> TestResult<BTreeMap<String, u64>> {
    let start = Instant::now();
    let scale = if soak.is_some() { SOAK_STRESS_SCALE } else { 1 };
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    for round in 0.. {
        let done = match soak {
            None => round >= 2,
            Some(share) => round >= 2 && start.elapsed() >= share,
        };
        if done {
            break;
        }
        let (domain, stressors) = if round % 2 == 0 {
            ("ipv4", CI_STRESSORS_V4)
        } else {
            ("ipv6", CI_STRESSORS_V6)
        };
        let scaled: Vec<(&str, u64)> = stressors.iter().map(|&(n, c)| (n, c * scale)).collect();
        for (name, count) in run_stress_ng(dir, domain, &scaled)? {
            let key = if DOMAIN_STRESSORS.contains(&name.as_str()) {
                format!("{name}-{domain}")
            } else {
                name
            };
            *total.entry(key).or_default() += count;
        }
    }
    Ok(total)
}

pub fn fuzz_stress_ng(ctx: &mut Ctx) -> TestResult {
    let soak = soak_share()?;
    ctx.ensure_loaded()?;
    all_features_on()?;
    let mut watch = KernelWatch::start()?;
    let served = Served::start(ctx, "stress-ng")?;
    let dir = scratch_dir("stress-ng")?;
    let start = Instant::now();
    let outcome = served.under_load(|| stress_rounds(&dir, soak));
    let took = start.elapsed();
    let _ = fs::remove_dir_all(&dir);
    let (total, load) = outcome?;
    let sum: u64 = total.values().sum();
    let each: Vec<String> = total.iter().map(|(n, c)| format!("{n} {c}")).collect();
    info!(
        "stress-ng: {sum} bogo ops in {took:.1?} ({}); nginx meanwhile served {} wrk requests \
         in {} run(s), 0 errors",
        each.join(", "),
        load.requests,
        load.runs
    );
    served.finish(ctx)?;
    watch.check(false)
}

// ---- load/unload soak ----

/// Kernel memory that the module's allocations land in, in bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Memory {
    /// `kmalloc-*` caches (active objects times object size): the module's boxes, vectors,
    /// per-namespace state, sysctl tables.
    kmalloc: u64,
    /// Every slab cache, for the record (TIME_WAIT sockets and kmemleak's own objects
    /// make it move with the load).
    slab: u64,
    /// The per-CPU allocator (`Percpu` in /proc/meminfo): counters and queues.
    percpu: u64,
    /// `VmallocUsed`: module text and data.
    vmalloc: u64,
}

impl Memory {
    /// What counts for growth: everything but the whole-slab figure.
    fn module_related(&self) -> u64 {
        self.kmalloc + self.percpu + self.vmalloc
    }
}

/// Bytes in use per cache of /proc/slabinfo (`name active_objs num_objs objsize ...`).
fn parse_slabinfo(text: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut caches = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with("slabinfo") && !l.starts_with('#'))
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let number = |i: usize| -> Result<u64, String> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| format!("bad slabinfo line {line:?}"))
        };
        let bytes = number(1)? * number(3)?;
        caches.insert(fields[0].to_owned(), bytes);
    }
    Ok(caches)
}

/// `Percpu` and `VmallocUsed` of /proc/meminfo in bytes, parsed by procfs-core.
fn meminfo_bytes(text: &str) -> Result<(u64, u64), String> {
    let meminfo = Meminfo::from_read(text.as_bytes()).map_err(|e| format!("/proc/meminfo: {e}"))?;
    let percpu = meminfo
        .per_cpu
        .ok_or_else(|| "/proc/meminfo has no Percpu".to_owned())?;
    Ok((percpu, meminfo.vmalloc_used))
}

fn is_kmalloc(cache: &str) -> bool {
    cache.starts_with("kmalloc-") || cache.starts_with("dma-kmalloc-")
}

/// One sample: the totals and the bytes per slab cache.
type Sample = (Memory, BTreeMap<String, u64>);

fn read_memory() -> TestResult<Sample> {
    let slabinfo = fs::read_to_string("/proc/slabinfo").context("reading /proc/slabinfo")?;
    let meminfo = fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let caches = parse_slabinfo(&slabinfo)?;
    let (percpu, vmalloc) = meminfo_bytes(&meminfo)?;
    let memory = Memory {
        kmalloc: caches
            .iter()
            .filter(|(name, _)| is_kmalloc(name))
            .map(|(_, b)| b)
            .sum(),
        slab: caches.values().sum(),
        percpu,
        vmalloc,
    };
    Ok((memory, caches))
}

fn kib(bytes: i128) -> String {
    format!("{:+.0} KiB", bytes as f64 / 1024.0)
}

/// The caches that grew most between `before` and `after`.
fn top_growth(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> String {
    let mut growth: Vec<(i128, &str)> = after
        .iter()
        .map(|(name, &b)| {
            (
                b as i128 - before.get(name).copied().unwrap_or(0) as i128,
                name.as_str(),
            )
        })
        .filter(|(g, _)| *g > 0)
        .collect();
    growth.sort_unstable_by(|a, b| b.cmp(a));
    let top: Vec<String> = growth
        .iter()
        .take(6)
        .map(|(g, name)| format!("{name} {}", kib(*g)))
        .collect();
    top.join(", ")
}

/// What a soak's cycles do: the module's, or the control's (the same listener, client and
/// connections with the module never loaded), whose memory growth is the load's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arm {
    Module,
    Control,
}

/// One cycle: insmod, every feature on, a listener of its own served by a loop client while
/// the module is on, then with `enabled=0`, then unloaded; nothing may fail or be lost. The
/// control's cycle serves the same connections in three steps without the module.
fn cycle(ctx: &Ctx, pair: &NetnsPair, n: usize, arm: Arm) -> TestResult<usize> {
    let module_on = arm == Arm::Module;
    if module_on {
        ctx.insmod()?;
        all_features_on()?;
    }
    // Listening with the module on gives the listener per-CPU queues.
    let server = AcceptServer::start(pair.server_ip(false), &ctx.cpus, None)?;
    let client = LoopClient::start(pair.client_ns(), server.addr())?;
    // What each of the three batches of connections is served with, for the error message.
    let steps = if module_on {
        ["module on", "enabled=0", "unloaded"]
    } else {
        [
            "control, first batch",
            "control, second batch",
            "control, third batch",
        ]
    };
    let phases = (|| {
        server
            .wait_for(CYCLE_CONNECTIONS, ACCEPT_TIMEOUT)
            .context(steps[0])?;
        if module_on {
            let accepts = procfs::read_counters()?.total().accepts;
            ensure!(accepts > 0, "the module counted no accept while on");
            procfs::write_knob(procfs::ENABLED, b"0").context("writing 0 to enabled")?;
        }
        server
            .wait_for(server.accepted() + CYCLE_CONNECTIONS, ACCEPT_TIMEOUT)
            .context(steps[1])?;
        if module_on {
            module::rmmod()?;
        }
        server
            .wait_for(server.accepted() + CYCLE_CONNECTIONS, ACCEPT_TIMEOUT)
            .context(steps[2])
    })();
    let stats = client.stop()?;
    phases.map_err(|e| format!("{arm:?} cycle {n}: {e}"))?;
    server.wait_for(stats.connected, ACCEPT_TIMEOUT)?;
    let accepted = server.stop()?.len();
    stats
        .check_all_answered()
        .map_err(|e| format!("{arm:?} cycle {n}: {e}"))?;
    ensure!(
        accepted == stats.connected,
        "{arm:?} cycle {n}: the client connected {} times, the server accepted {accepted}",
        stats.connected
    );
    Ok(accepted)
}

/// Runs `cycles` cycles of `arm`, sampling the kernel's memory after each one (in the same
/// state every time: module not loaded, under load).
fn run_cycles(
    ctx: &Ctx,
    pair: &NetnsPair,
    cycles: usize,
    arm: Arm,
) -> TestResult<(usize, Vec<Sample>)> {
    let start = Instant::now();
    let mut connections = 0;
    let mut samples = Vec::with_capacity(cycles);
    for n in 1..=cycles {
        connections += cycle(ctx, pair, n, arm)?;
        samples.push(read_memory()?);
        if n % 10 == 0 && n < cycles {
            let (first, now) = (&samples[0].0, &samples[n - 1].0);
            info!(
                "{arm:?}: {n} cycles, {:.1?}; kmalloc {} since cycle 1",
                start.elapsed(),
                kib(now.kmalloc as i128 - first.kmalloc as i128)
            );
        }
    }
    Ok((connections, samples))
}

/// Prints what the cycles of `arm` grew, from the first cycle (which warms slab pages and
/// per-CPU chunks up) to the last, and returns the module-related growth.
fn report_growth(arm: Arm, samples: &[Sample]) -> i128 {
    let ((first, first_caches), (last, last_caches)) = (&samples[0], &samples[samples.len() - 1]);
    let delta = |f: fn(&Memory) -> u64| f(last) as i128 - f(first) as i128;
    info!(
        "{arm:?}: memory after cycle 1: kmalloc {} KiB, per-CPU {} KiB, vmalloc {} KiB, all \
         slab {} KiB",
        first.kmalloc >> 10,
        first.percpu >> 10,
        first.vmalloc >> 10,
        first.slab >> 10
    );
    info!(
        "{arm:?}: growth from cycle 1 to {}: kmalloc {}, per-CPU {}, vmalloc {}, all slab {}; \
         most grown caches: {}",
        samples.len(),
        kib(delta(|m| m.kmalloc)),
        kib(delta(|m| m.percpu)),
        kib(delta(|m| m.vmalloc)),
        kib(delta(|m| m.slab)),
        top_growth(first_caches, last_caches)
    );
    delta(Memory::module_related)
}

pub fn soak_load_unload(ctx: &mut Ctx) -> TestResult {
    let cycles = match env_number(SOAK_CYCLES)? {
        Some(n) => n as usize,
        None => CI_CYCLES,
    };
    ensure!(cycles >= 2, "{SOAK_CYCLES} must be at least 2");
    ctx.ensure_loaded()?;
    all_features_on()?;
    let mut watch = KernelWatch::start()?;
    let served = Served::start(ctx, "soak")?.with_haproxy(ctx)?;
    module::rmmod().context("unloading before the first cycle")?;
    let start = Instant::now();
    let ctx: &Ctx = ctx;
    // The control first, under the same load: what the kernel's memory does over as many
    // cycles of the same connections when the module is never loaded.
    let (((control_connections, control), control_took, (connections, samples)), load) = served
        .under_load(|| {
            let control = run_cycles(ctx, &served.pair, cycles, Arm::Control)?;
            let control_took = start.elapsed();
            let module = run_cycles(ctx, &served.pair, cycles, Arm::Module)?;
            Ok((control, control_took, module))
        })?;
    let took = start.elapsed() - control_took;
    info!(
        "{cycles} cycles of insmod, knobs on, enabled=0, rmmod in {took:.1?} ({connections} \
         connections to the cycles' own listeners) after {cycles} control cycles without the \
         module in {control_took:.1?} ({control_connections} connections); {} wrk requests to \
         nginx and through haproxy in {} run(s), 0 errors",
        load.requests, load.runs
    );
    let control_growth = report_growth(Arm::Control, &control);
    let growth = report_growth(Arm::Module, &samples);
    info!(
        "kmalloc + per-CPU + vmalloc growth over {cycles} cycles: module {}, control {}",
        kib(growth),
        kib(control_growth)
    );
    let allowed = (GROWTH_NOISE + GROWTH_PER_CYCLE * (cycles as u64 - 1)) as i128;
    ensure!(
        growth <= allowed,
        "kmalloc + per-CPU + vmalloc grew by {} over {} cycles (allowed {}; the control grew \
         {}): a leak per cycle",
        kib(growth),
        cycles - 1,
        kib(allowed),
        kib(control_growth)
    );
    ctx.insmod()?;
    all_features_on()?;
    served.finish(ctx)?;
    // kmemleak: `kernel_log_clean`, which runs after it in CI and in `make soak`, scans.
    watch.check(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_trinitys_closing_line() {
        let out = "[main] Reached limit 20000. Telling children to exit.\n\
            [main] Bailing main loop because Completed maximum number of operations..\n\
            [main] Ran 20007 syscalls. Successes: 5123  Failures: 14884\n";
        assert_eq!(
            parse_trinity(out),
            Some(TrinityRun {
                syscalls: 20007,
                successes: 5123,
                failures: 14884
            })
        );
        assert_eq!(parse_trinity("Trinity 2023.01\n"), None);
    }

    #[test]
    fn parses_stress_ngs_metrics() {
        let out = "stress-ng: info:  [28102] dispatching hogs: 1 sock, 1 sockabuse\n\
            stress-ng: metrc: [28102] stressor       bogo ops real time  usr time  sys time   bogo ops/s     bogo ops/s\n\
            stress-ng: metrc: [28102]                           (secs)    (secs)    (secs)   (real time) (usr+sys time)\n\
            stress-ng: metrc: [28102] sock                200      0.28      0.00      0.19       724.21        1011.78\n\
            stress-ng: metrc: [28102] sockabuse            50      0.14      0.01      0.02       346.43        1975.11\n\
            stress-ng: metrc: [28102] miscellaneous metrics:\n\
            stress-ng: metrc: [28102] sockabuse           5614 messages sent per sec\n\
            stress-ng: info:  [28102] successful run completed in 0.28s\n";
        let ops = parse_stress_ng(out);
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert_eq!(ops["sock"], 200);
        assert_eq!(ops["sockabuse"], 50);
    }

    /// A 6.x kernel's /proc/meminfo.
    const MEMINFO: &str = "MemTotal:        2000000 kB\nMemFree:         1500000 kB\n\
        MemAvailable:    1800000 kB\nBuffers:            7296 kB\nCached:           100332 kB\n\
        SwapCached:            0 kB\nActive:            62064 kB\nInactive:          48212 kB\n\
        Active(anon):         44 kB\nInactive(anon):     5760 kB\nActive(file):      62020 kB\n\
        Inactive(file):    42452 kB\nUnevictable:           0 kB\nMlocked:               0 kB\n\
        SwapTotal:             0 kB\nSwapFree:              0 kB\nZswap:                 0 kB\n\
        Zswapped:              0 kB\nDirty:               236 kB\nWriteback:             0 kB\n\
        AnonPages:         10288 kB\nMapped:            11944 kB\nShmem:             10152 kB\n\
        KReclaimable:      30380 kB\nSlab:              75816 kB\nSReclaimable:      30380 kB\n\
        SUnreclaim:        45436 kB\nKernelStack:        1568 kB\nPageTables:         1844 kB\n\
        SecPageTables:         0 kB\nNFS_Unstable:          0 kB\nBounce:                0 kB\n\
        WritebackTmp:          0 kB\nCommitLimit:     1000000 kB\nCommitted_AS:      70340 kB\n\
        VmallocTotal:   34359738367 kB\nVmallocUsed:          20 kB\nVmallocChunk:          0 kB\n\
        Percpu:             1234 kB\nAnonHugePages:         0 kB\nShmemHugePages:        0 kB\n\
        ShmemPmdMapped:        0 kB\nFileHugePages:         0 kB\nFilePmdMapped:         0 kB\n\
        Unaccepted:            0 kB\nBalloon:               0 kB\nHugePages_Total:       0\n\
        HugePages_Free:        0\nHugePages_Rsvd:        0\nHugePages_Surp:        0\n\
        Hugepagesize:       2048 kB\nHugetlb:               0 kB\nDirectMap4k:       28672 kB\n\
        DirectMap2M:     2068480 kB\nDirectMap1G:           0 kB\n";

    #[test]
    fn parses_memory_figures() {
        let slabinfo = "slabinfo - version: 2.1\n\
            # name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n\
            kmalloc-64          1000   1024     64   64    1 : tunables    0    0    0 : slabdata     16     16      0\n\
            tw_sock_TCP           10     32    256   16    1 : tunables    0    0    0 : slabdata      2      2      0\n";
        let caches = parse_slabinfo(slabinfo).unwrap();
        assert_eq!(caches["kmalloc-64"], 64_000);
        assert_eq!(caches["tw_sock_TCP"], 2560);
        assert!(is_kmalloc("kmalloc-cg-1k") && is_kmalloc("dma-kmalloc-64"));
        assert!(!is_kmalloc("tw_sock_TCP"));
        assert!(parse_slabinfo("kmalloc-8 x\n").is_err());
        assert_eq!(meminfo_bytes(MEMINFO).unwrap(), (1234 * 1024, 20 * 1024));
        assert!(meminfo_bytes(&MEMINFO.replace("Percpu:", "Other:")).is_err());
        assert!(meminfo_bytes(&MEMINFO.replace("VmallocUsed:", "Other:")).is_err());
        assert!(meminfo_bytes(&MEMINFO.replace("20 kB", "x kB")).is_err());
        let (before, after) = (caches.clone(), {
            let mut c = caches;
            *c.get_mut("kmalloc-64").unwrap() += 4096;
            c
        });
        assert_eq!(top_growth(&before, &after), "kmalloc-64 +4 KiB");
    }
}
