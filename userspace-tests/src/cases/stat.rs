//! The live view `fastsocket-stat` (tools/fastsocket-stat) against the counters it reads
//! and the connections userspace made.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{connect_paced, in_ns, Context, Ctx, KnobGuard, TestResult};
use crate::netns::ServerSide;
use crate::server::AcceptServer;
use crate::{module, procfs};

/// Overrides where the binary is.
const BINARY_ENV: &str = "FASTSOCKET_STAT";
/// The binary relative to the repository.
const BINARY: &str = "tools/fastsocket-stat/target/release/fastsocket-stat";
/// The runner relative to the repository.
const RUNNER: &str = "userspace-tests/target/release/fastsocket-tests";
/// The tool's exit status when the module is not loaded (its README).
const EXIT_NOT_LOADED: i32 = 3;

/// Connections made while the tool runs, with a pause of [`PAUSE`] after each (about 2 s in
/// all on the debug kernel under TCG).
const CONNECTIONS: usize = 250;
const PAUSE: Duration = Duration::from_millis(2);
/// `fastsocket-stat --json INTERVAL COUNT`: the test reads reports until their accepts add up
/// to the connections, then one more, and stops the tool; COUNT only bounds a tool that never
/// sees them.
const INTERVAL_S: u64 = 1;
const REPORTS: u64 = 120;

/// The tool: `$FASTSOCKET_STAT`, or beside the runner in the same repository.
fn binary() -> TestResult<PathBuf> {
    let path = match std::env::var_os(BINARY_ENV) {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe().context("finding the runner's own path")?;
            let repo = repo_of(&exe).ok_or_else(|| {
                format!(
                    "the runner {} is not at <repository>/{RUNNER}: set {BINARY_ENV} to \
                     fastsocket-stat's path",
                    exe.display()
                )
            })?;
            repo.join(BINARY)
        }
    };
    ensure!(
        path.is_file(),
        "fastsocket-stat is not at {} (build it: cd tools/fastsocket-stat && cargo build \
         --release --locked, or set {BINARY_ENV})",
        path.display()
    );
    Ok(path)
}

/// The repository of a runner at `<repository>/userspace-tests/target/release/...`.
fn repo_of(exe: &Path) -> Option<&Path> {
    let parts: Vec<_> = RUNNER.split('/').collect();
    let mut dir = exe;
    for part in parts.iter().rev() {
        if dir.file_name()? != *part {
            return None;
        }
        dir = dir.parent()?;
    }
    Some(dir)
}

/// The running tool: killed and reaped if the test ends before it does.
struct Running(Option<Child>);

impl Running {
    /// Stops the tool (SIGKILL) and reaps it; its exit status and stderr.
    fn stop(mut self) -> TestResult<(ExitStatus, String)> {
        if let Some(child) = self.0.as_mut() {
            child.kill().context("stopping fastsocket-stat")?;
        }
        self.finish()
    }

    /// Waits for the tool to exit; its exit status and stderr.
    fn finish(mut self) -> TestResult<(ExitStatus, String)> {
        let mut child = self.0.take().ok_or("fastsocket-stat already reaped")?;
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            err.read_to_string(&mut stderr)
                .context("reading fastsocket-stat's stderr")?;
        }
        let status = child.wait().context("waiting for fastsocket-stat")?;
        Ok((status, stderr))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The JSON field `path` (object keys) of `v`.
fn field<'a>(v: &'a Value, path: &[&str]) -> TestResult<&'a Value> {
    path.iter().try_fold(v, |v, key| {
        v.get(key)
            .ok_or_else(|| format!("no {path:?} in report {v}"))
    })
}

/// A JSON object of values by name, each converted by `conv` (`kind` names what it wants).
fn object_of<T>(
    v: &Value,
    what: &str,
    kind: &str,
    conv: fn(&Value) -> Option<T>,
) -> TestResult<BTreeMap<String, T>> {
    v.as_object()
        .ok_or_else(|| format!("{what}: not an object: {v}"))?
        .iter()
        .map(|(name, n)| {
            conv(n)
                .map(|n| (name.clone(), n))
                .ok_or_else(|| format!("{what}.{name}: not {kind}: {n}"))
        })
        .collect()
}

/// A JSON object of numbers by name.
fn numbers(v: &Value, what: &str) -> TestResult<BTreeMap<String, f64>> {
    object_of(v, what, "a number", Value::as_f64)
}

/// A JSON object of whole numbers by name.
fn counts(v: &Value, what: &str) -> TestResult<BTreeMap<String, u64>> {
    object_of(v, what, "a whole number", Value::as_u64)
}

/// Per CPU, the columns of /proc/net/fastsocket by name, read by header.
fn parse_table(text: &str) -> TestResult<BTreeMap<u64, BTreeMap<String, u64>>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty table")?
        .split_whitespace()
        .collect();
    let mut rows = BTreeMap::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        ensure!(
            fields.len() == header.len(),
            "row {line:?} does not match the header {header:?}"
        );
        let mut row = BTreeMap::new();
        for (name, field) in header.iter().zip(&fields) {
            let value = field
                .parse::<u64>()
                .context(format!("{name} {field:?} in row {line:?}"))?;
            row.insert((*name).to_owned(), value);
        }
        let cpu = row.remove("cpu").ok_or("no cpu column")?;
        rows.insert(cpu, row);
    }
    Ok(rows)
}

/// The CPU rows of a report, by CPU.
fn cpu_rows(report: &Value) -> TestResult<BTreeMap<u64, &Value>> {
    field(report, &["cpus"])?
        .as_array()
        .ok_or("cpus is not an array")?
        .iter()
        .map(|row| {
            let cpu = field(row, &["cpu"])?
                .as_u64()
                .ok_or("cpu is not a number")?;
            Ok((cpu, row))
        })
        .collect()
}

/// Checks one interval report: deltas are the counters' increase since `prev`, rates are
/// deltas over `elapsed_s`, the total row is the sum of the CPU rows.
fn check_interval(prev: &Value, report: &Value) -> TestResult {
    let sample = field(report, &["sample"])?;
    let elapsed = field(report, &["elapsed_s"])?
        .as_f64()
        .ok_or_else(|| format!("sample {sample}: elapsed_s is not a number"))?;
    let plausible = elapsed > 0.0 && elapsed < 10.0 * INTERVAL_S as f64;
    ensure!(
        plausible,
        "sample {sample}: elapsed_s {elapsed} for an interval of {INTERVAL_S} s"
    );
    ensure!(
        field(report, &["reset"])?.is_null(),
        "sample {sample}: a reset, though the module stayed loaded: {report}"
    );
    let (rows, prev_rows) = (cpu_rows(report)?, cpu_rows(prev)?);
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    for (cpu, row) in rows
        .iter()
        .map(|(c, r)| (Some(*c), *r))
        .chain([(None, field(report, &["total"])?)])
    {
        let what = format!(
            "sample {sample} {}",
            cpu.map_or("total".to_owned(), |c| format!("cpu {c}"))
        );
        let counters = counts(field(row, &["counters"])?, &format!("{what} counters"))?;
        let deltas = counts(field(row, &["deltas"])?, &format!("{what} deltas"))?;
        let rates = numbers(field(row, &["rates"])?, &format!("{what} rates"))?;
        ensure!(
            rates.keys().eq(deltas.keys()),
            "{what}: rates of {:?}, deltas of {:?}",
            rates.keys(),
            deltas.keys()
        );
        ensure!(
            !deltas.contains_key("queued") && counters.contains_key("queued"),
            "{what}: the gauge queued must be in the counters only"
        );
        for (name, &delta) in &deltas {
            let rate = rates[name];
            let want = delta as f64 / elapsed;
            let equal = (rate - want).abs() <= 1e-9 * want.max(1.0);
            ensure!(
                equal,
                "{what}: {name} rate {rate}, but delta {delta} / elapsed {elapsed} = {want}"
            );
        }
        match cpu {
            Some(cpu) => {
                let before = prev_rows
                    .get(&cpu)
                    .ok_or_else(|| format!("{what}: no cpu {cpu} in the previous report"))?;
                let before = counts(field(before, &["counters"])?, "previous counters")?;
                for (name, &delta) in &deltas {
                    let (now, then) = (counters[name], before[name]);
                    ensure!(
                        now.checked_sub(then) == Some(delta),
                        "{what}: {name} delta {delta}, but the counter went from {then} to {now}"
                    );
                }
                for (name, value) in &counters {
                    *sums.entry(name.clone()).or_default() += value;
                }
            }
            None => ensure!(
                counters == sums,
                "{what}: total counters {counters:?}, the CPU rows add up to {sums:?}"
            ),
        }
        if let (Some(&accepts), Some(&local)) = (deltas.get("accepts"), deltas.get("local")) {
            let pct = field(row, &["local_pct"])?;
            match accepts {
                0 => ensure!(pct.is_null(), "{what}: local_pct {pct} without accepts"),
                _ => {
                    let want = 100.0 * local as f64 / accepts as f64;
                    let got = pct.as_f64().ok_or(format!("{what}: local_pct {pct}"))?;
                    let equal = (got - want).abs() < 1e-9;
                    ensure!(equal, "{what}: local_pct {got}, local/accepts is {want}");
                }
            }
        }
    }
    Ok(())
}

pub fn live_view_totals(ctx: &mut Ctx) -> TestResult {
    let bin = binary()?;
    ctx.ensure_loaded()?;
    let pair = ctx.netns_pair(ServerSide::Named)?;
    let ns = pair.server_ns().ok_or("server netns missing")?.to_owned();
    let server = AcceptServer::start(pair.server_ip(false), &ctx.cpus, Some(&ns))?;

    let (interval, reports) = (INTERVAL_S.to_string(), REPORTS.to_string());
    let mut child = Command::new(&bin)
        .args(["--json", "--netns", &ns, &interval, &reports])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context(format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let child = Running(Some(child));
    let mut lines = BufReader::new(stdout).lines();
    // Sample 0 is printed right after the first read: connect only from then on, so that
    // every connection falls in one of the intervals.
    let first = match lines.next() {
        Some(line) => line.context("reading fastsocket-stat's output")?,
        None => {
            let (status, stderr) = child.finish()?;
            return Err(format!(
                "fastsocket-stat printed nothing ({status}): {}",
                stderr.trim()
            ));
        }
    };
    let started = Instant::now();
    connect_paced(&pair, &server, CONNECTIONS, PAUSE)?;
    let connected = started.elapsed();
    // Reports until their accepts add up to the connections, and one more (in which nothing
    // may move): the intervals are the tool's, whatever the machine's speed.
    let mut output = vec![first];
    let (mut seen, mut extra) = (0u64, 0);
    while extra < 2 {
        let Some(line) = lines.next() else {
            let (status, stderr) = child.finish()?;
            return Err(format!(
                "fastsocket-stat --json --netns {ns} {interval} {reports} ended ({status}) after \
                 {} reports adding up to {seen} of {CONNECTIONS} accepts: {}",
                output.len(),
                stderr.trim()
            ));
        };
        let line = line.context("reading fastsocket-stat's output")?;
        let report: Value = serde_json::from_str(&line).context(format!("report {line:?}"))?;
        seen += field(&report, &["total", "deltas", "accepts"])?
            .as_u64()
            .ok_or("accepts delta is not a number")?;
        output.push(line);
        if seen >= CONNECTIONS as u64 {
            extra += 1;
        }
    }
    let (status, stderr) = child.stop()?;
    ensure!(
        stderr.is_empty(),
        "fastsocket-stat --json --netns {ns} {interval} {reports}: {status}, stderr {stderr:?}"
    );
    let after = in_ns(&ns, || {
        std::fs::read_to_string(procfs::COUNTERS).context(procfs::COUNTERS)
    })?;
    let accepted = server.stop()?;
    ensure!(
        accepted.len() == CONNECTIONS,
        "the server accepted {} connections, {CONNECTIONS} were made",
        accepted.len()
    );

    let reports: Vec<Value> = output
        .iter()
        .map(|line| serde_json::from_str(line).context(format!("report {line:?}")))
        .collect::<TestResult<_>>()?;
    for (i, report) in reports.iter().enumerate() {
        let sample = field(report, &["sample"])?.as_u64();
        ensure!(sample == Some(i as u64), "report {i} is sample {sample:?}");
        ensure!(
            field(report, &["netns"])?.as_str() == Some(ns.as_str()),
            "report {i}: netns is not {ns:?}: {report}"
        );
        ensure!(
            field(report, &["knobs", "enabled"])?.as_str() == Some("1"),
            "report {i}: knob enabled is not \"1\": {report}"
        );
    }
    ensure!(
        field(&reports[0], &["total", "deltas"])?.is_null(),
        "sample 0 has deltas: {}",
        reports[0]
    );
    for pair in reports.windows(2) {
        check_interval(&pair[0], &pair[1])?;
    }

    // Every connection was accepted in one of the intervals, on the CPU the server saw.
    let delta_sum = |cpu: Option<u64>| -> TestResult<u64> {
        reports[1..].iter().try_fold(0, |sum, report| {
            let row = match cpu {
                None => field(report, &["total"])?,
                Some(cpu) => cpu_rows(report)?
                    .get(&cpu)
                    .copied()
                    .ok_or_else(|| format!("no cpu {cpu} in {report}"))?,
            };
            let d = field(row, &["deltas", "accepts"])?
                .as_u64()
                .ok_or("accepts delta is not a number")?;
            Ok(sum + d)
        })
    };
    let total = delta_sum(None)?;
    ensure!(
        total == CONNECTIONS as u64,
        "the accepts deltas fastsocket-stat printed add up to {total}, {CONNECTIONS} connections \
         were accepted (in {:.2} s from its first read)",
        connected.as_secs_f64()
    );
    for &cpu in &ctx.cpus {
        let seen = accepted.iter().filter(|a| a.cpu == cpu).count() as u64;
        let printed = delta_sum(Some(cpu as u64))?;
        ensure!(
            printed == seen,
            "cpu {cpu}: accepts deltas add up to {printed}, the server accepted {seen} there"
        );
    }

    // Its last absolute values are the file's after it exited (nothing else ran there).
    let table = parse_table(&after)?;
    let last = cpu_rows(reports.last().ok_or("no report")?)?;
    ensure!(
        table.keys().eq(last.keys()),
        "CPUs {:?} in {}, {:?} in the last report",
        table.keys(),
        procfs::COUNTERS,
        last.keys()
    );
    for (cpu, row) in &table {
        let printed = counts(field(last[cpu], &["counters"])?, "counters")?;
        ensure!(
            &printed == row,
            "cpu {cpu}: the last report's counters {printed:?}, {} after it exited {row:?}",
            procfs::COUNTERS
        );
    }
    info!(
        "fastsocket-stat: {total} accepts in {} intervals ({:.2} s of connections)",
        reports.len() - 1,
        connected.as_secs_f64()
    );

    check_disabled_note(&bin, &ns)?;
    drop(pair);
    check_not_loaded(ctx, &bin)
}

/// With `enabled=0` in the namespace, the text view and the JSON reports carry a note.
fn check_disabled_note(bin: &Path, ns: &str) -> TestResult {
    in_ns(ns, || {
        let _off = KnobGuard::enabled("0")?;
        for json in [false, true] {
            let mut cmd = Command::new(bin);
            cmd.args(json.then_some("--json"))
                .args(["--netns", ns, "0.1", "1"]);
            let out = cmd.output().context(format!("{cmd:?}"))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            ensure!(
                out.status.success() && out.stderr.is_empty(),
                "{cmd:?}: {}, stderr {:?}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            let note = "fastsocket is disabled in this network namespace";
            let lines: Vec<&str> = stdout.lines().collect();
            if json {
                for line in &lines {
                    let report: Value = serde_json::from_str(line).context(line)?;
                    let notes = field(&report, &["notes"])?.to_string();
                    ensure!(notes.contains(note), "{cmd:?}: no disabled note in {line}");
                }
                ensure!(
                    lines.len() == 2,
                    "{cmd:?}: {} reports: {stdout}",
                    lines.len()
                );
            } else {
                ensure!(
                    lines
                        .iter()
                        .any(|l| l.starts_with("note: ") && l.contains(note)),
                    "{cmd:?}: no disabled note in {stdout:?}"
                );
            }
        }
        Ok(())
    })
}

/// Without the module: one line on stderr, nothing on stdout, exit status 3. The module is
/// loaded again afterwards.
fn check_not_loaded(ctx: &Ctx, bin: &Path) -> TestResult {
    module::rmmod()?;
    let out = Command::new(bin).args(["--json", "1", "1"]).output();
    let reload = ctx.insmod();
    let out = out.context(format!("running {}", bin.display()))?;
    reload.context("loading the module again")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(EXIT_NOT_LOADED)
            && out.stdout.is_empty()
            && stderr.lines().count() == 1
            && stderr.contains("the fastsocket module is not loaded"),
        "fastsocket-stat without the module: {}, stdout {:?}, stderr {stderr:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_repository_of_the_runner() {
        let exe = Path::new("/work/main/userspace-tests/target/release/fastsocket-tests");
        assert_eq!(repo_of(exe), Some(Path::new("/work/main")));
        assert_eq!(
            repo_of(Path::new("/usr/bin/fastsocket-tests")),
            None,
            "not in a repository"
        );
        let debug = Path::new("/work/main/userspace-tests/target/debug/fastsocket-tests");
        assert_eq!(repo_of(debug), None);
    }

    #[test]
    fn parses_the_table_by_header() {
        let rows = parse_table("cpu accepts queued\n0 5 1\n1 7 0\n").unwrap();
        assert_eq!(rows[&1]["accepts"], 7);
        assert_eq!(rows[&0]["queued"], 1);
        assert!(parse_table("cpu accepts\n0 x\n").is_err());
        assert!(parse_table("cpu accepts\n0 1 2\n").is_err());
    }
}
