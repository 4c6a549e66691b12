#!/usr/bin/env bash
# Inside the guest (scripts/bench.sh boots it): every workload x arm, RUNS times, appending
# one TSV row per run to OUT:
#   clock cpus workload arm run conn_per_s errors accepts local
#
#   bench.sh KO OUT CLOCK RUNS SECONDS [WORKLOADS] [LOCKSTAT_DIR]
#
# Workloads (client always in its own netns over veth + RPS):
#   W1  nginx (Debian config, 64-byte response), wrk with Connection: close
#   W2  haproxy (nbthread = vCPUs, httpclose) in front of nginx in another netns
#   W3  connect()-heavy client: wrk in the measured netns against nginx in another netns
# Arms:
#   B0  stock: one shared listener (module counting accepts only, hooks idle)
#   B1  nginx `listen ... reuseport`
#   B2  B1 + CPU-steering reuseport BPF attached from outside + tcp_migrate_req=1, workers
#       pinned from outside (taskset)
#   T   the module, defaults (accept locality on all ports)
#   T0  the module with listen_hold_ms=0 (wake/pick steering only)
set -euo pipefail
ko=$1 out=$2 clock=$3 runs=$4 seconds=$5 workloads=${6:-W1 W2 W3} lockstat=${7:-}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cpus=$(nproc)
dir=/tmp/fs-bench
BACKEND_NS=fs-be BACKEND_IP=10.79.0.2 BACKEND_GW=10.79.0.1

backend_up() {
	ip netns add "$BACKEND_NS"
	ip link add fs-be0 type veth peer name fs-be1 netns "$BACKEND_NS"
	ip addr add "$BACKEND_GW/24" dev fs-be0 && ip link set fs-be0 up
	ip -n "$BACKEND_NS" addr add "$BACKEND_IP/24" dev fs-be1
	ip -n "$BACKEND_NS" link set fs-be1 up && ip -n "$BACKEND_NS" link set lo up
	ip netns exec "$BACKEND_NS" sh -c "echo $(printf '%x' $(((1 << cpus) - 1))) > /sys/class/net/fs-be1/queues/rx-0/rps_cpus"
	sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1
	mkdir -p /var/lib/nginx /var/log/nginx "$dir/be"
	sed -e "s|include /etc/nginx/sites-enabled/\*;|include $dir/be/server.conf;|" \
		-e "s|^pid .*|pid $dir/be/nginx.pid;|" /etc/nginx/nginx.conf >"$dir/be/nginx.conf"
	printf 'server {\n\tlisten %s:8080;\n\taccess_log off;\n\tlocation / { return 200 "%s\\n"; }\n}\n' \
		"$BACKEND_IP" "$(printf '%063d' 0)" >"$dir/be/server.conf"
	ip netns exec "$BACKEND_NS" nginx -c "$dir/be/nginx.conf"
}

cleanup() {
	nginx_stop "$dir/w1" 2>/dev/null || true
	nginx_stop "$dir/be" 2>/dev/null || true
	[ -s "$dir/haproxy.pid" ] && kill "$(cat "$dir/haproxy.pid")" 2>/dev/null || true
	rmmod fastsocket 2>/dev/null || true
	ip netns del "$BACKEND_NS" 2>/dev/null || true
	net_down
}
trap cleanup EXIT

# Module state for an arm: not loaded, counting only, or on (with knobs).
module_for() {
	case "$1" in
	B*) lsmod | grep -q '^fastsocket ' || insmod "$ko"
	    sysctl -qw net.fastsocket.enabled=1 net.fastsocket.listen_ports= ;;
	T) lsmod | grep -q '^fastsocket ' || insmod "$ko"
	   sysctl -qw net.fastsocket.listen_ports=all net.fastsocket.listen_hold_ms=5 ;;
	T0) lsmod | grep -q '^fastsocket ' || insmod "$ko"
	    sysctl -qw net.fastsocket.listen_ports=all net.fastsocket.listen_hold_ms=0 ;;
	esac
}

# Runs a command in netns $1, or in the current one for "-".
in_ns() { local ns=$1; shift; if [ "$ns" = - ]; then "$@"; else ip netns exec "$ns" "$@"; fi; }

counters_total() { fs_counters | awk '{ a += $2; l += $3 } END { print a + 0, l + 0 }'; }

# One measured arm: warm-up, then RUNS runs of wrk against URL from netns NS.
measure() { # workload arm ns url
	local w=$1 arm=$2 ns=$3 url=$4 rps err a0 l0 a1 l1 out
	in_ns "$ns" wrk -t2 -c32 -d2s -H 'Connection: close' "$url" >/dev/null
	for run in $(seq "$runs"); do
		read -r a0 l0 < <(counters_total)
		out=$(in_ns "$ns" wrk -t2 -c32 -d"${seconds}s" -H 'Connection: close' "$url")
		read -r a1 l1 < <(counters_total)
		read -r rps err < <(awk '/^Requests\/sec:/ { rps = $2 }
			/Socket errors:/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
			/Non-2xx/ { err += $NF } END { printf "%.1f %d\n", rps, err }' <<<"$out")
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$clock" "$cpus" "$w" "$arm" "$run" \
			"$rps" "$err" $((a1 - a0)) $((l1 - l0)) >>"$out_file"
		log "$w $arm run $run: $rps conn/s, $err errors, $((l1 - l0)) of $((a1 - a0)) accepts local"
	done
	if [ -n "$lockstat" ]; then
		echo 0 >/proc/lock_stat
		read -r a0 _ < <(counters_total)
		in_ns "$ns" wrk -t2 -c32 -d"${seconds}s" -H 'Connection: close' "$url" >/dev/null
		read -r a1 _ < <(counters_total)
		{ echo "# connections $((a1 - a0))"; cat /proc/lock_stat; } >"$lockstat/$w-$arm.lock_stat"
	fi
}

nginx_w1() { # arm
	local listen="$SERVER_IP:8080"
	[ "$1" = B1 ] || [ "$1" = B2 ] && listen="$listen reuseport"
	mkdir -p "$dir/w1"
	sed -e "s|include /etc/nginx/sites-enabled/\*;|include $dir/w1/server.conf;|" \
		-e "s|^pid .*|pid $dir/w1/nginx.pid;|" /etc/nginx/nginx.conf >"$dir/w1/nginx.conf"
	printf 'server {\n\tlisten %s;\n\taccess_log off;\n\tlocation / { return 200 "%s\\n"; }\n}\n' \
		"$listen" "$(printf '%063d' 0)" >"$dir/w1/server.conf"
	nginx -c "$dir/w1/nginx.conf"
	for _ in $(seq 50); do [ -s "$dir/w1/nginx.pid" ] && break; sleep 0.2; done
	sleep 0.5
	if [ "$1" = B2 ]; then
		sysctl -qw net.ipv4.tcp_migrate_req=1
		local i=0
		for pid in $(pgrep -P "$(cat "$dir/w1/nginx.pid")" | sort -n); do
			taskset -pc $((i % cpus)) "$pid" >/dev/null; i=$((i + 1))
		done
		python3 "$here/reuseport_cpu_bpf.py" "$(cat "$dir/w1/nginx.pid")" 8080 >&2
	fi
}

haproxy_w2() {
	cat >"$dir/haproxy.cfg" <<CFG
global
	nbthread $cpus
	maxconn 20000
	pidfile $dir/haproxy.pid
defaults
	mode http
	option httpclose
	timeout connect 5s
	timeout client 30s
	timeout server 30s
frontend fe
	bind $SERVER_IP:8081
	default_backend be
backend be
	server nginx $BACKEND_IP:8080
CFG
	haproxy -D -f "$dir/haproxy.cfg"
	for _ in $(seq 50); do [ -s "$dir/haproxy.pid" ] && break; sleep 0.2; done
}

out_file=$out
mkdir -p "$dir"
net_up
backend_up
sysctl -qw net.ipv4.tcp_tw_reuse=1
log "bench: $clock clock, $cpus vCPUs, $runs x ${seconds}s per arm, workloads: $workloads"
for w in $workloads; do
	case "$w" in
	W1) for arm in B0 B1 B2 T T0; do
		module_for "$arm"; nginx_w1 "$arm"
		measure W1 "$arm" "$CLIENT_NS" "http://$SERVER_IP:8080/"
		nginx_stop "$dir/w1"; sysctl -qw net.ipv4.tcp_migrate_req=0
	    done ;;
	W2) haproxy_w2
	    for arm in B0 T T0; do
		module_for "$arm"; measure W2 "$arm" "$CLIENT_NS" "http://$SERVER_IP:8081/"
	    done
	    kill "$(cat "$dir/haproxy.pid")"; rm -f "$dir/haproxy.pid" ;;
	W3) for arm in B0 T; do
		module_for "$arm"
		# wrk runs in the measured (initial) netns: its connect()s are what W3 measures.
		measure W3 "$arm" - "http://$BACKEND_IP:8080/"
	    done ;;
	esac
done
log "bench done"
