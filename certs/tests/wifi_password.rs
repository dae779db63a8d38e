//! The WiFi passphrase can reach `certs image` without appearing in the process list:
//! from the WIFI_PASSWORD environment variable or from stdin.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::{Work, assert_bad_input};
use firmware_core::config::DeviceConfig;

fn work() -> Work {
    let work = Work::new();
    work.certs_ok(&["init", "--out", "pki"]);
    work
}

const IMAGE: &[&str] = &[
    "image",
    "--creds",
    "pki/device",
    "--out",
    "flash.img",
    "--force",
];

fn run(work: &Work, extra: &[&str], env: Option<&str>, stdin: Option<&[u8]>) -> Output {
    let args: Vec<&str> = IMAGE.iter().chain(extra).copied().collect();
    let mut command = work.certs_command(&args);
    if let Some(value) = env {
        command.env("WIFI_PASSWORD", value);
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run certs");
    let mut pipe = child.stdin.take().unwrap();
    // A certs that has already exited (an error, or it read what it needed) closes the
    // pipe: what it printed says why, so the write's own error is not the finding.
    let _ = pipe.write_all(stdin.unwrap_or_default());
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn stored_password(work: &Work) -> String {
    let image = certs::image::read_image(&work.read("flash.img")).unwrap();
    let config = DeviceConfig::from_json(image.file("/config.json").unwrap()).unwrap();
    config.wifi.password.to_string()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    stdout + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn the_password_comes_from_the_environment() {
    let work = work();
    let shown = ok(&run(&work, &[], Some("env-pass-123"), None));
    assert_eq!(stored_password(&work), "env-pass-123");
    assert!(!shown.contains("env-pass"), "{shown}");
}

#[test]
fn the_password_comes_from_stdin() {
    let work = work();
    let shown = ok(&run(
        &work,
        &["--wifi-password-stdin"],
        Some("not-this-one"),
        Some(b"stdin pass 456\r\nsecond line\n"),
    ));
    assert_eq!(stored_password(&work), "stdin pass 456");
    assert!(!shown.contains("456"), "{shown}");
    assert_bad_input(
        &run(&work, &["--wifi-password-stdin"], None, Some(b"")),
        &["--wifi-password-stdin", "no password"],
    );
    let out = run(
        &work,
        &["--wifi-password-stdin", "--wifi-password", "x"],
        None,
        Some(b"y\n"),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn the_flag_still_works_but_warns_and_wins_over_the_environment() {
    let work = work();
    let out = run(
        &work,
        &["--wifi-password", "flag-pass"],
        Some("env-pass"),
        None,
    );
    let shown = ok(&out);
    assert_eq!(stored_password(&work), "flag-pass");
    assert!(shown.contains("visible to every user"), "{shown}");
    // Without any source the image has no password.
    ok(&run(&work, &[], Some(""), None));
    assert_eq!(stored_password(&work), "");
}

#[test]
fn help_names_the_safe_ways() {
    let work = Work::new();
    let help = work.certs_ok(&["image", "--help"]);
    assert!(help.contains("WIFI_PASSWORD"), "{help}");
    assert!(help.contains("--wifi-password-stdin"), "{help}");
}
