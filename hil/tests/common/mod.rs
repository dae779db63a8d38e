//! Shared by the integration tests.

use std::path::PathBuf;
use std::process::Command;

use hil::backend::virtual_device::find_virtual_device;

/// The `virtual-device` binary, built if cargo has not built it yet: a package's tests
/// only get their own package's binaries. `cargo test --workspace` builds it anyway;
/// building it here only when missing keeps that build's features (rebuilding with other
/// features would make the two invocations undo each other).
pub fn virtual_device() -> PathBuf {
    if let Ok(path) = find_virtual_device() {
        return path;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "virtual-device",
            "--bin",
            "virtual-device",
        ])
        .status()
        .expect("run cargo build -p virtual-device");
    assert!(status.success(), "cargo build -p virtual-device failed");
    find_virtual_device().unwrap_or_else(|e| panic!("{e}"))
}
