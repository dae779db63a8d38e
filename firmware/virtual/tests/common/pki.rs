//! The test PKI as the files the mosquitto harness reads, made by the `certs` library
//! (the same as `certs init`: P-256, thing `ESPthing`, server SANs localhost and
//! 127.0.0.1).

use std::io;
use std::path::{Path, PathBuf};

use certs::pki::{InitOptions, Pki};

pub const DEVICE_CN: &str = "ESPthing";

/// The PKI's files in `dir`, and the device's DER for its flash image.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub dir: PathBuf,
    pub ca_pem: PathBuf,
    pub server_cert_pem: PathBuf,
    pub server_key_pem: PathBuf,
    pub observer_cert_pem: PathBuf,
    pub observer_key_pem: PathBuf,
    pub ca_der: Vec<u8>,
    pub device_cert_der: Vec<u8>,
    pub device_key_der: Vec<u8>,
}

impl TestPki {
    /// A fresh `certs init` PKI, written into `dir` (which must exist).
    pub fn generate(dir: &Path) -> io::Result<Self> {
        let pki = Pki::generate(&InitOptions::default()).map_err(io::Error::other)?;
        Self::write(
            dir,
            &pki,
            &pki.ca.cert_pem(),
            &pki.server.cert_pem(),
            &pki.server.key_pem(),
        )
    }

    /// Write `pki` into `dir`. `broker_trusts` is the broker's and the observer's CA
    /// bundle (PEM); the server's chain and key may be other than the PKI's own.
    pub fn write(
        dir: &Path,
        pki: &Pki,
        broker_trusts: &str,
        server_chain_pem: &str,
        server_key_pem: &str,
    ) -> io::Result<Self> {
        let write = |name: &str, data: &[u8]| -> io::Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, data)?;
            Ok(path)
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            ca_pem: write("ca.pem", broker_trusts.as_bytes())?,
            server_cert_pem: write("server.pem", server_chain_pem.as_bytes())?,
            server_key_pem: write("server.key", server_key_pem.as_bytes())?,
            observer_cert_pem: write("observer.pem", pki.observer.cert_pem().as_bytes())?,
            observer_key_pem: write("observer.key", pki.observer.key_pem().as_bytes())?,
            ca_der: pki.ca.cert_der().to_vec(),
            device_cert_der: pki.device.cert_der.clone(),
            device_key_der: pki.device.key.to_traditional_der().to_vec(),
        })
    }
}
