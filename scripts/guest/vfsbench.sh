#!/usr/bin/env bash
# Inside the guest (scripts/vfsbench.sh boots it): the socket-file microbenchmark
# (bench/sockbench) for `make vfsbench`, issue 12.
#
#   vfsbench.sh KO OUT_DIR wall|icount ROUNDS   every case x arm, ROUNDS rounds; one TSV row
#                                               per run appended to OUT_DIR/vfsbench.tsv:
#       clock cpus case mode workers arm round slot module ops elapsed_ns idle_ns
#   (idle_ns: idle + iowait of every CPU over the timed window, as sockbench reports it from
#   /proc/timer_list; under icount on 1 vCPU, guest time in which no instruction ran)
#   vfsbench.sh KO OUT_DIR stages icount        socket()+close(), 1 thread, with a kprobe on
#                                               each function of its path (STAGE_FUNCS), for
#                                               each arm of VFSBENCH_STAGE_ARMS (stock T):
#                                               exact instructions per stage, appended to
#                                               OUT_DIR/stages.tsv by scripts/vfsstages.py
#                                               (1 vCPU under icount; a base row per arm
#                                               gives one operation without probes)
#   vfsbench.sh KO OUT_DIR profile BOOT         perf record -a -g around socket and accept
#                                               (1 thread) into OUT_DIR/profile/, for each arm
#                                               of VFSBENCH_PROFILE_ARMS (default: stock, the
#                                               module not loaded; T's files are CASE.T.*);
#                                               BOOT (wall or icount) says how the guest was
#                                               booted, for the record
#
# Cases: socket, socketpair, accept (bench/sockbench/src/main.rs says what one operation
# includes), each at 1 and 2 threads of one process and at 1 and 2 processes. accept's
# connections come from CLIENT_NS (lib.sh) over veth to a listener on SERVER_IP:8090 in the
# initial namespace.
# Arms (VFSBENCH_ARMS, default "stock T"): stock (the module NOT loaded) and T (the current
# module loaded afresh with its defaults, read back in both namespaces: its socket pair cache
# included); C, TR0, TL0, TV0... (module_for below) tell its parts' costs apart.
# Each round runs the arms in the Williams order of lib.sh's round_order (stock, T; then T,
# stock; ...), every case of an arm in one go after its insmod/rmmod.
#
# Operations per worker: VFSBENCH_OPS_SOCKET, VFSBENCH_OPS_SOCKETPAIR, VFSBENCH_OPS_ACCEPT
# (a tenth of that as an untimed warm-up per run); VFSBENCH_CASES limits the cases.
# Profile: VFSBENCH_PROFILE_OPS_SOCKET, VFSBENCH_PROFILE_OPS_ACCEPT operations, sampled at
# VFSBENCH_PROFILE_FREQ Hz.
set -euo pipefail
ko=$1 out=$2 clock=$3 rounds=${4:-5}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
# shellcheck source=scripts/guest/lib.sh
. "$here/lib.sh"
sb=$top/bench/sockbench/target/release/sockbench
ops_socket=${VFSBENCH_OPS_SOCKET:-40000}
ops_socketpair=${VFSBENCH_OPS_SOCKETPAIR:-20000}
ops_accept=${VFSBENCH_OPS_ACCEPT:-1500}
cases=${VFSBENCH_CASES:-socket socketpair accept}
CONFIGS=("threads 1" "threads 2" "procs 1" "procs 2")
# VFSBENCH_CONFIGS ("threads:1 procs:2 ..."): fewer of them.
if [ -n "${VFSBENCH_CONFIGS:-}" ]; then
	CONFIGS=()
	for c in $VFSBENCH_CONFIGS; do CONFIGS+=("${c%%:*} ${c##*:}"); done
fi
PORT=8090
PERF=/usr/bin/perf
cpus=$(nproc)

[ -x "$sb" ] || { log "no $sb (cargo build --release --locked in bench/sockbench)"; exit 1; }

ops_of() {
	case "$1" in
	socket) echo "$ops_socket" ;;
	socketpair) echo "$ops_socketpair" ;;
	accept) echo "$ops_accept" ;;
	*) log "unknown case $1"; return 1 ;;
	esac
}

# One sockbench run; prints its result line.
sockbench() { # case mode workers ops
	local c=$1 m=$2 w=$3 n=$4 extra=()
	[ "$c" = accept ] && extra=(--listen "$SERVER_IP:$PORT" --client-netns "/run/netns/$CLIENT_NS")
	"$sb" --case "$c" --mode "$m" --workers "$w" --ops "$n" --warmup $((n / 10)) "${extra[@]}"
}

knobs_of() { # netns ("-" for the initial one)
	local d=/proc/sys/net/fastsocket k s=""
	for k in "$d"/*; do
		if [ "$1" = - ]; then s+="${k##*/}=$(cat "$k") "; else s+="${k##*/}=$(ip netns exec "$1" cat "$k") "; fi
	done
	echo "${s% }"
}

# Sets knob $1 (name=value) of the module in the initial namespace and in the client's.
set_knob() {
	sysctl -qw "net.fastsocket.$1"
	ip netns exec "$CLIENT_NS" sysctl -qw "net.fastsocket.$1"
}

# The arms: stock (module not loaded); T (loaded, defaults); and, to tell what each part of
# the module costs, the module loaded with one part off in both namespaces: C (enabled=0:
# every hook returns at once), TR0 (rfd=0: no Receive Flow Deliver), TL0 (listen_ports
# empty: no listener in scope of accept locality); and one knob of accept locality off: TH0
# (listen_hold_ms=0), TP0 (listen_pull=0), TQ0 (listen_queues=0); and TV0 (vfs=0: no socket pair
# cache).
module_for() { # arm
	if [ -e /sys/module/fastsocket ]; then rmmod fastsocket; fi
	case "$1" in
	stock)
		[ ! -e /sys/module/fastsocket ] || { log "the module is still loaded"; return 1; }
		log "  module: NOT loaded"
		return 0 ;;
	T) insmod "$ko" ;;
	C) insmod "$ko" && set_knob enabled=0 ;;
	TR0) insmod "$ko" && set_knob rfd=0 ;;
	TL0) insmod "$ko" && set_knob listen_ports= ;;
	TH0) insmod "$ko" && set_knob listen_hold_ms=0 ;;
	TP0) insmod "$ko" && set_knob listen_pull=0 ;;
	TQ0) insmod "$ko" && set_knob listen_queues=0 ;;
	TV0) insmod "$ko" && set_knob vfs=0 ;;
	*) log "unknown arm $1"; return 1 ;;
	esac
	log "  module: loaded ($1); initial: $(knobs_of -)"
	log "  module: loaded ($1); $CLIENT_NS: $(knobs_of "$CLIENT_NS")"
}

# TIME_WAIT sockets in the initial namespace (accept's server side closes first).
tw_count() { awk '/^TCP:/ { for (i = 1; i < NF; i++) if ($i == "tw") print $(i + 1) }' /proc/net/sockstat; }

cleanup() {
	rmmod fastsocket 2>/dev/null || true
	net_down
}
trap cleanup EXIT
rmmod fastsocket 2>/dev/null || true
net_up
# accept's server closes first, so its side would keep each connection in TIME_WAIT: once the
# namespace's 8,192 buckets (this guest's default) are full, later closes skip TIME_WAIT, and a
# client port reused within 60 s meets an old TIME_WAIT socket; the path then changes from run
# to run. With no TIME_WAIT buckets every connection takes the same path: a fresh 4-tuple, and
# a close that ends in tcp_done().
sysctl -qw net.ipv4.tcp_max_tw_buckets=0

if [ "$clock" = profile ]; then
	freq=${VFSBENCH_PROFILE_FREQ:-5000} boot=$rounds
	mkdir -p "$out/profile"
	sysctl -qw kernel.kptr_restrict=0 kernel.perf_event_paranoid=-1
	for arm in ${VFSBENCH_PROFILE_ARMS:-stock}; do
		module_for "$arm"
		# stock keeps the names vfsreport.py reads; another arm's files are CASE.ARM.*
		sfx='' what="module not loaded"
		[ "$arm" = stock ] || sfx=.$arm what="arm $arm (module loaded, see module_for)"
		log "profile: $($PERF --version), perf record -a -g -F $freq, $cpus vCPUs, $what"
		for c in socket accept; do
			n=${VFSBENCH_PROFILE_OPS_SOCKET:-100000}
			[ "$c" = accept ] && n=${VFSBENCH_PROFILE_OPS_ACCEPT:-8000}
			data=/tmp/vfsbench-$c.data
			# -N: no build-id cache under the read-only $HOME; perf's own messages to a log.
			extra=()
			[ "$c" = accept ] && extra=(--listen "$SERVER_IP:$PORT" --client-netns "/run/netns/$CLIENT_NS")
			res=$("$PERF" record -a -g -F "$freq" -N -o "$data" -- \
				"$sb" --case "$c" --mode threads --workers 1 --ops "$n" --warmup $((n / 10)) "${extra[@]}" \
				2>/tmp/vfsbench-perf.log) || { cat /tmp/vfsbench-perf.log >&2; exit 1; }
			log "  $arm $c: $res; $(grep 'perf record: Captured' /tmp/vfsbench-perf.log || tail -1 /tmp/vfsbench-perf.log)"
			{
				echo "# $res"
				echo "# perf record -a -g -F $freq (cpu-clock), $cpus vCPUs, boot: $boot, $what"
				"$PERF" report -i "$data" --kallsyms=/proc/kallsyms --no-children --sort sym --stdio -g none --percent-limit 0.3 2>&1
			} >"$out/profile/$c$sfx.perf_report"
			# Every sample's call chain, folded into "frame;frame;...;leaf count" (outermost first).
			{
				echo "# $res"
				echo "# perf record -a -g -F $freq (cpu-clock), $cpus vCPUs, boot: $boot, $what"
				"$PERF" script -i "$data" --kallsyms=/proc/kallsyms -F comm,tid,cpu,ip,sym,dso 2>/dev/null |
					python3 "$top/scripts/vfsprof.py" fold
			} >"$out/profile/$c$sfx.folded"
			rm -f "$data"
		done
	done
	log "profile done"
	exit 0
fi

# The functions of socket()+close() that the stages clock probes (scripts/vfsstages.py): the
# system calls, the inode, the protocol, the descriptor, the dentry and the file, and the
# teardown of each; the socket pair cache's hooks where the module is loaded.
STAGE_FUNCS="__x64_sys_socket __sock_create sock_alloc __fastsocket_sock_pair_get alloc_inode
	inode_init_always_gfp security_inode_alloc get_next_ino inet_create sk_alloc
	security_sk_alloc tcp_v4_init_sock get_unused_fd_flags sock_alloc_file alloc_file_path
	alloc_file_pseudo d_alloc_pseudo d_instantiate alloc_empty_file security_file_alloc
	fd_install __x64_sys_close file_close_fd filp_flush __fput sock_close __sock_release
	inet_release tcp_close sk_free __fastsocket_sock_pair_put __dentry_kill evict
	truncate_inode_pages_final clear_inode destroy_inode __destroy_inode security_inode_free
	call_rcu mntput security_file_free"

# One traced run of socket()+close() with an entry kprobe on each of $1 (a list of
# functions): the trace, with the x86-tsc clock (under icount: instructions), in $2.trace and
# the probes as the kernel placed them (optimised or not) in $2.list.
stage_pass() { # functions file-prefix
	local t=/sys/kernel/tracing f
	[ ! -e "$t/events/kprobes/enable" ] || echo 0 >"$t/events/kprobes/enable"
	echo >"$t/kprobe_events"
	for f in $1; do
		echo "p:fs_$f $f" >>"$t/kprobe_events" 2>/dev/null || log "  stages: no kprobe on $f (not in this kernel)"
	done
	echo 1 >"$t/events/kprobes/enable"
	# The kprobe optimiser replaces int3 probes with jumps a few jiffies after they are set.
	sleep 1
	cp /sys/kernel/debug/kprobes/list "$2.list"
	echo >"$t/trace"
	sockbench socket threads 1 "$stage_ops" >/dev/null
	echo 0 >"$t/events/kprobes/enable"
	cp "$t/trace" "$2.trace"
	echo >"$t/kprobe_events"
}

if [ "$clock" = stages ]; then
	stage_ops=${VFSBENCH_STAGE_OPS:-3000}
	work=/tmp/vfsstages
	mkdir -p "$work"
	mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
	mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug
	echo 32768 >/sys/kernel/tracing/buffer_size_kb
	echo x86-tsc >/sys/kernel/tracing/trace_clock
	for arm in ${VFSBENCH_STAGE_ARMS:-stock T}; do
		module_for "$arm"
		# Without probes: the instructions of one operation, to set beside the stages' sum
		# (three runs: the first after a boot or an insmod may misread its idle time).
		for _ in 1 2 3; do
			line=$(sockbench socket threads 1 "$stage_ops")
			n=$(sed -n 's/.* ops=\([0-9]*\) .*/\1/p' <<<"$line")
			ns=$(sed -n 's/.* elapsed_ns=\([0-9]*\).*/\1/p' <<<"$line")
			idle=$(sed -n 's/.* idle_ns=\([0-9]*\).*/\1/p' <<<"$line")
			printf '# base\t%s\t%s\n' "$arm" $(((ns - idle) / n)) >>"$out/stages.tsv"
		done
		stage_pass "$STAGE_FUNCS" "$work/all"
		mv "$work/all.list" "$work/kprobes.list"
		for p in odd even; do
			stage_pass "$(python3 "$top/scripts/vfsstages.py" pick "$p" "$work/all.trace")" "$work/$p"
		done
		python3 "$top/scripts/vfsstages.py" analyse "$work" "$arm" >>"$out/stages.tsv"
		log "  stages $arm: $(awk -F'\t' -v a="$arm" '$1 == a { s += $4; n++ } END { print n " stages, " s " instructions" }' "$out/stages.tsv")"
	done
	log "stages done"
	exit 0
fi

log "vfsbench: $clock clock, $cpus vCPUs, $rounds rounds; cases: $cases; ops per worker: socket $ops_socket, socketpair $ops_socketpair, accept $ops_accept (+10% warm-up)"
for round in $(seq "$rounds"); do
	read -r -a arms <<<"${VFSBENCH_ARMS:-stock T}"
	read -r -a order < <(round_order "$round" "${arms[@]}")
	log "round $round order: ${order[*]}"
	slot=0
	for arm in "${order[@]}"; do
		slot=$((slot + 1))
		module_for "$arm"
		state=$([ -e /sys/module/fastsocket ] && echo loaded || echo unloaded)
		for c in $cases; do
			for cfg in "${CONFIGS[@]}"; do
				read -r m w <<<"$cfg"
				line=$(sockbench "$c" "$m" "$w" "$(ops_of "$c")")
				n=$(sed -n 's/.* ops=\([0-9]*\) .*/\1/p' <<<"$line")
				ns=$(sed -n 's/.* elapsed_ns=\([0-9]*\).*/\1/p' <<<"$line")
				idle=$(sed -n 's/.* idle_ns=\([0-9]*\).*/\1/p' <<<"$line")
				if [ -z "$n" ] || [ -z "$ns" ] || [ -z "$idle" ]; then log "unexpected output: $line"; exit 1; fi
				printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$clock" "$cpus" "$c" "$m" "$w" \
					"$arm" "$round" "$slot" "$state" "$n" "$ns" "$idle" >>"$out/vfsbench.tsv"
				log "  $arm $c $m x$w: $n ops in $ns ns: $((ns / n)) ns/op, idle $idle ns$([ "$c" = accept ] && echo ", TIME_WAIT $(tw_count)")"
			done
		done
	done
done
log "vfsbench done"
