//! Client side: short TCP connections made from the client namespace.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::netns;

/// Generous: the guest is emulated and a lost SYN is retried after a second or more.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two connections of a [`LoopClient`], to stay far from running out of
/// ephemeral ports (each closed connection sits in TIME_WAIT for a minute).
const LOOP_PAUSE: Duration = Duration::from_millis(5);
/// How many error messages a [`LoopClient`] keeps.
const KEPT_ERRORS: usize = 10;

/// One connection: connect, send one byte, close.
pub fn connect_once(addr: SocketAddr) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.write_all(&[1])
}

/// Makes `count` sequential connections to `addr` from namespace `ns`,
/// stopping at the first failure.
pub fn connect_sequential(ns: &str, addr: SocketAddr, count: usize) -> Result<(), String> {
    netns::run_in(ns, || {
        (1..=count).try_for_each(|i| {
            connect_once(addr).map_err(|e| format!("connection {i} of {count} to {addr}: {e}"))
        })
    })
    .map_err(|e| format!("client in {ns}: {e}"))?
}

/// What a [`LoopClient`] saw.
#[derive(Debug, Default)]
pub struct LoopStats {
    /// Connections whose connect() succeeded.
    pub connected: usize,
    /// Failed connects or sends.
    pub failures: usize,
    /// The first few failure messages.
    pub errors: Vec<String>,
}

/// A client thread that connects over and over until stopped.
pub struct LoopClient {
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicUsize>,
    thread: Option<JoinHandle<io::Result<LoopStats>>>,
}

impl LoopClient {
    pub fn start(ns: &str, addr: SocketAddr) -> Result<LoopClient, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicUsize::new(0));
        let (stop2, connected2) = (Arc::clone(&stop), Arc::clone(&connected));
        let thread = netns::spawn_in(ns, move || connect_loop(addr, &stop2, &connected2))
            .map_err(|e| format!("starting client in {ns}: {e}"))?;
        Ok(LoopClient {
            stop,
            connected,
            thread: Some(thread),
        })
    }

    /// Connections established so far.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::SeqCst)
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

fn connect_loop(addr: SocketAddr, stop: &AtomicBool, connected: &AtomicUsize) -> LoopStats {
    let mut stats = LoopStats::default();
    let fail = |stats: &mut LoopStats, e: io::Error, what: &str| {
        stats.failures += 1;
        if stats.errors.len() < KEPT_ERRORS {
            stats.errors.push(format!("{what} {addr}: {e}"));
        }
    };
    while !stop.load(Ordering::SeqCst) {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(mut stream) => {
                stats.connected += 1;
                connected.fetch_add(1, Ordering::SeqCst);
                if let Err(e) = stream.write_all(&[1]) {
                    fail(&mut stats, e, "sending to");
                }
            }
            Err(e) => fail(&mut stats, e, "connecting to"),
        }
        thread::sleep(LOOP_PAUSE);
    }
    stats
}
