#!/usr/bin/python3
"""Turn benchmark results into Documentation/benchmarks.md and SVG plots.

    report.py RESULTS_DIR DOC_DIR

Reads RESULTS_DIR/bench-latest/{bench.tsv,active.tsv,events.tsv,machine.txt} (from `make bench`), every
RESULTS_DIR/bench-partial-*/ (partial runs of `make bench`; a run newer than bench-latest
gets a section of its own while some of its figures are the newest of their workload, vCPU
count and clock, a line under "Earlier runs" once none is) and
RESULTS_DIR/lockprof-latest/{perf_lock/*.perf_lock[_stacks],lock_stat/*.lock_stat,machine.txt}
(from `make lockprof`) and RESULTS_DIR/vfsbench-latest/ (from `make vfsbench`, through
scripts/vfsreport.py), whichever exist; writes DOC_DIR/benchmarks.md and DOC_DIR/plots/*.svg,
and RESULTS_DIR/lockprof-latest/summary.tsv (lock_stat) and perf_lock.tsv (perf lock).
Standard library only.
"""
import collections
import os
import re
import statistics
import sys

import vfsreport

ARMS = {
    "B0": "stock: module not loaded, one shared listener",
    "B1": "stock + nginx `reuseport` (module not loaded)",
    "B2": "stock + reuseport + CPU BPF + tcp_migrate_req, workers pinned (module not loaded)",
    "C": "stock placement, module loaded counting only (listen_ports empty and rfd=0 in every "
         "namespace)",
    "T": "fastsocket (defaults, in every namespace), Receive Flow Deliver on (rfd=1; for W1's "
         "passive side RFD changes nothing: nginx's port is outside the ephemeral range, only "
         "the client namespace's replies are steered)",
    "T0": "fastsocket, listen_hold_ms=0 (in every namespace)",
    "T20": "fastsocket, listen_hold_ms=20 (in every namespace; W1 only)",
    "TQ0": "fastsocket, listen_queues=0: no per-CPU accept queues, the listener's own queue "
           "only, the single-queue design before the local listen table (in every namespace; "
           "W1 only)",
    "TR0": "fastsocket, rfd=0: the module without Receive Flow Deliver (in every namespace)",
    "TV0": "fastsocket, vfs=0: the module without lightweight socket files (in every namespace)",
    "TP0": "fastsocket, listen_pull=0: a listener wake-up does not pull a blocked accept() to "
           "the handshake's CPU (in every namespace)",
    "TS": "fastsocket (defaults) in the servers' namespaces only, enabled=0 in the client's: "
          "the module's cost as a server sees it, the load generator stock as if on another "
          "machine",
    "TN": "fastsocket, rfd_peer=1 (in every namespace): a server's end of a same-host "
          "connection processed on its client port's CPU, with the client's end",
    "TA": "fastsocket (defaults) with nginx's workers pinned one per CPU from outside "
          "(taskset, as in B2; no reuseport, no BPF): what unpinned workers' placement costs "
          "locality (W1 only)",
}
# What the arms meant in runs of the harness before Receive Flow Deliver (no "rfd" in its
# "harness:" line): the module had no RFD, ip_local_port_range was 1024-65000.
ARMS_BEFORE_RFD = dict(ARMS, C="stock placement, module loaded counting only (listen_ports "
                       "empty in every namespace)",
                       T="fastsocket (defaults, in every namespace; no Receive Flow Deliver "
                       "yet)")
del ARMS_BEFORE_RFD["TR0"]
# What the arms meant in results of the harness before issue 8 (no "harness:" line).
LEGACY_ARMS = {
    "B0": "\"stock\": module loaded, counting only in the initial namespace, fully on in the "
          "backend namespace (W2, W3)",
    "B1": "nginx `reuseport`, module loaded as in B0",
    "B2": "reuseport + CPU BPF + tcp_migrate_req, workers pinned, module loaded as in B0",
    "T": "fastsocket (defaults)",
    "T0": "fastsocket, listen_hold_ms=0",
}
LEGACY_NOTE = (
    "**Old harness: these figures are not current.** They were produced before issue 8 by a "
    "harness whose \"stock\" arms were not stock: B0, B1 and B2 ran with the module loaded "
    "(counting only in the initial namespace; in W2 and W3 the backend nginx, in its own "
    "namespace, ran with the module fully on in every arm), and the arms always ran in one "
    "fixed order (B0 first, T and T0 last, so drift and TIME_WAIT build-up landed on the "
    "module's arms). Do not quote them as module-against-stock results: the 1-vCPU wall-clock "
    "0.77x (W1) and 0.60x (W2) are artefacts of that harness, and the 2-vCPU wall-clock 1.23x "
    "(W1) is not a gain (icount puts the same comparison at 0.99x). Until `make bench` is re-run "
    "with the fixed harness, the current figure is the re-measurement reported in issue 8 "
    "(QEMU icount, module not loaded as stock, arms alternated), W1: 1 vCPU stock 7,814, "
    "module 7,755 connections per 10^9 guest instructions (0.992x); 2 vCPUs stock 7,565, "
    "module 7,476 (0.988x): the module costs about 1% per connection and shows no throughput "
    "gain under QEMU.")
LEGACY_LOCK_NOTE = (
    "**Old harness: these figures are not current.** Produced before issue 8: the B arms ran "
    "with the module loaded (its hooks counting accepts), the arms in one fixed order, one "
    "run each: B0 is not stock. Re-run `make lockprof` with the fixed harness.")
WORKLOADS = {
    "W1": "nginx, 64-byte response, no keep-alive",
    "W2": "haproxy (httpclose) in front of nginx in another netns",
    "W3": "connect()-heavy client: wrk in the measured netns against nginx in another netns",
}
# Lock classes the issue asks about, by a pattern on the lock_stat class name.
NAMED_LOCKS = [
    ("listener and child socket spinlocks", r"^slock-AF_INET6?$"),
    ("child socket during the handshake", r"^slock-AF_INET6?/1$"),
    ("accept queue (rskq_lock)", r"rskq_lock"),
    ("bind bucket (bhash/bhash2)", r"bhash|&tb->lock|ilb2|head->lock"),
    # inet_ehash_locks_alloc(): spin_lock_init(&ptr[i]) names the class "&ptr[i]"
    ("established hash (ehash locks, `&ptr[i]`)", r"ehash|^&ptr\[i\]$"),
    ("epoll (&ep->lock)", r"&ep->lock"),
    ("socket wait queue", r"&wq->wait|sk_wq|&sk->sk_sleep|wait#"),
]

# The lock classes of the connect path (autobinding connect(): bind bucket search and
# __inet_check_established()/inet_ehash_insert()), as /proc/lock_stat names them.
CONNECT_LOCKS = [
    ("bind bucket `&tcp_hashinfo.bhash[i].lock`", r"^&tcp_hashinfo\.bhash\[i\]\.lock$"),
    ("bind bucket 2 `&tcp_hashinfo.bhash2[i].lock`", r"^&tcp_hashinfo\.bhash2\[i\]\.lock$"),
    ("established hash `&ptr[i]` (inet_ehash_locks_alloc)", r"^&ptr\[i\]$"),
]

# perf lock contention callers on the listener's path, by a pattern on the caller function
# (perf's caller column without its offset; for a lock the module's Rust code takes through a
# C shim, rust_helper_*, the Rust function that called the shim). First match wins.
LISTENER_CALLERS = [
    ("socket lock (lock_sock, release_sock)",
     r"^(lock_sock_nested|__lock_sock|lock_sock_fast|__lock_sock_fast|release_sock|"
     r"__release_sock)$"),
    ("accept queue (inet_csk_accept, reqsk_queue_add/remove)",
     r"^(inet_csk_accept|inet_csk_reqsk_queue_add|reqsk_queue_remove|reqsk_queue_unlink|"
     r"inet_csk_complete_hashdance|inet_csk_listen_stop|inet_csk_reqsk_queue_drop\w*)$"),
    ("fastsocket hooks in the kernel (fastsocket_*)", r"^fastsocket_"),
    ("the module's Rust code (its per-CPU queues)", r"fastsocket|^rust_helper_|^_R"),
    ("socket wait queue wake-ups (__wake_up*)", r"^__wake_up"),
]
# perf prints times with a unit; in microseconds.
PERF_TIME_US = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}


def load_bench(path):
    """Rows of bench.tsv: 11 columns from the current harness, 9 from the one before issue 8."""
    rows = []
    with open(path) as f:
        for line in f:
            c = line.rstrip("\n").split("\t")
            if len(c) not in (9, 11):
                continue
            rows.append(dict(clock=c[0], cpus=int(c[1]), w=c[2], arm=c[3], run=int(c[4]),
                             rate=float(c[5]), err=int(c[6]), acc=int(c[7]), loc=int(c[8]),
                             slot=int(c[9]) if len(c) == 11 else None,
                             module=c[10] if len(c) == 11 else "legacy"))
    return rows


def tsv_rows(path, ncols):
    """The rows of a TSV file of the harness with ncols columns (each a list of fields); none
    if the file does not exist (an older run)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    return [c for c in rows if len(c) == ncols]


def run_keys(c):
    """The keys every per-run row starts with: clock, vCPUs, workload, arm, round."""
    return dict(clock=c[0], cpus=int(c[1]), w=c[2], arm=c[3], run=int(c[4]))


def load_active(path):
    """Rows of active.tsv (active-connection locality of the traced warm-up runs)."""
    rows = []
    for c in tsv_rows(path, 16):
        num = [int(x) for x in c[5:12]]
        rfd = [None if x == "-" else int(x) for x in c[12:16]]
        rows.append(dict(run_keys(c), traced=num[0], complete=num[1], local=num[2],
                         connect=num[3], synack=num[4], close=num[5], lost=num[6], rfd=rfd))
    return rows


EVENTS = ("context switches", "function-call IPIs", "rescheduling IPIs", "NET_RX softirqs",
          "ksoftirqd switches", "haproxy switches", "nginx switches")


def load_events(path):
    """Rows of events.tsv: per measured run, connections and event counts (see EVENTS)."""
    return [dict(run_keys(c), conns=int(c[5]), ev=[int(x) for x in c[6:]])
            for c in tsv_rows(path, 6 + len(EVENTS))]


def events_table(rows, arms, run, lines):
    """Per connection: median (min-max over runs) of each event count, per arm."""
    g = collections.defaultdict(list)
    for r in rows:
        if r["conns"] > 0:
            g[(r["w"], r["cpus"], r["clock"], r["arm"])].append(r)
    if not g:
        return
    lines += [f"### Events per connection ({run})", "",
              "Counted around each measured run (`/proc/stat` ctxt, `/proc/interrupts` CAL and "
              "RES, `/proc/softirqs` NET_RX, summed over CPUs; the context switches of every "
              "thread of ksoftirqd, haproxy and nginx from `/proc/PID/task/*/status`; wrk's "
              "threads start and end inside the run and are not counted) and divided by the "
              "run's connections (wrk's requests, `Connection: close`): median (min-max) over "
              "the runs. They say where an arm's extra instructions go when a profile cannot "
              "(see listen.md and rfd.md).", "",
              "| workload | vCPUs | clock | arm | runs | " + " | ".join(EVENTS) + " |",
              "|---|---|---|---|---|" + "---|" * len(EVENTS)]
    for w in WORKLOADS:
        for cpus in vcpu_counts(g):
            for clock in ("wall", "icount"):
                for arm in arms:
                    runs = g.get((w, cpus, clock, arm))
                    if not runs:
                        continue
                    cells = []
                    for i in range(len(EVENTS)):
                        v = sorted(r["ev"][i] / r["conns"] for r in runs)
                        cells.append(f"{statistics.median(v):.2f} ({v[0]:.2f}-{v[-1]:.2f})")
                    lines.append(f"| {w} | {cpus} | {clock} | {arm} | {len(runs)} | "
                                 + " | ".join(cells) + " |")
    lines.append("")


def active_stats(runs):
    """Sums over runs: complete, local, connect/synack/close on cpu_of(sport), lost, rfd."""
    t = {k: sum(r[k] for r in runs) for k in ("traced", "complete", "local", "connect",
                                                "synack", "close", "lost")}
    t["n"] = len(runs)
    t["rfd"] = [None if any(r["rfd"][i] is None for r in runs) else
                sum(r["rfd"][i] for r in runs) for i in range(4)]
    return t


def pct(a, b):
    return f"{100.0 * a / b:.1f}%" if b else "n/a"


def machine(res):
    """machine.txt as text and as a dict of its "key: value" lines."""
    text = open(os.path.join(res, "machine.txt")).read().strip()
    keys = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return text, keys


def machine_block(text):
    """machine.txt as a section shows it: without its harness line, which the section's "How
    the arms ran" paragraph gives (see once())."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("harness: "))


# Long paragraphs that several sections share are given in full in the first section that has
# them; later sections point there.
PRINTED = {}


def once(label, text, heading):
    """`label: text`, or, if an earlier section (heading) gave the same, a pointer to it."""
    first = PRINTED.setdefault((label, text), heading)
    if first == heading:
        return f"{label}: {text}"
    return f"{label}: as in \"{first.lstrip('# ')}\" above."


def group(rows):
    g = collections.defaultdict(list)
    for r in rows:
        g[(r["clock"], r["cpus"], r["w"], r["arm"])].append(r)
    return g


def stats(runs):
    rates = [r["rate"] for r in runs]
    acc = sum(r["acc"] for r in runs)
    loc = sum(r["loc"] for r in runs)
    return dict(med=statistics.median(rates), lo=min(rates), hi=max(rates), n=len(rates),
                err=sum(r["err"] for r in runs), locality=(100.0 * loc / acc) if acc else None,
                module="/".join(sorted({r["module"] for r in runs})))


# Identical icount runs differ by about 0.1%: a smaller difference than this is not read as
# one even where the ranges happen not to overlap.
ICOUNT_MIN_EFFECT = 0.005


def compare(x, base, min_effect=0.0):
    """(ratio of medians, direction): direction is +1 or -1 when the min-max ranges of the
    two arms do not overlap (and the medians differ by at least min_effect), 0 otherwise
    (the difference is within the runs' spread)."""
    ratio = x["med"] / base["med"]
    if abs(ratio - 1) < min_effect:
        return ratio, 0
    if x["lo"] > base["hi"]:
        return ratio, 1
    if x["hi"] < base["lo"]:
        return ratio, -1
    return ratio, 0


def reading(wall, icount):
    """How to read an arm against B0 from its wall-clock and icount comparisons (each
    (ratio, direction) or None): (short verdict, note or None). A wall-clock gain counts
    only when icount confirms it."""
    if wall and icount:
        (rw, dw), (ri, di) = wall, icount
        if dw > 0 and di > 0:
            return f"gain: wall {rw:.2f}x, icount {ri:.3f}x", None
        if dw > 0:
            return (f"**not a gain**: wall {rw:.2f}x, icount {ri:.3f}x",
                    f"wall clock shows {rw:.2f}x with separate ranges but icount shows "
                    f"{ri:.3f}x: not counted as a gain (under TCG the wall clock mostly "
                    "measures host noise and hand-off latency)")
        if dw < 0 and di < 0:
            return f"cost: wall {rw:.2f}x, icount {ri:.3f}x", None
        if dw < 0:
            return (f"wall-clock loss {rw:.2f}x, icount {ri:.3f}x",
                    f"wall clock shows {rw:.2f}x with separate ranges, icount {ri:.3f}x "
                    f"({'no' if di == 0 else 'a'} separate difference): they disagree")
        if di < 0:
            return f"cost: icount {ri:.3f}x (wall {rw:.2f}x, within noise)", None
        if di > 0:
            return (f"fewer instructions: icount {ri:.3f}x (wall {rw:.2f}x, within noise)",
                    None)
        return f"no difference: wall {rw:.2f}x, icount {ri:.3f}x (within runs' spread)", None
    if wall:
        rw, dw = wall
        if dw > 0:
            return (f"unconfirmed: wall {rw:.2f}x, no icount run",
                    f"wall clock shows {rw:.2f}x but no icount run confirms it: not a gain")
        if dw < 0:
            return f"wall-clock loss {rw:.2f}x (no icount run)", None
        return f"within wall-clock noise ({rw:.2f}x)", None
    if icount:
        ri, di = icount
        return (f"icount {ri:.3f}x" + ("" if di else " (within runs' spread)")), None
    return "", None


def svg_bars(title, groups, unit, path):
    """Grouped horizontal bars: groups = [(label, [(bar_label, value[, lo, hi]), ...]), ...];
    lo-hi, when given, is drawn as a whisker (min-max of the runs)."""
    bar_h, gap, left, width = 16, 10, 300, 360
    n = sum(len(b) for _, b in groups)
    height = 40 + n * (bar_h + 2) + len(groups) * (gap + 18)
    vmax = max((max(b[1:]) for _, bars in groups for b in bars), default=1) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 130}" '
           f'height="{height}" font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="14" font-weight="bold">{title}</text>']
    y = 36
    palette = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948"]
    for label, bars in groups:
        out.append(f'<text x="10" y="{y + 12}" font-weight="bold">{label}</text>')
        y += 18
        for i, bar in enumerate(bars):
            bl, v = bar[0], bar[1]
            w = width * v / vmax
            out.append(f'<text x="20" y="{y + 12}">{bl}</text>')
            out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                       f'fill="{palette[i % len(palette)]}"/>')
            end = w
            if len(bar) == 4:
                lo, hi = left + width * bar[2] / vmax, left + width * bar[3] / vmax
                mid = y + bar_h / 2
                out.append(f'<path d="M{lo:.1f} {mid}H{hi:.1f}M{lo:.1f} {y + 3}V{y + bar_h - 3}'
                           f'M{hi:.1f} {y + 3}V{y + bar_h - 3}" stroke="#222" fill="none"/>')
                end = max(w, hi - left)
            out.append(f'<text x="{left + end + 4:.1f}" y="{y + 12}">{v:,.1f} {unit}</text>')
            y += bar_h + 2
        y += gap
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def parse_lock_stat(path):
    """{class: (con_bounces, contentions, wait_total_us, acq_bounces, acquisitions)}, conns,
    module state ("loaded"/"unloaded"; None from the harness before issue 8)."""
    conns, classes, module = 0, {}, None
    num = r"([\d.]+)"
    pat = re.compile(r"^\s*(\S.*?):\s+" + r"\s+".join([num] * 12) + r"\s*$")
    with open(path) as f:
        for line in f:
            if line.startswith("# connections"):
                conns = int(line.split()[2])
                continue
            if line.startswith("# module"):
                module = line.split()[2]
                continue
            m = pat.match(line)
            if m:
                v = [float(x) for x in m.groups()[1:]]
                name = m.group(1)
                old = classes.get(name, (0, 0, 0, 0, 0))
                classes[name] = tuple(a + b for a, b in zip(old, (v[0], v[1], v[4], v[6], v[7])))
    return classes, conns, module


def rust_demangle(sym):
    """A readable path for a Rust v0 symbol (_R...) as kallsyms shows the module's symbols:
    its identifiers joined by ::, crate hashes, back-references and generics dropped. Other
    symbols unchanged. Tolerant of a name perf cut short."""
    if not sym.startswith("_R"):
        return sym
    out, i, n = [], 2, len(sym)
    while i < n:
        c = sym[i]
        if c.isdigit():
            j = i
            while j < n and sym[j].isdigit():
                j += 1
            length = int(sym[i:j])
            if j < n and sym[j] == "_":
                j += 1
            ident = sym[j:j + length]
            if len(ident) == length and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ident):
                out.append(ident)
                i = j + length
            else:
                i = j
        elif c in "sBLG":
            # disambiguator, back-reference, lifetime, binder: a base-62 number and "_"
            j = sym.find("_", i + 1)
            i = n if j < 0 else j + 1
        else:
            i += 1
    return "::".join(out) if out else sym


def perf_caller(frame):
    """The function of a perf caller or stack frame ("sym+0x1e"), demangled."""
    return rust_demangle(re.sub(r"\+0x[0-9a-f]+$", "", frame.strip()))


def listener_group(func):
    for label, pat in LISTENER_CALLERS:
        if re.search(pat, func):
            return label
    return None


def parse_perf_lock(path):
    """perf lock contention output as the guest saved it: (entries, conns, module, bad), entries
    [(contended, wait_us, type, caller function, [stack functions])] one per call stack, bad
    perf's "bad: N, total: M" (events it could not pair) or None."""
    conns, module, entries, bad = 0, None, [], None
    unit = r"([\d.]+)\s+(ns|us|ms|s)"
    row = re.compile(r"^\s*(\d+)\s+" + r"\s+".join([unit] * 3) + r"\s+(\S+)\s+(\S.*?)\s*$")
    frame = re.compile(r"^\s+0x[0-9a-f]+(?:\s+(\S+))?\s*$")
    with open(path) as f:
        for line in f:
            if line.startswith("# connections"):
                conns = int(line.split()[2])
                continue
            if line.startswith("# module"):
                module = line.split()[2]
                continue
            m = re.match(r"^bad: (\d+), total: (\d+)", line)
            if m:
                bad = (int(m.group(1)), int(m.group(2)))
                continue
            m = row.match(line)
            if m:
                g = m.groups()
                entries.append([int(g[0]), float(g[1]) * PERF_TIME_US[g[2]], g[7],
                                perf_caller(g[8]), []])
                continue
            m = frame.match(line)
            if m and entries:
                entries[-1][4].append(perf_caller(m.group(1) or "?"))
    return entries, conns, module, bad


def perf_by_caller(entries):
    """{caller: [contended, wait_us]} summed over call stacks. A caller that is a Rust shim
    (rust_helper_*) is replaced by the function below it in the stack, where there is one."""
    by = collections.defaultdict(lambda: [0, 0.0])
    for contended, wait, _, caller, stack in entries:
        if caller.startswith("rust_helper_") and caller in stack:
            i = stack.index(caller)
            if i + 1 < len(stack):
                caller = f"{stack[i + 1]} (via {caller})"
        by[caller][0] += contended
        by[caller][1] += wait
    return by


def arm_order(name):
    """Sort key of a profile name (W1-ARM[.rRUN]): by workload, then the arms in ARMS order."""
    w, _, rest = name.partition("-")
    arm = rest.split(".")[0]
    return (w, list(ARMS).index(arm) if arm in ARMS else len(ARMS), name)


def vcpu_counts(g):
    """The vCPU counts a run measured (its groups' keys have them second), most first."""
    return sorted({k[1] for k in g}, reverse=True)


def partial_vcpus(keys):
    """The vCPU counts a partial run measured, from its `partial` line (its clocks' counts)."""
    text = keys.get("partial", "")
    clocks = re.search(r"clocks ([a-z ]+);", text)
    counts = set()
    for clock, cpus in re.findall(r"(wall|icount) at ([\d ]+) vCPU", text):
        if not clocks or clock in clocks.group(1).split():
            counts.update(int(c) for c in cpus.split())
    return counts


def run_name(keys):
    """A run as tables name it: its date and repository commit."""
    return f"run of {keys.get('date', 'unknown date')}, repository {keys.get('repository', '?')}"


def bench_section(res, docs, lines, heading="## Throughput, locality, scaling", prefix="",
                  later=None):
    """One `make bench` run's section. prefix names its plots; later, for a full run, the
    partial runs shown after it (their keys), which supersede its rows of their workloads."""
    rows = load_bench(os.path.join(res, "bench.tsv"))
    g = group(rows)
    active = load_active(os.path.join(res, "active.tsv"))
    ga = collections.defaultdict(list)
    for r in active:
        ga[(r["clock"], r["cpus"], r["w"], r["arm"])].append(r)
    text, keys = machine(res)
    legacy = "harness" not in keys or any(r["module"] == "legacy" for r in rows)
    before_rfd = not legacy and "rfd" not in keys["harness"]
    arms = LEGACY_ARMS if legacy else ARMS_BEFORE_RFD if before_rfd else ARMS
    run = run_name(keys)
    run_arms = sorted({r["arm"] for r in rows}, key=lambda a: list(arms).index(a)
                      if a in arms else len(arms))
    plots = os.path.join(docs, "plots")
    os.makedirs(plots, exist_ok=True)
    lines += [heading, ""]
    if legacy:
        lines += ["> " + LEGACY_NOTE, ""]
        lines += ["### Current figures until the re-run: the re-measurement reported in issue 8",
                  "", "W1 (unchanged nginx), QEMU icount, stock = module not loaded, arms "
                  "alternated; not from this report's data.", "",
                  "| vCPUs | stock: conn per 1e9 guest instr. | module (defaults) | module/stock |",
                  "|---|---|---|---|",
                  "| 1 | 7,814 | 7,755 | 0.992 |",
                  "| 2 | 7,565 | 7,476 | 0.988 |", ""]
    if "partial" in keys and prefix:
        lines += [f"A partial `make bench` ({run}; arms {', '.join(run_arms)}): {keys['partial']}. "
                  "Its tables hold only this run's figures; it does not replace the full run "
                  "above, whose tables hold only the full run's.", ""]
    else:
        lines += ["Regenerate: `make bench` (wall clock and icount, 1 and 2 vCPUs; about 45 "
                  "minutes on this 2-core machine).", ""]
    # Each workload's figures of a clock at a vCPU count are superseded by the newest partial
    # run that measured that workload with that clock at that count.
    covered = set()
    full_cpus = {r["cpus"] for r in rows}
    for k in reversed([k for k in later or [] if before_rfd and "rfd" in k.get("harness", "")
                       and partial_vcpus(k) & full_cpus]):
        workloads = k.get("partial", "").split(";")[0].replace("workloads ", "").split()
        what = k.get("partial", "")
        for clock in ("wall", "icount"):
            counts = re.search(rf"{clock} at ([\d ]+) vCPU", what)
            clocks = re.search(r"clocks ([a-z ]+);", what)
            if not counts or (clocks and clock not in clocks.group(1).split()):
                continue
            for cpus in sorted({int(c) for c in counts.group(1).split()} & full_cpus):
                mine = [w for w in workloads if (w, cpus, clock) not in covered]
                covered.update((w, cpus, clock) for w in mine)
                if mine:
                    lines += [f"**Superseded rows.** This run predates Receive Flow Deliver: "
                              "its arm T had no RFD, ip_local_port_range was 1024-65000 "
                              "(nginx's 8080 inside it, so RFD could not have steered) and the "
                              f"backend veth's initial end had no RPS. Its {' '.join(mine)} "
                              f"{clock} figures at {cpus} vCPU{'s' if cpus > 1 else ''} are "
                              f"superseded by the partial {run_name(k)} below; its other "
                              "figures are the current ones for their workloads.", ""]
    lines += ["```", machine_block(text), "```", ""]
    lines += ["Arms of this run: " + "; ".join(f"**{k}** {v}" for k, v in arms.items() if
                                               any(k == key[3] for key in g)) + ".", "",
              "Workloads: " + "; ".join(f"**{k}** {v}" for k, v in WORKLOADS.items()
                                        if any(k == key[2] for key in g)) + ".", ""]
    if legacy:
        lines += ["Locality: share of accepted connections whose handshake completed on the "
                  "accepting CPU (module counters).", ""]
    else:
        lines += [once("How the arms ran", keys["harness"] + ".", heading), "",
                  once("How to read", "**wall** is connections per second of host wall clock under "
                  "TCG (vCPUs truly parallel; host noise, and cross-vCPU hand-off latency "
                  "weighs heavily); **icount** is connections per 10^9 guest instructions "
                  "(QEMU icount, vCPUs interleaved, deterministic: it counts path length, not "
                  "cache misses). Each cell is the median with the min-max of the runs; a "
                  "ratio against B0 counts only where the two arms' ranges do not overlap, "
                  "and a wall-clock gain counts only where icount confirms it (icount differences "
                  "under 0.5% are not read as differences: identical runs differ by ~0.1%). "
                  "Locality: "
                  "share of accepted connections whose handshake completed on the accepting "
                  "CPU, from the module's counters (n/a where the module is not loaded)."
                  + (" Active locality (W2, W3): share of the traced warm-up's active "
                     "connections whose connect, SYN-ACK and close ran on one CPU, the one "
                     "cpu_of(sport) names (see below)." if active else ""), heading), ""]
    notes, headline = [], []
    for cpus in vcpu_counts(g):
        if not any(k[1] == cpus and k[0] in ("wall", "icount") for k in g):
            continue
        lines += [f"### {cpus} vCPU{'s' if cpus > 1 else ''} ({run})"
                  + (" (old harness, not current)" if legacy else ""), "",
                  "| workload | arm | module | wall conn/s: median (min-max) | runs | vs B0 | "
                  "icount conn per 1e9 instr.: median (min-max) | runs | vs B0 | "
                  "guest instr. per conn | locality (wall / icount) | "
                  + ("active locality (wall / icount) | " if active else "")
                  + "errors | reading |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if active else "")
                  + "---|"]
        for w in WORKLOADS:
            base = {c: g.get((c, cpus, w, "B0")) for c in ("wall", "icount")}
            base = {c: stats(v) for c, v in base.items() if v}
            for arm in arms:
                st = {c: stats(g[(c, cpus, w, arm)]) for c in ("wall", "icount")
                      if (c, cpus, w, arm) in g}
                if not st:
                    continue
                cells, cmp = [], {}
                for c in ("wall", "icount"):
                    if c not in st:
                        cells += ["", "", ""]
                        continue
                    x = st[c]
                    cmp[c] = compare(x, base[c], ICOUNT_MIN_EFFECT if c == "icount" else 0) \
                        if c in base and arm != "B0" else None
                    ratio = f"{cmp[c][0]:.3f}" if cmp[c] else ("1.000" if arm == "B0" else "")
                    cells += [f"{x['med']:,.1f} ({x['lo']:,.1f}-{x['hi']:,.1f})", str(x["n"]),
                              ratio]
                ipc = f"{1e9 / st['icount']['med']:,.0f}" if "icount" in st else ""
                loc = " / ".join(f"{st[c]['locality']:.1f}%" if st[c]["locality"] is not None
                                 else "n/a" for c in ("wall", "icount") if c in st)
                module = "/".join(sorted({st[c]["module"] for c in st}))
                verdict, note = ("baseline", None) if arm == "B0" else \
                    reading(cmp.get("wall"), cmp.get("icount"))
                if note:
                    notes.append(f"- {w} {arm}, {cpus} vCPU{'s' if cpus > 1 else ''}: {note}.")
                err = sum(st[c]["err"] for c in st)
                act = ""
                if active:
                    act = " / ".join(
                        (pct(a["local"], a["complete"]) if a else "n/a") for a in
                        (active_stats(ga[(c, cpus, w, arm)]) if (c, cpus, w, arm) in ga else None
                         for c in ("wall", "icount") if c in st)) + " | "
                lines.append(f"| {w} | {arm} | {module} | " + " | ".join(cells) +
                             f" | {ipc} | {loc} | {act}{err} | {verdict} |")
                if arm != "B0" and w in ("W1", "W2", "W3"):
                    headline.append(f"| {cpus} | {w} | {arm}/B0 | " + " | ".join(
                        f"{cmp[c][0]:.3f}" if cmp.get(c) else "" for c in ("wall", "icount"))
                        + f" | {verdict} |")
        lines.append("")
    if headline:
        lines += [f"### Against stock (B0), all arms ({run})"
                  + (" (old harness, not current)" if legacy else ""), "",
                  "| vCPUs | workload | ratio | wall | icount | reading |",
                  "|---|---|---|---|---|---|"] + headline + [""]
    if notes:
        lines += [f"### Where wall clock and icount disagree ({run})", ""] + notes + [""]
    if active:
        active_table(ga, arms, run, lines, keys)
    events_table(load_events(os.path.join(res, "events.tsv")), arms, run, lines)
    for clock, unit, title in (("wall", "conn/s", "conn/s per arm (wall-clock TCG, 2 vCPUs, "
                                "median, min-max)"),
                               ("icount", "", "connections per 1e9 guest instructions per arm "
                                "(icount, 2 vCPUs, median, min-max)")):
        groups = []
        for w in WORKLOADS:
            bars = []
            for a in arms:
                if (clock, 2, w, a) in g:
                    st = stats(g[(clock, 2, w, a)])
                    bars.append((f"{a} {arms[a][:40]}", st["med"], st["lo"], st["hi"]))
            if bars:
                groups.append((f"{w}: {WORKLOADS[w]}", bars))
        if groups:
            name = prefix + ("conn-per-arm.svg" if clock == "wall" else "icount-per-arm.svg")
            title += " [old harness, not current]" if legacy else ""
            title += f" [{run}]"
            svg_bars(title, groups, unit, os.path.join(plots, name))
            lines += [f"![{title}](plots/{name})", ""]
    for clock, label in (("wall", "wall clock"), ("icount", "icount")):
        groups = []
        for w in WORKLOADS:
            bars = []
            for a in arms:
                one, two = g.get((clock, 1, w, a)), g.get((clock, 2, w, a))
                if one and two:
                    bars.append((f"{a}", stats(two)["med"] / stats(one)["med"]))
            if bars:
                groups.append((f"{w}: 2-vCPU / 1-vCPU", bars))
        if groups:
            name = prefix + ("scaling.svg" if clock == "wall" else "scaling-icount.svg")
            svg_bars(f"Scaling from 1 to 2 vCPUs ({label}, median)"
                     + (" [old harness, not current]" if legacy else "") + f" [{run}]",
                     groups, "x",
                     os.path.join(plots, name))
            lines += [f"![scaling, {label}](plots/{name})", ""]


def active_table(ga, arms, run, lines, keys):
    """Active-connection locality per workload, arm, clock and vCPU count."""
    tracing = [v for k, v in keys.items() if k == "tracing"]
    lines += [f"### Active-connection locality, W2 and W3 ({run})", "",
              "Traced in every warm-up run (2 s before each measured run; the measured runs "
              "are not traced) with the tracepoint `sock:inet_sock_set_state`, filter "
              "`dport == 8080`: W2 haproxy's connections to the backend nginx, W3 wrk's. Per "
              "active socket (its address joins its events: `tcp_v4_connect()` enters "
              "SYN_SENT before it picks the port, so sport comes from the SYN_SENT -> "
              "ESTABLISHED event): the CPU of CLOSE -> SYN_SENT (connect), of SYN_SENT -> "
              "ESTABLISHED (the SYN-ACK's softirq) and of the first transition out of "
              "ESTABLISHED (close: here the server's FIN arriving). **Local**: the three CPUs "
              "equal and equal to cpu_of(sport) = (sport >> 1) % nr_cpu_ids. On 1 vCPU every "
              "connection is local by construction. rfd_* are the module's counters "
              "(`/proc/net/fastsocket`) over the same warm-ups: port searches that got a port "
              "of their CPU / fell back to the stock search; received segments steered to "
              "another CPU / already on their port's CPU (all devices, both directions). "
              "Events lost: overwritten in the ring buffer before the trace was read (the "
              "oldest go first); where there are any, the traced connections are a sample of "
              "the warm-up's, not all of them."
              + (f" Kernel: {tracing[0]}." if tracing else ""), "",
              "| workload | vCPUs | clock | arm | warm-ups | active conns traced (complete) | "
              "**local** | connect on cpu_of | SYN-ACK on cpu_of | close on cpu_of | "
              "events lost | rfd_ports / rfd_fallback | rfd_steered / rfd_local |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for w in WORKLOADS:
        for cpus in vcpu_counts(ga):
            for clock in ("wall", "icount"):
                for arm in arms:
                    if (clock, cpus, w, arm) not in ga:
                        continue
                    a = active_stats(ga[(clock, cpus, w, arm)])
                    r = a["rfd"]
                    ports = f"{r[0]:,} / {r[1]:,}" if r[0] is not None else "n/a"
                    steer = f"{r[2]:,} / {r[3]:,}" if r[2] is not None else "n/a"
                    lines.append(f"| {w} | {cpus} | {clock} | {arm} | {a['n']} | "
                                 f"{a['traced']:,} ({a['complete']:,}) | "
                                 f"**{pct(a['local'], a['complete'])}** | "
                                 f"{pct(a['connect'], a['complete'])} | "
                                 f"{pct(a['synack'], a['complete'])} | "
                                 f"{pct(a['close'], a['complete'])} | {a['lost']:,} | "
                                 f"{ports} | {steer} |")
    lines.append("")


def lockprof_section(res, docs, lines):
    text, keys = machine(res)
    wl = keys.get("workloads", "W1")
    heading = f"## Lock profile ({', '.join(wl.split())}; {run_name(keys)})"
    lines += [heading, ""]
    lines += [f"Regenerate: `make lockprof`: two boots, every arm of {', '.join(wl.split())} once "
              f"(one round{'; W3: B0, T, TR0' if 'W3' in wl.split() else ''}), the module arms' knobs as in `make bench`: first the perf kernel with `perf lock` "
              "(contention tracepoints, no lockdep), then the lockstat kernel with "
              "`/proc/lock_stat`. Counts are per 1,000 connections as wrk counted them (client "
              "side included); the profiled kernels' throughput is not meaningful.", ""]
    lines += ["```", machine_block(text), "```", ""]
    if "harness" in keys:
        lines += [once("How the arms ran", keys["harness"] + ".", heading), ""]
    perf_lock_section(res, lines)
    lock_stat_section(res, docs, lines, text, keys)


def perf_lock_section(res, lines):
    d = os.path.join(res, "perf_lock")
    lines += ["### perf lock contention (perf kernel)", ""]
    names = sorted({n.rsplit(".", 1)[0] for n in (os.listdir(d) if os.path.isdir(d) else [])
                    if n.endswith((".perf_lock", ".perf_lock_stacks"))}, key=arm_order)
    if not names:
        lines += ["**Not run**: these results have no `perf lock` profile (`perf_lock/` is "
                  "missing or empty in `results/lockprof-latest/`: they come from "
                  "`make lockprof` before it profiled with `perf lock`, or its perf-kernel "
                  "boot did not finish). Re-run `make lockprof`.", ""]
        return
    profiles, complete = {}, {}
    for name in names:
        stacks = os.path.join(d, name + ".perf_lock_stacks")
        complete[name] = os.path.exists(stacks)
        profiles[name] = parse_perf_lock(stacks if complete[name] else
                                         os.path.join(d, name + ".perf_lock"))
    by = {name: perf_by_caller(p[0]) for name, p in profiles.items()}
    per_k = {name: (1000.0 / p[1] if p[1] else 0.0) for name, p in profiles.items()}
    lines += ["Each arm's measured wrk run ran under `perf lock record -a` (the kernel's "
              "`lock:contention_begin/end` tracepoints, with call stacks), reported by "
              "`perf lock contention -k contended --stack-skip 0` (raw output in "
              "`results/lockprof-latest/perf_lock/`: `*.perf_lock` the top 20 call stacks as "
              "an operator would run it, `*.perf_lock_stacks` every call stack with its "
              "frames, which the tables sum). A caller is perf's caller column, the function "
              "that took the lock (`--stack-skip 0`: perf 6.1's default of 3 skips it on this "
              "kernel's tracepoint stacks and names its caller instead), its call stacks "
              "summed; a lock the module's Rust code takes through a C shim (`rust_helper_*`) "
              "is shown under the Rust function that called the shim. Without BPF, perf gives "
              "no lock names: a caller stands for the locks it takes.", "",
              "What it cannot see: in this kernel's native queued spinlock "
              "(`kernel/locking/qspinlock.c`; no paravirt spinlocks under TCG) "
              "`lock:contention_begin` fires only when a waiter joins the MCS queue, that is "
              "behind another waiter, not for a lone waiter spinning on the pending bit. With 2 "
              "vCPUs nearly every spinlock contention has a single waiter, so spinlocks (the "
              "socket, accept queue, wait queue and the module's queue locks) barely appear "
              "here; rwsems and mutexes are traced on every contention. The `/proc/lock_stat` "
              "profile below counts every contended acquisition, spinlocks included.", "",
              "How to read: each cell is **contentions / total wait in microseconds, per 1,000 "
              "connections**. Only contended acquisitions appear (an uncontended lock fires no "
              "tracepoint), and wait is time spent spinning or sleeping under TCG: compare "
              "arms, not absolute values. Stock arms (B0, B1, B2: module not loaded) stand "
              "beside the module's arms (C: loaded, counting only; T, T0: per-CPU accept "
              "queues; TQ0: T without them; TR0: T without Receive Flow Deliver): a listener-related row that is lower in T than "
              "in B0 and TQ0 is contention that the per-CPU accept queues removed; one that is "
              "higher is contention the module added. Rows in **bold** are on the listener's "
              "path.", ""]
    lines += ["| arm | module | connections | call stacks | contentions by lock type | "
              "events perf could not pair |", "|---|---|---|---|---|---|"]
    for name, (entries, conns, module, bad) in profiles.items():
        types = collections.Counter()
        for e in entries:
            types[e[2]] += e[0]
        lines.append(f"| {name} | {module or 'n/a'} | {conns} | {len(entries)}"
                     + ("" if complete[name] else " (top 20 only)") + " | "
                     + (", ".join(f"{t} {c}" for t, c in types.most_common()) or "none")
                     + " | " + (f"{bad[0]} of {bad[1]}" if bad else "n/a") + " |")
    lines.append("")
    if not all(complete.values()):
        lines += ["Arms marked \"top 20 only\" have no `*.perf_lock_stacks`: their figures sum "
                  "only the 20 most contended call stacks.", ""]

    def cell(name, funcs):
        c = sum(by[name][f][0] for f in funcs if f in by[name])
        w = sum(by[name][f][1] for f in funcs if f in by[name])
        return f"{c * per_k[name]:,.1f} / {w * per_k[name]:,.0f}"

    head = " | ".join(profiles) + " |"
    sep = "---|" * len(profiles)
    lines += ["#### Listener-related callers: contentions / total wait (us) per 1k connections",
              "", "| callers | " + head, "|---|" + sep]
    every = sorted({f for b in by.values() for f in b})
    listener = [f for f in every if listener_group(f)]
    for label, _ in LISTENER_CALLERS:
        funcs = [f for f in listener if listener_group(f) == label]
        found = ", ".join(f"`{f}`" for f in sorted(funcs)[:6]) + (", ..." if len(funcs) > 6
                                                                  else "")
        lines.append(f"| {label}" + (f": {found}" if funcs else ": none contended") + " | "
                     + " | ".join(cell(n, funcs) for n in profiles) + " |")
    lines.append("| **all listener-related** | " + " | ".join(
        f"**{cell(n, listener)}**" for n in profiles) + " |")
    lines.append("| all callers | " + " | ".join(cell(n, every) for n in profiles) + " |")
    lines.append("")
    top = sorted(every, key=lambda f: -max(by[n][f][0] * per_k[n] if f in by[n] else 0
                                            for n in profiles))
    shown = top[:15] + [f for f in top[15:] if f in listener]
    lines += ["#### Top callers: contentions / total wait (us) per 1k connections", "",
              "The 15 callers with the most contentions in any arm, then every other "
              "listener-related caller.", "",
              "| caller | on the listener's path | " + head, "|---|---|" + sep]
    summary = ["arm\tcaller\tlistener_group\tcontended_per_1k\twait_us_per_1k"]
    for f in shown:
        group = listener_group(f)
        name_cell = f"**`{f}`**" if group else f"`{f}`"
        lines.append(f"| {name_cell} | {group.split(' (')[0] if group else ''} | "
                     + " | ".join(cell(n, [f]) for n in profiles) + " |")
    for n in profiles:
        for f, (c, w) in sorted(by[n].items(), key=lambda kv: -kv[1][0]):
            summary.append(f"{n}\t{f}\t{listener_group(f) or ''}\t{c * per_k[n]:.2f}\t"
                           f"{w * per_k[n]:.1f}")
    lines.append("")
    with open(os.path.join(res, "perf_lock.tsv"), "w") as f:
        f.write("\n".join(summary) + "\n")


def per_1k(classes, conns, pat):
    """The lock_stat columns summed over the classes matching pat, per 1,000 connections."""
    k = 1000.0 / conns if conns else 0
    tot = [0.0] * 5
    for cname, v in classes.items():
        if re.search(pat, cname):
            tot = [a + b for a, b in zip(tot, v)]
    return [t * k for t in tot]


def lock_stat_section(res, docs, lines, text, keys):
    d = os.path.join(res, "lock_stat")
    profiles = {}
    for name in sorted(os.listdir(d) if os.path.isdir(d) else []):
        if name.endswith(".lock_stat"):
            profiles[name[:-len(".lock_stat")]] = parse_lock_stat(os.path.join(d, name))
    lines += ["### /proc/lock_stat (lockstat kernel)", ""]
    if not profiles:
        lines += ["**Not run**: these results have no `/proc/lock_stat` profile "
                  "(`lock_stat/` is missing or empty in `results/lockprof-latest/`).", ""]
        return
    legacy = "harness" not in keys or any(p[2] is None for p in profiles.values())
    if legacy:
        lines += ["> " + LEGACY_LOCK_NOTE, ""]
    lines += ["Counts from `/proc/lock_stat` over one run per "
              "arm, per 1,000 connections (client side included; connections as wrk counted "
              "them, or the module's accept counters in results from before issue 8); the "
              "lockstat kernel's throughput is not meaningful.", ""]
    if not legacy:
        lines += ["| arm | module |", "|---|---|"] + [
                      f"| {arm} | {p[2]} |" for arm, p in profiles.items()] + [""]
    summary = ["arm\tclass\tcon_bounces_per_1k\tcontentions_per_1k\twait_us_per_1k\tacq_bounces_per_1k"]
    lines += ["#### Named locks: contentions / con-bounces / acq-bounces per 1k connections", "",
              "| lock | " + " | ".join(profiles) + " |", "|---|" + "---|" * len(profiles)]
    for label, pat in NAMED_LOCKS:
        cells = []
        for classes, conns, _ in profiles.values():
            tot = per_1k(classes, conns, pat)
            cells.append(f"{tot[1]:.1f} / {tot[0]:.1f} / {tot[3]:.0f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += ["#### Connect path: contentions / con-bounces / acq-bounces / acquisitions per 1k "
              "connections", "",
              "The lock classes an autobinding `connect()` takes: the bind buckets while it "
              "searches a port (`__inet_hash_connect()`), the established-hash lock while it "
              "checks and inserts its 4-tuple (`__inet_check_established()`, "
              "`inet_ehash_insert()`); the ehash locks are one class named `&ptr[i]` (from "
              "`spin_lock_init(&ptr[i])` in `inet_ehash_locks_alloc()`). W3's connect()s "
              "are wrk's (stock B0 beside the module's T, with RFD, and TR0, without); W1's "
              "columns count the same classes for the client's connect()s and the server's "
              "accepts. Both sides of every connection run in this guest. One run per arm (no "
              "spread to read a difference against): compare only large differences, and "
              "re-run before quoting one.", "",
              "| lock class | " + " | ".join(profiles) + " |", "|---|" + "---|" * len(profiles)]
    for label, pat in CONNECT_LOCKS:
        cells = []
        for classes, conns, _ in profiles.values():
            tot = per_1k(classes, conns, pat)
            cells.append(f"{tot[1]:.1f} / {tot[0]:.1f} / {tot[3]:.0f} / {tot[4]:,.0f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += ["#### Top 5 contended lock classes per arm (contentions per 1k connections)", ""]
    groups = []
    for arm, (classes, conns, _) in profiles.items():
        k = 1000.0 / conns if conns else 0
        top = sorted(classes.items(), key=lambda kv: -kv[1][1])[:5]
        lines.append(f"- **{arm}** ({conns} connections): " + ", ".join(
            f"`{c}` {v[1] * k:.1f} (wait {v[2] * k:.0f} us)" for c, v in top))
        groups.append((arm, [(c[:34], v[1] * k) for c, v in top]))
        for c, v in sorted(classes.items(), key=lambda kv: -kv[1][1])[:20]:
            summary.append(f"{arm}\t{c}\t{v[0] * k:.2f}\t{v[1] * k:.2f}\t{v[2] * k:.1f}\t{v[3] * k:.1f}")
    lines.append("")
    with open(os.path.join(res, "summary.tsv"), "w") as f:
        f.write("\n".join(summary) + "\n")
    svg_bars("Top contended lock classes (contentions per 1k connections)"
             + (" [old harness, not current]" if legacy else ""), groups,
             "", os.path.join(docs, "plots", "top-locks.svg"))
    lines += ["![top locks](plots/top-locks.svg)", ""]


def current_runs(runs):
    """For each (workload, vCPUs, clock), the newest of runs (a list of (dir, keys), oldest
    first) that measured it, as an index into runs."""
    newest = {}
    for i, (d, _) in enumerate(runs):
        for r in load_bench(os.path.join(d, "bench.tsv")):
            if r["module"] != "legacy":
                newest[(r["w"], r["cpus"], r["clock"])] = i
    return newest


def current_section(runs, newest, lines):
    """The figures now current: per workload, vCPU count and clock, the arms of the newest run
    that measured it, against that run's B0."""
    lines += ["## Current figures", "",
              "For each workload, vCPU count and clock, the arms of the newest run that "
              "measured it (its section below has the details), compared with that run's B0 "
              "only: arms are compared within one run, never across runs. Median (min-max) "
              "over the run's rounds; icount differences under 0.5% are not read as "
              "differences, and a wall-clock gain counts only where icount confirms it.", "",
              "| workload | vCPUs | clock | run | arm | median (min-max) | runs | vs B0 | "
              "locality | errors |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for w in WORKLOADS:
        for cpus in sorted({k[1] for k in newest if k[0] == w}):
            for clock in ("wall", "icount"):
                i = newest.get((w, cpus, clock))
                if i is None:
                    continue
                d, keys = runs[i]
                g = group(load_bench(os.path.join(d, "bench.tsv")))
                harness = keys.get("harness", "")
                arms = ARMS if "rfd" in harness else ARMS_BEFORE_RFD
                base = g.get((clock, cpus, w, "B0"))
                base = stats(base) if base else None
                for arm in arms:
                    runs_ = g.get((clock, cpus, w, arm))
                    if not runs_:
                        continue
                    x = stats(runs_)
                    if arm == "B0" or not base:
                        vs = "1.000" if arm == "B0" else ""
                    else:
                        ratio, direction = compare(
                            x, base, ICOUNT_MIN_EFFECT if clock == "icount" else 0)
                        vs = f"{ratio:.3f}" + ("" if direction else " (within spread)")
                    loc = f"{x['locality']:.1f}%" if x["locality"] is not None else "n/a"
                    unit = "conn/s" if clock == "wall" else "conn per 1e9 instr."
                    lines.append(
                        f"| {w} | {cpus} | {clock} | {keys.get('date', '?')}, "
                        f"{keys.get('repository', '?')} | {arm} | "
                        f"{x['med']:,.1f} ({x['lo']:,.1f}-{x['hi']:,.1f}) {unit} | {x['n']} | "
                        f"{vs} | {loc} | {x['err']} |")
    lines += ["", "Arms: " + "; ".join(f"**{k}** {v}" for k, v in ARMS.items()) + ".", ""]


def history_section(runs, lines):
    """One line per run whose figures are all superseded: where its data is."""
    if not runs:
        return
    lines += ["## Earlier runs", "",
              "Runs of `make bench` whose every figure a newer run superseded; their "
              "raw data stays in `results/` (regenerate a section with `scripts/report.py`).",
              ""]
    for d, keys in runs:
        what = "full run" if d.endswith("bench-latest") else \
            keys.get("partial", "").split(";")[0]
        lines.append(f"- {keys.get('date', '?')}, repository {keys.get('repository', '?')}: "
                     f"{what}; `results/{os.path.basename(d)}/`")
    lines.append("")


def main():
    results, docs = sys.argv[1], sys.argv[2]
    lines = ["# fastsocket-rs benchmarks", "",
             "Every figure below is generated by `scripts/report.py` from the results of "
             "`make bench` and `make lockprof` (raw data in `results/*-latest/`, and "
             "`results/bench-partial-*/` for partial runs of `make bench`: a section of its "
             "own while some of its figures are current, a line under \"Earlier runs\" "
             "once none is). "
             "Guests run under QEMU TCG on a shared 2-core machine: read ratios between arms "
             "of one run, not absolute rates.", ""]
    bench = os.path.join(results, "bench-latest")
    lock = os.path.join(results, "lockprof-latest")
    full = machine(bench)[1] if os.path.exists(os.path.join(bench, "machine.txt")) else {}
    # Partial runs newer than the full run, oldest first; older ones are superseded by it.
    partial = []
    for name in sorted(os.listdir(results)):
        d = os.path.join(results, name)
        if name.startswith("bench-partial-") and os.path.exists(os.path.join(d, "bench.tsv")):
            k = machine(d)[1]
            if k.get("date", "") > full.get("date", ""):
                partial.append((d, k))
    runs = ([(bench, full)] if os.path.exists(os.path.join(bench, "bench.tsv")) else []) \
        + partial
    newest = current_runs(runs)
    if newest:
        current_section(runs, newest, lines)
    current = {runs[i][0] for i in newest.values()}
    # The full run keeps its section while some of its figures are current (or while no run
    # has any: the old harness's, shown with its warning).
    if os.path.exists(os.path.join(bench, "bench.tsv")) and (bench in current or not newest):
        bench_section(bench, docs, lines,
                      heading="## Throughput, locality, scaling: full run"
                      + (f" of {full['date']}" if "date" in full else ""),
                      later=[k for _, k in partial])
    for d, k in partial:
        if d in current:
            bench_section(d, docs, lines, heading=f"## Partial run of {k.get('date', '?')}: "
                          + k.get("partial", "").split(";")[0],
                          prefix=os.path.basename(d) + "-")
    history_section([(d, k) for d, k in runs if d not in current and
                     (d != bench or newest)], lines)
    if os.path.isdir(os.path.join(lock, "lock_stat")) or \
            os.path.isdir(os.path.join(lock, "perf_lock")):
        lockprof_section(lock, docs, lines)
    # make vfsbench (issue 12): last, so that the sections above never change with it.
    vfsreport.section(results, lines)
    with open(os.path.join(docs, "benchmarks.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    # Plots of runs that lost their section go with it.
    text = "\n".join(lines)
    plots = os.path.join(docs, "plots")
    for name in os.listdir(plots) if os.path.isdir(plots) else []:
        if re.fullmatch(r"(bench-partial-[\d-]+-)?(conn-per-arm|icount-per-arm|scaling|"
                        r"scaling-icount)\.svg", name) and f"(plots/{name})" not in text:
            os.remove(os.path.join(plots, name))


if __name__ == "__main__":
    main()
