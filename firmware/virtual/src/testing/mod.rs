//! Test support: a mosquitto harness, a throwaway PKI and flash images.
//!
//! It lives in the library behind the `test-support` feature (and `cfg(test)`) rather than
//! in `tests/support/` so that other crates' integration tests (the HIL runner) can use it
//! as a dev-dependency. It needs `mosquitto`, `mosquitto_pub`/`mosquitto_sub` and
//! `openssl` on the PATH (Debian packages).

pub mod device;
pub mod image;
pub mod mosquitto;
pub mod pki;
