#!/usr/bin/env bash
# Inside the guest (scripts/bench.sh boots it): every workload x arm, RUNS rounds, appending
# one TSV row per measured run to OUT:
#   clock cpus workload arm run conn_per_s errors accepts local slot module
# (slot: the arm's position in its round; module: "unloaded" or "loaded"), and for W2 and W3
# one row per warm-up run to OUT's directory/active.tsv (active-connection locality, below):
#   clock cpus workload arm run traced complete local connect_ok synack_ok close_ok lost \
#   rfd_ports rfd_fallback rfd_steered rfd_local
#
#   bench.sh KO OUT CLOCK RUNS SECONDS [WORKLOADS] [PROFILE_DIR]
#
# CLOCK is wall or icount (the rate is per second of its clock), or a lock profile:
#   lockstat  (lockstat kernel) /proc/lock_stat is cleared before each measured run and saved
#             after it to PROFILE_DIR/W-ARM[.rRUN].lock_stat
#   perflock  (perf kernel: contention tracepoints, no lockdep) the measured run is wrapped by
#             `perf lock record -a`; `perf lock contention` of it is saved to
#             PROFILE_DIR/W-ARM[.rRUN].perf_lock (top 20 call stacks by contentions, as an
#             operator runs it) and .perf_lock_stacks (every call stack, with the stacks)
#   cpuprof   (perf kernel, booted with --icount) the measured run is wrapped by
#             `perf record -a -F 4999` (cpu-clock: under icount a sample every so many guest
#             instructions); `perf report --sort sym` of it is saved to
#             PROFILE_DIR/W-ARM[.rRUN].cpuprof (scripts/profdiff.py compares the arms)
# Each profile file starts with "# connections N" (as wrk counted them) and
# "# module loaded|unloaded".
#
# BENCH_DRY_RUN=1 prints the schedule (round, arm order, module state and knobs per namespace)
# without touching the system or running anything; it needs no VM (scripts/bench.sh --dry-run).
#
# Workloads (client always in its own netns over veth + RPS):
#   W1  nginx (Debian config, 64-byte response), wrk with Connection: close
#   W2  haproxy (nbthread = vCPUs, httpclose) in front of nginx in another netns
#   W3  connect()-heavy client: wrk in the measured netns against nginx in another netns
# Every namespace's ip_local_port_range is PORT_RANGE (lib.sh, 10000-65000): no service port
# (8080, 8081) inside it, as Receive Flow Deliver needs (it steers a reply only when its source
# port is outside the receiving namespace's range); every veth end has RPS on every CPU (RFD
# works in get_rps_cpu(): fs-be0 receives the backend's replies to W2's haproxy and W3's wrk).
# Arms (a workload named beside an arm is where it runs by default; BENCH_ARMS can name any
# of the module's arms, C to TS, for any workload):
#   B0  stock: the module NOT loaded; one shared listener
#   B1  stock + nginx `listen ... reuseport` (module not loaded)
#   B2  B1 + CPU-steering reuseport BPF attached from outside + tcp_migrate_req=1, workers
#       pinned from outside (taskset) (module not loaded)
#   C   stock placement with the module loaded, counting only: listen_ports empty and rfd=0
#       in every namespace (W1 only; its counters give stock locality, its rate the idle
#       hooks' cost)
#   T   the module, defaults written explicitly in every namespace, Receive Flow Deliver
#       included (rfd=1; for W1's passive side RFD changes nothing: a segment to nginx's
#       port 8080, outside the ephemeral range, is never steered; it steers only the client
#       namespace's replies)
#   T0  T with listen_hold_ms=0 in every namespace (W1)
#   T20 T with listen_hold_ms=20 in every namespace (W1): how much locality under load the
#       hold's bound costs
#   TR0 T with rfd=0 in every namespace: the module without Receive Flow Deliver (in W1 RFD
#       steers only the client's replies, but its receive hook runs for every segment)
#   TQ0 T with listen_queues=0 in every namespace: no per-CPU accept queues, the listener's
#       own queue only (the single-queue design before the local listen table; W1 only)
#   TV0 T with vfs=0 in every namespace: no socket pair cache (the lightweight socket
#       files' share)
#   TP0 T with listen_pull=0 in every namespace: a listener wake-up does not pull a blocked
#       accept() to the handshake's CPU (only when BENCH_ARMS names it)
#   TS  T in the servers' namespaces (initial, backend) only, enabled=0 in the client's: the
#       module as a server sees it, wrk's side stock as if on another machine (the module's
#       cost in the load generator's namespace, RFD for wrk's connections, left out; W2: in
#       W1 RFD steers only wrk's replies, TR0 is that view)
#   TN  T with rfd_peer=1 in every namespace: a server's end of a same-host connection is
#       processed where RFD processes its client's end (the client port's CPU), so both ends
#       of wrk's, haproxy's and nginx's connections run on the CPU that opened them (opt-in)
#   TA  T with nginx's workers pinned one per CPU from outside (taskset, as B2 pins them; no
#       reuseport, no BPF): how much of T's locality under load unpinned workers' placement
#       costs (W1; only when BENCH_ARMS names it)
#
# Every (round, arm) starts from the same state: servers stopped, module unloaded (rmmod);
# for C, T, T0, T20, TQ0, TR0, TV0, TP0, TS, TN and TA the module is loaded again (insmod) and its knobs
# written and read back in every namespace the workloads use (initial, client, backend): the
# scope is the whole guest, by design (TS: enabled=0 in the client's). Then the servers start
# (after the module, so every listener is born under the arm's state), a 2 s warm-up, one
# measured run.
# Round r runs the arms in row r of a Williams Latin square (a base order shifted by r-1), so
# position, predecessor, drift and TIME_WAIT build-up are spread over the arms instead of
# landing on the last ones (for an odd number of arms the square and its mirror, 2n rounds:
# see round_order in lib.sh).
#
# Active-connection locality (W2: haproxy's connections to the backend nginx; W3: wrk's), in
# `bench` runs (not under a lock profile): the WARM-UP run of every (round, arm) is traced with
# the tracepoint sock:inet_sock_set_state (tracefs, filter dport == 8080, global trace clock,
# options/fields so the socket's address is printed); the measured run is not traced. Per
# active socket (key: its address, sport from its SYN_SENT -> ESTABLISHED event, since
# tcp_v4_connect() enters SYN_SENT before it picks the port): the CPU of CLOSE -> SYN_SENT
# (connect), of SYN_SENT -> ESTABLISHED (the SYN-ACK's softirq) and of the first transition
# out of ESTABLISHED (close; for W2/W3 the server's FIN arriving). Local: the three CPUs equal
# and equal to cpu_of(sport) = (sport >> 1) % nr_cpu_ids. lost: events the ring buffer
# overran (then the figures are a sample). The rfd_* columns: the module's counters
# (/proc/net/fastsocket) over the warm-up, "-" where the module is not loaded.
set -euo pipefail
ko=$1 out=$2 clock=$3 runs=$4 seconds=$5 workloads=${6:-W1 W2 W3} profdir=${7:-}
dry=${BENCH_DRY_RUN:-0}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cpus=${BENCH_DRY_CPUS:-$(nproc)}
dir=/tmp/fs-bench
BACKEND_NS=fs-be BACKEND_IP=10.79.0.2 BACKEND_GW=10.79.0.1
NAMESPACES=(- "$CLIENT_NS" "$BACKEND_NS")
WARMUP=2
# The lock profile of the measured runs, if any: lockstat, perflock or none.
profile=none
case "$clock" in
lockstat | perflock | cpuprof)
	profile=$clock
	[ -n "$profdir" ] || { log "clock $clock needs a PROFILE_DIR"; exit 2; } ;;
*) [ -n "$profdir" ] && profile=lockstat ;;
esac

# Runs a command, or in a dry run only says so.
act() { if [ "$dry" = 1 ]; then log "    [dry] $*"; else "$@"; fi; }

# Runs a command in netns $1, or in the current one for "-".
in_ns() { local ns=$1; shift; if [ "$ns" = - ]; then "$@"; else ip netns exec "$ns" "$@"; fi; }
ns_name() { [ "$1" = - ] && echo initial || echo "$1"; }

backend_net_up() {
	ip netns add "$BACKEND_NS"
	ip link add fs-be0 type veth peer name fs-be1 netns "$BACKEND_NS"
	ip addr add "$BACKEND_GW/24" dev fs-be0 && ip link set fs-be0 up
	ip -n "$BACKEND_NS" addr add "$BACKEND_IP/24" dev fs-be1
	ip -n "$BACKEND_NS" link set fs-be1 up && ip -n "$BACKEND_NS" link set lo up
	ip -n "$BACKEND_NS" route add default via "$BACKEND_GW" 2>/dev/null || true
	ip netns exec "$BACKEND_NS" sh -c "echo $(rps_mask) > /sys/class/net/fs-be1/queues/rx-0/rps_cpus"
	# fs-be0 receives nginx's replies to the initial namespace's connect()s (W2, W3): RFD
	# needs RPS there. Port ranges: see PORT_RANGE in lib.sh (no service port inside).
	rps_mask >/sys/class/net/fs-be0/queues/rx-0/rps_cpus
	sysctl -qw net.ipv4.ip_local_port_range="$PORT_RANGE" net.ipv4.tcp_tw_reuse=1
	ip netns exec "$BACKEND_NS" sysctl -qw net.core.somaxconn=4096 net.ipv4.tcp_max_syn_backlog=4096 \
		net.ipv4.ip_local_port_range="$PORT_RANGE"
	mkdir -p /var/lib/nginx /var/log/nginx "$dir/be"
	sed -e "s|include /etc/nginx/sites-enabled/\*;|include $dir/be/server.conf;|" \
		-e "s|^pid .*|pid $dir/be/nginx.pid;|" /etc/nginx/nginx.conf >"$dir/be/nginx.conf"
	printf 'server {\n\tlisten %s:8080;\n\taccess_log off;\n\tlocation / { return 200 "%s\\n"; }\n}\n' \
		"$BACKEND_IP" "$(printf '%063d' 0)" >"$dir/be/server.conf"
}

backend_start() {
	ip netns exec "$BACKEND_NS" nginx -c "$dir/be/nginx.conf"
	for _ in $(seq 50); do [ -s "$dir/be/nginx.pid" ] && return 0; sleep 0.2; done
	log "backend nginx did not start"; return 1
}

haproxy_start() {
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
	rm -f "$dir/haproxy.pid"
	haproxy -D -f "$dir/haproxy.cfg"
	for _ in $(seq 50); do [ -s "$dir/haproxy.pid" ] && return 0; sleep 0.2; done
	log "haproxy did not start"; return 1
}

haproxy_stop() {
	local pid
	[ -s "$dir/haproxy.pid" ] || return 0
	pid=$(cat "$dir/haproxy.pid")
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
	rm -f "$dir/haproxy.pid"
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
	if [ "$1" = B2 ] || [ "$1" = TA ]; then
		local i=0
		for pid in $(pgrep -P "$(cat "$dir/w1/nginx.pid")" | sort -n); do
			taskset -pc $((i % cpus)) "$pid" >/dev/null; i=$((i + 1))
		done
	fi
	if [ "$1" = B2 ]; then
		sysctl -qw net.ipv4.tcp_migrate_req=1
		python3 "$here/reuseport_cpu_bpf.py" "$(cat "$dir/w1/nginx.pid")" 8080 >&2
	fi
}

servers_start() { # workload arm
	case "$1" in
	W1) act nginx_w1 "$2" ;;
	W2) act backend_start; act haproxy_start ;;
	W3) act backend_start ;;
	esac
}

servers_stop() {
	[ "$dry" = 1 ] && return 0
	nginx_stop "$dir/w1" 2>/dev/null || true
	haproxy_stop
	nginx_stop "$dir/be" 2>/dev/null || true
	sysctl -qw net.ipv4.tcp_migrate_req=0
}

# Active-connection locality: tracefs and the tracepoint, set up once per boot.
TRACEFS=/sys/kernel/tracing
TRACE_EVENT=$TRACEFS/events/sock/inet_sock_set_state
RFD_COLUMNS=(rfd_ports rfd_fallback rfd_steered rfd_local)
active_trace=0
active_setup() {
	[ -e "$TRACEFS/events" ] || mount -t tracefs tracefs "$TRACEFS" || true
	if [ ! -e "$TRACE_EVENT/enable" ]; then
		log "active locality: no tracepoint sock:inet_sock_set_state in $TRACEFS (CONFIG_EVENT_TRACING?): not measured"
		return 0
	fi
	echo 0 >"$TRACEFS/tracing_on"
	echo 0 >"$TRACE_EVENT/enable"
	# The events of one socket come from several CPUs: order them by one clock.
	echo global >"$TRACEFS/trace_clock"
	echo 1 >"$TRACEFS/options/fields"
	# No comm recording (the parser reads none): with record-cmd on, every enable and disable
	# of the event also attaches and detaches probes on sched_switch and sched_wakeup, which
	# live-patches those hot sites while the other vCPU runs them; under QEMU TCG one such
	# patch ended a run with "Oops: int3" in ttwu_do_activate() (2026-12-06 09:39 UTC).
	echo 0 >"$TRACEFS/options/record-cmd"
	# 16 MiB per CPU: W3 under icount on 1 vCPU overran 4 MiB in its 2 s warm-up.
	echo 16384 >"$TRACEFS/buffer_size_kb"
	# The active sockets to the backend (W2's haproxy, W3's wrk): destination port 8080.
	echo 'protocol == 6 && dport == 8080' >"$TRACE_EVENT/filter"
	active_trace=1
	log "active locality: $TRACE_EVENT, filter '$(cat "$TRACE_EVENT/filter")', clock global, 16 MiB per CPU"
}

active_start() {
	echo 0 >"$TRACEFS/tracing_on"
	: >"$TRACEFS/trace"
	echo 1 >"$TRACE_EVENT/enable"
	echo 1 >"$TRACEFS/tracing_on"
}

# Stops the trace and prints "traced complete local connect_ok synack_ok close_ok lost".
active_stop() {
	local ncpu lost
	echo 0 >"$TRACE_EVENT/enable"
	echo 0 >"$TRACEFS/tracing_on"
	ncpu=$(($(sed 's/.*[-,]//' /sys/devices/system/cpu/possible) + 1))
	lost=$(awk '/^overrun:/ { s += $2 } END { print s + 0 }' "$TRACEFS"/per_cpu/cpu*/stats)
	active_parse "$TRACEFS/trace" "$ncpu" "$lost"
	: >"$TRACEFS/trace"
}

active_parse() { # trace ncpu lost
	# Lines: "comm-pid [CPU] flags ts: inet_sock_set_state: skaddr=0x... (N) oldstate=0x7 (7)
	# newstate=0x2 (2) sport=0x... (N) ..." (options/fields: hex, then decimal in brackets).
	# shellcheck disable=SC2016 # awk program
	awk -v ncpu="$2" -v lost="$3" '
	function done(k) { if (k in c1) { n++; if ((k in c3) && (k in sp)) { full++
		own = int(sp[k] / 2) % ncpu
		ok1 = (c1[k] == own); ok2 = (c2[k] == own); ok3 = (c3[k] == own)
		a += ok1; b += ok2; c += ok3; if (ok1 && ok2 && ok3) loc++ } }
		delete c1[k]; delete c2[k]; delete c3[k]; delete sp[k] }
	/inet_sock_set_state:/ {
		cpu = -1; sk = ""; os = -1; ns = -1; port = -1
		for (i = 1; i <= NF; i++) {
			if ($i ~ /^\[[0-9]+\]$/ && cpu < 0) { cpu = substr($i, 2, length($i) - 2) + 0 }
			else if ($i ~ /^skaddr=/) sk = substr($i, 8)
			else if ($i ~ /^(oldstate|newstate|sport)=/) {
				v = $(i + 1); gsub(/[()]/, "", v)
				if ($i ~ /^oldstate/) os = v + 0; else if ($i ~ /^newstate/) ns = v + 0; else port = v + 0
			}
		}
		if (cpu < 0 || sk == "") next
		# TCP states: 1 ESTABLISHED, 2 SYN_SENT, 7 CLOSE
		if (os == 7 && ns == 2) { done(sk); c1[sk] = cpu; next }
		if (!(sk in c1)) next
		if (os == 2 && ns == 1) { c2[sk] = cpu; sp[sk] = port; next }
		if (os == 1 && (sk in c2) && !(sk in c3)) { c3[sk] = cpu; done(sk) }
	}
	END { for (k in c1) done(k); printf "%d %d %d %d %d %d %d\n", n, full, loc, a, b, c, lost }
	' "$1"
}

module_loaded() { if [ "$dry" = 1 ]; then [ "$dry_loaded" = 1 ]; else [ -e /sys/module/fastsocket ]; fi; }
dry_loaded=0

# The knobs each arm writes in every namespace (knob=value, space separated).
arm_knobs() {
	case "$1" in
	C) echo "enabled=1 listen_ports= rfd=0 vfs=0" ;;
	T) echo "enabled=1 listen_ports=all listen_scan=64 listen_hold_ms=5 listen_pull=1 listen_queues=1 rfd=1 vfs=1 rfd_peer=0" ;;
	T0) echo "enabled=1 listen_ports=all listen_scan=64 listen_hold_ms=0 listen_pull=1 listen_queues=1 rfd=1 vfs=1 rfd_peer=0" ;;
	T20) echo "enabled=1 listen_ports=all listen_scan=64 listen_hold_ms=20 listen_pull=1 listen_queues=1 rfd=1 vfs=1 rfd_peer=0" ;;
	TQ0) echo "enabled=1 listen_ports=all listen_scan=64 listen_hold_ms=5 listen_pull=1 listen_queues=0 rfd=1 vfs=1 rfd_peer=0" ;;
	TR0) echo "enabled=1 listen_ports=all listen_scan=64 listen_hold_ms=5 listen_pull=1 listen_queues=1 rfd=0 vfs=1 rfd_peer=0" ;;
	TV0) echo "enabled=1 listen_ports=all listen_scan=64 listen_hold_ms=5 listen_pull=1 listen_queues=1 rfd=1 vfs=0 rfd_peer=0" ;;
	TP0) echo "enabled=1 listen_ports=all listen_scan=64 listen_hold_ms=5 listen_pull=0 listen_queues=1 rfd=1 vfs=1 rfd_peer=0" ;;
	TS) echo "enabled=1 listen_ports=all listen_scan=64 listen_hold_ms=5 listen_pull=1 listen_queues=1 rfd=1 vfs=1 rfd_peer=0" ;;
	TN) echo "enabled=1 listen_ports=all listen_scan=64 listen_hold_ms=5 listen_pull=1 listen_queues=1 rfd=1 vfs=1 rfd_peer=1" ;;
	TA) arm_knobs T ;;
	esac
}

# The knobs of ARM in namespace NS: TS leaves the module off in the client's namespace.
arm_ns_knobs() { # arm ns
	if [ "$1" = TS ] && [ "$2" = "$CLIENT_NS" ]; then echo "enabled=0"; else arm_knobs "$1"; fi
}

# Puts the module in the arm's state and logs it: unloaded for the B arms; for C, T, T0, T20, TQ0,
# TR0, TV0, TP0, TS, TN and TA a fresh insmod with the arm's knobs written and read back in every namespace.
module_for() { # arm
	local arm=$1 knobs ns kv got want
	if module_loaded; then act rmmod fastsocket; dry_loaded=0; fi
	knobs=$(arm_knobs "$arm")
	if [ -z "$knobs" ]; then
		if [ "$dry" != 1 ] && [ -e /sys/module/fastsocket ]; then
			log "$arm: the module is still loaded"; return 1
		fi
		log "  module: NOT loaded (stock kernel paths; hooks: $(hooks_state))"
		return 0
	fi
	act insmod "$ko"; dry_loaded=1
	for ns in "${NAMESPACES[@]}"; do
		knobs=$(arm_ns_knobs "$arm" "$ns")
		if [ "$dry" = 1 ]; then
			log "  module: loaded; $(ns_name "$ns"): $knobs"
			continue
		fi
		for kv in $knobs; do in_ns "$ns" sysctl -qw "net.fastsocket.$kv"; done
		got="" want=""
		for kv in $knobs; do
			got+="${kv%%=*}=$(in_ns "$ns" cat "/proc/sys/net/fastsocket/${kv%%=*}") "
			want+="$kv "
		done
		log "  module: loaded; $(ns_name "$ns"): $got"
		[ "$got" = "$want" ] || { log "$arm: knobs in $(ns_name "$ns") read back as '$got', want '$want'"; return 1; }
	done
	log "  hooks: $(hooks_state)"
}

hooks_state() {
	if [ "$dry" = 1 ]; then echo "(dry run)"; return; fi
	if [ -r /proc/net/fastsocket_hooks ]; then tr '\n' ' ' </proc/net/fastsocket_hooks; else echo "no /proc/net/fastsocket_hooks"; fi
}

# TIME_WAIT sockets in a namespace, from /proc/net/sockstat ("TCP: inuse N orphan N tw N ...").
# shellcheck disable=SC2016 # awk program
tw_count() { in_ns "$1" awk '/^TCP:/ { for (i = 1; i < NF; i++) if ($i == "tw") print $(i + 1) }' /proc/net/sockstat; }

# The module's wake-up and queue counters summed over CPUs, as "name=value" words, so that two
# samples around a run say where its non-local accepts came from (empty if not loaded).
# shellcheck disable=SC2016 # awk program
counters_sums() {
	[ -e /proc/net/fastsocket ] || return 0
	awk 'NR == 1 { for (i = 1; i <= NF; i++) if ($i ~ /^(wake|queue)_/) col[i] = $i; next }
	     { for (i in col) sum[col[i]] += $i }
	     END { for (c in sum) printf "%s=%d ", c, sum[c] }' /proc/net/fastsocket
}

# The difference of two counters_sums samples, columns in a fixed order.
# shellcheck disable=SC2016 # awk program
counters_delta() { # before after
	awk -v before="$1" -v after="$2" 'BEGIN {
		n = split(before, b, " "); for (i = 1; i <= n; i++) { split(b[i], kv, "="); v[kv[1]] = kv[2] }
		n = split(after, a, " ")
		for (i = 1; i <= n; i++) { split(a[i], kv, "="); d[kv[1]] = kv[2] - v[kv[1]] }
		split("wake_local wake_pulled wake_held wake_dropped wake_fallback queue_local queue_steal queue_fallback", order, " ")
		for (i = 1; i <= 8; i++) if (order[i] in d) printf "%s %d, ", order[i], d[order[i]] }'
}

counters_total() {
	if [ -e /proc/net/fastsocket ]; then
		fs_counters | awk '{ a += $2; l += $3 } END { print a + 0, l + 0 }'
	else
		echo "0 0"
	fi
}

# The guest's CPU time so far, in USER_HZ ticks, and its context switches: "busy idle ctxt"
# (idle includes iowait). Two samples around a run give the share of it the vCPUs sat idle,
# which a wall-clock rate pays for and an icount one does not (icount skips idle time).
# shellcheck disable=SC2016 # awk program
cpu_sample() {
	awk '$1 == "cpu" { idle = $5 + $6; for (i = 2; i <= 9; i++) all += $i }
		$1 == "ctxt" { cs = $2 } END { print all - idle, idle, cs }' /proc/stat
}

# Interrupts that move work between CPUs, summed over CPUs, and where context switches happen:
# "function-call-IPIs (RPS hand-offs and remote wake-ups) rescheduling-IPIs NET_RX-softirqs
# switches-of:ksoftirqd switches-of:haproxy switches-of:nginx" (the servers run across the
# measured run; wrk starts and ends inside it, so its threads are not sampled).
# shellcheck disable=SC2016 # awk program
ipi_sample() {
	awk -v cpus="$(nproc)" 'FILENAME ~ /interrupts/ && ($1 == "CAL:" || $1 == "RES:") {
			for (i = 2; i <= cpus + 1; i++) n[$1] += $i }
		FILENAME ~ /softirqs/ && $1 == "NET_RX:" { for (i = 2; i <= cpus + 1; i++) rx += $i }
		FNR == 1 && FILENAME ~ /status/ { name = $2; sub(/\/.*/, "", name) }
		FILENAME ~ /status/ && /ctxt_switches:/ { cs[name] += $2 }
		END { print n["CAL:"] + 0, n["RES:"] + 0, rx + 0, cs["ksoftirqd"] + 0,
			cs["haproxy"] + 0, cs["nginx"] + 0 }' \
		/proc/interrupts /proc/softirqs /proc/[0-9]*/task/*/status 2>/dev/null
}

# One measured (round, arm): module state, servers, warm-up, one run of wrk against URL from
# netns NS (under `perf lock record` for perflock), and the arm's lock profile.
measure() { # workload arm round slot ns url
	local w=$1 arm=$2 run=$3 slot=$4 ns=$5 url=$6 rps err reqs a0 l0 a1 l1 res state name wrk
	local cal0 res0 rx0 ks0 hs0 ns0 cal1 res1 rx1 ks1 hs1 ns1
	local data=$dir/perf-lock.data active=0
	# Active locality: W2 and W3 in bench runs, warm-up only.
	[ "$profile" = none ] && [ "$w" != W1 ] && [ "$active_trace" = 1 ] && active=1
	[ "$profile" = none ] && [ "$w" != W1 ] && [ "$dry" = 1 ] && active=1
	servers_stop
	log "$w round $run slot $slot: $arm"
	module_for "$arm"
	state=$(module_loaded && echo loaded || echo unloaded)
	servers_start "$w" "$arm"
	name="$w-$arm"
	[ "$runs" -gt 1 ] && name="$name.r$run"
	# ip netns exec, not in_ns: under perf the command is a program, not a shell function.
	wrk=(wrk -t2 -c32 -d"${seconds}s" -H 'Connection: close' "$url")
	[ "$ns" = - ] || wrk=(ip netns exec "$ns" "${wrk[@]}")
	if [ "$dry" = 1 ]; then
		log "    [dry] wrk ${WARMUP}s warm-up$([ "$active" = 1 ] && echo ' (traced: sock:inet_sock_set_state dport 8080, active locality)'), ${seconds}s measured from $(ns_name "$ns") -> $url"
		case "$profile" in
		lockstat) log "    [dry] /proc/lock_stat cleared before the measured run, saved after it to $profdir/$name.lock_stat" ;;
		perflock)
			log "    [dry] measured run: $PERF lock record -a -N -o $data -- ${wrk[*]}"
			log "    [dry] $PERF ${PERF_LOCK_REPORT[*]} -i $data -E 20 > $profdir/$name.perf_lock; every stack (-v) > $profdir/$name.perf_lock_stacks" ;;
		cpuprof) log "    [dry] measured run: $PERF record -a -F 4999 -N -o $data -- ${wrk[*]}; perf report --sort sym > $profdir/$name.cpuprof" ;;
		esac
		return 0
	fi
	log "  TIME_WAIT: initial $(tw_count -), client $(tw_count "$CLIENT_NS"), backend $(tw_count "$BACKEND_NS")"
	if [ "$active" = 1 ]; then
		local r0 r1 act
		read -r -a r0 < <(fs_column_sums "${RFD_COLUMNS[@]}")
		active_start
		in_ns "$ns" wrk -t2 -c32 -d"${WARMUP}s" -H 'Connection: close' "$url" >/dev/null
		act=$(active_stop)
		read -r -a r1 < <(fs_column_sums "${RFD_COLUMNS[@]}")
		local rfd="" i
		for i in 0 1 2 3; do
			if [ "${r0[i]}" = - ] || [ "${r1[i]}" = - ]; then rfd+=" -"; else rfd+=" $((r1[i] - r0[i]))"; fi
		done
		# shellcheck disable=SC2086 # word lists
		printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$clock" "$cpus" "$w" "$arm" "$run" \
			"$(echo $act $rfd | tr ' ' '\t')" >>"$active_file"
		log "  warm-up traced: traced complete local connect_ok synack_ok close_ok lost: $act; ${RFD_COLUMNS[*]}:$rfd"
	else
		in_ns "$ns" wrk -t2 -c32 -d"${WARMUP}s" -H 'Connection: close' "$url" >/dev/null
	fi
	[ "$profile" = lockstat ] && echo 0 >/proc/lock_stat
	read -r a0 l0 < <(counters_total)
	sums0=$(counters_sums)
	read -r busy0 idle0 cs0 < <(cpu_sample)
	read -r cal0 res0 rx0 ks0 hs0 ns0 < <(ipi_sample)
	if [ "$profile" = perflock ] || [ "$profile" = cpuprof ]; then
		local record=(record -a -F 4999)
		[ "$profile" = perflock ] && record=(lock record -a)
		[ "$profile" = cpuprof ] && [ -n "${CPUPROF_CALLERS:-}" ] && record+=(-g)
		rm -f "$data"
		# -N: no build-id cache under a read-only $HOME. perf's own messages go to a log.
		res=$("$PERF" "${record[@]}" -N -o "$data" -- "${wrk[@]}" 2>"$dir/perf-record.log") || {
			log "$w $arm: perf ${record[*]} failed:"; cat "$dir/perf-record.log" >&2; return 1; }
		log "  $(grep 'perf record: Captured' "$dir/perf-record.log" || tail -1 "$dir/perf-record.log")"
	else
		res=$("${wrk[@]}")
	fi
	read -r busy1 idle1 cs1 < <(cpu_sample)
	read -r cal1 res1 rx1 ks1 hs1 ns1 < <(ipi_sample)
	read -r a1 l1 < <(counters_total)
	sums1=$(counters_sums)
	read -r rps err reqs < <(awk '/^Requests\/sec:/ { rps = $2 }
		/ requests in / { reqs = $1 }
		/Socket errors:/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
		/Non-2xx/ { err += $NF } END { printf "%.1f %d %d\n", rps, err, reqs }' <<<"$res")
	# Connections as wrk counted them (Connection: close: one per request), the same way in
	# every arm: the module's counters do not exist where it is not loaded.
	case "$profile" in
	lockstat)
		{ echo "# connections $reqs"; echo "# module $state"; cat /proc/lock_stat; } \
			>"$profdir/$name.lock_stat" ;;
	cpuprof)
		# The module's symbols are in /proc/kallsyms only while it is loaded: report now.
		{ echo "# connections $reqs"; echo "# module $state"
			"$PERF" report -i "$data" --kallsyms=/proc/kallsyms --no-children --sort sym \
				--stdio -g none --percent-limit 0.02 2>/dev/null; } >"$profdir/$name.cpuprof"
		# Who calls the symbols named in CPUPROF_CALLERS (call chains recorded with -g).
		for sym in ${CPUPROF_CALLERS:-}; do
			echo "# callers of $sym"
			"$PERF" report -i "$data" --kallsyms=/proc/kallsyms --no-children --sort sym \
				--symbols "$sym" --stdio -g graph,0.5,callee 2>/dev/null
		done >"$profdir/$name.callers"
		rm -f "$data" ;;
	perflock)
		# perf lock contention prints everything, its table included, on stderr. It reads
		# the symbols from /proc/kallsyms: the module's are there only while it is loaded,
		# so the report is made now, before the next arm unloads it.
		perf_lock_report "$data" "$state" "$reqs" "$profdir/$name.perf_lock" -E 20
		perf_lock_report "$data" "$state" "$reqs" "$profdir/$name.perf_lock_stacks" -v
		log "  perf lock contention, top 5 call stacks by contentions:"
		grep -A6 '^ *contended  *total wait' "$profdir/$name.perf_lock" | sed 's/^/    /' >&2 || true
		rm -f "$data" ;;
	esac
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$clock" "$cpus" "$w" "$arm" "$run" \
		"$rps" "$err" $((a1 - a0)) $((l1 - l0)) "$slot" "$state" >>"$out_file"
	# The run's event counts, for report.py's per-connection table (the log line below).
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$clock" "$cpus" "$w" "$arm" \
		"$run" "$reqs" $((cs1 - cs0)) $((cal1 - cal0)) $((res1 - res0)) $((rx1 - rx0)) \
		$((ks1 - ks0)) $((hs1 - hs0)) $((ns1 - ns0)) >>"$events_file"
	log "  $w $arm round $run: $rps conn/s, $err errors, module $state, $((l1 - l0)) of $((a1 - a0)) accepts local, $(awk -v clock="$clock" -v b=$((busy1 - busy0)) -v i=$((idle1 - idle0)) \
		-v c=$((cs1 - cs0)) -v n="$reqs" -v cal=$((cal1 - cal0)) -v res=$((res1 - res0)) \
		-v rx=$((rx1 - rx0)) -v ks=$((ks1 - ks0)) \
		-v hs=$((hs1 - hs0)) -v ns=$((ns1 - ns0)) 'BEGIN {
		# Under icount idle time is skipped (the clock jumps to the next timer): no share.
		if (clock == "wall") printf "vCPUs idle %.1f%%, ", 100 * i / (b + i + (b + i == 0))
		n += (n == 0)
		printf "per connection: %.1f context switches, %.2f function-call IPIs, %.2f rescheduling IPIs, %.2f NET_RX softirqs; switches of ksoftirqd %.2f, haproxy %.2f, nginx %.2f", c / n, cal / n, res / n, rx / n, ks / n, hs / n, ns / n }')"
	if [ -n "$sums1" ]; then log "  $w $arm round $run counters: $(counters_delta "$sums0" "$sums1")"; fi
}

# `perf lock contention` of DATA into FILE with the profile header; fails loudly where perf
# fails or prints no table.
cleanup() {
	[ "$dry" = 1 ] && return 0
	servers_stop
	rmmod fastsocket 2>/dev/null || true
	ip netns del "$BACKEND_NS" 2>/dev/null || true
	ip link del fs-be0 2>/dev/null || true
	net_down
}
trap cleanup EXIT

out_file=$out
active_file=$(dirname "$out")/active.tsv
events_file=$(dirname "$out")/events.tsv
if [ "$dry" != 1 ]; then
	mkdir -p "$dir"
	# Start from a guest without the module, whatever ran before.
	rmmod fastsocket 2>/dev/null || true
	[ "$profile" = perflock ] && perflock_check
	[ "$profile" = none ] && active_setup
	net_up
	backend_net_up
	sysctl -qw net.ipv4.tcp_tw_reuse=1
fi
log "bench: $clock clock, $cpus vCPUs, $runs rounds x ${seconds}s per arm (+${WARMUP}s warm-up), workloads: $workloads$([ "$dry" = 1 ] && echo ', DRY RUN')"
log "  every arm: servers stopped, module unloaded; C/T/T0/T20/TQ0/TR0/TV0/TP0/TS/TN/TA: insmod and knobs in namespaces: initial $CLIENT_NS $BACKEND_NS (TS: enabled=0 in $CLIENT_NS)"
log "  ip_local_port_range $PORT_RANGE in every namespace (no service port inside: RFD); RPS on every CPU on fs-srv, fs-cli, fs-be0, fs-be1"
case "$profile" in
lockstat) log "  lock profile: /proc/lock_stat per measured run -> $profdir" ;;
perflock) log "  lock profile: perf lock record -a around each measured run (contention tracepoints) -> $profdir" ;;
cpuprof) log "  CPU profile: perf record -a -F 4999 around each measured run (cpu-clock) -> $profdir" ;;
esac
for w in $workloads; do
	case "$w" in
	W1) arms=(B0 B1 B2 C T T0 T20 TQ0 TR0 TV0 TN) ns=$CLIENT_NS url="http://$SERVER_IP:8080/" ;;
	W2) arms=(B0 T TR0 TV0 TS TN) ns=$CLIENT_NS url="http://$SERVER_IP:8081/" ;;
	# wrk runs in the measured (initial) netns: its connect()s are what W3 measures.
	W3) arms=(B0 T TR0 TV0 TN) ns=- url="http://$BACKEND_IP:8080/" ;;
	*) log "unknown workload $w"; exit 2 ;;
	esac
	if [ -n "${BENCH_ARMS:-}" ]; then
		# Only the arms BENCH_ARMS names (make bench BENCH_ARMS="B0 T TV0"): the workload's
		# own, and any other of the module's arms (T0 in W2, say), which every workload can
		# run; the stock variants B1 and B2 only where the workload has them.
		local_arms=("${arms[@]}")
		arms=()
		for arm in $BENCH_ARMS; do
			if printf '%s\n' "${local_arms[@]}" | grep -Fxq "$arm" || [ -n "$(arm_knobs "$arm")" ]; then
				arms+=("$arm")
			fi
		done
		[ "${#arms[@]}" -gt 0 ] || { log "$w: none of BENCH_ARMS ($BENCH_ARMS)"; continue; }
	fi
	for run in $(seq "$runs"); do
		read -r -a order < <(round_order "$run" "${arms[@]}")
		log "$w round $run order: ${order[*]}"
		slot=0
		for arm in "${order[@]}"; do
			slot=$((slot + 1))
			measure "$w" "$arm" "$run" "$slot" "$ns" "$url"
		done
	done
	servers_stop
done
log "bench done"
