//! The device end to end (issue 3, "Must show"): the real `virtual-device` binary, its
//! serial log read through a pseudo-terminal and parsed with `firmware_core::log::Line`,
//! against Debian's mosquitto (TLS 1.3, client certificates required), observed by a
//! `mosquitto_sub` on the broker.
//!
//! Every scenario waits for observed events with timeouts; the only sleep is the broker's
//! 5 s outage, which is the scenario itself. They take real time (ten publishes are 20 s),
//! so this target has its own runner (libtest-mimic) that runs them all at once, each
//! with its own broker, ports and device.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use certs::pki::{self, CertificateAuthority, InitOptions, KeyAlgorithm, Pki, Validity};
use firmware_core::log::Line;
use libtest_mimic::{Arguments, Trial};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use virtual_device::testing::device::{DeviceProcess, SerialCapture, sntp_server};
use virtual_device::testing::image::device_image;
use virtual_device::testing::mosquitto::{Mosquitto, Observer, Received, ServerCert};
use virtual_device::testing::pki::{DEVICE_CN, TestPki};

/// Boot to the first publish: image, SNTP, TLS, CONNACK, SUBACK and one period.
const BOOT: Duration = Duration::from_secs(15);
/// Broker-side interval tolerance for the 2000 ms cadence (issue 3).
const CADENCE_TOLERANCE_MS: u64 = 150;
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
            "publishes_ten_messages_on_a_2000ms_cadence",
            publishes_ten_messages_on_a_2000ms_cadence,
        ),
        trial(
            "inbound_message_is_logged_within_1s",
            inbound_message_is_logged_within_1s,
        ),
        trial(
            "reconnects_after_broker_restart_and_continues",
            reconnects_after_broker_restart_and_continues,
        ),
        trial("refuses_server_from_unknown_ca", || {
            refuses(BadServer::UnknownCa)
        }),
        trial("refuses_server_with_wrong_name", || {
            refuses(BadServer::WrongName)
        }),
        trial("refuses_expired_server_certificate", || {
            refuses(BadServer::Expired)
        }),
        trial(
            "rsa_device_key_and_aws_like_rsa_chain",
            rsa_device_key_and_aws_like_rsa_chain,
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
    format!(
        r#"{{"endpoint":{{"host":"localhost","port":{port}}},"ntp":{{"host":"127.0.0.1","port":{ntp_port}}},"client_id":"{DEVICE_CN}","period_ms":{period_ms},"keepalive_s":{KEEPALIVE_S},"qos":{qos}}}"#
    )
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
    let process = DeviceProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_virtual-device")),
        &flash,
        serial.path(),
    )
    .expect("spawn device");
    Device { process, serial }
}

/// The test PKI `certs init` makes (same library, default options: P-256, thing
/// `ESPthing`, server SANs localhost and 127.0.0.1), as files for the mosquitto harness.
fn init_pki() -> (tempfile::TempDir, TestPki) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::generate(&InitOptions::default()).expect("certs init pki");
    let test_pki = harness_pki(
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

/// The sequence number in an observed payload.
fn seq_of(msg: &Received) -> u32 {
    firmware_core::session::hello_seq(msg.payload_str().as_bytes())
        .unwrap_or_else(|| panic!("unexpected payload {:?}", msg.payload_str()))
}

async fn next_message(observer: &mut Observer, timeout: Duration, what: &str) -> Received {
    observer
        .next(timeout)
        .await
        .unwrap_or_else(|| panic!("observer saw no {what} within {timeout:?}"))
}

async fn publishes_ten_messages_on_a_2000ms_cadence() {
    let (dir, pki) = init_pki();
    let broker = Mosquitto::start(&pki).expect("mosquitto");
    let mut observer = broker.observe(&["outTopic"]).await.expect("observer");
    let Device {
        process,
        mut serial,
    } = start_device(dir.path(), &pki, broker.port(), 2000);

    let mut got = Vec::new();
    for n in 1..=10u32 {
        let timeout = if n == 1 { BOOT } else { Duration::from_secs(4) };
        let msg = next_message(&mut observer, timeout, &format!("publish #{n}")).await;
        assert_eq!(msg.topic, "outTopic");
        assert_eq!(msg.payload_str(), payload_for(n));
        got.push(msg);
    }
    let intervals: Vec<u64> = got
        .windows(2)
        .map(|w| {
            w[1].at
                .duration_since(w[0].at)
                .expect("arrivals in order")
                .as_millis() as u64
        })
        .collect();
    eprintln!("broker-side intervals (ms): {intervals:?}");
    for (i, ms) in intervals.iter().enumerate() {
        assert!(
            ms.abs_diff(2000) <= CADENCE_TOLERANCE_MS,
            "interval {} -> {} was {ms} ms, outside 2000 +- {CADENCE_TOLERANCE_MS} ms: {intervals:?}",
            i + 1,
            i + 2
        );
    }

    // The serial log tells the same story, through the one line parser.
    serial
        .until("publish seq=10", WAIT, |l| {
            is_publish(l) && l.field("seq") == Some("10")
        })
        .await;
    let logged: Vec<(u32, String)> = serial
        .seen()
        .iter()
        .filter(|l| is_publish(l))
        .map(|l| {
            (
                l.field_as("seq").expect("seq"),
                l.payload().expect("payload").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(u32, String)> = (1..=10).map(|n| (n, payload_for(n))).collect();
    assert_eq!(logged, expected);

    // A clean stop: MQTT DISCONNECT, the final line, exit 0.
    let mark = broker.log_mark();
    process.signal(libc::SIGTERM).expect("signal");
    let last = serial
        .until("shutdown", WAIT, |l| l.tag() == "shutdown")
        .await;
    assert_eq!(last.line.field("reason"), Some("signal"));
    assert!(process.wait_exit(WAIT).await.expect("exit").success());
    broker
        .wait_for_log_from_async(mark, &format!("Client {DEVICE_CN} disconnected"), WAIT)
        .await
        .expect("the device sent DISCONNECT");
}

async fn inbound_message_is_logged_within_1s() {
    let (dir, pki) = init_pki();
    let broker = Mosquitto::start(&pki).expect("mosquitto");
    let Device {
        process: _process,
        mut serial,
    } = start_device(dir.path(), &pki, broker.port(), 2000);
    serial
        .until("subscribed", BOOT, |l| l.message() == "subscribed")
        .await;

    for payload in [&b"hello from the rig"[..], b"bin\x00\xff\r\n"] {
        // Measured from before mosquitto_pub starts: an upper bound on the latency.
        let start = Instant::now();
        broker
            .publish("inTopic", payload, 1)
            .await
            .expect("mosquitto_pub");
        let inbound = serial
            .until("inbound", Duration::from_secs(1), |l| l.tag() == "inbound")
            .await;
        let latency = inbound.at.duration_since(start);
        eprintln!("inbound {payload:?} logged {latency:?} after publishing began");
        assert!(latency < Duration::from_secs(1), "{latency:?}");
        assert_eq!(inbound.line.field("topic"), Some("inTopic"));
        let bytes: Vec<u8> = inbound
            .line
            .payload_bytes()
            .expect("payload")
            .collect::<Result<_, _>>()
            .expect("escaped payload");
        assert_eq!(bytes, payload);
    }
}

async fn reconnects_after_broker_restart_and_continues() {
    let (dir, pki) = init_pki();
    let mut broker = Mosquitto::start(&pki).expect("mosquitto");
    let port = broker.port();
    // Not about the cadence: a short period keeps the scenario short.
    let Device {
        process: _process,
        mut serial,
    } = start_device(dir.path(), &pki, port, 500);
    serial
        .until("publish seq=3", BOOT, |l| {
            is_publish(l) && l.field("seq") == Some("3")
        })
        .await;

    broker.stop();
    let disconnected = serial
        .until("disconnected", WAIT, |l| l.message() == "disconnected")
        .await;
    assert_eq!(disconnected.line.tag(), "mqtt");
    let backoff = serial
        .until("backoff", WAIT, |l| l.message() == "backoff")
        .await;
    assert_eq!(backoff.line.tag(), "mqtt");
    assert_eq!(backoff.line.field("attempt"), Some("1"));
    let delay_ms: u64 = backoff.line.field_as("delay_ms").expect("delay_ms");
    assert!(
        delay_ms <= 1000,
        "first backoff within base 1 s: {delay_ms}"
    );
    let last_before: u32 = serial
        .seen()
        .iter()
        .filter(|l| is_publish(l))
        .filter_map(|l| l.field_as("seq"))
        .max()
        .expect("published before the outage");

    // The outage itself.
    tokio::time::sleep(Duration::from_secs(5)).await;
    broker.restart().expect("restart");
    assert_eq!(broker.port(), port);
    let mut observer = broker.observe(&["outTopic"]).await.expect("observer");

    // Backoff doubles while the broker is down, up to 8 s for the attempt after 5 s.
    let connected = serial
        .until("reconnected", Duration::from_secs(15), |l| {
            l.message() == "connected"
        })
        .await;
    assert_eq!(connected.line.field("session"), Some("new"));
    let reconnected_at = serial.seen().len();
    serial
        .until("resubscribed", WAIT, |l| l.message() == "subscribed")
        .await;
    let publishes_between: Vec<String> = serial
        .seen()
        .iter()
        .skip_while(|l| l.message() != "disconnected")
        .filter(|l| is_publish(l))
        .map(ToString::to_string)
        .collect();
    assert!(
        publishes_between.is_empty(),
        "no publish while down: {publishes_between:?}"
    );
    let backoffs = serial
        .seen()
        .iter()
        .filter(|l| l.tag() == "mqtt" && l.message() == "backoff")
        .count();
    eprintln!("reconnected after {backoffs} backoffs");

    // Inbound works again: the subscription was made anew.
    broker
        .publish("inTopic", b"after restart", 1)
        .await
        .expect("mosquitto_pub");
    let inbound = serial
        .until("inbound after restart", WAIT, |l| l.tag() == "inbound")
        .await;
    assert_eq!(inbound.line.payload(), Some("after restart"));

    // The sequence continues where it stopped.
    if !serial.seen()[reconnected_at..].iter().any(is_publish) {
        serial
            .until("publish after restart", WAIT, is_publish)
            .await;
    }
    let next = serial.seen()[reconnected_at..]
        .iter()
        .find(|l| is_publish(l))
        .expect("a publish after the reconnect");
    assert_eq!(next.field_as::<u32>("seq"), Some(last_before + 1), "{next}");
    let msg = loop {
        let msg = next_message(&mut observer, WAIT, "publish after restart").await;
        if seq_of(&msg) > last_before {
            break msg;
        }
    };
    assert!(seq_of(&msg) > last_before);
}

/// A server certificate the device must refuse.
#[derive(Debug, Clone, Copy)]
enum BadServer {
    UnknownCa,
    WrongName,
    Expired,
}

impl BadServer {
    fn slug(self) -> &'static str {
        match self {
            Self::UnknownCa => "unknown-ca",
            Self::WrongName => "name-mismatch",
            Self::Expired => "certificate-expired",
        }
    }

    fn issue(self, ca: &CertificateAuthority) -> pki::Identity {
        match self {
            Self::UnknownCa => {
                pki::server_cert_untrusted(&SERVER_NAMES, KeyAlgorithm::EcP256)
                    .expect("untrusted server cert")
                    .0
            }
            Self::WrongName => pki::server_cert_wrong_name(ca).expect("wrong-name cert"),
            Self::Expired => pki::server_cert_expired(ca, &SERVER_NAMES).expect("expired cert"),
        }
    }
}

/// Write a `certs` PKI as the files the mosquitto harness reads. `broker_trusts` is the
/// broker's and the observer's CA bundle (PEM).
fn harness_pki(
    dir: &Path,
    pki: &Pki,
    broker_trusts: &str,
    server_chain_pem: &str,
    server_key_pem: &str,
) -> io::Result<TestPki> {
    let write = |name: &str, data: &[u8]| -> io::Result<std::path::PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, data)?;
        Ok(path)
    };
    Ok(TestPki {
        dir: dir.to_path_buf(),
        ca_pem: write("ca.pem", broker_trusts.as_bytes())?,
        server_cert_pem: write("server.pem", server_chain_pem.as_bytes())?,
        server_key_pem: write("server.key", server_key_pem.as_bytes())?,
        observer_cert_pem: write("observer.pem", pki.observer.cert_pem().as_bytes())?,
        observer_key_pem: write("observer.key", pki.observer.key_pem().as_bytes())?,
        ca_der: pki.ca.cert_der().to_vec(),
        device_cert_der: pki.device.cert_der.clone(),
        device_key_der: pki.device.key.to_traditional_der().to_vec(),
    })
}

async fn refuses(bad: BadServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::generate(&InitOptions::default()).expect("pki");
    let ca_pem = pki.ca.cert_pem();
    let test_pki = harness_pki(
        dir.path(),
        &pki,
        &ca_pem,
        &pki.server.cert_pem(),
        &pki.server.key_pem(),
    )
    .expect("pki files");
    // The device dials a second listener that presents the bad certificate; the observer
    // uses the good one, so it would see anything the device published.
    let bad_cert = bad.issue(&pki.ca);
    let device_cert = ServerCert {
        cert_pem: dir.path().join("bad.pem"),
        key_pem: dir.path().join("bad.key"),
    };
    std::fs::write(&device_cert.cert_pem, bad_cert.cert_pem()).expect("write");
    std::fs::write(&device_cert.key_pem, bad_cert.key_pem().as_bytes()).expect("write");
    let broker = Mosquitto::start_with(&test_pki, Some(device_cert)).expect("mosquitto");
    let mut observer = broker.observe(&["#"]).await.expect("observer");
    let Device {
        process: _process,
        mut serial,
    } = start_device(dir.path(), &test_pki, broker.device_port(), 500);

    // Refused, backed off, refused again after the backoff, backed off longer.
    for attempt in 1..=2u32 {
        let failed = serial
            .until("tls failure", BOOT, |l| l.tag() == "tls")
            .await;
        assert_eq!(failed.line.message(), "handshake failed");
        assert_eq!(
            failed.line.field("error"),
            Some(bad.slug()),
            "{}",
            failed.line
        );
        let backoff = serial
            .until("backoff", WAIT, |l| l.message() == "backoff")
            .await;
        assert_eq!(backoff.line.tag(), "mqtt");
        assert_eq!(backoff.line.field_as("attempt"), Some(attempt));
    }
    let connected: Vec<String> = serial
        .seen()
        .iter()
        .filter(|l| l.message() == "connected" || is_publish(l))
        .map(ToString::to_string)
        .collect();
    assert!(connected.is_empty(), "{connected:?}");
    // Bounded window: the whole run so far plus one more second.
    assert_eq!(observer.next(Duration::from_secs(1)).await, None);
    assert!(
        !broker
            .log()
            .iter()
            .any(|l| l.contains(&format!("Received PUBLISH from {DEVICE_CN}"))),
        "the broker got a publish from the device"
    );
}

async fn rsa_device_key_and_aws_like_rsa_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = InitOptions {
        key: KeyAlgorithm::Rsa2048,
        ..InitOptions::default()
    };
    let pki = Pki::generate(&options).expect("rsa pki");
    let chain = pki::aws_like_chain(&SERVER_NAMES, Validity::days(30)).expect("aws-like chain");
    // The broker checks clients against the test CA; the observer verifies the broker
    // against the AWS-like root; one bundle serves both.
    let bundle = pki.ca.cert_pem() + &chain.root.cert_pem();
    let mut test_pki = harness_pki(
        dir.path(),
        &pki,
        &bundle,
        &chain.server_chain_pem(),
        &chain.server.key_pem(),
    )
    .expect("pki files");
    // The device trusts only the AWS-like root, as it would trust Amazon Root CA 1.
    test_pki.ca_der = chain.root.cert_der().to_vec();
    let broker = Mosquitto::start(&test_pki).expect("mosquitto");
    let mut observer = broker.observe(&["outTopic"]).await.expect("observer");
    assert!(
        test_pki.device_key_der.len() > 1000,
        "an RSA-2048 PKCS#1 key, not P-256: {} bytes",
        test_pki.device_key_der.len()
    );
    let Device {
        process: _process,
        mut serial,
    } = start_device(dir.path(), &test_pki, broker.port(), 500);

    let connected = serial
        .until("connected", BOOT, |l| l.message() == "connected")
        .await;
    eprintln!("RSA device key, RSA chain: {}", connected.line);
    serial
        .until("subscribed", WAIT, |l| l.message() == "subscribed")
        .await;
    let msg = next_message(&mut observer, WAIT, "publish #1").await;
    assert_eq!(msg.payload_str(), payload_for(1));
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
