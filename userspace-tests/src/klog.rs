//! The live kernel log (/dev/kmsg) and kmemleak.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::thread;
use std::time::Duration;

use procfs_core::{FromRead, MountEntry};

/// Text of the warning that `fault_detection` logs on purpose; `kernel_log_clean`
/// ignores lines containing it.
pub const DELIBERATE_FAULT: &str = "fastsocket-tests deliberate fault";

const KMSG: &str = "/dev/kmsg";
const DEBUGFS: &str = "/sys/kernel/debug";
const KMEMLEAK: &str = "/sys/kernel/debug/kmemleak";
/// kmemleak only reports objects that stayed unreferenced over two scans this far apart.
const KMEMLEAK_SCAN_GAP: Duration = Duration::from_secs(5);

/// Turns a /dev/kmsg record (`prio,seq,usec,flags;message` plus ` KEY=value`
/// continuation lines) into a dmesg-style `[    1.234567] message` line.
pub fn format_kmsg_record(record: &str) -> Option<String> {
    let (prefix, rest) = record.split_once(';')?;
    let usec: u64 = prefix.split(',').nth(2)?.parse().ok()?;
    let message = rest.lines().next().unwrap_or_default();
    Some(format!(
        "[{:5}.{:06}] {message}",
        usec / 1_000_000,
        usec % 1_000_000
    ))
}

/// The whole kernel log buffer, one message per line.
pub fn read_kernel_log() -> io::Result<String> {
    let mut kmsg = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(KMSG)?;
    read_records(&mut kmsg)
}

/// Reads /dev/kmsg records from `kmsg` until none is left.
fn read_records(kmsg: &mut File) -> io::Result<String> {
    let mut log = String::new();
    // Each read() returns exactly one record; records are at most a few KiB.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match kmsg.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let record = String::from_utf8_lossy(&buf[..n]);
                if let Some(line) = format_kmsg_record(&record) {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // EPIPE: the record we were about to read was overwritten; go on with the next.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(log)
}

/// Appends `message` to the kernel log.
pub fn write_kmsg(message: &str) -> io::Result<()> {
    File::options()
        .write(true)
        .open(KMSG)?
        .write_all(format!("{message}\n").as_bytes())
}

/// Whether the /proc/mounts text `mounts` has a file system mounted on `dir`.
fn mounted_on(mounts: impl Read, dir: &str) -> io::Result<bool> {
    let mounts = Vec::<MountEntry>::from_read(mounts).map_err(io::Error::other)?;
    Ok(mounts.iter().any(|mount| mount.fs_file == dir))
}

fn debugfs_mounted() -> io::Result<bool> {
    mounted_on(File::open("/proc/mounts")?, DEBUGFS)
}

/// Outcome of a kmemleak scan.
pub enum Kmemleak {
    /// The contents of the kmemleak file after the scans (empty if nothing leaked).
    Report(String),
    /// Why kmemleak cannot be used on this kernel.
    Unavailable(String),
}

/// Mounts debugfs if needed and runs two kmemleak scans. A kernel built without kmemleak is
/// `Unavailable`; one whose kmemleak refuses to scan is an error: it was disabled at boot or
/// turned itself off (an internal error, its object pool exhausted), so leaks went unchecked.
pub fn kmemleak_scan() -> Result<Kmemleak, String> {
    if let Some(why) = kmemleak_unavailable()? {
        return Ok(Kmemleak::Unavailable(why));
    }
    // Writing fails (EPERM/EBUSY) where kmemleak was disabled at boot or turned itself off.
    let scan = || fs::write(KMEMLEAK, "scan");
    scan().map_err(|e| {
        format!("kmemleak refused a scan ({e}): it was disabled or turned itself off")
    })?;
    thread::sleep(KMEMLEAK_SCAN_GAP);
    scan().map_err(|e| format!("second kmemleak scan: {e}"))?;
    fs::read_to_string(KMEMLEAK)
        .map(Kmemleak::Report)
        .map_err(|e| format!("reading {KMEMLEAK}: {e}"))
}

/// Marks every leak reported so far as known, so that kmemleak never reports it again.
pub fn kmemleak_clear() -> Result<(), String> {
    fs::write(KMEMLEAK, "clear").map_err(|e| format!("writing clear to {KMEMLEAK}: {e}"))
}

/// Mounts debugfs if needed; `Some(why)` if kmemleak does not exist on this kernel.
fn kmemleak_unavailable() -> Result<Option<String>, String> {
    if !Path::new(KMEMLEAK).exists()
        && !debugfs_mounted().map_err(|e| format!("reading /proc/mounts: {e}"))?
    {
        crate::sys::mount("debugfs", DEBUGFS).map_err(|e| format!("mount debugfs: {e}"))?;
    }
    if !Path::new(KMEMLEAK).exists() {
        return Ok(Some(format!("{KMEMLEAK} does not exist")));
    }
    Ok(None)
}

/// The kernel log from the moment it was created: only records logged after
/// [`LogWatch::new`] are read.
pub struct LogWatch {
    kmsg: File,
}

impl LogWatch {
    pub fn new() -> io::Result<LogWatch> {
        let mut kmsg = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(KMSG)?;
        // SEEK_END on /dev/kmsg moves the reader past the last record.
        kmsg.seek(SeekFrom::End(0))?;
        Ok(LogWatch { kmsg })
    }

    /// The records logged since the last call (or since `new`), one message per line.
    pub fn read_new(&mut self) -> io::Result<String> {
        read_records(&mut self.kmsg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mount_points() {
        let mounts = "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n\
                      debugfs /sys/kernel/debug debugfs rw,relatime 0 0\n\
                      /dev/vda1 /mnt/a\\011b ext4 rw 0 0\n";
        assert!(mounted_on(mounts.as_bytes(), DEBUGFS).unwrap());
        assert!(mounted_on(mounts.as_bytes(), "/mnt/a\tb").unwrap());
        assert!(!mounted_on(mounts.as_bytes(), "/sys/kernel/tracing").unwrap());
        assert!(mounted_on("debugfs /sys/kernel/debug\n".as_bytes(), DEBUGFS).is_err());
        assert!(debugfs_mounted().is_ok());
    }

    #[test]
    fn formats_kmsg_records() {
        assert_eq!(
            format_kmsg_record("4,1234,61500001,-;WARNING: CPU: 1 PID: 9 at x.c:1 f+0x1/0x2\n")
                .unwrap(),
            "[   61.500001] WARNING: CPU: 1 PID: 9 at x.c:1 f+0x1/0x2"
        );
        assert_eq!(
            format_kmsg_record("6,5,12,-,caller=T1;hello\n SUBSYSTEM=net\n DEVICE=n2\n").unwrap(),
            "[    0.000012] hello"
        );
        assert_eq!(format_kmsg_record("garbage"), None);
    }
}
