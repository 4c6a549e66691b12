// SPDX-License-Identifier: GPL-2.0

//! The thin layer between the module and the C kernel.
//!
//! Every `unsafe` block of the module lives below this directory; the feature code built on
//! top of it (`stats`, `netstate`, and later `listen` and `steer`) has none.

pub(crate) mod cpu;
pub(crate) mod global;
pub(crate) mod hold;
pub(crate) mod hooks;
pub(crate) mod lock;
pub(crate) mod net;
pub(crate) mod percpu;
pub(crate) mod pernet;
pub(crate) mod rcu;
pub(crate) mod reqq;
pub(crate) mod shrinker;
pub(crate) mod sockfs;
pub(crate) mod sysctl;
pub(crate) mod task;
pub(crate) mod text;
pub(crate) mod time;
