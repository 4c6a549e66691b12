//! The tests, their order, and what they share.

mod accept;
mod isolation;
mod knob;
mod lifecycle;
mod log;

use std::fmt::Display;
use std::path::PathBuf;
use std::time::Duration;

use crate::netns::{NetnsPair, ServerSide};
use crate::server::AcceptServer;
use crate::{client, module, procfs};

/// `Err` carries the reason of the failure.
pub type TestResult<T = ()> = Result<T, String>;

/// Adds what was being done to an error.
pub trait Context<T> {
    fn context(self, what: impl Display) -> TestResult<T>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn context(self, what: impl Display) -> TestResult<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

pub struct Test {
    pub name: &'static str,
    pub run: fn(&mut Ctx) -> TestResult,
}

/// The default tests, in the order they run.
const TESTS: &[Test] = &[
    Test {
        name: "module_load",
        run: lifecycle::module_load,
    },
    Test {
        name: "accept_counters",
        run: accept::accept_counters,
    },
    Test {
        name: "accept_counters_ipv6",
        run: accept::accept_counters_ipv6,
    },
    Test {
        name: "knob_disable",
        run: knob::knob_disable,
    },
    Test {
        name: "knob_bad_input",
        run: knob::knob_bad_input,
    },
    Test {
        name: "knob_needs_cap_net_admin",
        run: knob::knob_needs_cap_net_admin,
    },
    Test {
        name: "netns_isolation",
        run: isolation::netns_isolation,
    },
    Test {
        name: "unload_reload",
        run: lifecycle::unload_reload,
    },
    Test {
        name: "unload_under_load",
        run: lifecycle::unload_under_load,
    },
    Test {
        name: "kernel_log_clean",
        run: log::kernel_log_clean,
    },
];

/// Run only with --fault-check, after the default tests.
const FAULT_CHECK: Test = Test {
    name: "fault_detection",
    run: log::fault_detection,
};

/// The tests to run: the default ones (plus the fault check if asked for) whose
/// name contains `filter`.
pub fn selected(filter: Option<&str>, fault_check: bool) -> Vec<&'static Test> {
    TESTS
        .iter()
        .chain(fault_check.then_some(&FAULT_CHECK))
        .filter(|test| filter.is_none_or(|f| test.name.contains(f)))
        .collect()
}

/// How long the server may take to accept a batch of connections.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(120);

/// State shared by the tests.
pub struct Ctx {
    module: PathBuf,
    /// Online CPUs.
    cpus: Vec<usize>,
    /// Next netns pair number to try.
    next_pair: u8,
}

impl Ctx {
    pub fn new(module: PathBuf, cpus: Vec<usize>) -> Ctx {
        Ctx {
            module,
            cpus,
            next_pair: 1,
        }
    }

    pub fn insmod(&self) -> TestResult {
        module::insmod(&self.module)
    }

    /// Loads the module unless it is loaded, so that one failed test does not take
    /// every later one down with it.
    pub fn ensure_loaded(&self) -> TestResult {
        if !module::is_loaded() {
            info!("module not loaded, loading it");
            self.insmod()?;
        }
        Ok(())
    }

    /// A fresh netns pair with a number no other pair (of ours or left over) uses.
    pub fn netns_pair(&mut self, side: ServerSide) -> TestResult<NetnsPair> {
        let n = (self.next_pair..=250)
            .find(|&n| !NetnsPair::in_use(n))
            .ok_or("no free netns pair number")?;
        self.next_pair = n + 1;
        NetnsPair::create(n, side, &self.cpus).context(format!("setting up netns pair {n}"))
    }
}

/// Makes `count` connections from the client namespace and waits until the server
/// has accepted them all.
pub fn connect_and_wait(pair: &NetnsPair, server: &AcceptServer, count: usize) -> TestResult {
    let target = server.accepted() + count;
    client::connect_sequential(pair.client_ns(), server.addr(), count)?;
    server.wait_for(target, ACCEPT_TIMEOUT)
}

/// Sets the init netns `enabled` sysctl and sets it back to 1 when dropped.
pub struct EnabledGuard;

impl EnabledGuard {
    pub fn set(value: &str) -> TestResult<EnabledGuard> {
        let guard = EnabledGuard;
        procfs::write_enabled(value.as_bytes()).context(format!("writing {value:?}"))?;
        Ok(guard)
    }
}

impl Drop for EnabledGuard {
    fn drop(&mut self) {
        if module::is_loaded() {
            if let Err(e) = procfs::write_enabled(b"1") {
                eprintln!("fastsocket-tests: cleanup: restoring enabled=1: {e}");
            }
        }
    }
}
