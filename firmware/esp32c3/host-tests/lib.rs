//! The firmware's HAL-free modules, compiled for the host from the firmware's own source
//! files (not copies), so `tests/` can run them here.
#![no_std]

#[path = "../src/serial/lines.rs"]
pub mod lines;
