//! Ready-made server certificates for Device Advisor's TLS cases, presented with
//! [`crate::Controls::present_server_certificate`] or `PUT /server-certificate
//! {"preset": NAME}`.
//!
//! | preset | what the device sees | a correct device |
//! |---|---|---|
//! | `untrusted-ca` | a certificate for the endpoint from a CA it does not trust | refuses |
//! | `wrong-name` | a certificate from the right CA for another host name | refuses |
//! | `expired` | a certificate from the right CA for the endpoint that expired yesterday | refuses |
//! | `large-chain` | a valid chain (RSA-2048 leaf and intermediate) well over 1.2x the usual size | connects |
//!
//! Every preset but `untrusted-ca` is signed by the broker's issuing CA
//! ([`crate::Config::issuing_ca`]); its names are those of the configured server
//! certificate, so only the property under test differs.

use std::fmt;
use std::str::FromStr;

use certs::pki::{self, CertificateAuthority, KeyAlgorithm};
use certs::x509::CertInfo;

use crate::error::StartError;

/// One of Device Advisor's TLS cases, as a server certificate to present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCertificateCase {
    UntrustedCa,
    WrongName,
    Expired,
    LargeChain,
}

impl ServerCertificateCase {
    pub const ALL: [Self; 4] = [
        Self::UntrustedCa,
        Self::WrongName,
        Self::Expired,
        Self::LargeChain,
    ];

    /// The preset's name in the control API.
    pub fn name(self) -> &'static str {
        match self {
            Self::UntrustedCa => "untrusted-ca",
            Self::WrongName => "wrong-name",
            Self::Expired => "expired",
            Self::LargeChain => "large-chain",
        }
    }

    /// Whether a correct device must refuse the handshake.
    pub fn must_be_refused(self) -> bool {
        self != Self::LargeChain
    }

    /// The chain (PEM, leaf first) and key (PKCS#8 PEM) to present. `server_names` are
    /// the names the usual certificate carries; `ca` is needed by every case but
    /// `untrusted-ca`.
    pub fn make(
        self,
        ca: Option<&CertificateAuthority>,
        server_names: &[&str],
    ) -> Result<(String, String), StartError> {
        let failed = |e: pki::PkiError| StartError::Tls(format!("{} preset: {e}", self.name()));
        let ca = || {
            ca.ok_or_else(|| {
                StartError::Tls(format!(
                    "the {} preset is signed by the broker's CA, and the broker has no CA key \
                     (Config::issuing_ca; `serve` loads ca.key.pem from --certs)",
                    self.name()
                ))
            })
        };
        let identity = match self {
            Self::UntrustedCa => {
                pki::server_cert_untrusted(server_names, KeyAlgorithm::EcP256)
                    .map_err(failed)?
                    .0
            }
            Self::WrongName => pki::server_cert_wrong_name(ca()?).map_err(failed)?,
            Self::Expired => pki::server_cert_expired(ca()?, server_names).map_err(failed)?,
            Self::LargeChain => {
                let chain = pki::server_chain_large(ca()?, server_names).map_err(failed)?;
                return Ok((chain.chain_pem(), chain.server.key_pem().to_string()));
            }
        };
        Ok((identity.cert_pem(), identity.key_pem().to_string()))
    }
}

impl fmt::Display for ServerCertificateCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a preset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown server certificate preset {0:?} (expected untrusted-ca, wrong-name, expired or large-chain)"
)]
pub struct UnknownPreset(pub String);

impl FromStr for ServerCertificateCase {
    type Err = UnknownPreset;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|case| case.name() == name)
            .ok_or_else(|| UnknownPreset(name.to_string()))
    }
}

/// The DNS and IP names of a certificate (DER), its CN if there are none.
pub fn names_of(cert_der: &[u8]) -> Result<Vec<String>, StartError> {
    let info = CertInfo::from_der(cert_der)
        .map_err(|e| StartError::Tls(format!("server certificate: {e}")))?;
    let mut names = info.subject_alt_names;
    if names.is_empty() {
        names.extend(info.common_name);
    }
    if names.is_empty() {
        return Err(StartError::Tls(
            "the server certificate names no host (no SAN, no CN)".into(),
        ));
    }
    Ok(names)
}
