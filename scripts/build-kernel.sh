#!/usr/bin/env bash
# Build the patched kernel of one flavour (FLAVOUR=debug|perf) in a cached
# tree outside the repository. The tree is keyed by kernel package version,
# patch series, config fragments and toolchain; on a key change the same tree
# is reused and make rebuilds only what the change touched.
set -euo pipefail
. "$(dirname "$0")/env.sh"

log "kernel $KERNEL_PKG_VERSION, rustc $(/usr/bin/rustc --version | cut -d' ' -f2)," \
	"bindgen $("$HOME/.cargo/bin/bindgen" --version | cut -d' ' -f2), flavour $FLAVOUR"

# 1. Source: extract once, then bring the applied patch series in line with patches/.
if [ ! -e "$KSRC/.fastsocket-extracted" ]; then
	log "extracting $KERNEL_TARBALL"
	rm -rf "$KSRC" "$KSRC.tmp" && mkdir -p "$KSRC.tmp"
	tar -xJf "$KERNEL_TARBALL" -C "$KSRC.tmp" --strip-components=1
	mv "$KSRC.tmp" "$KSRC"
	mkdir -p "$KSRC/.fastsocket-applied"
	touch "$KSRC/.fastsocket-extracted"
fi
applied=$KSRC/.fastsocket-applied
if ! diff -qr "$top/patches" "$applied" >/dev/null 2>&1; then
	# A file the new series leaves as the old one did keeps its time stamp, so make
	# rebuilds only what the change touched, not everything that includes a patched header.
	keep=$(mktemp -d)
	{ sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "$applied"/*.patch 2>/dev/null || :; } | sort -u |
		while read -r f; do
			[ -e "$KSRC/$f" ] || continue
			mkdir -p "$keep/$(dirname "$f")" && cp -p "$KSRC/$f" "$keep/$f"
		done
	if [ -e "$applied/series" ]; then
		tac "$applied/series" | while read -r p; do
			log "reverting $p"
			patch -d "$KSRC" -p1 -R -s <"$applied/$p"
		done
	fi
	rm -rf "$applied" && mkdir -p "$applied"
	while read -r p; do
		log "applying $p"
		patch -d "$KSRC" -p1 -s --no-backup-if-mismatch <"$top/patches/$p"
		cp "$top/patches/$p" "$applied/"
	done <"$top/patches/series"
	cp "$top/patches/series" "$applied/series"
	(cd "$keep" && find . -type f) | while read -r f; do
		if cmp -s "$keep/$f" "$KSRC/$f"; then touch -r "$keep/$f" "$KSRC/$f"; fi
	done
	rm -rf "$keep"
fi

# 2. Config: defconfig + kvm_guest.config + our fragments.
key=$( (echo "$KERNEL_PKG_VERSION"; cat "$top/patches/series" "$top"/patches/*.patch \
	"$top/configs/base.config" "$top/configs/$FLAVOUR.config"; /usr/bin/rustc --version;
	"$HOME/.cargo/bin/bindgen" --version) | sha256sum | cut -c1-16)
mkdir -p "$KDIR"
if [ -e "$KDIR/arch/x86/boot/bzImage" ] && [ "$(cat "$KDIR/.fastsocket-key" 2>/dev/null)" = "$key" ]; then
	log "cached build $KDIR (key $key)"
	exit 0
fi
rm -f "$KDIR/.fastsocket-key"
log "configuring $KDIR"
make -s -C "$KSRC" O="$KDIR" "${KMAKE_VARS[@]}" defconfig kvm_guest.config >/dev/null
(cd "$KDIR" && "$KSRC/scripts/kconfig/merge_config.sh" -m -O "$KDIR" .config \
	"$top/configs/base.config" "$top/configs/$FLAVOUR.config" >/dev/null)
make -s -C "$KSRC" O="$KDIR" "${KMAKE_VARS[@]}" olddefconfig >/dev/null
# A fragment option Kconfig silently dropped would make every later result a lie.
bad=0
for frag in "$top/configs/base.config" "$top/configs/$FLAVOUR.config"; do
	while IFS= read -r line; do
		case "$line" in CONFIG_*=n) opt=${line%%=*}
			grep -q "^$opt=[ym]" "$KDIR/.config" && { echo "config: $opt is set, wanted n"; bad=1; } ;;
		CONFIG_*=*) grep -qx "$line" "$KDIR/.config" || { echo "config: $line not applied"; bad=1; } ;;
		esac
	done <"$frag"
done
[ "$bad" = 0 ] || { log "config fragments not applied, see above"; exit 1; }

# 3. Build.
log "building bzImage and modules with -j$JOBS (10-15 minutes on 2 cores when fresh)"
start=$(date +%s)
make -C "$KSRC" O="$KDIR" "${KMAKE_VARS[@]}" -j"$JOBS" bzImage modules 2>&1 |
	{ n=0; while IFS= read -r line; do
		case "$line" in *" CC "*|*" RUSTC "*|*" AR "*|*" LD "*)
			n=$((n + 1))
			[ $((n % 1000)) = 0 ] && log "$n objects built, $(($(date +%s) - start))s" ;;
		esac
		case "$line" in *error:*|*Error\ *) echo "$line" ;; esac
	done; }
if [ "${PIPESTATUS[0]}" != 0 ] || [ ! -e "$KDIR/arch/x86/boot/bzImage" ]; then
	make -C "$KSRC" O="$KDIR" "${KMAKE_VARS[@]}" bzImage modules 2>&1 | tail -40
	log "kernel build failed"
	exit 1
fi
echo "$key" >"$KDIR/.fastsocket-key"
log "kernel built in $(($(date +%s) - start))s: $KDIR/arch/x86/boot/bzImage"
