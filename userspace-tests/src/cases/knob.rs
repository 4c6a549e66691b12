//! The per-netns `enabled` sysctl.

use super::{connect_and_wait, Context, Ctx, EnabledGuard, TestResult};
use crate::netns::ServerSide;
use crate::procfs::{self, CpuStats};
use crate::server::AcceptServer;
use crate::sys;

pub fn knob_disable(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let pair = ctx.netns_pair(ServerSide::Current)?;
    let server = AcceptServer::start(pair.server_ip(false), &ctx.cpus, None)?;

    let _enabled = EnabledGuard::set("0")?;
    let before = procfs::read_counters()?;
    connect_and_wait(&pair, &server, 50)?;
    let delta = procfs::read_counters()?.since(&before)?.total();
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
    let _enabled = EnabledGuard::set("1")?;
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

/// Exit codes of the child in [`knob_needs_cap_net_admin`] besides 0 (write succeeded)
/// and an errno (write failed).
const CHILD_OPEN_FAILED: u8 = 128; // + errno
const CHILD_CAPSET_FAILED: u8 = 255;

/// Runs in the forked child: only raw syscalls, no allocation.
fn write_without_cap_net_admin() -> u8 {
    if sys::drop_capability(sys::CAP_NET_ADMIN).is_err() {
        return CHILD_CAPSET_FAILED;
    }
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(0).clamp(1, 126) as u8;
    let fd = match sys::open_write_only(procfs::ENABLED_C) {
        Ok(fd) => fd,
        Err(e) => return CHILD_OPEN_FAILED + errno(e),
    };
    match sys::write_fd(&fd, b"0") {
        Ok(_) => 0,
        Err(e) => errno(e),
    }
}

pub fn knob_needs_cap_net_admin(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let _enabled = EnabledGuard::set("1")?;
    // SAFETY: the child only makes raw syscalls (capget, capset, open, write, close).
    let code = unsafe { sys::fork_and_wait(write_without_cap_net_admin) }.context("fork")?;
    let describe = |errno: u8| std::io::Error::from_raw_os_error(errno.into());
    let outcome = match code {
        0 => "the write succeeded".to_string(),
        CHILD_CAPSET_FAILED => "the child could not drop CAP_NET_ADMIN".to_string(),
        code if code > CHILD_OPEN_FAILED => {
            format!("open failed: {}", describe(code - CHILD_OPEN_FAILED))
        }
        errno => format!("the write failed: {}", describe(errno)),
    };
    ensure!(
        i32::from(code) == libc::EPERM,
        "writing 0 without CAP_NET_ADMIN: {outcome}; expected the write to fail with EPERM"
    );
    let value = procfs::read_enabled()?;
    ensure!(value == 1, "the refused write changed the value to {value}");
    Ok(())
}
