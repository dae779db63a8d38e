//! A CA loaded from disk issues certificates that chain to the file it was loaded from
//! (checked with openssl), and a bad folder is refused naming the file at fault.

mod common;

use std::path::Path;

use certs::pki::{CertificateAuthority, InitOptions, KeyAlgorithm, Pki, Validity};
use common::Work;

/// Issue a client and a server certificate from `ca`, write them, and have openssl
/// verify both against `ca_file` with the matching purpose (`strict`: RFC 5280 checks
/// too, which `openssl req`'s own CA certificates do not pass: no keyUsage).
fn assert_issues_chaining_certs(
    work: &Work,
    ca: &CertificateAuthority,
    ca_file: &str,
    strict: bool,
) {
    let client = ca
        .issue_client("hil-boot", KeyAlgorithm::EcP256, Validity::days(2))
        .unwrap();
    let server = ca
        .issue_server(
            &["localhost", "127.0.0.1"],
            KeyAlgorithm::EcP256,
            Validity::days(2),
        )
        .unwrap();
    work.write("client.pem", client.cert_pem());
    work.write("server.pem", server.cert_pem());
    for (file, purpose) in [("client.pem", "sslclient"), ("server.pem", "sslserver")] {
        let mut args = vec!["verify", "-CAfile", ca_file, "-purpose", purpose, file];
        if strict {
            args.insert(1, "-x509_strict");
        }
        let out = work.openssl(&args);
        assert!(
            String::from_utf8_lossy(&out).contains(&format!("{file}: OK")),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
}

#[test]
fn a_certs_init_folder_ca_issues_certificates_that_chain_to_its_ca_pem() {
    let work = Work::new();
    work.certs_ok(&["init", "--out", "pki", "--thing", "ESPthing"]);
    let ca = CertificateAuthority::load_dir(&work.path("pki")).unwrap();
    assert_eq!(ca.cert_der(), &work.read("pki/ca.der")[..]);
    assert_issues_chaining_certs(&work, &ca, "pki/ca.pem", true);
}

#[test]
fn an_rsa_ca_written_by_the_library_loads_and_issues() {
    let work = Work::new();
    let pki = Pki::generate(&InitOptions {
        key: KeyAlgorithm::Rsa2048,
        ..InitOptions::default()
    })
    .unwrap();
    for file in pki.files() {
        work.write(&format!("pki/{}", file.name.display()), &file.contents);
    }
    let ca = CertificateAuthority::load_dir(&work.path("pki")).unwrap();
    assert_issues_chaining_certs(&work, &ca, "pki/ca.pem", true);
}

#[test]
fn an_openssl_made_ca_with_printable_strings_and_sha1_key_ids_issues_chaining_certs() {
    let work = Work::new();
    // C= is a PrintableString and the subject key identifier a SHA-1 hash here: the
    // issued certificates must repeat both exactly.
    work.openssl_root_ca("root.pem");
    let ca = CertificateAuthority::load(&work.path("root.pem"), &work.path("rootca.key")).unwrap();
    assert_issues_chaining_certs(&work, &ca, "root.pem", false);
}

fn load_error(dir: &Path) -> String {
    CertificateAuthority::load_dir(dir)
        .expect_err("a bad CA folder was accepted")
        .to_string()
}

#[test]
fn a_bad_folder_is_refused_naming_the_file_at_fault() {
    let work = Work::new();
    work.certs_ok(&["init", "--out", "pki"]);
    let dir = work.path("pki");
    let ca_pem = dir.join("ca.pem").display().to_string();
    let ca_key = dir.join("ca.key.pem").display().to_string();

    let missing = work.path("nowhere");
    let why = load_error(&missing);
    assert!(
        why.contains("nowhere") && why.contains("no such file"),
        "{why}"
    );

    // A key that belongs to another certificate.
    std::fs::copy(dir.join("ca.key.pem"), work.path("ca.key.saved")).unwrap();
    std::fs::copy(dir.join("device.key.pem"), dir.join("ca.key.pem")).unwrap();
    let why = load_error(&dir);
    assert!(
        why.starts_with(&ca_key) && why.contains("does not match the certificate"),
        "{why}"
    );
    std::fs::copy(work.path("ca.key.saved"), dir.join("ca.key.pem")).unwrap();

    // A leaf where the CA should be.
    std::fs::copy(dir.join("ca.pem"), work.path("ca.saved")).unwrap();
    std::fs::copy(dir.join("device.pem"), dir.join("ca.pem")).unwrap();
    let why = load_error(&dir);
    assert!(
        why.starts_with(&ca_pem) && why.contains("not a CA certificate"),
        "{why}"
    );
    std::fs::copy(work.path("ca.saved"), dir.join("ca.pem")).unwrap();

    // No key at all.
    std::fs::remove_file(dir.join("ca.key.pem")).unwrap();
    let why = load_error(&dir);
    assert!(
        why.starts_with(&ca_key) && why.contains("no such file"),
        "{why}"
    );

    // A certificate file that holds a key.
    std::fs::copy(dir.join("device.key.pem"), dir.join("ca.pem")).unwrap();
    std::fs::copy(work.path("ca.key.saved"), dir.join("ca.key.pem")).unwrap();
    let why = load_error(&dir);
    assert!(
        why.starts_with(&ca_pem) && why.contains("expected a certificate"),
        "{why}"
    );
}
