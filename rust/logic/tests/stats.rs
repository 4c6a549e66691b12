// SPDX-License-Identifier: GPL-2.0

use fastsocket_logic::stats::{is_local, write_table, AcceptCounts};

#[test]
fn local_means_same_cpu() {
    assert!(is_local(Some(3), 3));
    assert!(!is_local(Some(2), 3));
    assert!(!is_local(None, 0), "unknown incoming CPU is never local");
}

#[test]
fn remote_is_accepts_minus_local() {
    let c = AcceptCounts {
        accepts: 10,
        local: 7,
    };
    assert_eq!(c.remote(), 3);
    // Counters are read without a lock: a reader may see `local` ahead of `accepts`.
    let racy = AcceptCounts {
        accepts: 4,
        local: 5,
    };
    assert_eq!(racy.remote(), 0);
}

#[test]
fn table_has_named_columns_and_one_row_per_cpu() {
    let mut out = String::new();
    let rows = [
        (
            0,
            AcceptCounts {
                accepts: 5,
                local: 4,
            },
        ),
        (
            1,
            AcceptCounts {
                accepts: 2,
                local: 0,
            },
        ),
    ];
    write_table(&mut out, rows.into_iter()).unwrap();
    assert_eq!(out, "cpu accepts local remote\n0 5 4 1\n1 2 0 2\n");
}
