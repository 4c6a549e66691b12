//! The per-netns `enabled` sysctl.

use super::{connect_and_wait, Context, Ctx, KnobGuard, TestResult};
use crate::netns::ServerSide;
use crate::procfs::{self, Counts, CpuStats};
use crate::server::AcceptServer;
use crate::sys::{self, ChildWrite};

pub fn knob_disable(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    let server = AcceptServer::start(pair.server_ip(false), &ctx.cpus, None)?;

    let _enabled = KnobGuard::enabled("0")?;
    let before = procfs::read_counters()?;
    connect_and_wait(&pair, &server, 50)?;
    let delta = procfs::read_counters()?
        .since(&before)?
        .total()
        .connections();
    ensure!(
        delta == CpuStats::default(),
        "with enabled=0 the counters still rose: {delta:?} after 50 accepts"
    );

    procfs::write_enabled(b"1").context("writing 1")?;
    let before = procfs::read_counters()?;
    connect_and_wait(&pair, &server, 50)?;
    let delta = procfs::read_counters()?.since(&before)?.total();
    ensure!(
        delta.accepts == 50,
        "after re-enabling, accepts rose by {} for 50 accepts",
        delta.accepts
    );
    server.stop()?;
    Ok(())
}

pub fn knob_bad_input(ctx: &mut Ctx) -> TestResult {
    const BAD: [&str; 5] = ["2", "-1", "abc", "99999999999999999999", "1x"];
    ctx.ensure_loaded()?;
    let _enabled = KnobGuard::enabled("1")?;
    for start in ["1", "0"] {
        procfs::write_enabled(start.as_bytes()).context(format!("writing {start}"))?;
        for input in BAD {
            match procfs::write_enabled(input.as_bytes()) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(format!("writing {input:?}: expected EINVAL, got {e}")),
                Ok(()) => return Err(format!("writing {input:?} succeeded, expected EINVAL")),
            }
            let value = procfs::read_enabled()?;
            ensure!(
                value.to_string() == start,
                "writing {input:?} changed the value from {start} to {value}"
            );
        }
        // An empty write is a no-op for every integer sysctl: success or EINVAL, never a change.
        match procfs::write_enabled(b"") {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(format!("empty write: {e}")),
        }
        let value = procfs::read_enabled()?;
        ensure!(
            value.to_string() == start,
            "an empty write changed the value to {value}"
        );
    }
    for (input, expected) in [("0\n", 0), ("1", 1)] {
        procfs::write_enabled(input.as_bytes()).context(format!("writing {input:?}"))?;
        let value = procfs::read_enabled()?;
        ensure!(
            value == expected,
            "after writing {input:?} the value is {value}"
        );
    }
    Ok(())
}

/// Tries to write `value` to sysctl `knob` from a child process without CAP_NET_ADMIN;
/// fails unless the write fails with EPERM.
pub fn expect_eperm_without_cap(knob: &str, value: &str) -> TestResult {
    let path = procfs::knob_path_c(knob);
    let outcome = sys::write_without_capability(&path, value.as_bytes(), sys::CAP_NET_ADMIN)
        .context("fork")?;
    let describe = |errno: i32| std::io::Error::from_raw_os_error(errno);
    let outcome = match outcome {
        ChildWrite::WriteFailed(libc::EPERM) => return Ok(()),
        ChildWrite::Written => "the write succeeded".to_string(),
        ChildWrite::CapsetFailed => "the child could not drop CAP_NET_ADMIN".to_string(),
        ChildWrite::OpenFailed(errno) => format!("open failed: {}", describe(errno)),
        ChildWrite::WriteFailed(errno) => format!("the write failed: {}", describe(errno)),
    };
    Err(format!(
        "writing {value:?} to {knob} without CAP_NET_ADMIN: {outcome}; expected the write to fail with EPERM"
    ))
}

pub fn knob_needs_cap_net_admin(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let _enabled = KnobGuard::enabled("1")?;
    expect_eperm_without_cap(procfs::ENABLED, "0")?;
    let value = procfs::read_enabled()?;
    ensure!(value == 1, "the refused write changed the value to {value}");
    Ok(())
}
