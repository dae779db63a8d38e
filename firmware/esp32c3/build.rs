//! Link arguments for the on-target tests: embedded-test's linker script (the test
//! list probe-rs reads from the ELF). The application links with `-Tlinkall.x` only
//! (see `.cargo/config.toml`).
fn main() {
    println!("cargo::rustc-link-arg-tests=-Tembedded-test.x");
    // embedded-test's macro emits `cfg(rust_analyzer)`.
    println!("cargo::rustc-check-cfg=cfg(rust_analyzer)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=SERVER_CERT_DER");
}
