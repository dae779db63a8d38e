//! Test PKI for the TLS tests, made with the `openssl` CLI in a fresh tempdir per test
//! (parallel-safe; nothing shared on disk).
#![allow(dead_code, reason = "each test file uses a different part")]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Key types the tests issue certificates for.
#[derive(Clone, Copy, Debug)]
pub enum Alg {
    P256,
    P384,
    Rsa2048,
}

pub struct Pki {
    dir: tempfile::TempDir,
    serial: u32,
}

/// A certificate with its key, as PEM files plus the certificate's DER.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
    pub cn: String,
    pub alg: Alg,
}

/// How to issue a certificate.
pub struct Spec<'a> {
    pub cn: &'a str,
    pub alg: Alg,
    /// `subjectAltName` value, e.g. `DNS:a.test,IP:127.0.0.1`; none if empty.
    pub san: &'a str,
    pub ca: bool,
    /// Validity as `YYYYMMDDHHMMSSZ` pairs; `None` means now .. now + 30 days.
    pub dates: Option<(&'a str, &'a str)>,
    /// Reuse this key instead of generating one (cross-signing).
    pub key: Option<&'a Path>,
}

impl<'a> Spec<'a> {
    pub fn leaf(cn: &'a str, alg: Alg, san: &'a str) -> Self {
        Spec {
            cn,
            alg,
            san,
            ca: false,
            dates: None,
            key: None,
        }
    }

    pub fn ca(cn: &'a str, alg: Alg) -> Self {
        Spec {
            cn,
            alg,
            san: "",
            ca: true,
            dates: None,
            key: None,
        }
    }
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("openssl runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn openssl(dir: &Path) -> Command {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir);
    cmd
}

impl Pki {
    pub fn new() -> Self {
        Pki {
            dir: tempfile::tempdir().expect("tempdir"),
            serial: 1,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn key(&self, name: &str, alg: Alg) -> PathBuf {
        let path = self.path(&format!("{name}.key"));
        let mut cmd = openssl(self.dir.path());
        cmd.arg("genpkey").arg("-out").arg(&path);
        match alg {
            Alg::P256 => cmd.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
            Alg::P384 => cmd.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]),
            Alg::Rsa2048 => cmd.args(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
        };
        run(&mut cmd);
        path
    }

    /// A self-signed root like Amazon Root CA 1/3/4.
    pub fn root(&mut self, cn: &str, alg: Alg) -> Issued {
        self.issue(&Spec::ca(cn, alg), None)
    }

    /// Issues `spec`, signed by `issuer` (self-signed when `None`), with SHA-256 (or
    /// SHA-384 under a P-384 issuer, as Amazon Root CA 4 does).
    pub fn issue(&mut self, spec: &Spec<'_>, issuer: Option<&Issued>) -> Issued {
        let tag = format!("{}-{}", sanitize(spec.cn), self.serial);
        let serial = self.serial;
        self.serial += 1;
        let key = match spec.key {
            Some(k) => k.to_path_buf(),
            None => self.key(&tag, spec.alg),
        };
        let cert = self.path(&format!("{tag}.pem"));
        let mut ext = String::new();
        if spec.ca {
            ext.push_str(
                "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
            );
        } else {
            ext.push_str("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n");
        }
        if !spec.san.is_empty() {
            ext.push_str(&format!("subjectAltName={}\n", spec.san));
        }
        ext.push_str("subjectKeyIdentifier=hash\n");
        let ext_path = self.path(&format!("{tag}.ext"));
        std::fs::write(&ext_path, &ext).expect("write ext");
        let csr = self.path(&format!("{tag}.csr"));
        run(openssl(self.dir.path())
            .args(["req", "-new", "-subj"])
            .arg(format!("/CN={}", spec.cn))
            .arg("-key")
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        let digest = match issuer.map_or(spec.alg, |i| i.alg) {
            Alg::P384 => "-sha384",
            _ => "-sha256",
        };
        let (ca_cert, ca_key) = match issuer {
            Some(i) => (i.cert.clone(), i.key.clone()),
            None => (PathBuf::new(), key.clone()),
        };
        match spec.dates {
            None => {
                let mut cmd = openssl(self.dir.path());
                cmd.args(["x509", "-req", "-days", "30", digest, "-set_serial"])
                    .arg(serial.to_string())
                    .arg("-in")
                    .arg(&csr)
                    .arg("-extfile")
                    .arg(&ext_path)
                    .arg("-out")
                    .arg(&cert);
                if issuer.is_some() {
                    cmd.arg("-CA").arg(&ca_cert).arg("-CAkey").arg(&ca_key);
                } else {
                    cmd.arg("-signkey").arg(&key);
                }
                run(&mut cmd);
            }
            Some((start, end)) => {
                // `openssl x509` (3.0) cannot back-date; `openssl ca` can.
                let db = self.path(&format!("{tag}.index"));
                std::fs::write(&db, "").expect("write index");
                let cnf = self.path(&format!("{tag}.cnf"));
                std::fs::write(
                    &cnf,
                    format!(
                        "[ca]\ndefault_ca=d\n[d]\ndatabase={}\nnew_certs_dir={}\nserial={}\n\
                         default_md=sha256\npolicy=p\nunique_subject=no\n[p]\ncommonName=supplied\n",
                        db.display(),
                        self.dir.path().display(),
                        self.path(&format!("{tag}.serial")).display(),
                    ),
                )
                .expect("write cnf");
                std::fs::write(
                    self.path(&format!("{tag}.serial")),
                    format!("{serial:02X}\n"),
                )
                .expect("write serial");
                let mut cmd = openssl(self.dir.path());
                cmd.args(["ca", "-batch", "-notext", "-config"])
                    .arg(&cnf)
                    .args(["-md", &digest[1..], "-startdate", start, "-enddate", end])
                    .arg("-in")
                    .arg(&csr)
                    .arg("-extfile")
                    .arg(&ext_path)
                    .arg("-out")
                    .arg(&cert);
                if issuer.is_some() {
                    cmd.arg("-cert").arg(&ca_cert).arg("-keyfile").arg(&ca_key);
                } else {
                    cmd.arg("-selfsign").arg("-keyfile").arg(&key);
                }
                run(&mut cmd);
            }
        }
        let der = run(openssl(self.dir.path())
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert));
        Issued {
            cert,
            key,
            der,
            cn: spec.cn.to_string(),
            alg: spec.alg,
        }
    }

    /// Concatenates PEM certificates into one file (a `-cert_chain`).
    pub fn bundle(&self, name: &str, certs: &[&Issued]) -> PathBuf {
        let path = self.path(name);
        let mut pem = Vec::new();
        for c in certs {
            pem.extend(std::fs::read(&c.cert).expect("read pem"));
        }
        std::fs::write(&path, pem).expect("write bundle");
        path
    }

    /// The private key as DER in the given encoding: `pkcs8`, `sec1` or `pkcs1`.
    pub fn key_der(&self, key: &Path, encoding: &str) -> Vec<u8> {
        let mut cmd = openssl(self.dir.path());
        match encoding {
            "pkcs8" => cmd.args(["pkey", "-outform", "DER", "-in"]),
            "sec1" => cmd.args(["ec", "-outform", "DER", "-in"]),
            "pkcs1" => cmd.args(["rsa", "-traditional", "-outform", "DER", "-in"]),
            other => panic!("unknown key encoding {other}"),
        };
        run(cmd.arg(key))
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Now, in Unix seconds (the tests' stand-in for the SNTP-synced clock).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
