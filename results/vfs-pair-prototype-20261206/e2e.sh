#!/usr/bin/env bash
# Prototype end to end: W1 and W2, arm B0 (no module), icount, 2 vCPUs, pair cache off / on (boot param)
set -u
cd /work/main || exit 1
ko=/var/cache/fastsocket-rs/module/perf/fastsocket.ko
for pc in 0 1 0 1; do
	out=/tmp/proto-e2e/pc$pc-$RANDOM; mkdir -p $out
	KDIR=/tmp/proto-build bash scripts/vm-run.sh --cpus 2 --icount --rwdir $out --append "socket.pair_cache=$pc" -- \
		env BENCH_ARMS=B0 bash scripts/guest/bench.sh $ko $out/bench.tsv icount 2 3 "W1 W2" > $out/log 2>&1
	echo "pair_cache=$pc: $(awk -F'\t' '{print $3, $6}' $out/bench.tsv | tr '\n' ' ')"
done
