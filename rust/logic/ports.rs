// SPDX-License-Identifier: GPL-2.0

//! The set of listening ports a feature applies to, as an operator writes it.
//!
//! Syntax: `all`, or a comma-separated list of ports and inclusive ranges such as
//! `80,443,8000-8099`, or an empty string for none. Whitespace around items is ignored.
//!
//! Pure logic, no `kernel::` imports: also built and tested on the host (`rust/logic`).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Why a port list was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// An item is not a number, a range or `all`.
    Syntax,
    /// A port is 0 or above 65535, or a range ends before it starts.
    Range,
}

/// A parsed port list item: every port, or an inclusive range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// `all`.
    All,
    /// `lo-hi` or a single port (`lo == hi`).
    Range(u16, u16),
}

fn parse_port(s: &str) -> Result<u16, ParseError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::Syntax);
    }
    match s.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ => Err(ParseError::Range),
    }
}

/// Checks a whole port list and calls `f` for each item, in order. Nothing is called unless
/// the whole list is valid.
pub fn parse(text: &str, mut f: impl FnMut(Item)) -> Result<(), ParseError> {
    let items = || text.split(',').map(str::trim).filter(|s| !s.is_empty());
    let item = |s: &str| -> Result<Item, ParseError> {
        if s == "all" {
            return Ok(Item::All);
        }
        match s.split_once('-') {
            None => parse_port(s).map(|p| Item::Range(p, p)),
            Some((lo, hi)) => {
                let (lo, hi) = (parse_port(lo.trim())?, parse_port(hi.trim())?);
                if lo > hi {
                    return Err(ParseError::Range);
                }
                Ok(Item::Range(lo, hi))
            }
        }
    };
    for s in items() {
        item(s)?;
    }
    for s in items() {
        f(item(s)?);
    }
    Ok(())
}

const WORDS: usize = 65536 / 64;

/// A set of TCP ports readable locklessly from hot paths.
///
/// A concurrent reader may briefly see a mix of the old and the new set while a list is being
/// stored; writers are serialised by the caller.
pub struct PortSet {
    all: AtomicBool,
    words: [AtomicU64; WORDS],
}

impl Default for PortSet {
    fn default() -> Self {
        Self::new(true)
    }
}

impl PortSet {
    /// A set of every port (`all == true`) or of none.
    pub fn new(all: bool) -> Self {
        Self {
            all: AtomicBool::new(all),
            words: [const { AtomicU64::new(0) }; WORDS],
        }
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.all.load(Ordering::Relaxed)
            || self.words[usize::from(port) / 64].load(Ordering::Relaxed) & (1 << (port % 64)) != 0
    }

    /// Replaces the set by the list in `text`; on error the set is unchanged.
    pub fn store(&self, text: &str) -> Result<(), ParseError> {
        let mut all = false;
        parse(text, |item| all |= item == Item::All)?;
        // One pass over the (short, rarely written) list per word keeps this allocation-free.
        for (w, word) in self.words.iter().enumerate() {
            let first = (w * 64) as u32;
            let mut bits = 0u64;
            // Cannot fail: the whole list was checked above.
            let _ = parse(text, |item| {
                if let Item::Range(lo, hi) = item {
                    for p in u32::from(lo).max(first)..=u32::from(hi).min(first + 63) {
                        bits |= 1u64 << (p - first);
                    }
                }
            });
            word.store(bits, Ordering::Relaxed);
        }
        self.all.store(all, Ordering::Relaxed);
        Ok(())
    }

    /// Writes the set in the syntax [`parse`] reads, ranges merged: `all`, `80,8000-8099`, or
    /// nothing for the empty set.
    pub fn write(&self, out: &mut dyn Write) -> fmt::Result {
        if self.all.load(Ordering::Relaxed) {
            return out.write_str("all");
        }
        let mut run: Option<(u32, u32)> = None;
        let mut sep = "";
        let mut flush = |out: &mut dyn Write, (lo, hi): (u32, u32)| -> fmt::Result {
            if lo == hi {
                write!(out, "{sep}{lo}")?;
            } else {
                write!(out, "{sep}{lo}-{hi}")?;
            }
            sep = ",";
            Ok(())
        };
        for port in 1..=65535u32 {
            if self.contains(port as u16) {
                run = match run {
                    Some((lo, hi)) if hi + 1 == port => Some((lo, port)),
                    Some(r) => {
                        flush(out, r)?;
                        Some((port, port))
                    }
                    None => Some((port, port)),
                };
            }
        }
        if let Some(r) = run {
            flush(out, r)?;
        }
        Ok(())
    }
}
