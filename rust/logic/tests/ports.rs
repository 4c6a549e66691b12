// SPDX-License-Identifier: GPL-2.0

use fastsocket_logic::ports::{parse, Item, ParseError, PortSet};

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
    set.store("8001, 80,8000,8002-8003,65535,1").unwrap();
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
    set.store("").unwrap();
    assert!(!set.contains(80));
    set.store("all").unwrap();
    assert!(set.contains(80));
}

#[test]
fn a_refused_list_changes_nothing() {
    let set = PortSet::new(false);
    set.store("80").unwrap();
    assert_eq!(set.store("443,bad"), Err(ParseError::Syntax));
    assert_eq!(shown(&set), "80");
}
