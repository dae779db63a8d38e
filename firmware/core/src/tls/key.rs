//! The device's private key: loaded from DER in whatever encoding the tooling wrote,
//! and used to sign the client CertificateVerify.
//!
//! Rules:
//! - the encoding is detected from the DER structure, not from a file name: PKCS#8
//!   (`openssl pkcs8 -topk8 -nocrypt -outform DER`, the AWS console after conversion),
//!   SEC1 (`openssl ec -outform DER`) or PKCS#1 (`openssl rsa -outform DER`);
//! - P-256 keys sign ECDSA-SHA256 (`ecdsa_secp256r1_sha256`), deterministic (RFC 6979);
//! - RSA keys (feature `tls-rsa`, needs a global allocator) sign RSA-PSS-SHA256
//!   (`rsa_pss_rsae_sha256`): TLS 1.3 forbids PKCS#1 v1.5 in CertificateVerify, and
//!   AWS IoT, rustls, OpenSSL and mosquitto all accept PSS. 2048 to 4096 bits;
//! - key bytes never reach `Debug` output or the log.
//!
//! RSA signing uses the `rsa` crate with blinding; its private-key arithmetic is not
//! constant-time (RUSTSEC-2023-0071), the known limit of pure-Rust RSA without an OS.
//! A board with RSA hardware signs through it instead ([`super::rsa_accel`], given to
//! the provider). Prefer P-256 device keys where the choice is free.

use core::fmt;

use embedded_tls::SignatureScheme;
use p256::ecdsa::signature::Error as SignatureError;
use rand_core::{CryptoRng, RngCore};

use super::cert::{
    Malformed, OID_EC_PUBLIC_KEY, OID_P256, OID_RSA_ENCRYPTION, TAG_CTX0, TAG_INTEGER,
    TAG_OCTET_STRING, TAG_OID, TAG_SEQUENCE, expect, only, optional, take,
};
use super::error::KeyError;

/// Largest CertificateVerify signature this build produces. It must fit embedded-tls's
/// own buffer: 104 bytes without its `rsa` feature, 512 with it (RSA-4096).
#[cfg(feature = "tls-rsa")]
pub const MAX_SIGNATURE_LEN: usize = 512;
/// Largest CertificateVerify signature this build produces (DER ECDSA P-256 is <= 72).
#[cfg(not(feature = "tls-rsa"))]
pub const MAX_SIGNATURE_LEN: usize = 104;

/// A CertificateVerify signature, encoded as it goes on the wire.
pub type DeviceSignature = heapless::Vec<u8, MAX_SIGNATURE_LEN>;

/// How a private key was encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// PKCS#8 PrivateKeyInfo (RFC 5208/5958), any algorithm inside.
    Pkcs8,
    /// SEC1 ECPrivateKey (RFC 5915).
    Sec1,
    /// PKCS#1 RSAPrivateKey (RFC 8017).
    Pkcs1,
}

/// Which algorithm a key signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    P256,
    /// RSA, with the modulus size in bits.
    Rsa(usize),
}

/// What the DER says, before any key is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    P256,
    Rsa,
}

/// Detects the encoding of a DER private key from its structure.
///
/// # Errors
/// [`KeyError::Malformed`] if it is none of PKCS#8, SEC1, PKCS#1.
pub fn detect_key_format(der: &[u8]) -> Result<KeyFormat, KeyError> {
    classify(der).map(|(format, _)| format)
}

fn classify(der: &[u8]) -> Result<(KeyFormat, Result<Inner, KeyError>), KeyError> {
    let structure = |der| -> Result<_, Malformed> {
        let mut body = only(der, TAG_SEQUENCE)?.value;
        let version = expect(&mut body, TAG_INTEGER)?.value;
        let second = take(&mut body)?;
        Ok(match (version, second.tag) {
            // PrivateKeyInfo: version 0 (v1) or 1 (v2, RFC 5958), AlgorithmIdentifier.
            ([0 | 1], TAG_SEQUENCE) => {
                let mut alg = second.value;
                let oid = expect(&mut alg, TAG_OID)?.value;
                let inner = if OID_RSA_ENCRYPTION.matches(oid) {
                    Ok(Inner::Rsa)
                } else if OID_EC_PUBLIC_KEY.matches(oid) {
                    let curve = expect(&mut alg, TAG_OID)?.value;
                    if OID_P256.matches(curve) {
                        Ok(Inner::P256)
                    } else {
                        Err(KeyError::Unsupported)
                    }
                } else {
                    // Ed25519, X25519, DSA... well-formed but not something we sign with.
                    Err(KeyError::Unsupported)
                };
                (KeyFormat::Pkcs8, inner)
            }
            // ECPrivateKey: version 1, the private scalar, optional [0] named curve.
            ([1], TAG_OCTET_STRING) => {
                let curve = optional(&mut body, TAG_CTX0)?
                    .map(|params| only(params.value, TAG_OID))
                    .transpose()?;
                let inner = match curve {
                    Some(oid) if !OID_P256.matches(oid.value) => Err(KeyError::Unsupported),
                    None if second.value.len() != 32 => Err(KeyError::Unsupported),
                    _ => Ok(Inner::P256),
                };
                (KeyFormat::Sec1, inner)
            }
            // RSAPrivateKey: version 0 (two-prime), then the modulus.
            ([0], TAG_INTEGER) => (KeyFormat::Pkcs1, Ok(Inner::Rsa)),
            _ => return Err(Malformed),
        })
    };
    structure(der).map_err(|Malformed| KeyError::Malformed)
}

/// The device's signing key.
#[allow(
    clippy::large_enum_variant,
    reason = "one key per device, held for the program's life"
)]
pub enum DeviceKey {
    P256(p256::ecdsa::SigningKey),
    #[cfg(feature = "tls-rsa")]
    Rsa(rsa::pss::BlindedSigningKey<sha2::Sha256>),
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material.
        write!(f, "DeviceKey({:?})", self.algorithm())
    }
}

impl DeviceKey {
    /// Loads a DER private key in PKCS#8, SEC1 or PKCS#1, detected automatically.
    ///
    /// # Errors
    /// [`KeyError::Malformed`] for bytes that are not such a key,
    /// [`KeyError::Unsupported`] for a key this build cannot sign with.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let (format, inner) = classify(der)?;
        match (inner?, format) {
            (Inner::P256, KeyFormat::Pkcs8) => {
                use p256::pkcs8::DecodePrivateKey;
                p256::SecretKey::from_pkcs8_der(der)
                    .map(|k| Self::P256(k.into()))
                    .map_err(|_| KeyError::Malformed)
            }
            (Inner::P256, _) => p256::SecretKey::from_sec1_der(der)
                .map(|k| Self::P256(k.into()))
                .map_err(|_| KeyError::Malformed),
            (Inner::Rsa, format) => Self::rsa(der, format),
        }
    }

    #[cfg(feature = "tls-rsa")]
    fn rsa(der: &[u8], format: KeyFormat) -> Result<Self, KeyError> {
        use super::pubkey::{MAX_RSA_BITS, MIN_RSA_BITS};
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let key = match format {
            KeyFormat::Pkcs1 => rsa::RsaPrivateKey::from_pkcs1_der(der),
            _ => rsa::RsaPrivateKey::from_pkcs8_der(der).map_err(|_| rsa::pkcs1::Error::Crypto),
        }
        .map_err(|_| KeyError::Malformed)?;
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&(key.size() * 8)) {
            return Err(KeyError::Unsupported);
        }
        Ok(Self::Rsa(rsa::pss::BlindedSigningKey::new(key)))
    }

    #[cfg(not(feature = "tls-rsa"))]
    fn rsa(_der: &[u8], _format: KeyFormat) -> Result<Self, KeyError> {
        Err(KeyError::Unsupported)
    }

    /// The key's algorithm (for the log: never the key itself).
    #[must_use]
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self {
            Self::P256(_) => KeyAlgorithm::P256,
            #[cfg(feature = "tls-rsa")]
            Self::Rsa(key) => {
                use rsa::traits::PublicKeyParts;
                let public: &rsa::RsaPrivateKey = key.as_ref();
                KeyAlgorithm::Rsa(public.size() * 8)
            }
        }
    }

    /// The TLS 1.3 signature scheme this key signs CertificateVerify with.
    #[must_use]
    pub fn signature_scheme(&self) -> SignatureScheme {
        match self {
            Self::P256(_) => SignatureScheme::EcdsaSecp256r1Sha256,
            #[cfg(feature = "tls-rsa")]
            Self::Rsa(_) => SignatureScheme::RsaPssRsaeSha256,
        }
    }

    /// Signs `message` as the scheme of [`Self::signature_scheme`] requires.
    ///
    /// # Errors
    /// If the signature primitive fails (which a valid key does not do).
    pub fn sign<R: CryptoRng + RngCore>(
        &self,
        rng: &mut R,
        message: &[u8],
    ) -> Result<DeviceSignature, SignatureError> {
        match self {
            Self::P256(key) => {
                // RFC 6979 deterministic ECDSA: only RSA-PSS (salt, blinding) needs `rng`.
                let _ = rng;
                use p256::ecdsa::signature::Signer;
                let sig: p256::ecdsa::DerSignature = key.try_sign(message)?;
                DeviceSignature::from_slice(sig.as_bytes()).map_err(|_| SignatureError::new())
            }
            #[cfg(feature = "tls-rsa")]
            Self::Rsa(key) => {
                use rsa::signature::{RandomizedSigner, SignatureEncoding};
                let sig = key.try_sign_with_rng(rng, message)?;
                DeviceSignature::from_slice(&sig.to_bytes()).map_err(|_| SignatureError::new())
            }
        }
    }
}

#[cfg(test)]
mod tests;
