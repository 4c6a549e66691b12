#!/usr/bin/env bash
# `make vfsbench`: the socket-file microbenchmark (bench/sockbench, issue 12) on the perf
# kernel, then the report in Documentation/benchmarks.md. Four boots:
#   1. wall clock, 2 vCPUs: VFSBENCH_ROUNDS rounds x arms (stock, T) x cases
#   2. QEMU icount, VFSBENCH_ICOUNT_CPUS (1) vCPU(s): the same. Guest time advances by the
#      instructions executed (shift=0: 1 ns each), summed over all vCPUs, and jumps over
#      periods when every vCPU is idle; on 1 vCPU that idle time is the /proc/stat idle the
#      guest script records, so ns per operation minus idle is instructions per operation.
#      The 2-worker cases then time-share the one vCPU: no parallelism, no cross-CPU
#      traffic; their contention shows in the wall-clock boot.
#   3. QEMU icount, VFSBENCH_ICOUNT_CPUS vCPU(s), the arms of VFSBENCH_PROFILE_ARMS (stock):
#      perf record -a -g around socket()+close() and accept()+close() (1 thread), folded and
#      grouped by scripts/vfsprof.py (cpu-clock samples in virtual time: proportional to
#      instructions)
#   4. QEMU icount, 1 vCPU, the arms of VFSBENCH_STAGE_ARMS (stock T): socket()+close() with
#      a kprobe on each function of its path, whose x86-tsc timestamps are instruction counts
#      under icount: exact instructions per stage (scripts/vfsstages.py), in stages.tsv
# Results in $FASTSOCKET_CACHE.results/vfsbench-STAMP, copied to results/vfsbench-latest.
#
# VFSBENCH_ROUNDS (6) rounds; VFSBENCH_OPS_SOCKET (40000), VFSBENCH_OPS_SOCKETPAIR (20000),
# VFSBENCH_OPS_ACCEPT (1500) timed operations per worker and run (see
# scripts/guest/vfsbench.sh); VFSBENCH_CLOCKS ("wall icount profile stages") the boots that run. A run
# with VFSBENCH_CLOCKS, VFSBENCH_CASES or VFSBENCH_CONFIGS (e.g. "threads:1 procs:2") set is
# partial: kept as results/vfsbench-partial-STAMP, results/vfsbench-latest unchanged.
# VFSBENCH_ARMS ("stock T"; also C, TR0, TL0, TH0, TP0, TQ0, TV0: the module with one part or knob
# off, see scripts/guest/vfsbench.sh) and VFSBENCH_PROFILE_ARMS ("stock") choose the arms.
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "$0")/env.sh"
rounds=${VFSBENCH_ROUNDS:-6}
clocks=${VFSBENCH_CLOCKS:-wall icount profile stages}
cpus=2 icpus=${VFSBENCH_ICOUNT_CPUS:-1}
[ "$rounds" -ge 1 ] || { echo "VFSBENCH_ROUNDS: at least 1" >&2; exit 2; }
export VFSBENCH_OPS_SOCKET=${VFSBENCH_OPS_SOCKET:-40000}
export VFSBENCH_OPS_SOCKETPAIR=${VFSBENCH_OPS_SOCKETPAIR:-20000}
export VFSBENCH_OPS_ACCEPT=${VFSBENCH_OPS_ACCEPT:-1500}
export VFSBENCH_STAGE_OPS=${VFSBENCH_STAGE_OPS:-3000}
partial=0
[ -n "${VFSBENCH_CLOCKS:-}${VFSBENCH_CASES:-}${VFSBENCH_CONFIGS:-}" ] && partial=1
ko=$FASTSOCKET_CACHE/module/$FLAVOUR/fastsocket.ko
# The guest gets its knobs on its command line (it does not inherit this environment).
genv=(env VFSBENCH_OPS_SOCKET="$VFSBENCH_OPS_SOCKET" VFSBENCH_OPS_SOCKETPAIR="$VFSBENCH_OPS_SOCKETPAIR"
	VFSBENCH_OPS_ACCEPT="$VFSBENCH_OPS_ACCEPT" VFSBENCH_CASES="${VFSBENCH_CASES:-socket socketpair accept}")
for v in VFSBENCH_PROFILE_OPS_SOCKET VFSBENCH_PROFILE_OPS_ACCEPT VFSBENCH_PROFILE_FREQ VFSBENCH_PROFILE_ARMS VFSBENCH_ARMS VFSBENCH_CONFIGS VFSBENCH_STAGE_ARMS VFSBENCH_STAGE_OPS; do
	[ -z "${!v:-}" ] || genv+=("$v=${!v}")
done
[ -e "$ko" ] || { log "no module at $ko (make module-perf)"; exit 1; }

log "building bench/sockbench"
(cd "$top/bench/sockbench" && cargo build -q --release --locked)

stamp=$(date -u +%Y%m%d-%H%M%S)
out=$FASTSOCKET_CACHE.results/vfsbench-$stamp
mkdir -p "$out" "$top/results"
{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "host: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p')"
	echo "kernel: $KERNEL_PKG_VERSION, flavour $FLAVOUR; rustc $(/usr/bin/rustc --version | cut -d' ' -f2)"
	echo "qemu: $(qemu-system-x86_64 --version | head -1 | cut -d' ' -f4)"
	echo "perf: $(perf --version | cut -d' ' -f3)"
	echo "repository: $(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)"
	echo "vcpus: wall $cpus, icount and profile $icpus, stages 1"
	echo "stage ops: $VFSBENCH_STAGE_OPS"
	echo "rounds: $rounds"
	echo "ops per worker: socket $VFSBENCH_OPS_SOCKET, socketpair $VFSBENCH_OPS_SOCKETPAIR, accept $VFSBENCH_OPS_ACCEPT (+10% untimed warm-up per run)"
	echo "harness: arms stock (module not loaded, rmmod) and T (the module loaded afresh with its defaults, read back in the initial and client namespaces), in lib.sh's Williams order per round (stock T, then T stock, ...), every case of an arm after one insmod/rmmod; cases socket, socketpair, accept at 1 and 2 threads and 1 and 2 processes; accept's client in its own netns over veth (one client thread per worker), net.ipv4.tcp_max_tw_buckets=0 in the server's namespace (no TIME_WAIT: every connection takes the same path)"
	[ -z "${VFSBENCH_NOTE:-}" ] || echo "note: $VFSBENCH_NOTE"
	[ -z "${VFSBENCH_ARMS:-}" ] || echo "arms: $VFSBENCH_ARMS (scripts/guest/vfsbench.sh, module_for, says what each is)"
	[ -z "${VFSBENCH_PROFILE_ARMS:-}" ] || echo "profile arms: $VFSBENCH_PROFILE_ARMS"
	[ "$partial" = 0 ] || echo "partial: clocks $clocks; cases ${VFSBENCH_CASES:-all}; workers ${VFSBENCH_CONFIGS:-all}"
} >"$out/machine.txt"

for clock in $clocks; do
	t0=$SECONDS
	case "$clock" in
	wall | icount)
		icount=() n=$cpus
		[ "$clock" = icount ] && icount=(--icount) n=$icpus
		log "$clock, $n vCPU(s): $rounds rounds"
		bash "$top/scripts/vm-run.sh" --cpus "$n" "${icount[@]}" --rwdir "$out" -- \
			"${genv[@]}" bash "$top/scripts/guest/vfsbench.sh" "$ko" "$out" "$clock" "$rounds" ;;
	stages)
		log "stages: icount, 1 vCPU, arms ${VFSBENCH_STAGE_ARMS:-stock T}"
		bash "$top/scripts/vm-run.sh" --cpus 1 --icount --rwdir "$out" -- \
			"${genv[@]}" bash "$top/scripts/guest/vfsbench.sh" "$ko" "$out" stages icount ;;
	profile)
		log "profile: icount, $icpus vCPU(s), arms ${VFSBENCH_PROFILE_ARMS:-stock}"
		bash "$top/scripts/vm-run.sh" --cpus "$icpus" --icount --rwdir "$out" -- \
			"${genv[@]}" bash "$top/scripts/guest/vfsbench.sh" "$ko" "$out" profile icount ;;
	*) log "unknown clock $clock"; exit 2 ;;
	esac
	echo "boot: $clock: $((SECONDS - t0)) s" >>"$out/machine.txt"
done

if [ "$partial" = 1 ]; then
	cp -r "$out" "$top/results/vfsbench-partial-$stamp"
	log "partial run: results in results/vfsbench-partial-$stamp (results/vfsbench-latest unchanged)"
	exit 0
fi
rm -rf "$top/results/vfsbench-latest" && cp -r "$out" "$top/results/vfsbench-latest"
python3 "$top/scripts/report.py" "$top/results" "$top/Documentation"
log "results in results/vfsbench-latest, report in Documentation/benchmarks.md"
