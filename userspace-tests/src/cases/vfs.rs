//! Lightweight socket files: the module's cache of closed sockets' dentries and inodes is used,
//! and nothing a program or a tool can observe changes, checked with the cache on and off in
//! the same run.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::Command;

use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::fanotify::{self, EventFFlags, Fanotify, MarkFlags, MaskFlags};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::sendfile::sendfile;
use nix::sys::socket::{accept, bind, connect, listen, socketpair, Backlog, SockaddrIn};
use nix::sys::socket::{
    getsockopt, recvmsg, sendmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::sys::stat::{fchmod, fstat, Mode, SFlag};
use nix::unistd::{dup, dup2, dup3, pipe};
use nix::unistd::{fchown, Gid, Uid};

use super::{Context, Ctx, KnobGuard, TestResult};
use crate::procfs::{self, CpuStats};
use crate::{module, sys};

/// socket() + close() cycles of the reuse test (the kmemleak target: 100k).
const CYCLES: usize = 100_000;
/// Sockets kept open together in the reuse test, whose inode numbers must differ.
const LIVE: usize = 64;
/// The most pairs one CPU's cache keeps (rust/vfs/mod.rs, `CAPACITY`).
const CAPACITY: u64 = 1024;
/// Live sockets when the module is unloaded.
const UNLOAD_LIVE: usize = 10_000;

/// The socket inode number of `fd`, checked to be a socket as fstat() and /proc see it.
fn socket_inode(fd: &impl AsFd) -> TestResult<u64> {
    let st = fstat(fd.as_fd()).context("fstat")?;
    ensure!(
        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK,
        "fstat mode {:o} is not S_IFSOCK",
        st.st_mode
    );
    let link = fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
        .context("readlink /proc/self/fd")?;
    let want = format!("socket:[{}]", st.st_ino);
    ensure!(
        link.to_str() == Some(want.as_str()),
        "/proc/self/fd reads {link:?}, fstat says {want}"
    );
    Ok(st.st_ino)
}

fn tcp_socket() -> TestResult<OwnedFd> {
    socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("socket")
}

/// The vfs columns of all CPUs since `before`, and the largest `vfs_idle` of a CPU now.
fn vfs_since(before: &procfs::Counters) -> TestResult<(CpuStats, u64)> {
    let now = procfs::read_counters()?;
    let idle = now.per_cpu.values().map(|c| c.vfs_idle).max().unwrap_or(0);
    Ok((now.since(before)?.total(), idle))
}

/// Sockets made and closed with the cache on reuse kept objects, with unique inode numbers
/// that fstat(), /proc/self/fd and /proc/net/tcp agree on; the shrinker empties the cache;
/// with it off the cache is not used.
pub fn vfs_cache_reuses(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let _on = KnobGuard::vfs("1")?;
    let before = procfs::read_counters()?;
    let mut live: Vec<OwnedFd> = Vec::with_capacity(LIVE);
    for i in 0..CYCLES {
        let fd = tcp_socket()?;
        if i % 1000 < LIVE {
            // Every thousandth run of LIVE sockets: open together, distinct inodes.
            live.push(fd);
            if live.len() == LIVE {
                let inodes: HashSet<u64> =
                    live.iter().map(socket_inode).collect::<TestResult<_>>()?;
                ensure!(
                    inodes.len() == LIVE,
                    "{LIVE} open sockets share inode numbers: {} distinct",
                    inodes.len()
                );
                live.clear();
            }
        }
    }
    let (on, idle) = vfs_since(&before)?;
    info!(
        "cache on: {CYCLES} sockets, {} reused, {} new, {} kept, at most {idle} idle on a CPU",
        on.vfs_reused, on.vfs_new, on.vfs_kept
    );
    ensure!(
        on.vfs_reused + on.vfs_new >= CYCLES as u64,
        "{CYCLES} sockets made, the cache counted {}",
        on.vfs_reused + on.vfs_new
    );
    ensure!(
        on.vfs_reused > 0 && on.vfs_kept > 0,
        "the cache was not used: {on:?}"
    );
    ensure!(
        idle <= CAPACITY,
        "{idle} objects idle on a CPU, at most {CAPACITY}"
    );

    // Memory pressure (here: dropping the slab caches) empties the cache through its shrinker.
    fs::write("/proc/sys/vm/drop_caches", "2").context("writing /proc/sys/vm/drop_caches")?;
    let left: u64 = procfs::read_counters()?
        .per_cpu
        .values()
        .map(|c| c.vfs_idle)
        .sum();
    ensure!(
        left == 0,
        "{left} objects still kept after drop_caches (shrinker)"
    );

    // A listener on a reused object: its inode is the one /proc/net/tcp and ss -e show.
    let listener = TcpListener::bind("127.0.0.1:0").context("bind")?;
    let ino = socket_inode(&listener)?;
    let port = listener.local_addr().context("local_addr")?.port();
    let tcp = procfs::read_tcp4()?;
    let row = tcp
        .iter()
        .find(|s| s.local_address.port() == port)
        .ok_or(format!("no /proc/net/tcp row for port {port}"))?;
    ensure!(
        row.inode == ino,
        "/proc/net/tcp row {row:?} does not name inode {ino}"
    );
    let ss = Command::new("ss")
        .args(["-tlnpeH", &format!("sport = :{port}")])
        .output()
        .context("running ss")?;
    let ss = String::from_utf8_lossy(&ss.stdout);
    ensure!(
        ss.contains(&format!("ino:{ino}")) && ss.contains(&format!("pid={}", std::process::id())),
        "ss -tlnpe does not show inode {ino} and this process: {ss:?}"
    );
    drop(listener);

    // Off: the kernel no longer calls the hook for this namespace's sockets, and the cache is
    // not asked.
    ensure!(
        procfs::read_hooks_flag("vfs_net")?,
        "vfs_net is 0 with vfs=1 and enabled=1"
    );
    let off_net = {
        let _off = KnobGuard::vfs("0")?;
        procfs::read_hooks_flag("vfs_net")?
    };
    ensure!(
        !off_net,
        "vfs_net is 1 with vfs=0: the kernel still calls the hook for this namespace"
    );
    ensure!(
        procfs::read_hooks_flag("vfs_net")?,
        "vfs_net stayed 0 after vfs=1 again"
    );
    let _off = KnobGuard::vfs("0")?;
    let before = procfs::read_counters()?;
    for _ in 0..2000 {
        socket_inode(&tcp_socket()?)?;
    }
    let (off, _) = vfs_since(&before)?;
    // (Closing sockets still fill the cache, shared by every namespace: only taking from it
    // is the namespace's choice.)
    ensure!(
        off.vfs_reused + off.vfs_new == 0,
        "the cache was asked with vfs=0: {off:?}"
    );
    Ok(())
}

/// What a program does with socket descriptors, on sockets that (with the cache on) were
/// made from reused objects: every step must behave as without the cache.
fn socket_calls() -> TestResult {
    // Warm the cache so that the sockets below come from it when it is on.
    for _ in 0..1000 {
        drop(tcp_socket()?);
    }
    let (a, mut b) = UnixStream::pair().context("socketpair")?;
    let ino = socket_inode(&a)?;

    // SO_PEERCRED names this process; a socket option reads back what was set.
    let cred = getsockopt(&a, sockopt::PeerCredentials).context("SO_PEERCRED")?;
    ensure!(
        cred.pid() == std::process::id() as i32 && cred.uid() == 0,
        "SO_PEERCRED: pid {} uid {}",
        cred.pid(),
        cred.uid()
    );
    setsockopt(&a, sockopt::RcvBuf, &65536).context("SO_RCVBUF")?;
    let rcvbuf = getsockopt(&a, sockopt::RcvBuf).context("SO_RCVBUF")?;
    ensure!(rcvbuf >= 65536, "SO_RCVBUF reads {rcvbuf}");

    // dup, fcntl(F_DUPFD), dup3 with O_CLOEXEC: the same socket.
    let d1 = dup(&a).context("dup")?;
    let fd = fcntl(&a, FcntlArg::F_DUPFD(200)).context("F_DUPFD")?;
    ensure!(fd >= 200, "F_DUPFD(200) gave {fd}");
    let mut d3 = dup(&a).context("dup")?;
    dup3(&a, &mut d3, OFlag::O_CLOEXEC).context("dup3")?;
    for d in [d1.as_raw_fd(), fd, d3.as_raw_fd()] {
        let link = fs::read_link(format!("/proc/self/fd/{d}")).context("readlink")?;
        ensure!(
            link.to_str() == Some(format!("socket:[{ino}]").as_str()),
            "fd {d} reads {link:?}, not socket:[{ino}]"
        );
    }
    // dup2 onto an open descriptor (another socket's, closed by it): the same socket.
    let mut d2 = tcp_socket()?;
    dup2(&a, &mut d2).context("dup2")?;
    let link = fs::read_link(format!("/proc/self/fd/{}", d2.as_raw_fd())).context("readlink")?;
    ensure!(
        link.to_str() == Some(format!("socket:[{ino}]").as_str()),
        "dup2's fd reads {link:?}, not socket:[{ino}]"
    );
    drop(d2);
    // lsof attributes the socket to this process, with its inode.
    let lsof = lsof_inode(&a)?;
    ensure!(lsof == ino, "lsof says inode {lsof}, fstat {ino}");
    File::from(d1)
        .write_all(b"1")
        .context("write through dup")?;

    // exec: a descriptor without FD_CLOEXEC is inherited, with it not.
    let inherited = dup(&a).context("dup")?;
    let script = format!(
        "test \"$(readlink /proc/self/fd/{i})\" = 'socket:[{ino}]' && printf 2 >&{i} && \
         test ! -e /proc/self/fd/{c}",
        i = inherited.as_raw_fd(),
        c = d3.as_raw_fd()
    );
    let status = Command::new("sh")
        .args(["-c", &script])
        .status()
        .context("sh")?;
    ensure!(
        status.success(),
        "the exec'd shell saw: {status} ({script})"
    );
    drop(inherited);
    let mut two = [0u8; 2];
    b.read_exact(&mut two)
        .context("reading what the dup and the shell wrote")?;
    ensure!(&two == b"12", "read {two:?}, not \"12\"");

    // close_range closes the duplicates; the original stays.
    sys::close_range(fd as u32, fd as u32).context("close_range")?;
    ensure!(
        !std::path::Path::new(&format!("/proc/self/fd/{fd}")).exists(),
        "fd {fd} still open after close_range"
    );

    // SCM_RIGHTS: the received descriptor is the same socket.
    let tcp = tcp_socket()?;
    let tcp_ino = socket_inode(&tcp)?;
    let fds = [tcp.as_raw_fd()];
    sendmsg::<()>(
        a.as_raw_fd(),
        &[IoSlice::new(b"3")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .context("sendmsg SCM_RIGHTS")?;
    drop(tcp);
    let mut byte = [0u8; 1];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let received = {
        let mut iov = [IoSliceMut::new(&mut byte)];
        let msg = recvmsg::<()>(b.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
            .context("recvmsg")?;
        let mut got = None;
        for c in msg.cmsgs().context("cmsgs")? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                got = fds.first().copied();
            }
        }
        (msg.bytes, got)
    };
    let (1, Some(passed)) = received else {
        return Err(format!(
            "recvmsg: {received:?}, not one byte and a descriptor"
        ));
    };
    let passed_ino =
        fs::metadata(format!("/proc/self/fd/{passed}")).context("stat of the passed fd")?;
    ensure!(
        std::os::unix::fs::MetadataExt::ino(&passed_ino) == tcp_ino,
        "the passed descriptor is inode {}, sent {tcp_ino}",
        std::os::unix::fs::MetadataExt::ino(&passed_ino)
    );
    sys::close_range(passed as u32, passed as u32).context("closing the passed fd")?;

    // epoll sees data written on the other end.
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create")?;
    epoll
        .add(&b, EpollEvent::new(EpollFlags::EPOLLIN, 7))
        .context("epoll_ctl")?;
    // sendfile from a file into the socket.
    let path = "/tmp/fastsocket-vfs-sendfile";
    fs::write(path, b"sendfile").context("writing the file")?;
    let file = File::open(path).context("open")?;
    let sent = sendfile(&a, &file, None, 8).context("sendfile")?;
    ensure!(sent == 8, "sendfile sent {sent} bytes");
    let mut events = [EpollEvent::empty()];
    let n = epoll
        .wait(&mut events, EpollTimeout::from(5000u16))
        .context("epoll_wait")?;
    ensure!(n == 1 && events[0].data() == 7, "epoll_wait: {n} events");
    let mut got = [0u8; 8];
    b.read_exact(&mut got)
        .context("reading what sendfile sent")?;
    ensure!(&got == b"sendfile", "read {got:?}");
    let _ = fs::remove_file(path);

    // splice from the socket into a pipe.
    (&b).write_all(b"splice").context("write")?;
    let (pipe_r, pipe_w) = pipe().context("pipe")?;
    let moved = splice(&a, None, &pipe_w, None, 6, SpliceFFlags::empty()).context("splice")?;
    ensure!(moved == 6, "splice moved {moved} bytes");
    let mut spliced = [0u8; 6];
    File::from(pipe_r)
        .read_exact(&mut spliced)
        .context("reading the pipe")?;
    ensure!(&spliced == b"splice", "the pipe gave {spliced:?}");
    Ok(())
}

/// The inode lsof gives for descriptor `fd` of this process (`-F pi`: process, inode).
fn lsof_inode(fd: &impl AsRawFd) -> TestResult<u64> {
    let out = Command::new("lsof")
        .args(["-nP", "-a", "-p", &std::process::id().to_string()])
        .args(["-d", &fd.as_raw_fd().to_string(), "-F", "pi"])
        .output()
        .context("lsof")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let pid = format!("p{}", std::process::id());
    ensure!(
        text.lines().any(|l| l == pid),
        "lsof does not name this process: {text:?}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix('i')?.parse().ok())
        .ok_or_else(|| format!("lsof gave no inode: {text:?}"))
}

/// Every call of [`socket_calls`] behaves the same with the cache on (its sockets reusing
/// kept objects) and off.
pub fn vfs_socket_semantics(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    for value in ["1", "0"] {
        let _knob = KnobGuard::vfs(value)?;
        let before = procfs::read_counters()?;
        socket_calls().map_err(|e| format!("vfs={value}: {e}"))?;
        let (used, _) = vfs_since(&before)?;
        if value == "1" {
            ensure!(
                used.vfs_reused > 0,
                "vfs=1: no socket reused an object: {used:?}"
            );
        } else {
            ensure!(used.vfs_reused == 0, "vfs=0: the cache was used: {used:?}");
        }
    }
    Ok(())
}

/// Unloading the module with many live sockets made from reused objects, and objects kept:
/// the sockets keep working and close cleanly afterwards; sockets made before the module
/// loads are kept when they close after (the kernel log and kmemleak are checked by
/// `kernel_log_clean`).
pub fn vfs_unload_live_sockets(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let _on = KnobGuard::vfs("1")?;
    let limit = sys::raise_open_files_limit(UNLOAD_LIVE as u64 + 1024).context("RLIMIT_NOFILE")?;
    ensure!(limit > UNLOAD_LIVE as u64, "open files limit {limit}");
    for _ in 0..2000 {
        drop(tcp_socket()?);
    }
    let before = procfs::read_counters()?;
    let live: Vec<OwnedFd> = (0..UNLOAD_LIVE)
        .map(|_| tcp_socket())
        .collect::<TestResult<_>>()?;
    let (pair_a, mut pair_b) = UnixStream::pair().context("socketpair")?;
    let (made, idle) = vfs_since(&before)?;
    info!(
        "{UNLOAD_LIVE} live sockets, {} from the cache; {idle} objects idle on a CPU",
        made.vfs_reused
    );
    ensure!(
        made.vfs_reused > 0,
        "no live socket came from the cache: {made:?}"
    );
    module::rmmod()?;
    procfs::read_hooks()?.expect(None)?;
    let inodes: HashSet<u64> = live.iter().map(socket_inode).collect::<TestResult<_>>()?;
    ensure!(
        inodes.len() == UNLOAD_LIVE,
        "{} distinct inodes",
        inodes.len()
    );
    (&pair_a)
        .write_all(b"after")
        .context("write after unload")?;
    let mut got = [0u8; 5];
    pair_b.read_exact(&mut got).context("read after unload")?;
    ensure!(&got == b"after", "read {got:?}");
    drop(live);
    drop((pair_a, pair_b));

    // Sockets made without the module, closed with it: their objects join the cache.
    let early: Vec<OwnedFd> = (0..100).map(|_| tcp_socket()).collect::<TestResult<_>>()?;
    ctx.insmod()?;
    let before = procfs::read_counters()?;
    drop(early);
    let (closed, _) = vfs_since(&before)?;
    ensure!(
        closed.vfs_kept >= 100,
        "100 sockets made before the module loaded, closed after: {} kept",
        closed.vfs_kept
    );
    Ok(())
}

/// A socket of each kind a program makes, by name, each from a kept pair when the cache is on
/// (the cache is warmed with TCP sockets first: a socket of another protocol keeps the pair's
/// inode and takes a new dentry, with its own protocol's name).
fn sockets_of_each_kind() -> TestResult<Vec<(&'static str, OwnedFd)>> {
    let stream = |family| socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None);
    let dgram = |family| socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None);
    let listener = stream(AddressFamily::Inet).context("socket")?;
    bind(listener.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).context("bind")?;
    listen(&listener, Backlog::new(8).context("backlog")?).context("listen")?;
    let addr: SockaddrIn =
        nix::sys::socket::getsockname(listener.as_raw_fd()).context("getsockname")?;
    let client = stream(AddressFamily::Inet).context("socket")?;
    connect(client.as_raw_fd(), &addr).context("connect")?;
    let accepted = accept(&listener).context("accept")?;
    let (pair_a, pair_b) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("socketpair")?;
    Ok(vec![
        ("udp", dgram(AddressFamily::Inet).context("socket")?),
        ("tcp6", stream(AddressFamily::Inet6).context("socket")?),
        ("udp6", dgram(AddressFamily::Inet6).context("socket")?),
        (
            "unix stream",
            stream(AddressFamily::Unix).context("socket")?,
        ),
        ("unix dgram", dgram(AddressFamily::Unix).context("socket")?),
        ("socketpair", pair_a),
        ("socketpair peer", pair_b),
        ("tcp listener", listener),
        ("tcp client", client),
        ("accepted tcp", accepted),
    ])
}

/// What a program sees of sockets made after sockets that it changed or watched: their
/// protocol names (`system.sockprotoname`), modes and owners after another socket's fchmod and
/// fchown, flock after another socket's lock, the events of an inotify watch and of an
/// evictable fanotify mark on a closed socket, and the write-lifetime hint after another
/// socket's. One line per observation, to compare with the cache on and off.
fn pair_observations() -> TestResult<Vec<String>> {
    let mut seen = Vec::new();
    for _ in 0..1000 {
        drop(tcp_socket()?);
    }
    for round in 0..2 {
        for (kind, fd) in sockets_of_each_kind()? {
            let name = sys::sockprotoname(&fd).context("fgetxattr system.sockprotoname")?;
            seen.push(format!("round {round}: {kind} is {name:?}"));
        }
    }

    // fchmod and fchown on a socket, closed: later sockets have the stock mode and owner.
    let changed = tcp_socket()?;
    fchmod(&changed, Mode::from_bits_truncate(0o600)).context("fchmod")?;
    fchown(
        &changed,
        Some(Uid::from_raw(1234)),
        Some(Gid::from_raw(1234)),
    )
    .context("fchown")?;
    drop(changed);
    // A socket flock()ed, closed: later sockets lock freely.
    let locked = tcp_socket()?;
    // Closed with the lock held (`Flock` would unlock first).
    #[allow(deprecated)]
    nix::fcntl::flock(locked.as_raw_fd(), FlockArg::LockExclusive).context("flock")?;
    drop(locked);
    for _ in 0..300 {
        let fd = tcp_socket()?;
        let st = fstat(&fd).context("fstat")?;
        let line = format!("mode {:o} uid {} gid {}", st.st_mode, st.st_uid, st.st_gid);
        ensure!(
            st.st_mode == (libc::S_IFSOCK | 0o777) && st.st_uid == 0 && st.st_gid == 0,
            "a socket made after another's fchmod/fchown: {line}"
        );
        Flock::lock(fd, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| format!("flock on a socket made after another's lock: {e}"))?;
    }
    seen.push("300 later sockets: mode 140777 uid 0 gid 0, flock free".into());

    // An inotify watch on a socket (through /proc/self/fd), which then closes: sockets made
    // and closed after it must not report to that watch.
    let inotify =
        Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).context("inotify_init")?;
    let watched = tcp_socket()?;
    inotify
        .add_watch(
            format!("/proc/self/fd/{}", watched.as_raw_fd()).as_str(),
            AddWatchFlags::IN_ALL_EVENTS,
        )
        .context("inotify_add_watch on a socket")?;
    drop(watched);
    for _ in 0..300 {
        drop(tcp_socket()?);
    }
    let events = match inotify.read_events() {
        Ok(events) => events.iter().map(|e| format!("{:?}", e.mask)).collect(),
        Err(nix::errno::Errno::EAGAIN) => Vec::new(),
        Err(e) => return Err(format!("reading inotify events: {e}")),
    };
    seen.push(format!("inotify watch on a closed socket: {events:?}"));

    // An evictable fanotify mark, which holds no inode reference (unlike an inotify watch), on
    // a socket that is written to, then closes: sockets made, written to and closed after it
    // must not report to that mark.
    let fan = Fanotify::init(
        fanotify::InitFlags::FAN_CLASS_NOTIF
            | fanotify::InitFlags::FAN_NONBLOCK
            | fanotify::InitFlags::FAN_CLOEXEC
            | fanotify::InitFlags::from_bits_retain(libc::FAN_REPORT_FID),
        EventFFlags::O_RDONLY,
    )
    .context("fanotify_init")?;
    let fan_events = || match fan.read_events() {
        Ok(events) => Ok(events.len()),
        Err(nix::errno::Errno::EAGAIN) => Ok(0),
        Err(e) => Err(format!("reading fanotify events: {e}")),
    };
    let (marked, peer) = UnixStream::pair().context("socketpair")?;
    fan.mark(
        MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_EVICTABLE,
        MaskFlags::FAN_MODIFY,
        &marked,
        None::<&std::path::Path>,
    )
    .context("fanotify_mark FAN_MARK_EVICTABLE on a socket")?;
    // write(2): fsnotify sees writes through the VFS, not send(2) (Rust's `Write` for sockets).
    nix::unistd::write(&marked, b"x").context("writing to the marked socket")?;
    ensure!(
        fan_events()? > 0,
        "set-up: a write to a socket with a fanotify mark reported no event"
    );
    drop((marked, peer));
    for _ in 0..300 {
        let (a, b) = UnixStream::pair().context("socketpair")?;
        nix::unistd::write(&a, b"x").context("writing to a socket")?;
        nix::unistd::write(&b, b"x").context("writing to a socket")?;
    }
    seen.push(format!(
        "evictable fanotify mark on a closed socket: {} events from later sockets",
        fan_events()?
    ));

    // A write-lifetime hint (fcntl F_SET_RW_HINT: no attribute change, nothing dirtied) on a
    // socket, closed: later sockets have none.
    let hinted = tcp_socket()?;
    sys::set_rw_hint(&hinted, RWH_WRITE_LIFE_EXTREME).context("F_SET_RW_HINT")?;
    ensure!(
        sys::rw_hint(&hinted).context("F_GET_RW_HINT")? == RWH_WRITE_LIFE_EXTREME,
        "set-up: F_GET_RW_HINT does not read back the hint set"
    );
    drop(hinted);
    let mut carried = 0;
    for _ in 0..300 {
        carried += usize::from(sys::rw_hint(&tcp_socket()?).context("F_GET_RW_HINT")? != 0);
    }
    seen.push(format!(
        "write hint on a closed socket: {carried} of 300 later sockets have one"
    ));
    Ok(seen)
}

/// `RWH_WRITE_LIFE_EXTREME` of linux/fcntl.h.
const RWH_WRITE_LIFE_EXTREME: u64 = 5;

/// Sockets of every kind made from kept pairs (new dentries where the protocol differs), and
/// sockets made after a socket's mode, owner, lock, inotify watch, evictable fanotify mark or
/// write-lifetime hint changed, look to a program as with the cache off, in the same run.
pub fn vfs_pair_state(ctx: &mut Ctx) -> TestResult {
    ctx.ensure_loaded()?;
    let mut arms = Vec::new();
    for value in ["1", "0"] {
        let _knob = KnobGuard::vfs(value)?;
        let before = procfs::read_counters()?;
        let seen = pair_observations().map_err(|e| format!("vfs={value}: {e}"))?;
        let (used, _) = vfs_since(&before)?;
        info!("vfs={value}: {} reused; {seen:?}", used.vfs_reused);
        if value == "1" {
            ensure!(
                used.vfs_reused > 0,
                "vfs=1: no socket reused a pair: {used:?}"
            );
        }
        arms.push(seen);
    }
    ensure!(
        arms[0] == arms[1],
        "with the cache on: {:?}\nwith it off: {:?}",
        arms[0],
        arms[1]
    );
    Ok(())
}
