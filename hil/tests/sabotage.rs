//! A wrong image must fail the matching scenario with a message that says what was
//! expected and what was seen: a 3000 ms period fails `cadence`, a CA the broker's
//! certificate does not chain to fails `boot`.

mod common;

use std::sync::Arc;

use certs::pki::{CertificateAuthority, KeyAlgorithm, Validity};
use hil::rig::{ImageSabotage, Rig};
use hil::runner::run_suite;
use hil::scenarios;

async fn failure_of(scenario: &str, sabotage: ImageSabotage) -> String {
    let mut rig = Rig::start(common::virtual_device()).await.expect("rig");
    rig.sabotage_images(sabotage);
    let selected = scenarios::select(&[scenario.to_string()]).unwrap();
    let reports = run_suite(Arc::new(rig), selected, |_| {}).await;
    match &reports[0].result {
        Ok(figure) => panic!("{scenario} passed with a sabotaged image: {figure}"),
        Err(why) => {
            // A wrong image is the device's failure, never the rig's.
            assert!(why.fault.is_device(), "{why:?}");
            why.message.clone()
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_3000ms_period_fails_cadence_naming_the_interval_seen() {
    let why = failure_of(
        "cadence",
        ImageSabotage {
            period_ms: Some(3000),
            ..ImageSabotage::default()
        },
    )
    .await;
    let seen_ms: u64 = why
        .strip_prefix("expected every interval 2000 +- 150 ms at the broker, saw #2 after ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("{why}"));
    assert!(seen_ms.abs_diff(3000) <= 150, "{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_ca_in_the_image_fails_boot_at_the_handshake() {
    let foreign = CertificateAuthority::root("Foreign CA", KeyAlgorithm::EcP256, Validity::days(1))
        .expect("CA");
    let why = failure_of(
        "boot",
        ImageSabotage {
            ca_der: Some(foreign.cert_der().to_vec()),
            ..ImageSabotage::default()
        },
    )
    .await;
    assert!(
        why.starts_with("expected `mqtt: connected` after `time: synced` within"),
        "{why}"
    );
    assert!(
        why.contains("tls: handshake failed error=unknown-ca"),
        "{why}"
    );
}
