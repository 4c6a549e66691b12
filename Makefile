# fastsocket-rs: build the patched kernel and the Rust module, boot them, test them.
#
#   make demo      build everything, boot, compare unchanged nginx with and without the module
#   make test      host tests + booted-kernel tests on the debug kernel + make deb-test (what CI runs)
#   make bench     workloads x arms, wall clock and icount -> Documentation/benchmarks.md
#   make lockprof  lock profile per arm: perf lock (perf kernel), /proc/lock_stat (lockstat kernel)
#   make cpuprof   where the guest instructions go per arm (perf record under icount), against B0
#   make bench-dry-run  the arm schedule of make bench (order, module state, knobs), no VM
#   make soak      trinity, stress-ng and load/unload cycles under load, for longer (SOAK_MINUTES, SOAK_CYCLES)
#   make vfsbench  socket-file microbenchmark (socket, accept, socketpair + close), stock vs T, and its profile
#   make grub-check  boot a Debian 12 disk with GRUB: install guide's boot steps for real (not in make test)
#
# Kernel trees are cached in $(FASTSOCKET_CACHE) (default /var/cache/fastsocket-rs), keyed by
# kernel package version, patch series, config and toolchain.

SHELL := /bin/bash
export FASTSOCKET_CACHE ?= /var/cache/fastsocket-rs
S := scripts
TESTS_BIN := userspace-tests/target/release/fastsocket-tests

.PHONY: all deps kernel kernel-perf kernel-lockstat module module-perf module-lockstat \
	host-test userspace vm-test test demo bench bench-dry-run lockprof cpuprof soak vfsbench checkpatch clean help

help:
	@sed -n '2,13p' Makefile

all: test

deps:
	@bash $(S)/install-deps.sh

kernel: deps
	@FLAVOUR=debug bash $(S)/build-kernel.sh

kernel-perf: deps
	@FLAVOUR=perf bash $(S)/build-kernel.sh

module: kernel
	@FLAVOUR=debug bash $(S)/build-module.sh >/dev/null

module-perf: kernel-perf
	@FLAVOUR=perf bash $(S)/build-module.sh >/dev/null

kernel-lockstat: deps
	@FLAVOUR=lockstat bash $(S)/build-kernel.sh

module-lockstat: kernel-lockstat
	@FLAVOUR=lockstat bash $(S)/build-module.sh >/dev/null

# Pure logic of the module and the test runner's own parsers, on the host.
host-test: deps
	@echo "[host-test] cargo test: rust/logic, userspace-tests, tools/fastsocket-stat, bench/sockbench; scripts/vfsstages.py selftest"
	@cd rust/logic && cargo test -q --locked 2>&1 | grep -E 'test result|FAILED|panicked|error' ; test $${PIPESTATUS[0]} = 0
	@cd userspace-tests && cargo test -q --locked 2>&1 | grep -E 'test result|FAILED|panicked|error' ; test $${PIPESTATUS[0]} = 0
	@cd tools/fastsocket-stat && cargo test -q --locked 2>&1 | grep -E 'test result|FAILED|panicked|error' ; test $${PIPESTATUS[0]} = 0
	@cd bench/sockbench && cargo test -q --locked 2>&1 | grep -E 'test result|FAILED|panicked|error' ; test $${PIPESTATUS[0]} = 0
	@python3 $(S)/vfsstages.py selftest

userspace: deps
	@cd userspace-tests && cargo build -q --release --locked
	@cd tools/fastsocket-stat && cargo build -q --release --locked

# The suite on 2 vCPUs, then a short second boot on one: there the module registers only the
# socket inode cache's hooks (accept locality and RFD have nothing to steer).
ONE_CPU_TESTS = module_load,hooks_fit_cpu_count,feature_keys_follow_namespaces,vfs_socket_semantics,unload_reload,kernel_log_clean
vm-test: module userspace
	@bash $(S)/vm-run.sh -- $(CURDIR)/$(TESTS_BIN) \
		--module $(FASTSOCKET_CACHE)/module/debug/fastsocket.ko
	@echo "[vm-test] one vCPU: $(ONE_CPU_TESTS)"
	@bash $(S)/vm-run.sh --cpus 1 -- $(CURDIR)/$(TESTS_BIN) \
		--module $(FASTSOCKET_CACHE)/module/debug/fastsocket.ko --filter $(ONE_CPU_TESTS)

test: host-test checkpatch vm-test deb-test

# DEMO_ROUNDS (5) x DEMO_SECONDS (5) per arm, DEMO_CPUS (2); DEMO_ICOUNT=1 counts connections
# per 10^9 guest instructions (QEMU icount) instead of per second.
DEMO_ROUNDS ?= 5
DEMO_SECONDS ?= 5
DEMO_CPUS ?= 2
demo: module-perf
	@FLAVOUR=perf bash $(S)/vm-run.sh --cpus $(DEMO_CPUS) $(if $(DEMO_ICOUNT),--icount) -- \
		bash $(CURDIR)/$(S)/guest/demo.sh $(FASTSOCKET_CACHE)/module/perf/fastsocket.ko \
		$(DEMO_ROUNDS) $(DEMO_SECONDS) $(if $(DEMO_ICOUNT),icount,wall)

bench: module-perf
	@FLAVOUR=perf bash $(S)/bench.sh bench

# The schedule of `make bench` (rounds, arm order, module state and knobs per namespace),
# without building, booting or measuring anything.
bench-dry-run:
	@FLAVOUR=perf bash $(S)/bench.sh --dry-run bench

# Two boots: the perf kernel under `perf lock record` (contention tracepoints), then the
# lockstat kernel (/proc/lock_stat); W1 every arm and W3 (B0, T, TR0: connect() path), one
# round (about 8 minutes).
lockprof: module-perf module-lockstat
	@bash $(S)/bench.sh lockprof

# Where the guest's instructions go per arm: perf record under icount, each arm against B0
# (BENCH_WORKLOADS, default W1; BENCH_ARMS, default all; BENCH_CPUS, default 2).
cpuprof: module-perf
	@FLAVOUR=perf bash $(S)/bench.sh cpuprof

# The hardening tests for longer (Documentation/reliability.md), one boot of the debug kernel:
# SOAK_MINUTES of fuzzing (half trinity, half stress-ng) and SOAK_CYCLES load/unload cycles,
# under nginx/wrk load; the log goes to results/soak-<UTC>.log.
SOAK_MINUTES ?= 30
SOAK_CYCLES ?= 100
soak: module userspace
	@SOAK_MINUTES=$(SOAK_MINUTES) SOAK_CYCLES=$(SOAK_CYCLES) bash $(S)/soak.sh

# The socket-file microbenchmark (bench/sockbench, issue 12) on the perf kernel: wall clock
# (2 vCPUs) and QEMU icount (VFSBENCH_ICOUNT_CPUS, 1), VFSBENCH_ROUNDS (6) rounds of stock and
# T, then a perf profile (stock) -> results/vfsbench-latest, Documentation/benchmarks.md.
vfsbench: module-perf
	@FLAVOUR=perf bash $(S)/vfsbench.sh

# Debian packages in results/deb/: the kernel (linux-image-, linux-headers-<release>, by its
# own bindeb-pkg, release <kver>-fastsocket-<series hash>) and fastsocket-module-<release>
# (the module, fastsocket-stat, modules-load.d and sysctl.d files); Documentation/operations.md.
# DEB_FLAVOUR=perf (default: the lean benchmark config) or debug.
DEB_FLAVOUR ?= perf
.PHONY: deb deb-test grub-check
deb: deps
	@DEB_FLAVOUR=$(DEB_FLAVOUR) bash $(S)/deb.sh

# The packages build and pass lintian; booted with the packaged kernel they install on a
# scratch root, load, upgrade and purge without leftovers. DEB_TEST_FLAVOUR=debug (default):
# the kernel `make test` builds anyway.
DEB_TEST_FLAVOUR ?= debug
deb-test: deps
	@DEB_FLAVOUR=$(DEB_TEST_FLAVOUR) bash $(S)/deb-test.sh

# The GRUB part of Documentation/operations.md for real (not in make test: about 10 minutes):
# a Debian 12 disk image (debootstrap, cached; grub-pc on MBR) booted under QEMU five times,
# through GRUB each time, installing, booting once, falling back, making the default and
# purging with the guide's commands. GRUB_CHECK_FLAVOUR=debug (default) or perf.
GRUB_CHECK_FLAVOUR ?= debug
grub-check: deps
	@DEB_FLAVOUR=$(GRUB_CHECK_FLAVOUR) bash $(S)/grub-check.sh

# The kernel patches follow the kernel's coding style.
checkpatch: kernel
	@bash $(S)/checkpatch.sh

clean:
	rm -rf rust/logic/target userspace-tests/target
