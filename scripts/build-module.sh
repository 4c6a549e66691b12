#!/usr/bin/env bash
# Build rust/ into fastsocket.ko against the cached kernel tree of FLAVOUR, with clippy, and
# check formatting. 6.12 builds external modules in their source directory, so the sources are
# mirrored into a per-flavour directory in the cache: the repository stays clean and the two
# flavours do not overwrite each other's objects. Prints the path of the .ko last.
set -euo pipefail
. "$(dirname "$0")/env.sh"

[ -e "$KDIR/.fastsocket-key" ] || { log "no kernel in $KDIR: run FLAVOUR=$FLAVOUR scripts/build-kernel.sh"; exit 1; }
mdir=$FASTSOCKET_CACHE/module/$FLAVOUR
mkdir -p "$mdir"
rsync -a --delete --exclude target --exclude '*.o' --exclude '*.ko' --exclude '*.mod*' \
	--exclude '.*.cmd' --exclude Module.symvers --exclude modules.order "$top/rust/" "$mdir/"

log "rustfmt --check"
find "$top/rust" -name '*.rs' -not -path '*/target/*' -print0 |
	xargs -0 /usr/bin/rustfmt --check --edition 2021 --config-path "$KSRC/.rustfmt.toml"

log "building fastsocket.ko (CLIPPY=1) against $KDIR"
out=$(make -C "$KSRC" O="$KDIR" M="$mdir" "${KMAKE_VARS[@]}" CLIPPY=1 -j"$JOBS" modules 2>&1) || {
	echo "$out"; log "module build failed"; exit 1; }
if grep -q 'warning' <<<"$out"; then
	echo "$out"; log "module build has warnings"; exit 1
fi
log "built $mdir/fastsocket.ko"
echo "$mdir/fastsocket.ko"
