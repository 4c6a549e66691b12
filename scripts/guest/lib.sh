# shellcheck shell=bash
# Shell helpers for scripts that run inside the guest (demo, benchmarks).
# All traffic stays in the guest: the server listens in the initial netns, the client runs in
# its own netns, joined by a veth pair with RPS spreading the server side over every vCPU the
# way a multi-queue NIC would.

SERVER_IP=10.78.0.1
CLIENT_IP=10.78.0.2
CLIENT_NS=fs-cli
# Ephemeral ports of every namespace that connects (initial and client; the backend's too, for
# one rule): 10000-65000, so no service port (8080 nginx, 8081 haproxy) lies inside it.
# Receive Flow Deliver (net.fastsocket.rfd) steers a segment to cpu_of(dport) only when its
# destination port is inside the receiving namespace's range and its SOURCE port is not: with
# the stock Debian-like 1024-65000, the replies of nginx:8080 would never be steered.
PORT_RANGE="10000 65000"

# Every possible CPU as an rps_cpus mask. RFD works in get_rps_cpu(): every device that
# receives replies of active connections needs RPS, or RFD never sees their segments.
rps_mask() { printf '%x' $(((1 << $(nproc)) - 1)); }

log() { printf '[%s guest] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

net_up() {
	ip netns add "$CLIENT_NS"
	ip link add fs-srv type veth peer name fs-cli netns "$CLIENT_NS"
	ip addr add "$SERVER_IP/24" dev fs-srv
	ip link set fs-srv up
	ip link set lo up
	ip -n "$CLIENT_NS" addr add "$CLIENT_IP/24" dev fs-cli
	ip -n "$CLIENT_NS" link set fs-cli up
	ip -n "$CLIENT_NS" link set lo up
	# RPS on both ends: fs-srv receives the clients' requests, fs-cli the servers' replies to
	# the client's active connections (RFD steers those in the client namespace).
	rps_mask >/sys/class/net/fs-srv/queues/rx-0/rps_cpus
	ip netns exec "$CLIENT_NS" sh -c "echo $(rps_mask) >/sys/class/net/fs-cli/queues/rx-0/rps_cpus"
	# Short connections from one client address: let it reuse ports in TIME_WAIT.
	ip netns exec "$CLIENT_NS" sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="$PORT_RANGE"
	sysctl -qw net.ipv4.ip_local_port_range="$PORT_RANGE"
	sysctl -qw net.core.somaxconn=4096 net.ipv4.tcp_max_syn_backlog=4096
}

net_down() {
	ip link del fs-srv 2>/dev/null || true
	ip netns del "$CLIENT_NS" 2>/dev/null || true
}

# Unchanged Debian nginx: /etc/nginx/nginx.conf as installed (worker_processes auto), with its
# sites-enabled include replaced by one test server that answers 64 bytes.
nginx_start() {
	local dir=$1 port=$2
	mkdir -p "$dir"
	# virtme-ng gives the guest a writable tmpfs overlay on /var; nginx wants these.
	mkdir -p /var/lib/nginx /var/log/nginx
	sed -e "s|include /etc/nginx/sites-enabled/\*;|include $dir/server.conf;|" \
		-e "s|^pid .*|pid $dir/nginx.pid;|" /etc/nginx/nginx.conf >"$dir/nginx.conf"
	cat >"$dir/server.conf" <<CONF
server {
	listen $SERVER_IP:$port;
	access_log off;
	location / { return 200 "$(printf '%063d' 0)\n"; }
}
CONF
	nginx -c "$dir/nginx.conf"
	for _ in $(seq 50); do [ -s "$dir/nginx.pid" ] && return 0; sleep 0.2; done
	log "nginx did not start"; return 1
}

nginx_stop() {
	local dir=$1
	[ -s "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null
	for _ in $(seq 50); do [ -e "$dir/nginx.pid" ] || return 0; sleep 0.2; done
}

# wrk from the client netns with Connection: close; prints "conn_per_s errors".
wrk_close() {
	local url=$1 seconds=$2 conns=${3:-32} out
	out=$(ip netns exec "$CLIENT_NS" wrk -t2 -c"$conns" -d"${seconds}s" -H 'Connection: close' "$url")
	awk '/^Requests\/sec:/ { rps = $2 }
	     /Socket errors:/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
	     /Non-2xx/ { err += $NF }
	     END { printf "%.0f %d\n", rps, err }' <<<"$out"
}

# Median of numbers on stdin.
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Sums over CPUs of the named columns of /proc/net/fastsocket (found by header name), one line,
# space separated; "-" for a column the file lacks, every column "-" without the file.
fs_column_sums() { # column...
	if [ ! -r /proc/net/fastsocket ]; then
		local out=""; for _ in "$@"; do out+="- "; done; echo "${out% }"; return
	fi
	awk -v want="$*" 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
	     { n = split(want, w, " "); for (j = 1; j <= n; j++) if (w[j] in col) s[j] += $col[w[j]] }
	     END { n = split(want, w, " "); for (j = 1; j <= n; j++) printf "%s%s", (w[j] in col) ? s[j] + 0 : "-", (j < n) ? " " : "\n" }' /proc/net/fastsocket
}

# Sums of the columns of /proc/net/fastsocket per CPU: "cpu accepts local".
fs_counters() {
	awk 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
	     { print $col["cpu"], $col["accepts"], $col["local"] }' /proc/net/fastsocket
}

# Arms of round r (1-based): a Williams Latin square. The base sequence 0, 1, n-1, 2, n-2, ...
# is shifted by r-1 each round, so over n rounds every arm runs once in every position and,
# for an even number of arms, after every other arm once. For an odd number of arms one square
# cannot balance predecessors: rounds n+1 to 2n run the first n rounds' orders reversed, so
# over 2n rounds every arm runs twice in every position and after every other arm twice.
# Rounds past the full design start it again.
round_order() { # r arm...
	local r=$1; shift
	local arms=("$@") n=$# j lo=1 hi=$(($# - 1)) base=(0) order=() rev=0 k
	for ((j = 1; j < n; j++)); do
		if ((j % 2)); then base+=("$lo"); lo=$((lo + 1)); else base+=("$hi"); hi=$((hi - 1)); fi
	done
	k=$(((r - 1) % (n % 2 ? 2 * n : n)))
	((k >= n)) && { k=$((k - n)); rev=1; }
	for ((j = 0; j < n; j++)); do order+=("${arms[$(((base[j] + k) % n))]}"); done
	if ((rev)); then
		for ((j = n - 1; j >= 0; j--)); do echo -n "${order[j]}"; ((j)) && echo -n " "; done
		echo
	else
		echo "${order[@]}"
	fi
}

# perf lock (make lockprof, make demo): the perf kernel's contention tracepoints.
PERF=/usr/bin/perf
# perf lock contention: the top 20 call stacks by contentions. --stack-skip 0: perf 6.1 skips
# 3 frames by default (right for its BPF-collected stacks), which on the tracepoint's stack
# drops the function that took the lock and names its caller instead; with 0 it skips only
# the lock functions themselves (the lock and sched text).
# What perf lock cannot see here: the native queued spinlock fires lock:contention_begin only
# for a waiter that joins the MCS queue behind another one (kernel/locking/qspinlock.c), not
# for a lone waiter on the pending bit, so on 2 vCPUs spinlock contention barely shows (and no
# more on 4); rwsems and mutexes are traced on every contention. /proc/lock_stat counts all.
PERF_LOCK_REPORT=(lock contention -k contended --stack-skip 0)

# The perf kernel's contention tracepoints, where perf finds them. virtme-ng mounts tracefs
# and debugfs; mount them if they are missing. On a kernel with lockdep (the lockstat kernel)
# perf lock record would record every acquisition (lock:lock_acquire) instead: refuse.
perflock_check() {
	local t=/sys/kernel/tracing
	[ -e "$t/events" ] || mount -t tracefs tracefs "$t" || true
	[ -e /sys/kernel/debug/tracing ] || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
	if [ ! -e "$t/events/lock/contention_begin" ] || [ ! -e "$t/events/lock/contention_end" ]; then
		log "perflock: no lock:contention_begin/end tracepoints in $t/events/lock" \
			"(it has: $(find "$t/events/lock" -mindepth 1 -maxdepth 1 -printf '%f ' 2>&1));" \
			"CONFIG_TRACEPOINTS and tracefs are needed"
		return 1
	fi
	if [ -e "$t/events/lock/lock_acquire" ]; then
		log "perflock: this kernel has lockdep's lock:lock_acquire; perflock is for the perf kernel"
		return 1
	fi
	[ -x "$PERF" ] || { log "perflock: no $PERF"; return 1; }
	log "perflock: $($PERF --version), tracepoints $t/events/lock/contention_{begin,end}"
}

perf_lock_report() { # data module_state connections file perf-args...
	local data=$1 state=$2 conns=$3 file=$4
	shift 4
	{
		echo "# connections $conns"
		echo "# module $state"
		echo "# perf ${PERF_LOCK_REPORT[*]} $* (perf lock record -a, perf kernel)"
	} >"$file"
	if ! "$PERF" "${PERF_LOCK_REPORT[@]}" -i "$data" "$@" >>"$file" 2>&1; then
		log "perf lock contention $* failed:"; tail -20 "$file" >&2; return 1
	fi
	grep -q '^ *contended  *total wait' "$file" || {
		log "perf lock contention $* printed no table:"; tail -20 "$file" >&2; return 1; }
}
