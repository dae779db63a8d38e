//! Faults: what the broker does wrong on request, seen by a raw MQTT 5 client.

mod common;

use std::time::{Duration, Instant};

use common::{RawClient, Rig, WAIT, connect_packet, publish_packet_v5, subscribe_packet_v5};
use mock_broker::{DisconnectReason, Faults, QoS};
use tokio::io::AsyncWriteExt;

const CONNACK: u8 = 0x20;
const PUBACK: u8 = 0x40;
const PUBLISH_QOS1: u8 = 0x32;
const SUBACK: u8 = 0x90;
const PINGREQ: [u8; 2] = [0xC0, 0];
const PINGRESP: u8 = 0xD0;

async fn connected(rig: &Rig, broker: &mock_broker::Handle, id: &str) -> RawClient {
    let mut client = RawClient::connect(rig, broker.mqtt_addr()).await;
    client.send(&connect_packet(5, id, 60, &[])).await;
    assert_eq!(client.next().await.unwrap().0, CONNACK);
    client
}

#[tokio::test]
async fn withheld_acknowledgements_are_skipped_and_the_rest_still_works() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut observer = broker.observe();
    let mut client = connected(&rig, &broker, "ESPthing").await;
    broker.set_faults(Faults {
        withhold_puback: true,
        withhold_suback: true,
        ..Faults::default()
    });
    client
        .send(&publish_packet_v5(1, 7, "test/out", b"x"))
        .await;
    assert!(
        observer.wait_for_publish("test/out", WAIT).await.is_some(),
        "still routed"
    );
    assert_eq!(
        observer.wait_for_fault("ESPthing", WAIT).await.unwrap(),
        "withheld PUBACK"
    );
    client.send(&subscribe_packet_v5(8, "test/in")).await;
    assert_eq!(
        observer.wait_for_fault("ESPthing", WAIT).await.unwrap(),
        "withheld SUBACK"
    );
    // Nothing was sent for either: the next packet is the answer to this ping.
    client.send(&PINGREQ).await;
    assert_eq!(client.next().await.unwrap().0, PINGRESP);
    // The subscription is in force all the same.
    broker.inject("test/in", "hi", QoS::AtLeastOnce);
    assert_eq!(client.next().await.unwrap().0, PUBLISH_QOS1);

    broker.reset_faults();
    client
        .send(&publish_packet_v5(1, 9, "test/out", b"x"))
        .await;
    assert_eq!(client.next().await.unwrap(), (PUBACK, vec![0, 9]));
}

#[tokio::test]
async fn withheld_pingresp_only_for_the_chosen_client() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut observer = broker.observe();
    let mut victim = connected(&rig, &broker, "ESPthing-victim").await;
    let mut bystander = connected(&rig, &broker, "ESPthing-other").await;
    broker.set_client_faults(
        "ESPthing-victim",
        Faults {
            withhold_pingresp: true,
            ..Faults::default()
        },
    );
    victim.send(&PINGREQ).await;
    assert_eq!(
        observer
            .wait_for_fault("ESPthing-victim", WAIT)
            .await
            .unwrap(),
        "withheld PINGRESP"
    );
    victim.send(&publish_packet_v5(1, 3, "test/x", b"x")).await;
    assert_eq!(victim.next().await.unwrap(), (PUBACK, vec![0, 3]));
    bystander.send(&PINGREQ).await;
    assert_eq!(bystander.next().await.unwrap().0, PINGRESP);
}

#[tokio::test]
async fn withheld_connack_leaves_the_client_waiting() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut observer = broker.observe();
    broker.set_faults(Faults {
        withhold_connack: true,
        ..Faults::default()
    });
    let mut client = RawClient::connect(&rig, broker.mqtt_addr()).await;
    client.send(&connect_packet(5, "ESPthing", 60, &[])).await;
    // The client gives up and closes its side; only then does the broker let go, and
    // not one byte was sent before.
    client.stream.shutdown().await.unwrap();
    let reason = observer.wait_for_refusal(WAIT).await.unwrap();
    assert!(reason.contains("CONNACK withheld"), "{reason}");
    assert_eq!(client.next().await, None);
}

#[tokio::test]
async fn disconnect_after_connack_and_drop_close_without_a_word() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut observer = broker.observe();
    broker.set_faults(Faults {
        disconnect_after_connack: true,
        ..Faults::default()
    });
    let mut client = connected(&rig, &broker, "ESPthing").await;
    assert_eq!(client.next().await, None, "closed, no DISCONNECT");
    assert_eq!(
        observer.wait_for_disconnect("ESPthing", WAIT).await,
        Some(DisconnectReason::ServerInitiatedDisconnect)
    );

    broker.reset_faults();
    let mut client = connected(&rig, &broker, "ESPthing").await;
    assert!(broker.drop_connection("ESPthing"));
    assert_eq!(client.next().await, None, "closed, no DISCONNECT");
    assert!(!broker.drop_connection("nobody"));
}

#[tokio::test]
async fn black_hole_ignores_everything_without_closing() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut observer = broker.observe();
    let mut client = connected(&rig, &broker, "ESPthing").await;
    client.send(&subscribe_packet_v5(1, "test/in")).await;
    assert_eq!(client.next().await.unwrap().0, SUBACK);
    broker.set_faults(Faults {
        black_hole: true,
        ..Faults::default()
    });
    client.send(&publish_packet_v5(1, 2, "test/bh", b"x")).await;
    assert_eq!(
        observer.wait_for_fault("ESPthing", WAIT).await.unwrap(),
        "black hole: ignored PUBLISH"
    );
    broker.inject("test/in", "lost", QoS::AtLeastOnce);
    assert_eq!(
        observer.wait_for_fault("ESPthing", WAIT).await.unwrap(),
        "withheld PUBLISH"
    );
    broker.reset_faults();
    client.send(&PINGREQ).await;
    assert_eq!(
        client.next().await.unwrap().0,
        PINGRESP,
        "nothing else came before"
    );
    assert_eq!(broker.clients().len(), 1, "still connected");
}

#[tokio::test]
async fn latency_delays_every_packet_sent() {
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let mut client = connected(&rig, &broker, "ESPthing").await;
    broker.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    });
    let sent = Instant::now();
    client.send(&PINGREQ).await;
    assert_eq!(client.next().await.unwrap().0, PINGRESP);
    assert!(
        sent.elapsed() >= Duration::from_millis(300),
        "{:?}",
        sent.elapsed()
    );
}
