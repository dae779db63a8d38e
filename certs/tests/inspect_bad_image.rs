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
    let _ = GOOD_CONFIG;
}
