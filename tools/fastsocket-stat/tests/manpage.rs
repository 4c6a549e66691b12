// SPDX-License-Identifier: GPL-2.0

//! The manual page (fastsocket-stat.1, packaged by `make deb`) against the tool's own help:
//! every option and every column the help names is documented there.

const MAN: &str = include_str!("../fastsocket-stat.1");
const HELP: &str = include_str!("../src/help.txt");

/// Roff text with its escapes for '-' undone.
fn man_text() -> String {
    MAN.replace("\\-", "-")
}

#[test]
fn every_option_of_the_help_is_in_the_manual_page() {
    let man = man_text();
    let options: Vec<&str> = HELP
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with('-') && w.len() > 1 && w != &"-:")
        .collect();
    assert!(options.len() >= 7, "help options {options:?}");
    for option in options {
        assert!(man.contains(option), "{option} is not in fastsocket-stat.1");
    }
}

#[test]
fn every_column_of_the_help_is_in_the_manual_page() {
    let man = man_text();
    for column in [
        "accepts/s",
        "local%",
        "steals/s",
        "wk-local",
        "wk-pulled",
        "wk-fallbk",
        "wk-held",
        "queued",
        "rfd-ports/s",
        "rfd-fallbk/s",
        "steered/s",
        "rx-local%",
        "reused/s",
        "reuse%",
    ] {
        assert!(
            HELP.contains(column.trim_end_matches("/s")),
            "{column} not in help.txt"
        );
        assert!(man.contains(column), "{column} is not in fastsocket-stat.1");
    }
}

#[test]
fn the_exit_statuses_are_those_of_the_help() {
    for status in [
        "0 done",
        "1 error",
        "2 bad arguments",
        "3 the module is not loaded",
    ] {
        assert!(HELP.contains(status), "help.txt: {status}");
    }
    for status in ["0", "1", "2", "3"] {
        assert!(
            MAN.contains(&format!(".TP\n.B {status}\n")),
            "fastsocket-stat.1: status {status}"
        );
    }
}
