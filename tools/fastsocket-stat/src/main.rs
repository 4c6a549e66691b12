// SPDX-License-Identifier: GPL-2.0

//! `fastsocket-stat`: a live view of the fastsocket module's per-CPU counters, the way
//! `vmstat 1` shows the kernel's. See README.md.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::thread;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use nix::sched::{setns, CloneFlags};

use fastsocket_stat::{
    disabled_note, knob_changes, knob_line, parse_args, parse_knob, text_heading, text_report,
    Action, Args, Interval, Report, ReportMeta, Reset, Table, MAX_KNOBS, MAX_KNOB_BYTES,
    MAX_TABLE_BYTES, RELOADED, UNLOADED_NOTE, USAGE,
};

/// The counters of the calling thread's network namespace (`/proc/net/fastsocket` of a
/// process that entered a namespace before it read anything).
const TABLE: &str = "/proc/thread-self/net/fastsocket";
/// The name the messages use.
const TABLE_NAME: &str = "/proc/net/fastsocket";
/// The module's knobs; net sysctls show the namespace of the thread that opens them.
const KNOB_DIR: &str = "/proc/sys/net/fastsocket";
/// Where `ip netns add` puts its namespaces.
const NETNS_DIR: &str = "/run/netns";
/// In the `--total` view, the heading is repeated every this many rows.
const HEADING_EVERY: u64 = 20;

/// Exit codes (README.md).
const EXIT_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_LOADED: u8 = 3;

enum Failure {
    Usage(String),
    NotLoaded,
    Error(String),
    /// Whoever read the output went away: stop quietly.
    OutputClosed,
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure::OutputClosed
        } else {
            Failure::Error(format!("writing the output: {e}"))
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) | Err(Failure::OutputClosed) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("fastsocket-stat: {msg} (see fastsocket-stat --help)");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::NotLoaded) => {
            eprintln!(
                "fastsocket-stat: {TABLE_NAME} does not exist: the fastsocket module is not loaded"
            );
            ExitCode::from(EXIT_NOT_LOADED)
        }
        Err(Failure::Error(msg)) => {
            eprintln!("fastsocket-stat: {msg}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run() -> Result<(), Failure> {
    let args = match parse_args(std::env::args_os().skip(1)).map_err(Failure::Usage)? {
        Action::Run(args) => args,
        Action::Help => {
            println!("{USAGE}\n\n{}", include_str!("help.txt").trim_end());
            return Ok(());
        }
        Action::Version => {
            println!("fastsocket-stat {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
    };
    if let Some(name) = &args.netns {
        enter_netns(name)?;
    }
    View::new(args).run()
}

/// Moves the (single-threaded) process into network namespace `/run/netns/NAME`.
fn enter_netns(name: &str) -> Result<(), Failure> {
    let path = format!("{NETNS_DIR}/{name}");
    let file = File::open(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Failure::Error(format!(
            "no network namespace {name:?}: {path} does not exist"
        )),
        _ => Failure::Error(format!("opening {path}: {e}")),
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
        Failure::Error(format!(
            "entering network namespace {name:?}: {e}{}",
            if e == nix::errno::Errno::EPERM {
                " (needs CAP_SYS_ADMIN)"
            } else {
                ""
            }
        ))
    })
}

/// Reads at most `max` bytes of `path`; longer is an error.
fn read_bounded(path: &str, max: usize) -> io::Result<String> {
    let mut text = String::new();
    File::open(path)?
        .take(max as u64 + 1)
        .read_to_string(&mut text)?;
    if text.len() > max {
        return Err(io::Error::other(format!("longer than {max} bytes")));
    }
    Ok(text)
}

/// One read of the counters, when it was made.
struct Sample {
    table: Table,
    knobs: BTreeMap<String, String>,
    at: Instant,
    time: f64,
}

fn read_sample() -> Result<Sample, Failure> {
    let at = Instant::now();
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let text = read_bounded(TABLE, MAX_TABLE_BYTES).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Failure::NotLoaded,
        _ => Failure::Error(format!("reading {TABLE_NAME}: {e}")),
    })?;
    let table = Table::parse(&text).map_err(|e| Failure::Error(format!("{TABLE_NAME}: {e}")))?;
    Ok(Sample {
        table,
        knobs: read_knobs()?,
        at,
        time,
    })
}

/// Every file of the knob directory, by name.
fn read_knobs() -> Result<BTreeMap<String, String>, Failure> {
    let error = |what: &str, e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => Failure::NotLoaded,
        _ => Failure::Error(format!("reading {what}: {e}")),
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(KNOB_DIR).map_err(|e| error(KNOB_DIR, e))? {
        let entry = entry.map_err(|e| error(KNOB_DIR, e))?;
        let name = entry.file_name().into_string().map_err(|name| {
            Failure::Error(format!("{KNOB_DIR}: knob name {name:?} is not UTF-8"))
        })?;
        names.push(name);
        if names.len() > MAX_KNOBS {
            return Err(Failure::Error(format!(
                "{KNOB_DIR}: more than {MAX_KNOBS} knobs"
            )));
        }
    }
    names
        .into_iter()
        .map(|name| {
            let path = format!("{KNOB_DIR}/{name}");
            // A value is at most MAX_KNOB_BYTES plus its newline.
            let text = read_bounded(&path, MAX_KNOB_BYTES + 1).map_err(|e| error(&path, e))?;
            let value = parse_knob(&name, &text).map_err(Failure::Error)?;
            Ok((name, value))
        })
        .collect()
}

/// The output of one run.
struct View {
    args: Args,
    out: io::Stdout,
    /// Text rows printed since the last heading (`--total`).
    rows: u64,
}

impl View {
    fn new(args: Args) -> View {
        View {
            args,
            out: io::stdout(),
            rows: 0,
        }
    }

    fn run(mut self) -> Result<(), Failure> {
        // Not loaded at the start: exit (status 3). Unloaded later: wait for it.
        let first = read_sample()?;
        self.first(&first)?;
        let start = first.at;
        let mut prev = Some(first);
        let mut sample = 1u64;
        while self.args.count.is_none_or(|count| sample <= count) {
            // Reads at fixed times from the first one, so that the intervals do not drift;
            // one that comes late (a stopped process) is read at once.
            let due = start + self.args.interval.mul_f64(sample as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            let now = match read_sample() {
                Ok(now) => Some(now),
                Err(Failure::NotLoaded) => None,
                Err(e) => return Err(e),
            };
            self.report(sample, prev.as_ref(), now.as_ref())?;
            prev = now;
            sample += 1;
        }
        Ok(())
    }

    /// The report of read `sample` (`now`, `None`: the module is not loaded) after `prev`.
    fn report(
        &mut self,
        sample: u64,
        prev: Option<&Sample>,
        now: Option<&Sample>,
    ) -> Result<(), Failure> {
        let Some(now) = now else {
            // Said once in the text view, in every JSON report.
            let note = vec![UNLOADED_NOTE.to_owned()];
            return match (self.args.json, prev) {
                (true, _) => {
                    let time = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    let meta = self.meta(sample, time, BTreeMap::new(), note);
                    self.json(&Report::unloaded(meta))
                }
                (false, Some(_)) => self.notes(&note),
                (false, None) => Ok(()),
            };
        };
        let mut notes = match prev {
            Some(prev) => knob_changes(&prev.knobs, &now.knobs),
            None => Vec::new(),
        };
        let change = match prev {
            Some(prev) => Interval::between(&prev.table, &now.table, now.at - prev.at),
            None => Err(Reset(RELOADED.to_owned())),
        };
        if self.args.json {
            notes.extend(disabled_note(&now.knobs));
            let meta = self.meta(sample, now.time, now.knobs.clone(), notes);
            let report = match change {
                Ok(interval) => Report::interval(meta, &interval, self.args.per_cpu),
                Err(reset) => Report::absolute(meta, &now.table, self.args.per_cpu, Some(reset)),
            };
            return self.json(&report);
        }
        match change {
            Ok(interval) => {
                // The text view says it when the namespace turns the module off.
                if prev.is_some_and(|prev| prev.knobs.get("enabled") != now.knobs.get("enabled")) {
                    notes.extend(disabled_note(&now.knobs));
                }
                self.notes(&notes)?;
                self.text(&interval)
            }
            Err(reset) => {
                notes.push(format!(
                    "counters reset ({}): rates start again from this read",
                    reset.0
                ));
                notes.extend(disabled_note(&now.knobs));
                self.notes(&notes)
            }
        }
    }

    fn meta(
        &self,
        sample: u64,
        time: f64,
        knobs: BTreeMap<String, String>,
        notes: Vec<String>,
    ) -> ReportMeta {
        ReportMeta {
            sample,
            time,
            netns: self.args.netns.clone(),
            knobs,
            notes,
        }
    }

    /// The first read: absolute values (JSON) or the header (text), printed at once.
    fn first(&mut self, first: &Sample) -> Result<(), Failure> {
        let notes: Vec<String> = disabled_note(&first.knobs).into_iter().collect();
        if self.args.json {
            let meta = self.meta(0, first.time, first.knobs.clone(), notes);
            return self.json(&Report::absolute(
                meta,
                &first.table,
                self.args.per_cpu,
                None,
            ));
        }
        let ns = self
            .args
            .netns
            .as_deref()
            .map_or("of this process".to_owned(), |n| n.to_owned());
        let mut out = self.out.lock();
        writeln!(
            out,
            "fastsocket-stat: netns {ns}, {} CPUs, every {} s; {}",
            first.table.cpus().count(),
            self.args.interval.as_secs_f64(),
            knob_line(&first.knobs)
        )?;
        out.flush()?;
        drop(out);
        self.notes(&notes)
    }

    fn notes(&mut self, notes: &[String]) -> Result<(), Failure> {
        let mut out = self.out.lock();
        for note in notes {
            writeln!(out, "note: {note}")?;
        }
        out.flush()?;
        // A note breaks the table: the heading comes again.
        if !notes.is_empty() {
            self.rows = 0;
        }
        Ok(())
    }

    fn text(&mut self, interval: &Interval) -> Result<(), Failure> {
        let mut out = self.out.lock();
        if !self.args.per_cpu && self.rows.is_multiple_of(HEADING_EVERY) {
            writeln!(out, "{}", text_heading())?;
        }
        for line in text_report(interval, self.args.per_cpu) {
            writeln!(out, "{line}")?;
        }
        self.rows += 1;
        out.flush()?;
        Ok(())
    }

    fn json(&mut self, report: &Report) -> Result<(), Failure> {
        let mut out = self.out.lock();
        serde_json::to_writer(&mut out, report).map_err(|e| Failure::from(io::Error::from(e)))?;
        writeln!(out)?;
        out.flush()?;
        Ok(())
    }
}
