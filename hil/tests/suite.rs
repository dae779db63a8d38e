//! The suite end to end: the real `virtual-device` binaries, each behind its own
//! pseudo-terminal, against one in-process mock broker. Every scenario must pass, and the
//! normalised serial logs of boot, cadence and inbound are `insta` snapshots
//! (`cargo insta review` accepts a change).
//!
//! One test runs the whole suite, so the scenarios share a broker and run concurrently as
//! `hil run` runs them (about 55 s: dead-link's 30 s keep-alive is the longest of the
//! concurrent ones, then the broker outage and the bad certificates one at a time).

mod common;

use std::sync::Arc;

use hil::normalise::normalise;
use hil::rig::Rig;
use hil::runner::{ScenarioReport, run_suite};
use hil::scenarios;

fn report<'a>(reports: &'a [ScenarioReport], name: &str) -> &'a ScenarioReport {
    reports
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no report for {name}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_suite_passes_on_the_virtual_device_and_its_logs_match_the_snapshots() {
    let rig = Arc::new(Rig::start(common::virtual_device()).await.expect("rig"));
    let reports = run_suite(Arc::clone(&rig), scenarios::all(), |_| {}).await;
    // Every behaviour of DESIGN.md section 5 is in the suite, and every scenario reported.
    let names: Vec<&str> = reports.iter().map(|r| r.name).collect();
    for name in [
        "boot",
        "cadence",
        "inbound",
        "reconnect-after-restart",
        "tls-untrusted-ca",
        "tls-wrong-name",
        "tls-expired",
        "tls-large-chain",
        "backoff",
        "qos1-retry",
        "dead-link",
        "sntp-silent",
        "sntp-bad-time",
        "duplicate-id",
    ] {
        assert!(names.contains(&name), "{name} did not run: {names:?}");
    }
    assert_eq!(names.len(), scenarios::all().len(), "{names:?}");

    let failures: Vec<String> = reports
        .iter()
        .filter_map(|r| {
            r.result
                .as_ref()
                .err()
                .map(|why| format!("{}: {why}", r.name))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    for r in &reports {
        println!("{}: {}", r.name, r.result.as_deref().unwrap_or_default());
    }

    // The lines each scenario read, up to the event it ended on: boot to SUBACK, cadence
    // to the eleventh publish, inbound to its last payload.
    for name in ["boot", "cadence", "inbound"] {
        insta::assert_snapshot!(name, normalise(&report(&reports, name).log));
    }
}
