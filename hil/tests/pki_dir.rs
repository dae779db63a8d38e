//! `hil run --pki DIR` without `--flash`: every device gets an identity from the CA of the
//! `certs init` folder DIR and the broker presents DIR's server certificate.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use certs::pki::{InitOptions, KeyAlgorithm, Pki};

fn write_pki(dir: &Path, pki: &Pki) {
    for file in pki.files() {
        let path = dir.join(&file.name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &file.contents).unwrap();
    }
}

fn hil_run(dir: &Path, scenarios: &[&str]) -> Output {
    common::virtual_device();
    let mut command = Command::new(env!("CARGO_BIN_EXE_hil"));
    command.args(["run", "--pki"]).arg(dir);
    for name in scenarios {
        command.args(["--scenario", name]);
    }
    command.output().expect("run hil")
}

fn summary_row<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"))
}

#[test]
fn devices_get_identities_from_the_folder_ca_and_the_broker_its_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    write_pki(
        dir.path(),
        &Pki::generate(&InitOptions::default()).expect("pki"),
    );
    // boot: the device trusts the folder's CA and the broker the device's identity;
    // tls-wrong-name: a server certificate issued by the loaded CA is refused for its
    // name, not its issuer.
    let out = hil_run(dir.path(), &["boot", "tls-wrong-name"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(summary_row(&stdout, "boot").contains(" pass "), "{stdout}");
    assert!(
        summary_row(&stdout, "tls-wrong-name").contains(" pass "),
        "{stdout}"
    );
}

#[test]
fn the_broker_presents_the_folder_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    write_pki(
        dir.path(),
        &Pki::generate(&InitOptions::default()).expect("pki"),
    );
    // Swap in a server certificate from another CA: if the broker serves the folder's
    // server certificate, the devices (trusting the folder's CA) refuse it.
    let (foreign, _) =
        certs::pki::server_cert_untrusted(&["localhost", "127.0.0.1"], KeyAlgorithm::EcP256)
            .expect("foreign server certificate");
    std::fs::write(dir.path().join("server.pem"), foreign.cert_pem()).unwrap();
    std::fs::write(
        dir.path().join("server.key.pem"),
        foreign.key_pem().as_bytes(),
    )
    .unwrap();
    let out = hil_run(dir.path(), &["boot"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let row = summary_row(&stdout, "boot");
    assert!(
        row.contains("FAIL") && row.contains("expected `mqtt: connected`"),
        "{stdout}"
    );
}

#[test]
fn a_folder_without_the_ca_key_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_pki(
        dir.path(),
        &Pki::generate(&InitOptions::default()).expect("pki"),
    );
    std::fs::remove_file(dir.path().join("ca.key.pem")).unwrap();
    let out = hil_run(dir.path(), &["boot"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let expected = format!(
        "hil: rig error: --pki {}: {}: no such file",
        dir.path().display(),
        dir.path().join("ca.key.pem").display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}
