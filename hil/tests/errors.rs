//! `hil run` with bad input stops before anything runs, naming the cause and the fix,
//! with exit code 2, and still writes a JUnit file that says why.

use std::process::{Command, Output};

fn hil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hil"))
        .arg("run")
        .args(args)
        .output()
        .expect("run hil")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_file_that_is_not_a_flash_image_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("notes.txt");
    std::fs::write(&image, "not an image").unwrap();
    let junit = dir.path().join("junit.xml");
    let out = hil(&[
        "--flash",
        image.to_str().unwrap(),
        "--scenario",
        "boot",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let why = stderr(&out);
    assert!(
        why.contains("notes.txt: not a flash image") && why.contains("certs image"),
        "{why}"
    );
    let xml = std::fs::read_to_string(&junit).expect("JUnit written for a setup error");
    assert!(
        xml.contains(r#"errors="1""#) && xml.contains("not a flash image"),
        "{xml}"
    );
}

#[test]
fn an_empty_pki_folder_points_at_certs_init() {
    let dir = tempfile::tempdir().unwrap();
    let out = hil(&["--pki", dir.path().to_str().unwrap(), "--scenario", "boot"]);
    assert_eq!(out.status.code(), Some(2));
    let why = stderr(&out);
    assert!(
        why.contains("ca.pem") && why.contains("certs -- init"),
        "{why}"
    );
}

/// A file with the header of a 32-bit RISC-V ELF, as the ESP32-C3 firmware has.
fn riscv_elf(dir: &std::path::Path) -> std::path::PathBuf {
    let mut elf = b"\x7fELF\x01\x01".to_vec();
    elf.resize(64, 0);
    elf[18..20].copy_from_slice(&243u16.to_le_bytes());
    let path = dir.join("firmware.elf");
    std::fs::write(&path, elf).unwrap();
    path
}

#[test]
fn a_port_that_does_not_exist_lists_the_ports_seen() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("flash.img");
    std::fs::write(&image, vec![0u8; 4096]).unwrap();
    let firmware = riscv_elf(dir.path());
    for board in ["esp32c3", "esp8266"] {
        let out = hil(&[
            "--board",
            board,
            "--port",
            "/dev/no-such-port",
            "--firmware",
            firmware.to_str().unwrap(),
            "--flash",
            image.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{board}");
        let why = stderr(&out);
        assert!(
            why.contains("no serial port /dev/no-such-port") && why.contains("ports seen:"),
            "{board}: {why}"
        );
    }
}

#[test]
fn firmware_for_another_machine_is_refused_before_touching_the_board() {
    // A pseudo-terminal stands in for the port; nothing is written to it.
    let pty = hil::serial::SerialCapture::pseudo_terminal().unwrap();
    let port = pty.device_path().unwrap().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("flash.img");
    std::fs::write(&image, vec![0u8; 4096]).unwrap();
    let out = hil(&[
        "--board",
        "esp32c3",
        "--port",
        &port,
        "--firmware",
        "/bin/sh",
        "--flash",
        image.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let why = stderr(&out);
    assert!(
        why.contains("not a 32-bit RISC-V one") && why.contains("make firmware"),
        "{why}"
    );
}

#[test]
fn a_loopback_image_is_refused_for_a_board_before_anything_is_flashed() {
    // A pseudo-terminal stands in for the port; esptool never runs.
    let pty = hil::serial::SerialCapture::pseudo_terminal().unwrap();
    let port = pty.device_path().unwrap().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    // What `make certs` writes for the virtual device: no WiFi, the broker on localhost.
    let json = br#"{"endpoint": {"host": "localhost", "port": 8883}, "client_id": "ESPthing"}"#;
    let bytes = certs::image::build_image_files(
        &[(certs::image::CONFIG_PATH, json)],
        certs::image::DEFAULT_IMAGE_SIZE,
    )
    .unwrap();
    let image = dir.path().join("flash.img");
    std::fs::write(&image, bytes).unwrap();
    let sketch = dir.path().join("sketch.bin");
    std::fs::write(&sketch, vec![0xe9; 4096]).unwrap();
    let out = hil(&[
        "--board",
        "esp8266",
        "--port",
        &port,
        "--firmware",
        sketch.to_str().unwrap(),
        "--flash",
        image.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let why = stderr(&out);
    assert!(
        why.contains("flash.img has no WiFi SSID")
            && why.contains("certs image --wifi-ssid")
            && !why.contains("esptool"),
        "{why}"
    );
}
