#!/usr/bin/env bash
# `make bench` and `make lockprof`: boot the perf (and lockstat) kernel, run the guest
# benchmark (scripts/guest/bench.sh) and write the report to Documentation/.
#
#   scripts/bench.sh bench     wall clock and icount, each at 1 and 2 vCPUs (~45 min), on the
#                              perf kernel (FLAVOUR=perf)
#   scripts/bench.sh lockprof  W1 and W3 per arm, two boots (~8 min): the perf kernel under
#                              `perf lock record` (contention tracepoints, no lockdep), then
#                              the lockstat kernel with /proc/lock_stat; always these two
#                              flavours and their modules, whatever FLAVOUR says
#   scripts/bench.sh cpuprof   where the guest's instructions go, per arm (~5 min): one icount
#                              boot of the perf kernel (BENCH_CPUS, default 2 vCPUs), workloads
#                              BENCH_WORKLOADS (default W1), arms BENCH_ARMS (default all), one
#                              round of ICOUNT_SECONDS (default 4) under `perf record -a`;
#                              results/cpuprof-STAMP/ holds each arm's `perf report` and
#                              profdiff.txt, each arm against B0 (scripts/profdiff.py)
#                              (CPUPROF_CALLERS="sym ...": also their call chains, W-ARM.callers)
#   scripts/bench.sh --dry-run bench|lockprof
#                              print every boot's schedule (rounds, arm order, module state and
#                              knobs per namespace) without booting or measuring anything
#
# Stock arms (B0, B1, B2) run with the module not loaded; the module's arms (C, T, T0, T20, TQ0,
# TR0, TV0, TP0, TS, TN, TA) load it afresh and set their knobs in every namespace (TS: enabled=0 in the
# client's); arms run in a rotated (Williams) order each round. W2 and W3 also trace their warm-up runs for active-connection locality
# (Receive Flow Deliver). See scripts/guest/bench.sh.
#
# BENCH_RUNS (5), BENCH_SECONDS (5), ICOUNT_RUNS (3), ICOUNT_SECONDS (3) tune the length;
# BENCH_ARMS (all; e.g. "B0 T TV0": only those arms of each workload; the module's arms also
# where a workload does not run them by default, e.g. T0 in W2),
# BENCH_CPUS ("1 2"), BENCH_ICOUNT_CPUS (BENCH_CPUS: the vCPU counts of the icount boots),
# BENCH_CLOCKS ("wall icount") and BENCH_WORKLOADS ("W1 W2 W3") what runs; LOCKPROF_WORKLOADS
# ("W1 W3") what make lockprof profiles; BENCH_NOTE, a line of text, goes to machine.txt as
# "note:" (say there why a run was reduced).
# A run with BENCH_WORKLOADS, BENCH_ARMS, BENCH_CPUS, BENCH_ICOUNT_CPUS or BENCH_CLOCKS set is a partial
# run: it does not replace results/bench-latest (the last full run); it is kept as
# results/bench-partial-STAMP and the report shows it in a section of its own, beside the full
# run's (never mixed into one table), while it is newer than the full run.
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "$0")/env.sh"
dry=0
[ "${1:-}" = --dry-run ] && { dry=1; shift; }
what=${1:-bench}
runs=${BENCH_RUNS:-5} seconds=${BENCH_SECONDS:-5}
iruns=${ICOUNT_RUNS:-3} iseconds=${ICOUNT_SECONDS:-3}
cpu_list=${BENCH_CPUS:-1 2} clocks=${BENCH_CLOCKS:-wall icount} workloads=${BENCH_WORKLOADS:-W1 W2 W3}
icount_cpus=${BENCH_ICOUNT_CPUS:-$cpu_list} lock_workloads=${LOCKPROF_WORKLOADS:-W1 W3}
partial=0
[ -n "${BENCH_CPUS:-}${BENCH_ICOUNT_CPUS:-}${BENCH_CLOCKS:-}${BENCH_WORKLOADS:-}${BENCH_ARMS:-}" ] && partial=1
# BENCH_ARMS: only these arms of each workload (the guest script lists them).
arms_env=()
[ -z "${BENCH_ARMS:-}" ] || arms_env=(env "BENCH_ARMS=$BENCH_ARMS")
# cpuprof: also the call chains into these symbols (space-separated), per arm
[ -z "${CPUPROF_CALLERS:-}" ] || arms_env=(env "${arms_env[@]:1}" "CPUPROF_CALLERS=$CPUPROF_CALLERS")
# The vCPU counts of the boots of one clock.
cpus_of() { if [ "$1" = icount ]; then echo "$icount_cpus"; else echo "$cpu_list"; fi; }
guest="$top/scripts/guest/bench.sh"
ko=$FASTSOCKET_CACHE/module/$FLAVOUR/fastsocket.ko
# make lockprof: the perf kernel under perf lock, then the lockstat kernel.
kdir_of() { echo "$FASTSOCKET_CACHE/build/$1-$KVER"; }
ko_of() { echo "$FASTSOCKET_CACHE/module/$1/fastsocket.ko"; }
harness="stock arms (B0, B1, B2) with the module not loaded (rmmod); C (rfd=0), T (defaults, rfd=1: Receive Flow Deliver on; for W1's passive side it changes nothing, nginx's port is outside the ephemeral range, it steers only the client's replies), T0 (W1), T20 (W1 only: T with listen_hold_ms=20), TQ0 (W1 only: T with listen_queues=0, no per-CPU accept queues), TR0 (T with rfd=0, the module without RFD), TV0 (T with vfs=0, no socket pair cache) TP0 (T with listen_pull=0, when BENCH_ARMS names it) TS (W2: T in the servers' namespaces, enabled=0 in the client's) TN (T with rfd_peer=1: a server's end of a same-host connection on its client port's CPU) and TA (W1, when BENCH_ARMS names it: T with nginx's workers pinned one per CPU by taskset, as in B2) with a fresh insmod and their knobs written and read back in every namespace (initial, client, backend); ip_local_port_range 10000-65000 in every namespace (no service port inside, as RFD needs) and RPS on every CPU on every veth end; servers restarted for every arm after the module state is set; arms in a Williams Latin-square order, shifted each round (mirrored in rounds n+1 to 2n for an odd number of arms); one 2 s warm-up and one measured run per arm and round; W2/W3 warm-ups traced (sock:inet_sock_set_state) for active-connection locality, measured runs untraced"

if [ "$dry" = 1 ]; then
	case "$what" in
	bench)
		for clock in $clocks; do
			for cpus in $(cpus_of "$clock"); do
				r=$runs s=$seconds
				[ "$clock" = icount ] && r=$iruns s=$iseconds
				log "boot: $clock, $cpus vCPU(s): $r rounds x ${s}s per arm"
				BENCH_DRY_RUN=1 BENCH_DRY_CPUS=$cpus "${arms_env[@]}" bash "$guest" "$ko" /dev/null "$clock" "$r" "$s" "$workloads"
			done
		done ;;
	lockprof)
		log "boot 1: perf kernel ($(kdir_of perf)), perf lock record, 2 vCPUs: 1 round x ${seconds}s per arm, $lock_workloads"
		BENCH_DRY_RUN=1 BENCH_DRY_CPUS=2 bash "$guest" "$(ko_of perf)" /dev/null perflock 1 "$seconds" "$lock_workloads" "$FASTSOCKET_CACHE.results/lockprof-STAMP/perf_lock"
		log "boot 2: lockstat kernel ($(kdir_of lockstat)), /proc/lock_stat, 2 vCPUs: 1 round x ${seconds}s per arm, $lock_workloads"
		BENCH_DRY_RUN=1 BENCH_DRY_CPUS=2 bash "$guest" "$(ko_of lockstat)" /dev/null lockstat 1 "$seconds" "$lock_workloads" "$FASTSOCKET_CACHE.results/lockprof-STAMP/lock_stat" ;;
	cpuprof)
		BENCH_DRY_RUN=1 BENCH_DRY_CPUS=${BENCH_CPUS:-2} "${arms_env[@]}" bash "$guest" "$ko" /dev/null cpuprof 1 "${ICOUNT_SECONDS:-4}" "${BENCH_WORKLOADS:-W1}" "$FASTSOCKET_CACHE.results/cpuprof-STAMP/cpuprof" ;;
	*) echo "usage: $0 [--dry-run] bench|lockprof|cpuprof" >&2; exit 2 ;;
	esac
	exit 0
fi

stamp=$(date -u +%Y%m%d-%H%M%S)
# Written by the guest: outside the read-only shares of the cache and the repository.
out=$FASTSOCKET_CACHE.results/$what-$stamp
mkdir -p "$out" "$top/results"
{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "host: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p')"
	if [ "$what" = lockprof ]; then
		echo "kernel: $KERNEL_PKG_VERSION, flavours perf (perf lock: contention tracepoints) and lockstat (/proc/lock_stat); rustc $(/usr/bin/rustc --version | cut -d' ' -f2)"
		echo "perf: $(perf --version | cut -d' ' -f3)"
	else
		echo "kernel: $KERNEL_PKG_VERSION, flavour $FLAVOUR; rustc $(/usr/bin/rustc --version | cut -d' ' -f2)"
	fi
	echo "nginx: $(nginx -v 2>&1 | cut -d/ -f2); haproxy: $(haproxy -v | head -1 | cut -d' ' -f3); wrk: $(dpkg-query -W -f '${Version}' wrk)"
	echo "qemu: $(qemu-system-x86_64 --version | head -1 | cut -d' ' -f4)"
	echo "repository: $(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)"
	echo "harness: $harness"
	[ -z "${BENCH_NOTE:-}" ] || echo "note: $BENCH_NOTE"
	# The active-locality trace needs the sock:inet_sock_set_state tracepoint.
	for f in $([ "$what" = lockprof ] && echo perf lockstat || echo "$FLAVOUR"); do
		if grep -q '^CONFIG_EVENT_TRACING=y' "$(kdir_of "$f")/.config" 2>/dev/null; then
			echo "tracing: $f kernel: CONFIG_EVENT_TRACING=y"
		else
			echo "tracing: $f kernel: no CONFIG_EVENT_TRACING: no active-connection locality"
		fi
	done
	if [ "$what" = lockprof ]; then
		echo "workloads: $lock_workloads"
	elif [ "$what" = cpuprof ]; then
		echo "cpuprof: workloads ${BENCH_WORKLOADS:-W1}; arms ${BENCH_ARMS:-all}; icount at ${BENCH_CPUS:-2} vCPU(s); 1 round x ${ICOUNT_SECONDS:-4}s under perf record -a -F 4999"
	elif [ "$partial" = 1 ]; then
		ran=""
		[[ " $clocks " = *" wall "* ]] && ran+="; wall at $cpu_list vCPU(s), $runs rounds x ${seconds}s"
		[[ " $clocks " = *" icount "* ]] && ran+="; icount at $icount_cpus vCPU(s), $iruns rounds x ${iseconds}s"
		echo "partial: workloads $workloads; arms ${BENCH_ARMS:-all}; clocks $clocks$ran"
	fi
} >"$out/machine.txt"
# Appends one boot's duration to machine.txt.
timed() { # label cmd...
	local label=$1 t0=$SECONDS
	shift
	"$@"
	echo "boot: $label: $((SECONDS - t0)) s" >>"$out/machine.txt"
}

case "$what" in
bench)
	for clock in $clocks; do
		for cpus in $(cpus_of "$clock"); do
			r=$runs s=$seconds icount=()
			[ "$clock" = icount ] && r=$iruns s=$iseconds icount=(--icount)
			log "$clock, $cpus vCPU(s): $r rounds x ${s}s per arm, workloads $workloads"
			timed "$clock, $cpus vCPU(s), $r rounds x ${s}s, $workloads" bash "$top/scripts/vm-run.sh" --cpus "$cpus" "${icount[@]}" --rwdir "$out" -- \
				"${arms_env[@]}" bash "$guest" "$ko" "$out/bench.tsv" "$clock" "$r" "$s" "$workloads"
		done
	done
	;;
lockprof)
	mkdir -p "$out/perf_lock" "$out/lock_stat"
	# vm-run.sh boots the kernel of FLAVOUR in KDIR: both set for each boot.
	log "boot 1: $lock_workloads on the perf kernel, 1 round x ${seconds}s per arm under perf lock record"
	FLAVOUR=perf KDIR=$(kdir_of perf) timed "perf lock, $lock_workloads" bash "$top/scripts/vm-run.sh" --cpus 2 --rwdir "$out" -- \
		bash "$guest" "$(ko_of perf)" "$out/bench.tsv" perflock 1 "$seconds" "$lock_workloads" "$out/perf_lock"
	log "boot 2: $lock_workloads on the lockstat kernel, 1 round x ${seconds}s per arm, then /proc/lock_stat"
	FLAVOUR=lockstat KDIR=$(kdir_of lockstat) timed "lock_stat, $lock_workloads" bash "$top/scripts/vm-run.sh" --cpus 2 --rwdir "$out" -- \
		bash "$guest" "$(ko_of lockstat)" "$out/bench.tsv" lockstat 1 "$seconds" "$lock_workloads" "$out/lock_stat"
	;;
cpuprof)
	mkdir -p "$out/cpuprof"
	pw=${BENCH_WORKLOADS:-W1} pcpus=${BENCH_CPUS:-2}
	log "icount, $pcpus vCPU(s), $pw: 1 round x ${ICOUNT_SECONDS:-4}s per arm under perf record"
	timed "cpuprof, icount, $pcpus vCPU(s), $pw" bash "$top/scripts/vm-run.sh" --cpus "$pcpus" --icount --rwdir "$out" -- \
		"${arms_env[@]}" bash "$guest" "$ko" "$out/bench.tsv" cpuprof 1 "${ICOUNT_SECONDS:-4}" "$pw" "$out/cpuprof"
	python3 "$top/scripts/profdiff.py" "$out" >"$out/profdiff.txt"
	cp -r "$out" "$top/results/cpuprof-$stamp"
	log "results in results/cpuprof-$stamp (profdiff.txt: each arm against B0)"
	exit 0 ;;
*) echo "usage: $0 [--dry-run] bench|lockprof|cpuprof" >&2; exit 2 ;;
esac
if [ "$partial" = 1 ] && [ "$what" = bench ]; then
	cp -r "$out" "$top/results/bench-partial-$stamp"
	python3 "$top/scripts/report.py" "$top/results" "$top/Documentation"
	log "partial run (BENCH_CPUS/BENCH_ICOUNT_CPUS/BENCH_CLOCKS/BENCH_WORKLOADS set): results in results/bench-partial-$stamp (results/bench-latest unchanged), its own section in Documentation/benchmarks.md"
	exit 0
fi
rm -rf "$top/results/$what-latest" && cp -r "$out" "$top/results/$what-latest"
python3 "$top/scripts/report.py" "$top/results" "$top/Documentation"
log "results in results/$what-latest, report in Documentation/benchmarks.md"
