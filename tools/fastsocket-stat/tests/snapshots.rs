// SPDX-License-Identifier: GPL-2.0

//! Parsing and rates on `/proc/net/fastsocket` tables recorded in a booted guest
//! (tests/data/README.md says how).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::Duration;

use fastsocket_logic::stats::COLUMNS;
use fastsocket_stat::{
    disabled_note, knob_changes, parse_args, parse_knob, text_heading, text_report, text_row,
    Action, Args, Interval, Report, ReportMeta, Table, ABSENT, UNDEFINED,
};
use serde_json::Value;

const UNDER_LOAD: &str = include_str!("data/server-under-load.txt");
const AFTER_LOAD: &str = include_str!("data/server-after-load.txt");
const CLIENT: &str = include_str!("data/client-under-load.txt");
const OLDER: &str = include_str!("data/older-format.txt");

/// Whether `columns` are columns the module writes (all of them but `cpu`, which the parser
/// takes as the row's key), in the module's order: a recording of an older module has fewer.
fn module_columns(columns: &[String]) -> bool {
    let mut module = COLUMNS.iter().filter(|&&c| c != "cpu");
    columns.iter().all(|c| module.any(|m| m == c))
}

fn table(text: &str) -> Table {
    Table::parse(text).unwrap()
}

/// `text`'s table with every value 0: the module just loaded.
fn zeroed(text: &str) -> Table {
    let mut lines = text.lines();
    let mut out = format!("{}\n", lines.next().unwrap());
    for line in lines {
        let mut fields = line.split_whitespace();
        let cpu = fields.next().unwrap();
        let zeros = vec!["0"; fields.count()];
        out.push_str(&format!("{cpu} {}\n", zeros.join(" ")));
    }
    table(&out)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * b.abs().max(1.0)
}

#[test]
fn parses_the_current_table() {
    let t = table(UNDER_LOAD);
    assert_eq!(t.columns().len(), 16, "the recording's columns");
    assert!(module_columns(t.columns()), "{:?}", t.columns());
    assert_eq!(t.cpus().collect::<Vec<_>>(), [0, 1]);
    assert_eq!(t.get(0, "accepts"), Some(517));
    assert_eq!(t.get(1, "queue_stolen"), Some(124));
    assert_eq!(t.total("accepts"), Some(943));
    assert_eq!(t.total("wake_held"), Some(660));
    // remote = accepts - local, as the module prints it.
    for cpu in t.cpus() {
        assert_eq!(
            t.get(cpu, "remote"),
            Some(t.get(cpu, "accepts").unwrap() - t.get(cpu, "local").unwrap())
        );
    }
    let c = table(CLIENT);
    assert_eq!(c.total("rfd_ports"), Some(1178));
    assert_eq!(c.total("accepts"), Some(0));
}

#[test]
fn parses_the_older_table_by_header() {
    let t = table(OLDER);
    assert_eq!(
        t.columns(),
        ["accepts", "local", "remote", "wake_local", "wake_fallback"]
    );
    assert_eq!(t.get(0, "wake_fallback"), Some(1));
    for absent in [
        "queued",
        "wake_held",
        "queue_steal",
        "rfd_ports",
        "rfd_local",
    ] {
        assert_eq!(t.get(0, absent), None, "{absent}");
        assert_eq!(t.total(absent), None, "{absent}");
    }
    // The same values as in the full table it was cut from.
    let full = table(UNDER_LOAD);
    for name in t.columns() {
        assert_eq!(t.total(name), full.total(name), "{name}");
    }
}

#[test]
fn rejects_malformed_rows_of_real_tables() {
    let short = UNDER_LOAD.replacen("\n0 517 393", "\n0 517", 1);
    let letter = UNDER_LOAD.replacen("\n1 426", "\n1 4x6", 1);
    let twice = format!("{UNDER_LOAD}{}", UNDER_LOAD.lines().nth(1).unwrap());
    // A read cut in the middle of a row.
    let cut = &UNDER_LOAD[..UNDER_LOAD.len() - 8];
    for (text, why) in [
        (short.as_str(), "has 16 fields, the header 17"),
        (letter.as_str(), "bad accepts"),
        (twice.as_str(), "listed twice"),
        (cut, "fields"),
        ("", "empty"),
    ] {
        let err = Table::parse(text).unwrap_err();
        assert!(err.contains(why), "{err:?} lacks {why:?}");
    }
    // A header without the accepts column is not this module's table.
    let no_accepts = UNDER_LOAD.replacen("accepts", "acceptz", 1);
    assert!(Table::parse(&no_accepts).is_err());
}

#[test]
fn computes_deltas_rates_and_shares() {
    let (then, now) = (table(UNDER_LOAD), table(AFTER_LOAD));
    let i = Interval::between(&then, &now, Duration::from_millis(2500)).unwrap();
    assert_eq!(i.delta(Some(0), "accepts"), Some(934 - 517));
    assert_eq!(i.delta(Some(1), "accepts"), Some(713 - 426));
    assert_eq!(i.delta(None, "accepts"), Some(704));
    assert_eq!(i.delta(None, "queue_steal"), Some((254 - 124) + (122 - 68)));
    assert_eq!(i.delta(None, "queued"), None, "a gauge has no delta");
    assert_eq!(i.delta(None, "no_such_column"), None);
    assert!(close(i.rate(None, "accepts").unwrap(), 704.0 / 2.5));
    assert!(close(i.rate(Some(1), "wake_held").unwrap(), 250.0 / 2.5));
    // local: (680 - 393) + (591 - 358) of 704.
    assert!(close(i.local_pct(None).unwrap(), 100.0 * 520.0 / 704.0));
    assert!(close(i.local_pct(Some(0)).unwrap(), 100.0 * 287.0 / 417.0));
    // No RFD decisions in the server's namespace: no share.
    assert_eq!(i.rx_local_pct(None), None);

    let client = Interval::between(&zeroed(CLIENT), &table(CLIENT), Duration::from_secs(1));
    let client = client.unwrap();
    let rx = 100.0 * (1756.0 + 1275.0) / (1756.0 + 1275.0 + 1339.0 + 1406.0);
    assert!(close(client.rx_local_pct(None).unwrap(), rx));
    assert!(close(
        client.rx_local_pct(Some(1)).unwrap(),
        100.0 * 1275.0 / (1275.0 + 1406.0)
    ));
    assert_eq!(client.local_pct(None), None, "no accepts there");
    assert!(close(client.rate(None, "rfd_ports").unwrap(), 1178.0));
}

#[test]
fn zero_elapsed_gives_no_rates() {
    let (then, now) = (table(UNDER_LOAD), table(AFTER_LOAD));
    let i = Interval::between(&then, &now, Duration::ZERO).unwrap();
    assert_eq!(i.delta(None, "accepts"), Some(704));
    assert_eq!(i.rate(None, "accepts"), None);
    let report = Report::interval(ReportMeta::default(), &i, true);
    let v = serde_json::to_value(&report).unwrap();
    assert!(v["total"]["rates"].is_null());
    assert_eq!(v["total"]["deltas"]["accepts"], 704);
    // Shown as undefined, not as 0 or infinity.
    let row = text_row(&i, None);
    assert!(row.split_whitespace().nth(1) == Some(UNDEFINED), "{row}");
    assert!(!row.contains("inf") && !row.contains("NaN"), "{row}");
}

#[test]
fn counters_going_back_reset_the_baseline() {
    let (then, now) = (table(UNDER_LOAD), table(AFTER_LOAD));
    let reset = Interval::between(&now, &then, Duration::from_secs(1)).unwrap_err();
    assert!(reset.0.contains("went back"), "{reset:?}");
    assert!(reset.0.contains("cpu 0 accepts"), "{reset:?}");
    // A reload to zero and a first connection: accepts 0 -> 1 but local went back.
    let reloaded = UNDER_LOAD
        .lines()
        .map(|l| l.replacen("0 517 393 124", "0 518 0 0", 1))
        .collect::<Vec<_>>()
        .join("\n");
    let reset = Interval::between(&then, &table(&reloaded), Duration::from_secs(1));
    assert!(reset.unwrap_err().0.contains("cpu 0 local went back"));
    // A different table (another module version): columns changed.
    let reset = Interval::between(&table(OLDER), &then, Duration::from_secs(1)).unwrap_err();
    assert!(reset.0.contains("columns changed"), "{reset:?}");
    // A CPU more or less (another machine or module): the CPUs changed.
    let one_cpu: String = UNDER_LOAD
        .lines()
        .take(2)
        .map(|l| format!("{l}\n"))
        .collect();
    let reset = Interval::between(&then, &table(&one_cpu), Duration::from_secs(1)).unwrap_err();
    assert!(reset.0.contains("CPUs listed changed"), "{reset:?}");
    // The gauge may go down: no reset (cpu 0 queued 9 there, 0 in AFTER_LOAD).
    let high_queued = UNDER_LOAD.replacen("\n0 517 393 124 0", "\n0 517 393 124 9", 1);
    let i = Interval::between(&table(&high_queued), &now, Duration::from_secs(1));
    assert!(i.is_ok(), "queued went from 9 to 0: {i:?}");
}

#[test]
fn absent_columns_show_as_absent() {
    let (then, now) = (table(OLDER), table(OLDER));
    let i = Interval::between(&then, &now, Duration::from_secs(1)).unwrap();
    let heading: Vec<String> = text_heading()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let lines = text_report(&i, true);
    assert_eq!(lines.len(), 4, "heading, 2 CPUs, total: {lines:?}");
    for line in &lines[1..] {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells.len(), heading.len(), "{line}");
        let cell = |name: &str| cells[heading.iter().position(|h| h == name).unwrap()];
        assert_eq!(cell("accepts/s"), "0.0");
        // No accepts in the interval: the share is undefined, not 0.
        assert_eq!(cell("local%"), UNDEFINED);
        assert_eq!(cell("wk-local/s"), "0.0");
        for absent in [
            "steals/s",
            "wk-pulled/s",
            "wk-held/s",
            "queued",
            "rfd-ports/s",
            "rfd-fallbk/s",
            "steered/s",
            "rx-local%",
        ] {
            assert_eq!(cell(absent), ABSENT, "{absent} in {line}");
        }
    }
    let v = serde_json::to_value(Report::interval(ReportMeta::default(), &i, true)).unwrap();
    let deltas = v["total"]["deltas"].as_object().unwrap();
    let names: Vec<&str> = deltas.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["accepts", "local", "remote", "wake_fallback", "wake_local"]
    );
    assert!(v["total"]["counters"].get("queued").is_none());
    assert!(v["total"]["rx_local_pct"].is_null());
}

#[test]
fn json_reports_carry_counters_deltas_and_rates() {
    let (then, now) = (table(UNDER_LOAD), table(AFTER_LOAD));
    let i = Interval::between(&then, &now, Duration::from_millis(2500)).unwrap();
    let meta = ReportMeta {
        sample: 4,
        time: 1_795_938_904.5,
        netns: Some("fs-srv-1".into()),
        knobs: BTreeMap::from([("enabled".into(), "1".into())]),
        notes: vec![],
    };
    let line = serde_json::to_string(&Report::interval(meta.clone(), &i, true)).unwrap();
    assert!(!line.contains('\n'), "one line per report");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["sample"], 4);
    assert_eq!(v["elapsed_s"], 2.5);
    assert_eq!(v["netns"], "fs-srv-1");
    assert_eq!(v["loaded"], true);
    assert_eq!(v["knobs"]["enabled"], "1");
    assert!(v["reset"].is_null());
    assert_eq!(v["columns"].as_array().unwrap().len(), 16);
    let cpus = v["cpus"].as_array().unwrap();
    assert_eq!(cpus.len(), 2);
    assert_eq!(cpus[1]["cpu"], 1);
    assert_eq!(cpus[1]["counters"]["accepts"], 713);
    assert_eq!(cpus[1]["deltas"]["accepts"], 287);
    assert_eq!(v["total"]["counters"]["accepts"], 934 + 713);
    assert!(v["total"].get("cpu").is_none());
    for row in cpus.iter().chain([&v["total"]]) {
        let deltas = row["deltas"].as_object().unwrap();
        let rates = row["rates"].as_object().unwrap();
        assert_eq!(deltas.len(), 16 - 1, "all but the gauge");
        for (name, d) in deltas {
            let want = d.as_u64().unwrap() as f64 / 2.5;
            assert!(close(rates[name].as_f64().unwrap(), want), "{name}");
        }
        assert_eq!(row["counters"]["queued"], 0);
        assert!(row["deltas"].get("queued").is_none());
    }
    // --total: no CPU rows.
    let v = serde_json::to_value(Report::interval(meta.clone(), &i, false)).unwrap();
    assert!(v.get("cpus").is_none());
    // After a reset: absolute values, no deltas, the reason.
    let reset = Interval::between(&now, &then, Duration::from_secs(1)).unwrap_err();
    let v = serde_json::to_value(Report::absolute(meta.clone(), &then, true, Some(reset))).unwrap();
    assert!(v["reset"].as_str().unwrap().contains("went back"));
    assert!(v["elapsed_s"].is_null() && v["total"]["deltas"].is_null());
    assert_eq!(v["cpus"][0]["counters"]["accepts"], 517);
    // Unloaded: no table.
    let v = serde_json::to_value(Report::unloaded(meta)).unwrap();
    assert_eq!(v["loaded"], false);
    assert!(v["total"].is_null() && v.get("cpus").is_none());
    assert_eq!(v["columns"].as_array().unwrap().len(), 0);
}

#[test]
fn knobs_and_notes() {
    assert_eq!(parse_knob("rfd", "1\n").unwrap(), "1");
    assert_eq!(parse_knob("listen_ports", "80,443\n").unwrap(), "80,443");
    assert!(parse_knob("x", "1\u{1b}[2J\n").is_err());
    assert!(parse_knob("x", &"9".repeat(8193)).is_err());
    let on = BTreeMap::from([("enabled".into(), "1".into()), ("rfd".into(), "1".into())]);
    let off = BTreeMap::from([("enabled".into(), "0".into()), ("rfd".into(), "1".into())]);
    assert_eq!(disabled_note(&on), None);
    assert!(disabled_note(&off).unwrap().contains("enabled=0"));
    assert_eq!(knob_changes(&on, &on), Vec::<String>::new());
    assert_eq!(knob_changes(&on, &off), ["knob enabled changed: 1 -> 0"]);
    let fewer = BTreeMap::from([("enabled".into(), "1".into())]);
    assert_eq!(knob_changes(&on, &fewer), ["knob rfd changed: 1 -> (none)"]);
}

fn args(list: &[&str]) -> Result<Action, String> {
    parse_args(list.iter().map(OsString::from))
}

fn run(list: &[&str]) -> Args {
    match args(list).unwrap() {
        Action::Run(args) => args,
        other => panic!("{list:?}: {other:?}"),
    }
}

#[test]
fn parses_arguments() {
    let default = run(&[]);
    assert_eq!(
        default,
        Args {
            json: false,
            per_cpu: true,
            netns: None,
            interval: Duration::from_secs(1),
            count: None,
        }
    );
    let a = run(&["--json", "--total", "--netns", "fs-srv-1", "0.5", "3"]);
    assert!(a.json && !a.per_cpu);
    assert_eq!(a.netns.as_deref(), Some("fs-srv-1"));
    assert_eq!((a.interval, a.count), (Duration::from_millis(500), Some(3)));
    assert_eq!(run(&["--netns=blue", "2"]).netns.as_deref(), Some("blue"));
    assert!(run(&["--per-cpu", "--per-cpu"]).per_cpu);
    assert_eq!(run(&["86400", "1000000000"]).count, Some(1_000_000_000));
    assert_eq!(args(&["--help"]).unwrap(), Action::Help);
    assert_eq!(args(&["-V"]).unwrap(), Action::Version);
}

#[test]
fn rejects_bad_arguments() {
    for (list, why) in [
        (&["0"][..], "INTERVAL"),
        (&["0.05"], "INTERVAL"),
        (&["86401"], "INTERVAL"),
        (&["-1"], "invalid option"),
        (&["1e3"], "INTERVAL"),
        (&["inf"], "INTERVAL"),
        (&["NaN"], "INTERVAL"),
        (&["."], "INTERVAL"),
        (&[""], "INTERVAL"),
        (&["1", "0"], "COUNT"),
        (&["1", "1000000001"], "COUNT"),
        (&["1", "1.5"], "COUNT"),
        (&["1", "+3"], "COUNT"),
        (&["1", "99999999999999999999999"], "COUNT"),
        (&["1", "2", "3"], "unexpected argument"),
        (&["--per-cpu", "--total"], "exclude each other"),
        (&["--json", "--json"], "--json given twice"),
        (&["--netns", "a", "--netns", "b"], "--netns given twice"),
        (&["--netns"], "missing argument"),
        (&["--netns", ""], "--netns"),
        (&["--netns", "a/b"], "--netns"),
        (&["--netns", ".."], "--netns"),
        (&["--netns", &"n".repeat(256)], "--netns"),
        (&["--bogus"], "invalid option"),
        (&["-x"], "invalid option"),
    ] {
        let err = args(list).unwrap_err();
        assert!(err.contains(why), "{list:?}: {err:?} lacks {why:?}");
        assert!(!err.contains('\n'), "one line: {err:?}");
    }
}

#[test]
fn socket_inode_cache_columns() {
    // The columns the socket inode cache added (vfs_*), as the module writes them.
    let then = table("cpu accepts local remote vfs_reused vfs_new vfs_kept vfs_idle\n0 0 0 0 100 20 110 256\n1 0 0 0 0 0 0 0\n");
    let now = table("cpu accepts local remote vfs_reused vfs_new vfs_kept vfs_idle\n0 0 0 0 460 60 500 31\n1 0 0 0 50 0 40 2\n");
    let i = Interval::between(&then, &now, Duration::from_secs(2)).unwrap();
    assert!(close(i.rate(None, "vfs_reused").unwrap(), 410.0 / 2.0));
    // CPU 0: 360 reused of 400 created; all: 410 of 450.
    assert!(close(i.reuse_pct(Some(0)).unwrap(), 90.0));
    assert!(close(i.reuse_pct(None).unwrap(), 100.0 * 410.0 / 450.0));
    assert_eq!(i.delta(None, "vfs_idle"), None, "a gauge has no delta");
    // No socket created on a CPU in the interval: no share.
    let idle = Interval::between(&now, &now, Duration::from_secs(1)).unwrap();
    assert_eq!(idle.reuse_pct(Some(1)), None);
}
