#!/usr/bin/env bash
# make grub-check: the boot-loader part of Documentation/operations.md, for real. Builds the
# packages (scripts/deb.sh, DEB_FLAVOUR, default debug), a Debian 12 disk image (debootstrap:
# the stock 6.1 kernel, grub-pc on an MBR disk, the packages in /root/debs), and boots it under
# QEMU (TCG, serial console, no network device) until the guest powers off: at each boot
# grub-check.service runs the next step of scripts/grub-check/steps.sh (install, GRUB's saved
# default and one-time boot, the module at boot, the fall-back reboots, purge), and every
# reboot goes back through GRUB. Not part of make test: about 10 minutes (5 of boots, 2026-12-05).
#
#   GRUB_CHECK_TIMEOUT: seconds for all the boots together (default 3600)
#
# The log goes to results/grub-check-<UTC date>/. Exits non-zero on any failure.
set -euo pipefail
export DEB_FLAVOUR=${DEB_FLAVOUR:-debug}
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/env.sh disable=SC1091
. "$top/scripts/env.sh"
limit=${GRUB_CHECK_TIMEOUT:-3600}
start=$(date +%s)
run=$top/results/grub-check-$(date -u +%Y%m%d-%H%M)
work=$FASTSOCKET_CACHE/grub-check
mkdir -p "$run" "$work"
exec > >(tee "$run/grub-check.log") 2>&1
fail() { log "FAIL: $* ($(($(date +%s) - start))s)"; exit 1; }

# 1. The packages.
DEB_OUT=$work/deb bash "$top/scripts/deb.sh" >"$work/deb.log" 2>&1 || { tail -40 "$work/deb.log"; fail "make deb"; }
grep -aE 'deb\.sh\]   ' "$work/deb.log"
image=$(ls "$work"/deb/linux-image-*.deb)
rel=$(dpkg-deb -f "$image" Package) && rel=${rel#linux-image-}
kpkg=$(dpkg-deb -f "$image" Version)
mpkg=$(dpkg-deb -f "$work/deb/fastsocket-module-${rel}_"*.deb Version)

# 2. The Debian 12 root, built once per package list.
if ! command -v debootstrap >/dev/null || ! command -v sfdisk >/dev/null; then
	apt-get install -y -o DPkg::Lock::Timeout=600 debootstrap fdisk >/dev/null
fi
include=linux-image-amd64,grub-pc,initramfs-tools,systemd-sysv,kmod,procps
mirror=http://deb.debian.org/debian
root=$work/root-bookworm-$(echo "$include $mirror" | sha256sum | cut -c1-12)
if [ ! -e "$root/.complete" ]; then
	log "debootstrap bookworm with $include (log: $work/debootstrap.log)"
	rm -rf "$root"
	debootstrap --include="$include" bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
		{ tail -20 "$work/debootstrap.log"; fail "debootstrap"; }
	touch "$root/.complete"
fi
stock=$(basename "$(ls "$root"/boot/vmlinuz-*)") && stock=${stock#vmlinuz-}
log "root $root: Debian $(cat "$root/etc/debian_version"), stock kernel $stock"

# 3. The disk: MBR, one ext4 partition, GRUB in the MBR gap. This VM's kernel does not read
# partition tables of loop devices: partx adds the partition when losetup -P did not.
disk=$work/disk.img mnt=$work/mnt
rm -f "$disk" && truncate -s 4G "$disk"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$disk"
loop=$(losetup -f --show -P "$disk")
cleanup() {
	umount -R "$mnt" 2>/dev/null || true
	losetup -d "$loop" 2>/dev/null || true
}
trap cleanup EXIT
[ -b "${loop}p1" ] || partx -a "$loop"
mkfs.ext4 -q -L debian "${loop}p1"
mkdir -p "$mnt" && mount "${loop}p1" "$mnt"
cp -a "$root/." "$mnt/" && rm "$mnt/.complete"
uuid=$(blkid -s UUID -o value "${loop}p1")
echo "UUID=$uuid / ext4 errors=remount-ro 0 1" >"$mnt/etc/fstab"
echo grub-check >"$mnt/etc/hostname"
# Everything on the serial console: GRUB's menu, the kernel, the steps' trace.
sed -i 's/^GRUB_CMDLINE_LINUX=.*/GRUB_CMDLINE_LINUX="console=ttyS0,115200"/' "$mnt/etc/default/grub"
printf 'GRUB_TERMINAL=serial\nGRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"\n' >>"$mnt/etc/default/grub"
install -m 755 "$top/scripts/grub-check/steps.sh" "$mnt/usr/local/sbin/grub-check-step"
install -m 644 "$top/scripts/grub-check/grub-check.service" "$mnt/etc/systemd/system/"
ln -s ../grub-check.service "$mnt/etc/systemd/system/multi-user.target.wants/"
# No login prompt in the middle of the trace; no apt timers taking dpkg's lock from the steps
# (with no network they would only fail).
for u in serial-getty@ttyS0.service apt-daily.timer apt-daily-upgrade.timer; do
	ln -sf /dev/null "$mnt/etc/systemd/system/$u"
done
printf 'REL=%s\nKPKG=%s\nMPKG=%s\nSTOCK=%s\n' "$rel" "$kpkg" "$mpkg" "$stock" >"$mnt/etc/grub-check.env"
mkdir -p "$mnt/root/debs"
cp "$image" "$work"/deb/linux-headers-"$rel"_*.deb "$work"/deb/fastsocket-module-"$rel"_*.deb "$mnt/root/debs/"
for d in dev proc sys; do mount --rbind "/$d" "$mnt/$d"; done
chroot "$mnt" grub-install --target=i386-pc "$loop" 2>&1 | sed 's/^/  /'
chroot "$mnt" update-grub 2>&1 | sed 's/^/  /'
# update-grub names the root by UUID only where udev made /dev/disk/by-uuid (not on this
# host); the guest's own update-grub (boot 1) writes the file anew.
sed -i "s|root=${loop}p1|root=UUID=$uuid|" "$mnt/boot/grub/grub.cfg"
cleanup
trap - EXIT
log "disk $disk ready ($(du -sh "$disk" | cut -f1) used): $rel ($DEB_FLAVOUR) to install, stock $stock"

# 4. The boots. QEMU resets on reboot (SeaBIOS, GRUB, the next kernel) and exits on poweroff.
console=$work/console.log
show() { # the steps' trace and the entries GRUB boots, as they come
	tr -d '\r' | grep --line-buffered -aoE "^@gc .*|Booting \`[^']*'" |
		sed -u -e 's/^@gc /  /' -e '/Booting `Advanced options/d' -e 's/^Booting/[grub] Booting/'
	true
}
log "waiting for /tmp/fastsocket-heavy.lock, then booting (TCG, 2 vCPUs, up to ${limit}s)"
rc=0
flock /tmp/fastsocket-heavy.lock timeout -k 30 "$limit" qemu-system-x86_64 -accel tcg -m 2048 \
	-smp 2 -nographic -nic none -drive file="$disk",format=raw,if=virtio </dev/null 2>&1 |
	tee "$console" | show || rc=$?
tr -d '\r' <"$console" | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g' >"$run/console.log"
boots=$(grep -ac 'Booting from Hard Disk' "$run/console.log" || true)
took=$(($(date +%s) - start))
if [ "$rc" = 0 ] && [ "$boots" = 5 ] && grep -aqx '@gc grub-check: PASS' "$run/console.log"; then
	log "PASS: make grub-check ($rel, $DEB_FLAVOUR; $boots boots through GRUB; ${took}s)"
else
	[ "$rc" != 124 ] || log "the guest did not power off within ${limit}s"
	fail "make grub-check ($rel, QEMU exit $rc, $boots boots through GRUB; full console: $run/console.log)"
fi
