//! The module's /proc and sysctl files: reading, writing and (pure) parsing.
//!
//! All per-netns files are read through /proc/thread-self so that a thread that
//! setns()'d into another namespace sees that namespace's files.
//!
//! The kernel's own files are parsed by procfs-core where it has a parser (/proc/net/tcp),
//! always fed the text of the /proc/thread-self path (procfs's /proc/net functions would show
//! the thread group leader's namespace). It has none for /proc/net/netstat,
//! /proc/net/sockstat and the CPU lists of sysfs: those parsers are ours.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io;

use procfs_core::net::{TcpNetEntries, TcpNetEntry, TcpState};
use procfs_core::{ExplicitSystemInfo, FromReadSI};

use crate::sys;

pub const HOOKS: &str = "/proc/thread-self/net/fastsocket_hooks";
pub const COUNTERS: &str = "/proc/thread-self/net/fastsocket";
/// The IPv4 TCP sockets, per netns.
pub const TCP4: &str = "/proc/thread-self/net/tcp";
/// The stack's extended SNMP counters (TcpExt, IpExt, ...), per netns.
pub const NETSTAT: &str = "/proc/thread-self/net/netstat";
/// The module's sysctl directory; net sysctls show the namespace of the opening thread.
pub const KNOB_DIR: &str = "/proc/sys/net/fastsocket";
/// Sysctl names.
pub const ENABLED: &str = "enabled";
pub const LISTEN_SCAN: &str = "listen_scan";
pub const LISTEN_PORTS: &str = "listen_ports";
pub const LISTEN_HOLD_MS: &str = "listen_hold_ms";
pub const LISTEN_PULL: &str = "listen_pull";
pub const LISTEN_QUEUES: &str = "listen_queues";
pub const RFD: &str = "rfd";
/// Receive Flow Deliver for a same-host peer's connections (off by default).
pub const RFD_PEER: &str = "rfd_peer";
/// The socket inode cache (lightweight socket files).
pub const VFS: &str = "vfs";
/// The TCP line of the socket summary (sockets in use, in TIME_WAIT), per netns.
pub const SOCKSTAT: &str = "/proc/thread-self/net/sockstat";
const ONLINE_CPUS: &str = "/sys/devices/system/cpu/online";
const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";

/// Contents of /proc/net/fastsocket_hooks.
#[derive(Debug, PartialEq, Eq)]
pub struct Hooks {
    pub ops: String,
    pub enabled: bool,
}

/// The value of the `name: value` line of /proc/net/fastsocket_hooks.
fn hooks_field<'a>(text: &'a str, name: &str) -> Result<&'a str, String> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim())
        .ok_or_else(|| format!("no {name:?} line in {text:?}"))
}

/// The `name: 0|1` line of /proc/net/fastsocket_hooks (`enabled`, `rfd_key`, ...).
pub fn parse_hooks_flag(text: &str, name: &str) -> Result<bool, String> {
    match hooks_field(text, name)? {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(format!("bad {name} value {other:?}")),
    }
}

/// [`parse_hooks_flag`] of the kernel's file.
pub fn read_hooks_flag(name: &str) -> Result<bool, String> {
    parse_hooks_flag(&read(HOOKS)?, name).map_err(|e| format!("{HOOKS}: {e}"))
}

impl Hooks {
    pub fn parse(text: &str) -> Result<Hooks, String> {
        Ok(Hooks {
            ops: hooks_field(text, "ops")?.to_owned(),
            enabled: parse_hooks_flag(text, "enabled")?,
        })
    }

    /// Checks that the hooks are (`Some(name)`) or are not (`None`) registered.
    pub fn expect(&self, ops: Option<&str>) -> Result<(), String> {
        let want = ops.unwrap_or("none");
        if self.ops == want && self.enabled == ops.is_some() {
            Ok(())
        } else {
            Err(format!(
                "{HOOKS} says ops {:?} enabled {}, expected ops {want:?} enabled {}",
                self.ops,
                u8::from(self.enabled),
                u8::from(ops.is_some())
            ))
        }
    }
}

/// One CPU's row of /proc/net/fastsocket: the module's own type (`rust/logic/stats.rs`),
/// whose column names (`COLUMNS` there) the module writes the table with.
pub use fastsocket_logic::read::{Counts, GAUGES};
pub use fastsocket_logic::stats::CpuStats;

/// Columns every version of the table had: a table without one of them is malformed. The
/// others are read as 0 where absent (a table of an older module).
const REQUIRED: [&str; 6] = [
    "cpu",
    "accepts",
    "local",
    "remote",
    "wake_local",
    "wake_fallback",
];

/// /proc/net/fastsocket: counters per possible CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub per_cpu: BTreeMap<usize, CpuStats>,
}

impl Counters {
    /// Parses the table by its header names ([`COLUMNS`]), so that added columns do not
    /// matter.
    pub fn parse(text: &str) -> Result<Counters, String> {
        let mut lines = text.lines().filter(|line| !line.trim().is_empty());
        let header: Vec<&str> = lines
            .next()
            .ok_or("empty file")?
            .split_whitespace()
            .collect();
        if let Some(missing) = REQUIRED.iter().find(|name| !header.contains(name)) {
            return Err(format!("no {missing:?} column in header {header:?}"));
        }
        let mut per_cpu = BTreeMap::new();
        for line in lines {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() != header.len() {
                return Err(format!("row {line:?} does not match header {header:?}"));
            }
            let (mut cpu, mut remote, mut stats) = (None, 0, CpuStats::default());
            for (name, field) in header.iter().zip(&fields) {
                let number = || {
                    field
                        .parse::<u64>()
                        .map_err(|e| format!("bad {name:?} in row {line:?}: {e}"))
                };
                match *name {
                    "cpu" => {
                        cpu = Some(
                            field
                                .trim_start_matches("cpu")
                                .parse::<usize>()
                                .map_err(|e| format!("bad cpu in row {line:?}: {e}"))?,
                        )
                    }
                    "remote" => remote = number()?,
                    _ => {
                        // A column this runner does not know: skipped.
                        if let Some(count) = stats.get_mut(name) {
                            *count = number()?;
                        }
                    }
                }
            }
            ensure!(
                remote == stats.remote(),
                "row {line:?}: remote {remote} is not accepts - local"
            );
            let cpu = cpu.ok_or_else(|| format!("no cpu in row {line:?}"))?;
            if per_cpu.insert(cpu, stats).is_some() {
                return Err(format!("cpu {cpu} listed twice"));
            }
        }
        Ok(Counters { per_cpu })
    }

    /// The row of `cpu`, zero if absent.
    pub fn cpu(&self, cpu: usize) -> CpuStats {
        self.per_cpu.get(&cpu).copied().unwrap_or_default()
    }

    pub fn total(&self) -> CpuStats {
        let mut sum = CpuStats::default();
        for s in self.per_cpu.values() {
            for ((_, total), (_, count)) in sum.counts_mut().zip(s.counts()) {
                *total += count;
            }
        }
        sum
    }

    /// Per-CPU increase since `earlier`; counters must never go down (gauges, [`GAUGES`],
    /// keep their value now).
    pub fn since(&self, earlier: &Counters) -> Result<Counters, String> {
        let mut per_cpu = BTreeMap::new();
        for (&cpu, now) in &self.per_cpu {
            let then = earlier.cpu(cpu);
            let mut stats = *now;
            for ((name, count), (_, before)) in stats.counts_mut().zip(then.counts()) {
                if !GAUGES.contains(&name) {
                    *count = count.checked_sub(*before).ok_or_else(|| {
                        format!("cpu {cpu}: {name} went down from {before} to {count}")
                    })?;
                }
            }
            per_cpu.insert(cpu, stats);
        }
        if let Some(cpu) = earlier
            .per_cpu
            .keys()
            .find(|c| !self.per_cpu.contains_key(c))
        {
            return Err(format!("row of cpu {cpu} disappeared"));
        }
        Ok(Counters { per_cpu })
    }
}

/// The counters of `group` (such as `TcpExt`) in /proc/net/netstat or /proc/net/snmp
/// format: a line `Group: Name1 Name2 ...` followed by a line `Group: value1 value2 ...`.
pub fn parse_netstat(text: &str, group: &str) -> Result<BTreeMap<String, u64>, String> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter_map(|line| line.strip_prefix(&prefix));
    let names = lines.next().ok_or_else(|| format!("no {group} lines"))?;
    let values = lines
        .next()
        .ok_or_else(|| format!("no {group} value line"))?;
    let (names, values): (Vec<&str>, Vec<&str>) = (
        names.split_whitespace().collect(),
        values.split_whitespace().collect(),
    );
    if names.len() != values.len() {
        return Err(format!(
            "{group}: {} names but {} values",
            names.len(),
            values.len()
        ));
    }
    names
        .iter()
        .zip(&values)
        .map(|(&name, value)| {
            value
                .parse::<u64>()
                .map(|v| (name.to_owned(), v))
                .map_err(|e| format!("{group}: bad value {value:?} of {name}: {e}"))
        })
        .collect()
}

/// The counters `names` of `group` in the calling thread's netns's /proc/net/netstat.
pub fn read_netstat(group: &str, names: &[&str]) -> Result<Vec<u64>, String> {
    let counters = parse_netstat(&read(NETSTAT)?, group).map_err(|e| format!("{NETSTAT}: {e}"))?;
    names
        .iter()
        .map(|name| {
            counters
                .get(*name)
                .copied()
                .ok_or_else(|| format!("{NETSTAT}: no {group} counter {name}"))
        })
        .collect()
}

/// The IPv4 TCP sockets in /proc/net/tcp format, parsed by procfs-core.
pub fn parse_tcp4(text: &str) -> Result<Vec<TcpNetEntry>, String> {
    // The parser reads the addresses in the host's byte order (as the kernel prints them)
    // and uses nothing else of the system information.
    let system = ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: 0,
        page_size: 0,
        is_little_endian: cfg!(target_endian = "little"),
    };
    TcpNetEntries::from_read(text.as_bytes(), &system)
        .map(|entries| entries.0)
        .map_err(|e| e.to_string())
}

/// [`parse_tcp4`] of the calling thread's netns.
pub fn read_tcp4() -> Result<Vec<TcpNetEntry>, String> {
    parse_tcp4(&read(TCP4)?).map_err(|e| format!("{TCP4}: {e}"))
}

/// The accept queue lengths (`rx_queue`, which is `sk_ack_backlog` for listeners) of every
/// IPv4 listener on `port` (several share it with SO_REUSEPORT) in /proc/net/tcp format, in
/// the order listed.
pub fn parse_tcp_listen_queues(text: &str, port: u16) -> Result<Vec<u32>, String> {
    Ok(parse_tcp4(text)?
        .into_iter()
        .filter(|s| s.state == TcpState::Listen && s.local_address.port() == port)
        .map(|s| s.rx_queue)
        .collect())
}

/// The accept queue length of the one IPv4 listener on `port` in /proc/net/tcp format.
pub fn parse_tcp_listen_queue(text: &str, port: u16) -> Result<u32, String> {
    let queues = parse_tcp_listen_queues(text, port)?;
    match queues.as_slice() {
        [queue] => Ok(*queue),
        _ => Err(format!(
            "expected one IPv4 listener on port {port}, found {}",
            queues.len()
        )),
    }
}

/// [`parse_tcp_listen_queue`] of the calling thread's netns.
pub fn read_tcp_listen_queue(port: u16) -> Result<u32, String> {
    parse_tcp_listen_queue(&read(TCP4)?, port).map_err(|e| format!("{TCP4}: {e}"))
}

/// [`parse_tcp_listen_queues`] of the calling thread's netns.
pub fn read_tcp_listen_queues(port: u16) -> Result<Vec<u32>, String> {
    parse_tcp_listen_queues(&read(TCP4)?, port).map_err(|e| format!("{TCP4}: {e}"))
}

/// Parses a kernel CPU list such as `0-3,6,8-9`.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let number = |s: &str| {
        s.parse::<usize>()
            .map_err(|e| format!("bad CPU list {text:?}: {e}"))
    };
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => cpus.extend(number(first)?..=number(last)?),
            None => cpus.push(number(part)?),
        }
    }
    if cpus.is_empty() {
        return Err(format!("empty CPU list {text:?}"));
    }
    Ok(cpus)
}

fn read(path: &str) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))
}

pub fn online_cpus() -> Result<Vec<usize>, String> {
    parse_cpu_list(&read(ONLINE_CPUS)?)
}

/// The kernel's `nr_cpu_ids`: one more than the highest possible CPU.
pub fn nr_cpu_ids() -> Result<usize, String> {
    let possible = parse_cpu_list(&read(POSSIBLE_CPUS)?)?;
    Ok(possible.iter().max().map_or(0, |max| max + 1))
}

/// TCP sockets of a netns in /proc/net/sockstat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSockets {
    /// Hashed sockets: listening, connecting, connected (not TIME_WAIT).
    pub inuse: u64,
    /// Sockets in TIME_WAIT.
    pub tw: u64,
}

/// Parses the `TCP:` line of /proc/net/sockstat (`TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1`).
pub fn parse_sockstat_tcp(text: &str) -> Result<TcpSockets, String> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("TCP:"))
        .ok_or("no TCP line")?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let value = |name: &str| {
        let at = words
            .iter()
            .position(|w| *w == name)
            .ok_or_else(|| format!("no {name} in TCP line {line:?}"))?;
        words
            .get(at + 1)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("bad {name} in TCP line {line:?}"))
    };
    Ok(TcpSockets {
        inuse: value("inuse")?,
        tw: value("tw")?,
    })
}

/// [`parse_sockstat_tcp`] of the calling thread's netns.
pub fn read_sockstat_tcp() -> Result<TcpSockets, String> {
    parse_sockstat_tcp(&read(SOCKSTAT)?).map_err(|e| format!("{SOCKSTAT}: {e}"))
}

pub fn read_hooks() -> Result<Hooks, String> {
    Hooks::parse(&read(HOOKS)?).map_err(|e| format!("{HOOKS}: {e}"))
}

pub fn read_counters() -> Result<Counters, String> {
    Counters::parse(&read(COUNTERS)?).map_err(|e| format!("{COUNTERS}: {e}"))
}

/// Path of sysctl `name`.
pub fn knob_path(name: &str) -> String {
    format!("{KNOB_DIR}/{name}")
}

/// [`knob_path`] for raw (async-signal-safe) opens.
pub fn knob_path_c(name: &str) -> CString {
    CString::new(knob_path(name)).expect("sysctl names contain no NUL")
}

/// The text of sysctl `name`, as read.
pub fn read_knob(name: &str) -> Result<String, String> {
    read(&knob_path(name))
}

/// The value of an integer sysctl.
pub fn read_knob_int(name: &str) -> Result<i64, String> {
    let text = read_knob(name)?;
    text.trim()
        .parse()
        .map_err(|e| format!("{}: bad value {text:?}: {e}", knob_path(name)))
}

pub fn read_enabled() -> Result<i64, String> {
    read_knob_int(ENABLED)
}

/// Writes `value` to sysctl `name` with a single write() on a fresh fd (offset 0).
pub fn write_knob(name: &str, value: &[u8]) -> io::Result<()> {
    let fd = sys::open_write_only(&knob_path_c(name))?;
    let written = sys::write_fd(&fd, value)?;
    if written != value.len() {
        return Err(io::Error::other(format!(
            "short write: {written} of {} bytes",
            value.len()
        )));
    }
    Ok(())
}

pub fn write_enabled(value: &[u8]) -> io::Result<()> {
    write_knob(ENABLED, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hooks() {
        let hooks = Hooks::parse("ops: fastsocket\nenabled: 1\n").unwrap();
        assert_eq!(
            hooks,
            Hooks {
                ops: "fastsocket".into(),
                enabled: true
            }
        );
        assert!(hooks.expect(Some("fastsocket")).is_ok());
        assert!(hooks.expect(None).is_err());
        let none = Hooks::parse("ops: none\nenabled: 0\n").unwrap();
        assert!(none.expect(None).is_ok());
        assert!(none.expect(Some("fastsocket")).is_err());
        assert!(Hooks::parse("ops: x\n").is_err());
        assert!(Hooks::parse("ops: x\nenabled: 2\n").is_err());
        let keys = "ops: fastsocket\nenabled: 1\naccept_key: 1\nrfd_key: 0\n";
        assert_eq!(parse_hooks_flag(keys, "rfd_key"), Ok(false));
        assert_eq!(parse_hooks_flag(keys, "accept_key"), Ok(true));
        assert!(parse_hooks_flag(keys, "locality_key").is_err());
        assert!(parse_hooks_flag("rfd_key: x\n", "rfd_key").is_err());
    }

    const HEADER: &str = "cpu accepts local remote wake_local wake_fallback";
    const TABLE: &str =
        "cpu accepts local remote wake_local wake_fallback\n0 10 7 3 8 2\n1 5 5 0 5 0\n";

    #[test]
    fn parses_counters() {
        let counters = Counters::parse(TABLE).unwrap();
        assert_eq!(counters.per_cpu.len(), 2);
        assert_eq!(
            counters.cpu(0),
            CpuStats {
                accepts: 10,
                local: 7,
                wake_local: 8,
                wake_fallback: 2,
                ..Default::default()
            }
        );
        assert_eq!(counters.cpu(7), CpuStats::default());
        assert_eq!(counters.total().accepts, 15);
        assert_eq!(counters.total().local, 12);
        assert_eq!(counters.total().wakes(), 15);
    }

    #[test]
    fn parses_counters_by_header_name() {
        let text = "  cpu  remote wake_fallback extra local accepts wake_local\n 0 3 2 99 7 10 8\n\n 1 0 0 98 5 5 5\n";
        assert_eq!(
            Counters::parse(text).unwrap(),
            Counters::parse(TABLE).unwrap()
        );
    }

    #[test]
    fn reads_the_optional_held_column() {
        let text = "cpu accepts local remote wake_local wake_fallback wake_held\n0 3 2 1 1 1 4\n";
        let counters = Counters::parse(text).unwrap();
        assert_eq!(counters.cpu(0).wake_held, 4);
        assert_eq!(counters.total().wakes(), 6);
        let later = "cpu accepts local remote wake_local wake_fallback wake_held\n0 3 2 1 1 1 3\n";
        assert!(Counters::parse(later).unwrap().since(&counters).is_err());
        assert!(Counters::parse(&text.replace(" 4\n", " x\n")).is_err());
    }

    #[test]
    fn rejects_malformed_counters() {
        assert!(Counters::parse("").is_err());
        assert!(Counters::parse("cpu accepts local\n0 1 1\n").is_err());
        assert!(Counters::parse("cpu accepts local remote\n0 1 1 0\n").is_err());
        assert!(Counters::parse(&format!("{HEADER}\n0 1 1 0 0\n")).is_err());
        assert!(Counters::parse(&format!("{HEADER}\n0 1 x 0 0 0\n")).is_err());
        assert!(Counters::parse(&format!("{HEADER}\n0 1 1 0 1 0\n0 1 1 0 1 0\n")).is_err());
        // remote is accepts - local in every row the module writes.
        assert!(Counters::parse(&format!("{HEADER}\n0 5 3 1 3 2\n")).is_err());
    }

    #[test]
    fn queued_is_a_gauge_and_pulled_a_counter() {
        let header =
            "cpu accepts local remote queued wake_local wake_pulled wake_fallback wake_held";
        let before = Counters::parse(&format!("{header}\n0 3 2 1 5 1 1 0 0\n")).unwrap();
        let after = Counters::parse(&format!("{header}\n0 4 3 1 2 1 2 0 0\n")).unwrap();
        assert_eq!(before.cpu(0).queued, 5);
        let delta = after.since(&before).unwrap().cpu(0);
        assert_eq!((delta.queued, delta.wake_pulled, delta.wakes()), (2, 1, 1));
    }

    #[test]
    fn reads_the_optional_queue_columns() {
        let header = "cpu accepts local remote queued wake_local wake_pulled wake_fallback \
                      wake_held queue_local queue_steal queue_stolen queue_fallback";
        let before = Counters::parse(&format!(
            "{header}\n0 5 4 1 3 4 0 1 0 4 1 0 0\n1 0 0 0 2 0 0 0 0 0 0 1 2\n"
        ))
        .unwrap();
        let after = Counters::parse(&format!(
            "{header}\n0 9 6 3 0 6 0 3 0 6 3 0 0\n1 0 0 0 0 0 0 0 0 0 0 3 5\n"
        ))
        .unwrap();
        assert_eq!(
            (before.cpu(0).queue_local, before.cpu(0).queue_steal),
            (4, 1)
        );
        assert_eq!(before.cpu(1).queue_stolen, 1);
        assert_eq!(before.total().queue_fallback, 2);
        let delta = after.since(&before).unwrap();
        assert_eq!((delta.cpu(0).queue_local, delta.cpu(0).queue_steal), (2, 2));
        assert_eq!(
            (delta.cpu(1).queue_stolen, delta.cpu(1).queue_fallback),
            (2, 3)
        );
        let total = delta.total();
        assert_eq!(
            (
                total.queue_local,
                total.queue_steal,
                total.queue_stolen,
                total.queue_fallback
            ),
            (2, 2, 2, 3)
        );
        // A counter that goes down is an error, whichever column.
        let down = format!("{header}\n0 9 6 3 0 6 0 3 0 6 3 0 0\n1 0 0 0 0 0 0 0 0 0 0 3 1\n");
        assert!(Counters::parse(&down).unwrap().since(&before).is_err());
        // Older modules without the columns read 0; columns are found by name.
        assert_eq!(Counters::parse(TABLE).unwrap().total().queue_steal, 0);
        let shuffled =
            "queue_steal cpu accepts local remote wake_local wake_fallback\n7 0 1 1 0 1 0\n";
        assert_eq!(Counters::parse(shuffled).unwrap().cpu(0).queue_steal, 7);
        assert!(Counters::parse(&shuffled.replace("\n7 ", "\nx ")).is_err());
    }

    #[test]
    fn reads_the_optional_rfd_columns() {
        let header = "cpu accepts local remote wake_local wake_fallback queue_local queue_steal \
                      queue_stolen queue_fallback rfd_ports rfd_fallback rfd_steered rfd_local";
        let before = Counters::parse(&format!(
            "{header}\n0 0 0 0 0 0 0 0 0 0 10 1 7 3\n1 0 0 0 0 0 0 0 0 0 4 0 2 9\n"
        ))
        .unwrap();
        assert_eq!(
            (
                before.cpu(0).rfd_ports,
                before.cpu(0).rfd_fallback,
                before.cpu(0).rfd_steered,
                before.cpu(0).rfd_local
            ),
            (10, 1, 7, 3)
        );
        let total = before.total();
        assert_eq!(
            (
                total.rfd_ports,
                total.rfd_fallback,
                total.rfd_steered,
                total.rfd_local
            ),
            (14, 1, 9, 12)
        );
        let after = Counters::parse(&format!(
            "{header}\n0 0 0 0 0 0 0 0 0 0 15 1 9 3\n1 0 0 0 0 0 0 0 0 0 4 2 2 10\n"
        ))
        .unwrap();
        let delta = after.since(&before).unwrap();
        assert_eq!((delta.cpu(0).rfd_ports, delta.cpu(0).rfd_steered), (5, 2));
        assert_eq!((delta.cpu(1).rfd_fallback, delta.cpu(1).rfd_local), (2, 1));
        for (column, value) in [("rfd_ports", 9), ("rfd_fallback", 0), ("rfd_steered", 1)] {
            let text = format!(
                "cpu accepts local remote wake_local wake_fallback {column}\n0 0 0 0 0 0 10\n"
            );
            let down = format!(
                "cpu accepts local remote wake_local wake_fallback {column}\n0 0 0 0 0 0 {value}\n"
            );
            let (text, down) = (
                Counters::parse(&text).unwrap(),
                Counters::parse(&down).unwrap(),
            );
            assert!(down.since(&text).is_err(), "{column} went down");
        }
        // Found by name, wherever they stand; absent: 0.
        let shuffled = "rfd_local cpu accepts rfd_ports local remote wake_local wake_fallback\n\
                        4 1 0 6 0 0 0 0\n";
        let c = Counters::parse(shuffled).unwrap();
        assert_eq!((c.cpu(1).rfd_local, c.cpu(1).rfd_ports), (4, 6));
        assert_eq!(c.cpu(1).rfd_steered, 0);
        assert_eq!(Counters::parse(TABLE).unwrap().total().rfd_ports, 0);
        assert!(Counters::parse(&shuffled.replace("\n4 ", "\nx ")).is_err());
    }

    #[test]
    fn parses_sockstat() {
        let text =
            "sockets: used 130\nTCP: inuse 5 orphan 1 tw 2 alloc 7 mem 1\nUDP: inuse 0 mem 0\n";
        assert_eq!(
            parse_sockstat_tcp(text).unwrap(),
            TcpSockets { inuse: 5, tw: 2 }
        );
        assert!(parse_sockstat_tcp("UDP: inuse 0 mem 0\n").is_err());
        assert!(parse_sockstat_tcp("TCP: inuse x tw 0\n").is_err());
        assert!(parse_sockstat_tcp("TCP: inuse 1\n").is_err());
    }

    #[test]
    fn computes_deltas() {
        let before = Counters::parse(TABLE).unwrap();
        let after = Counters::parse(&format!("{HEADER}\n0 12 8 4 9 3\n1 5 5 0 5 0\n")).unwrap();
        let delta = after.since(&before).unwrap();
        assert_eq!(
            delta.cpu(0),
            CpuStats {
                accepts: 2,
                local: 1,
                wake_local: 1,
                wake_fallback: 1,
                ..Default::default()
            }
        );
        assert_eq!(delta.cpu(1), CpuStats::default());
        assert!(before.since(&after).is_err(), "counters went down");
        let fewer = Counters::parse(&format!("{HEADER}\n0 12 8 4 9 3\n")).unwrap();
        assert!(fewer.since(&before).is_err(), "a row disappeared");
    }

    #[test]
    fn parses_netstat() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 1 22 23\n\
                    IpExt: InNoRoutes ListenDrops\nIpExt: 7 99\n";
        let tcp = parse_netstat(text, "TcpExt").unwrap();
        assert_eq!(tcp.len(), 3);
        assert_eq!(tcp["ListenOverflows"], 22);
        assert_eq!(tcp["ListenDrops"], 23);
        assert_eq!(parse_netstat(text, "IpExt").unwrap()["ListenDrops"], 99);
        assert!(parse_netstat(text, "MPTcpExt").is_err());
        assert!(parse_netstat("TcpExt: A B\nTcpExt: 1\n", "TcpExt").is_err());
        assert!(parse_netstat("TcpExt: A\nTcpExt: x\n", "TcpExt").is_err());
        assert!(parse_netstat("TcpExt: A\n", "TcpExt").is_err());
    }

    #[test]
    fn parses_listen_queues() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 014D0A0A:A4CB 00000000:0000 0A 00000000:00000009 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
            1: 014D0A0A:A4CB 024D0A0A:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n\
            2: 0100007F:0050 00000000:0000 0A 00000000:0000001F 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n";
        assert_eq!(parse_tcp_listen_queue(text, 0xA4CB).unwrap(), 9);
        assert_eq!(parse_tcp_listen_queue(text, 80).unwrap(), 31);
        assert!(
            parse_tcp_listen_queue(text, 0xC350).is_err(),
            "not a listener"
        );
        assert!(parse_tcp_listen_queue(text, 81).is_err());
        let twice =
            format!("{text}   3: 0200007F:0050 00000000:0000 0A 00000000:00000001 00:0 0 0 0 4\n");
        assert!(parse_tcp_listen_queue(&twice, 80).is_err());
        let bad = text.replace(":0000001F", ":0000001G");
        assert!(parse_tcp_listen_queue(&bad, 80).is_err());
        assert_eq!(parse_tcp_listen_queues(&twice, 80).unwrap(), vec![31, 1]);
        assert_eq!(
            parse_tcp_listen_queues(text, 81).unwrap(),
            Vec::<u32>::new()
        );
        assert!(parse_tcp_listen_queues(&bad, 80).is_err());
        // Every row is parsed, whichever port it is on.
        assert!(parse_tcp_listen_queues(&bad, 81).is_err());
        let sockets = parse_tcp4(text).unwrap();
        assert_eq!(sockets.len(), 3);
        assert_eq!(
            (sockets[1].local_address.port(), sockets[1].state.clone()),
            (0xA4CB, TcpState::Established)
        );
        assert_eq!(
            (sockets[1].remote_address.port(), sockets[1].inode),
            (50000, 2)
        );
        if cfg!(target_endian = "little") {
            assert_eq!(
                sockets[2].local_address,
                "127.0.0.1:80".parse::<std::net::SocketAddr>().unwrap()
            );
        }
        assert!(parse_tcp4("header only\n").unwrap().is_empty());
        assert!(parse_tcp4("header\n   0: 0100007F:0050\n").is_err());
    }

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert_eq!(parse_cpu_list("0-2,5,7-8").unwrap(), vec![0, 1, 2, 5, 7, 8]);
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("a-b").is_err());
    }
}
