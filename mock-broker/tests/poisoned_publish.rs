//! Poisoned publishes: a PUBLISH whose properties break MQTT 5's rules is refused with a
//! DISCONNECT naming why, and never reaches a subscriber (which would otherwise be
//! disconnected by it, again on every reconnect of a persistent session).

mod common;

use common::{RawClient, Rig, connect_packet, packet, subscribe_packet_v5};
use mock_broker::{DisconnectReason, Handle, QoS};

const CONNACK: u8 = 0x20;
const PUBLISH_QOS1: u8 = 0x32;
const SUBACK: u8 = 0x90;
const DISCONNECT: u8 = 0xE0;
const MALFORMED: u8 = 0x81;
const PROTOCOL_ERROR: u8 = 0x82;
const TOPIC: &str = "test/poison";

async fn connected(rig: &Rig, broker: &Handle, level: u8, id: &str) -> RawClient {
    let mut client = RawClient::connect(rig, broker.mqtt_addr()).await;
    client.send(&connect_packet(level, id, 60, &[])).await;
    let (first, body) = client.next().await.expect("CONNACK");
    assert_eq!((first, body[1]), (CONNACK, 0), "{id} connects");
    client
}

/// An MQTT 5 subscriber to [`TOPIC`], its subscription in place.
async fn subscriber(rig: &Rig, broker: &Handle) -> RawClient {
    let mut observer = broker.observe();
    let mut client = connected(rig, broker, 5, "ESPthing-sub").await;
    client.send(&subscribe_packet_v5(1, TOPIC)).await;
    assert_eq!(client.next().await.unwrap().0, SUBACK);
    observer
        .wait_for_subscription("ESPthing-sub", TOPIC, common::WAIT)
        .await
        .expect("subscribed");
    client
}

/// A QoS 1 MQTT 5 PUBLISH to [`TOPIC`] with packet id 7 and the given property bytes.
fn publish_v5(properties: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(TOPIC.len() as u16).to_be_bytes());
    body.extend_from_slice(TOPIC.as_bytes());
    body.extend_from_slice(&7u16.to_be_bytes());
    assert!(properties.len() < 128, "one-byte property length");
    body.push(properties.len() as u8);
    body.extend_from_slice(properties);
    body.extend_from_slice(payload);
    packet(PUBLISH_QOS1, &body)
}

/// Send `poison` from a fresh MQTT 5 publisher: returns the reason code of the
/// DISCONNECT it gets, after checking that the connection then closes, that the broker
/// records a client error, and that the subscriber's next message is a clean one.
async fn refused_and_not_delivered(
    rig: &Rig,
    broker: &Handle,
    subscriber: &mut RawClient,
    poison: &[u8],
) -> u8 {
    let mut observer = broker.observe();
    let mut publisher = connected(rig, broker, 5, "ESPthing-pub").await;
    publisher.send(poison).await;
    let (first, body) = publisher.next().await.expect("a DISCONNECT");
    assert_eq!(first, DISCONNECT, "answered {body:02x?}");
    assert_eq!(publisher.next().await, None, "then closed");
    assert_eq!(
        observer
            .wait_for_disconnect("ESPthing-pub", common::WAIT)
            .await,
        Some(DisconnectReason::ClientError)
    );
    // Whatever the subscriber gets next must be the clean message, not the poison.
    assert_eq!(broker.inject(TOPIC, "clean", QoS::AtLeastOnce), 1);
    let (first, delivered) = subscriber.next().await.expect("the clean message");
    assert_eq!(first, PUBLISH_QOS1);
    assert!(delivered.ends_with(b"clean"), "got {delivered:02x?}");
    let packet_id = &delivered[2 + TOPIC.len()..4 + TOPIC.len()];
    subscriber
        .send(&packet(0x40, &[packet_id[0], packet_id[1]]))
        .await;
    body[0]
}

#[tokio::test]
async fn a_publish_with_properties_it_may_not_carry_is_refused_as_malformed_and_never_delivered() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut subscriber = subscriber(&rig, &broker).await;
    for (what, properties) in [
        ("Session Expiry Interval", &[0x11, 0, 0, 0, 1][..]),
        ("Reason String", &[0x1F, 0, 1, b'r'][..]),
        // Identifier 257 in two bytes; its low byte would read as Payload Format.
        ("a two-byte property identifier", &[0x81, 0x02, 1][..]),
        (
            "a Content Type running past its list",
            &[0x03, 0, 9, b't'][..],
        ),
    ] {
        let code = refused_and_not_delivered(
            &rig,
            &broker,
            &mut subscriber,
            &publish_v5(properties, b"poison"),
        )
        .await;
        assert_eq!(code, MALFORMED, "{what}");
    }
}

#[tokio::test]
async fn a_publish_with_duplicated_or_out_of_range_properties_is_refused_and_never_delivered() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut subscriber = subscriber(&rig, &broker).await;
    for properties in [
        &[0x03, 0, 1, b'a', 0x03, 0, 1, b'b'][..], // Content Type twice
        &[0x01, 0, 0x01, 1][..],                   // Payload Format Indicator twice
        &[0x01, 2][..],                            // Payload Format Indicator 2
        &[0x0B, 1][..],                            // a Subscription Identifier
    ] {
        refused_and_not_delivered(
            &rig,
            &broker,
            &mut subscriber,
            &publish_v5(properties, b"poison"),
        )
        .await;
    }
}

#[tokio::test]
async fn a_publish_with_a_duplicated_property_gets_disconnect_protocol_error() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut subscriber = subscriber(&rig, &broker).await;
    let twice = [0x03, 0, 1, b'a', 0x03, 0, 1, b'b'];
    let code = refused_and_not_delivered(
        &rig,
        &broker,
        &mut subscriber,
        &publish_v5(&twice, b"poison"),
    )
    .await;
    assert_eq!(code, PROTOCOL_ERROR);
}

#[tokio::test]
async fn a_311_publish_with_packet_id_0_closes_the_connection_and_is_not_delivered() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut observer = broker.observe();
    let mut subscriber = subscriber(&rig, &broker).await;
    let mut publisher = connected(&rig, &broker, 4, "ESPthing-pub").await;
    let mut body = Vec::new();
    body.extend_from_slice(&(TOPIC.len() as u16).to_be_bytes());
    body.extend_from_slice(TOPIC.as_bytes());
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(b"poison");
    publisher.send(&packet(PUBLISH_QOS1, &body)).await;
    assert_eq!(
        publisher.next().await,
        None,
        "3.1.1 has no DISCONNECT: closed"
    );
    assert_eq!(
        observer
            .wait_for_disconnect("ESPthing-pub", common::WAIT)
            .await,
        Some(DisconnectReason::ClientError)
    );
    broker.inject(TOPIC, "clean", QoS::AtLeastOnce);
    let (_, delivered) = subscriber.next().await.unwrap();
    assert!(delivered.ends_with(b"clean"), "got {delivered:02x?}");
}

#[tokio::test]
async fn a_valid_publishs_properties_reach_the_subscriber_as_checked() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut subscriber = subscriber(&rig, &broker).await;
    let mut publisher = connected(&rig, &broker, 5, "ESPthing-pub").await;
    // Payload Format 1, Content Type "t", Correlation Data, two User Properties.
    let properties = [
        0x01, 1, 0x03, 0, 1, b't', 0x09, 0, 2, 0xde, 0xad, 0x26, 0, 1, b'k', 0, 1, b'v', 0x26, 0,
        1, b'k', 0, 1, b'w',
    ];
    publisher.send(&publish_v5(&properties, b"fine")).await;
    assert_eq!(publisher.next().await.unwrap().0, 0x40, "PUBACK");
    let (first, delivered) = subscriber.next().await.unwrap();
    assert_eq!(first, PUBLISH_QOS1);
    let after_id = 4 + TOPIC.len();
    assert_eq!(usize::from(delivered[after_id]), properties.len());
    assert_eq!(
        &delivered[after_id + 1..after_id + 1 + properties.len()],
        &properties[..]
    );
    assert!(delivered.ends_with(b"fine"));
}
