// SPDX-License-Identifier: GPL-2.0

//! Receive Flow Deliver: which CPU owns a local port, which ports a CPU's port search tries
//! first, and which received segments go to the CPU that owns their destination port.
//!
//! Ports come in pairs, `2k` and `2k + 1`, and pair `k` belongs to CPU `k mod n`, `n` being
//! the number of CPU ids: every CPU owns ports of both parities, so the kernel's parity
//! preferences (even ports for `connect()`, odd ones for `bind()` to port 0, relative to the
//! range's start) hold within each CPU's share. Any CPU count and any range work; a CPU that
//! owns no free port of the range falls back to the stock search.
//!
//! Pure logic, no `kernel::` imports: also built and tested on the host (`rust/logic`).

/// The CPU that owns local port `port` among `nr_cpus` CPU ids.
pub fn cpu_of(port: u16, nr_cpus: u32) -> u32 {
    (u32::from(port) >> 1) % nr_cpus.max(1)
}

/// Ports a kernel port search tries, in its own terms (`struct fastsocket_port_walk`): from
/// `port` on by `step`, wrapping around `span` lower on reaching `end`, `span / step` ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    /// The first port tried.
    pub port: u32,
    /// A port reaching `end` wraps around, `span` lower.
    pub end: u32,
    /// `span / step` ports are tried.
    pub span: u32,
    /// The distance between two ports tried.
    pub step: u32,
}

/// The most ports of its own a CPU tries per pass before the stock search: a bound on the work
/// RFD adds to a port search (two passes), whatever the range and however full it is. Without
/// it a CPU whose share is taken would walk all of it (1/n of the range) on every `connect()`
/// before the stock search, quadratic work while ports run out.
pub const WALK_MAX: u32 = 64;

/// Up to [`WALK_MAX`] consecutive ports of `[low, high)` congruent to `class` modulo `m`, from
/// where `offset` points, wrapping around to the class's first port: one walk, or two when the
/// window wraps (a walk of the kernel wraps by its own length, not by the class's).
fn class_walks(class: u32, m: u32, low: u32, high: u32, offset: u32) -> [Option<Walk>; 2] {
    let first = low + (class + m - low % m) % m;
    if first >= high {
        return [None, None];
    }
    let count = (high - 1 - first) / m + 1;
    let len = count.min(WALK_MAX);
    let start = offset / m % count;
    // Ports `from..from + n` of the class, in class indices, as one walk.
    let part = |from: u32, n: u32| {
        (n > 0).then(|| {
            let port = first + from * m;
            Walk {
                port,
                end: port + (n - 1) * m + 1,
                span: n * m,
                step: m,
            }
        })
    };
    let head = len.min(count - start);
    [part(start, head), part(0, len - head)]
}

/// The walk of pass `pass` of a port search on `cpu` over `[low, high)` whose stock search
/// would start at `low + offset`: up to [`WALK_MAX`] of `cpu`'s ports of the parity stock
/// tries first, from where `offset` (the stock search's randomness) points, then as many of
/// the other parity; each in one or two walks. `None` once those are done, or if `cpu` owns no
/// port of the range: the stock search then.
pub fn walk(pass: u32, cpu: u32, nr_cpus: u32, low: u32, high: u32, offset: u32) -> Option<Walk> {
    if cpu >= nr_cpus || low >= high || high > 65536 {
        return None;
    }
    let m = 2 * nr_cpus;
    let first_parity = (low + offset) & 1;
    [first_parity, first_parity ^ 1]
        .into_iter()
        .flat_map(|parity| class_walks(2 * cpu + parity, m, low, high, offset))
        .flatten()
        .nth(pass as usize)
}

/// A namespace's ephemeral port range, `ip_local_port_range` (both ends included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ephemeral {
    /// The lowest ephemeral port.
    pub low: u16,
    /// The highest ephemeral port.
    pub high: u16,
}

impl Ephemeral {
    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }
}

/// The CPU that should process a TCP segment from port `sport` to local port `dport`, or
/// `None` to leave it to RPS: the owner of `dport` when `dport` is an ephemeral port that is
/// not reserved (`reserved` is asked last, it reads `ip_local_reserved_ports`) and `sport` is
/// not, that is when the segment most likely belongs to a connection this host opened to a
/// service. A listener on an ephemeral port that is not reserved, reached from a peer port
/// outside the range, would have all its segments steered to one CPU: such ports belong in
/// `ip_local_reserved_ports`, as the kernel's documentation asks already.
pub fn steer(
    sport: u16,
    dport: u16,
    range: Ephemeral,
    nr_cpus: u32,
    reserved: impl FnOnce(u16) -> bool,
) -> Option<u32> {
    (range.contains(dport) && !range.contains(sport) && !reserved(dport))
        .then(|| cpu_of(dport, nr_cpus))
}
