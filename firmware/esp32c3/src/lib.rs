//! The AWS IoT thing on an ESP32-C3: `firmware_core`'s session driven over esp-hal,
//! esp-radio WiFi, embassy-net, embedded-tls and minimq.
//!
//! The core owns every policy (boot order, cadence, backoff, keep-alive, QoS 1, the log
//! lines); this crate only carries out the session's actions on the chip and reports
//! what happened, as `firmware/virtual` does on the host.
//!
//! # Layout
//! - [`board`]: peripherals to a [`board::Board`] — clocks, heap, scheduler, hardware
//!   RNG, flash, WiFi controller and the status LED pin.
//! - [`storage`]: the `storage` data partition (from the partition table) as the core's
//!   `image::Flash`, over esp-storage; credentials are read with `firmware_core::image`.
//! - [`net`]: WiFi station and embassy-net (DHCP, DNS); the WiFi and stack tasks.
//! - [`sntp`]: `firmware_core::sntp` over an embassy-net UDP socket, in a task of its own
//!   so a re-sync runs beside the MQTT connection.
//! - [`transport`]: the TCP socket's windows and timeout, under the core's TLS + MQTT.
//! - [`driver`]: the chip's hooks for `firmware_core::driver::Runner`, the loop every
//!   board runs (clock, WiFi network, SNTP task, flash partition, log, heap, LED).
//! - [`rsa`]: the RSA accelerator as the core's `RsaExponentiator`: an RSA device key's
//!   CertificateVerify is signed in hardware (checked with the public key by the core).
//! - [`serial`]: log lines over USB-Serial-JTAG, dropped lines counted and reported
//!   in-band ([`serial::lines`], HAL-free); [`heap`]: esp-alloc regions and figures;
//!   [`led`]: the blinking LED.
//! - [`libc`]: `strspn`/`strcspn`, the C functions littlefs needs beyond the ROM's.
//!
//! # Memory
//! TLS + MQTT buffers: `firmware_core::driver::buffers::BUFFER_BYTES` (43.5 KiB, static). Heap:
//! [`heap::HEAP_BYTES`] for the WiFi driver, RSA arithmetic and the driver's queue.
#![no_std]

extern crate alloc;

pub mod board;
pub mod driver;
pub mod heap;
pub mod led;
pub mod libc;
pub mod net;
pub mod rsa;
pub mod serial;
pub mod sntp;
pub mod storage;
pub mod transport;
