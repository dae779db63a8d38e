//! AWS IoT Core's documented MQTT behaviour where it departs from (or chooses within) the
//! MQTT specification, one test per FIDELITY.md row, in raw MQTT 5 bytes over real TLS so
//! each option and property is exactly what the row says.
//!
//! "Nothing arrived" is observed, not waited for: a delivery is routed into the
//! subscriber's outbox before the publisher's PUBACK, and the subscriber's session writes
//! what its outbox holds before it answers a later PINGREQ, so a PINGRESP that comes
//! first proves nothing was due.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{RawClient, Rig, WAIT, packet};

const CONNACK: u8 = 0x20;
const PUBACK: u8 = 0x40;
const SUBACK: u8 = 0x90;
const PINGRESP: u8 = 0xD0;
const DISCONNECT: u8 = 0xE0;

fn put_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn put_varint(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            break;
        }
    }
}

fn read_varint(bytes: &[u8]) -> (usize, usize) {
    let mut value = 0;
    for (i, byte) in bytes.iter().enumerate().take(4) {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("bad variable byte integer");
}

/// An MQTT 5 CONNECT: `flags` as on the wire (clean start 0x02, will 0x04, ...), the
/// CONNECT properties, and the will (properties, topic, payload) if the flags say so.
fn connect_v5(
    client_id: &str,
    flags: u8,
    properties: &[u8],
    will: Option<(&[u8], &str, &[u8])>,
) -> Vec<u8> {
    let mut body = Vec::new();
    put_string(&mut body, "MQTT");
    body.push(5);
    body.push(flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    put_varint(&mut body, properties.len());
    body.extend_from_slice(properties);
    put_string(&mut body, client_id);
    if let Some((will_properties, topic, payload)) = will {
        put_varint(&mut body, will_properties.len());
        body.extend_from_slice(will_properties);
        put_string(&mut body, topic);
        body.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        body.extend_from_slice(payload);
    }
    packet(0x10, &body)
}

/// An MQTT 5 SUBSCRIBE of one filter with these subscription options (QoS in the low
/// bits, No Local 0x04, Retain As Published 0x08, Retain Handling << 4) and properties.
fn subscribe(packet_id: u16, filter: &str, options: u8, properties: &[u8]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    put_varint(&mut body, properties.len());
    body.extend_from_slice(properties);
    put_string(&mut body, filter);
    body.push(options);
    packet(0x82, &body)
}

/// An MQTT 5 PUBLISH.
fn publish(
    qos: u8,
    retain: bool,
    packet_id: u16,
    topic: &str,
    properties: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    put_string(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    put_varint(&mut body, properties.len());
    body.extend_from_slice(properties);
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1) | u8::from(retain), &body)
}

/// An MQTT 5 DISCONNECT with a reason code and properties.
fn disconnect(reason: u8, properties: &[u8]) -> Vec<u8> {
    let mut body = vec![reason];
    put_varint(&mut body, properties.len());
    body.extend_from_slice(properties);
    packet(0xE0, &body)
}

/// A PUBLISH as an MQTT 5 client receives it.
#[derive(Debug)]
struct Received {
    retain: bool,
    topic: String,
    properties: Vec<u8>,
    payload: Vec<u8>,
}

fn parse_publish(first: u8, body: &[u8]) -> Received {
    assert_eq!(first & 0xF0, 0x30, "a PUBLISH, not {first:#04x}");
    let qos = (first >> 1) & 0b11;
    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = String::from_utf8(body[2..2 + topic_len].to_vec()).unwrap();
    // Past the packet id, if the QoS has one.
    let mut at = 2 + topic_len + if qos > 0 { 2 } else { 0 };
    let (length, used) = read_varint(&body[at..]);
    at += used;
    Received {
        retain: first & 1 == 1,
        topic,
        properties: body[at..at + length].to_vec(),
        payload: body[at + length..].to_vec(),
    }
}

/// The CONNACK properties as (identifier, value bytes); every CONNACK property has a
/// one-byte identifier and a fixed-size or length-prefixed value.
fn connack_properties(body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let (length, used) = read_varint(&body[2..]);
    let mut list = &body[2 + used..2 + used + length];
    let mut properties = Vec::new();
    while let Some((&id, rest)) = list.split_first() {
        let size = match id {
            0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 => 2,
            0x11 | 0x27 => 4,
            0x12 | 0x1F => 2 + usize::from(u16::from_be_bytes([rest[0], rest[1]])),
            other => panic!("unexpected CONNACK property {other:#04x}"),
        };
        properties.push((id, rest[..size].to_vec()));
        list = &rest[size..];
    }
    properties
}

async fn client(rig: &Rig, addr: SocketAddr, connect: &[u8]) -> (RawClient, Vec<u8>) {
    let mut client = RawClient::connect(rig, addr).await;
    client.send(connect).await;
    let (first, body) = client.next().await.expect("CONNACK");
    assert_eq!(first, CONNACK);
    assert_eq!(body[1], 0, "accepted: {body:?}");
    (client, body)
}

/// A clean-start MQTT 5 client with no properties.
async fn plain(rig: &Rig, addr: SocketAddr, id: &str) -> RawClient {
    client(rig, addr, &connect_v5(id, 0x02, &[], None)).await.0
}

/// Subscribe and return the SUBACK's reason codes.
async fn subscribed(client: &mut RawClient, packet_id: u16, filter: &str, options: u8) -> Vec<u8> {
    client
        .send(&subscribe(packet_id, filter, options, &[]))
        .await;
    let (first, body) = client.next().await.expect("SUBACK");
    assert_eq!(first, SUBACK, "{body:?}");
    assert_eq!(u16::from_be_bytes([body[0], body[1]]), packet_id);
    let (length, used) = read_varint(&body[2..]);
    body[2 + used + length..].to_vec()
}

/// Publish at QoS 1 and wait for the PUBACK (by then the message has been routed).
async fn published(
    client: &mut RawClient,
    packet_id: u16,
    retain: bool,
    topic: &str,
    properties: &[u8],
    payload: &[u8],
) {
    client
        .send(&publish(1, retain, packet_id, topic, properties, payload))
        .await;
    let (first, body) = client.next().await.expect("PUBACK");
    assert_eq!(first, PUBACK, "{body:?}");
}

/// The next packet is a PUBLISH.
async fn received(client: &mut RawClient) -> Received {
    let (first, body) = client.next().await.expect("a PUBLISH");
    parse_publish(first, &body)
}

/// Nothing is due to the client: its PINGREQ is answered before any PUBLISH.
async fn nothing_due(client: &mut RawClient, why: &str) {
    client.send(&[0xC0, 0]).await;
    let (first, body) = client.next().await.expect("PINGRESP");
    assert_eq!(
        first,
        PINGRESP,
        "{why}: got {:?} first",
        (first & 0xF0 == 0x30).then(|| parse_publish(first, &body))
    );
}

#[tokio::test]
async fn a_hash_filter_does_not_receive_its_parent_level() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut subscriber = plain(&rig, addr, "ESPthing-sub").await;
    assert_eq!(
        subscribed(&mut subscriber, 1, "test/sensor/#", 1).await,
        [1]
    );
    let mut publisher = plain(&rig, addr, "ESPthing-pub").await;
    published(&mut publisher, 1, false, "test/sensor", &[], b"parent").await;
    nothing_due(&mut subscriber, "test/sensor/# got test/sensor").await;
    published(&mut publisher, 2, false, "test/sensor/", &[], b"child").await;
    let got = received(&mut subscriber).await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("test/sensor/", &b"child"[..])
    );
}

#[tokio::test]
async fn retained_messages_reach_only_a_subscription_naming_their_topic_exactly() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut publisher = plain(&rig, addr, "ESPthing-pub").await;
    published(&mut publisher, 1, true, "test/probe/a", &[], b"kept").await;

    let mut subscriber = plain(&rig, addr, "ESPthing-sub").await;
    assert_eq!(subscribed(&mut subscriber, 1, "test/probe/+", 1).await, [1]);
    nothing_due(&mut subscriber, "a retained message reached test/probe/+").await;
    assert_eq!(subscribed(&mut subscriber, 2, "test/#", 1).await, [1]);
    nothing_due(&mut subscriber, "a retained message reached test/#").await;
    assert_eq!(subscribed(&mut subscriber, 3, "test/probe/a", 1).await, [1]);
    let got = received(&mut subscriber).await;
    assert_eq!((got.topic.as_str(), got.retain), ("test/probe/a", true));
    // Later messages still reach the wildcard subscriptions, without the flag.
    published(&mut publisher, 2, true, "test/probe/a", &[], b"new").await;
    let got = received(&mut subscriber).await;
    assert_eq!((&got.payload[..], got.retain), (&b"new"[..], false));
}

#[tokio::test]
async fn retain_as_published_keeps_the_flag_on_live_messages_and_others_get_it_cleared() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut rap = plain(&rig, addr, "ESPthing-rap").await;
    assert_eq!(subscribed(&mut rap, 1, "test/rap", 0x08 | 1).await, [1]);
    let mut plain_subscriber = plain(&rig, addr, "ESPthing-plain").await;
    assert_eq!(
        subscribed(&mut plain_subscriber, 1, "test/rap", 1).await,
        [1]
    );
    let mut publisher = plain(&rig, addr, "ESPthing-pub").await;
    published(&mut publisher, 1, true, "test/rap", &[], b"state").await;
    assert!(received(&mut rap).await.retain, "Retain As Published");
    assert!(
        !received(&mut plain_subscriber).await.retain,
        "AWS clears it"
    );
}

#[tokio::test]
async fn retain_handling_1_sends_only_for_a_new_subscription_and_2_never() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut publisher = plain(&rig, addr, "ESPthing-pub").await;
    published(&mut publisher, 1, true, "test/rh", &[], b"kept").await;

    let mut subscriber = plain(&rig, addr, "ESPthing-sub").await;
    assert_eq!(
        subscribed(&mut subscriber, 1, "test/rh", 0x20 | 1).await,
        [1]
    );
    nothing_due(&mut subscriber, "retain handling 2").await;
    let mut other = plain(&rig, addr, "ESPthing-other").await;
    assert_eq!(subscribed(&mut other, 1, "test/rh", 0x10 | 1).await, [1]);
    assert!(received(&mut other).await.retain, "retain handling 1, new");
    assert_eq!(subscribed(&mut other, 2, "test/rh", 0x10 | 1).await, [1]);
    nothing_due(&mut other, "retain handling 1, existing").await;
    assert_eq!(subscribed(&mut other, 3, "test/rh", 1).await, [1]);
    assert!(received(&mut other).await.retain, "retain handling 0");
}

#[tokio::test]
async fn no_local_keeps_a_clients_own_messages_from_it() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut client = plain(&rig, addr, "ESPthing-self").await;
    assert_eq!(subscribed(&mut client, 1, "test/echo", 0x04 | 1).await, [1]);
    published(&mut client, 1, false, "test/echo", &[], b"mine").await;
    nothing_due(&mut client, "No Local").await;
    let mut other = plain(&rig, addr, "ESPthing-other").await;
    published(&mut other, 1, false, "test/echo", &[], b"theirs").await;
    assert_eq!(received(&mut client).await.payload, b"theirs");
}

/// Message Expiry Interval (0x02) property bytes.
fn expiry(secs: u32) -> Vec<u8> {
    let mut bytes = vec![0x02];
    bytes.extend_from_slice(&secs.to_be_bytes());
    bytes
}

fn message_expiry_of(properties: &[u8]) -> Option<u32> {
    let at = properties.iter().position(|&b| b == 0x02)?;
    Some(u32::from_be_bytes(
        properties[at + 1..at + 5].try_into().unwrap(),
    ))
}

#[tokio::test]
async fn a_queued_message_past_its_expiry_is_dropped_and_the_rest_carry_what_remains() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    // A persistent session (Session Expiry 1 h), away while the messages arrive.
    let session = [0x11, 0, 0, 0x0e, 0x10];
    let (mut subscriber, _) = client(
        &rig,
        addr,
        &connect_v5("ESPthing-away", 0x02, &session, None),
    )
    .await;
    assert_eq!(subscribed(&mut subscriber, 1, "test/exp", 1).await, [1]);
    let mut observer = broker.observe();
    subscriber.send(&disconnect(0, &[])).await;
    // The session is stored before the disconnection is reported.
    assert!(
        observer
            .wait_for_disconnect("ESPthing-away", WAIT)
            .await
            .is_some()
    );

    let mut publisher = plain(&rig, addr, "ESPthing-pub").await;
    let sent = Instant::now();
    published(&mut publisher, 1, false, "test/exp", &expiry(1), b"short").await;
    published(&mut publisher, 2, false, "test/exp", &expiry(100), b"long").await;
    // The interval under test has to pass; nothing else is waited for.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let waited = sent.elapsed().as_secs_f64();

    let (mut subscriber, connack) = client(
        &rig,
        addr,
        &connect_v5("ESPthing-away", 0x00, &session, None),
    )
    .await;
    assert_eq!(connack[0], 1, "session present");
    let got = received(&mut subscriber).await;
    assert_eq!(got.payload, b"long", "the expired message is not delivered");
    let remaining = message_expiry_of(&got.properties).expect("Message Expiry Interval");
    assert!(
        f64::from(remaining) <= 100.0 - waited + 1.0 && remaining < 100,
        "{remaining} s left after {waited:.1} s"
    );
}

#[tokio::test]
async fn session_expiry_in_disconnect_replaces_the_one_from_connect() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let session = [0x11, 0, 0, 0x0e, 0x10];
    let (mut first, _) = client(&rig, addr, &connect_v5("ESPthing-sx", 0x02, &session, None)).await;
    assert_eq!(subscribed(&mut first, 1, "test/sx", 1).await, [1]);
    // Session Expiry Interval 0 on the way out: the session ends with the connection.
    let mut observer = broker.observe();
    first.send(&disconnect(0, &[0x11, 0, 0, 0, 0])).await;
    assert!(
        observer
            .wait_for_disconnect("ESPthing-sx", WAIT)
            .await
            .is_some()
    );
    let (_second, connack) =
        client(&rig, addr, &connect_v5("ESPthing-sx", 0x00, &session, None)).await;
    assert_eq!(connack[0], 0, "no session present");
}

#[tokio::test]
async fn session_expiry_in_disconnect_cannot_revive_a_session_connect_said_ends() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let (mut client_a, _) = client(&rig, addr, &connect_v5("ESPthing-sx0", 0x02, &[], None)).await;
    client_a
        .send(&disconnect(0, &[0x11, 0, 0, 0x0e, 0x10]))
        .await;
    let (first, body) = client_a.next().await.expect("DISCONNECT");
    assert_eq!((first, body[0]), (DISCONNECT, 0x82), "Protocol Error");
}

#[tokio::test]
async fn connack_announces_what_aws_announces() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let (_client, connack) = client(
        &rig,
        broker.mqtt_addr(),
        &connect_v5("ESPthing", 0x02, &[], None),
    )
    .await;
    let properties = connack_properties(&connack);
    let value = |id: u8| {
        properties
            .iter()
            .find(|(p, _)| *p == id)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        value(0x21),
        Some(100u16.to_be_bytes().to_vec()),
        "Receive Maximum"
    );
    assert_eq!(value(0x24), Some(vec![1]), "Maximum QoS");
    assert_eq!(value(0x25), Some(vec![1]), "Retain Available");
    assert_eq!(
        value(0x22),
        Some(8u16.to_be_bytes().to_vec()),
        "Topic Alias Maximum"
    );
    assert_eq!(
        value(0x28),
        Some(vec![1]),
        "Wildcard Subscription Available"
    );
    assert_eq!(
        value(0x29),
        Some(vec![0]),
        "Subscription Identifier Available"
    );
    assert_eq!(value(0x2A), Some(vec![1]), "Shared Subscription Available");
    assert_eq!(
        value(0x27),
        Some(149_504u32.to_be_bytes().to_vec()),
        "Maximum Packet Size, as AWS IoT Core's CONNACK says"
    );
}

#[tokio::test]
async fn a_subscription_identifier_is_refused_as_announced() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut client = plain(&rig, broker.mqtt_addr(), "ESPthing").await;
    client.send(&subscribe(1, "test/id", 1, &[0x0B, 7])).await;
    let (first, body) = client.next().await.expect("DISCONNECT");
    assert_eq!(
        (first, body[0]),
        (DISCONNECT, 0xA1),
        "Subscription Identifiers not supported"
    );
}

/// Content Type "text/plain" and a User Property, as will properties.
fn will_properties() -> Vec<u8> {
    let mut properties = vec![0x03];
    put_string(&mut properties, "text/plain");
    properties.push(0x26);
    put_string(&mut properties, "k");
    put_string(&mut properties, "v");
    properties
}

#[tokio::test]
async fn a_will_is_published_with_its_properties_when_the_connection_drops() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut watcher = plain(&rig, addr, "ESPthing-watch").await;
    assert_eq!(subscribed(&mut watcher, 1, "test/will", 1).await, [1]);
    let properties = will_properties();
    let (dying, _) = client(
        &rig,
        addr,
        &connect_v5(
            "ESPthing-dying",
            0x02 | 0x04 | 0x08,
            &[],
            Some((&properties, "test/will", b"gone")),
        ),
    )
    .await;
    drop(dying);
    let got = received(&mut watcher).await;
    assert_eq!(got.payload, b"gone");
    assert_eq!(got.properties, properties, "will properties passed on");
}

#[tokio::test]
async fn disconnect_with_reason_4_publishes_the_will_and_reason_0_does_not() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut watcher = plain(&rig, addr, "ESPthing-watch").await;
    assert_eq!(subscribed(&mut watcher, 1, "test/will", 1).await, [1]);
    let mut observer = broker.observe();
    let will = Some((&[][..], "test/will", &b"bye-0"[..]));
    let mut mannerly = client(
        &rig,
        addr,
        &connect_v5("ESPthing-0", 0x02 | 0x04, &[], will),
    )
    .await
    .0;
    mannerly.send(&disconnect(0, &[])).await;
    // The will, if any, is routed before the disconnection is reported.
    assert!(
        observer
            .wait_for_disconnect("ESPthing-0", WAIT)
            .await
            .is_some()
    );
    nothing_due(&mut watcher, "reason 0 published the will").await;
    let will = Some((&[][..], "test/will", &b"bye-4"[..]));
    let mut leaving = client(
        &rig,
        addr,
        &connect_v5("ESPthing-4", 0x02 | 0x04, &[], will),
    )
    .await
    .0;
    leaving.send(&disconnect(0x04, &[])).await;
    assert!(
        observer
            .wait_for_disconnect("ESPthing-4", WAIT)
            .await
            .is_some()
    );
    assert_eq!(received(&mut watcher).await.payload, b"bye-4");
}

#[tokio::test]
async fn topic_aliases_up_to_8_are_accepted_from_the_client() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut subscriber = plain(&rig, addr, "ESPthing-sub").await;
    assert_eq!(subscribed(&mut subscriber, 1, "test/alias", 1).await, [1]);
    let mut publisher = plain(&rig, addr, "ESPthing-pub").await;
    // Topic Alias 8 set with the topic, then used with an empty topic.
    published(
        &mut publisher,
        1,
        false,
        "test/alias",
        &[0x23, 0, 8],
        b"set",
    )
    .await;
    published(&mut publisher, 2, false, "", &[0x23, 0, 8], b"used").await;
    assert_eq!(received(&mut subscriber).await.payload, b"set");
    let got = received(&mut subscriber).await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("test/alias", &b"used"[..])
    );
    // Alias 9 is beyond the announced maximum.
    publisher
        .send(&publish(1, false, 3, "test/alias", &[0x23, 0, 9], b"x"))
        .await;
    let (first, body) = publisher.next().await.expect("DISCONNECT");
    assert_eq!((first, body[0]), (DISCONNECT, 0x94), "Topic Alias invalid");
}

#[tokio::test]
async fn a_v5_client_denied_by_the_policy_gets_0x87_in_its_suback_and_puback_and_stays() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut observer = broker.observe();
    let mut client = plain(&rig, broker.mqtt_addr(), "ESPthing").await;
    // The test policy allows test/* only.
    client.send(&subscribe(1, "denied/x", 1, &[])).await;
    let (first, body) = client.next().await.expect("SUBACK");
    assert_eq!((first, body.last().copied()), (SUBACK, Some(0x87)));
    client
        .send(&publish(1, false, 2, "denied/x", &[], b"no"))
        .await;
    let (first, body) = client.next().await.expect("PUBACK");
    assert_eq!((first, body.get(2).copied()), (PUBACK, Some(0x87)));
    nothing_due(&mut client, "still connected").await;
    assert!(
        std::iter::from_fn(|| observer.try_next())
            .all(|e| !matches!(e, mock_broker::Event::Publish(p) if p.topic == "denied/x")),
        "a denied publish is not routed"
    );
}

#[tokio::test]
async fn a_level_5_connect_with_a_wrong_protocol_name_gets_an_mqtt5_connack() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut client = RawClient::connect(&rig, broker.mqtt_addr()).await;
    let mut connect = connect_v5("ESPthing", 0x02, &[], None);
    connect[4..8].copy_from_slice(b"MQTX");
    client.send(&connect).await;
    let (first, body) = client.next().await.expect("CONNACK");
    // Flags, reason 0x84 (Unsupported Protocol Version), no properties.
    assert_eq!((first, &body[..]), (CONNACK, &[0, 0x84, 0][..]));
}

#[tokio::test]
async fn an_mqtt5_client_without_a_client_id_is_assigned_one() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.policy = mock_broker::Policy::allow_all();
    let broker = rig.start(config).await;
    let (_client, connack) =
        client(&rig, broker.mqtt_addr(), &connect_v5("", 0x02, &[], None)).await;
    let assigned = connack_properties(&connack)
        .into_iter()
        .find(|(id, _)| *id == 0x12)
        .map(|(_, value)| String::from_utf8(value[2..].to_vec()).unwrap())
        .expect("Assigned Client Identifier");
    assert!(!assigned.is_empty());
    let listed = broker.clients();
    assert!(
        listed.iter().any(|c| c.client_id == assigned),
        "{assigned} not in {listed:?}"
    );
}

#[tokio::test]
async fn a_shared_subscription_group_gets_each_message_once_its_members_in_turn() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.policy = mock_broker::Policy::allow_all();
    let broker = rig.start(config).await;
    let addr = broker.mqtt_addr();
    let filter = "$share/workers/test/jobs/+";
    let mut a = plain(&rig, addr, "ESPthing-a").await;
    assert_eq!(subscribed(&mut a, 1, filter, 1).await, [1]);
    let mut b = plain(&rig, addr, "ESPthing-b").await;
    assert_eq!(subscribed(&mut b, 1, filter, 1).await, [1]);
    let mut publisher = plain(&rig, addr, "ESPthing-pub").await;
    for (id, payload) in [(1, b"1"), (2, b"2"), (3, b"3"), (4, b"4")] {
        published(&mut publisher, id, false, "test/jobs/x", &[], payload).await;
    }
    // Round robin by client id: a, b, a, b.
    assert_eq!(received(&mut a).await.payload, b"1");
    assert_eq!(received(&mut a).await.payload, b"3");
    nothing_due(&mut a, "a third message to a").await;
    assert_eq!(received(&mut b).await.payload, b"2");
    let got = received(&mut b).await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("test/jobs/x", &b"4"[..])
    );
    nothing_due(&mut b, "a third message to b").await;
}

#[tokio::test]
async fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.policy = mock_broker::Policy::allow_all();
    let broker = rig.start(config).await;
    let mut client = plain(&rig, broker.mqtt_addr(), "ESPthing").await;
    client
        .send(&subscribe(1, "$share/g/test/x", 0x04 | 1, &[]))
        .await;
    let (first, body) = client.next().await.expect("DISCONNECT");
    assert_eq!((first, body[0]), (DISCONNECT, 0x82));
}

#[tokio::test]
async fn at_most_8_filters_are_granted_in_one_subscribe() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut client = plain(&rig, broker.mqtt_addr(), "ESPthing").await;
    let mut body = vec![0, 1, 0];
    for i in 0..9 {
        put_string(&mut body, &format!("test/{i}"));
        body.push(1);
    }
    client.send(&packet(0x82, &body)).await;
    let (first, suback) = client.next().await.expect("SUBACK");
    assert_eq!(first, SUBACK);
    assert_eq!(
        &suback[3..],
        &[1, 1, 1, 1, 1, 1, 1, 1, 0x97],
        "Quota exceeded"
    );
}

#[tokio::test]
async fn past_100_publishes_a_second_they_are_dropped_and_past_512_kib_the_client_waits() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.inbound_limits = Some(mock_broker::InboundLimits::default());
    let broker = rig.start(config).await;
    let addr = broker.mqtt_addr();

    // 101 publishes in one burst: 100 acknowledged, the 101st dropped, no PUBACK.
    let mut client = plain(&rig, addr, "ESPthing-rate").await;
    let burst: Vec<u8> = (1..=101u16)
        .flat_map(|id| publish(1, false, id, "test/rate", &[], b"x"))
        .collect();
    client.send(&burst).await;
    for id in 1..=100u16 {
        let (first, body) = client.next().await.expect("PUBACK");
        assert_eq!((first, &body[..2]), (PUBACK, &id.to_be_bytes()[..]));
    }
    nothing_due(&mut client, "a PUBACK for the 101st publish").await;

    // 5 x 128 KiB in one burst: the fifth is past 512 KiB and read in the next second.
    let connecting = Instant::now();
    let mut client = plain(&rig, addr, "ESPthing-bytes").await;
    let payload = vec![b'x'; 128 * 1024];
    let burst: Vec<u8> = (1..=5u16)
        .flat_map(|id| publish(1, false, id, "test/rate", &[], &payload))
        .collect();
    client.send(&burst).await;
    let mut last = Duration::ZERO;
    for _ in 0..5 {
        let (first, _) = client.next().await.expect("PUBACK");
        assert_eq!(first, PUBACK);
        last = connecting.elapsed();
    }
    // Its window opened with the first publish, after `connecting`.
    assert!(
        last >= Duration::from_secs(1),
        "the fifth was read {last:?} after connecting"
    );
}

#[tokio::test]
async fn a_qos_2_subscribe_over_mqtt_311_gets_no_suback_and_subscribes_nothing() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut client = RawClient::connect(&rig, broker.mqtt_addr()).await;
    client
        .send(&common::connect_packet(4, "ESPthing", 60, &[]))
        .await;
    assert_eq!(client.next().await.expect("CONNACK"), (CONNACK, vec![0, 0]));
    let mut body = vec![0, 1];
    put_string(&mut body, "test/q2");
    body.push(2);
    client.send(&packet(0x82, &body)).await;
    // PINGREQ/PINGRESP are the same in 3.1.1.
    nothing_due(&mut client, "a SUBACK").await;
    assert!(broker.clients()[0].subscriptions.is_empty());
}

#[tokio::test]
async fn a_retained_message_past_its_expiry_is_not_sent_to_new_subscribers() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut publisher = plain(&rig, addr, "ESPthing-pub").await;
    published(&mut publisher, 1, true, "test/short", &expiry(1), b"gone").await;
    published(&mut publisher, 2, true, "test/long", &expiry(100), b"kept").await;
    // The interval under test has to pass; nothing else is waited for.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut subscriber = plain(&rig, addr, "ESPthing-sub").await;
    assert_eq!(subscribed(&mut subscriber, 1, "test/short", 1).await, [1]);
    nothing_due(&mut subscriber, "an expired retained message").await;
    assert_eq!(subscribed(&mut subscriber, 2, "test/long", 1).await, [1]);
    let got = received(&mut subscriber).await;
    assert!(got.retain);
    assert!(message_expiry_of(&got.properties).is_some_and(|left| left < 100));
}

/// Will Delay Interval (0x18) property bytes.
fn will_delay(secs: u32) -> Vec<u8> {
    let mut bytes = vec![0x18];
    bytes.extend_from_slice(&secs.to_be_bytes());
    bytes
}

/// Session Expiry Interval (0x11) property bytes.
fn session_expiry(secs: u32) -> Vec<u8> {
    let mut bytes = vec![0x11];
    bytes.extend_from_slice(&secs.to_be_bytes());
    bytes
}

#[tokio::test]
async fn a_will_waits_out_its_delay_and_a_reconnection_in_time_cancels_it() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut watcher = plain(&rig, addr, "ESPthing-watch").await;
    assert_eq!(subscribed(&mut watcher, 1, "test/will", 1).await, [1]);
    let mut observer = broker.observe();
    let delay = Duration::from_secs(2);
    let delayed = |id: &str, payload: &'static [u8]| {
        connect_v5(
            id,
            0x02 | 0x04,
            &session_expiry(3600),
            Some((&will_delay(2), "test/will", payload)),
        )
    };

    // Dropped and not back: the will goes out once the delay has passed.
    let (gone, _) = client(&rig, addr, &delayed("ESPthing-late", b"late")).await;
    let dropped = Instant::now();
    drop(gone);
    assert!(
        observer
            .wait_for_disconnect("ESPthing-late", WAIT)
            .await
            .is_some()
    );
    nothing_due(&mut watcher, "a will before its delay").await;
    assert_eq!(received(&mut watcher).await.payload, b"late");
    assert!(
        dropped.elapsed() >= delay,
        "published {:?} after the drop",
        dropped.elapsed()
    );

    // Dropped, then back within the delay: the will is never published.
    let (gone, _) = client(&rig, addr, &delayed("ESPthing-back", b"back")).await;
    drop(gone);
    assert!(
        observer
            .wait_for_disconnect("ESPthing-back", WAIT)
            .await
            .is_some()
    );
    let (_back, connack) = client(
        &rig,
        addr,
        &connect_v5("ESPthing-back", 0x00, &session_expiry(3600), None),
    )
    .await;
    assert_eq!(connack[0], 1, "session present");
    let why = observer
        .wait_for(WAIT, |event| match event {
            mock_broker::Event::WillDiscarded { client_id, why }
                if client_id == "ESPthing-back" =>
            {
                Some(why.clone())
            }
            _ => None,
        })
        .await
        .expect("the delayed will is discarded");
    assert!(why.contains("connected again"), "{why}");
    nothing_due(&mut watcher, "a will after the client came back").await;
}

#[tokio::test]
async fn a_delayed_will_goes_out_when_the_session_ends_if_that_is_sooner() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut watcher = plain(&rig, addr, "ESPthing-watch").await;
    assert_eq!(subscribed(&mut watcher, 1, "test/will", 1).await, [1]);
    // A will delayed 100 s from a session that ends with its connection (no Session
    // Expiry Interval): published at once, well within WAIT.
    let (gone, _) = client(
        &rig,
        addr,
        &connect_v5(
            "ESPthing-brief",
            0x02 | 0x04,
            &[],
            Some((&will_delay(100), "test/will", b"at once")),
        ),
    )
    .await;
    drop(gone);
    assert_eq!(received(&mut watcher).await.payload, b"at once");
    // A session kept 1 s: published when it ends, not after 100 s.
    let (gone, _) = client(
        &rig,
        addr,
        &connect_v5(
            "ESPthing-short",
            0x02 | 0x04,
            &session_expiry(1),
            Some((&will_delay(100), "test/will", b"session over")),
        ),
    )
    .await;
    let dropped = Instant::now();
    drop(gone);
    assert_eq!(received(&mut watcher).await.payload, b"session over");
    assert!(dropped.elapsed() >= Duration::from_secs(1));
}
