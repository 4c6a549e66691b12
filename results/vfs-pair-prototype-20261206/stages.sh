#!/usr/bin/env bash
# experiment: stages of socket()+close() with the prototype pair cache off and on
set -u
out=$1
top=/work/main
T=/sys/kernel/tracing
mountpoint -q $T || mount -t tracefs nodev $T
mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug
sb=$top/bench/sockbench/target/release/sockbench
P=/sys/module/socket/parameters/pair_cache
ls -l $P
FUNCS="__x64_sys_socket __sock_create sock_alloc alloc_inode inode_init_always_gfp security_inode_alloc get_next_ino inet_create sk_alloc security_sk_alloc tcp_v4_init_sock get_unused_fd_flags sock_alloc_file alloc_file_pseudo alloc_file_path d_alloc_pseudo d_instantiate alloc_empty_file security_file_alloc fd_install __x64_sys_close file_close_fd filp_flush __fput sock_close __sock_release inet_release tcp_close sk_free __dentry_kill evict truncate_inode_pages_final clear_inode destroy_inode __destroy_inode security_inode_free call_rcu mntput security_file_free"
echo 32768 > $T/buffer_size_kb
echo x86-tsc > $T/trace_clock
pass() {
	echo > $T/kprobe_events
	for f in $1; do echo "p:fs_$f $f" >> $T/kprobe_events 2>/dev/null || echo "no probe $f"; done
	echo 1 > $T/events/kprobes/enable; sleep 1
	cp /sys/kernel/debug/kprobes/list "$2.list"
	echo > $T/trace
	$sb --case socket --mode threads --workers 1 --ops 3000 --warmup 300 >/dev/null
	echo 0 > $T/events/kprobes/enable
	cp $T/trace "$2.trace"; echo > $T/kprobe_events
}
for arm in off on; do
	if [ "$arm" = on ]; then echo 1; else echo 0; fi >"$P"; cat $P
	for _ in 1 2 3; do
		line=$($sb --case socket --mode threads --workers 1 --ops 3000 --warmup 300)
		echo "$arm $line"
		n=$(sed -n 's/.* ops=\([0-9]*\) .*/\1/p' <<<"$line"); ns=$(sed -n 's/.* elapsed_ns=\([0-9]*\).*/\1/p' <<<"$line"); idle=$(sed -n 's/.* idle_ns=\([0-9]*\).*/\1/p' <<<"$line")
		printf '# base\t%s\t%s\n' "$arm" $(((ns - idle) / n)) >> $out/stages.tsv
	done
	w=/tmp/pair-st-$arm; mkdir -p $w
	pass "$FUNCS" $w/all; mv $w/all.list $w/kprobes.list
	for p in odd even; do pass "$(python3 $top/scripts/vfsstages.py pick $p $w/all.trace)" $w/$p; done
	python3 $top/scripts/vfsstages.py analyse $w $arm >> $out/stages.tsv || echo "analyse failed $arm"
	cp $w/all.trace $out/all-$arm.trace
done
# sanity: semantics quick check with the cache on
echo 1 > $P
python3 - <<'PY'
import socket, os, stat
for i in range(5):
    s = socket.socket(); st = os.fstat(s.fileno()); link = os.readlink(f"/proc/self/fd/{s.fileno()}")
    print(stat.S_ISSOCK(st.st_mode), oct(st.st_mode), st.st_ino, link, os.getxattr(s.fileno(), "system.sockprotoname") if hasattr(os, "getxattr") else "")
    s.close()
u = socket.socket(socket.AF_UNIX); print("unix", os.readlink(f"/proc/self/fd/{u.fileno()}"), os.getxattr(u.fileno(), "system.sockprotoname")); u.close()
t = socket.socket(); print("tcp", os.getxattr(t.fileno(), "system.sockprotoname")); t.close()
PY
dmesg | grep -iE "bug|warn|oops" | head
