//! What the device's own tests share: the mosquitto harness, the test PKI's files (from
//! the `certs` library), flash images (from `firmware_core::image`) and the device
//! process with its serial port (the HIL rig's capture).
#![allow(dead_code)] // Each test target uses its own part of this.

pub mod device;
pub mod image;
pub mod mosquitto;
pub mod pki;
