//! Errors of the TLS pieces, each with a stable kebab-case kind for the serial log.
//!
//! embedded-tls reports failures as its own coarse [`TlsError`]; the verifier and the
//! key loader keep the precise reason here so the log can say *why* a handshake failed
//! (`E (...) tls: handshake failed error=certificate-expired`).

use core::fmt;

use embedded_tls::TlsError;

/// Why the server's certificate chain or CertificateVerify was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// No synced wall clock was given (or it is before [`super::MIN_PLAUSIBLE_EPOCH`]).
    ClockNotSet,
    /// A certificate's notAfter is in the past.
    CertificateExpired,
    /// A certificate's notBefore is in the future.
    CertificateNotYetValid,
    /// No certificate in the chain is the trust anchor or is signed by its key.
    UnknownCa,
    /// An issuing certificate in the chain is not a CA (basicConstraints / keyUsage).
    NotACa,
    /// The leaf names neither the server name (DNS or IP SANs, CN without SANs).
    NameMismatch,
    /// No server name was configured, so the leaf cannot be matched to anything.
    NoServerName,
    /// The leaf's extendedKeyUsage excludes TLS server authentication.
    WrongKeyUsage,
    /// A certificate or CertificateVerify signature does not verify.
    BadSignature,
    /// A key type, curve or size this verifier does not handle.
    UnsupportedKey,
    /// A signature algorithm (certificate) or scheme (CertificateVerify) not handled.
    UnsupportedAlgorithm,
    /// A certificate is not valid DER X.509 (or the server sent no certificate).
    MalformedCertificate,
    /// The configured trust anchor itself cannot be parsed.
    BadTrustAnchor,
    /// The chain is longer than the verifier will walk.
    ChainTooLong,
    /// CertificateVerify arrived without a verified Certificate before it.
    OutOfOrder,
}

impl VerifyError {
    /// The log kind: stable, kebab-case.
    #[must_use]
    pub const fn kind(self) -> &'static str {
        match self {
            Self::ClockNotSet => "clock-not-set",
            Self::CertificateExpired => "certificate-expired",
            Self::CertificateNotYetValid => "certificate-not-yet-valid",
            Self::UnknownCa => "unknown-ca",
            Self::NotACa => "not-a-ca",
            Self::NameMismatch => "name-mismatch",
            Self::NoServerName => "no-server-name",
            Self::WrongKeyUsage => "wrong-key-usage",
            Self::BadSignature => "bad-signature",
            Self::UnsupportedKey => "unsupported-key",
            Self::UnsupportedAlgorithm => "unsupported-algorithm",
            Self::MalformedCertificate => "malformed-certificate",
            Self::BadTrustAnchor => "bad-trust-anchor",
            Self::ChainTooLong => "chain-too-long",
            Self::OutOfOrder => "unexpected-message",
        }
    }

    /// The embedded-tls error handed back through `TlsVerifier`.
    #[must_use]
    pub const fn to_tls_error(self) -> TlsError {
        match self {
            Self::BadSignature => TlsError::InvalidSignature,
            Self::UnsupportedAlgorithm => TlsError::InvalidSignatureScheme,
            Self::OutOfOrder => TlsError::InvalidHandshake,
            _ => TlsError::InvalidCertificate,
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

impl core::error::Error for VerifyError {}

/// Why the device's private key could not be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Not DER PKCS#8, SEC1 or PKCS#1, or inconsistent inside.
    Malformed,
    /// A well-formed key of a type or size this build does not sign with (an RSA key
    /// without the `tls-rsa` feature, a P-384 or Ed25519 key, RSA below 2048 bits).
    Unsupported,
}

impl KeyError {
    /// The log kind: stable, kebab-case.
    #[must_use]
    pub const fn kind(self) -> &'static str {
        match self {
            Self::Malformed => "malformed-key",
            Self::Unsupported => "unsupported-key",
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

impl core::error::Error for KeyError {}

/// The log classification of a failed handshake whose log kind is `kind` (from
/// [`handshake_error_kind`]); a kind the log has no slug for falls back on `error`.
#[must_use]
pub fn handshake_failure(error: &TlsError, kind: &str) -> crate::log::TlsError {
    use crate::log::TlsError as T;
    match (kind.parse(), error) {
        (Ok(slug), _) => slug,
        (Err(_), TlsError::HandshakeAborted(..)) => T::PeerAlert,
        (Err(_), TlsError::Io(_) | TlsError::IoError | TlsError::ConnectionClosed) => T::Io,
        (Err(_), _) => T::Other,
    }
}

/// The log kind of a failed `TlsConnection::open`, preferring the verifier's precise
/// reason (pass [`super::DeviceProvider::verify_error`]) over embedded-tls's coarse one.
#[must_use]
pub fn handshake_error_kind(error: &TlsError, verify: Option<VerifyError>) -> &'static str {
    use embedded_tls::alert::AlertDescription as A;
    if let Some(v) = verify {
        return v.kind();
    }
    match error {
        TlsError::ConnectionClosed | TlsError::IoError | TlsError::Io(_) => "io",
        TlsError::HandshakeAborted(_, description) => match description {
            A::BadCertificate => "peer-rejected-certificate",
            A::CertificateRequired => "peer-requires-certificate",
            A::UnknownCa => "peer-unknown-ca",
            A::CertificateExpired => "peer-certificate-expired",
            A::HandshakeFailure => "peer-handshake-failure",
            A::DecryptError => "peer-decrypt-error",
            A::ProtocolVersion => "peer-protocol-version",
            A::UnrecognizedName => "peer-unrecognized-name",
            _ => "peer-alert",
        },
        TlsError::InvalidPrivateKey => "unsupported-key",
        TlsError::InvalidSignature => "bad-signature",
        TlsError::InvalidCertificate | TlsError::InvalidCertificateEntry => "malformed-certificate",
        TlsError::InsufficientSpace | TlsError::OutOfMemory => "buffer-too-small",
        _ => "protocol-error",
    }
}
