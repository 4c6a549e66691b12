#!/usr/bin/env bash
# `make bench` and `make lockprof`: boot the perf (or lockstat) kernel, run the guest
# benchmark (scripts/guest/bench.sh) and write the report to Documentation/.
#
#   scripts/bench.sh bench     wall clock at 1 and 2 vCPUs, icount at 2 vCPUs (~25 min)
#   scripts/bench.sh lockprof  W1 per arm on the lockstat kernel, /proc/lock_stat (~8 min)
#
# BENCH_RUNS (5), BENCH_SECONDS (5), ICOUNT_RUNS (3), ICOUNT_SECONDS (3) tune the length.
set -euo pipefail
. "$(dirname "$0")/env.sh"
what=${1:-bench}
runs=${BENCH_RUNS:-5} seconds=${BENCH_SECONDS:-5}
stamp=$(date -u +%Y%m%d-%H%M%S)
# Written by the guest: outside the read-only shares of the cache and the repository.
out=$FASTSOCKET_CACHE.results/$what-$stamp
mkdir -p "$out" "$top/results"
ko=$FASTSOCKET_CACHE/module/$FLAVOUR/fastsocket.ko
guest="$top/scripts/guest/bench.sh"
{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "host: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p')"
	echo "kernel: $KERNEL_PKG_VERSION, flavour $FLAVOUR; rustc $(/usr/bin/rustc --version | cut -d' ' -f2)"
	echo "nginx: $(nginx -v 2>&1 | cut -d/ -f2); haproxy: $(haproxy -v | head -1 | cut -d' ' -f3); wrk: $(dpkg-query -W -f '${Version}' wrk)"
	echo "qemu: $(qemu-system-x86_64 --version | head -1 | cut -d' ' -f4)"
} >"$out/machine.txt"

case "$what" in
bench)
	for cpus in 1 2; do
		log "wall clock, $cpus vCPU(s): $runs x ${seconds}s per arm"
		bash "$top/scripts/vm-run.sh" --cpus "$cpus" --rwdir "$out" -- \
			bash "$guest" "$ko" "$out/bench.tsv" wall "$runs" "$seconds"
	done
	log "icount, 2 vCPUs: ${ICOUNT_RUNS:-3} x ${ICOUNT_SECONDS:-3}s per arm"
	bash "$top/scripts/vm-run.sh" --cpus 2 --icount --rwdir "$out" -- \
		bash "$guest" "$ko" "$out/bench.tsv" icount "${ICOUNT_RUNS:-3}" "${ICOUNT_SECONDS:-3}"
	;;
lockprof)
	mkdir -p "$out/lock_stat"
	log "W1 on the lockstat kernel: 1 x ${seconds}s per arm, then /proc/lock_stat"
	bash "$top/scripts/vm-run.sh" --cpus 2 --rwdir "$out" -- \
		bash "$guest" "$ko" "$out/bench.tsv" lockstat 1 "$seconds" W1 "$out/lock_stat"
	;;
*) echo "usage: $0 bench|lockprof" >&2; exit 2 ;;
esac
rm -rf "$top/results/$what-latest" && cp -r "$out" "$top/results/$what-latest"
python3 "$top/scripts/report.py" "$top/results" "$top/Documentation"
log "results in results/$what-latest, report in Documentation/benchmarks.md"
