//! Helpers shared by the integration tests: run the built `certs` binary and the real
//! `openssl` CLI inside a per-test temporary directory.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const OPENSSL: &str = "/usr/bin/openssl";

/// A per-test working directory, removed when dropped.
pub struct Work {
    pub dir: tempfile::TempDir,
}

impl Work {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    pub fn write(&self, name: &str, data: impl AsRef<[u8]>) {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, data).unwrap();
    }

    /// Run `certs ARGS` in the work directory.
    pub fn certs(&self, args: &[&str]) -> Output {
        self.certs_command(args).output().expect("run certs")
    }

    /// `certs ARGS` in the work directory, ready to run; the caller's WIFI_PASSWORD is
    /// not passed on, so a developer's environment cannot change a test.
    pub fn certs_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_certs"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("WIFI_PASSWORD");
        command
    }

    /// Run `certs ARGS` and insist on success.
    pub fn certs_ok(&self, args: &[&str]) -> String {
        let out = self.certs(args);
        assert!(
            out.status.success(),
            "certs {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run `openssl ARGS` in the work directory and return stdout; panics on failure.
    pub fn openssl(&self, args: &[&str]) -> Vec<u8> {
        let out = self.openssl_raw(args);
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    pub fn openssl_raw(&self, args: &[&str]) -> Output {
        Command::new(OPENSSL)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl")
    }

    /// A P-256 private key in PKCS#8 PEM, as `openssl genpkey` writes it.
    pub fn openssl_p256_key(&self, name: &str) {
        self.openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            name,
        ]);
    }

    /// An RSA-2048 private key in PKCS#8 PEM, the console's default key type.
    pub fn openssl_rsa2048_key(&self, name: &str) {
        self.openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            name,
        ]);
    }

    /// A self-signed RSA-2048 root named like Amazon's, made with `openssl req`.
    pub fn openssl_root_ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "rootca.key",
            "-out",
            name,
            "-days",
            "3650",
            "-subj",
            "/C=US/O=Amazon/CN=Amazon Root CA 1",
        ]);
    }

    /// Sign a device certificate for `key` with the root made by [`Self::openssl_root_ca`].
    pub fn openssl_device_cert(&self, key: &str, ca: &str, out: &str, days: &str) {
        self.openssl(&[
            "req",
            "-new",
            "-key",
            key,
            "-subj",
            "/CN=AWS IoT Certificate",
            "-out",
            "dev.csr",
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            "dev.csr",
            "-CA",
            ca,
            "-CAkey",
            "rootca.key",
            "-CAcreateserial",
            "-days",
            days,
            "-out",
            out,
        ]);
    }
}

/// Assert a failed run: exit status 2 and exactly one stderr line containing every
/// fragment.
pub fn assert_bad_input(out: &Output, fragments: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, got {:?}; stderr: {stderr}",
        out.status.code()
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "expected one stderr line, got: {stderr}"
    );
    for fragment in fragments {
        assert!(
            stderr.contains(fragment),
            "stderr {stderr:?} does not contain {fragment:?}"
        );
    }
}

/// Files under `dir`, recursively, relative and sorted.
pub fn list_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
