//! `hil run --target mosquitto|rumqttd`: the rig starts a real mosquitto (a mutual-TLS
//! listener) or rumqttd (`verify-client-cert`, in a child process) on free ports with the
//! rig's test PKI, the device's image points there, and the observer identity watches
//! and injects. Boot, cadence, inbound and a restart of the broker's process pass; every
//! scenario needing the mock broker's faults is skipped, saying so.

mod common;

use std::process::Command;

#[test]
fn boot_cadence_inbound_and_a_restart_pass_against_mosquitto_and_fault_scenarios_are_skipped() {
    passes_the_non_fault_scenarios("mosquitto");
}

#[cfg(feature = "rumqttd")]
#[test]
fn boot_cadence_inbound_and_a_restart_pass_against_rumqttd_and_fault_scenarios_are_skipped() {
    passes_the_non_fault_scenarios("rumqttd");
}

#[cfg(not(feature = "rumqttd"))]
#[test]
fn rumqttd_without_the_feature_says_how_to_build_it() {
    common::virtual_device();
    let out = Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["run", "--target", "rumqttd", "--scenario", "boot"])
        .output()
        .expect("run hil");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--target rumqttd: this hil was built without rumqttd: build it with `cargo build -p hil --features rumqttd`"),
        "{stderr}"
    );
}

/// `hil run --target BROKER`: boot, cadence, inbound and reconnect-after-restart pass,
/// every fault scenario is skipped with the reason.
fn passes_the_non_fault_scenarios(broker: &str) {
    common::virtual_device();
    let out = Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["run", "--target", broker])
        .output()
        .expect("run hil");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hil failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("hil: {broker} on 127.0.0.1:")),
        "{stderr}"
    );
    for name in ["boot", "cadence", "inbound", "reconnect-after-restart"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.contains(" pass ")),
            "{name} did not pass:\n{stdout}"
        );
    }
    let faulty: Vec<&str> = hil::scenarios::all()
        .iter()
        .filter(|s| s.needs_broker_faults)
        .map(|s| s.name)
        .collect();
    for name in &faulty {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{name} "))
                && l.contains(&format!(
                    "skip    needs the mock broker's faults, which {broker} does not offer"
                ))),
            "{name} not skipped with the reason:\n{stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("4 passed, 0 failed, {} skipped", faulty.len())),
        "{stdout}"
    );
}

#[test]
fn a_third_party_broker_with_a_given_image_is_refused_naming_the_flags() {
    for broker in ["mosquitto", "rumqttd"] {
        let out = Command::new(env!("CARGO_BIN_EXE_hil"))
            .args(["run", "--target", broker, "--pki", "certs/dev"])
            .output()
            .expect("run hil");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "--flash, --pki: --target {broker} makes its own test PKI and image"
            )),
            "{stderr}"
        );
    }
}

#[cfg(feature = "rumqttd")]
#[test]
fn qualify_runs_against_rumqttd_and_names_the_cases_it_cannot_host() {
    common::virtual_device();
    let out = Command::new(env!("CARGO_BIN_EXE_hil"))
        .args([
            "qualify",
            "--target",
            "rumqttd",
            "--case",
            "MQTT_Connect",
            "--case",
            "MQTT_Subscribe",
            "--case",
            "MQTT_Client_Puback_QoS1",
        ])
        .output()
        .expect("run hil");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hil qualify failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for case in ["MQTT_Connect ", "MQTT_Subscribe "] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(case) && l.contains(" pass ")),
            "{case}did not pass:\n{stdout}"
        );
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("MQTT_Client_Puback_QoS1 ")
                && l.contains("not run")
                && l.contains("needs the mock broker's faults, which rumqttd does not offer")),
        "{stdout}"
    );
    assert!(
        stdout.contains("3 case(s): 2 pass, 0 pass with warnings, 0 fail, 1 not run"),
        "{stdout}"
    );
}
