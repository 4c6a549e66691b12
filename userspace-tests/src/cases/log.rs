//! Kernel log and kmemleak checks.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{Context, Ctx, TestResult};
use crate::klog::{self, Kmemleak};
use crate::splat;

/// At most this many splat lines go into a failure message.
const MAX_LINES: usize = 20;
/// At most this many kmemleak reports (each in full) go into a failure message.
const MAX_REPORTS: usize = 10;

/// Every kmemleak report counts, whatever its backtrace names: a leaked socket reference
/// shows up as a leak of the socket, allocated by the core. The baseline taken before the
/// module was first loaded (see `main`) marked whatever the kernel reported by then as known.
pub fn kernel_log_clean(_ctx: &mut Ctx) -> TestResult {
    let leaks = match klog::kmemleak_scan()? {
        Kmemleak::Unavailable(why) => {
            info!("kmemleak unavailable, leak check skipped: {why}");
            String::new()
        }
        Kmemleak::Report(report) => report,
    };
    let log = klog::read_kernel_log().context("reading the kernel log")?;
    problems(&splat_lines(&log), &splat::kmemleak_reports(&leaks))
}

/// The splat lines of `log`, without the deliberate fault of `fault_detection`.
fn splat_lines(log: &str) -> Vec<&str> {
    splat::splat_lines(log)
        .into_iter()
        .filter(|line| !line.contains(klog::DELIBERATE_FAULT))
        .collect()
}

/// Fails if there is a splat line or a leak report, showing them.
fn problems(splats: &[&str], leaks: &[&str]) -> TestResult {
    if splats.is_empty() && leaks.is_empty() {
        return Ok(());
    }
    let mut lines = vec![format!(
        "{} kernel splat line(s), {} kmemleak report(s)",
        splats.len(),
        leaks.len()
    )];
    lines.extend(splats.iter().take(MAX_LINES).map(|line| line.to_string()));
    if splats.len() > MAX_LINES {
        lines.push(format!("... {} more splat lines", splats.len() - MAX_LINES));
    }
    for leak in leaks.iter().take(MAX_REPORTS) {
        lines.extend(leak.lines().map(|line| format!("kmemleak: {line}")));
    }
    if leaks.len() > MAX_REPORTS {
        lines.push(format!(
            "... {} more kmemleak reports",
            leaks.len() - MAX_REPORTS
        ));
    }
    Err(lines.join("\n"))
}

/// Scans kmemleak before the suite, prints what it reports and marks it as known
/// (`clear`), so that only leaks that appear during the suite count. Run before the module
/// is first loaded: the reports are the stock kernel's (early boot, the guest's init).
pub fn kmemleak_baseline() {
    match klog::kmemleak_scan() {
        Err(e) => info!("kmemleak baseline failed: {e}"),
        Ok(Kmemleak::Unavailable(why)) => info!("kmemleak unavailable: {why}"),
        Ok(Kmemleak::Report(report)) => {
            let reports = splat::kmemleak_reports(&report);
            info!(
                "kmemleak before the suite ({}): {} report(s), cleared",
                if crate::module::is_loaded() {
                    "module already loaded"
                } else {
                    "module not loaded"
                },
                reports.len()
            );
            for line in reports.iter().flat_map(|r| r.lines()) {
                info!("  {line}");
            }
            if let Err(e) = klog::kmemleak_clear() {
                info!("{e}");
            }
        }
    }
}

/// The kernel's complaints from its creation on: splats logged since, and, if asked,
/// kmemleak reports about objects the kmemleak file did not name at its creation.
pub struct KernelWatch {
    log: klog::LogWatch,
    leaks_before: Option<String>,
}

impl KernelWatch {
    pub fn start() -> TestResult<KernelWatch> {
        let log = klog::LogWatch::new().context("opening /dev/kmsg")?;
        // What kmemleak reported so far, without a scan (scans take seconds): a leak of an
        // earlier test that no scan found yet would count here.
        let leaks_before = std::fs::read_to_string("/sys/kernel/debug/kmemleak").ok();
        Ok(KernelWatch { log, leaks_before })
    }

    /// Fails on a splat logged since `start`, and, with `leaks`, on a new kmemleak report
    /// after two scans.
    pub fn check(&mut self, leaks: bool) -> TestResult {
        let new_log = self.log.read_new().context("reading the kernel log")?;
        let report = match (leaks, &self.leaks_before) {
            (false, _) => String::new(),
            (true, None) => {
                info!("kmemleak unavailable, leak check skipped");
                String::new()
            }
            (true, Some(_)) => match klog::kmemleak_scan()? {
                Kmemleak::Report(report) => report,
                Kmemleak::Unavailable(why) => {
                    info!("kmemleak unavailable, leak check skipped: {why}");
                    String::new()
                }
            },
        };
        let before = self.leaks_before.as_deref().unwrap_or("");
        problems(
            &splat_lines(&new_log),
            &splat::new_kmemleak_reports(before, &report),
        )
    }
}

/// Proves that the scan reads the live kernel log: a warning logged on purpose is found.
pub fn fault_detection(_ctx: &mut Ctx) -> TestResult {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let marker = format!("{} {}-{nanos}", klog::DELIBERATE_FAULT, std::process::id());
    klog::write_kmsg(&format!("WARNING: {marker}")).context("writing /dev/kmsg")?;
    let log = klog::read_kernel_log().context("reading the kernel log")?;
    let found = splat::splat_lines(&log)
        .into_iter()
        .find(|line| line.contains(&marker));
    match found {
        Some(line) => {
            info!("scanner found the deliberate fault: {line}");
            Ok(())
        }
        None => Err(format!(
            "the scanner did not find the line 'WARNING: {marker}' written to /dev/kmsg"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leak_report_is_a_problem_and_is_shown() {
        assert!(problems(&[], &[]).is_ok());
        let leak = "unreferenced object 0xffff888004f1e000 (size 64):\n  backtrace (crc 1):\n    [<ffffffff8132a4b5>] sk_prot_alloc+0x2c5/0x390";
        let err = problems(&[], &[leak]).unwrap_err();
        assert!(
            err.starts_with("0 kernel splat line(s), 1 kmemleak report(s)"),
            "{err}"
        );
        assert!(
            err.contains("kmemleak:     [<ffffffff8132a4b5>] sk_prot_alloc"),
            "{err}"
        );
        let err = problems(&["[ 1.0] WARNING: x"], &[]).unwrap_err();
        assert_eq!(
            err,
            "1 kernel splat line(s), 0 kmemleak report(s)\n[ 1.0] WARNING: x"
        );
    }
}
