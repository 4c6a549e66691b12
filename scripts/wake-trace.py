#!/usr/bin/env python3
"""Reads the ftrace text scripts/trace-wakes.sh collects and prints one line per call of
fastsocket_wake_listener(): when, from where (`hs`: a handshake, the module's child_ready
hook; `timer`: a hold's timer), its CPU, the task that CPU was running (`<idle>` or a task),
the flags and the result, and where each worker thread sat then (CPU, and S sleeping, R
runnable, run running, woken). A summary comes first: calls by origin and result, the
timers that found their CPU busy, and the worker wake-ups that the scheduler moved to another
CPU: placed elsewhere by the wake-up itself (the scheduler's choice of CPU for a task that
slept, e.g. on a read of its connection), or moved after it, before they ran (the load
balancer taking a woken worker off a busy CPU); counted from the first call to the last (a
test's stock arm runs with the module unloaded).

    scripts/wake-trace.py TRACE [WORKER-PREFIX]
"""
import collections
import re
import sys

LINE = re.compile(r"\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+): (\w+): (.*)")
FIELD = re.compile(r"(\w+)=(\S+)")
# include/net/fastsocket.h: FASTSOCKET_WOKE_* and FASTSOCKET_WAKE_*
RESULT = {"0x0": "ANY", "0x1": "LOCAL", "0x2": "HELD", "0x3": "PULLED",
          "0xffffffffffffffff": "NONE"}
FLAGS = ((1, "pull"), (2, "hold"), (4, "spread"))


def flags(how):
    bits = int(how, 16)
    return "+".join(name for bit, name in FLAGS if bits & bit) or "none"


def main(path, prefix):
    names, where, waking = {}, {}, {}
    calls, pending = [], None
    woken, moved, placed = [], [], []
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        comm, pid, cpu, ts, event, rest = m.groups()
        cpu, pid = int(cpu), int(pid)
        f = dict(FIELD.findall(rest))
        if event == "sched_switch":
            prev, nxt = int(f["prev_pid"]), int(f["next_pid"])
            names[prev], names[nxt] = f["prev_comm"], f["next_comm"]
            where[prev] = (cpu, "S" if f["prev_state"][0] in "SDI" else "R")
            where[nxt] = (cpu, "run")
            waking.pop(nxt, None)
        elif event == "sched_wakeup":
            p = int(f["pid"])
            names[p] = f["comm"]
            where[p] = (int(f["target_cpu"]), "woken")
            if f["comm"].startswith(prefix):
                woken.append(float(ts))
                waking[p] = int(f["target_cpu"])
        elif event == "sched_migrate_task":
            p = int(f["pid"])
            state = where.get(p, (None, "?"))[1]
            where[p] = (int(f["dest_cpu"]), state)
            if p in waking and waking.pop(p) == int(f["orig_cpu"]):
                moved.append(float(ts))
            elif (state == "S" and names.get(p, "").startswith(prefix)
                  and not (pending and pending[1] == cpu)):
                # Moved while asleep, not by a pull of the call running on this CPU: the
                # scheduler's wake-up is placing it on another CPU.
                placed.append(float(ts))
        elif event == "fswake":
            workers = {p: w for p, w in where.items() if names.get(p, "").startswith(prefix)}
            pending = (ts, cpu, f"{comm}-{pid}", flags(f["how"]), workers)
        elif event == "fswaker" and pending:
            origin = "timer" if "release" in rest else "hs"
            calls.append((origin, RESULT.get(f["ret"], f["ret"])) + pending)
            pending = None
    by = collections.Counter((c[0], c[1]) for c in calls)
    busy = collections.Counter(c[4].rsplit("-", 1)[0] for c in calls
                               if c[0] == "timer" and not c[4].startswith("<idle>"))
    print("calls:", ", ".join(f"{o} {r} {n}" for (o, r), n in sorted(by.items())))
    timers = sum(n for (o, _), n in by.items() if o == "timer")
    print(f"timers that ran on a busy CPU (not on <idle>): {sum(busy.values())} of {timers}"
          + "".join(f", {n} on {comm}" for comm, n in busy.most_common()))
    # Only while the module was called: a test's stock arm runs with it unloaded.
    first, last = (float(calls[0][2]), float(calls[-1][2])) if calls else (0.0, -1.0)
    woken, moved, placed = ([t for t in times if first <= t <= last]
                            for times in (woken, moved, placed))
    print(f"worker wake-ups from the first call to the last: {len(woken)}; placed by the "
          f"scheduler (not a pull) on another CPU than the one they slept on: {len(placed)}; "
          f"moved to another CPU after the wake-up, before they ran: {len(moved)}")
    for origin, result, ts, cpu, cur, how, workers in calls:
        sat = " ".join(f"{names[p]}({p})@{c}:{s}" for p, (c, s) in sorted(workers.items()))
        print(f"{ts} {origin} cpu {cpu} running {cur} {how} {result} | {sat}")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else "accept-")
