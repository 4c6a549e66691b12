#!/usr/bin/env bash
# make soak: the hardening tests (userspace-tests/src/cases/fuzz.rs, Documentation/reliability.md)
# for longer, in one boot of the debug kernel: SOAK_MINUTES (30) of fuzzing, half trinity and
# half stress-ng, and SOAK_CYCLES (100) load/unload cycles, all under nginx/wrk load; the
# knob fuzzing at 100,000 writes per knob (CI runs a fifth); then the kernel log and kmemleak
# check. The guest's output is kept in results/soak-<UTC>.log.
#
#   SOAK_MINUTES=30 SOAK_CYCLES=100 scripts/soak.sh
#
# It boots a VM: run it under the shared lock where others boot VMs too.
set -euo pipefail
. "$(dirname "$0")/env.sh"

minutes=${SOAK_MINUTES:-30} cycles=${SOAK_CYCLES:-100}
bin=$top/userspace-tests/target/release/fastsocket-tests
module=$FASTSOCKET_CACHE/module/debug/fastsocket.ko
for f in "$bin" "$module"; do
	[ -e "$f" ] || { log "no $f: run make soak (it builds both)"; exit 1; }
done
# Guest time: the fuzzing, about 16 s per cycle and its control cycle under TCG with room to
# spare, 10 minutes for the knob fuzzing and 20 for the boot, the rounds that overrun the
# deadline, the final checks and kmemleak.
timeout=$((minutes * 60 + cycles * 16 + 1800))
mkdir -p "$top/results"
out=$top/results/soak-$(date -u +%Y%m%d-%H%M%S).log
log "$minutes min of fuzzing, $cycles load/unload cycles; VM timeout ${timeout}s; log ${out#"$top"/}"
start=$(date +%s)
rc=0
bash "$top/scripts/vm-run.sh" --timeout "$timeout" -- \
	env FASTSOCKET_SOAK_MINUTES="$minutes" FASTSOCKET_SOAK_CYCLES="$cycles" "$bin" \
	--module "$module" --filter module_load,knob_fuzz,fuzz_trinity,fuzz_stress_ng,soak_load_unload,kernel_log_clean \
	2>&1 | tee "$out" || rc=$?
log "soak finished in $(($(date +%s) - start)) s (exit $rc); log ${out#"$top"/}"
exit "$rc"
