//! Packets a server must refuse, sent as raw MQTT bytes over real TLS (where well-behaved
//! clients would not misbehave on purpose): duplicated or misplaced properties, reserved
//! bits and values, trailing bytes, a zero packet id.

mod common;

use std::net::SocketAddr;

use common::{
    RawClient, Rig, WAIT, connect_packet, connect_packet_with, packet, publish_packet_v5,
    subscribe_packet_v5,
};
use mock_broker::{Event, QoS};

const CONNACK: u8 = 0x20;
const PUBLISH_QOS1: u8 = 0x32;
const SUBACK: u8 = 0x90;
const DISCONNECT: u8 = 0xE0;

async fn connect_v5(rig: &Rig, addr: SocketAddr, id: &str, properties: &[u8]) -> RawClient {
    let mut client = RawClient::connect(rig, addr).await;
    client.send(&connect_packet(5, id, 60, properties)).await;
    let (first, body) = client.next().await.expect("CONNACK");
    assert_eq!((first, body[1]), (CONNACK, 0), "accepted");
    client
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// An MQTT 5 QoS 1 PUBLISH with these encoded properties.
fn publish_with_properties(
    packet_id: u16,
    topic: &str,
    properties: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    put_string(&mut body, topic);
    body.extend_from_slice(&packet_id.to_be_bytes());
    body.push(properties.len() as u8);
    body.extend_from_slice(properties);
    body.extend_from_slice(payload);
    packet(0x32, &body)
}

#[tokio::test]
async fn a_publish_with_duplicated_properties_is_refused_and_never_reaches_a_persistent_subscriber()
{
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut observer = broker.observe();
    // The victim: clean start off, a session that outlives the connection.
    let expiry = [0x11, 0, 0, 0x0e, 0x10];
    let mut victim = RawClient::connect(&rig, addr).await;
    victim
        .send(&connect_packet_with(
            5,
            "ESPthing-victim",
            60,
            &expiry,
            false,
        ))
        .await;
    assert_eq!(victim.next().await.unwrap().0, CONNACK);
    victim.send(&subscribe_packet_v5(1, "test/poison")).await;
    assert_eq!(victim.next().await.unwrap().0, SUBACK);

    let mut attacker = connect_v5(&rig, addr, "ESPthing-attacker", &[]).await;
    // Content type twice: a Protocol Error a subscriber must disconnect over.
    let content_type = [0x03, 0, 1, b't'];
    let poisoned = publish_with_properties(
        7,
        "test/poison",
        &[content_type, content_type].concat(),
        b"bad",
    );
    attacker.send(&poisoned).await;
    let (first, body) = attacker.next().await.expect("DISCONNECT");
    assert_eq!((first, body[0]), (DISCONNECT, 0x82), "protocol error");
    assert!(attacker.next().await.is_none(), "then closed");

    // Nothing was routed: the next thing the victim gets is the clean message.
    broker.inject("test/poison", "clean", QoS::AtLeastOnce);
    let (first, body) = victim.next().await.unwrap();
    assert_eq!(first, PUBLISH_QOS1);
    assert!(body.ends_with(b"clean"), "{body:?}");
    let routed = observer
        .wait_for(WAIT, |e| match e {
            Event::Publish(p) if p.topic == "test/poison" => Some(p.payload.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        routed.as_deref(),
        Some(&b"clean"[..]),
        "the poisoned one was never observed"
    );
}

#[tokio::test]
async fn malformed_packets_get_the_mqtt5_reason_code_and_311_clients_are_just_closed() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();

    // (what, packet, MQTT 5 DISCONNECT reason)
    let mut subscribe_retain_handling_3 = vec![0, 1, 0];
    put_string(&mut subscribe_retain_handling_3, "test/a");
    subscribe_retain_handling_3.push(0b0011_0001);
    let mut unsubscribe_wrong_flags = vec![0, 1, 0];
    put_string(&mut unsubscribe_wrong_flags, "test/a");
    let cases: Vec<(&str, Vec<u8>, u8)> = vec![
        ("PINGREQ with a body", vec![0xC0, 1, 0], 0x81),
        (
            "QoS 1 PUBLISH with packet id 0",
            publish_packet_v5(1, 0, "test/a", b"x"),
            0x81,
        ),
        (
            "SUBSCRIBE with retain handling 3",
            packet(0x82, &subscribe_retain_handling_3),
            0x82,
        ),
        (
            "UNSUBSCRIBE with flags 0000",
            packet(0xA0, &unsubscribe_wrong_flags),
            0x81,
        ),
        (
            "UNSUBSCRIBE without a filter",
            packet(0xA2, &[0, 1, 0]),
            0x82,
        ),
        (
            "PUBLISH with a subscription identifier",
            publish_with_properties(3, "test/a", &[0x0B, 1], b"x"),
            0x82,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut client = connect_v5(&rig, addr, "ESPthing", &[]).await;
        client.send(&bytes).await;
        let (first, body) = client
            .next()
            .await
            .unwrap_or_else(|| panic!("{what}: DISCONNECT"));
        assert_eq!((first, body[0]), (DISCONNECT, code), "{what}");
        assert!(client.next().await.is_none(), "{what}: then closed");
    }

    // MQTT 3.1.1 has no DISCONNECT from the server: the connection just closes.
    let mut v311 = RawClient::connect(&rig, addr).await;
    v311.send(&connect_packet(4, "ESPthing", 60, &[])).await;
    assert_eq!(v311.next().await, Some((CONNACK, vec![0, 0])));
    v311.send(&[0xC0, 1, 0]).await;
    assert_eq!(
        v311.next().await,
        None,
        "PINGREQ with a body closes a 3.1.1 client"
    );
}

#[tokio::test]
async fn a_connect_that_breaks_mqtt5_rules_gets_a_connack_with_the_reason() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let cases: &[(&str, &[u8], u8)] = &[
        ("Receive Maximum 0", &[0x21, 0, 0], 0x82),
        ("Maximum Packet Size 0", &[0x27, 0, 0, 0, 0], 0x82),
        (
            "Session Expiry twice",
            &[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1],
            0x82,
        ),
    ];
    for (what, properties, code) in cases {
        let mut client = RawClient::connect(&rig, addr).await;
        client
            .send(&connect_packet(5, "ESPthing", 60, properties))
            .await;
        assert_eq!(
            client.next().await,
            Some((CONNACK, vec![0, *code, 0])),
            "{what}"
        );
        assert!(client.next().await.is_none(), "{what}: then closed");
    }
    // Will QoS 1 without the will flag: malformed.
    let mut bytes = connect_packet(5, "ESPthing", 60, &[]);
    bytes[9] |= 0b1000;
    let mut client = RawClient::connect(&rig, addr).await;
    client.send(&bytes).await;
    assert_eq!(client.next().await, Some((CONNACK, vec![0, 0x81, 0])));
    // Trailing bytes after a 3.1.1 CONNECT: closed without a CONNACK.
    let mut bytes = connect_packet(4, "ESPthing", 60, &[]);
    bytes.push(0xAA);
    bytes[1] += 1;
    let mut client = RawClient::connect(&rig, addr).await;
    client.send(&bytes).await;
    assert_eq!(client.next().await, None);
}
