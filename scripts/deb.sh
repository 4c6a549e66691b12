#!/usr/bin/env bash
# Debian packages of the patched kernel and the module, from the cached trees (make deb).
#
#   DEB_FLAVOUR=perf|debug|lockstat (default perf)   DEB_OUT=dir (default results/deb)
#   DEB_MODULE_VERSION=version of the module package (default: packaging/changelog's)
#
# The kernel is packaged by its own `make bindeb-pkg` in a tree of its own,
# $FASTSOCKET_CACHE/build/deb-<flavour>-<kver>, seeded from the flavour's tree (so only what
# the local version touches is rebuilt); the flavour's tree, used by the tests and the
# benchmarks, is only read. The kernel release names the project and the patch series:
# <kver>-fastsocket-<first 8 hex digits of sha256(patches/series + the patches it lists)>,
# with -<flavour> appended for flavours other than perf. fastsocket.ko is built against the
# packaged tree (scripts/build-module.sh) and packaged with fastsocket-stat, the module's
# load and sysctl configuration (packaging/) as fastsocket-module-<kernel release>.
# The package paths are printed last, one per line.
set -euo pipefail
FLAVOUR=${DEB_FLAVOUR:-perf}
. "$(dirname "$0")/env.sh"
case "$FLAVOUR" in debug|perf|lockstat) ;; *) log "DEB_FLAVOUR: debug, perf or lockstat, not '$FLAVOUR'"; exit 2 ;; esac
out=${DEB_OUT:-$top/results/deb}
pkg=$top/packaging
maint="fastsocket-rs developers <dev@fastsocket-rs.invalid>"

# 1. The flavour's tree (cached: a no-op when it is current).
FLAVOUR=$FLAVOUR bash "$top/scripts/build-kernel.sh"
seed=$FASTSOCKET_CACHE/build/$FLAVOUR-$KVER
seed_key=$(cat "$seed/.fastsocket-key")

series_hash=$( (cd "$top/patches" && cat series && xargs cat <series) | sha256sum | cut -c1-8)
localversion=-fastsocket-$series_hash
[ "$FLAVOUR" = perf ] || localversion+=-$FLAVOUR
release=$KVER$localversion
kpkgver=$KVER-1
tree=$FASTSOCKET_CACHE/build/deb-$FLAVOUR-$KVER
debs=$FASTSOCKET_CACHE/deb/$FLAVOUR
# The packaging's own revision: bump it when what the packages hold changes (3: the Rust
# build inputs in linux-headers-rust).
pkg_rev=3
deb_key=$(printf '%s\n' "$seed_key" "$release" "$kpkgver" "$pkg_rev" | sha256sum | cut -c1-16)
log "kernel release $release (flavour $FLAVOUR, tree $tree)"

# 2. The kernel packages, rebuilt only when the seed's key or the release changed.
if [ "$(cat "$debs/.key" 2>/dev/null)" != "$deb_key" ] ||
	! ls "$debs"/linux-image-"$release"_*.deb "$debs"/linux-headers-"$release"_*.deb \
		"$debs"/linux-headers-rust-"$release"_*.deb >/dev/null 2>&1; then
	if [ "$(cat "$tree/.fastsocket-seed" 2>/dev/null)" != "$seed_key" ]; then
		# rsync -a keeps the seed's times: make sees its objects as up to date.
		log "seeding $tree from $seed"
		mkdir -p "$tree"
		rsync -a --delete --exclude debian "$seed/" "$tree/"
		echo "$seed_key" >"$tree/.fastsocket-seed"
	fi
	"$KSRC/scripts/config" --file "$tree/.config" --set-str LOCALVERSION "$localversion"
	make -s -C "$KSRC" O="$tree" "${KMAKE_VARS[@]}" olddefconfig >/dev/null
	grep -qx "CONFIG_LOCALVERSION=\"$localversion\"" "$tree/.config" ||
		{ log "CONFIG_LOCALVERSION not applied to $tree/.config"; exit 1; }
	# bindeb-pkg writes its packages next to the tree: build in a directory of our own.
	rm -f "$(dirname "$tree")"/linux-*"$release"*.deb "$(dirname "$tree")"/linux-libc-dev_*.deb \
		"$(dirname "$tree")"/linux-fastsocket_*.{buildinfo,changes}
	log "make bindeb-pkg with -j$JOBS (log: $tree/bindeb-pkg.log)"
	start=$(date +%s)
	# -d (DPKG_FLAGS): Build-Depends-Arch names gcc-x86-64-linux-gnu, which Debian 12 does not
	# have (its gcc is the native compiler); every tool the build needs comes from install-deps.
	if ! DEB_BUILD_OPTIONS=terse DEBEMAIL=dev@fastsocket-rs.invalid DEBFULLNAME="fastsocket-rs developers" \
		make -C "$KSRC" O="$tree" "${KMAKE_VARS[@]}" -j"$JOBS" bindeb-pkg \
		KDEB_PKGVERSION="$kpkgver" KDEB_SOURCENAME=linux-fastsocket KDEB_CHANGELOG_DIST=bookworm \
		DPKG_FLAGS=-d >"$tree/bindeb-pkg.log" 2>&1; then
		grep -E 'error|Error' "$tree/bindeb-pkg.log" | head -20
		tail -30 "$tree/bindeb-pkg.log"
		log "make bindeb-pkg failed"
		exit 1
	fi
	log "kernel packaged in $(($(date +%s) - start))s"
	got=$(cat "$tree/include/config/kernel.release")
	[ "$got" = "$release" ] || { log "the packaged kernel is $got, wanted $release"; exit 1; }
	rm -rf "$debs" && mkdir -p "$debs"
	mv "$(dirname "$tree")"/linux-image-"$release"_*.deb "$(dirname "$tree")"/linux-headers-"$release"_*.deb "$debs/"
	# The headers package carries the tree's host programs (fixdep, modpost, objtool...) with
	# their symbol tables: bindeb-pkg's rules have no dh_strip. Strip them as dh_strip would
	# (Debian's own linux-headers packages ship them stripped) rather than relinking them in
	# the tree with HOSTLDFLAGS=-s, which would rebuild every object (they depend on objtool).
	hdeb=$(ls "$debs"/linux-headers-"$release"_*.deb)
	hdir=$(mktemp -d)
	dpkg-deb -R "$hdeb" "$hdir/p"
	find "$hdir/p/usr/src" -type f -perm -u+x -print0 | while IFS= read -r -d '' f; do
		[ "$(head -c4 "$f" | od -An -c | tr -d ' ')" = 177ELF ] || continue
		strip --strip-unneeded --remove-section=.comment --remove-section=.note "$f"
	done
	(cd "$hdir/p" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
		xargs -0 md5sum >DEBIAN/md5sums)
	sed -i "s/^Installed-Size: .*/Installed-Size: $(du -sk --exclude=DEBIAN "$hdir/p" | cut -f1)/" \
		"$hdir/p/DEBIAN/control"
	dpkg-deb --root-owner-group -Zxz --build "$hdir/p" "$hdeb" >/dev/null
	# 6.12's headers package (scripts/package/install-extmod-build) carries what C modules
	# need but nothing for Rust ones. linux-headers-rust-<release> adds, in the headers'
	# directory, the crates' metadata a Rust module is compiled against (core,
	# compiler_builtins, kernel, bindings, uapi, ffi, build_error, the macros proc-macro), the
	# target specification and the kernel's clippy configuration (its MSRV), so that
	# fastsocket.ko (or any Rust module) builds against the installed headers as against the
	# tree (`make deb-test` checks it). A package of its own: 90 MB unpacked, most of it
	# core's metadata, which C-only users of the headers need not install.
	rname=linux-headers-rust-$release
	rdir=$hdir/r
	hsrc=$rdir/usr/src/linux-headers-$release
	install -d "$hsrc/rust" "$hsrc/scripts" "$rdir/DEBIAN" "$rdir/usr/share/doc/$rname"
	for f in "$tree"/rust/*.rmeta "$tree"/rust/libmacros.so; do
		install -m 644 "$f" "$hsrc/rust/"
	done
	# rustc finds the proc-macro's entry through its dynamic symbols, which stripping keeps.
	strip --strip-unneeded --remove-section=.comment --remove-section=.note "$hsrc/rust/libmacros.so"
	install -m 644 "$tree/scripts/target.json" "$hsrc/scripts/target.json"
	install -m 644 "$KSRC/.clippy.toml" "$hsrc/.clippy.toml"
	cp "$hdir/p/usr/share/doc/linux-headers-$release"/{copyright,changelog.Debian.gz} "$rdir/usr/share/doc/$rname/"
	(cd "$rdir" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
		xargs -0 md5sum >DEBIAN/md5sums)
	# The proc-macro is a shared object linked against libc: its dependencies as
	# dpkg-shlibdeps finds them.
	mkdir -p "$hdir/src/debian"
	printf 'Source: linux-fastsocket\n\nPackage: %s\nArchitecture: any\n' "$rname" >"$hdir/src/debian/control"
	rshlibs=$(cd "$hdir/src" && dpkg-shlibdeps -O "$hsrc/rust/libmacros.so" | sed -n 's/^shlibs:Depends=//p')
	[ -n "$rshlibs" ] || { log "dpkg-shlibdeps found no dependency of libmacros.so"; exit 1; }
	cat >"$rdir/DEBIAN/control" <<-EOF
	Package: $rname
	Source: linux-fastsocket
	Version: $kpkgver
	Architecture: $(dpkg --print-architecture)
	Maintainer: $maint
	Installed-Size: $(du -sk --exclude=DEBIAN "$rdir" | cut -f1)
	Depends: linux-headers-$release (= $kpkgver), $rshlibs
	Section: kernel
	Priority: optional
	Homepage: https://www.kernel.org/
	Description: Rust build inputs for linux-headers-$release
	 The Rust crates' metadata, the target specification and the clippy
	 configuration of this Linux kernel, installed beside its headers, so
	 that out-of-tree Rust modules build against them.
	EOF
	dpkg-deb --root-owner-group -Zxz --build "$rdir" "$debs/${rname}_${kpkgver}_$(dpkg --print-architecture).deb" >/dev/null
	rm -rf "$hdir"
	# linux-libc-dev would replace Debian's own userspace headers: not shipped.
	rm -f "$(dirname "$tree")"/linux-libc-dev_*.deb "$(dirname "$tree")"/linux-fastsocket_*.{buildinfo,changes}
	echo "$deb_key" >"$debs/.key"
else
	log "cached kernel packages in $debs"
fi

# 3. The module against the packaged tree (same checks as the test module: rustfmt, clippy,
# no warnings), and the live view.
ko=$(FLAVOUR=deb-$FLAVOUR KDIR="$tree" bash "$top/scripts/build-module.sh" | tee /dev/stderr | tail -1)
vermagic=$(/sbin/modinfo -F vermagic "$ko" | cut -d' ' -f1)
[ "$vermagic" = "$release" ] || { log "$ko is for $vermagic, wanted $release"; exit 1; }
stat_dir=$top/tools/fastsocket-stat
[ -e "$stat_dir/Cargo.toml" ] || { log "no $stat_dir: the live view is part of the package"; exit 1; }
log "cargo build --release --locked in tools/fastsocket-stat"
(cd "$stat_dir" && cargo build -q --release --locked)
stat_bin=$stat_dir/target/release/fastsocket-stat

# 4. fastsocket-module-<release>, laid out by hand and built with dpkg-deb.
version=${DEB_MODULE_VERSION:-$(dpkg-parsechangelog -l "$pkg/changelog" -S Version)}
name=fastsocket-module-$release
arch=$(dpkg --print-architecture)
work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT
root=$work/$name
doc=$root/usr/share/doc/$name
install -d "$root/DEBIAN" "$root/lib/modules/$release/updates" "$root/etc/modules-load.d" \
	"$root/etc/sysctl.d" "$root/usr/bin" "$root/usr/share/man/man1" "$doc"
install -m 644 "$ko" "$root/lib/modules/$release/updates/fastsocket.ko"
# As dh_strip and the kernel's INSTALL_MOD_STRIP=1 do.
strip --strip-debug "$root/lib/modules/$release/updates/fastsocket.ko"
install -m 755 "$stat_bin" "$root/usr/bin/fastsocket-stat"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/fastsocket-stat"
gzip -9n <"$stat_dir/fastsocket-stat.1" >"$root/usr/share/man/man1/fastsocket-stat.1.gz"
chmod 644 "$root/usr/share/man/man1/fastsocket-stat.1.gz"
install -m 644 "$pkg/fastsocket.conf" "$root/etc/modules-load.d/fastsocket.conf"
install -m 644 "$pkg/60-fastsocket.conf" "$root/etc/sysctl.d/60-fastsocket.conf"
printf '/etc/modules-load.d/fastsocket.conf\n/etc/sysctl.d/60-fastsocket.conf\n' >"$root/DEBIAN/conffiles"
for s in postinst postrm; do
	sed "s/@RELEASE@/$release/g" "$pkg/$s" >"$root/DEBIAN/$s" && chmod 755 "$root/DEBIAN/$s"
done

# The copyright file names every crate linked into fastsocket-stat, from cargo's own graph.
(cd "$stat_dir" && cargo metadata -q --format-version 1 --locked) >"$work/metadata.json"
crates=$(python3 - "$work/metadata.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
pkgs = {p["id"]: p for p in m["packages"]}
nodes = {n["id"]: n for n in m["resolve"]["nodes"]}
seen, todo = set(), [m["resolve"]["root"]]
while todo:  # normal (not build or dev) dependencies, transitively, minus proc-macros
    for d in nodes[todo.pop()]["deps"]:
        p = pkgs[d["pkg"]]
        if d["pkg"] in seen or all(k["kind"] is not None for k in d["dep_kinds"]):
            continue
        if any("proc-macro" in t["kind"] for t in p["targets"]):
            continue
        seen.add(d["pkg"])
        todo.append(d["pkg"])
known = {"MIT", "Apache-2.0", "Unlicense", "OR"}
for i in sorted(seen, key=lambda i: pkgs[i]["name"]):
    p = pkgs[i]
    if p["source"] is None:  # the project's own crates (rust/logic), under its own licence
        continue
    lic = p["license"] or ""
    if not set(lic.replace("/", " OR ").split()) <= known:
        sys.exit(f"crate {p['name']} {p['version']}: license {lic!r} has no paragraph in packaging/copyright")
    print(f" {p['name']} {p['version']} ({lic})")
PY
)
python3 - "$pkg/copyright" "$doc/copyright" "$crates" <<'PY'
import sys
src, dst, crates = sys.argv[1:]
open(dst, "w").write(open(src).read().replace("@CRATES@", crates))
PY
{
	if [ "$version" != "$(dpkg-parsechangelog -l "$pkg/changelog" -S Version)" ]; then
		printf 'fastsocket-rs (%s) bookworm; urgency=medium\n\n  * Rebuilt as %s (DEB_MODULE_VERSION).\n\n -- %s  %s\n\n' \
			"$version" "$version" "$maint" "$(date -R)"
	fi
	cat "$pkg/changelog"
} | gzip -9n >"$doc/changelog.Debian.gz"
chmod 644 "$doc/copyright" "$doc/changelog.Debian.gz"

# Shared-library dependencies of fastsocket-stat, as dpkg-shlibdeps finds them.
mkdir -p "$work/src/debian"
printf 'Source: fastsocket-rs\n\nPackage: %s\nArchitecture: any\n' "$name" >"$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O "$root/usr/bin/fastsocket-stat" | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { log "dpkg-shlibdeps found no dependency of fastsocket-stat"; exit 1; }
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@RELEASE@/$release/g" -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" \
	-e "s/@SIZE@/$size/" -e "s/@SHLIBS@/$shlibs/" "$pkg/control" >"$root/DEBIAN/control"
mkdir -p "$out"
rm -f "$out"/*.deb
cp "$debs"/*.deb "$out/"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out/${name}_${version}_$arch.deb" >/dev/null

log "packages in $out:"
(cd "$out" && for f in *.deb; do
	printf '%-75s %8s\n' "$(dpkg-deb -f "$f" Package) $(dpkg-deb -f "$f" Version)" "$(du -h "$f" | cut -f1)"
done) | while IFS= read -r line; do log "  $line"; done
ls "$out"/*.deb
