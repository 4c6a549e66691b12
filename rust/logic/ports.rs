// SPDX-License-Identifier: GPL-2.0

//! The set of listening ports a feature applies to, as an operator writes it.
//!
//! Syntax: `all`, or a comma-separated list of ports and inclusive ranges such as
//! `80,443,8000-8099`, or an empty string for none. Whitespace around items is ignored. A list
//! is at most [`MAX_TEXT`] bytes long, so that parsing it is cheap whoever writes it (any user
//! may own a network namespace and write its knobs).
//!
//! Pure logic, no `kernel::` imports: also built and tested on the host (`rust/logic`).

use core::fmt::{self, Write};
use core::ops::Deref;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Why a port list was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// An item is not a number, a range or `all`.
    Syntax,
    /// A port is 0 or above 65535, or a range ends before it starts.
    Range,
    /// The list is longer than [`MAX_TEXT`] bytes.
    TooLong,
}

/// The longest port list accepted, in bytes: room for hundreds of items.
pub const MAX_TEXT: usize = 4096;

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
    if text.len() > MAX_TEXT {
        return Err(ParseError::TooLong);
    }
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

/// Number of 64-bit words in a port bitmap (see [`PortSet::store`]).
pub const WORDS: usize = 65536 / 64;

/// A set of TCP ports readable locklessly from hot paths.
///
/// A concurrent reader may briefly see a mix of the old and the new set while a list is being
/// stored; writers are serialised by the caller. The bitmap, `W`, is [`WORDS`] words (8 KiB):
/// the kernel keeps it on the heap ([`PortSet::with_words`]), never on a kernel stack.
pub struct PortSet<W = Inline> {
    all: AtomicBool,
    words: W,
}

impl Default for PortSet {
    fn default() -> Self {
        Self::new(true)
    }
}

/// A bitmap of [`WORDS`] words inside the [`PortSet`] (for the host's tests).
pub struct Inline([AtomicU64; WORDS]);

impl Deref for Inline {
    type Target = [AtomicU64];

    fn deref(&self) -> &[AtomicU64] {
        &self.0
    }
}

impl PortSet {
    /// A set of every port (`all == true`) or of none, with its bitmap inline.
    pub fn new(all: bool) -> Self {
        Self {
            all: AtomicBool::new(all),
            words: Inline([const { AtomicU64::new(0) }; WORDS]),
        }
    }
}

impl<W: Deref<Target = [AtomicU64]>> PortSet<W> {
    /// A set of every port (`all == true`) or of none over the bitmap `words`, which it
    /// clears; `None` if it has fewer than [`WORDS`] words.
    pub fn with_words(all: bool, words: W) -> Option<Self> {
        let bitmap = words.get(..WORDS)?;
        for word in bitmap {
            word.store(0, Ordering::Relaxed);
        }
        Some(Self {
            all: AtomicBool::new(all),
            words,
        })
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.all.load(Ordering::Relaxed)
            || self
                .words
                .get(usize::from(port) / 64)
                .is_some_and(|word| word.load(Ordering::Relaxed) & (1 << (port % 64)) != 0)
    }

    /// Replaces the set by the list in `text`; on error the set is unchanged. `scratch` (at
    /// least [`WORDS`] words, contents ignored) receives the new bitmap first, so that the
    /// list is parsed once and each word of the set is written once: the cost is linear in
    /// the length of `text` (at most [`MAX_TEXT`]) plus [`WORDS`].
    pub fn store(&self, text: &str, scratch: &mut [u64]) -> Result<(), ParseError> {
        let bits = scratch.get_mut(..WORDS).ok_or(ParseError::TooLong)?;
        bits.fill(0);
        let mut all = false;
        parse(text, |item| match item {
            Item::All => all = true,
            Item::Range(lo, hi) => set_range(bits, lo, hi),
        })?;
        for (word, &new) in self.words.iter().zip(bits.iter()) {
            word.store(new, Ordering::Relaxed);
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

/// Sets the bits of ports `lo..=hi` in `bits` ([`WORDS`] words), a word at a time.
fn set_range(bits: &mut [u64], lo: u16, hi: u16) {
    let (lo, hi) = (usize::from(lo), usize::from(hi));
    for w in lo / 64..=hi / 64 {
        let first = if w == lo / 64 { lo % 64 } else { 0 };
        let last = if w == hi / 64 { hi % 64 } else { 63 };
        // Bits first..=last; `last - first` is at most 63, so the shifts cannot overflow.
        let mask = (u64::MAX >> (63 - (last - first))) << first;
        if let Some(word) = bits.get_mut(w) {
            *word |= mask;
        }
    }
}
