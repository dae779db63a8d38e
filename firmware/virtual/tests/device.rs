//! The device end to end where only a third-party broker or a hostile link shows it:
//! the real `virtual-device` binary, its serial log read through a pseudo-terminal,
//! against Debian's mosquitto (TLS 1.3, client certificates required), observed by a
//! `mosquitto_sub` on the broker. Cadence, inbound, reconnect and the TLS refusals are
//! the HIL suite's scenarios (`hil/src/scenarios`), against the mock broker; these are
//! what no scenario covers: an RSA device key with an AWS-like RSA chain (signing in
//! software, through the accelerator hook, and with a faulty accelerator), the QoS 0
//! keep-alive probe, and TLS records split across the driver's poll deadlines.
//!
//! Every scenario waits for observed events with timeouts; the only sleep is the broker's
//! 5 s outage, which is the scenario itself. They take real time (ten publishes are 20 s),
//! so this target has its own runner (libtest-mimic) that runs them all at once, each
//! with its own broker, ports and device.

mod common;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use certs::pki::{self, InitOptions, KeyAlgorithm, Pki, Validity};
use common::device::{DeviceProcess, SerialCapture, sntp_server};
use common::image::device_image;
use common::mosquitto::{Mosquitto, Observer, Received};
use common::pki::{DEVICE_CN, TestPki};
use firmware_core::log::Line;
use libtest_mimic::{Arguments, Trial};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Boot to the first publish: image, SNTP, TLS, CONNACK, SUBACK and one period.
const BOOT: Duration = Duration::from_secs(15);
const WAIT: Duration = Duration::from_secs(10);
/// The shortest keep-alive the config allows (AWS IoT's minimum).
const KEEPALIVE_S: u64 = 30;
/// The names the broker's certificate is for; the device dials `localhost`.
const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

fn main() {
    let mut args = Arguments::from_args();
    // The scenarios mostly wait on the clock; run them together.
    if args.test_threads.is_none() {
        args.test_threads = Some(16);
    }
    let trials = vec![
        trial(
            "rsa_device_key_and_aws_like_rsa_chain",
            rsa_device_key_and_aws_like_rsa_chain,
        ),
        trial(
            "rsa_device_key_signs_through_the_accelerator_hook",
            rsa_device_key_signs_through_the_accelerator_hook,
        ),
        trial(
            "a_faulty_rsa_accelerator_is_caught_and_software_signs",
            a_faulty_rsa_accelerator_is_caught_and_software_signs,
        ),
        trial(
            "qos0_device_probes_a_quiet_link_before_keepalive",
            qos0_device_probes_a_quiet_link_before_keepalive,
        ),
        trial(
            "slow_records_across_poll_deadlines_keep_the_session",
            slow_records_across_poll_deadlines_keep_the_session,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

fn trial<F, Fut>(name: &'static str, scenario: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    Trial::test(name, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(scenario());
        Ok(())
    })
}

fn config_json(port: u16, ntp_port: u16, period_ms: u32, qos: u8) -> String {
    common::image::device_config("localhost", port, ("127.0.0.1", ntp_port), DEVICE_CN, |c| {
        c.period_ms = period_ms;
        c.keepalive_s = KEEPALIVE_S as u16;
        c.qos = qos;
    })
}

/// A running device: its process and the rig's end of its serial port.
struct Device {
    process: DeviceProcess,
    serial: SerialCapture,
}

/// Write the image to `dir` and start the binary with its serial on a fresh pty (QoS 1).
fn start_device(dir: &Path, pki: &TestPki, port: u16, period_ms: u32) -> Device {
    start_device_qos(dir, pki, port, period_ms, 1)
}

fn start_device_qos(dir: &Path, pki: &TestPki, port: u16, period_ms: u32, qos: u8) -> Device {
    start_device_full(dir, pki, port, period_ms, qos, &[])
}

/// As [`start_device`], with more `virtual-device` arguments.
fn start_device_with(
    dir: &Path,
    pki: &TestPki,
    port: u16,
    period_ms: u32,
    extra: &[&str],
) -> Device {
    start_device_full(dir, pki, port, period_ms, 1, extra)
}

fn start_device_full(
    dir: &Path,
    pki: &TestPki,
    port: u16,
    period_ms: u32,
    qos: u8,
    extra: &[&str],
) -> Device {
    let ntp_port = sntp_server().expect("sntp server");
    let json = config_json(port, ntp_port, period_ms, qos);
    let image = device_image(
        &json,
        &pki.device_cert_der,
        &pki.device_key_der,
        &pki.ca_der,
    );
    let flash = dir.join("flash.img");
    std::fs::write(&flash, image).expect("write image");
    let serial = SerialCapture::open().expect("pty");
    let process = DeviceProcess::spawn_with(
        Path::new(env!("CARGO_BIN_EXE_virtual-device")),
        &flash,
        serial.path(),
        extra,
    )
    .expect("spawn device");
    Device { process, serial }
}

/// The test PKI `certs init` makes (same library, default options: P-256, thing
/// `ESPthing`, server SANs localhost and 127.0.0.1), as files for the mosquitto harness.
fn init_pki() -> (tempfile::TempDir, TestPki) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::generate(&InitOptions::default()).expect("certs init pki");
    let test_pki = TestPki::write(
        dir.path(),
        &pki,
        &pki.ca.cert_pem(),
        &pki.server.cert_pem(),
        &pki.server.key_pem(),
    )
    .expect("pki files");
    (dir, test_pki)
}

fn is_publish(l: &Line) -> bool {
    // The publish line itself (not `publish: retry` or `publish: skipped`).
    l.tag() == "publish" && l.message().is_empty()
}

fn payload_for(seq: u32) -> String {
    firmware_core::session::hello_payload(seq).to_string()
}

async fn next_message(observer: &mut Observer, timeout: Duration, what: &str) -> Received {
    observer
        .next(timeout)
        .await
        .unwrap_or_else(|| panic!("observer saw no {what} within {timeout:?}"))
}

/// An RSA-2048 device key from the test CA, a mosquitto whose certificate chains to an
/// AWS-like RSA root (which the device trusts, as it would Amazon Root CA 1), and an
/// observer of `outTopic`.
async fn rsa_rig(dir: &Path) -> (TestPki, Mosquitto, Observer) {
    let options = InitOptions {
        key: KeyAlgorithm::Rsa2048,
        ..InitOptions::default()
    };
    let pki = Pki::generate(&options).expect("rsa pki");
    let chain = pki::aws_like_chain(&SERVER_NAMES, Validity::days(30)).expect("aws-like chain");
    // The broker checks clients against the test CA; the observer verifies the broker
    // against the AWS-like root; one bundle serves both.
    let bundle = pki.ca.cert_pem() + &chain.root.cert_pem();
    let mut test_pki = TestPki::write(
        dir,
        &pki,
        &bundle,
        &chain.server_chain_pem(),
        &chain.server.key_pem(),
    )
    .expect("pki files");
    // The device trusts only the AWS-like root, as it would trust Amazon Root CA 1.
    test_pki.ca_der = chain.root.cert_der().to_vec();
    let broker = Mosquitto::start(&test_pki).expect("mosquitto");
    let observer = broker.observe(&["outTopic"]).await.expect("observer");
    assert!(
        test_pki.device_key_der.len() > 1000,
        "an RSA-2048 PKCS#1 key, not P-256: {} bytes",
        test_pki.device_key_der.len()
    );
    (test_pki, broker, observer)
}

/// The RSA key signs in software (`None`) or through the accelerator hook, with the
/// core's software exponentiator standing in for the board's peripheral.
async fn rsa_device_key_and_aws_like_rsa_chain_with(hook: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (test_pki, broker, mut observer) = rsa_rig(dir.path()).await;
    let extra: Vec<&str> = hook.map_or(vec![], |h| vec!["--rsa-exponentiator", h]);
    let Device {
        process: _process,
        mut serial,
    } = start_device_with(dir.path(), &test_pki, broker.port(), 500, &extra);

    let connected = serial
        .until("connected", BOOT, |l| l.message() == "connected")
        .await;
    eprintln!("RSA device key, RSA chain: {}", connected.line);
    serial
        .until("subscribed", WAIT, |l| l.message() == "subscribed")
        .await;
    let msg = next_message(&mut observer, WAIT, "publish #1").await;
    assert_eq!(msg.payload_str(), payload_for(1));
    let faults = serial
        .seen()
        .iter()
        .filter(|l| is_accelerator_fault(l))
        .count();
    assert_eq!(faults, 0, "a sound exponentiator is never reported");
}

async fn rsa_device_key_and_aws_like_rsa_chain() {
    rsa_device_key_and_aws_like_rsa_chain_with(None).await;
}

async fn rsa_device_key_signs_through_the_accelerator_hook() {
    rsa_device_key_and_aws_like_rsa_chain_with(Some("software")).await;
}

fn is_accelerator_fault(line: &Line) -> bool {
    line.message() == "rsa accelerator signature failed its check"
}

/// A board whose RSA accelerator returns wrong results still connects (the core checks
/// every signature with the public key and signs in software instead), says so once, and
/// reconnects after a broker restart without the accelerator and without saying it again.
async fn a_faulty_rsa_accelerator_is_caught_and_software_signs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (test_pki, mut broker, mut observer) = rsa_rig(dir.path()).await;
    let Device {
        process: _process,
        mut serial,
    } = start_device_with(
        dir.path(),
        &test_pki,
        broker.port(),
        500,
        &["--rsa-exponentiator", "faulty"],
    );

    let fault = serial
        .until("the accelerator's fault", BOOT, is_accelerator_fault)
        .await;
    assert!(
        fault.line.to_string().contains("fallback=software"),
        "the line names the fallback: {}",
        fault.line
    );
    serial
        .until("connected", WAIT, |l| l.message() == "connected")
        .await;
    next_message(&mut observer, WAIT, "publish #1").await;

    broker.restart().expect("restart mosquitto");
    serial
        .until("connected after the restart", BOOT, |l| {
            l.message() == "connected"
        })
        .await;
    let faults = serial
        .seen()
        .iter()
        .filter(|l| is_accelerator_fault(l))
        .count();
    assert_eq!(
        faults, 1,
        "the fault is said once and the accelerator not used again"
    );
}

/// `5 + length` of the TLS record starting at `b`, once its header is there.
fn record_len(b: &[u8]) -> Option<usize> {
    (b.len() >= 5).then(|| 5 + usize::from(u16::from_be_bytes([b[3], b[4]])))
}

/// Forward broker -> device bytes, splitting every TLS record: its first half at once,
/// the rest (with every whole record that came meanwhile) after `delay`.
async fn split_records(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    delay: Duration,
    splits: &AtomicU64,
) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        while record_len(&buf).is_none_or(|n| buf.len() < n) {
            let n = from.read(&mut chunk).await?;
            if n == 0 {
                return to.write_all(&buf).await;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let len = record_len(&buf).unwrap_or(buf.len());
        let half = len / 2;
        to.write_all(&buf[..half]).await?;
        splits.fetch_add(1, Ordering::Relaxed);
        let until = tokio::time::Instant::now() + delay;
        let mut eof = false;
        while !eof {
            tokio::select! {
                () = tokio::time::sleep_until(until) => break,
                n = from.read(&mut chunk) => {
                    let n = n?;
                    eof = n == 0;
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        let mut end = len;
        while let Some(n) = record_len(&buf[end..]) {
            if buf.len() - end < n {
                break;
            }
            end += n;
        }
        if eof {
            return to.write_all(&buf[half..]).await;
        }
        to.write_all(&buf[half..end]).await?;
        buf.drain(..end);
    }
}

/// A TCP proxy to `upstream` that delays the second half of every TLS record from the
/// broker. Returns its port and the count of split records.
async fn slow_record_proxy(upstream: SocketAddr, delay: Duration) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let splits = Arc::new(AtomicU64::new(0));
    let counter = splits.clone();
    tokio::spawn(async move {
        while let Ok((device, _)) = listener.accept().await {
            let splits = counter.clone();
            tokio::spawn(async move {
                let Ok(broker) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = device.set_nodelay(true);
                let _ = broker.set_nodelay(true);
                let (mut device_rx, mut device_tx) = device.into_split();
                let (mut broker_rx, mut broker_tx) = broker.into_split();
                tokio::select! {
                    _ = tokio::io::copy(&mut device_rx, &mut broker_tx) => {}
                    _ = split_records(&mut broker_rx, &mut device_tx, delay, &splits) => {}
                }
            });
        }
    });
    (port, splits)
}

/// The driver cancels minimq's `poll()` at every session deadline (each publish slot,
/// here every 1000 ms); minimq's own read deadline (PINGREQ due at keep-alive - 5 s =
/// 25 s) is never reached while publishing. Holding the second half of each record back
/// 1500 ms therefore puts at least one cancelled read inside every record. The session
/// must survive: publishes continue in sequence, inbound still arrives, no disconnect.
async fn slow_records_across_poll_deadlines_keep_the_session() {
    const PERIOD_MS: u32 = 1000;
    const DELAY: Duration = Duration::from_millis(1500);
    let (dir, pki) = init_pki();
    let broker = Mosquitto::start(&pki).expect("mosquitto");
    let mut observer = broker.observe(&["outTopic"]).await.expect("observer");
    let (proxy_port, splits) = slow_record_proxy(broker.addr(), DELAY).await;
    let Device {
        process: _process,
        mut serial,
    } = start_device(dir.path(), &pki, proxy_port, PERIOD_MS);

    serial
        .until("subscribed", Duration::from_secs(30), |l| {
            l.message() == "subscribed"
        })
        .await;
    let after_subscribe = splits.load(Ordering::Relaxed);
    for n in 1..=5u32 {
        let msg = next_message(&mut observer, WAIT, &format!("publish #{n}")).await;
        assert_eq!(msg.payload_str(), payload_for(n));
    }
    broker
        .publish("inTopic", b"through the slow proxy", 1)
        .await
        .expect("mosquitto_pub");
    let inbound = serial
        .until("inbound", WAIT, |l| l.tag() == "inbound")
        .await;
    assert_eq!(inbound.line.payload(), Some("through the slow proxy"));
    // Acks for the later publishes crossed the proxy too.
    serial
        .until("publish seq=7", WAIT, |l| {
            is_publish(l) && l.field("seq") == Some("7")
        })
        .await;
    let split_total = splits.load(Ordering::Relaxed);
    eprintln!("records split: {split_total} ({after_subscribe} up to SUBACK)");
    // Records that arrive while one is held back go on whole with its second half, so
    // not every record is split; several after SUBACK were (PUBACKs, the inbound).
    assert!(
        split_total >= after_subscribe + 2,
        "records split after SUBACK: {split_total} - {after_subscribe}"
    );
    let trouble: Vec<String> = serial
        .seen()
        .iter()
        .filter(|l| {
            matches!(l.message(), "disconnected" | "handshake failed" | "retry")
                || l.message() == "skipped"
        })
        .map(ToString::to_string)
        .collect();
    assert!(trouble.is_empty(), "{trouble:#?}");
    let connects = serial
        .seen()
        .iter()
        .filter(|l| l.message() == "connected")
        .count();
    assert_eq!(connects, 1);
}

/// With QoS 0 nothing comes back from the broker while the device publishes, and minimq
/// pings only when it has not *sent* for a while. The session asks for `Ping` at 3/4 of
/// the keep-alive of silence; the driver answers with a re-SUBSCRIBE whose SUBACK proves
/// the link, so the session does not declare it dead at 1.5x keep-alive.
async fn qos0_device_probes_a_quiet_link_before_keepalive() {
    let (dir, pki) = init_pki();
    let broker = Mosquitto::start(&pki).expect("mosquitto");
    let Device {
        process: _process,
        mut serial,
    } = start_device_qos(dir.path(), &pki, broker.port(), 2000, 0);
    let subscribed = serial
        .until("subscribed", BOOT, |l| l.message() == "subscribed")
        .await;
    let first = broker
        .wait_for_log_async(&format!("Received SUBSCRIBE from {DEVICE_CN}"), WAIT)
        .await
        .expect("first SUBSCRIBE");
    let mark = broker.log_mark();
    let probe = broker
        .wait_for_log_from_async(
            mark,
            &format!("Received SUBSCRIBE from {DEVICE_CN}"),
            Duration::from_secs(KEEPALIVE_S),
        )
        .await;
    let after = subscribed.at.elapsed();
    assert!(probe.is_some(), "no probe within {KEEPALIVE_S} s ({first})");
    eprintln!("keep-alive probe {after:?} after SUBACK");
    // Due at 3/4 of the keep-alive of silence: 22.5 s.
    assert!(
        after >= Duration::from_secs(KEEPALIVE_S * 3 / 4),
        "{after:?}"
    );
    serial
        .until("a QoS 0 publish after the probe", WAIT, is_publish)
        .await;
    let trouble: Vec<String> = serial
        .seen()
        .iter()
        .filter(|l| l.message() == "disconnected")
        .map(ToString::to_string)
        .collect();
    assert!(trouble.is_empty(), "{trouble:?}");
}
