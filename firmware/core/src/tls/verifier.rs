//! The server-certificate verifier plugged into embedded-tls.
//!
//! Rules:
//! - trust is one anchor, the CA DER from the flash image. A chain is trusted when,
//!   walking up from the leaf through certificates the server presented (in any order),
//!   some certificate *is* the anchor or is signed by the anchor's key under the anchor's
//!   name. So a chain that includes the root, or ends in a cross-signed copy of the root
//!   (another root's certificate for the anchor's subject and key), is accepted: the walk
//!   stops at the first certificate the anchor signed, before it reaches that copy.
//! - every certificate walked must be within its validity at `now`, Unix seconds from
//!   the synced clock (passed in: the core never reads a clock); without it nothing is
//!   trusted ([`VerifyError::ClockNotSet`]). The anchor's own validity is not checked
//!   (as webpki and browsers do).
//! - every issuer taken from the chain must be a CA (basicConstraints cA, keyCertSign if
//!   keyUsage is present); the leaf must allow serverAuth if it carries extendedKeyUsage.
//! - the leaf must name the server ([`super::name`]); the CertificateVerify signature
//!   must verify with the leaf's key over the handshake transcript.
//! - the precise reason of a refusal is kept in [`CertVerifier::last_error`], since
//!   embedded-tls only carries its own coarse error.
//!
//! Not enforced: pathLenConstraint, nameConstraints, unknown critical extensions,
//! revocation.

use embedded_tls::{
    CertificateEntryRef, CertificateRef, CertificateVerifyRef, TlsCipherSuite, TlsError,
    TlsVerifier,
};
use heapless::{String, Vec};
use sha2::Digest;

use super::cert::Certificate;
use super::error::VerifyError;
use super::name::{ServerName, certificate_matches};
use super::pubkey::PublicKey;

/// Epochs before this (2020-01-01T00:00:00Z) mean the clock was never synced.
pub const MIN_PLAUSIBLE_EPOCH: u64 = 1_577_836_800;

/// Most certificates the server may present (embedded-tls keeps at most 16).
pub const MAX_CHAIN_LEN: usize = 16;

/// Longest DNS name (RFC 1035).
const MAX_NAME_LEN: usize = 253;

/// Largest transcript hash (SHA-384).
const MAX_HASH_LEN: usize = 48;

/// Checks a server's certificate chain, without the TLS plumbing: the core of
/// [`CertVerifier`], usable on its own (the `certs` tool, tests).
///
/// `chain[0]` is the leaf; the rest may come in any order. Returns the leaf's key.
pub(crate) fn verify_chain(
    anchor_der: &[u8],
    chain: &[&[u8]],
    server_name: ServerName<'_>,
    now: Option<u64>,
) -> Result<PublicKey, VerifyError> {
    let now = now
        .filter(|&t| t >= MIN_PLAUSIBLE_EPOCH)
        .ok_or(VerifyError::ClockNotSet)?;
    let anchor = Certificate::parse(anchor_der).map_err(|_| VerifyError::BadTrustAnchor)?;
    let anchor_key = PublicKey::from_spki(&anchor.spki).map_err(|e| match e {
        VerifyError::UnsupportedKey => VerifyError::UnsupportedKey,
        _ => VerifyError::BadTrustAnchor,
    })?;
    if chain.len() > MAX_CHAIN_LEN {
        return Err(VerifyError::ChainTooLong);
    }
    let leaf_der = chain.first().ok_or(VerifyError::MalformedCertificate)?;
    let leaf = Certificate::parse(leaf_der).map_err(|_| VerifyError::MalformedCertificate)?;
    let leaf_key = PublicKey::from_spki(&leaf.spki)?;
    check_validity(&leaf, now)?;

    let mut used = [false; MAX_CHAIN_LEN];
    let mut current = leaf.clone();
    // Each step consumes one presented certificate, so the walk is bounded by the chain.
    loop {
        if current.raw == anchor.raw {
            break;
        }
        if current.issuer == anchor.subject && anchor_key.verify_certificate(&current).is_ok() {
            break;
        }
        current = find_issuer(chain, &mut used, &current, now)?;
    }

    if !leaf.allows_server_auth() {
        return Err(VerifyError::WrongKeyUsage);
    }
    if !certificate_matches(&leaf, server_name) {
        return Err(VerifyError::NameMismatch);
    }
    Ok(leaf_key)
}

/// The presented certificate that issued `child`, checked and marked used.
fn find_issuer<'c>(
    chain: &[&'c [u8]],
    used: &mut [bool; MAX_CHAIN_LEN],
    child: &Certificate<'_>,
    now: u64,
) -> Result<Certificate<'c>, VerifyError> {
    // Without a better candidate the anchor simply did not issue this chain.
    let mut reason = VerifyError::UnknownCa;
    for (index, der) in chain.iter().enumerate().skip(1) {
        if used.get(index).copied().unwrap_or(true) {
            continue;
        }
        let Ok(candidate) = Certificate::parse(der) else {
            reason = VerifyError::MalformedCertificate;
            continue;
        };
        if candidate.subject != child.issuer || candidate.raw == child.raw {
            continue;
        }
        if !candidate.can_sign_certificates() {
            reason = VerifyError::NotACa;
            continue;
        }
        let checked = PublicKey::from_spki(&candidate.spki)
            .and_then(|key| key.verify_certificate(child))
            .and_then(|()| check_validity(&candidate, now));
        match checked {
            Ok(()) => {
                if let Some(slot) = used.get_mut(index) {
                    *slot = true;
                }
                return Ok(candidate);
            }
            Err(e) => reason = e,
        }
    }
    Err(reason)
}

fn check_validity(cert: &Certificate<'_>, now: u64) -> Result<(), VerifyError> {
    if now < cert.not_before {
        Err(VerifyError::CertificateNotYetValid)
    } else if now > cert.not_after {
        Err(VerifyError::CertificateExpired)
    } else {
        Ok(())
    }
}

/// The embedded-tls [`TlsVerifier`]: verifies the server chain against one trust
/// anchor, the server name and the synced clock, then the CertificateVerify signature.
#[derive(Debug)]
pub struct CertVerifier<'a> {
    trust_anchor: &'a [u8],
    now: Option<u64>,
    server_name: Option<String<MAX_NAME_LEN>>,
    leaf_key: Option<PublicKey>,
    transcript: Vec<u8, MAX_HASH_LEN>,
    last_error: Option<VerifyError>,
}

impl<'a> CertVerifier<'a> {
    /// `trust_anchor` is the CA certificate DER (`/ca.der`); `now` the synced wall clock
    /// in Unix seconds, `None` until SNTP has answered.
    #[must_use]
    pub fn new(trust_anchor: &'a [u8], now: Option<u64>) -> Self {
        Self {
            trust_anchor,
            now,
            server_name: None,
            leaf_key: None,
            transcript: Vec::new(),
            last_error: None,
        }
    }

    /// Sets the name to verify; `TlsConfig::with_server_name` (which also sends SNI) sets
    /// it too, and wins when both are given.
    ///
    /// # Errors
    /// [`VerifyError::NameMismatch`] if the name is longer than a DNS name can be.
    pub fn with_server_name(mut self, name: &str) -> Result<Self, VerifyError> {
        self.server_name = Some(String::try_from(name).map_err(|_| VerifyError::NameMismatch)?);
        Ok(self)
    }

    /// Updates the clock before a new handshake.
    pub fn set_now(&mut self, now: Option<u64>) {
        self.now = now;
    }

    /// Why the last handshake's verification failed, if it did. Cleared when a
    /// handshake starts with a server name from `TlsConfig` (the usual path, since the
    /// name is also the SNI) and when a new Certificate arrives.
    #[must_use]
    pub fn last_error(&self) -> Option<VerifyError> {
        self.last_error
    }

    fn fail(&mut self, error: VerifyError) -> TlsError {
        self.last_error = Some(error);
        error.to_tls_error()
    }

    fn check_chain(&self, cert: &CertificateRef<'_>) -> Result<PublicKey, VerifyError> {
        let mut chain: Vec<&[u8], MAX_CHAIN_LEN> = Vec::new();
        for entry in &cert.entries {
            match entry {
                CertificateEntryRef::X509(der) => {
                    chain.push(der).map_err(|_| VerifyError::ChainTooLong)?
                }
                CertificateEntryRef::RawPublicKey(_) => {
                    return Err(VerifyError::MalformedCertificate);
                }
            }
        }
        let name = self
            .server_name
            .as_deref()
            .ok_or(VerifyError::NoServerName)?;
        verify_chain(self.trust_anchor, &chain, ServerName::parse(name), self.now)
    }
}

impl<CipherSuite: TlsCipherSuite> TlsVerifier<CipherSuite> for CertVerifier<'_> {
    fn set_hostname_verification(&mut self, hostname: &str) -> Result<(), TlsError> {
        let name = String::try_from(hostname).map_err(|_| self.fail(VerifyError::NameMismatch))?;
        self.server_name = Some(name);
        // A new handshake starts: forget the previous one.
        self.leaf_key = None;
        self.last_error = None;
        Ok(())
    }

    fn verify_certificate(
        &mut self,
        transcript: &CipherSuite::Hash,
        cert: CertificateRef<'_>,
    ) -> Result<(), TlsError> {
        self.leaf_key = None;
        self.last_error = None;
        let key = self.check_chain(&cert).map_err(|e| self.fail(e))?;
        let hash = transcript.clone().finalize();
        self.transcript = Vec::from_slice(&hash).map_err(|_| self.fail(VerifyError::OutOfOrder))?;
        self.leaf_key = Some(key);
        self.last_error = None;
        Ok(())
    }

    fn verify_signature(&mut self, verify: CertificateVerifyRef<'_>) -> Result<(), TlsError> {
        // One signature per verified certificate: taking the key forbids a replay.
        let key = self
            .leaf_key
            .take()
            .ok_or_else(|| self.fail(VerifyError::OutOfOrder))?;
        // RFC 8446 4.4.3: 64 spaces, the context string, a zero byte, the transcript hash.
        let mut message: Vec<u8, { 64 + 34 + MAX_HASH_LEN }> = Vec::new();
        let built = message
            .resize(64, b' ')
            .and_then(|()| message.extend_from_slice(b"TLS 1.3, server CertificateVerify\0"))
            .and_then(|()| message.extend_from_slice(&self.transcript));
        if built.is_err() {
            return Err(self.fail(VerifyError::OutOfOrder));
        }
        key.verify_tls13(verify.signature_scheme, &message, verify.signature)
            .map_err(|e| self.fail(e))
    }
}
