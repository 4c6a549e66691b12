//! Kernel log and kmemleak checks.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{Context, Ctx, TestResult};
use crate::klog::{self, Kmemleak};
use crate::splat;

/// At most this many problem lines go into a failure message.
const MAX_LINES: usize = 20;

pub fn kernel_log_clean(_ctx: &mut Ctx) -> TestResult {
    let mut problems = Vec::new();
    match klog::kmemleak_scan()? {
        Kmemleak::Unavailable(why) => info!("kmemleak unavailable, leak check skipped: {why}"),
        Kmemleak::Report(report) => {
            let (ours, unrelated): (Vec<&str>, Vec<&str>) = splat::kmemleak_reports(&report)
                .into_iter()
                .partition(|leak| splat::blames_fastsocket(leak));
            for leak in unrelated.iter().take(MAX_LINES) {
                info!(
                    "kmemleak (unrelated): {}",
                    leak.lines().next().unwrap_or("")
                );
            }
            if unrelated.len() > MAX_LINES {
                info!("kmemleak (unrelated): {} more", unrelated.len() - MAX_LINES);
            }
            for leak in ours {
                problems.extend(leak.lines().map(|line| format!("kmemleak: {line}")));
            }
        }
    }
    let log = klog::read_kernel_log().context("reading the kernel log")?;
    let splats: Vec<&str> = splat::splat_lines(&log)
        .into_iter()
        .filter(|line| !line.contains(klog::DELIBERATE_FAULT))
        .collect();
    let leaks = problems.len();
    problems.extend(splats.iter().map(|line| line.to_string()));
    if problems.is_empty() {
        return Ok(());
    }
    let shown = problems.len().min(MAX_LINES);
    Err(format!(
        "{} kernel splat line(s), {leaks} kmemleak line(s) blaming fastsocket; first {shown}:\n{}",
        splats.len(),
        problems[..shown].join("\n")
    ))
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
