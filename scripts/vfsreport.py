"""The `make vfsbench` section of Documentation/benchmarks.md (issue 12), for scripts/report.py.

Reads RESULTS/vfsbench-latest/{machine.txt,vfsbench.tsv,profile/*.folded,profile/*.perf_report}
and the stages.tsv of the newest RESULTS/vfsbench-*/ that has one, and appends its Markdown
lines; scripts/report.py calls section() after its own sections, so
the sections before it do not change. Standard library only.
"""
import collections
import os
import statistics

import vfsprof

CASES = [
    ("socket", "`socket(AF_INET, SOCK_STREAM)` + `close()`"),
    ("socketpair", "`socketpair(AF_UNIX, SOCK_STREAM)` + `close()` of both (2 sockets)"),
    ("accept", "`accept()` + `close()`, client `socket()`/`connect()`/`read()` to EOF/`close()` "
               "in another netns over veth (a whole connection)"),
]
CONFIGS = [("threads", 1), ("threads", 2), ("procs", 1), ("procs", 2)]
ARMS = ["stock", "T"]
# Arms that tell the module's parts apart (scripts/guest/vfsbench.sh, VFSBENCH_ARMS): the
# module loaded with one part off in both namespaces.
PART_ARMS = [("C", "`enabled=0`: every hook called, none does anything"),
             ("TR0", "`rfd=0`: accept locality without Receive Flow Deliver"),
             ("TL0", "`listen_ports` empty: Receive Flow Deliver without accept locality"),
             ("TH0", "`listen_hold_ms=0`: no hold"),
             ("TP0", "`listen_pull=0`: no pull"),
             ("TQ0", "`listen_queues=0`: the listener's own queue, no per-CPU queues"),
             ("TV0", "`vfs=0`: no lightweight socket files")]
# Identical icount runs differ by far less than this: a smaller difference is not read as one.
ICOUNT_MIN_EFFECT = 0.005


def load(path):
    """Rows of vfsbench.tsv (12 columns)."""
    rows = []
    with open(path) as f:
        for line in f:
            c = line.rstrip("\n").split("\t")
            if len(c) != 12:
                continue
            rows.append(dict(clock=c[0], cpus=int(c[1]), case=c[2], mode=c[3], workers=int(c[4]),
                             arm=c[5], round=int(c[6]), slot=int(c[7]), module=c[8],
                             ops=int(c[9]), ns=int(c[10]), idle=int(c[11])))
    return rows


def summary(values):
    return dict(med=statistics.median(values), lo=min(values), hi=max(values), n=len(values))


def fmt(s, digits=0):
    return f"{s['med']:,.{digits}f} ({s['lo']:,.{digits}f}–{s['hi']:,.{digits}f})"


def compare(t, stock, min_effect=0.0):
    """T against stock: ratio of medians and whether the min-max ranges are apart."""
    ratio = t["med"] / stock["med"]
    apart = (t["lo"] > stock["hi"] or t["hi"] < stock["lo"]) and abs(ratio - 1) >= min_effect
    return f"{ratio:.3f}" + (" (ranges apart)" if apart else "")


def per_op(rows, clock):
    """{(case, mode, workers, arm): [value per run]}: icount on one vCPU: instructions per
    operation, (elapsed - idle) / ops; icount on more: guest ns per operation; wall: ops/s."""
    out = collections.defaultdict(list)
    for r in rows:
        if r["clock"] != clock:
            continue
        if clock == "icount":
            if r["idle"] > r["ns"]:
                # An idle period from before the window, accounted late (see sockbench's
                # idle_ns): the run cannot be read; "Runs per cell" shows it missing.
                continue
            busy = r["ns"] - r["idle"] if r["cpus"] == 1 else r["ns"]
            v = busy / r["ops"]
        else:
            v = r["ops"] / (r["ns"] / 1e9)
        out[(r["case"], r["mode"], r["workers"], r["arm"])].append(v)
    return out


def parts_table(rows, lines, clock):
    """What each part of the module costs: the arms of PART_ARMS beside stock and T, when the
    run had them: icount instructions per operation (1 vCPU) and the difference from stock,
    or wall-clock operations per second and the ratio to stock."""
    vals = per_op([r for r in rows if clock == "wall" or r["cpus"] == 1], clock)
    present = [(a, d) for a, d in PART_ARMS if any(k[3] == a for k in vals)]
    if not present:
        return
    arms = ["stock", "T"] + [a for a, _ in present]
    what = ("guest instructions per operation (icount, 1 vCPU), median (min–max), and the "
            "median's difference from stock" if clock == "icount" else
            "operations per second (wall clock, 2 vCPUs), median (min–max), and the ratio of "
            "medians to stock")
    lines += [f"**What each part costs, {clock}**: {what}. "
              + "; ".join(f"**{a}**: the module loaded, {d}" for a, d in present) + ".", "",
              "| case | workers | " + " | ".join(arms) + " |",
              "|---|---|" + "---|" * len(arms)]
    for case, _ in CASES:
        for mode, w in CONFIGS:
            st = {a: summary(vals[(case, mode, w, a)]) for a in arms
                  if vals.get((case, mode, w, a))}
            if "stock" not in st or len(st) < 2:
                continue
            base = st["stock"]["med"]
            diff = (lambda m: f" ({m - base:+,.0f})") if clock == "icount" else \
                (lambda m: f" {m / base:.2f}x")
            cells = [fmt(st[a]) + ("" if a == "stock" else diff(st[a]["med"]))
                     if a in st else "not run" for a in arms]
            lines.append(f"| {case} | {w} {mode[:-1] if w == 1 else mode} | "
                         + " | ".join(cells) + " |")
    lines.append("")


def table(rows, clock, lines):
    vals = per_op(rows, clock)
    cpus = sorted({r["cpus"] for r in rows if r["clock"] == clock})
    idle = collections.defaultdict(list)
    for r in rows:
        if r["clock"] == clock:
            idle[(r["case"], r["mode"], r["workers"], r["arm"])].append(r["idle"] / r["ns"])
    if clock == "icount" and cpus == [1]:
        unit = "guest instructions per operation"
        what = ("(elapsed − idle) / operations: on one vCPU under icount guest time advances "
                "by the instructions executed (1 ns each, `shift=0`), and idle time (which it "
                "jumps over) is measured and taken off")
    elif clock == "icount":
        unit = "guest ns per operation"
        what = ("guest time per operation on several vCPUs: the instructions of every vCPU "
                "summed, plus periods when all were idle (not separable)")
    else:
        unit = "operations per second"
        what = "operations per second of guest wall-clock time (2 vCPUs, QEMU TCG)"
    lines += [f"**{clock}** ({', '.join(str(c) for c in cpus)} vCPU(s)): {unit}, median "
              f"(min–max) over the rounds; {what}.", ""]
    head = "| case | workers | stock | T | T / stock |"
    sep = "|---|---|---|---|---|"
    if clock == "icount":
        head += " idle, max share of a window |"
        sep += "---|"
    lines += [head, sep]
    for case, _ in CASES:
        for mode, w in CONFIGS:
            s = {a: vals.get((case, mode, w, a)) for a in ARMS}
            if not s["stock"] and not s["T"]:
                continue
            st = {a: summary(v) for a, v in s.items() if v}
            cells = [fmt(st[a]) if a in st else "not run" for a in ARMS]
            ratio = (compare(st["T"], st["stock"], ICOUNT_MIN_EFFECT if clock == "icount"
                             else 0.0) if len(st) == 2 else "")
            n = max(x["n"] for x in st.values())
            row = f"| {case} | {w} {mode[:-1] if w == 1 else mode} | " + " | ".join(cells) \
                + f" | {ratio} |"
            if clock == "icount":
                m = max(max(idle[(case, mode, w, a)]) for a in ARMS if (case, mode, w, a) in idle)
                row += f" {100 * m:.1f}% |"
            lines.append(row)
    n = {len(v) for v in vals.values()}
    lines += ["", f"Runs per cell: {', '.join(str(x) for x in sorted(n))}.", ""]


def profile_section(res, lines, per_op_1t):
    """per_op_1t: {case: stock instructions per operation, 1 thread, icount on 1 vCPU}, or
    empty where there is no such figure."""
    d = os.path.join(res, "profile")
    # Stock's columns (CASE), then the module's where it was profiled too (CASE.T).
    got = {c: os.path.join(d, c + ".folded") for c in ("socket", "accept", "socket.T", "accept.T")
           if os.path.exists(os.path.join(d, c + ".folded"))}
    lines += ["### Where the instructions go: perf profile, stock (module not loaded) and T", ""]
    if not got:
        lines += ["**Not run**: `results/vfsbench-latest/profile/` has no folded profile.", ""]
        return
    prof = {c: vfsprof.classify(p) for c, p in got.items()}
    lines += ["One boot under QEMU icount (the same vCPU count as the icount table), module not "
              "loaded for the columns socket and accept, loaded with its defaults for socket.T "
              "and accept.T (where VFSBENCH_PROFILE_ARMS names T): `perf record -a -g` (cpu-clock; its frequency in the lines below) around one sockbench run of each "
              "case with 1 thread, `perf script` folded per call chain by `scripts/vfsprof.py "
              "fold` (raw: `results/vfsbench-latest/profile/*.folded`, and perf's own `perf "
              "report --no-children --sort sym` in `*.perf_report`). Under icount the sampling "
              "clock is guest time, so busy samples fall in proportion to instructions executed. "
              "A sample belongs to the group of the innermost function in its call chain that a "
              "group names (see `scripts/vfsprof.py`; a spinlock sample whose caller is "
              "`alloc_fd`/`file_close_fd`/... is `files->file_lock`'s). Of the three objects only "
              "the inode is freed through RCU (`destroy_inode` → `call_rcu(i_callback)` → "
              "`sock_free_inode`); that callback ends in a tail call into the slab allocator, "
              "so its stacks show only `rcu_core` → `kmem_cache_free`/`__slab_free` and it is "
              "counted under \"RCU callbacks and frees\", not under inode. The dentry "
              "(`DCACHE_NORCU`, from `d_alloc_pseudo`) and the file (`SLAB_TYPESAFE_BY_RCU`) are "
              "freed at once. Samples of the idle loop and of user space are "
              "counted apart; shares are of the busy kernel samples. The start-up and exit of "
              "the sockbench process (exec, page faults, reading the binary over 9p) is a group "
              "of its own: it is not part of the loop.", ""]
    for c, r in prof.items():
        lines.append(f"- **{c}**: " + "; ".join(h for h in r["header"]) + f". Samples: {r['total']:,} "
                     f"in all, {r['kernel']:,} busy kernel, {r['idle']:,} idle, {r['user']:,} user.")
    lines.append("")
    cols = list(prof)
    start = "process start-up and exit (exec, page faults, 9p reads)"
    # The loop's samples: busy kernel and user, less the process's start-up and exit.
    loop = {c: prof[c]["kernel"] + prof[c]["user"] - prof[c]["groups"][start] for c in cols}
    est = {c: per_op_1t[c] / max(loop[c], 1) for c in cols if c in per_op_1t}
    lines += ["| group | " + " | ".join(
        f"{c}: samples (share of busy kernel)" + (", ≈ instructions per op" if c in est else "")
        for c in cols) + " | top leaf functions (" + ", ".join(cols) + ") |",
        "|---|" + "---|" * len(cols) + "---|"]
    vfs_tot = {c: 0 for c in cols}
    for g in vfsprof.ORDER:
        cells = []
        for c in cols:
            r = prof[c]
            n = r["groups"][g]
            if g in vfsprof.VFS_GROUPS:
                vfs_tot[c] += n
            cells.append(f"{n:,} ({100.0 * n / max(r['kernel'], 1):.1f}%)"
                         + (f", ≈ {n * est[c]:,.0f}" if c in est and g != start else ""))
        tops = "; ".join(", ".join(f"`{s}` {k}" for s, k in prof[c]["leaves"][g].most_common(3))
                         or "–" for c in cols)
        name = f"**{g}**" if g in vfsprof.VFS_GROUPS else g
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {tops} |")
    lines.append("| **all socket-file groups (bold)** | " + " | ".join(
        f"**{vfs_tot[c]:,} ({100.0 * vfs_tot[c] / max(prof[c]['kernel'], 1):.1f}%)"
        + (f", ≈ {vfs_tot[c] * est[c]:,.0f}" if c in est else "") + "**"
        for c in cols) + " | |")
    lines.append("| user space | " + " | ".join(
        f"{prof[c]['user']:,}" + (f", ≈ {prof[c]['user'] * est[c]:,.0f}" if c in est else "")
        for c in cols) + " | |")
    lines.append("| the socket-file groups' share of the loop's samples (busy kernel + user − "
                 "start-up/exit) | " + " | ".join(
                     f"**{100.0 * vfs_tot[c] / max(loop[c], 1):.1f}%** of {loop[c]:,}"
                     for c in cols) + " | |")
    lines.append("")
    acc = prof.get("accept")
    if acc and acc["has_tid"]:  # stock's
        srv = sum(acc["server"].values())
        vfs = sum(acc["server"][g] for g in vfsprof.VFS_GROUPS)
        e = est.get("accept")
        lines += ["The accepting thread's own `accept()` and `close()` calls in accept()+close() "
                  "(its samples with `__x64_sys_accept4` or `__x64_sys_close` in the chain and no "
                  "softirq frame: the server's system calls without the segments the network "
                  f"processes for them): {srv:,} samples"
                  + (f" (≈ {srv * e:,.0f} instructions per connection)" if e else "")
                  + f", of which the socket-file groups {vfs:,} ({100.0 * vfs / max(srv, 1):.1f}%)"
                  + (f", ≈ {vfs * e:,.0f}" if e else "") + "; by group: "
                  + ", ".join(f"{g} {acc['server'][g]:,}" for g in vfsprof.ORDER
                              if acc["server"][g]) + ".", ""]
    lines += ["Bold: the groups a lighter socket-file path works on (the inode, dentry, file, "
              "descriptor, their LSM hooks, `files->file_lock` and the RCU frees)."
              + (" ≈ instructions per op: a group's share of the loop's samples times the stock "
                 "(or T's) 1-thread instructions per operation of the icount table (an estimate: the "
                 "profiled run is another run of the same loop, and sampling attributes an "
                 "interrupts-off stretch to where interrupts come back on)." if est else "")
              + " Their share of the loop is the most a path that removed them entirely could "
              "save per operation (Documentation/vfs.md).", ""]
    for c in cols:
        rep = os.path.join(d, c + ".perf_report")
        if not os.path.exists(rep):
            continue
        top = [ln.rstrip() for ln in open(rep) if ln.strip().endswith(tuple("abcdefghijklmnopqrstuvwxyz0123456789_]"))
               and "%" in ln and not ln.startswith("#")][:15]
        lines += [f"Top 15 symbols by self samples, {c} (`perf report --no-children --sort sym`; "
                  "idle and start-up included):", "", "```"] + top + ["```", ""]


def machine(res):
    """A results directory's machine.txt: its text and its "key: value" lines."""
    with open(os.path.join(res, "machine.txt")) as f:
        text = f.read().strip()
    return text, dict(ln.split(": ", 1) for ln in text.splitlines() if ": " in ln)


def section(results, lines):
    res = os.path.join(results, "vfsbench-latest")
    if not os.path.exists(os.path.join(res, "machine.txt")):
        return
    text, keys = machine(res)
    rows = load(os.path.join(res, "vfsbench.tsv")) if os.path.exists(
        os.path.join(res, "vfsbench.tsv")) else []
    lines += [f"## Socket-file microbenchmark (`make vfsbench`, {keys.get('date', '?')})", "",
              "Regenerate: `make vfsbench` (VFSBENCH_ROUNDS rounds, VFSBENCH_OPS_* operations per "
              "worker, VFSBENCH_ICOUNT_CPUS; see `scripts/vfsbench.sh`), then `python3 "
              "scripts/report.py results Documentation`. The loops are `bench/sockbench`; "
              "Documentation/vfs.md reads these figures.", "", "```", text, "```", "",
              "What one operation is:", ""]
    lines += [f"- **{c}**: {d}" for c, d in CASES]
    lines += ["", "Workers: N threads of one process (one descriptor table, one "
              "`files->file_lock`) or N processes (a table each); each worker runs the fixed "
              "number of operations; the window runs from the first worker's start to the last "
              "one's end (warm-up outside it). Arms: **stock** = the module not loaded; **T** = "
              "the current module loaded with its defaults: its socket pair cache (`vfs=1`, the "
              "first step of the lighter socket-file path) for every case, and for accept its "
              "listen path and Receive Flow Deliver (accept's listener and the client's "
              "connect()s are in its scope); a run without a TV0 arm (below) predates the cache "
              "and had no socket-file path.", ""]
    icount_cpus = sorted({r["cpus"] for r in rows if r["clock"] == "icount"})
    for clock in ("icount", "wall"):
        if any(r["clock"] == clock for r in rows):
            table(rows, clock, lines)
        else:
            lines += [f"**{clock}**: not run.", ""]
    per_op_1t = {}
    if icount_cpus == [1]:
        vals = per_op(rows, "icount")
        per_op_1t = {c + suffix: statistics.median(vals[(c, "threads", 1, arm)])
                     for c, _ in CASES for arm, suffix in (("stock", ""), ("T", ".T"))
                     if vals.get((c, "threads", 1, arm))}
    for clock in ("icount", "wall"):
        parts_table(rows, lines, clock)
    profile_section(res, lines, per_op_1t)
    stages_section(results, lines)


# What each stage of socket()+close() is (scripts/vfsstages.py): (from, to) -> (group, what).
STAGES = {
    ("__x64_sys_socket", "__sock_create"): ("system call", "socket() entry"),
    ("__sock_create", "sock_alloc"): ("LSM", "`security_socket_create`"),
    ("sock_alloc", "alloc_inode"): ("inode", "`new_inode_pseudo`"),
    ("alloc_inode", "inode_init_always_gfp"):
        ("inode", "`sock_alloc_inode`: the slab object, the socket's wait queue"),
    ("sock_alloc", "__fastsocket_sock_pair_get"): ("inode", "the pair_get hook's inline test"),
    ("__sock_create", "__fastsocket_sock_pair_get"):
        ("LSM", "`security_socket_create`, `sock_alloc`, the pair_get hook's inline test"),
    ("__sock_create", "alloc_inode"): ("LSM", "`security_socket_create`, `new_inode_pseudo`"),
    ("__fastsocket_sock_pair_get", "get_next_ino"):
        ("inode", "the module's `pair_get`, the socket's wait queue and fields"),
    ("inode_init_always_gfp", "security_inode_alloc"): ("inode", "`inode_init_always`"),
    ("security_inode_alloc", "get_next_ino"): ("inode", "the inode's LSM blob"),
    ("get_next_ino", "inet_create"): ("inode", "inode number, mode, owner"),
    ("inet_create", "sk_alloc"): ("protocol", "`inet_create`"),
    ("sk_alloc", "security_sk_alloc"): ("protocol", "`sk_prot_alloc`: the TCP socket, zeroed"),
    ("security_sk_alloc", "get_unused_fd_flags"):
        ("protocol", "`sock_init_data`, `tcp_v4_init_sock`, `security_socket_post_create`"),
    ("get_unused_fd_flags", "sock_alloc_file"): ("descriptor", "`alloc_fd`"),
    ("sock_alloc_file", "alloc_file_pseudo"): ("dentry", "`sock_alloc_file`"),
    ("alloc_file_pseudo", "d_alloc_pseudo"): ("dentry", "`mntget`"),
    ("d_alloc_pseudo", "d_instantiate"): ("dentry", "`d_alloc_pseudo`: the dentry"),
    ("d_instantiate", "alloc_empty_file"): ("dentry", "`d_instantiate`"),
    ("alloc_empty_file", "security_file_alloc"):
        ("file", "`alloc_empty_file`: the file, zeroed, `nr_files`, cred"),
    ("security_file_alloc", "fd_install"): ("file", "the file's LSM blob, `file_init_path`"),
    ("fd_install", "__x64_sys_close"):
        ("system call", "`fd_install`, back to user space, the loop, close() entry"),
    ("__x64_sys_close", "file_close_fd"): ("descriptor", ""),
    ("file_close_fd", "filp_flush"): ("descriptor", "`file_close_fd`"),
    ("filp_flush", "__fput"): ("file", "`filp_flush`, `__fput_sync`"),
    ("__fput", "sock_close"): ("file", "fsnotify, eventpoll, locks, LSM on release"),
    ("sock_close", "__sock_release"): ("protocol", ""),
    ("__sock_release", "inet_release"): ("protocol", "`i_rwsem`"),
    ("inet_release", "tcp_close"): ("protocol", ""),
    ("tcp_close", "sk_free"): ("protocol", "`tcp_close`"),
    ("sk_free", "__dentry_kill"):
        ("protocol", "`sk_free`, the socket's release; `dput` up to the kill"),
    ("__dentry_kill", "evict"): ("dentry", "`__dentry_kill`, `iput`"),
    ("evict", "truncate_inode_pages_final"): ("inode", "`evict`"),
    ("truncate_inode_pages_final", "clear_inode"): ("inode", "`truncate_inode_pages_final`"),
    ("clear_inode", "destroy_inode"): ("inode", "`clear_inode`, `__I_NEW` wake-up"),
    ("destroy_inode", "__x64_sys_socket"):
        ("mixed", "`__destroy_inode` (LSM, fsnotify), `call_rcu`, the dentry's free, "
                  "`mntput`, `file_free`, back to user space, the loop, socket() entry"),
    ("sock_alloc_file", "alloc_file_path"): ("dentry", "the kept dentry, `mntget`"),
    ("alloc_file_path", "alloc_empty_file"): ("file", ""),
    ("sk_free", "__fastsocket_sock_pair_put"):
        ("protocol", "`sk_free`, the socket's release, the pair_put hook's tests"),
    ("__fastsocket_sock_pair_put", "mntput"): ("dentry", "the module's `pair_put`, `dput`"),
    ("__fastsocket_sock_pair_put", "__x64_sys_socket"):
        ("mixed", "the module's `pair_put`, `dput`, `mntput`, `file_free`, back to user "
                  "space, the loop, socket() entry"),
    ("mntput", "__x64_sys_socket"):
        ("mixed", "`mntput`, `file_free`, back to user space, the loop, socket() entry"),
}


def stages_section(results, lines):
    """Exact instructions per stage of socket()+close() (VFSBENCH_CLOCKS=stages), from the
    newest vfsbench results that have them."""
    found = []
    for name in os.listdir(results):
        d = os.path.join(results, name)
        if name.startswith("vfsbench-") and os.path.exists(os.path.join(d, "stages.tsv")):
            # Newest by the run's own date ("YYYY-MM-DD HH:MM UTC" sorts as text).
            found.append((machine(d)[1].get("date", ""), d, name))
    if not found:
        return
    _, res, name = max(found)
    text, keys = machine(res)
    # Rows "ARM from to instructions" and "# base ARM instructions"; "# probe" rows (each
    # probe's measured cost) are for reading, not shown.
    stages, base = collections.defaultdict(list), collections.defaultdict(list)
    with open(os.path.join(res, "stages.tsv")) as f:
        for line in f:
            c = line.rstrip("\n").split("\t")
            if c[0] == "# base":
                base[c[1]].append(int(c[2]))
            elif len(c) == 4 and not c[0].startswith("#"):
                stages[c[0]].append((c[1], c[2], int(c[3])))
    arms = [a for a in ARMS if a in stages] + [a for a in stages if a not in ARMS]
    order = []
    for arm in arms:
        prev = None
        for a, b, _ in stages[arm]:
            if (a, b) not in order:
                order.insert(order.index(prev) + 1 if prev in order else len(order), (a, b))
            prev = (a, b)
    val = {arm: {(a, b): x for a, b, x in stages[arm]} for arm in arms}
    lines += [f"### Where the instructions go, exactly: socket() + close() by stage ({keys.get('date', '?')})",
              "", f"`results/{name}/stages.tsv`; regenerate: `VFSBENCH_CLOCKS=stages make "
              "vfsbench` (one boot, icount, 1 vCPU, about 6 minutes; scripts/vfsstages.py says "
              "how). One thread runs socket() + close() "
              f"{keys.get('stage ops', '3,000')} times with an entry kprobe on each function of "
              "the path; under icount the x86-tsc trace clock counts instructions, so the gap "
              "between two consecutive probes is the instructions between them plus the probe's "
              "own cost, which is measured (two more passes with every other probe removed) and "
              "taken off. Each figure is a median over the operations; the loop is deterministic "
              "(a gap's median is its minimum). Work that interrupts the loop at varying points "
              "(the RCU callbacks that free inodes, timer ticks) is in no stage: it is the "
              "difference between the operation without probes (sockbench's own count; the first "
              "run after a boot or an insmod may misread its idle time and count too few) and "
              "the stages' sum. Stages across an int3 probe (one the kernel could not "
              "optimise into a jump) are merged into one row.", "",
              "| stage (from the entry of ... to the entry of ...) | group | what | "
              + " | ".join(arms) + " |", "|---|---|---|" + "---|" * len(arms)]
    groups = collections.defaultdict(lambda: collections.defaultdict(int))
    for a, b in order:
        g, what = STAGES.get((a, b), ("?", ""))
        cells = []
        for arm in arms:
            x = val[arm].get((a, b))
            cells.append(f"{x:,}" if x is not None else "")
            if x is not None:
                groups[g][arm] += x
        lines.append(f"| `{a}` -> `{b}` | {g} | {what} | " + " | ".join(cells) + " |")
    lines.append("| **sum of the stages** | | | " + " | ".join(
        f"**{sum(val[a].values()):,}**" for a in arms) + " |")
    lines.append("| one operation without probes (sockbench, runs) | | | " + " | ".join(
        " / ".join(f"{x:,}" for x in base.get(a, [])) for a in arms) + " |")
    lines += ["", "By group (the mixed row holds the dentry's and the file's frees, `mntput` and "
              "the return to user space, which no optimised probe separates):", "",
              "| group | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for g in ("inode", "dentry", "file", "descriptor", "LSM", "protocol", "system call",
              "mixed", "?"):
        if g in groups:
            lines.append(f"| {g} | " + " | ".join(f"{groups[g].get(a, 0):,}" for a in arms)
                         + " |")
    lines.append("")
