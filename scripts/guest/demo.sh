#!/usr/bin/env bash
# `make demo`, inside the guest: unchanged nginx under short-connection load (wrk with
# Connection: close from another netns over veth + RPS), without and with the module.
#
#   demo.sh KO [ROUNDS] [SECONDS] [CLOCK]
#
# Arms, each run once per round, in a rotated (Williams) order that changes every round so
# that drift and TIME_WAIT build-up do not land on one arm:
#   stock A, stock B  the module NOT loaded (two identical arms: their spread is the noise band)
#   counting          the module loaded, listen_ports empty in every namespace: stock placement,
#                     the module only counts (stock locality)
#   T0                the module, listen_hold_ms=0
#   T                 the module, defaults
# Every (round, arm): nginx stopped, module unloaded; for the module's arms a fresh insmod with
# the knobs written in every namespace (initial and client); nginx started; 2 s warm-up; one
# measured run. CLOCK is "wall" (conn/s) or "icount" (booted with --icount: conn per 10^9
# guest instructions).
set -euo pipefail
ko=$1 runs=${2:-5} seconds=${3:-5} clock=${4:-wall}
. "$(dirname "$0")/lib.sh"
dir=/tmp/fs-demo port=8080 url="http://$SERVER_IP:8080/"
unit="conn/s"
[ "$clock" = icount ] && unit="conn per 1e9 guest instr."
ARMS=(stockA stockB counting T0 T)
res=$dir/results # arm rate errors accepts local, one line per (round, arm)
percpu=$dir/percpu-T # cpu accepts local, per round of arm T

label() {
	case "$1" in
	stockA) echo "stock A: module not loaded" ;;
	stockB) echo "stock B: module not loaded (same as A)" ;;
	counting) echo "stock placement, module loaded counting only" ;;
	T0) echo "fastsocket, listen_hold_ms=0" ;;
	T) echo "fastsocket (defaults)" ;;
	esac
}

knobs() {
	case "$1" in
	counting) echo "enabled=1 listen_ports=" ;;
	T0) echo "enabled=1 listen_ports=all listen_hold_ms=0" ;;
	T) echo "enabled=1 listen_ports=all listen_hold_ms=5" ;;
	esac
}

module_for() { # arm: unloaded for the stock arms, a fresh insmod with knobs for the others
	local k kv ns
	[ -e /sys/module/fastsocket ] && rmmod fastsocket
	k=$(knobs "$1")
	if [ -z "$k" ]; then
		[ ! -e /sys/module/fastsocket ] || { log "the module is still loaded"; return 1; }
		return 0
	fi
	insmod "$ko"
	for ns in - "$CLIENT_NS"; do
		for kv in $k; do
			if [ "$ns" = - ]; then sysctl -qw "net.fastsocket.$kv"
			else ip netns exec "$ns" sysctl -qw "net.fastsocket.$kv"; fi
		done
	done
}

counters() { if [ -e /proc/net/fastsocket ]; then fs_counters; fi; }

trap 'nginx_stop $dir; net_down; rmmod fastsocket 2>/dev/null || true' EXIT
rmmod fastsocket 2>/dev/null || true
mkdir -p "$dir" && : >"$res" && : >"$percpu"
net_up
log "nginx $(nginx -v 2>&1 | cut -d/ -f2), $(nproc) vCPUs, $clock clock, wrk -c32 ${seconds}s, $runs rounds of ${#ARMS[@]} arms"
for round in $(seq "$runs"); do
	read -r -a order < <(round_order "$round" "${ARMS[@]}")
	log "round $round: ${order[*]}"
	for arm in "${order[@]}"; do
		nginx_stop "$dir"
		module_for "$arm"
		nginx_start "$dir" "$port"
		wrk_close "$url" 2 >/dev/null # warm-up
		before=$(counters)
		read -r r e < <(wrk_close "$url" "$seconds")
		after=$(counters)
		d=$(join <(echo "$before") <(echo "$after") 2>/dev/null | awk '{ print $1, $4 - $2, $5 - $3 }')
		read -r a l < <(awk '{ a += $2; l += $3 } END { print a + 0, l + 0 }' <<<"$d")
		echo "$arm $r $e $a $l" >>"$res"
		[ "$arm" = T ] && echo "$d" >>"$percpu"
		log "  $(label "$arm"): $r $unit, $e errors$([ -e /sys/module/fastsocket ] && echo ", $l of $a accepts local" || echo ", module not loaded")"
	done
done
nginx_stop "$dir"

# The lock profile (wall clock only: under icount one vCPU runs at a time): two more runs of
# stock A and of fastsocket (defaults) each, in the order A B B A so that neither arm always
# runs first, under `perf lock record -a`, then `perf lock contention` of each run, with every
# call stack kept for the totals.
lockprof=0
if [ "$clock" = wall ] && perflock_check; then
	lockprof=1 run=0
	for arm in stockA T T stockA; do
		run=$((run + 1))
		nginx_stop "$dir"
		module_for "$arm"
		nginx_start "$dir" "$port"
		wrk_close "$url" 2 >/dev/null # warm-up
		state=$([ -e /sys/module/fastsocket ] && echo loaded || echo "not loaded")
		rm -f "$dir/perf-lock.data"
		out=$("$PERF" lock record -a -N -o "$dir/perf-lock.data" -- ip netns exec "$CLIENT_NS" \
			wrk -t2 -c32 -d"${seconds}s" -H 'Connection: close' "$url" 2>"$dir/perf-record.log")
		conns=$(awk '/ requests in / { print $1 }' <<<"$out")
		# The report is made while the module is loaded: perf reads its symbols from kallsyms.
		perf_lock_report "$dir/perf-lock.data" "$state" "$conns" "$dir/$arm.$run.perf_lock" -E 10000
		log "  perf lock record, $(label "$arm"): $conns connections"
	done
	nginx_stop "$dir"
fi

# "median min max" of an arm's rates.
summary() { awk -v a="$1" '$1 == a { print $2 }' "$res" | sort -n |
	awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		printf "%.0f %.0f %.0f\n", m, v[1], v[NR] }'; }
read -r sa_med sa_lo sa_hi < <(summary stockA)
read -r sb_med sb_lo sb_hi < <(summary stockB)
band_lo=$((sa_lo < sb_lo ? sa_lo : sb_lo)) band_hi=$((sa_hi > sb_hi ? sa_hi : sb_hi))
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b ? a / b : 0 }'; }

echo
echo "| arm | $unit: median (min-max) of $runs | vs stock A | errors | accept locality | against the stock band |"
echo "|---|---|---|---|---|---|"
for arm in "${ARMS[@]}"; do
	read -r med lo hi < <(summary "$arm")
	read -r err a l < <(awk -v x="$arm" '$1 == x { e += $3; a += $4; l += $5 } END { print e + 0, a + 0, l + 0 }' "$res")
	loc="n/a (module not loaded)"
	[ "$a" -gt 0 ] && loc=$(awk -v a="$a" -v l="$l" 'BEGIN { printf "%.1f%%", 100 * l / a }')
	if [ "${arm#stock}" != "$arm" ]; then where="(defines it)"
	elif [ "$lo" -gt "$band_hi" ] && [ "$clock" = icount ]; then where="above"
	elif [ "$lo" -gt "$band_hi" ]; then where="above on the wall clock: not a gain unless icount confirms it"
	elif [ "$hi" -lt "$band_lo" ]; then where="below"
	else where="inside: no difference shown"; fi
	echo "| $(label "$arm") | $med ($lo-$hi) | $(ratio "$med" "$sa_med") | $err | $loc | $where |"
done
echo
echo "How to read it: stock A and stock B are the same configuration (module not loaded), run"
echo "alternately with the other arms. Their ratio ($(ratio "$sb_med" "$sa_med")) and their combined range"
echo "($band_lo-$band_hi $unit) are this machine's noise band: an arm whose min-max overlaps that"
echo "band shows no difference from stock, whatever its median ratio says. Under QEMU TCG the wall"
echo "clock mostly measures host noise and hand-off latency between vCPUs; \`make bench\` adds QEMU"
echo "icount (connections per 10^9 guest instructions, deterministic), which decides gains and costs."
echo "Accept locality: share of accepted connections whose handshake completed on the accepting CPU"
echo "(module counters: n/a where the module is not loaded; 'counting' gives stock's)."
echo
if [ "$lockprof" = 1 ]; then
	# An arm's call stacks over its runs, "contentions type caller", most contended first (rows
	# of perf lock contention: "contended total-wait max-wait avg-wait type caller").
	rows() {
		awk 'FNR == 1 { t = 0 } /^ *contended  *total wait/ { t = 1; next }
		     t && $1 ~ /^[0-9]+$/ { c[$(NF - 1) " " $NF] += $1 }
		     END { for (k in c) print c[k], k }' "$dir/$1".*.perf_lock | sort -k1,1nr
	}
	conns_of() { awk '/^# connections/ { s += $3 } END { print s + 0 }' "$dir/$1".*.perf_lock; }
	per1k() { rows "$1" | awk -v c="$(conns_of "$1")" '{ s += $1 } END { printf "%.1f", c ? 1000 * s / c : 0 }'; }
	echo "Lock contention, unchanged nginx, two more ${seconds}s runs of each arm (order A B B A) under"
	echo "\`perf lock record -a\` (perf kernel: contention tracepoints, no lockdep), then"
	echo "\`perf ${PERF_LOCK_REPORT[*]}\`:"
	echo
	echo "| | stock A (module not loaded) | fastsocket (defaults) |"
	echo "|---|---|---|"
	echo "| connections (wrk, both runs) | $(conns_of stockA) | $(conns_of T) |"
	echo "| contentions per 1k connections, all call stacks | $(per1k stockA) | $(per1k T) |"
	top() { rows "$1" | awk -v i="$2" 'NR == i { r = $1 ", " $2 ", " $3 } END { print (r == "") ? "-" : r }'; }
	for i in 1 2 3 4 5; do
		echo "| top $i: contentions, type, caller | $(top stockA "$i") | $(top T "$i") |"
	done
	echo
	echo "A queued spinlock's lone waiter on the pending bit fires no contention tracepoint, so on"
	echo "a few vCPUs spinlock contention is undercounted (make lockprof adds /proc/lock_stat)."
	echo
fi
echo "Per-CPU accepts in the fastsocket (defaults) arm, all rounds, from /proc/net/fastsocket:"
echo "| cpu | accepts | local (handshake CPU = accept CPU) | remote (stolen) | locality |"
echo "|---|---|---|---|---|"
awk 'NF == 3 { a[$1] += $2; l[$1] += $3 } END { for (c in a) print c, a[c], l[c] }' "$percpu" | sort -n |
	awk '{ printf "| %s | %d | %d | %d | %.1f%% |\n", $1, $2, $3, $2 - $3, $2 ? 100 * $3 / $2 : 0 }'
