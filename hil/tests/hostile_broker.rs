//! The device against a broker that breaks the rules: a scripted MQTT 5 server over real
//! TLS with client certificates, one connection per test, and the real `virtual-device`
//! binary behind a pseudo-terminal. Each test sends what a hostile or buggy broker would
//! and checks the device's serial log (and, where it answers, the bytes it sends back):
//!
//! - a message on a topic the device never subscribed to is not taken as its own;
//! - a PUBLISH with a Topic Alias it never allowed gets DISCONNECT 0x94;
//! - a PUBACK with reason 0x80 is a refusal, not a success;
//! - a CONNACK with Maximum QoS 0: publishes go out at QoS 0, and the device says so;
//! - a DISCONNECT with a reason code is logged with that code, not as `peer-closed`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use certs::creds::Credentials;
use certs::image::{self, DEFAULT_IMAGE_SIZE};
use certs::pki::{InitOptions, KeyAlgorithm, Pki, Validity};
use firmware_core::config::DeviceConfig;
use firmware_core::log::Line;
use hil::backend::virtual_device::VirtualDevice;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

const CLIENT_ID: &str = "hostile-thing";
const SUB_TOPIC: &str = "inTopic";
const WAIT: Duration = Duration::from_secs(20);

/// The PKI, the device's image and the listener for one test.
struct Setup {
    _dir: tempfile::TempDir,
    acceptor: TlsAcceptor,
    listener: TcpListener,
    _sntp: tokio::task::JoinHandle<()>,
    device: VirtualDevice,
}

/// An SNTP server on 127.0.0.1:0 with the host's time.
async fn sntp() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let behaviour = mock_broker::SntpBehaviour::Correct;
            if let Some(reply) = mock_broker::sntp::reply(&buf[..n], SystemTime::now(), behaviour) {
                let _ = socket.send_to(&reply, peer).await;
            }
        }
    });
    (addr, task)
}

async fn setup(qos: u8) -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = Pki::generate(&InitOptions {
        thing: CLIENT_ID.into(),
        ..InitOptions::default()
    })
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sntp_addr, sntp_task) = sntp().await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.ca.cert_der().to_vec()))
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        pki.server.key.to_pkcs8_der().to_vec(),
    ));
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(pki.server.cert_der.clone())], key)
        .unwrap();

    let device = pki
        .ca
        .issue_client(CLIENT_ID, KeyAlgorithm::EcP256, Validity::days(30))
        .unwrap();
    let creds = Credentials::new(device.cert_der, device.key, pki.ca.cert_der().to_vec()).unwrap();
    let mut config_json = DeviceConfig::new("localhost", CLIENT_ID).unwrap();
    config_json.endpoint.port = port;
    config_json.ntp.host = "127.0.0.1".try_into().unwrap();
    config_json.ntp.port = sntp_addr.port();
    config_json.sub_topic = SUB_TOPIC.try_into().unwrap();
    config_json.qos = qos;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.img");
    std::fs::write(
        &path,
        image::build_image(&creds, &config_json, DEFAULT_IMAGE_SIZE).unwrap(),
    )
    .unwrap();
    let device = VirtualDevice::spawn(&common::virtual_device(), &path).unwrap();
    Setup {
        _dir: dir,
        acceptor: TlsAcceptor::from(Arc::new(config)),
        listener,
        _sntp: sntp_task,
        device,
    }
}

/// One MQTT packet: its first byte and its body.
struct Packet {
    first: u8,
    body: Vec<u8>,
}

impl Packet {
    fn kind(&self) -> u8 {
        self.first >> 4
    }
}

async fn read_packet(s: &mut TlsStream<tokio::net::TcpStream>) -> Packet {
    let first = s.read_u8().await.expect("packet header");
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = s.read_u8().await.expect("remaining length");
        len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).await.expect("packet body");
    Packet { first, body }
}

/// The next packet of `kind` the device sends (others, such as PINGREQ, are skipped).
async fn next_of_kind(s: &mut TlsStream<tokio::net::TcpStream>, kind: u8, what: &str) -> Packet {
    tokio::time::timeout(WAIT, async {
        loop {
            let p = read_packet(s).await;
            if p.kind() == kind {
                return p;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("expected {what} from the device within {WAIT:?}"))
}

/// `first`, the remaining length and `body`.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        out.push(if len > 0 { b | 0x80 } else { b });
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A PUBLISH, QoS 0, with `props` (already encoded, without their length).
fn publish(topic: &str, props: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend((topic.len() as u16).to_be_bytes());
    body.extend(topic.as_bytes());
    body.push(props.len() as u8);
    body.extend(props);
    body.extend(payload);
    packet(0x30, &body)
}

/// Accept the device: TLS, CONNECT, CONNACK with `connack_props`, then answer its
/// SUBSCRIBE. Returns the stream, ready for the test's script.
async fn accept(setup: &mut Setup, connack_props: &[u8]) -> TlsStream<tokio::net::TcpStream> {
    let (tcp, _) = tokio::time::timeout(WAIT, setup.listener.accept())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no connection; device log:\n{}",
                setup.device.serial.tail(20)
            )
        })
        .unwrap();
    let mut s = setup.acceptor.accept(tcp).await.expect("TLS handshake");
    let connect = read_packet(&mut s).await;
    assert_eq!(connect.kind(), 1, "CONNECT first");
    let mut connack = vec![0, 0, connack_props.len() as u8];
    connack.extend(connack_props);
    s.write_all(&packet(0x20, &connack)).await.unwrap();
    let subscribe = read_packet(&mut s).await;
    assert_eq!(subscribe.kind(), 8, "SUBSCRIBE after CONNACK");
    // SUBACK: the same packet id, no properties, granted QoS 1.
    let suback = [subscribe.body[0], subscribe.body[1], 0, 1];
    s.write_all(&packet(0x90, &suback)).await.unwrap();
    s
}

/// The next serial line that `pick` accepts, or a failure with the log's tail.
async fn expect_line(setup: &mut Setup, what: &str, pick: impl Fn(&Line) -> bool) -> Line {
    let found = setup
        .device
        .serial
        .until(WAIT, |l| l.line().filter(|l| pick(l)).cloned())
        .await;
    match found {
        Some((_, line)) => line,
        None => panic!(
            "expected {what} within {WAIT:?}; device log:\n{}",
            setup.device.serial.tail(20)
        ),
    }
}

fn is(line: &Line, tag: &str, message: &str) -> bool {
    line.tag() == tag && line.message() == message
}

#[tokio::test]
async fn a_message_on_a_topic_never_subscribed_is_not_taken_as_ours() {
    let mut setup = setup(1).await;
    let mut s = accept(&mut setup, &[]).await;
    expect_line(&mut setup, "`mqtt: subscribed`", |l| {
        is(l, "mqtt", "subscribed")
    })
    .await;
    s.write_all(&publish("other/topic", &[], b"hi"))
        .await
        .unwrap();
    s.write_all(&publish(SUB_TOPIC, &[], b"ours"))
        .await
        .unwrap();
    let line = expect_line(&mut setup, "an `inbound:` line", |l| l.tag() == "inbound").await;
    assert_eq!(line.level, firmware_core::log::Level::Warn, "{line}");
    assert_eq!(line.message(), "unsolicited", "{line}");
    assert_eq!(line.field("topic"), Some("other/topic"));
    assert_eq!(
        line.payload(),
        None,
        "an unsolicited payload is not printed: {line}"
    );
    let ours = expect_line(&mut setup, "the inbound line for inTopic", |l| {
        l.tag() == "inbound"
    })
    .await;
    assert_eq!(ours.field("topic"), Some(SUB_TOPIC), "{ours}");
    assert_eq!(ours.payload(), Some("ours"));
}

#[tokio::test]
async fn a_topic_alias_never_allowed_gets_disconnect_0x94() {
    let mut setup = setup(1).await;
    let mut s = accept(&mut setup, &[]).await;
    expect_line(&mut setup, "`mqtt: subscribed`", |l| {
        is(l, "mqtt", "subscribed")
    })
    .await;
    // Topic Alias 1 (property 0x23) with an empty topic: the device announced no Topic
    // Alias Maximum, so this is a protocol error.
    s.write_all(&publish("", &[0x23, 0, 1], b"aliased"))
        .await
        .unwrap();
    let line = expect_line(&mut setup, "`mqtt: protocol violation`", |l| {
        is(l, "mqtt", "protocol violation") || l.tag() == "inbound"
    })
    .await;
    assert_eq!(line.field("error"), Some("topic-alias-invalid"), "{line}");
    // The device's answer on the wire: DISCONNECT with reason 0x94 (after any PINGREQ or
    // PUBLISH it had in flight).
    let disconnect = next_of_kind(&mut s, 14, "a DISCONNECT").await;
    assert_eq!(disconnect.body.first(), Some(&0x94));
    let lost = expect_line(&mut setup, "`mqtt: disconnected`", |l| {
        is(l, "mqtt", "disconnected")
    })
    .await;
    assert_eq!(lost.field("reason"), Some("protocol-error"), "{lost}");
}

#[tokio::test]
async fn a_puback_with_reason_0x80_is_a_refusal_not_a_success() {
    let mut setup = setup(1).await;
    let mut s = accept(&mut setup, &[]).await;
    let publish = next_of_kind(&mut s, 3, "a PUBLISH").await;
    assert_eq!((publish.first >> 1) & 3, 1, "QoS 1 publish");
    let topic_len = usize::from(u16::from_be_bytes([publish.body[0], publish.body[1]]));
    let id = [publish.body[2 + topic_len], publish.body[3 + topic_len]];
    // PUBACK: packet id, reason 0x80 (unspecified error), no properties.
    s.write_all(&packet(0x40, &[id[0], id[1], 0x80, 0]))
        .await
        .unwrap();
    let line = expect_line(&mut setup, "`publish: refused`", |l| {
        is(l, "publish", "refused")
    })
    .await;
    assert_eq!(line.field("seq"), Some("1"), "{line}");
    assert_eq!(line.field("code"), Some("0x80"), "{line}");
    assert_eq!(line.level, firmware_core::log::Level::Error);
}

#[tokio::test]
async fn a_maximum_qos_of_0_downgrades_publishes_and_says_so() {
    let mut setup = setup(1).await;
    // CONNACK property Maximum QoS (0x24) = 0.
    let mut s = accept(&mut setup, &[0x24, 0]).await;
    let line = expect_line(&mut setup, "`mqtt: qos downgraded`", |l| {
        is(l, "mqtt", "qos downgraded")
    })
    .await;
    assert_eq!(line.field("max_qos"), Some("0"), "{line}");
    let publish = next_of_kind(&mut s, 3, "a PUBLISH (not swallowed)").await;
    assert_eq!((publish.first >> 1) & 3, 0, "published at QoS 0");
    assert!(
        String::from_utf8_lossy(&publish.body).contains("hello world #1"),
        "{:?}",
        publish.body
    );
}

#[tokio::test]
async fn a_disconnect_reason_code_is_logged_with_its_name() {
    let mut setup = setup(1).await;
    let mut s = accept(&mut setup, &[]).await;
    expect_line(&mut setup, "`mqtt: subscribed`", |l| {
        is(l, "mqtt", "subscribed")
    })
    .await;
    // DISCONNECT 0x98 (administrative action), no properties.
    s.write_all(&packet(0xE0, &[0x98, 0])).await.unwrap();
    let line = expect_line(&mut setup, "`mqtt: disconnected`", |l| {
        is(l, "mqtt", "disconnected")
    })
    .await;
    assert_eq!(line.field("reason"), Some("server-disconnect"), "{line}");
    assert_eq!(line.field("code"), Some("0x98"), "{line}");
    assert_eq!(line.field("name"), Some("administrative-action"), "{line}");
}
