//! The controls `hil qualify` drives for Device Advisor's cases: a session expired by the
//! owner, output held and then released in full-size TLS records, and a listener that
//! offers only the cipher suites named.

mod common;

use std::time::{Duration, Instant};

use common::{RawClient, Rig, connect_packet_with, publish_packet_v5, subscribe_packet_v5};
use mock_broker::{Event, Faults, Observer, Policy, QoS};

const CONNACK: u8 = 0x20;
const SUBACK: u8 = 0x90;
const DISCONNECT: u8 = 0xE0;
/// MQTT 5 Session Expiry Interval property: 3600 s.
const EXPIRY_1H: [u8; 5] = [0x11, 0, 0, 0x0e, 0x10];

/// The first event `pick` accepts within `within`.
async fn wait_for(
    events: &mut Observer,
    within: Duration,
    pick: impl Fn(&Event) -> bool,
) -> Option<Event> {
    tokio::time::timeout(within, async {
        while let Some(event) = events.next().await {
            if let Ok(event) = event
                && pick(&event)
            {
                return Some(event);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// Connect `id` without clean start, asking for a 1 h session; returns the client and
/// whether the broker said session present.
async fn persistent(rig: &Rig, addr: std::net::SocketAddr, id: &str) -> (RawClient, bool) {
    let mut client = RawClient::connect(rig, addr).await;
    client
        .send(&connect_packet_with(5, id, 60, &EXPIRY_1H, false))
        .await;
    let (first, body) = client.next().await.expect("CONNACK");
    assert_eq!(first, CONNACK);
    assert_eq!(body[1], 0, "accepted: {body:?}");
    (client, body[0] & 1 == 1)
}

#[tokio::test]
async fn an_expired_session_is_not_resumed_where_a_kicked_one_is() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.policy = Policy::allow_all();
    let broker = rig.start(config).await;
    let addr = broker.mqtt_addr();

    let (mut client, present) = persistent(&rig, addr, "ESPthing").await;
    assert!(!present);
    client.send(&subscribe_packet_v5(1, "test/in")).await;
    assert_eq!(client.next().await.expect("SUBACK").0, SUBACK);

    // A kick keeps the session: the control proving the expiry is what drops it.
    let mut events = broker.observe();
    assert!(broker.kick("ESPthing"));
    assert_eq!(client.next().await.map(|p| p.0), Some(DISCONNECT));
    wait_for(
        &mut events,
        Duration::from_secs(5),
        |e| matches!(e, Event::Disconnected { client_id, .. } if client_id == "ESPthing"),
    )
    .await
    .expect("the kick ended the session's connection");
    let (mut client, present) = persistent(&rig, addr, "ESPthing").await;
    assert!(present, "a kicked session is kept");

    assert!(broker.expire_session("ESPthing"));
    let (first, body) = client.next().await.expect("DISCONNECT");
    assert_eq!(
        (first, body[0]),
        (DISCONNECT, 0x98),
        "administrative action"
    );
    wait_for(
        &mut events,
        Duration::from_secs(5),
        |e| matches!(e, Event::Disconnected { client_id, .. } if client_id == "ESPthing"),
    )
    .await
    .expect("the expiry ended the connection");
    let (_client, present) = persistent(&rig, addr, "ESPthing").await;
    assert!(!present, "an expired session is gone");
    assert!(!broker.expire_session("nobody"));
}

#[tokio::test]
async fn held_output_is_released_in_one_write_of_full_size_records() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.policy = Policy::allow_all();
    let broker = rig.start(config).await;
    let (mut client, _) = persistent(&rig, broker.mqtt_addr(), "ESPthing").await;
    client.send(&subscribe_packet_v5(1, "test/in")).await;
    assert_eq!(client.next().await.expect("SUBACK").0, SUBACK);

    let mut events = broker.observe();
    broker.set_client_faults(
        "ESPthing",
        Faults {
            hold_output: true,
            ..Faults::default()
        },
    );
    for n in 0..5u8 {
        assert_eq!(broker.inject("test/in", vec![n; 4000], QoS::AtMostOnce), 1);
    }
    // Wait until the session has taken all five from its outbox (held, not written).
    let deadline = Instant::now() + Duration::from_secs(5);
    while broker.backlog("ESPthing").is_some_and(|b| b.messages > 0) {
        assert!(
            Instant::now() < deadline,
            "the session never took the messages"
        );
        tokio::task::yield_now().await;
    }
    broker.reset_faults();
    // Any packet from the client wakes its session, which then writes what it held.
    client
        .send(&publish_packet_v5(0, 0, "test/out", b"wake"))
        .await;
    let lifted = wait_for(&mut events, Duration::from_secs(5), |e| {
            matches!(e, Event::FaultApplied { fault, .. } if fault.starts_with("hold output lifted"))
        })
        .await
        .expect("the held output was written");
    let Event::FaultApplied { fault, .. } = lifted else {
        unreachable!()
    };
    let bytes: usize = fault
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{fault}"));
    assert!(bytes > 16_384, "one write of more than a record: {fault}");
    for n in 0..5u8 {
        let (first, body) = client.next().await.expect("PUBLISH");
        assert_eq!(first & 0xF0, 0x30);
        assert!(body.ends_with(&[n; 4000]), "message {n} in order");
    }
}

#[tokio::test]
async fn a_broker_offers_only_the_cipher_suites_named() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.cipher_suites = Some(vec!["TLS13_AES_256_GCM_SHA384".into()]);
    let broker = rig.start(config).await;
    let tls = common::tls_connect(
        broker.mqtt_addr(),
        "localhost",
        common::client_config(&rig, Some(&rig.pki.device), &[]),
    )
    .await
    .expect("handshake");
    let suite = tls.get_ref().1.negotiated_cipher_suite().expect("suite");
    assert_eq!(suite.suite().as_str(), Some("TLS13_AES_256_GCM_SHA384"));

    // A name rustls does not have is refused, naming it and what there is.
    let mut config = rig.config();
    config.cipher_suites = Some(vec!["TLS_RSA_WITH_RC4_128_MD5".into()]);
    let e = mock_broker::MockBroker::start(config)
        .await
        .err()
        .expect("refused");
    let text = e.to_string();
    assert!(text.contains("TLS_RSA_WITH_RC4_128_MD5"), "{text}");
    assert!(text.contains("TLS13_AES_128_GCM_SHA256"), "{text}");
}
