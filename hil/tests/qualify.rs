//! `hil qualify` on the virtual device: a device that keeps the rules passes the cases
//! (all but the two 12-connect ones, which take 90 s: `make qualify` runs those, and
//! their judges are unit-tested on recorded delays), and the qualification can fail:
//! devices that break Device Advisor's rules on purpose get Device Advisor's verdict
//! `fail` on the matching case, with the evidence that decided it, while the cases they
//! do not break still pass.
//!
//! - a constant 5 s retry (the original tutorial's sketch) fails the server-disconnect
//!   backoff case as `constant`;
//! - a backoff reset on every CONNACK fails the unstable-connection case;
//! - a device that subscribes again on a resumed session fails the persistent-session case;
//! - a device that never retries SUBSCRIBE fails the SUBACK-retry case;
//! - an image with a CA the broker's certificate does not chain to fails TLS_Connect;
//! - the tutorial's `iot:*` on `*` policy fails Security_Device_Policies.

mod common;

use std::sync::Arc;

use certs::pki::{CertificateAuthority, KeyAlgorithm, Validity};
use hil::backend::virtual_device::VirtualBackend;
use hil::qualify::policy::PolicySource;
use hil::qualify::{self, Qualification, Verdict};
use hil::rig::{ImageSabotage, Rig};

async fn qualify_with(
    rig: Rig,
    backend: VirtualBackend,
    cases: &[&str],
    policy: Option<PolicySource>,
) -> Qualification {
    let names: Vec<String> = cases.iter().map(|c| c.to_string()).collect();
    let cases = qualify::select(&names).expect("known cases");
    let scenarios = qualify::scenarios_for(&cases);
    qualify::qualify(
        Arc::new(rig),
        Arc::new(backend),
        cases,
        scenarios,
        Vec::new(),
        policy,
        |_| {},
    )
    .await
}

fn verdict<'q>(q: &'q Qualification, case: &str) -> (Verdict, &'q str) {
    let r = q
        .results
        .iter()
        .find(|r| r.case.name == case)
        .unwrap_or_else(|| panic!("{case} was judged"));
    (r.judgement.verdict, r.judgement.evidence.as_str())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_that_keeps_the_rules_passes() {
    let binary = common::virtual_device();
    let rig = Rig::start(binary.clone()).await.expect("rig");
    let slow = [
        "MQTT_Connect_Jitter_Backoff_Retries",
        "MQTT_Connect_Exponential_Backoff_Retries",
    ];
    // Cases resting only on hil run's scenarios are proven by tests/suite.rs.
    let cases: Vec<&str> = qualify::cases::CASES
        .iter()
        .filter(|c| !slow.contains(&c.name))
        .filter(|c| {
            c.scenarios()
                .iter()
                .any(|s| qualify::checks::all().iter().any(|q| q.name == *s))
        })
        .map(|c| c.name)
        .collect();
    assert!(
        cases.contains(&"TLS_Support_AWS_IoT_Cipher_Suites"),
        "{cases:?}"
    );
    assert!(
        cases.contains(&"MQTT_Persistent_Session_Happy_Case"),
        "{cases:?}"
    );
    assert!(cases.contains(&"MQTT_Long_Duration"), "{cases:?}");
    let q = qualify_with(rig, VirtualBackend::new(binary), &cases, None).await;
    for r in &q.results {
        assert_eq!(
            r.judgement.verdict,
            Verdict::Pass,
            "{}: {}",
            r.case.name,
            r.judgement.evidence
        );
    }
    assert_eq!(q.results.len(), cases.len());
    let (_, suites) = verdict(&q, "TLS_Support_AWS_IoT_Cipher_Suites");
    assert!(
        suites.starts_with("negotiated TLS13_AES_128_GCM_SHA256;"),
        "{suites}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_breaking_four_rules_fails_exactly_those_four_cases() {
    let binary = common::virtual_device();
    let rig = Rig::start(binary.clone()).await.expect("rig");
    let backend = VirtualBackend::new(binary)
        .misbehaving("constant-retry")
        .misbehaving("reset-backoff-on-connack")
        .misbehaving("resubscribe-on-resume")
        .misbehaving("ignore-suback-timeout");
    let q = qualify_with(
        rig,
        backend,
        &[
            "MQTT_Reconnect_Backoff_Retries_On_Server_Disconnect",
            "MQTT_Reconnect_Backoff_Retries_On_Unstable_Connection",
            "MQTT_Persistent_Session_Happy_Case",
            "MQTT_Subscribe_Retry_No_Suback",
            "MQTT_Client_Puback_QoS1",
        ],
        None,
    )
    .await;

    let (v, why) = verdict(&q, "MQTT_Reconnect_Backoff_Retries_On_Server_Disconnect");
    assert_eq!(v, Verdict::Fail, "{why}");
    assert!(
        why.starts_with("expected jittered reconnect delays, saw constant (5000 ms)"),
        "{why}"
    );

    let (v, why) = verdict(&q, "MQTT_Reconnect_Backoff_Retries_On_Unstable_Connection");
    assert_eq!(v, Verdict::Fail, "{why}");
    assert!(
        why.starts_with("the backoff was reset after a connection that dropped right after CONNACK: attempt=1 then attempt=1"),
        "{why}"
    );

    let (v, why) = verdict(&q, "MQTT_Persistent_Session_Happy_Case");
    assert_eq!(v, Verdict::Fail, "{why}");
    assert!(
        why.starts_with("expected no SUBSCRIBE on the resumed session, saw one"),
        "{why}"
    );

    let (v, why) = verdict(&q, "MQTT_Subscribe_Retry_No_Suback");
    assert_eq!(v, Verdict::Fail, "{why}");
    assert!(
        why.starts_with(
            "expected a second SUBSCRIBE within 30s of the first (SUBACK withheld), saw only one"
        ),
        "{why}"
    );

    // A rule the device keeps still passes: the failures are the rules', not the rig's.
    let (v, why) = verdict(&q, "MQTT_Client_Puback_QoS1");
    assert_eq!(v, Verdict::Pass, "{why}");
    assert!(!q.passed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_ca_in_the_image_fails_tls_connect_at_the_handshake() {
    let binary = common::virtual_device();
    let mut rig = Rig::start(binary.clone()).await.expect("rig");
    let foreign = CertificateAuthority::root("Foreign CA", KeyAlgorithm::EcP256, Validity::days(1))
        .expect("CA");
    rig.sabotage_images(ImageSabotage {
        ca_der: Some(foreign.cert_der().to_vec()),
        ..ImageSabotage::default()
    });
    let q = qualify_with(rig, VirtualBackend::new(binary), &["TLS_Connect"], None).await;
    let (v, why) = verdict(&q, "TLS_Connect");
    assert_eq!(v, Verdict::Fail, "{why}");
    assert!(
        why.starts_with("expected `mqtt: connected` after `time: synced` within"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tutorials_iot_star_policy_fails_security_device_policies() {
    let binary = common::virtual_device();
    let rig = Rig::start(binary.clone()).await.expect("rig");
    let tutorial = PolicySource {
        origin: "tutorial-policy.json".into(),
        json: r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}"#.into(),
    };
    let q = qualify_with(
        rig,
        VirtualBackend::new(binary),
        &["Security_Device_Policies"],
        Some(tutorial),
    )
    .await;
    let (v, why) = verdict(&q, "Security_Device_Policies");
    assert_eq!(v, Verdict::Fail, "{why}");
    assert_eq!(
        why,
        "tutorial-policy.json: Statement[0] allows every action (iot:*); Statement[0] grants a wildcard resource: *"
    );
}
