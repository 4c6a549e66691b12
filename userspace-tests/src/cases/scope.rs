//! Where accept locality applies: the `listen_ports` and `listen_scan` sysctls, and
//! separate network namespaces serving the same port.

use super::knob::expect_eperm_without_cap;
use super::{connect_and_wait, in_ns, Context, Ctx, KnobGuard, TestResult};
use crate::netns::ServerSide;
use crate::procfs::{self, Counts, CpuStats};
use crate::server::{AcceptServer, ServerOpts};

/// Writes `value` to `knob`, expecting EINVAL, and checks that the value did not change.
fn expect_einval(knob: &str, value: &str) -> TestResult {
    expect_einval_bytes(knob, value.as_bytes(), &format!("{value:?}"))
}

/// [`expect_einval`] of any bytes, named `what` in messages.
pub(super) fn expect_einval_bytes(knob: &str, value: &[u8], what: &str) -> TestResult {
    let before = procfs::read_knob(knob)?;
    match procfs::write_knob(knob, value) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(format!("writing {what} to {knob}: {e}, expected EINVAL")),
        Ok(()) => {
            return Err(format!(
                "writing {what} to {knob} succeeded, expected EINVAL"
            ))
        }
    }
    let after = procfs::read_knob(knob)?;
    ensure!(
        after == before,
        "the refused write of {what} changed {knob} from {before:?} to {after:?}"
    );
    Ok(())
}

/// Writes `value` to `knob` and checks that it reads back as `expected`.
fn expect_reads(knob: &str, value: &str, expected: &str) -> TestResult {
    procfs::write_knob(knob, value.as_bytes()).context(format!("writing {value:?} to {knob}"))?;
    let text = procfs::read_knob(knob)?;
    ensure!(
        text == expected,
        "after writing {value:?}, {knob} reads {text:?}, expected {expected:?}"
    );
    Ok(())
}

/// The wake-up counters' increase over `count` requests to `server`.
fn wakes_over(
    pair: &crate::netns::NetnsPair,
    server: &AcceptServer,
    count: usize,
) -> TestResult<CpuStats> {
    let before = procfs::read_counters()?;
    connect_and_wait(pair, server, count)?;
    procfs::read_counters()?.since(&before).map(|d| d.total())
}

pub fn listen_ports_knob(ctx: &mut Ctx) -> TestResult {
    const KNOB: &str = procfs::LISTEN_PORTS;
    const COUNT: usize = 50;
    ctx.ensure_loaded()?;
    let _enabled = KnobGuard::enabled("1")?;
    let _ports = KnobGuard::listen_ports("all")?;

    for (value, expected) in [
        ("8001,80,8000", "80,8000-8001\n"),
        ("all", "all\n"),
        ("", "\n"),
        ("443", "443\n"),
        ("\n", "\n"),
        (" 80 , 8000-8099 \n", "80,8000-8099\n"),
        ("1-65535", "1-65535\n"),
        ("90-99,80-89", "80-99\n"),
        ("all\n", "all\n"),
    ] {
        expect_reads(KNOB, value, expected)?;
    }
    for start in ["80,8000-8001", "all", ""] {
        procfs::write_knob(KNOB, start.as_bytes()).context(format!("writing {start:?}"))?;
        for bad in ["abc", "0", "65536", "90-80", "80,x", "-5"] {
            expect_einval(KNOB, bad).context(format!("starting from {start:?}"))?;
        }
    }
    procfs::write_knob(KNOB, b"all").context("writing all")?;
    expect_eperm_without_cap(KNOB, "80")?;
    let text = procfs::read_knob(KNOB)?;
    ensure!(
        text == "all\n",
        "the refused write changed {KNOB} to {text:?}"
    );

    let pair = ctx.netns_pair(ServerSide::Current)?;
    let server = AcceptServer::start(pair.server_ip(false), &ctx.cpus, None)?;
    let port = server.addr().port();
    let other = if port == u16::MAX { port - 1 } else { port + 1 };
    procfs::write_knob(KNOB, other.to_string().as_bytes()).context("writing another port")?;
    let out = wakes_over(&pair, &server, COUNT)?;
    procfs::write_knob(KNOB, port.to_string().as_bytes()).context("writing the server port")?;
    let inside = wakes_over(&pair, &server, COUNT)?;
    server.stop()?;
    info!(
        "listen_ports {other} (server on {port}): {} wake-ups; listen_ports {port}: {} ({} local, {} fallback, {} held)",
        out.wakes(),
        inside.wakes(),
        inside.wake_local,
        inside.wake_fallback,
        inside.wake_held
    );
    ensure!(
        out.wakes() == 0,
        "with listen_ports={other}, {COUNT} connections to port {port} counted {} wake-ups",
        out.wakes()
    );
    ensure!(
        inside.wakes() == COUNT as u64,
        "with listen_ports={port}, {COUNT} connections to port {port} counted {} wake-ups",
        inside.wakes()
    );
    Ok(())
}

pub fn listen_scan_knob(ctx: &mut Ctx) -> TestResult {
    const KNOB: &str = procfs::LISTEN_SCAN;
    const COUNT: usize = 50;
    ctx.ensure_loaded()?;
    let _enabled = KnobGuard::enabled("1")?;
    let _scan = KnobGuard::listen_scan("64")?;
    for value in ["0", "64", "4096", "1"] {
        expect_reads(KNOB, value, &format!("{value}\n"))?;
    }
    procfs::write_knob(KNOB, b"64").context("writing 64")?;
    for bad in ["-1", "4097", "abc"] {
        expect_einval(KNOB, bad)?;
    }
    expect_eperm_without_cap(KNOB, "0")?;
    let value = procfs::read_knob_int(KNOB)?;
    ensure!(value == 64, "the refused write changed {KNOB} to {value}");

    // No preference: every connection is still served.
    procfs::write_knob(KNOB, b"0").context("writing 0")?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    let server = AcceptServer::start(pair.server_ip(false), &ctx.cpus, None)?;
    connect_and_wait(&pair, &server, COUNT)?;
    let accepted = server.stop()?;
    ensure!(
        accepted.len() == COUNT,
        "with listen_scan=0, {COUNT} requests were answered but {} accepted",
        accepted.len()
    );
    info!(
        "listen_scan=0: {}/{COUNT} local",
        crate::server::count_local(&accepted)
    );
    Ok(())
}

pub fn listen_hold_ms_knob(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    info!(
        "{} reads {:?} at the start",
        procfs::LISTEN_HOLD_MS,
        procfs::read_knob(procfs::LISTEN_HOLD_MS)?
    );
    let _hold = KnobGuard::listen_hold_ms("5")?;
    check_int_knob(procfs::LISTEN_HOLD_MS, ["5", "0"], &["-1", "1001", "abc"])
}

pub fn listen_pull_knob(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let _pull = KnobGuard::listen_pull("1")?;
    check_int_knob(
        procfs::LISTEN_PULL,
        ["1", "0"],
        &["-1", "2", "abc", "99999999999999999999"],
    )
}

pub fn listen_queues_knob(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let _queues = KnobGuard::listen_queues("1")?;
    check_int_knob(
        procfs::LISTEN_QUEUES,
        ["1", "0"],
        &["-1", "2", "abc", "99999999999999999999"],
    )
}

/// Checks an integer knob: starting from either of `values` (the first is the default), every
/// `bad` write fails with EINVAL and changes nothing; both values read back; a write without
/// CAP_NET_ADMIN fails with EPERM. Leaves the default set.
pub(super) fn check_int_knob(knob: &str, values: [&str; 2], bad: &[&str]) -> TestResult {
    for start in values {
        expect_reads(knob, start, &format!("{start}\n"))?;
        for input in bad {
            expect_einval(knob, input).context(format!("starting from {start}"))?;
        }
    }
    let default = values[0];
    expect_reads(knob, default, &format!("{default}\n"))?;
    expect_eperm_without_cap(knob, values[1])?;
    let value = procfs::read_knob_int(knob)?;
    ensure!(
        value.to_string() == default,
        "the refused write changed {knob} to {value}"
    );
    info!("{knob}: {bad:?} refused with EINVAL, {values:?} read back, EPERM without CAP_NET_ADMIN");
    Ok(())
}

pub fn two_netns_same_port(ctx: &mut Ctx) -> TestResult {
    const COUNT: usize = 50;
    ctx.ensure_loaded()?;
    let _enabled = KnobGuard::enabled("1")?;
    let _ports = KnobGuard::listen_ports("all")?;
    let pairs = [
        ctx.netns_pair(ServerSide::Named)?,
        ctx.netns_pair(ServerSide::Named)?,
    ];
    let namespaces = pairs
        .iter()
        .map(|p| {
            p.server_ns()
                .map(str::to_owned)
                .ok_or("server netns missing")
        })
        .collect::<Result<Vec<_>, _>>()?;

    let init_before = procfs::read_counters()?;
    let mut before = Vec::new();
    for ns in &namespaces {
        before.push(in_ns(ns, procfs::read_counters)?);
    }
    let first = AcceptServer::start_with(
        &ServerOpts::pinned(pairs[0].server_ip(false), &ctx.cpus)
            .ns(Some(&namespaces[0]))
            .reply(b'1'),
    )?;
    let port = first.addr().port();
    let second = AcceptServer::start_with(
        &ServerOpts::pinned(pairs[1].server_ip(false), &ctx.cpus)
            .ns(Some(&namespaces[1]))
            .port(port)
            .reply(b'2'),
    )
    .context(format!("second server on port {port}"))?;
    let servers = [first, second];
    for (pair, server) in pairs.iter().zip(&servers) {
        connect_and_wait(pair, server, COUNT)?;
    }
    let init_delta = procfs::read_counters()?.since(&init_before)?.total();
    for ((ns, before), server) in namespaces.iter().zip(&before).zip(&servers) {
        let delta = in_ns(ns, procfs::read_counters)?.since(before)?.total();
        info!(
            "{ns} (port {port}): accepts +{}, local +{}, wake-ups +{}",
            delta.accepts,
            delta.local,
            delta.wakes()
        );
        ensure!(
            delta.accepts == COUNT as u64 && delta.wakes() == COUNT as u64,
            "{COUNT} connections to {} in {ns} raised its accepts by {} and wake-ups by {}",
            server.addr(),
            delta.accepts,
            delta.wakes()
        );
    }
    ensure!(
        init_delta.connections() == CpuStats::default(),
        "connections in other namespaces changed the init netns counters: {init_delta:?}"
    );
    for (ns, server) in namespaces.iter().zip(servers) {
        let accepted = server.stop().context(ns)?.len();
        ensure!(
            accepted == COUNT,
            "the server in {ns} accepted {accepted} connections, expected {COUNT}"
        );
    }
    Ok(())
}
