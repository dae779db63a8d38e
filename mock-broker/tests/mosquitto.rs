//! The broker against real third-party clients: mosquitto_pub and mosquitto_sub, MQTT
//! 3.1.1 and 5, with certificates from the `certs` crate.

mod common;

use std::net::SocketAddr;

use common::{Cert, Rig, WAIT, finish, mosquitto, payload_file, run, spawn};
use mock_broker::{DisconnectReason, Event, Policy, Publisher, QoS};
use tokio::process::Command;

const VERSIONS: [&str; 2] = ["mqttv311", "mqttv5"];

/// `mosquitto_pub` for the broker at `addr`, dialling `localhost` (the server
/// certificate's name, sent as SNI) as the thing (the rig's `device` identity).
fn publisher(rig: &Rig, addr: SocketAddr, version: &str, client_id: &str) -> Command {
    publisher_as(rig, addr, version, Cert::File("device"), client_id)
}

/// [`publisher`] with another identity.
fn publisher_as(
    rig: &Rig,
    addr: SocketAddr,
    version: &str,
    cert: Cert<'_>,
    client_id: &str,
) -> Command {
    mosquitto(
        "mosquitto_pub",
        rig,
        addr,
        "localhost",
        version,
        cert,
        client_id,
    )
}

/// `mosquitto_sub` as [`publisher`] connects.
fn subscriber(rig: &Rig, addr: SocketAddr, version: &str, client_id: &str) -> Command {
    mosquitto(
        "mosquitto_sub",
        rig,
        addr,
        "localhost",
        version,
        Cert::File("device"),
        client_id,
    )
}

#[tokio::test]
async fn round_trip_between_two_clients_in_both_versions() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    for version in VERSIONS {
        let mut observer = broker.observe();
        let sub_id = format!("ESPthing-sub-{version}");
        let mut sub = subscriber(&rig, addr, version, &sub_id);
        sub.args(["-t", "test/rt", "-q", "1", "-C", "1", "-W", "10"]);
        let sub = spawn(sub);
        assert_eq!(
            observer
                .wait_for_subscription(&sub_id, "test/rt", WAIT)
                .await,
            Some(QoS::AtLeastOnce),
            "{version}: subscription granted"
        );
        let pub_id = format!("ESPthing-pub-{version}");
        let mut publish = publisher(&rig, addr, version, &pub_id);
        publish.args(["-t", "test/rt", "-q", "1", "-m", "hello world"]);
        let (ok, _, err) = run(publish).await;
        assert!(ok, "{version}: mosquitto_pub failed: {err}");
        let (ok, out, err) = finish(sub).await;
        assert!(ok, "{version}: mosquitto_sub failed: {err}");
        assert_eq!(out.trim(), "hello world", "{version}");
        let seen = observer.wait_for_publish("test/rt", WAIT).await.unwrap();
        assert_eq!(seen.publisher, Publisher::Client(pub_id));
        assert_eq!(seen.qos, QoS::AtLeastOnce);
        assert!(seen.packet_id.is_some() && !seen.dup, "{version}: {seen:?}");
        assert_eq!(&seen.payload[..], b"hello world");
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn injected_messages_reach_subscribers() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut observer = broker.observe();
    let mut sub = subscriber(&rig, broker.mqtt_addr(), "mqttv5", "ESPthing");
    // QoS 2 requested: AWS grants 1.
    sub.args([
        "-t", "test/in", "-q", "2", "-C", "1", "-W", "10", "-F", "%q %p",
    ]);
    let sub = spawn(sub);
    assert_eq!(
        observer
            .wait_for_subscription("ESPthing", "test/in", WAIT)
            .await,
        Some(QoS::AtLeastOnce)
    );
    assert_eq!(broker.clients().len(), 1);
    assert_eq!(broker.clients()[0].thing_name.as_deref(), Some("ESPthing"));
    assert_eq!(
        broker.inject("test/in", "from the rig", QoS::AtLeastOnce),
        1
    );
    let (ok, out, err) = finish(sub).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1 from the rig");
}

#[tokio::test]
async fn clients_without_a_certificate_or_with_an_unknown_or_expired_one_are_refused() {
    let rig = Rig::new();
    rig.write_untrusted_identity("rogue", "ESPthing");
    let expired = rig
        .pki
        .ca
        .issue_client(
            "ESPthing",
            certs::pki::KeyAlgorithm::EcP256,
            certs::pki::Validity::expired(),
        )
        .unwrap();
    rig.write_identity("expired", &expired);
    let broker = rig.start(rig.config()).await;
    for cert in [Cert::None, Cert::File("rogue"), Cert::File("expired")] {
        let mut observer = broker.observe();
        let mut publish = publisher_as(&rig, broker.mqtt_addr(), "mqttv311", cert, "ESPthing");
        publish.args(["-t", "test/x", "-m", "x"]);
        let (ok, _, _) = run(publish).await;
        assert!(!ok, "publish without a trusted certificate must fail");
        let reason = observer.wait_for_refusal(WAIT).await.unwrap();
        assert!(reason.contains("TLS handshake failed"), "{reason}");
    }
    assert!(broker.clients().is_empty());
}

#[tokio::test]
async fn sni_not_naming_the_endpoint_is_refused() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.endpoint = "xxxx-ats.iot.us-east-1.amazonaws.com".into();
    let broker = rig.start(config).await;
    let mut observer = broker.observe();
    // mosquitto sends its -h host as SNI.
    let mut publish = publisher(&rig, broker.mqtt_addr(), "mqttv5", "ESPthing");
    publish.args(["-t", "test/x", "-m", "x"]);
    let (ok, _, _) = run(publish).await;
    assert!(!ok);
    let reason = observer.wait_for_refusal(WAIT).await.unwrap();
    assert!(reason.contains("SNI \"localhost\""), "{reason}");
}

#[tokio::test]
async fn a_duplicate_client_id_drops_the_older_connection() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    for version in VERSIONS {
        let mut observer = broker.observe();
        let mut first = subscriber(&rig, broker.mqtt_addr(), version, "ESPthing-dup");
        first.args(["-t", "test/dup", "-W", "10"]);
        let first = spawn(first);
        assert!(observer.wait_for_connect("ESPthing-dup", WAIT).await);
        let mut second = subscriber(&rig, broker.mqtt_addr(), version, "ESPthing-dup");
        second.args(["-t", "test/dup", "-W", "10"]);
        let second = spawn(second);
        assert_eq!(
            observer.wait_for_disconnect("ESPthing-dup", WAIT).await,
            Some(DisconnectReason::DuplicateClientId),
            "{version}"
        );
        // mosquitto_sub reconnects on its own and the two would take turns, as on AWS.
        drop((first, second));
        let _ = observer.wait_for_disconnect("ESPthing-dup", WAIT).await;
    }
}

#[tokio::test]
async fn qos2_publish_is_refused_or_downgraded_as_on_aws() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut observer = broker.observe();
    // MQTT 3.1.1 has no way to say "QoS 2 unsupported": AWS closes the connection.
    let mut publish = publisher(&rig, addr, "mqttv311", "ESPthing-q2");
    publish.args(["-t", "test/q2", "-q", "2", "-m", "x"]);
    let (ok, _, _) = run(publish).await;
    assert!(!ok, "QoS 2 publish must not succeed over 3.1.1");
    assert_eq!(
        observer.wait_for_disconnect("ESPthing-q2", WAIT).await,
        Some(DisconnectReason::ClientError)
    );
    // MQTT 5: CONNACK says Maximum QoS 1 and mosquitto refuses to send, as on AWS.
    // (A client that sends QoS 2 anyway is covered in tests/raw_mqtt.rs.)
    let mut publish = publisher(&rig, addr, "mqttv5", "ESPthing-q2v5");
    publish.args(["-t", "test/q2", "-q", "2", "-m", "x"]);
    let (_, _, err) = run(publish).await;
    assert!(err.contains("QoS not supported"), "{err}");
    observer
        .wait_for_disconnect("ESPthing-q2v5", WAIT)
        .await
        .unwrap();
    let published: Vec<_> = std::iter::from_fn(|| observer.try_next()).collect();
    assert!(
        !published
            .iter()
            .any(|e| matches!(e, Event::Publish(p) if p.topic == "test/q2")),
        "nothing was published"
    );
}

#[tokio::test]
async fn aws_topic_and_payload_limits_close_the_connection() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.policy = Policy::allow_all();
    let broker = rig.start(config).await;
    let addr = broker.mqtt_addr();
    let exact = payload_file(rig.dir.path(), 128 * 1024);
    let over = payload_file(rig.dir.path(), 128 * 1024 + 1);
    for version in VERSIONS {
        let mut observer = broker.observe();
        // 7 slashes: fine. Then 8: refused.
        let mut publish = publisher(&rig, addr, version, "ok7");
        publish.args(["-t", "a/b/c/d/e/f/g/h", "-q", "1", "-m", "x"]);
        assert!(run(publish).await.0, "{version}: 7 slashes");
        let mut publish = publisher(&rig, addr, version, "deep8");
        publish.args(["-t", "a/b/c/d/e/f/g/h/i", "-q", "1", "-m", "x"]);
        assert!(!run(publish).await.0, "{version}: 8 slashes");
        assert_eq!(
            observer.wait_for_disconnect("deep8", WAIT).await,
            Some(DisconnectReason::ClientError)
        );
        // 128 KiB payload: fine. One byte more: refused.
        let mut publish = publisher(&rig, addr, version, "big");
        publish.args(["-t", "big", "-q", "1", "-f"]).arg(&exact);
        assert!(run(publish).await.0, "{version}: 128 KiB");
        let seen = observer.wait_for_publish("big", WAIT).await.unwrap();
        assert_eq!(seen.payload.len(), 128 * 1024);
        let mut publish = publisher(&rig, addr, version, "bigger");
        publish.args(["-t", "big", "-q", "1", "-f"]).arg(&over);
        assert!(!run(publish).await.0, "{version}: 128 KiB + 1");
        assert_eq!(
            observer.wait_for_disconnect("bigger", WAIT).await,
            Some(DisconnectReason::ClientError)
        );
        let published: Vec<_> = std::iter::from_fn(|| observer.try_next()).collect();
        assert!(
            !published.iter().any(|e| matches!(e, Event::Publish(p) if p.topic.starts_with("a/b/c/d/e/f/g/h/") || p.payload.len() > 128 * 1024)),
            "refused publishes are not routed"
        );
    }
}

#[tokio::test]
async fn the_certs_init_policy_denies_other_topics_as_aws_does_in_each_mqtt_version() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.policy = Policy::from_json(&rig.pki.policy).unwrap();
    let broker = rig.start(config).await;
    let addr = broker.mqtt_addr();
    for version in VERSIONS {
        let mut observer = broker.observe();
        // Allowed: publish to outTopic as the thing itself.
        let mut publish = publisher(&rig, addr, version, "ESPthing");
        publish.args([
            "-t",
            "outTopic",
            "-q",
            "1",
            "-m",
            "{\"message\": \"hello world #1\"}",
        ]);
        let (ok, _, err) = run(publish).await;
        assert!(ok, "{version}: {err}");
        assert!(observer.wait_for_publish("outTopic", WAIT).await.is_some());
        assert_eq!(
            observer.wait_for_disconnect("ESPthing", WAIT).await,
            Some(DisconnectReason::ClientInitiatedDisconnect)
        );
        // Denied publish: MQTT 3.1.1 is disconnected; MQTT 5 gets PUBACK 0x87 and ends
        // the connection itself.
        let v5 = version == "mqttv5";
        let (client_ends, broker_ends) = (
            Some(DisconnectReason::ClientInitiatedDisconnect),
            Some(DisconnectReason::ForbiddenAccess),
        );
        let mut publish = publisher(&rig, addr, version, "ESPthing");
        publish.args(["-t", "inTopic", "-q", "1", "-m", "x"]);
        let (ok, _, err) = run(publish).await;
        if v5 {
            assert!(err.contains("Not authorized"), "{version}: {err}");
        } else {
            assert!(!ok, "{version}: publish to inTopic must fail");
        }
        assert_eq!(
            observer.wait_for_disconnect("ESPthing", WAIT).await,
            if v5 { client_ends } else { broker_ends }
        );
        // Denied subscribe: MQTT 5 gets SUBACK 0x87 (mosquitto_sub then gives up).
        let mut sub = subscriber(&rig, addr, version, "ESPthing");
        sub.args(["-t", "outTopic", "-C", "1", "-W", "5"]);
        let sub = spawn(sub);
        assert_eq!(
            observer.wait_for_disconnect("ESPthing", WAIT).await,
            if v5 { client_ends } else { broker_ends }
        );
        if v5 {
            let (_, _, err) = finish(sub).await;
            assert!(err.contains("denied"), "{err}");
        }
        // Denied connect: a client id other than the thing name.
        let mut publish = publisher(&rig, addr, version, "not-the-thing");
        publish.args(["-t", "outTopic", "-m", "x"]);
        assert!(!run(publish).await.0);
        let reason = observer.wait_for_refusal(WAIT).await.unwrap();
        assert!(reason.contains("iot:Connect"), "{reason}");
    }
}

#[tokio::test]
async fn lifecycle_events_reach_subscribers_with_aws_fields() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut observer = broker.observe();
    let mut watch = subscriber(&rig, addr, "mqttv5", "ESPthing-watch");
    watch.args([
        "-t",
        "$aws/events/presence/+/ESPthing-dev",
        "-C",
        "2",
        "-W",
        "10",
    ]);
    let watch = spawn(watch);
    observer
        .wait_for_subscription(
            "ESPthing-watch",
            "$aws/events/presence/+/ESPthing-dev",
            WAIT,
        )
        .await
        .unwrap();
    let mut publish = publisher(&rig, addr, "mqttv311", "ESPthing-dev");
    publish.args(["-t", "test/x", "-m", "x"]);
    assert!(run(publish).await.0);
    let (ok, out, err) = finish(watch).await;
    assert!(ok, "{err}");
    let docs: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{out}");
    assert_eq!(docs[0]["eventType"], "connected");
    assert_eq!(docs[0]["clientId"], "ESPthing-dev");
    assert_eq!(docs[0]["ipAddress"], "127.0.0.1");
    assert_eq!(docs[1]["eventType"], "disconnected");
    assert_eq!(docs[1]["disconnectReason"], "CLIENT_INITIATED_DISCONNECT");
    assert_eq!(docs[1]["clientInitiatedDisconnect"], true);
    assert_eq!(docs[0]["sessionIdentifier"], docs[1]["sessionIdentifier"]);
    assert_eq!(docs[0]["principalIdentifier"].as_str().unwrap().len(), 64);
    assert!(docs[1]["versionNumber"].as_u64() > docs[0]["versionNumber"].as_u64());
    for doc in &docs {
        assert!(doc["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    }
    let seen = observer
        .wait_for_publish("$aws/events/presence/disconnected/ESPthing-dev", WAIT)
        .await
        .unwrap();
    assert_eq!(seen.publisher, Publisher::Broker);
}

#[tokio::test]
async fn device_advisor_tls_cases_fail_at_the_client_and_restore() {
    use certs::pki::{self, KeyAlgorithm};
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let names = ["localhost", "127.0.0.1"];
    let expired = pki::server_cert_expired(&rig.pki.ca, &names).unwrap();
    let (untrusted, _) = pki::server_cert_untrusted(&names, KeyAlgorithm::EcP256).unwrap();
    let wrong_name = pki::server_cert_wrong_name(&rig.pki.ca).unwrap();
    let publish = || {
        let mut publish = publisher(&rig, addr, "mqttv5", "ESPthing");
        publish.args(["-t", "test/da", "-m", "x"]);
        publish
    };
    for (case, identity) in [
        ("expired", &expired),
        ("untrusted", &untrusted),
        ("wrong name", &wrong_name),
    ] {
        broker
            .replace_server_certificate_pem(&identity.cert_pem(), &identity.key_pem())
            .unwrap();
        let mut observer = broker.observe();
        let (ok, _, err) = run(publish()).await;
        assert!(!ok, "{case}: the client must refuse the server");
        let reason = observer.wait_for_refusal(WAIT).await.unwrap();
        assert!(
            reason.contains("TLS handshake failed"),
            "{case}: {reason} / {err}"
        );
    }
    broker.restore_server_credentials().unwrap();
    let (ok, _, err) = run(publish()).await;
    assert!(ok, "restored: {err}");
}

#[tokio::test]
async fn rsa_2048_device_keys_as_the_aws_console_makes_them_are_accepted() {
    let rig = Rig::new();
    let rsa = rig
        .pki
        .ca
        .issue_client(
            "ESPthing",
            certs::pki::KeyAlgorithm::Rsa2048,
            certs::pki::Validity::days(1),
        )
        .unwrap();
    rig.write_identity("rsa", &rsa);
    let broker = rig.start(rig.config()).await;
    let mut observer = broker.observe();
    for tls in ["tlsv1.2", "tlsv1.3"] {
        let mut publish = publisher_as(
            &rig,
            broker.mqtt_addr(),
            "mqttv5",
            Cert::File("rsa"),
            "ESPthing",
        );
        publish.args(["--tls-version", tls, "-t", "test/rsa", "-q", "1", "-m", tls]);
        let (ok, _, err) = run(publish).await;
        assert!(ok, "{tls}: {err}");
        let seen = observer.wait_for_publish("test/rsa", WAIT).await.unwrap();
        assert_eq!(&seen.payload[..], tls.as_bytes());
    }
}

#[tokio::test]
async fn retained_messages_reach_later_subscribers_until_cleared() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    let mut retain = publisher(&rig, addr, "mqttv311", "ESPthing-pub");
    retain.args(["-t", "test/ret", "-q", "1", "-r", "-m", "kept"]);
    assert!(run(retain).await.0);
    for version in VERSIONS {
        let mut sub = subscriber(&rig, addr, version, "ESPthing-sub");
        sub.args([
            "-t", "test/ret", "-q", "1", "-C", "1", "-W", "10", "-F", "%r %t %p",
        ]);
        let (ok, out, err) = run(sub).await;
        assert!(ok, "{version}: {err}");
        assert_eq!(out.trim(), "1 test/ret kept", "{version}");
    }
    // AWS sends a retained message only to a filter naming its topic exactly: a
    // wildcard subscriber's first message is a live one.
    for version in VERSIONS {
        let first = first_message_after_subscribing(&broker, &rig, version, "test/#").await;
        assert_eq!(first, "0 test/live now", "{version}");
    }
    // An empty retained publish clears it: a new subscriber's first message is live.
    let mut clear = publisher(&rig, addr, "mqttv5", "ESPthing-pub");
    clear.args(["-t", "test/ret", "-q", "1", "-r", "-n"]);
    assert!(run(clear).await.0);
    let first = first_message_after_subscribing(&broker, &rig, "mqttv5", "test/ret").await;
    assert_eq!(first, "0 test/ret now");
}

/// Subscribe to `filter` with mosquitto_sub, then inject "now" to `test/live` (or to
/// `filter` if it names one topic): the first message the subscriber prints.
async fn first_message_after_subscribing(
    broker: &mock_broker::Handle,
    rig: &Rig,
    version: &str,
    filter: &str,
) -> String {
    let mut observer = broker.observe();
    let mut sub = subscriber(rig, broker.mqtt_addr(), version, "ESPthing-sub");
    sub.args([
        "-t", filter, "-q", "1", "-C", "1", "-W", "10", "-F", "%r %t %p",
    ]);
    let sub = spawn(sub);
    observer
        .wait_for_subscription("ESPthing-sub", filter, WAIT)
        .await
        .unwrap();
    let topic = if filter.contains(['#', '+']) {
        "test/live"
    } else {
        filter
    };
    broker.inject(topic, "now", QoS::AtLeastOnce);
    let (ok, out, err) = finish(sub).await;
    assert!(ok, "{err}");
    out.trim().to_owned()
}

#[tokio::test]
async fn persistent_sessions_keep_subscriptions_and_qos1_messages_between_connections() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let addr = broker.mqtt_addr();
    for (version, persist) in [
        ("mqttv311", vec!["-c"]),
        ("mqttv5", vec!["-c", "-x", "600"]),
    ] {
        let id = format!("ESPthing-persist-{version}");
        let topic = format!("test/persist/{version}");
        let sub = |count: &str| {
            let mut sub = subscriber(&rig, addr, version, &id);
            sub.args(["-t", &topic, "-q", "1", "-C", count, "-W", "10"])
                .args(&persist);
            sub
        };
        let mut observer = broker.observe();
        let first = spawn(sub("1"));
        assert_eq!(
            observer.wait_for_session(&id, WAIT).await,
            Some(false),
            "{version}: new"
        );
        observer
            .wait_for_subscription(&id, &topic, WAIT)
            .await
            .unwrap();
        broker.inject(&topic, "live", QoS::AtLeastOnce);
        let (ok, out, err) = finish(first).await;
        assert!(ok, "{version}: {err}");
        assert_eq!(out.trim(), "live");
        observer.wait_for_disconnect(&id, WAIT).await.unwrap();

        // Nobody is connected, but the session keeps the message.
        assert_eq!(broker.inject(&topic, "kept for you", QoS::AtLeastOnce), 0);
        let second = spawn(sub("1"));
        assert_eq!(
            observer.wait_for_session(&id, WAIT).await,
            Some(true),
            "{version}: resumed"
        );
        let (ok, out, err) = finish(second).await;
        assert!(ok, "{version}: {err}");
        assert_eq!(out.trim(), "kept for you", "{version}");
    }
}
