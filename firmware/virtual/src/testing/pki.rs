//! A throwaway test PKI made with the `openssl` CLI: a CA, a server certificate for
//! `localhost`/127.0.0.1, the device identity (P-256, SEC1 DER, as the flash image holds
//! it) and an observer identity (PEM, for mosquitto's clients).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The device's client id and certificate CN (mosquitto maps the CN to the username).
pub const DEVICE_CN: &str = "ESPthing";
pub const OBSERVER_CN: &str = "observer";

/// Paths of the generated files (all inside one directory) and the DER the device loads.
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
    /// SEC1 `ECPrivateKey` DER, the P-256 form the flash image usually carries.
    pub device_key_der: Vec<u8>,
}

fn openssl(dir: &Path, args: &[&str]) -> io::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// A P-256 key and a certificate signed by the CA in `dir`, with `ext` as v3 extensions.
fn leaf(dir: &Path, name: &str, cn: &str, ext: &str) -> io::Result<()> {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let ext_file = format!("{name}.ext");
    std::fs::write(dir.join(&ext_file), ext)?;
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &key,
        ],
    )?;
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            &csr,
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-sha256",
            "-extfile",
            &ext_file,
            "-out",
            &format!("{name}.pem"),
        ],
    )
}

impl TestPki {
    /// Generate everything into `dir` (which must exist).
    pub fn generate(dir: &Path) -> io::Result<Self> {
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "ca.key",
            ],
        )?;
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=Test Root CA",
                "-days",
                "30",
                "-sha256",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                "ca.pem",
            ],
        )?;
        leaf(
            dir,
            "server",
            "localhost",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )?;
        let client_ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n";
        leaf(dir, "device", DEVICE_CN, client_ext)?;
        leaf(dir, "observer", OBSERVER_CN, client_ext)?;
        openssl(
            dir,
            &["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"],
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-in",
                "device.pem",
                "-outform",
                "DER",
                "-out",
                "device.der",
            ],
        )?;
        openssl(
            dir,
            &[
                "ec",
                "-in",
                "device.key",
                "-outform",
                "DER",
                "-out",
                "device.key.der",
            ],
        )?;
        Ok(Self {
            dir: dir.to_path_buf(),
            ca_pem: dir.join("ca.pem"),
            server_cert_pem: dir.join("server.pem"),
            server_key_pem: dir.join("server.key"),
            observer_cert_pem: dir.join("observer.pem"),
            observer_key_pem: dir.join("observer.key"),
            ca_der: std::fs::read(dir.join("ca.der"))?,
            device_cert_der: std::fs::read(dir.join("device.der"))?,
            device_key_der: std::fs::read(dir.join("device.key.der"))?,
        })
    }
}
