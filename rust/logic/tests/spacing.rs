// SPDX-License-Identifier: GPL-2.0

use fastsocket_logic::spacing::Spacing;

#[test]
fn one_event_per_window() {
    let s = Spacing::default();
    assert!(s.open(0, 100), "before any event, any time is open");
    assert!(s.open(0, 100), "asking does not close it");
    s.note(0);
    assert!(!s.open(0, 100));
    assert!(!s.open(99, 100));
    assert!(s.open(100, 100), "a window after the last event");
    s.note(150);
    assert!(!s.open(200, 100));
    assert!(s.open(1000, 100));
}

#[test]
fn wrap_safe() {
    let s = Spacing::default();
    let near = usize::MAX - 10;
    s.note(near);
    assert!(
        !s.open(near.wrapping_add(50), 100),
        "across the wrap, still the same window"
    );
    assert!(s.open(near.wrapping_add(100), 100));
}

#[test]
fn an_event_stamped_later_than_now_never_sticks() {
    // A racing CPU's later stamp: its age wraps to a huge value, so the gate is open; at worst
    // one more event passes, never a gate that stays shut.
    let s = Spacing::default();
    s.note(1000);
    assert!(s.open(990, 100));
}
