//! Fails a test that does not finish within its limit. The servers and workers of the tests
//! wait without timeouts, so that a lost wake-up hangs instead of being papered over by a
//! retry; the watchdog turns that hang into a failure with a clear message, shows where the
//! runner's threads wait, prints the summary and ends the run (a hung test cannot be
//! cancelled, and what it holds would spoil the tests after it).

use std::fs;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use procfs_core::process::Stat;
use procfs_core::FromRead;

use crate::cases::TestResult;

/// How often the watchdog looks at the running test.
const PERIOD: Duration = Duration::from_millis(500);

#[derive(Default)]
pub struct Progress {
    /// The running test, when it started and its limit.
    running: Option<(&'static str, Instant, Duration)>,
    /// The finished tests in the order they ran: name, time taken, whether it passed.
    finished: Vec<(&'static str, Duration, bool)>,
}

pub type Shared = Arc<Mutex<Progress>>;

fn lock(progress: &Shared) -> std::sync::MutexGuard<'_, Progress> {
    progress.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the watchdog thread.
pub fn start() -> Shared {
    let progress = Shared::default();
    let watched = Arc::clone(&progress);
    let spawned = thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || watch(&watched));
    if let Err(e) = spawned {
        info!("no watchdog: spawning its thread failed: {e}");
    }
    progress
}

/// Runs the body of test `name` with `limit` watched, and records its outcome (for the
/// summary the watchdog prints) and how long it took. A body that panics counts as failed;
/// the panic goes on to the caller.
pub fn run(
    progress: &Shared,
    name: &'static str,
    limit: Duration,
    body: impl FnOnce() -> TestResult,
) -> TestResult {
    lock(progress).running = Some((name, Instant::now(), limit));
    let mut running = Running {
        progress,
        passed: false,
    };
    let result = body();
    running.passed = result.is_ok();
    result
}

/// Moves the running test to the finished ones when dropped, also when its body panicked.
struct Running<'a> {
    progress: &'a Shared,
    passed: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut state = lock(self.progress);
        if let Some((name, started, _)) = state.running.take() {
            state.finished.push((name, started.elapsed(), self.passed));
        }
    }
}

/// The finished tests in the order they ran: name, time taken, whether it passed.
pub fn finished(progress: &Shared) -> Vec<(&'static str, Duration, bool)> {
    lock(progress).finished.clone()
}

fn watch(progress: &Shared) {
    loop {
        thread::sleep(PERIOD);
        let state = lock(progress);
        let Some((name, started, limit)) = state.running else {
            continue;
        };
        if started.elapsed() < limit {
            continue;
        }
        let passed = state.finished.iter().filter(|test| test.2).count();
        let failed = state.finished.len() - passed + 1;
        // Ends libtest-mimic's open `test NAME ... ` line the way it ends a failed test's.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "FAILED\n# watchdog: {name} did not finish within {limit:?} (a lost wake-up or a \
             hang); the tests after it are not run"
        );
        for line in thread_states() {
            let _ = writeln!(out, "#   {line}");
        }
        let _ = writeln!(out, "{passed} passed, {failed} failed");
        let _ = out.flush();
        std::process::exit(1);
    }
}

/// One line per thread of this process: tid, name, scheduler state and wait channel.
fn thread_states() -> Vec<String> {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return vec!["(cannot read /proc/self/task)".into()];
    };
    let mut lines: Vec<String> = tasks
        .filter_map(Result::ok)
        .map(|task| {
            let path = task.path();
            let read = |file: &str| {
                fs::read_to_string(path.join(file))
                    .map_or_else(|_| "?".into(), |s| s.trim().to_owned())
            };
            let state = Stat::from_file(path.join("stat"))
                .map_or_else(|_| "?".into(), |stat| stat.state.to_string());
            format!(
                "thread {} {:?}: state {state}, waiting in {}",
                task.file_name().to_string_lossy(),
                read("comm"),
                read("wchan")
            )
        })
        .collect();
    lines.sort();
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_this_processes_threads() {
        let lines = thread_states();
        assert!(!lines.is_empty());
        assert!(lines.iter().all(|l| l.starts_with("thread ")), "{lines:?}");
        // The state letter comes from each thread's stat file: this one runs (others of the
        // test harness may end meanwhile and read "?").
        assert!(lines.iter().any(|l| l.contains("state R")), "{lines:?}");
    }

    #[test]
    fn tracks_the_running_test() {
        let progress = Shared::default();
        let result = run(&progress, "x", Duration::from_secs(1), || {
            assert_eq!(lock(&progress).running.map(|r| r.0), Some("x"));
            Err("no".into())
        });
        assert!(result.is_err());
        assert!(lock(&progress).running.is_none());
        let panicked = std::panic::catch_unwind(|| {
            run(&progress, "y", Duration::from_secs(1), || panic!("boom"))
        });
        assert!(panicked.is_err());
        run(&progress, "z", Duration::from_secs(1), || Ok(())).unwrap();
        let outcomes: Vec<_> = finished(&progress)
            .iter()
            .map(|&(name, _, passed)| (name, passed))
            .collect();
        assert_eq!(outcomes, [("x", false), ("y", false), ("z", true)]);
        assert!(lock(&progress).running.is_none());
    }
}
