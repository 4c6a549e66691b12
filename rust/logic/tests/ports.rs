// SPDX-License-Identifier: GPL-2.0

use fastsocket_logic::ports::{parse, Item, ParseError, PortSet, MAX_TEXT, WORDS};

/// Stores `text` with a fresh scratch bitmap, as the kernel side does.
fn store(set: &PortSet, text: &str) -> Result<(), ParseError> {
    set.store(text, &mut vec![u64::MAX; WORDS])
}

fn shown(set: &PortSet) -> String {
    let mut s = String::new();
    set.write(&mut s).unwrap();
    s
}

#[test]
fn parses_ports_ranges_and_all() {
    let mut items = Vec::new();
    parse(" 80, 443 ,8000-8002,all,", |i| items.push(i)).unwrap();
    assert_eq!(
        items,
        [
            Item::Range(80, 80),
            Item::Range(443, 443),
            Item::Range(8000, 8002),
            Item::All
        ]
    );
    parse("", |_| panic!("empty list has no items")).unwrap();
}

#[test]
fn refuses_bad_lists_without_calling_back() {
    for (text, err) in [
        ("abc", ParseError::Syntax),
        ("80,x", ParseError::Syntax),
        ("-5", ParseError::Syntax),
        ("+80", ParseError::Syntax),
        ("80-", ParseError::Syntax),
        ("0", ParseError::Range),
        ("65536", ParseError::Range),
        ("99999999999999999999999", ParseError::Range),
        ("90-80", ParseError::Range),
    ] {
        assert_eq!(
            parse(text, |_| panic!("called back for {text:?}")),
            Err(err),
            "{text:?}"
        );
    }
}

#[test]
fn stores_and_shows_merged_ranges() {
    let set = PortSet::new(false);
    assert_eq!(shown(&set), "");
    store(&set, "8001, 80,8000,8002-8003,65535,1").unwrap();
    assert_eq!(shown(&set), "1,80,8000-8003,65535");
    for (port, inside) in [
        (80, true),
        (81, false),
        (8003, true),
        (8004, false),
        (65535, true),
        (2, false),
    ] {
        assert_eq!(set.contains(port), inside, "port {port}");
    }
}

#[test]
fn all_and_none() {
    let set = PortSet::default();
    assert!(set.contains(1) && set.contains(65535));
    assert_eq!(shown(&set), "all");
    store(&set, "").unwrap();
    assert!(!set.contains(80));
    store(&set, "all").unwrap();
    assert!(set.contains(80));
}

#[test]
fn a_refused_list_changes_nothing() {
    let set = PortSet::new(false);
    store(&set, "80").unwrap();
    assert_eq!(store(&set, "443,bad"), Err(ParseError::Syntax));
    assert_eq!(shown(&set), "80");
}

#[test]
fn every_range_sets_exactly_its_ports() {
    // Exhaustive over range ends near word boundaries, and every port once as a single.
    let ends: Vec<u16> = [
        1u16, 2, 62, 63, 64, 65, 127, 128, 129, 4095, 4096, 65471, 65472, 65534, 65535,
    ]
    .to_vec();
    let set = PortSet::new(false);
    for &lo in &ends {
        for &hi in ends.iter().filter(|&&hi| hi >= lo) {
            store(&set, &format!("{lo}-{hi}")).unwrap();
            for port in 1..=65535u16 {
                assert_eq!(
                    set.contains(port),
                    (lo..=hi).contains(&port),
                    "{lo}-{hi}: {port}"
                );
            }
        }
    }
    for port in 1..=65535u16 {
        store(&set, &port.to_string()).unwrap();
        assert!(set.contains(port));
        assert!(port == 1 || !set.contains(port - 1));
        assert!(port == 65535 || !set.contains(port + 1));
    }
}

#[test]
fn refuses_a_list_over_max_text_and_keeps_the_old_one() {
    let set = PortSet::new(false);
    store(&set, "80").unwrap();
    let long = "1-65535,".repeat(MAX_TEXT / 8 + 1);
    assert!(long.len() > MAX_TEXT);
    assert_eq!(store(&set, &long), Err(ParseError::TooLong));
    assert_eq!(
        parse(&long, |_| panic!("called back")),
        Err(ParseError::TooLong)
    );
    assert_eq!(shown(&set), "80");
    // 1 MiB, as an unprivileged user in its own namespace may write: refused before parsing.
    assert_eq!(store(&set, &"8".repeat(1 << 20)), Err(ParseError::TooLong));
    // The longest accepted list of full ranges is still linear to store.
    let longest = "1-65535,".repeat(MAX_TEXT / 8);
    assert!(longest.len() <= MAX_TEXT);
    store(&set, &longest).unwrap();
    assert_eq!(shown(&set), "1-65535");
}

#[test]
fn a_short_scratch_is_an_error_not_a_panic() {
    let set = PortSet::new(false);
    assert_eq!(set.store("80", &mut [0; 3]), Err(ParseError::TooLong));
    assert!(!set.contains(80));
}

#[test]
fn bitmap_on_the_heap() {
    use std::sync::atomic::AtomicU64;
    let short: Vec<AtomicU64> = (0..WORDS - 1).map(|_| AtomicU64::new(0)).collect();
    assert!(PortSet::with_words(false, short).is_none());
    // Whatever the storage held, the set starts empty (or all) and behaves as an inline one.
    let words: Vec<AtomicU64> = (0..WORDS).map(|_| AtomicU64::new(u64::MAX)).collect();
    let set = PortSet::with_words(false, words).unwrap();
    assert!(!set.contains(80) && !set.contains(65535));
    set.store("80,8000-8002", &mut vec![u64::MAX; WORDS])
        .unwrap();
    assert!(set.contains(80) && set.contains(8002) && !set.contains(8003));
    let words: Vec<AtomicU64> = (0..WORDS).map(|_| AtomicU64::new(0)).collect();
    let all = PortSet::with_words(true, words).unwrap();
    assert!(all.contains(1) && all.contains(65535));
}
