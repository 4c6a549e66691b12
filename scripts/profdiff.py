#!/usr/bin/python3
"""Where each arm's guest instructions go, against stock: `make cpuprof`'s comparison.

    profdiff.py DIR        DIR: a `make cpuprof` result (bench.tsv, cpuprof/W-ARM.cpuprof)

Each .cpuprof file is `perf report --sort sym` of one measured run under QEMU icount
(shift=0: the guest's clock advances one nanosecond per guest instruction, whichever vCPU
runs it), and bench.tsv holds the run's connections per second of that clock, so 1e9 / rate
is the run's guest instructions per connection. Samples in the idle loop are time the clock
skipped to, not instructions: they are left out, and a symbol's instructions per connection
are its share of the other samples times that figure. (With several vCPUs each vCPU's
cpu-clock runs while the others execute, so samples measure vCPU time, not instructions, and
the shares are approximate where one vCPU idles while another runs.) Per workload, every arm
against B0: the total, the module's own symbols, and the symbols that moved most. A symbol
with n samples is known to about 1/sqrt(n): read differences of a few samples as noise.
Standard library only.
"""
import collections
import os
import re
import sys

IDLE = re.compile(r"^(pv_native_safe_halt|default_idle\w*|native_safe_halt|cpu_idle\w*|"
                  r"do_idle|acpi_idle\w*|intel_idle\w*|poll_idle|mwait_idle\w*)$")
MODULE = re.compile(r"fastsocket|^_RN|^rust_helper_")


def load(path):
    """(connections, event count, {symbol: percent}) of one .cpuprof file."""
    conns = events = None
    syms = collections.Counter()
    with open(path) as f:
        for line in f:
            m = re.match(r"# connections (\d+)", line)
            if m:
                conns = int(m.group(1))
            m = re.match(r"# Event count \(approx\.\): (\d+)", line)
            if m:
                events = int(m.group(1))
            m = re.match(r"\s+([\d.]+)%\s+\[[^\]]+\]\s+(.*\S)", line)
            if m:
                syms[m.group(2)] += float(m.group(1))
    if not conns or not events:
        raise SystemExit(f"{path}: no connections or event count")
    return conns, events, syms


def per_conn(prof, instructions):
    """{symbol: instructions per connection} of a loaded profile whose run took
    `instructions` per connection, and the share of its samples in the idle loop."""
    _, _, syms = prof
    idle = sum(p for s, p in syms.items() if IDLE.match(s))
    busy = 100 - idle
    return {s: p / busy * instructions for s, p in syms.items() if not IDLE.match(s)}, idle


def rates(path):
    """{(workload, arm): connections per second of the icount clock} from bench.tsv."""
    out = {}
    with open(path) as f:
        for line in f:
            row = line.rstrip("\n").split("\t")
            if len(row) >= 6 and row[0] == "cpuprof":
                out[(row[2], row[3])] = float(row[5])
    return out


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    d = sys.argv[1]
    rate = rates(os.path.join(d, "bench.tsv"))
    runs = collections.defaultdict(dict)
    for name in sorted(os.listdir(os.path.join(d, "cpuprof"))):
        m = re.match(r"(W\d)-(\w+?)(\.r\d+)?\.cpuprof$", name)
        if m and rate.get((m.group(1), m.group(2))):
            runs[m.group(1)][m.group(2)] = load(os.path.join(d, "cpuprof", name))
    for w, arms in sorted(runs.items()):
        if "B0" not in arms:
            print(f"{w}: no B0 profile to compare with")
            continue
        base, base_idle = per_conn(arms["B0"], 1e9 / rate[(w, "B0")])
        print(f"## {w}: guest instructions per connection by symbol, against B0")
        print(f"B0: {sum(base.values()):,.0f} per connection ({arms['B0'][0]:,} connections; "
              f"{base_idle:.1f}% of samples idle)")
        for arm, prof in sorted(arms.items()):
            if arm == "B0":
                continue
            cost, idle = per_conn(prof, 1e9 / rate[(w, arm)])
            total = sum(cost.values()) - sum(base.values())
            print(f"\n### {arm} ({prof[0]:,} connections): {sum(cost.values()):,.0f} per "
                  f"connection, {total:+,.0f} against B0 ({idle:.1f}% of samples idle)")
            own = sorted(((c, s) for s, c in cost.items() if MODULE.search(s)), reverse=True)
            print(f"the module's symbols and the hooks' C bodies: {sum(c for c, _ in own):,.0f}")
            for c, s in own:
                print(f"  {c:8,.0f}  {s}")
            moved = sorted(((cost.get(s, 0) - base.get(s, 0), s) for s in set(cost) | set(base)
                            if not MODULE.search(s)), key=lambda x: -abs(x[0]))
            print("other symbols that moved most (arm minus B0):")
            for c, s in moved[:15]:
                print(f"  {c:+8,.0f}  {s}")
        print()


if __name__ == "__main__":
    main()
