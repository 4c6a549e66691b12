//! Thin safe wrappers around the libc calls the tests need.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::mem;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// `CAP_NET_ADMIN` from linux/capability.h.
pub const CAP_NET_ADMIN: u32 = 12;

/// Turns a `-1` return value into the current `errno`.
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
    // SAFETY: as in `set_current_thread_cpus`.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: as in `set_current_thread_cpus`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    check(unsafe { libc::sched_setaffinity(tid, mem::size_of_val(&set), &set) })?;
    Ok(())
}

/// Lets the calling thread run on any of `cpus`.
pub fn set_current_thread_cpus(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bitmask for which all-zeroes is a valid (empty) value.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: CPU_SET only sets a bit in `set`, with a bounds-checked index (it panics
        // rather than writing out of bounds for cpu >= CPU_SETSIZE).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 means the calling thread.
    check(unsafe { libc::sched_setaffinity(0, mem::size_of_val(&set), &set) })?;
    Ok(())
}

/// A thread of this process as `/proc/self/task/<tid>/stat` shows it: its state letter
/// (`R`, `S`, ...) and the CPU it runs or last ran on.
pub fn thread_state(tid: libc::pid_t) -> io::Result<(char, usize)> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))?;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("odd stat line {stat:?}"),
        )
    };
    // The command name may hold anything, even ')': the fields follow the last one.
    let rest = &stat[stat.rfind(')').ok_or_else(bad)? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 is the state, field 39 the CPU; `rest` starts at field 3.
    let state = fields
        .first()
        .and_then(|f| f.chars().next())
        .ok_or_else(bad)?;
    let cpu = fields
        .get(39 - 3)
        .and_then(|f| f.parse().ok())
        .ok_or_else(bad)?;
    Ok((state, cpu))
}

/// The calling thread's id.
pub fn gettid() -> libc::pid_t {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// unshare(2) with `flags` (`CLONE_NEWNET`, ...): for the calling thread only where the
/// flags allow. Async-signal-safe.
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::unshare(flags) })?;
    Ok(())
}

/// CLOCK_MONOTONIC in nanoseconds. Async-signal-safe.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid for writes.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Gives the IPv4 address `addr`/`prefix` to interface `name` of the calling thread's
/// network namespace and brings it up (`addr` `None`: only up), as `ip addr add` and
/// `ip link set up` do, with ioctls.
pub fn configure_interface(name: &str, addr: Option<(std::net::Ipv4Addr, u8)>) -> io::Result<()> {
    // SAFETY: plain syscall.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
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
    let ioctl = |op: libc::c_ulong, req: &mut libc::ifreq| -> io::Result<()> {
        // SAFETY: `req` is a valid ifreq, which these SIOC[GS]IF* requests read and write.
        check(unsafe { libc::ioctl(sock.as_raw_fd(), op as _, ptr::from_mut(req)) })?;
        Ok(())
    };
    let sockaddr_v4 = |ip: std::net::Ipv4Addr| {
        // SAFETY: all-zeroes is a valid sockaddr_in.
        let mut sin: libc::sockaddr_in = unsafe { mem::zeroed() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from_ne_bytes(ip.octets());
        // SAFETY: sockaddr_in and sockaddr have the same size; ifreq keeps a sockaddr.
        unsafe { mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
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
    // SAFETY: sched_getcpu takes no arguments and only reads per-thread state.
    let cpu = check(unsafe { libc::sched_getcpu() })?;
    Ok(cpu as usize)
}

/// `SO_INCOMING_CPU` of a socket: the CPU that last processed a packet for it, or -1.
pub fn incoming_cpu(sock: &impl AsRawFd) -> io::Result<i32> {
    let mut cpu: libc::c_int = -1;
    let mut len = mem::size_of_val(&cpu) as libc::socklen_t;
    // SAFETY: `cpu` and `len` are valid for writes and `len` holds the size of `cpu`.
    check(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_INCOMING_CPU,
            (&mut cpu as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(cpu)
}

/// shutdown(SHUT_RDWR) on a listening socket: closes it for new connections and makes
/// every accept() blocked on it return EINVAL.
pub fn shutdown_listener(listener: &TcpListener) -> io::Result<()> {
    // SAFETY: plain syscall on a socket fd owned by `listener`.
    check(unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) })?;
    Ok(())
}

/// Moves the calling thread (only this thread) into the network namespace `ns`,
/// an open /var/run/netns/<name> file.
pub fn setns_net(ns: &File) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd; it only changes the calling thread's namespace.
    check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) })?;
    Ok(())
}

/// Mounts a filesystem of type `fstype` (debugfs, tracefs: no device) on `target`.
pub fn mount(fstype: &str, target: &str) -> io::Result<()> {
    let cstr =
        |s: &str| std::ffi::CString::new(s).map_err(|_| io::Error::other(format!("NUL in {s:?}")));
    let (fstype, target) = (cstr(fstype)?, cstr(target)?);
    // SAFETY: the strings are valid and NUL-terminated; no mount data is passed.
    check(unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            ptr::null(),
        )
    })?;
    Ok(())
}

/// Opens `path` write-only. Async-signal-safe: no allocation.
pub fn open_write_only(path: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `path` is a valid NUL-terminated string.
    let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Exactly one write() syscall. Async-signal-safe: no allocation.
pub fn write_fd(fd: &OwnedFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is valid for reads of `data.len()` bytes; `fd` is open.
    let written = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    if written < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(written as usize)
    }
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
/// Async-signal-safe: two raw syscalls, no allocation.
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
    pid: libc::pid_t,
    reaped: bool,
}

impl ChildProcess {
    /// Sends `sig` to the child (nothing once it has been reaped).
    pub fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        if self.reaped {
            return Ok(());
        }
        send_signal(self.pid, sig)
    }

    /// Waits for the child to end and returns its wait status.
    pub fn wait(&mut self) -> io::Result<i32> {
        self.waitpid(0)?
            .ok_or_else(|| io::Error::other("waitpid returned no status"))
    }

    /// Polls for up to `timeout` for the child to end; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.waitpid(libc::WNOHANG)? {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn waitpid(&mut self, options: libc::c_int) -> io::Result<Option<i32>> {
        if self.reaped {
            return Err(io::Error::other("child already reaped"));
        }
        let mut status = 0;
        loop {
            // SAFETY: `status` is valid for writes; `pid` is our child, not yet reaped.
            match check(unsafe { libc::waitpid(self.pid, &mut status, options) }) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    self.reaped = true;
                    return Ok(Some(status));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
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
            let _ = send_signal(self.pid, libc::SIGKILL);
            let _ = self.waitpid(0);
        }
    }
}

/// Describes a wait status: `exit status 3`, `killed by signal 9`.
pub fn describe_wait_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

/// Sends signal `sig` to process `pid`.
pub fn send_signal(pid: i32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall; it only sends a signal.
    check(unsafe { libc::kill(pid, sig) })?;
    Ok(())
}

/// Runs `child` in a forked child process, which leaves with `_exit` and the returned code.
///
/// # Safety
///
/// The child is a copy of a multi-threaded process: `child` may only make
/// async-signal-safe calls (no allocation, no locks, no printing).
pub unsafe fn fork_child(child: impl FnOnce() -> u8) -> io::Result<ChildProcess> {
    // SAFETY: fork has no memory-safety preconditions; the caller guarantees that `child`
    // is async-signal-safe, and the child leaves with _exit, never returning into the runner.
    let pid = check(unsafe { libc::fork() })?;
    if pid == 0 {
        let code = panic::catch_unwind(AssertUnwindSafe(child)).unwrap_or(u8::MAX);
        // SAFETY: _exit ends the child at once, without running the parent's destructors.
        unsafe { libc::_exit(code.into()) }
    }
    Ok(ChildProcess { pid, reaped: false })
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
    let status = process.wait()?;
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status) as u8)
    } else {
        Err(io::Error::other(format!(
            "child did not exit normally ({})",
            describe_wait_status(status)
        )))
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

/// `IP_LOCAL_PORT_RANGE` from linux/in.h (6.3 on; not in the libc crate): the range of
/// ports an autobinding bind() or connect() of this socket picks from, an u32 with the
/// highest port in its upper 16 bits and the lowest in its lower 16 bits (0: no bound).
pub const IP_LOCAL_PORT_RANGE: libc::c_int = 51;

/// A TCP socket of `addr`'s family (not bound, not connected), non-blocking if asked.
pub fn tcp_socket(addr: &SocketAddr, nonblocking: bool) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let flags = if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: plain syscall.
    let fd =
        check(unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags, 0) })?;
    // SAFETY: `fd` was just returned by socket and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// bind() of a socket to `addr` (port 0: the kernel picks one).
pub fn bind(fd: &impl AsRawFd, addr: SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr(&addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    check(unsafe { libc::bind(fd.as_raw_fd(), ptr::from_ref(&storage).cast(), len) })?;
    Ok(())
}

/// connect() of a non-blocking socket to `addr`, without waiting for the handshake: done
/// once the kernel has given the socket its port and sent the SYN (`EINPROGRESS`).
pub fn connect_started(fd: OwnedFd, addr: SocketAddr) -> io::Result<TcpStream> {
    let (storage, len) = sockaddr(&addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    match check(unsafe { libc::connect(fd.as_raw_fd(), ptr::from_ref(&storage).cast(), len) }) {
        Ok(_) => Ok(TcpStream::from(fd)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(TcpStream::from(fd)),
        Err(e) => Err(e),
    }
}

/// setsockopt() of an int option.
pub fn set_int_option(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int of the length passed.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            ptr::from_ref(&value).cast(),
            mem::size_of_val(&value) as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `addr` as a sockaddr for bind().
fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zeroes is a valid value of these plain C structs.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: as above.
            let mut sin: libc::sockaddr_in = unsafe { mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            // SAFETY: sockaddr_storage is bigger than and aligned for every sockaddr type.
            unsafe {
                ptr::from_mut(&mut storage)
                    .cast::<libc::sockaddr_in>()
                    .write(sin)
            };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let mut sin6: libc::sockaddr_in6 = unsafe { mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            // SAFETY: as above.
            unsafe {
                ptr::from_mut(&mut storage)
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6)
            };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// A TCP socket listening on `addr` with `backlog`, with SO_REUSEADDR (as std sets it) and,
/// if `reuseport`, SO_REUSEPORT.
pub fn tcp_listen(addr: SocketAddr, backlog: i32, reuseport: bool) -> io::Result<TcpListener> {
    let fd = tcp_socket(&addr, false)?;
    set_int_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if reuseport {
        set_int_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    bind(&fd, addr)?;
    // SAFETY: plain syscall on the socket fd.
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(TcpListener::from(fd))
}

/// A blocking TCP connect() to `addr` whose SYN is retransmitted at most `syn_retries` times
/// (`TCP_SYNCNT`) before connect() fails with `ETIMEDOUT`: the stack's own retry bound, no
/// timer of the caller's.
pub fn tcp_connect_syn_retries(addr: SocketAddr, syn_retries: i32) -> io::Result<TcpStream> {
    let fd = tcp_socket(&addr, false)?;
    set_int_option(&fd, libc::IPPROTO_TCP, libc::TCP_SYNCNT, syn_retries)?;
    let (storage, len) = sockaddr(&addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    match check(unsafe { libc::connect(fd.as_raw_fd(), ptr::from_ref(&storage).cast(), len) }) {
        Ok(_) => Ok(TcpStream::from(fd)),
        // A signal interrupted the wait; the handshake goes on: wait for its outcome.
        Err(e) if e.kind() == io::ErrorKind::Interrupted => wait_connected(fd),
        Err(e) => Err(e),
    }
}

/// Waits without a timeout for the outcome of a connect() that a signal interrupted.
fn wait_connected(fd: OwnedFd) -> io::Result<TcpStream> {
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd.
        match check(unsafe { libc::poll(&mut pfd, 1, -1) }) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
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
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is valid for writes.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    if limit.rlim_cur >= want {
        return Ok(limit.rlim_cur);
    }
    let wanted = libc::rlimit {
        rlim_cur: want,
        rlim_max: limit.rlim_max.max(want),
    };
    // SAFETY: `wanted` is a valid rlimit.
    if check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) }).is_ok() {
        return Ok(want);
    }
    // Without the privilege to raise the hard limit: up to it.
    let capped = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) })?;
    Ok(limit.rlim_max)
}

/// accept4() with `flags` (`SOCK_NONBLOCK`, `SOCK_CLOEXEC`). Async-signal-safe.
pub fn accept4(listener: &impl AsRawFd, flags: libc::c_int) -> io::Result<TcpStream> {
    // SAFETY: null address pointers are allowed: the peer address is not wanted.
    let fd = check(unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            ptr::null_mut(),
            ptr::null_mut(),
            flags,
        )
    })?;
    // SAFETY: `fd` was just returned by accept4 and is owned by nobody else.
    Ok(TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Plain accept(), whose fd gets neither O_NONBLOCK nor FD_CLOEXEC (std's accept always
/// asks for SOCK_CLOEXEC).
pub fn accept_plain(listener: &impl AsRawFd) -> io::Result<TcpStream> {
    // SAFETY: null address pointers are allowed: the peer address is not wanted.
    let fd =
        check(unsafe { libc::accept(listener.as_raw_fd(), ptr::null_mut(), ptr::null_mut()) })?;
    // SAFETY: `fd` was just returned by accept and is owned by nobody else.
    Ok(TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The O_NONBLOCK and FD_CLOEXEC flags of a file descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdFlags {
    pub nonblocking: bool,
    pub cloexec: bool,
}

pub fn fd_flags(fd: &impl AsRawFd) -> io::Result<FdFlags> {
    // SAFETY: fcntl F_GETFL and F_GETFD only read flags of an open fd.
    let status = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    let fd_flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) })?;
    Ok(FdFlags {
        nonblocking: status & libc::O_NONBLOCK != 0,
        cloexec: fd_flags & libc::FD_CLOEXEC != 0,
    })
}

fn timeout_ms(timeout: Duration) -> libc::c_int {
    timeout.as_millis().try_into().unwrap_or(libc::c_int::MAX)
}

/// An epoll instance.
pub struct Epoll(OwnedFd);

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adds `fd` with `events` (`EPOLLIN`, `EPOLLET`, `EPOLLEXCLUSIVE`, ...).
    pub fn add(&self, fd: &impl AsRawFd, events: libc::c_int) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: fd.as_raw_fd() as u64,
        };
        // SAFETY: `event` is a valid epoll_event; both fds are open.
        check(unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut event,
            )
        })?;
        Ok(())
    }

    /// Waits without a timeout for events; returns the data (the fd, see [`Epoll::add`]) of
    /// each ready entry, none if a signal interrupted the wait.
    pub fn wait_forever(&self) -> io::Result<Vec<u64>> {
        self.wait_ms(-1)
    }

    /// [`Epoll::wait_forever`], but returns no events after `timeout` (zero: do not wait).
    pub fn wait_timeout(&self, timeout: Duration) -> io::Result<Vec<u64>> {
        self.wait_ms(timeout_ms(timeout))
    }

    fn wait_ms(&self, timeout: libc::c_int) -> io::Result<Vec<u64>> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: `events` is valid for writes of the number of entries passed.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                timeout,
            )
        };
        match check(n) {
            Ok(n) => Ok(events[..n as usize].iter().map(|e| e.u64).collect()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

/// An eventfd: a wake-up one thread sends to others waiting in poll, select or epoll.
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the eventfd readable for good (nobody reads it), waking every waiter.
    pub fn signal(&self) -> io::Result<()> {
        let one = 1u64.to_ne_bytes();
        write_fd(&self.0, &one).map(|_| ())
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
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
pub fn poll_either(first: &impl AsRawFd, second: &impl AsRawFd) -> io::Result<Readable> {
    let pfd = |fd: &dyn AsRawFd| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = [pfd(first), pfd(second)];
    // SAFETY: `fds` holds two valid pollfds.
    match check(unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) }) {
        Ok(_) => Ok(Readable {
            first: fds[0].revents != 0,
            second: fds[1].revents != 0,
        }),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Readable {
            first: false,
            second: false,
        }),
        Err(e) => Err(e),
    }
}

/// Waits without a timeout with select() until `first` or `second` is readable; both
/// false if a signal interrupted the wait.
pub fn select_either(first: &impl AsRawFd, second: &impl AsRawFd) -> io::Result<Readable> {
    let (a, b) = (first.as_raw_fd(), second.as_raw_fd());
    for raw in [a, b] {
        if !(0..libc::FD_SETSIZE as libc::c_int).contains(&raw) {
            return Err(io::Error::other(format!("fd {raw} does not fit an fd_set")));
        }
    }
    // SAFETY: all-zeroes is a valid, empty fd_set.
    let mut set: libc::fd_set = unsafe { mem::zeroed() };
    // SAFETY: both fds are below FD_SETSIZE (checked above), so FD_SET stays inside `set`.
    unsafe {
        libc::FD_SET(a, &mut set);
        libc::FD_SET(b, &mut set);
    }
    let nfds = a.max(b) + 1;
    // SAFETY: `set` is valid for reads and writes; the other sets and the timeout may be
    // null (no timeout).
    let n = unsafe {
        libc::select(
            nfds,
            &mut set,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    match check(n) {
        // SAFETY: FD_ISSET reads a bit of `set` at an index checked above.
        Ok(_) => Ok(unsafe {
            Readable {
                first: libc::FD_ISSET(a, &set),
                second: libc::FD_ISSET(b, &set),
            }
        }),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Readable {
            first: false,
            second: false,
        }),
        Err(e) => Err(e),
    }
}

/// Waits up to `timeout` with poll() for `fd` to become readable.
pub fn poll_readable(fd: &impl AsRawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd.
    match check(unsafe { libc::poll(&mut pfd, 1, timeout_ms(timeout)) }) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
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
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                Self::bytes(len),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Shared { ptr, len })
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
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), Self::bytes(self.len)) };
    }
}

/// Does nothing: its only purpose is to interrupt a blocking accept() (no `SA_RESTART`).
extern "C" fn interrupt(_: libc::c_int) {}

/// Installs [`interrupt`] for `SIGUSR1`, without `SA_RESTART`. Async-signal-safe.
fn interrupt_on_sigusr1() -> io::Result<()> {
    // SAFETY: all-zeroes is a valid sigaction (empty mask, no flags).
    let mut action: libc::sigaction = unsafe { mem::zeroed() };
    action.sa_sigaction = interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: `action` is a valid sigaction whose handler is async-signal-safe (it does
    // nothing); the old action is not wanted.
    check(unsafe { libc::sigaction(libc::SIGUSR1, &action, ptr::null_mut()) })?;
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
                // SAFETY: `fd` is this process's copy of the listener fd; it is closed once,
                // here, and never used again.
                unsafe { libc::close(fd) };
                shared.closed.store(1, SeqCst);
                sleep_for_good();
            }
            let stall_after = shared.stall_after.load(SeqCst);
            if stall_after != 0 && shared.served.load(SeqCst) >= stall_after {
                shared.stalled.store(1, SeqCst);
                sleep_for_good();
            }
            match accept4(&fd, libc::SOCK_CLOEXEC) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// SO_RCVBUFFORCE needs CAP_NET_ADMIN; returns its errno (0 on success).
    fn force_rcvbuf() -> u8 {
        let Ok(sock) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            return 250;
        };
        let size: libc::c_int = 1 << 20;
        // SAFETY: `size` is a valid c_int of the length passed.
        let ret = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                mem::size_of_val(&size) as libc::socklen_t,
            )
        };
        if ret == 0 {
            0
        } else {
            io::Error::last_os_error().raw_os_error().unwrap_or(251) as u8
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

/// close_range(first, last, 0): closes every descriptor from `first` to `last`.
pub fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range() only closes descriptors of this process; the callers own the
    // range they pass and no longer use the descriptors in it.
    check(unsafe { libc::close_range(first, last, 0) }).map(drop)
}
