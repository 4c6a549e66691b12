#!/usr/bin/python3
"""Attach a CPU-steering reuseport program to a running server's listeners, from outside.

The best mainline setup without touching the application (benchmark arm B2): the server
already listens with SO_REUSEPORT (one socket per worker); this copies one of its listening
sockets with pidfd_getfd(2) and attaches a classic BPF program that returns the receiving
CPU, so the group's socket number cpu gets the connections that arrive on CPU cpu. Pin
worker i to CPU i separately (taskset) for that to mean locality.

    reuseport_cpu_bpf.py PID PORT
"""
import ctypes
import os
import socket
import sys

SYS_PIDFD_GETFD = 438
SO_ATTACH_REUSEPORT_CBPF = 51
# ld #cpu (SKF_AD_OFF + SKF_AD_CPU); ret a
BPF_LD_W_ABS, BPF_RET_A = 0x20, 0x16
SKF_AD_OFF, SKF_AD_CPU = -0x1000, 36


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8),
                ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]


def listening_inodes(port):
    """Inodes of TCP sockets listening on PORT (IPv4 and IPv6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.add(fields[9])
    return found


def main():
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    inodes = listening_inodes(port)
    fd_dir = f"/proc/{pid}/fd"
    target = next((int(fd) for fd in os.listdir(fd_dir)
                   if os.readlink(f"{fd_dir}/{fd}").strip("socket:[]") in inodes), None)
    if target is None:
        sys.exit(f"no listener on port {port} in process {pid}")
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, target, 0)
    if fd < 0:
        sys.exit(f"pidfd_getfd: {os.strerror(ctypes.get_errno())}")
    prog = (SockFilter * 2)(SockFilter(BPF_LD_W_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_CPU) & 0xffffffff),
                            SockFilter(BPF_RET_A, 0, 0, 0))
    fprog = SockFprog(2, prog)
    if libc.setsockopt(fd, socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF,
                       ctypes.byref(fprog), ctypes.sizeof(fprog)) != 0:
        sys.exit(f"SO_ATTACH_REUSEPORT_CBPF: {os.strerror(ctypes.get_errno())}")
    print(f"attached CPU-steering reuseport program to fd {target} of {pid} (port {port})")


if __name__ == "__main__":
    main()
