//! Real servers under load with the module on: nginx (Debian's configuration with a test
//! server block) and haproxy in front of nginx, driven by wrk from the client namespace.

use std::fs;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::listen::Share;
use super::{in_ns, percpu, Context, Ctx, KnobGuard, TestResult};
use crate::netns::{NetnsPair, ServerSide};
use crate::procfs;

/// The response body: 64 bytes.
const BODY: &str = "fastsocket-rs accept locality: sixty-four bytes of response body";
const NGINX: &str = "/usr/sbin/nginx";
const NGINX_CONF: &str = "/etc/nginx/nginx.conf";
const HAPROXY: &str = "/usr/sbin/haproxy";
const WRK: &str = "/usr/bin/wrk";
/// Directories Debian's nginx needs and a fresh /var lacks.
const NGINX_DIRS: [&str; 2] = ["/var/log/nginx", "/var/lib/nginx"];
/// Requests to complete, in runs of `WRK_RUN`.
pub(super) const TARGET_REQUESTS: u64 = 20_000;
const WRK_RUN: &str = "5s";
/// wrk's `--timeout` where requests are judged: wrk looks every 2 s and counts every request
/// then waiting longer as a timeout (a socket error), so in a 5 s run a request left 2 s
/// without an answer before the look at 4 s fails the run.
pub(super) const WRK_TIMEOUT: &str = "2s";
/// wrk's `--timeout` under fuzzing (never reached in a 5 s run): a fuzzer may starve the
/// servers for longer; a connection left in an accept queue is still caught at each run's end.
pub(super) const FUZZ_WRK_TIMEOUT: &str = "10s";
/// Give up after this many runs.
const MAX_RUNS: usize = 80;
/// How long a server may take to start listening, and to stop.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// What one wrk run reported.
#[derive(Debug, Default, PartialEq)]
struct WrkRun {
    requests: u64,
    seconds: f64,
    /// connect, read, write, timeout.
    socket_errors: [u64; 4],
    non_2xx_3xx: u64,
}

fn parse_duration(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    Some(number * scale)
}

/// Parses wrk's summary: `N requests in 5.00s, ...`, and the `Socket errors:` and
/// `Non-2xx or 3xx responses:` lines that wrk prints only when there are any.
fn parse_wrk(output: &str) -> Result<WrkRun, String> {
    let mut run = WrkRun::default();
    let mut found = false;
    for line in output.lines().map(str::trim) {
        if let Some((count, rest)) = line.split_once(" requests in ") {
            let duration = rest.split(',').next().unwrap_or_default();
            run.requests = count
                .parse()
                .map_err(|e| format!("bad request count in {line:?}: {e}"))?;
            run.seconds =
                parse_duration(duration).ok_or_else(|| format!("bad duration in {line:?}"))?;
            found = true;
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            for (i, part) in errors.split(',').enumerate().take(4) {
                let value = part.split_whitespace().nth(1).and_then(|v| v.parse().ok());
                run.socket_errors[i] =
                    value.ok_or_else(|| format!("bad socket errors {line:?}"))?;
            }
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            run.non_2xx_3xx = count
                .trim()
                .parse()
                .map_err(|e| format!("bad {line:?}: {e}"))?;
        }
    }
    if found {
        Ok(run)
    } else {
        Err("no \"requests in\" line".into())
    }
}

/// Debian's nginx.conf with the sites-enabled include replaced by `servers` and the pid
/// file moved to `pid`.
fn nginx_conf(base: &str, pid: &Path, servers: &str, events: &str) -> Result<String, String> {
    let (mut includes, mut pids, mut event_blocks) = (0, 0, 0);
    let mut conf = String::new();
    for line in base.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("events {") && !events.is_empty() {
            event_blocks += 1;
            conf.push_str(line);
            conf.push('\n');
            conf.push_str(events.trim_end_matches('\n'));
        } else if trimmed.starts_with("include /etc/nginx/sites-enabled/") {
            includes += 1;
            conf.push_str(servers);
        } else if trimmed.starts_with("pid ") {
            pids += 1;
            conf.push_str(&format!("pid {};", pid.display()));
        } else {
            conf.push_str(line);
        }
        conf.push('\n');
    }
    if includes != 1 {
        return Err(format!(
            "{NGINX_CONF} has {includes} sites-enabled include lines, expected 1"
        ));
    }
    if !events.is_empty() && event_blocks != 1 {
        return Err(format!(
            "{NGINX_CONF} has {event_blocks} events blocks, expected 1"
        ));
    }
    if pids == 0 {
        conf.insert_str(0, &format!("pid {};\n", pid.display()));
    }
    Ok(conf)
}

/// A server block answering every request with [`BODY`].
fn nginx_server(listen: SocketAddr) -> String {
    format!(
        "\tserver {{\n\t\tlisten {listen};\n\t\taccess_log off;\n\t\treturn 200 \"{BODY}\";\n\t}}\n"
    )
}

fn haproxy_conf(threads: usize, bind: SocketAddr, backend: SocketAddr) -> String {
    format!(
        "global\n\tnbthread {threads}\n\n\
         defaults\n\tmode http\n\ttimeout connect 10s\n\ttimeout client 30s\n\ttimeout server 30s\n\n\
         frontend fe\n\tbind {bind}\n\tdefault_backend be\n\n\
         backend be\n\tserver nginx {backend}\n"
    )
}

/// A scratch directory under /tmp, removed on drop.
pub(super) struct WorkDir(PathBuf);

impl WorkDir {
    pub(super) fn new(name: &str) -> TestResult<WorkDir> {
        let path =
            std::env::temp_dir().join(format!("fastsocket-tests-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).context(format!("creating {}", path.display()))?;
        Ok(WorkDir(path))
    }

    pub(super) fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The last lines of a log file, for failure messages.
fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// A server process in the foreground, stopped with SIGTERM (then SIGKILL) on drop.
pub(super) struct Daemon {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> TestResult<Daemon> {
        let out = fs::File::create(&log).context(format!("creating {}", log.display()))?;
        let err = out.try_clone().context("dup")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context(format!("starting {cmd:?}"))?;
        Ok(Daemon {
            name,
            child: Some(child),
            log,
        })
    }

    /// Waits until `addr` accepts connections (from this namespace).
    fn wait_listening(&mut self, addr: SocketAddr) -> TestResult {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_ok() {
                return Ok(());
            }
            let child = self.child.as_mut().ok_or("no process")?;
            if let Some(status) = child.try_wait().context("waitpid")? {
                return Err(format!(
                    "{} exited ({status}) before listening on {addr}; its output:\n{}",
                    self.name,
                    log_tail(&self.log)
                ));
            }
            ensure!(
                Instant::now() < deadline,
                "{} does not listen on {addr} after {START_TIMEOUT:?}; its output:\n{}",
                self.name,
                log_tail(&self.log)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then SIGKILL if it does not end within [`STOP_TIMEOUT`].
    pub(super) fn stop(&mut self) -> TestResult {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id() as i32;
        if child.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{} did not stop within {STOP_TIMEOUT:?} of SIGTERM",
                        self.name
                    ));
                }
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("fastsocket-tests: cleanup: {e}");
        }
    }
}

/// A port of `ip` that is free right now.
fn free_port(ip: IpAddr) -> TestResult<u16> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).context("finding a free port")?;
    Ok(listener.local_addr().context("local_addr")?.port())
}

/// Starts nginx with Debian's configuration, one test server block per address of `listen`
/// and `events` added to its `events` block.
pub(super) fn start_nginx(
    dir: &WorkDir,
    listen: &[SocketAddr],
    events: &str,
) -> TestResult<Daemon> {
    for path in NGINX_DIRS {
        fs::create_dir_all(path).context(format!("creating {path}"))?;
    }
    let base = fs::read_to_string(NGINX_CONF).context(format!("reading {NGINX_CONF}"))?;
    let servers: String = listen.iter().map(|&addr| nginx_server(addr)).collect();
    let conf = nginx_conf(&base, &dir.file("nginx.pid"), &servers, events)?;
    let conf_path = dir.file("nginx.conf");
    fs::write(&conf_path, conf).context(format!("writing {}", conf_path.display()))?;
    let mut daemon = Daemon::spawn(
        "nginx",
        Command::new(NGINX)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"]),
        dir.file("nginx.log"),
    )?;
    for &addr in listen {
        daemon.wait_listening(addr)?;
    }
    Ok(daemon)
}

/// Starts haproxy with [`haproxy_conf`] (`threads` threads, from `frontend` to `backend`)
/// written to `dir`, and waits until it listens on `frontend` (from this namespace).
pub(super) fn start_haproxy(
    dir: &WorkDir,
    threads: usize,
    frontend: SocketAddr,
    backend: SocketAddr,
) -> TestResult<Daemon> {
    let conf = dir.file("haproxy.cfg");
    fs::write(&conf, haproxy_conf(threads, frontend, backend))
        .context(format!("writing {}", conf.display()))?;
    let mut haproxy = Daemon::spawn(
        "haproxy",
        Command::new(HAPROXY).arg("-f").arg(&conf).arg("-db"),
        dir.file("haproxy.log"),
    )?;
    haproxy.wait_listening(frontend)?;
    Ok(haproxy)
}

/// Fetches `/` with curl from the client namespace and checks the body.
pub(super) fn check_body(pair: &NetnsPair, url: &str) -> TestResult {
    let out = Command::new("ip")
        .args(["netns", "exec", pair.client_ns()])
        .args(["curl", "-sS", "--max-time", "30", url])
        .output()
        .context("running curl")?;
    let body = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && body == BODY,
        "curl {url}: {} body {body:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Totals over the wrk runs of a test.
pub(super) struct Load {
    pub(super) requests: u64,
    pub(super) seconds: f64,
    pub(super) runs: usize,
}

/// A listener that wrk's requests reach, directly or through a proxy, in namespace `ns`
/// (`None`: the runner's), by its IPv4 port.
#[derive(Clone, Copy, Debug)]
pub(super) struct Listener<'a> {
    pub(super) ns: Option<&'a str>,
    pub(super) port: u16,
}

impl Listener<'_> {
    /// Fails unless the accept queue of the listener empties (within
    /// [`percpu::wait_listen_queue`]'s bound, past the longest hold). Called once a wrk run
    /// ended: no new connection comes then to wake a worker, so a connection still queued after
    /// every hold ended is a lost wake-up, which the next run's connections would otherwise
    /// hide. A port with no listener fails too (it would read as empty).
    fn ensure_drained(&self, run: usize) -> TestResult {
        let port = self.port;
        let drain = || -> TestResult<u32> {
            ensure!(
                !procfs::read_tcp_listen_queues(port)?.is_empty(),
                "no IPv4 listener on port {port}"
            );
            percpu::wait_listen_queue(port, 0)
        };
        let left = match self.ns {
            None => drain(),
            Some(ns) => in_ns(ns, drain),
        }?;
        ensure!(
            left == 0,
            "wrk run {run}: {left} connection(s) still queued on {self:?} after wrk exited: a \
             lost wake-up"
        );
        Ok(())
    }
}

/// Runs wrk (`--timeout` `timeout`) from the client namespace in [`WRK_RUN`] runs until
/// `target` requests completed; every run must be free of socket errors and non-2xx
/// responses and leave the accept queues of `listeners` empty.
pub(super) fn wrk_until(
    pair: &NetnsPair,
    url: &str,
    target: u64,
    timeout: &str,
    listeners: &[Listener],
) -> TestResult<Load> {
    let mut load = Load {
        requests: 0,
        seconds: 0.0,
        runs: 0,
    };
    while load.requests < target {
        ensure!(
            load.runs < MAX_RUNS,
            "only {} requests in {MAX_RUNS} runs of {WRK_RUN}",
            load.requests
        );
        let out = Command::new("ip")
            .args(["netns", "exec", pair.client_ns(), WRK])
            .args(["-H", "Connection: close", "-c", "32", "-t", "2"])
            .args(["-d", WRK_RUN, "--timeout", timeout, url])
            .output()
            .context("running wrk")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report = || {
            format!(
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr).trim_end()
            )
        };
        ensure!(
            out.status.success(),
            "wrk failed ({}):\n{}",
            out.status,
            report()
        );
        let run = parse_wrk(&stdout).map_err(|e| format!("wrk output: {e}:\n{}", report()))?;
        load.runs += 1;
        ensure!(
            run.socket_errors == [0; 4] && run.non_2xx_3xx == 0,
            "wrk run {}: socket errors {:?} (connect, read, write, timeout), {} non-2xx responses:\n{}",
            load.runs,
            run.socket_errors,
            run.non_2xx_3xx,
            report()
        );
        ensure!(
            run.requests > 0,
            "wrk run {} completed no request",
            load.runs
        );
        for listener in listeners {
            listener.ensure_drained(load.runs)?;
        }
        load.requests += run.requests;
        load.seconds += run.seconds;
    }
    Ok(load)
}

/// Runs the load against `url` and prints the rate and the module's accept locality.
fn measure(name: &str, pair: &NetnsPair, addr: SocketAddr, scope: &str) -> TestResult {
    let url = &format!("http://{addr}/");
    check_body(pair, url)?;
    let before = procfs::read_counters()?;
    let nginx = Listener {
        ns: None,
        port: addr.port(),
    };
    let load = wrk_until(pair, url, TARGET_REQUESTS, WRK_TIMEOUT, &[nginx])?;
    let delta = procfs::read_counters()?.since(&before)?.total();
    let share = Share {
        local: delta.local as usize,
        total: delta.accepts as usize,
    };
    info!(
        "{name}: {} requests in {} runs, {:.0} conn/s; locality ({scope}) {share}",
        load.requests,
        load.runs,
        load.requests as f64 / load.seconds.max(1e-9)
    );
    ensure!(
        delta.accepts >= load.requests,
        "{} completed requests (one connection each), but accepts rose by only {}",
        load.requests,
        delta.accepts
    );
    Ok(())
}

pub fn nginx_20k(ctx: &mut Ctx) -> TestResult {
    nginx_load(ctx, "nginx", "")
}

/// nginx with `accept_mutex on` (off by default since 1.11.3): one worker at a time has the
/// listener in its epoll set, so connections kept for the other worker's CPU must still be
/// served once their hold ends.
pub fn nginx_accept_mutex_20k(ctx: &mut Ctx) -> TestResult {
    nginx_load(ctx, "nginx, accept_mutex on", "\taccept_mutex on;\n")
}

/// Runs the load against unchanged nginx (with `events` added to its `events` block).
fn nginx_load(ctx: &mut Ctx, name: &str, events: &str) -> TestResult {
    ctx.ensure_loaded()?;
    let _enabled = KnobGuard::enabled("1")?;
    let _ports = KnobGuard::listen_ports("all")?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    let ip = pair.server_ip(false);
    let addr = SocketAddr::new(ip, free_port(ip)?);
    let dir = WorkDir::new("nginx")?;
    let mut nginx = start_nginx(&dir, &[addr], events)?;
    let result = measure(name, &pair, addr, "nginx");
    let stopped = nginx.stop();
    result?;
    stopped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_64_bytes() {
        assert_eq!(BODY.len(), 64);
        assert!(!BODY.contains(['"', '\\', '$']));
    }

    #[test]
    fn parses_wrk_output() {
        let clean = "Running 5s test @ http://10.77.1.1:8080/\n  2 threads and 32 connections\n  \
            Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   643.57us  800.36us  \
            12.03ms   89.01%\n    Req/Sec    15.07k     1.43k   20.37k    85.00%\n  89982 requests \
            in 5.00s, 18.96MB read\nRequests/sec:  29989.08\nTransfer/sec:      6.32MB\n";
        assert_eq!(
            parse_wrk(clean).unwrap(),
            WrkRun {
                requests: 89982,
                seconds: 5.0,
                ..WrkRun::default()
            }
        );
        let errors = "  1234 requests in 1.00m, 1MB read\n  Socket errors: connect 1, read 2, \
            write 3, timeout 4\n  Non-2xx or 3xx responses: 7\n";
        assert_eq!(
            parse_wrk(errors).unwrap(),
            WrkRun {
                requests: 1234,
                seconds: 60.0,
                socket_errors: [1, 2, 3, 4],
                non_2xx_3xx: 7,
            }
        );
        assert!(parse_wrk("unable to connect to 10.77.1.1:80 Connection refused\n").is_err());
        assert!(parse_wrk("  x requests in 5.00s, 1MB read\n").is_err());
    }

    #[test]
    fn edits_the_nginx_configuration() {
        let base = "user www-data;\npid /run/nginx.pid;\nhttp {\n\taccess_log x;\n\
            \tinclude /etc/nginx/conf.d/*.conf;\n\tinclude /etc/nginx/sites-enabled/*;\n}\n";
        let server = nginx_server("10.77.1.1:8080".parse().unwrap());
        let conf = nginx_conf(base, Path::new("/tmp/d/nginx.pid"), &server, "").unwrap();
        assert!(conf.contains("pid /tmp/d/nginx.pid;\n"));
        assert!(!conf.contains("/run/nginx.pid"));
        assert!(!conf.contains("sites-enabled"));
        assert!(conf.contains("include /etc/nginx/conf.d/*.conf;"));
        assert!(conf.contains("listen 10.77.1.1:8080;"));
        assert!(conf.contains(&format!("return 200 \"{BODY}\";")));
        assert!(conf.contains("access_log off;"));
        assert!(nginx_conf("http {\n}\n", Path::new("/p"), &server, "").is_err());
        let no_pid = nginx_conf(
            "http {\ninclude /etc/nginx/sites-enabled/*;\n}\n",
            Path::new("/p"),
            "",
            "",
        )
        .unwrap();
        assert!(no_pid.starts_with("pid /p;\n"));
        let with_events = format!("events {{\n\tworker_connections 768;\n}}\n{base}");
        let mutex = "\taccept_mutex on;\n";
        let conf = nginx_conf(&with_events, Path::new("/p"), &server, mutex).unwrap();
        assert!(conf.starts_with("events {\n\taccept_mutex on;\n\tworker_connections 768;\n}"));
        assert!(nginx_conf(base, Path::new("/p"), &server, mutex).is_err());
    }

    #[test]
    fn writes_the_haproxy_configuration() {
        let conf = haproxy_conf(
            2,
            "10.77.1.1:80".parse().unwrap(),
            "127.0.0.1:81".parse().unwrap(),
        );
        assert!(conf.contains("\tnbthread 2\n"));
        assert!(conf.contains("\tbind 10.77.1.1:80\n"));
        assert!(conf.contains("\tserver nginx 127.0.0.1:81\n"));
        assert!(conf.contains("\tmode http\n"));
    }

    /// Needs nginx, haproxy and wrk: `cargo test -- --ignored`.
    #[test]
    #[ignore = "needs nginx and haproxy"]
    fn serves_with_nginx_and_haproxy() {
        let dir = WorkDir::new("selftest").unwrap();
        let lo = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let backend = SocketAddr::new(lo, free_port(lo).unwrap());
        let frontend = SocketAddr::new(lo, free_port(lo).unwrap());
        let _nginx = start_nginx(&dir, &[backend], "").unwrap();
        fs::write(dir.file("h.cfg"), haproxy_conf(2, frontend, backend)).unwrap();
        let mut haproxy = Daemon::spawn(
            "haproxy",
            Command::new(HAPROXY)
                .arg("-f")
                .arg(dir.file("h.cfg"))
                .arg("-db"),
            dir.file("h.log"),
        )
        .unwrap();
        haproxy.wait_listening(frontend).unwrap();
        for addr in [backend, frontend] {
            let out = Command::new(WRK)
                .args(["-H", "Connection: close", "-c", "32", "-t", "2", "-d", "1s"])
                .arg(format!("http://{addr}/"))
                .output()
                .unwrap();
            let run = parse_wrk(&String::from_utf8_lossy(&out.stdout)).unwrap();
            assert!(run.requests > 0 && run.socket_errors == [0; 4], "{run:?}");
            assert_eq!(run.non_2xx_3xx, 0);
        }
        haproxy.stop().unwrap();
    }
}
