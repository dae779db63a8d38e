//! TLS pieces every board shares, on top of embedded-tls 0.19 (TLS 1.3 client).
//!
//! - [`DeviceProvider`]: embedded-tls's `CryptoProvider` — injected RNG, the device key
//!   and certificate for mutual TLS, and the verifier for the server.
//! - [`DeviceKey`]: the device's private key from DER in PKCS#8, SEC1 or PKCS#1, format
//!   detected ([`detect_key_format`]); P-256 signs ECDSA-SHA256, RSA signs RSA-PSS-SHA256.
//! - [`CertVerifier`]: embedded-tls's `TlsVerifier` — the server chain against the one
//!   trust anchor (`/ca.der`), every DNS and IP SAN, validity at the synced clock, and the
//!   CertificateVerify signature. Accepts every chain shape AWS IoT presents (with or
//!   without the root, ending in a cross-signed root, RSA or ECDSA); refusals carry a
//!   [`VerifyError`] with a log kind (`certificate-expired`, `unknown-ca`, ...).
//! - [`rsa_accel`] (`tls-rsa`): RSA-PSS signing through a board's modular-exponentiation
//!   hardware ([`rsa_accel::RsaExponentiator`], the ESP32-C3's RSA accelerator), each
//!   signature checked with the public key, software as the fallback.
//! - [`RecordAtomic`]: the transport under embedded-tls that hands up whole records only,
//!   so cancelling a read (minimq's `poll()` deadline) never desynchronises the stream.
//! - [`WriteGate`] and [`Gated`]: the other half of cancel-safety. A write is never
//!   cancelled: the wrapper under the record layer marks the gate busy while one is under
//!   way, and a driver lets a deadline win over the connection only when it is idle.
//!
//! # Features
//! - `tls`: all of the above for P-256 device keys and ECDSA (P-256/P-384) server chains;
//!   no allocator.
//! - `tls-rsa`: adds RSA-2048..4096 device keys and RSA server chains (Amazon Root CA 1).
//!   Needs a global allocator (`esp-alloc` on the device): the `rsa` crate allocates, and
//!   embedded-tls only has room for a 256-byte CertificateVerify with its `rsa` feature.
//!   On riscv32imc (no atomic CAS) the board must also enable `spin/portable_atomic` and
//!   `portable-atomic/unsafe-assume-single-core` for `rsa`'s `spin` dependency.
//!
//! # Usage
//! ```text
//! let key = DeviceKey::from_der(private_der)?;
//! let verifier = CertVerifier::new(ca_der, Some(epoch));
//! let mut provider: DeviceProvider<_> = DeviceProvider::new(trng, key, cert_der, verifier);
//! let config = TlsConfig::new().with_server_name(endpoint); // SNI and name to verify
//! let mut tls = TlsConnection::new(RecordAtomic::new(socket, &mut record_buf), &mut rx, &mut tx);
//! if let Err(e) = tls.open(TlsContext::new(&config, &mut provider)).await {
//!     let kind = handshake_error_kind(&e, provider.verify_error());
//! }
//! ```
//!
//! # Rules
//! No panics on network input; key bytes never in `Debug` or the log; the core reads no
//! clock (the epoch is passed in) and touches no socket (the transport is generic).

pub(crate) mod cert;
mod error;
mod gate;
mod key;
mod name;
mod provider;
pub(crate) mod pubkey;
mod record;
#[cfg(feature = "tls-rsa")]
pub mod rsa_accel;
mod verifier;

pub use error::{KeyError, VerifyError, handshake_error_kind, handshake_failure};
pub use gate::{Gated, WriteGate};
pub use key::{
    DeviceKey, DeviceSignature, KeyAlgorithm, KeyFormat, MAX_SIGNATURE_LEN, detect_key_format,
};
pub use name::{ServerName, dns_name_matches};
pub use provider::DeviceProvider;
pub use record::{MAX_RECORD_BODY, MAX_RECORD_LEN, RECORD_HEADER_LEN, RecordAtomic, RecordError};
pub use verifier::{CertVerifier, MAX_CHAIN_LEN, MIN_PLAUSIBLE_EPOCH};

/// Checks a server chain outside a handshake (diagnostics, the `certs` tool): `chain[0]`
/// is the leaf, the rest in any order; `server_name` a DNS name or IP literal.
///
/// # Errors
/// The [`VerifyError`] a handshake would refuse the chain with.
pub fn verify_server_chain(
    trust_anchor: &[u8],
    chain: &[&[u8]],
    server_name: &str,
    now: Option<u64>,
) -> Result<(), VerifyError> {
    verifier::verify_chain(trust_anchor, chain, ServerName::parse(server_name), now).map(|_| ())
}

/// The notAfter (Unix seconds) of a DER certificate, or `None` if it does not parse.
/// The session uses the device certificate's to refuse an SNTP time far beyond it.
#[must_use]
pub fn certificate_not_after(der: &[u8]) -> Option<u64> {
    cert::Certificate::parse(der).ok().map(|c| c.not_after)
}
