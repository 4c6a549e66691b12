//! The accept counters of /proc/net/fastsocket against what userspace observed.

use super::{connect_and_wait, Ctx, KnobGuard, TestResult};
use crate::netns::ServerSide;
use crate::procfs;
use crate::server::AcceptServer;

pub fn accept_counters(ctx: &mut Ctx) -> TestResult {
    check_accept_counters(ctx, false, 200)
}

pub fn accept_counters_ipv6(ctx: &mut Ctx) -> TestResult {
    check_accept_counters(ctx, true, 100)
}

/// Makes `count` connections to a server with a pinned accept thread per CPU, then
/// compares the per-CPU counter deltas with the accepts userspace saw.
fn check_accept_counters(ctx: &mut Ctx, ipv6: bool, count: usize) -> TestResult {
    ctx.ensure_loaded()?;
    let _enabled = KnobGuard::enabled("1")?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    let server = AcceptServer::start(pair.server_ip(ipv6), &ctx.cpus, None)?;
    let before = procfs::read_counters()?;
    connect_and_wait(&pair, &server, count)?;
    let delta = procfs::read_counters()?.since(&before)?;
    let accepted = server.stop()?;

    let total = delta.total();
    ensure!(
        total.accepts == count as u64,
        "accepts rose by {} in {}, but {count} connections were accepted",
        total.accepts,
        procfs::COUNTERS
    );
    for &cpu in &ctx.cpus {
        let on_cpu = || accepted.iter().filter(|a| a.cpu == cpu);
        let (seen, seen_local) = (
            on_cpu().count() as u64,
            on_cpu().filter(|a| a.is_local()).count() as u64,
        );
        let d = delta.cpu(cpu);
        ensure!(
            d.accepts == seen,
            "cpu {cpu}: accepts rose by {}, userspace accepted {seen} there",
            d.accepts
        );
        ensure!(
            d.local == seen_local,
            "cpu {cpu}: local rose by {}, userspace saw {seen_local} accepts there with SO_INCOMING_CPU {cpu}",
            d.local
        );
        // `remote` is checked against accepts - local in every row read (procfs::Counters).
    }
    let local = accepted.iter().filter(|a| a.is_local()).count();
    info!(
        "accept locality: {:.1}% ({local}/{count})",
        100.0 * local as f64 / count as f64
    );
    Ok(())
}
