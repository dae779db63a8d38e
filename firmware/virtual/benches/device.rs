//! Figures for issue 3, against Debian's mosquitto on loopback (not part of `cargo test`):
//!
//! - connect time (TCP + TLS 1.3 + CONNACK + SUBACK) with P-256 and RSA-2048 device keys,
//!   in process through `virtual_device::transport`;
//! - the publish cadence of the real binary over `BENCH_PUBLISHES` (default 100)
//!   publishes, measured at the broker by the observer: mean period error and p99
//!   |interval - 2000 ms|;
//! - reconnect latency of the binary after the broker comes back from a 5 s outage
//!   (dominated by the backoff the session drew; its line is shown);
//! - RAM in the TLS and MQTT buffers, and the heap the device reports.
//!
//! Run with `cargo bench -p virtual-device --bench device`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use certs::pki::{InitOptions, KeyAlgorithm, Pki};
use common::device::{DeviceProcess, SerialCapture, sntp_server};
use common::image::device_image;
use common::mosquitto::Mosquitto;
use common::pki::{DEVICE_CN, TestPki};
use firmware_core::config::DeviceConfig;
use firmware_core::log::Line;
use firmware_core::tls::MAX_RECORD_LEN;
use minimq::TopicFilter;
use virtual_device::flash::{Identity, SecretBytes};
use virtual_device::transport::{
    self, MQTT_RX_BUF, MQTT_TX_BUF, MqttBuffers, TLS_READ_BUF, TLS_WRITE_BUF, Timings, TlsBuffers,
};

const CONNECTS: usize = 20;
const WAIT: Duration = Duration::from_secs(15);

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        buffers();
        connect_time(KeyAlgorithm::EcP256).await;
        connect_time(KeyAlgorithm::Rsa2048).await;
        let publishes: usize = std::env::var("BENCH_PUBLISHES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100);
        // Concurrently: each has its own broker and device.
        tokio::join!(cadence(publishes), reconnect());
    });
}

fn buffers() {
    let tls = TLS_READ_BUF + TLS_WRITE_BUF + MAX_RECORD_LEN;
    let mqtt = MQTT_RX_BUF + MQTT_TX_BUF;
    println!(
        "buffers: TLS {tls} B (read {TLS_READ_BUF} + write {TLS_WRITE_BUF} + record {MAX_RECORD_LEN}), MQTT {mqtt} B (rx {MQTT_RX_BUF} + tx {MQTT_TX_BUF}), total {} B",
        tls + mqtt
    );
}

fn harness_pki(dir: &Path, pki: &Pki) -> TestPki {
    let write = |name: &str, data: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, data).expect("write");
        path
    };
    TestPki {
        dir: dir.to_path_buf(),
        ca_pem: write("ca.pem", pki.ca.cert_pem().as_bytes()),
        server_cert_pem: write("server.pem", pki.server.cert_pem().as_bytes()),
        server_key_pem: write("server.key", pki.server.key_pem().as_bytes()),
        observer_cert_pem: write("observer.pem", pki.observer.cert_pem().as_bytes()),
        observer_key_pem: write("observer.key", pki.observer.key_pem().as_bytes()),
        ca_der: pki.ca.cert_der().to_vec(),
        device_cert_der: pki.device.cert_der.clone(),
        device_key_der: pki.device.key.to_traditional_der().to_vec(),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn stats(label: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    println!(
        "{label}: n={} mean {mean:.2} ms, median {:.2} ms, p95 {:.2} ms, min {:.2} ms, max {:.2} ms",
        ms.len(),
        pct(0.5),
        pct(0.95),
        ms[0],
        ms[ms.len() - 1]
    );
}

/// TCP + TLS + CONNACK + SUBACK, `CONNECTS` times, with a clean DISCONNECT between.
async fn connect_time(key: KeyAlgorithm) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::generate(&InitOptions {
        key,
        ..InitOptions::default()
    })
    .expect("pki");
    let test_pki = harness_pki(dir.path(), &pki);
    let broker = Mosquitto::start(&test_pki).expect("mosquitto");
    let json = format!(
        r#"{{"endpoint":{{"host":"localhost","port":{}}},"client_id":"{DEVICE_CN}"}}"#,
        broker.port()
    );
    let identity = Identity {
        cert: test_pki.device_cert_der.clone(),
        key: SecretBytes::new(test_pki.device_key_der.clone()),
        ca: test_pki.ca_der.clone(),
        config: DeviceConfig::from_json(json.as_bytes()).expect("config"),
    };
    let mut tls_bufs = TlsBuffers::new();
    let mut mqtt_bufs = MqttBuffers::new();
    let mut session = transport::mqtt_session(DEVICE_CN, 60, &mut mqtt_bufs).expect("session");
    let (mut total, mut tls) = (Vec::new(), Vec::new());
    let notes = firmware_core::mqtt::BrokerNotes::new();
    for _ in 0..CONNECTS {
        let mut timings = Timings::default();
        let start = Instant::now();
        let conn = transport::connect_tls(
            &[broker.addr()],
            "localhost",
            &identity,
            Some(unix_now()),
            &mut tls_bufs,
            &mut timings,
        )
        .await
        .expect("tls");
        let mut conn = transport::connect_mqtt(&mut session, conn, &notes, &mut timings)
            .await
            .expect("connect");
        let op = conn
            .subscribe(&[TopicFilter::new("inTopic")], &[])
            .await
            .expect("subscribe");
        tokio::time::timeout(WAIT, async {
            while conn.is_pending(&op) {
                conn.poll().await.expect("poll");
            }
        })
        .await
        .expect("SUBACK");
        total.push(start.elapsed().as_secs_f64() * 1000.0);
        tls.push(timings.tls_handshake.as_secs_f64() * 1000.0);
        conn.disconnect().await.expect("disconnect");
    }
    stats(&format!("connect {key} (TCP+TLS+CONNACK+SUBACK)"), total);
    stats(&format!("  of which TLS handshake {key}"), tls);
}

struct Device {
    _process: DeviceProcess,
    serial: SerialCapture,
    _dir: tempfile::TempDir,
}

fn start_device(pki: &TestPki, port: u16, dir: tempfile::TempDir) -> Device {
    let ntp = sntp_server().expect("sntp");
    let json = format!(
        r#"{{"endpoint":{{"host":"localhost","port":{port}}},"ntp":{{"host":"127.0.0.1","port":{ntp}}},"client_id":"{DEVICE_CN}","keepalive_s":60}}"#
    );
    let image = device_image(
        &json,
        &pki.device_cert_der,
        &pki.device_key_der,
        &pki.ca_der,
    );
    let flash = dir.path().join("flash.img");
    std::fs::write(&flash, image).expect("image");
    let serial = SerialCapture::open().expect("pty");
    let process = DeviceProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_virtual-device")),
        &flash,
        serial.path(),
    )
    .expect("spawn");
    Device {
        _process: process,
        serial,
        _dir: dir,
    }
}

/// Heap figures from the last `heap:` line the device printed.
fn heap_report(lines: &[Line]) -> Option<String> {
    let heap = lines.iter().rev().find(|l| l.tag() == "heap")?;
    let free: usize = heap.field_as("free")?;
    let min_free: usize = heap.field_as("min_free")?;
    let budget = virtual_device::heap::HEAP_BUDGET;
    Some(format!(
        "host heap in use {} B, peak {} B (of a nominal {budget} B; includes tokio/std and the buffers above)",
        budget - free,
        budget - min_free
    ))
}

async fn cadence(publishes: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::generate(dir.path()).expect("pki");
    let broker = Mosquitto::start(&pki).expect("mosquitto");
    let mut observer = broker.observe(&["outTopic"]).await.expect("observer");
    let mut device = start_device(&pki, broker.port(), dir);
    let mut at = Vec::new();
    while at.len() < publishes {
        let msg = observer.next(WAIT).await.expect("publish");
        at.push(msg.at);
    }
    let intervals: Vec<f64> = at
        .windows(2)
        .map(|w| {
            w[1].duration_since(w[0])
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        })
        .collect();
    let mean = intervals.iter().sum::<f64>() / intervals.len() as f64;
    let mut errors: Vec<f64> = intervals.iter().map(|ms| (ms - 2000.0).abs()).collect();
    errors.sort_by(f64::total_cmp);
    let p99 = errors[((errors.len() - 1) as f64 * 0.99).round() as usize];
    let span = at[at.len() - 1]
        .duration_since(at[0])
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    println!(
        "cadence over {publishes} publishes at the broker: mean interval {mean:.3} ms (mean period error {:+.3} ms), p99 |interval - 2000| {p99:.2} ms, max {:.2} ms, drift over the run {:+.1} ms",
        mean - 2000.0,
        errors[errors.len() - 1],
        span - 2000.0 * (publishes - 1) as f64
    );
    while device
        .serial
        .next(Duration::from_millis(10))
        .await
        .is_some()
    {}
    if let Some(heap) = heap_report(&device.serial.seen()) {
        println!("{heap}");
    }
}

async fn reconnect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::generate(dir.path()).expect("pki");
    let mut broker = Mosquitto::start(&pki).expect("mosquitto");
    let mut device = start_device(&pki, broker.port(), dir);
    device
        .serial
        .until("subscribed", WAIT, |l| l.message() == "subscribed")
        .await;
    for cycle in 1..=3 {
        broker.stop();
        device
            .serial
            .until("disconnected", WAIT, |l| l.message() == "disconnected")
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        broker.restart().expect("restart");
        let back = Instant::now();
        let connected = device
            .serial
            .until("connected", Duration::from_secs(70), |l| {
                l.message() == "connected"
            })
            .await;
        let subscribed = device
            .serial
            .until("subscribed", WAIT, |l| l.message() == "subscribed")
            .await;
        // The backoff that decided when the attempt after the outage came.
        let backoff = device
            .serial
            .seen()
            .iter()
            .rev()
            .skip_while(|l| l.message() != "connected")
            .skip(1)
            .find(|l| l.message() == "backoff")
            .map(ToString::to_string)
            .unwrap_or_default();
        println!(
            "reconnect {cycle}: connected {:.0} ms and subscribed {:.0} ms after the broker was back ({}; last backoff before: {backoff})",
            connected.at.duration_since(back).as_secs_f64() * 1000.0,
            subscribed.at.duration_since(back).as_secs_f64() * 1000.0,
            connected
                .line
                .field("handshake_ms")
                .map_or(String::new(), |ms| format!("handshake {ms} ms")),
        );
    }
}
