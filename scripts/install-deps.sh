#!/usr/bin/env bash
# Install everything fastsocket-rs needs on Debian 12, as root, non-interactively.
# Idempotent: a second run only checks. Sources only Debian, crates.io and PyPI.
# dpkg-dev, debhelper, lintian: make deb (the kernel's bindeb-pkg, the module package) and its check.
# udev: virtme-ng finds its virtio-serial ports (command I/O and exit status) through it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.env"

stamp=/var/cache/fastsocket-rs/deps.$(sha256sum "$0" "$here/versions.env" | sha256sum | cut -c1-16)
if [ -e "$stamp" ] && [ -x "$HOME/.cargo/bin/bindgen" ] && command -v vng >/dev/null; then
	echo "[deps] already installed ($stamp)"
	exit 0
fi

pkgs=(
	"linux-source-6.12=$KERNEL_PKG_VERSION"
	"rustc-web=$RUSTC_PKG_VERSION" "rust-web-src=$RUSTC_PKG_VERSION"
	"rust-web-clippy=$RUSTC_PKG_VERSION" "rustfmt-web=$RUSTC_PKG_VERSION"
	clang libclang-dev lld llvm
	build-essential flex bison bc libelf-dev libssl-dev cpio kmod xz-utils rsync python3-pip
	qemu-system-x86 udev busybox-static iproute2 ethtool procps
	nginx-light haproxy wrk curl linux-perf
	"trinity=$TRINITY_PKG_VERSION" "stress-ng=$STRESS_NG_PKG_VERSION"
	"hping3=$HPING3_PKG_VERSION"
	dpkg-dev debhelper lintian
)
echo "[deps] apt: ${pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null; then
	# A pinned version the archive no longer carries: take the current one, loudly; the
	# kernel build key includes the toolchain, so nothing stale is reused.
	echo "[deps] WARNING: pinned versions unavailable, installing the archive's current ones"
	apt-get install -y -q --no-install-recommends "${pkgs[@]%%=*}" >/dev/null
fi
dpkg-query -W -f '[deps] ${Package} ${Version}\n' linux-source-6.12 rustc-web rust-web-src trinity stress-ng hping3
# The services must not run on the host; the tests start their own copies inside the guest.
for s in nginx haproxy; do
	systemctl disable --now "$s" >/dev/null 2>&1 || service "$s" stop >/dev/null 2>&1 || true
done

if ! "$HOME/.cargo/bin/bindgen" --version 2>/dev/null | grep -q "$BINDGEN_VERSION"; then
	echo "[deps] cargo install bindgen-cli $BINDGEN_VERSION"
	cargo install -q bindgen-cli --version "$BINDGEN_VERSION" --locked
fi

if ! vng --version 2>/dev/null | grep -q "$VIRTME_NG_VERSION"; then
	echo "[deps] pip install virtme-ng==$VIRTME_NG_VERSION"
	pip3 install -q "virtme-ng==$VIRTME_NG_VERSION"
fi

mkdir -p "$(dirname "$stamp")"
touch "$stamp"
echo "[deps] done"
