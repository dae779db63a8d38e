//! The virtual device: the AWS IoT thing's firmware on the host, over real TCP + TLS.
//!
//! It reads the same flash image as the ESP32-C3, prints the same serial log (to stdout
//! or a pseudo-terminal), and talks to the broker through the same TLS and MQTT crates
//! (embedded-tls, minimq) with the board's buffer sizes.
//!
//! # Layout
//! - [`cli`]: the command line (`--flash`, `--serial`).
//! - [`flash`]: load the flash image with `firmware_core::image`; failures become log lines.
//! - [`serial`]: the serial port: CRLF lines to stdout or a (pseudo-)terminal.
//! - [`net`]: the "wifi" step: resolve the endpoint, find the local address.
//! - [`sntp`]: SNTP client over tokio UDP (`firmware_core::sntp` codec), timeout + retries.
//! - [`transport`]: tokio TCP + embedded-tls + minimq; buffer sizes, crypto provider choice.
//! - [`heap`]: counting global allocator for the `heap:` line.
//! - [`shutdown`]: a clean stop on Ctrl-C or SIGTERM, with a final log line.
//! - [`device`]: the driver: `firmware_core::session` over all of the above.
//!
//! The device's own tests (`tests/`, sharing `tests/common`) cover what the HIL suite's
//! scenarios do not: mosquitto interop, an RSA chain, split TLS records, the binary's
//! exits and signals.

pub mod cli;
pub mod device;
pub mod flash;
pub mod heap;
pub mod net;
pub mod serial;
pub mod shutdown;
pub mod sntp;
pub mod transport;

// embassy-time's driver on the host (minimq's timeouts): linked here, so the binary and
// every crate that runs devices in-process (`hil fleet`) get it.
use host_time as _;
