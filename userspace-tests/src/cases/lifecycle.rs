//! Loading and unloading the module, also while connections are being accepted.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::{Ctx, TestResult, ACCEPT_TIMEOUT};
use crate::client::LoopClient;
use crate::netns::ServerSide;
use crate::procfs::Counts;
use crate::server::AcceptServer;
use crate::{module, procfs};

/// Checks every file of the loaded module and its initial values.
fn check_loaded(ctx: &Ctx) -> TestResult {
    procfs::read_hooks()?.expect(Some(module::NAME))?;
    let counters = procfs::read_counters()?;
    let missing: Vec<_> = ctx
        .cpus
        .iter()
        .filter(|cpu| !counters.per_cpu.contains_key(cpu))
        .collect();
    ensure!(
        missing.is_empty(),
        "{} has no row for online CPUs {missing:?}",
        procfs::COUNTERS
    );
    let enabled = procfs::read_enabled()?;
    ensure!(
        enabled == 1,
        "{} reads {enabled}, expected 1",
        procfs::knob_path(procfs::ENABLED)
    );
    let scan = procfs::read_knob_int(procfs::LISTEN_SCAN)?;
    ensure!(
        scan == 64,
        "{} reads {scan}, expected 64",
        procfs::knob_path(procfs::LISTEN_SCAN)
    );
    let ports = procfs::read_knob(procfs::LISTEN_PORTS)?;
    ensure!(
        ports == "all\n",
        "{} reads {ports:?}, expected \"all\\n\"",
        procfs::knob_path(procfs::LISTEN_PORTS)
    );
    Ok(())
}

pub fn module_load(ctx: &mut Ctx) -> TestResult {
    if module::is_loaded() {
        info!("module already loaded, unloading it first");
        module::rmmod()?;
    }
    procfs::read_hooks()?.expect(None)?;
    ctx.insmod()?;
    check_loaded(ctx)
}

pub fn unload_reload(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    module::rmmod()?;
    procfs::read_hooks()?.expect(None)?;
    let knobs = [procfs::ENABLED, procfs::LISTEN_SCAN, procfs::LISTEN_PORTS].map(procfs::knob_path);
    for path in knobs.iter().map(String::as_str).chain([procfs::COUNTERS]) {
        ensure!(!Path::new(path).exists(), "{path} still exists after rmmod");
    }
    ctx.insmod()?;
    check_loaded(ctx)?;
    let counters = procfs::read_counters()?;
    let total = counters.total().connections();
    ensure!(
        total == Default::default(),
        "counters are not zero after reloading: {total:?}"
    );
    Ok(())
}

/// Polls `done` every 10 ms until it holds or `timeout` passes.
fn wait_until(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}

pub fn unload_under_load(ctx: &mut Ctx) -> TestResult {
    const ROUNDS: usize = 3;
    const PAUSE: Duration = Duration::from_millis(200);
    ctx.ensure_loaded()?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    let server = AcceptServer::start(pair.server_ip(false), &ctx.cpus, None)?;
    let client = LoopClient::start(pair.client_ns(), server.addr())?;
    ensure!(
        wait_until(ACCEPT_TIMEOUT, || client.connected() >= 10),
        "client made only {} connections before the first unload",
        client.connected()
    );
    for round in 1..=ROUNDS {
        module::rmmod().map_err(|e| format!("round {round}: {e}"))?;
        thread::sleep(PAUSE);
        ctx.insmod().map_err(|e| format!("round {round}: {e}"))?;
        procfs::read_hooks()?.expect(Some(module::NAME))?;
        thread::sleep(PAUSE);
    }
    let reloaded_at = client.connected();
    ensure!(
        wait_until(ACCEPT_TIMEOUT, || client.connected() >= reloaded_at + 10),
        "client stalled after the reloads at {} connections",
        client.connected()
    );
    let stats = client.stop()?;
    server.wait_for(stats.connected, ACCEPT_TIMEOUT)?;
    let accepted = server.stop()?.len();
    info!(
        "{} connections during {ROUNDS} unload/reload rounds",
        stats.connected
    );
    stats.check_all_answered()?;
    ensure!(
        accepted == stats.connected,
        "client connected {} times, server accepted {accepted}",
        stats.connected
    );
    Ok(())
}

/// The hooks the module registers fit the machine, and connections are served with them: on a
/// kernel with several possible CPUs every feature's static key is on and accepts are counted;
/// on one (nothing to steer: `make test`'s second boot) only the socket inode cache's, so no
/// accept reaches the module and its counters stay still, but the cache serves the sockets.
pub fn hooks_fit_cpu_count(ctx: &mut Ctx) -> TestResult {
    const COUNT: usize = 200;
    ctx.ensure_loaded()?;
    let _enabled = super::KnobGuard::enabled("1")?;
    let cpus = procfs::nr_cpu_ids()?;
    let several = cpus > 1;
    for key in ["accept_key", "locality_key", "rfd_key"] {
        let on = procfs::read_hooks_flag(key)?;
        ensure!(
            on == several,
            "{key} is {}, expected {} with {cpus} possible CPU(s)",
            u8::from(on),
            u8::from(several)
        );
    }
    ensure!(
        procfs::read_hooks_flag("vfs_key")?,
        "vfs_key is 0 with the module loaded"
    );

    let pair = ctx.netns_pair(ServerSide::Current)?;
    let server = AcceptServer::start(pair.server_ip(false), &ctx.cpus, None)?;
    let before = procfs::read_counters()?;
    super::connect_and_wait(&pair, &server, COUNT)?;
    let delta = procfs::read_counters()?.since(&before)?;
    let accepted = server.stop()?.len();
    ensure!(
        accepted == COUNT,
        "{accepted} of {COUNT} connections accepted"
    );
    let total = delta.total();
    let counted = if several { COUNT as u64 } else { 0 };
    ensure!(
        total.accepts == counted,
        "accepts rose by {} with {cpus} possible CPU(s), expected {counted}",
        total.accepts
    );
    // The counters are this namespace's: its sockets are the accepted children (the client's
    // are counted in the client's namespace).
    ensure!(
        total.vfs_reused > 0 && total.vfs_reused + total.vfs_new >= COUNT as u64,
        "socket inode cache: {} reused, {} new for {COUNT} accepted connections",
        total.vfs_reused,
        total.vfs_new
    );
    info!(
        "{cpus} possible CPU(s): {} of the hook keys on; {COUNT} connections, {} socket inode objects reused, {} new",
        if several { "all" } else { "vfs_key only" },
        total.vfs_reused,
        total.vfs_new
    );
    Ok(())
}
