//! The loopback HTTP/JSON control API, driven over plain HTTP/1.1.

mod common;

use common::{RawClient, Rig, WAIT, connect_packet, http};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[tokio::test]
async fn the_control_api_observes_injects_kicks_and_applies_faults() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.control_addr = Some("127.0.0.1:0".parse().unwrap());
    config.sntp_addr = Some("127.0.0.1:0".parse().unwrap());
    let broker = rig.start(config).await;
    let control = broker.control_addr().unwrap();

    let (status, body) = http(control, "GET", "/status", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["mqtt"], broker.mqtt_addr().to_string());

    // The event stream, opened before anything happens.
    let mut events = TcpStream::connect(control).await.unwrap();
    events
        .write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut events = BufReader::new(events).lines();
    // The broker subscribes to events before it answers, so once the header has been
    // read every later event is on the stream.
    while !tokio::time::timeout(WAIT, events.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .is_empty()
    {}
    let mut next_event = async |wanted: &str| -> Value {
        let search = async {
            while let Some(line) = events.next_line().await.unwrap() {
                let value: Value = serde_json::from_str(&line).unwrap();
                let topic_ok = value["type"] != "publish" || value["topic"] == "test/in";
                if value["type"] == wanted && topic_ok {
                    return value;
                }
            }
            panic!("event stream ended");
        };
        tokio::time::timeout(WAIT, search).await.unwrap()
    };
    let mut client = RawClient::connect(&rig, broker.mqtt_addr()).await;
    client.send(&connect_packet(5, "ESPthing", 60, &[])).await;
    client.next().await.unwrap();
    let connected = next_event("connected").await;
    assert_eq!(connected["client_id"], "ESPthing");
    assert_eq!(connected["mqtt_version"], "5");

    client
        .send(&common::subscribe_packet_v5(1, "test/in"))
        .await;
    client.next().await.unwrap();
    let (status, body) = http(
        control,
        "POST",
        "/publish",
        Some(json!({"topic": "test/in", "payload": "hi", "qos": 1})),
    )
    .await;
    assert_eq!((status, body), (200, json!({"delivered": 1})));
    let (first, publish) = client.next().await.unwrap();
    assert_eq!(first, 0x32);
    assert!(publish.ends_with(b"hi"));
    let published = next_event("publish").await;
    assert_eq!(published["publisher"], "injected");
    assert_eq!(published["payload"], "hi");

    let (_, clients) = http(control, "GET", "/clients", None).await;
    assert_eq!(clients[0]["client_id"], "ESPthing");
    assert_eq!(clients[0]["subscriptions"][0]["filter"], "test/in");

    let (status, _) = http(
        control,
        "PUT",
        "/faults",
        Some(json!({"client_id": "ESPthing", "faults": {"withhold_pingresp": true}})),
    )
    .await;
    assert_eq!(status, 200);
    client.send(&[0xC0, 0]).await;
    assert_eq!(next_event("fault").await["fault"], "withheld PINGRESP");
    assert_eq!(http(control, "DELETE", "/faults", None).await.0, 200);

    let (_, kicked) = http(
        control,
        "POST",
        "/kick",
        Some(json!({"client_id": "ESPthing"})),
    )
    .await;
    assert_eq!(kicked, json!({"kicked": true}));
    assert_eq!(
        next_event("disconnected").await["reason"],
        "SERVER_INITIATED_DISCONNECT"
    );
    // Expiring needs a client id; a client with neither a connection nor a stored
    // session has nothing to expire (tests/qualification_controls.rs expires a real one).
    let (status, answer) = http(
        control,
        "POST",
        "/expire",
        Some(json!({"client_id": "nobody"})),
    )
    .await;
    assert_eq!((status, answer), (200, json!({"expired": false})));
    assert_eq!(
        http(control, "POST", "/expire", Some(json!({}))).await.0,
        400
    );

    assert_eq!(http(control, "POST", "/listener/stop", None).await.0, 200);
    assert!(TcpStream::connect(broker.mqtt_addr()).await.is_err());
    assert_eq!(http(control, "POST", "/listener/start", None).await.0, 200);
    assert!(TcpStream::connect(broker.mqtt_addr()).await.is_ok());

    assert_eq!(
        http(control, "PUT", "/sntp", Some(json!({"offset_secs": -3600})))
            .await
            .0,
        200
    );
    let (status, error) = http(control, "PUT", "/sntp", Some(json!({"behaviour": "late"}))).await;
    assert_eq!(status, 400);
    assert!(error["error"].as_str().unwrap().contains("behaviour"));
    let (status, error) = http(
        control,
        "PUT",
        "/faults",
        Some(json!({"faults": {"nonsense": 1}})),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(http(control, "GET", "/nothing", None).await.0, 404);

    let expired = certs::pki::server_cert_expired(&rig.pki.ca, &["localhost"]).unwrap();
    let swap = json!({"chain_pem": expired.cert_pem(), "key_pem": *expired.key_pem()});
    assert_eq!(
        http(control, "PUT", "/server-certificate", Some(swap))
            .await
            .0,
        200
    );
    let bad = json!({"chain_pem": "not PEM", "key_pem": "nor this"});
    assert_eq!(
        http(control, "PUT", "/server-certificate", Some(bad))
            .await
            .0,
        400
    );
    assert_eq!(
        http(control, "DELETE", "/server-certificate", None).await.0,
        200
    );
}
