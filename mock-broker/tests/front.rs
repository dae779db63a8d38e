//! The TLS front and AWS's session rules, driven by a rustls client and raw MQTT bytes
//! where mosquitto would not misbehave on purpose.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Cert, RawClient, Rig, WAIT, client_config, connect_packet, mosquitto, publish_packet_v5, run,
    subscribe_packet_v5, tls_connect,
};
use mock_broker::{DisconnectReason, Event, QoS, SniRule};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const CONNACK: u8 = 0x20;
const PUBLISH_QOS1: u8 = 0x32;
const SUBACK: u8 = 0x90;
const DISCONNECT: u8 = 0xE0;

/// Connect over MQTT 5 and return the client and the CONNACK body.
async fn connect_v5(
    rig: &Rig,
    addr: SocketAddr,
    id: &str,
    keep_alive: u16,
    properties: &[u8],
) -> (RawClient, Vec<u8>) {
    let mut client = RawClient::connect(rig, addr).await;
    client
        .send(&connect_packet(5, id, keep_alive, properties))
        .await;
    let (first, body) = client.next().await.expect("CONNACK");
    assert_eq!(first, CONNACK);
    (client, body)
}

#[tokio::test]
async fn an_idle_tcp_connection_does_not_delay_another_clients_handshake() {
    let rig = Rig::new();
    let mut config = rig.config();
    // Far longer than the test may take: the idle sockets must not be waited out.
    config.handshake_timeout = Duration::from_secs(60);
    let broker = rig.start(config).await;
    let addr = broker.mqtt_addr();
    let _idle = TcpStream::connect(addr).await.unwrap();
    let mut half_hello = TcpStream::connect(addr).await.unwrap();
    // A TLS record header promising a ClientHello that never comes.
    half_hello
        .write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01])
        .await
        .unwrap();
    let (_client, connack) = connect_v5(&rig, addr, "ESPthing", 60, &[]).await;
    assert_eq!(connack[1], 0, "accepted");
}

#[tokio::test]
async fn handshakes_that_never_finish_time_out() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.handshake_timeout = Duration::from_millis(200);
    let broker = rig.start(config).await;
    let mut observer = broker.observe();
    let mut idle = TcpStream::connect(broker.mqtt_addr()).await.unwrap();
    let reason = observer.wait_for_refusal(WAIT).await.unwrap();
    assert!(reason.contains("timed out"), "{reason}");
    let mut byte = [0u8; 1];
    let read =
        tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut idle, &mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed by the broker"
    );
}

#[tokio::test]
async fn alpn_listener_requires_x_amzn_mqtt_ca() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.alpn_addr = Some("127.0.0.1:0".parse().unwrap());
    let broker = rig.start(config).await;
    let alpn_addr = broker.alpn_addr().unwrap();
    assert_ne!(alpn_addr, broker.mqtt_addr());
    let mut observer = broker.observe();

    let with_alpn = client_config(&rig, Some(&rig.pki.device), &[b"x-amzn-mqtt-ca"]);
    let stream = tls_connect(alpn_addr, "localhost", with_alpn)
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.alpn_protocol(),
        Some(&b"x-amzn-mqtt-ca"[..])
    );

    let without = client_config(&rig, Some(&rig.pki.device), &[]);
    assert!(tls_connect(alpn_addr, "localhost", without).await.is_err());
    let reason = observer.wait_for_refusal(WAIT).await.unwrap();
    assert!(reason.contains("ALPN"), "{reason}");

    // mosquitto's --tls-alpn, end to end.
    let mut publish = mosquitto(
        "mosquitto_pub",
        &rig,
        alpn_addr,
        "localhost",
        "mqttv311",
        Cert::File("device"),
        "ESPthing",
    );
    publish.args([
        "--tls-alpn",
        "x-amzn-mqtt-ca",
        "-t",
        "test/alpn",
        "-q",
        "1",
        "-m",
        "over 443",
    ]);
    let (ok, _, err) = run(publish).await;
    assert!(ok, "{err}");
    assert!(observer.wait_for_publish("test/alpn", WAIT).await.is_some());
}

#[tokio::test]
async fn a_client_dialling_an_ip_sends_no_sni_and_is_refused_unless_allowed() {
    let rig = Rig::new();
    let config = client_config(&rig, Some(&rig.pki.device), &[]);
    // rustls sends no SNI for an IP address, as embedded-tls does not either.
    let strict = rig.start(rig.config()).await;
    let mut observer = strict.observe();
    assert!(
        tls_connect(strict.mqtt_addr(), "127.0.0.1", config.clone())
            .await
            .is_err()
    );
    let reason = observer.wait_for_refusal(WAIT).await.unwrap();
    assert!(reason.contains("no SNI"), "{reason}");

    let mut lenient = rig.config();
    lenient.sni = SniRule::AllowMissing;
    let lenient = rig.start(lenient).await;
    assert!(
        tls_connect(lenient.mqtt_addr(), "127.0.0.1", config)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_both_served() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    for tls in ["tlsv1.2", "tlsv1.3"] {
        let mut publish = mosquitto(
            "mosquitto_pub",
            &rig,
            broker.mqtt_addr(),
            "localhost",
            "mqttv5",
            Cert::File("device"),
            "ESPthing",
        );
        publish.args(["--tls-version", tls, "-t", "test/tls", "-m", tls]);
        let (ok, _, err) = run(publish).await;
        assert!(ok, "{tls}: {err}");
    }
}

#[tokio::test]
async fn keep_alive_is_clamped_and_enforced_at_one_and_a_half_times() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.min_keep_alive_secs = 1;
    let broker = rig.start(config).await;
    let mut observer = broker.observe();
    // 0 means "none" to MQTT, 1200 s to AWS: the CONNACK says so (Server Keep Alive).
    let (_quiet, connack) = connect_v5(&rig, broker.mqtt_addr(), "ESPthing-ka0", 0, &[]).await;
    assert!(
        connack.windows(3).any(|w| w == [0x13, 0x04, 0xB0]),
        "{connack:x?}"
    );
    assert_eq!(broker.clients()[0].keep_alive_secs, 1200);

    let started = std::time::Instant::now();
    let (mut client, _) = connect_v5(&rig, broker.mqtt_addr(), "ESPthing-ka1", 1, &[]).await;
    let (first, body) = client.next().await.expect("DISCONNECT");
    assert_eq!((first, body[0]), (DISCONNECT, 0x8D), "keep-alive timeout");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1500), "{waited:?}");
    assert_eq!(
        observer.wait_for_disconnect("ESPthing-ka1", WAIT).await,
        Some(DisconnectReason::MqttKeepAliveTimeout)
    );
}

#[tokio::test]
async fn qos2_publish_over_mqtt5_gets_disconnect_qos_not_supported() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let (mut client, connack) = connect_v5(&rig, broker.mqtt_addr(), "ESPthing", 60, &[]).await;
    assert!(connack.windows(2).any(|w| w == [0x24, 1]), "Maximum QoS 1");
    client.send(&publish_packet_v5(2, 1, "test/q2", b"x")).await;
    let (first, body) = client.next().await.unwrap();
    assert_eq!((first, body[0]), (DISCONNECT, 0x9B));
    assert!(client.next().await.is_none(), "then closed");
}

#[tokio::test]
async fn more_than_one_connect_per_second_per_client_id_is_refused() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.connect_interval = Duration::from_secs(1);
    let broker = rig.start(config).await;
    let (_first, connack) = connect_v5(&rig, broker.mqtt_addr(), "ESPthing", 60, &[]).await;
    assert_eq!(connack[1], 0);
    let (mut second, connack) = connect_v5(&rig, broker.mqtt_addr(), "ESPthing", 60, &[]).await;
    assert_eq!(connack[1], 0x9F, "connection rate exceeded");
    assert!(second.next().await.is_none());
    // MQTT 3.1.1 has no such code: the connection just closes.
    let mut v311 = RawClient::connect(&rig, broker.mqtt_addr()).await;
    v311.send(&connect_packet(4, "ESPthing", 60, &[])).await;
    assert!(v311.next().await.is_none());
}

#[tokio::test]
async fn client_ids_longer_than_128_bytes_are_refused() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.policy = mock_broker::Policy::allow_all();
    let broker = rig.start(config).await;
    let (_ok, connack) = connect_v5(&rig, broker.mqtt_addr(), &"a".repeat(128), 60, &[]).await;
    assert_eq!(connack[1], 0);
    let (_refused, connack) = connect_v5(&rig, broker.mqtt_addr(), &"a".repeat(129), 60, &[]).await;
    assert_eq!(connack[1], 0x85);
    let mut v311 = RawClient::connect(&rig, broker.mqtt_addr()).await;
    v311.send(&connect_packet(4, &"b".repeat(129), 60, &[]))
        .await;
    assert_eq!(
        v311.next().await,
        Some((CONNACK, vec![0, 2])),
        "identifier rejected"
    );
}

#[tokio::test]
async fn deliveries_larger_than_the_clients_maximum_packet_size_are_dropped() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut observer = broker.observe();
    // Maximum Packet Size 64 bytes.
    let (mut client, _) = connect_v5(
        &rig,
        broker.mqtt_addr(),
        "ESPthing",
        60,
        &[0x27, 0, 0, 0, 64],
    )
    .await;
    client.send(&subscribe_packet_v5(1, "test/in")).await;
    assert_eq!(client.next().await, Some((SUBACK, vec![0, 1, 0, 1])));
    observer
        .wait_for_subscription("ESPthing", "test/in", WAIT)
        .await
        .unwrap();
    broker.inject("test/in", vec![b'x'; 100], QoS::AtLeastOnce);
    broker.inject("test/in", "small", QoS::AtLeastOnce);
    let (first, body) = client.next().await.unwrap();
    assert_eq!(first, PUBLISH_QOS1);
    assert!(
        body.ends_with(b"small"),
        "the large one was dropped: {body:?}"
    );
}

#[tokio::test]
async fn kick_disconnects_a_client_with_administrative_action() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut observer = broker.observe();
    let (mut client, _) = connect_v5(&rig, broker.mqtt_addr(), "ESPthing", 60, &[]).await;
    assert_eq!(broker.clients().len(), 1);
    assert!(broker.kick("ESPthing"));
    assert!(!broker.kick("nobody"));
    let (first, body) = client.next().await.unwrap();
    assert_eq!((first, body[0]), (DISCONNECT, 0x98));
    assert_eq!(
        observer.wait_for_disconnect("ESPthing", WAIT).await,
        Some(DisconnectReason::ServerInitiatedDisconnect)
    );
    assert!(broker.clients().is_empty());
}

#[tokio::test]
async fn shutdown_disconnects_clients_frees_the_ports_and_ends_every_task() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.alpn_addr = Some("127.0.0.1:0".parse().unwrap());
    config.sntp_addr = Some("127.0.0.1:0".parse().unwrap());
    config.control_addr = Some("127.0.0.1:0".parse().unwrap());
    let broker = rig.start(config).await;
    let (mqtt, alpn) = (broker.mqtt_addr(), broker.alpn_addr().unwrap());
    let (sntp, control) = (broker.sntp_addr().unwrap(), broker.control_addr().unwrap());
    // An open control API event stream must not hold the broker up either.
    let mut events = TcpStream::connect(control).await.unwrap();
    events
        .write_all(b"GET /events HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_exact(&mut events, &mut head),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "the stream is open");
    let mut observer = broker.observe();
    let (mut client, _) = connect_v5(&rig, mqtt, "ESPthing", 60, &[]).await;
    let _idle = TcpStream::connect(mqtt).await.unwrap();
    broker.shutdown().await;
    let (first, body) = client.next().await.unwrap();
    assert_eq!((first, body[0]), (DISCONNECT, 0x8B), "server shutting down");
    assert!(client.next().await.is_none());
    // Every task has ended: the event stream closes once drained.
    while let Some(event) = tokio::time::timeout(WAIT, observer.next()).await.unwrap() {
        let _ = event;
    }
    TcpListener::bind(mqtt).await.expect("MQTT port free");
    TcpListener::bind(alpn).await.expect("ALPN port free");
    TcpListener::bind(control).await.expect("control port free");
    tokio::net::UdpSocket::bind(sntp)
        .await
        .expect("SNTP port free");
}

#[tokio::test]
async fn dropping_the_handle_stops_the_broker() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut observer = broker.observe();
    let (mut client, _) = connect_v5(&rig, addr, "ESPthing", 60, &[]).await;
    drop(broker);
    let (first, _) = client.next().await.unwrap();
    assert_eq!(first, DISCONNECT);
    let mut saw_disconnect = false;
    while let Some(event) = tokio::time::timeout(WAIT, observer.next()).await.unwrap() {
        saw_disconnect |= matches!(event, Ok(Event::Disconnected { .. }));
    }
    assert!(saw_disconnect);
    TcpListener::bind(addr).await.expect("port free");
}

#[tokio::test]
async fn sntp_serves_the_time_and_misbehaves_on_request() {
    use firmware_core::sntp::{Error, NtpTimestamp, parse_reply, request};
    use mock_broker::SntpBehaviour;
    use std::time::{SystemTime, UNIX_EPOCH};

    let rig = Rig::new();
    let mut config = rig.config();
    config.sntp_addr = Some("127.0.0.1:0".parse().unwrap());
    let broker = rig.start(config).await;
    let server = broker.sntp_addr().unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sent = NtpTimestamp::from_bits(0x0123_4567_89ab_cdef);
    let ask = async || {
        socket.send_to(&request(sent), server).await.unwrap();
        let mut buf = [0u8; 128];
        let (len, _) = socket.recv_from(&mut buf).await.unwrap();
        parse_reply(&buf[..len], sent)
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let time = tokio::time::timeout(WAIT, ask())
        .await
        .unwrap()
        .unwrap()
        .time
        .secs;
    assert!(time.abs_diff(now) <= 2, "{time} vs {now}");

    broker.set_sntp(SntpBehaviour::OffsetSecs(-3600));
    let time = tokio::time::timeout(WAIT, ask())
        .await
        .unwrap()
        .unwrap()
        .time
        .secs;
    assert!(time.abs_diff(now - 3600) <= 2);

    broker.set_sntp(SntpBehaviour::KissOfDeath(*b"DENY"));
    assert_eq!(
        tokio::time::timeout(WAIT, ask()).await.unwrap(),
        Err(Error::KissOfDeath(*b"DENY"))
    );

    // Silent: no answer to this request; the next one, answered, proves the server lives.
    let mut observer = broker.observe();
    broker.set_sntp(SntpBehaviour::Silent);
    socket.send_to(&request(sent), server).await.unwrap();
    let unanswered = observer
        .wait_for(WAIT, |e| match e {
            Event::SntpRequest { answered, .. } => Some(*answered),
            _ => None,
        })
        .await;
    assert_eq!(unanswered, Some(false));
    broker.set_sntp(SntpBehaviour::Correct);
    let reply = tokio::time::timeout(WAIT, ask()).await.unwrap();
    assert!(reply.is_ok());
    let mut buf = [0u8; 128];
    assert!(
        tokio::time::timeout(Duration::from_millis(100), socket.recv_from(&mut buf))
            .await
            .is_err(),
        "exactly one reply for two requests"
    );
}

#[tokio::test]
async fn the_listener_stops_and_resumes_on_the_same_port() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut observer = broker.observe();
    let (mut client, _) = connect_v5(&rig, addr, "ESPthing", 60, &[]).await;
    broker.stop_listening().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "refused while stopped"
    );
    assert_eq!(broker.clients().len(), 1, "existing connection kept");
    assert_eq!(broker.drop_all_connections(), 1);
    assert_eq!(client.next().await, None);
    assert_eq!(
        observer.wait_for_disconnect("ESPthing", WAIT).await,
        Some(DisconnectReason::ServerInitiatedDisconnect)
    );
    broker.resume_listening().await.unwrap();
    let (_client, connack) = connect_v5(&rig, addr, "ESPthing", 60, &[]).await;
    assert_eq!(connack[1], 0);
}

#[tokio::test]
async fn messages_the_policy_does_not_let_a_subscriber_receive_are_not_delivered() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.policy = mock_broker::Policy::from_json(
        r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["iot:Connect", "iot:Subscribe"], "Resource": "*"},
            {"Effect": "Allow", "Action": "iot:Receive", "Resource": "arn:aws:iot:*:*:topic/test/*"},
            {"Effect": "Deny", "Action": "iot:Receive", "Resource": "arn:aws:iot:*:*:topic/test/secret"}
        ]}"#,
    )
    .unwrap();
    let broker = rig.start(config).await;
    let (mut client, _) = connect_v5(&rig, broker.mqtt_addr(), "ESPthing", 60, &[]).await;
    client.send(&subscribe_packet_v5(1, "test/#")).await;
    assert_eq!(client.next().await.unwrap().0, SUBACK);
    assert_eq!(broker.inject("test/secret", "hidden", QoS::AtLeastOnce), 0);
    assert_eq!(broker.inject("test/open", "shown", QoS::AtLeastOnce), 1);
    let (first, body) = client.next().await.unwrap();
    assert_eq!(first, PUBLISH_QOS1);
    assert!(body.ends_with(b"shown"), "{body:?}");
    assert_eq!(
        broker.clients().len(),
        1,
        "a denied receive does not disconnect"
    );
}

#[tokio::test]
async fn qos1_deliveries_wait_for_the_clients_receive_maximum() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut observer = broker.observe();
    // Receive Maximum 1, as a small device might ask.
    let (mut client, _) = connect_v5(&rig, broker.mqtt_addr(), "ESPthing", 60, &[0x21, 0, 1]).await;
    client.send(&subscribe_packet_v5(1, "test/in")).await;
    assert_eq!(client.next().await.unwrap().0, SUBACK);
    observer
        .wait_for_subscription("ESPthing", "test/in", WAIT)
        .await
        .unwrap();
    broker.inject("test/in", "one", QoS::AtLeastOnce);
    broker.inject("test/in", "two", QoS::AtLeastOnce);
    let (first, body) = client.next().await.unwrap();
    assert_eq!(first, PUBLISH_QOS1);
    assert!(body.ends_with(b"one"));
    let packet_id = [body[9], body[10]]; // after the 2-byte length and "test/in"
    // The second waits for the first's PUBACK: the ping is answered first.
    client.send(&[0xC0, 0]).await;
    assert_eq!(client.next().await.unwrap().0, 0xD0);
    client.send(&[0x40, 2, packet_id[0], packet_id[1]]).await;
    let (first, body) = client.next().await.unwrap();
    assert_eq!(first, PUBLISH_QOS1);
    assert!(body.ends_with(b"two"));
}

#[tokio::test]
async fn unacknowledged_deliveries_are_resent_as_duplicates_to_a_resumed_session() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut observer = broker.observe();
    let addr = broker.mqtt_addr();
    // Session Expiry Interval 600 s, clean start off.
    let expiry = [0x11, 0, 0, 0x02, 0x58];
    let mut client = RawClient::connect(&rig, addr).await;
    client
        .send(&common::connect_packet_with(
            5, "ESPthing", 60, &expiry, false,
        ))
        .await;
    let (first, connack) = client.next().await.unwrap();
    assert_eq!(
        (first, &connack[..2]),
        (CONNACK, &[0, 0][..]),
        "new session"
    );
    client.send(&subscribe_packet_v5(1, "test/owed")).await;
    assert_eq!(client.next().await.unwrap().0, SUBACK);
    // One acknowledged first, so the owed one's packet id is not the one a new
    // connection would start with.
    broker.inject("test/owed", "acked", QoS::AtLeastOnce);
    let (first, body) = client.next().await.unwrap();
    assert_eq!(first, PUBLISH_QOS1);
    let acked_id = &body[2 + usize::from(body[1])..][..2];
    client.send(&[0x40, 2, acked_id[0], acked_id[1]]).await;
    broker.inject("test/owed", "unacked", QoS::AtLeastOnce);
    let (first, body) = client.next().await.unwrap();
    assert_eq!(first, PUBLISH_QOS1);
    assert!(body.ends_with(b"unacked"));
    let sent_id = body[2 + usize::from(body[1])..][..2].to_vec();
    drop(client); // gone without a PUBACK
    observer
        .wait_for_disconnect("ESPthing", WAIT)
        .await
        .unwrap();

    let mut again = RawClient::connect(&rig, addr).await;
    again
        .send(&common::connect_packet_with(
            5, "ESPthing", 60, &expiry, false,
        ))
        .await;
    let (first, connack) = again.next().await.unwrap();
    assert_eq!((first, connack[0]), (CONNACK, 1), "session present");
    let (first, body) = again.next().await.unwrap();
    assert_eq!(first, PUBLISH_QOS1 | 0x08, "QoS 1 with DUP");
    assert!(body.ends_with(b"unacked"));
    // The same packet id (MQTT 3.1.1 §4.4, MQTT 5 §4.4): AWS's duplicates without DUP
    // are those sent under a different id.
    assert_eq!(body[2 + usize::from(body[1])..][..2], sent_id[..]);
}
