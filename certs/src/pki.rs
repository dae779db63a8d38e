//! Making test PKIs: the one `certs init` writes, and the chains and bad certificates the
//! rig's TLS tests need.
//!
//! ```no_run
//! use certs::pki::{CertificateAuthority, KeyAlgorithm, Validity};
//!
//! let ca = CertificateAuthority::root("Test CA", KeyAlgorithm::EcP256, Validity::days(30))?;
//! let server = ca.issue_server(&["localhost", "127.0.0.1"], KeyAlgorithm::EcP256, Validity::days(30))?;
//! let device = ca.issue_client("ESPthing", KeyAlgorithm::EcP256, Validity::days(30))?;
//! let expired = certs::pki::server_cert_expired(&ca, &["localhost"])?;
//! # Ok::<(), certs::pki::PkiError>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::keys::{KeyError, PrivateKey};
use crate::output::OutFile;
use crate::policy::{self, DEFAULT_OBSERVER_CLIENT_ID, THING_NAME_CLIENT};

/// Every constructor here takes one; re-exported so PKI callers need only this module.
pub use crate::keys::KeyAlgorithm;

/// Generating or signing failed: a bug or a missing system RNG, never the user's input
/// (names are validated before they get here).
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("key generation failed: {0}")]
    Key(String),
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("{0}")]
    InvalidName(String),
}

impl From<KeyError> for PkiError {
    fn from(e: KeyError) -> Self {
        PkiError::Key(format!("{e:?}"))
    }
}

/// A validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (tolerates a device clock slightly behind) for `days` days.
    pub fn days(days: u32) -> Self {
        let now = now_seconds();
        Self {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days.into()),
        }
    }

    /// Ended yesterday, began 60 days ago.
    pub fn expired() -> Self {
        let now = now_seconds();
        Self {
            not_before: now - Duration::days(60),
            not_after: now - Duration::days(1),
        }
    }

    /// Begins tomorrow.
    pub fn not_yet_valid() -> Self {
        let now = now_seconds();
        Self {
            not_before: now + Duration::days(1),
            not_after: now + Duration::days(60),
        }
    }
}

fn now_seconds() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

/// A certificate with its private key.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert_der: Vec<u8>,
    pub key: PrivateKey,
}

impl Identity {
    pub fn cert_pem(&self) -> String {
        crate::x509::cert_pem(&self.cert_der)
    }

    /// PKCS#8 PEM, which rustls, mosquitto and openssl all read.
    pub fn key_pem(&self) -> Zeroizing<String> {
        self.key.to_pkcs8_pem()
    }

    /// `NAME.pem NAME.der NAME.key.pem NAME.key.der` (keys PKCS#8, mode 0600).
    pub fn files(&self, name: &str) -> Vec<OutFile> {
        vec![
            OutFile::public(format!("{name}.pem"), self.cert_pem()),
            OutFile::public(format!("{name}.der"), self.cert_der.clone()),
            OutFile::secret(format!("{name}.key.pem"), self.key_pem().as_bytes()),
            OutFile::secret(format!("{name}.key.der"), self.key.to_pkcs8_der().to_vec()),
        ]
    }
}

/// A CA that can issue certificates.
pub struct CertificateAuthority {
    // Crate-visible so `load` can rebuild a CA from the files `certs init` wrote.
    pub(crate) params: CertificateParams,
    pub(crate) signer: KeyPair,
    pub identity: Identity,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.params.distinguished_name)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A self-signed root (CN only, CA:TRUE without path length limit).
    pub fn root(
        common_name: &str,
        algorithm: KeyAlgorithm,
        validity: Validity,
    ) -> Result<Self, PkiError> {
        Self::root_with_subject(&[(DnType::CommonName, common_name)], algorithm, validity)
    }

    /// A self-signed root with a full subject, e.g. `O=Amazon, CN=Amazon Root CA 1`.
    pub fn root_with_subject(
        subject: &[(DnType, &str)],
        algorithm: KeyAlgorithm,
        validity: Validity,
    ) -> Result<Self, PkiError> {
        let params = ca_params(subject, validity, BasicConstraints::Unconstrained)?;
        let key = PrivateKey::generate(algorithm)?;
        let signer = key.to_rcgen()?;
        let cert = params.self_signed(&signer)?;
        Ok(Self {
            params,
            signer,
            identity: Identity {
                cert_der: cert.der().to_vec(),
                key,
            },
        })
    }

    /// An intermediate CA signed by this one (path length 0: it signs leaves only).
    pub fn intermediate(
        &self,
        subject: &[(DnType, &str)],
        algorithm: KeyAlgorithm,
        validity: Validity,
    ) -> Result<Self, PkiError> {
        let params = ca_params(subject, validity, BasicConstraints::Constrained(0))?;
        let key = PrivateKey::generate(algorithm)?;
        let signer = key.to_rcgen()?;
        let cert = params.signed_by(&signer, &self.issuer())?;
        Ok(Self {
            params,
            signer,
            identity: Identity {
                cert_der: cert.der().to_vec(),
                key,
            },
        })
    }

    /// A certificate for `subject`'s name and key, signed by this CA: a cross-signed
    /// root when `subject` is another root (AWS's chains can end in one).
    pub fn cross_sign(&self, subject: &CertificateAuthority) -> Result<Vec<u8>, PkiError> {
        let cert = subject.params.signed_by(&subject.signer, &self.issuer())?;
        Ok(cert.der().to_vec())
    }

    /// A TLS server certificate: CN = first name, every name a DNS or IP SAN.
    pub fn issue_server(
        &self,
        names: &[&str],
        algorithm: KeyAlgorithm,
        validity: Validity,
    ) -> Result<Identity, PkiError> {
        let first = names
            .first()
            .ok_or_else(|| PkiError::InvalidName("a server certificate needs a name".into()))?;
        let mut params = leaf_params(first, validity)?;
        params.subject_alt_names =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .map_err(|e| PkiError::InvalidName(format!("subject alternative name: {e}")))?
                .subject_alt_names;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, algorithm)
    }

    /// A TLS client certificate with `CN=common_name` and nothing else in the subject:
    /// an O= attribute makes rumqttd rewrite the client id.
    pub fn issue_client(
        &self,
        common_name: &str,
        algorithm: KeyAlgorithm,
        validity: Validity,
    ) -> Result<Identity, PkiError> {
        let mut params = leaf_params(common_name, validity)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, algorithm)
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        algorithm: KeyAlgorithm,
    ) -> Result<Identity, PkiError> {
        params.key_usages = match algorithm {
            KeyAlgorithm::EcP256 => vec![KeyUsagePurpose::DigitalSignature],
            // TLS 1.2 RSA key exchange needs keyEncipherment; harmless for 1.3.
            KeyAlgorithm::Rsa2048 => vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ],
        };
        let key = PrivateKey::generate(algorithm)?;
        let cert = params.signed_by(&key.to_rcgen()?, &self.issuer())?;
        Ok(Identity {
            cert_der: cert.der().to_vec(),
            key,
        })
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.signer)
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.identity.cert_der
    }

    pub fn cert_pem(&self) -> String {
        self.identity.cert_pem()
    }
}

fn subject_name(subject: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (ty, value) in subject {
        dn.push(ty.clone(), *value);
    }
    dn
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| PkiError::Key(format!("no randomness: {e}")))?;
    // Positive and of fixed length, as RFC 5280 wants.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn ca_params(
    subject: &[(DnType, &str)],
    validity: Validity,
    constraints: BasicConstraints,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject_name(subject);
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn leaf_params(common_name: &str, validity: Validity) -> Result<CertificateParams, PkiError> {
    if common_name.is_empty() {
        return Err(PkiError::InvalidName(
            "common name must not be empty".into(),
        ));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = subject_name(&[(DnType::CommonName, common_name)]);
    params.is_ca = IsCa::ExplicitNoCa;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// What `certs init` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// The AWS IoT thing name: the device certificate's CN and the MQTT client id.
    pub thing: String,
    pub key: KeyAlgorithm,
    /// The broker's host name, the server certificate's CN.
    pub endpoint: String,
    /// Extra server names (DNS or IP) besides the endpoint, `localhost` and `127.0.0.1`.
    pub extra_sans: Vec<String>,
    pub days: u32,
    /// CN of the rig's own client identity.
    pub observer: String,
    pub pub_topic: String,
    pub sub_topic: String,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            thing: "ESPthing".into(),
            key: KeyAlgorithm::EcP256,
            endpoint: "localhost".into(),
            extra_sans: Vec::new(),
            days: 365,
            observer: "observer".into(),
            pub_topic: firmware_core::config::DEFAULT_PUB_TOPIC.into(),
            sub_topic: firmware_core::config::DEFAULT_SUB_TOPIC.into(),
        }
    }
}

impl InitOptions {
    /// The server certificate's names: endpoint, `localhost`, `127.0.0.1`, extras; no
    /// duplicates, in that order.
    pub fn server_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let candidates = [self.endpoint.as_str(), "localhost", "127.0.0.1"]
            .into_iter()
            .chain(self.extra_sans.iter().map(String::as_str));
        for name in candidates {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                names.push(name.to_string());
            }
        }
        names
    }
}

/// The rig's test PKI: one CA, the broker's server identity, the thing's identity, the
/// rig's observer identity, and the AWS IoT policy for the thing.
#[derive(Debug)]
pub struct Pki {
    pub ca: CertificateAuthority,
    pub server: Identity,
    pub device: Identity,
    pub observer: Identity,
    /// The AWS IoT policy document (JSON).
    pub policy: String,
    /// The AWS IoT policy of the rig's observer (`hil --target aws`): connect as
    /// [`DEFAULT_OBSERVER_CLIENT_ID`], watch the thing's publish topic,
    /// inject on its subscribe topic.
    pub observer_policy: String,
}

impl Pki {
    /// Generate everything in memory; nothing touches the disk.
    pub fn generate(options: &InitOptions) -> Result<Self, PkiError> {
        let validity = Validity::days(options.days);
        let alg = options.key;
        let ca = CertificateAuthority::root(&format!("{} test CA", options.thing), alg, validity)?;
        let names = options.server_names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let server = ca.issue_server(&names, alg, validity)?;
        let device = ca.issue_client(&options.thing, alg, validity)?;
        let observer = ca.issue_client(&options.observer, alg, validity)?;
        let policy =
            policy::policy_document(THING_NAME_CLIENT, &options.pub_topic, &options.sub_topic);
        let observer_policy = policy::observer_policy_document(
            DEFAULT_OBSERVER_CLIENT_ID,
            &options.pub_topic,
            &options.sub_topic,
        );
        Ok(Self {
            ca,
            server,
            device,
            observer,
            policy,
            observer_policy,
        })
    }

    /// The files of the layout documented at the crate root.
    pub fn files(&self) -> Vec<OutFile> {
        let mut files = Vec::new();
        files.extend(self.ca.identity.files("ca"));
        files.extend(self.server.files("server"));
        files.extend(self.device.files("device"));
        files.extend(self.observer.files("observer"));
        files.push(OutFile::public("policy.json", self.policy.clone()));
        files.push(OutFile::public(
            "observer-policy.json",
            self.observer_policy.clone(),
        ));
        // The flash image's three files, in the form the device reads.
        files.push(OutFile::public(
            "device/cert.der",
            self.device.cert_der.clone(),
        ));
        files.push(OutFile::secret(
            "device/private.der",
            self.device.key.to_traditional_der().to_vec(),
        ));
        files.push(OutFile::public(
            "device/ca.der",
            self.ca.cert_der().to_vec(),
        ));
        files.push(OutFile::public("device/cert.pem", self.device.cert_pem()));
        files.push(OutFile::secret(
            "device/private.pem",
            self.device.key.to_traditional_pem().as_bytes(),
        ));
        files
    }
}

/// The files [`Pki::files`] writes, relative to the output directory (see the crate
/// docs' layout).
pub fn layout() -> Vec<PathBuf> {
    let mut names = Vec::new();
    for who in ["ca", "server", "device", "observer"] {
        for ext in ["pem", "der", "key.pem", "key.der"] {
            names.push(PathBuf::from(format!("{who}.{ext}")));
        }
    }
    names.push("policy.json".into());
    names.push("observer-policy.json".into());
    for file in [
        "cert.der",
        "private.der",
        "ca.der",
        "cert.pem",
        "private.pem",
    ] {
        names.push(Path::new("device").join(file));
    }
    names
}

/// A chain shaped like the one AWS IoT presents: an RSA-2048 root named like Amazon Root
/// CA 1, an RSA-2048 intermediate, and an RSA-2048 server certificate for the endpoint.
#[derive(Debug)]
pub struct AwsLikeChain {
    pub root: CertificateAuthority,
    pub intermediate: CertificateAuthority,
    pub server: Identity,
}

impl AwsLikeChain {
    /// The chain as the server sends it: leaf first, then the intermediate.
    pub fn server_chain_der(&self) -> Vec<Vec<u8>> {
        vec![
            self.server.cert_der.clone(),
            self.intermediate.cert_der().to_vec(),
        ]
    }

    /// Leaf and intermediate as one PEM bundle (a server's `fullchain.pem`).
    pub fn server_chain_pem(&self) -> String {
        self.server.cert_pem() + &self.intermediate.cert_pem()
    }
}

/// Make an [`AwsLikeChain`] for `names` (the first is the CN, e.g.
/// `xxxx-ats.iot.us-east-1.amazonaws.com`; add wildcards as AWS does if wanted).
pub fn aws_like_chain(names: &[&str], validity: Validity) -> Result<AwsLikeChain, PkiError> {
    let rsa = KeyAlgorithm::Rsa2048;
    let root = CertificateAuthority::root_with_subject(
        &[
            (DnType::CountryName, "US"),
            (DnType::OrganizationName, "Amazon"),
            (DnType::CommonName, "Amazon Root CA 1 (test)"),
        ],
        rsa,
        validity,
    )?;
    let intermediate = root.intermediate(
        &[
            (DnType::CountryName, "US"),
            (DnType::OrganizationName, "Amazon"),
            (DnType::CommonName, "Amazon RSA 2048 M01 (test)"),
        ],
        rsa,
        validity,
    )?;
    let server = intermediate.issue_server(names, rsa, validity)?;
    Ok(AwsLikeChain {
        root,
        intermediate,
        server,
    })
}

/// A server certificate from `ca` for `names` that expired yesterday.
pub fn server_cert_expired(
    ca: &CertificateAuthority,
    names: &[&str],
) -> Result<Identity, PkiError> {
    ca.issue_server(names, KeyAlgorithm::EcP256, Validity::expired())
}

/// A server certificate for `names`, valid in every way except that it is signed by a
/// freshly made CA nobody trusts. The unrelated CA is returned too, for tests that want
/// to show it *would* verify against its own root.
pub fn server_cert_untrusted(
    names: &[&str],
    algorithm: KeyAlgorithm,
) -> Result<(Identity, CertificateAuthority), PkiError> {
    let rogue = CertificateAuthority::root("Unrelated test CA", algorithm, Validity::days(30))?;
    let server = rogue.issue_server(names, algorithm, Validity::days(30))?;
    Ok((server, rogue))
}

/// A server certificate from `ca` that does not name the endpoint the device dials.
pub fn server_cert_wrong_name(ca: &CertificateAuthority) -> Result<Identity, PkiError> {
    ca.issue_server(
        &["wrong-name.invalid"],
        KeyAlgorithm::EcP256,
        Validity::days(30),
    )
}

/// A server identity with the intermediates a server sends after its certificate.
#[derive(Debug, Clone)]
pub struct ServerChain {
    pub server: Identity,
    /// Intermediate CA certificates (DER), the one that signed the leaf first.
    pub intermediates_der: Vec<Vec<u8>>,
}

impl ServerChain {
    /// The chain as the server sends it: leaf first, then the intermediates.
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        std::iter::once(self.server.cert_der.clone())
            .chain(self.intermediates_der.iter().cloned())
            .collect()
    }

    /// Leaf and intermediates as one PEM bundle (a server's `fullchain.pem`).
    pub fn chain_pem(&self) -> String {
        self.chain_der()
            .iter()
            .map(|der| crate::x509::cert_pem(der))
            .collect()
    }
}

/// Device Advisor's "large server certificate chain" case: a chain from `ca` for `names`
/// that is valid in every way but larger than usual. The usual chain is the single P-256
/// certificate `certs init` issues; this one is an RSA-2048 certificate under an RSA-2048
/// intermediate named at length (well over 1.2x the usual size; AWS's own chains are
/// RSA-2048 with an intermediate too). Verifies against `ca` like the usual one.
pub fn server_chain_large(
    ca: &CertificateAuthority,
    names: &[&str],
) -> Result<ServerChain, PkiError> {
    let validity = Validity::days(30);
    let intermediate = ca.intermediate(
        &[
            (DnType::CountryName, "US"),
            (
                DnType::OrganizationName,
                "Test PKI large-chain intermediate",
            ),
            (
                DnType::OrganizationalUnitName,
                "Device Advisor TLS case: large server certificate chain",
            ),
            (DnType::CommonName, "Test intermediate CA (large chain)"),
        ],
        KeyAlgorithm::Rsa2048,
        validity,
    )?;
    let server = intermediate.issue_server(names, KeyAlgorithm::Rsa2048, validity)?;
    Ok(ServerChain {
        server,
        intermediates_der: vec![intermediate.cert_der().to_vec()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_lists_exactly_the_files_written() {
        let pki = Pki::generate(&InitOptions::default()).unwrap();
        let mut written: Vec<PathBuf> = pki.files().into_iter().map(|f| f.name).collect();
        let mut listed = layout();
        written.sort();
        listed.sort();
        assert_eq!(written, listed);
    }

    #[test]
    fn server_names_are_deduplicated_in_order() {
        let options = InitOptions {
            endpoint: "LOCALHOST".into(),
            extra_sans: vec!["127.0.0.1".into(), "10.0.0.1".into()],
            ..InitOptions::default()
        };
        assert_eq!(
            options.server_names(),
            ["LOCALHOST", "127.0.0.1", "10.0.0.1"]
        );
    }
}
