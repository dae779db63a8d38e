//! The virtual device (firmware-core over embedded-tls + minimq, MQTT 5 only) against
//! the mock broker: the client the broker exists for.

mod common;

use std::time::Duration;

use common::{Rig, WAIT};
use mock_broker::{Policy, Publisher, QoS};

#[tokio::test]
async fn the_virtual_device_syncs_connects_subscribes_and_publishes() {
    let rig = Rig::new();
    let mut config = rig.config();
    // The least-privilege policy `certs init` writes, as the bench uses.
    config.policy = Policy::from_json(&rig.pki.policy).unwrap();
    config.connect_interval = Duration::from_secs(1);
    config.sntp_addr = Some("127.0.0.1:0".parse().unwrap());
    let broker = rig.start(config).await;
    let mut observer = broker.observe();

    let (args, serial, serial_path) = common::virtual_device(&rig, &broker);

    let checks = async {
        assert_eq!(
            observer
                .wait_for_subscription("ESPthing", "inTopic", WAIT)
                .await,
            Some(QoS::AtLeastOnce)
        );
        let first = observer.wait_for_publish("outTopic", WAIT).await.unwrap();
        assert_eq!(first.publisher, Publisher::Client("ESPthing".into()));
        assert_eq!(&first.payload[..], br#"{"message": "hello world #1"}"#);
        assert_eq!(broker.clients()[0].version, mock_broker::mqtt::Version::V5);
        assert_eq!(broker.inject("inTopic", "hello", QoS::AtLeastOnce), 1);
    };
    tokio::select! {
        _ = virtual_device::device::run(&args, &serial, None) => panic!("the device stopped"),
        _ = checks => {}
    }
    let log = std::fs::read_to_string(&serial_path).unwrap();
    assert!(log.contains("time: synced"), "{log}");
    assert!(log.contains("mqtt: connected"), "{log}");
}
