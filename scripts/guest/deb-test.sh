#!/usr/bin/env bash
# `make deb-test`, inside a guest booted with the kernel of the linux-image package: install
# the packages on a scratch root, load the module from it, upgrade, purge, and check that
# nothing is left.
#
#   deb-test.sh RELEASE DIR1 DIR2
#
# DIR1 holds linux-image-RELEASE, linux-headers-RELEASE and fastsocket-module-RELEASE; DIR2 a
# fastsocket-module-RELEASE of a higher version (the upgrade). The scratch root is an overlay
# of this machine's root filesystem (the host's Debian 12, read-only) with a tmpfs on top: a
# real Debian system with its own dpkg database, thrown away at the end. dpkg --root runs the
# maintainer scripts chrooted into it. Prints one PASS/FAIL line per check and a summary;
# exits non-zero if any check failed.
set -uo pipefail
release=$1 v1=$2 v2=$3
passed=0 failed=0
ok() { echo "[deb-test] PASS $*"; passed=$((passed + 1)); }
bad() { echo "[deb-test] FAIL $*"; failed=$((failed + 1)); }
check() { # check DESCRIPTION COMMAND...: PASS if the command succeeds (its time if >= 1 s)
	local what=$1 out start=$SECONDS
	shift
	if out=$("$@" 2>&1); then ok "$what$(took $start)"; else
		bad "$what$(took $start)"; printf '%s\n' "$out" | tail -20 | sed 's/^/    /'
	fi
}
took() { local s=$((SECONDS - $1)); [ $s = 0 ] || echo " (${s} s)"; }
summary() {
	echo "[deb-test] $passed passed, $failed failed (${SECONDS} s)"
	[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
	exit $?
}

check "booted the packaged kernel (uname -r = $release)" test "$(uname -r)" = "$release"

s=/tmp/scratch R=/tmp/scratch/root
mkdir -p $s && mount -t tmpfs -o size=1500M tmpfs $s && mkdir -p $s/upper $s/work $s/lower $R || exit 1
# The root filesystem alone, without the guest's tmpfs mounts on /tmp, /var...
mount --bind / $s/lower || exit 1
if ! mount -t overlay overlay -o lowerdir=$s/lower,upperdir=$s/upper,workdir=$s/work $R; then
	bad "scratch root: overlay of / with a tmpfs upper layer"
	summary
fi
# Other packages' kernel hooks (initramfs-tools, grub) act on the host's /boot and boot
# loader: not part of this test. The packages' own maintainer scripts still run; the guide
# (Documentation/operations.md) covers the hooks on a real server.
find $R/etc/kernel -mindepth 2 -type f 2>/dev/null | while IFS= read -r hook; do
	echo "[deb-test] scratch root: disabling the host's kernel hook ${hook#"$R"}"
	rm -f "$hook"
done
# man-db's trigger rebuilds the manual page index when a package installs a manual page (the
# module package does): over 9p under TCG that takes many minutes, and it is man-db's
# business, not this test's. It honours /var/lib/man-db/auto-update.
rm -f $R/var/lib/man-db/auto-update
baseline=$s/baseline
(cd $s/upper && find . | sort) >$baseline
echo "[deb-test] scratch root ready (${SECONDS} s after the start)"

dp() { dpkg --root=$R --force-not-root "$@" </dev/null; }
image=$(ls $v1/linux-image-"$release"_*.deb) headers=$(ls $v1/linux-headers-"$release"_*.deb)
module=$(ls $v1/fastsocket-module-"$release"_*.deb) module2=$(ls $v2/fastsocket-module-"$release"_*.deb)
mod=fastsocket-module-$release
pkgs=("linux-image-$release" "linux-headers-$release" "$mod")

# 1. Install.
check "dpkg -i linux-image, linux-headers, fastsocket-module" dp -i "$image" "$headers" "$module"
for p in "${pkgs[@]}"; do
	check "$p installed" test "$(dpkg-query --admindir=$R/var/lib/dpkg -W -f '${db:Status-Abbrev}' "$p")" = "ii "
done

# 2. The module package's files, where stated.
check "fastsocket.ko in /lib/modules/$release/updates/" test -s "$R/lib/modules/$release/updates/fastsocket.ko"
check "depmod ran: modules.dep lists updates/fastsocket.ko" grep -q '^updates/fastsocket.ko:' "$R/lib/modules/$release/modules.dep"
check "/usr/bin/fastsocket-stat executable" test -x $R/usr/bin/fastsocket-stat
check "fastsocket-stat(1) in /usr/share/man/man1/" bash -c "zcat $R/usr/share/man/man1/fastsocket-stat.1.gz | grep -q '^\.TH FASTSOCKET-STAT 1 '"
check "/etc/modules-load.d/fastsocket.conf: only comments (off by default)" \
	bash -c "test -s $R/etc/modules-load.d/fastsocket.conf && ! grep -qv '^#' $R/etc/modules-load.d/fastsocket.conf"
conf=$R/etc/sysctl.d/60-fastsocket.conf
check "/etc/sysctl.d/60-fastsocket.conf" test -s $conf
check "both /etc files are conffiles" bash -c "dpkg-query --admindir=$R/var/lib/dpkg -W -f '\${Conffiles}' $mod |
	grep -q /etc/modules-load.d/fastsocket.conf && dpkg-query --admindir=$R/var/lib/dpkg -W -f '\${Conffiles}' $mod |
	grep -q /etc/sysctl.d/60-fastsocket.conf"
check "vmlinuz, config and System.map in /boot" test -s "$R/boot/vmlinuz-$release" -a -s "$R/boot/config-$release" -a -s "$R/boot/System.map-$release"
check "/lib/modules/$release/build points at the headers" test "$(readlink "$R/lib/modules/$release/build")" = \
	"/usr/src/linux-headers-$release" -a -e "$R/usr/src/linux-headers-$release/Makefile"

# 3. The installed system loads the module into this kernel (the packaged one).
for d in proc sys dev; do mount --bind /$d $R/$d; done
check "fastsocket-stat: exit 3 while the module is not loaded" bash -c "chroot $R fastsocket-stat --total 1 1 >/dev/null 2>&1; test \$? = 3"
check "systemd-sysctl applies 60-fastsocket.conf without the module (keys skipped)" \
	chroot $R /lib/systemd/systemd-sysctl /etc/sysctl.d/60-fastsocket.conf
check "modprobe fastsocket (in the scratch root)" chroot $R modprobe fastsocket
check "the module came from updates/" test "$(chroot $R modinfo -n fastsocket)" = "/lib/modules/$release/updates/fastsocket.ko"
check "/proc/net/fastsocket" test -r /proc/net/fastsocket
# Every knob the module has is in the file, at the module's default, and nothing else is.
keys=$(sed -n 's/^-net\.fastsocket\.\([a-z_]*\) = .*/\1/p' $conf | sort)
check "60-fastsocket.conf names every knob of the module" test "$keys" = "$(ls /proc/sys/net/fastsocket | sort)"
while read -r k v; do
	check "net.fastsocket.$k = '$v' is the module's default" test "$(cat /proc/sys/net/fastsocket/$k)" = "$v"
done < <(sed -n 's/^-net\.fastsocket\.\([a-z_]*\) = \(.*\)$/\1 \2/p' $conf)
echo 0 >/proc/sys/net/fastsocket/rfd && echo 80 >/proc/sys/net/fastsocket/listen_ports
check "systemd-sysctl applies 60-fastsocket.conf with the module" chroot $R /lib/systemd/systemd-sysctl /etc/sysctl.d/60-fastsocket.conf
check "... and set the knobs back to the file's values" \
	test "$(cat /proc/sys/net/fastsocket/rfd)/$(cat /proc/sys/net/fastsocket/listen_ports)" = 1/all
check "fastsocket-stat --total 1 1 with the module loaded" chroot $R fastsocket-stat --total 1 1
check "modprobe -r fastsocket" chroot $R modprobe -r fastsocket
check "module unloaded" test ! -e /sys/module/fastsocket

# 4. Upgrade: the module package over itself, then one of a higher version; a conffile the
# administrator changed is kept. (The kernel's packages are its own bindeb-pkg's: installing
# them over themselves again would test that, at about five minutes of TCG for the headers'
# 7,000 files.)
check "dpkg -i $mod again (the same version)" dp -i "$module"
echo fastsocket >$R/etc/modules-load.d/fastsocket.conf
v2ver=$(dpkg-deb -f "$module2" Version)
check "dpkg -i $mod $v2ver (upgrade)" dp -i "$module2"
check "$mod is at $v2ver" test "$(dpkg-query --admindir=$R/var/lib/dpkg -W -f '${Version}' $mod)" = "$v2ver"
check "the changed conffile was kept" test "$(cat $R/etc/modules-load.d/fastsocket.conf)" = fastsocket
check "modules.dep still lists updates/fastsocket.ko" grep -q '^updates/fastsocket.ko:' "$R/lib/modules/$release/modules.dep"
check "modprobe fastsocket after the upgrade" chroot $R modprobe fastsocket
check "modprobe -r fastsocket" chroot $R modprobe -r fastsocket
for d in dev sys proc; do umount $R/$d; done

# 5. Purge: nothing of the packages is left.
check "dpkg -P the three packages" dp -P "$mod" "linux-headers-$release" "linux-image-$release"
for p in "${pkgs[@]}"; do
	check "$p purged" bash -c "! dpkg-query --admindir=$R/var/lib/dpkg -W -f '\${db:Status-Abbrev}' $p 2>/dev/null | grep -q ."
done
# What the install, upgrade and purge left in the upper layer: dpkg's own records, and
# directories of the host copied up on the way (they exist below); anything else is a leftover.
left=$( (cd $s/upper && find . | sort) | comm -13 $baseline - |
	grep -Ev '^\./var/lib/dpkg(/|$)|^\./var/log(/dpkg\.log)?$' |
	while IFS= read -r p; do [ -d "$s/upper/$p" ] && [ -d "$s/lower/$p" ] && [ ! -L "$s/lower/$p" ] || echo "$p"; done)
check "no file left after purge" test -z "$left"
[ -z "$left" ] || printf '    left: %s\n' $left | head -20
check "no /lib/modules/$release" test ! -e "$R/lib/modules/$release"
check "no /usr/src/linux-headers-$release" test ! -e "$R/usr/src/linux-headers-$release"
check "no /etc/sysctl.d/60-fastsocket.conf" test ! -e $conf
umount $R $s/lower
summary
