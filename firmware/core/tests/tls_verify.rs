//! The server-chain verifier on its own, with explicit epochs: validity windows, name
//! matching (every SAN, IP SANs, wildcards, CN only without SANs) and chain refusals.
#![cfg(feature = "tls")]

mod tls_pki;

use firmware_core::tls::{VerifyError, verify_server_chain};
use tls_pki::{Alg, Pki, Spec};

/// 2030-01-01T00:00:00Z and 2031-01-01T00:00:00Z.
const START: u64 = 1_893_456_000;
const END: u64 = 1_924_992_000;

fn dated<'a>(cn: &'a str, san: &'a str) -> Spec<'a> {
    let mut spec = Spec::leaf(cn, Alg::P256, san);
    spec.dates = Some(("20300101000000Z", "20310101000000Z"));
    spec
}

#[test]
fn validity_is_checked_against_the_given_epoch() {
    let mut pki = Pki::new();
    let root = pki.root("Verify Root", Alg::P256);
    let leaf = pki.issue(&dated("broker.test", "DNS:broker.test"), Some(&root));
    let check = |now| verify_server_chain(&root.der, &[&leaf.der], "broker.test", now);
    assert_eq!(check(Some(START)), Ok(()));
    assert_eq!(check(Some(END)), Ok(()));
    assert_eq!(check(Some(START + 86_400 * 180)), Ok(()));
    assert_eq!(
        check(Some(START - 1)),
        Err(VerifyError::CertificateNotYetValid)
    );
    assert_eq!(check(Some(END + 1)), Err(VerifyError::CertificateExpired));
    assert_eq!(check(None), Err(VerifyError::ClockNotSet));
    // An RTC that never synced counts from 1970 or 2000.
    assert_eq!(check(Some(946_684_800)), Err(VerifyError::ClockNotSet));
    assert_eq!(
        VerifyError::CertificateNotYetValid.kind(),
        "certificate-not-yet-valid"
    );
    assert_eq!(VerifyError::ClockNotSet.kind(), "clock-not-set");
}

#[test]
fn an_expired_intermediate_is_refused() {
    let mut pki = Pki::new();
    let root = pki.root("Verify Root", Alg::P256);
    let mut inter_spec = Spec::ca("Verify Intermediate", Alg::P256);
    inter_spec.dates = Some(("20200101000000Z", "20210101000000Z"));
    let inter = pki.issue(&inter_spec, Some(&root));
    let leaf = pki.issue(
        &Spec::leaf("broker.test", Alg::P256, "DNS:broker.test"),
        Some(&inter),
    );
    assert_eq!(
        verify_server_chain(
            &root.der,
            &[&leaf.der, &inter.der],
            "broker.test",
            Some(tls_pki::now())
        ),
        Err(VerifyError::CertificateExpired)
    );
}

#[test]
fn every_dns_san_is_considered() {
    let mut pki = Pki::new();
    let root = pki.root("Verify Root", Alg::P256);
    let names: Vec<String> = (1..=8).map(|i| format!("host{i}.test")).collect();
    let san = names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    let leaf = pki.issue(&dated("host1.test", &san), Some(&root));
    for name in &names {
        assert_eq!(
            verify_server_chain(&root.der, &[&leaf.der], name, Some(START)),
            Ok(()),
            "{name}"
        );
    }
    assert_eq!(
        verify_server_chain(&root.der, &[&leaf.der], "host9.test", Some(START)),
        Err(VerifyError::NameMismatch)
    );
}

#[test]
fn ip_sans_match_ip_literals_only() {
    let mut pki = Pki::new();
    let root = pki.root("Verify Root", Alg::P256);
    let leaf = pki.issue(
        &dated("localhost", "DNS:localhost,IP:127.0.0.1,IP:::1"),
        Some(&root),
    );
    let check = |name| verify_server_chain(&root.der, &[&leaf.der], name, Some(START));
    assert_eq!(check("127.0.0.1"), Ok(()));
    assert_eq!(check("::1"), Ok(()));
    assert_eq!(check("localhost"), Ok(()));
    assert_eq!(check("127.0.0.2"), Err(VerifyError::NameMismatch));
    // A DNS SAN spelled like an address is not an IP SAN.
    let dns_only = pki.issue(&dated("10.0.0.1", "DNS:10.0.0.1"), Some(&root));
    assert_eq!(
        verify_server_chain(&root.der, &[&dns_only.der], "10.0.0.1", Some(START)),
        Err(VerifyError::NameMismatch)
    );
}

#[test]
fn aws_wildcard_covers_one_label() {
    let mut pki = Pki::new();
    let root = pki.root("Verify Root", Alg::P256);
    let leaf = pki.issue(
        &dated(
            "*.iot.us-east-1.amazonaws.com",
            "DNS:iot.us-east-1.amazonaws.com,DNS:*.iot.us-east-1.amazonaws.com",
        ),
        Some(&root),
    );
    let check = |name| verify_server_chain(&root.der, &[&leaf.der], name, Some(START));
    assert_eq!(check("a1b2c3-ats.iot.us-east-1.amazonaws.com"), Ok(()));
    assert_eq!(check("iot.us-east-1.amazonaws.com"), Ok(()));
    assert_eq!(
        check("x.a1b2c3-ats.iot.us-east-1.amazonaws.com"),
        Err(VerifyError::NameMismatch)
    );
    assert_eq!(
        check("a1b2c3-ats.iot.eu-west-1.amazonaws.com"),
        Err(VerifyError::NameMismatch)
    );
}

#[test]
fn common_name_only_without_sans() {
    let mut pki = Pki::new();
    let root = pki.root("Verify Root", Alg::P256);
    let cn_only = pki.issue(&dated("broker.test", ""), Some(&root));
    assert_eq!(
        verify_server_chain(&root.der, &[&cn_only.der], "broker.test", Some(START)),
        Ok(())
    );
    let with_san = pki.issue(&dated("broker.test", "DNS:other.test"), Some(&root));
    assert_eq!(
        verify_server_chain(&root.der, &[&with_san.der], "broker.test", Some(START)),
        Err(VerifyError::NameMismatch)
    );
}

#[test]
fn chain_refusals_are_specific() {
    let mut pki = Pki::new();
    let root = pki.root("Verify Root", Alg::P256);
    let inter = pki.issue(&Spec::ca("Verify Intermediate", Alg::P256), Some(&root));
    let leaf = pki.issue(
        &Spec::leaf("broker.test", Alg::P256, "DNS:broker.test"),
        Some(&inter),
    );
    // Read the clock at each check: certificates issued later start "now" too.
    let now = || Some(tls_pki::now());
    let check = |chain: &[&[u8]]| verify_server_chain(&root.der, chain, "broker.test", now());

    // The intermediate may come in any position; duplicates do no harm.
    assert_eq!(check(&[&leaf.der, &inter.der]), Ok(()));
    assert_eq!(
        check(&[&leaf.der, &root.der, &inter.der, &inter.der]),
        Ok(())
    );
    // Missing intermediate: nothing links the leaf to the anchor.
    assert_eq!(check(&[&leaf.der]), Err(VerifyError::UnknownCa));

    // A flipped byte inside the leaf's signed part.
    let mut tampered = leaf.der.clone();
    let at = tampered
        .windows(b"broker.test".len())
        .position(|w| w == b"broker.test")
        .expect("CN bytes in the certificate");
    tampered[at] = b'c';
    assert_eq!(
        check(&[&tampered, &inter.der]),
        Err(VerifyError::BadSignature)
    );

    // A leaf certificate used as an issuer.
    let not_ca = pki.issue(&Spec::leaf("Verify Not A CA", Alg::P256, ""), Some(&root));
    let under_leaf = pki.issue(
        &Spec::leaf("broker.test", Alg::P256, "DNS:broker.test"),
        Some(&not_ca),
    );
    assert_eq!(
        check(&[&under_leaf.der, &not_ca.der]),
        Err(VerifyError::NotACa)
    );

    // Garbage, and no certificate at all.
    assert_eq!(
        check(&[b"\x30\x03\x02\x01\x00"]),
        Err(VerifyError::MalformedCertificate)
    );
    assert_eq!(check(&[]), Err(VerifyError::MalformedCertificate));
    assert_eq!(
        verify_server_chain(b"junk", &[&leaf.der], "broker.test", now()),
        Err(VerifyError::BadTrustAnchor)
    );
}

#[test]
fn the_anchor_itself_may_be_the_server_certificate() {
    let mut pki = Pki::new();
    let mut spec = Spec::ca("broker.test", Alg::P256);
    spec.san = "DNS:broker.test";
    let pinned = pki.issue(&spec, None);
    assert_eq!(
        verify_server_chain(
            &pinned.der,
            &[&pinned.der],
            "broker.test",
            Some(tls_pki::now())
        ),
        Ok(())
    );
}
