//! The transport against a real broker: mosquitto with TLS 1.3 and client certificates.

mod common;

use std::time::{Duration, Instant};

use common::mosquitto::Mosquitto;
use common::pki::{DEVICE_CN, TestPki};
use firmware_core::config::DeviceConfig;
use minimq::{Publication, QoS, TopicFilter};
use virtual_device::flash::{Identity, SecretBytes};
use virtual_device::transport::{self, MqttBuffers, Timings, TlsBuffers, TransportError};

const WAIT: Duration = Duration::from_secs(10);

/// Broker notes for the connections here (none of these tests reads them).
static NOTES: firmware_core::mqtt::BrokerNotes = firmware_core::mqtt::BrokerNotes::new();

fn now() -> Option<u64> {
    Some(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
}

fn pki() -> (tempfile::TempDir, TestPki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path()).unwrap();
    (dir, pki)
}

fn identity(pki: &TestPki, broker: &Mosquitto) -> Identity {
    let json = common::image::config_json("localhost", broker.port(), ("127.0.0.1", 1), DEVICE_CN);
    Identity {
        cert: pki.device_cert_der.clone(),
        key: SecretBytes::new(pki.device_key_der.clone()),
        ca: pki.ca_der.clone(),
        config: DeviceConfig::from_json(json.as_bytes()).unwrap(),
    }
}

/// Wait for QoS 1/subscribe completion, driving the connection.
async fn complete(conn: &mut transport::Mqtt<'_, '_, '_>, op: &minimq::Op) {
    tokio::time::timeout(WAIT, async {
        while conn.is_pending(op) {
            conn.poll().await.unwrap();
        }
    })
    .await
    .expect("operation acknowledged");
}

#[tokio::test(flavor = "multi_thread")]
async fn device_publishes_and_receives_over_tls13_with_client_cert() {
    let (_dir, pki) = pki();
    let broker = Mosquitto::start(&pki).unwrap();
    let mut observer = broker.observe(&["outTopic"]).await.unwrap();
    let id = identity(&pki, &broker);

    let mut tls_bufs = TlsBuffers::new();
    let mut mqtt_bufs = MqttBuffers::new();
    let mut session = transport::mqtt_session(DEVICE_CN, 60, &mut mqtt_bufs).unwrap();
    let mut timings = Timings::default();
    let start = Instant::now();
    let tls = transport::connect_tls(
        &[broker.addr()],
        "localhost",
        &id,
        now(),
        &mut tls_bufs,
        &mut timings,
    )
    .await
    .unwrap();
    let mut conn = transport::connect_mqtt(&mut session, tls, &NOTES, &mut timings)
        .await
        .unwrap();
    let total = start.elapsed();
    eprintln!(
        "tcp {:?}, tls handshake {:?}, mqtt connect {:?}, total {:?}",
        timings.tcp, timings.tls_handshake, timings.mqtt_connect, total
    );

    // mosquitto saw TLS 1.3 and took the certificate's CN as the username.
    let line = broker
        .wait_for_log_async(&format!("as {DEVICE_CN} "), WAIT)
        .await
        .expect("mosquitto logs the connection");
    assert!(line.contains(&format!("u'{DEVICE_CN}'")), "{line}");

    let sub = conn
        .subscribe(&[TopicFilter::new("inTopic")], &[])
        .await
        .unwrap();
    complete(&mut conn, &sub).await;

    let payload = r#"{"message": "hello world #1"}"#;
    let op = conn
        .publish(Publication::text("outTopic", payload).qos(QoS::AtLeastOnce))
        .await
        .unwrap()
        .expect("QoS 1 gives an op");
    complete(&mut conn, &op).await;
    // The driver reports minimq's packet ids, read from `Op`'s Debug: a fresh session
    // numbers from 1, so SUBSCRIBE took 1 and this publish 2, as the broker saw.
    assert_eq!(transport::op_packet_id(&sub), Some(1));
    assert_eq!(transport::op_packet_id(&op), Some(2));
    broker
        .wait_for_log_async(
            &format!("Received PUBLISH from {DEVICE_CN} (d0, q1, r0, m2,"),
            WAIT,
        )
        .await
        .expect("the broker saw packet id 2");
    let seen = observer
        .next(WAIT)
        .await
        .expect("observer sees the publish");
    assert_eq!(seen.topic, "outTopic");
    assert_eq!(seen.payload_str(), payload);

    // Inbound: publish from outside while the device waits in recv().
    let (inbound, published) = tokio::join!(
        async {
            let msg = tokio::time::timeout(WAIT, conn.recv())
                .await
                .expect("inbound in time")
                .unwrap();
            (msg.topic().to_owned(), msg.payload().to_vec())
        },
        broker.publish("inTopic", b"hello \x00binary", 1)
    );
    published.unwrap();
    assert_eq!(inbound.0, "inTopic");
    assert_eq!(inbound.1, b"hello \x00binary");

    conn.disconnect().await.unwrap();
    broker
        .wait_for_log_async(&format!("Client {DEVICE_CN} disconnected"), WAIT)
        .await
        .expect("graceful disconnect");
}

#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_refuses_a_client_without_certificate() {
    let (_dir, pki) = pki();
    let broker = Mosquitto::start(&pki).unwrap();

    // mosquitto's own client without --cert.
    let out = tokio::process::Command::new("mosquitto_pub")
        .args([
            "-V",
            "mqttv5",
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port().to_string(),
        ])
        .arg("--cafile")
        .arg(&pki.ca_pem)
        .args(["-t", "outTopic", "-m", "x"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    broker
        .wait_for_log_async("peer did not return a certificate", WAIT)
        .await
        .expect("mosquitto logs the refusal");

    // The device's TLS stack without a client certificate: in TLS 1.3 the server's alert
    // comes after the client's Finished, so the handshake "succeeds" and MQTT CONNECT fails.
    let mark = broker.log_mark();
    let mut tls_bufs = TlsBuffers::new();
    let mut mqtt_bufs = MqttBuffers::new();
    let mut session = transport::mqtt_session(DEVICE_CN, 60, &mut mqtt_bufs).unwrap();
    let mut timings = Timings::default();
    let result = async {
        let tls = transport::connect_tls_with(
            &[broker.addr()],
            "localhost",
            // embedded-tls's bare provider: no client certificate, no server checks.
            embedded_tls::UnsecureProvider::new::<transport::Suite>(rand_core::OsRng),
            &mut tls_bufs,
            &mut timings,
        )
        .await?;
        transport::connect_mqtt(&mut session, tls, &NOTES, &mut timings)
            .await
            .map(drop)
    }
    .await;
    let err = result.expect_err("no certificate, no connection");
    eprintln!("without certificate: {err}");
    assert!(
        matches!(err, TransportError::Mqtt(_) | TransportError::Tls { .. }),
        "{err}"
    );
    broker
        .wait_for_log_from_async(mark, "peer did not return a certificate", WAIT)
        .await
        .expect("mosquitto refuses the device too");
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_restart_on_the_same_port() {
    let (_dir, pki) = pki();
    let mut broker = Mosquitto::start(&pki).unwrap();
    let port = broker.port();
    let id = identity(&pki, &broker);
    let mut tls_bufs = TlsBuffers::new();
    let mut mqtt_bufs = MqttBuffers::new();
    let mut session = transport::mqtt_session(DEVICE_CN, 60, &mut mqtt_bufs).unwrap();
    let mut timings = Timings::default();

    let tls = transport::connect_tls(
        &[broker.addr()],
        "localhost",
        &id,
        now(),
        &mut tls_bufs,
        &mut timings,
    )
    .await
    .unwrap();
    let mut conn = transport::connect_mqtt(&mut session, tls, &NOTES, &mut timings)
        .await
        .unwrap();

    broker.stop();
    // A killed broker shows up as the end of the stream, not a hang.
    let err = tokio::time::timeout(WAIT, conn.recv())
        .await
        .expect("the dead connection is noticed")
        .unwrap_err();
    eprintln!("after broker stop: {err}");
    drop(conn);

    broker.restart().unwrap();
    assert_eq!(broker.port(), port);
    let tls = transport::connect_tls(
        &[broker.addr()],
        "localhost",
        &id,
        now(),
        &mut tls_bufs,
        &mut timings,
    )
    .await
    .unwrap();
    let conn = transport::connect_mqtt(&mut session, tls, &NOTES, &mut timings)
        .await
        .unwrap();
    // persistence off: the restarted broker has no session for us.
    assert_eq!(conn.connect_event(), minimq::ConnectEvent::Connected);
}

/// Open TLS to `broker` as `id` dialling `host`; it must fail with the log kind `kind`.
async fn refused(
    broker: &Mosquitto,
    host: &str,
    id: &Identity,
    now: Option<u64>,
    kind: &str,
) -> TransportError {
    let mut tls_bufs = TlsBuffers::new();
    let mut timings = Timings::default();
    let err = transport::connect_tls(&[broker.addr()], host, id, now, &mut tls_bufs, &mut timings)
        .await
        .map(drop)
        .unwrap_err();
    assert!(
        matches!(&err, TransportError::Tls { kind: k, .. } if *k == kind),
        "expected {kind}, saw {err}"
    );
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn device_refuses_a_server_from_another_ca_and_without_time() {
    let (_other_dir, other) = pki();
    let (_dir, pki) = pki();
    let broker = Mosquitto::start(&pki).unwrap();

    let mut id = identity(&pki, &broker);
    id.ca = other.ca_der.clone();
    let err = refused(&broker, "localhost", &id, now(), "unknown-ca").await;
    assert_eq!(
        err.failure(),
        firmware_core::log::ConnectFailure::Tls(firmware_core::log::TlsError::UnknownCa)
    );

    let id = identity(&pki, &broker);
    refused(&broker, "localhost", &id, None, "clock-not-set").await;

    // The name is checked too: the server certificate is not for this one.
    refused(&broker, "broker.example", &id, now(), "name-mismatch").await;
}

#[test]
fn parses_observer_lines() {
    let r = common::mosquitto::parse_line("MSG 1795813701.816964070 6869207468657265 out topic")
        .unwrap();
    assert_eq!(r.topic, "out topic");
    assert_eq!(r.payload, b"hi there");
    assert_eq!(
        r.at,
        std::time::SystemTime::UNIX_EPOCH + Duration::new(1_795_813_701, 816_964_070)
    );
    // An empty payload prints as an empty hex field.
    assert_eq!(
        common::mosquitto::parse_line("MSG 1.5 t").map(|r| r.topic),
        None
    );
    assert_eq!(
        common::mosquitto::parse_line("MSG 1.000000005  t")
            .unwrap()
            .payload,
        b""
    );
    assert!(common::mosquitto::parse_line("Client x received PUBLISH").is_none());
    assert!(common::mosquitto::parse_line("MSG x.y 00 t").is_none());
}
