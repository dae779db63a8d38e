use super::*;

const P256_SEC1: &[u8] = include_bytes!("../testdata/p256.sec1.der");
const P256_PKCS8: &[u8] = include_bytes!("../testdata/p256.pkcs8.der");
const P384_SEC1: &[u8] = include_bytes!("../testdata/p384.sec1.der");
const P384_PKCS8: &[u8] = include_bytes!("../testdata/p384.pkcs8.der");
const ED25519_PKCS8: &[u8] = include_bytes!("../testdata/ed25519.pkcs8.der");
const RSA_PKCS1: &[u8] = include_bytes!("../testdata/rsa2048.pkcs1.der");
const RSA_PKCS8: &[u8] = include_bytes!("../testdata/rsa2048.pkcs8.der");
const RSA1024_PKCS1: &[u8] = include_bytes!("../testdata/rsa1024.pkcs1.der");

#[test]
fn detects_every_encoding() {
    for (der, format) in [
        (P256_SEC1, KeyFormat::Sec1),
        (P256_PKCS8, KeyFormat::Pkcs8),
        (P384_SEC1, KeyFormat::Sec1),
        (P384_PKCS8, KeyFormat::Pkcs8),
        (ED25519_PKCS8, KeyFormat::Pkcs8),
        (RSA_PKCS1, KeyFormat::Pkcs1),
        (RSA_PKCS8, KeyFormat::Pkcs8),
    ] {
        assert_eq!(detect_key_format(der), Ok(format));
    }
}

#[test]
#[allow(irrefutable_let_patterns, reason = "refutable only with tls-rsa")]
fn p256_loads_from_sec1_and_pkcs8_as_the_same_key() {
    let a = DeviceKey::from_der(P256_SEC1).unwrap();
    let b = DeviceKey::from_der(P256_PKCS8).unwrap();
    assert_eq!(a.algorithm(), KeyAlgorithm::P256);
    assert_eq!(a.signature_scheme(), SignatureScheme::EcdsaSecp256r1Sha256);
    let (DeviceKey::P256(a), DeviceKey::P256(b)) = (a, b) else {
        panic!("not P-256");
    };
    assert_eq!(a.verifying_key(), b.verifying_key());
}

#[test]
#[allow(irrefutable_let_patterns, reason = "refutable only with tls-rsa")]
fn p256_signature_verifies() {
    use p256::ecdsa::signature::Verifier;
    let key = DeviceKey::from_der(P256_PKCS8).unwrap();
    let mut rng = rand_core::OsRng;
    let sig = key.sign(&mut rng, b"transcript").unwrap();
    let DeviceKey::P256(signing) = &key else {
        panic!("not P-256");
    };
    let sig = p256::ecdsa::Signature::from_der(&sig).unwrap();
    signing.verifying_key().verify(b"transcript", &sig).unwrap();
}

#[test]
fn other_curves_are_unsupported() {
    for der in [P384_SEC1, P384_PKCS8, ED25519_PKCS8] {
        assert_eq!(DeviceKey::from_der(der).unwrap_err(), KeyError::Unsupported);
    }
}

#[cfg(not(feature = "tls-rsa"))]
#[test]
fn rsa_needs_the_rsa_feature() {
    for der in [RSA_PKCS1, RSA_PKCS8] {
        assert_eq!(DeviceKey::from_der(der).unwrap_err(), KeyError::Unsupported);
    }
}

#[cfg(feature = "tls-rsa")]
#[test]
fn rsa_loads_from_pkcs1_and_pkcs8_and_signs_pss() {
    use rsa::signature::Verifier;
    for der in [RSA_PKCS1, RSA_PKCS8] {
        let key = DeviceKey::from_der(der).unwrap();
        assert_eq!(key.algorithm(), KeyAlgorithm::Rsa(2048));
        assert_eq!(key.signature_scheme(), SignatureScheme::RsaPssRsaeSha256);
        let sig = key.sign(&mut rand_core::OsRng, b"transcript").unwrap();
        assert_eq!(sig.len(), 256);
        let DeviceKey::Rsa(signing) = &key else {
            panic!("not RSA");
        };
        let private: &rsa::RsaPrivateKey = signing.as_ref();
        let verifying = rsa::pss::VerifyingKey::<sha2::Sha256>::new(private.to_public_key());
        let sig = rsa::pss::Signature::try_from(&sig[..]).unwrap();
        verifying.verify(b"transcript", &sig).unwrap();
    }
}

#[cfg(feature = "tls-rsa")]
#[test]
fn small_rsa_is_unsupported() {
    assert_eq!(
        DeviceKey::from_der(RSA1024_PKCS1).unwrap_err(),
        KeyError::Unsupported
    );
}

#[cfg(not(feature = "tls-rsa"))]
#[test]
fn small_rsa_is_unsupported() {
    assert_eq!(
        DeviceKey::from_der(RSA1024_PKCS1).unwrap_err(),
        KeyError::Unsupported
    );
}

#[test]
fn junk_is_malformed() {
    for bad in [
        &[][..],
        &[0x30, 0x00],
        &[0x30, 0x03, 0x02, 0x01, 0x05],
        &[0x04; 40],
    ] {
        assert_eq!(DeviceKey::from_der(bad).unwrap_err(), KeyError::Malformed);
    }
    // Right shape, wrong content: a SEC1 header around a short scalar.
    let mut truncated = P256_SEC1.to_vec();
    truncated.truncate(20);
    assert_eq!(
        DeviceKey::from_der(&truncated).unwrap_err(),
        KeyError::Malformed
    );
}

#[test]
fn debug_hides_the_key() {
    let key = DeviceKey::from_der(P256_SEC1).unwrap();
    assert_eq!(format!("{key:?}"), "DeviceKey(P256)");
}
