#!/usr/bin/env bash
# Inside the guest: does a load/unload cycle of the module leave kmalloc objects behind?
# Three phases of CYCLES rounds each, every round making the same connections (bench/sockbench
# accept, 2 workers, client in CLIENT_NS over veth): control (module not loaded), cycles
# (insmod, the connections, rmmod), control again. Prints each phase's change of the cache's
# active objects and, per allocation site, of its live objects (the cache's alloc_traces:
# boot with slab_debug=U,CACHE). Issue 11's attribution of the soak's kmalloc-128 growth:
#
#   scripts/vm-run.sh --append slab_debug=U,kmalloc-128 -- \
#       bash scripts/guest/slab-cycles.sh /var/cache/fastsocket-rs/module/debug/fastsocket.ko
#
# Usage: slab-cycles.sh KO [CACHE (kmalloc-128)] [CYCLES (15)]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/guest/lib.sh
. "$here/lib.sh"
ko=$1 cache=${2:-kmalloc-128} cycles=${3:-15}
sb=$here/../../bench/sockbench/target/release/sockbench
d=/sys/kernel/debug/slab/$cache
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
[ -e "$d/alloc_traces" ] || { log "no $d/alloc_traces: boot with slab_debug=U,$cache"; exit 1; }
# Live objects per allocation site (function name, offsets dropped).
traces() { awk '$1 ~ /^[0-9]+$/ { sub(/\+0x.*/, "", $2); n[$2] += $1 } END { for (s in n) print s, n[s] }' "$d/alloc_traces" | sort; }
active() { awk -v c="$cache" '$1 == c { print $2 }' /proc/slabinfo; }
load() {
	"$sb" --case accept --mode threads --workers 2 --ops 150 --warmup 10 \
		--listen "$SERVER_IP:8090" --client-netns "/run/netns/$CLIENT_NS" >/dev/null
}
trap 'rmmod fastsocket 2>/dev/null || true; net_down' EXIT
net_up
# Warm-up: the first load and the first insmod allocate what stays (caches, module loader).
insmod "$ko"; load; rmmod fastsocket; load
for phase in control cycles control; do
	sleep 5
	traces >/tmp/slab-before; a0=$(active)
	for _ in $(seq "$cycles"); do
		if [ "$phase" = cycles ]; then insmod "$ko"; fi
		load
		if [ "$phase" = cycles ]; then rmmod fastsocket; fi
	done
	# RCU-deferred frees and TIME_WAIT-free closes settle.
	sleep 5
	traces >/tmp/slab-after; a1=$(active)
	log "$phase, $cycles rounds: $cache active objects $a0 -> $a1 ($((a1 - a0)))"
	join -a1 -a2 -e 0 -o 0,1.2,2.2 /tmp/slab-before /tmp/slab-after |
		awk '$3 != $2 { printf "    %+d %s\n", $3 - $2, $1 }' | sort -rn | head -10
done
