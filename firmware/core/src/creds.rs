//! The credential check every loader runs ([`check_credentials`], feature `tls`): the ESP32-C3 and the virtual
//! device when they load the flash image ([`crate::image::Mounted::load_credentials`]),
//! and the `certs` tool when it imports, builds or inspects credentials. One function, so
//! a set the tool accepts is a set the device accepts, and a bad file is named the same
//! way everywhere.
//!
//! Without it a damaged file surfaces late and nameless: a flipped byte in `/ca.der` as
//! `tls: handshake failed error=other`, a garbage `/private.der` as
//! `unsupported-algorithm` at the handshake.
//!
//! [`check_credentials`] checks, in this order, naming the file at fault:
//! 1. `/cert.der` is one well-formed DER X.509 certificate with a key the device can use;
//! 2. `/private.der` is a well-formed DER private key (PKCS#8, SEC1 or PKCS#1) this build
//!    can sign with, and it is the key of `/cert.der`;
//! 3. `/ca.der` is one well-formed DER certificate with a key the verifier handles, it is
//!    a CA (basicConstraints CA:TRUE, keyCertSign if keyUsage is present, or a
//!    self-signed v1 root), and a self-signed one carries a valid self-signature — the
//!    only way to catch a damaged byte in the signed part or the signature of a root.
//!
//! Nothing here reads a clock: validity dates are the verifier's (with the synced time)
//! and the `certs` tool's business.

use core::fmt;

use crate::log::{FlashFile, LoadError};
#[cfg(feature = "tls")]
use crate::tls::cert::{Certificate, TAG_CTX0, TAG_INTEGER, TAG_SEQUENCE, only, optional};
#[cfg(feature = "tls")]
use crate::tls::pubkey::PublicKey;
#[cfg(feature = "tls")]
use crate::tls::{DeviceKey, KeyAlgorithm, KeyError, VerifyError};

/// A credential file the device would refuse, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredsFailure {
    pub file: FlashFile,
    /// `Empty`, `Pem`, `Malformed`, `UnsupportedKey`, `KeyMismatch`, `NotCa` or
    /// `BadSignature`.
    pub error: LoadError,
}

impl fmt::Display for CredsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, describe(self.file, self.error))
    }
}

/// A sentence for `error` on `file`, for people (the log has the slug).
pub fn describe(file: FlashFile, error: LoadError) -> &'static str {
    match (file, error) {
        (_, LoadError::Empty) => "empty file",
        (FlashFile::Key, LoadError::Malformed) => "not a DER private key (PKCS#8, SEC1 or PKCS#1)",
        (_, LoadError::Malformed) => "not a well-formed DER X.509 certificate",
        (FlashFile::Key, LoadError::UnsupportedKey) => {
            "a key type this firmware cannot sign with (it uses EC P-256 and RSA-2048..4096)"
        }
        (_, LoadError::UnsupportedKey) => "a certificate key type the firmware does not handle",
        (_, LoadError::KeyMismatch) => "not the private key of /cert.der",
        (_, LoadError::NotCa) => {
            "not a CA certificate (no basicConstraints CA:TRUE with keyCertSign, not a self-signed v1 root)"
        }
        (_, LoadError::BadSignature) => "its self-signature does not verify: the file is damaged",
        (FlashFile::Key, LoadError::Pem) => {
            "PEM text where DER is expected: convert it (`openssl pkey -in KEY.pem -outform der`) or let `certs import` do it"
        }
        (_, LoadError::Pem) => {
            "PEM text where DER is expected: convert it (`openssl x509 -in CERT.pem -outform der`) or let `certs import` do it"
        }
        (_, other) => other.as_str(),
    }
}

/// What a passing check learnt, for the log and the tool.
#[cfg(feature = "tls")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedCredentials {
    pub key: KeyAlgorithm,
}

#[cfg(feature = "tls")]
/// Check the device certificate, its private key and the broker's CA as described in
/// the module docs. Key bytes are parsed, never copied out or shown.
pub fn check_credentials(
    cert: &[u8],
    key: &[u8],
    ca: &[u8],
) -> Result<CheckedCredentials, CredsFailure> {
    let fail = |file, error| CredsFailure { file, error };
    for (file, bytes) in [
        (FlashFile::Cert, cert),
        (FlashFile::Key, key),
        (FlashFile::Ca, ca),
    ] {
        if bytes.is_empty() {
            return Err(fail(file, LoadError::Empty));
        }
        // The commonest mistake: a file copied from the AWS console as it downloads.
        if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            return Err(fail(file, LoadError::Pem));
        }
    }

    let cert = Certificate::parse(cert).map_err(|_| fail(FlashFile::Cert, LoadError::Malformed))?;
    let cert_key =
        PublicKey::from_spki(&cert.spki).map_err(|e| fail(FlashFile::Cert, key_error(e)))?;
    let key = DeviceKey::from_der(key).map_err(|e| {
        fail(
            FlashFile::Key,
            match e {
                KeyError::Unsupported => LoadError::UnsupportedKey,
                _ => LoadError::Malformed,
            },
        )
    })?;
    if !is_key_of(&key, &cert_key) {
        return Err(fail(FlashFile::Key, LoadError::KeyMismatch));
    }

    let ca = Certificate::parse(ca).map_err(|_| fail(FlashFile::Ca, LoadError::Malformed))?;
    let ca_key = PublicKey::from_spki(&ca.spki).map_err(|e| fail(FlashFile::Ca, key_error(e)))?;
    let self_issued = ca.subject == ca.issuer;
    let v1_root = self_issued && version(&ca) == Some(0);
    if !(ca.can_sign_certificates() || v1_root) {
        return Err(fail(FlashFile::Ca, LoadError::NotCa));
    }
    // A root signed with an algorithm the verifier lacks (SHA-1) is still usable as an
    // anchor: the verifier never checks the anchor's own signature. A signature that
    // fails to verify is damage.
    if self_issued && ca_key.verify_certificate(&ca) == Err(VerifyError::BadSignature) {
        return Err(fail(FlashFile::Ca, LoadError::BadSignature));
    }
    Ok(CheckedCredentials {
        key: key.algorithm(),
    })
}

#[cfg(feature = "tls")]
fn key_error(e: VerifyError) -> LoadError {
    match e {
        VerifyError::UnsupportedKey => LoadError::UnsupportedKey,
        _ => LoadError::Malformed,
    }
}

#[cfg(feature = "tls")]
/// Whether `key` is the private half of the certificate key `public`.
fn is_key_of(key: &DeviceKey, public: &PublicKey) -> bool {
    match (key, public) {
        (DeviceKey::P256(signing), PublicKey::P256(verifying)) => {
            signing.verifying_key() == verifying
        }
        #[cfg(feature = "tls-rsa")]
        (DeviceKey::Rsa(signing), PublicKey::Rsa(verifying)) => {
            use rsa::traits::PublicKeyParts;
            let private: &rsa::RsaPrivateKey = signing.as_ref();
            private.n() == verifying.n() && private.e() == verifying.e()
        }
        _ => false,
    }
}

#[cfg(feature = "tls")]
/// The certificate's version field (0 = v1), `None` if it cannot be read.
fn version(cert: &Certificate<'_>) -> Option<u8> {
    let mut tbs = only(cert.tbs, TAG_SEQUENCE).ok()?.value;
    match optional(&mut tbs, TAG_CTX0).ok()? {
        None => Some(0),
        Some(explicit) => match only(explicit.value, TAG_INTEGER).ok()?.value {
            [v] => Some(*v),
            _ => None,
        },
    }
}
