//! The same client-side checks against the mock broker and mosquitto (a second,
//! independent MQTT 3.1.1/5 broker with mutual TLS, run as a local process) through one
//! broker abstraction ([`interop::Broker`]). `tests/containers.rs` runs the same checks
//! against third-party broker images.

mod common;
mod interop;

use common::Rig;
use interop::Broker;

async fn both(rig: &Rig) -> [Broker; 2] {
    [Broker::mock(rig).await, Broker::mosquitto(rig).await]
}

#[tokio::test]
async fn round_trip_in_both_versions_on_both_brokers() {
    let rig = Rig::new();
    for broker in both(&rig).await {
        interop::round_trip_in_both_versions(&rig, &broker).await;
        broker.stop().await;
    }
}

#[tokio::test]
async fn both_brokers_refuse_clients_without_a_trusted_certificate() {
    let rig = Rig::new();
    for broker in both(&rig).await {
        interop::refuses_clients_without_a_trusted_certificate(&rig, &broker).await;
        broker.stop().await;
    }
}

#[tokio::test]
async fn where_aws_differs_from_plain_mqtt() {
    let rig = Rig::new();
    for broker in both(&rig).await {
        interop::eight_slash_topic_only_aws_refuses(&rig, &broker).await;
        broker.stop().await;
    }
}
