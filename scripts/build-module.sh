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
# The kernel warns about C frames over CONFIG_FRAME_WARN (2048 bytes on 64-bit); rustc does
# not, and a value built on the stack can be kilobytes (a port bitmap was once 8 KiB, twice,
# in a 16 KiB frame that overflowed the stack of the module's init). Refuse any such frame.
# x86-64 only (the project's one target): the kernel's Rust target has no stack probes, so
# each frame is one `sub $N,%rsp` in GNU objdump's syntax; finding none means the check no
# longer reads the code, and fails too.
log "checking stack frames (at most 2048 bytes)"
disasm=$(objdump -d --no-show-raw-insn "$mdir/fastsocket.ko") || { log "objdump failed"; exit 1; }
python3 -c '
import re, sys
fn, big, frames = "?", [], 0
for line in sys.stdin:
    m = re.match(r"[0-9a-f]+ <(.+)>:$", line)
    if m:
        fn = m.group(1)
        continue
    m = re.search(r"\bsub\s+\$0x([0-9a-f]+),%rsp$", line)
    if m:
        frames += 1
        if int(m.group(1), 16) > 2048:
            big.append(f"{int(m.group(1), 16)} bytes: {fn}")
for b in big:
    print(b)
if not frames:
    print("no stack frame found in the disassembly: the check cannot read it")
sys.exit(1 if big or not frames else 0)' <<<"$disasm" || { log "stack frame check failed"; exit 1; }
log "built $mdir/fastsocket.ko"
echo "$mdir/fastsocket.ko"
