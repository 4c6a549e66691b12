// SPDX-License-Identifier: GPL-2.0

use fastsocket_logic::read::Counts;
use fastsocket_logic::stats::{is_local, write_table, CpuStats, COLUMNS};

#[test]
fn local_means_same_cpu() {
    assert!(is_local(Some(3), 3));
    assert!(!is_local(Some(2), 3));
    assert!(!is_local(None, 0), "unknown incoming CPU is never local");
}

#[test]
fn remote_is_accepts_minus_local() {
    let c = CpuStats {
        accepts: 10,
        local: 7,
        ..Default::default()
    };
    assert_eq!(c.remote(), 3);
    // Counters are read without a lock: a reader may see `local` ahead of `accepts`.
    let racy = CpuStats {
        accepts: 4,
        local: 5,
        ..Default::default()
    };
    assert_eq!(racy.remote(), 0);
}

#[test]
fn table_has_named_columns_and_one_row_per_cpu() {
    let mut out = String::new();
    let cpu0 = CpuStats {
        accepts: 5,
        local: 4,
        queued: 9,
        wake_local: 3,
        wake_pulled: 6,
        wake_fallback: 1,
        wake_held: 2,
        wake_dropped: 20,
        wake_held_pulled: 21,
        queue_local: 7,
        queue_steal: 8,
        queue_stolen: 10,
        queue_fallback: 11,
        rfd_ports: 12,
        rfd_fallback: 13,
        rfd_steered: 14,
        rfd_local: 15,
        vfs_reused: 16,
        vfs_new: 17,
        vfs_kept: 18,
        vfs_idle: 19,
    };
    let rows = [
        (0, cpu0),
        (
            1,
            CpuStats {
                accepts: 2,
                ..Default::default()
            },
        ),
    ];
    write_table(&mut out, rows.into_iter()).unwrap();
    assert_eq!(
        out,
        "cpu accepts local remote queued wake_local wake_pulled wake_fallback wake_held \
         wake_dropped wake_held_pulled queue_local queue_steal queue_stolen queue_fallback \
         rfd_ports rfd_fallback rfd_steered rfd_local vfs_reused vfs_new vfs_kept vfs_idle\n\
         0 5 4 1 9 3 6 1 2 20 21 7 8 10 11 12 13 14 15 16 17 18 19\n\
         1 2 0 2 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
    );
}

#[test]
fn columns_and_counts_name_the_same_fields() {
    // Every column but the CPU and the derived `remote` is a stored count, in table order.
    let stored: Vec<&str> = CpuStats::default().counts().map(|(name, _)| name).collect();
    let columns: Vec<&str> = COLUMNS[1..]
        .iter()
        .copied()
        .filter(|c| *c != "remote")
        .collect();
    assert_eq!(stored, columns);
    // Each count is its own field: writing one by name changes that column only.
    for (i, name) in stored.iter().enumerate() {
        let mut s = CpuStats::default();
        *s.get_mut(name).unwrap() = 100 + i as u64;
        for other in &COLUMNS[1..] {
            let want = match *other {
                n if n == *name => 100 + i as u64,
                "remote" if *name == "accepts" => 100 + i as u64,
                _ => 0,
            };
            assert_eq!(s.get(other), Some(want), "{name} set, {other} read");
        }
    }
    assert_eq!(CpuStats::default().get("cpu"), None);
    assert!(CpuStats::default().get_mut("remote").is_none());
    assert!(CpuStats::default().get_mut("nonsense").is_none());
}

#[test]
fn connection_counts_leave_out_the_cache_columns() {
    use fastsocket_logic::read::{Counts, CACHE_COLUMNS};
    let mut c = CpuStats {
        accepts: 3,
        rfd_local: 2,
        vfs_reused: 4,
        vfs_new: 1,
        vfs_kept: 5,
        vfs_idle: 6,
        ..Default::default()
    };
    let only = c.connections();
    assert_eq!((only.accepts, only.rfd_local), (3, 2));
    assert_eq!(
        (only.vfs_reused, only.vfs_new, only.vfs_kept, only.vfs_idle),
        (0, 0, 0, 0)
    );
    for name in CACHE_COLUMNS {
        assert!(c.get_mut(name).is_some(), "{name} is not a column");
    }
}
