#!/usr/bin/env bash
# `make demo`, inside the guest: unchanged nginx under short-connection load (wrk with
# Connection: close from another netns over veth + RPS), without and with the module.
set -euo pipefail
ko=$1
runs=${DEMO_RUNS:-3} seconds=${DEMO_SECONDS:-8}
. "$(dirname "$0")/lib.sh"
dir=/tmp/fs-demo port=8080 url="http://$SERVER_IP:8080/"

trap 'nginx_stop $dir; net_down; rmmod fastsocket 2>/dev/null || true' EXIT
net_up
nginx_start "$dir" "$port"
log "nginx $(nginx -v 2>&1 | cut -d/ -f2), $(nproc) vCPUs, wrk -c32 ${seconds}s x $runs per arm"
wrk_close "$url" 2 >/dev/null # warm-up

arm() { # prints "median_conn_s errors"
	local rates=() errs=0 r e
	for i in $(seq "$runs"); do
		read -r r e < <(wrk_close "$url" "$seconds")
		log "  $1 run $i: $r conn/s, $e errors"
		rates+=("$r") errs=$((errs + e))
	done
	echo "$(printf '%s\n' "${rates[@]}" | median) $errs"
}

delta() { # per-CPU "cpu accepts local" deltas between two fs_counters snapshots
	join <(echo "$1") <(echo "$2") | awk '{ print $1, $4 - $2, $5 - $3 }'
}
locality() { awk '{ a += $2; l += $3 } END { printf "%.1f%%", a ? 100 * l / a : 0 }'; }

# Stock: the module is loaded with net.fastsocket.enabled=0, so its counters measure stock
# locality while its hooks do nothing (with enabled=0 every hook returns at once).
insmod "$ko"
sysctl -qw net.fastsocket.enabled=0
read -r stock stock_err < <(arm stock)
sysctl -qw net.fastsocket.enabled=1
sysctl -qw net.fastsocket.enabled=1 net.fastsocket.listen_hold_ms=0
before=$(fs_counters)
read -r nohold nohold_err < <(arm "module, listen_hold_ms=0")
mid=$(fs_counters)
sysctl -qw net.fastsocket.listen_hold_ms=5
read -r mod mod_err < <(arm "module")
after=$(fs_counters)
rmmod fastsocket
read -r unloaded unloaded_err < <(arm "module unloaded")
# Stock locality needs counters: count it in a last stock arm with the module counting only.
insmod "$ko"
sysctl -qw net.fastsocket.listen_ports=
s_before=$(fs_counters)
read -r stock2 stock2_err < <(arm "stock (counting only)")
s_after=$(fs_counters)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo
echo "| arm | conn/s (median of $runs) | vs stock | errors | accept locality |"
echo "|---|---|---|---|---|"
echo "| stock: module not loaded | $unloaded | $(ratio "$unloaded" "$unloaded") | $unloaded_err | |"
echo "| stock: module loaded, enabled=0 | $stock | $(ratio "$stock" "$unloaded") | $stock_err | |"
echo "| stock: module counting only (listen_ports empty) | $stock2 | $(ratio "$stock2" "$unloaded") | $stock2_err | $(delta "$s_before" "$s_after" | locality) |"
echo "| fastsocket, listen_hold_ms=0 | $nohold | $(ratio "$nohold" "$unloaded") | $nohold_err | $(delta "$before" "$mid" | locality) |"
echo "| fastsocket (defaults) | $mod | $(ratio "$mod" "$unloaded") | $mod_err | $(delta "$mid" "$after" | locality) |"
echo
echo "Per-CPU accepts in the fastsocket (defaults) arm, from /proc/net/fastsocket:"
echo "| cpu | accepts | local (handshake CPU = accept CPU) | remote (stolen) | locality |"
echo "|---|---|---|---|---|"
delta "$mid" "$after" | awk '{ printf "| %s | %d | %d | %d | %.1f%% |\n", $1, $2, $3, $2 - $3, $2 ? 100 * $3 / $2 : 0 }'
