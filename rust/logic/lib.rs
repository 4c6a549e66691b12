// SPDX-License-Identifier: GPL-2.0

//! Host build of the fastsocket module's pure logic.
//!
//! The module includes these same files with `#[path]`; here they are a normal `no_std`
//! library so that `cargo test` exercises them in seconds.

#![no_std]

pub mod fifo;
pub mod ports;
pub mod read;
pub mod recent;
pub mod rfd;
pub mod spacing;
pub mod stats;
