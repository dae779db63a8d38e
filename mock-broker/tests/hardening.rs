//! Issue 10's hardening: a poisoned packet, a bad will, a hostile client id, a subscriber
//! that stops reading or absurd faults must never wedge a client or the broker. Raw MQTT
//! bytes over real TLS, where well-behaved clients would not misbehave on purpose.

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

/// A CONNECT (`level` 4 or 5, clean start) with a will on `topic` at `qos`.
fn connect_with_will(level: u8, client_id: &str, topic: &str, qos: u8) -> Vec<u8> {
    let mut body = Vec::new();
    put_string(&mut body, "MQTT");
    body.push(level);
    body.push(0b110 | (qos << 3));
    body.extend_from_slice(&60u16.to_be_bytes());
    if level == 5 {
        body.push(0);
    }
    put_string(&mut body, client_id);
    if level == 5 {
        body.push(0);
    }
    put_string(&mut body, topic);
    put_string(&mut body, "gone");
    packet(0x10, &body)
}

#[tokio::test]
async fn a_will_is_held_to_the_publish_rules_and_the_policy_when_the_client_connects() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut observer = broker.observe();
    // (will topic, will QoS, MQTT 5 CONNACK reason); the policy allows test/* only.
    let refused: &[(&str, u8, u8)] = &[
        ("test/#/x", 1, 0x90),
        ("", 0, 0x90),
        ("test/a/b/c/d/e/f/g/h", 0, 0x90),
        ("$aws/events/presence/disconnected/ESPthing-other", 0, 0x90),
        ("elsewhere", 1, 0x87),
        ("test/q2", 2, 0x9B),
    ];
    for (topic, qos, code) in refused {
        let mut v5 = RawClient::connect(&rig, addr).await;
        v5.send(&connect_with_will(5, "ESPthing", topic, *qos))
            .await;
        assert_eq!(
            v5.next().await,
            Some((CONNACK, vec![0, *code, 0])),
            "{topic:?}"
        );
        assert!(v5.next().await.is_none(), "{topic:?}: then closed");
        let reason = observer.wait_for_refusal(WAIT).await.unwrap();
        assert!(reason.contains("will"), "{reason}");
        // AWS closes a 3.1.1 connection without a CONNACK.
        let mut v311 = RawClient::connect(&rig, addr).await;
        v311.send(&connect_with_will(4, "ESPthing", topic, *qos))
            .await;
        assert_eq!(v311.next().await, None, "{topic:?} over 3.1.1");
    }
    assert!(broker.clients().is_empty());

    // A will the rules and the policy allow is accepted, and published when the
    // connection is lost.
    let mut client = RawClient::connect(&rig, addr).await;
    client
        .send(&connect_with_will(5, "ESPthing", "test/will", 1))
        .await;
    let (first, connack) = client.next().await.unwrap();
    assert_eq!((first, connack[1]), (CONNACK, 0), "accepted");
    assert!(broker.drop_connection("ESPthing"));
    let will = observer.wait_for_publish("test/will", WAIT).await.unwrap();
    assert_eq!(&will.payload[..], b"gone");
}

#[tokio::test]
async fn a_client_id_with_wildcards_connects_but_gets_no_lifecycle_events() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.policy = mock_broker::Policy::allow_all();
    let broker = rig.start(config).await;
    let addr = broker.mqtt_addr();
    let mut observer = broker.observe();
    for id in ["evil/#", "evil/+/x"] {
        let mut client = connect_v5(&rig, addr, id, &[]).await;
        client.send(&[0xE0, 0]).await;
        assert!(client.next().await.is_none());
        observer.wait_for_disconnect(id, WAIT).await.unwrap();
    }
    // A plain id's events come after, so every earlier publish has been observed.
    let _plain = connect_v5(&rig, addr, "ESPthing", &[]).await;
    let topics: Vec<String> = {
        let mut seen = Vec::new();
        observer
            .wait_for(WAIT, |event| match event {
                Event::Publish(p) if p.topic == "$aws/events/presence/connected/ESPthing" => {
                    Some(())
                }
                Event::Publish(p) => {
                    seen.push(p.topic.clone());
                    None
                }
                _ => None,
            })
            .await
            .expect("the plain client's connected event");
        seen
    };
    assert!(
        topics.iter().all(|t| !t.contains(['#', '+'])),
        "no topic built from a wildcard client id: {topics:?}"
    );
}
