//! aioctx: QEMU's AioContext event loop in Rust.
#![warn(missing_docs)]

pub mod kernel;
pub mod sync;
pub mod trace;
