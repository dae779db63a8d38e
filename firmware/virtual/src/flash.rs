//! The flash image: the very file `certs image` writes and the ESP32-C3 reads from its
//! data partition, loaded with `firmware_core::image`.

use std::path::Path;

use firmware_core::config::DeviceConfig;
use firmware_core::image::{self, CredentialBuffers, ImageError};
use firmware_core::log::{self, ConfigFailure, FlashFile, Line};

/// The device's identity and settings, owned. `Debug` shows sizes only.
pub struct Identity {
    pub cert: Vec<u8>,
    pub key: SecretBytes,
    pub ca: Vec<u8>,
    pub config: DeviceConfig,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cert_bytes", &self.cert.len())
            .field("key_bytes", &self.key.len())
            .field("ca_bytes", &self.ca.len())
            .field("config", &self.config)
            .finish()
    }
}

/// Private key bytes: never printed, wiped on drop.
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // Volatile so the wipe is not optimised away as a dead store.
            // SAFETY: `b` is a valid, aligned &mut u8.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// Why the image could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read (missing, permissions).
    Read(std::io::Error),
    Image(ImageError),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read(e) => write!(f, "cannot read image: {e}"),
            Self::Image(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// A load failure as the session hears it: `/config.json` problems are config failures,
/// everything else is a credentials failure (the board's classification).
pub use firmware_core::image::ImageFailure as Failure;

impl LoadError {
    /// How the session classifies this failure.
    pub fn failure(&self) -> Failure {
        use log::LoadError as L;
        let creds = |file, error| Failure::Creds { file, error };
        match self {
            Self::Read(e) if e.kind() == std::io::ErrorKind::NotFound => {
                creds(FlashFile::Image, L::Missing)
            }
            Self::Read(_) => creds(FlashFile::Image, L::Io),
            Self::Image(e) => Failure::of(e),
        }
    }

    /// The serial log line for this failure: `config` lines for `/config.json`, `creds`
    /// lines for everything else, as on the board.
    pub fn log_line(&self, uptime_ms: u64) -> Line {
        match self.failure() {
            Failure::Config(f) => Line::config_failed(uptime_ms, f),
            Failure::Creds { file, error } => Line::creds_failed(uptime_ms, file, error),
        }
    }

    /// The failure while loading `/config.json` alone: an image that cannot be read or
    /// mounted means the config cannot be loaded either.
    pub fn config_failure(&self) -> ConfigFailure {
        self.failure().config_failure()
    }
}

/// Read and mount the image file and load the credentials and config from it.
pub fn load(path: &Path) -> Result<Identity, LoadError> {
    let mut bytes = std::fs::read(path).map_err(LoadError::Read)?;
    load_bytes(&mut bytes)
}

/// Read and mount the image file and load `/config.json` only.
pub fn load_config(path: &Path) -> Result<DeviceConfig, LoadError> {
    let mut bytes = std::fs::read(path).map_err(LoadError::Read)?;
    load_config_bytes(&mut bytes)
}

/// [`load_config`] from an image in memory.
pub fn load_config_bytes(bytes: &mut [u8]) -> Result<DeviceConfig, LoadError> {
    let mut buf = Box::new([0u8; firmware_core::config::MAX_CONFIG_JSON]);
    let mut flash = bytes;
    image::mount(&mut flash, |fs| {
        let json = fs.read_file(image::CONFIG_PATH, &mut buf[..])?;
        DeviceConfig::from_json(json).map_err(ImageError::Config)
    })
    .map_err(LoadError::Image)
}

/// Load from an image already in memory (mounting may write to it, as on flash).
pub fn load_bytes(bytes: &mut [u8]) -> Result<Identity, LoadError> {
    let mut bufs = Box::new(CredentialBuffers::new());
    let mut flash = bytes;
    let identity = image::mount(&mut flash, |fs| {
        let creds = fs.load_credentials(&mut bufs)?;
        Ok(Identity {
            cert: creds.cert.to_vec(),
            key: SecretBytes::new(creds.key.to_vec()),
            ca: creds.ca.to_vec(),
            config: creds.config,
        })
    })
    .map_err(LoadError::Image);
    // The key passed through this buffer too.
    bufs.key.iter_mut().for_each(|b| {
        // SAFETY: valid, aligned &mut u8.
        unsafe { std::ptr::write_volatile(b, 0) }
    });
    identity
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 128 KiB image holding `files`, from the `certs` tool's writer.
    fn build_image(files: &[(&str, &[u8])]) -> Vec<u8> {
        certs::image::build_image_files(files, 32 * image::BLOCK_SIZE).expect("test image")
    }

    const CONFIG: &str = r#"{"endpoint":{"host":"localhost","port":8883},"client_id":"ESPthing"}"#;

    /// A real credential set from the `certs` tool: (cert, key, ca) DER.
    fn real_creds() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let pki = certs::pki::Pki::generate(&certs::pki::InitOptions::default()).unwrap();
        let creds = certs::creds::Credentials::from_pki(&pki).unwrap();
        (
            creds.cert_der.clone(),
            creds.key_der(),
            creds.ca_der.clone(),
        )
    }

    fn image_with(cert: &[u8], key: &[u8], ca: &[u8]) -> Vec<u8> {
        build_image(&[
            ("/config.json", CONFIG.as_bytes()),
            ("/cert.der", cert),
            ("/private.der", key),
            ("/ca.der", ca),
        ])
    }

    #[test]
    fn loads_a_good_image() {
        let (cert, key, ca) = real_creds();
        let mut img = image_with(&cert, &key, &ca);
        let id = load_bytes(&mut img).unwrap();
        assert_eq!(id.cert, cert);
        assert_eq!(id.key.expose(), key);
        assert_eq!(id.config.client_id.as_str(), "ESPthing");
        let debug = format!("{id:?}");
        assert!(!debug.contains(&format!("{:?}", &key[..8])), "{debug}");
        assert!(
            debug.contains(&format!("key_bytes: {}", key.len())),
            "{debug}"
        );
    }

    /// Each damaged credential file is named in the boot log, before any handshake.
    #[test]
    fn damaged_credentials_name_their_file_in_the_log() {
        let (cert, key, ca) = real_creds();
        let line = |cert: &[u8], key: &[u8], ca: &[u8]| {
            let mut img = image_with(cert, key, ca);
            load_bytes(&mut img).unwrap_err().log_line(5).to_string()
        };
        let mut flipped_ca = ca.clone();
        let last = flipped_ca.len() - 1;
        flipped_ca[last] ^= 0x01;
        assert!(
            line(&cert, &key, &flipped_ca)
                .ends_with("creds: load failed file=/ca.der error=bad-signature")
        );
        assert!(
            line(&cert, &[0x42; 121], &ca)
                .ends_with("creds: load failed file=/private.der error=malformed")
        );
        assert!(
            line(&[0x30, 0x03, 0x02, 0x01, 0x00], &key, &ca)
                .ends_with("creds: load failed file=/cert.der error=malformed")
        );
        let other = certs::keys::PrivateKey::generate(certs::pki::KeyAlgorithm::EcP256).unwrap();
        assert!(
            line(&cert, &other.to_traditional_der(), &ca)
                .ends_with("creds: load failed file=/private.der error=key-mismatch")
        );
        assert!(
            line(&cert, &key, &cert).ends_with("creds: load failed file=/ca.der error=not-a-ca")
        );
    }

    #[test]
    fn missing_file_and_garbage_give_log_lines_not_panics() {
        let err = load(Path::new("/nonexistent/flash.img")).unwrap_err();
        let line = err.log_line(5).to_string();
        assert!(
            line.contains("creds: load failed file=image error=missing"),
            "{line}"
        );

        let mut garbage = vec![0x5Au8; 8 * 4096];
        let line = load_bytes(&mut garbage)
            .unwrap_err()
            .log_line(5)
            .to_string();
        assert!(line.contains("file=image error=malformed"), "{line}");

        let mut odd = vec![0u8; 1000];
        assert!(load_bytes(&mut odd).is_err());

        let mut no_key = build_image(&[("/config.json", CONFIG.as_bytes()), ("/cert.der", b"c")]);
        let line = load_bytes(&mut no_key).unwrap_err().log_line(5).to_string();
        assert!(line.contains("file=/private.der error=missing"), "{line}");

        let mut no_config = build_image(&[("/cert.der", b"c")]);
        let line = load_bytes(&mut no_config)
            .unwrap_err()
            .log_line(5)
            .to_string();
        assert!(line.contains("config: load failed error=missing"), "{line}");

        let mut bad_config = build_image(&[("/config.json", b"{\"endpoint\":")]);
        let line = load_bytes(&mut bad_config)
            .unwrap_err()
            .log_line(5)
            .to_string();
        assert!(line.contains("config: invalid"), "{line}");
    }

    /// The boot log names the field and the rule, not `field=config.json error=syntax`.
    #[test]
    fn config_errors_name_the_field_in_the_boot_log() {
        let cases = [
            (
                r#"{"endpoint":{"host":"h"}}"#.to_string(),
                "config: invalid field=client_id error=missing",
            ),
            (
                format!(
                    r#"{{"endpoint":{{"host":"h"}},"client_id":"{}"}}"#,
                    "x".repeat(200)
                ),
                "config: invalid field=client_id error=too-long",
            ),
            (
                r#"{"endpoint":{"host":"h","port":70000},"client_id":"c"}"#.to_string(),
                "config: invalid field=endpoint.port error=out-of-range",
            ),
            (
                r#"{"endpoint":{"host":"h"},"client_id":"c","period_ms":-2000}"#.to_string(),
                "config: invalid field=period_ms error=out-of-range",
            ),
            (
                r#"{"endpoint":{"host":"h"},"client_id":"c","keepalive_s":70000}"#.to_string(),
                "config: invalid field=keepalive_s error=out-of-range",
            ),
            (
                r#"{"endpoint":{"host":"h"},"client_id":"c","sub_topic":"in/#/x"}"#.to_string(),
                "config: invalid field=sub_topic error=misplaced-wildcard",
            ),
        ];
        for (json, expected) in cases {
            let mut img = build_image(&[("/config.json", json.as_bytes())]);
            let line = load_config_bytes(&mut img)
                .unwrap_err()
                .log_line(5)
                .to_string();
            assert!(line.ends_with(expected), "{json}: {line}");
        }
    }

    /// Hostile images: a config larger than the device's buffer, a file cut short.
    #[test]
    fn oversized_and_truncated_images_are_named() {
        let big = format!(
            r#"{{"endpoint":{{"host":"h"}},"client_id":"c"{}}}"#,
            " ".repeat(3000)
        );
        let mut img = build_image(&[("/config.json", big.as_bytes())]);
        let err = load_config_bytes(&mut img).unwrap_err();
        assert_eq!(
            Line::config_failed(5, err.config_failure()).to_string(),
            "E (       5) config: load failed error=too-large"
        );
        assert!(err.to_string().contains("/config.json: 3"), "{err}");

        let (cert, key, ca) = real_creds();
        let mut img = image_with(&cert, &key, &ca);
        img.truncate(img.len() / 2);
        let err = load_bytes(&mut img).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(
            err.log_line(5)
                .to_string()
                .ends_with("creds: load failed file=image error=malformed")
        );
    }
}
