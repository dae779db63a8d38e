//! `hil`: the hardware-in-the-loop runner (DESIGN.md section 5). It starts the device
//! (the virtual device behind a pseudo-terminal, or a flashed ESP32-C3 or ESP8266 board),
//! captures its serial log through the same code a USB port uses, drives the mock broker,
//! and asserts cadence, inbound handling and reconnects against both the broker's
//! observations and the parsed log.
//!
//! # Layout
//!
//! - [`serial`]: [`serial::SerialCapture`], lines from a pty or USB port with host
//!   timestamps, parsed with `firmware_core::log::Line`.
//! - [`backend`]: device backends behind one trait (start on a flash image, serial
//!   capture, exited?): [`backend::virtual_device`] (a process per scenario behind a
//!   pty), [`backend::esp32c3`] (espflash library, partition table, USB-Serial-JTAG),
//!   [`backend::esp8266`] (esptool, the Arduino sketch's log translated to `Line`s);
//!   [`backend::ports`] finds a board's port by USB id, [`backend::flashing`] draws
//!   flashing progress.
//! - [`rig`]: one test PKI, one mock broker, per-device identities and flash images.
//! - [`scenarios`]: the scenarios as data (name, tolerance, exclusivity) plus their checks.
//! - [`vocabulary`]: which log lines a board's firmware can print (the tutorial sketch
//!   prints few); what backends speak and scenarios need.
//! - [`runner`]: concurrent then exclusive execution, per-scenario reports.
//! - [`normalise`]: the serial log with run-dependent figures redacted (snapshots).
//! - [`snapshots`]: `hil run --snapshots`: the same snapshots `cargo test -p hil` checks,
//!   compared in the daily loop, with pending files for `cargo insta review`.
//! - [`report`]: summary table, JUnit XML, report folder with a self-contained HTML page
//!   (interval plot and connection timeline per scenario, [`report::html`]).
//! - [`aws`]: `--target aws`: the observer connection (a second identity over MQTT + TLS)
//!   that watches and injects on a real AWS IoT endpoint.
//! - [`error`]: errors, grouped by who is at fault (rig, backend, device, check), so a
//!   failing scenario and a broken rig read differently.
//! - [`fleet`]: `hil fleet`: N virtual devices (the real core) in one process against
//!   one broker, with the fleet's figures and report.
//! - [`cli`]: `hil list`, `hil run`, `hil qualify`, `hil fleet`.

pub mod aws;
pub mod backend;
pub mod cli;
pub mod error;
pub mod fleet;
pub mod normalise;
pub mod qualify;
pub mod report;
pub mod rig;
pub mod runner;
pub mod scenarios;
pub mod serial;
pub mod snapshots;
pub mod third_party;
pub mod vocabulary;
