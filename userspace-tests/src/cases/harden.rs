//! Hardening: generated knob writes (alone, concurrent, during unload and during netns
//! teardown) and a SYN flood at an in-scope listener (Documentation/reliability.md).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use fastsocket_logic::ports::{PortSet, WORDS};

use super::{fuzz, in_ns, Context, Ctx, TestResult};
use crate::client::LoopClient;
use crate::netns::ServerSide;
use crate::procfs;
use crate::server::{AcceptServer, BACKLOG};
use crate::{module, sys};

/// An integer knob of every namespace and its valid range (rust/netstate.rs, `KNOBS`).
struct IntKnob {
    name: &'static str,
    min: i64,
    max: i64,
}

const INT_KNOBS: [IntKnob; 8] = [
    IntKnob {
        name: procfs::ENABLED,
        min: 0,
        max: 1,
    },
    IntKnob {
        name: procfs::LISTEN_SCAN,
        min: 0,
        max: 4096,
    },
    IntKnob {
        name: procfs::LISTEN_HOLD_MS,
        min: 0,
        max: 1000,
    },
    IntKnob {
        name: procfs::LISTEN_PULL,
        min: 0,
        max: 1,
    },
    IntKnob {
        name: procfs::LISTEN_QUEUES,
        min: 0,
        max: 1,
    },
    IntKnob {
        name: procfs::RFD,
        min: 0,
        max: 1,
    },
    IntKnob {
        name: procfs::VFS,
        min: 0,
        max: 1,
    },
    IntKnob {
        name: procfs::RFD_PEER,
        min: 0,
        max: 1,
    },
];

/// Generated writes per knob: `exact` checked one by one against the expected outcome, then
/// `concurrent` by each of [`WRITERS`] writers while a reader reads.
#[derive(Clone, Copy)]
struct Writes {
    exact: u64,
    concurrent: u64,
}

/// 100,000 per knob under `make soak` (where [`fuzz::SOAK_MINUTES`] is set).
const SOAK_WRITES: Writes = Writes {
    exact: 60_000,
    concurrent: 20_000,
};
/// A fifth of that in CI's `make test`: the whole took about 290 s of a 2,400 s CI boot.
const CI_WRITES: Writes = Writes {
    exact: 12_000,
    concurrent: 4_000,
};
const WRITERS: usize = 2;

/// Unloads and reloads of the module while threads write the knobs and read its files.
const UNLOAD_CYCLES: usize = 5;
/// Namespaces torn down while threads write their knobs and read their files.
const TEARDOWNS: usize = 3;
/// How long one netns teardown may take to unregister the namespace's knobs.
const TEARDOWN_LIMIT: Duration = Duration::from_secs(120);
/// The longest text knob value (rust/logic/ports.rs, `MAX_TEXT`).
const MAX_TEXT: usize = fastsocket_logic::ports::MAX_TEXT;

/// xorshift64*: a reproducible stream of generated inputs (the seed is printed).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, max_len: u64) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// What a generated write must do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// Succeed, and the knob then reads back as this text.
    Value(String),
    /// Fail with EINVAL and leave the value as it was.
    Einval,
    /// Succeed or fail with EINVAL, and leave the value as it was either way.
    Unchanged,
    /// Succeed or fail with EINVAL; the value read back must be a valid one.
    Any,
}

/// One generated write: the bytes, the file offset and what it must do.
struct Write {
    bytes: Vec<u8>,
    offset: u64,
    expect: Expect,
}

impl Write {
    fn at_start(bytes: Vec<u8>, expect: Expect) -> Write {
        Write {
            bytes,
            offset: 0,
            expect,
        }
    }
}

/// A generated write to an integer knob with range `min..=max`.
fn int_write(rng: &mut Rng, min: i64, max: i64) -> Write {
    let span = (max - min + 1) as u64;
    let valid = min + rng.below(span) as i64;
    match rng.below(8) {
        0 | 1 => {
            let text = match rng.below(3) {
                0 => format!("{valid}"),
                1 => format!("{valid}\n"),
                _ => format!(" \t{valid}\n"),
            };
            Write::at_start(text.into_bytes(), Expect::Value(valid.to_string()))
        }
        2 => {
            let out = if rng.below(2) == 0 {
                max + 1 + rng.below(1 << 40) as i64
            } else {
                min - 1 - rng.below(1 << 40) as i64
            };
            Write::at_start(out.to_string().into_bytes(), Expect::Einval)
        }
        3 => {
            let digits = 19 + rng.below(30) as usize;
            let sign = if rng.below(2) == 0 { "" } else { "-" };
            let text = format!("{sign}{}", "9".repeat(digits));
            Write::at_start(text.into_bytes(), Expect::Einval)
        }
        4 => Write::at_start(rng.bytes(48), Expect::Any),
        5 => {
            let mut bytes = valid.to_string().into_bytes();
            bytes.push(0);
            bytes.extend(rng.bytes(8));
            Write::at_start(bytes, Expect::Any)
        }
        6 => Write {
            bytes: valid.to_string().into_bytes(),
            offset: 1 + rng.below(16),
            expect: Expect::Unchanged,
        },
        _ => match rng.below(3) {
            0 => Write::at_start(Vec::new(), Expect::Unchanged),
            1 => Write::at_start(format!("{valid} {valid}").into_bytes(), Expect::Any),
            _ => Write::at_start(format!("{valid}x").into_bytes(), Expect::Any),
        },
    }
}

/// A generated port list item, valid or not.
fn port_item(rng: &mut Rng) -> String {
    let port = |rng: &mut Rng| match rng.below(10) {
        0 => rng.below(70_000).to_string(),
        1 => "0".to_owned(),
        _ => (1 + rng.below(65_535)).to_string(),
    };
    match rng.below(12) {
        0 => "all".to_owned(),
        1 => String::from_utf8_lossy(&rng.bytes(6)).into_owned(),
        2..=5 => {
            let (a, b) = (port(rng), port(rng));
            format!("{a}-{b}")
        }
        6 => format!(" {} ", port(rng)),
        _ => port(rng),
    }
}

/// A generated write to `listen_ports`; the expected outcome comes from the module's own
/// parser (rust/logic, tested exhaustively on the host): this checks the knob's kernel side.
fn ports_write(rng: &mut Rng, model: &PortSet, scratch: &mut [u64]) -> Write {
    let bytes = match rng.below(10) {
        0 => rng.bytes(64),
        1 => {
            // Thousands of entries: over the bound, or just under it.
            let n = if rng.below(2) == 0 { 4000 } else { 900 };
            let list: Vec<String> = (1..=n).map(|p| p.to_string()).collect();
            list.join(",").into_bytes()
        }
        2 => {
            let mut bytes = port_item(rng).into_bytes();
            bytes.push(0);
            bytes.extend(port_item(rng).into_bytes());
            bytes
        }
        3 => {
            return Write {
                bytes: port_item(rng).into_bytes(),
                offset: 1 + rng.below(16),
                expect: Expect::Einval,
            }
        }
        4 => Vec::new(),
        _ => {
            let items: Vec<String> = (0..1 + rng.below(20)).map(|_| port_item(rng)).collect();
            let mut text = items.join(",");
            if rng.below(2) == 0 {
                text.push('\n');
            }
            text.into_bytes()
        }
    };
    let expect = expected_ports(&bytes, model, scratch);
    Write::at_start(bytes, expect)
}

/// What the module does with `bytes` written to `listen_ports` at offset 0.
fn expected_ports(bytes: &[u8], model: &PortSet, scratch: &mut [u64]) -> Expect {
    if bytes.len() > MAX_TEXT {
        return Expect::Einval;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Expect::Einval;
    };
    match model.store(text.trim(), scratch) {
        Ok(()) => Expect::Value(show_ports(model)),
        Err(_) => Expect::Einval,
    }
}

fn show_ports(set: &PortSet) -> String {
    let mut text = String::new();
    set.write(&mut text).expect("formatting into a String");
    text
}

/// Whether `text`, read back from knob `name`, is a valid value of it.
fn valid_value(name: &str, text: &str) -> bool {
    let text = text.trim_end_matches('\n');
    match INT_KNOBS.iter().find(|k| k.name == name) {
        Some(k) => text
            .parse::<i64>()
            .is_ok_and(|v| (k.min..=k.max).contains(&v)),
        None => fastsocket_logic::ports::parse(text, |_| ()).is_ok(),
    }
}

fn open_knob(name: &str) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(procfs::knob_path(name))
}

fn read_at_start(file: &File) -> io::Result<String> {
    let mut buf = vec![0u8; 2 * MAX_TEXT];
    let n = file.read_at(&mut buf, 0)?;
    buf.truncate(n);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Makes `writes` generated writes to knob `name` one at a time, checking each outcome and
/// the value read back.
fn exact_writes(name: &str, seed: u64, writes: u64) -> TestResult {
    let file = open_knob(name).context(format!("opening {name}"))?;
    let mut rng = Rng::new(seed);
    let ports = name == procfs::LISTEN_PORTS;
    let model = PortSet::new(true);
    let mut scratch = vec![0u64; WORDS];
    let mut before = read_at_start(&file).context(format!("reading {name}"))?;
    if ports {
        model
            .store(before.trim(), &mut scratch)
            .map_err(|e| format!("{name} reads {before:?}, which its parser refuses: {e:?}"))?;
    }
    for i in 0..writes {
        let w = match INT_KNOBS.iter().find(|k| k.name == name) {
            Some(k) => int_write(&mut rng, k.min, k.max),
            None => ports_write(&mut rng, &model, &mut scratch),
        };
        let res = file.write_at(&w.bytes, w.offset);
        let after = read_at_start(&file).context(format!("reading {name}"))?;
        let what = || format!("{name} write {i} of {:?} at offset {}", w.bytes, w.offset);
        ensure!(
            valid_value(name, &after),
            "{}: the knob then read {after:?}, not a valid value",
            what()
        );
        match (&w.expect, &res) {
            (Expect::Value(v), Ok(_)) => ensure!(
                after.trim_end_matches('\n') == v,
                "{}: read back {after:?}, expected {v:?}",
                what()
            ),
            (Expect::Einval, Err(e)) if errno(e) == libc::EINVAL => {}
            (Expect::Unchanged | Expect::Any, Ok(_)) => {}
            (Expect::Unchanged | Expect::Any, Err(e)) if errno(e) == libc::EINVAL => {}
            _ => return Err(format!("{}: got {res:?}, expected {:?}", what(), w.expect)),
        }
        let changed = after != before;
        ensure!(
            !changed || (res.is_ok() && w.expect != Expect::Unchanged),
            "{}: returned {res:?} but changed the value from {before:?} to {after:?}",
            what()
        );
        before = after;
    }
    Ok(())
}

/// [`WRITERS`] threads make generated writes to knob `name` while another reads it: every
/// write succeeds or fails with a clear error, every read is a valid value.
fn concurrent_writes(name: &'static str, seed: u64, count: u64) -> TestResult<u64> {
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (done, reads) = (done.clone(), reads.clone());
        thread::spawn(move || -> TestResult {
            let file = open_knob(name).context(format!("opening {name}"))?;
            while !done.load(Ordering::Relaxed) {
                let text = read_at_start(&file).context(format!("reading {name}"))?;
                ensure!(
                    valid_value(name, &text),
                    "{name} read {text:?} during concurrent writes"
                );
                reads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    let writers: Vec<_> = (0..WRITERS as u64)
        .map(|w| {
            thread::spawn(move || -> TestResult {
                let file = open_knob(name).context(format!("opening {name}"))?;
                let mut rng = Rng::new(seed ^ (w + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let model = PortSet::new(true);
                let mut scratch = vec![0u64; WORDS];
                for _ in 0..count {
                    let w = match INT_KNOBS.iter().find(|k| k.name == name) {
                        Some(k) => int_write(&mut rng, k.min, k.max),
                        None => ports_write(&mut rng, &model, &mut scratch),
                    };
                    match file.write_at(&w.bytes, w.offset) {
                        Ok(_) => {}
                        // A text knob refuses a write while another one is being stored.
                        Err(e) if refused(&e, name) => {}
                        Err(e) => return Err(format!("{name}: write of {:?}: {e}", w.bytes)),
                    }
                }
                Ok(())
            })
        })
        .collect();
    let mut result = Ok(());
    for writer in writers {
        let r = writer
            .join()
            .map_err(|_| format!("{name} writer panicked"))?;
        result = result.and(r);
    }
    done.store(true, Ordering::Relaxed);
    let r = reader
        .join()
        .map_err(|_| format!("{name} reader panicked"))?;
    result.and(r)?;
    Ok(reads.load(Ordering::Relaxed))
}

/// Every file of the module in one namespace: its knobs and its two /proc/net files.
fn module_files() -> Vec<String> {
    let mut files: Vec<String> = INT_KNOBS
        .iter()
        .map(|k| procfs::knob_path(k.name))
        .collect();
    files.push(procfs::knob_path(procfs::LISTEN_PORTS));
    files.push(procfs::COUNTERS.to_owned());
    files.push(procfs::HOOKS.to_owned());
    files
}

/// What a thread hammering the module's files while they go away counted.
#[derive(Default, Debug)]
struct Hammered {
    ops: u64,
    gone: u64,
}

/// Errors a file that is going away (unload, netns teardown) may give.
fn going_away(e: &io::Error) -> bool {
    matches!(errno(e), libc::ENOENT | libc::EIO)
}

/// Errors a write to knob file `path` may give besides [`going_away`]: a bad value, or for
/// the text knob `listen_ports` another write of it in progress (integer knobs never busy).
fn refused(e: &io::Error, path: &str) -> bool {
    errno(e) == libc::EINVAL || (errno(e) == libc::EBUSY && path.ends_with(procfs::LISTEN_PORTS))
}

/// Until `stop`: opens, writes (knobs) or reads (all) a random file of the module, closes
/// it. Only `going_away` errors and EINVAL for bad values are allowed.
fn hammer_reopen(stop: Arc<AtomicBool>, seed: u64) -> TestResult<Hammered> {
    let files = module_files();
    let mut rng = Rng::new(seed);
    let mut seen = Hammered::default();
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(Ordering::Relaxed) {
        let path = &files[rng.below(files.len() as u64) as usize];
        let knob = path.starts_with(procfs::KNOB_DIR);
        let file = match OpenOptions::new().read(true).write(knob).open(path) {
            Ok(f) => f,
            Err(e) if going_away(&e) => {
                seen.gone += 1;
                continue;
            }
            Err(e) => return Err(format!("opening {path}: {e}")),
        };
        let res = if knob && rng.below(2) == 0 {
            let value = if rng.below(2) == 0 { "1" } else { "70000" };
            match file.write_at(value.as_bytes(), 0) {
                Err(e) if refused(&e, path) => Ok(0),
                other => other,
            }
        } else {
            (&file).read(&mut buf)
        };
        match res {
            Ok(_) => seen.ops += 1,
            Err(e) if going_away(&e) => seen.gone += 1,
            Err(e) => return Err(format!("{path}: {e}")),
        }
    }
    Ok(seen)
}

/// Until `stop`: reads and writes files opened before they start going away.
fn hammer_held(files: Vec<(String, File)>, stop: Arc<AtomicBool>) -> TestResult<Hammered> {
    let mut seen = Hammered::default();
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(Ordering::Relaxed) {
        for (path, file) in &files {
            let res = if path.starts_with(procfs::KNOB_DIR) {
                match file.write_at(b"1", 0) {
                    Err(e) if refused(&e, path) => Ok(0),
                    other => other,
                }
                .and_then(|_| file.read_at(&mut buf, 0))
            } else {
                file.read_at(&mut buf, 0)
            };
            match res {
                Ok(_) => seen.ops += 1,
                Err(e) if going_away(&e) => seen.gone += 1,
                Err(e) => return Err(format!("held {path}: {e}")),
            }
        }
    }
    Ok(seen)
}

fn open_all(files: &[String]) -> TestResult<Vec<(String, File)>> {
    files
        .iter()
        .map(|path| {
            let knob = path.starts_with(procfs::KNOB_DIR);
            let file = OpenOptions::new()
                .read(true)
                .write(knob)
                .open(path)
                .context(format!("opening {path}"))?;
            Ok((path.clone(), file))
        })
        .collect()
}

fn join<T>(handle: thread::JoinHandle<TestResult<T>>, what: &str) -> TestResult<T> {
    handle.join().map_err(|_| format!("{what} panicked"))?
}

/// Unloads and reloads the module while threads write its knobs and read its files, some
/// reopening them, one holding them open across the unload.
fn writes_during_unload(ctx: &Ctx, seed: u64) -> TestResult {
    let mut totals = (Hammered::default(), Hammered::default());
    for cycle in 0..UNLOAD_CYCLES {
        let held = open_all(&module_files())?;
        let stop = Arc::new(AtomicBool::new(false));
        let reopen: Vec<_> = (0..2u64)
            .map(|t| {
                let stop = stop.clone();
                thread::spawn(move || hammer_reopen(stop, seed ^ (cycle as u64 * 2 + t + 1)))
            })
            .collect();
        let holder = {
            let stop = stop.clone();
            thread::spawn(move || hammer_held(held, stop))
        };
        thread::sleep(Duration::from_millis(100));
        let unloaded = module::rmmod();
        thread::sleep(Duration::from_millis(50));
        let loaded = ctx.insmod();
        thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        for (i, h) in reopen.into_iter().enumerate() {
            let seen = join(h, "reopening hammer")?;
            if i == 0 {
                totals.0.ops += seen.ops;
                totals.0.gone += seen.gone;
            }
        }
        let seen = join(holder, "holding hammer")?;
        totals.1.ops += seen.ops;
        totals.1.gone += seen.gone;
        unloaded.context(format!("cycle {cycle}: rmmod with the files in use"))?;
        loaded.context(format!("cycle {cycle}: insmod"))?;
        ensure!(
            seen.gone > 0,
            "cycle {cycle}: files held open across the unload never failed ({} ops)",
            seen.ops
        );
    }
    info!(
        "during {UNLOAD_CYCLES} unloads: one reopening thread {} ops, {} gone; held files {} ops, {} gone",
        totals.0.ops, totals.0.gone, totals.1.ops, totals.1.gone
    );
    Ok(())
}

/// Tears namespaces down while threads outside them write their knobs (files opened inside
/// them) and read their /proc/net files through a process inside them.
fn writes_during_teardown(seed: u64) -> TestResult {
    for round in 0..TEARDOWNS {
        let ns = format!("fs-fuzz-{round}");
        // A namespace of that name left over from an earlier run.
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        let status = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .context("ip netns add")?;
        ensure!(status.success(), "ip netns add {ns}: {status}");
        // Knob files opened inside the namespace do not keep it alive.
        let knobs: Vec<String> = module_files()
            .into_iter()
            .filter(|p| p.starts_with(procfs::KNOB_DIR))
            .collect();
        let held = in_ns(&ns, || open_all(&knobs))?;
        let probe = in_ns(&ns, || {
            open_knob(procfs::ENABLED).context("opening a probe knob")
        })?;
        // A process inside it, whose /proc/<pid>/net files other threads open and read.
        let mut sleeper = Command::new("ip")
            .args(["netns", "exec", &ns, "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .context("starting a process in the namespace")?;
        let pid = sleeper.id();
        let proc_files = [
            format!("/proc/{pid}/net/fastsocket"),
            format!("/proc/{pid}/net/fastsocket_hooks"),
        ];
        let stop = Arc::new(AtomicBool::new(false));
        let holder = {
            let stop = stop.clone();
            thread::spawn(move || hammer_held(held, stop))
        };
        let reader = {
            let stop = stop.clone();
            let mut rng = Rng::new(seed ^ round as u64);
            thread::spawn(move || -> TestResult<Hammered> {
                let mut seen = Hammered::default();
                let mut buf = vec![0u8; 64 << 10];
                while !stop.load(Ordering::Relaxed) {
                    let path = &proc_files[rng.below(2) as usize];
                    match File::open(path).and_then(|mut f| f.read(&mut buf)) {
                        Ok(_) => seen.ops += 1,
                        Err(e) if going_away(&e) || errno(&e) == libc::ESRCH => seen.gone += 1,
                        Err(e) => return Err(format!("{path}: {e}")),
                    }
                }
                Ok(seen)
            })
        };
        thread::sleep(Duration::from_millis(200));
        // The namespace goes when its last process and its name are gone.
        sleeper
            .kill()
            .context("killing the process in the namespace")?;
        sleeper.wait().context("reaping it")?;
        let status = Command::new("ip")
            .args(["netns", "del", &ns])
            .status()
            .context("ip netns del")?;
        ensure!(status.success(), "ip netns del {ns}: {status}");
        // Wait for the knobs to go (the namespace's exit runs in a workqueue): an open knob
        // file then fails with ENOENT. The wait is for that event, bounded generously.
        let start = Instant::now();
        let gone = loop {
            match probe.read_at(&mut [0u8; 16], 0) {
                Err(e) if going_away(&e) => break Ok(()),
                Err(e) => break Err(format!("round {round}: probe knob: {e}")),
                Ok(_) if start.elapsed() > TEARDOWN_LIMIT => {
                    break Err(format!(
                    "round {round}: the namespace's knobs were still there {}s after its teardown",
                    TEARDOWN_LIMIT.as_secs()
                ))
                }
                Ok(_) => thread::sleep(Duration::from_millis(20)),
            }
        };
        stop.store(true, Ordering::Relaxed);
        let (h, r) = (join(holder, "knob hammer"), join(reader, "proc reader"));
        gone?;
        let (h, r) = (h?, r?);
        info!(
            "netns teardown {round}: held knobs {} ops, {} gone; /proc/<pid>/net reads {} ops, {} gone",
            h.ops, h.gone, r.ops, r.gone
        );
    }
    Ok(())
}

pub fn knob_fuzz(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    // FASTSOCKET_KNOB_SEED=<printed seed> repeats a run's generated writes.
    let seed = match std::env::var("FASTSOCKET_KNOB_SEED") {
        Ok(text) => u64::from_str_radix(text.trim().trim_start_matches("0x"), 16)
            .map_err(|e| format!("FASTSOCKET_KNOB_SEED={text:?}: {e}"))?,
        Err(_) => sys::monotonic_ns(),
    };
    info!("seed {seed:#x} (FASTSOCKET_KNOB_SEED={seed:#x} repeats it)");
    let writes = if fuzz::is_soak()? {
        SOAK_WRITES
    } else {
        CI_WRITES
    };
    let start = Instant::now();
    let names: Vec<&'static str> = INT_KNOBS
        .iter()
        .map(|k| k.name)
        .chain([procfs::LISTEN_PORTS])
        .collect();
    for (i, name) in names.iter().enumerate() {
        exact_writes(name, seed ^ i as u64, writes.exact)?;
        let reads = concurrent_writes(name, seed ^ (i as u64) << 8, writes.concurrent)?;
        let concurrent = WRITERS as u64 * writes.concurrent;
        info!(
            "{name}: {} generated writes ({} checked one by one, {concurrent} concurrent), {reads} concurrent reads",
            writes.exact + concurrent,
            writes.exact
        );
    }
    info!("{:.1}s of generated writes", start.elapsed().as_secs_f64());
    writes_during_unload(ctx, seed)?;
    writes_during_teardown(seed)?;
    // A fresh load: every knob is back at its default.
    module::rmmod()?;
    ctx.insmod()
}

/// hping3 (Debian's), the SYN flood's source.
const HPING3: &str = "/usr/sbin/hping3";
/// SYNs of one flood, and the pause between two (microseconds): about 6 s of flood.
const FLOOD_SYNS: u64 = 6000;
const FLOOD_INTERVAL_US: u64 = 1000;
/// The spoofed source of the flood: an address of the client's link that nobody answers,
/// so the listener's half-open requests stay (SYN-ACKs to it go unanswered).
const FLOOD_SOURCE_HOST: u8 = 200;
/// How long one flood may take (hping3 under emulation).
const FLOOD_LIMIT: Duration = Duration::from_secs(240);

/// What one arm of [`syn_flood`] saw.
struct FloodArm {
    served: usize,
    syns: u64,
    cookies_sent: u64,
    cookies_recv: u64,
    max_queued: u64,
}

/// The `N packets transmitted` figure of hping3's statistics (older versions spell it
/// `tramitted`).
fn hping3_sent(output: &str) -> Option<u64> {
    output.lines().find_map(|line| {
        let (n, rest) = line.trim().split_once(' ')?;
        (rest.starts_with("packets transmitted") || rest.starts_with("packets tramitted"))
            .then(|| n.parse().ok())
            .flatten()
    })
}

/// One arm: an in-scope listener in a fresh server namespace, syncookies on, a SYN flood
/// from a spoofed address while a client makes requests; every request must be answered.
fn flood_arm(ctx: &mut Ctx, module_loaded: bool) -> TestResult<FloodArm> {
    let pair = ctx.netns_pair(ServerSide::Named)?;
    let srv = pair.server_ns().ok_or("no server namespace")?.to_owned();
    in_ns(&srv, || {
        std::fs::write("/proc/sys/net/ipv4/tcp_syncookies", b"1").context("enabling syncookies")
    })?;
    let ip = pair.server_ip(false);
    let server = AcceptServer::start(ip, &ctx.cpus, Some(&srv))?;
    let port = server.addr().port();
    let IpAddr::V4(client) = pair.client_ip(false) else {
        return Err("the client address is not IPv4".into());
    };
    let [a, b, c, _] = client.octets();
    let spoofed = format!("{a}.{b}.{c}.{FLOOD_SOURCE_HOST}");
    let netstat = |srv: &str| {
        in_ns(srv, || {
            procfs::read_netstat("TcpExt", &["SyncookiesSent", "SyncookiesRecv"])
        })
    };
    let before = netstat(&srv)?;
    let counted = module_loaded
        .then(|| in_ns(&srv, procfs::read_counters))
        .transpose()?;
    let client = LoopClient::start(pair.client_ns(), SocketAddr::new(ip, server.addr().port()))?;
    let mut flood = Command::new("ip")
        .args(["netns", "exec", pair.client_ns(), HPING3, "-q", "-S"])
        .args(["-p", &port.to_string(), "-a", &spoofed])
        .args(["-i", &format!("u{FLOOD_INTERVAL_US}")])
        .args(["-c", &FLOOD_SYNS.to_string(), &ip.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context(format!("starting {HPING3}"))?;
    // The module's state stays bounded: what its per-CPU queues hold never exceeds the
    // listener's backlog.
    let start = Instant::now();
    let mut max_queued = 0;
    let status = loop {
        if module_loaded {
            let queued = in_ns(&srv, procfs::read_counters)?.total().queued;
            max_queued = max_queued.max(queued);
        }
        match flood.try_wait().context("waiting for hping3")? {
            Some(status) => break Some(status),
            None if start.elapsed() > FLOOD_LIMIT => break None,
            None => thread::sleep(Duration::from_millis(100)),
        }
    };
    if status.is_none() {
        let _ = flood.kill();
    }
    let out = flood.wait_with_output().context("reaping hping3")?;
    let stats = client.stop()?;
    let after = netstat(&srv)?;
    server.stop()?;
    ensure!(
        status.is_some(),
        "hping3 did not finish its {FLOOD_SYNS} SYNs in {}s",
        FLOOD_LIMIT.as_secs()
    );
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    let syns = hping3_sent(&text).ok_or(format!("no statistics in hping3's output: {text}"))?;
    ensure!(
        syns == FLOOD_SYNS,
        "hping3 sent {syns} SYNs, not {FLOOD_SYNS}: {text}"
    );
    ensure!(
        stats.failures == 0,
        "{} of the legitimate requests failed during the flood: {:?}",
        stats.failures,
        stats.errors
    );
    ensure!(
        max_queued <= BACKLOG as u64 + 1,
        "the per-CPU queues held {max_queued} connections, over the backlog {BACKLOG}"
    );
    // The listener was in the module's scope (else the bound above holds trivially): it
    // counted an accept for every request answered.
    if let Some(counted) = counted {
        let accepts = in_ns(&srv, procfs::read_counters)?
            .since(&counted)?
            .total()
            .accepts;
        ensure!(
            accepts >= stats.answered() as u64,
            "the module counted {accepts} accepts for {} answered requests: the listener was \
             not in its scope",
            stats.answered()
        );
    }
    Ok(FloodArm {
        served: stats.answered(),
        syns,
        cookies_sent: after[0] - before[0],
        cookies_recv: after[1] - before[1],
        max_queued,
    })
}

/// A SYN flood at an in-scope listener with syncookies on, stock (module not loaded) then
/// with the module: legitimate clients are served in both, the flood really overflowed the
/// SYN queue (cookies sent), the module's queues stay within the backlog, no splat.
pub fn syn_flood(ctx: &mut Ctx) -> TestResult {
    if module::is_loaded() {
        module::rmmod()?;
    }
    let stock = flood_arm(ctx, false).context("stock arm")?;
    ctx.insmod()?;
    let with = flood_arm(ctx, true).context("module arm")?;
    for (arm, r) in [("stock", &stock), ("module", &with)] {
        info!(
            "{arm}: {} SYNs flooded, {} legitimate requests served, 0 failed; syncookies sent {}, received {}; max queued {}",
            r.syns, r.served, r.cookies_sent, r.cookies_recv, r.max_queued
        );
        ensure!(
            r.cookies_sent > 0,
            "{arm}: no syncookie was sent: the flood never filled the SYN queue"
        );
        ensure!(r.served > 0, "{arm}: no legitimate request was served");
    }
    Ok(())
}

/// What a container (an unprivileged user's own user + network namespace, `unshare -Urn`)
/// does with the knobs: its own namespace's it reads and changes; a descriptor of the initial
/// namespace's knob, opened by root and inherited, gets EPERM on write.
const CONTAINER_SCRIPT: &str = r#"
set -eu
k=/proc/sys/net/fastsocket
echo 0 >$k/enabled
test "$(cat $k/enabled)" = 0
echo 8080,9000-9010 >$k/listen_ports
test "$(cat $k/listen_ports)" = 8080,9000-9010
head -1 /proc/net/fastsocket >/dev/null
python3 -c '
import errno, os
try:
    os.write(3, b"0")
    print("inherited: wrote")
except OSError as e:
    print("inherited:", errno.errorcode[e.errno])
'
"#;

pub fn container_knobs(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let _enabled = super::KnobGuard::enabled("1")?;
    let _ports = super::KnobGuard::listen_ports("all")?;
    let _clone = super::regress::UnprivilegedUserns::allow()?;
    // The outer shell (root, initial namespace) opens fd 3 on the initial namespace's knob,
    // then becomes nobody in a user + network namespace of its own.
    let out = Command::new("sh")
        .args([
            "-c",
            "exec 3>/proc/sys/net/fastsocket/enabled; exec setpriv --reuid=65534 \
             --regid=65534 --clear-groups unshare -Urn sh -c \"$0\"",
            CONTAINER_SCRIPT,
        ])
        .stdin(Stdio::null())
        .output()
        .context("running the container")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "the container's own knobs: {} ({}{})",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        stdout.trim() == "inherited: EPERM",
        "writing the initial namespace's knob from the container: {stdout:?}, expected EPERM"
    );
    let (enabled, ports) = (
        procfs::read_enabled()?,
        procfs::read_knob(procfs::LISTEN_PORTS)?,
    );
    ensure!(
        enabled == 1 && ports.trim() == "all",
        "the container changed the initial namespace: enabled={enabled} listen_ports={ports:?}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hping3_statistics() {
        let new = "--- 10.77.1.1 hping statistic ---\n6000 packets transmitted, 0 packets received, 100% packet loss\n";
        let old = "--- x hping statistic ---\n12 packets tramitted, 0 packets received, 100% packet loss\n";
        assert_eq!(hping3_sent(new), Some(6000));
        assert_eq!(hping3_sent(old), Some(12));
        assert_eq!(
            hping3_sent("HPING 10.77.1.1 (fsv1b 10.77.1.1): S set"),
            None
        );
    }

    #[test]
    fn int_writes_expect_what_proc_dointvec_does() {
        let mut rng = Rng::new(7);
        for _ in 0..10_000 {
            let w = int_write(&mut rng, 0, 4096);
            let text = String::from_utf8_lossy(&w.bytes);
            match &w.expect {
                Expect::Value(v) => {
                    assert_eq!(w.offset, 0);
                    assert_eq!(text.trim(), v);
                    assert!((0..=4096).contains(&v.parse::<i64>().unwrap()));
                }
                Expect::Einval => {
                    let n: Result<i64, _> = text.parse();
                    assert!(n.map_or(true, |n| !(0..=4096).contains(&n)), "{text:?}");
                }
                Expect::Unchanged => assert!(w.offset > 0 || w.bytes.is_empty()),
                Expect::Any => {}
            }
        }
    }

    #[test]
    fn port_list_outcomes_follow_the_parser() {
        let model = PortSet::new(true);
        let mut scratch = vec![0u64; WORDS];
        let long = vec![b'1'; MAX_TEXT + 1];
        assert_eq!(expected_ports(&long, &model, &mut scratch), Expect::Einval);
        assert_eq!(
            expected_ports(b"\xff80", &model, &mut scratch),
            Expect::Einval
        );
        assert_eq!(
            expected_ports(b" 80, 8000-8001\n", &model, &mut scratch),
            Expect::Value("80,8000-8001".into())
        );
        assert_eq!(expected_ports(b"0", &model, &mut scratch), Expect::Einval);
        // A refused write leaves the model as it was.
        assert_eq!(show_ports(&model), "80,8000-8001");
        assert!(valid_value(procfs::LISTEN_PORTS, "80,8000-8001\n"));
        assert!(!valid_value(procfs::LISTEN_SCAN, "4097\n"));
        assert!(valid_value(procfs::LISTEN_SCAN, "4096\n"));
    }
}
