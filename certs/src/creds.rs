//! The device's three credential files, checked together: what `certs import` writes and
//! `certs image` reads.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use firmware_core::creds::CredsFailure;
use firmware_core::log::FlashFile;

use crate::error::{CertsError, InputProblem};
use crate::keys::PrivateKey;
use crate::output::{self, OutFile};
use crate::x509::{self, CertInfo};

/// File names in a credentials directory (and, with a leading `/`, in the flash image).
pub const CERT_FILE: &str = "cert.der";
pub const KEY_FILE: &str = "private.der";
pub const CA_FILE: &str = "ca.der";

/// A device certificate, its private key and the root CA of the broker.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub cert_der: Vec<u8>,
    pub cert: CertInfo,
    pub key: PrivateKey,
    pub ca_der: Vec<u8>,
    pub ca: CertInfo,
}

impl Credentials {
    /// Assemble credentials without the checks of [`Self::load`], so tests can put
    /// deliberately bad ones (expired, mismatched) in an image. Fails only if a
    /// certificate does not parse.
    pub fn new(cert_der: Vec<u8>, key: PrivateKey, ca_der: Vec<u8>) -> Result<Self, String> {
        let cert = CertInfo::from_der(&cert_der).map_err(|e| format!("device certificate: {e}"))?;
        let ca = CertInfo::from_der(&ca_der).map_err(|e| format!("CA certificate: {e}"))?;
        Ok(Self {
            cert_der,
            cert,
            key,
            ca_der,
            ca,
        })
    }

    /// The device identity of a generated PKI, e.g. `Credentials::from_pki(&pki)`.
    pub fn from_pki(pki: &crate::pki::Pki) -> Result<Self, String> {
        Self::new(
            pki.device.cert_der.clone(),
            pki.device.key.clone(),
            pki.ca.cert_der().to_vec(),
        )
    }

    /// Read and check the three files (PEM or DER each). Errors name the file at fault;
    /// the returned warnings (certificates close to expiry) do too.
    ///
    /// Checks: well-formed; the key is of a type the firmware supports and matches the
    /// certificate; both certificates are valid at `now`; the CA is a CA.
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        ca_path: &Path,
        now: OffsetDateTime,
    ) -> Result<(Self, Vec<String>), CertsError> {
        let mut warnings = Vec::new();
        let (cert_der, cert) = x509::read_certificate(cert_path)?;
        let key = x509::read_private_key(key_path)?;
        let (ca_der, ca) = x509::read_certificate(ca_path)?;

        if !cert.public_key.key_type().firmware_supported() {
            return Err(CertsError::input(
                cert_path,
                InputProblem::UnsupportedKey(cert.public_key.key_type().to_string()),
            ));
        }
        if !key.matches(&cert.public_key) {
            return Err(CertsError::input(
                key_path,
                InputProblem::KeyMismatch(cert_path.to_path_buf()),
            ));
        }
        for (path, info) in [(cert_path, &cert), (ca_path, &ca)] {
            match info.check_validity(now) {
                Ok(Some(warning)) => warnings.push(format!("{}: {warning}", path.display())),
                Ok(None) => {}
                Err(problem) => return Err(CertsError::input(path, problem)),
            }
        }
        if !ca.usable_as_ca() {
            return Err(CertsError::input(ca_path, InputProblem::NotCa));
        }
        // The device's own check last: whatever passes it loads on the board.
        let key_der = key.to_traditional_der();
        firmware_core::creds::check_credentials(&cert_der, &key_der, &ca_der).map_err(|f| {
            let path = match f.file {
                FlashFile::Key => key_path,
                FlashFile::Ca => ca_path,
                _ => cert_path,
            };
            CertsError::input(path, InputProblem::DeviceRefuses(device_refusal(&f)))
        })?;
        Ok((
            Self {
                cert_der,
                cert,
                key,
                ca_der,
                ca,
            },
            warnings,
        ))
    }

    /// Load `cert.der`, `private.der`, `ca.der` from a directory. Given the root of a
    /// `certs init` output, use its `device/` folder.
    pub fn load_dir(dir: &Path, now: OffsetDateTime) -> Result<(Self, Vec<String>), CertsError> {
        let dir = Self::resolve_dir(dir)?;
        Self::load(
            &dir.join(CERT_FILE),
            &dir.join(KEY_FILE),
            &dir.join(CA_FILE),
            now,
        )
    }

    fn resolve_dir(dir: &Path) -> Result<PathBuf, CertsError> {
        if !dir.exists() {
            return Err(CertsError::input(dir, InputProblem::Missing));
        }
        if !dir.is_dir() {
            return Err(CertsError::input(
                dir,
                InputProblem::Other("not a directory".into()),
            ));
        }
        if !dir.join(CERT_FILE).exists() && dir.join("device").join(CERT_FILE).exists() {
            return Ok(dir.join("device"));
        }
        Ok(dir.to_path_buf())
    }

    /// The private key as the device stores it.
    pub fn key_der(&self) -> Vec<u8> {
        self.key.to_traditional_der().to_vec()
    }

    /// `cert.der`, `private.der` (mode 0600), `ca.der`.
    pub fn files(&self) -> Vec<OutFile> {
        vec![
            OutFile::public(CERT_FILE, self.cert_der.clone()),
            OutFile::secret(KEY_FILE, self.key_der()),
            OutFile::public(CA_FILE, self.ca_der.clone()),
        ]
    }

    /// Write the three files atomically as a set.
    pub fn write(&self, dir: &Path, force: bool) -> Result<(), CertsError> {
        output::write_set(dir, &self.files(), force)
    }
}

/// Why the device refuses a file, with the slug its boot log prints.
pub fn device_refusal(f: &CredsFailure) -> String {
    format!(
        "{} (device log: creds error={})",
        firmware_core::creds::describe(f.file, f.error),
        f.error
    )
}
