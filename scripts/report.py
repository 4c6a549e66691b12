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
    "B0": "stock, one shared listener",
    "B1": "nginx `reuseport`",
    "B2": "reuseport + CPU BPF + tcp_migrate_req, workers pinned",
    "T": "fastsocket (defaults)",
    "T0": "fastsocket, listen_hold_ms=0",
}
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
    rows = []
    with open(path) as f:
        for line in f:
            c = line.rstrip("\n").split("\t")
            if len(c) != 9:
                continue
            rows.append(dict(clock=c[0], cpus=int(c[1]), w=c[2], arm=c[3], run=int(c[4]),
                             rate=float(c[5]), err=int(c[6]), acc=int(c[7]), loc=int(c[8])))
    return rows


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
                err=sum(r["err"] for r in runs), locality=(100.0 * loc / acc) if acc else None)


def svg_bars(title, groups, unit, path):
    """Grouped horizontal bars: groups = [(label, [(bar_label, value), ...]), ...]."""
    bar_h, gap, left, width = 16, 10, 260, 360
    n = sum(len(b) for _, b in groups)
    height = 40 + n * (bar_h + 2) + len(groups) * (gap + 18)
    vmax = max((v for _, bars in groups for _, v in bars), default=1) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" '
           f'height="{height}" font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="14" font-weight="bold">{title}</text>']
    y = 36
    palette = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1"]
    for label, bars in groups:
        out.append(f'<text x="10" y="{y + 12}" font-weight="bold">{label}</text>')
        y += 18
        for i, (bl, v) in enumerate(bars):
            w = width * v / vmax
            out.append(f'<text x="20" y="{y + 12}">{bl}</text>')
            out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                       f'fill="{palette[i % len(palette)]}"/>')
            out.append(f'<text x="{left + w + 4:.1f}" y="{y + 12}">{v:,.1f} {unit}</text>')
            y += bar_h + 2
        y += gap
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def parse_lock_stat(path):
    """{class: (con_bounces, contentions, wait_total_us, acq_bounces, acquisitions)}, conns."""
    conns, classes = 0, {}
    num = r"([\d.]+)"
    pat = re.compile(r"^\s*(\S.*?):\s+" + r"\s+".join([num] * 12) + r"\s*$")
    with open(path) as f:
        for line in f:
            if line.startswith("# connections"):
                conns = int(line.split()[2])
                continue
            m = pat.match(line)
            if m:
                v = [float(x) for x in m.groups()[1:]]
                name = m.group(1)
                old = classes.get(name, (0, 0, 0, 0, 0))
                classes[name] = tuple(a + b for a, b in zip(old, (v[0], v[1], v[4], v[6], v[7])))
    return classes, conns


def bench_section(res, docs, lines):
    rows = load_bench(os.path.join(res, "bench.tsv"))
    g = group(rows)
    plots = os.path.join(docs, "plots")
    os.makedirs(plots, exist_ok=True)
    lines += ["## Throughput, locality, scaling", "",
              "Regenerate: `make bench` (about 25 minutes on this 2-core machine).", ""]
    lines += ["```", open(os.path.join(res, "machine.txt")).read().strip(), "```", ""]
    lines += ["Arms: " + "; ".join(f"**{k}** {v}" for k, v in ARMS.items()) + ".", "",
              "Workloads: " + "; ".join(f"**{k}** {v}" for k, v in WORKLOADS.items()) + ".", "",
              "Locality: share of accepted connections whose handshake completed on the "
              "accepting CPU (module counters; in the B arms the module only counts).", ""]
    headline = []
    for clock, unit, what in (("wall", "conn/s", "wall-clock TCG, vCPUs truly parallel"),
                              ("icount", "conn per 1e9 guest instr.",
                               "QEMU icount: deterministic cost, vCPUs interleaved")):
        for cpus in (2, 1):
            keys = [k for k in g if k[0] == clock and k[1] == cpus]
            if not keys:
                continue
            extra = " guest instr. per conn |" if clock == "icount" else ""
            lines += [f"### {what}, {cpus} vCPU{'s' if cpus > 1 else ''}", "",
                      f"| workload | arm | {unit} (median) | min-max | runs | per vCPU | vs B0 | "
                      "locality | errors |" + extra, "|---|---|---|---|---|---|---|---|---|"
                      + ("---|" if extra else "")]
            for w in WORKLOADS:
                base = g.get((clock, cpus, w, "B0"))
                b0 = stats(base)["med"] if base else None
                for arm in ARMS:
                    runs = g.get((clock, cpus, w, arm))
                    if not runs:
                        continue
                    s = stats(runs)
                    ratio = f"{s['med'] / b0:.2f}" if b0 else ""
                    loc = f"{s['locality']:.1f}%" if s["locality"] is not None else "n/a"
                    ipc = f" {1e9 / s['med']:,.0f} |" if extra and s["med"] else ""
                    lines.append(f"| {w} | {arm} | {s['med']:,.1f} | {s['lo']:,.1f}-{s['hi']:,.1f} | "
                                 f"{s['n']} | {s['med'] / cpus:,.1f} | {ratio} | {loc} | {s['err']} |"
                                 + ipc)
            lines.append("")
    # Headline ratios and plots from the 2-vCPU wall-clock runs.
    for clock in ("wall", "icount"):
        for w in ("W1", "W2"):
            med = {a: stats(g[(clock, 2, w, a)])["med"] for a in ARMS if (clock, 2, w, a) in g}
            if "T" in med:
                for b in ("B0", "B1", "B2"):
                    if b in med:
                        headline.append(f"| {clock} | {w} | T/{b} | {med['T'] / med[b]:.2f} |")
    if headline:
        lines += ["### Headline ratios (2 vCPUs, medians)", "", "| clock | workload | ratio | value |",
                  "|---|---|---|---|"] + headline + [""]
    groups = []
    for w in WORKLOADS:
        bars = [(f"{a} {ARMS[a]}", stats(g[("wall", 2, w, a)])["med"])
                for a in ARMS if ("wall", 2, w, a) in g]
        if bars:
            groups.append((f"{w}: {WORKLOADS[w]}", bars))
    if groups:
        svg_bars("conn/s per arm (wall-clock TCG, 2 vCPUs, median)", groups, "conn/s",
                 os.path.join(plots, "conn-per-arm.svg"))
        lines += ["![conn/s per arm](plots/conn-per-arm.svg)", ""]
    groups = []
    for w in WORKLOADS:
        bars = []
        for a in ARMS:
            one, two = g.get(("wall", 1, w, a)), g.get(("wall", 2, w, a))
            if one and two:
                bars.append((f"{a}", stats(two)["med"] / stats(one)["med"]))
        if bars:
            groups.append((f"{w}: 2-vCPU / 1-vCPU conn/s", bars))
    if groups:
        svg_bars("Scaling from 1 to 2 vCPUs (wall clock, median)", groups, "x",
                 os.path.join(plots, "scaling.svg"))
        lines += ["![scaling](plots/scaling.svg)", ""]


def lockprof_section(res, docs, lines):
    d = os.path.join(res, "lock_stat")
    profiles = {}
    for name in sorted(os.listdir(d)):
        if name.endswith(".lock_stat"):
            profiles[name[:-len(".lock_stat")]] = parse_lock_stat(os.path.join(d, name))
    if not profiles:
        return
    lines += ["## Lock profile (W1, lockstat kernel)", "",
              "Regenerate: `make lockprof`. Counts from `/proc/lock_stat` over one run per arm, "
              "per 1,000 accepted connections (client side included); the lockstat kernel's "
              "throughput is not meaningful.", ""]
    lines += ["```", open(os.path.join(res, "machine.txt")).read().strip(), "```", ""]
    summary = ["arm\tclass\tcon_bounces_per_1k\tcontentions_per_1k\twait_us_per_1k\tacq_bounces_per_1k"]
    lines += ["### Named locks: contentions / con-bounces / acq-bounces per 1k connections", "",
              "| lock | " + " | ".join(profiles) + " |", "|---|" + "---|" * len(profiles)]
    for label, pat in NAMED_LOCKS:
        cells = []
        for arm, (classes, conns) in profiles.items():
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
    for arm, (classes, conns) in profiles.items():
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
    svg_bars("Top contended lock classes, W1 (contentions per 1k connections)", groups,
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
