#!/usr/bin/python3
"""Turn benchmark results into Documentation/benchmarks.md and SVG plots.

    report.py RESULTS_DIR DOC_DIR

Reads RESULTS_DIR/bench-latest/{bench.tsv,machine.txt} (from `make bench`) and
RESULTS_DIR/lockprof-latest/{lock_stat/*.lock_stat,machine.txt} (from `make lockprof`),
whichever exist; writes DOC_DIR/benchmarks.md and DOC_DIR/plots/*.svg, and
RESULTS_DIR/lockprof-latest/summary.tsv. Standard library only.
"""
import collections
import os
import re
import statistics
import sys

ARMS = {
    "B0": "stock: module not loaded, one shared listener",
    "B1": "stock + nginx `reuseport` (module not loaded)",
    "B2": "stock + reuseport + CPU BPF + tcp_migrate_req, workers pinned (module not loaded)",
    "C": "stock placement, module loaded counting only (listen_ports empty in every namespace)",
    "T": "fastsocket (defaults, in every namespace)",
    "T0": "fastsocket, listen_hold_ms=0 (in every namespace)",
}
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
    ("established hash (ehash)", r"ehash"),
    ("epoll (&ep->lock)", r"&ep->lock"),
    ("socket wait queue", r"&wq->wait|sk_wq|&sk->sk_sleep|wait#"),
]


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


def machine(res):
    """machine.txt as text and as a dict of its "key: value" lines."""
    text = open(os.path.join(res, "machine.txt")).read().strip()
    keys = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return text, keys


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
    palette = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1"]
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


def bench_section(res, docs, lines):
    rows = load_bench(os.path.join(res, "bench.tsv"))
    g = group(rows)
    text, keys = machine(res)
    legacy = "harness" not in keys or any(r["module"] == "legacy" for r in rows)
    arms = LEGACY_ARMS if legacy else ARMS
    plots = os.path.join(docs, "plots")
    os.makedirs(plots, exist_ok=True)
    lines += ["## Throughput, locality, scaling", ""]
    if legacy:
        lines += ["> " + LEGACY_NOTE, ""]
        lines += ["### Current figures until the re-run: the re-measurement reported in issue 8",
                  "", "W1 (unchanged nginx), QEMU icount, stock = module not loaded, arms "
                  "alternated; not from this report's data.", "",
                  "| vCPUs | stock: conn per 1e9 guest instr. | module (defaults) | module/stock |",
                  "|---|---|---|---|",
                  "| 1 | 7,814 | 7,755 | 0.992 |",
                  "| 2 | 7,565 | 7,476 | 0.988 |", ""]
    lines += ["Regenerate: `make bench` (wall clock and icount, 1 and 2 vCPUs; about 40 minutes "
              "on this 2-core machine).", ""]
    lines += ["```", text, "```", ""]
    lines += ["Arms: " + "; ".join(f"**{k}** {v}" for k, v in arms.items() if
                                   any(k == key[3] for key in g)) + ".", "",
              "Workloads: " + "; ".join(f"**{k}** {v}" for k, v in WORKLOADS.items()) + ".", ""]
    if legacy:
        lines += ["Locality: share of accepted connections whose handshake completed on the "
                  "accepting CPU (module counters).", ""]
    else:
        lines += ["How the arms ran: " + keys["harness"] + ".", "",
                  "How to read: **wall** is connections per second of host wall clock under "
                  "TCG (vCPUs truly parallel; host noise, and cross-vCPU hand-off latency "
                  "weighs heavily); **icount** is connections per 10^9 guest instructions "
                  "(QEMU icount, vCPUs interleaved, deterministic: it counts path length, not "
                  "cache misses). Each cell is the median with the min-max of the runs; a "
                  "ratio against B0 counts only where the two arms' ranges do not overlap, "
                  "and a wall-clock gain counts only where icount confirms it (icount differences "
                  "under 0.5% are not read as differences: identical runs differ by ~0.1%). "
                  "Locality: "
                  "share of accepted connections whose handshake completed on the accepting "
                  "CPU, from the module's counters (n/a where the module is not loaded).", ""]
    notes, headline = [], []
    for cpus in (2, 1):
        if not any(k[1] == cpus and k[0] in ("wall", "icount") for k in g):
            continue
        lines += [f"### {cpus} vCPU{'s' if cpus > 1 else ''}"
                  + (" (old harness, not current)" if legacy else ""), "",
                  "| workload | arm | module | wall conn/s: median (min-max) | runs | vs B0 | "
                  "icount conn per 1e9 instr.: median (min-max) | runs | vs B0 | "
                  "guest instr. per conn | locality (wall / icount) | errors | reading |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
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
                lines.append(f"| {w} | {arm} | {module} | " + " | ".join(cells) +
                             f" | {ipc} | {loc} | {err} | {verdict} |")
                if arm != "B0" and w in ("W1", "W2", "W3"):
                    headline.append(f"| {cpus} | {w} | {arm}/B0 | " + " | ".join(
                        f"{cmp[c][0]:.3f}" if cmp.get(c) else "" for c in ("wall", "icount"))
                        + f" | {verdict} |")
        lines.append("")
    if headline:
        lines += ["### Against stock (B0), all arms"
                  + (" (old harness, not current)" if legacy else ""), "",
                  "| vCPUs | workload | ratio | wall | icount | reading |",
                  "|---|---|---|---|---|---|"] + headline + [""]
    if notes:
        lines += ["### Where wall clock and icount disagree", ""] + notes + [""]
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
            name = "conn-per-arm.svg" if clock == "wall" else "icount-per-arm.svg"
            title += " [old harness, not current]" if legacy else ""
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
            name = "scaling.svg" if clock == "wall" else "scaling-icount.svg"
            svg_bars(f"Scaling from 1 to 2 vCPUs ({label}, median)"
                     + (" [old harness, not current]" if legacy else ""), groups, "x",
                     os.path.join(plots, name))
            lines += [f"![scaling, {label}](plots/{name})", ""]


def lockprof_section(res, docs, lines):
    d = os.path.join(res, "lock_stat")
    profiles = {}
    for name in sorted(os.listdir(d)):
        if name.endswith(".lock_stat"):
            profiles[name[:-len(".lock_stat")]] = parse_lock_stat(os.path.join(d, name))
    if not profiles:
        return
    text, keys = machine(res)
    legacy = "harness" not in keys or any(p[2] is None for p in profiles.values())
    lines += ["## Lock profile (W1, lockstat kernel)", ""]
    if legacy:
        lines += ["> " + LEGACY_LOCK_NOTE, ""]
    lines += ["Regenerate: `make lockprof`. Counts from `/proc/lock_stat` over one run per "
              "arm, per 1,000 connections (client side included; connections as wrk counted "
              "them, or the module's accept counters in results from before issue 8); the "
              "lockstat kernel's throughput is not meaningful.", ""]
    lines += ["```", text, "```", ""]
    if not legacy:
        lines += ["How the arms ran: " + keys["harness"] + ".", "",
                  "| arm | module |", "|---|---|"] + [
                      f"| {arm} | {p[2]} |" for arm, p in profiles.items()] + [""]
    summary = ["arm\tclass\tcon_bounces_per_1k\tcontentions_per_1k\twait_us_per_1k\tacq_bounces_per_1k"]
    lines += ["### Named locks: contentions / con-bounces / acq-bounces per 1k connections", "",
              "| lock | " + " | ".join(profiles) + " |", "|---|" + "---|" * len(profiles)]
    for label, pat in NAMED_LOCKS:
        cells = []
        for arm, (classes, conns, _) in profiles.items():
            k = 1000.0 / conns if conns else 0
            tot = [0.0] * 5
            for cname, v in classes.items():
                if re.search(pat, cname):
                    tot = [a + b for a, b in zip(tot, v)]
            cells.append(f"{tot[1] * k:.1f} / {tot[0] * k:.1f} / {tot[3] * k:.0f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += ["### Top 5 contended lock classes per arm (contentions per 1k connections)", ""]
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
    svg_bars("Top contended lock classes, W1 (contentions per 1k connections)"
             + (" [old harness, not current]" if legacy else ""), groups,
             "", os.path.join(docs, "plots", "top-locks.svg"))
    lines += ["![top locks](plots/top-locks.svg)", ""]


def main():
    results, docs = sys.argv[1], sys.argv[2]
    lines = ["# fastsocket-rs benchmarks", "",
             "Every figure below is generated by `scripts/report.py` from the results of "
             "`make bench` and `make lockprof` (raw data in `results/*-latest/`). "
             "Guests run under QEMU TCG on a shared 2-core machine: read ratios between arms "
             "of one run, not absolute rates.", ""]
    bench = os.path.join(results, "bench-latest")
    lock = os.path.join(results, "lockprof-latest")
    if os.path.exists(os.path.join(bench, "bench.tsv")):
        bench_section(bench, docs, lines)
    if os.path.isdir(os.path.join(lock, "lock_stat")):
        lockprof_section(lock, docs, lines)
    with open(os.path.join(docs, "benchmarks.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
