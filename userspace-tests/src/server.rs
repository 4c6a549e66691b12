//! An in-process TCP server: accept threads on one listener, each optionally pinned to a
//! CPU, waiting in blocking accept(), epoll, poll() or select(). Each connection is
//! answered: the server reads the client's byte, replies with one byte and closes.
//!
//! The threads wait without timeouts, so that a lost wake-up shows as a connection nobody
//! accepts (and the runner's watchdog fails the test) instead of being picked up by the
//! next periodic look. They are stopped by wake-ups the server sends: shutdown() of the
//! listener (blocking accept() returns EINVAL) and an eventfd in every poll set.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::epoll::EpollFlags;
use nix::sys::socket::SockFlag;
use nix::unistd::gettid;

use crate::{netns, sys};

pub const BACKLOG: i32 = 512;
/// How long a connection may take to send its byte.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The byte the server replies with unless told otherwise.
pub const DEFAULT_REPLY: u8 = b'R';

/// How the accept threads wait for connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiter {
    /// Blocking accept() on a blocking listener.
    Blocking,
    /// An epoll instance per thread holding the non-blocking listener with EPOLLIN and
    /// these flags; accept4(SOCK_NONBLOCK | SOCK_CLOEXEC) until EAGAIN.
    Epoll(EpollMode),
    /// poll() on the non-blocking listener, then accept4 until EAGAIN.
    Poll,
    /// select() on the non-blocking listener, then accept4 until EAGAIN.
    Select,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpollMode {
    /// EPOLLEXCLUSIVE: one waiter woken per connection.
    Exclusive,
    /// Level-triggered, every epoll instance woken.
    Level,
    /// EPOLLET.
    Edge,
}

impl EpollMode {
    fn events(self) -> EpollFlags {
        EpollFlags::EPOLLIN
            | match self {
                EpollMode::Exclusive => EpollFlags::EPOLLEXCLUSIVE,
                EpollMode::Level => EpollFlags::empty(),
                EpollMode::Edge => EpollFlags::EPOLLET,
            }
    }
}

/// What to start.
#[derive(Clone, Debug)]
pub struct ServerOpts<'a> {
    pub ip: IpAddr,
    /// 0: an ephemeral port.
    pub port: u16,
    /// Namespace of the listener, `None` for the runner's.
    pub ns: Option<&'a str>,
    pub waiter: Waiter,
    /// One accept thread per entry, pinned to that CPU if `Some`.
    pub threads: Vec<Option<usize>>,
    /// Set SO_REUSEPORT on the listener.
    pub reuseport: bool,
    /// The byte every connection is answered with.
    pub reply: u8,
}

impl<'a> ServerOpts<'a> {
    /// Blocking accept threads, one pinned to each of `cpus`, on an ephemeral port of `ip`.
    pub fn pinned(ip: IpAddr, cpus: &[usize]) -> ServerOpts<'a> {
        ServerOpts {
            ip,
            port: 0,
            ns: None,
            waiter: Waiter::Blocking,
            threads: cpus.iter().copied().map(Some).collect(),
            reuseport: false,
            reply: DEFAULT_REPLY,
        }
    }

    /// `count` threads that may run anywhere.
    pub fn unpinned(mut self, count: usize) -> ServerOpts<'a> {
        self.threads = vec![None; count];
        self
    }

    pub fn waiter(mut self, waiter: Waiter) -> ServerOpts<'a> {
        self.waiter = waiter;
        self
    }

    pub fn ns(mut self, ns: Option<&'a str>) -> ServerOpts<'a> {
        self.ns = ns;
        self
    }

    pub fn port(mut self, port: u16) -> ServerOpts<'a> {
        self.port = port;
        self
    }

    pub fn reuseport(mut self) -> ServerOpts<'a> {
        self.reuseport = true;
        self
    }

    pub fn reply(mut self, reply: u8) -> ServerOpts<'a> {
        self.reply = reply;
        self
    }
}

/// One accepted connection as userspace saw it.
#[derive(Clone, Copy, Debug)]
pub struct Accepted {
    /// CPU of the accepting thread when accept() returned.
    pub cpu: usize,
    /// SO_INCOMING_CPU of the accepted socket (-1 if unset).
    pub incoming_cpu: i32,
    /// When accept() returned.
    pub at: Instant,
    /// The client's port.
    pub peer_port: u16,
}

impl Accepted {
    /// Whether the handshake completed on the accepting CPU.
    pub fn is_local(&self) -> bool {
        usize::try_from(self.incoming_cpu) == Ok(self.cpu)
    }
}

/// How many of `accepted` were local.
pub fn count_local(accepted: &[Accepted]) -> usize {
    accepted.iter().filter(|a| a.is_local()).count()
}

#[derive(Default)]
struct Shared {
    accepted: Mutex<Vec<Accepted>>,
    changed: Condvar,
    errors: Mutex<Vec<String>>,
    stopping: AtomicBool,
    /// Readable once the server stops: wakes the threads waiting in epoll, poll or select.
    stop: Option<sys::EventFd>,
    /// Thread id and CPU of each pinned thread.
    pinned: Mutex<Vec<(libc::pid_t, usize)>>,
}

impl Shared {
    fn error(&self, msg: String) {
        self.errors.lock().unwrap().push(msg);
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

pub struct AcceptServer {
    listener: Arc<TcpListener>,
    addr: SocketAddr,
    reply: u8,
    waiter: Waiter,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl AcceptServer {
    /// Listens on an ephemeral port of `ip` (in namespace `ns`, or the runner's if `None`)
    /// and starts one blocking accept thread pinned to each of `cpus`.
    pub fn start(ip: IpAddr, cpus: &[usize], ns: Option<&str>) -> Result<AcceptServer, String> {
        AcceptServer::start_with(&ServerOpts::pinned(ip, cpus).ns(ns))
    }

    pub fn start_with(opts: &ServerOpts) -> Result<AcceptServer, String> {
        let bind = SocketAddr::new(opts.ip, opts.port);
        let listen = || sys::tcp_listen(bind, BACKLOG, opts.reuseport);
        let listener = match opts.ns {
            None => listen(),
            Some(ns) => netns::run_in(ns, listen).and_then(|r| r),
        }
        .map_err(|e| format!("listening on {bind}: {e}"))?;
        AcceptServer::serve(listener, opts)
    }

    /// Starts the accept threads of `opts` (its waiter, threads and reply; not its address)
    /// on `listener`, which already listens (and may have connections queued).
    pub fn serve(listener: TcpListener, opts: &ServerOpts) -> Result<AcceptServer, String> {
        if opts.waiter != Waiter::Blocking {
            listener
                .set_nonblocking(true)
                .map_err(|e| format!("making the listener non-blocking: {e}"))?;
        }
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let stop = match opts.waiter {
            Waiter::Blocking => None,
            _ => Some(sys::EventFd::new().map_err(|e| format!("eventfd: {e}"))?),
        };
        let mut server = AcceptServer {
            listener: Arc::new(listener),
            addr,
            reply: opts.reply,
            waiter: opts.waiter,
            shared: Arc::new(Shared {
                stop,
                ..Shared::default()
            }),
            threads: Vec::new(),
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        for (i, &cpu) in opts.threads.iter().enumerate() {
            let worker = Worker {
                cpu,
                waiter: opts.waiter,
                reply: opts.reply,
                listener: Arc::clone(&server.listener),
                shared: Arc::clone(&server.shared),
            };
            let ready = ready_tx.clone();
            let name = match cpu {
                Some(cpu) => format!("accept-cpu{cpu}"),
                None => format!("accept-{i}"),
            };
            let thread = thread::Builder::new()
                .name(name)
                .spawn(move || worker.run(ready))
                .map_err(|e| format!("spawning accept thread: {e}"))?;
            server.threads.push(thread);
        }
        for _ in &opts.threads {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("starting accept thread: {e}")),
                Err(_) => return Err("an accept thread died while starting".into()),
            }
        }
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The byte every connection is answered with.
    pub fn reply(&self) -> u8 {
        self.reply
    }

    /// Number of connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.lock().unwrap().len()
    }

    /// Every connection accepted so far, in the order they were recorded.
    pub fn snapshot(&self) -> Vec<Accepted> {
        self.shared.accepted.lock().unwrap().clone()
    }

    /// Pins the pinned threads to their CPUs again (taking a CPU offline unpins the
    /// threads pinned to it for good).
    pub fn repin(&self) -> Result<(), String> {
        for &(tid, cpu) in self.shared.pinned.lock().unwrap().iter() {
            sys::pin_thread(tid, cpu)
                .map_err(|e| format!("pinning thread {tid} to cpu {cpu}: {e}"))?;
        }
        Ok(())
    }

    /// Waits until at least `count` connections have been accepted in total.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        let accepted = self.shared.accepted.lock().unwrap();
        let (accepted, _) = self
            .shared
            .changed
            .wait_timeout_while(accepted, timeout, |a| a.len() < count)
            .unwrap();
        if accepted.len() >= count {
            return Ok(());
        }
        let errors = self.shared.errors.lock().unwrap();
        Err(format!(
            "server accepted only {} of {count} connections within {:?} (server errors: {errors:?})",
            accepted.len(),
            start.elapsed()
        ))
    }

    /// Stops the server and returns every accepted connection; fails if any
    /// accept, read or write failed.
    pub fn stop(mut self) -> Result<Vec<Accepted>, String> {
        self.shutdown();
        let errors = std::mem::take(&mut *self.shared.errors.lock().unwrap());
        if !errors.is_empty() {
            return Err(format!("server errors: {}", errors.join("; ")));
        }
        Ok(std::mem::take(&mut *self.shared.accepted.lock().unwrap()))
    }

    /// Stops and joins the accept threads; idempotent.
    fn shutdown(&mut self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(stop) = &self.shared.stop {
            if let Err(e) = stop.signal() {
                // Without the wake-up waiting threads would wait forever: better to leak them.
                eprintln!(
                    "fastsocket-tests: waking the accept threads of {}: {e}",
                    self.addr
                );
                return;
            }
        }
        if let Err(e) = sys::shutdown_listener(&self.listener) {
            // Without the shutdown blocked threads would wait forever: better to leak them.
            eprintln!("fastsocket-tests: shutdown of listener {}: {e}", self.addr);
            if self.waiter == Waiter::Blocking {
                return;
            }
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for AcceptServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One accept thread.
struct Worker {
    cpu: Option<usize>,
    waiter: Waiter,
    reply: u8,
    listener: Arc<TcpListener>,
    shared: Arc<Shared>,
}

impl Worker {
    fn run(self, ready: Sender<io::Result<()>>) {
        let epoll = match self.prepare() {
            Ok(epoll) => epoll,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        match self.waiter {
            Waiter::Blocking => self.accept_blocking(),
            _ => self.accept_when_ready(epoll.as_ref()),
        }
    }

    /// Pins the thread and sets up its epoll instance.
    fn prepare(&self) -> io::Result<Option<sys::Epoll>> {
        if let Some(cpu) = self.cpu {
            sys::pin_current_thread(cpu)
                .map_err(|e| io::Error::new(e.kind(), format!("pinning to cpu {cpu}: {e}")))?;
            self.shared
                .pinned
                .lock()
                .unwrap()
                .push((gettid().as_raw(), cpu));
        }
        let Waiter::Epoll(mode) = self.waiter else {
            return Ok(None);
        };
        let epoll = sys::Epoll::new()?;
        epoll
            .add(&*self.listener, mode.events())
            .map_err(|e| io::Error::new(e.kind(), format!("epoll_ctl {mode:?}: {e}")))?;
        epoll
            .add(self.stop_fd(), EpollFlags::EPOLLIN)
            .map_err(|e| io::Error::new(e.kind(), format!("epoll_ctl of the eventfd: {e}")))?;
        Ok(Some(epoll))
    }

    fn where_(&self) -> String {
        match self.cpu {
            Some(cpu) => format!("cpu {cpu}"),
            None => "an unpinned thread".into(),
        }
    }

    fn accept_blocking(&self) {
        loop {
            match self.listener.accept() {
                Ok((conn, _)) => self.handle(conn),
                // shutdown() makes accept fail with EINVAL.
                Err(_) if self.shared.stopping() => return,
                Err(e) => {
                    self.shared
                        .error(format!("accept on {}: {e}", self.where_()));
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// The eventfd that stops the threads waiting in epoll, poll or select.
    fn stop_fd(&self) -> &sys::EventFd {
        self.shared
            .stop
            .as_ref()
            .expect("servers whose threads poll have a stop eventfd")
    }

    /// Waits without a timeout for the listener or the stop eventfd, then accepts until
    /// EAGAIN or leaves.
    fn accept_when_ready(&self, epoll: Option<&sys::Epoll>) {
        let (listener, stop) = (&*self.listener, self.stop_fd());
        while !self.shared.stopping() {
            let ready = match (self.waiter, epoll) {
                (Waiter::Epoll(_), Some(epoll)) => {
                    epoll.wait_forever().map(|ready| sys::Readable {
                        first: ready.contains(&(listener.as_raw_fd() as u64)),
                        second: ready.contains(&(stop.as_raw_fd() as u64)),
                    })
                }
                (Waiter::Poll, _) => sys::poll_either(listener, stop),
                (Waiter::Select, _) => sys::select_either(listener, stop),
                _ => unreachable!("waiter {:?} without its epoll", self.waiter),
            };
            match ready {
                Ok(sys::Readable { second: true, .. }) => return,
                Ok(sys::Readable { first: true, .. }) => self.accept_until_eagain(),
                Ok(_) => {}
                Err(e) => {
                    self.shared
                        .error(format!("{:?} on {}: {e}", self.waiter, self.where_()));
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    fn accept_until_eagain(&self) {
        loop {
            match sys::accept4(
                &*self.listener,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            ) {
                Ok(conn) => self.handle(conn),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) if self.shared.stopping() => return,
                Err(e) => {
                    self.shared
                        .error(format!("accept4 on {}: {e}", self.where_()));
                    thread::sleep(Duration::from_millis(10));
                    return;
                }
            }
        }
    }

    /// Records where `conn` was accepted, then answers it.
    fn handle(&self, mut conn: TcpStream) {
        match record(&conn) {
            Ok(accepted) => {
                self.shared.accepted.lock().unwrap().push(accepted);
                self.shared.changed.notify_all();
            }
            Err(e) => self
                .shared
                .error(format!("inspecting a connection on {}: {e}", self.where_())),
        }
        // Only accept4(SOCK_NONBLOCK) gives non-blocking connections.
        let blocking = match self.waiter {
            Waiter::Blocking => Ok(()),
            _ => conn.set_nonblocking(false),
        };
        let answered = blocking.and_then(|()| sys::answer(&mut conn, self.reply, READ_TIMEOUT));
        if let Err(e) = answered {
            let peer = conn
                .peer_addr()
                .map_or_else(|e| format!("? ({e})"), |a| a.to_string());
            self.shared
                .error(format!("answering {peer} on {}: {e}", self.where_()));
        }
    }
}

/// Where and when a connection was accepted; call right after accept.
fn record(stream: &TcpStream) -> io::Result<Accepted> {
    let at = Instant::now();
    let cpu = sys::current_cpu()?;
    let incoming_cpu = sys::incoming_cpu(stream)?;
    // Best effort: a client may have given up (reset) by now.
    let peer_port = stream.peer_addr().map_or(0, |a| a.port());
    Ok(Accepted {
        cpu,
        incoming_cpu,
        at,
        peer_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{self, LoopClient};
    use crate::netns::{NetnsPair, ServerSide};

    /// Needs root and iproute2: `sudo cargo test -- --ignored`.
    #[test]
    #[ignore = "needs root and iproute2"]
    fn accepts_connections_from_the_client_namespace() {
        let cpus = crate::procfs::online_cpus().unwrap();
        for (side, ipv6) in [(ServerSide::Current, false), (ServerSide::Named, true)] {
            let n = (225..250).find(|&n| !NetnsPair::in_use(n)).unwrap();
            let pair = NetnsPair::create(n, side, &cpus).unwrap();
            let server =
                AcceptServer::start(pair.server_ip(ipv6), &cpus, pair.server_ns()).unwrap();
            client::request_sequential(
                pair.client_ns(),
                server.addr(),
                30,
                DEFAULT_REPLY,
                Duration::ZERO,
            )
            .unwrap();
            server.wait_for(30, Duration::from_secs(10)).unwrap();

            let looping = LoopClient::start(pair.client_ns(), server.addr()).unwrap();
            thread::sleep(Duration::from_millis(300));
            let ran = looping.run_between(|| 42).unwrap();
            assert_eq!(ran, 42);
            thread::sleep(Duration::from_millis(100));
            let stats = looping.stop().unwrap();
            assert!(stats.connected > 0 && stats.failures == 0, "{stats:?}");
            assert_eq!(stats.answered(), stats.connected, "{stats:?}");
            server
                .wait_for(30 + stats.connected, Duration::from_secs(10))
                .unwrap();

            let accepted = server.stop().unwrap();
            assert_eq!(accepted.len(), 30 + stats.connected);
            assert!(accepted.iter().all(|a| cpus.contains(&a.cpu)));
            assert!(accepted.iter().all(|a| a.incoming_cpu >= 0), "{accepted:?}");
            let local = count_local(&accepted);
            eprintln!("{side:?} ipv6={ipv6}: {local}/{} local", accepted.len());
        }
    }

    /// Needs root and iproute2: `sudo cargo test -- --ignored`.
    #[test]
    #[ignore = "needs root and iproute2"]
    fn every_waiter_answers_every_request() {
        let cpus = crate::procfs::online_cpus().unwrap();
        let n = (200..225).rev().find(|&n| !NetnsPair::in_use(n)).unwrap();
        let pair = NetnsPair::create(n, ServerSide::Current, &cpus).unwrap();
        let ip = pair.server_ip(false);
        let waiters = [
            Waiter::Blocking,
            Waiter::Epoll(EpollMode::Exclusive),
            Waiter::Epoll(EpollMode::Level),
            Waiter::Epoll(EpollMode::Edge),
            Waiter::Poll,
            Waiter::Select,
        ];
        for waiter in waiters {
            for opts in [
                ServerOpts::pinned(ip, &cpus).waiter(waiter),
                ServerOpts::pinned(ip, &cpus).waiter(waiter).unpinned(1),
            ] {
                let server = AcceptServer::start_with(&opts.reply(b'x')).unwrap();
                client::request_sequential(
                    pair.client_ns(),
                    server.addr(),
                    50,
                    b'x',
                    Duration::ZERO,
                )
                .unwrap();
                server.wait_for(50, Duration::from_secs(10)).unwrap();
                let accepted = server.stop().unwrap();
                assert_eq!(accepted.len(), 50, "{waiter:?}");
                eprintln!("{waiter:?}: {}/50 local", count_local(&accepted));
            }
        }
        // A reuseport pair on one port.
        let first =
            AcceptServer::start_with(&ServerOpts::pinned(ip, &cpus[..1]).reuseport()).unwrap();
        let second = AcceptServer::start_with(
            &ServerOpts::pinned(ip, &cpus[..1])
                .reuseport()
                .port(first.addr().port()),
        )
        .unwrap();
        client::request_sequential(
            pair.client_ns(),
            first.addr(),
            50,
            DEFAULT_REPLY,
            Duration::ZERO,
        )
        .unwrap();
        let (a, b) = (first.stop().unwrap().len(), second.stop().unwrap().len());
        assert_eq!(a + b, 50);
        assert!(a > 0 && b > 0, "{a} {b}");
    }
}
