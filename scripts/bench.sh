#!/usr/bin/env bash
# `make bench` and `make lockprof`: boot the perf (or lockstat) kernel, run the guest
# benchmark (scripts/guest/bench.sh) and write the report to Documentation/.
#
#   scripts/bench.sh bench     wall clock and icount, each at 1 and 2 vCPUs (~40 min)
#   scripts/bench.sh lockprof  W1 per arm on the lockstat kernel, /proc/lock_stat (~10 min)
#   scripts/bench.sh --dry-run bench|lockprof
#                              print every boot's schedule (rounds, arm order, module state and
#                              knobs per namespace) without booting or measuring anything
#
# Stock arms (B0, B1, B2) run with the module not loaded; the module's arms load it afresh
# and set their knobs in every namespace; arms run in a rotated (Williams) order each round.
# See scripts/guest/bench.sh.
#
# BENCH_RUNS (5), BENCH_SECONDS (5), ICOUNT_RUNS (3), ICOUNT_SECONDS (3) tune the length;
# BENCH_CPUS ("1 2"), BENCH_CLOCKS ("wall icount") and BENCH_WORKLOADS ("W1 W2 W3") what runs.
# A run with BENCH_WORKLOADS, BENCH_CPUS or BENCH_CLOCKS set is a partial run: its results go
# to results/ but do not replace results/bench-latest or the report.
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "$0")/env.sh"
dry=0
[ "${1:-}" = --dry-run ] && { dry=1; shift; }
what=${1:-bench}
runs=${BENCH_RUNS:-5} seconds=${BENCH_SECONDS:-5}
iruns=${ICOUNT_RUNS:-3} iseconds=${ICOUNT_SECONDS:-3}
cpu_list=${BENCH_CPUS:-1 2} clocks=${BENCH_CLOCKS:-wall icount} workloads=${BENCH_WORKLOADS:-W1 W2 W3}
partial=0
[ -n "${BENCH_CPUS:-}${BENCH_CLOCKS:-}${BENCH_WORKLOADS:-}" ] && partial=1
guest="$top/scripts/guest/bench.sh"
ko=$FASTSOCKET_CACHE/module/$FLAVOUR/fastsocket.ko
harness="stock arms (B0, B1, B2) with the module not loaded (rmmod); C, T and T0 with a fresh insmod and their knobs written and read back in every namespace (initial, client, backend); servers restarted for every arm after the module state is set; arms in a Williams Latin-square order, shifted each round; one 2 s warm-up and one measured run per arm and round"

if [ "$dry" = 1 ]; then
	case "$what" in
	bench)
		for clock in $clocks; do
			for cpus in $cpu_list; do
				r=$runs s=$seconds
				[ "$clock" = icount ] && r=$iruns s=$iseconds
				log "boot: $clock, $cpus vCPU(s): $r rounds x ${s}s per arm"
				BENCH_DRY_RUN=1 BENCH_DRY_CPUS=$cpus bash "$guest" "$ko" /dev/null "$clock" "$r" "$s" "$workloads"
			done
		done ;;
	lockprof)
		log "boot: lockstat, 2 vCPUs: 1 round x ${seconds}s per arm"
		BENCH_DRY_RUN=1 BENCH_DRY_CPUS=2 bash "$guest" "$ko" /dev/null lockstat 1 "$seconds" W1 /dev/null ;;
	*) echo "usage: $0 [--dry-run] bench|lockprof" >&2; exit 2 ;;
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
	echo "kernel: $KERNEL_PKG_VERSION, flavour $FLAVOUR; rustc $(/usr/bin/rustc --version | cut -d' ' -f2)"
	echo "nginx: $(nginx -v 2>&1 | cut -d/ -f2); haproxy: $(haproxy -v | head -1 | cut -d' ' -f3); wrk: $(dpkg-query -W -f '${Version}' wrk)"
	echo "qemu: $(qemu-system-x86_64 --version | head -1 | cut -d' ' -f4)"
	echo "repository: $(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)"
	echo "harness: $harness"
} >"$out/machine.txt"

case "$what" in
bench)
	for clock in $clocks; do
		for cpus in $cpu_list; do
			r=$runs s=$seconds icount=()
			[ "$clock" = icount ] && r=$iruns s=$iseconds icount=(--icount)
			log "$clock, $cpus vCPU(s): $r rounds x ${s}s per arm, workloads $workloads"
			bash "$top/scripts/vm-run.sh" --cpus "$cpus" "${icount[@]}" --rwdir "$out" -- \
				bash "$guest" "$ko" "$out/bench.tsv" "$clock" "$r" "$s" "$workloads"
		done
	done
	;;
lockprof)
	mkdir -p "$out/lock_stat"
	log "W1 on the lockstat kernel: 1 round x ${seconds}s per arm, then /proc/lock_stat"
	bash "$top/scripts/vm-run.sh" --cpus 2 --rwdir "$out" -- \
		bash "$guest" "$ko" "$out/bench.tsv" lockstat 1 "$seconds" W1 "$out/lock_stat"
	;;
*) echo "usage: $0 [--dry-run] bench|lockprof" >&2; exit 2 ;;
esac
if [ "$partial" = 1 ] && [ "$what" = bench ]; then
	log "partial run (BENCH_CPUS/BENCH_CLOCKS/BENCH_WORKLOADS set): results in $out; results/bench-latest and the report are unchanged"
	exit 0
fi
rm -rf "$top/results/$what-latest" && cp -r "$out" "$top/results/$what-latest"
python3 "$top/scripts/report.py" "$top/results" "$top/Documentation"
log "results in results/$what-latest, report in Documentation/benchmarks.md"
