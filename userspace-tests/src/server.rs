//! A TCP server with one blocking accept thread pinned to each CPU.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::{netns, sys};

const BACKLOG: i32 = 512;
/// How long a connection may take to send its byte and FIN.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One accepted connection as userspace saw it.
#[derive(Clone, Copy, Debug)]
pub struct Accepted {
    /// CPU of the accepting thread when accept() returned.
    pub cpu: usize,
    /// SO_INCOMING_CPU of the accepted socket (-1 if unset).
    pub incoming_cpu: i32,
}

impl Accepted {
    /// Whether the handshake completed on the accepting CPU.
    pub fn is_local(&self) -> bool {
        usize::try_from(self.incoming_cpu) == Ok(self.cpu)
    }
}

#[derive(Default)]
struct Shared {
    accepted: Mutex<Vec<Accepted>>,
    changed: Condvar,
    errors: Mutex<Vec<String>>,
    stopping: AtomicBool,
}

impl Shared {
    fn error(&self, msg: String) {
        self.errors.lock().unwrap().push(msg);
    }
}

pub struct AcceptServer {
    listener: Arc<TcpListener>,
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    sys::set_listen_backlog(&listener, BACKLOG)?;
    Ok(listener)
}

impl AcceptServer {
    /// Listens on an ephemeral port of `ip` (in namespace `ns`, or the runner's if `None`)
    /// and starts one accept thread pinned to each of `cpus`.
    pub fn start(ip: IpAddr, cpus: &[usize], ns: Option<&str>) -> Result<AcceptServer, String> {
        let bind = SocketAddr::new(ip, 0);
        let listener = match ns {
            None => listen(bind),
            Some(ns) => netns::run_in(ns, || listen(bind)).and_then(|r| r),
        }
        .map_err(|e| format!("listening on {bind}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let mut server = AcceptServer {
            listener: Arc::new(listener),
            addr,
            shared: Arc::default(),
            threads: Vec::new(),
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        for &cpu in cpus {
            let listener = Arc::clone(&server.listener);
            let shared = Arc::clone(&server.shared);
            let ready = ready_tx.clone();
            let thread = thread::Builder::new()
                .name(format!("accept-{cpu}"))
                .spawn(move || accept_loop(cpu, &listener, &shared, ready))
                .map_err(|e| format!("spawning accept thread: {e}"))?;
            server.threads.push(thread);
        }
        for _ in cpus {
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

    /// Number of connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.lock().unwrap().len()
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
    /// accept or read failed.
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
        if let Err(e) = sys::shutdown_listener(&self.listener) {
            // Without the shutdown the threads would block forever: better to leak them.
            eprintln!("fastsocket-tests: shutdown of listener {}: {e}", self.addr);
            return;
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

fn accept_loop(cpu: usize, listener: &TcpListener, shared: &Shared, ready: Sender<io::Result<()>>) {
    if let Err(e) = sys::pin_current_thread(cpu) {
        let _ = ready.send(Err(io::Error::new(
            e.kind(),
            format!("pinning to cpu {cpu}: {e}"),
        )));
        return;
    }
    let _ = ready.send(Ok(()));
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                match record(&stream) {
                    Ok(accepted) => {
                        shared.accepted.lock().unwrap().push(accepted);
                        shared.changed.notify_all();
                    }
                    Err(e) => shared.error(format!("inspecting connection from {peer}: {e}")),
                }
                if let Err(e) = drain(stream) {
                    shared.error(format!("reading from {peer}: {e}"));
                }
            }
            // shutdown() makes accept fail with EINVAL.
            Err(_) if shared.stopping.load(Ordering::SeqCst) => return,
            Err(e) => {
                shared.error(format!("accept on cpu {cpu}: {e}"));
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn record(stream: &TcpStream) -> io::Result<Accepted> {
    let cpu = sys::current_cpu()?;
    let incoming_cpu = sys::incoming_cpu(stream)?;
    Ok(Accepted { cpu, incoming_cpu })
}

/// Reads until the client closes.
fn drain(mut stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    io::copy(&mut stream, &mut io::sink())?;
    Ok(())
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
            client::connect_sequential(pair.client_ns(), server.addr(), 30).unwrap();
            server.wait_for(30, Duration::from_secs(10)).unwrap();

            let looping = LoopClient::start(pair.client_ns(), server.addr()).unwrap();
            thread::sleep(Duration::from_millis(300));
            let stats = looping.stop().unwrap();
            assert!(stats.connected > 0 && stats.failures == 0, "{stats:?}");
            server
                .wait_for(30 + stats.connected, Duration::from_secs(10))
                .unwrap();

            let accepted = server.stop().unwrap();
            assert_eq!(accepted.len(), 30 + stats.connected);
            assert!(accepted.iter().all(|a| cpus.contains(&a.cpu)));
            assert!(accepted.iter().all(|a| a.incoming_cpu >= 0), "{accepted:?}");
            let local = accepted.iter().filter(|a| a.is_local()).count();
            eprintln!("{side:?} ipv6={ipv6}: {local}/{} local", accepted.len());
        }
    }
}
