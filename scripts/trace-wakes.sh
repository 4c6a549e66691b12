#!/usr/bin/env bash
# Trace the listener wake-ups in a booted debug kernel while the test runner runs the tests
# FILTER names: a kprobe on fastsocket_wake_listener() (its CPU and flags, and on return its
# result) with the scheduler's switch, wake-up and migration events (ftrace, no module
# change). Shows, for each wake-up the module asked for (at the handshake, or from a hold's
# timer), which task the CPU was running and where each worker thread sat: how the test's
# misses came about (Documentation/listen.md, "Where the misses under load come from").
#
#   scripts/trace-wakes.sh OUTDIR FILTER [WORKER-PREFIX]
#
# Needs `make module userspace` first. Writes OUTDIR/tests.txt (the runner's output),
# OUTDIR/trace.txt (raw ftrace) and OUTDIR/wakes.txt (scripts/wake-trace.py's reading).
# WORKER-PREFIX names the worker threads (default `accept-`, the runner's AcceptServer).
set -euo pipefail
. "$(dirname "$0")/env.sh"
[ $# -ge 2 ] || { echo "usage: $0 OUTDIR FILTER [WORKER-PREFIX]" >&2; exit 2; }
out=$(mkdir -p "$1" && cd "$1" && pwd) filter=$2 prefix=${3:-accept-}
ko=$FASTSOCKET_CACHE/module/$FLAVOUR/fastsocket.ko
tests=$top/userspace-tests/target/release/fastsocket-tests
[ -e "$ko" ] && [ -x "$tests" ] || { log "build first: make module userspace"; exit 1; }

cat > "$out/guest.sh" <<GUEST
set -eu
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
cd /sys/kernel/tracing
echo 'p:fswake fastsocket_wake_listener cpu=%si how=%dx' > kprobe_events
echo 'r:fswaker fastsocket_wake_listener ret=\$retval' >> kprobe_events
for e in kprobes/enable sched/sched_switch/enable sched/sched_wakeup/enable \
	sched/sched_migrate_task/enable; do echo 1 > events/\$e; done
echo 60000 > buffer_size_kb
echo 1 > tracing_on
rc=0
"$tests" --module "$ko" --filter "$filter" > "$out/tests.txt" 2>&1 || rc=\$?
echo 0 > tracing_on
cat trace > "$out/trace.txt"
exit \$rc
GUEST
rc=0
bash "$top/scripts/vm-run.sh" --rwdir "$out" -- bash "$out/guest.sh" || rc=$?
python3 "$top/scripts/wake-trace.py" "$out/trace.txt" "$prefix" > "$out/wakes.txt"
log "$(tail -n1 "$out/tests.txt"); wake-ups in $out/wakes.txt"
exit $rc
