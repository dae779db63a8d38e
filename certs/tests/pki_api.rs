//! The library's PKI helpers the rig reuses, checked with openssl.

mod common;

use certs::pki::{self, CertificateAuthority, KeyAlgorithm, Validity};
use common::Work;

#[test]
fn aws_like_chain_verifies_root_intermediate_leaf() {
    let work = Work::new();
    let chain = pki::aws_like_chain(
        &[
            "abc123-ats.iot.us-east-1.amazonaws.com",
            "*.iot.us-east-1.amazonaws.com",
        ],
        Validity::days(30),
    )
    .unwrap();
    work.write("root.pem", chain.root.cert_pem());
    work.write("intermediate.pem", chain.intermediate.cert_pem());
    work.write("leaf.pem", chain.server.cert_pem());
    work.write("fullchain.pem", chain.server_chain_pem());
    assert_eq!(chain.server_chain_der().len(), 2);
    work.openssl(&[
        "verify",
        "-CAfile",
        "root.pem",
        "-untrusted",
        "intermediate.pem",
        "-purpose",
        "sslserver",
        "leaf.pem",
    ]);
    // Without the intermediate the leaf does not verify: it really is a three-level chain.
    assert!(
        !work
            .openssl_raw(&["verify", "-CAfile", "root.pem", "leaf.pem"])
            .status
            .success()
    );
    for cert in ["root.pem", "intermediate.pem", "leaf.pem"] {
        let text =
            String::from_utf8(work.openssl(&["x509", "-in", cert, "-noout", "-text"])).unwrap();
        assert!(
            text.contains("Public-Key: (2048 bit)") && text.contains("sha256WithRSAEncryption"),
            "{cert}"
        );
    }
    let leaf = String::from_utf8(work.openssl(&[
        "x509",
        "-in",
        "leaf.pem",
        "-noout",
        "-ext",
        "subjectAltName",
    ]))
    .unwrap();
    assert!(
        leaf.contains("DNS:abc123-ats.iot.us-east-1.amazonaws.com")
            && leaf.contains("DNS:*.iot.us-east-1.amazonaws.com")
    );
    let intermediate = String::from_utf8(work.openssl(&[
        "x509",
        "-in",
        "intermediate.pem",
        "-noout",
        "-ext",
        "basicConstraints",
    ]))
    .unwrap();
    assert!(
        intermediate.contains("CA:TRUE") && intermediate.contains("pathlen:0"),
        "{intermediate}"
    );
}

#[test]
fn expired_and_untrusted_server_certs_fail_for_the_right_reason() {
    let work = Work::new();
    let ca =
        CertificateAuthority::root("Rig CA", KeyAlgorithm::EcP256, Validity::days(30)).unwrap();
    work.write("ca.pem", ca.cert_pem());

    work.write(
        "expired.pem",
        pki::server_cert_expired(&ca, &["localhost"])
            .unwrap()
            .cert_pem(),
    );
    let out = work.openssl_raw(&["verify", "-CAfile", "ca.pem", "expired.pem"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("certificate has expired")
            || String::from_utf8_lossy(&out.stderr).contains("certificate has expired")
    );

    let (untrusted, rogue) =
        pki::server_cert_untrusted(&["localhost"], KeyAlgorithm::EcP256).unwrap();
    work.write("untrusted.pem", untrusted.cert_pem());
    work.write("rogue.pem", rogue.cert_pem());
    let out = work.openssl_raw(&["verify", "-CAfile", "ca.pem", "untrusted.pem"]);
    assert!(!out.status.success());
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("unable to get local issuer certificate"),
        "{said}"
    );
    // It is otherwise a fine certificate: its own CA accepts it.
    work.openssl(&["verify", "-CAfile", "rogue.pem", "untrusted.pem"]);

    work.write(
        "wrong.pem",
        pki::server_cert_wrong_name(&ca).unwrap().cert_pem(),
    );
    work.openssl(&["verify", "-CAfile", "ca.pem", "wrong.pem"]);
    let out = work.openssl_raw(&[
        "verify",
        "-CAfile",
        "ca.pem",
        "-verify_hostname",
        "localhost",
        "wrong.pem",
    ]);
    assert!(!out.status.success());
}

#[test]
fn cross_signed_root_chains_to_the_older_root() {
    let work = Work::new();
    let old_root =
        CertificateAuthority::root("Old root", KeyAlgorithm::Rsa2048, Validity::days(30)).unwrap();
    let chain = pki::aws_like_chain(&["endpoint.test"], Validity::days(30)).unwrap();
    let cross = old_root.cross_sign(&chain.root).unwrap();
    work.write("old.pem", old_root.cert_pem());
    work.write(
        "untrusted.pem",
        chain.intermediate.cert_pem() + &certs::x509::cert_pem(&cross),
    );
    work.write("leaf.pem", chain.server.cert_pem());
    work.openssl(&[
        "verify",
        "-CAfile",
        "old.pem",
        "-untrusted",
        "untrusted.pem",
        "leaf.pem",
    ]);
}

#[test]
fn pki_generate_matches_the_documented_defaults() {
    let pki = pki::Pki::generate(&pki::InitOptions::default()).unwrap();
    let device = certs::x509::CertInfo::from_der(&pki.device.cert_der).unwrap();
    assert_eq!(device.common_name.as_deref(), Some("ESPthing"));
    assert!(!device.has_organization);
    assert!(pki.device.key.matches(&device.public_key));
    let server = certs::x509::CertInfo::from_der(&pki.server.cert_der).unwrap();
    assert_eq!(server.subject_alt_names, ["localhost", "127.0.0.1"]);
    let ca = certs::x509::CertInfo::from_der(pki.ca.cert_der()).unwrap();
    assert!(ca.is_ca);
    // Debug never shows key bytes.
    let shown = format!("{:?}", pki.device.key);
    assert_eq!(shown, "PrivateKey(EC P-256)");
}

#[test]
fn images_with_deliberately_bad_credentials_can_be_built_from_rust() {
    use certs::creds::Credentials;
    use firmware_core::config::DeviceConfig;
    let ca =
        CertificateAuthority::root("Rig CA", KeyAlgorithm::EcP256, Validity::days(30)).unwrap();
    let expired = ca
        .issue_client("ESPthing", KeyAlgorithm::EcP256, Validity::expired())
        .unwrap();
    let creds = Credentials::new(
        expired.cert_der.clone(),
        expired.key.clone(),
        ca.cert_der().to_vec(),
    )
    .unwrap();
    let config = DeviceConfig::new("localhost", "ESPthing").unwrap();
    let bytes =
        certs::image::build_image(&creds, &config, certs::image::DEFAULT_IMAGE_SIZE).unwrap();
    let contents = certs::image::read_image(&bytes).unwrap();
    assert_eq!(
        contents.file("/cert.der"),
        Some(expired.cert_der.as_slice())
    );
    assert_eq!(contents.file("/private.der").map(<[u8]>::len), Some(121));

    let pki = pki::Pki::generate(&pki::InitOptions::default()).unwrap();
    let creds = Credentials::from_pki(&pki).unwrap();
    assert!(creds.key.matches(&creds.cert.public_key));
}
