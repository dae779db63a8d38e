//! FIDELITY.md's AWS rules as a third-party client sees them: paho-mqtt (PyPI), MQTT 3.1.1
//! and 5, driven by `tests/paho_fidelity.py` against a broker on an ephemeral port, so no
//! row rests on the project's own codec alone. `make deps` installs paho-mqtt; without it
//! these tests fail saying so.

mod common;

use std::process::Stdio;

use common::{Rig, run};
use mock_broker::{Config, Event, Handle, Observer, Policy};
use tokio::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/paho_fidelity.py");

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

/// A broker with `config`, then the script's `action` against it: the lines it printed.
async fn facts(rig: &Rig, config: Config, action: &str) -> (Handle, Observer, Vec<String>) {
    require_paho().await;
    let broker = rig.start(config).await;
    let observer = broker.observe();
    let mut command = Command::new("python3");
    command
        .arg(SCRIPT)
        .arg(action)
        .arg("localhost")
        .arg(broker.mqtt_addr().port().to_string())
        .arg(rig.path("ca.pem"))
        .arg(rig.path("device.pem"))
        .arg(rig.path("device.key.pem"))
        .arg("ESPthing-paho")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let (ok, out, err) = run(command).await;
    assert!(ok, "{action}: {err}\n(printed: {out})");
    (broker, observer, out.lines().map(str::to_owned).collect())
}

fn allow_all(rig: &Rig) -> Config {
    let mut config = rig.config();
    config.policy = Policy::allow_all();
    config
}

#[tokio::test]
async fn paho_a_hash_filter_does_not_receive_its_parent_level() {
    let rig = Rig::new();
    let (_broker, _, lines) = facts(&rig, rig.config(), "hash-parent").await;
    assert_eq!(
        lines,
        [
            "311 suback [1]",
            "311 test/sensor/ child retain=0",
            "5 suback [1]",
            "5 test/sensor/ child retain=0",
        ]
    );
}

#[tokio::test]
async fn paho_mqtt5_retain_handling_and_retain_as_published() {
    let rig = Rig::new();
    let (_broker, _, lines) = facts(&rig, rig.config(), "retained").await;
    assert_eq!(
        lines,
        [
            // Retain Handling 1 (new), 1 (existing: nothing), 0, 2 (nothing), then live.
            "rh test/rh kept retain=1",
            "rh test/rh kept retain=1",
            "rh test/rh end retain=0",
            "rap test/rap state retain=1",
            "plain test/rap state retain=0",
        ]
    );
}

#[tokio::test]
async fn paho_mqtt5_a_queued_message_past_its_expiry_is_dropped() {
    let rig = Rig::new();
    let (_broker, _, lines) = facts(&rig, rig.config(), "expiry").await;
    assert_eq!(
        lines,
        ["session_present=1", "long left<100=True left>90=True"]
    );
}

#[tokio::test]
async fn paho_mqtt5_session_expiry_in_disconnect_replaces_connects() {
    let rig = Rig::new();
    let (_broker, _, lines) = facts(&rig, rig.config(), "session-expiry").await;
    assert_eq!(
        lines,
        [
            "disconnect expiry None: session_present=1",
            "disconnect expiry 0: session_present=0",
        ]
    );
}

#[tokio::test]
async fn paho_mqtt5_connack_announces_what_aws_announces() {
    let rig = Rig::new();
    let (_broker, _, lines) = facts(&rig, rig.config(), "connack").await;
    assert_eq!(
        lines,
        [
            "ReceiveMaximum=100",
            "MaximumQoS=1",
            "RetainAvailable=1",
            "TopicAliasMaximum=8",
            "MaximumPacketSize=149504",
            "WildcardSubscriptionAvailable=1",
            "SubscriptionIdentifierAvailable=0",
            "SharedSubscriptionAvailable=1",
            "ServerKeepAlive=60",
            "SessionExpiryInterval=None",
            "asked 3600: SessionExpiryInterval=None",
            "asked 100000: SessionExpiryInterval=3600",
        ]
    );
}

#[tokio::test]
async fn paho_mqtt5_message_expiry_is_kept_between_1_s_and_7_days() {
    let rig = Rig::new();
    let (_broker, _, lines) = facts(&rig, rig.config(), "expiry-bounds").await;
    assert_eq!(
        lines,
        [
            "test/mei0 kept retain=1 expiry=1",
            "test/meimax kept retain=1 expiry=604800",
        ]
    );
}

#[tokio::test]
async fn paho_a_persistent_session_is_not_resumed_in_the_other_mqtt_version() {
    let rig = Rig::new();
    let (_broker, _, lines) = facts(&rig, rig.config(), "cross-version").await;
    assert_eq!(
        lines,
        [
            "311 then 5: session_present=0",
            "5 then 311: session_present=0",
        ]
    );
}

#[tokio::test]
async fn paho_mqtt5_disconnect_with_reason_4_publishes_the_will_and_0_does_not() {
    let rig = Rig::new();
    let (_broker, _, lines) = facts(&rig, rig.config(), "will").await;
    assert_eq!(
        lines,
        [
            "disconnected ESPthing-paho-0",
            "will bye-4",
            "disconnected ESPthing-paho-4",
        ]
    );
}

#[tokio::test]
async fn paho_an_empty_client_id_is_assigned_one_over_mqtt5_and_refused_over_311() {
    let rig = Rig::new();
    let (_broker, mut observer, lines) = facts(&rig, allow_all(&rig), "assigned-id").await;
    assert_eq!(lines, ["5 assigned=True", "311 0 own_id=True"]);
    let refusals: Vec<String> = std::iter::from_fn(|| observer.try_next())
        .filter_map(|event| match event {
            Event::Refused { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(refusals, ["client id of 0 bytes (1..=128 allowed)"]);
}

#[tokio::test]
async fn paho_mqtt5_topic_aliases_up_to_8() {
    let rig = Rig::new();
    let (_broker, _, lines) = facts(&rig, rig.config(), "topic-alias").await;
    assert_eq!(
        lines,
        [
            "test/alias set retain=0",
            "test/alias used retain=0",
            "alias 9: disconnected 148",
        ]
    );
}

#[tokio::test]
async fn paho_at_most_8_filters_are_granted_in_one_subscribe() {
    let rig = Rig::new();
    let (_broker, _, lines) = facts(&rig, rig.config(), "filters").await;
    assert_eq!(
        lines,
        [
            "311 [1, 1, 1, 1, 1, 1, 1, 1, 128]",
            "5 [1, 1, 1, 1, 1, 1, 1, 1, 151]",
        ]
    );
}

#[tokio::test]
async fn paho_a_client_id_starting_with_dollar_is_refused() {
    let rig = Rig::new();
    // Every client id is allowed to connect: only the prefix can refuse it.
    let (broker, _, lines) = facts(&rig, allow_all(&rig), "dollar-id").await;
    assert_eq!(
        lines,
        [
            "311 133 Client identifier not valid",
            "5 133 Client identifier not valid",
        ]
    );
    assert!(broker.clients().is_empty());
}

#[tokio::test]
async fn paho_a_shared_group_of_offline_persistent_sessions_queues_qos1_messages() {
    let rig = Rig::new();
    let (_broker, _, lines) = facts(&rig, allow_all(&rig), "shared-offline").await;
    assert_eq!(
        lines,
        [
            "session_present=1",
            "test/jobs 1 retain=0",
            "test/jobs 2 retain=0",
            "newcomer test/jobs 3 retain=0",
        ]
    );
}

#[tokio::test]
async fn paho_retain_as_published_holds_for_messages_queued_for_an_offline_session() {
    let rig = Rig::new();
    let (_broker, _, lines) = facts(&rig, rig.config(), "rap-offline").await;
    assert_eq!(
        lines,
        ["test/rapq state retain=1", "test/rapq live retain=0"]
    );
}

#[tokio::test]
async fn paho_at_most_50_subscriptions_per_connection() {
    let rig = Rig::new();
    let (_broker, _, lines) = facts(&rig, rig.config(), "subscriptions").await;
    assert_eq!(
        lines,
        ["311 granted=50 refused=[128]", "5 granted=50 refused=[151]"]
    );
}

#[tokio::test]
async fn paho_past_100_publishes_a_second_they_are_dropped_and_past_512_kib_the_client_waits() {
    let rig = Rig::new();
    let mut config = rig.config();
    config.inbound_limits = Some(mock_broker::InboundLimits::default());
    let (_broker, _, lines) = facts(&rig, config, "rate").await;
    assert_eq!(
        lines,
        [
            "acked=100 of 101",
            "5 x 128 KiB acked=True over_a_second=True",
        ]
    );
}

#[tokio::test]
async fn paho_mqtt5_a_delayed_will_waits_and_a_reconnection_cancels_it() {
    let rig = Rig::new();
    let (_broker, mut observer, lines) = facts(&rig, rig.config(), "will-delay").await;
    assert_eq!(
        lines,
        [
            "will late after_delay=True",
            "back: session_present=1",
            "next will fence",
        ]
    );
    assert!(
        std::iter::from_fn(|| observer.try_next()).any(|event| matches!(
            event,
            Event::WillDiscarded { client_id, .. } if client_id == "ESPthing-paho-back"
        )),
        "the broker reports the discarded will"
    );
}

#[tokio::test]
async fn paho_mqtt5_subscription_identifiers_and_reserved_topics_are_refused_with_their_codes() {
    let rig = Rig::new();
    // Every topic is allowed: only AWS's rules refuse.
    let (_broker, _, lines) = facts(&rig, allow_all(&rig), "refusals").await;
    assert_eq!(
        lines,
        [
            "subscription identifier: disconnected 161",
            "reserved topic: disconnected 144",
            "reserved will topic: connack 144",
        ]
    );
}

#[tokio::test]
async fn paho_client_ids_with_wildcards_connect_but_get_no_lifecycle_events() {
    let rig = Rig::new();
    let (_broker, _, lines) = facts(&rig, rig.config(), "wildcard-id").await;
    assert_eq!(lines, ["first connected event: ESPthing-paho-plain"]);
}

#[tokio::test]
async fn paho_an_unacknowledged_delivery_is_resent_with_dup_to_the_resumed_session() {
    let rig = Rig::new();
    let (_broker, _, lines) = facts(&rig, rig.config(), "dup").await;
    assert_eq!(
        lines,
        [
            "311 session_present=1 first dup=0 again once dup=1 same_id=True",
            "5 session_present=1 first dup=0 again once dup=1 same_id=True",
        ]
    );
}

#[tokio::test]
async fn paho_a_will_the_policy_does_not_allow_refuses_the_connect() {
    let rig = Rig::new();
    // The test policy allows publishing under test/ only.
    let (_broker, _, lines) = facts(&rig, rig.config(), "will-policy").await;
    assert_eq!(lines, ["5 connack 135", "311 closed, connacks=0"]);
}
