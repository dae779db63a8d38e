//! Link arguments for the on-target tests: embedded-test's linker script (the test
//! list probe-rs reads from the ELF). The application links with `-Tlinkall.x` only
//! (see `.cargo/config.toml`).
//!
//! `BUILD_EPOCH`: the build date (Unix seconds), below which the device refuses a time
//! from SNTP. `SOURCE_DATE_EPOCH` wins when set (reproducible builds).
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo::rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    println!("cargo::rustc-env=BUILD_EPOCH={epoch}");
    println!("cargo::rustc-link-arg-tests=-Tembedded-test.x");
    // embedded-test's macro emits `cfg(rust_analyzer)`.
    println!("cargo::rustc-check-cfg=cfg(rust_analyzer)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=SERVER_CERT_DER");
}
