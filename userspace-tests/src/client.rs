//! Client side: short TCP requests made from the client namespace. A request connects,
//! sends one byte, reads the server's one-byte reply and closes.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::netns;

/// Generous: the guest is emulated and a lost SYN is retried after a second or more.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request waits for the server's reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two connections of a [`LoopClient`], to stay far from running out of
/// ephemeral ports (each closed connection sits in TIME_WAIT for a minute).
const LOOP_PAUSE: Duration = Duration::from_millis(5);
/// How many error messages a [`LoopClient`] keeps.
const KEPT_ERRORS: usize = 10;
/// How long [`LoopClient::run_between`] waits for its task to run.
const TASK_TIMEOUT: Duration = Duration::from_secs(120);

/// Which step of a request failed.
#[derive(Debug)]
pub enum RequestError {
    Connect(io::Error),
    Send(io::Error),
    /// Reading the reply failed (reset, timeout) or found EOF.
    Reply(io::Error),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Connect(e) => write!(f, "connect: {e}"),
            RequestError::Send(e) => write!(f, "send: {e}"),
            RequestError::Reply(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                write!(f, "reply: EOF without a reply")
            }
            RequestError::Reply(e) => write!(f, "reply: {e}"),
        }
    }
}

/// One request: connect, send one byte, read the one-byte reply, close.
/// Returns the reply byte.
pub fn request(addr: SocketAddr) -> Result<u8, RequestError> {
    let mut stream =
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(RequestError::Connect)?;
    exchange(&mut stream)
}

/// The request of a connected stream: send one byte, read the one-byte reply. Returns the
/// reply byte.
pub fn exchange(stream: &mut TcpStream) -> Result<u8, RequestError> {
    stream.write_all(&[1]).map_err(RequestError::Send)?;
    read_reply(stream).map_err(RequestError::Reply)
}

fn read_reply(stream: &mut TcpStream) -> io::Result<u8> {
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let mut byte = [0u8];
    stream.read_exact(&mut byte)?;
    Ok(byte[0])
}

/// Makes `count` sequential requests to `addr` from namespace `ns`, sleeping `pause` after
/// each, stopping at the first failure; returns how many replies carried each byte.
pub fn request_many(
    ns: &str,
    addr: SocketAddr,
    count: usize,
    pause: Duration,
) -> Result<BTreeMap<u8, usize>, String> {
    netns::run_in(ns, || {
        let mut replies = BTreeMap::new();
        for i in 1..=count {
            let reply =
                request(addr).map_err(|e| format!("request {i} of {count} to {addr}: {e}"))?;
            *replies.entry(reply).or_default() += 1;
            if !pause.is_zero() {
                thread::sleep(pause);
            }
        }
        Ok(replies)
    })
    .map_err(|e| format!("client in {ns}: {e}"))?
}

/// Makes `count` sequential requests to `addr` from namespace `ns`, sleeping `pause` after
/// each, stopping at the first failure; every reply must be `reply`.
pub fn request_sequential(
    ns: &str,
    addr: SocketAddr,
    count: usize,
    reply: u8,
    pause: Duration,
) -> Result<(), String> {
    let replies = request_many(ns, addr, count, pause)?;
    let wrong: Vec<_> = replies.iter().filter(|(&r, _)| r != reply).collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "replies from {addr}: expected only {reply:#04x}, got {replies:?} (byte: count)"
        ))
    }
}

/// What a [`LoopClient`] saw.
#[derive(Debug, Default)]
pub struct LoopStats {
    /// Connections whose connect() succeeded.
    pub connected: usize,
    /// Requests answered, by reply byte.
    pub replies: BTreeMap<u8, usize>,
    /// Failed requests (connect, send or reply).
    pub failures: usize,
    /// The first few failure messages.
    pub errors: Vec<String>,
}

impl LoopStats {
    /// Requests answered.
    pub fn answered(&self) -> usize {
        self.replies.values().sum()
    }

    /// Fails unless every connection the client made was answered, with no failure.
    pub fn check_all_answered(&self) -> Result<(), String> {
        if self.failures > 0 {
            return Err(format!(
                "{} of {} requests failed: {}",
                self.failures,
                self.connected,
                self.errors.join("; ")
            ));
        }
        if self.answered() != self.connected {
            return Err(format!(
                "{} connections, {} answered",
                self.connected,
                self.answered()
            ));
        }
        Ok(())
    }
}

/// Something to run on the client thread between two requests.
type Task = Box<dyn FnOnce() + Send>;

/// A client thread that makes requests over and over until stopped.
pub struct LoopClient {
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicUsize>,
    tasks: Sender<Task>,
    thread: Option<JoinHandle<io::Result<LoopStats>>>,
}

impl LoopClient {
    pub fn start(ns: &str, addr: SocketAddr) -> Result<LoopClient, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicUsize::new(0));
        let (tasks, task_rx) = mpsc::channel();
        let (stop2, connected2) = (Arc::clone(&stop), Arc::clone(&connected));
        let thread = netns::spawn_in(ns, move || {
            request_loop(addr, &stop2, &connected2, &task_rx)
        })
        .map_err(|e| format!("starting client in {ns}: {e}"))?;
        Ok(LoopClient {
            stop,
            connected,
            tasks,
            thread: Some(thread),
        })
    }

    /// Connections established so far.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::SeqCst)
    }

    /// Runs `f` on the client thread between two requests (when none is in flight) and
    /// returns its result.
    pub fn run_between<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (done_tx, done_rx) = mpsc::channel();
        let task: Task = Box::new(move || {
            let _ = done_tx.send(f());
        });
        self.tasks
            .send(task)
            .map_err(|_| "the client thread has ended".to_string())?;
        done_rx
            .recv_timeout(TASK_TIMEOUT)
            .map_err(|e| format!("waiting for the client thread to run a task: {e}"))
    }

    pub fn stop(mut self) -> Result<LoopStats, String> {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self
            .thread
            .take()
            .expect("client thread is joined only once");
        match thread.join() {
            Ok(Ok(stats)) => Ok(stats),
            Ok(Err(e)) => Err(format!("client could not enter its namespace: {e}")),
            Err(_) => Err("client thread panicked".into()),
        }
    }
}

impl Drop for LoopClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn request_loop(
    addr: SocketAddr,
    stop: &AtomicBool,
    connected: &AtomicUsize,
    tasks: &Receiver<Task>,
) -> LoopStats {
    let mut stats = LoopStats::default();
    while !stop.load(Ordering::SeqCst) {
        while let Ok(task) = tasks.try_recv() {
            task();
        }
        let result = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(RequestError::Connect)
            .and_then(|mut stream| {
                stats.connected += 1;
                connected.fetch_add(1, Ordering::SeqCst);
                exchange(&mut stream)
            });
        match result {
            Ok(reply) => *stats.replies.entry(reply).or_default() += 1,
            Err(e) => {
                stats.failures += 1;
                if stats.errors.len() < KEPT_ERRORS {
                    stats
                        .errors
                        .push(format!("request {} to {addr}: {e}", stats.connected));
                }
            }
        }
        thread::sleep(LOOP_PAUSE);
    }
    stats
}

/// One request of a [`BurstClients`] thread.
#[derive(Debug)]
pub struct Timed {
    /// The client's port.
    pub local_port: u16,
    /// When connect() returned.
    pub connected: Instant,
    /// When the reply arrived (or the request failed).
    pub done: Instant,
    /// The reply byte, or what failed.
    pub reply: Result<u8, String>,
}

impl Timed {
    /// From connect() returning to the reply.
    pub fn round_trip(&self) -> Duration {
        self.done.saturating_duration_since(self.connected)
    }
}

/// Client threads making requests back to back (no pause), each timed, until a total
/// count is reached or they are stopped.
pub struct BurstClients {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<io::Result<Vec<Timed>>>>,
}

impl BurstClients {
    /// `threads` threads in `ns` requesting from `addr`, `limit` requests in all (`None`:
    /// until [`BurstClients::stop`]).
    pub fn start(
        ns: &str,
        addr: SocketAddr,
        threads: usize,
        limit: Option<usize>,
    ) -> Result<BurstClients, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..threads {
            let (stop, started) = (Arc::clone(&stop), Arc::clone(&started));
            let handle = netns::spawn_in(ns, move || {
                let mut done = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let n = started.fetch_add(1, Ordering::SeqCst);
                    if limit.is_some_and(|limit| n >= limit) {
                        break;
                    }
                    done.push(timed_request(addr));
                }
                done
            })
            .map_err(|e| format!("starting client in {ns}: {e}"))?;
            handles.push(handle);
        }
        Ok(BurstClients {
            stop,
            threads: handles,
        })
    }

    /// Waits for the threads to finish (after their limit, or at once if `stop`) and
    /// returns every request, ordered by connect time.
    fn join(mut self, stop: bool) -> Result<Vec<Timed>, String> {
        if stop {
            self.stop.store(true, Ordering::SeqCst);
        }
        let mut all = Vec::new();
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(Ok(done)) => all.extend(done),
                Ok(Err(e)) => return Err(format!("client could not enter its namespace: {e}")),
                Err(_) => return Err("client thread panicked".into()),
            }
        }
        all.sort_by_key(|t| t.connected);
        Ok(all)
    }

    /// Waits until the limit is reached.
    pub fn finish(self) -> Result<Vec<Timed>, String> {
        self.join(false)
    }

    pub fn stop(self) -> Result<Vec<Timed>, String> {
        self.join(true)
    }
}

impl Drop for BurstClients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn timed_request(addr: SocketAddr) -> Timed {
    let start = Instant::now();
    let failed = |port, at, e: RequestError| Timed {
        local_port: port,
        connected: at,
        done: Instant::now(),
        reply: Err(e.to_string()),
    };
    let mut stream = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(stream) => stream,
        Err(e) => return failed(0, start, RequestError::Connect(e)),
    };
    let connected = Instant::now();
    let port = stream.local_addr().map_or(0, |a| a.port());
    if let Err(e) = stream.write_all(&[1]) {
        return failed(port, connected, RequestError::Send(e));
    }
    match read_reply(&mut stream) {
        Ok(reply) => Timed {
            local_port: port,
            connected,
            done: Instant::now(),
            reply: Ok(reply),
        },
        Err(e) => failed(port, connected, RequestError::Reply(e)),
    }
}
