// SPDX-License-Identifier: GPL-2.0

//! The counters of `/proc/net/fastsocket` and what `fastsocket-stat` shows of them: parsing
//! by header name, per-interval deltas and rates, and the text and JSON reports.
//!
//! Pure logic, no I/O: `main.rs` reads the files and sleeps.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// The most bytes read from `/proc/net/fastsocket` (a row is under 200 bytes: 8,192 CPUs
/// fit).
pub const MAX_TABLE_BYTES: usize = 4 << 20;
/// The most columns a table may have.
pub const MAX_COLUMNS: usize = 256;
/// The most bytes of one knob's value.
pub const MAX_KNOB_BYTES: usize = 8192;
/// The most knobs read from the sysctl directory.
pub const MAX_KNOBS: usize = 64;

/// Columns that are gauges (a value now), not monotonically increasing counters: the
/// module's own list.
pub use fastsocket_logic::read::GAUGES;

/// Whether column `name` is a gauge.
pub fn is_gauge(name: &str) -> bool {
    GAUGES.contains(&name)
}

/// One read of `/proc/net/fastsocket`: the values of every column but `cpu`, per CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// Column names after removing `cpu`, in the file's order.
    columns: Vec<String>,
    /// Per CPU, the values in the order of `columns`.
    rows: BTreeMap<u32, Vec<u64>>,
}

impl Table {
    /// Parses the table by its header's names, so that added or reordered columns do not
    /// matter. `cpu` and `accepts` are required; every other column is optional.
    pub fn parse(text: &str) -> Result<Table, String> {
        if text.len() > MAX_TABLE_BYTES {
            return Err(format!("longer than {MAX_TABLE_BYTES} bytes"));
        }
        let mut lines = text.lines().filter(|line| !line.trim().is_empty());
        let header: Vec<&str> = lines.next().ok_or("empty")?.split_whitespace().collect();
        if header.len() > MAX_COLUMNS {
            return Err(format!("{} columns, at most {MAX_COLUMNS}", header.len()));
        }
        for (i, name) in header.iter().enumerate() {
            // Any printable name: columns a later module adds must not break the reader.
            if !name.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!("bad column name {name:?} in the header"));
            }
            if header[..i].contains(name) {
                return Err(format!("column {name:?} twice in the header"));
            }
        }
        let cpu = header
            .iter()
            .position(|h| *h == "cpu")
            .ok_or("no \"cpu\" column in the header")?;
        if !header.contains(&"accepts") {
            return Err("no \"accepts\" column in the header".into());
        }
        let columns: Vec<String> = header
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != cpu)
            .map(|(_, h)| (*h).to_owned())
            .collect();
        let mut rows = BTreeMap::new();
        for line in lines {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() != header.len() {
                return Err(format!(
                    "row {line:?} has {} fields, the header {}",
                    fields.len(),
                    header.len()
                ));
            }
            let id = fields[cpu]
                .parse::<u32>()
                .map_err(|e| format!("bad cpu {:?} in row {line:?}: {e}", fields[cpu]))?;
            let values = fields
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != cpu)
                .map(|(i, field)| {
                    field
                        .parse::<u64>()
                        .map_err(|e| format!("bad {} {field:?} in row {line:?}: {e}", header[i]))
                })
                .collect::<Result<Vec<u64>, String>>()?;
            if rows.insert(id, values).is_some() {
                return Err(format!("cpu {id} listed twice"));
            }
        }
        if rows.is_empty() {
            return Err("no CPU rows".into());
        }
        Ok(Table { columns, rows })
    }

    /// The column names (without `cpu`), in the file's order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The CPUs listed.
    pub fn cpus(&self) -> impl Iterator<Item = u32> + '_ {
        self.rows.keys().copied()
    }

    /// The value of column `name` of `cpu`; `None` if either is absent.
    pub fn get(&self, cpu: u32, name: &str) -> Option<u64> {
        let i = self.columns.iter().position(|c| c == name)?;
        self.rows.get(&cpu).map(|row| row[i])
    }

    /// The sum of column `name` over the CPUs; `None` if the column is absent.
    pub fn total(&self, name: &str) -> Option<u64> {
        let i = self.columns.iter().position(|c| c == name)?;
        Some(
            self.rows
                .values()
                .fold(0u64, |sum, row| sum.saturating_add(row[i])),
        )
    }

    /// Every column of `cpu` by name (`None`: the totals).
    pub fn values(&self, cpu: Option<u32>) -> BTreeMap<String, u64> {
        self.columns
            .iter()
            .filter_map(|name| {
                let value = match cpu {
                    Some(cpu) => self.get(cpu, name),
                    None => self.total(name),
                };
                value.map(|v| (name.clone(), v))
            })
            .collect()
    }
}

/// Why an interval has no rates: the module was reloaded (or replaced) between two reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reset(pub String);

/// What changed between two reads of the table, `elapsed` apart.
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    /// Per CPU, the increase of every counter column (gauges are not in it).
    deltas: BTreeMap<u32, BTreeMap<String, u64>>,
    /// The later read.
    now: Table,
    /// Seconds between the two reads.
    elapsed: f64,
}

impl Interval {
    /// The increases from `then` to `now`. A counter that went down, a column or CPU that
    /// came or went means the module was reloaded (or replaced): a [`Reset`] saying where.
    pub fn between(then: &Table, now: &Table, elapsed: Duration) -> Result<Interval, Reset> {
        if then.columns != now.columns {
            return Err(Reset(format!(
                "the columns changed from {:?} to {:?}",
                then.columns.join(" "),
                now.columns.join(" ")
            )));
        }
        if !then.rows.keys().eq(now.rows.keys()) {
            return Err(Reset(format!(
                "the CPUs listed changed from {} to {}",
                then.rows.len(),
                now.rows.len()
            )));
        }
        let mut deltas = BTreeMap::new();
        for (cpu, row) in &now.rows {
            let before = &then.rows[cpu];
            let mut delta = BTreeMap::new();
            for (i, name) in now.columns.iter().enumerate() {
                if is_gauge(name) {
                    continue;
                }
                let d = row[i].checked_sub(before[i]).ok_or_else(|| {
                    Reset(format!(
                        "cpu {cpu} {name} went back from {} to {}",
                        before[i], row[i]
                    ))
                })?;
                delta.insert(name.clone(), d);
            }
            deltas.insert(*cpu, delta);
        }
        Ok(Interval {
            deltas,
            now: now.clone(),
            elapsed: elapsed.as_secs_f64(),
        })
    }

    /// Seconds between the two reads.
    pub fn elapsed(&self) -> f64 {
        self.elapsed
    }

    /// The increase of counter `name` on `cpu` (`None`: over all CPUs); `None` if the
    /// column is absent or a gauge.
    pub fn delta(&self, cpu: Option<u32>, name: &str) -> Option<u64> {
        match cpu {
            Some(cpu) => self.deltas.get(&cpu)?.get(name).copied(),
            None => self
                .deltas
                .values()
                .try_fold(0u64, |sum, d| Some(sum.saturating_add(*d.get(name)?))),
        }
    }

    /// [`Interval::delta`] per second; `None` also when no time elapsed.
    pub fn rate(&self, cpu: Option<u32>, name: &str) -> Option<f64> {
        let delta = self.delta(cpu, name)?;
        (self.elapsed > 0.0).then(|| delta as f64 / self.elapsed)
    }

    /// `part` as a percentage of `part + rest` over the interval (`None` for absent
    /// columns or an empty whole).
    fn share(&self, cpu: Option<u32>, part: &str, whole: &[&str]) -> Option<f64> {
        let part = self.delta(cpu, part)?;
        let whole = whole
            .iter()
            .map(|name| self.delta(cpu, name))
            .sum::<Option<u64>>()?;
        (whole > 0).then(|| 100.0 * part as f64 / whole as f64)
    }

    /// The share of accepts whose handshake completed on the accepting CPU.
    pub fn local_pct(&self, cpu: Option<u32>) -> Option<f64> {
        self.share(cpu, "local", &["accepts"])
    }

    /// The share of the segments RFD decided on that were already on their port's owner.
    pub fn rx_local_pct(&self, cpu: Option<u32>) -> Option<f64> {
        self.share(cpu, "rfd_local", &["rfd_local", "rfd_steered"])
    }

    /// The share of the sockets created with the socket pair cache on that reused a kept
    /// closed socket's dentry and inode.
    pub fn reuse_pct(&self, cpu: Option<u32>) -> Option<f64> {
        self.share(cpu, "vfs_reused", &["vfs_reused", "vfs_new"])
    }

    /// The later read.
    pub fn now(&self) -> &Table {
        &self.now
    }

    /// The deltas, rates and shares of `cpu` (`None`: the totals), for JSON.
    fn row(&self, cpu: Option<u32>) -> Row {
        let deltas: BTreeMap<String, u64> = self
            .now
            .columns
            .iter()
            .filter_map(|name| self.delta(cpu, name).map(|d| (name.clone(), d)))
            .collect();
        let rates = (self.elapsed > 0.0).then(|| {
            deltas
                .iter()
                .map(|(name, &d)| (name.clone(), d as f64 / self.elapsed))
                .collect()
        });
        Row {
            cpu,
            counters: self.now.values(cpu),
            deltas: Some(deltas),
            rates,
            local_pct: self.local_pct(cpu),
            rx_local_pct: self.rx_local_pct(cpu),
            reuse_pct: self.reuse_pct(cpu),
        }
    }
}

/// One text column: its heading, and how a row gets its cell.
struct Column {
    heading: &'static str,
    cell: fn(&Interval, Option<u32>) -> Cell,
}

/// A cell of the text view.
enum Cell {
    /// The column is not in the module's table.
    Absent,
    /// A share with nothing to divide (no accepts, no segments) or a rate over no time.
    Undefined,
    Value(f64, usize),
}

impl Cell {
    fn rate(value: Option<f64>, present: bool) -> Cell {
        match (present, value) {
            (false, _) => Cell::Absent,
            (true, None) => Cell::Undefined,
            (true, Some(v)) => Cell::Value(v, 1),
        }
    }
}

fn rate_cell(interval: &Interval, cpu: Option<u32>, name: &str) -> Cell {
    let present = interval.now.columns.iter().any(|c| c == name);
    Cell::rate(interval.rate(cpu, name), present)
}

fn pct_cell(interval: &Interval, value: Option<f64>, needs: &[&str]) -> Cell {
    let present = needs
        .iter()
        .all(|name| interval.now.columns.iter().any(|c| c == name));
    Cell::rate(value, present)
}

const COLUMNS: &[Column] = &[
    Column {
        heading: "accepts/s",
        cell: |i, c| rate_cell(i, c, "accepts"),
    },
    Column {
        heading: "local%",
        cell: |i, c| pct_cell(i, i.local_pct(c), &["accepts", "local"]),
    },
    Column {
        heading: "steals/s",
        cell: |i, c| rate_cell(i, c, "queue_steal"),
    },
    Column {
        heading: "wk-local/s",
        cell: |i, c| rate_cell(i, c, "wake_local"),
    },
    Column {
        heading: "wk-pulled/s",
        cell: |i, c| rate_cell(i, c, "wake_pulled"),
    },
    Column {
        heading: "wk-fallbk/s",
        cell: |i, c| rate_cell(i, c, "wake_fallback"),
    },
    Column {
        heading: "wk-held/s",
        cell: |i, c| rate_cell(i, c, "wake_held"),
    },
    Column {
        heading: "queued",
        cell: |i, c| {
            let value = match c {
                Some(cpu) => i.now.get(cpu, "queued"),
                None => i.now.total("queued"),
            };
            value.map_or(Cell::Absent, |v| Cell::Value(v as f64, 0))
        },
    },
    Column {
        heading: "rfd-ports/s",
        cell: |i, c| rate_cell(i, c, "rfd_ports"),
    },
    Column {
        heading: "rfd-fallbk/s",
        cell: |i, c| rate_cell(i, c, "rfd_fallback"),
    },
    Column {
        heading: "steered/s",
        cell: |i, c| rate_cell(i, c, "rfd_steered"),
    },
    Column {
        heading: "rx-local%",
        cell: |i, c| pct_cell(i, i.rx_local_pct(c), &["rfd_local", "rfd_steered"]),
    },
    Column {
        heading: "reused/s",
        cell: |i, c| rate_cell(i, c, "vfs_reused"),
    },
    Column {
        heading: "reuse%",
        cell: |i, c| pct_cell(i, i.reuse_pct(c), &["vfs_reused", "vfs_new"]),
    },
];

/// What an absent column shows.
pub const ABSENT: &str = "n/a";
/// What a share with an empty whole (or a rate over no time) shows.
pub const UNDEFINED: &str = "-";

/// The heading line of the text view.
pub fn text_heading() -> String {
    let mut line = format!("{:>4}", "cpu");
    for column in COLUMNS {
        let _ = write!(line, " {:>w$}", column.heading, w = width(column));
    }
    line
}

fn width(column: &Column) -> usize {
    column.heading.len().max(8)
}

/// One line of the text view: `cpu`'s row, or the total row (`None`).
pub fn text_row(interval: &Interval, cpu: Option<u32>) -> String {
    let mut line = match cpu {
        Some(cpu) => format!("{cpu:>4}"),
        None => format!("{:>4}", "all"),
    };
    for column in COLUMNS {
        let w = width(column);
        let _ = match (column.cell)(interval, cpu) {
            Cell::Absent => write!(line, " {ABSENT:>w$}"),
            Cell::Undefined => write!(line, " {UNDEFINED:>w$}"),
            Cell::Value(v, precision) => write!(line, " {v:>w$.precision$}"),
        };
    }
    line
}

/// The per-CPU rows (if `per_cpu`) and the total row of one interval, with the heading.
pub fn text_report(interval: &Interval, per_cpu: bool) -> Vec<String> {
    let mut lines = Vec::new();
    if per_cpu {
        lines.push(text_heading());
        lines.extend(interval.now.cpus().map(|cpu| text_row(interval, Some(cpu))));
    }
    lines.push(text_row(interval, None));
    lines
}

/// The values of one CPU (or the totals) in a JSON report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// The CPU; absent for the totals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Every column's absolute value (counters and gauges) at the end of the interval.
    pub counters: BTreeMap<String, u64>,
    /// Every counter's increase over the interval; `null` for the first report (no
    /// interval yet) and after a reset.
    pub deltas: Option<BTreeMap<String, u64>>,
    /// `deltas` per second of `elapsed_s`; `null` where `deltas` is, or no time elapsed.
    pub rates: Option<BTreeMap<String, f64>>,
    /// Percentage of the interval's accepts that were local; `null` without accepts.
    pub local_pct: Option<f64>,
    /// Percentage of the interval's RFD decisions that found the segment on its port's
    /// owner (`rfd_local / (rfd_local + rfd_steered)`); `null` without any.
    pub rx_local_pct: Option<f64>,
    /// Percentage of the interval's sockets created with the socket pair cache on that
    /// reused a kept pair (`vfs_reused / (vfs_reused + vfs_new)`); `null` without any.
    pub reuse_pct: Option<f64>,
}

impl Row {
    /// A row with the absolute values of `table` only.
    fn absolute(table: &Table, cpu: Option<u32>) -> Row {
        Row {
            cpu,
            counters: table.values(cpu),
            deltas: None,
            rates: None,
            local_pct: None,
            rx_local_pct: None,
            reuse_pct: None,
        }
    }
}

/// One line of `--json` output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// 0 for the first read (absolute values only), then 1, 2, ... per interval.
    pub sample: u64,
    /// When the table was read, seconds since the Unix epoch.
    pub time: f64,
    /// Seconds since the previous read (monotonic clock); `null` for sample 0.
    pub elapsed_s: Option<f64>,
    /// The network namespace given with `--netns`; `null`: the caller's.
    pub netns: Option<String>,
    /// Whether the module was loaded at this read. Without it (unloaded since the first
    /// read) `knobs` and `columns` are empty, `cpus` is absent and `total` is `null`; the
    /// report after it was loaded again has absolute values and a `reset`.
    pub loaded: bool,
    /// The knobs of `/proc/sys/net/fastsocket`, by name, as the kernel prints them.
    pub knobs: BTreeMap<String, String>,
    /// Why this report has no deltas though it is not the first: counters went back or
    /// the table changed (module reloaded); the next interval starts from this read.
    pub reset: Option<String>,
    /// Notes for people (module disabled in the namespace, knobs changed).
    pub notes: Vec<String>,
    /// The table's columns (without `cpu`), in its order.
    pub columns: Vec<String>,
    /// Per CPU; absent with `--total`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Vec<Row>>,
    /// Over all CPUs.
    pub total: Option<Row>,
}

/// What every report shares besides the table.
#[derive(Clone, Debug, Default)]
pub struct ReportMeta {
    pub sample: u64,
    pub time: f64,
    pub netns: Option<String>,
    pub knobs: BTreeMap<String, String>,
    pub notes: Vec<String>,
}

impl Report {
    /// A report of absolute values only: the first read, or a read after a reset.
    pub fn absolute(meta: ReportMeta, table: &Table, per_cpu: bool, reset: Option<Reset>) -> Self {
        Report {
            sample: meta.sample,
            time: meta.time,
            elapsed_s: None,
            netns: meta.netns,
            loaded: true,
            knobs: meta.knobs,
            reset: reset.map(|r| r.0),
            notes: meta.notes,
            columns: table.columns.clone(),
            cpus: per_cpu.then(|| {
                table
                    .cpus()
                    .map(|c| Row::absolute(table, Some(c)))
                    .collect()
            }),
            total: Some(Row::absolute(table, None)),
        }
    }

    /// The report of `interval`.
    pub fn interval(meta: ReportMeta, interval: &Interval, per_cpu: bool) -> Self {
        Report {
            sample: meta.sample,
            time: meta.time,
            elapsed_s: Some(interval.elapsed),
            netns: meta.netns,
            loaded: true,
            knobs: meta.knobs,
            reset: None,
            notes: meta.notes,
            columns: interval.now.columns.clone(),
            cpus: per_cpu.then(|| interval.now.cpus().map(|c| interval.row(Some(c))).collect()),
            total: Some(interval.row(None)),
        }
    }

    /// A report of a read that found the module unloaded.
    pub fn unloaded(meta: ReportMeta) -> Self {
        Report {
            sample: meta.sample,
            time: meta.time,
            elapsed_s: None,
            netns: meta.netns,
            loaded: false,
            knobs: BTreeMap::new(),
            reset: None,
            notes: meta.notes,
            columns: Vec::new(),
            cpus: None,
            total: None,
        }
    }
}

/// Parses the value of a knob read from `/proc/sys/net/fastsocket`: the text without its
/// trailing newline, at most [`MAX_KNOB_BYTES`], printable.
pub fn parse_knob(name: &str, text: &str) -> Result<String, String> {
    let value = text.trim_end_matches('\n');
    if value.len() > MAX_KNOB_BYTES {
        return Err(format!("knob {name}: longer than {MAX_KNOB_BYTES} bytes"));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(format!("knob {name}: control characters in {value:?}"));
    }
    Ok(value.to_owned())
}

/// The note shown when the module went away after the first read.
pub const UNLOADED_NOTE: &str =
    "the fastsocket module is not loaded any more: waiting for it to be loaded again";

/// The reason of the reset after the module was loaded again.
pub const RELOADED: &str = "the module was loaded again";

/// The note shown while the namespace has the module disabled.
pub fn disabled_note(knobs: &BTreeMap<String, String>) -> Option<String> {
    (knobs.get("enabled").map(String::as_str) == Some("0")).then(|| {
        "fastsocket is disabled in this network namespace (net.fastsocket.enabled=0): \
         its counters do not move"
            .to_owned()
    })
}

/// Notes on knobs that changed from `then` to `now`.
pub fn knob_changes(
    then: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> = then.keys().chain(now.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (a, b) = (then.get(name), now.get(name));
            (a != b).then(|| {
                let show = |v: Option<&String>| v.map_or("(none)".to_owned(), |v| v.clone());
                format!("knob {name} changed: {} -> {}", show(a), show(b))
            })
        })
        .collect()
}

/// The knobs as one line: `name=value` separated by spaces.
pub fn knob_line(knobs: &BTreeMap<String, String>) -> String {
    knobs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The usage line.
pub const USAGE: &str =
    "usage: fastsocket-stat [--json] [--per-cpu|--total] [--netns NAME] [INTERVAL [COUNT]]";

/// The shortest and longest interval, in seconds.
pub const INTERVAL_MIN_S: f64 = 0.1;
pub const INTERVAL_MAX_S: f64 = 86_400.0;
/// The largest report count.
pub const COUNT_MAX: u64 = 1_000_000_000;
/// The longest namespace name (a file name).
pub const NETNS_NAME_MAX: usize = 255;

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Args {
    /// One JSON object per report instead of the text view.
    pub json: bool,
    /// A row per CPU besides the total row (the default), or the total row only.
    pub per_cpu: bool,
    /// Enter `/run/netns/NAME` first.
    pub netns: Option<String>,
    /// Between two reads.
    pub interval: Duration,
    /// Reports after the first read; `None`: until interrupted.
    pub count: Option<u64>,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Run(Args),
    Help,
    Version,
}

/// Parses the arguments (without the program name).
pub fn parse_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Action, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let (mut json, mut mode, mut netns) = (false, None, None);
    let mut positional = Vec::new();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("json") if !json => json = true,
            Long(flag @ ("per-cpu" | "total")) => {
                let per_cpu = flag == "per-cpu";
                if mode.is_some_and(|m| m != per_cpu) {
                    return Err("--per-cpu and --total exclude each other".into());
                }
                mode = Some(per_cpu);
            }
            Long("netns") if netns.is_none() => {
                let name = parser
                    .value()
                    .map_err(|e| e.to_string())?
                    .into_string()
                    .map_err(|name| format!("namespace name {name:?} is not UTF-8"))?;
                netns = Some(check_netns_name(&name)?);
            }
            Long(name @ ("json" | "netns")) => return Err(format!("--{name} given twice")),
            Short('h') | Long("help") => return Ok(Action::Help),
            Short('V') | Long("version") => return Ok(Action::Version),
            Value(value) if positional.len() < 2 => positional.push(
                value
                    .into_string()
                    .map_err(|v| format!("argument {v:?} is not UTF-8"))?,
            ),
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    let interval = match positional.first() {
        None => Duration::from_secs(1),
        Some(text) => parse_interval(text)?,
    };
    let count = positional
        .get(1)
        .map(|text| parse_count(text))
        .transpose()?;
    Ok(Action::Run(Args {
        json,
        per_cpu: mode.unwrap_or(true),
        netns,
        interval,
        count,
    }))
}

/// INTERVAL: seconds, decimal, from [`INTERVAL_MIN_S`] to [`INTERVAL_MAX_S`].
fn parse_interval(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("INTERVAL {text:?}: expected seconds from {INTERVAL_MIN_S} to {INTERVAL_MAX_S}");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let secs: f64 = text.parse().map_err(|_| bad())?;
    if !(INTERVAL_MIN_S..=INTERVAL_MAX_S).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// COUNT: reports, from 1 to [`COUNT_MAX`].
fn parse_count(text: &str) -> Result<u64, String> {
    let bad = || format!("COUNT {text:?}: expected a whole number from 1 to {COUNT_MAX}");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u64>() {
        Ok(n) if (1..=COUNT_MAX).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

/// A name under `/run/netns`: one path component.
fn check_netns_name(name: &str) -> Result<String, String> {
    if name.is_empty()
        || name.len() > NETNS_NAME_MAX
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
    {
        return Err(format!(
            "--netns {name:?}: expected a name under /run/netns (1 to {NETNS_NAME_MAX} bytes, no '/')"
        ));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "cpu accepts local remote wake_local wake_fallback";

    #[test]
    fn parses_by_name() {
        let t = Table::parse(&format!("{HEADER}\n0 10 7 3 6 4\n1 5 5 0 5 0\n")).unwrap();
        assert_eq!(t.get(0, "local"), Some(7));
        assert_eq!(t.get(1, "remote"), Some(0));
        assert_eq!(t.get(0, "queue_steal"), None);
        assert_eq!(t.get(2, "accepts"), None);
        assert_eq!(t.total("accepts"), Some(15));
        assert_eq!(t.total("queued"), None);
        let shuffled = Table::parse("accepts queued cpu\n3 9 1\n").unwrap();
        assert_eq!(shuffled.get(1, "accepts"), Some(3));
        assert_eq!(shuffled.get(1, "queued"), Some(9));
        assert_eq!(shuffled.columns(), ["accepts", "queued"]);
        let added = Table::parse("cpu accepts Some.New-Column\n0 1 2\n").unwrap();
        assert_eq!(added.get(0, "Some.New-Column"), Some(2));
    }

    #[test]
    fn rejects_malformed_tables() {
        for (text, why) in [
            ("", "empty"),
            ("\n\n", "empty"),
            (HEADER, "no CPU rows"),
            ("accepts local\n1 2\n", "no \"cpu\""),
            ("cpu local\n0 2\n", "no \"accepts\""),
            ("cpu accepts accepts\n0 1 2\n", "twice in the header"),
            ("cpu accepts lo\u{7f}cal\n0 1 2\n", "bad column name"),
            ("cpu accepts l\u{e9}\n0 1 2\n", "bad column name"),
            ("cpu accepts\n0 1 2\n", "has 3 fields"),
            ("cpu accepts\n0\n", "has 1 fields"),
            ("cpu accepts\n0 x\n", "bad accepts"),
            ("cpu accepts\n0 -1\n", "bad accepts"),
            ("cpu accepts\n0 18446744073709551616\n", "bad accepts"),
            ("cpu accepts\ncpu0 1\n", "bad cpu"),
            ("cpu accepts\n0 1\n0 2\n", "cpu 0 listed twice"),
        ] {
            let err = Table::parse(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err:?} lacks {why:?}");
        }
        let wide = (0..=MAX_COLUMNS)
            .map(|i| format!("c{i}"))
            .collect::<Vec<_>>();
        assert!(Table::parse(&format!("cpu accepts {}\n", wide.join(" "))).is_err());
        assert!(Table::parse(&"x".repeat(MAX_TABLE_BYTES + 1)).is_err());
    }

    #[test]
    fn zero_elapsed_has_deltas_but_no_rates() {
        let a = Table::parse("cpu accepts local\n0 1 1\n").unwrap();
        let b = Table::parse("cpu accepts local\n0 3 2\n").unwrap();
        let i = Interval::between(&a, &b, Duration::ZERO).unwrap();
        assert_eq!(i.delta(Some(0), "accepts"), Some(2));
        assert_eq!(i.rate(Some(0), "accepts"), None);
        assert_eq!(i.local_pct(None), Some(50.0));
        let report = Report::interval(ReportMeta::default(), &i, true);
        let total = report.total.unwrap();
        assert_eq!(total.rates, None);
        assert_eq!(total.deltas.unwrap()["accepts"], 2);
        assert!(text_row(&i, None).contains(&format!(" {UNDEFINED} ")));
    }
}
