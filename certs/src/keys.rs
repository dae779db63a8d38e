//! Private keys: parsing every form the AWS console and openssl produce, and writing the
//! "traditional" DER form the device reads.
//!
//! The device's `/private.der` is what the tutorial's openssl commands produce: for EC,
//! the SEC1 `ECPrivateKey` with the named curve and the public key (`openssl ec
//! -outform DER`, 121 bytes for P-256); for RSA, the PKCS#1 `RSAPrivateKey`
//! (`openssl rsa -traditional -outform DER`, which is also what OpenSSL 1.1 wrote without
//! `-traditional`). A PKCS#8 input is unwrapped to that form.

use std::fmt;

use der::{Decode, Encode, Tagged};
use p256::elliptic_curve::sec1::ToSec1Point;
use pkcs8::ObjectIdentifier;
use zeroize::Zeroizing;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const OID_SECP256K1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");
const OID_X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
const OID_DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");
/// PKCS#5 (PBES1/PBES2) and PKCS#12 PBE algorithm arcs: an `EncryptedPrivateKeyInfo`.
const OID_PKCS5: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5");
const OID_PKCS12_PBE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1");

/// The key algorithms the firmware supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256 (fast; the default for the test PKI).
    #[default]
    #[value(name = "ec-p256", alias = "p256")]
    EcP256,
    /// RSA-2048 with PKCS#1 v1.5 SHA-256 (the AWS console's default and AWS's own chain).
    #[value(name = "rsa-2048")]
    Rsa2048,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyAlgorithm::EcP256 => "ec-p256",
            KeyAlgorithm::Rsa2048 => "rsa-2048",
        })
    }
}

/// The kind and size of a public or private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyType {
    Rsa {
        bits: usize,
    },
    EcP256,
    /// Another elliptic curve, by name.
    Ec(String),
    /// Anything else (Ed25519, DSA, ...), by name.
    Other(String),
}

impl KeyType {
    /// The firmware speaks TLS with exactly these two (see DESIGN.md, contract 1).
    pub fn firmware_supported(&self) -> bool {
        matches!(self, KeyType::Rsa { bits: 2048 } | KeyType::EcP256)
    }

    pub(crate) fn from_algorithm(oid: ObjectIdentifier, curve: Option<ObjectIdentifier>) -> Self {
        match oid {
            OID_RSA => KeyType::Rsa { bits: 0 },
            OID_EC => match curve {
                Some(OID_P256) => KeyType::EcP256,
                Some(c) => KeyType::Ec(curve_name(c)),
                None => KeyType::Ec("without named curve".into()),
            },
            OID_RSA_PSS => KeyType::Other("RSA-PSS".into()),
            OID_ED25519 => KeyType::Other("Ed25519".into()),
            OID_ED448 => KeyType::Other("Ed448".into()),
            OID_X25519 => KeyType::Other("X25519".into()),
            OID_DSA => KeyType::Other("DSA".into()),
            other => KeyType::Other(format!("OID {other}")),
        }
    }
}

fn curve_name(oid: ObjectIdentifier) -> String {
    match oid {
        OID_P256 => "P-256".into(),
        OID_P384 => "P-384".into(),
        OID_P521 => "P-521".into(),
        OID_SECP256K1 => "secp256k1".into(),
        other => format!("curve {other}"),
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyType::EcP256 => write!(f, "EC P-256"),
            KeyType::Ec(curve) => write!(f, "EC {curve}"),
            KeyType::Other(name) => write!(f, "{name}"),
        }
    }
}

/// Why bytes are not a usable private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Encrypted,
    Unsupported(KeyType),
    Malformed(String),
}

/// A public key as found in a certificate, reduced to what key matching needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Big-endian modulus and exponent without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// A SEC1-encoded P-256 point (compressed or not).
    EcP256(Vec<u8>),
    Other(KeyType),
}

impl PublicKey {
    pub fn key_type(&self) -> KeyType {
        match self {
            PublicKey::Rsa { n, .. } => KeyType::Rsa {
                bits: bit_length(n),
            },
            PublicKey::EcP256(_) => KeyType::EcP256,
            PublicKey::Other(t) => t.clone(),
        }
    }
}

/// A private key the firmware can use: RSA-2048 (or another RSA size, refused later) or
/// EC P-256. `Debug` shows the type only; key bytes are never printed.
#[derive(Clone)]
pub enum PrivateKey {
    /// Canonical DER of the PKCS#1 `RSAPrivateKey`.
    Rsa {
        pkcs1: Zeroizing<Vec<u8>>,
        bits: usize,
    },
    EcP256(p256::SecretKey),
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({})", self.key_type())
    }
}

impl PrivateKey {
    /// Generate a fresh key of the given algorithm.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, KeyError> {
        match algorithm {
            KeyAlgorithm::EcP256 => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                // A uniformly random 32-byte string is a valid scalar with overwhelming
                // probability; retry on the rare zero/overflow.
                loop {
                    getrandom::fill(&mut bytes[..])
                        .map_err(|e| KeyError::Malformed(format!("no randomness: {e}")))?;
                    if let Ok(key) = p256::SecretKey::from_slice(&bytes[..]) {
                        return Ok(PrivateKey::EcP256(key));
                    }
                }
            }
            KeyAlgorithm::Rsa2048 => {
                // rcgen's ring backend cannot generate RSA keys; the `rsa` crate can.
                let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048)
                    .map_err(|e| KeyError::Malformed(format!("RSA key generation: {e}")))?;
                let der = pkcs1::EncodeRsaPrivateKey::to_pkcs1_der(&key)
                    .map_err(|e| KeyError::Malformed(format!("RSA key encoding: {e}")))?;
                Self::from_pkcs1_der(der.as_bytes())
            }
        }
    }

    /// Parse a PKCS#8 `PrivateKeyInfo` (`BEGIN PRIVATE KEY`).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let info = pkcs8::PrivateKeyInfoRef::from_der(der)
            .map_err(|e| KeyError::Malformed(format!("PKCS#8: {e}")))?;
        let curve = info
            .algorithm
            .parameters
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        match KeyType::from_algorithm(info.algorithm.oid, curve) {
            KeyType::Rsa { .. } => Self::from_pkcs1_der(info.private_key.as_bytes()),
            KeyType::EcP256 => Self::from_sec1(info.private_key.as_bytes(), Some(OID_P256)),
            other => Err(KeyError::Unsupported(other)),
        }
    }

    /// Parse a PKCS#1 `RSAPrivateKey` (`BEGIN RSA PRIVATE KEY`).
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, KeyError> {
        let parsed = pkcs1::RsaPrivateKeyRef::try_from(der)
            .map_err(|e| KeyError::Malformed(format!("PKCS#1 RSA key: {e}")))?;
        if parsed.other_prime_infos.is_some() {
            return Err(KeyError::Unsupported(KeyType::Other(
                "multi-prime RSA".into(),
            )));
        }
        let bits = bit_length(parsed.modulus.as_bytes());
        // Re-encoding from the parsed integers is what openssl does; for the strict DER
        // `der` accepts it reproduces the input.
        let pkcs1 = Zeroizing::new(
            parsed
                .to_der()
                .map_err(|e| KeyError::Malformed(format!("PKCS#1 RSA key: {e}")))?,
        );
        // The integers must form a real key, or the device fails at its first signature.
        <rsa::PrivateKey as pkcs1::DecodeRsaPrivateKey>::from_pkcs1_der(&pkcs1)
            .map_err(|e| KeyError::Malformed(format!("inconsistent RSA key: {e}")))?;
        Ok(PrivateKey::Rsa { pkcs1, bits })
    }

    /// Parse a SEC1 `ECPrivateKey` (`BEGIN EC PRIVATE KEY`).
    pub fn from_sec1_der(der: &[u8]) -> Result<Self, KeyError> {
        Self::from_sec1(der, None)
    }

    /// `outer_curve` is the curve named by a PKCS#8 wrapper, whose inner key usually
    /// omits its own parameters.
    fn from_sec1(der: &[u8], outer_curve: Option<ObjectIdentifier>) -> Result<Self, KeyError> {
        let parsed = sec1::EcPrivateKey::try_from(der)
            .map_err(|e| KeyError::Malformed(format!("SEC1 EC key: {e}")))?;
        let curve = parsed
            .parameters
            .and_then(|p| p.named_curve())
            .or(outer_curve);
        match curve {
            Some(OID_P256) => {}
            Some(other) => return Err(KeyError::Unsupported(KeyType::Ec(curve_name(other)))),
            None => {
                return Err(KeyError::Malformed(
                    "EC key without a named curve".to_string(),
                ));
            }
        }
        if parsed.private_key.len() != 32 {
            return Err(KeyError::Malformed(format!(
                "P-256 private key is {} bytes, expected 32",
                parsed.private_key.len()
            )));
        }
        let secret = p256::SecretKey::from_slice(parsed.private_key)
            .map_err(|_| KeyError::Malformed("P-256 private key out of range".to_string()))?;
        if let Some(public) = parsed.public_key {
            let embedded = p256::PublicKey::from_sec1_bytes(public)
                .map_err(|_| KeyError::Malformed("invalid embedded public key".to_string()))?;
            if embedded != secret.public_key() {
                return Err(KeyError::Malformed(
                    "embedded public key does not belong to the private key".to_string(),
                ));
            }
        }
        Ok(PrivateKey::EcP256(secret))
    }

    pub fn key_type(&self) -> KeyType {
        match self {
            PrivateKey::Rsa { bits, .. } => KeyType::Rsa { bits: *bits },
            PrivateKey::EcP256(_) => KeyType::EcP256,
        }
    }

    /// The DER the device reads and openssl writes: SEC1 with curve and public key, or
    /// PKCS#1.
    pub fn to_traditional_der(&self) -> Zeroizing<Vec<u8>> {
        match self {
            PrivateKey::Rsa { pkcs1, .. } => pkcs1.clone(),
            PrivateKey::EcP256(secret) => secret
                .to_sec1_der()
                .expect("encoding a valid P-256 key cannot fail"),
        }
    }

    /// PEM of [`Self::to_traditional_der`] (`EC PRIVATE KEY` / `RSA PRIVATE KEY`).
    pub fn to_traditional_pem(&self) -> Zeroizing<String> {
        let tag = match self {
            PrivateKey::Rsa { .. } => "RSA PRIVATE KEY",
            PrivateKey::EcP256(_) => "EC PRIVATE KEY",
        };
        Zeroizing::new(pem_encode(tag, &self.to_traditional_der()))
    }

    /// PKCS#8 `PrivateKeyInfo` DER, the form rcgen, rustls and most tools read.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        match self {
            PrivateKey::Rsa { pkcs1, .. } => {
                let key = <rsa::PrivateKey as pkcs1::DecodeRsaPrivateKey>::from_pkcs1_der(pkcs1)
                    .expect("validated when parsed");
                let doc = pkcs8::EncodePrivateKey::to_pkcs8_der(&key)
                    .expect("encoding a valid RSA key cannot fail");
                Zeroizing::new(doc.as_bytes().to_vec())
            }
            PrivateKey::EcP256(secret) => {
                let doc = pkcs8::EncodePrivateKey::to_pkcs8_der(secret)
                    .expect("encoding a valid P-256 key cannot fail");
                Zeroizing::new(doc.as_bytes().to_vec())
            }
        }
    }

    /// PEM of [`Self::to_pkcs8_der`] (`PRIVATE KEY`).
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem_encode("PRIVATE KEY", &self.to_pkcs8_der()))
    }

    /// The public half, for matching against a certificate.
    pub fn public_key(&self) -> PublicKey {
        match self {
            PrivateKey::Rsa { pkcs1, .. } => {
                let parsed = pkcs1::RsaPrivateKeyRef::try_from(pkcs1.as_slice())
                    .expect("validated when parsed");
                PublicKey::Rsa {
                    n: parsed.modulus.as_bytes().to_vec(),
                    e: parsed.public_exponent.as_bytes().to_vec(),
                }
            }
            PrivateKey::EcP256(secret) => {
                PublicKey::EcP256(secret.public_key().to_sec1_point(false).as_bytes().to_vec())
            }
        }
    }

    /// Whether this key belongs to the certificate's public key.
    pub fn matches(&self, public: &PublicKey) -> bool {
        match (self.public_key(), public) {
            (PublicKey::Rsa { n, e }, PublicKey::Rsa { n: n2, e: e2 }) => {
                strip_zeros(&n) == strip_zeros(n2) && strip_zeros(&e) == strip_zeros(e2)
            }
            (PublicKey::EcP256(ours), PublicKey::EcP256(theirs)) => {
                // Compare points, not encodings: a certificate may carry a compressed point.
                match (
                    p256::PublicKey::from_sec1_bytes(&ours),
                    p256::PublicKey::from_sec1_bytes(theirs),
                ) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => false,
                }
            }
            _ => false,
        }
    }

    /// A signing key for rcgen.
    pub(crate) fn to_rcgen(&self) -> Result<rcgen::KeyPair, rcgen::Error> {
        rcgen::KeyPair::try_from(self.to_pkcs8_der().as_slice())
    }
}

/// Parse a private key from DER of unknown form (PKCS#8, PKCS#1 or SEC1).
pub fn parse_der_key(der: &[u8]) -> Result<PrivateKey, KeyError> {
    if is_encrypted_pkcs8(der) {
        return Err(KeyError::Encrypted);
    }
    if pkcs8::PrivateKeyInfoRef::from_der(der).is_ok() {
        return PrivateKey::from_pkcs8_der(der);
    }
    if pkcs1::RsaPrivateKeyRef::try_from(der).is_ok() {
        return PrivateKey::from_pkcs1_der(der);
    }
    if sec1::EcPrivateKey::try_from(der).is_ok() {
        return PrivateKey::from_sec1_der(der);
    }
    Err(KeyError::Malformed(
        "not a PKCS#8, PKCS#1 or SEC1 private key".to_string(),
    ))
}

/// Whether DER bytes look like a PKCS#8 `EncryptedPrivateKeyInfo`:
/// `SEQUENCE { SEQUENCE { OID pbe-algorithm, ... }, OCTET STRING }`.
pub fn is_encrypted_pkcs8(der: &[u8]) -> bool {
    let Ok(items) = Vec::<der::AnyRef<'_>>::from_der(der) else {
        return false;
    };
    let [algorithm, data] = items.as_slice() else {
        return false;
    };
    if data.tag() != der::Tag::OctetString {
        return false;
    }
    algorithm
        .decode_as::<pkcs8::AlgorithmIdentifierRef<'_>>()
        .map(|alg| alg.oid.starts_with(OID_PKCS5) || alg.oid.starts_with(OID_PKCS12_PBE))
        .unwrap_or(false)
}

/// Number of significant bits in a big-endian unsigned integer.
pub(crate) fn bit_length(bytes: &[u8]) -> usize {
    let bytes = strip_zeros(bytes);
    match bytes.first() {
        Some(&first) => bytes.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// PEM with 64-column lines and LF endings, as openssl writes it.
pub(crate) fn pem_encode(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_forms_round_trip() {
        let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
        let sec1 = key.to_traditional_der();
        assert_eq!(sec1.len(), 121);
        let from_sec1 = PrivateKey::from_sec1_der(&sec1).unwrap();
        let from_pkcs8 = PrivateKey::from_pkcs8_der(&key.to_pkcs8_der()).unwrap();
        assert_eq!(from_sec1.to_traditional_der(), sec1);
        assert_eq!(from_pkcs8.to_traditional_der(), sec1);
        assert!(from_pkcs8.matches(&key.public_key()));
        assert_eq!(parse_der_key(&sec1).unwrap().key_type(), KeyType::EcP256);
    }

    #[test]
    fn rsa_forms_round_trip() {
        let key = PrivateKey::generate(KeyAlgorithm::Rsa2048).unwrap();
        assert_eq!(key.key_type(), KeyType::Rsa { bits: 2048 });
        let pkcs1 = key.to_traditional_der();
        let from_pkcs8 = PrivateKey::from_pkcs8_der(&key.to_pkcs8_der()).unwrap();
        assert_eq!(from_pkcs8.to_traditional_der(), pkcs1);
        assert!(parse_der_key(&pkcs1).unwrap().matches(&key.public_key()));
        assert!(
            key.to_traditional_pem()
                .starts_with("-----BEGIN RSA PRIVATE KEY-----\n")
        );
    }

    #[test]
    fn keys_of_different_kinds_never_match() {
        let ec = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
        let other = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
        assert!(!ec.matches(&other.public_key()));
        assert!(!ec.matches(&PublicKey::Rsa {
            n: vec![1],
            e: vec![3]
        }));
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
        assert_eq!(format!("{key:?}"), "PrivateKey(EC P-256)");
    }

    #[test]
    fn garbage_is_not_a_key_and_not_encrypted() {
        assert!(!is_encrypted_pkcs8(&[0x30, 0x03, 0x02, 0x01, 0x00]));
        assert!(matches!(
            parse_der_key(&[0x30, 0x03, 0x02, 0x01, 0x00]),
            Err(KeyError::Malformed(_))
        ));
    }
}
