//! Recognising kernel problem reports ("splats") and memory leak reports. Pure functions.

/// How kernel problem reports start a message: WARN() (`WARNING: CPU: 1 PID: ...`),
/// lockdep (`WARNING: possible circular ...`, `INFO: trying to register ...`), hung tasks
/// (`INFO: task ... blocked`). Elsewhere in a line these words are benign, as in
/// `Spectre V2 : WARNING: Unprivileged eBPF is enabled ...`.
const PREFIXES: &[&str] = &["WARNING:", "INFO: "];

/// Substrings that appear only in kernel problem reports (case-sensitive).
const MARKERS: &[&str] = &[
    "BUG:",
    "Oops",
    "general protection fault",
    "kernel BUG at",
    "Kernel panic",
    "possible circular locking",
    "possible recursive locking",
    "inconsistent lock state",
    "suspicious RCU usage",
    "KFENCE:",
    "UBSAN:",
    "self-detected stall",
    "detected stalls",
    "RCU stall",
    "soft lockup",
    "hard LOCKUP",
    "hung_task",
    "blocked for more than",
    "rust_kernel: panicked",
    "panicked at",
];

/// The message of a log line, without dmesg-style `[   12.345678]` timestamp and
/// `[  T123]` caller fields.
fn message(mut line: &str) -> &str {
    loop {
        line = line.trim_start();
        let field = line
            .strip_prefix('[')
            .and_then(|rest| rest.split_once(']'))
            .filter(|(field, _)| {
                let field = field.trim();
                let caller = field.strip_prefix(['T', 'C']).unwrap_or(field);
                field.parse::<f64>().is_ok() || caller.parse::<u32>().is_ok()
            });
        match field {
            Some((_, rest)) => line = rest,
            None => return line,
        }
    }
}

fn is_splat(msg: &str) -> bool {
    // The command line may name debug options such as hung_task_panic=1.
    if msg.starts_with("Kernel command line:") {
        return false;
    }
    PREFIXES.iter().any(|prefix| msg.starts_with(prefix))
        || MARKERS.iter().any(|marker| msg.contains(marker))
}

/// The lines of a kernel log (one message per line, optionally with dmesg timestamps)
/// that belong to a kernel problem report: warnings, BUGs, lockdep, KFENCE, UBSAN,
/// RCU stalls, lockups, hung tasks, panics.
pub fn splat_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|line| is_splat(message(line))).collect()
}

/// Splits the contents of /sys/kernel/debug/kmemleak into one report per leaked object.
pub fn kmemleak_reports(text: &str) -> Vec<&str> {
    let starts: Vec<usize> = text
        .match_indices("unreferenced object")
        .map(|(i, _)| i)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &start)| {
            let end = starts.get(k + 1).copied().unwrap_or(text.len());
            text[start..end].trim_end()
        })
        .collect()
}

/// The address of the object a leak report is about (`0xffff888004f1e000`).
pub fn leaked_object(report: &str) -> Option<&str> {
    report
        .strip_prefix("unreferenced object ")?
        .split_whitespace()
        .next()
}

/// The reports of `text` (the kmemleak file) about objects that `earlier` (the file at
/// an earlier time) did not report.
pub fn new_kmemleak_reports<'a>(earlier: &str, text: &'a str) -> Vec<&'a str> {
    let known: Vec<&str> = kmemleak_reports(earlier)
        .into_iter()
        .filter_map(leaked_object)
        .collect();
    kmemleak_reports(text)
        .into_iter()
        .filter(|report| leaked_object(report).is_none_or(|object| !known.contains(&object)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKDEP: &str = "\
[   42.123450] ======================================================
[   42.123451] WARNING: possible circular locking dependency detected
[   42.123452] 6.12.0-fastsocket #1 Not tainted
[   42.123453] ------------------------------------------------------
[   42.123454] insmod/312 is trying to acquire lock:
[   42.123455] ffff888003a1c0b0 (sk_lock-AF_INET){+.+.}-{0:0}, at: tcp_sendmsg+0x1c/0x50
";

    const LOCKDEP_INFO: &str = "\
[   43.000001] INFO: trying to register non-static key.
[   43.000002] The code is fine but needs lockdep annotation, or maybe
";

    const KFENCE: &str = "\
[   51.000000] ==================================================================
[   51.000001] BUG: KFENCE: use-after-free read in fastsocket_accept+0x2c/0x90 [fastsocket]
[   51.000002] Use-after-free read at 0x000000009ab1c3de (in kfence-#37):
";

    const WARN: &str = "\
[   60.500000] ------------[ cut here ]------------
[   60.500001] WARNING: CPU: 1 PID: 123 at net/ipv4/inet_connection_sock.c:712 inet_csk_accept+0x2a0/0x2f0
[   60.500002] Modules linked in: fastsocket
";

    const RCU_STALL: &str = "\
[  101.000000] rcu: INFO: rcu_preempt self-detected stall on CPU
[  101.000001] rcu: \t1-....: (21002 ticks this GP) idle=9b4c/1/0x4000000000000000
[  101.000002] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
";

    const OTHERS: &str = "\
[    9.000000] Oops: general protection fault, probably for non-canonical address 0xdffffc0000000001: 0000 [#1] PREEMPT SMP
[    9.100000] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [fastsocket-test:401]
[    9.200000] UBSAN: array-index-out-of-bounds in rust/kernel/percpu.rs:41:9
[    9.300000] kernel BUG at net/core/sock.c:2345!
[    9.400000] Kernel panic - not syncing: Fatal exception
[    9.500000] rust_kernel: panicked at rust/fastsocket/counters.rs:88:13:
[    9.600000] INFO: task rmmod:512 blocked for more than 122 seconds.
";

    const BOOT: &str = "\
[    0.000000] Linux version 6.12.0-fastsocket (root@build) (gcc (Debian 14.2.0-8) 14.2.0) #1 SMP PREEMPT_DYNAMIC
[    0.000000] Kernel command line: virtme_hostname=virtme-ng console=ttyS0 hung_task_panic=1 panic=-1
[    0.000000] Lock dependency validator: Copyright (c) 2006 Red Hat, Inc., Ingo Molnar
[    0.000000] ... MAX_LOCKDEP_SUBCLASSES:  8
[    0.010000] rcu: Hierarchical RCU implementation.
[    0.010001] rcu: \tRCU lockdep checking is enabled.
[    0.020000] kfence: initialized - using 2097152 bytes for 255 objects at 0x(____ptrval____)-0x(____ptrval____)
[    0.030000] kmemleak: Kernel memory leak detector initialized (mem pool available: 15681)
[    0.050000] Spectre V2 : WARNING: Unprivileged eBPF is enabled with eIBRS on, data leaks possible via Spectre v2 BHB attacks!
[    0.252773] Speculative Return Stack Overflow: WARNING: See https://kernel.org/doc/html/latest/admin-guide/hw-vuln/srso.html for mitigation options.
[    0.040000] ACPI BIOS Warning (bug): Incorrect checksum in table [BGRT] - 0x00, should be 0x14 (20240827/tbprint-219)
[    1.000000] 9pnet: Installing 9P2000 support
[    1.500000] random: crng init done
[    2.000000] systemd[1]: warning: unit configures an IP firewall, but the local system does not support it
[    2.100000] EXT4-fs (vdb): warning: mounting unchecked fs
[   12.000000] fastsocket: hooks registered by fastsocket
[   13.000000] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)
";

    #[test]
    fn finds_lockdep_reports() {
        let found = splat_lines(LOCKDEP);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("possible circular locking dependency"));
        assert_eq!(splat_lines(LOCKDEP_INFO).len(), 1);
    }

    #[test]
    fn finds_kfence_reports() {
        assert_eq!(
            splat_lines(KFENCE),
            vec!["[   51.000001] BUG: KFENCE: use-after-free read in fastsocket_accept+0x2c/0x90 [fastsocket]"]
        );
    }

    #[test]
    fn finds_warnings() {
        let found = splat_lines(WARN);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("WARNING: CPU: 1 PID: 123 at net/ipv4/"));
    }

    #[test]
    fn finds_rcu_stalls() {
        assert_eq!(splat_lines(RCU_STALL).len(), 2);
    }

    #[test]
    fn finds_other_splats() {
        assert_eq!(splat_lines(OTHERS), OTHERS.lines().collect::<Vec<_>>());
    }

    #[test]
    fn handles_line_prefixes() {
        assert_eq!(splat_lines("INFO: lockdep is turned off.\nok\n").len(), 1);
        assert_eq!(splat_lines("random: crng init done\n").len(), 0);
        let with_caller = "[   60.500001][    T1] WARNING: CPU: 0 PID: 1 at kernel/x.c:1 f+0x1/0x2";
        assert_eq!(splat_lines(with_caller), vec![with_caller]);
        assert_eq!(splat_lines("[ 1.0] [C1] INFO: task a:1 blocked").len(), 1);
    }

    #[test]
    fn ignores_normal_boot_lines() {
        assert_eq!(splat_lines(BOOT), Vec::<&str>::new());
    }

    #[test]
    fn finds_splats_among_normal_lines() {
        let log = [BOOT, WARN, BOOT, KFENCE].concat();
        assert_eq!(splat_lines(&log).len(), 2);
    }

    const KMEMLEAK: &str = "\
unreferenced object 0xffff888004f1e000 (size 64):
  comm \"fastsocket-test\", pid 401, jiffies 4294892296
  hex dump (first 32 bytes):
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
  backtrace (crc 5e1c2a4f):
    [<ffffffff8132a4b5>] __kmalloc_noprof+0x2c5/0x390
    [<ffffffff81f0c3e1>] p9_fcall_init+0x31/0x70
unreferenced object 0xffff888004f1e800 (size 32):
  comm \"insmod\", pid 312, jiffies 4294890000
  backtrace (crc 0badf00d):
    [<ffffffff8132a4b5>] __kmalloc_noprof+0x2c5/0x390
    [<ffffffffc0201234>] fastsocket_net_init+0x34/0x100 [fastsocket]
unreferenced object 0xffff888004f1f000 (size 32):
  comm \"rmmod\", pid 330, jiffies 4294899000
  backtrace (crc 12345678):
    [<ffffffff8132a4b5>] __kmalloc_noprof+0x2c5/0x390
    [<ffffffffc0201234>] 0xffffffffc0201234
";

    #[test]
    fn splits_kmemleak_reports() {
        let reports = kmemleak_reports(KMEMLEAK);
        assert_eq!(reports.len(), 3);
        assert!(reports[0].starts_with("unreferenced object 0xffff888004f1e000"));
        assert!(reports[0].ends_with("p9_fcall_init+0x31/0x70"));
        assert!(reports[1].contains("insmod"));
        assert!(kmemleak_reports("").is_empty());
    }

    #[test]
    fn finds_new_kmemleak_reports() {
        let reports = kmemleak_reports(KMEMLEAK);
        assert_eq!(leaked_object(reports[1]), Some("0xffff888004f1e800"));
        assert_eq!(new_kmemleak_reports("", KMEMLEAK).len(), 3);
        let earlier = [reports[0], "\n", reports[2], "\n"].concat();
        assert_eq!(new_kmemleak_reports(&earlier, KMEMLEAK), vec![reports[1]]);
        assert!(new_kmemleak_reports(KMEMLEAK, KMEMLEAK).is_empty());
    }
}
