//! `firmware_core::creds::check_credentials`, the check both boards run at load and the
//! `certs` tool runs on import, image and inspect: every bad file is named, with why.
#![cfg(feature = "tls-rsa")]

mod tls_pki;

use firmware_core::creds::{CredsFailure, check_credentials};
use firmware_core::log::{FlashFile, LoadError};
use firmware_core::tls::KeyAlgorithm;
use tls_pki::{Alg, Issued, Pki, Spec};

struct Set {
    pki: Pki,
    ca: Issued,
    device: Issued,
}

fn set(alg: Alg) -> Set {
    let mut pki = Pki::new();
    let ca = pki.root("Creds Root", Alg::Rsa2048);
    let device = pki.issue(&Spec::leaf("ESPthing", alg, ""), Some(&ca));
    Set { pki, ca, device }
}

fn failure(file: FlashFile, error: LoadError) -> Result<(), CredsFailure> {
    Err(CredsFailure { file, error })
}

fn check(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<(), CredsFailure> {
    check_credentials(cert, key, ca).map(drop)
}

#[test]
fn good_sets_pass_in_every_key_encoding() {
    let s = set(Alg::P256);
    for encoding in ["sec1", "pkcs8"] {
        let key = s.pki.key_der(&s.device.key, encoding);
        let checked = check_credentials(&s.device.der, &key, &s.ca.der).expect(encoding);
        assert_eq!(checked.key, KeyAlgorithm::P256);
    }
    let s = set(Alg::Rsa2048);
    for encoding in ["pkcs1", "pkcs8"] {
        let key = s.pki.key_der(&s.device.key, encoding);
        let checked = check_credentials(&s.device.der, &key, &s.ca.der).expect(encoding);
        assert_eq!(checked.key, KeyAlgorithm::Rsa(2048));
    }
}

#[test]
fn a_garbage_or_foreign_key_is_named() {
    let s = set(Alg::P256);
    let key = s.pki.key_der(&s.device.key, "sec1");
    assert_eq!(
        check(&s.device.der, &[0x5A; 121], &s.ca.der),
        failure(FlashFile::Key, LoadError::Malformed)
    );
    assert_eq!(
        check(&s.device.der, b"", &s.ca.der),
        failure(FlashFile::Key, LoadError::Empty)
    );
    // A PEM key where DER belongs: named as PEM, with the conversion to make.
    let pem = std::fs::read(&s.device.key).unwrap();
    assert_eq!(
        check(&s.device.der, &pem, &s.ca.der),
        failure(FlashFile::Key, LoadError::Pem)
    );
    let other = s.pki.key("other", Alg::P256);
    assert_eq!(
        check(&s.device.der, &s.pki.key_der(&other, "sec1"), &s.ca.der),
        failure(FlashFile::Key, LoadError::KeyMismatch)
    );
    let p384 = s.pki.key("p384", Alg::P384);
    assert_eq!(
        check(&s.device.der, &s.pki.key_der(&p384, "sec1"), &s.ca.der),
        failure(FlashFile::Key, LoadError::UnsupportedKey)
    );
    // An RSA key for an EC certificate.
    let rsa = s.pki.key("rsa", Alg::Rsa2048);
    assert_eq!(
        check(&s.device.der, &s.pki.key_der(&rsa, "pkcs1"), &s.ca.der),
        failure(FlashFile::Key, LoadError::KeyMismatch)
    );
    assert!(check(&s.device.der, &key, &s.ca.der).is_ok());
}

#[test]
fn a_garbage_certificate_is_named() {
    let s = set(Alg::P256);
    let key = s.pki.key_der(&s.device.key, "sec1");
    assert_eq!(
        check(b"garbage", &key, &s.ca.der),
        failure(FlashFile::Cert, LoadError::Malformed)
    );
    let mut truncated = s.device.der.clone();
    truncated.truncate(truncated.len() - 1);
    assert_eq!(
        check(&truncated, &key, &s.ca.der),
        failure(FlashFile::Cert, LoadError::Malformed)
    );
}

#[test]
fn every_flipped_byte_of_the_ca_is_caught() {
    let s = set(Alg::P256);
    let key = s.pki.key_der(&s.device.key, "sec1");
    // A flip inside the issuer or subject name makes the names differ: the root then
    // reads as an intermediate, whose signature only its (absent) issuer could check.
    // It is accepted, and the handshake fails with unknown-ca. Every other byte:
    let names = name_ranges(&s.ca.der, b"Creds Root");
    // ...flipped in turn, the DER breaks, the key breaks, it stops being a CA or its
    // self-signature fails. Never accepted, always blamed on /ca.der.
    for at in (0..s.ca.der.len()).filter(|at| !names.iter().any(|r| r.contains(at))) {
        let mut ca = s.ca.der.clone();
        ca[at] ^= 0x01;
        match check(&s.device.der, &key, &ca) {
            Err(CredsFailure {
                file: FlashFile::Ca,
                error,
            }) => assert!(
                matches!(
                    error,
                    LoadError::Malformed
                        | LoadError::BadSignature
                        | LoadError::NotCa
                        | LoadError::UnsupportedKey
                ),
                "byte {at}: {error:?}"
            ),
            other => panic!("byte {at} flipped: {other:?}"),
        }
    }
}

/// The issuer and subject Names of a certificate whose only attribute is `CN=cn`:
/// `SEQUENCE { SET { SEQUENCE { OID 2.5.4.3, UTF8String cn } } }`, 13 header bytes.
fn name_ranges(der: &[u8], cn: &[u8]) -> Vec<std::ops::Range<usize>> {
    let ranges: Vec<_> = der
        .windows(cn.len())
        .enumerate()
        .filter(|(_, w)| *w == cn)
        .map(|(at, _)| at - 13..at + cn.len())
        .collect();
    assert_eq!(ranges.len(), 2, "issuer and subject");
    for r in &ranges {
        assert_eq!(der[r.start], 0x30, "a Name starts at {}", r.start);
    }
    ranges
}

#[test]
fn a_leaf_is_not_a_ca() {
    let mut s = set(Alg::P256);
    let key = s.pki.key_der(&s.device.key, "sec1");
    assert_eq!(
        check(&s.device.der, &key, &s.device.der),
        failure(FlashFile::Ca, LoadError::NotCa)
    );
    let p384_root = s.pki.root("P384 Root", Alg::P384);
    assert!(check(&s.device.der, &key, &p384_root.der).is_ok());
}

#[test]
fn failures_read_as_sentences_naming_the_file() {
    let f = CredsFailure {
        file: FlashFile::Key,
        error: LoadError::KeyMismatch,
    };
    assert_eq!(
        f.to_string(),
        "/private.der: not the private key of /cert.der"
    );
}

/// A file left as PEM (as the AWS console downloads it) is named as such, whichever of
/// the three it is.
#[test]
fn a_pem_file_where_der_is_expected_is_named_with_the_fix() {
    let s = set(Alg::P256);
    let key = s.pki.key_der(&s.device.key, "sec1");
    let pem = |der: &[u8]| {
        let mut text = b"-----BEGIN CERTIFICATE-----\n".to_vec();
        text.extend(der.iter().take(40).map(|b| b'A' + b % 26));
        text.extend(b"\n-----END CERTIFICATE-----\n");
        text
    };
    for (file, cert, k, ca) in [
        (
            FlashFile::Cert,
            pem(&s.device.der),
            key.clone(),
            s.ca.der.clone(),
        ),
        (
            FlashFile::Key,
            s.device.der.clone(),
            pem(&key),
            s.ca.der.clone(),
        ),
        (
            FlashFile::Ca,
            s.device.der.clone(),
            key.clone(),
            pem(&s.ca.der),
        ),
    ] {
        let failure = check(&cert, &k, &ca).unwrap_err();
        assert_eq!((failure.file, failure.error), (file, LoadError::Pem));
        assert!(failure.to_string().contains("-outform der"), "{failure}");
    }
}
