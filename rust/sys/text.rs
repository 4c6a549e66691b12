// SPDX-License-Identifier: GPL-2.0

//! Formatting into a kernel buffer.

use core::fmt;
use kernel::prelude::*;

/// A growable byte buffer that `write!` can format into.
#[derive(Default)]
pub(crate) struct TextBuf(pub(crate) KVec<u8>);

impl fmt::Write for TextBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0
            .extend_from_slice(s.as_bytes(), GFP_KERNEL)
            .map_err(|_| fmt::Error)
    }
}
