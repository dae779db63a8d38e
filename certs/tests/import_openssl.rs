//! `certs import` against the real openssl CLI: console-style downloads made by openssl,
//! and outputs byte-identical to the tutorial's `openssl ... -outform DER` commands.

mod common;

use common::Work;

const CERT: &str = "abcd1234-certificate.pem.crt.txt";
const KEY: &str = "abcd1234-private.pem.key";
const CA: &str = "AmazonRootCA1.pem";

/// Make console-style downloads around a key openssl already wrote to `KEY`, import
/// them, and compare with openssl's own DER conversions.
fn import_and_compare(work: &Work, key_to_der: &[&str]) {
    work.openssl_root_ca(CA);
    work.openssl_device_cert(KEY, CA, CERT, "365");

    let stdout = work.certs_ok(&[
        "import", "--cert", CERT, "--key", KEY, "--ca", CA, "--out", "device",
    ]);
    assert!(stdout.contains("device/cert.der"), "{stdout}");

    let cert = work.openssl(&["x509", "-in", CERT, "-outform", "DER"]);
    let ca = work.openssl(&["x509", "-in", CA, "-outform", "DER"]);
    let mut key_args = key_to_der.to_vec();
    key_args.extend(["-in", KEY, "-outform", "DER"]);
    let key = work.openssl(&key_args);

    assert_eq!(
        work.read("device/cert.der"),
        cert,
        "cert.der differs from openssl's"
    );
    assert_eq!(
        work.read("device/ca.der"),
        ca,
        "ca.der differs from openssl's"
    );
    assert_eq!(
        work.read("device/private.der"),
        key,
        "private.der differs from openssl's"
    );
    assert_private_mode(work, "device/private.der");
}

fn assert_private_mode(work: &Work, name: &str) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(work.path(name))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{name} has mode {mode:o}");
}

#[test]
fn rsa_pkcs8_key_matches_openssl_rsa_traditional_der() {
    let work = Work::new();
    // `openssl genpkey` writes PKCS#8 (`BEGIN PRIVATE KEY`), as the console does today.
    work.openssl_rsa2048_key(KEY);
    assert!(
        String::from_utf8(work.read(KEY))
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    import_and_compare(&work, &["rsa", "-traditional"]);
}

#[test]
fn rsa_pkcs1_key_matches_openssl_rsa_traditional_der() {
    let work = Work::new();
    work.openssl_rsa2048_key("k8.pem");
    work.openssl(&["rsa", "-in", "k8.pem", "-traditional", "-out", KEY]);
    assert!(
        String::from_utf8(work.read(KEY))
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    import_and_compare(&work, &["rsa", "-traditional"]);
}

#[test]
fn ec_pkcs8_key_matches_openssl_ec_der() {
    let work = Work::new();
    work.openssl_p256_key(KEY);
    assert!(
        String::from_utf8(work.read(KEY))
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    import_and_compare(&work, &["ec"]);
    // SEC1 with curve and public key: 121 bytes for P-256, as the device log expects.
    assert_eq!(work.read("device/private.der").len(), 121);
}

#[test]
fn ec_sec1_key_with_parameters_block_matches_openssl_ec_der() {
    let work = Work::new();
    // Without -noout, openssl writes an `EC PARAMETERS` block ahead of the key.
    work.openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-out", KEY]);
    let text = String::from_utf8(work.read(KEY)).unwrap();
    assert!(text.contains("BEGIN EC PARAMETERS") && text.contains("BEGIN EC PRIVATE KEY"));
    import_and_compare(&work, &["ec"]);
}

/// OpenSSL 3's `openssl rsa -outform DER` (without `-traditional`) writes PKCS#8; its
/// inner key is exactly our PKCS#1 output, so the two forms carry the same key.
#[test]
fn openssl3_default_rsa_der_wraps_the_same_pkcs1_key() {
    let work = Work::new();
    work.openssl_rsa2048_key(KEY);
    work.openssl_root_ca(CA);
    work.openssl_device_cert(KEY, CA, CERT, "365");
    work.certs_ok(&[
        "import", "--cert", CERT, "--key", KEY, "--ca", CA, "--out", "device",
    ]);
    let pkcs8 = work.openssl(&["rsa", "-in", KEY, "-outform", "DER"]);
    let ours = work.read("device/private.der");
    let pkcs1_from_pkcs8 = {
        let key = certs::keys::PrivateKey::from_pkcs8_der(&pkcs8).unwrap();
        key.to_traditional_der().to_vec()
    };
    assert_eq!(pkcs1_from_pkcs8, ours);
    assert!(pkcs8.windows(ours.len()).any(|w| w == ours.as_slice()));
}

#[test]
fn der_inputs_are_accepted_and_passed_through() {
    let work = Work::new();
    work.openssl_p256_key(KEY);
    work.openssl_root_ca(CA);
    work.openssl_device_cert(KEY, CA, CERT, "365");
    work.write(
        "cert.der",
        work.openssl(&["x509", "-in", CERT, "-outform", "DER"]),
    );
    work.write(
        "key.der",
        work.openssl(&["pkey", "-in", KEY, "-outform", "DER"]),
    );
    work.write(
        "ca.der",
        work.openssl(&["x509", "-in", CA, "-outform", "DER"]),
    );
    work.certs_ok(&[
        "import", "--cert", "cert.der", "--key", "key.der", "--ca", "ca.der", "--out", "out",
    ]);
    assert_eq!(work.read("out/cert.der"), work.read("cert.der"));
    assert_eq!(work.read("out/ca.der"), work.read("ca.der"));
    assert_eq!(
        work.read("out/private.der"),
        work.openssl(&["ec", "-in", KEY, "-outform", "DER"])
    );
}

#[test]
fn crlf_pem_from_windows_downloads_is_accepted() {
    let work = Work::new();
    work.openssl_p256_key(KEY);
    work.openssl_root_ca(CA);
    work.openssl_device_cert(KEY, CA, CERT, "365");
    let crlf = String::from_utf8(work.read(CERT))
        .unwrap()
        .replace('\n', "\r\n");
    work.write("crlf.pem.crt.txt", crlf);
    work.certs_ok(&[
        "import",
        "--cert",
        "crlf.pem.crt.txt",
        "--key",
        KEY,
        "--ca",
        CA,
        "--out",
        "out",
    ]);
    assert_eq!(
        work.read("out/cert.der"),
        work.openssl(&["x509", "-in", CERT, "-outform", "DER"])
    );
}

#[test]
fn self_signed_v1_root_is_accepted_as_ca() {
    let work = Work::new();
    work.openssl_p256_key(KEY);
    work.openssl_root_ca(CA);
    work.openssl_device_cert(KEY, CA, CERT, "365");
    // `openssl x509 -req` without extensions signs a v1 certificate: use it as a root.
    work.openssl(&[
        "req",
        "-new",
        "-key",
        "rootca.key",
        "-subj",
        "/CN=Old v1 root",
        "-out",
        "v1.csr",
    ]);
    work.openssl(&[
        "x509",
        "-req",
        "-in",
        "v1.csr",
        "-signkey",
        "rootca.key",
        "-days",
        "365",
        "-out",
        "v1root.pem",
    ]);
    let text =
        String::from_utf8(work.openssl(&["x509", "-in", "v1root.pem", "-noout", "-text"])).unwrap();
    assert!(text.contains("Version: 1"), "{text}");
    work.certs_ok(&[
        "import",
        "--cert",
        CERT,
        "--key",
        KEY,
        "--ca",
        "v1root.pem",
        "--out",
        "out",
    ]);
}

#[test]
fn expiring_soon_is_a_warning_not_an_error() {
    let work = Work::new();
    work.openssl_p256_key(KEY);
    work.openssl_root_ca(CA);
    work.openssl_device_cert(KEY, CA, CERT, "10");
    let out = work.certs(&[
        "import", "--cert", CERT, "--key", KEY, "--ca", CA, "--out", "out",
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning:") && stderr.contains(CERT) && stderr.contains("expires in"),
        "{stderr}"
    );
}
