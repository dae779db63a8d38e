//! Every kind of bad input: exit status 2, one stderr line naming the file and the
//! problem, and nothing written.

mod common;

use certs::pki::{CertificateAuthority, KeyAlgorithm, Validity};
use common::{Work, assert_bad_input};

const CERT: &str = "abcd1234-certificate.pem.crt.txt";
const KEY: &str = "abcd1234-private.pem.key";
const CA: &str = "AmazonRootCA1.pem";

/// Console-style downloads with a P-256 key (fast to make).
fn downloads() -> Work {
    let work = Work::new();
    work.openssl_p256_key(KEY);
    work.openssl_root_ca(CA);
    work.openssl_device_cert(KEY, CA, CERT, "365");
    work
}

fn import(work: &Work, cert: &str, key: &str, ca: &str) -> std::process::Output {
    work.certs(&[
        "import", "--cert", cert, "--key", key, "--ca", ca, "--out", "out",
    ])
}

fn assert_nothing_written(work: &Work) {
    assert!(
        !work.path("out").exists(),
        "output directory was created: {:?}",
        common::list_files(&work.path("out"))
    );
}

#[test]
fn missing_file() {
    let work = downloads();
    let out = import(&work, "nope-certificate.pem.crt", KEY, CA);
    assert_bad_input(&out, &["nope-certificate.pem.crt", "no such file"]);
    assert_nothing_written(&work);
    let out = work.certs(&["inspect", "missing.pem"]);
    assert_bad_input(&out, &["missing.pem", "no such file"]);
}

#[test]
fn not_pem_or_der() {
    let work = downloads();
    work.write("garbage.txt", "this is not a certificate\n");
    assert_bad_input(
        &import(&work, "garbage.txt", KEY, CA),
        &["garbage.txt", "not PEM or DER"],
    );
    // A download cut short: BEGIN without END.
    let cert = String::from_utf8(work.read(CERT)).unwrap();
    work.write("truncated.pem.crt", &cert[..cert.len() / 2]);
    assert_bad_input(
        &import(&work, "truncated.pem.crt", KEY, CA),
        &["truncated.pem.crt", "not PEM or DER"],
    );
    // Well-formed PEM around bytes that are not a certificate.
    work.write(
        "bogus.pem",
        "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
    );
    assert_bad_input(
        &import(&work, "bogus.pem", KEY, CA),
        &["bogus.pem", "malformed certificate"],
    );
    assert_nothing_written(&work);
}

#[test]
fn wrong_kind_of_object() {
    let work = downloads();
    assert_bad_input(
        &import(&work, KEY, KEY, CA),
        &[KEY, "expected a certificate, found a private key"],
    );
    assert_bad_input(
        &import(&work, CERT, CERT, CA),
        &[CERT, "expected a private key, found a certificate"],
    );
    assert_nothing_written(&work);
}

#[test]
fn encrypted_keys_are_refused() {
    let work = downloads();
    work.openssl(&[
        "pkey",
        "-in",
        KEY,
        "-aes256",
        "-passout",
        "pass:secret",
        "-out",
        "pkcs8-enc.pem",
    ]);
    assert!(
        String::from_utf8(work.read("pkcs8-enc.pem"))
            .unwrap()
            .contains("ENCRYPTED PRIVATE KEY")
    );
    work.openssl(&[
        "ec",
        "-in",
        KEY,
        "-aes256",
        "-passout",
        "pass:secret",
        "-out",
        "trad-enc.pem",
    ]);
    assert!(
        String::from_utf8(work.read("trad-enc.pem"))
            .unwrap()
            .contains("Proc-Type: 4,ENCRYPTED")
    );
    work.openssl(&[
        "pkcs8",
        "-topk8",
        "-in",
        KEY,
        "-v2",
        "aes256",
        "-passout",
        "pass:secret",
        "-outform",
        "DER",
        "-out",
        "enc.der",
    ]);
    for key in ["pkcs8-enc.pem", "trad-enc.pem", "enc.der"] {
        assert_bad_input(
            &import(&work, CERT, key, CA),
            &[key, "encrypted private key"],
        );
        assert_bad_input(
            &work.certs(&["inspect", key]),
            &[key, "encrypted private key"],
        );
    }
    assert_nothing_written(&work);
}

#[test]
fn key_that_does_not_match_the_certificate() {
    let work = downloads();
    work.openssl_p256_key("other.key");
    assert_bad_input(
        &import(&work, CERT, "other.key", CA),
        &["other.key", "does not match the certificate", CERT],
    );
    assert_bad_input(
        &work.certs(&["inspect", "other.key", "--cert", CERT]),
        &["other.key", "does not match"],
    );
    assert_nothing_written(&work);
    // RSA key against an EC certificate: also a mismatch, not a crash.
    work.openssl_rsa2048_key("rsa.key");
    assert_bad_input(
        &import(&work, CERT, "rsa.key", CA),
        &["rsa.key", "does not match"],
    );
}

/// Certificates with a chosen validity window, made by the library (openssl 3.0 cannot
/// back-date a certificate without a CA database).
fn with_validity(work: &Work, validity: Validity) {
    let ca =
        CertificateAuthority::root("Test CA", KeyAlgorithm::EcP256, Validity::days(30)).unwrap();
    let device = ca
        .issue_client("ESPthing", KeyAlgorithm::EcP256, validity)
        .unwrap();
    work.write("dated.pem.crt", device.cert_pem());
    work.write("dated.key", device.key_pem().as_bytes());
    work.write("dated-ca.pem", ca.cert_pem());
}

#[test]
fn expired_certificate() {
    let work = Work::new();
    with_validity(&work, Validity::expired());
    assert_bad_input(
        &import(&work, "dated.pem.crt", "dated.key", "dated-ca.pem"),
        &["dated.pem.crt", "certificate expired on"],
    );
    assert_bad_input(
        &work.certs(&["inspect", "dated.pem.crt"]),
        &["dated.pem.crt", "expired"],
    );
    assert_nothing_written(&work);
}

#[test]
fn not_yet_valid_certificate() {
    let work = Work::new();
    with_validity(&work, Validity::not_yet_valid());
    assert_bad_input(
        &import(&work, "dated.pem.crt", "dated.key", "dated-ca.pem"),
        &["dated.pem.crt", "not valid before"],
    );
    assert_nothing_written(&work);
}

#[test]
fn expired_ca() {
    let work = downloads();
    let ca =
        CertificateAuthority::root("Old CA", KeyAlgorithm::EcP256, Validity::expired()).unwrap();
    work.write("old-ca.pem", ca.cert_pem());
    assert_bad_input(
        &import(&work, CERT, KEY, "old-ca.pem"),
        &["old-ca.pem", "expired"],
    );
}

#[test]
fn unsupported_key_types() {
    let work = Work::new();
    work.openssl_root_ca(CA);
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "p384.key",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-out",
                "p384.key",
            ],
            "EC P-384",
        ),
        (
            "ed25519.key",
            &["genpkey", "-algorithm", "ED25519", "-out", "ed25519.key"],
            "Ed25519",
        ),
        (
            "rsa3072.key",
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:3072",
                "-out",
                "rsa3072.key",
            ],
            "RSA-3072",
        ),
    ];
    for (key, gen_args, name) in cases {
        work.openssl(gen_args);
        let cert = format!("{key}.crt");
        work.openssl_device_cert(key, CA, &cert, "365");
        assert_bad_input(
            &import(&work, &cert, key, CA),
            &[key, "unsupported key type", name],
        );
        assert_bad_input(
            &work.certs(&["inspect", key]),
            &[key, "unsupported key type", name],
        );
    }
    assert_nothing_written(&work);
}

#[test]
fn ca_that_is_not_a_ca() {
    let work = downloads();
    assert_bad_input(
        &import(&work, CERT, KEY, CERT),
        &[CERT, "not a CA certificate"],
    );
    assert_nothing_written(&work);
}

#[test]
fn ca_the_device_would_refuse_is_refused_at_import() {
    let work = downloads();
    work.openssl(&["x509", "-in", CA, "-outform", "DER", "-out", "ca.der"]);
    let mut der = work.read("ca.der");
    let last = der.len() - 1;
    der[last] ^= 0x01;
    work.write("damaged-ca.der", &der);
    let out = import(&work, CERT, KEY, "damaged-ca.der");
    assert_bad_input(
        &out,
        &["damaged-ca.der", "the device would refuse it", "damaged"],
    );
    assert_nothing_written(&work);
}

#[test]
fn bundle_where_one_certificate_is_expected() {
    let work = downloads();
    let bundle = [work.read(CA), work.read(CA)].concat();
    work.write("bundle.pem", bundle);
    assert_bad_input(
        &import(&work, CERT, KEY, "bundle.pem"),
        &["bundle.pem", "holds 2 certificates"],
    );
}

#[test]
fn output_exists() {
    let work = downloads();
    work.certs_ok(&[
        "import", "--cert", CERT, "--key", KEY, "--ca", CA, "--out", "out",
    ]);
    let before = work.read("out/private.der");
    assert_bad_input(
        &import(&work, CERT, KEY, CA),
        &["out/cert.der", "output exists", "--force"],
    );
    work.certs_ok(&[
        "import", "--cert", CERT, "--key", KEY, "--ca", CA, "--out", "out", "--force",
    ]);
    assert_eq!(work.read("out/private.der"), before);

    work.certs_ok(&["init", "--out", "pki"]);
    let ca = work.read("pki/ca.pem");
    assert_bad_input(
        &work.certs(&["init", "--out", "pki"]),
        &["pki/", "output exists"],
    );
    assert_eq!(
        work.read("pki/ca.pem"),
        ca,
        "refused init must not touch the CA"
    );

    work.certs_ok(&["image", "--creds", "out", "--out", "flash.img"]);
    assert_bad_input(
        &work.certs(&["image", "--creds", "out", "--out", "flash.img"]),
        &["flash.img", "output exists"],
    );
    work.certs_ok(&["image", "--creds", "out", "--out", "flash.img", "--force"]);
}

#[test]
fn partial_existing_output_is_not_completed_without_force() {
    let work = Work::new();
    work.write("pki/server.pem", "someone else's file");
    assert_bad_input(
        &work.certs(&["init", "--out", "pki"]),
        &["pki/server.pem", "output exists"],
    );
    assert_eq!(common::list_files(&work.path("pki")), ["server.pem"]);
}

#[test]
fn image_too_small() {
    let work = downloads();
    work.certs_ok(&[
        "import", "--cert", CERT, "--key", KEY, "--ca", CA, "--out", "creds",
    ]);
    assert_bad_input(
        &work.certs(&[
            "image",
            "--creds",
            "creds",
            "--out",
            "flash.img",
            "--size",
            "8192",
        ]),
        &["flash.img", "image too small"],
    );
    assert_bad_input(
        &work.certs(&[
            "image",
            "--creds",
            "creds",
            "--out",
            "flash.img",
            "--size",
            "5000",
        ]),
        &["--size", "not a multiple of 4096"],
    );
    assert!(!work.path("flash.img").exists());
}

#[test]
fn image_config_errors_name_the_flag_or_field() {
    let work = downloads();
    work.certs_ok(&[
        "import", "--cert", CERT, "--key", KEY, "--ca", CA, "--out", "creds",
    ]);
    let image = |extra: &[&str]| {
        let mut args = vec!["image", "--creds", "creds", "--out", "flash.img"];
        args.extend_from_slice(extra);
        work.certs(&args)
    };
    assert_bad_input(
        &image(&["--pub-topic", "a/b/c/d/e/f/g/h/i"]),
        &["--pub-topic", "more than 7 '/'"],
    );
    assert_bad_input(
        &image(&["--pub-topic", "out/#"]),
        &["--pub-topic", "'+' or '#'"],
    );
    assert_bad_input(&image(&["--qos", "2"]), &["--qos", "between 0 and 1"]);
    // AWS's topic filter rules, checked before the device ever subscribes.
    assert_bad_input(
        &image(&["--sub-topic", "in/#/x"]),
        &["--sub-topic", "sub_topic", "'#' must be a whole last level"],
    );
    assert_bad_input(
        &image(&["--sub-topic", "in/a+"]),
        &["--sub-topic", "'+' a whole level"],
    );
    assert_bad_input(
        &image(&["--sub-topic", "$aws/rules/r"]),
        &["--sub-topic", "AWS IoT's"],
    );
    assert_bad_input(
        &image(&["--pub-topic", "$SYS/x"]),
        &["--pub-topic", "AWS IoT's"],
    );
    assert_bad_input(
        &image(&["--keepalive-s", "5"]),
        &["--keepalive-s", "between 30 and 1200"],
    );
    assert_bad_input(
        &image(&["--ntp-resync-s", "30"]),
        &["--ntp-resync-s", "ntp.resync_s", "between 60 and 86400"],
    );
    assert_bad_input(
        &image(&["--endpoint", "host:notaport"]),
        &["--endpoint", "invalid port"],
    );
    assert_bad_input(
        &image(&["--wifi-ssid", &"x".repeat(33)]),
        &["--wifi-ssid", "longer than 32"],
    );
    work.write(
        "device.json",
        r#"{"endpoint": {"host": "h"}, "colour": "blue"}"#,
    );
    assert_bad_input(
        &image(&["--config", "device.json"]),
        &["device.json", "unknown field `colour`"],
    );
    work.write(
        "device.json",
        r#"{"endpoint": {"host": "h"}, "period_ms": 5}"#,
    );
    assert_bad_input(
        &image(&["--config", "device.json"]),
        &["device.json", "period_ms"],
    );
    work.write(
        "device.json",
        r#"{"endpoint": {"host": "h", "port": 70000}, "keepalive_s": 70000}"#,
    );
    assert_bad_input(
        &image(&["--config", "device.json"]),
        &["device.json", "endpoint.port: must be between 1 and 65535"],
    );
    work.write("device.json", "{ not json");
    assert_bad_input(
        &image(&["--config", "device.json"]),
        &["device.json", "invalid JSON"],
    );
    assert!(!work.path("flash.img").exists());
}

#[test]
fn image_creds_checked_like_import() {
    let work = downloads();
    assert_bad_input(
        &work.certs(&["image", "--creds", "nowhere", "--out", "flash.img"]),
        &["nowhere", "no such file"],
    );
    work.certs_ok(&[
        "import", "--cert", CERT, "--key", KEY, "--ca", CA, "--out", "creds",
    ]);
    work.openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-outform",
        "DER",
        "-out",
        "creds/private.der",
    ]);
    assert_bad_input(
        &work.certs(&["image", "--creds", "creds", "--out", "flash.img"]),
        &["creds/private.der", "does not match"],
    );
    assert!(!work.path("flash.img").exists());
}

#[test]
fn init_argument_errors() {
    let work = Work::new();
    assert_bad_input(
        &work.certs(&["init", "--out", "pki", "--days", "0"]),
        &["--days"],
    );
    assert_bad_input(
        &work.certs(&["init", "--out", "pki", "--thing", &"t".repeat(65)]),
        &["--thing", "longer than 64"],
    );
    assert!(!work.path("pki").exists());
}
