//! Functional tests for the fastsocket kernel module.
//!
//! Runs inside the test guest as root: loads the module, drives TCP traffic through veth
//! pairs between network namespaces and checks the module's /proc and sysctl interface
//! and the kernel log. Prints one line per test and a final `N passed, N failed` line.

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

use std::any::Any;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

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

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(msg) = payload.downcast_ref::<&str>() {
        msg
    } else if let Some(msg) = payload.downcast_ref::<String>() {
        msg
    } else {
        "non-string panic payload"
    }
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
    let mut ctx = cases::Ctx::new(args.module, cpus);
    let progress = watchdog::start();
    let (mut passed, mut failed) = (0, 0);
    for test in tests {
        let start = Instant::now();
        watchdog::begin(&progress, test.name, test.limit);
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| (test.run)(&mut ctx)));
        watchdog::end(&progress);
        let reason = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(reason)) => Some(reason),
            Err(payload) => Some(format!("panicked: {}", panic_message(&*payload))),
        };
        match reason {
            None => {
                passed += 1;
                progress.lock().unwrap_or_else(|e| e.into_inner()).passed += 1;
                println!("ok   {} ({} ms)", test.name, start.elapsed().as_millis());
            }
            Some(reason) => {
                failed += 1;
                progress.lock().unwrap_or_else(|e| e.into_inner()).failed += 1;
                let mut lines = reason.lines();
                println!("FAIL {}: {}", test.name, lines.next().unwrap_or_default());
                for line in lines {
                    println!("#   {line}");
                }
            }
        }
        let _ = std::io::stdout().flush();
    }
    println!("{passed} passed, {failed} failed");
    let _ = std::io::stdout().flush();
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
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
    }

    #[test]
    fn rejects_bad_command_lines() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--module"]).is_err());
        assert!(parse(&["--module", "/m.ko", "--bogus"]).is_err());
        assert!(parse(&["--help"]).unwrap().is_none());
    }
}
