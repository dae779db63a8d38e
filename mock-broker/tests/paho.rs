//! The broker against paho-mqtt (PyPI), MQTT 3.1.1 and 5. Skips, saying why, where the
//! Python package is not installed (`pip install paho-mqtt`).

mod common;

use std::process::Stdio;

use common::{Rig, WAIT, run};
use mock_broker::DisconnectReason;
use tokio::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/paho_client.py");

async fn paho_available() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success());
    if !found {
        eprintln!("skipped: python3 with paho-mqtt is not installed (pip install paho-mqtt)");
    }
    found
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
    if !paho_available().await {
        return;
    }
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
    if !paho_available().await {
        return;
    }
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
