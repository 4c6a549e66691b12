//! Loading and unloading the module under test.

use std::path::Path;
use std::process::Command;

pub const NAME: &str = "fastsocket";

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn insmod(path: &Path) -> Result<(), String> {
    run(Command::new("insmod").arg(path))
}

pub fn rmmod() -> Result<(), String> {
    run(Command::new("rmmod").arg(NAME))
}

pub fn is_loaded() -> bool {
    Path::new("/sys/module").join(NAME).exists()
}
