#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Records fastsocket-stat's output and /proc/net/fastsocket tables under load, in a booted
# guest (the samples of README.md and the tables of tests/data/):
#
#   flock /tmp/fastsocket-heavy.lock bash scripts/vm-run.sh --rwdir DIR -- \
#       bash $PWD/tools/fastsocket-stat/sample.sh DIR
#
# Unchanged nginx in the initial namespace under wrk -c32 with "Connection: close" from the
# client namespace fs-cli (scripts/guest/lib.sh), the debug module of the cache. Then a
# module reload while the tool runs, enabled=0, and the module unloaded.
set -euo pipefail
out=${1:?usage: sample.sh OUTDIR}
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/scripts/guest/lib.sh"
stat=$top/tools/fastsocket-stat/target/release/fastsocket-stat
ko=${FASTSOCKET_CACHE:-/var/cache/fastsocket-rs}/module/debug/fastsocket.ko
[ -x "$stat" ] || { log "no $stat: cd tools/fastsocket-stat && cargo build --release --locked"; exit 1; }
mkdir -p "$out" /tmp/fs-sample-nginx

insmod "$ko"
net_up
nginx_start /tmp/fs-sample-nginx 8080
url=http://$SERVER_IP:8080/

log "under load: 6 s of wrk, the tool in both namespaces"
"$stat" 1 6 >"$out/per-cpu.txt" &
"$stat" --netns "$CLIENT_NS" 1 6 >"$out/client-per-cpu.txt" &
"$stat" --total 1 6 >"$out/total.txt" &
"$stat" --json 1 2 >"$out/json.ndjson" &
(
	sleep 3.5
	cat /proc/net/fastsocket >"$out/server-under-load.txt"
	ip netns exec "$CLIENT_NS" cat /proc/net/fastsocket >"$out/client-under-load.txt"
) &
wrk_close "$url" 6 32 >"$out/wrk.txt"
wait
cat /proc/net/fastsocket >"$out/server-after-load.txt"

log "a reload while the tool runs"
"$stat" --total 1 7 >"$out/reload.txt" &
"$stat" --json --total 1 7 >"$out/reload.ndjson" &
wrk_close "$url" 2 8 >>"$out/wrk.txt"
rmmod fastsocket
sleep 1.5
insmod "$ko"
wrk_close "$url" 2 8 >>"$out/wrk.txt"
wait

log "enabled=0, then unloaded"
sysctl -qw net.fastsocket.enabled=0
"$stat" 0.5 1 >"$out/disabled.txt"
sysctl -qw net.fastsocket.enabled=1
nginx_stop /tmp/fs-sample-nginx
net_down
rmmod fastsocket
rc=0 && "$stat" 1 1 >"$out/not-loaded.txt" 2>&1 || rc=$?
echo "exit status $rc" >>"$out/not-loaded.txt"
log "done: $out"
