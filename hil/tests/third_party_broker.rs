//! `hil run --target mosquitto`: the rig starts a real mosquitto with a mutual-TLS
//! listener on a free port and the rig's test PKI, the device's image points there, and
//! the observer identity watches and injects. Boot, cadence, inbound and a restart of the
//! mosquitto process pass; every scenario needing the mock broker's faults is skipped,
//! saying so.

mod common;

use std::process::Command;

#[test]
fn boot_cadence_inbound_and_a_restart_pass_against_mosquitto_and_fault_scenarios_are_skipped() {
    common::virtual_device();
    let out = Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["run", "--target", "mosquitto"])
        .output()
        .expect("run hil");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hil failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.contains("hil: mosquitto on 127.0.0.1:"), "{stderr}");
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
                && l.contains(
                    "skip    needs the mock broker's faults, which mosquitto does not offer"
                )),
            "{name} not skipped with the reason:\n{stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("4 passed, 0 failed, {} skipped", faulty.len())),
        "{stdout}"
    );
}

#[test]
fn mosquitto_with_a_given_image_is_refused_naming_the_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["run", "--target", "mosquitto", "--pki", "certs/dev"])
        .output()
        .expect("run hil");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--flash, --pki: --target mosquitto makes its own test PKI and image"),
        "{stderr}"
    );
}
