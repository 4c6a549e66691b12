// SPDX-License-Identifier: GPL-2.0

use fastsocket_logic::recent::RecentListeners;

#[test]
fn remembers_within_the_window_only() {
    let r = RecentListeners::default();
    let key = 0xffff_8880_1234_5640;
    assert!(!r.seen_within(key, 100, 1000), "never noted");
    r.note(key, 100, 7);
    assert_eq!(r.acceptor_within(key, 1100, 1000), Some(7));
    assert_eq!(r.acceptor_within(key, 1101, 1000), None);
    assert!(r.seen_within(key, 1100, 1000));
    assert!(!r.seen_within(key, 1101, 1000));
    assert!(!r.seen_within(key + 64, 100, 1000), "another listener");
}

#[test]
fn a_collision_forgets_rather_than_confuses() {
    let r = RecentListeners::default();
    // Find two keys in the same slot.
    let a = 0xffff_8880_0000_0000usize;
    let b = (1..).map(|i| a + i * 64).find(|&b| {
        let probe = RecentListeners::default();
        probe.note(a, 0, 1);
        probe.note(b, 0, 2);
        !probe.seen_within(a, 0, 10)
    });
    let b = b.unwrap();
    r.note(a, 0, 1);
    r.note(b, 0, 2);
    assert!(!r.seen_within(a, 0, 10));
    assert!(r.seen_within(b, 0, 10));
    assert_eq!(r.acceptor_within(a, 0, 10), None);
    assert_eq!(r.acceptor_within(b, 0, 10), Some(2));
}

#[test]
fn the_last_acceptor_is_the_one_named() {
    let r = RecentListeners::default();
    let key = 0xffff_8880_1234_5640;
    r.note(key, 10, 100);
    r.note(key, 11, 200);
    assert_eq!(r.acceptor_within(key, 12, 5), Some(200));
}

#[test]
fn jiffies_that_wrap_stay_ordered() {
    let r = RecentListeners::default();
    let key = 0xffff_8880_1234_5640;
    // Noted 3 jiffies before the counter wraps, asked 4 jiffies after it.
    r.note(key, usize::MAX - 2, 1);
    assert!(r.seen_within(key, 4, 10), "7 jiffies old across the wrap");
    assert!(
        !r.seen_within(key, 4, 6),
        "older than the window across the wrap"
    );
    // Asked before the note (a racing CPU stamped it later): not seen.
    assert!(!r.seen_within(key, usize::MAX - 5, 10));
}

#[test]
fn a_wake_refreshes_only_a_noted_listener() {
    let r = RecentListeners::default();
    let key = 0xffff_8880_1234_5640;
    r.refresh(key, 50);
    assert!(
        !r.seen_within(key, 50, 10),
        "never accepted here: no entry to refresh"
    );
    r.note(key, 100, 7);
    assert_eq!(r.acceptor_within(key, 1200, 1000), None, "stale");
    r.refresh(key, 1200);
    assert_eq!(
        r.acceptor_within(key, 1200, 1000),
        Some(7),
        "same acceptor, fresh"
    );
    assert_eq!(r.acceptor_within(key, 2201, 1000), None);
    r.refresh(key + 64, 3000);
    assert!(!r.seen_within(key, 3000, 10), "another listener's wake");
}
