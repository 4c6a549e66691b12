//! Every knob flipped under load: no connection may be lost, reset or left unanswered
//! whatever the module's settings were when its handshake completed or it was accepted.

use std::thread;
use std::time::{Duration, Instant};

use super::{Context, Ctx, KnobGuard, TestResult, ACCEPT_TIMEOUT};
use crate::client::LoopClient;
use crate::netns::ServerSide;
use crate::procfs;
use crate::server::AcceptServer;

/// How long the load runs at least (and until every combination of the knobs was set, however
/// slow the host).
const RUN: Duration = Duration::from_secs(4);
/// Pause between two changes of the knobs.
const PERIOD: Duration = Duration::from_millis(100);
/// The load must make at least this many requests.
const MIN_REQUESTS: usize = 20;
/// Ticks after which every combination of the knobs' values has been set.
const COMBINATIONS: usize = 2 * 3 * 2 * 2;

/// The knob values of tick `tick`: `enabled` flips every tick, `listen_ports` cycles through
/// `all`, nothing and the server's `port` every tick, `listen_hold_ms` flips between 5 and 0
/// every 2 ticks and `listen_scan` between 64 and 0 every 4, so that every
/// [`COMBINATIONS`] ticks each combination has been set once.
fn tick_settings(tick: usize, port: &str) -> [(&'static str, String); 4] {
    let ports = ["all", "", port][tick % 3];
    [
        (procfs::ENABLED, ["1", "0"][tick % 2].to_owned()),
        (procfs::LISTEN_PORTS, ports.to_owned()),
        (procfs::LISTEN_HOLD_MS, ["5", "0"][tick / 2 % 2].to_owned()),
        (procfs::LISTEN_SCAN, ["64", "0"][tick / 4 % 2].to_owned()),
    ]
}

pub fn toggles_under_load(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let _enabled = KnobGuard::enabled("1")?;
    let _ports = KnobGuard::listen_ports("all")?;
    let _hold = KnobGuard::listen_hold_ms("5")?;
    let _scan = KnobGuard::listen_scan("64")?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    let cpus = &ctx.cpus[..ctx.cpus.len().min(2)];
    let server = AcceptServer::start(pair.server_ip(false), cpus, None)?;
    let port = server.addr().port().to_string();
    let before = procfs::read_counters()?;

    let client = LoopClient::start(pair.client_ns(), server.addr())?;
    let start = Instant::now();
    let mut ticks = 0;
    while start.elapsed() < RUN || ticks < COMBINATIONS {
        for (knob, value) in tick_settings(ticks, &port) {
            procfs::write_knob(knob, value.as_bytes())
                .context(format!("tick {ticks}: writing {value:?} to {knob}"))?;
        }
        ticks += 1;
        thread::sleep(PERIOD);
    }
    let stats = client.stop()?;
    let ran = start.elapsed();
    let waited = server.wait_for(stats.connected, ACCEPT_TIMEOUT);
    let accepted = server.stop()?.len();
    let delta = procfs::read_counters()?.since(&before)?.total();
    info!(
        "{ticks} knob changes in {:.1} s: {} requests, {} answered, {} failed; server accepted {accepted}",
        ran.as_secs_f64(),
        stats.connected,
        stats.answered(),
        stats.failures
    );
    info!(
        "counters: accepts +{} ({} local), wake-ups {} local, {} fallback, {} held",
        delta.accepts, delta.local, delta.wake_local, delta.wake_fallback, delta.wake_held
    );
    stats
        .check_all_answered()
        .map_err(|e| format!("while the knobs changed: {e}"))?;
    waited?;
    ensure!(
        accepted == stats.answered(),
        "the client got {} answers, the server accepted {accepted}",
        stats.answered()
    );
    ensure!(
        stats.connected >= MIN_REQUESTS,
        "only {} requests in {:.1} s",
        stats.connected,
        ran.as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn ticks_cover_every_combination() {
        let seen: BTreeSet<Vec<String>> = (0..COMBINATIONS)
            .map(|tick| {
                tick_settings(tick, "8080")
                    .into_iter()
                    .map(|(_, value)| value)
                    .collect()
            })
            .collect();
        assert_eq!(seen.len(), COMBINATIONS);
        let knobs: Vec<&str> = tick_settings(0, "1").iter().map(|(k, _)| *k).collect();
        assert_eq!(
            knobs,
            [
                procfs::ENABLED,
                procfs::LISTEN_PORTS,
                procfs::LISTEN_HOLD_MS,
                procfs::LISTEN_SCAN
            ]
        );
    }
}
