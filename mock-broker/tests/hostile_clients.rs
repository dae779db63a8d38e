//! Hostile and careless clients (issue 10): malformed packets, wills the broker could
//! never publish, wildcard client ids, subscribers that stop reading, too many
//! subscriptions, stalled control API peers, and absurd faults must never wedge a client
//! or the broker. Raw MQTT bytes over real TLS, where well-behaved clients would not
//! misbehave on purpose. (`hardening.rs` holds the first round of these checks.)

mod common;

use std::net::SocketAddr;

use common::{
    RawClient, Rig, WAIT, connect_packet, packet, publish_packet_v5, subscribe_packet_v5,
};
use mock_broker::{Event, QoS};

const CONNACK: u8 = 0x20;
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

#[tokio::test]
async fn a_publish_to_a_reserved_topic_aws_keeps_closes_the_connection() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.policy = mock_broker::Policy::allow_all();
    let broker = rig.start(config).await;
    let mut observer = broker.observe();
    let mut client = connect_v5(&rig, broker.mqtt_addr(), "ESPthing", &[]).await;
    // A forged lifecycle event: even a policy that allows everything does not make it
    // a client's topic.
    let forged = "$aws/events/presence/disconnected/ESPthing-other";
    client.send(&publish_packet_v5(1, 5, forged, b"{}")).await;
    let (first, body) = client.next().await.expect("DISCONNECT");
    assert_eq!((first, body[0]), (DISCONNECT, 0x90), "topic name invalid");
    assert!(client.next().await.is_none(), "then closed");
    assert_eq!(
        observer.wait_for_disconnect("ESPthing", WAIT).await,
        Some(mock_broker::DisconnectReason::ClientError)
    );
    // A shadow update is a reserved topic clients may publish to.
    let mut client = connect_v5(&rig, broker.mqtt_addr(), "ESPthing", &[]).await;
    let shadow = "$aws/things/ESPthing/shadow/update";
    client.send(&publish_packet_v5(1, 6, shadow, b"{}")).await;
    assert_eq!(client.next().await, Some((0x40, vec![0, 6])));
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

/// A raw MQTT 5 SUBSCRIBE of one filter at QoS 0.
fn subscribe_qos0(packet_id: u16, filter: &str) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.push(0);
    put_string(&mut body, filter);
    body.push(0);
    packet(0x82, &body)
}

/// Publish `count` QoS 1 messages of `size` bytes, each after the previous one's PUBACK,
/// sampling the broker's queued bytes after each; returns the largest sample.
async fn flood(
    broker: &mock_broker::Handle,
    publisher: &mut RawClient,
    topic: &str,
    count: u16,
    size: usize,
) -> usize {
    let payload = vec![b'x'; size];
    let mut most = 0;
    for id in 1..=count {
        publisher
            .send(&publish_packet_v5(1, id, topic, &payload))
            .await;
        loop {
            let (first, body) = publisher.next().await.expect("PUBACK");
            if first == 0x40 {
                assert_eq!(body[..2], id.to_be_bytes());
                break;
            }
        }
        most = most.max(broker.queue_stats().queued_bytes);
    }
    most
}

const LIMIT: usize = 1024 * 1024;

fn bounded_config(rig: &Rig) -> mock_broker::Config {
    let mut config = rig.config();
    config.queue_limits.max_bytes = LIMIT;
    // Far longer than the flood takes: only the limits act here.
    config.write_stall_timeout = std::time::Duration::from_secs(120);
    config
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_loses_qos0_deliveries_and_the_broker_holds_no_more_than_its_limit()
 {
    let rig = Rig::new();
    let broker = rig.start(bounded_config(&rig)).await;
    let addr = broker.mqtt_addr();
    let mut observer = broker.observe();
    let mut sleeper = connect_v5(&rig, addr, "ESPthing-sleeper", &[]).await;
    sleeper.send(&subscribe_qos0(1, "test/flood")).await;
    assert_eq!(sleeper.next().await.unwrap().0, SUBACK);
    observer
        .wait_for_subscription("ESPthing-sleeper", "test/flood", WAIT)
        .await
        .unwrap();
    drop(observer);
    // From here on the sleeper reads nothing. 400 x 128 KiB = 50 MiB is far more than
    // the socket buffers and the client's 1 MiB can hold.
    let mut publisher = connect_v5(&rig, addr, "ESPthing-publisher", &[]).await;
    let most = flood(&broker, &mut publisher, "test/flood", 400, 128 * 1024).await;
    assert!(
        most <= LIMIT,
        "held {most} bytes for one client, limit {LIMIT}"
    );
    let stats = broker.queue_stats();
    assert!(stats.dropped_qos0 > 0, "{stats:?}");
    assert!(
        broker
            .clients()
            .iter()
            .any(|c| c.client_id == "ESPthing-sleeper"),
        "a slow QoS 0 subscriber is not disconnected before the stall timeout"
    );
}

#[tokio::test]
async fn qos1_deliveries_are_held_within_the_limit_and_the_excess_is_dropped() {
    let rig = Rig::new();
    let broker = rig.start(bounded_config(&rig)).await;
    let addr = broker.mqtt_addr();
    let mut observer = broker.observe();
    let mut sleeper = connect_v5(&rig, addr, "ESPthing-sleeper", &[]).await;
    sleeper.send(&subscribe_packet_v5(1, "test/flood")).await;
    assert_eq!(sleeper.next().await.unwrap().0, SUBACK);
    observer
        .wait_for_subscription("ESPthing-sleeper", "test/flood", WAIT)
        .await
        .unwrap();
    drop(observer);
    let mut publisher = connect_v5(&rig, addr, "ESPthing-publisher", &[]).await;
    // QoS 1 deliveries stay charged until their PUBACK, which never comes: 1 MiB holds
    // about eight of these, the rest are dropped.
    let most = flood(&broker, &mut publisher, "test/flood", 40, 128 * 1024).await;
    assert!(
        most <= LIMIT,
        "held {most} bytes for one client, limit {LIMIT}"
    );
    let figures = broker.backlog("ESPthing-sleeper").expect("still connected");
    assert!(figures.dropped >= 30, "{figures:?}");
    assert!(figures.bytes <= LIMIT, "{figures:?}");
}

#[tokio::test]
async fn a_subscriber_whose_socket_stays_full_is_disconnected_after_the_stall_timeout() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.write_stall_timeout = std::time::Duration::from_millis(300);
    let broker = rig.start(config).await;
    let addr = broker.mqtt_addr();
    let mut observer = broker.observe();
    let mut sleeper = connect_v5(&rig, addr, "ESPthing-sleeper", &[]).await;
    sleeper.send(&subscribe_qos0(1, "test/flood")).await;
    assert_eq!(sleeper.next().await.unwrap().0, SUBACK);
    observer
        .wait_for_subscription("ESPthing-sleeper", "test/flood", WAIT)
        .await
        .unwrap();
    let mut publisher = connect_v5(&rig, addr, "ESPthing-publisher", &[]).await;
    flood(&broker, &mut publisher, "test/flood", 200, 128 * 1024).await;
    assert_eq!(
        observer.wait_for_disconnect("ESPthing-sleeper", WAIT).await,
        Some(mock_broker::DisconnectReason::Throttled)
    );
    // The publisher, which reads, is untouched.
    publisher.send(&[0xC0, 0]).await;
    assert_eq!(publisher.next().await.unwrap().0, 0xD0);
}

/// The resident memory of process `pid`, from `/proc`.
fn rss_bytes(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let kib: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

#[tokio::test]
async fn the_broker_process_stays_flat_while_a_subscriber_never_reads() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let rig = Rig::new();
    rig.write_identity("server", &rig.pki.server);
    std::fs::write(
        rig.path("policy.json"),
        r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}"#,
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mock-broker"))
        .args(["serve", "--no-inbound-throttle", "--port", "0", "--certs"])
        .arg(rig.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("ready line");
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr: SocketAddr = ready["mqtt"].as_str().unwrap().parse().unwrap();

    let mut sleeper = connect_v5(&rig, addr, "ESPthing-sleeper", &[]).await;
    sleeper.send(&subscribe_qos0(1, "test/flood")).await;
    assert_eq!(sleeper.next().await.unwrap().0, SUBACK);
    let mut publisher = connect_v5(&rig, addr, "ESPthing-publisher", &[]).await;
    let payload = vec![b'x'; 128 * 1024];
    let mut publish = async |from: u16, to: u16| {
        for id in from..to {
            publisher
                .send(&publish_packet_v5(1, id, "test/flood", &payload))
                .await;
            assert_eq!(publisher.next().await.expect("PUBACK").0, 0x40);
        }
    };
    // Warm up (TLS buffers, allocator), then 1024 x 128 KiB = 128 MiB the sleeper never
    // reads: before the fix the broker grew by all of it.
    publish(1, 33).await;
    let before = rss_bytes(pid);
    publish(33, 1057).await;
    let grown = rss_bytes(pid).saturating_sub(before);
    println!(
        "broker RSS grew by {} KiB over 128 MiB published",
        grown / 1024
    );
    assert!(
        grown < 48 * 1024 * 1024,
        "broker RSS grew by {} MiB while a subscriber did not read",
        grown / (1024 * 1024)
    );
}

#[tokio::test]
async fn shutdown_finishes_within_2s_whatever_faults_are_set() {
    use mock_broker::Faults;
    use mock_broker::faults::MAX_LATENCY;
    use std::time::Duration;

    let every = Faults {
        withhold_connack: true,
        withhold_suback: true,
        withhold_puback: true,
        withhold_pingresp: true,
        disconnect_after_connack: true,
        black_hole: true,
        hold_output: true,
        latency: MAX_LATENCY,
    };
    let cases: Vec<(&str, Faults)> = vec![
        (
            "hold_output",
            Faults {
                hold_output: true,
                ..Faults::default()
            },
        ),
        (
            "withhold_connack",
            Faults {
                withhold_connack: true,
                ..Faults::default()
            },
        ),
        (
            "withhold_suback",
            Faults {
                withhold_suback: true,
                ..Faults::default()
            },
        ),
        (
            "withhold_puback",
            Faults {
                withhold_puback: true,
                ..Faults::default()
            },
        ),
        (
            "withhold_pingresp",
            Faults {
                withhold_pingresp: true,
                ..Faults::default()
            },
        ),
        (
            "disconnect_after_connack",
            Faults {
                disconnect_after_connack: true,
                ..Faults::default()
            },
        ),
        (
            "black_hole",
            Faults {
                black_hole: true,
                ..Faults::default()
            },
        ),
        (
            "latency",
            Faults {
                latency: MAX_LATENCY,
                ..Faults::default()
            },
        ),
        ("all of them", every),
    ];
    for (what, faults) in cases {
        let rig = Rig::new();
        let mut config = rig.config();
        config.sntp_addr = Some("127.0.0.1:0".parse().unwrap());
        config.control_addr = Some("127.0.0.1:0".parse().unwrap());
        let broker = rig.start(config).await;
        let addr = broker.mqtt_addr();
        let mut observer = broker.observe();
        // Connected before the faults: its answers are what the faults withhold or delay.
        let mut settled = connect_v5(&rig, addr, "ESPthing-settled", &[]).await;
        broker.set_faults(faults);
        settled.send(&subscribe_packet_v5(1, "test/a")).await;
        settled.send(&publish_packet_v5(1, 2, "test/a", b"x")).await;
        settled.send(&[0xC0, 0]).await;
        observer
            .wait_for(WAIT, |e| match e {
                Event::Publish(p) if p.topic == "test/a" => Some(()),
                Event::FaultApplied { client_id, .. } if client_id == "ESPthing-settled" => {
                    Some(())
                }
                _ => None,
            })
            .await
            .unwrap_or_else(|| panic!("{what}: the settled client's packets were read"));
        // Connecting under the faults: CONNACK withheld, delayed, or followed by a close.
        let mut arriving = RawClient::connect(&rig, addr).await;
        arriving
            .send(&connect_packet(5, "ESPthing-arriving", 60, &[]))
            .await;
        // And one that finished TLS but sends no CONNECT. (The settled client never
        // reads: its answers and its own delivery are still waiting for it.)
        let _silent = RawClient::connect(&rig, addr).await;

        let shutdown = tokio::time::timeout(Duration::from_secs(2), broker.shutdown()).await;
        assert!(shutdown.is_ok(), "{what}: shutdown took more than 2 s");
    }
}

#[tokio::test]
async fn absurd_fault_and_sntp_values_are_refused_naming_the_field_and_sntp_keeps_serving() {
    use firmware_core::sntp::{NtpTimestamp, parse_reply, request};
    use mock_broker::SntpBehaviour;
    use serde_json::json;
    use std::time::{SystemTime, UNIX_EPOCH};

    let rig = Rig::new();
    let mut config = rig.config();
    config.sntp_addr = Some("127.0.0.1:0".parse().unwrap());
    config.control_addr = Some("127.0.0.1:0".parse().unwrap());
    let broker = rig.start(config).await;
    let control = broker.control_addr().unwrap();

    let (status, body) = common::http(
        control,
        "PUT",
        "/faults",
        Some(json!({"faults": {"latency_ms": u64::MAX}})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("faults.latency_ms"),
        "{body}"
    );
    for offset in [i64::MIN, i64::MAX] {
        let (status, body) = common::http(
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
    let (status, body) = common::http(
        control,
        "PUT",
        "/faults",
        Some(json!({"faults": {"latency_ms": 250}})),
    )
    .await;
    assert_eq!(status, 200, "a sane value still goes through: {body}");

    // Through the library an absurd offset is limited, and the server keeps answering.
    broker.set_sntp(SntpBehaviour::OffsetSecs(i64::MAX));
    broker.set_sntp(SntpBehaviour::Correct);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sent = NtpTimestamp::from_bits(0x0123_4567_89ab_cdef);
    socket
        .send_to(&request(sent), broker.sntp_addr().unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 128];
    let (len, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("SNTP still answers")
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let served = parse_reply(&buf[..len], sent).unwrap().time.secs;
    assert!(served.abs_diff(now) <= 2, "{served} vs {now}");
}

#[tokio::test]
async fn more_than_50_subscriptions_are_refused_in_the_suback() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut client = connect_v5(&rig, broker.mqtt_addr(), "ESPthing", &[]).await;
    // SUBSCRIBEs of 8 filters (AWS's most per SUBSCRIBE): the first 50 filters are
    // granted, the rest refused.
    let mut codes = Vec::new();
    for packet_id in 1..=8u16 {
        let mut body = vec![0, packet_id as u8, 0];
        for i in 0..8 {
            put_string(&mut body, &format!("test/{packet_id}/{i}"));
            body.push(1);
        }
        client.send(&packet(0x82, &body)).await;
        let (first, suback) = client.next().await.unwrap();
        assert_eq!(first, SUBACK);
        codes.extend_from_slice(&suback[3..]);
    }
    assert_eq!(codes.len(), 64);
    assert!(codes[..50].iter().all(|c| *c == 1), "{codes:?}");
    assert!(codes[50..].iter().all(|c| *c == 0x97), "{codes:?}");
    // Subscribing again to a held filter is not a new subscription.
    client.send(&subscribe_packet_v5(9, "test/1/0")).await;
    assert_eq!(client.next().await.unwrap(), (SUBACK, vec![0, 9, 0, 1]));
    assert_eq!(broker.clients()[0].subscriptions.len(), 50);
}

#[tokio::test]
async fn control_api_peers_that_stall_are_dropped_instead_of_holding_a_task_or_events() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let rig = Rig::new();
    let mut config = rig.config();
    config.control_addr = Some("127.0.0.1:0".parse().unwrap());
    config.handshake_timeout = std::time::Duration::from_millis(200);
    config.write_stall_timeout = std::time::Duration::from_millis(300);
    let broker = rig.start(config).await;
    let control = broker.control_addr().unwrap();

    // Connected, says nothing: answered 400 and closed.
    let mut idle = tokio::net::TcpStream::connect(control).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, idle.read_to_string(&mut answer))
        .await
        .expect("an idle control connection is closed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // An event stream nobody reads, while large publishes go by: dropped, so it no
    // longer pins the events (and their payloads) in the observer ring.
    let mut events = tokio::net::TcpStream::connect(control).await.unwrap();
    events
        .write_all(b"GET /events HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(WAIT, events.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    let (_, status) = common::http(control, "GET", "/status", None).await;
    assert_eq!(status["event_streams"], 1, "{status}");
    for _ in 0..200 {
        broker.inject("test/big", vec![b'x'; 128 * 1024], QoS::AtMostOnce);
    }
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            let (_, status) = common::http(control, "GET", "/status", None).await;
            if status["event_streams"] == 0 {
                break;
            }
            // Polling an observed state, not waiting a set time.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the stalled /events stream was dropped");
}
