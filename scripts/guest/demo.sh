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

read -r stock stock_err < <(arm stock)
insmod "$ko"
before=$(fs_counters)
read -r mod mod_err < <(arm module)
after=$(fs_counters)

echo
echo "| arm | conn/s (median of $runs) | errors |"
echo "|---|---|---|"
echo "| stock (module not loaded) | $stock | $stock_err |"
echo "| fastsocket module | $mod | $mod_err |"
echo "| module / stock | $(awk -v a="$mod" -v b="$stock" 'BEGIN { printf "%.3f", a / b }') | |"
echo
echo "Per-CPU accepts during the module runs (/proc/net/fastsocket):"
echo "| cpu | accepts | local (handshake CPU = accept CPU) | remote | locality |"
echo "|---|---|---|---|---|"
join <(echo "$before") <(echo "$after") | awk '{ a = $4 - $2; l = $5 - $3
	printf "| %s | %d | %d | %d | %.1f%% |\n", $1, a, l, a - l, a ? 100 * l / a : 0 }'
