#!/usr/bin/env bash
set -u
here=/work/main/scripts/guest
. $here/lib.sh
sb=/work/main/bench/sockbench/target/release/sockbench
P=/sys/module/socket/parameters/pair_cache
net_up
sysctl -qw net.ipv4.tcp_max_tw_buckets=0
for round in 1 2 3; do
for arm in off on on off; do
	if [ "$arm" = on ]; then echo 1; else echo 0; fi >"$P"
	for c in socket socketpair accept; do
		n=3000; extra=()
		[ $c = accept ] && { n=800; extra=(--listen "$SERVER_IP:8090" --client-netns "/run/netns/$CLIENT_NS"); }
		line=$($sb --case $c --mode threads --workers 1 --ops $n --warmup $((n / 10)) "${extra[@]}")
		ops=$(sed -n 's/.* ops=\([0-9]*\) .*/\1/p' <<<"$line"); ns=$(sed -n 's/.* elapsed_ns=\([0-9]*\).*/\1/p' <<<"$line"); idle=$(sed -n 's/.* idle_ns=\([0-9]*\).*/\1/p' <<<"$line")
		printf '%s\t%s\t%s\t%s\n' "$round" "$arm" "$c" $(((ns - idle) / ops)) | tee -a /tmp/proto-out2/ops.tsv
	done
done
done
net_down
