//! Functional tests for the fastsocket kernel module.
//!
//! Runs inside the test guest as root: loads the module, drives TCP traffic through veth
//! pairs between network namespaces and checks the module's /proc and sysctl interface
//! and the kernel log. libtest-mimic runs the tests one after the other and prints a
//! `test NAME ... ok` or `... FAILED` line for each (what a test prints goes in between),
//! then every failure's reason and its `test result:` line; a failed test's reason is also
//! printed as it fails (`# NAME failed: ...`). The time each test took comes next, and the
//! last line is `N passed, N failed`.

/// Prints an informational `# ...` line.
macro_rules! info {
    ($($arg:tt)*) => {
        println!("# {}", format_args!($($arg)*))
    };
}

/// Fails the current test with a formatted message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

mod cases;
mod client;
mod klog;
mod module;
mod netns;
mod procfs;
mod server;
mod splat;
mod sys;
mod tracefs;
mod watchdog;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use libtest_mimic::{ColorSetting, Failed, Trial};

use cases::{Ctx, Test};

const USAGE: &str =
    "usage: fastsocket-tests --module PATH/fastsocket.ko [--filter SUBSTR[,SUBSTR...]] [--fault-check] [--known-gaps]";

struct Args {
    module: PathBuf,
    filter: Option<String>,
    fault_check: bool,
    known_gaps: bool,
}

/// Parses the command line; `Ok(None)` means help was requested.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut module = None;
    let mut filter = None;
    let mut fault_check = false;
    let mut known_gaps = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--module" => module = Some(args.next().ok_or("--module needs a path")?.into()),
            "--filter" => filter = Some(args.next().ok_or("--filter needs a substring")?),
            "--fault-check" => fault_check = true,
            "--known-gaps" => known_gaps = true,
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let module = module.ok_or("--module is required")?;
    Ok(Some(Args {
        module,
        filter,
        fault_check,
        known_gaps,
    }))
}

/// libtest-mimic's settings: the trials run one after the other on this thread, in the
/// order given (already filtered by [`cases::selected`]), without colours (logs are text).
fn harness_args() -> libtest_mimic::Arguments {
    libtest_mimic::Arguments {
        test_threads: Some(1),
        color: Some(ColorSetting::Never),
        ..Default::default()
    }
}

/// The trial of `test`: its body runs with the shared context under the watchdog. The
/// reason of a failure is printed at once, not only in libtest-mimic's list at the end, so
/// that a run the guest never finishes (a kernel panic, the VM's timeout) still shows it.
fn trial(test: &'static Test, ctx: &Arc<Mutex<Ctx>>, progress: &watchdog::Shared) -> Trial {
    let (ctx, progress) = (Arc::clone(ctx), Arc::clone(progress));
    Trial::test(test.name, move || {
        let mut ctx = ctx.lock().unwrap_or_else(PoisonError::into_inner);
        let result = watchdog::run(&progress, test.name, test.limit, || (test.run)(&mut ctx));
        if let Err(reason) = &result {
            let mut lines = reason.lines();
            info!("{} failed: {}", test.name, lines.next().unwrap_or_default());
            for line in lines {
                info!("  {line}");
            }
        }
        result.map_err(Failed::from)
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("fastsocket-tests: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let cpus = match procfs::online_cpus() {
        Ok(cpus) => cpus,
        Err(msg) => {
            eprintln!("fastsocket-tests: {msg}");
            return ExitCode::from(2);
        }
    };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    info!("fastsocket-tests: kernel {release}, {} CPUs", cpus.len());

    let tests = cases::selected(args.filter.as_deref(), args.fault_check, args.known_gaps);
    if tests.is_empty() {
        info!("no test matches the filter");
    }
    // Before the module is first loaded: only leaks that appear during the suite count.
    cases::kmemleak_baseline();
    let ctx = Arc::new(Mutex::new(Ctx::new(args.module, cpus)));
    let progress = watchdog::start();
    let trials = tests
        .into_iter()
        .map(|test| trial(test, &ctx, &progress))
        .collect();
    let conclusion = libtest_mimic::run(&harness_args(), trials);
    for (name, took, _) in watchdog::finished(&progress) {
        info!("{name} took {} ms", took.as_millis());
    }
    println!(
        "{} passed, {} failed",
        conclusion.num_passed, conclusion.num_failed
    );
    let _ = std::io::stdout().flush();
    conclusion.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_all_options() {
        let args = parse(&["--module", "/m.ko", "--filter", "knob", "--fault-check"])
            .unwrap()
            .unwrap();
        assert_eq!(args.module, PathBuf::from("/m.ko"));
        assert_eq!(args.filter.as_deref(), Some("knob"));
        assert!(args.fault_check);
        assert!(!args.known_gaps);
        let args = parse(&["--known-gaps", "--module", "/m.ko"])
            .unwrap()
            .unwrap();
        assert!(args.known_gaps && !args.fault_check && args.filter.is_none());
    }

    #[test]
    fn rejects_bad_command_lines() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--module"]).is_err());
        assert!(parse(&["--module", "/m.ko", "--bogus"]).is_err());
        assert!(parse(&["--help"]).unwrap().is_none());
    }

    fn passes(_: &mut Ctx) -> cases::TestResult {
        Ok(())
    }

    fn fails(_: &mut Ctx) -> cases::TestResult {
        Err("first line\nsecond line".into())
    }

    fn panics(_: &mut Ctx) -> cases::TestResult {
        panic!("boom")
    }

    /// Names out of alphabetical order: the trials must keep this order.
    static FAKE: [Test; 4] = [
        Test {
            name: "b_pass",
            run: passes,
            limit: std::time::Duration::from_secs(60),
        },
        Test {
            name: "a_fail",
            run: fails,
            limit: std::time::Duration::from_secs(60),
        },
        Test {
            name: "c_panics",
            run: panics,
            limit: std::time::Duration::from_secs(60),
        },
        Test {
            name: "a_pass",
            run: passes,
            limit: std::time::Duration::from_secs(60),
        },
    ];

    #[test]
    fn runs_the_trials_in_order_and_reports_failures_in_full() {
        let ctx = Arc::new(Mutex::new(Ctx::new("/m.ko".into(), vec![0])));
        let progress = watchdog::Shared::default();
        let trials = FAKE.iter().map(|t| trial(t, &ctx, &progress)).collect();
        let log = std::env::temp_dir().join(format!(
            "fastsocket-tests-harness-{}.log",
            std::process::id()
        ));
        let args = libtest_mimic::Arguments {
            logfile: Some(log.to_string_lossy().into_owned()),
            ..harness_args()
        };
        let conclusion = libtest_mimic::run(&args, trials);
        let text = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        assert_eq!((conclusion.num_passed, conclusion.num_failed), (2, 2));
        assert_eq!(conclusion.exit_code(), ExitCode::from(101));
        let order: Vec<&str> = watchdog::finished(&progress).iter().map(|f| f.0).collect();
        assert_eq!(order, ["b_pass", "a_fail", "c_panics", "a_pass"]);
        assert!(text.contains("test b_pass   ... ok\n"), "{text}");
        assert!(text.contains("test a_fail   ... FAILED\n"), "{text}");
        assert!(text.contains("first line\nsecond line"), "{text}");
        assert!(text.contains("test panicked: boom"), "{text}");
    }
}
