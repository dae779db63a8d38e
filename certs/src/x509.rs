//! Reading certificates and keys from files: PEM or DER, autodetected.

use std::path::Path;

use pkcs8::ObjectIdentifier;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate, X509Version};
use x509_parser::public_key::PublicKey as X509PublicKey;

use crate::error::{CertsError, InputProblem};
use crate::keys::{self, KeyError, KeyType, PrivateKey, PublicKey};

/// A certificate is "about to expire" inside this window.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// What a certificate says, in the terms the checks and `inspect` need.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub common_name: Option<String>,
    /// `true` if the subject has an organisation (O=) attribute.
    pub has_organization: bool,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub public_key: PublicKey,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    pub self_issued: bool,
    /// X.509 version as written on the certificate (1 or 3).
    pub version: u32,
    /// DNS and IP subject alternative names, as text.
    pub subject_alt_names: Vec<String>,
    pub sha256: [u8; 32],
}

impl CertInfo {
    /// Parse one DER certificate; trailing bytes are an error.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            return Err(format!(
                "{} trailing bytes after the certificate",
                rest.len()
            ));
        }
        Self::from_parsed(&cert, der)
    }

    fn from_parsed(cert: &X509Certificate<'_>, der: &[u8]) -> Result<Self, String> {
        let validity = cert.validity();
        let not_before = validity.not_before.to_datetime();
        let not_after = validity.not_after.to_datetime();
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| format!("basicConstraints: {e}"))?
            .is_some_and(|bc| bc.value.ca);
        let mut subject_alt_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            use x509_parser::extensions::GeneralName;
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => subject_alt_names.push(dns.to_string()),
                    GeneralName::IPAddress(ip) => subject_alt_names.push(ip_to_string(ip)),
                    _ => {}
                }
            }
        }
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let version = match cert.version() {
            X509Version::V1 => 1,
            X509Version::V2 => 2,
            X509Version::V3 => 3,
            X509Version(other) => other + 1,
        };
        Ok(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            common_name,
            has_organization: cert.subject().iter_organization().next().is_some(),
            not_before,
            not_after,
            public_key: public_key_of(cert),
            is_ca,
            self_issued: cert.subject().as_raw() == cert.issuer().as_raw(),
            version,
            subject_alt_names,
            sha256: Sha256::digest(der).into(),
        })
    }

    /// A CA the device can trust: CA:TRUE, or a self-signed v1 root (old roots have no
    /// extensions at all).
    pub fn usable_as_ca(&self) -> bool {
        self.is_ca || (self.version == 1 && self.self_issued)
    }

    /// Colon-separated upper-case hex, as `openssl x509 -fingerprint -sha256` prints it.
    pub fn fingerprint(&self) -> String {
        self.sha256
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Error if `now` is outside the validity window; a warning if it ends within
    /// [`EXPIRY_WARNING_DAYS`].
    pub fn check_validity(&self, now: OffsetDateTime) -> Result<Option<String>, InputProblem> {
        if now > self.not_after {
            return Err(InputProblem::Expired(format_time(self.not_after)));
        }
        if now < self.not_before {
            return Err(InputProblem::NotYetValid(format_time(self.not_before)));
        }
        let left = self.not_after - now;
        if left.whole_days() < EXPIRY_WARNING_DAYS {
            return Ok(Some(format!(
                "certificate expires in {} days ({})",
                left.whole_days(),
                format_time(self.not_after)
            )));
        }
        Ok(None)
    }
}

fn ip_to_string(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).expect("length checked"))
            .to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).expect("length checked"))
            .to_string(),
        _ => format!("IP {bytes:02x?}"),
    }
}

fn public_key_of(cert: &X509Certificate<'_>) -> PublicKey {
    let spki = cert.public_key();
    let oid = ObjectIdentifier::from_bytes(spki.algorithm.algorithm.as_bytes()).ok();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .and_then(|o| ObjectIdentifier::from_bytes(o.as_bytes()).ok());
    let key_type = match oid {
        Some(oid) => KeyType::from_algorithm(oid, curve),
        None => KeyType::Other("unknown algorithm".into()),
    };
    match (key_type, spki.parsed()) {
        (KeyType::Rsa { .. }, Ok(X509PublicKey::RSA(rsa))) => PublicKey::Rsa {
            n: rsa.modulus.to_vec(),
            e: rsa.exponent.to_vec(),
        },
        (KeyType::EcP256, Ok(X509PublicKey::EC(point))) => PublicKey::EcP256(point.data().to_vec()),
        (other, _) => PublicKey::Other(other),
    }
}

/// `2026-11-27 20:47:00 UTC`.
pub fn format_time(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// PEM text of a DER certificate.
pub fn cert_pem(der: &[u8]) -> String {
    keys::pem_encode("CERTIFICATE", der)
}

/// One object found in an input file.
#[derive(Debug, Clone)]
pub enum Object {
    Certificate(Vec<u8>),
    PrivateKey(PrivateKey),
    /// A key the firmware cannot use, kept so `inspect` can describe it.
    UnsupportedKey(KeyType),
    /// `BEGIN PUBLIC KEY` and other PEM blocks we only name.
    Other(String),
}

/// Read a file the user named; a missing file is their problem, not an I/O failure.
pub fn read_input(path: &Path) -> Result<Vec<u8>, CertsError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CertsError::input(path, InputProblem::Missing),
        _ if path.is_dir() => {
            CertsError::input(path, InputProblem::Unreadable("is a directory".into()))
        }
        _ => CertsError::input(path, InputProblem::Unreadable(e.to_string())),
    })
}

/// Whether bytes are PEM (text with a `-----BEGIN` line) rather than DER.
pub fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Decode every object in a PEM file, or the single object of a DER file.
pub fn decode_objects(path: &Path, bytes: &[u8]) -> Result<Vec<Object>, CertsError> {
    let bad = |problem| CertsError::input(path, problem);
    if looks_like_pem(bytes) {
        let blocks = pem::parse_many(bytes)
            .map_err(|e| bad(InputProblem::NotPemOrDer(format!("malformed PEM: {e}"))))?;
        if blocks.is_empty() {
            return Err(bad(InputProblem::NotPemOrDer(
                "malformed PEM: no complete BEGIN/END block".into(),
            )));
        }
        let mut objects = Vec::new();
        for block in &blocks {
            if let Some(object) = decode_pem_block(block).map_err(bad)? {
                objects.push(object);
            }
        }
        return Ok(objects);
    }
    if bytes.first() != Some(&0x30) {
        return Err(bad(InputProblem::NotPemOrDer(
            "no PEM header and not a DER SEQUENCE".into(),
        )));
    }
    // DER: a certificate, or a private key in any of its forms.
    if X509Certificate::from_der(bytes).is_ok() {
        CertInfo::from_der(bytes).map_err(|detail| {
            bad(InputProblem::Malformed {
                what: "certificate",
                detail,
            })
        })?;
        return Ok(vec![Object::Certificate(bytes.to_vec())]);
    }
    match keys::parse_der_key(bytes) {
        Ok(key) => Ok(vec![Object::PrivateKey(key)]),
        Err(KeyError::Encrypted) => Err(bad(InputProblem::EncryptedKey)),
        Err(KeyError::Unsupported(t)) => Ok(vec![Object::UnsupportedKey(t)]),
        Err(KeyError::Malformed(_)) => Err(bad(InputProblem::NotPemOrDer(
            "DER that is neither a certificate nor a private key".into(),
        ))),
    }
}

/// `Ok(None)` for blocks that carry no object (`EC PARAMETERS` ahead of an EC key).
fn decode_pem_block(block: &pem::Pem) -> Result<Option<Object>, InputProblem> {
    let contents = block.contents();
    let encrypted_header = block
        .headers()
        .get("Proc-Type")
        .is_some_and(|v| v.contains("ENCRYPTED"));
    if encrypted_header {
        return Err(InputProblem::EncryptedKey);
    }
    let key = |result: Result<PrivateKey, KeyError>| match result {
        Ok(key) => Ok(Some(Object::PrivateKey(key))),
        Err(KeyError::Encrypted) => Err(InputProblem::EncryptedKey),
        Err(KeyError::Unsupported(t)) => Ok(Some(Object::UnsupportedKey(t))),
        Err(KeyError::Malformed(detail)) => Err(InputProblem::Malformed {
            what: "private key",
            detail,
        }),
    };
    match block.tag() {
        "CERTIFICATE" | "X509 CERTIFICATE" => {
            CertInfo::from_der(contents).map_err(|detail| InputProblem::Malformed {
                what: "certificate",
                detail,
            })?;
            Ok(Some(Object::Certificate(contents.to_vec())))
        }
        "PRIVATE KEY" => key(PrivateKey::from_pkcs8_der(contents)),
        "RSA PRIVATE KEY" => key(PrivateKey::from_pkcs1_der(contents)),
        "EC PRIVATE KEY" => key(PrivateKey::from_sec1_der(contents)),
        "ENCRYPTED PRIVATE KEY" => Err(InputProblem::EncryptedKey),
        "EC PARAMETERS" => Ok(None),
        other if other.ends_with("PRIVATE KEY") => {
            // OPENSSH, DSA, ... : say what it is rather than "malformed".
            Ok(Some(Object::UnsupportedKey(KeyType::Other(
                other.trim_end_matches(" PRIVATE KEY").to_string(),
            ))))
        }
        other => Ok(Some(Object::Other(other.to_string()))),
    }
}

/// Read exactly one certificate from a file (PEM or DER).
pub fn read_certificate(path: &Path) -> Result<(Vec<u8>, CertInfo), CertsError> {
    let bytes = read_input(path)?;
    let objects = decode_objects(path, &bytes)?;
    let mut certs: Vec<Vec<u8>> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Certificate(der) => Some(der.clone()),
            _ => None,
        })
        .collect();
    match certs.len() {
        1 => {
            let der = certs.remove(0);
            let info = CertInfo::from_der(&der).map_err(|detail| {
                CertsError::input(
                    path,
                    InputProblem::Malformed {
                        what: "certificate",
                        detail,
                    },
                )
            })?;
            Ok((der, info))
        }
        0 => Err(CertsError::input(
            path,
            InputProblem::WrongKind {
                expected: "a certificate",
                found: describe(&objects),
            },
        )),
        n => Err(CertsError::input(
            path,
            InputProblem::Other(format!(
                "holds {n} certificates; the device stores one (split the file)"
            )),
        )),
    }
}

/// Read exactly one private key from a file (PEM or DER); unsupported types are errors.
pub fn read_private_key(path: &Path) -> Result<PrivateKey, CertsError> {
    let bytes = read_input(path)?;
    let objects = decode_objects(path, &bytes)?;
    let mut found = None;
    for object in &objects {
        match object {
            Object::PrivateKey(key) if found.is_none() => found = Some(key.clone()),
            Object::PrivateKey(_) => {
                return Err(CertsError::input(
                    path,
                    InputProblem::Other("holds more than one private key".into()),
                ));
            }
            Object::UnsupportedKey(t) => {
                return Err(CertsError::input(
                    path,
                    InputProblem::UnsupportedKey(t.to_string()),
                ));
            }
            _ => {}
        }
    }
    let key = found.ok_or_else(|| {
        CertsError::input(
            path,
            InputProblem::WrongKind {
                expected: "a private key",
                found: describe(&objects),
            },
        )
    })?;
    if !key.key_type().firmware_supported() {
        return Err(CertsError::input(
            path,
            InputProblem::UnsupportedKey(key.key_type().to_string()),
        ));
    }
    Ok(key)
}

fn describe(objects: &[Object]) -> String {
    match objects.first() {
        None => "nothing".into(),
        Some(Object::Certificate(_)) => "a certificate".into(),
        Some(Object::PrivateKey(_)) | Some(Object::UnsupportedKey(_)) => "a private key".into(),
        Some(Object::Other(tag)) => format!("a PEM {tag} block"),
    }
}

/// Whether bytes parse as a DER certificate (used to tell images from DER files).
pub fn is_der_certificate(bytes: &[u8]) -> bool {
    bytes.first() == Some(&0x30) && CertInfo::from_der(bytes).is_ok()
}
