#!/usr/bin/env bash
# make deb-test: build the packages (scripts/deb.sh, DEB_FLAVOUR, default debug: the kernel
# `make test` already built), check them with lintian (no error allowed), then boot the
# kernel of the linux-image package and, in that guest, install them on a scratch root, load
# the module from it, upgrade, purge and check that nothing is left (scripts/guest/deb-test.sh).
# Exits non-zero on any failure.
set -euo pipefail
export DEB_FLAVOUR=${DEB_FLAVOUR:-debug}
. "$(dirname "$0")/env.sh"
start=$(date +%s)
dir=$top/results/deb-test
rm -rf "$dir" && mkdir -p "$dir"

# Version 1, and a module package of a higher version for the upgrade.
DEB_OUT=$dir/v1 bash "$top/scripts/deb.sh" >"$dir/deb.log" 2>&1 || { tail -40 "$dir/deb.log"; log "FAIL: make deb"; exit 1; }
grep -aE 'deb\.sh\]   ' "$dir/deb.log"
v1ver=$(dpkg-deb -f "$dir"/v1/fastsocket-module-*.deb Version)
DEB_OUT=$dir/v2 DEB_MODULE_VERSION="$v1ver+upgrade1" bash "$top/scripts/deb.sh" >"$dir/deb2.log" 2>&1 ||
	{ tail -40 "$dir/deb2.log"; log "FAIL: make deb (DEB_MODULE_VERSION=$v1ver+upgrade1)"; exit 1; }
rm -f "$dir"/v2/linux-*.deb
log "PASS: packages built ($(($(date +%s) - start))s)"

lintian_out=$(lintian "$dir"/v1/*.deb 2>&1 | grep -v 'running with root privileges' || true)
# Errors in full, warnings counted by tag.
grep -E '^E:' <<<"$lintian_out" | sed 's/^/    /' || true
grep -E '^W:' <<<"$lintian_out" | awk '{ print $1, $3 }' | sort | uniq -c | sed 's/^ */    /' || true
if grep -q '^E:' <<<"$lintian_out"; then log "FAIL: lintian reports errors"; exit 1; fi
log "PASS: lintian: no errors ($(grep -c '^W:' <<<"$lintian_out" || true) warnings)"

# An operator building the module (or any Rust module) against the installed linux-headers
# and linux-headers-rust packages: fastsocket.ko must build from them, with clippy and no
# warning, for the release. (Here, on the host: the guest would spend minutes unpacking the
# Rust metadata under TCG.)
headers=$(ls "$dir"/v1/linux-headers-[0-9]*.deb)
hrel=$(dpkg-deb -f "$headers" Package) && hrel=${hrel#linux-headers-}
dpkg-deb -x "$headers" "$dir/headers"
dpkg-deb -x "$dir/v1/linux-headers-rust-${hrel}_"*.deb "$dir/headers"
hkdir=$dir/headers/usr/src/linux-headers-$hrel
msrc=$dir/module-src
rsync -a --exclude target "$top/rust/" "$msrc/"
if ! out=$(make -C "$hkdir" M="$msrc" "${KMAKE_VARS[@]}" CLIPPY=1 -j"$JOBS" modules 2>&1) ||
	grep -q warning <<<"$out"; then
	echo "$out" | tail -20
	log "FAIL: fastsocket.ko against the linux-headers package"; exit 1
fi
hver=$(/sbin/modinfo -F vermagic "$msrc/fastsocket.ko" | cut -d' ' -f1)
[ "$hver" = "$hrel" ] || { log "FAIL: the module built from linux-headers is for $hver, not $hrel"; exit 1; }
log "PASS: fastsocket.ko builds against linux-headers-$hrel and linux-headers-rust-$hrel (vermagic $hver)"
rm -rf "$dir/headers" "$msrc"

# A kernel "tree" for vm-run.sh made of the package's vmlinuz and config alone.
image=$(ls "$dir"/v1/linux-image-*.deb)
release=$(dpkg-deb -f "$image" Package) && release=${release#linux-image-}
dpkg-deb -x "$image" "$dir/image"
mkdir -p "$dir/kernel/arch/x86/boot"
cp "$dir/image/boot/vmlinuz-$release" "$dir/kernel/arch/x86/boot/bzImage"
cp "$dir/image/boot/config-$release" "$dir/kernel/.config"
rm -rf "$dir/image"

rc=0
KDIR=$dir/kernel bash "$top/scripts/vm-run.sh" -- \
	bash "$top/scripts/guest/deb-test.sh" "$release" "$dir/v1" "$dir/v2" || rc=$?
if [ "$rc" = 0 ]; then
	log "PASS: make deb-test ($release, $(($(date +%s) - start))s)"
else
	log "FAIL: make deb-test (guest exit $rc, $(($(date +%s) - start))s)"
fi
exit "$rc"
