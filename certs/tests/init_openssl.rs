//! `certs init` output checked by the real openssl CLI.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::Work;

fn text(work: &Work, cert: &str) -> String {
    String::from_utf8(work.openssl(&["x509", "-in", cert, "-noout", "-text"])).unwrap()
}

fn subject(work: &Work, cert: &str) -> String {
    String::from_utf8(work.openssl(&[
        "x509", "-in", cert, "-noout", "-subject", "-nameopt", "RFC2253",
    ]))
    .unwrap()
    .trim()
    .to_string()
}

const LAYOUT: &[&str] = &[
    "ca.der",
    "ca.key.der",
    "ca.key.pem",
    "ca.pem",
    "device.der",
    "device.key.der",
    "device.key.pem",
    "device.pem",
    "device/ca.der",
    "device/cert.der",
    "device/cert.pem",
    "device/private.der",
    "device/private.pem",
    "observer-policy.json",
    "observer.der",
    "observer.key.der",
    "observer.key.pem",
    "observer.pem",
    "policy.json",
    "server.der",
    "server.key.der",
    "server.key.pem",
    "server.pem",
];

#[test]
fn default_pki_verifies_with_openssl() {
    let work = Work::new();
    let stdout = work.certs_ok(&["init", "--out", "pki"]);
    assert!(stdout.contains("pki/"), "{stdout}");
    assert_eq!(common::list_files(&work.path("pki")), LAYOUT);

    let verify = work.openssl(&[
        "verify",
        "-CAfile",
        "pki/ca.pem",
        "pki/server.pem",
        "pki/device.pem",
        "pki/observer.pem",
    ]);
    let verify = String::from_utf8(verify).unwrap();
    assert_eq!(verify.matches(": OK").count(), 3, "{verify}");
    // The leaves are usable for their purpose, not just well signed.
    work.openssl(&[
        "verify",
        "-CAfile",
        "pki/ca.pem",
        "-purpose",
        "sslserver",
        "pki/server.pem",
    ]);
    work.openssl(&[
        "verify",
        "-CAfile",
        "pki/ca.pem",
        "-purpose",
        "sslclient",
        "pki/device.pem",
    ]);

    let server = text(&work, "pki/server.pem");
    assert!(
        server.contains("DNS:localhost") && server.contains("IP Address:127.0.0.1"),
        "{server}"
    );
    assert!(server.contains("Public-Key: (256 bit)"), "{server}");

    // CN = thing and nothing else: an O= makes rumqttd rewrite the client id.
    assert_eq!(subject(&work, "pki/device.pem"), "subject=CN=ESPthing");
    assert_eq!(subject(&work, "pki/observer.pem"), "subject=CN=observer");

    // The device folder holds the same identity in the device's form.
    assert_eq!(
        work.read("pki/device/cert.der"),
        work.read("pki/device.der")
    );
    assert_eq!(work.read("pki/device/ca.der"), work.read("pki/ca.der"));
    assert_eq!(
        work.read("pki/device/private.der"),
        work.openssl(&["ec", "-in", "pki/device.key.pem", "-outform", "DER"])
    );
    // Each key belongs to its certificate.
    for who in ["ca", "server", "device", "observer"] {
        let from_key = work.openssl(&["pkey", "-in", &format!("pki/{who}.key.pem"), "-pubout"]);
        let from_cert = work.openssl(&[
            "x509",
            "-in",
            &format!("pki/{who}.pem"),
            "-noout",
            "-pubkey",
        ]);
        assert_eq!(
            from_key, from_cert,
            "{who} key does not match its certificate"
        );
    }
}

#[test]
fn private_keys_are_0600_and_certificates_0644() {
    let work = Work::new();
    work.certs_ok(&["init", "--out", "pki"]);
    for name in LAYOUT {
        let mode = std::fs::metadata(work.path(&format!("pki/{name}")))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        let secret = name.contains(".key.") || name.contains("private");
        assert_eq!(mode, if secret { 0o600 } else { 0o644 }, "{name}: {mode:o}");
    }
}

#[test]
fn options_thing_endpoint_sans_and_days() {
    let work = Work::new();
    work.certs_ok(&[
        "init",
        "--out",
        "pki",
        "--thing",
        "bench-thing-7",
        "--endpoint",
        "broker.test",
        "--san",
        "10.1.2.3",
        "--san",
        "mock.internal",
        "--san",
        "::1",
        "--days",
        "10",
    ]);
    let server = text(&work, "pki/server.pem");
    for san in [
        "DNS:broker.test",
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:10.1.2.3",
        "DNS:mock.internal",
        "IP Address:0:0:0:0:0:0:0:1",
    ] {
        assert!(server.contains(san), "missing {san}: {server}");
    }
    assert_eq!(subject(&work, "pki/server.pem"), "subject=CN=broker.test");
    assert_eq!(subject(&work, "pki/device.pem"), "subject=CN=bench-thing-7");
    // 10 days from now: valid in 9 days, not in 11.
    let check = |secs: &str| {
        work.openssl_raw(&["x509", "-in", "pki/device.pem", "-noout", "-checkend", secs])
            .status
            .success()
    };
    assert!(check(&(9 * 86400).to_string()));
    assert!(!check(&(11 * 86400).to_string()));
}

#[test]
fn rsa_2048_pki_is_rsa_throughout() {
    let work = Work::new();
    work.certs_ok(&["init", "--out", "pki", "--key", "rsa-2048"]);
    work.openssl(&[
        "verify",
        "-CAfile",
        "pki/ca.pem",
        "pki/server.pem",
        "pki/device.pem",
        "pki/observer.pem",
    ]);
    for who in ["ca", "server", "device", "observer"] {
        let t = text(&work, &format!("pki/{who}.pem"));
        assert!(
            t.contains("Public-Key: (2048 bit)") && t.contains("sha256WithRSAEncryption"),
            "{who}: {t}"
        );
    }
    assert_eq!(
        work.read("pki/device/private.der"),
        work.openssl(&[
            "rsa",
            "-in",
            "pki/device.key.pem",
            "-traditional",
            "-outform",
            "DER"
        ])
    );
}

#[test]
fn policy_grants_only_what_the_thing_needs() {
    let work = Work::new();
    work.certs_ok(&["init", "--out", "pki"]);
    let policy: serde_json::Value = serde_json::from_slice(&work.read("pki/policy.json")).unwrap();
    assert_eq!(policy["Version"], "2012-10-17");
    let statements = policy["Statement"].as_array().unwrap();
    let grants: Vec<(String, String)> = statements
        .iter()
        .map(|s| {
            assert_eq!(s["Effect"], "Allow");
            (
                s["Action"].as_str().unwrap().to_string(),
                s["Resource"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        grants,
        [
            (
                "iot:Connect",
                "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"
            ),
            ("iot:Publish", "arn:aws:iot:*:*:topic/outTopic"),
            ("iot:Subscribe", "arn:aws:iot:*:*:topicfilter/inTopic"),
            ("iot:Receive", "arn:aws:iot:*:*:topic/inTopic"),
        ]
        .map(|(a, r)| (a.to_string(), r.to_string()))
    );
    assert!(
        !String::from_utf8(work.read("pki/policy.json"))
            .unwrap()
            .contains("\"*\"")
    );
}

#[test]
fn force_overwrites_and_into_an_existing_directory() {
    let work = Work::new();
    work.write("pki/notes.txt", "keep me");
    work.certs_ok(&["init", "--out", "pki"]);
    let first = work.read("pki/ca.der");
    work.certs_ok(&["init", "--out", "pki", "--force"]);
    assert_ne!(
        work.read("pki/ca.der"),
        first,
        "--force should write a new CA"
    );
    assert_eq!(work.read("pki/notes.txt"), b"keep me");
    // No staging directory left behind.
    let mut expected: Vec<String> = LAYOUT.iter().map(|s| s.to_string()).collect();
    expected.push("notes.txt".into());
    expected.sort();
    assert_eq!(common::list_files(&work.path("pki")), expected);
}
