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

/// How often the watchdog looks at the running test.
const PERIOD: Duration = Duration::from_millis(500);

#[derive(Default)]
pub struct Progress {
    /// The running test, when it started and its limit.
    running: Option<(&'static str, Instant, Duration)>,
    pub passed: usize,
    pub failed: usize,
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

pub fn begin(progress: &Shared, name: &'static str, limit: Duration) {
    lock(progress).running = Some((name, Instant::now(), limit));
}

pub fn end(progress: &Shared) {
    lock(progress).running = None;
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
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "FAIL {name}: watchdog: the test did not finish within {limit:?} (a lost wake-up or \
             a hang); the tests after it are not run"
        );
        for line in thread_states() {
            let _ = writeln!(out, "#   {line}");
        }
        let _ = writeln!(out, "{} passed, {} failed", state.passed, state.failed + 1);
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
        begin(&progress, "x", Duration::from_secs(1));
        assert_eq!(lock(&progress).running.map(|r| r.0), Some("x"));
        end(&progress);
        assert!(lock(&progress).running.is_none());
    }
}
