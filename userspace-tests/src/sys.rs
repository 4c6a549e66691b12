//! Thin safe wrappers around the libc calls the tests need.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::mem;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};

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
    // SAFETY: cpu_set_t is a plain bitmask for which all-zeroes is a valid (empty) value.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: CPU_SET only sets a bit in `set`, with a bounds-checked index (it panics
    // rather than writing out of bounds for cpu >= CPU_SETSIZE).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 means the calling thread.
    check(unsafe { libc::sched_setaffinity(0, mem::size_of_val(&set), &set) })?;
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

/// Calls listen() again on a listening socket, which only updates its backlog
/// (std always listens with its own fixed backlog).
pub fn set_listen_backlog(listener: &TcpListener, backlog: i32) -> io::Result<()> {
    // SAFETY: plain syscall on a socket fd owned by `listener`.
    check(unsafe { libc::listen(listener.as_raw_fd(), backlog) })?;
    Ok(())
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

/// Runs `child` in a forked child process, which exits with the returned code,
/// and returns that exit code.
///
/// # Safety
///
/// The child is a copy of a multi-threaded process: `child` may only make
/// async-signal-safe calls (no allocation, no locks, no printing).
pub unsafe fn fork_and_wait(child: impl FnOnce() -> u8) -> io::Result<u8> {
    // SAFETY: fork has no memory-safety preconditions; the caller guarantees that `child`
    // is async-signal-safe, and the child leaves with _exit, never returning into the runner.
    let pid = check(unsafe { libc::fork() })?;
    if pid == 0 {
        let code = panic::catch_unwind(AssertUnwindSafe(child)).unwrap_or(u8::MAX);
        // SAFETY: _exit ends the child at once, without running the parent's destructors.
        unsafe { libc::_exit(code.into()) }
    }
    let mut status = 0;
    loop {
        // SAFETY: `status` is valid for writes; `pid` is our child.
        match check(unsafe { libc::waitpid(pid, &mut status, 0) }) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status) as u8)
    } else {
        Err(io::Error::other(format!(
            "child did not exit normally (wait status {status:#x})"
        )))
    }
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
