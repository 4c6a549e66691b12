//! The tests, their order, and what they share.

mod accept;
mod apps;
mod fuzz;
mod harden;
mod isolation;
mod knob;
mod latency;
mod lifecycle;
mod listen;
mod log;
mod percpu;
mod pick;
mod queue;
mod regress;
mod rfd;
mod scope;
mod stat;
mod toggles;
mod vfs;
mod workers;

pub use log::kmemleak_baseline;

use std::fmt::Display;
use std::path::PathBuf;
use std::time::Duration;

use crate::netns::{self, NetnsPair, ServerSide};
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
    /// The watchdog fails the test (and ends the run) if it has not finished by then.
    pub limit: Duration,
}

/// The watchdog's limit for a test that sets none: generous, a hang is not slowness.
const DEFAULT_LIMIT: Duration = Duration::from_secs(600);

impl Test {
    const fn new(name: &'static str, run: fn(&mut Ctx) -> TestResult) -> Test {
        Test {
            name,
            run,
            limit: DEFAULT_LIMIT,
        }
    }

    /// A watchdog limit of `secs` seconds.
    const fn limit(mut self, secs: u64) -> Test {
        self.limit = Duration::from_secs(secs);
        self
    }
}

/// The default tests, in the order they run.
const TESTS: &[Test] = &[
    Test::new("module_load", lifecycle::module_load),
    Test::new("hooks_fit_cpu_count", lifecycle::hooks_fit_cpu_count),
    Test::new(
        "feature_keys_follow_namespaces",
        rfd::feature_keys_follow_namespaces,
    )
    .limit(180),
    Test::new("accept_counters", accept::accept_counters),
    Test::new("accept_counters_ipv6", accept::accept_counters_ipv6),
    Test::new("knob_disable", knob::knob_disable),
    Test::new("knob_bad_input", knob::knob_bad_input),
    Test::new("knob_needs_cap_net_admin", knob::knob_needs_cap_net_admin),
    Test::new("listen_ports_knob", scope::listen_ports_knob),
    Test::new("listen_ports_long_write", regress::listen_ports_long_write).limit(180),
    Test::new("listen_scan_knob", scope::listen_scan_knob),
    Test::new("listen_hold_ms_knob", scope::listen_hold_ms_knob),
    Test::new("listen_pull_knob", scope::listen_pull_knob),
    Test::new("listen_queues_knob", scope::listen_queues_knob),
    Test::new("netns_isolation", isolation::netns_isolation),
    Test::new("two_netns_same_port", scope::two_netns_same_port),
    Test::new("netns_churn", regress::netns_churn).limit(300),
    Test::new("listen_locality_pinned", listen::listen_locality_pinned),
    Test::new("listen_locality_unpinned", listen::listen_locality_unpinned),
    Test::new("sleeping_worker_not_held", listen::sleeping_worker_not_held),
    Test::new("gathered_waiters_spread", listen::gathered_waiters_spread),
    Test::new(
        "listen_locality_epoll_exclusive",
        listen::listen_locality_epoll_exclusive,
    ),
    Test::new(
        "listen_locality_unpinned_epoll_exclusive",
        listen::listen_locality_unpinned_epoll_exclusive,
    ),
    Test::new("listen_locality_ipv6", listen::listen_locality_ipv6),
    Test::new("listen_epoll_modes", listen::listen_epoll_modes),
    Test::new("accept4_flags", listen::accept4_flags),
    Test::new("reuseport_group", listen::reuseport_group),
    Test::new("pick_overtaking_bounded", pick::pick_overtaking_bounded).limit(120),
    Test::new(
        "pick_kept_window_hides_none",
        pick::pick_kept_window_hides_none,
    )
    .limit(120),
    Test::new("hold_busy_epoll_exclusive", pick::hold_busy_epoll_exclusive).limit(120),
    Test::new("hold_long_busy_worker", pick::hold_long_busy_worker).limit(120),
    Test::new("hold_timer_counts_own_cpu", pick::hold_timer_counts_own_cpu).limit(120),
    Test::new("hold_pending_netns_exit", pick::hold_pending_netns_exit).limit(300),
    Test::new("accept_latency_pinned", latency::accept_latency_pinned).limit(300),
    Test::new(
        "accept_latency_skewed_rps",
        latency::accept_latency_skewed_rps,
    )
    .limit(300),
    Test::new(
        "accept_latency_worker_killed",
        latency::accept_latency_worker_killed,
    )
    .limit(300),
    Test::new(
        "worker_killed_under_load",
        workers::worker_killed_under_load,
    ),
    Test::new(
        "listener_closed_by_one_sharer",
        workers::listener_closed_by_one_sharer,
    ),
    Test::new(
        "ss_queue_length_and_backlog",
        queue::ss_queue_length_and_backlog,
    ),
    Test::new("percpu_backlog_overflow", percpu::percpu_backlog_overflow).limit(120),
    Test::new(
        "percpu_nothing_lost_unload",
        percpu::percpu_nothing_lost_unload,
    )
    .limit(180),
    Test::new(
        "percpu_nothing_lost_knobs_off",
        percpu::percpu_nothing_lost_knobs_off,
    )
    .limit(240),
    Test::new(
        "percpu_nothing_lost_sharer_close",
        percpu::percpu_nothing_lost_sharer_close,
    )
    .limit(180),
    Test::new(
        "percpu_nothing_lost_worker_killed",
        percpu::percpu_nothing_lost_worker_killed,
    )
    .limit(180),
    Test::new(
        "percpu_steal_single_worker",
        percpu::percpu_steal_single_worker,
    )
    .limit(120),
    Test::new(
        "percpu_fallback_under_1pct",
        percpu::percpu_fallback_under_1pct,
    )
    .limit(120),
    Test::new("toggles_under_load", toggles::toggles_under_load),
    Test::new("unload_reload", lifecycle::unload_reload),
    Test::new("unload_under_load", lifecycle::unload_under_load),
    Test::new("cpu_hotplug_under_load", regress::cpu_hotplug_under_load).limit(300),
    Test::new("mptcp_stays_stock", regress::mptcp_stays_stock).limit(120),
    Test::new("nginx_20k", apps::nginx_20k),
    Test::new("nginx_accept_mutex_20k", apps::nginx_accept_mutex_20k),
    Test::new("knob_fuzz", harden::knob_fuzz).limit(600),
    Test::new("syn_flood", harden::syn_flood).limit(600),
    Test::new("container_knobs", harden::container_knobs).limit(60),
    Test::new("fuzz_trinity", fuzz::fuzz_trinity).limit(fuzz::LIMIT_SECS),
    Test::new("fuzz_stress_ng", fuzz::fuzz_stress_ng).limit(fuzz::LIMIT_SECS),
    Test::new("soak_load_unload", fuzz::soak_load_unload).limit(fuzz::LIMIT_SECS),
    Test::new("rfd_knob_bad_input", rfd::rfd_knob_bad_input).limit(60),
    Test::new("rfd_locality_pinned", rfd::rfd_locality_pinned).limit(180),
    Test::new("rfd_locality_pinned_ipv6", rfd::rfd_locality_pinned_ipv6).limit(180),
    Test::new("rfd_locality_unpinned", rfd::rfd_locality_unpinned).limit(180),
    Test::new("rfd_peer_passive_side", rfd::rfd_peer_passive_side).limit(240),
    Test::new("rfd_port_exhaustion", rfd::rfd_port_exhaustion).limit(420),
    Test::new("rfd_socket_options", rfd::rfd_socket_options).limit(180),
    Test::new(
        "rfd_toggle_unload_under_load",
        rfd::rfd_toggle_unload_under_load,
    )
    .limit(180),
    Test::new("haproxy_20k", rfd::haproxy_20k).limit(600),
    Test::new("live_view_totals", stat::live_view_totals).limit(120),
    Test::new("vfs_cache_reuses", vfs::vfs_cache_reuses).limit(600),
    Test::new("vfs_socket_semantics", vfs::vfs_socket_semantics).limit(120),
    Test::new("vfs_pair_state", vfs::vfs_pair_state).limit(120),
    Test::new("vfs_unload_live_sockets", vfs::vfs_unload_live_sockets).limit(300),
    Test::new("kernel_log_clean", log::kernel_log_clean),
];

/// Run only with --fault-check, after the default tests.
const FAULT_CHECK: Test = Test::new("fault_detection", log::fault_detection);

/// Run only with --known-gaps: targets the module does not reach yet (see
/// Documentation/listen.md), kept runnable so that progress is measured the same way.
const KNOWN_GAPS: &[Test] = &[];

/// The tests to run: the default ones (plus the fault check and the known gaps if asked
/// for) whose name contains `filter`, or one of its comma-separated parts.
pub fn selected(filter: Option<&str>, fault_check: bool, gaps: bool) -> Vec<&'static Test> {
    TESTS
        .iter()
        .chain(KNOWN_GAPS.iter().filter(|_| gaps))
        .chain(fault_check.then_some(&FAULT_CHECK))
        .filter(|test| filter.is_none_or(|f| f.split(',').any(|f| test.name.contains(f))))
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

/// Makes `count` requests from the client namespace, checking every reply, and waits
/// until the server has accepted them all.
pub fn connect_and_wait(pair: &NetnsPair, server: &AcceptServer, count: usize) -> TestResult {
    connect_paced(pair, server, count, Duration::ZERO)
}

/// [`connect_and_wait`] with a pause after each request.
pub fn connect_paced(
    pair: &NetnsPair,
    server: &AcceptServer,
    count: usize,
    pause: Duration,
) -> TestResult {
    let target = server.accepted() + count;
    client::request_sequential(
        pair.client_ns(),
        server.addr(),
        count,
        server.reply(),
        pause,
    )?;
    server.wait_for(target, ACCEPT_TIMEOUT)
}

/// Runs `f` in namespace `ns` (on a helper thread), flattening the errors.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> TestResult<T> + Send) -> TestResult<T> {
    netns::run_in(ns, f).context(format!("entering {ns}"))?
}

/// Sets a sysctl of the calling thread's netns and writes `restore` back when dropped.
pub struct KnobGuard {
    knob: &'static str,
    restore: &'static str,
}

impl KnobGuard {
    pub fn set(knob: &'static str, value: &str, restore: &'static str) -> TestResult<KnobGuard> {
        let guard = KnobGuard { knob, restore };
        procfs::write_knob(knob, value.as_bytes())
            .context(format!("writing {value:?} to {knob}"))?;
        Ok(guard)
    }

    /// Sets `enabled`, restored to 1.
    pub fn enabled(value: &str) -> TestResult<KnobGuard> {
        KnobGuard::set(procfs::ENABLED, value, "1")
    }

    /// Sets `listen_ports`, restored to `all`.
    pub fn listen_ports(value: &str) -> TestResult<KnobGuard> {
        KnobGuard::set(procfs::LISTEN_PORTS, value, "all")
    }

    /// Sets `listen_scan`, restored to the default 64.
    pub fn listen_scan(value: &str) -> TestResult<KnobGuard> {
        KnobGuard::set(procfs::LISTEN_SCAN, value, "64")
    }

    /// Sets `listen_pull`, restored to the default 1.
    pub fn listen_pull(value: &str) -> TestResult<KnobGuard> {
        KnobGuard::set(procfs::LISTEN_PULL, value, "1")
    }

    /// Sets `listen_hold_ms`, restored to the default 5.
    pub fn listen_hold_ms(value: &str) -> TestResult<KnobGuard> {
        KnobGuard::set(procfs::LISTEN_HOLD_MS, value, "5")
    }

    /// Sets `listen_queues`, restored to the default 1.
    pub fn listen_queues(value: &str) -> TestResult<KnobGuard> {
        KnobGuard::set(procfs::LISTEN_QUEUES, value, "1")
    }

    /// Sets `rfd`, restored to the default 1.
    pub fn rfd(value: &str) -> TestResult<KnobGuard> {
        KnobGuard::set(procfs::RFD, value, "1")
    }

    /// Sets `rfd_peer`, restored to the default 0.
    pub fn rfd_peer(value: &str) -> TestResult<KnobGuard> {
        KnobGuard::set(procfs::RFD_PEER, value, "0")
    }

    /// Sets `vfs`, restored to the default 1.
    pub fn vfs(value: &str) -> TestResult<KnobGuard> {
        KnobGuard::set(procfs::VFS, value, "1")
    }
}

impl Drop for KnobGuard {
    fn drop(&mut self) {
        if module::is_loaded() {
            if let Err(e) = procfs::write_knob(self.knob, self.restore.as_bytes()) {
                eprintln!(
                    "fastsocket-tests: cleanup: restoring {}={}: {e}",
                    self.knob, self.restore
                );
            }
        }
    }
}

/// Percentage `part` of `whole`, 0 for an empty whole.
pub fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_log_clean_runs_last_and_names_are_unique() {
        assert_eq!(TESTS.last().map(|t| t.name), Some("kernel_log_clean"));
        let mut names: Vec<&str> = TESTS.iter().chain(KNOWN_GAPS).map(|t| t.name).collect();
        names.push(FAULT_CHECK.name);
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "duplicate test names");
        let knob: Vec<&str> = selected(Some("knob"), false, false)
            .iter()
            .map(|t| t.name)
            .collect();
        assert!(knob.contains(&"listen_hold_ms_knob"), "{knob:?}");
        let two: Vec<&str> = selected(Some("module_load,kernel_log"), false, false)
            .iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(two, ["module_load", "kernel_log_clean"]);
    }
}
