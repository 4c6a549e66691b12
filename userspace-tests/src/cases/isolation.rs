//! Counters and sysctl are per network namespace.

use super::{connect_and_wait, in_ns, Context, Ctx, KnobGuard, TestResult};
use crate::netns::ServerSide;
use crate::procfs;
use crate::server::AcceptServer;

pub fn netns_isolation(ctx: &mut Ctx) -> TestResult {
    const COUNT: usize = 50;
    ctx.ensure_loaded()?;
    let _enabled = KnobGuard::enabled("1")?;
    let pair = ctx.netns_pair(ServerSide::Named)?;
    let ns = pair.server_ns().ok_or("server netns missing")?;

    let value = in_ns(ns, procfs::read_enabled)?;
    ensure!(
        value == 1,
        "enabled is {value} in the new netns {ns}, expected 1"
    );
    let init_before = procfs::read_counters()?;
    let ns_before = in_ns(ns, procfs::read_counters)?;
    ensure!(
        ns_before.total().accepts == 0,
        "the new netns {ns} starts with {} accepts",
        ns_before.total().accepts
    );

    let server = AcceptServer::start(pair.server_ip(false), &ctx.cpus, Some(ns))?;
    connect_and_wait(&pair, &server, COUNT)?;
    let init_delta = procfs::read_counters()?.since(&init_before)?.total();
    let ns_delta = in_ns(ns, procfs::read_counters)?.since(&ns_before)?.total();
    server.stop()?;
    ensure!(
        init_delta.accepts == 0,
        "{COUNT} accepts in {ns} raised the init netns accepts by {}",
        init_delta.accepts
    );
    ensure!(
        ns_delta.accepts == COUNT as u64,
        "{COUNT} accepts in {ns} raised its accepts by {}",
        ns_delta.accepts
    );

    in_ns(ns, || procfs::write_enabled(b"0").context("writing 0"))?;
    let value = in_ns(ns, procfs::read_enabled)?;
    ensure!(value == 0, "enabled reads {value} in {ns} after writing 0");
    let value = procfs::read_enabled()?;
    ensure!(
        value == 1,
        "writing 0 in {ns} changed the init netns value to {value}"
    );
    Ok(())
}
