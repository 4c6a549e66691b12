# Sourced by the build scripts: paths, toolchain and make variables.
# The kernel and every module must be built by the same rustc: Debian's
# rustc-web in /usr/bin, not the rustup toolchain first in PATH.
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$top/scripts/versions.env"
FASTSOCKET_CACHE=${FASTSOCKET_CACHE:-/var/cache/fastsocket-rs}
KVER=${KERNEL_PKG_VERSION%%-*}
KSRC=$FASTSOCKET_CACHE/src/linux-$KVER
FLAVOUR=${FLAVOUR:-debug}
KDIR=${KDIR:-$FASTSOCKET_CACHE/build/$FLAVOUR-$KVER}
JOBS=${JOBS:-$(($(nproc) + 1))}
KMAKE_VARS=(
	RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc HOSTRUSTC=/usr/bin/rustc
	RUSTFMT=/usr/bin/rustfmt CLIPPY_DRIVER=/usr/bin/clippy-driver
	BINDGEN="$HOME/.cargo/bin/bindgen"
)
log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "${0##*/}" "$*"; }
