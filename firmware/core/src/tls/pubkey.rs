//! Public keys of certificates and the signature checks the verifier needs: issuer
//! signatures over certificates (ECDSA P-256/P-384 with SHA-256/384, and with `tls-rsa`
//! PKCS#1 v1.5 RSA with SHA-256/384/512) and the server's TLS 1.3 CertificateVerify
//! (ECDSA, RSA-PSS).
//!
//! Rules: RSA keys below 2048 bits are refused as [`VerifyError::UnsupportedKey`]; any
//! signature that fails to decode is a [`VerifyError::BadSignature`], never a panic.

use embedded_tls::SignatureScheme;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::{Digest, Sha256, Sha384};

use super::cert::{
    Certificate, OID_EC_PUBLIC_KEY, OID_ECDSA_SHA256, OID_ECDSA_SHA384, OID_P256, OID_P384,
    OID_RSA_ENCRYPTION, OID_RSA_SHA256, OID_RSA_SHA384, OID_RSA_SHA512, Spki, TAG_OID,
};
use super::error::VerifyError;

/// Smallest RSA modulus accepted, in bits.
#[cfg(feature = "tls-rsa")]
pub(crate) const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (bounds the work a peer can cause).
#[cfg(feature = "tls-rsa")]
pub(crate) const MAX_RSA_BITS: usize = 4096;

/// A certificate's subject public key, decoded.
#[derive(Debug, Clone)]
pub(crate) enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    #[cfg(feature = "tls-rsa")]
    Rsa(rsa::RsaPublicKey),
}

impl PublicKey {
    pub fn from_spki(spki: &Spki<'_>) -> Result<Self, VerifyError> {
        if OID_EC_PUBLIC_KEY.matches(spki.algorithm) {
            let curve = spki
                .parameters
                .filter(|p| p.tag == TAG_OID)
                .ok_or(VerifyError::UnsupportedKey)?;
            if OID_P256.matches(curve.value) {
                p256::ecdsa::VerifyingKey::from_sec1_bytes(spki.key)
                    .map(Self::P256)
                    .map_err(|_| VerifyError::MalformedCertificate)
            } else if OID_P384.matches(curve.value) {
                p384::ecdsa::VerifyingKey::from_sec1_bytes(spki.key)
                    .map(Self::P384)
                    .map_err(|_| VerifyError::MalformedCertificate)
            } else {
                Err(VerifyError::UnsupportedKey)
            }
        } else if OID_RSA_ENCRYPTION.matches(spki.algorithm) {
            Self::rsa(spki.key)
        } else {
            Err(VerifyError::UnsupportedKey)
        }
    }

    #[cfg(feature = "tls-rsa")]
    fn rsa(pkcs1: &[u8]) -> Result<Self, VerifyError> {
        use rsa::pkcs1::DecodeRsaPublicKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPublicKey::from_pkcs1_der(pkcs1)
            .map_err(|_| VerifyError::MalformedCertificate)?;
        let bits = key.size() * 8;
        if (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            Ok(Self::Rsa(key))
        } else {
            Err(VerifyError::UnsupportedKey)
        }
    }

    #[cfg(not(feature = "tls-rsa"))]
    fn rsa(_pkcs1: &[u8]) -> Result<Self, VerifyError> {
        Err(VerifyError::UnsupportedKey)
    }

    /// Checks `issued`'s signature with this (issuer's) key.
    pub fn verify_certificate(&self, issued: &Certificate<'_>) -> Result<(), VerifyError> {
        let alg = issued.signature_algorithm;
        let sig = issued.signature;
        let tbs = issued.tbs;
        if OID_ECDSA_SHA256.matches(alg) {
            self.verify_ecdsa_prehash(&Sha256::digest(tbs), sig)
        } else if OID_ECDSA_SHA384.matches(alg) {
            self.verify_ecdsa_prehash(&Sha384::digest(tbs), sig)
        } else if OID_RSA_SHA256.matches(alg) {
            self.verify_rsa_pkcs1(RsaHash::Sha256, tbs, sig)
        } else if OID_RSA_SHA384.matches(alg) {
            self.verify_rsa_pkcs1(RsaHash::Sha384, tbs, sig)
        } else if OID_RSA_SHA512.matches(alg) {
            self.verify_rsa_pkcs1(RsaHash::Sha512, tbs, sig)
        } else {
            Err(VerifyError::UnsupportedAlgorithm)
        }
    }

    /// Checks a TLS 1.3 CertificateVerify signature over `message` (RFC 8446 4.4.3).
    pub fn verify_tls13(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        match (scheme, self) {
            (SignatureScheme::EcdsaSecp256r1Sha256, Self::P256(key)) => {
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| VerifyError::BadSignature)?;
                key.verify(message, &sig)
                    .map_err(|_| VerifyError::BadSignature)
            }
            (SignatureScheme::EcdsaSecp384r1Sha384, Self::P384(key)) => {
                let sig = p384::ecdsa::Signature::from_der(signature)
                    .map_err(|_| VerifyError::BadSignature)?;
                key.verify(message, &sig)
                    .map_err(|_| VerifyError::BadSignature)
            }
            #[cfg(feature = "tls-rsa")]
            (SignatureScheme::RsaPssRsaeSha256, Self::Rsa(key)) => {
                rsa_pss::<Sha256>(key, message, signature)
            }
            #[cfg(feature = "tls-rsa")]
            (SignatureScheme::RsaPssRsaeSha384, Self::Rsa(key)) => {
                rsa_pss::<Sha384>(key, message, signature)
            }
            #[cfg(feature = "tls-rsa")]
            (SignatureScheme::RsaPssRsaeSha512, Self::Rsa(key)) => {
                rsa_pss::<sha2::Sha512>(key, message, signature)
            }
            // TLS 1.3 forbids PKCS#1 v1.5 here, and a scheme must fit the key's curve.
            _ => Err(VerifyError::UnsupportedAlgorithm),
        }
    }

    fn verify_ecdsa_prehash(&self, digest: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        match self {
            Self::P256(key) => {
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| VerifyError::BadSignature)?;
                key.verify_prehash(digest, &sig)
                    .map_err(|_| VerifyError::BadSignature)
            }
            Self::P384(key) => {
                let sig = p384::ecdsa::Signature::from_der(signature)
                    .map_err(|_| VerifyError::BadSignature)?;
                key.verify_prehash(digest, &sig)
                    .map_err(|_| VerifyError::BadSignature)
            }
            #[cfg(feature = "tls-rsa")]
            Self::Rsa(_) => Err(VerifyError::BadSignature),
        }
    }

    #[cfg(feature = "tls-rsa")]
    fn verify_rsa_pkcs1(
        &self,
        hash: RsaHash,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        use rsa::pkcs1v15::{Signature, VerifyingKey};
        let Self::Rsa(key) = self else {
            return Err(VerifyError::BadSignature);
        };
        let sig = Signature::try_from(signature).map_err(|_| VerifyError::BadSignature)?;
        let ok = match hash {
            RsaHash::Sha256 => VerifyingKey::<Sha256>::new(key.clone()).verify(message, &sig),
            RsaHash::Sha384 => VerifyingKey::<Sha384>::new(key.clone()).verify(message, &sig),
            RsaHash::Sha512 => VerifyingKey::<sha2::Sha512>::new(key.clone()).verify(message, &sig),
        };
        ok.map_err(|_| VerifyError::BadSignature)
    }

    #[cfg(not(feature = "tls-rsa"))]
    fn verify_rsa_pkcs1(&self, _: RsaHash, _: &[u8], _: &[u8]) -> Result<(), VerifyError> {
        // Without RSA support no RSA key is ever decoded, so this is an EC key.
        Err(VerifyError::BadSignature)
    }
}

#[derive(Clone, Copy)]
enum RsaHash {
    Sha256,
    Sha384,
    Sha512,
}

#[cfg(feature = "tls-rsa")]
fn rsa_pss<D>(key: &rsa::RsaPublicKey, message: &[u8], signature: &[u8]) -> Result<(), VerifyError>
where
    D: Digest + sha2::digest::FixedOutputReset,
{
    let sig = rsa::pss::Signature::try_from(signature).map_err(|_| VerifyError::BadSignature)?;
    rsa::pss::VerifyingKey::<D>::new(key.clone())
        .verify(message, &sig)
        .map_err(|_| VerifyError::BadSignature)
}
