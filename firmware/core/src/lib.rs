//! The AWS IoT thing's device logic, shared by every board.
//!
//! # Layout
//! - [`config`]: `/config.json` from the flash image — the one definition of its format,
//!   read so every error names its field and rule; AWS IoT's topic rules.
//! - [`creds`]: the one check (feature `tls`) of `/cert.der`, `/private.der` and `/ca.der`
//!   (well-formed DER, the key is the certificate's, the CA is a CA and undamaged), run
//!   by both boards at load and by the `certs` tool.
//! - [`driver`] (feature `driver`): the driver loop every board runs, [`driver::Runner`],
//!   over tiny board hooks (clock, network, SNTP, storage, log); the TLS handshake, the
//!   buffer sizes and the cancel-safety rules live there once. Its docs hold the board
//!   boundary: what a board may and may not do.
//! - [`image`] (feature `flash-image`): the LittleFS flash image holding the credentials
//!   and config, read on the device and written by the `certs` tool; how a load failure
//!   reaches the session ([`image::ImageFailure`]).
//! - [`log`]: the serial log line — one type formats it on the device and parses it in
//!   the test rig; typed constructors for every event, escaping and truncation.
//! - [`mqtt`] (feature `mqtt`): the driver glue around minimq every board shares — the
//!   owned action queue, the session config, the bookkeeping that turns SUBACKs and
//!   PUBACKs into session events.
//! - [`session`]: the sans-IO session state machine — events in, actions out, with
//!   explicit time: boot phases, publish cadence, reconnect backoff, keep-alive, QoS 1
//!   retries.
//! - [`sntp`]: SNTPv4 request/reply codec (anti-spoof originate check, 2036 rollover).
//! - [`topic`]: MQTT topic filter matching, to tell our messages from unsolicited ones.
//! - [`tls`] (features `tls`, `tls-rsa`): embedded-tls crypto provider with the device
//!   key, the server-certificate verifier, and the record-atomic transport under TLS.
//!
//! The crate builds without the standard library (`core` only; `alloc` with the `mqtt`
//! and `tls-rsa` features) and never reads a clock or opens a socket, so every behaviour is testable on
//! the host with explicit time. Unit tests live in files named `tests.rs`, the only place
//! the standard library appears.
#![cfg_attr(not(test), no_std)]

#[cfg(any(feature = "mqtt", feature = "tls-rsa"))]
extern crate alloc;

pub mod config;
pub mod creds;
#[cfg(feature = "driver")]
pub mod driver;
#[cfg(feature = "flash-image")]
pub mod image;
pub mod log;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod session;
pub mod sntp;
#[cfg(feature = "tls")]
pub mod tls;
pub mod topic;
