//! Socket-file microbenchmark (`make vfsbench`, issue 12).
//!
//! Times a fixed number of operations per worker, with the workers either threads of one
//! process (one shared file descriptor table: `files->file_lock`, one `files_struct`) or
//! processes (one table each), and prints one line:
//!
//! ```text
//! sockbench case=socket mode=threads workers=2 ops=40000 warmup=2000 elapsed_ns=123456789 idle_ns=0
//! ```
//!
//! `idle_ns` is the idle and iowait time of every CPU (`/proc/timer_list`: `idle_sleeptime`,
//! `iowait_sleeptime`) from just before the start to just after the end, `-` where that file
//! cannot be read. On a one-vCPU guest under QEMU icount, idle time is guest time in which no
//! instruction ran: `elapsed_ns - idle_ns` is then the instructions executed. A CPU idle at
//! the moment of a reading has its current idle period left out of that reading.
//!
//! `ops` is the total over all workers (`--ops` per worker times `--workers`), `elapsed_ns`
//! the CLOCK_MONOTONIC time from the first worker's start of its timed operations (each
//! starts once every worker has finished its warm-up) to the last one's end (under QEMU
//! icount with `shift=0`, guest nanoseconds are guest instructions).
//!
//! What one operation is:
//!
//! - `socket`: `socket(AF_INET, SOCK_STREAM, 0)` then `close()` of the descriptor.
//! - `socketpair`: `socketpair(AF_UNIX, SOCK_STREAM, 0)` then `close()` of both descriptors
//!   (two sockets per operation).
//! - `accept`: on the measured side, `accept()` on a listener shared by every worker, then
//!   `close()` of the accepted descriptor. The connections come from a client process in
//!   another network namespace (`--client-netns`, over veth), one client thread per worker,
//!   each running `socket()`, `connect()`, `read()` until the server's FIN, `close()` in a
//!   loop: at most one connection per client thread in flight. One operation therefore
//!   includes a whole TCP connection on both sides (the client's socket and connect, the
//!   handshake, the accept, both closes and their segments): every CPU's time counts in
//!   the guest's clock. The client process is not one of the measured processes: its
//!   descriptors are in a table of its own.
//!
//! Every process of a run is in a process group of its own: a client thread that fails
//! reports the error and ends the whole group, so no worker is left blocked in `accept()`.

use std::io::{self, Write};
use std::net::SocketAddrV4;
use std::os::fd::RawFd;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};

const USAGE: &str = "usage: sockbench --case socket|socketpair|accept --mode threads|procs \
--workers N --ops N [--warmup N] [--listen IP:PORT --client-netns PATH]";

/// The most workers a run may have.
const MAX_WORKERS: u32 = 64;
/// The most timed operations per worker.
const MAX_OPS: u64 = 100_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Socket,
    Socketpair,
    Accept,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Threads,
    Procs,
}

#[derive(Debug, PartialEq, Eq)]
struct Args {
    case: Case,
    mode: Mode,
    workers: u32,
    /// Timed operations per worker.
    ops: u64,
    /// Untimed operations per worker before the clock starts.
    warmup: u64,
    listen: Option<SocketAddrV4>,
    client_netns: Option<String>,
}

fn parse_num(flag: &str, v: Option<String>, max: u64) -> Result<u64, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a number"))?;
    let n: u64 = v
        .parse()
        .map_err(|_| format!("{flag}: '{v}' is not a number"))?;
    if n > max {
        return Err(format!("{flag}: {n} is more than {max}"));
    }
    Ok(n)
}

/// Parses the command line (without the program name).
fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut case, mut mode, mut workers, mut ops) = (None, None, None, None);
    let (mut warmup, mut listen, mut client_netns) = (0, None, None);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--case" => {
                case = Some(match it.next().as_deref() {
                    Some("socket") => Case::Socket,
                    Some("socketpair") => Case::Socketpair,
                    Some("accept") => Case::Accept,
                    other => return Err(format!("--case: unknown case {other:?}")),
                })
            }
            "--mode" => {
                mode = Some(match it.next().as_deref() {
                    Some("threads") => Mode::Threads,
                    Some("procs") => Mode::Procs,
                    other => return Err(format!("--mode: unknown mode {other:?}")),
                })
            }
            "--workers" => workers = Some(parse_num(&a, it.next(), MAX_WORKERS.into())? as u32),
            "--ops" => ops = Some(parse_num(&a, it.next(), MAX_OPS)?),
            "--warmup" => warmup = parse_num(&a, it.next(), MAX_OPS)?,
            "--listen" => {
                let v = it.next().ok_or("--listen needs IP:PORT")?;
                listen = Some(
                    v.parse::<SocketAddrV4>()
                        .map_err(|e| format!("--listen: '{v}': {e}"))?,
                );
            }
            "--client-netns" => {
                client_netns = Some(it.next().ok_or("--client-netns needs a path")?);
            }
            _ => return Err(format!("unknown argument '{a}'")),
        }
    }
    let case = case.ok_or("--case is required")?;
    let workers = workers.ok_or("--workers is required")?;
    if workers == 0 {
        return Err("--workers: at least 1".into());
    }
    let ops = ops.ok_or("--ops is required")?;
    if ops == 0 {
        return Err("--ops: at least 1".into());
    }
    if case == Case::Accept {
        if listen.is_none() || client_netns.is_none() {
            return Err("--case accept needs --listen and --client-netns".into());
        }
    } else if listen.is_some() || client_netns.is_some() {
        return Err("--listen and --client-netns are for --case accept only".into());
    }
    Ok(Args {
        case,
        mode: mode.ok_or("--mode is required")?,
        workers,
        ops,
        warmup,
        listen,
        client_netns,
    })
}

/// The result of a libc call that returns -1 and sets errno on failure.
fn check(what: &str, ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(ret)
}

fn close(fd: RawFd) -> io::Result<()> {
    // SAFETY: the caller owns fd and does not use it afterwards.
    check("close", unsafe { libc::close(fd) }).map(|_| ())
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn sockaddr_in(a: &SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// One operation of the measured side.
fn op(case: Case, listener: RawFd) -> io::Result<()> {
    match case {
        Case::Socket => {
            // SAFETY: plain system call.
            let fd = check("socket", unsafe {
                libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0)
            })?;
            close(fd)
        }
        Case::Socketpair => {
            let mut fds = [-1; 2];
            // SAFETY: fds has room for the two descriptors.
            check("socketpair", unsafe {
                libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr())
            })?;
            close(fds[0])?;
            close(fds[1])
        }
        Case::Accept => {
            // SAFETY: NULL address and length are allowed.
            let fd = check("accept", unsafe {
                libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut())
            })?;
            close(fd)
        }
    }
}

fn ops(case: Case, listener: RawFd, n: u64) -> io::Result<()> {
    for _ in 0..n {
        op(case, listener)?;
    }
    Ok(())
}

/// A listening socket on addr, shared by every worker.
fn listener(addr: &SocketAddrV4) -> io::Result<RawFd> {
    // SAFETY: plain system calls on a descriptor this function owns.
    unsafe {
        let fd = check(
            "listener socket",
            libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0),
        )?;
        let one: libc::c_int = 1;
        check(
            "SO_REUSEADDR",
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of_val(&one) as libc::socklen_t,
            ),
        )?;
        let sa = sockaddr_in(addr);
        check(
            &format!("bind {addr}"),
            libc::bind(
                fd,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of_val(&sa) as libc::socklen_t,
            ),
        )?;
        check("listen", libc::listen(fd, 1024))?;
        Ok(fd)
    }
}

/// One client connection: socket, connect, wait for the server's FIN, close.
fn client_connection(addr: &libc::sockaddr_in) -> io::Result<()> {
    // SAFETY: plain system calls on a descriptor this function owns; buf outlives read().
    unsafe {
        let fd = check(
            "client socket",
            libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0),
        )?;
        check(
            "connect",
            libc::connect(
                fd,
                addr as *const _ as *const libc::sockaddr,
                std::mem::size_of_val(addr) as libc::socklen_t,
            ),
        )?;
        let mut buf = [0u8; 1];
        loop {
            let n = libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, 1);
            if n == 0 {
                break;
            }
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            let e = if n < 0 {
                io::Error::last_os_error().to_string()
            } else {
                "the server sent data".to_string()
            };
            return Err(io::Error::other(format!("client read: {e}")));
        }
        close(fd)
    }
}

/// The client process: joins the network namespace at netns, then `threads` threads connect
/// to addr until the process is killed. On an error it reports it and ends the process group.
fn client_process(netns: &str, addr: SocketAddrV4, threads: u32) -> ! {
    let fail = |e: String| -> ! {
        eprintln!("sockbench client: {e}");
        // SAFETY: signals the whole process group of this run (see main), then exits.
        unsafe {
            libc::kill(0, libc::SIGTERM);
            libc::_exit(1)
        }
    };
    let f = match std::fs::File::open(netns) {
        Ok(f) => f,
        Err(e) => fail(format!("{netns}: {e}")),
    };
    // SAFETY: f is an open namespace file; this process has one thread here.
    if let Err(e) = check("setns", unsafe {
        libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET)
    }) {
        fail(format!("{netns}: {e}"));
    }
    drop(f);
    let sa = sockaddr_in(&addr);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || loop {
                if let Err(e) = client_connection(&sa) {
                    fail(e.to_string());
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    fail("client threads ended".into())
}

/// Idle plus iowait time of every CPU so far, in ns, from /proc/timer_list (its tick_sched
/// lines `.idle_sleeptime : N nsecs`); None where it cannot be read or has no such line.
fn idle_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/timer_list").ok()?;
    parse_idle(&text)
}

fn parse_idle(text: &str) -> Option<u64> {
    let mut sum = None;
    for line in text.lines() {
        let l = line.trim_start();
        if l.starts_with(".idle_sleeptime") || l.starts_with(".iowait_sleeptime") {
            let v = l
                .split(':')
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()?;
            sum = Some(sum.unwrap_or(0) + v);
        }
    }
    sum
}

/// The result of one run: start and end of the timed window, idle time over it (ns).
struct Window {
    start: u64,
    end: u64,
    idle: Option<u64>,
}

fn idle_delta(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(b?.saturating_sub(a?))
}

/// Threads mode: every worker a thread of this process. Every worker reads the clock itself
/// when it starts and when it ends: the window runs from the first start to the last end.
fn run_threads(a: &Args, lfd: RawFd) -> io::Result<Window> {
    let ready = Arc::new(Barrier::new(a.workers as usize + 1));
    let (case, warmup, n) = (a.case, a.warmup, a.ops);
    let handles: Vec<_> = (0..a.workers)
        .map(|_| {
            let ready = ready.clone();
            std::thread::spawn(move || -> io::Result<(u64, u64)> {
                let w = ops(case, lfd, warmup);
                ready.wait();
                w?;
                let start = now_ns();
                ops(case, lfd, n)?;
                Ok((start, now_ns()))
            })
        })
        .collect();
    // Read before the start, so that the reading costs no time inside the window.
    let idle0 = idle_ns();
    ready.wait();
    let (mut start, mut end) = (u64::MAX, 0);
    for h in handles {
        let (s, e) = h
            .join()
            .map_err(|_| io::Error::other("a worker thread panicked"))??;
        start = start.min(s);
        end = end.max(e);
    }
    let idle = idle_delta(idle0, idle_ns());
    Ok(Window { start, end, idle })
}

fn pipe() -> io::Result<[RawFd; 2]> {
    let mut p = [-1; 2];
    // SAFETY: p has room for the two descriptors.
    check("pipe", unsafe { libc::pipe(p.as_mut_ptr()) })?;
    Ok(p)
}

/// Reads exactly buf.len() bytes; fewer means a writer ended early.
fn read_full(fd: RawFd, buf: &mut [u8], what: &str) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the range written lies inside buf.
        let n = unsafe {
            libc::read(
                fd,
                buf[got..].as_mut_ptr() as *mut libc::c_void,
                buf.len() - got,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
        }
        if n == 0 {
            return Err(io::Error::other(format!(
                "{what}: a worker process ended early"
            )));
        }
        got += n as usize;
    }
    Ok(())
}

fn write_all(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    // Pipe writes of at most PIPE_BUF bytes are atomic and complete.
    // SAFETY: buf is valid for its length.
    let n = check("pipe write", unsafe {
        libc::write(fd, buf.as_ptr() as *const libc::c_void, buf.len()) as libc::c_int
    })?;
    if n as usize != buf.len() {
        return Err(io::Error::other("short pipe write"));
    }
    Ok(())
}

/// A worker process: warm-up, report ready, wait for the start, the timed operations, report
/// its start and end times.
fn worker_process(a: &Args, lfd: RawFd, ready_w: RawFd, go_r: RawFd, done_w: RawFd) -> ! {
    let r = (|| -> io::Result<()> {
        ops(a.case, lfd, a.warmup)?;
        write_all(ready_w, &[1])?;
        // Only workers that have not reported hold it: one that fails early ends the
        // parent's wait with EOF instead of leaving it blocked.
        close(ready_w)?;
        let mut b = [0u8; 1];
        // SAFETY: b is valid; EOF (the parent closed the write end) is the start signal.
        let n = unsafe { libc::read(go_r, b.as_mut_ptr() as *mut libc::c_void, 1) };
        if n != 0 {
            return Err(io::Error::other("start pipe: expected EOF"));
        }
        let start = now_ns();
        ops(a.case, lfd, a.ops)?;
        let end = now_ns();
        let mut t = [0u8; 16];
        t[..8].copy_from_slice(&start.to_ne_bytes());
        t[8..].copy_from_slice(&end.to_ne_bytes());
        write_all(done_w, &t)?;
        close(done_w)
    })();
    let status = match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sockbench worker {}: {e}", std::process::id());
            1
        }
    };
    // SAFETY: a forked child ends without running the parent's destructors or atexit hooks.
    unsafe { libc::_exit(status) }
}

fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: sockbench forks while it has a single thread (procs mode spawns none, the
    // client is forked before any worker); a child runs only system calls and _exit() (and
    // eprintln! on an error). Under `cargo test` the harness's threads exist: the children
    // still touch no lock but stderr's, and only on an error.
    check("fork", unsafe { libc::fork() })
}

fn wait_ok(pid: libc::pid_t, what: &str) -> io::Result<()> {
    let mut st = 0;
    // SAFETY: pid is a child of this process.
    check("waitpid", unsafe { libc::waitpid(pid, &mut st, 0) })?;
    if !libc::WIFEXITED(st) || libc::WEXITSTATUS(st) != 0 {
        return Err(io::Error::other(format!(
            "{what} {pid} failed (wait status {st:#x})"
        )));
    }
    Ok(())
}

/// Procs mode: every worker a forked process with its own descriptor table (the listener
/// inherited).
fn run_procs(a: &Args, lfd: RawFd) -> io::Result<Window> {
    let (ready, go, done) = (pipe()?, pipe()?, pipe()?);
    let mut pids = Vec::new();
    for _ in 0..a.workers {
        let pid = fork()?;
        if pid == 0 {
            // The start signal is EOF on go: only the parent may hold its write end.
            let _ = close(go[1]);
            worker_process(a, lfd, ready[1], go[0], done[1]);
        }
        pids.push(pid);
    }
    close(ready[1])?;
    close(done[1])?;
    let mut b = vec![0u8; a.workers as usize];
    read_full(ready[0], &mut b, "ready pipe")?;
    let idle0 = idle_ns();
    close(go[1])?;
    let (mut start, mut end) = (u64::MAX, 0);
    let mut t = [0u8; 16];
    for _ in 0..a.workers {
        // Each worker's start and end, one 16-byte (atomic) pipe write.
        read_full(done[0], &mut t, "result pipe")?;
        start = start.min(u64::from_ne_bytes(t[..8].try_into().expect("8 bytes")));
        end = end.max(u64::from_ne_bytes(t[8..].try_into().expect("8 bytes")));
    }
    let idle = idle_delta(idle0, idle_ns());
    for pid in pids {
        wait_ok(pid, "worker")?;
    }
    for fd in [ready[0], go[0], done[0]] {
        close(fd)?;
    }
    Ok(Window { start, end, idle })
}

fn run(a: &Args) -> io::Result<Window> {
    let mut lfd = -1;
    let mut client = None;
    if a.case == Case::Accept {
        let addr = a.listen.expect("checked by parse_args");
        lfd = listener(&addr)?;
        let pid = fork()?;
        if pid == 0 {
            // SAFETY: the client does not accept: drop its copy of the listener.
            unsafe { libc::close(lfd) };
            client_process(a.client_netns.as_deref().expect("checked"), addr, a.workers);
        }
        client = Some(pid);
    }
    let r = match a.mode {
        Mode::Threads => run_threads(a, lfd),
        Mode::Procs => run_procs(a, lfd),
    };
    if let Some(pid) = client {
        // The client runs until killed; at most one connection per client thread is left
        // in flight, reset when the listener closes.
        // SAFETY: pid is this process's child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let mut st = 0;
        // SAFETY: as above.
        check("waitpid client", unsafe { libc::waitpid(pid, &mut st, 0) })?;
        if !(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL) {
            return Err(io::Error::other(format!(
                "client process ended by itself (wait status {st:#x})"
            )));
        }
        close(lfd)?;
    }
    r
}

fn main() -> ExitCode {
    let a = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sockbench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // A group of its own: a failing client ends every process of this run (and only them).
    // SAFETY: plain system call.
    if let Err(e) = check("setpgid", unsafe { libc::setpgid(0, 0) }) {
        eprintln!("sockbench: {e}");
        return ExitCode::FAILURE;
    }
    match run(&a) {
        Ok(Window { start, end, idle }) => {
            let case = match a.case {
                Case::Socket => "socket",
                Case::Socketpair => "socketpair",
                Case::Accept => "accept",
            };
            let mode = match a.mode {
                Mode::Threads => "threads",
                Mode::Procs => "procs",
            };
            let line = format!(
                "sockbench case={case} mode={mode} workers={} ops={} warmup={} elapsed_ns={} \
                 idle_ns={}\n",
                a.workers,
                a.ops * u64::from(a.workers),
                a.warmup * u64::from(a.workers),
                end - start,
                idle.map_or("-".to_string(), |i| i.to_string())
            );
            if io::stdout().write_all(line.as_bytes()).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sockbench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Args, String> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn parses_a_socket_run() {
        let a = parse("--case socket --mode procs --workers 2 --ops 10 --warmup 3").unwrap();
        assert_eq!(
            a,
            Args {
                case: Case::Socket,
                mode: Mode::Procs,
                workers: 2,
                ops: 10,
                warmup: 3,
                listen: None,
                client_netns: None
            }
        );
    }

    #[test]
    fn accept_needs_its_peer() {
        assert!(parse("--case accept --mode threads --workers 1 --ops 1").is_err());
        let a = parse(
            "--case accept --mode threads --workers 1 --ops 1 --listen 10.0.0.1:80 \
             --client-netns /run/netns/x",
        )
        .unwrap();
        assert_eq!(a.listen, Some("10.0.0.1:80".parse().unwrap()));
        assert!(
            parse("--case socket --mode threads --workers 1 --ops 1 --listen 1.2.3.4:5").is_err()
        );
    }

    #[test]
    fn bounds_are_checked() {
        assert!(parse("--case socket --mode threads --workers 0 --ops 1").is_err());
        assert!(parse("--case socket --mode threads --workers 65 --ops 1").is_err());
        assert!(parse("--case socket --mode threads --workers 1 --ops 0").is_err());
        assert!(parse("--case socket --mode threads --workers 1 --ops 100000001").is_err());
        assert!(parse("--case socket --mode threads --workers x --ops 1").is_err());
        assert!(parse("--case sockets --mode threads --workers 1 --ops 1").is_err());
        assert!(parse("--case socket --workers 1 --ops 1").is_err());
    }

    #[test]
    fn parses_timer_list_idle() {
        let t = "cpu: 0\n  .idle_sleeptime : 100 nsecs\n  .iowait_sleeptime: 5 nsecs\n\
                 cpu: 1\n  .idle_sleeptime : 1000 nsecs\n  .iowait_sleeptime: 0 nsecs\n";
        assert_eq!(parse_idle(t), Some(1105));
        assert_eq!(parse_idle("no such lines\n"), None);
        assert_eq!(parse_idle("  .idle_sleeptime : x nsecs\n"), None);
    }

    /// The loops themselves, on the host: every case but accept (which needs the guest's
    /// namespaces), in both modes, end and report a non-zero time.
    #[test]
    fn runs_socket_and_socketpair_loops() {
        for case in ["socket", "socketpair"] {
            for mode in ["threads", "procs"] {
                let a = parse(&format!(
                    "--case {case} --mode {mode} --workers 2 --ops 200 --warmup 10"
                ))
                .unwrap();
                let w = run(&a).unwrap();
                assert!(w.end > w.start, "{case} {mode}");
            }
        }
    }
}
