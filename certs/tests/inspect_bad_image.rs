//! `certs inspect` on images whose config or credentials the device would refuse: it
//! names the same file, field and rule the device's boot log does.

mod common;

use common::{Work, assert_bad_input};

/// `certs init` output in `pki/`, its three device files read back.
fn pki(work: &Work) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    work.certs_ok(&["init", "--out", "pki"]);
    (
        work.read("pki/device/cert.der"),
        work.read("pki/device/private.der"),
        work.read("pki/device/ca.der"),
    )
}

const GOOD_CONFIG: &str = r#"{"endpoint":{"host":"localhost"},"client_id":"ESPthing"}"#;

/// Write an image holding exactly `files` as `name`.
fn image(work: &Work, name: &str, files: &[(&str, &[u8])]) {
    let bytes = certs::image::build_image_files(files, 65536).expect("image builds");
    work.write(name, bytes);
}

#[test]
fn config_errors_name_the_field_and_rule() {
    let work = Work::new();
    let (cert, key, ca) = pki(&work);
    let cases: &[(&str, &str)] = &[
        (
            r#"{"endpoint":{"host":"h","port":70000},"client_id":"c"}"#,
            "endpoint.port: must be between 1 and 65535",
        ),
        (
            r#"{"endpoint":{"host":"h"}}"#,
            "client_id: required field missing",
        ),
        (
            r#"{"endpoint":{"host":"h"},"client_id":"c","period_ms":-2000}"#,
            "period_ms: must be between 100 and 3600000",
        ),
        (
            r#"{"endpoint":{"host":"h"},"client_id":"c","sub_topic":"in/#/x"}"#,
            "sub_topic: '#' must be a whole last level",
        ),
    ];
    for (json, expected) in cases {
        image(
            &work,
            "flash.img",
            &[
                ("/cert.der", &cert),
                ("/private.der", &key),
                ("/ca.der", &ca),
                ("/config.json", json.as_bytes()),
            ],
        );
        assert_bad_input(
            &work.certs(&["inspect", "flash.img"]),
            &["flash.img", "/config.json", expected],
        );
    }
}

#[test]
fn client_id_over_the_device_limit_is_named() {
    let work = Work::new();
    let (cert, key, ca) = pki(&work);
    let json = format!(
        r#"{{"endpoint":{{"host":"h"}},"client_id":"{}"}}"#,
        "x".repeat(200)
    );
    image(
        &work,
        "flash.img",
        &[
            ("/cert.der", &cert),
            ("/private.der", &key),
            ("/ca.der", &ca),
            ("/config.json", json.as_bytes()),
        ],
    );
    assert_bad_input(
        &work.certs(&["inspect", "flash.img"]),
        &["flash.img", "client_id: longer than 64 bytes"],
    );
}

/// Inspect an image with these three credential files and a good config.
fn inspect_creds(work: &Work, cert: &[u8], key: &[u8], ca: &[u8]) -> std::process::Output {
    image(
        work,
        "flash.img",
        &[
            ("/cert.der", cert),
            ("/private.der", key),
            ("/ca.der", ca),
            ("/config.json", GOOD_CONFIG.as_bytes()),
        ],
    );
    work.certs(&["inspect", "flash.img"])
}

#[test]
fn damaged_credentials_are_named_as_the_device_names_them() {
    let work = Work::new();
    let (cert, key, ca) = pki(&work);
    assert!(inspect_creds(&work, &cert, &key, &ca).status.success());

    // A flipped byte in the CA's signature: x509 parsers still read it ("CA: yes").
    let mut flipped = ca.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    let out = inspect_creds(&work, &cert, &key, &flipped);
    assert_bad_input(
        &out,
        &["flash.img", "/ca.der", "damaged", "error=bad-signature"],
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("CA:       yes"),
        "a damaged CA is described as a CA"
    );

    assert_bad_input(
        &inspect_creds(&work, &cert, &[0x5A; 121], &ca),
        &[
            "flash.img",
            "/private.der",
            "not a DER private key",
            "error=malformed",
        ],
    );
    assert_bad_input(
        &inspect_creds(&work, b"not a certificate", &key, &ca),
        &["flash.img", "/cert.der", "error=malformed"],
    );
    assert_bad_input(
        &inspect_creds(&work, &cert, &key, &cert),
        &["flash.img", "/ca.der", "error=not-a-ca"],
    );
}

#[test]
fn a_pem_key_inside_an_image_does_not_make_the_image_pem() {
    let work = Work::new();
    let (cert, _, ca) = pki(&work);
    let pem = work.read("pki/device/private.pem");
    assert!(pem.starts_with(b"-----BEGIN"));
    assert_bad_input(
        &inspect_creds(&work, &cert, &pem, &ca),
        &[
            "flash.img",
            "/private.der",
            "PEM text where DER is expected",
            "-outform der",
        ],
    );
}
