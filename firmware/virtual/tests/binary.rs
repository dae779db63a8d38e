//! The `virtual-device` binary end to end: serial through a real pseudo-terminal, the
//! flash image, SNTP, mosquitto, and a clean stop on SIGTERM/SIGINT.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use firmware_core::log::Line;
use firmware_core::sntp::NtpTimestamp;
use virtual_device::testing::image::{config_json, device_image};
use virtual_device::testing::mosquitto::Mosquitto;
use virtual_device::testing::pki::{DEVICE_CN, TestPki};

const WAIT: Duration = Duration::from_secs(15);

/// The rig's side of the serial port: a pty master whose lines arrive on a channel.
struct SerialCapture {
    slave_path: PathBuf,
    // Held open so the master never sees a hang-up between device runs.
    _slave: OwnedFd,
    lines: mpsc::Receiver<String>,
}

impl SerialCapture {
    fn open() -> Self {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: valid out-pointers; the optional arguments may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0);
        // SAFETY: fresh descriptors from openpty, owned from here on.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let slave_path =
            std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd())).unwrap();
        let (tx, lines) = mpsc::channel();
        let mut reader = BufReader::new(File::from(master));
        std::thread::spawn(move || {
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if tx.send(std::mem::take(&mut line)).is_err() {
                    break;
                }
            }
        });
        Self {
            slave_path,
            _slave: slave,
            lines,
        }
    }

    /// Next line (raw, with its line ending) within the deadline.
    fn next_raw(&self, deadline: Instant) -> Option<String> {
        let left = deadline.checked_duration_since(Instant::now())?;
        self.lines.recv_timeout(left).ok()
    }

    /// Read lines until one satisfies `pred`; returns it and every line before it.
    fn until(&self, what: &str, pred: impl Fn(&Line) -> bool) -> (Line, Vec<Line>) {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let Some(raw) = self.next_raw(deadline) else {
                panic!("no {what} line; saw: {seen:#?}");
            };
            assert!(raw.ends_with("\r\n"), "{raw:?}");
            let line: Line = raw.parse().unwrap_or_else(|e| panic!("{raw:?}: {e:?}"));
            if pred(&line) {
                return (line, seen);
            }
            seen.push(line);
        }
    }
}

/// The device process; killed on drop so a failing test leaves nothing behind.
struct Device(Option<Child>);

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_device(flash: &std::path::Path, serial: &std::path::Path) -> Device {
    let child = Command::new(env!("CARGO_BIN_EXE_virtual-device"))
        .arg("--flash")
        .arg(flash)
        .arg("--serial")
        .arg(serial)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Device(Some(child))
}

fn signal(device: &Device, sig: libc::c_int) {
    let pid = device.0.as_ref().unwrap().id();
    // SAFETY: plain kill(2) on our own, not yet reaped, child's pid.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

fn wait_exit(mut device: Device) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    let child = device.0.as_mut().unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            panic!("device did not exit");
        }
        // Polling a child's exit status: there is no exit event to wait on with a timeout.
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn missing_image_retries_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let capture = SerialCapture::open();
    let child = spawn_device(&dir.path().join("absent.img"), &capture.slave_path);

    // No image, no config: the session's first step fails and is retried.
    let (failed, _) = capture.until("config failure", |l| l.tag() == "config");
    assert_eq!(failed.message(), "load failed");
    assert_eq!(failed.field("error"), Some("missing"));
    let (backoff, _) = capture.until("backoff", |l| l.message() == "backoff");
    assert_eq!(backoff.tag(), "config");
    assert_eq!(backoff.field("attempt"), Some("1"));

    signal(&child, libc::SIGTERM);
    let (last, _) = capture.until("shutdown", |l| l.tag() == "shutdown");
    assert_eq!(last.field("reason"), Some("signal"));
    assert!(wait_exit(child).success());
}

fn epoch_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An SNTP server on loopback answering with the host's time (the test certificates are
/// valid from the moment they were made).
fn sntp_server() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 128];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            if n < 48 {
                continue;
            }
            let mut reply = [0u8; 48];
            reply[0] = (4 << 3) | 4;
            reply[1] = 1;
            reply[24..32].copy_from_slice(&buf[40..48]);
            let t = NtpTimestamp::from_unix(epoch_now(), 0)
                .to_bits()
                .to_be_bytes();
            reply[32..40].copy_from_slice(&t);
            reply[40..48].copy_from_slice(&t);
            let _ = socket.send_to(&reply, peer);
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn boots_connects_logs_inbound_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path()).unwrap();
    let broker = Mosquitto::start(&pki).unwrap();
    let ntp_port = sntp_server();
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

    let capture = SerialCapture::open();
    let child = spawn_device(&flash, &capture.slave_path);

    let (boot, _) = capture.until("boot", |l| l.tag() == "boot");
    assert_eq!(boot.field("client_id"), Some(DEVICE_CN));
    assert_eq!(boot.field("board"), Some("virtual"));
    let (creds, _) = capture.until("creds", |l| l.tag() == "creds");
    assert_eq!(
        creds.field("key"),
        Some(format!("{}B", pki.device_key_der.len()).as_str())
    );
    capture.until("wifi up", |l| l.tag() == "wifi" && l.message() == "up");
    let (time, _) = capture.until("time", |l| l.tag() == "time");
    let epoch: u64 = time.field_as("epoch").unwrap();
    assert!(epoch.abs_diff(epoch_now()) < 60, "{time}");
    let (connected, _) = capture.until("connected", |l| l.message() == "connected");
    let handshake_ms: u32 = connected.field_as("handshake_ms").unwrap();
    eprintln!("device reports handshake_ms={handshake_ms}");
    assert_eq!(connected.field("session"), Some("new"));
    let (heap, _) = capture.until("heap", |l| l.tag() == "heap");
    eprintln!("{heap}");
    capture.until("subscribed", |l| l.message() == "subscribed");

    broker.publish("inTopic", b"hello", 1).await.unwrap();
    let (inbound, _) = capture.until("inbound", |l| l.tag() == "inbound");
    assert_eq!(inbound.field("topic"), Some("inTopic"));
    assert_eq!(inbound.payload(), Some("hello"));

    signal(&child, libc::SIGINT);
    let (last, _) = capture.until("shutdown", |l| l.tag() == "shutdown");
    assert_eq!(last.field("reason"), Some("signal"));
    assert!(wait_exit(child).success());
}
