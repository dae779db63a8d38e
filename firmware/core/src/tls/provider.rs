//! The embedded-tls [`CryptoProvider`] of a device: its RNG, its key and certificate
//! for mutual TLS, and the [`CertVerifier`] for the server.
//!
//! Rules: the RNG is injected (the board's TRNG, `OsRng` on the host); the provider
//! reads no clock and does no I/O. Pass it as `&mut provider` to `TlsContext::new` to
//! keep it, so [`DeviceProvider::verify_error`] can tell why a handshake failed.

use core::marker::PhantomData;

use embedded_tls::{
    Aes128GcmSha256, Certificate, CryptoProvider, SignatureScheme, TlsCipherSuite, TlsError,
    TlsVerifier,
};
use p256::ecdsa::signature::{Error as SignatureError, SignerMut};
use rand_core::{CryptoRng, CryptoRngCore, RngCore};

use super::error::VerifyError;
use super::key::{DeviceKey, DeviceSignature};
#[cfg(feature = "tls-rsa")]
use super::rsa_accel::RsaExponentiator;
use super::verifier::CertVerifier;

/// Device credentials and server verification for one TLS 1.3 client.
///
/// `CipherSuite` defaults to TLS_AES_128_GCM_SHA256, which every TLS 1.3 server
/// (AWS IoT, rustls, OpenSSL, mosquitto) must support.
pub struct DeviceProvider<'a, R, CipherSuite = Aes128GcmSha256> {
    rng: R,
    key: DeviceKey,
    certificate: &'a [u8],
    verifier: CertVerifier<'a>,
    /// The board's RSA exponentiation hardware for an RSA device key, if any.
    #[cfg(feature = "tls-rsa")]
    rsa: Option<&'a mut dyn RsaExponentiator>,
    #[cfg(feature = "tls-rsa")]
    rsa_fault: bool,
    _cipher_suite: PhantomData<CipherSuite>,
}

impl<'a, R: CryptoRng + RngCore, CipherSuite: TlsCipherSuite> DeviceProvider<'a, R, CipherSuite> {
    /// `certificate` is the device certificate DER (`/cert.der`), `key` its private key
    /// (see [`DeviceKey::from_der`]), `verifier` checks the server.
    pub fn new(rng: R, key: DeviceKey, certificate: &'a [u8], verifier: CertVerifier<'a>) -> Self {
        Self {
            rng,
            key,
            certificate,
            verifier,
            #[cfg(feature = "tls-rsa")]
            rsa: None,
            #[cfg(feature = "tls-rsa")]
            rsa_fault: false,
            _cipher_suite: PhantomData,
        }
    }

    /// Sign with an RSA device key through `hw` (the board's accelerator) instead of in
    /// software; each signature is checked with the public key, and one that fails is
    /// made again in software (see [`super::rsa_accel`]). No effect on a P-256 key.
    #[cfg(feature = "tls-rsa")]
    #[must_use]
    pub fn with_rsa_exponentiator(mut self, hw: &'a mut dyn RsaExponentiator) -> Self {
        self.rsa = Some(hw);
        self
    }

    /// Whether the RSA hardware produced a signature that did not verify in this
    /// provider's handshakes (the software signature was sent instead).
    #[cfg(feature = "tls-rsa")]
    #[must_use]
    pub fn rsa_exponentiator_faulted(&self) -> bool {
        self.rsa_fault
    }

    /// Why the server was refused in the last handshake, if the verifier refused it.
    #[must_use]
    pub fn verify_error(&self) -> Option<VerifyError> {
        self.verifier.last_error()
    }

    /// The verifier, e.g. to [`CertVerifier::set_now`] before reconnecting.
    pub fn verifier_mut(&mut self) -> &mut CertVerifier<'a> {
        &mut self.verifier
    }

    /// The device key.
    #[must_use]
    pub fn key(&self) -> &DeviceKey {
        &self.key
    }
}

impl<R: CryptoRng + RngCore, CipherSuite: TlsCipherSuite> CryptoProvider
    for DeviceProvider<'_, R, CipherSuite>
{
    type CipherSuite = CipherSuite;
    type Signature = DeviceSignature;

    fn rng(&mut self) -> impl CryptoRngCore {
        &mut self.rng
    }

    fn verifier(&mut self) -> Result<&mut impl TlsVerifier<CipherSuite>, TlsError> {
        Ok(&mut self.verifier)
    }

    fn signer(&mut self) -> Result<(impl SignerMut<DeviceSignature>, SignatureScheme), TlsError> {
        let scheme = self.key.signature_scheme();
        Ok((
            DeviceSigner {
                key: &self.key,
                rng: &mut self.rng,
                #[cfg(feature = "tls-rsa")]
                rsa: self
                    .rsa
                    .as_deref_mut()
                    .map(|hw| hw as &mut dyn RsaExponentiator),
                #[cfg(feature = "tls-rsa")]
                rsa_fault: &mut self.rsa_fault,
            },
            scheme,
        ))
    }

    fn client_cert(&mut self) -> Option<Certificate<impl AsRef<[u8]>>> {
        Some(Certificate::X509(self.certificate))
    }
}

/// The signer handed to embedded-tls for one CertificateVerify.
pub(crate) struct DeviceSigner<'k, R> {
    pub key: &'k DeviceKey,
    pub rng: R,
    /// The board's RSA exponentiation hardware, if it has one (see [`super::rsa_accel`]).
    #[cfg(feature = "tls-rsa")]
    pub rsa: Option<&'k mut dyn RsaExponentiator>,
    /// Set when the hardware's signature did not verify (the software one was sent).
    #[cfg(feature = "tls-rsa")]
    pub rsa_fault: &'k mut bool,
}

impl<R: CryptoRng + RngCore> SignerMut<DeviceSignature> for DeviceSigner<'_, R> {
    fn try_sign(&mut self, message: &[u8]) -> Result<DeviceSignature, SignatureError> {
        #[cfg(feature = "tls-rsa")]
        if let (DeviceKey::Rsa(key), Some(hw)) = (self.key, self.rsa.as_deref_mut()) {
            use super::rsa_accel::{Signed, sign_pss};
            match sign_pss(key.as_ref(), hw, &mut self.rng, message) {
                Signed::Accelerated(signature) => return Ok(signature),
                Signed::Unsupported => {}
                Signed::AcceleratorFault => *self.rsa_fault = true,
            }
        }
        self.key.sign(&mut self.rng, message)
    }
}
