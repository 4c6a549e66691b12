//! Thin safe wrappers around the system calls the tests need: on nix where it has them,
//! on libc (each call with its reason) where it does not.

use std::ffi::CStr;
use std::io;
use std::mem;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::mount::MsFlags;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::epoll::{EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::EfdFlags;
use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::select::{select, FdSet};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::socket::{
    self, setsockopt, sockopt, AddressFamily, Backlog, GetSockOpt, Shutdown, SockFlag, SockType,
    SockaddrStorage,
};
use nix::sys::stat::Mode;
use nix::sys::time::TimeSpec;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::time::{clock_gettime, ClockId};
use nix::unistd::{fork, ForkResult, Pid};
use nix::{getsockopt_impl, setsockopt_impl, sockopt_impl};
use procfs_core::FromRead;

/// `CAP_NET_ADMIN` from linux/capability.h.
pub const CAP_NET_ADMIN: u32 = 12;

/// Turns a `-1` return value of a raw libc call into the current `errno`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Restricts the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    set_current_thread_cpus(&[cpu])
}

/// Restricts thread `tid` (of any process) to `cpu`.
pub fn pin_thread(tid: libc::pid_t, cpu: usize) -> io::Result<()> {
    set_thread_cpus(Pid::from_raw(tid), &[cpu])
}

/// Lets the calling thread run on any of `cpus`.
pub fn set_current_thread_cpus(cpus: &[usize]) -> io::Result<()> {
    // Pid 0: the calling thread.
    set_thread_cpus(Pid::from_raw(0), cpus)
}

/// sched_setaffinity() of thread `tid` to `cpus` (`EINVAL` for a CPU beyond CPU_SETSIZE).
/// Async-signal-safe.
fn set_thread_cpus(tid: Pid, cpus: &[usize]) -> io::Result<()> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu)?;
    }
    Ok(sched_setaffinity(tid, &set)?)
}

/// A thread of this process as `/proc/self/task/<tid>/stat` shows it (procfs-core's
/// parser): its state letter (`R`, `S`, ...) and the CPU it runs or last ran on.
pub fn thread_state(tid: libc::pid_t) -> io::Result<(char, usize)> {
    let path = format!("/proc/self/task/{tid}/stat");
    let stat = procfs_core::process::Stat::from_file(&path)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {e}")))?;
    let cpu = stat
        .processor
        .and_then(|c| usize::try_from(c).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: no CPU")))?;
    Ok((stat.state, cpu))
}

/// CLOCK_MONOTONIC in nanoseconds. Async-signal-safe.
pub fn monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC always exists: no error to expect.
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap_or(TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Gives the IPv4 address `addr`/`prefix` to interface `name` of the calling thread's
/// network namespace and brings it up (`addr` `None`: only up), as `ip addr add` and
/// `ip link set up` do, with ioctls.
pub fn configure_interface(name: &str, addr: Option<(std::net::Ipv4Addr, u8)>) -> io::Result<()> {
    let sock = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let request = || -> io::Result<libc::ifreq> {
        // SAFETY: all-zeroes is a valid ifreq.
        let mut req: libc::ifreq = unsafe { mem::zeroed() };
        if name.len() >= req.ifr_name.len() {
            return Err(io::Error::other(format!(
                "interface name {name:?} too long"
            )));
        }
        for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
            *dst = src as libc::c_char;
        }
        Ok(req)
    };
    // On libc: nix has no SIOC[GS]IF* calls, and its ioctl macros only generate unsafe fns.
    let ioctl = |op: libc::c_ulong, req: &mut libc::ifreq| -> io::Result<()> {
        // SAFETY: `req` is a valid ifreq, which these SIOC[GS]IF* requests read and write.
        check(unsafe { libc::ioctl(sock.as_raw_fd(), op as _, ptr::from_mut(req)) })?;
        Ok(())
    };
    // A sockaddr_in in a sockaddr: port (0) in sa_data[0..2], the address in sa_data[2..6].
    let sockaddr_v4 = |ip: std::net::Ipv4Addr| {
        let mut sa_data = [0 as libc::c_char; 14];
        for (dst, src) in sa_data[2..6].iter_mut().zip(ip.octets()) {
            *dst = src as libc::c_char;
        }
        libc::sockaddr {
            sa_family: libc::AF_INET as libc::sa_family_t,
            sa_data,
        }
    };
    if let Some((ip, prefix)) = addr {
        let mut req = request()?;
        req.ifr_ifru.ifru_addr = sockaddr_v4(ip);
        ioctl(libc::SIOCSIFADDR, &mut req)
            .map_err(|e| io::Error::new(e.kind(), format!("SIOCSIFADDR {name}: {e}")))?;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let mut req = request()?;
        req.ifr_ifru.ifru_netmask = sockaddr_v4(mask.into());
        ioctl(libc::SIOCSIFNETMASK, &mut req)
            .map_err(|e| io::Error::new(e.kind(), format!("SIOCSIFNETMASK {name}: {e}")))?;
    }
    let mut req = request()?;
    ioctl(libc::SIOCGIFFLAGS, &mut req)
        .map_err(|e| io::Error::new(e.kind(), format!("SIOCGIFFLAGS {name}: {e}")))?;
    // SAFETY: SIOCGIFFLAGS filled in the flags member.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl(libc::SIOCSIFFLAGS, &mut req)
        .map_err(|e| io::Error::new(e.kind(), format!("SIOCSIFFLAGS {name}: {e}")))?;
    Ok(())
}

/// The CPU the calling thread runs on right now.
pub fn current_cpu() -> io::Result<usize> {
    Ok(nix::sched::sched_getcpu()?)
}

sockopt_impl!(
    /// `SO_INCOMING_CPU` (not among nix's options): the CPU that last processed a packet
    /// for the socket, or -1.
    IncomingCpu,
    GetOnly,
    libc::SOL_SOCKET,
    libc::SO_INCOMING_CPU,
    i32
);

sockopt_impl!(
    /// `TCP_SYNCNT` (not among nix's options): how often a connect() retransmits its SYN
    /// before it fails with `ETIMEDOUT`.
    TcpSynCnt,
    SetOnly,
    libc::IPPROTO_TCP,
    libc::TCP_SYNCNT,
    i32
);

/// `IP_LOCAL_PORT_RANGE` from linux/in.h (6.3 on; not in the libc crate).
const IP_LOCAL_PORT_RANGE: libc::c_int = 51;

sockopt_impl!(
    /// `IP_LOCAL_PORT_RANGE` (not among nix's options): the range of ports an autobinding
    /// bind() or connect() of this socket picks from, an u32 with the highest port in its
    /// upper 16 bits and the lowest in its lower 16 bits (0: no bound).
    IpLocalPortRange,
    SetOnly,
    libc::IPPROTO_IP,
    IP_LOCAL_PORT_RANGE,
    u32
);

/// `SO_INCOMING_CPU` of a socket: the CPU that last processed a packet for it, or -1.
pub fn incoming_cpu(sock: &impl AsFd) -> io::Result<i32> {
    Ok(IncomingCpu.get(sock)?)
}

/// shutdown(SHUT_RDWR) on a listening socket: closes it for new connections and makes
/// every accept() blocked on it return EINVAL.
pub fn shutdown_listener(listener: &TcpListener) -> io::Result<()> {
    Ok(socket::shutdown(listener.as_raw_fd(), Shutdown::Both)?)
}

/// An IPv4 MPTCP stream socket, close-on-exec (nix has no `IPPROTO_MPTCP`).
pub fn mptcp_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() takes no pointer.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            libc::IPPROTO_MPTCP,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(): a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Mounts a filesystem of type `fstype` (debugfs, tracefs: no device) on `target`.
pub fn mount(fstype: &str, target: &str) -> io::Result<()> {
    Ok(nix::mount::mount(
        Some(fstype),
        target,
        Some(fstype),
        MsFlags::empty(),
        None::<&str>,
    )?)
}

/// Opens `path` write-only. Async-signal-safe: no allocation.
pub fn open_write_only(path: &CStr) -> io::Result<OwnedFd> {
    Ok(open(
        path,
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// Exactly one write() syscall. Async-signal-safe: no allocation.
pub fn write_fd(fd: &OwnedFd, data: &[u8]) -> io::Result<usize> {
    Ok(nix::unistd::write(fd, data)?)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Removes `cap` from the calling thread's effective and permitted sets.
/// Async-signal-safe: two raw syscalls, no allocation. On libc: nix has no capget() or
/// capset().
pub fn drop_capability(cap: u32) -> io::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: version 3 capget writes two CapData entries, which `data` provides.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
    data[word].effective &= !bit;
    data[word].permitted &= !bit;
    // SAFETY: version 3 capset reads two CapData entries, which `data` provides.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A forked child process; killed (SIGKILL) and reaped on drop unless already reaped.
pub struct ChildProcess {
    pid: Pid,
    reaped: bool,
}

impl ChildProcess {
    /// Sends `sig` to the child (nothing once it has been reaped).
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        if self.reaped {
            return Ok(());
        }
        Ok(kill(self.pid, sig)?)
    }

    /// Waits for the child to end and returns its wait status.
    pub fn wait(&mut self) -> io::Result<WaitStatus> {
        self.waitpid(None)?
            .ok_or_else(|| io::Error::other("waitpid returned no status"))
    }

    /// Polls for up to `timeout` for the child to end; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<WaitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.waitpid(Some(WaitPidFlag::WNOHANG))? {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn waitpid(&mut self, options: Option<WaitPidFlag>) -> io::Result<Option<WaitStatus>> {
        if self.reaped {
            return Err(io::Error::other("child already reaped"));
        }
        loop {
            match waitpid(self.pid, options) {
                Ok(WaitStatus::StillAlive) => return Ok(None),
                Ok(status) => {
                    self.reaped = true;
                    return Ok(Some(status));
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl ChildProcess {
    /// Forgets the child without reaping it: for a child stuck in the kernel, which no
    /// signal ends, so that dropping it does not wait for it.
    pub fn abandon(self) {
        mem::forget(self);
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = self.waitpid(None);
        }
    }
}

/// Describes a wait status: `exit status 3`, `killed by signal 9`.
pub fn describe_wait_status(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("killed by signal {}", sig as i32),
        other => format!("wait status {other:?}"),
    }
}

/// Runs `child` in a forked child process, which leaves with `_exit` and the returned code.
///
/// # Safety
///
/// The child is a copy of a multi-threaded process: `child` may only make
/// async-signal-safe calls (no allocation, no locks, no printing).
pub unsafe fn fork_child(child: impl FnOnce() -> u8) -> io::Result<ChildProcess> {
    // SAFETY: the caller guarantees that `child` is async-signal-safe, and the child leaves
    // with _exit, never returning into the runner.
    match unsafe { fork() }? {
        ForkResult::Child => {
            let code = panic::catch_unwind(AssertUnwindSafe(child)).unwrap_or(u8::MAX);
            // On libc: nix has no _exit (and std's exit runs atexit handlers).
            // SAFETY: _exit ends the child at once, without running the parent's destructors.
            unsafe { libc::_exit(code.into()) }
        }
        ForkResult::Parent { child: pid } => Ok(ChildProcess { pid, reaped: false }),
    }
}

/// Runs `child` in a forked child process, which exits with the returned code,
/// and returns that exit code.
///
/// # Safety
///
/// As for [`fork_child`]: `child` may only make async-signal-safe calls.
pub unsafe fn fork_and_wait(child: impl FnOnce() -> u8) -> io::Result<u8> {
    // SAFETY: passed on to the caller.
    let mut process = unsafe { fork_child(child) }?;
    match process.wait()? {
        WaitStatus::Exited(_, code) => Ok(code as u8),
        status => Err(io::Error::other(format!(
            "child did not exit normally ({})",
            describe_wait_status(status)
        ))),
    }
}

/// What became of a write attempted by a child process without a capability.
#[derive(Debug, PartialEq, Eq)]
pub enum ChildWrite {
    /// The write succeeded.
    Written,
    /// open() failed with this errno.
    OpenFailed(i32),
    /// write() failed with this errno.
    WriteFailed(i32),
    /// The child could not drop the capability.
    CapsetFailed,
}

/// Exit codes of the child of [`write_without_capability`] besides 0 (write succeeded)
/// and an errno (write failed).
const CHILD_OPEN_FAILED: u8 = 128; // + errno
const CHILD_CAPSET_FAILED: u8 = 255;

/// In a forked child, drops capability `cap` and writes `value` to `path` with one write().
pub fn write_without_capability(path: &CStr, value: &[u8], cap: u32) -> io::Result<ChildWrite> {
    let child = || -> u8 {
        if drop_capability(cap).is_err() {
            return CHILD_CAPSET_FAILED;
        }
        let errno = |e: io::Error| e.raw_os_error().unwrap_or(0).clamp(1, 126) as u8;
        let fd = match open_write_only(path) {
            Ok(fd) => fd,
            Err(e) => return CHILD_OPEN_FAILED + errno(e),
        };
        match write_fd(&fd, value) {
            Ok(_) => 0,
            Err(e) => errno(e),
        }
    };
    // SAFETY: the child only makes raw syscalls (capget, capset, open, write, close) and
    // builds io::Errors from errno values, which does not allocate.
    let code = unsafe { fork_and_wait(child) }?;
    Ok(match code {
        0 => ChildWrite::Written,
        CHILD_CAPSET_FAILED => ChildWrite::CapsetFailed,
        code if code > CHILD_OPEN_FAILED => {
            ChildWrite::OpenFailed((code - CHILD_OPEN_FAILED).into())
        }
        errno => ChildWrite::WriteFailed(errno.into()),
    })
}

/// A TCP socket of `addr`'s family (not bound, not connected), non-blocking if asked.
pub fn tcp_socket(addr: &SocketAddr, nonblocking: bool) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if nonblocking {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    Ok(socket::socket(family, SockType::Stream, flags, None)?)
}

/// bind() of a socket to `addr` (port 0: the kernel picks one).
pub fn bind(fd: &impl AsRawFd, addr: SocketAddr) -> io::Result<()> {
    Ok(socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?)
}

/// connect() of a non-blocking socket to `addr`, without waiting for the handshake: done
/// once the kernel has given the socket its port and sent the SYN (`EINPROGRESS`).
pub fn connect_started(fd: OwnedFd, addr: SocketAddr) -> io::Result<TcpStream> {
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) | Err(Errno::EINPROGRESS) => Ok(TcpStream::from(fd)),
        Err(e) => Err(e.into()),
    }
}

/// A TCP socket listening on `addr` with `backlog` (at most `SOMAXCONN`, 4096: nix refuses
/// more with `EINVAL`), with SO_REUSEADDR (as std sets it) and, if `reuseport`, SO_REUSEPORT.
pub fn tcp_listen(addr: SocketAddr, backlog: i32, reuseport: bool) -> io::Result<TcpListener> {
    let fd = tcp_socket(&addr, false)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if reuseport {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    bind(&fd, addr)?;
    socket::listen(&fd, Backlog::new(backlog)?)?;
    Ok(TcpListener::from(fd))
}

/// A blocking TCP connect() to `addr` whose SYN is retransmitted at most `syn_retries` times
/// (`TCP_SYNCNT`) before connect() fails with `ETIMEDOUT`: the stack's own retry bound, no
/// timer of the caller's.
pub fn tcp_connect_syn_retries(addr: SocketAddr, syn_retries: i32) -> io::Result<TcpStream> {
    let fd = tcp_socket(&addr, false)?;
    setsockopt(&fd, TcpSynCnt, &syn_retries)?;
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) => Ok(TcpStream::from(fd)),
        // A signal interrupted the wait; the handshake goes on: wait for its outcome.
        Err(Errno::EINTR) => wait_connected(fd),
        Err(e) => Err(e.into()),
    }
}

/// Waits without a timeout for the outcome of a connect() that a signal interrupted.
fn wait_connected(fd: OwnedFd) -> io::Result<TcpStream> {
    loop {
        let mut pfd = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut pfd, PollTimeout::NONE) {
            Ok(_) => break,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let stream = TcpStream::from(fd);
    match stream.take_error()? {
        Some(e) => Err(e),
        None => Ok(stream),
    }
}

/// Raises this process's limit of open files (soft and hard) to at least `want`, as far as
/// the hard limit and the privileges allow; returns the soft limit now.
pub fn raise_open_files_limit(want: u64) -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= want {
        return Ok(soft);
    }
    if setrlimit(Resource::RLIMIT_NOFILE, want, hard.max(want)).is_ok() {
        return Ok(want);
    }
    // Without the privilege to raise the hard limit: up to it.
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

/// accept4() with `flags` (`SOCK_NONBLOCK`, `SOCK_CLOEXEC`). Async-signal-safe.
pub fn accept4(listener: &impl AsFd, flags: SockFlag) -> io::Result<TcpStream> {
    Ok(TcpStream::from(socket::accept4(listener.as_fd(), flags)?))
}

/// Plain accept(), whose fd gets neither O_NONBLOCK nor FD_CLOEXEC (std's accept always
/// asks for SOCK_CLOEXEC).
pub fn accept_plain(listener: &impl AsFd) -> io::Result<TcpStream> {
    Ok(TcpStream::from(socket::accept(listener.as_fd())?))
}

/// The O_NONBLOCK and FD_CLOEXEC flags of a file descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdFlags {
    pub nonblocking: bool,
    pub cloexec: bool,
}

/// The [`FdFlags`] of `fd`, with fcntl() F_GETFL and F_GETFD.
pub fn fd_flags(fd: &impl AsFd) -> io::Result<FdFlags> {
    let status = fcntl(fd.as_fd(), FcntlArg::F_GETFL)?;
    let fd_flags = fcntl(fd.as_fd(), FcntlArg::F_GETFD)?;
    Ok(FdFlags {
        nonblocking: status & libc::O_NONBLOCK != 0,
        cloexec: fd_flags & libc::FD_CLOEXEC != 0,
    })
}

/// `timeout` for poll() and epoll_wait(), in milliseconds, at most `i32::MAX` of them.
fn poll_timeout(timeout: Duration) -> PollTimeout {
    PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX)
}

/// An epoll instance.
pub struct Epoll(nix::sys::epoll::Epoll);

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        Ok(Epoll(nix::sys::epoll::Epoll::new(
            EpollCreateFlags::EPOLL_CLOEXEC,
        )?))
    }

    /// Adds `fd` with `events` (`EPOLLIN`, `EPOLLET`, `EPOLLEXCLUSIVE`, ...).
    pub fn add(&self, fd: &impl AsFd, events: EpollFlags) -> io::Result<()> {
        let data = fd.as_fd().as_raw_fd() as u64;
        Ok(self.0.add(fd.as_fd(), EpollEvent::new(events, data))?)
    }

    /// Waits without a timeout for events; returns the data (the fd, see [`Epoll::add`]) of
    /// each ready entry, none if a signal interrupted the wait.
    pub fn wait_forever(&self) -> io::Result<Vec<u64>> {
        self.wait(PollTimeout::NONE)
    }

    /// [`Epoll::wait_forever`], but returns no events after `timeout` (zero: do not wait).
    pub fn wait_timeout(&self, timeout: Duration) -> io::Result<Vec<u64>> {
        self.wait(poll_timeout(timeout))
    }

    fn wait(&self, timeout: PollTimeout) -> io::Result<Vec<u64>> {
        let mut events = [EpollEvent::empty(); 8];
        match self.0.wait(&mut events, timeout) {
            Ok(n) => Ok(events[..n].iter().map(EpollEvent::data).collect()),
            Err(Errno::EINTR) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}

/// An eventfd: a wake-up one thread sends to others waiting in poll, select or epoll.
pub struct EventFd(nix::sys::eventfd::EventFd);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
        Ok(EventFd(nix::sys::eventfd::EventFd::from_value_and_flags(
            0, flags,
        )?))
    }

    /// Makes the eventfd readable for good (nobody reads it), waking every waiter.
    pub fn signal(&self) -> io::Result<()> {
        self.0.write(1)?;
        Ok(())
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Which of two fds are readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readable {
    pub first: bool,
    pub second: bool,
}

/// Waits without a timeout with poll() until `first` or `second` is readable (or has an
/// error or hang-up); both false if a signal interrupted the wait.
pub fn poll_either(first: &impl AsFd, second: &impl AsFd) -> io::Result<Readable> {
    let mut fds = [
        PollFd::new(first.as_fd(), PollFlags::POLLIN),
        PollFd::new(second.as_fd(), PollFlags::POLLIN),
    ];
    // Any revents, even bits nix does not know (None), make the fd count as readable.
    let ready = |fd: &PollFd| fd.revents() != Some(PollFlags::empty());
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) => Ok(Readable {
            first: ready(&fds[0]),
            second: ready(&fds[1]),
        }),
        Err(Errno::EINTR) => Ok(Readable {
            first: false,
            second: false,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Waits without a timeout with select() until `first` or `second` is readable; both
/// false if a signal interrupted the wait.
pub fn select_either(first: &impl AsFd, second: &impl AsFd) -> io::Result<Readable> {
    let (a, b) = (first.as_fd(), second.as_fd());
    for raw in [a.as_raw_fd(), b.as_raw_fd()] {
        // nix's FdSet panics on those.
        if !(0..libc::FD_SETSIZE as libc::c_int).contains(&raw) {
            return Err(io::Error::other(format!("fd {raw} does not fit an fd_set")));
        }
    }
    let mut set = FdSet::new();
    set.insert(a);
    set.insert(b);
    match select(None, &mut set, None, None, None) {
        Ok(_) => Ok(Readable {
            first: set.contains(a),
            second: set.contains(b),
        }),
        Err(Errno::EINTR) => Ok(Readable {
            first: false,
            second: false,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Waits with poll() until `fd` is readable or `deadline` passed, restarting after a signal;
/// whether it became readable. A caller that knows a connection is queued or coming treats
/// `false` as a lost wake-up, never as a reason to look again.
pub fn poll_readable_until(fd: &impl AsFd, deadline: Instant) -> io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if poll_readable(fd, left)? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

/// Waits up to `timeout` with poll() for `fd` to become readable.
pub fn poll_readable(fd: &impl AsFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut pfd, poll_timeout(timeout)) {
        Ok(n) => Ok(n > 0),
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Reads the client's one-byte request, waiting at most `timeout`. Async-signal-safe
/// (io::Errors built here and by std's socket calls do not allocate).
pub fn read_request(conn: &mut TcpStream, timeout: Duration) -> io::Result<()> {
    use std::io::Read;
    conn.set_read_timeout(Some(timeout))?;
    let mut byte = [0u8];
    loop {
        match conn.read(&mut byte) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Sends the one-byte reply. Async-signal-safe.
pub fn send_reply(conn: &mut TcpStream, reply: u8) -> io::Result<()> {
    use std::io::Write;
    conn.write_all(&[reply])
}

/// Answers one connection: [`read_request`], then [`send_reply`]. Async-signal-safe.
pub fn answer(conn: &mut TcpStream, reply: u8, timeout: Duration) -> io::Result<()> {
    read_request(conn, timeout)?;
    send_reply(conn, reply)
}

/// What a forked accept worker and the runner share, in shared memory.
#[derive(Default)]
pub struct WorkerShared {
    /// Requests read and about to be answered.
    pub served: AtomicU64,
    /// Failed accepts, reads and writes; `last_errno` holds the errno of the last one.
    pub errors: AtomicU64,
    pub last_errno: AtomicU64,
    /// Set by the runner: close the listener fd, stop accepting, keep running.
    pub close_request: AtomicU64,
    /// Set by the worker once it has closed its listener fd.
    pub closed: AtomicU64,
    /// Set by the runner: once `served` reaches this (if not 0), the worker stops serving
    /// (busy for good, as if stuck in a long request) and sets `stalled`.
    pub stall_after: AtomicU64,
    pub stalled: AtomicU64,
}

/// A type whose all-zero bytes are a valid value and that may be shared between processes:
/// atomics only.
///
/// # Safety
///
/// All-zero memory must be a valid `Self`, and `Self` must hold no pointers.
pub unsafe trait ZeroedShareable: Sync {}

// SAFETY: an atomic integer; zero is valid.
unsafe impl ZeroedShareable for AtomicU64 {}
// SAFETY: atomics only; zero is valid for each.
unsafe impl ZeroedShareable for WorkerShared {}

/// `len` zeroed `T`s in anonymous shared memory, so that forked children and the runner see
/// the same values.
pub struct Shared<T: ZeroedShareable> {
    ptr: NonNull<T>,
    len: usize,
}

/// The per-worker state of forked workers.
pub type SharedWorkers = Shared<WorkerShared>;
/// Counters that forked children and the runner share.
pub type SharedSlots = Shared<AtomicU64>;

// SAFETY: `T` is `Sync` and holds only atomics; the mapping lives as long as the value.
unsafe impl<T: ZeroedShareable> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: ZeroedShareable> Sync for Shared<T> {}

impl<T: ZeroedShareable> Shared<T> {
    pub fn new(len: usize) -> io::Result<Self> {
        let bytes = NonZeroUsize::new(Self::bytes(len))
            .ok_or_else(|| io::Error::other("shared memory of zero bytes"))?;
        // SAFETY: a fresh anonymous mapping where the kernel likes; no existing memory is
        // affected.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }?;
        Ok(Shared {
            ptr: ptr.cast(),
            len,
        })
    }

    fn bytes(len: usize) -> usize {
        mem::size_of::<T>() * len.max(1)
    }

    pub fn get(&self) -> &[T] {
        // SAFETY: the mapping is page-aligned, zero-filled (a valid `T`, see
        // `ZeroedShareable`), `len` entries long and unmapped only on drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: ZeroedShareable> Drop for Shared<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no reference outlives `self`.
        let _ = unsafe { munmap(self.ptr.cast(), Self::bytes(self.len)) };
    }
}

/// Does nothing: its only purpose is to interrupt a blocking accept() (no `SA_RESTART`).
extern "C" fn interrupt(_: libc::c_int) {}

/// Installs [`interrupt`] for `SIGUSR1`, without `SA_RESTART`. Async-signal-safe.
fn interrupt_on_sigusr1() -> io::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(interrupt),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler is async-signal-safe (it does nothing); the old action is not
    // wanted.
    unsafe { sigaction(Signal::SIGUSR1, &action) }?;
    Ok(())
}

/// Forks a worker process that serves `listener` until killed: pinned to `cpu`, blocking
/// accept() without a timeout, then answers each connection with `reply`. Counts into
/// `shared`, which must live in [`SharedWorkers`]. On `shared.close_request` followed by a
/// `SIGUSR1` (which interrupts its accept()) it closes its listener fd and sleeps until
/// killed; once it has served `shared.stall_after` connections it sleeps until killed
/// without closing anything.
pub fn fork_accept_worker(
    listener: &TcpListener,
    cpu: usize,
    reply: u8,
    timeout: Duration,
    shared: &WorkerShared,
) -> io::Result<ChildProcess> {
    use std::sync::atomic::Ordering::SeqCst;
    let fd = listener.as_raw_fd();
    let fail = |e: io::Error| {
        shared.errors.fetch_add(1, SeqCst);
        shared
            .last_errno
            .store(e.raw_os_error().unwrap_or(0) as u64, SeqCst);
    };
    let sleep_for_good = || loop {
        std::thread::sleep(Duration::from_secs(1));
    };
    let child = move || -> u8 {
        if pin_current_thread(cpu).is_err() {
            return 1;
        }
        if interrupt_on_sigusr1().is_err() {
            return 2;
        }
        loop {
            if shared.close_request.load(SeqCst) != 0 {
                // `fd` is this process's copy of the listener fd, which `listener` owns: it
                // is closed once, here, and `listener` is neither used nor dropped after
                // (the child sleeps until killed and leaves with _exit).
                let _ = nix::unistd::close(fd);
                shared.closed.store(1, SeqCst);
                sleep_for_good();
            }
            let stall_after = shared.stall_after.load(SeqCst);
            if stall_after != 0 && shared.served.load(SeqCst) >= stall_after {
                shared.stalled.store(1, SeqCst);
                sleep_for_good();
            }
            match accept4(listener, SockFlag::SOCK_CLOEXEC) {
                Ok(mut conn) => {
                    // Counted before replying: once a client has its reply, the count is
                    // up to date, even if the worker is killed right after.
                    let served = read_request(&mut conn, timeout).map(|()| {
                        shared.served.fetch_add(1, SeqCst);
                    });
                    if let Err(e) = served.and_then(|()| send_reply(&mut conn, reply)) {
                        fail(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    fail(e);
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    };
    // SAFETY: the child only makes async-signal-safe calls: sched_setaffinity, sigaction,
    // accept4, setsockopt, read, write, close, nanosleep, and atomic operations on shared
    // memory. It allocates nothing: io::Errors built from errno values or ErrorKinds have
    // no heap part.
    unsafe { fork_child(child) }
}

/// close_range(first, last, 0): closes every descriptor from `first` to `last`. On libc:
/// nix has no close_range().
pub fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range() only closes descriptors of this process; the callers own the
    // range they pass and no longer use the descriptors in it.
    check(unsafe { libc::close_range(first, last, 0) }).map(drop)
}

/// The protocol name sockfs gives socket `fd` (`system.sockprotoname`, its dentry's name).
pub fn sockprotoname(fd: &impl AsFd) -> io::Result<String> {
    let mut buf = [0u8; 64];
    // SAFETY: The name is a valid C string, and `buf` is writable for its length.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_fd().as_raw_fd(),
            c"system.sockprotoname".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let name = &buf[..n as usize];
    Ok(String::from_utf8_lossy(name.strip_suffix(&[0]).unwrap_or(name)).into_owned())
}

/// `fcntl(F_GET_RW_HINT)` and `fcntl(F_SET_RW_HINT)` (linux/fcntl.h; neither libc nor nix has
/// them): the write-lifetime hint of a file's inode.
const F_GET_RW_HINT: libc::c_int = 1024 + 11;
const F_SET_RW_HINT: libc::c_int = 1024 + 12;

/// The write-lifetime hint of `fd`'s inode (`RWH_WRITE_LIFE_*`, 0: not set).
pub fn rw_hint(fd: &impl AsFd) -> io::Result<u64> {
    let mut hint = 0u64;
    // SAFETY: F_GET_RW_HINT writes one u64 through the pointer, which is valid for it.
    check(unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), F_GET_RW_HINT, &mut hint as *mut u64) })?;
    Ok(hint)
}

/// Sets the write-lifetime hint of `fd`'s inode.
pub fn set_rw_hint(fd: &impl AsFd, hint: u64) -> io::Result<()> {
    // SAFETY: F_SET_RW_HINT reads one u64 through the pointer, which is valid for it.
    check(unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), F_SET_RW_HINT, &hint as *const u64) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_calling_threads_state_and_cpu() {
        let (state, cpu) = thread_state(nix::unistd::gettid().as_raw()).unwrap();
        assert_eq!(state, 'R');
        assert!(cpu < 8192, "cpu {cpu}");
    }

    /// SO_RCVBUFFORCE needs CAP_NET_ADMIN; returns its errno (0 on success).
    fn force_rcvbuf() -> u8 {
        let Ok(sock) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            return 250;
        };
        match setsockopt(&sock, sockopt::RcvBufForce, &(1 << 20)) {
            Ok(()) => 0,
            Err(e) => e as i32 as u8,
        }
    }
    /// Needs root: `sudo cargo test -- --ignored`.
    #[test]
    #[ignore = "needs root"]
    fn dropping_cap_net_admin_in_a_child() {
        // SAFETY: test-only; the test harness thread that forks holds no locks the child needs
        // (the child allocates, which is tolerable in a test process).
        let with_cap = unsafe { fork_and_wait(force_rcvbuf) }.unwrap();
        assert_eq!(with_cap, 0);
        // SAFETY: as above.
        let without = unsafe {
            fork_and_wait(|| match drop_capability(CAP_NET_ADMIN) {
                Ok(()) => force_rcvbuf(),
                Err(_) => 252,
            })
        }
        .unwrap();
        assert_eq!(i32::from(without), libc::EPERM);
    }

    #[test]
    fn pins_to_the_current_cpu() {
        let cpu = current_cpu().unwrap();
        assert!(crate::procfs::online_cpus().unwrap().contains(&cpu));
        pin_current_thread(cpu).unwrap();
        assert_eq!(current_cpu().unwrap(), cpu);
    }
}
