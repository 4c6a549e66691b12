#!/usr/bin/env bash
# Boot the cached kernel of FLAVOUR under QEMU with virtme-ng (the host's root filesystem,
# read-only, so nginx, haproxy, wrk, perf and the test binaries are there) and run a command
# in it. Returns the command's exit status; non-zero if the VM did not finish.
#
#   scripts/vm-run.sh [--cpus N] [--memory SIZE] [--timeout SECONDS] [--icount] [--rwdir DIR]
#                     [--append KERNEL-ARGS] -- CMD...
#
# TCG by default: KVM is used only when a probe boot proved it works (FASTSOCKET_KVM=probe).
# All guest networking is netns + veth inside the guest: the VM gets no network device.
set -euo pipefail
. "$(dirname "$0")/env.sh"

# The default timeout leaves room for make test's booted suite on a slow 2-core host: it took
# 1,730 s on one and 2,330 s on another (2026-12-07, when 2,400 s cut the VM off after it).
cpus=${VM_CPUS:-2} memory=${VM_MEMORY:-2G} timeout=${VM_TIMEOUT:-3600} icount=0 rwdirs=() append=""
while [ $# -gt 0 ]; do
	case "$1" in
	--cpus) cpus=$2; shift 2 ;;
	--memory) memory=$2; shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--icount) icount=1; shift ;;
	--rwdir) rwdirs+=(--rwdir "$2"); shift 2 ;;
	--append) append+=" $2"; shift 2 ;;
	--) shift; break ;;
	*) echo "usage: $0 [--cpus N] [--memory SIZE] [--timeout S] [--icount] [--rwdir DIR] [--append ARGS] -- CMD..." >&2; exit 2 ;;
	esac
done
[ $# -gt 0 ] || { echo "$0: no command" >&2; exit 2; }
[ -e "$KDIR/arch/x86/boot/bzImage" ] || { log "no kernel in $KDIR"; exit 1; }

# tsc=unstable: under TCG the clocksource watchdog otherwise flips the TSC to unstable
# mid-run, patching static keys while vCPUs run (see ../shared/toolchain.md).
# The guest overlays /var, /tmp, /home and others with fresh tmpfs: share the cache (module,
# kernel) and the repository (test binaries, scripts) explicitly.
vng_args=(--run "$KDIR" --cpus "$cpus" --memory "$memory" --append "tsc=unstable$append"
	--rodir "$FASTSOCKET_CACHE" --rodir "$top" "${rwdirs[@]}")

# The guest kernel's console is always captured (--verbose), so that an oops or a panic that
# kills the guest is seen: its lines are kept out of the terminal unless the VM fails (then the
# last of them are printed) or VM_VERBOSE=1.
vng_args+=(--verbose)
console='^\[ *[0-9]+\.[0-9]+\] '

accel=tcg
if [ "${FASTSOCKET_KVM:-}" = probe ] && [ -w /dev/kvm ] && [ "$icount" = 0 ]; then
	if timeout 90 vng "${vng_args[@]}" --exec true >/dev/null 2>&1; then accel=kvm; fi
	log "KVM probe boot: $accel"
fi
[ "$accel" = kvm ] || vng_args+=(--disable-kvm)
# icount: guest time advances by executed instructions (single-threaded TCG), so rates
# measured inside the guest are per guest instruction, not per host second.
[ "$icount" = 1 ] && vng_args+=(--qemu-opts "-icount shift=0,sleep=off")

marker="@@fastsocket-vm: userspace up@@"
cmd=$(printf '%q ' "$@")
run_once() {
	log "booting $KDIR ($accel, $cpus vCPUs, $memory$([ "$icount" = 1 ] && echo ", icount"))"
	timeout --foreground -k 30 "$timeout" vng "${vng_args[@]}" \
		--exec "echo '$marker'; $cmd" 2>&1 | tee "$1" |
		if [ "${VM_VERBOSE:-0}" = 1 ]; then cat; else grep -Ev --line-buffered "$console"; fi
	return "${PIPESTATUS[0]}"
}

out=$(mktemp) && trap 'rm -f "$out"' EXIT
rc=0 && run_once "$out" || rc=$?
# A rare QEMU cross-modifying-code race can oops the kernel while it patches a static key in
# early boot, before userspace (see ../shared/toolchain.md). Retry such a boot once, loudly; an
# oops after userspace started is always a real failure.
if [ "$rc" != 0 ] && ! grep -q "$marker" "$out" && grep -qE 'Oops|Kernel panic|BUG:' "$out"; then
	log "kernel oopsed before userspace started; retrying the boot once"
	rc=0 && run_once "$out" || rc=$?
fi
if [ "$rc" != 0 ] && [ "${VM_VERBOSE:-0}" != 1 ]; then
	# From the first report on (an oops's first line says what it is), else the last lines.
	report='Oops|BUG:|WARNING:|cut here|general protection|Kernel panic|invalid opcode'
	if grep -E "$console" "$out" | grep -qE "$report"; then
		log "the VM failed (exit $rc); its kernel console from the first report on:"
		grep -E "$console" "$out" | sed -n -E "/$report/,\$p" | head -150
	else
		log "the VM failed (exit $rc); the last lines of its kernel console:"
		grep -E "$console" "$out" | tail -60
	fi
fi
if ! grep -q "$marker" "$out"; then
	log "the VM never reached userspace (exit $rc)"
	[ "$rc" != 0 ] || rc=1
elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
	log "the VM did not finish within ${timeout}s"
fi
exit "$rc"
