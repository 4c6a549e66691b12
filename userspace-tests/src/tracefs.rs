//! Kernel tracepoints through tracefs: a tracing instance of our own (its own ring buffer,
//! clock and event settings, so that nothing global changes), and the parsing of what it
//! recorded, printed with the `fields` option (every field as `name=0x<hex> (<decimal>)`,
//! pointers included, which the events' own formats may leave out).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// A tracing instance (`instances/<name>`), removed on drop.
pub struct Instance {
    dir: PathBuf,
    /// Events enabled, disabled again on drop.
    enabled: Vec<String>,
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

/// Mounts tracefs on [`TRACEFS`] unless it is there.
fn mount_tracefs() -> Result<(), String> {
    if Path::new(TRACEFS).join("instances").exists() {
        return Ok(());
    }
    crate::sys::mount("tracefs", TRACEFS).map_err(|e| format!("mount tracefs on {TRACEFS}: {e}"))
}

impl Instance {
    /// Creates instance `name` (mounting tracefs if needed) with `buffer_kb` KiB of ring
    /// buffer per CPU, the `global` clock (events of different CPUs are ordered by time), the
    /// `fields` output and no comm recording.
    pub fn create(name: &str, buffer_kb: u64) -> Result<Instance, String> {
        mount_tracefs()?;
        let dir = Path::new(TRACEFS).join("instances").join(name);
        if dir.exists() {
            // Left over by an earlier run that was killed.
            fs::remove_dir(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
        }
        // No comm recording (nothing here reads command names). With it on, every enable and
        // disable of an event also attaches and detaches probes on sched_switch and
        // sched_wakeup, live-patching those hot sites while the other vCPUs run them (under
        // QEMU TCG one such patch ended a bench run with "Oops: int3", 2026-12-06). An
        // instance takes the option from the top level when it is created.
        write(&Path::new(TRACEFS).join("options/record-cmd"), "0")?;
        fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let instance = Instance {
            dir,
            enabled: Vec::new(),
        };
        write(&instance.dir.join("trace_clock"), "global")?;
        write(&instance.dir.join("buffer_size_kb"), &buffer_kb.to_string())?;
        write(&instance.dir.join("options/fields"), "1")?;
        Ok(instance)
    }

    /// Records `event` (`system/name`) where `filter` holds (empty: always).
    pub fn enable(&mut self, event: &str, filter: &str) -> Result<(), String> {
        let dir = self.dir.join("events").join(event);
        if !filter.is_empty() {
            write(&dir.join("filter"), filter)?;
        }
        write(&dir.join("enable"), "1")?;
        self.enabled.push(event.to_owned());
        Ok(())
    }

    /// Stops recording every event enabled so far.
    pub fn disable_all(&mut self) -> Result<(), String> {
        for event in std::mem::take(&mut self.enabled) {
            write(&self.dir.join("events").join(&event).join("enable"), "0")?;
        }
        Ok(())
    }

    /// Empties the ring buffer.
    pub fn clear(&self) -> Result<(), String> {
        write(&self.dir.join("trace"), "")
    }

    /// What the ring buffer holds, as text.
    pub fn read(&self) -> Result<String, String> {
        let path = self.dir.join("trace");
        fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))
    }

    /// What the ring buffer holds, as text, and how many events it holds; an error if it
    /// overflowed (it lost events).
    pub fn read_whole(&self) -> Result<(String, u64), String> {
        let text = self.read()?;
        let (kept, written) =
            parse_entries(&text).ok_or("the trace has no entries-in-buffer header")?;
        if kept != written {
            return Err(format!(
                "the trace buffer overflowed: {kept} of {written} events kept"
            ));
        }
        Ok((text, written))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Err(e) = self.disable_all() {
            eprintln!("fastsocket-tests: cleanup: {e}");
        }
        if let Err(e) = fs::remove_dir(&self.dir) {
            eprintln!(
                "fastsocket-tests: cleanup: removing {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// The `# entries-in-buffer/entries-written: 97463/225087   #P:2` header of a trace: events
/// kept and events recorded (more were recorded than kept when the buffer overflowed).
pub fn parse_entries(trace: &str) -> Option<(u64, u64)> {
    let line = trace
        .lines()
        .find_map(|l| l.strip_prefix("# entries-in-buffer/entries-written:"))?;
    let (kept, rest) = line.trim().split_once('/')?;
    let written = rest.split_whitespace().next()?;
    Some((kept.parse().ok()?, written.parse().ok()?))
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The CPU it was recorded on.
    pub cpu: usize,
    pub name: String,
    /// Its numeric fields (those printed as `0x<hex> (<decimal>)`), by name.
    pub fields: BTreeMap<String, u64>,
}

impl Event {
    pub fn field(&self, name: &str) -> Option<u64> {
        self.fields.get(name).copied()
    }
}

/// Parses a line of a trace printed with the `fields` option:
/// `  haproxy-2972  [001] ..... 21161.340141: inet_sock_set_state: skaddr=0xffff8881 (-1)
/// oldstate=0x7 (7) ...`; `None` for header and other lines.
pub fn parse_event(line: &str) -> Option<Event> {
    if line.starts_with('#') {
        return None;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let cpu_of = |word: &str| {
        word.strip_prefix('[')?
            .strip_suffix(']')?
            .parse::<usize>()
            .ok()
    };
    let is_timestamp = |word: &str| {
        word.strip_suffix(':')
            .is_some_and(|t| t.contains('.') && t.parse::<f64>().is_ok())
    };
    // The task's name comes first and may hold anything: the CPU is the last `[N]` word
    // before the first timestamp that follows one (the flags may stand in between).
    let (at, cpu) = words.iter().enumerate().find_map(|(i, word)| {
        if !is_timestamp(word) {
            return None;
        }
        let before = &words[..i];
        let cpu = before.iter().rev().take(2).find_map(|w| cpu_of(w))?;
        Some((i, cpu))
    })?;
    let name = words.get(at + 1)?.strip_suffix(':')?;
    let fields = words[at + 2..]
        .iter()
        .filter_map(|word| {
            let (key, value) = word.split_once('=')?;
            let hex = value.strip_prefix("0x")?;
            Some((key.to_owned(), u64::from_str_radix(hex, 16).ok()?))
        })
        .collect();
    Some(Event {
        cpu,
        name: name.to_owned(),
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_printed_with_fields() {
        let line = "         haproxy-2972    [001] ..... 21161.340141: inet_sock_set_state: \
                    skaddr=0xffff88815c64dc80 (-131385794438016) oldstate=0x7 (7) newstate=0x2 \
                    (2) sport=0x0 (0) dport=0x46a0 (18080) family=0x2 (2) protocol=0x6 (6) \
                    saddr=0x100007f (16777343) daddr=0x100007f (16777343) \
                    saddr_v6=<INVALID-SIZE> daddr_v6=<INVALID-SIZE>";
        let event = parse_event(line).unwrap();
        assert_eq!(event.cpu, 1);
        assert_eq!(event.name, "inet_sock_set_state");
        assert_eq!(event.field("skaddr"), Some(0xffff88815c64dc80));
        assert_eq!(event.field("oldstate"), Some(7));
        assert_eq!(event.field("newstate"), Some(2));
        assert_eq!(event.field("dport"), Some(18080));
        assert_eq!(event.field("sport"), Some(0));
        assert_eq!(event.field("saddr_v6"), None);
        let odd_task =
            "  kworker/1:2 x: y-12  [000] d.s2. 5.000001: inet_sock_set_state: skaddr=0x1 (1)";
        let event = parse_event(odd_task).unwrap();
        assert_eq!((event.cpu, event.field("skaddr")), (0, Some(1)));
        let no_flags = "  <idle>-0  [003] 5.000001: inet_sock_set_state: sport=0x10 (16)";
        let event = parse_event(no_flags).unwrap();
        assert_eq!((event.cpu, event.field("sport")), (3, Some(16)));
        assert_eq!(parse_event("# tracer: nop"), None);
        assert_eq!(parse_event(""), None);
        assert_eq!(parse_event("garbage: without cpu: x=0x1"), None);
    }

    #[test]
    fn parses_the_entries_header() {
        let trace =
            "# tracer: nop\n#\n# entries-in-buffer/entries-written: 97463/225087   #P:2\n#\n";
        assert_eq!(parse_entries(trace), Some((97463, 225087)));
        assert_eq!(parse_entries("# tracer: nop\n"), None);
    }
}
