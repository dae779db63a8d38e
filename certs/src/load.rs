//! Loading an existing CA (certificate and private key) so it can issue again: the rig
//! issues per-device identities from the CA of a `certs init` folder.
//!
//! ```no_run
//! use certs::pki::{CertificateAuthority, KeyAlgorithm, Validity};
//!
//! let ca = CertificateAuthority::load_dir(std::path::Path::new("certs/dev"))?;
//! let device = ca.issue_client("hil-boot", KeyAlgorithm::EcP256, Validity::days(30))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Certificates issued by a loaded CA must chain to the CA certificate on disk, byte for
//! byte where verifiers compare bytes: the issuer name is rebuilt with the subject's own
//! string types, the authority key identifier repeats the CA's subject key identifier,
//! and both are checked on a probe certificate before the CA is returned.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, Issuer,
    KeyIdMethod, KeyUsagePurpose, SerialNumber, string::Ia5String, string::PrintableString,
};
use time::OffsetDateTime;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{CertsError, InputProblem};
use crate::pki::{CertificateAuthority, Identity};
use crate::x509;

/// The CA files of a `certs init` folder.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key.pem";

impl CertificateAuthority {
    /// The CA of a `certs init` folder: `DIR/ca.pem` and `DIR/ca.key.pem`.
    pub fn load_dir(dir: &Path) -> Result<Self, CertsError> {
        if !dir.is_dir() {
            return Err(CertsError::input(
                dir,
                if dir.exists() {
                    InputProblem::Other("not a directory".into())
                } else {
                    InputProblem::Missing
                },
            ));
        }
        Self::load(&dir.join(CA_CERT_FILE), &dir.join(CA_KEY_FILE))
    }

    /// A CA from its certificate and private key (PEM or DER each). Errors name the file
    /// at fault: a certificate that is not a CA, not valid now or not allowed to sign
    /// certificates; a key that does not match it.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, CertsError> {
        let (cert_der, info) = x509::read_certificate(cert_path)?;
        if !info.usable_as_ca() {
            return Err(CertsError::input(cert_path, InputProblem::NotCa));
        }
        info.check_validity(OffsetDateTime::now_utc())
            .map_err(|problem| CertsError::input(cert_path, problem))?;
        let key = x509::read_private_key(key_path)?;
        if !key.matches(&info.public_key) {
            return Err(CertsError::input(
                key_path,
                InputProblem::KeyMismatch(cert_path.to_path_buf()),
            ));
        }
        let bad_cert = |detail: String| {
            CertsError::input(
                cert_path,
                InputProblem::Other(format!("cannot issue from this CA: {detail}")),
            )
        };
        let parsed = cert_der.clone();
        let (_, cert) =
            X509Certificate::from_der(&parsed).map_err(|e| bad_cert(format!("malformed: {e}")))?;
        let params = ca_params_of(&cert).map_err(bad_cert)?;
        let signer = key
            .to_rcgen()
            .map_err(|e| CertsError::input(key_path, InputProblem::Other(e.to_string())))?;
        let ca = Self {
            params,
            signer,
            identity: Identity { cert_der, key },
        };
        ca.check_issues_under(&cert).map_err(bad_cert)?;
        Ok(ca)
    }

    /// Sign a probe certificate (for the CA's own key, so no key is generated) and check
    /// that its issuer name and authority key identifier are the CA's subject and subject
    /// key identifier, so what this CA issues chains to the certificate on disk.
    fn check_issues_under(&self, ca: &X509Certificate<'_>) -> Result<(), String> {
        let mut probe = CertificateParams::default();
        probe.distinguished_name = DistinguishedName::new();
        probe
            .distinguished_name
            .push(DnType::CommonName, "issuer probe");
        probe.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.params, &self.signer);
        let der = probe
            .signed_by(&self.signer, &issuer)
            .map_err(|e| format!("signing failed: {e}"))?
            .der()
            .to_vec();
        let (_, issued) = X509Certificate::from_der(&der).map_err(|e| e.to_string())?;
        if issued.issuer().as_raw() != ca.subject().as_raw() {
            return Err(format!(
                "its subject \"{}\" cannot be reproduced byte for byte (repeated or multi-valued \
                 attributes, or unusual string types), so issued certificates would not chain",
                ca.subject()
            ));
        }
        if let (Some(ski), Some(aki)) = (subject_key_id(ca), authority_key_id(&issued))
            && ski != aki
        {
            return Err("issued certificates would not carry its subject key identifier".into());
        }
        Ok(())
    }
}

/// The parameters a CA needs to issue: its exact subject, key identifier, key usages.
fn ca_params_of(cert: &X509Certificate<'_>) -> Result<CertificateParams, String> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(cert)?;
    // Repeat the CA's own subject key identifier as the authority key identifier of what
    // it issues (openssl refuses a chain whose identifiers disagree).
    if let Some(ski) = subject_key_id(cert) {
        params.key_identifier_method = KeyIdMethod::PreSpecified(ski);
    }
    params.key_usages = key_usages(cert)?;
    if !params.key_usages.is_empty() && !params.key_usages.contains(&KeyUsagePurpose::KeyCertSign) {
        return Err("its keyUsage does not include keyCertSign".into());
    }
    let constraints = cert
        .basic_constraints()
        .map_err(|e| format!("basicConstraints: {e}"))?
        .and_then(|bc| bc.value.path_len_constraint)
        .map_or(BasicConstraints::Unconstrained, |n| {
            BasicConstraints::Constrained(n.min(u8::MAX.into()) as u8)
        });
    params.is_ca = IsCa::Ca(constraints);
    let validity = cert.validity();
    params.not_before = validity.not_before.to_datetime();
    params.not_after = validity.not_after.to_datetime();
    params.serial_number = Some(SerialNumber::from_slice(cert.raw_serial()));
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// The subject as rcgen will write it: same attribute types, order and string types.
fn distinguished_name(cert: &X509Certificate<'_>) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    for rdn in cert.subject().iter() {
        for attribute in rdn.iter() {
            let oid = attribute.attr_type();
            let ty = match oid.to_id_string().as_str() {
                "2.5.4.3" => DnType::CommonName,
                "2.5.4.6" => DnType::CountryName,
                "2.5.4.7" => DnType::LocalityName,
                "2.5.4.8" => DnType::StateOrProvinceName,
                "2.5.4.10" => DnType::OrganizationName,
                "2.5.4.11" => DnType::OrganizationalUnitName,
                _ => DnType::CustomDnType(
                    oid.iter()
                        .ok_or_else(|| format!("subject attribute {oid} has an oversized arc"))?
                        .collect(),
                ),
            };
            let value = attribute.attr_value();
            let text = std::str::from_utf8(value.data)
                .map_err(|_| format!("subject attribute {oid} is not text"))?;
            let value = match value.header.tag() {
                Tag::Utf8String => DnValue::Utf8String(text.to_string()),
                Tag::PrintableString => DnValue::PrintableString(
                    PrintableString::try_from(text)
                        .map_err(|e| format!("subject attribute {oid}: {e}"))?,
                ),
                Tag::Ia5String => DnValue::Ia5String(
                    Ia5String::try_from(text)
                        .map_err(|e| format!("subject attribute {oid}: {e}"))?,
                ),
                other => {
                    return Err(format!(
                        "subject attribute {oid} is a {other:?}, which cannot be reproduced"
                    ));
                }
            };
            dn.push(ty, value);
        }
    }
    Ok(dn)
}

fn key_usages(cert: &X509Certificate<'_>) -> Result<Vec<KeyUsagePurpose>, String> {
    let Some(usage) = cert.key_usage().map_err(|e| format!("keyUsage: {e}"))? else {
        return Ok(Vec::new());
    };
    let usage = usage.value;
    let flags = [
        (usage.digital_signature(), KeyUsagePurpose::DigitalSignature),
        (usage.non_repudiation(), KeyUsagePurpose::ContentCommitment),
        (usage.key_encipherment(), KeyUsagePurpose::KeyEncipherment),
        (usage.data_encipherment(), KeyUsagePurpose::DataEncipherment),
        (usage.key_agreement(), KeyUsagePurpose::KeyAgreement),
        (usage.key_cert_sign(), KeyUsagePurpose::KeyCertSign),
        (usage.crl_sign(), KeyUsagePurpose::CrlSign),
        (usage.encipher_only(), KeyUsagePurpose::EncipherOnly),
        (usage.decipher_only(), KeyUsagePurpose::DecipherOnly),
    ];
    Ok(flags
        .into_iter()
        .filter_map(|(set, purpose)| set.then_some(purpose))
        .collect())
}

fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

fn authority_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0.to_vec())
            }
            _ => None,
        })
}
