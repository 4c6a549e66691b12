#!/usr/bin/python3
"""Exact instruction counts of the stages of one socket()+close(), from kprobe traces taken
under QEMU icount (`make vfsbench`, clock "stages"; scripts/guest/vfsbench.sh runs this in
the guest).

Under icount with shift=0 every guest instruction advances the TSC by one, so the x86-tsc
trace clock of an ftrace kprobe event is an instruction counter. One thread runs
socket()+close() in a loop on one vCPU with an entry kprobe on each function of the path:
the events of one operation come in the same order every time, and the gap between two
consecutive events is the instructions between them plus the cost of one probe hit, the
same every time (the loop is deterministic: a gap's median equals its minimum). A probe's
own cost is measured, not assumed: with every other probe of the cycle removed (passes odd
and even; both keep the first, __x64_sys_socket, which must be optimised and is given the
optimised probes' median cost), the gap a -> c equals gap(a -> b) + gap(b -> c) - cost(b). Jump-optimised
probes cost about 725 instructions each; int3 probes (where the kernel cannot optimise the
probe) cost more and split their cost around their event unevenly, so a stage is only
bounded by optimised probes: an int3 probe's neighbouring gaps are merged and its cost taken
off.

    vfsstages.py cycle TRACE          the probed functions in the order one operation hits
                                      them (from the pass with every probe)
    vfsstages.py pick odd|even TRACE  the functions a reduced pass keeps
    vfsstages.py analyse DIR ARM      DIR/{all,odd,even}.trace and DIR/kprobes.list ->
                                      stages as TSV on stdout: ARM from to instructions
                                      (one row per stage, then "# probe" rows)
    vfsstages.py selftest             analyse() on synthetic traces of a known path
                                      (`make host-test`)

Standard library only.
"""

import collections
import re
import statistics
import sys

# Gaps seen in fewer operations than this are interruptions (timer ticks, RCU callbacks in
# softirq), not the path.
MIN_SEEN = 500
START = "__x64_sys_socket"


def events(path):
    """(timestamp, function) of each kprobe event fs_FUNC of an ftrace text trace."""
    ev = []
    with open(path) as f:
        for line in f:
            m = re.search(r"\s(\d+): fs_(\w+):", line)
            if m:
                ev.append((int(m.group(1)), m.group(2)))
    return ev


def gaps(path):
    """Median gap between consecutive events, per (from, to), for pairs seen often."""
    g = collections.defaultdict(list)
    ev = events(path)
    for (t0, a), (t1, b) in zip(ev, ev[1:]):
        g[(a, b)].append(t1 - t0)
    return {k: statistics.median(v) for k, v in g.items() if len(v) >= MIN_SEEN}


def cycle(g):
    """The functions in the order one operation hits them, from START back to it."""
    succ = collections.defaultdict(list)
    for a, b in g:
        succ[a].append(b)
    order = [START]
    while True:
        nxt = succ.get(order[-1], [])
        if len(nxt) != 1:
            sys.exit(f"vfsstages: after {order[-1]}: successors {nxt}, not one")
        if nxt[0] == START:
            return order
        if nxt[0] in order:
            sys.exit(f"vfsstages: {nxt[0]} twice in one operation")
        order.append(nxt[0])


def analyse(d, arm):
    ga = gaps(f"{d}/all.trace")
    reduced = {}
    for p in ("odd", "even"):
        reduced.update(gaps(f"{d}/{p}.trace"))
    order = cycle(ga)
    n = len(order)
    int3 = set()
    with open(f"{d}/kprobes.list") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and "OPTIMIZED" not in line:
                int3.add(parts[2].split("+")[0])
    if START in int3:
        sys.exit(f"vfsstages: the probe on {START} is not optimised")
    cost = {}
    for i, b in enumerate(order[1:], 1):
        a, c = order[i - 1], order[(i + 1) % n]
        if (a, c) not in reduced:
            sys.exit(f"vfsstages: no gap {a} -> {c} in the reduced passes")
        cost[b] = ga[(a, b)] + ga[(b, c)] - reduced[(a, c)]
    opt = statistics.median(v for k, v in cost.items() if k not in int3)
    cost[START] = opt
    # Start at the first optimised probe so that every stage ends at one.
    first = next(i for i, f in enumerate(order) if f not in int3)
    order = order[first:] + order[:first]
    rows, start, acc = [], order[0], 0
    for i in range(n):
        a, b = order[i], order[(i + 1) % n]
        acc += ga[(a, b)]
        if b in int3:
            acc -= cost[b]
            continue
        rows.append((start, b, round(acc - opt)))
        start, acc = b, 0
    for a, b, x in rows:
        print(f"{arm}\t{a}\t{b}\t{x}")
    for f in order:
        print(f"# probe\t{arm}\t{f}\t{round(cost[f])}\t{'int3' if f in int3 else 'optimized'}")


def selftest():
    """Builds the three passes' traces of a known path (true gaps, probe costs split unevenly
    around int3 events) and checks that analyse() gives the true stages back."""
    import contextlib
    import io
    import tempfile

    names = [START, "f1", "f2", "f3", "f4", "f5", "f6"]
    gaps_true = [30, 120, 7, 400, 55, 900, 210]  # from names[i] to the next
    int3 = {"f2", "f5"}
    # (before, after) the event's timestamp: jump-optimised probes alike, int3 ones not.
    split = {f: ((200, 960) if f in int3 else (300, 425)) for f in names}
    with tempfile.TemporaryDirectory() as d:
        def trace(path, kept):
            t, lines = 1000, []
            for _ in range(MIN_SEEN + 100):
                for i, f in enumerate(names):
                    if f in kept:
                        t += split[f][0]
                        lines.append(f"  sockbench-9  [000] .....  {t}: fs_{f}: ({f}+0x4/0x10)")
                        t += split[f][1]
                    t += gaps_true[i]
            with open(path, "w") as out:
                out.write("\n".join(lines) + "\n")

        trace(f"{d}/all.trace", set(names))
        with open(f"{d}/kprobes.list", "w") as out:
            for f in names:
                out.write(f"ffffffff81000000  k  {f}+0x4    {'' if f in int3 else '[OPTIMIZED]'}\n")
        order = cycle(gaps(f"{d}/all.trace"))
        assert order == names, order
        for p, skip in (("odd", 1), ("even", 0)):
            trace(f"{d}/{p}.trace", {f for i, f in enumerate(order) if i == 0 or i % 2 != skip})
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            analyse(d, "x")
        rows = [ln.split("\t") for ln in out.getvalue().splitlines() if not ln.startswith("#")]
        got = {(r[1], r[2]): int(r[3]) for r in rows}
        want = {(START, "f1"): 30, ("f1", "f3"): 127, ("f3", "f4"): 400,
                ("f4", "f6"): 955, ("f6", START): 210}
        assert got == want, (got, want)
        costs = {ln.split("\t")[2]: int(ln.split("\t")[3])
                 for ln in out.getvalue().splitlines() if ln.startswith("# probe")}
        assert costs == {f: sum(split[f]) for f in names}, costs
    print("vfsstages selftest: ok")


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "selftest":
        selftest()
    elif len(sys.argv) == 3 and sys.argv[1] == "cycle":
        print(" ".join(cycle(gaps(sys.argv[2]))))
    elif len(sys.argv) == 4 and sys.argv[1] == "pick" and sys.argv[2] in ("odd", "even"):
        order = cycle(gaps(sys.argv[3]))
        # Remove every other function of the cycle but its start, which both passes keep
        # (its cost is taken as an optimised probe's: analyse checks that it is one).
        skip = 1 if sys.argv[2] == "odd" else 0
        print(" ".join(f for i, f in enumerate(order) if i == 0 or i % 2 != skip))
    elif len(sys.argv) == 4 and sys.argv[1] == "analyse":
        analyse(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
