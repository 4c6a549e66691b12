#!/bin/bash
# make grub-check, inside the Debian 12 guest: grub-check.service runs this at every boot, and
# each boot runs the next step of Documentation/operations.md with the guide's own commands
# (the release is the packages' one, REL). The trace goes to the serial console, every line
# prefixed "@gc " for scripts/grub-check.sh; the last boot prints "grub-check: PASS", a
# failure "grub-check: FAIL ...", and either powers the guest off.
#
#   boot 1, stock kernel:     section 2 (install), section 3 (GRUB_DEFAULT=saved, the stock
#                             kernel the default, REL for the next boot only), reboot
#   boot 2, REL once:         section 4 (load now and at boot), reboot
#   boot 3, stock:            the plain reboot fell back; section 3's "make it the default"
#   boot 4, REL the default:  loaded at boot; section 9 (disable, unload, stock default), reboot
#   boot 5, stock:            section 9's purge, poweroff
set -Eeuo pipefail
# shellcheck source=/dev/null
. /etc/grub-check.env # REL, KPKG and MPKG (package versions), STOCK (Debian's 6.1 release)
exec > >(sed -u 's/^/@gc /' >/dev/ttyS0) 2>&1
tracer=$!
export PS4='+ '

# reboot and poweroff end a boot once the trace has reached the console; under their own
# names, so that the trace reads as the guide.
flush() {
	exec >/dev/console 2>&1
	wait "$tracer" || true
}
reboot() { { set +x; } 2>/dev/null; flush; command reboot; }
poweroff() { { set +x; } 2>/dev/null; flush; command poweroff; }
fail() {
	{ set +x; } 2>/dev/null
	echo "grub-check: FAIL boot $boot: $*"
	poweroff
	exit 1
}
trap 'fail "line $LINENO exited $?"' ERR
kernel() { # kernel RELEASE: this boot must run it
	[ "$(uname -r)" = "$1" ] || fail "running $(uname -r), expected $1"
}
# What the debug kernel reported while booting a full Debian userland (shown, not judged).
reports() {
	dmesg | grep -E 'BUG:|WARNING:|Oops|detected stall' | head -20 || echo "(no kernel reports)"
}

mkdir -p /var/lib/grub-check
boot=$(($(cat /var/lib/grub-check/boot 2>/dev/null || echo 0) + 1))
echo "$boot" >/var/lib/grub-check/boot && sync
echo "grub-check: boot $boot: $(uname -r), up $(cut -d' ' -f1 /proc/uptime)s, $(date -u +%T) UTC"
cd /root/debs

case $boot in
1)
	kernel "$STOCK"
	set -x
	apt install -y ./linux-image-"$REL"_"$KPKG"_amd64.deb \
		./fastsocket-module-"$REL"_"$MPKG"_amd64.deb
	apt install -y ./linux-headers-"$REL"_"$KPKG"_amd64.deb
	dpkg -L fastsocket-module-"$REL"
	sed -i 's/^GRUB_DEFAULT=.*/GRUB_DEFAULT=saved/' /etc/default/grub
	update-grub
	grep -E "^\s*(submenu|menuentry) '" /boot/grub/grub.cfg | cut -d"'" -f2
	grub-set-default "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux $(uname -r)"
	grub-reboot "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux $REL"
	grub-editenv list
	reboot
	;;
2)
	kernel "$REL"
	reports
	set -x
	uname -r
	grub-editenv list
	sed -i 's/^#fastsocket$/fastsocket/' /etc/modules-load.d/fastsocket.conf
	modprobe fastsocket
	cat /proc/net/fastsocket_hooks
	sysctl net.fastsocket
	reboot
	;;
3)
	kernel "$STOCK"
	set -x
	uname -r
	grub-editenv list
	systemctl --no-pager status systemd-modules-load.service | tail -4 || true
	grub-set-default "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux $REL"
	grub-editenv list
	reboot
	;;
4)
	kernel "$REL"
	reports
	set -x
	uname -r
	lsmod | grep fastsocket
	sysctl -w net.fastsocket.enabled=0
	modprobe -r fastsocket
	sed -i 's/^fastsocket$/#fastsocket/' /etc/modules-load.d/fastsocket.conf
	grub-set-default "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux $STOCK"
	grub-editenv list
	reboot
	;;
5)
	kernel "$STOCK"
	set -x
	uname -r
	apt purge -y fastsocket-module-"$REL" \
		linux-image-"$REL" linux-headers-"$REL"
	n=$(dpkg -l | grep -c fastsocket || true)
	[ "$n" = 0 ] || fail "dpkg -l still lists $n fastsocket packages"
	grep -E "^\s*(submenu|menuentry) '" /boot/grub/grub.cfg | cut -d"'" -f2
	! grep -q fastsocket /boot/grub/grub.cfg || fail "grub.cfg still has fastsocket entries"
	ls /boot /lib/modules
	{ set +x; } 2>/dev/null
	echo "grub-check: PASS"
	poweroff
	;;
*) fail "no step for boot $boot" ;;
esac
