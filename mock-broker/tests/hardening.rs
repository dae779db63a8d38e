//! The broker against a hostile or careless owner and hostile clients: it stays bounded,
//! refuses nonsense naming the field, and always shuts down.

mod common;

use std::time::{Duration, Instant};

use common::{RawClient, Rig, connect_packet, http, subscribe_packet_v5};
use mock_broker::{Faults, SntpBehaviour};
use serde_json::json;

const CONNACK: u8 = 0x20;

/// Shutdown ends within this, whatever faults are set.
const SHUTDOWN_WITHIN: Duration = Duration::from_secs(2);

async fn connected(rig: &Rig, broker: &mock_broker::Handle, id: &str) -> RawClient {
    let mut client = RawClient::connect(rig, broker.mqtt_addr()).await;
    client.send(&connect_packet(5, id, 60, &[])).await;
    assert_eq!(client.next().await.unwrap().0, CONNACK);
    client
}

#[tokio::test]
async fn shutdown_ends_in_time_whatever_faults_are_set() {
    let faults = [
        Faults {
            latency: mock_broker::faults::MAX_LATENCY,
            ..Faults::default()
        },
        Faults {
            black_hole: true,
            ..Faults::default()
        },
        Faults {
            withhold_puback: true,
            withhold_suback: true,
            withhold_pingresp: true,
            ..Faults::default()
        },
    ];
    for fault in faults {
        let rig = Rig::new();
        let broker = rig.start(rig.config()).await;
        let mut client = connected(&rig, &broker, "ESPthing").await;
        broker.set_faults(fault.clone());
        // A packet the broker now answers through the fault (a latency sleep, or not at
        // all), so the session is inside it when shutdown comes.
        client.send(&subscribe_packet_v5(1, "test/in")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        tokio::time::timeout(SHUTDOWN_WITHIN, broker.shutdown())
            .await
            .unwrap_or_else(|_| panic!("shutdown hung with {fault:?}"));
        assert!(started.elapsed() < SHUTDOWN_WITHIN);
        drop(client);
    }
}

#[tokio::test]
async fn absurd_faults_are_refused_with_400_naming_the_field() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.control_addr = Some("127.0.0.1:0".parse().unwrap());
    config.sntp_addr = Some("127.0.0.1:0".parse().unwrap());
    let broker = rig.start(config).await;
    let control = broker.control_addr().unwrap();
    let (status, body) = http(
        control,
        "PUT",
        "/faults",
        Some(json!({"faults": {"latency_ms": u64::MAX}})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("latency_ms"),
        "{body}"
    );
    for offset in [i64::MIN, i64::MAX] {
        let (status, body) = http(
            control,
            "PUT",
            "/sntp",
            Some(json!({"offset_secs": offset})),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("offset_secs"),
            "{body}"
        );
    }
    // Sensible values still go through, and SNTP still answers after the refusals.
    let (status, _) = http(
        control,
        "PUT",
        "/faults",
        Some(json!({"faults": {"latency_ms": 250}})),
    )
    .await;
    assert_eq!(status, 200);
    broker.set_sntp(SntpBehaviour::Correct);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sent = firmware_core::sntp::NtpTimestamp::from_bits(0x1234_5678_9abc_def0);
    socket
        .send_to(
            &firmware_core::sntp::request(sent),
            broker.sntp_addr().unwrap(),
        )
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(common::WAIT, socket.recv(&mut buf))
        .await
        .expect("SNTP answers")
        .unwrap();
    assert!(firmware_core::sntp::parse_reply(&buf[..n], sent).is_ok());
}

#[tokio::test]
async fn a_client_id_with_wildcards_gets_no_lifecycle_topic_built_from_it() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut observer = broker.observe();
    // AWS accepts such an id but publishes no lifecycle events for it (its lifecycle
    // page: "Client IDs that contain # or + do not receive lifecycle events").
    let evil = connected(&rig, &broker, "ESPthing/#").await;
    let plain = connected(&rig, &broker, "ESPthing-plain").await;
    // Every publish up to the plain id's connected event (which comes after the evil
    // one's would have).
    let mut lifecycle_topics = Vec::new();
    let plain_event = "$aws/events/presence/connected/ESPthing-plain";
    tokio::time::timeout(common::WAIT, async {
        while let Some(Ok(event)) = observer.next().await {
            if let mock_broker::Event::Publish(p) = event {
                let done = p.topic == plain_event;
                lifecycle_topics.push(p.topic);
                if done {
                    break;
                }
            }
        }
    })
    .await
    .expect("the plain id's connected event");
    drop((evil, plain));
    assert!(
        lifecycle_topics
            .iter()
            .all(|t| !t.contains('#') && !t.contains('+')),
        "{lifecycle_topics:?}"
    );
    assert_eq!(mock_broker::observe::connected_topic("evil/#"), None);
    assert_eq!(mock_broker::observe::connected_topic("a+b"), None);
    assert_eq!(
        mock_broker::observe::connected_topic("ESPthing").as_deref(),
        Some("$aws/events/presence/connected/ESPthing")
    );
}

/// Resident set size of this process (the broker runs in it), in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_cannot_grow_the_broker() {
    use mock_broker::backlog::MAX_BACKLOG_BYTES;
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut victim = connected(&rig, &broker, "ESPthing-victim").await;
    victim.send(&subscribe_packet_v5(1, "test/#")).await;
    assert_eq!(victim.next().await.unwrap().0, 0x90);
    // From here on the victim reads nothing.
    let mut flooder = connected(&rig, &broker, "ESPthing-flooder").await;
    let payload = vec![b'x'; 100 * 1024];
    let before = rss();
    let mut peak_backlog = 0;
    let messages = 400u16; // 40 MB through the broker
    for id in 1..=messages {
        flooder
            .send(&common::publish_packet_v5(1, id, "test/flood", &payload))
            .await;
        if let Some(b) = broker.backlog("ESPthing-victim") {
            peak_backlog = peak_backlog.max(b.bytes);
        }
    }
    // Every publish was taken (acknowledged) by the broker.
    let mut acked = 0;
    while acked < messages {
        match flooder.next().await {
            Some((0x40, _)) => acked += 1,
            Some(_) => {}
            None => panic!("the flooder was disconnected after {acked} acks"),
        }
    }
    let grown = rss().saturating_sub(before);
    assert!(
        peak_backlog <= MAX_BACKLOG_BYTES,
        "backlog {peak_backlog} over {MAX_BACKLOG_BYTES}"
    );
    let figures = broker.backlog("ESPthing-victim");
    if let Some(f) = figures {
        assert!(f.dropped > 0, "{f:?}");
    }
    // 40 MB went through; what stays is the bounded backlog plus buffers, not the flood.
    assert!(grown < 24 * 1024 * 1024, "RSS grew by {grown} bytes");
    // The victim stays stuck: it is disconnected once a write has stalled. (Observed only
    // from here: an observer holds what it has not read yet, which is the owner's
    // memory, not the broker's.)
    let mut observer = broker.observe();
    let stalled_within = mock_broker::WRITE_STALL + Duration::from_secs(10);
    let reason = observer
        .wait_for_disconnect("ESPthing-victim", stalled_within)
        .await;
    assert_eq!(reason, Some(mock_broker::DisconnectReason::Throttled));
    drop(victim);
}

/// An MQTT 5 CONNECT (clean start) with a will on `topic` at `qos`.
fn connect_with_will(client_id: &str, topic: &str, qos: u8) -> Vec<u8> {
    let string = |out: &mut Vec<u8>, s: &[u8]| {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    };
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    body.push(5);
    body.push(0b10 | 0b100 | (qos << 3));
    body.extend_from_slice(&60u16.to_be_bytes());
    body.push(0); // CONNECT properties
    string(&mut body, client_id.as_bytes());
    body.push(0); // will properties
    string(&mut body, topic.as_bytes());
    string(&mut body, b"gone");
    common::packet(0x10, &body)
}

#[tokio::test]
async fn a_will_the_broker_could_never_publish_refuses_the_connect() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut observer = broker.observe();
    for (topic, qos, code) in [
        ("will/#/x", 1, 0x90),
        ("", 0, 0x90),
        ("test/+", 0, 0x90),
        ("test/will", 2, 0x9B),
        // TEST_POLICY allows publishing under test/ only.
        ("forbidden/will", 1, 0x87),
    ] {
        let mut client = RawClient::connect(&rig, broker.mqtt_addr()).await;
        client
            .send(&connect_with_will("ESPthing", topic, qos))
            .await;
        let (first, body) = client.next().await.expect("a CONNACK");
        assert_eq!(first, CONNACK, "{topic:?}");
        assert_eq!(
            body.get(1),
            Some(&code),
            "will {topic:?} QoS {qos}: {body:?}"
        );
        assert!(
            observer.wait_for_refusal(common::WAIT).await.is_some(),
            "{topic:?} reported as refused"
        );
    }
    // A will the policy allows is accepted as before.
    let mut client = RawClient::connect(&rig, broker.mqtt_addr()).await;
    client
        .send(&connect_with_will("ESPthing", "test/will", 1))
        .await;
    let (first, body) = client.next().await.unwrap();
    assert_eq!((first, body.get(1)), (CONNACK, Some(&0)));
}
