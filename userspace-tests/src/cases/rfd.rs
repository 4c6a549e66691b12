//! Receive Flow Deliver (RFD): a TCP connection's local port names its CPU, `cpu_of(port) =
//! (port >> 1) % nr_cpu_ids`. An autobinding connect() or bind() on CPU c first takes a free
//! port of c (in stock's order, then the stock search), and a received TCP packet whose
//! destination port lies in the receiving namespace's ephemeral range (not reserved) and whose
//! source port does not is processed on its destination port's CPU instead of where RPS would
//! send it, when RPS is on for the receiving queue and `rfd` and `enabled` are 1 in that
//! namespace. A client connection is then connected, processed and closed on one CPU.
//!
//! Set-up: the server end of a netns pair lives in its own namespace and servers listen on
//! ports outside the ephemeral range (replies from such ports are steered); RPS is on over
//! every CPU on the client's veth end, where RFD decides. Stock arms run with the module
//! unloaded (`rmmod`), as in percpu.rs.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};

use super::apps::{
    check_body, start_haproxy, start_nginx, wrk_until, Listener, Load, WorkDir, TARGET_REQUESTS,
    WRK_TIMEOUT,
};
use super::listen::Share;
use super::log::KernelWatch;
use super::percpu::{cpus, on_cpu_in, on_each_cpu, on_threads, stock};
use super::scope::{check_int_knob, expect_einval_bytes};
use super::{in_ns, Context, Ctx, KnobGuard, TestResult, ACCEPT_TIMEOUT};
use crate::client::{self, LoopClient, LoopStats};
use crate::klog::LogWatch;
use crate::netns::{NetnsPair, ServerSide};
use crate::procfs::{self, Counters, CpuStats};
use crate::server::{AcceptServer, Accepted, ServerOpts, READ_TIMEOUT};
use crate::{sys, tracefs};

/// The servers' ports: outside the ephemeral range, so that their replies are steered.
const SERVER_PORT: u16 = 5080;
const ECHO_PORT: u16 = 5081;
/// First destination port of the exhaustion arms (one port per arm) and of the TIME_WAIT
/// reuse arms.
const EXHAUSTION_PORT: u16 = 6000;
const TW_PORT: u16 = 6100;

const PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
const TCP_TW_REUSE: &str = "/proc/sys/net/ipv4/tcp_tw_reuse";
const TCP_SYN_RETRIES: &str = "/proc/sys/net/ipv4/tcp_syn_retries";

/// How long a set-up that is under way (TIME_WAITs appearing, load starting) may take.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The CPU that owns `port`.
fn cpu_of(port: u16, nr_cpu_ids: usize) -> usize {
    (usize::from(port) >> 1) % nr_cpu_ids
}

/// How many ports of `low..=high` `cpu` owns.
fn owned(low: u16, high: u16, cpu: usize, nr_cpu_ids: usize) -> usize {
    (low..=high)
        .filter(|&p| cpu_of(p, nr_cpu_ids) == cpu)
        .count()
}

/// Runs `f` in the client's namespace.
fn in_client<T: Send>(pair: &NetnsPair, f: impl FnOnce() -> TestResult<T> + Send) -> TestResult<T> {
    in_ns(pair.client_ns(), f)
}

/// Writes `value` to the sysctl at `path` in the client's namespace.
fn client_sysctl(pair: &NetnsPair, path: &str, value: &str) -> TestResult {
    in_client(pair, || {
        fs::write(path, value).context(format!("writing {value:?} to {path}"))
    })
}

/// Writes `value` to the module's knob `knob` in namespace `ns`.
fn knob_in(ns: &str, knob: &str, value: &str) -> TestResult {
    in_ns(ns, || {
        procfs::write_knob(knob, value.as_bytes()).context(format!("writing {value} to {knob}"))
    })
}

/// Writes `value` to the module's knob `knob` in the client's namespace.
fn client_knob(pair: &NetnsPair, knob: &str, value: &str) -> TestResult {
    knob_in(pair.client_ns(), knob, value)
}

/// The server's namespace of a pair made with [`ServerSide::Named`].
fn server_ns(pair: &NetnsPair) -> TestResult<&str> {
    Ok(pair.server_ns().ok_or("the pair has no server namespace")?)
}

/// Writes `value` to the module's knob `knob` in the server's namespace.
fn server_knob(pair: &NetnsPair, knob: &str, value: &str) -> TestResult {
    knob_in(server_ns(pair)?, knob, value)
}

/// The module's counters in the client's namespace.
fn client_counters(pair: &NetnsPair) -> TestResult<Counters> {
    in_client(pair, procfs::read_counters)
}

/// The RFD columns of a counters' increase, per CPU, for messages.
fn rfd_columns(delta: &Counters) -> String {
    delta
        .per_cpu
        .iter()
        .map(|(cpu, s)| {
            format!(
                "cpu{cpu}: rfd_ports {} rfd_fallback {} rfd_steered {} rfd_local {}",
                s.rfd_ports, s.rfd_fallback, s.rfd_steered, s.rfd_local
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The module loaded, the CPUs (at least two), `nr_cpu_ids`, and a netns pair for RFD: the
/// server end in a namespace of its own, RPS over every CPU on both ends, and `rfd` and
/// `enabled` at their default 1 in the (fresh) client namespace.
fn rfd_setup(ctx: &mut Ctx) -> TestResult<(Vec<usize>, usize, NetnsPair)> {
    ctx.ensure_loaded()?;
    let cpus = cpus(ctx)?;
    let ncpu = procfs::nr_cpu_ids()?;
    let pair = ctx.netns_pair(ServerSide::Named)?;
    pair.set_client_rps(&cpus)
        .context("turning RPS on on the client's veth end")?;
    in_client(&pair, || {
        for knob in [procfs::RFD, procfs::ENABLED] {
            let value = procfs::read_knob_int(knob)?;
            ensure!(
                value == 1,
                "{} reads {value} in a fresh namespace, expected the default 1",
                procfs::knob_path(knob)
            );
        }
        Ok(())
    })?;
    Ok((cpus, ncpu, pair))
}

// ---------------------------------------------------------------------------------------------
// 1 and 2. Locality of short client connections.

/// Connections per client thread in a locality arm.
const LOCALITY_CONNECTIONS: usize = 300;
/// Connections per client thread in the arms with RFD switched off.
const SWITCH_CONNECTIONS: usize = 100;

/// Where a client connection ran.
#[derive(Clone, Copy, Debug)]
struct ConnCpus {
    /// sched_getcpu() just before connect().
    connect: usize,
    port: u16,
    /// SO_INCOMING_CPU once the reply was read: where its last packet was processed.
    incoming: i32,
    /// sched_getcpu() just before close().
    close: usize,
}

impl ConnCpus {
    /// Connected, processed and closed on the CPU that owns its port.
    fn is_local(&self, ncpu: usize) -> bool {
        let owner = cpu_of(self.port, ncpu);
        self.connect == owner && usize::try_from(self.incoming) == Ok(owner) && self.close == owner
    }
}

/// One short connection to `addr`: connect, one-byte request, reply, close.
fn short_connection(addr: SocketAddr) -> TestResult<ConnCpus> {
    let connect = sys::current_cpu().context("sched_getcpu")?;
    let mut stream = TcpStream::connect_timeout(&addr, client::CONNECT_TIMEOUT)
        .context(format!("connect to {addr}"))?;
    let port = stream.local_addr().context("getsockname")?.port();
    client::exchange(&mut stream).map_err(|e| format!("port {port} to {addr}: {e}"))?;
    let incoming = sys::incoming_cpu(&stream).context("SO_INCOMING_CPU")?;
    let close = sys::current_cpu().context("sched_getcpu")?;
    drop(stream);
    Ok(ConnCpus {
        connect,
        port,
        incoming,
        close,
    })
}

/// What a locality arm saw.
struct Locality {
    share: Share,
    /// Connections whose port is owned by their connect CPU.
    port_of_connect_cpu: usize,
    /// Connections whose last packet was processed on their port's CPU.
    incoming_on_port_cpu: usize,
    /// Connections closed on their connect CPU.
    closed_on_connect_cpu: usize,
}

impl Locality {
    fn of(conns: &[ConnCpus], ncpu: usize) -> Locality {
        let count = |f: &dyn Fn(&ConnCpus) -> bool| conns.iter().filter(|c| f(c)).count();
        Locality {
            share: Share {
                local: count(&|c| c.is_local(ncpu)),
                total: conns.len(),
            },
            port_of_connect_cpu: count(&|c| cpu_of(c.port, ncpu) == c.connect),
            incoming_on_port_cpu: count(&|c| {
                usize::try_from(c.incoming) == Ok(cpu_of(c.port, ncpu))
            }),
            closed_on_connect_cpu: count(&|c| c.close == c.connect),
        }
    }
}

impl fmt::Display for Locality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (port of the connect CPU {}, SO_INCOMING_CPU the port's CPU {}, closed on the \
             connect CPU {})",
            self.share,
            self.port_of_connect_cpu,
            self.incoming_on_port_cpu,
            self.closed_on_connect_cpu
        )
    }
}

/// `per_thread` short connections to `addr` from each client thread of `pins` (pinned to the
/// CPU named, if any), all threads at once.
fn locality_arm(
    pair: &NetnsPair,
    addr: SocketAddr,
    pins: &[Option<usize>],
    per_thread: usize,
) -> TestResult<Vec<ConnCpus>> {
    let per_thread = on_threads(pair.client_ns(), pins, move |_| {
        (0..per_thread)
            .map(|i| short_connection(addr).context(format!("connection {}", i + 1)))
            .collect::<TestResult<Vec<_>>>()
    })?;
    Ok(per_thread.into_iter().flatten().collect())
}

/// Whether the kernel calls the RFD hooks for the client's namespace (`rfd_net` in its
/// /proc/net/fastsocket_hooks).
fn client_rfd_net(pair: &NetnsPair) -> TestResult<bool> {
    in_client(pair, || procfs::read_hooks_flag("rfd_net"))
}

/// Locality with `rfd=0` or `enabled=0` in the client's namespace: the kernel no longer calls
/// the RFD hooks for it, and the RFD counters must not move. Returns the connections made.
fn switched_off_arm(
    pair: &NetnsPair,
    addr: SocketAddr,
    pins: &[Option<usize>],
    knob: &str,
    ncpu: usize,
) -> TestResult<usize> {
    ensure!(
        client_rfd_net(pair)?,
        "rfd_net is 0 in the client's namespace with rfd=1 and enabled=1"
    );
    client_knob(pair, knob, "0")?;
    let off = client_rfd_net(pair);
    let before = client_counters(pair)?;
    let conns = locality_arm(pair, addr, pins, SWITCH_CONNECTIONS);
    let after = client_counters(pair);
    client_knob(pair, knob, "1")?;
    let on = client_rfd_net(pair)?;
    ensure!(
        !off?,
        "rfd_net is 1 in the client's namespace with {knob}=0: the kernel still calls the hooks"
    );
    ensure!(on, "rfd_net stayed 0 after {knob}=1 again");
    let conns = conns?;
    let delta = after?.since(&before)?;
    let total = delta.total();
    info!(
        "with {knob}=0: {}; counters {}",
        Locality::of(&conns, ncpu),
        rfd_columns(&delta)
    );
    ensure!(
        total.rfd_ports + total.rfd_fallback + total.rfd_steered + total.rfd_local == 0,
        "with {knob}=0 in the client's namespace, {} connections moved the RFD counters: {}",
        conns.len(),
        rfd_columns(&delta)
    );
    Ok(conns.len())
}

/// Locality of short connections from one client thread per CPU (pinned or not) to a server
/// in the server's namespace: with the module (`rfd=1`), checked against `floors`, and stock,
/// printed; `switches`: also with `rfd=0` and `enabled=0` (counters unmoved).
fn rfd_locality(
    ctx: &mut Ctx,
    variant: &str,
    ipv6: bool,
    pinned: bool,
    floors: Floors,
    switches: bool,
) -> TestResult {
    let (cpus, ncpu, pair) = rfd_setup(ctx)?;
    let ctx: &Ctx = ctx;
    let server = AcceptServer::start_with(
        &ServerOpts::pinned(pair.server_ip(ipv6), &cpus)
            .ns(pair.server_ns())
            .port(SERVER_PORT),
    )?;
    let addr = server.addr();
    let pins: Vec<Option<usize>> = cpus.iter().map(|&c| pinned.then_some(c)).collect();

    let start = Instant::now();
    let before = client_counters(&pair)?;
    let module_conns = locality_arm(&pair, addr, &pins, LOCALITY_CONNECTIONS)?;
    let delta = client_counters(&pair)?.since(&before)?;
    let module_time = start.elapsed();
    let mut connections = module_conns.len();
    if switches {
        for knob in [procfs::RFD, procfs::ENABLED] {
            connections += switched_off_arm(&pair, addr, &pins, knob, ncpu)?;
        }
    }
    let start = Instant::now();
    let stock_conns = stock(ctx, || {
        locality_arm(&pair, addr, &pins, LOCALITY_CONNECTIONS)
    })?;
    let stock_time = start.elapsed();
    connections += stock_conns.len();
    server.wait_for(connections, ACCEPT_TIMEOUT)?;
    server.stop()?;

    let (module, stock) = (
        Locality::of(&module_conns, ncpu),
        Locality::of(&stock_conns, ncpu),
    );
    info!(
        "RFD locality {variant}: stock {}, module {}",
        stock.share, module.share
    );
    info!(
        "  module: {module} in {:.1} s; stock: {stock} in {:.1} s",
        module_time.as_secs_f64(),
        stock_time.as_secs_f64()
    );
    info!("  module counters: {}", rfd_columns(&delta));
    let misses: Vec<String> = module_conns
        .iter()
        .filter(|c| !c.is_local(ncpu))
        .take(10)
        .map(|c| {
            format!(
                "port {} (cpu {}): connect {} incoming {} close {}",
                c.port,
                cpu_of(c.port, ncpu),
                c.connect,
                c.incoming,
                c.close
            )
        })
        .collect();
    if !misses.is_empty() {
        info!(
            "  module, first non-local connections: {}",
            misses.join("; ")
        );
    }

    let total = delta.total();
    let n = module_conns.len() as u64;
    ensure!(
        total.rfd_ports == n && total.rfd_fallback == 0,
        "{n} connects in the client's namespace, but rfd_ports rose by {} and rfd_fallback by \
         {} (expected {n} and 0): {}",
        total.rfd_ports,
        total.rfd_fallback,
        rfd_columns(&delta)
    );
    if pinned {
        for &cpu in &cpus {
            let ports = delta.cpu(cpu).rfd_ports;
            ensure!(
                ports == LOCALITY_CONNECTIONS as u64,
                "the client thread pinned to cpu {cpu} made {LOCALITY_CONNECTIONS} connects, \
                 rfd_ports of cpu {cpu} rose by {ports}: {}",
                rfd_columns(&delta)
            );
        }
    }
    ensure!(
        total.rfd_steered + total.rfd_local >= n,
        "{n} connections received at least their SYN-ACK each through the client's RPS, but \
         rfd_steered + rfd_local rose by only {}: {}",
        total.rfd_steered + total.rfd_local,
        rfd_columns(&delta)
    );
    let total = module.share.total;
    for (what, count, floor) in [
        ("local", module.share.local, floors.local),
        (
            "on a port of the connect CPU",
            module.port_of_connect_cpu,
            floors.port_of_connect_cpu,
        ),
        (
            "with SO_INCOMING_CPU the port's CPU",
            module.incoming_on_port_cpu,
            floors.incoming_on_port_cpu,
        ),
    ] {
        ensure!(
            count * 100 >= floor * total,
            "RFD locality {variant} with the module: {count} of {total} connections {what}, \
             expected at least {floor}%: {module} (stock: {stock})"
        );
    }
    let (local, unmoved) = (module.share.local, module.closed_on_connect_cpu);
    ensure!(
        local * 100 >= floors.local_of_unmoved * unmoved,
        "RFD locality {variant} with the module: {local} connections local of the {unmoved} \
         whose thread closed on its connect CPU, expected at least {}%: {module} (stock: \
         {stock})",
        floors.local_of_unmoved
    );
    Ok(())
}

/// The least shares (percent) of a locality arm's connections with the module: local (connect,
/// port, receive processing and close on one CPU), on a port of the CPU that ran connect(), and
/// with their last packet processed on their port's CPU; and local among the connections whose
/// thread closed them on the CPU that ran their connect().
#[derive(Clone, Copy, Debug)]
struct Floors {
    local: usize,
    port_of_connect_cpu: usize,
    incoming_on_port_cpu: usize,
    local_of_unmoved: usize,
}

const PINNED: Floors = Floors {
    local: 99,
    port_of_connect_cpu: 99,
    incoming_on_port_cpu: 99,
    local_of_unmoved: 99,
};

/// Unpinned client threads: RFD gives a connection a port of the CPU that runs its connect()
/// and processes its packets there, but the scheduler may move the thread between connect()
/// and close() (or even between sched_getcpu() and the port choice), which RFD does not
/// control: a waking thread whose CPU is busy goes to the idle one. In the emulated guest with
/// 2 vCPUs the local share went from 83.7% to 71.7% over the project's changes to the test
/// server and the scheduler's load, every miss a thread that closed on the other CPU (one boot:
/// 461 of 600 local, 462 closed on their connect CPU, 595 on a port of their connect CPU, 600
/// processed on their port's CPU; stock 21.3%). So what RFD controls is held to 95-99%: the
/// port, the receive processing, and locality among the connections whose thread did not
/// move; the overall local share to 65%, far above stock's (about 25% at 2 CPUs) and below
/// the 71.7% seen, so that a further drop (the scheduler moving more threads, which the
/// module could cause by pulling work onto a client's CPU) still fails the test.
const UNPINNED: Floors = Floors {
    local: 65,
    port_of_connect_cpu: 95,
    incoming_on_port_cpu: 99,
    local_of_unmoved: 95,
};

/// Client threads pinned to each CPU, IPv4; also checks that `rfd=0` and `enabled=0` turn
/// RFD off.
pub fn rfd_locality_pinned(ctx: &mut Ctx) -> TestResult {
    rfd_locality(ctx, "pinned", false, true, PINNED, true)
}

pub fn rfd_locality_pinned_ipv6(ctx: &mut Ctx) -> TestResult {
    rfd_locality(ctx, "pinned-ipv6", true, true, PINNED, false)
}

pub fn rfd_locality_unpinned(ctx: &mut Ctx) -> TestResult {
    rfd_locality(ctx, "unpinned", false, false, UNPINNED, false)
}

// ---------------------------------------------------------------------------------------------
// 2b. The server's end of a same-host connection (`rfd_peer`).

/// Connections per client thread in each `rfd_peer` arm.
const PEER_CONNECTIONS: usize = 200;

/// Whether the kernel asks the module about segments from same-host peers in the server's
/// namespace (`rfd_peer_net` in its /proc/net/fastsocket_hooks).
fn server_rfd_peer_net(pair: &NetnsPair) -> TestResult<bool> {
    in_ns(server_ns(pair)?, || procfs::read_hooks_flag("rfd_peer_net"))
}

/// Of the server's ends of `accepted`: those last processed (SO_INCOMING_CPU) on the CPU their
/// client's port maps to, and those accepted there.
fn server_ends_on_port_cpu(accepted: &[Accepted], ncpu: usize) -> (Share, Share) {
    let share = |cpu: &dyn Fn(&Accepted) -> Option<usize>| Share {
        local: accepted
            .iter()
            .filter(|a| cpu(a) == Some(cpu_of(a.peer_port, ncpu)))
            .count(),
        total: accepted.len(),
    };
    (
        share(&|a| usize::try_from(a.incoming_cpu).ok()),
        share(&|a| Some(a.cpu)),
    )
}

/// The least share (percent) of the server's ends accepted on their client port's CPU with
/// `rfd_peer=1`: every segment is processed there, but the local listen table lets another
/// CPU's worker take a connection once the hold for a busy worker ends (listen.md), which
/// the emulated guest's slow workers hit now and then (2 of 132 IPv6 connections in one run).
const PEER_ACCEPTED_FLOOR: usize = 95;

/// One `rfd_peer` arm: `per_thread` short connections from each client thread (pinned to each
/// CPU) to `server`; the client's ends and the server's, and the client namespace's RFD
/// counters' increase.
fn peer_arm(
    pair: &NetnsPair,
    server: &AcceptServer,
    pins: &[Option<usize>],
    per_thread: usize,
) -> TestResult<(Vec<ConnCpus>, Vec<Accepted>, Counters)> {
    let first = server.accepted();
    let before = client_counters(pair)?;
    let conns = locality_arm(pair, server.addr(), pins, per_thread)?;
    let delta = client_counters(pair)?.since(&before)?;
    server.wait_for(first + conns.len(), ACCEPT_TIMEOUT)?;
    let accepted = server.snapshot()[first..].to_vec();
    ensure!(
        accepted.len() == conns.len(),
        "{} connections made, the server accepted {}",
        conns.len(),
        accepted.len()
    );
    Ok((conns, accepted, delta))
}

/// `rfd_peer` (patch 0017): a server namespace that turns it on has its end of a connection
/// from a same-host client namespace with RFD on processed where the client's end is, on the
/// CPU that owns the client's port, so with a worker pinned on each CPU the whole connection,
/// both ends, runs on the CPU that opened it. Client threads pinned to each CPU connect to a
/// server with an accepting thread pinned on each CPU, first with `rfd_peer` at its default 0
/// (the server's end keeps the stock RPS choice, spread by the client socket's hash: checked
/// to be far from 100%), then with 1 over IPv4 and IPv6 (at least 99% of the server's ends
/// last processed on the client port's CPU and [`PEER_ACCEPTED_FLOOR`]% accepted there, and
/// the client's ends local as in `rfd_locality_pinned`; the client namespace's steering
/// counters count both ends), then at 0 again (the kernel stops asking: `rfd_peer_net` 0).
pub fn rfd_peer_passive_side(ctx: &mut Ctx) -> TestResult {
    let (cpus, ncpu, pair) = rfd_setup(ctx)?;
    let pins: Vec<Option<usize>> = cpus.iter().map(|&c| Some(c)).collect();
    let server_opts = |ipv6| {
        ServerOpts::pinned(pair.server_ip(ipv6), &cpus)
            .ns(pair.server_ns())
            .port(SERVER_PORT)
    };
    let server = AcceptServer::start_with(&server_opts(false))?;
    let server6 = AcceptServer::start_with(&server_opts(true))?;
    let default = in_ns(server_ns(&pair)?, || {
        procfs::read_knob_int(procfs::RFD_PEER)
    })?;
    ensure!(
        default == 0 && !server_rfd_peer_net(&pair)?,
        "a fresh server namespace reads rfd_peer {default}, expected the default 0 (and \
         rfd_peer_net 0)"
    );

    let (_, off_ends, off_delta) = peer_arm(&pair, &server, &pins, PEER_CONNECTIONS)?;
    let (off, _) = server_ends_on_port_cpu(&off_ends, ncpu);
    server_knob(&pair, procfs::RFD_PEER, "1")?;
    let on_net = server_rfd_peer_net(&pair);
    let arms = [(false, &server), (true, &server6)].map(|(ipv6, server)| {
        peer_arm(&pair, server, &pins, PEER_CONNECTIONS).context(if ipv6 { "IPv6" } else { "IPv4" })
    });
    server_knob(&pair, procfs::RFD_PEER, "0")?;
    let off_again = server_rfd_peer_net(&pair)?;
    server.stop()?;
    server6.stop()?;
    ensure!(
        on_net?,
        "rfd_peer_net stayed 0 in the server's namespace after rfd_peer=1"
    );
    ensure!(
        !off_again,
        "rfd_peer_net stayed 1 in the server's namespace after rfd_peer=0"
    );

    info!(
        "rfd_peer=0: server ends processed on the client port's CPU {off}; client counters {}",
        rfd_columns(&off_delta)
    );
    ensure!(
        off.local * 100 < 90 * off.total,
        "with rfd_peer at its default 0, {off} of the server's ends ran on their client port's \
         CPU: the server's side should keep the stock choice, spread by the client's hash"
    );
    for (arm, family) in arms.into_iter().zip(["IPv4", "IPv6"]) {
        let (conns, ends, delta) = arm?;
        let client = Locality::of(&conns, ncpu);
        let (processed, accepted) = server_ends_on_port_cpu(&ends, ncpu);
        info!(
            "rfd_peer=1 {family}: server ends processed on the client port's CPU {processed}, \
             accepted there {accepted}; client ends {client}; client counters {}",
            rfd_columns(&delta)
        );
        let n = conns.len() as u64;
        let total = delta.total();
        ensure!(
            total.rfd_steered + total.rfd_local >= 2 * n,
            "{family}: {n} connections, each with at least a SYN-ACK steered at the client's end \
             and a SYN at the server's, but rfd_steered + rfd_local rose by only {}: {}",
            total.rfd_steered + total.rfd_local,
            rfd_columns(&delta)
        );
        for (what, share, floor) in [
            ("server's ends processed", processed, 99),
            ("server's ends accepted", accepted, PEER_ACCEPTED_FLOOR),
            ("client's ends local", client.share, 99),
        ] {
            ensure!(
                share.local * 100 >= floor * share.total,
                "rfd_peer=1 {family}: {share} of the {what} on the client port's CPU, expected \
                 at least {floor}% (server's ends processed there {processed}, accepted there \
                 {accepted}; client's ends {client})"
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3 and 4. Port choice: as many ports as stock, the CPU's own first.

/// How a client socket gets its port.
#[derive(Clone, Copy, Debug)]
enum PortChoice {
    /// connect() picks it.
    Connect,
    /// connect() picks it from the socket's own range (`IP_LOCAL_PORT_RANGE`, both ends in).
    SocketRange(u16, u16),
    /// bind() to this address and port 0 with `IP_BIND_ADDRESS_NO_PORT`; connect() picks it.
    BindNoPort(IpAddr),
    /// bind() to port 0 of the wildcard address picks it, with SO_REUSEADDR or without.
    BindZero { reuseaddr: bool },
}

/// A non-blocking socket that got its port as `choice` says and whose connect() to `dest`
/// has started; its port.
fn open_port(dest: SocketAddr, choice: PortChoice) -> io::Result<(TcpStream, u16)> {
    let fd = sys::tcp_socket(&dest, true)?;
    match choice {
        PortChoice::Connect => {}
        PortChoice::SocketRange(low, high) => {
            let range = (u32::from(high) << 16) | u32::from(low);
            setsockopt(&fd, sys::IpLocalPortRange, &range)?;
        }
        PortChoice::BindNoPort(ip) => {
            setsockopt(&fd, sockopt::IpBindAddressNoPort, &true)?;
            sys::bind(&fd, SocketAddr::new(ip, 0))?;
        }
        PortChoice::BindZero { reuseaddr } => {
            if reuseaddr {
                setsockopt(&fd, sockopt::ReuseAddr, &true)?;
            }
            let any = if dest.is_ipv4() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            };
            sys::bind(&fd, SocketAddr::new(any, 0))?;
        }
    }
    let stream = sys::connect_started(fd, dest)?;
    let port = stream.local_addr()?.port();
    Ok((stream, port))
}

/// Opens up to `max` sockets to `dest` one after another, each getting its port as `choice`
/// says, all kept open until the last; stops at the first EADDRNOTAVAIL. Returns the ports in
/// order and whether the ports ran out; the sockets are closed on return.
fn open_ports(dest: SocketAddr, choice: PortChoice, max: usize) -> TestResult<(Vec<u16>, bool)> {
    let mut open = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < max {
        match open_port(dest, choice) {
            Ok((stream, port)) => {
                open.push(stream);
                ports.push(port);
            }
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => return Ok((ports, true)),
            Err(e) => {
                return Err(format!(
                    "socket {} ({choice:?}) to {dest}: {e}",
                    ports.len() + 1
                ))
            }
        }
    }
    Ok((ports, false))
}

/// The pair's silent peer (see [`NetnsPair::silent_peer`]), IPv4: connections to it stay in
/// SYN_SENT. No SYN to it is ever answered, and its connections must keep their ports for the
/// whole of an arm whatever the guest's speed: the client retries SYNs for minutes.
fn silent_peer(pair: &NetnsPair) -> TestResult<IpAddr> {
    let ip = pair.silent_peer(false).context("adding the silent peer")?;
    client_sysctl(pair, TCP_SYN_RETRIES, "20")?;
    Ok(ip)
}

/// Checks that the first `owned` of `ports` (the connections that found a free port of
/// `cpu`) belong to `cpu` and that none after them does.
fn check_own_ports_first(
    ports: &[u16],
    own: usize,
    cpu: usize,
    ncpu: usize,
    what: &str,
) -> TestResult {
    let wrong: Vec<(usize, u16)> = ports
        .iter()
        .enumerate()
        .filter(|&(i, &p)| (i < own) != (cpu_of(p, ncpu) == cpu))
        .map(|(i, &p)| (i + 1, p))
        .take(10)
        .collect();
    ensure!(
        wrong.is_empty(),
        "{what}: the range has {own} ports of cpu {cpu}, the connections from cpu {cpu} \
         should take them first and then only other ports; these did not (connection number, \
         port): {wrong:?}"
    );
    Ok(())
}

/// Opens connections to `dest` from a thread pinned to `cpu` in the client's namespace until
/// EADDRNOTAVAIL (at most `max`), then closes them; the namespace must hold no TCP socket
/// before and after. Returns the ports in order and how long it took.
fn exhaust(
    pair: &NetnsPair,
    dest: SocketAddr,
    cpu: usize,
    choice: PortChoice,
    max: usize,
) -> TestResult<(Vec<u16>, Duration)> {
    let idle = |when: &str| {
        in_client(pair, || {
            let sockets = procfs::read_sockstat_tcp()?;
            ensure!(
                sockets.inuse == 0,
                "set-up: {when}: {} TCP sockets in use in {}",
                sockets.inuse,
                pair.client_ns()
            );
            Ok(())
        })
    };
    idle("before the connections")?;
    let (ports, exhausted, took) = on_cpu_in(pair.client_ns(), cpu, move |_| {
        let start = Instant::now();
        let (ports, exhausted) = open_ports(dest, choice, max)?;
        Ok((ports, exhausted, start.elapsed()))
    })?;
    idle("after closing the connections (left in SYN_SENT)")?;
    ensure!(
        exhausted,
        "{} connections ({choice:?}) from cpu {cpu} without EADDRNOTAVAIL: more than the \
         range holds",
        ports.len()
    );
    Ok((ports, took))
}

/// A port range (`ip_local_port_range`) of the exhaustion test.
#[derive(Clone, Debug)]
struct PortRange {
    low: u16,
    high: u16,
    /// The ports left free, every other port of the range bound by another socket first
    /// (`None`: all free).
    free: Option<Vec<u16>>,
}

impl PortRange {
    fn all(low: u16, high: u16) -> PortRange {
        PortRange {
            low,
            high,
            free: None,
        }
    }

    fn size(&self) -> usize {
        usize::from(self.high - self.low) + 1
    }

    /// The ports a connect() may take.
    fn free_ports(&self) -> Vec<u16> {
        self.free
            .clone()
            .unwrap_or_else(|| (self.low..=self.high).collect())
    }

    /// How many connections stock makes before EADDRNOTAVAIL (its first pass of a range of
    /// more than one port has an even length: an odd range's last port is never tried).
    fn expected(&self) -> usize {
        match &self.free {
            Some(free) => free.len(),
            None if self.size() > 1 => self.size() & !1,
            None => 1,
        }
    }

    /// The free ports `cpu` owns.
    fn owned(&self, cpu: usize, ncpu: usize) -> usize {
        self.free_ports()
            .iter()
            .filter(|&&p| cpu_of(p, ncpu) == cpu)
            .count()
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{} ({} ports", self.low, self.high, self.size())?;
        if let Some(free) = &self.free {
            write!(f, ", {} of them free", free.len())?;
        }
        write!(f, ")")
    }
}

/// Free ports of the 28,000-port range: spread over it (an odd step apart: both parities,
/// every CPU).
const HOLES: usize = 64;

/// The port ranges of the exhaustion test: 1 port, 2 of one CPU, `ncpu` from an odd port (so
/// that they belong to different CPUs), 100 and 2,000, every port free; and 28,000 with
/// [`HOLES`] free ports, the others bound for the whole test (the other ranges lie above
/// it). Exhausting a range with one destination costs stock O(range²) port checks (once its
/// first-parity pass is full, every connect walks it whole): 28,000 ports take 12 s on a host
/// and far more than the test's time in the emulated guest, hence the bound ports.
fn exhaustion_ranges(ncpu: usize) -> Vec<PortRange> {
    let n = u16::try_from(ncpu).unwrap_or(u16::MAX).clamp(1, 1000);
    let (low, size) = (32768u16, 28000usize);
    let holes = (0..HOLES)
        .map(|i| low + (i * (size / HOLES)) as u16)
        .collect();
    vec![
        PortRange::all(61000, 61000),
        PortRange::all(61000, 61001),
        PortRange::all(61001, 61001 + n - 1),
        PortRange::all(61100, 61199),
        PortRange::all(62000, 63999),
        PortRange {
            low,
            high: low + (size - 1) as u16,
            free: Some(holes),
        },
    ]
}

/// Binds a socket to every port of `range` but its free ones, in the client's namespace.
fn bind_all_but_free(pair: &NetnsPair, range: &PortRange) -> TestResult<Vec<OwnedFd>> {
    let Some(free) = &range.free else {
        return Ok(Vec::new());
    };
    in_client(pair, || {
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        (range.low..=range.high)
            .filter(|p| !free.contains(p))
            .map(|port| {
                let fd = sys::tcp_socket(&any, false).context("socket")?;
                sys::bind(&fd, SocketAddr::new(any.ip(), port))
                    .context(format!("binding port {port}"))?;
                Ok(fd)
            })
            .collect()
    })
}

/// One cell of the exhaustion table.
struct Exhausted {
    ports: Vec<u16>,
    took: Duration,
    /// The RFD counters' increase on the connecting CPU (module arms).
    counters: CpuStats,
}

/// Runs an exhaustion arm for every range and CPU; `module`: the module is loaded (its
/// counters are read).
fn exhaustion_arms(
    pair: &NetnsPair,
    dest_ip: IpAddr,
    ranges: &[PortRange],
    cpus: &[usize],
    module: bool,
) -> TestResult<Vec<Exhausted>> {
    let mut cells = Vec::new();
    for (r, range) in ranges.iter().enumerate() {
        client_sysctl(pair, PORT_RANGE, &format!("{} {}", range.low, range.high))?;
        for (c, &cpu) in cpus.iter().enumerate() {
            // A destination port per arm: nothing an earlier arm left can be in the way.
            let arm = r * cpus.len() + c;
            let dest = SocketAddr::new(dest_ip, EXHAUSTION_PORT + arm as u16);
            let before = module.then(|| client_counters(pair)).transpose()?;
            let max = range.free_ports().len() + 16;
            let (ports, took) = exhaust(pair, dest, cpu, PortChoice::Connect, max)
                .context(format!("range {range}, cpu {cpu}"))?;
            let counters = match before {
                Some(before) => client_counters(pair)?.since(&before)?.cpu(cpu),
                None => CpuStats::default(),
            };
            info!(
                "  {}: range {range}, cpu {cpu}: {} connections in {:.1} s",
                if module { "module" } else { "stock" },
                ports.len(),
                took.as_secs_f64()
            );
            cells.push(Exhausted {
                ports,
                took,
                counters,
            });
        }
    }
    Ok(cells)
}

/// Checks one cell of the exhaustion table: stock as the kernel's algorithm says, the module
/// as many as stock, the CPU's own ports first, and the counters.
fn check_exhausted(
    range: &PortRange,
    cpu: usize,
    ncpu: usize,
    stock: &Exhausted,
    module: &Exhausted,
) -> TestResult {
    let what = format!("range {range}, cpu {cpu}");
    let own = range.owned(cpu, ncpu);
    ensure!(
        stock.ports.len() == range.expected(),
        "{what}: set-up: stock made {} connections, {} expected",
        stock.ports.len(),
        range.expected()
    );
    ensure!(
        module.ports.len() == stock.ports.len(),
        "{what}: {} connections with the module, {} stock",
        module.ports.len(),
        stock.ports.len()
    );
    // A search tries at most WALK_MAX ports of the CPU per parity (rust/logic/rfd.rs) before
    // the stock search: where that window covers the CPU's whole share of the range, its free
    // ports come first, strictly; in a larger share a free port of the CPU outside the window
    // is not seen and the stock search takes another CPU's (Documentation/rfd.md).
    let share = (range.low..=range.high)
        .filter(|&p| cpu_of(p, ncpu) == cpu)
        .count();
    let strict = share <= 2 * WALK_MAX;
    if strict {
        check_own_ports_first(&module.ports, own, cpu, ncpu, &what)?;
    }
    let taken = module
        .ports
        .iter()
        .filter(|&&p| cpu_of(p, ncpu) == cpu)
        .count() as u64;
    // Every connect either got a port of the CPU from its walk (rfd_ports) or fell back to the
    // stock search (rfd_fallback), which may still land on a port of the CPU; the connect that
    // found no port at all counts as a fallback too.
    let n = module.ports.len() as u64;
    let (ports, fallback) = (module.counters.rfd_ports, module.counters.rfd_fallback);
    ensure!(
        (n..=n + 1).contains(&(ports + fallback))
            && if strict {
                ports == taken
            } else {
                ports <= taken
            },
        "{what}: {n} connects of which {taken} took a port of cpu {cpu} ({own} free), but \
         rfd_ports rose by {ports} and rfd_fallback by {fallback} on cpu {cpu}"
    );
    Ok(())
}

/// `WALK_MAX` of rust/logic/rfd.rs: the most ports of its own a CPU tries per parity.
const WALK_MAX: usize = 64;

/// For port ranges of 1, 2, ncpu, 100 and 2,000 ports, and 28,000 ports with 64 free
/// (`ip_local_port_range` of the client's namespace), as many connections to one destination
/// succeed before EADDRNOTAVAIL from a thread pinned to each CPU with the module (`rfd=1`) as
/// stock; with the module the free ports of the connecting CPU come first where its share of
/// the range fits the search window (see `check_exhausted`), and the counters account for
/// every connect. The connections go
/// to an address nobody answers and stay in SYN_SENT (no round trip); closing them frees their
/// ports at once.
pub fn rfd_port_exhaustion(ctx: &mut Ctx) -> TestResult {
    let (cpus, ncpu, pair) = rfd_setup(ctx)?;
    let ctx: &Ctx = ctx;
    let ranges = exhaustion_ranges(ncpu);
    // The bound sockets stay open while every arm runs.
    let bound: usize = ranges.iter().map(|r| r.size() - r.free_ports().len()).sum();
    let most = ranges
        .iter()
        .map(|r| r.free_ports().len())
        .max()
        .unwrap_or(0);
    let sockets = (bound + most) as u64;
    let limit = sys::raise_open_files_limit(sockets + 1024).context("raising RLIMIT_NOFILE")?;
    ensure!(
        limit > sockets + 64,
        "set-up: the runner may open only {limit} files, {sockets} sockets need more"
    );
    let silent = silent_peer(&pair)?;
    let start = Instant::now();
    let _bound: Vec<Vec<OwnedFd>> = ranges
        .iter()
        .map(|range| bind_all_but_free(&pair, range))
        .collect::<TestResult<_>>()?;
    info!(
        "port exhaustion, connections before EADDRNOTAVAIL (one destination); ports bound in \
         {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let stock_cells = stock(ctx, || {
        exhaustion_arms(&pair, silent, &ranges, &cpus, false)
    })?;
    let module_cells = exhaustion_arms(&pair, silent, &ranges, &cpus, true)?;

    let mut failures = Vec::new();
    for (r, range) in ranges.iter().enumerate() {
        for (c, &cpu) in cpus.iter().enumerate() {
            let (stock, module) = (
                &stock_cells[r * cpus.len() + c],
                &module_cells[r * cpus.len() + c],
            );
            info!(
                "  range {range}, cpu {cpu} ({} of its ports free): stock {}, module {} \
                 (rfd_ports {}, rfd_fallback {}); {:.1} s stock, {:.1} s module",
                range.owned(cpu, ncpu),
                stock.ports.len(),
                module.ports.len(),
                module.counters.rfd_ports,
                module.counters.rfd_fallback,
                stock.took.as_secs_f64(),
                module.took.as_secs_f64()
            );
            failures.extend(check_exhausted(range, cpu, ncpu, stock, module).err());
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Sockets per CPU in the bind variants of [`rfd_socket_options`].
const BIND_SOCKETS: usize = 16;
/// The socket's own range of the `IP_LOCAL_PORT_RANGE` check (inside the default range).
const SOCKET_RANGE: (u16, u16) = (40000, 40019);
/// The namespace's range of the TIME_WAIT reuse check.
const TW_RANGE: (u16, u16) = (40000, 40063);
/// tcp_tw_reuse takes a TIME_WAIT only once the last timestamp it saw is from an earlier
/// second (tcp_twsk_unique(): `time_after32(ktime_get_seconds(), tw_ts_recent_stamp)`): a
/// protocol rule, so the test waits that long, not for an event.
const TW_REUSE_AGE: Duration = Duration::from_millis(1100);

/// `IP_LOCAL_PORT_RANGE`: every port lies in the socket's range, the connecting CPU's first;
/// as many as stock. Returns the figures for the table.
fn socket_range_check(
    ctx: &Ctx,
    pair: &NetnsPair,
    dest: SocketAddr,
    cpus: &[usize],
    ncpu: usize,
) -> TestResult<Vec<String>> {
    let (low, high) = SOCKET_RANGE;
    let choice = PortChoice::SocketRange(low, high);
    let max = usize::from(high - low) + 16;
    let stock_counts = stock(ctx, || {
        cpus.iter()
            .map(|&cpu| Ok(exhaust(pair, dest, cpu, choice, max)?.0.len()))
            .collect::<TestResult<Vec<_>>>()
    })?;
    let mut lines = Vec::new();
    for (&cpu, stock) in cpus.iter().zip(stock_counts) {
        let (ports, _) = exhaust(pair, dest, cpu, choice, max)?;
        let what = format!("IP_LOCAL_PORT_RANGE {low}-{high} on cpu {cpu}");
        let outside: Vec<u16> = ports
            .iter()
            .copied()
            .filter(|p| !(low..=high).contains(p))
            .collect();
        ensure!(
            outside.is_empty(),
            "{what}: ports outside the socket's range: {outside:?}"
        );
        check_own_ports_first(&ports, owned(low, high, cpu, ncpu), cpu, ncpu, &what)?;
        ensure!(
            ports.len() == stock,
            "{what}: {} connections with the module, {stock} stock",
            ports.len()
        );
        lines.push(format!(
            "{what}: {} connections, stock {stock}, the first {} on ports of cpu {cpu}",
            ports.len(),
            owned(low, high, cpu, ncpu)
        ));
    }
    Ok(lines)
}

/// `IP_BIND_ADDRESS_NO_PORT` and bind() to port 0 (with and without SO_REUSEADDR): every
/// port belongs to the CPU, and rfd_ports counts each socket once.
fn bind_checks(
    pair: &NetnsPair,
    dest: SocketAddr,
    cpus: &[usize],
    ncpu: usize,
) -> TestResult<Vec<String>> {
    let choices = [
        PortChoice::BindNoPort(pair.client_ip(false)),
        PortChoice::BindZero { reuseaddr: true },
        PortChoice::BindZero { reuseaddr: false },
    ];
    let mut lines = Vec::new();
    for choice in choices {
        let before = client_counters(pair)?;
        let ports = on_each_cpu(pair.client_ns(), cpus, move |_| {
            let (ports, exhausted) = open_ports(dest, choice, BIND_SOCKETS)?;
            ensure!(!exhausted, "ran out of ports after {}", ports.len());
            Ok(ports)
        })
        .context(format!("{choice:?}"))?;
        let delta = client_counters(pair)?.since(&before)?;
        for (&cpu, ports) in cpus.iter().zip(&ports) {
            let foreign: Vec<u16> = ports
                .iter()
                .copied()
                .filter(|&p| cpu_of(p, ncpu) != cpu)
                .collect();
            ensure!(
                foreign.is_empty(),
                "{choice:?} on cpu {cpu}: ports of other CPUs: {foreign:?} (of {ports:?})"
            );
            let counted = delta.cpu(cpu).rfd_ports;
            ensure!(
                counted == BIND_SOCKETS as u64,
                "{choice:?} on cpu {cpu}: {BIND_SOCKETS} sockets, rfd_ports rose by {counted}: \
                 {}",
                rfd_columns(&delta)
            );
        }
        lines.push(format!(
            "{choice:?}: {BIND_SOCKETS} sockets on each cpu, every port of its CPU"
        ));
    }
    Ok(lines)
}

/// One TIME_WAIT reuse arm on `cpu`: the namespace's [`TW_RANGE`] filled with TIME_WAITs to
/// `addr` (the client closes first), then, with tcp_tw_reuse=1, connections to `addr` until
/// EADDRNOTAVAIL. Returns how many succeeded.
fn tw_reuse_arm(pair: &NetnsPair, addr: SocketAddr, cpu: usize) -> TestResult<usize> {
    let (low, high) = TW_RANGE;
    let size = usize::from(high - low) + 1;
    client_sysctl(pair, PORT_RANGE, &format!("{low} {high}"))?;
    client_sysctl(pair, TCP_TW_REUSE, "0")?;
    let listener = Arc::new(in_ns(
        pair.server_ns().ok_or("no server namespace")?,
        || sys::tcp_listen(addr, 512, false).context(format!("listening on {addr}")),
    )?);
    let tw_before = in_client(pair, procfs::read_sockstat_tcp)?.tw;
    let accepting = Arc::clone(&listener);
    on_cpu_in(pair.client_ns(), cpu, move |_| {
        for i in 1..=size {
            let client = TcpStream::connect_timeout(&addr, client::CONNECT_TIMEOUT)
                .context(format!("connection {i} of {size} to {addr}"))?;
            let (mut server, _) = accepting.accept().context("accept")?;
            // The client closes first and so keeps the TIME_WAIT; the server closes once it
            // has read the client's FIN.
            drop(client);
            server
                .set_read_timeout(Some(READ_TIMEOUT))
                .context("SO_RCVTIMEO")?;
            let mut rest = Vec::new();
            server
                .read_to_end(&mut rest)
                .context(format!("server side of connection {i}: reading to EOF"))?;
        }
        Ok(())
    })?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let tw = in_client(pair, procfs::read_sockstat_tcp)?.tw;
        if tw >= tw_before + size as u64 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "set-up: {size} connections closed by the client, but only {} more TIME_WAITs in \
             the client's namespace after {SETTLE_TIMEOUT:?}",
            tw.saturating_sub(tw_before)
        );
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(TW_REUSE_AGE);
    client_sysctl(pair, TCP_TW_REUSE, "1")?;
    let (ports, exhausted) = on_cpu_in(pair.client_ns(), cpu, move |_| {
        open_ports(addr, PortChoice::Connect, size + 16)
    })?;
    drop(listener);
    ensure!(
        exhausted,
        "{} connections in a range of {size} ports without EADDRNOTAVAIL",
        ports.len()
    );
    Ok(ports.len())
}

/// tcp_tw_reuse=1 with the client's small range full of TIME_WAITs: as many connections
/// succeed with the module as stock, on each CPU.
fn tw_reuse_check(ctx: &Ctx, pair: &NetnsPair, cpus: &[usize]) -> TestResult<Vec<String>> {
    let server_ip = pair.server_ip(false);
    // A destination port per arm: the TIME_WAITs of one arm are not in the way of the next.
    let addr = |arm: usize| SocketAddr::new(server_ip, TW_PORT + arm as u16);
    let stock_counts = stock(ctx, || {
        cpus.iter()
            .enumerate()
            .map(|(i, &cpu)| tw_reuse_arm(pair, addr(i), cpu))
            .collect::<TestResult<Vec<_>>>()
    })?;
    let mut lines = Vec::new();
    for (i, (&cpu, stock)) in cpus.iter().zip(stock_counts).enumerate() {
        let module = tw_reuse_arm(pair, addr(cpus.len() + i), cpu)?;
        lines.push(format!(
            "tcp_tw_reuse=1, {}-{} full of TIME_WAITs, cpu {cpu}: module {module}, stock {stock}",
            TW_RANGE.0, TW_RANGE.1
        ));
        ensure!(
            module == stock,
            "tcp_tw_reuse=1 on cpu {cpu}: {module} connections with the module, {stock} stock"
        );
    }
    client_sysctl(pair, TCP_TW_REUSE, "2")?;
    Ok(lines)
}

/// `IP_LOCAL_PORT_RANGE`, `IP_BIND_ADDRESS_NO_PORT`, bind() to port 0 (with and without
/// SO_REUSEADDR) and tcp_tw_reuse with the module: ports of the connecting CPU where the
/// socket's constraints allow, and as many connections as stock.
pub fn rfd_socket_options(ctx: &mut Ctx) -> TestResult {
    let (cpus, ncpu, pair) = rfd_setup(ctx)?;
    let ctx: &Ctx = ctx;
    let silent = SocketAddr::new(silent_peer(&pair)?, EXHAUSTION_PORT);
    let mut lines = socket_range_check(ctx, &pair, silent, &cpus, ncpu)?;
    lines.extend(bind_checks(&pair, silent, &cpus, ncpu)?);
    lines.extend(tw_reuse_check(ctx, &pair, &cpus)?);
    for line in lines {
        info!("{line}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. Switching RFD and unloading the module under load.

/// Long-lived connections of the toggle test.
const LONG_LIVED: usize = 4;
/// Bytes of one exchange on a long-lived connection.
const ECHO_BYTES: usize = 64;
/// rfd flips under load, and the pause between two.
const FLIPS: usize = 10;
const FLIP_PERIOD: Duration = Duration::from_millis(100);
/// Progress each client must make before the flips and after the unload.
const PROGRESS: usize = 10;

/// A connection that echoes what it reads until EOF, on a thread of its own.
fn echo(mut conn: TcpStream) -> JoinHandle<io::Result<u64>> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            conn.write_all(&buf[..n])?;
            total += n as u64;
        }
    })
}

/// A long-lived client connection exchanging [`ECHO_BYTES`] at a time with an echo server
/// until stopped, checking every byte; counts its exchanges.
struct LongLived {
    exchanges: Arc<AtomicUsize>,
    thread: JoinHandle<TestResult<usize>>,
}

impl LongLived {
    fn start(mut conn: TcpStream, id: usize, stop: Arc<AtomicBool>) -> TestResult<LongLived> {
        conn.set_read_timeout(Some(client::REPLY_TIMEOUT))
            .context("SO_RCVTIMEO")?;
        let exchanges = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&exchanges);
        let thread = thread::spawn(move || {
            let mut reply = [0u8; ECHO_BYTES];
            while !stop.load(SeqCst) {
                let n = count.load(SeqCst);
                let message: Vec<u8> = (0..ECHO_BYTES).map(|i| (n + i + id) as u8).collect();
                conn.write_all(&message)
                    .context(format!("long-lived connection {id}, exchange {}", n + 1))?;
                conn.read_exact(&mut reply)
                    .context(format!("long-lived connection {id}, echo {}", n + 1))?;
                ensure!(
                    reply[..] == message[..],
                    "long-lived connection {id}: exchange {} echoed other bytes",
                    n + 1
                );
                count.fetch_add(1, SeqCst);
            }
            Ok(count.load(SeqCst))
        });
        Ok(LongLived { exchanges, thread })
    }

    fn exchanges(&self) -> usize {
        self.exchanges.load(SeqCst)
    }
}

/// Waits until `done` holds; fails after [`SETTLE_TIMEOUT`] with `what`.
fn wait_for_progress(what: &str, done: impl Fn() -> bool) -> TestResult {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while !done() {
        ensure!(
            Instant::now() < deadline,
            "{what} within {SETTLE_TIMEOUT:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Request loops on every CPU (client threads pinned) and long-lived connections exchanging
/// data, while `rfd` flips between 0 and 1 in the client's namespace and `rfd_peer` the other
/// way in the server's, and the module is then unloaded with both on: no client error, every
/// request answered, the long-lived connections keep working after the unload.
pub fn rfd_toggle_unload_under_load(ctx: &mut Ctx) -> TestResult {
    let (cpus, _, pair) = rfd_setup(ctx)?;
    let ctx: &Ctx = ctx;
    let ip = pair.server_ip(false);
    let server_ns = server_ns(&pair)?;
    let server = AcceptServer::start_with(
        &ServerOpts::pinned(ip, &cpus)
            .ns(Some(server_ns))
            .port(SERVER_PORT),
    )?;
    let echo_addr = SocketAddr::new(ip, ECHO_PORT);
    let echo_listener = in_ns(server_ns, || {
        sys::tcp_listen(echo_addr, 64, false).context(format!("listening on {echo_addr}"))
    })?;
    let conns = in_client(&pair, || {
        (0..LONG_LIVED)
            .map(|_| {
                TcpStream::connect_timeout(&echo_addr, client::CONNECT_TIMEOUT)
                    .context(format!("connecting to {echo_addr}"))
            })
            .collect::<TestResult<Vec<_>>>()
    })?;
    let echoes: Vec<_> = (0..LONG_LIVED)
        .map(|_| echo_listener.accept().map(|(conn, _)| echo(conn)))
        .collect::<io::Result<_>>()
        .context("accepting the long-lived connections")?;
    let stop = Arc::new(AtomicBool::new(false));
    let long: Vec<LongLived> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| LongLived::start(conn, i, Arc::clone(&stop)))
        .collect::<TestResult<_>>()?;
    let mut loops = Vec::new();
    for &cpu in &cpus {
        let client = LoopClient::start(pair.client_ns(), server.addr())?;
        client
            .run_between(move || sys::pin_current_thread(cpu))?
            .context(format!("pinning a request loop to cpu {cpu}"))?;
        loops.push(client);
    }
    let progress = |loops: &[LoopClient], long: &[LongLived]| {
        (
            loops.iter().map(LoopClient::connected).collect::<Vec<_>>(),
            long.iter().map(LongLived::exchanges).collect::<Vec<_>>(),
        )
    };
    let moved_on = |from: &(Vec<usize>, Vec<usize>), loops: &[LoopClient], long: &[LongLived]| {
        let now = progress(loops, long);
        now.0.iter().zip(&from.0).all(|(n, f)| *n >= f + PROGRESS)
            && now.1.iter().zip(&from.1).all(|(n, f)| *n >= f + PROGRESS)
    };
    let start = progress(&loops, &long);
    wait_for_progress("the clients did not get going", || {
        moved_on(&start, &loops, &long)
    })?;
    let before = client_counters(&pair)?;
    for flip in 0..FLIPS {
        client_knob(&pair, procfs::RFD, ["0", "1"][flip % 2])?;
        server_knob(&pair, procfs::RFD_PEER, ["1", "0"][flip % 2])?;
        thread::sleep(FLIP_PERIOD);
    }
    client_knob(&pair, procfs::RFD, "1")?;
    server_knob(&pair, procfs::RFD_PEER, "1")?;
    thread::sleep(FLIP_PERIOD);
    let delta = client_counters(&pair)?.since(&before)?;
    let key_loaded = procfs::read_hooks_flag("rfd_key")?;
    let at_unload = progress(&loops, &long);
    let after_unload = stock(ctx, || {
        let key = procfs::read_hooks_flag("rfd_key")?;
        ensure!(
            !key,
            "{} shows rfd_key: 1 with the module unloaded",
            procfs::HOOKS
        );
        wait_for_progress(
            "the clients did not make progress after the module was unloaded",
            || moved_on(&at_unload, &loops, &long),
        )?;
        Ok(progress(&loops, &long))
    });
    stop.store(true, SeqCst);
    let long_results: Vec<TestResult<usize>> = long
        .into_iter()
        .map(|l| {
            l.thread
                .join()
                .unwrap_or_else(|_| Err("a long-lived client thread panicked".into()))
        })
        .collect();
    let stats: Vec<LoopStats> = loops
        .into_iter()
        .map(LoopClient::stop)
        .collect::<TestResult<_>>()?;
    let echoed: Vec<io::Result<u64>> = echoes
        .into_iter()
        .map(|e| {
            e.join()
                .unwrap_or_else(|_| Err(io::Error::other("an echo thread panicked")))
        })
        .collect();
    let after_unload = after_unload?;
    let connected: usize = stats.iter().map(|s| s.connected).sum();
    server.wait_for(connected, ACCEPT_TIMEOUT)?;
    let accepted = server.stop()?.len();
    info!(
        "{FLIPS} rfd and rfd_peer flips and an unload under load: requests per cpu {:?}, \
         long-lived exchanges {:?} (at the unload {:?}, {:?} after it); counters during the \
         flips: {}",
        stats.iter().map(|s| s.connected).collect::<Vec<_>>(),
        long_results,
        at_unload,
        after_unload,
        rfd_columns(&delta)
    );
    for (cpu, s) in cpus.iter().zip(&stats) {
        s.check_all_answered()
            .map_err(|e| format!("request loop on cpu {cpu}: {e}"))?;
    }
    for (i, result) in long_results.into_iter().enumerate() {
        result.context(format!("long-lived connection {i}"))?;
    }
    for (i, result) in echoed.into_iter().enumerate() {
        result.context(format!("echo server of long-lived connection {i}"))?;
    }
    ensure!(
        accepted == connected,
        "the clients connected {connected} times, the server accepted {accepted}"
    );
    ensure!(
        key_loaded,
        "{} shows rfd_key: 0 with the module loaded",
        procfs::HOOKS
    );
    let steered = delta.total();
    ensure!(
        steered.rfd_steered + steered.rfd_local > 0,
        "set-up: the client's namespace counted no RFD decision during the flips: {}",
        rfd_columns(&delta)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 6. The knob.

/// `rfd` and `rfd_peer`: 0 and 1 read back, anything else (2, -1, not a number, too long,
/// 1 MiB) is refused with EINVAL and changes nothing, an empty write changes nothing, a write
/// without CAP_NET_ADMIN fails with EPERM; at most one log line per knob and no splat for all
/// that.
pub fn rfd_knob_bad_input(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let _rfd = KnobGuard::rfd("1")?;
    let _rfd_peer = KnobGuard::rfd_peer("0")?;
    let mut splats = KernelWatch::start()?;
    for (knob, values) in [(procfs::RFD, ["1", "0"]), (procfs::RFD_PEER, ["0", "1"])] {
        let mut log = LogWatch::new().context("opening /dev/kmsg")?;
        knob_bad_input(knob, values).context(knob)?;
        let lines = log.read_new().context("reading the kernel log")?;
        info!(
            "kernel log lines during the refused writes to {knob}: {}",
            lines.lines().count()
        );
        ensure!(
            lines.lines().count() <= 1,
            "the refused writes to {knob} logged more than one line:\n{lines}"
        );
    }
    splats.check(false)
}

/// The refused writes of [`rfd_knob_bad_input`] to `knob`, whose default is `values[0]`.
fn knob_bad_input(knob: &str, values: [&str; 2]) -> TestResult {
    check_int_knob(
        knob,
        values,
        &["2", "-1", "abc", "99999999999999999999", "1x"],
    )?;
    let digits = vec![b'1'; 1 << 20];
    let mut one_then_letters = vec![b'x'; 1 << 20];
    one_then_letters[0] = b'1';
    for start in values {
        procfs::write_knob(knob, start.as_bytes()).context(format!("writing {start}"))?;
        expect_einval_bytes(knob, &digits, "1 MiB of digits")
            .context(format!("starting from {start}"))?;
        expect_einval_bytes(knob, &one_then_letters, "1 and then 1 MiB of letters")
            .context(format!("starting from {start}"))?;
        // As for every integer sysctl: success or EINVAL, never a change.
        match procfs::write_knob(knob, b"") {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(format!("empty write to {knob}: {e}")),
        }
        let value = procfs::read_knob_int(knob)?;
        ensure!(
            value.to_string() == start,
            "an empty write changed {knob} from {start} to {value}"
        );
    }
    Ok(())
}

/// The kernel's view of the two per-namespace features in the namespace of the calling thread:
/// (`rfd_key`, `rfd_net`, `vfs_key`, `vfs_net`).
fn feature_flags() -> TestResult<[bool; 4]> {
    Ok([
        procfs::read_hooks_flag("rfd_key")?,
        procfs::read_hooks_flag("rfd_net")?,
        procfs::read_hooks_flag("vfs_key")?,
        procfs::read_hooks_flag("vfs_net")?,
    ])
}

/// Waits until `rfd_key` and `vfs_key` are `want`, for at most `within`; returns how long.
/// A key goes on in the write that turns a namespace's feature on, but off lazily: at most
/// once a second (a deferred key; at once on a kernel without `CONFIG_JUMP_LABEL`, such as
/// the debug one, where a key is only a counter), and for a deleted namespace only once the
/// kernel has torn it down in the background.
fn keys_become(want: [bool; 2], within: Duration) -> TestResult<Duration> {
    let start = Instant::now();
    loop {
        let [rfd_key, _, vfs_key, _] = feature_flags()?;
        if [rfd_key, vfs_key] == want {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            let namespaces = Command::new("ip")
                .args(["netns", "list"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            return Err(format!(
                "after {within:?}: rfd_key {} vfs_key {}, expected {} {} (named namespaces: \
                 {namespaces:?})",
                u8::from(rfd_key),
                u8::from(vfs_key),
                u8::from(want[0]),
                u8::from(want[1])
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Receive Flow Deliver's and the socket inode cache's static keys follow the namespaces'
/// knobs (patches 0015, 0016): on as soon as one namespace has the feature on, off once none
/// has, also when the last one is deleted; `rfd_net` and `vfs_net` say, per namespace, whether
/// the kernel calls the hooks there. With one possible CPU the module has no RFD hooks and
/// `rfd_key` stays off.
pub fn feature_keys_follow_namespaces(ctx: &mut Ctx) -> TestResult {
    /// The keys' one-second deferral, and the background teardown of the namespaces that
    /// earlier tests deleted, with margin for the emulated guest.
    const OFF_WITHIN: Duration = Duration::from_secs(30);
    ctx.ensure_loaded()?;
    let rfd = procfs::nr_cpu_ids()? > 1;
    let _enabled = KnobGuard::enabled("1")?;
    let _rfd = KnobGuard::rfd("0")?;
    let _vfs = KnobGuard::vfs("0")?;
    let all_off = keys_become([false, false], OFF_WITHIN)
        .context("rfd=0 and vfs=0 in the runner's namespace, no other namespace of ours")?;

    let pair = ctx.netns_pair(ServerSide::Current)?;
    // A new namespace has both knobs on: the keys are on at once.
    let here = feature_flags()?;
    let there = in_client(&pair, feature_flags)?;
    ensure!(
        here == [rfd, false, true, false] && there == [rfd, rfd, true, true],
        "a new namespace with rfd=1 vfs=1: (rfd_key, rfd_net, vfs_key, vfs_net) is {here:?} \
         here, {there:?} there"
    );
    client_knob(&pair, procfs::RFD, "0")?;
    client_knob(&pair, procfs::VFS, "0")?;
    let there_off = in_client(&pair, feature_flags)?;
    ensure!(
        !there_off[1] && !there_off[3],
        "rfd_net or vfs_net still 1 in the client's namespace after rfd=0 vfs=0: {there_off:?}"
    );
    let knobs_off = keys_become([false, false], OFF_WITHIN)
        .context("after rfd=0 vfs=0 in the new namespace")?;
    client_knob(&pair, procfs::RFD, "1")?;
    client_knob(&pair, procfs::VFS, "1")?;
    let [rfd_key, _, vfs_key, _] = feature_flags()?;
    ensure!(
        rfd_key == rfd && vfs_key,
        "rfd=1 vfs=1 in the new namespace again: rfd_key {} vfs_key {}",
        u8::from(rfd_key),
        u8::from(vfs_key)
    );
    drop(pair);
    let deleted = keys_become([false, false], OFF_WITHIN)
        .context("after the namespace with rfd=1 vfs=1 was deleted")?;
    info!(
        "keys off after: the runner's rfd=0 vfs=0 {all_off:?}, the new namespace's {knobs_off:?}, \
         its deletion {deleted:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 7. haproxy's connections to its backend.

/// haproxy's frontend and nginx's ports, outside the ephemeral range.
const FRONTEND_PORT: u16 = 8081;
const BACKEND_PORT: u16 = 8080;
/// Requests of the stock arm: it is only reported, and fewer keep the test's run time down
/// (the guest is emulated: about 130 requests a second through haproxy).
const STOCK_REQUESTS: u64 = 2_000;
/// Ring buffer per CPU for the state changes of the backend connections (about 80 bytes per
/// event, three events per connection in the common case, all may land on one CPU).
const TRACE_BUFFER_KB: u64 = 24 * 1024;
const SET_STATE: &str = "sock/inet_sock_set_state";

/// TCP states as the tracepoint numbers them (include/net/tcp_states.h).
const ESTABLISHED: u64 = 1;
const SYN_SENT: u64 = 2;
const FIN_WAIT1: u64 = 4;
const CLOSE: u64 = 7;
const CLOSE_WAIT: u64 = 8;
const LAST_ACK: u64 = 9;

/// One backend connection of haproxy, from its state changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Traced {
    /// CPU of CLOSE -> SYN_SENT: connect() (the port is picked right after, in the same call).
    connect: Option<usize>,
    /// CPU of SYN_SENT -> ESTABLISHED: where the SYN-ACK was processed.
    established: Option<usize>,
    /// The local port, known from ESTABLISHED on.
    port: Option<u16>,
    /// CPU of the first of ESTABLISHED -> FIN_WAIT1 (close() or shutdown()), ESTABLISHED ->
    /// CLOSE (an abortive close: haproxy resets backend connections it is done with), and
    /// CLOSE_WAIT -> LAST_ACK (close() after the server closed).
    close: Option<usize>,
}

/// The connect, SYN-ACK and close CPUs and the port of a backend connection.
type Seen = (usize, usize, usize, u16);

impl Traced {
    /// All three CPUs and the port, if all were seen.
    fn complete(&self) -> Option<Seen> {
        Some((self.connect?, self.established?, self.close?, self.port?))
    }
}

/// Backend connections found in a trace.
#[derive(Debug, Default, PartialEq, Eq)]
struct Backend {
    complete: Vec<Seen>,
    /// Connections with a state change missing (still open when the trace stopped, failed).
    incomplete: usize,
}

impl Backend {
    /// Parses the state changes of a trace (`fields` output, time order) of the sockets
    /// connecting to the backend.
    fn parse(trace: &str) -> Backend {
        let mut open: HashMap<u64, Traced> = HashMap::new();
        let mut done = Vec::new();
        let events = trace
            .lines()
            .filter_map(tracefs::parse_event)
            .filter(|e| e.name == "inet_sock_set_state");
        for event in events {
            let (Some(sk), Some(old), Some(new)) = (
                event.field("skaddr"),
                event.field("oldstate"),
                event.field("newstate"),
            ) else {
                continue;
            };
            if (old, new) == (CLOSE, SYN_SENT) {
                let fresh = Traced {
                    connect: Some(event.cpu),
                    ..Traced::default()
                };
                // The socket's memory was reused for a new connection.
                done.extend(open.insert(sk, fresh));
                continue;
            }
            let Some(conn) = open.get_mut(&sk) else {
                // A connection from before the trace started.
                continue;
            };
            match (old, new) {
                (SYN_SENT, ESTABLISHED) => {
                    conn.established = Some(event.cpu);
                    conn.port = event.field("sport").and_then(|p| u16::try_from(p).ok());
                }
                (ESTABLISHED, FIN_WAIT1 | CLOSE) | (CLOSE_WAIT, LAST_ACK) => {
                    conn.close.get_or_insert(event.cpu);
                }
                _ => {}
            }
            if new == CLOSE {
                done.extend(open.remove(&sk));
            }
        }
        done.extend(open.into_values());
        let complete: Vec<_> = done.iter().filter_map(Traced::complete).collect();
        Backend {
            incomplete: done.len() - complete.len(),
            complete,
        }
    }

    fn total(&self) -> usize {
        self.complete.len() + self.incomplete
    }

    /// Complete connections for which `f` holds.
    fn count(&self, f: impl Fn(&Seen) -> bool) -> usize {
        self.complete.iter().filter(|c| f(c)).count()
    }

    fn of_complete(&self, local: usize) -> Share {
        Share {
            local,
            total: self.complete.len(),
        }
    }

    /// Connections connected and answered (SYN-ACK) on the CPU that owns their port: what
    /// RFD steers.
    fn steered(&self, ncpu: usize) -> Share {
        self.of_complete(self.count(|&(c, e, _, p)| c == cpu_of(p, ncpu) && e == c))
    }

    /// Connections connected, answered and closed on the CPU that owns their port.
    fn share(&self, ncpu: usize) -> Share {
        self.of_complete(self.count(|&(c, e, x, p)| c == cpu_of(p, ncpu) && e == c && x == c))
    }

    /// The parts of locality, for messages.
    fn details(&self, ncpu: usize) -> String {
        format!(
            "port of the connect CPU {}, SYN-ACK on the port's CPU {}, closed on the connect \
             CPU {}; {} connections incomplete",
            self.count(|&(c, _, _, p)| c == cpu_of(p, ncpu)),
            self.count(|&(_, e, _, p)| e == cpu_of(p, ncpu)),
            self.count(|&(c, _, x, _)| c == x),
            self.incomplete
        )
    }
}

/// Runs `load` (requests through haproxy), recording the state changes of haproxy's sockets
/// to the backend port. A request may be answered before haproxy closes its backend
/// connection: such closes may be missing from the trace.
fn backend_arm(
    trace: &mut tracefs::Instance,
    load: impl FnOnce() -> TestResult<Load>,
) -> TestResult<(Load, Backend)> {
    trace.clear()?;
    trace.enable(SET_STATE, &format!("dport == {BACKEND_PORT}"))?;
    let load = load();
    trace.disable_all()?;
    let load = load?;
    let start = Instant::now();
    let (text, written) = trace.read_whole().context("set-up")?;
    let backend = Backend::parse(&text);
    info!(
        "  {written} state changes read and parsed in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    ensure!(
        backend.total() as u64 >= load.requests,
        "set-up: {} requests, but the trace shows only {} connections to the backend",
        load.requests,
        backend.total()
    );
    Ok((load, backend))
}

/// Runs `f(url)` with haproxy (`threads` threads, in the runner's namespace) serving `url` on
/// `front`'s server end from nginx in `back`'s client namespace; both stopped afterwards.
fn through_haproxy<T>(
    front: &NetnsPair,
    back: &NetnsPair,
    threads: usize,
    f: impl FnOnce(&str) -> TestResult<T>,
) -> TestResult<T> {
    let frontend = SocketAddr::new(front.server_ip(false), FRONTEND_PORT);
    let backend = SocketAddr::new(back.client_ip(false), BACKEND_PORT);
    let dir = WorkDir::new("haproxy-rfd")?;
    let mut nginx = in_ns(back.client_ns(), || start_nginx(&dir, &[backend], ""))?;
    let mut haproxy = start_haproxy(&dir, threads, frontend, backend)?;
    let url = format!("http://{frontend}/");
    let result = check_body(front, &url).and_then(|()| f(&url));
    let stopped = [haproxy.stop(), nginx.stop()];
    let value = result?;
    stopped.into_iter().collect::<TestResult>()?;
    Ok(value)
}

/// A tracing instance of this runner.
fn trace_instance() -> TestResult<tracefs::Instance> {
    tracefs::Instance::create(
        &format!("fastsocket-rfd-{}", std::process::id()),
        TRACE_BUFFER_KB,
    )
}

/// Unchanged haproxy (one thread per CPU) in the runner's namespace, between wrk (in a client
/// namespace) and nginx (in a third namespace, on a port outside the ephemeral range), with
/// RPS over every CPU on its backend-facing device, 20,000 requests with every feature on
/// (`listen_ports=all`, `rfd=1`), 0 errors: haproxy's accepts are counted by the local listen
/// table, and its connections to nginx are connected and answered (SYN-ACK) on the CPU that
/// owns their port, as the kernel's `sock:inet_sock_set_state` tracepoint shows; the CPU that
/// closes them is reported. A shorter stock arm (module not loaded) is traced alike.
pub fn haproxy_20k(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let cpus = cpus(ctx)?;
    let ncpu = procfs::nr_cpu_ids()?;
    let _enabled = KnobGuard::enabled("1")?;
    let _ports = KnobGuard::listen_ports("all")?;
    let _rfd = KnobGuard::rfd("1")?;
    let front = ctx.netns_pair(ServerSide::Current)?;
    let back = ctx.netns_pair(ServerSide::Current)?;
    back.set_rps(&cpus)
        .context("RPS on haproxy's backend-facing device")?;
    let ctx: &Ctx = ctx;
    let ((module_load, module, accepts), (stock_load, stock)) =
        through_haproxy(&front, &back, cpus.len(), |url| {
            let mut trace = trace_instance()?;
            // haproxy's frontend and nginx behind it.
            let listeners = [
                Listener {
                    ns: None,
                    port: FRONTEND_PORT,
                },
                Listener {
                    ns: Some(back.client_ns()),
                    port: BACKEND_PORT,
                },
            ];
            let wrk = |target| wrk_until(&front, url, target, WRK_TIMEOUT, &listeners);
            let before = procfs::read_counters()?;
            let (load, backend) = backend_arm(&mut trace, || wrk(TARGET_REQUESTS))?;
            let accepts = procfs::read_counters()?.since(&before)?.total();
            let stock = stock(ctx, || backend_arm(&mut trace, || wrk(STOCK_REQUESTS)))?;
            Ok(((load, backend, accepts), stock))
        })?;
    let (module_share, stock_share) = (module.share(ncpu), stock.share(ncpu));
    for (name, load, backend) in [
        ("module", &module_load, &module),
        ("stock", &stock_load, &stock),
    ] {
        info!(
            "{name}: {} requests in {} wrk runs, {:.0} conn/s; backend connections: {}",
            load.requests,
            load.runs,
            load.requests as f64 / load.seconds.max(1e-9),
            backend.details(ncpu)
        );
    }
    let accept_share = Share {
        local: accepts.local as usize,
        total: accepts.accepts as usize,
    };
    info!(
        "haproxy's accepts with the module: locality {accept_share}, {} taken from their \
         CPU's queue, {} stolen, {} fell back to the listener's queue",
        accepts.queue_local, accepts.queue_steal, accepts.queue_fallback
    );
    ensure!(
        accepts.accepts >= module_load.requests,
        "{} completed requests (one connection each), but haproxy's accepts rose by only {}",
        module_load.requests,
        accepts.accepts
    );
    // What RFD controls, held to 99%: every backend connection gets a port of the CPU that
    // runs its connect(), and its SYN-ACK is processed on that port's CPU. What it does not:
    // the CPU of the close is where haproxy's thread runs then, and Debian's configuration
    // does not pin haproxy's threads, so the scheduler moves one between a connection's
    // connect() and close() now and then (seen in the emulated guest with 2 vCPUs: 92.7-97.5%
    // of connections closed on the connect CPU with the module, 87-92% in stock's arm; a CI
    // run fell under the 95% floor this was held to until 2026-12-06). Printed, not judged: `rfd_locality_*` hold the close to 99%
    // with threads that stay on their CPU.
    let total = module.complete.len();
    let port_ok = module.count(|&(c, _, _, p)| c == cpu_of(p, ncpu));
    let synack_ok = module.count(|&(_, e, _, p)| e == cpu_of(p, ncpu));
    info!(
        "haproxy's backend connections connected and answered on their port's CPU: module \
         {}, stock {}; also closed there: module {module_share}, stock {stock_share}",
        module.steered(ncpu),
        stock.steered(ncpu)
    );
    ensure!(
        total > 0 && port_ok * 100 >= 99 * total && synack_ok * 100 >= 99 * total,
        "haproxy's backend connections with the module: of {total}, {port_ok} got a port of \
         the connect CPU and {synack_ok} had their SYN-ACK processed on the port's CPU, \
         expected at least 99% of each ({})",
        module.details(ncpu)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stock side of the port-choice tests on the host's kernel (no module): connections
    /// to the silent peer stay in SYN_SENT and exhaust exactly the range, closing them leaves
    /// nothing, and tcp_tw_reuse takes every TIME_WAIT of a full range. Needs root and
    /// iproute2: `sudo cargo test -- --ignored`.
    #[test]
    #[ignore = "needs root and iproute2"]
    fn stock_port_choice_on_the_host() {
        let cpus = procfs::online_cpus().unwrap();
        let n = (150..175).find(|&n| !NetnsPair::in_use(n)).unwrap();
        let pair = NetnsPair::create(n, ServerSide::Named, &cpus).unwrap();
        let silent = silent_peer(&pair).unwrap();
        sys::raise_open_files_limit(40_000).unwrap();
        let mut ranges = exhaustion_ranges(cpus.len());
        // The host may not allow 28,000 open files: 18,000 ports, 64 free.
        let holes = ranges.last_mut().unwrap();
        holes.high = holes.low + 17999;
        let high = holes.high;
        holes.free.as_mut().unwrap().retain(|&p| p <= high);
        for (i, range) in ranges.iter().enumerate() {
            let _bound = bind_all_but_free(&pair, range).unwrap();
            client_sysctl(&pair, PORT_RANGE, &format!("{} {}", range.low, range.high)).unwrap();
            let dest = SocketAddr::new(silent, EXHAUSTION_PORT + i as u16);
            let max = range.free_ports().len() + 4;
            let (ports, took) = exhaust(&pair, dest, cpus[0], PortChoice::Connect, max).unwrap();
            eprintln!("{range}: {} ports in {took:?}", ports.len());
            assert_eq!(ports.len(), range.expected(), "{range}");
        }
        client_sysctl(&pair, PORT_RANGE, "32768 60999").unwrap();
        let (ports, _) = exhaust(
            &pair,
            SocketAddr::new(silent, EXHAUSTION_PORT),
            cpus[0],
            PortChoice::SocketRange(SOCKET_RANGE.0, SOCKET_RANGE.1),
            40,
        )
        .unwrap();
        assert_eq!(ports.len(), 20);
        let reused = tw_reuse_arm(
            &pair,
            SocketAddr::new(pair.server_ip(false), TW_PORT),
            cpus[0],
        )
        .unwrap();
        assert_eq!(reused, usize::from(TW_RANGE.1 - TW_RANGE.0) + 1);
    }

    /// The stock arm of [`haproxy_20k`] on the host's kernel (no module):
    /// the trace of haproxy's backend connections is complete and parsed. Needs root,
    /// iproute2, tracefs, nginx, haproxy and wrk: `sudo cargo test -- --ignored`.
    #[test]
    #[ignore = "needs root, iproute2, tracefs, nginx, haproxy and wrk"]
    fn haproxy_backend_trace_on_the_host() {
        let cpus = procfs::online_cpus().unwrap();
        let mut free = (175..200).filter(|&n| !NetnsPair::in_use(n));
        let front = NetnsPair::create(free.next().unwrap(), ServerSide::Current, &cpus).unwrap();
        let back = NetnsPair::create(free.next().unwrap(), ServerSide::Current, &cpus).unwrap();
        // Sequential HTTP/1.0 requests: wrk is too fast for Debian's nginx limits on a host.
        let requests = 300;
        let (load, backend) = through_haproxy(&front, &back, cpus.len(), |url| {
            let addr: SocketAddr = url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .parse()
                .unwrap();
            backend_arm(&mut trace_instance()?, || {
                let start = Instant::now();
                in_ns(front.client_ns(), || {
                    for _ in 0..requests {
                        let mut conn = TcpStream::connect(addr).context("connect")?;
                        conn.write_all(b"GET / HTTP/1.0\r\n\r\n").context("send")?;
                        let mut reply = String::new();
                        conn.read_to_string(&mut reply).context("reply")?;
                        ensure!(reply.starts_with("HTTP/1.1 200"), "{reply}");
                    }
                    Ok(())
                })?;
                Ok(Load {
                    requests,
                    seconds: start.elapsed().as_secs_f64(),
                    runs: 1,
                })
            })
        })
        .unwrap();
        let ncpu = procfs::nr_cpu_ids().unwrap();
        eprintln!(
            "{} requests: {} ({})",
            load.requests,
            backend.share(ncpu),
            backend.details(ncpu)
        );
        assert!(backend.total() as u64 >= load.requests);
        assert!(backend.complete.len() as u64 + 5 >= load.requests);
    }

    #[test]
    fn maps_ports_to_cpus_in_pairs() {
        assert_eq!(cpu_of(32768, 2), 0);
        assert_eq!(cpu_of(32769, 2), 0);
        assert_eq!(cpu_of(32770, 2), 1);
        assert_eq!(cpu_of(32771, 2), 1);
        assert_eq!(cpu_of(65535, 4), 3);
        assert_eq!(cpu_of(7, 1), 0);
        assert_eq!(owned(32768, 32768, 0, 2), 1);
        assert_eq!(owned(32768, 32768, 1, 2), 0);
        assert_eq!(owned(32769, 32770, 0, 2), 1);
        assert_eq!(owned(32769, 32770, 1, 2), 1);
        assert_eq!(owned(40000, 40099, 0, 2), 50);
        assert_eq!(owned(32768, 32768 + 27999, 1, 2), 14000);
        let ranges = exhaustion_ranges(2);
        for range in &ranges {
            assert!(range.low >= 1024 && range.low <= range.high, "{range}");
        }
        let sizes: Vec<usize> = ranges.iter().map(PortRange::size).collect();
        assert_eq!(sizes, [1, 2, 2, 100, 2000, 28000]);
        let expected: Vec<usize> = ranges.iter().map(PortRange::expected).collect();
        assert_eq!(expected, [1, 2, 2, 100, 2000, HOLES]);
        assert_eq!((ranges[1].owned(0, 2), ranges[1].owned(1, 2)), (2, 0));
        assert_eq!((ranges[2].owned(0, 2), ranges[2].owned(1, 2)), (1, 1));
        let holes = &ranges[5];
        let free = holes.free.as_ref().unwrap();
        assert!(free.iter().all(|p| (holes.low..=holes.high).contains(p)));
        let mut sorted = free.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), HOLES);
        for cpu in 0..2 {
            assert!(holes.owned(cpu, 2) >= HOLES / 4, "{}", holes.owned(cpu, 2));
            let parity = |odd| {
                free.iter()
                    .filter(|&&p| cpu_of(p, 2) == cpu && p % 2 == odd)
                    .count()
            };
            assert!(parity(0) > 0 && parity(1) > 0, "cpu {cpu}: {free:?}");
        }
        let r4 = &exhaustion_ranges(4)[2];
        assert_eq!((r4.low, r4.high), (61001, 61004));
        // The bound ports of the last range are in none of the others.
        for range in &ranges[..5] {
            assert!(range.low > holes.high, "{range}");
        }
        assert_eq!(PortRange::all(40000, 40002).expected(), 2);
    }

    #[test]
    fn own_ports_come_first() {
        let ports = [32768, 32769, 32770, 32771];
        assert!(check_own_ports_first(&ports, 2, 0, 2, "x").is_ok());
        assert!(check_own_ports_first(&ports, 2, 1, 2, "x").is_err());
        assert!(check_own_ports_first(&[32770, 32768], 1, 1, 2, "x").is_ok());
        assert!(check_own_ports_first(&[32768, 32770], 1, 1, 2, "x").is_err());
        assert!(check_own_ports_first(&[], 0, 0, 2, "x").is_ok());
    }

    fn line(cpu: usize, sk: u64, old: u64, new: u64, sport: u16) -> String {
        format!(
            "  haproxy-1 [{cpu:03}] ..... 1.{sk:06}: inet_sock_set_state: skaddr=0x{sk:x} (1) \
             oldstate=0x{old:x} ({old}) newstate=0x{new:x} ({new}) sport=0x{sport:x} ({sport}) \
             dport=0x1f90 (8080)\n"
        )
    }

    #[test]
    fn follows_backend_connections_through_their_states() {
        let mut trace = String::from("# entries-in-buffer/entries-written: 11/11   #P:2\n");
        // Local: connect, SYN-ACK and abortive close on cpu 1, port 32770 (cpu 1 of 2).
        trace += &line(1, 1, CLOSE, SYN_SENT, 0);
        trace += &line(1, 1, SYN_SENT, ESTABLISHED, 32770);
        // Interleaved: a second socket, closed by the server first, SYN-ACK on cpu 1.
        trace += &line(0, 2, CLOSE, SYN_SENT, 0);
        trace += &line(1, 1, ESTABLISHED, CLOSE, 32770);
        trace += &line(1, 2, SYN_SENT, ESTABLISHED, 32768);
        trace += &line(1, 2, ESTABLISHED, CLOSE_WAIT, 32768);
        trace += &line(0, 2, CLOSE_WAIT, LAST_ACK, 32768);
        trace += &line(1, 2, LAST_ACK, CLOSE, 32768);
        // The first socket's memory reused, never established; one from before the trace.
        trace += &line(0, 1, CLOSE, SYN_SENT, 0);
        trace += &line(0, 9, ESTABLISHED, FIN_WAIT1, 40000);
        let backend = Backend::parse(&trace);
        assert_eq!(
            backend.complete,
            vec![(1, 1, 1, 32770), (0, 1, 0, 32768)],
            "{backend:?}"
        );
        assert_eq!(backend.incomplete, 1);
        assert_eq!(backend.total(), 3);
        let share = backend.share(2);
        assert_eq!((share.local, share.total), (1, 2));
        let details = backend.details(2);
        assert!(
            details.starts_with("port of the connect CPU 2, SYN-ACK on the port's CPU 1, closed on the connect CPU 2"),
            "{details}"
        );
    }

    #[test]
    fn a_connection_is_local_only_on_its_ports_cpu() {
        let conn = ConnCpus {
            connect: 1,
            port: 32770,
            incoming: 1,
            close: 1,
        };
        assert!(conn.is_local(2));
        assert!(!ConnCpus {
            incoming: 0,
            ..conn
        }
        .is_local(2));
        assert!(!ConnCpus { close: 0, ..conn }.is_local(2));
        assert!(!ConnCpus {
            port: 32768,
            ..conn
        }
        .is_local(2));
        assert!(!ConnCpus {
            incoming: -1,
            ..conn
        }
        .is_local(2));
        let l = Locality::of(&[conn, ConnCpus { close: 0, ..conn }], 2);
        assert_eq!(
            (
                l.share.local,
                l.port_of_connect_cpu,
                l.incoming_on_port_cpu,
                l.closed_on_connect_cpu
            ),
            (1, 2, 2, 1)
        );
    }
}
