//! The `virtual-device` binary end to end: serial through a real pseudo-terminal, the
//! flash image, SNTP, mosquitto, and a clean stop on SIGTERM/SIGINT.

mod common;

use std::path::Path;
use std::time::Duration;

use common::device::{DeviceProcess, SerialCapture, sntp_server};
use common::image::{config_json, device_image};
use common::mosquitto::Mosquitto;
use common::pki::{DEVICE_CN, TestPki};

const WAIT: Duration = Duration::from_secs(15);

fn spawn_device(flash: &Path, serial: &SerialCapture) -> DeviceProcess {
    DeviceProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_virtual-device")),
        flash,
        serial.path(),
    )
    .unwrap()
}

#[test]
fn a_missing_image_file_exits_naming_the_path_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.img");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_virtual-device"))
        .arg("--flash")
        .arg(&absent)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&absent.display().to_string()), "{stderr}");
    assert!(stderr.contains("certs image"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_image_is_retried_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let damaged = dir.path().join("damaged.img");
    std::fs::write(&damaged, vec![0x5Au8; 64 * 1024]).unwrap();
    let mut capture = SerialCapture::open().unwrap();
    let child = spawn_device(&damaged, &capture);

    // Not an image: the session's first step fails and is retried, as on the chip.
    let failed = capture
        .until("config failure", WAIT, |l| l.tag() == "config")
        .await;
    assert_eq!(failed.line.message(), "load failed");
    assert_eq!(failed.line.field("error"), Some("malformed"));
    let backoff = capture
        .until("backoff", WAIT, |l| l.message() == "backoff")
        .await;
    assert_eq!(backoff.line.tag(), "config");
    assert_eq!(backoff.line.field("attempt"), Some("1"));

    child.signal(libc::SIGTERM).unwrap();
    let last = capture
        .until("shutdown", WAIT, |l| l.tag() == "shutdown")
        .await;
    assert_eq!(last.line.field("reason"), Some("signal"));
    assert!(child.wait_exit(WAIT).await.unwrap().success());
}

fn epoch_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread")]
async fn boots_connects_logs_inbound_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path()).unwrap();
    let broker = Mosquitto::start(&pki).unwrap();
    let ntp_port = sntp_server().unwrap();
    let json = config_json(
        "localhost",
        broker.port(),
        ("127.0.0.1", ntp_port),
        DEVICE_CN,
    );
    let image = device_image(
        &json,
        &pki.device_cert_der,
        &pki.device_key_der,
        &pki.ca_der,
    );
    let flash = dir.path().join("flash.img");
    std::fs::write(&flash, image).unwrap();

    let mut capture = SerialCapture::open().unwrap();
    let child = spawn_device(&flash, &capture);

    let boot = capture
        .until("boot", WAIT, |l| l.tag() == "boot")
        .await
        .line;
    assert_eq!(boot.field("client_id"), Some(DEVICE_CN));
    assert_eq!(boot.field("board"), Some("virtual"));
    let creds = capture
        .until("creds", WAIT, |l| l.tag() == "creds")
        .await
        .line;
    assert_eq!(
        creds.field("key"),
        Some(format!("{}B", pki.device_key_der.len()).as_str())
    );
    capture
        .until("wifi up", WAIT, |l| {
            l.tag() == "wifi" && l.message() == "up"
        })
        .await;
    let time = capture
        .until("time", WAIT, |l| l.tag() == "time")
        .await
        .line;
    let epoch: u64 = time.field_as("epoch").unwrap();
    assert!(epoch.abs_diff(epoch_now()) < 60, "{time}");
    let connected = capture
        .until("connected", WAIT, |l| l.message() == "connected")
        .await
        .line;
    let handshake_ms: u32 = connected.field_as("handshake_ms").unwrap();
    eprintln!("device reports handshake_ms={handshake_ms}");
    assert_eq!(connected.field("session"), Some("new"));
    let heap = capture
        .until("heap", WAIT, |l| l.tag() == "heap")
        .await
        .line;
    eprintln!("{heap}");
    capture
        .until("subscribed", WAIT, |l| l.message() == "subscribed")
        .await;

    broker.publish("inTopic", b"hello", 1).await.unwrap();
    let inbound = capture
        .until("inbound", WAIT, |l| l.tag() == "inbound")
        .await
        .line;
    assert_eq!(inbound.field("topic"), Some("inTopic"));
    assert_eq!(inbound.payload(), Some("hello"));

    child.signal(libc::SIGINT).unwrap();
    let last = capture
        .until("shutdown", WAIT, |l| l.tag() == "shutdown")
        .await
        .line;
    assert_eq!(last.field("reason"), Some("signal"));
    assert!(child.wait_exit(WAIT).await.unwrap().success());
}

/// Run by hand without the broker's SNTP server, the device says whom it asked and what
/// to start, once, besides logging each failure with the server's address.
#[tokio::test(flavor = "multi_thread")]
async fn no_sntp_answer_names_the_server_and_hints_make_broker() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let dir = tempfile::tempdir().unwrap();
    // A UDP port with nobody behind it: bound, then released.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    drop(silent);
    let pki = TestPki::generate(dir.path()).unwrap();
    let json = config_json("localhost", 8883, ("127.0.0.1", port), DEVICE_CN);
    let image = device_image(
        &json,
        &pki.device_cert_der,
        &pki.device_key_der,
        &pki.ca_der,
    );
    let flash = dir.path().join("flash.img");
    std::fs::write(&flash, image).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_virtual-device"))
        .arg("--flash")
        .arg(&flash)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut serial = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let server = format!("127.0.0.1:{port}");
    let hint = tokio::time::timeout(Duration::from_secs(30), stderr.next_line())
        .await
        .expect("a hint within the SNTP attempts' timeouts")
        .unwrap()
        .unwrap();
    assert!(
        hint.contains(&server) && hint.contains("make broker"),
        "{hint}"
    );
    let logged = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(line)) = serial.next_line().await {
            if line.contains("time: sync failed") {
                return line;
            }
        }
        String::new()
    })
    .await
    .unwrap();
    assert!(logged.contains(&format!("server={server}")), "{logged}");
}
