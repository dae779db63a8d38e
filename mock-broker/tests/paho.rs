//! The broker against paho-mqtt (PyPI), MQTT 3.1.1 and 5. `make deps` installs the Python
//! package; without it these tests fail saying so, rather than pass having run nothing.

mod common;

use std::process::Stdio;

use common::{Rig, WAIT, run};
use mock_broker::DisconnectReason;
use tokio::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/paho_client.py");

/// Panics, saying how to install it, unless python3 can import paho-mqtt.
async fn require_paho() {
    let found = Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "python3 with paho-mqtt is not installed: run `make deps` (pip install paho-mqtt==2.2.0)"
    );
}

fn paho(rig: &Rig, action: &str, port: u16, client_id: &str, version: &str) -> Command {
    let mut command = Command::new("python3");
    command
        .arg(SCRIPT)
        .arg(action)
        .arg("localhost")
        .arg(port.to_string())
        .arg(rig.path("ca.pem"))
        .arg(rig.path("device.pem"))
        .arg(rig.path("device.key.pem"))
        .arg(client_id)
        .arg(version)
        .arg("test/paho")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn paho_round_trip_in_both_versions() {
    require_paho().await;
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let port = broker.mqtt_addr().port();
    for version in ["311", "5"] {
        let mut observer = broker.observe();
        let id = format!("ESPthing-paho-{version}");
        let (ok, out, err) = run(paho(&rig, "roundtrip", port, &id, version)).await;
        assert!(ok, "{version}: {err}");
        assert_eq!(out.trim(), format!("paho {version}"));
        let seen = observer.wait_for_publish("test/paho", WAIT).await.unwrap();
        assert_eq!(seen.publisher, mock_broker::Publisher::Client(id));
    }
}

#[tokio::test]
async fn paho_gone_silent_is_dropped_after_one_and_a_half_keep_alives() {
    require_paho().await;
    let rig = Rig::new();
    let mut config = rig.config();
    config.min_keep_alive_secs = 1;
    let broker = rig.start(config).await;
    let mut observer = broker.observe();
    let started = std::time::Instant::now();
    let (ok, out, err) = run(paho(
        &rig,
        "silent",
        broker.mqtt_addr().port(),
        "ESPthing",
        "5",
    ))
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "closed by broker");
    assert_eq!(
        observer.wait_for_disconnect("ESPthing", WAIT).await,
        Some(DisconnectReason::MqttKeepAliveTimeout)
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
}

#[tokio::test]
async fn paho_mqtt5_no_local_keeps_its_own_message_from_it() {
    require_paho().await;
    let rig = Rig::new();
    let broker = rig.start(rig.config()).await;
    let port = broker.mqtt_addr().port();
    let (ok, out, err) = run(paho(&rig, "nolocal", port, "ESPthing-paho", "5")).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "me other");
}

#[tokio::test]
async fn paho_mqtt5_shared_subscription_members_take_turns() {
    require_paho().await;
    let rig = Rig::new();
    let mut config = rig.config();
    config.policy = mock_broker::Policy::allow_all();
    let broker = rig.start(config).await;
    let port = broker.mqtt_addr().port();
    let (ok, out, err) = run(paho(&rig, "shared", port, "ESPthing-paho", "5")).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "a 1\na 3\nb 2\nb 4");
}
