#!/usr/bin/python3
"""The socket-file profile of `make vfsbench` (issue 12): fold perf's samples, group them.

    perf script -F comm,tid,cpu,ip,sym,dso | vfsprof.py fold > CASE.folded
    vfsprof.py groups CASE.folded        (the grouped table, as text)

`fold` turns `perf script` output (one sample per block: a header line, then its call chain,
leaf first) into one line per distinct call chain: `comm/tid;outermost;...;leaf COUNT`, frames
outside the kernel (below the top half of the address space) written `sym@dso`. scripts/report.py reads the folded files through
`classify()` for Documentation/benchmarks.md. Standard library only.

How a sample is grouped: its call chain is walked from the leaf outwards and the first frame
that names a function of a group decides (the innermost named caller: a sample in
kmem_cache_alloc called from alloc_inode is the inode's, one in percpu_counter_add_batch called
from alloc_empty_file the file's). One exception comes first: a sample in the spinlock code
whose first caller outside it takes or drops `files->file_lock` (alloc_fd, file_close_fd, ...)
is `files->file_lock`'s. Samples of an idle vCPU (the idle task, not in an interrupt) are
counted apart and left out of the shares; so are samples in user space.
"""
import collections
import re
import sys

# (group, regular expression on the function name). Order only matters for the listing.
GROUPS = [
    ("inode", r"^(new_inode_pseudo|new_inode|alloc_inode|sock_alloc_inode|inode_init_always\w*|"
              r"inode_init_once|iput|iput_final|evict|destroy_inode|__destroy_inode|"
              r"free_inode_nonrcu|i_callback|sock_free_inode|get_next_ino|sock_alloc|"
              r"inode_sb_list_\w+|clear_inode|remove_inode_hash|__remove_inode_hash|"
              r"inode_wait_for_writeback|truncate_inode_pages_final|inode_\w+|__inode_\w+|"
              r"ihold|igrab|sockfs_\w+)$"),
    ("dentry", r"^(d_alloc_pseudo|__d_alloc|d_alloc|d_instantiate|__d_instantiate|d_set_d_op|"
               r"dput|__dentry_kill|dentry_kill|dentry_unlink_inode|dentry_free|d_free|__d_free|"
               r"__d_free_external|alloc_path_pseudo|d_lru_\w+|d_delete|fast_dput|lock_for_kill|"
               r"retain_dentry|d_make_\w+|dentry_\w+)$"),
    ("file", r"^(alloc_file_pseudo|alloc_file|alloc_empty_file|init_file|file_init_path|__fput|"
             r"____fput|fput|__fput_sync|file_free|file_free_rcu|sock_alloc_file|filp_flush|"
             r"filp_close|stream_open|put_file_access|file_f_owner_release|locks_remove_file|"
             r"eventpoll_release\w*|fsnotify\w*|__fsnotify\w*|mntput|mntget|mntput_no_expire|"
             r"path_put|path_get|task_work_run|task_work_add|dnotify_flush|get_nr_files)$"),
    ("fd install", r"^(get_unused_fd_flags|alloc_fd|fd_install|close_fd|file_close_fd|"
                   r"file_close_fd_locked|put_unused_fd|__put_unused_fd|expand_files|"
                   r"find_next_fd|__x64_sys_close|__do_sys_close|__se_sys_close|pick_file)$"),
    ("LSM hooks", r"^(security_\w+|bpf_lsm_\w+|cap_\w+|apparmor_\w+|selinux_\w+|smack_\w+|"
                  r"tomoyo_\w+|landlock_\w+|yama_\w+|lockdown_\w+|ipe_\w+|loadpin_\w+|"
                  r"safesetid_\w+|hook_\w+)$"),
    ("RCU callbacks and frees", r"^(call_rcu|__call_rcu_common\w*|kvfree_call_rcu|rcu_do_batch|rcu_core|"
                      r"rcu_core_si|rcu_segcblist_\w+|rcu_cblist_\w+|rcu_nocb_\w+|"
                      r"rcu_advance_cbs\w*|rcu_accelerate_cbs\w*|note_gp_changes|"
                      r"rcu_report_qs\w*|rcu_gp_\w+)$"),
    ("protocol: socket create/release", r"^(sk_alloc|sk_prot_alloc|sk_free|__sk_free|"
        r"sk_destruct|__sk_destruct|sock_init_data\w*|inet_create|inet_release|"
        r"inet_sock_destruct|tcp_v4_init_sock|tcp_init_sock|tcp_close|__tcp_close|"
        r"tcp_v4_destroy_sock|tcp_disconnect|sk_common_release|inet_accept|inet_csk_accept|"
        r"sk_clone_lock|inet_csk_clone_lock|tcp_create_openreq_child|unix_\w+|"
        r"__unix_\w+|sock_release|__sock_release|sock_close|__sock_create|sock_create\w*|"
        r"__sys_socket\w*|__x64_sys_socket\w*|__sys_socketpair|__x64_sys_socketpair|"
        r"__sys_accept4\w*|__x64_sys_accept4?|do_accept|__sys_connect\w*|__x64_sys_connect|"
        r"tcp_init_\w+|tcp_assign_congestion_control|tcp_cleanup_\w+|tcp_clear_xmit_timers|"
        r"inet_csk_init_xmit_timers|inet_csk_clear_xmit_timers|tcp_release_cb|tcp_set_state|"
        r"tcp_done|inet_csk_destroy_sock|inet_sk_state_store|"
        r"sock_map_fd|move_addr_to_user|sk_\w+|__sk_\w+|sock_\w+|__sock_\w+|lock_sock\w*|"
        r"release_sock|__release_sock)$"),
    ("network stack: segments, handshake, timers", r"^(__)?(tcp|ip_|ipv4|ip4|inet|net_|netif|"
        r"netdev|napi|dev_|veth|skb|kfree_skb|consume_skb|alloc_skb|nf_|neigh|raw_|icmp|fib|"
        r"dst_|rt_|sch_|qdisc|rps|eth_|validate_xmit|reqsk|secure_tcp|get_rps_cpu|"
        r"enqueue_to_backlog|process_backlog|do_softirq|handle_softirqs|__local_bh_enable_ip|"
        r"local_bh_enable)\w*$"),
    ("process start-up and exit (exec, page faults, 9p reads)",
        r"^(\w*_fault\w*|handle_mm_fault|__handle_mm_fault|do_anonymous_page|filemap_\w+|"
        r"next_uptodate_folio|p9\w*|v9fs_\w+|\w*execve\w*|load_elf_binary|begin_new_exec|"
        r"exit_mmap|do_exit|do_group_exit|mmput|unmap_\w+|zap_\w+|tlb_\w+|release_pages|"
        r"clear_page_\w+|copy_process|kernel_clone|do_wp_page|wp_page_copy|mmap_region|"
        r"do_mmap|vm_mmap\w*|__do_munmap|do_vmi_\w+|vma_\w+|mas_\w+|mt_\w+|"
        r"__x64_sys_(execve|exit_group|mmap|munmap|mprotect|brk|openat|newfstatat|read|"
        r"pread64|clone3?|wait4)|do_sys_openat2|path_openat|link_path_walk|walk_component)$"),
    ("scheduler, wake-ups", r"^(schedule\w*|__schedule|try_to_wake_up|wake_up\w*|__wake_up\w*|"
        r"finish_task_switch\w*|pick_next_task\w*|enqueue_task\w*|dequeue_task\w*|"
        r"ttwu_\w+|sched_\w+|update_\w+|psi_\w+|select_task_rq\w*|autoremove_wake_function|"
        r"prepare_to_wait\w*|finish_wait|default_wake_function|wait_woken|woken_wake_function|"
        r"__x2apic_send_IPI\w*|native_send_call_func\w*|x2apic_\w+|smp_call_function\w*|"
        r"sysvec_\w+|__sysvec_\w+|hrtimer_interrupt|__hrtimer_run_queues|tick_\w+|irq_exit_rcu|"
        r"asm_sysvec_\w+)$"),
    ("syscall entry/exit", r"^(entry_SYSCALL_64\w*|do_syscall_64|syscall_exit_to_user_mode\w*|"
        r"exit_to_user_mode\w*|syscall_enter_from_user_mode\w*|x64_sys_call|"
        r"fpregs_restore_userregs|switch_fpu_return|restore_fpregs_from_fpstate|"
        r"__x64_sys_\w+|__do_sys_\w+|__se_sys_\w+)$"),
]
_GROUP_RE = [(g, re.compile(p)) for g, p in GROUPS]
FILE_LOCK = "files->file_lock"
# The spinlock code, and the functions that take files->file_lock around it.
_SPIN = re.compile(r"^(_raw_spin_\w+|queued_spin_\w+|native_queued_spin_\w+|"
                   r"__pv_queued_spin_\w+|do_raw_spin_\w+|pv_native_\w+|__raw_spin_\w+)$")
_FILE_LOCK_TAKERS = {"alloc_fd", "file_close_fd", "close_fd", "put_unused_fd",
                     "__put_unused_fd", "expand_files", "__range_close", "do_dup2",
                     "ksys_dup3", "f_dupfd", "replace_fd", "set_close_on_exec", "pick_file",
                     "file_close_fd_locked"}
# An idle vCPU: the idle task's own frames.
_IDLE = re.compile(r"^(pv_native_safe_halt|default_idle\w*|arch_cpu_idle\w*|do_idle|"
                   r"cpu_startup_entry|cpuidle_idle_call|acpi_idle\w*|native_safe_halt|"
                   r"start_secondary|common_startup_64|rest_init|start_kernel|"
                   r"x86_64_start_\w+|cpu_idle_poll|mwait_idle\w*)$")
OTHER = "other kernel"
_ACCEPT = {"__x64_sys_accept4", "__x64_sys_accept", "__sys_accept4"}
_SOFTIRQ = {"handle_softirqs", "__do_softirq", "do_softirq", "net_rx_action", "run_ksoftirqd"}
ORDER = [g for g, _ in GROUPS[:6]] + [FILE_LOCK] + [g for g, _ in GROUPS[6:]] + [OTHER]
# The groups a lighter socket-file path works on (issue 12): the objects behind a descriptor.
VFS_GROUPS = ["inode", "dentry", "file", "fd install", "LSM hooks", "RCU callbacks and frees",
              FILE_LOCK]

_FRAME = re.compile(r"^\s+([0-9a-fA-F]+)\s+(.*?)\s+\((.*)\)\s*$")


def rust_name(sym):
    """A Rust v0-mangled symbol (`_RNv...`) as `crate::...::name`: the identifiers of its
    path in order, without crate hashes, impl and generic details (enough to read a profile;
    rustfilt is not in Debian 12). Other symbols unchanged."""
    if not sym.startswith("_R"):
        return sym
    idents, i = [], 2
    while i < len(sym):
        c = sym[i]
        if c.isdigit():
            m = re.match(r"(\d+)_?", sym[i:])
            n, i = int(m.group(1)), i + m.end()
            idents.append(sym[i:i + n])
            i += n
        elif c in "sB":
            # A disambiguator (crate hash, impl) or a back-reference: base 62, then "_".
            i = sym.find("_", i) + 1 or len(sym)
        else:
            i += 1
    return "::".join(idents) if idents else sym


def fold(lines, out):
    """perf script text (comm,tid,cpu,ip,sym,dso with call chains) -> folded stacks."""
    counts = collections.Counter()
    head, frames = None, []

    def flush():
        if head is not None and frames:
            counts[";".join([head] + frames[::-1])] += 1

    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if not line[0].isspace():
            flush()
            # "comm tid [cpu]": the chain's first element is comm/tid.
            f = line.split()
            head, frames = f[0] + ("/" + f[1] if len(f) > 1 and f[1].isdigit() else ""), []
            continue
        m = _FRAME.match(line)
        if not m:
            continue
        addr, sym, dso = m.group(1), m.group(2), m.group(3)
        sym = rust_name(re.sub(r"\+0x[0-9a-f]+$", "", sym))
        # Kernel text lies in the top half of the address space (perf names its dso
        # [kernel.kallsyms] or vmlinux, depending on what it found).
        kernel = len(addr) == 16 and addr[0] in "89abcdefABCDEF"
        frames.append(sym if kernel else f"{sym}@{dso.rsplit('/', 1)[-1]}")
    flush()
    for stack, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        out.write(f"{stack} {n}\n")


# GCC's clone suffixes (__call_rcu_common.constprop.0, finish_task_switch.isra.0, ...).
_CLONE = re.compile(r"(\.(constprop|isra|part|cold|lto_priv|llvm)(\.\d+)?)+$")


def group_of(frames):
    """The group of one call chain (frames leaf first, kernel frames only), or OTHER."""
    frames = [_CLONE.sub("", f) for f in frames]
    i = 0
    while i < len(frames) and _SPIN.match(frames[i]):
        i += 1
    if i > 0 and i < len(frames) and frames[i] in _FILE_LOCK_TAKERS:
        return FILE_LOCK
    for f in frames:
        for g, r in _GROUP_RE:
            if r.match(f):
                return g
    return OTHER


def classify(path):
    """Grouped samples of one folded file: a dict with
    header: the '#' lines; total, user, idle, kernel: sample counts (kernel = busy kernel
    samples, the shares' denominator); groups: {group: samples}; rcu_cb: {group: samples
    inside an RCU callback batch (rcu_do_batch)}; leaves: {group: Counter of leaf symbols};
    leaf_all: Counter of the kernel samples' leaf symbols; server: {group: samples} of the
    accepting threads' own accept() and close() calls (process context: no softirq frame),
    has_tid: whether the chains name their thread (else server is every thread of the comm)."""
    r = dict(header=[], total=0, user=0, idle=0, kernel=0, groups=collections.Counter(),
             rcu_cb=collections.Counter(), leaves=collections.defaultdict(collections.Counter),
             leaf_all=collections.Counter(), server=collections.Counter())
    chains = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#"):
                r["header"].append(line[1:].strip())
            elif line:
                stack, n = line.rsplit(" ", 1)
                chains.append((stack.split(";"), int(n)))
    # The accepting threads: those with a sample inside accept().
    server = {p[0] for p, _ in chains if set(p[1:]) & _ACCEPT}
    r["has_tid"] = any("/" in p[0] for p, _ in chains)
    for parts, n in chains:
        comm, frames = parts[0].split("/")[0], parts[1:][::-1]  # leaf first
        r["total"] += n
        if not frames or "@" in frames[0]:
            r["user"] += n
            continue
        kframes = [x for x in frames if "@" not in x]
        # The idle task in its idle loop (not an interrupt it took there).
        if comm == "swapper" and not any(re.match(r"^(asm_|sysvec_|__sysvec_|irq_|"
                                                  r"handle_softirqs|__irq_exit)", x)
                                         for x in kframes) \
                and any(_IDLE.match(x) for x in kframes):
            r["idle"] += n
            continue
        g = group_of(kframes)
        r["kernel"] += n
        r["groups"][g] += n
        # The accepting threads' own accept() and close() calls, in process context.
        if parts[0] in server and set(kframes) & (_ACCEPT | {"__x64_sys_close"}) \
                and not set(kframes) & _SOFTIRQ:
            r["server"][g] += n
        if "rcu_do_batch" in kframes or "rcu_core" in kframes:
            r["rcu_cb"][g] += n
        r["leaves"][g][kframes[0]] += n
        r["leaf_all"][kframes[0]] += n
    return r


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "fold":
        fold(sys.stdin, sys.stdout)
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "groups":
        r = classify(sys.argv[2])
        print(f"samples {r['total']}: kernel (busy) {r['kernel']}, idle {r['idle']}, "
              f"user {r['user']}")
        for g in ORDER:
            n = r["groups"][g]
            top = ", ".join(f"{s} {c}" for s, c in r["leaves"][g].most_common(4))
            print(f"{g:45s} {n:7d} {100.0 * n / max(r['kernel'], 1):5.1f}%  "
                  f"(in RCU callbacks {r['rcu_cb'][g]}, accepting threads' accept/close "
                  f"{r['server'][g]})  {top}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
