//! Network namespaces joined by a veth pair, so that test traffic stays inside the machine.
//!
//! Pair number `n` has a client namespace `fs-cli-<n>` and a server side that is either
//! the runner's own namespace or a namespace `fs-srv-<n>`; the veth ends are `fsv<n>a`
//! (server, 10.77.<n>.1/24, fd77:<n>::1/64) and `fsv<n>b` (client, .2 and ::2).

use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

/// Where `ip netns add` puts its namespace files.
pub const NETNS_DIR: &str = "/var/run/netns";

/// Host number and MAC address of [`NetnsPair::silent_peer`] (a locally administered unicast
/// address that no veth of the pairs gets: those are random).
const SILENT_HOST: u8 = 99;
const SILENT_MAC: &str = "02:fa:57:00:00:63";

/// How long to wait for a fresh pair to pass traffic.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the server end of the pair lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerSide {
    /// The namespace of the runner (the init namespace in the guest).
    Current,
    /// A new namespace `fs-srv-<n>`.
    Named,
}

pub struct NetnsPair {
    n: u8,
    server_ns: Option<String>,
    client_ns: String,
    /// Namespaces created so far, deleted on drop.
    created: Vec<String>,
}

/// Runs `ip` with `args`, in namespace `ns` if given.
fn ip(ns: Option<&str>, args: &[&str]) -> io::Result<()> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// How long [`settle_udev`] waits at most.
const UDEV_SETTLE_SECS: u32 = 60;

/// Set once a wait for udev timed out or failed: later pairs do not wait again.
static UDEV_STUCK: AtomicBool = AtomicBool::new(false);

/// Waits until udev has handled the events of the devices added and removed so far: each veth
/// pair's devices and queues raise a dozen, whose rules udev's workers run for seconds on the
/// emulated CPUs (a trace of 2026-12-07 found one running on the handshake's CPU when a test
/// expected it idle), so that a test does not measure while they share its CPUs. Without udev
/// there is nothing to wait for. If udev does not settle in time, a warning says so and no
/// later pair waits (the tests then measure beside udev's work, as before this wait).
pub fn settle_udev() -> io::Result<()> {
    if UDEV_STUCK.load(Ordering::Relaxed) {
        return Ok(());
    }
    let timeout = format!("--timeout={UDEV_SETTLE_SECS}");
    match Command::new("udevadm").args(["settle", &timeout]).output() {
        Ok(out) if !out.status.success() => {
            UDEV_STUCK.store(true, Ordering::Relaxed);
            info!(
                "warning: udevadm settle: {} ({}); later netns pairs do not wait for udev",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Address of `host` (1: server, 2: client) in pair `n`. Note that the `n` in the IPv6
/// address is read as hex: pair 10 has fd77:10::1, that is fd77:0x10::1.
fn address(n: u8, ipv6: bool, host: u8) -> String {
    if ipv6 {
        format!("fd77:{n}::{host}")
    } else {
        format!("10.77.{n}.{host}")
    }
}

/// [`address`] parsed.
fn ip_address(n: u8, ipv6: bool, host: u8) -> IpAddr {
    address(n, ipv6, host)
        .parse()
        .expect("netns pair addresses are valid")
}

/// Hex mask of `cpus` in the kernel's bitmap format (32-bit groups separated by commas).
pub fn cpu_mask_hex(cpus: &[usize]) -> String {
    let words = cpus.iter().max().map_or(1, |max| max / 32 + 1);
    let mut mask = vec![0u32; words];
    for &cpu in cpus {
        mask[cpu / 32] |= 1 << (cpu % 32);
    }
    let mut groups = mask.iter().rev();
    let mut text = format!("{:x}", groups.next().copied().unwrap_or(0));
    for word in groups {
        text.push_str(&format!(",{word:08x}"));
    }
    text
}

impl NetnsPair {
    /// True if pair number `n` seems to be in use (left over or someone else's).
    pub fn in_use(n: u8) -> bool {
        Path::new(NETNS_DIR).join(format!("fs-cli-{n}")).exists()
            || Path::new(NETNS_DIR).join(format!("fs-srv-{n}")).exists()
            || Path::new(&format!("/sys/class/net/fsv{n}a")).exists()
    }

    /// Creates pair `n`, spreads the server end's receive processing over `cpus` with RPS,
    /// and waits until the client can reach the server over IPv4 and IPv6.
    pub fn create(n: u8, side: ServerSide, cpus: &[usize]) -> io::Result<NetnsPair> {
        let mut pair = NetnsPair {
            n,
            server_ns: (side == ServerSide::Named).then(|| format!("fs-srv-{n}")),
            client_ns: format!("fs-cli-{n}"),
            created: Vec::new(),
        };
        // From here on, dropping `pair` removes whatever was created.
        for ns in pair.server_ns.iter().chain([&pair.client_ns]) {
            ip(None, &["netns", "add", ns])?;
            pair.created.push(ns.clone());
        }
        let srv = pair.server_ns.as_deref();
        let cli = Some(pair.client_ns.as_str());
        let (a, b) = (pair.server_dev(), format!("fsv{n}b"));
        ip(
            srv,
            &["link", "add", &a, "type", "veth", "peer", "name", &b],
        )?;
        ip(srv, &["link", "set", &b, "netns", &pair.client_ns])?;
        for (ns, dev, host) in [(srv, &a, 1), (cli, &b, 2)] {
            let v4 = format!("{}/24", address(n, false, host));
            let v6 = format!("{}/64", address(n, true, host));
            ip(ns, &["addr", "add", &v4, "dev", dev])?;
            ip(ns, &["addr", "add", &v6, "dev", dev, "nodad"])?;
            ip(ns, &["link", "set", dev, "up"])?;
        }
        for ns in srv.iter().chain([&pair.client_ns.as_str()]) {
            ip(Some(ns), &["link", "set", "lo", "up"])?;
        }
        pair.enable_rps(&cpu_mask_hex(cpus))?;
        pair.wait_reachable(pair.server_ip(false))?;
        pair.wait_reachable(pair.server_ip(true))?;
        settle_udev()?;
        Ok(pair)
    }

    /// The named server namespace, or `None` for the runner's namespace.
    pub fn server_ns(&self) -> Option<&str> {
        self.server_ns.as_deref()
    }

    pub fn client_ns(&self) -> &str {
        &self.client_ns
    }

    /// The server end of the veth pair.
    pub fn server_dev(&self) -> String {
        format!("fsv{}a", self.n)
    }

    pub fn server_ip(&self, ipv6: bool) -> IpAddr {
        ip_address(self.n, ipv6, 1)
    }

    /// The client end of the veth pair.
    pub fn client_dev(&self) -> String {
        format!("fsv{}b", self.n)
    }

    pub fn client_ip(&self, ipv6: bool) -> IpAddr {
        ip_address(self.n, ipv6, 2)
    }

    /// Steers the server end's receive processing (handshakes included) to `cpus` with RPS.
    pub fn set_rps(&self, cpus: &[usize]) -> io::Result<()> {
        self.enable_rps(&cpu_mask_hex(cpus))
    }

    /// Steers the client end's receive processing (the server's replies) to `cpus` with RPS.
    pub fn set_client_rps(&self, cpus: &[usize]) -> io::Result<()> {
        write_rps(
            Some(&self.client_ns),
            &self.client_dev(),
            &cpu_mask_hex(cpus),
        )
    }

    /// Enables RPS on the server end's receive queue.
    fn enable_rps(&self, mask: &str) -> io::Result<()> {
        write_rps(self.server_ns.as_deref(), &self.server_dev(), mask)
    }

    /// An address on the pair's link that nobody answers, from the client's side: the
    /// client end gets a permanent neighbour entry for it with a MAC address that no device
    /// has, so the server end drops whatever the client sends there (not addressed to it).
    /// A connect() to it keeps its port in SYN_SENT until the socket is closed (or the SYN
    /// retries run out).
    pub fn silent_peer(&self, ipv6: bool) -> io::Result<IpAddr> {
        let addr = address(self.n, ipv6, SILENT_HOST);
        let dev = self.client_dev();
        ip(
            Some(&self.client_ns),
            &[
                "neigh",
                "replace",
                &addr,
                "lladdr",
                SILENT_MAC,
                "dev",
                &dev,
                "nud",
                "permanent",
            ],
        )?;
        Ok(ip_address(self.n, ipv6, SILENT_HOST))
    }

    /// Waits until a TCP connection attempt from the client to the server's closed
    /// discard port is answered (refused), i.e. addresses, routes and neighbours work.
    fn wait_reachable(&self, server: IpAddr) -> io::Result<()> {
        let probe = SocketAddr::new(server, 9);
        run_in(&self.client_ns, || {
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                let err = match TcpStream::connect_timeout(&probe, Duration::from_secs(2)) {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(()),
                    Err(e) => e,
                };
                if Instant::now() > deadline {
                    return Err(io::Error::other(format!("{probe} unreachable: {err}")));
                }
                thread::sleep(Duration::from_millis(100));
            }
        })?
    }
}

/// Writes `mask` to the RPS CPUs of receive queue 0 of device `dev` of namespace `ns` (the
/// runner's if `None`). sysfs shows the devices of the namespace it was mounted in, and `ip
/// netns exec` mounts a fresh one.
fn write_rps(ns: Option<&str>, dev: &str, mask: &str) -> io::Result<()> {
    let path = format!("/sys/class/net/{dev}/queues/rx-0/rps_cpus");
    let Some(ns) = ns else {
        return std::fs::write(&path, mask)
            .map_err(|e| io::Error::new(e.kind(), format!("writing {path}: {e}")));
    };
    let script = format!("echo {mask} > {path}");
    ip(None, &["netns", "exec", ns, "sh", "-c", &script])
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting one veth end deletes both, synchronously; namespace teardown is
        // asynchronous and would leave the device behind for a while.
        let _ = ip(
            self.server_ns.as_deref(),
            &["link", "del", &self.server_dev()],
        );
        for ns in self.created.drain(..).rev() {
            if let Err(e) = ip(None, &["netns", "del", &ns]) {
                eprintln!("fastsocket-tests: cleanup: {e}");
            }
        }
    }
}

fn netns_file(ns: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(ns)
}

fn open_netns(ns: &str) -> io::Result<File> {
    let path = netns_file(ns);
    File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Spawns a thread that runs `f` inside network namespace `ns`.
pub fn spawn_in<T, F>(ns: &str, f: F) -> io::Result<JoinHandle<io::Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let file = open_netns(ns)?;
    thread::Builder::new()
        .name(format!("in-{ns}"))
        .spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET)?;
            Ok(f())
        })
}

/// Runs `f` inside network namespace `ns` (on a helper thread) and returns its result.
/// A panic in `f` is passed on to the caller.
pub fn run_in<T: Send, F: FnOnce() -> T + Send>(ns: &str, f: F) -> io::Result<T> {
    let file = open_netns(ns)?;
    thread::scope(|scope| {
        let handle = scope.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET)?;
            Ok(f())
        });
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_addresses() {
        assert_eq!(
            address(200, true, 1).parse::<IpAddr>().unwrap().to_string(),
            "fd77:200::1"
        );
        assert_eq!(address(7, false, 2), "10.77.7.2");
    }

    #[test]
    fn formats_cpu_masks() {
        assert_eq!(cpu_mask_hex(&[0, 1]), "3");
        assert_eq!(cpu_mask_hex(&[0]), "1");
        assert_eq!(cpu_mask_hex(&[1, 3]), "a");
        assert_eq!(cpu_mask_hex(&[0, 32]), "1,00000001");
        assert_eq!(cpu_mask_hex(&(0..40).collect::<Vec<_>>()), "ff,ffffffff");
    }

    /// Needs root and iproute2: `sudo cargo test -- --ignored`.
    #[test]
    #[ignore = "needs root and iproute2"]
    fn creates_and_removes_namespaces() {
        let n = (200..250).find(|&n| !NetnsPair::in_use(n)).unwrap();
        let cpus = crate::procfs::online_cpus().unwrap();
        for side in [ServerSide::Current, ServerSide::Named] {
            let pair = NetnsPair::create(n, side, &cpus).unwrap();
            assert!(netns_file(pair.client_ns()).exists());
            let rps = format!("/sys/class/net/{}/queues/rx-0/rps_cpus", pair.server_dev());
            match pair.server_ns() {
                None => assert!(Path::new(&rps).exists()),
                Some(ns) => assert!(netns_file(ns).exists()),
            }
            drop(pair);
            assert!(!NetnsPair::in_use(n), "pair {n} left behind");
        }
    }
}
