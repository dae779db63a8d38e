use super::*;

fn build(size: usize, files: &[(&str, &[u8])]) -> Result<Vec<u8>, ImageError> {
    let mut buf = vec![0xFFu8; size];
    let mut flash = &mut buf[..];
    format(&mut flash)?;
    mount(&mut flash, |fs| {
        for (path, data) in files {
            fs.write_file(path, data)?;
        }
        Ok(())
    })?;
    Ok(buf)
}

fn config_json() -> std::string::String {
    let c = DeviceConfig::new("localhost", "ESPthing").unwrap();
    serde_json::to_string_pretty(&c).unwrap()
}

/// A real credential set (P-256 device certificate and key, P-256 root), made with the
/// `openssl` CLI in a fresh directory.
struct RealCreds {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

fn real_creds() -> RealCreds {
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=Image Test CA",
        "-days",
        "30",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(&["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"]);
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "dev.pem",
    ]);
    openssl(&[
        "ec",
        "-in",
        "dev.pem",
        "-outform",
        "DER",
        "-out",
        "dev.key.der",
    ]);
    openssl(&[
        "req",
        "-new",
        "-key",
        "dev.pem",
        "-subj",
        "/CN=ESPthing",
        "-out",
        "dev.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "dev.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-days",
        "30",
        "-set_serial",
        "2",
        "-outform",
        "DER",
        "-out",
        "dev.der",
    ]);
    let read = |name| std::fs::read(dir.path().join(name)).unwrap();
    RealCreds {
        cert: read("dev.der"),
        key: read("dev.key.der"),
        ca: read("ca.der"),
    }
}

#[test]
fn files_round_trip() {
    let RealCreds { cert, key, ca } = real_creds();
    let json = config_json();
    let mut img = build(
        64 * 1024,
        &[
            (CERT_PATH, &cert),
            (KEY_PATH, &key),
            (CA_PATH, &ca),
            (CONFIG_PATH, json.as_bytes()),
        ],
    )
    .unwrap();
    let mut flash = &mut img[..];
    let mut bufs = CredentialBuffers::new();
    let (blocks, mut names) = mount(&mut flash, |fs| {
        let creds = fs.load_credentials(&mut bufs)?;
        assert_eq!(creds.cert, &cert[..]);
        assert_eq!(creds.key, &key[..]);
        assert_eq!(creds.ca, &ca[..]);
        assert_eq!(creds.config.client_id.as_str(), "ESPthing");
        let mut names = Vec::new();
        fs.list(|n, len| names.push((n.to_owned(), len)))?;
        Ok((fs.block_count(), names))
    })
    .unwrap();
    assert_eq!(blocks, 16);
    names.sort();
    assert_eq!(
        names,
        [
            ("ca.der".to_owned(), ca.len()),
            ("cert.der".to_owned(), cert.len()),
            ("config.json".to_owned(), json.len()),
            ("private.der".to_owned(), key.len())
        ]
    );
}

#[test]
fn an_image_mounts_in_a_larger_partition() {
    let mut img = build(32 * 1024, &[(CA_PATH, b"x")]).unwrap();
    img.resize(128 * 1024, 0xFF);
    let mut flash = &mut img[..];
    let blocks = mount(&mut flash, |fs| Ok(fs.block_count())).unwrap();
    assert_eq!(blocks, 8);
}

#[test]
fn a_truncated_image_is_refused() {
    let mut img = build(64 * 1024, &[(CA_PATH, b"x")]).unwrap();
    img.truncate(32 * 1024);
    let mut flash = &mut img[..];
    let err = mount(&mut flash, |_| Ok(())).unwrap_err();
    assert!(
        matches!(err, ImageError::Truncated { .. } | ImageError::Flash(_)),
        "{err:?}"
    );
}

#[test]
fn blank_and_corrupted_images_are_reported() {
    let mut blank = vec![0xFFu8; 64 * 1024];
    let mut flash = &mut blank[..];
    assert_eq!(mount(&mut flash, |_| Ok(())), Err(ImageError::Corrupt));

    let mut img = build(64 * 1024, &[(CA_PATH, b"x")]).unwrap();
    // Both superblock copies damaged: nothing trustworthy left.
    for b in &mut img[..2 * BLOCK_SIZE] {
        *b ^= 0x5A;
    }
    let mut flash = &mut img[..];
    assert_eq!(mount(&mut flash, |_| Ok(())), Err(ImageError::Corrupt));
}

#[test]
fn missing_and_oversize_files_name_the_path() {
    let mut img = build(64 * 1024, &[(CERT_PATH, &[1u8; 5000])]).unwrap();
    let mut flash = &mut img[..];
    let mut bufs = CredentialBuffers::new();
    let err = mount(&mut flash, |fs| fs.load_credentials(&mut bufs).map(drop)).unwrap_err();
    assert_eq!(err.to_string(), "/config.json: missing from the image");
    let err = mount(&mut flash, |fs| {
        fs.read_file(CERT_PATH, &mut [0u8; MAX_CERT]).map(drop)
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/cert.der: 5000 bytes, the device reads at most 4096"
    );
}

#[test]
fn too_small_images_are_refused() {
    let err = build(4 * BLOCK_SIZE, &[]).unwrap_err();
    assert!(matches!(err, ImageError::Geometry { .. }));
    let err = build(MIN_BLOCKS * BLOCK_SIZE, &[(CERT_PATH, &[0u8; 40_000])]).unwrap_err();
    assert_eq!(err, ImageError::NoSpace);
}

/// With the TLS pieces built in, a credential file the device would refuse is named at
/// load (a flipped byte in `/ca.der` used to surface as `tls: handshake failed
/// error=other`, a garbage key as `unsupported-algorithm`).
#[cfg(feature = "tls")]
#[test]
fn credentials_the_device_would_refuse_are_named_at_load() {
    let RealCreds { cert, key, ca } = real_creds();
    let json = config_json();
    let load = |cert: &[u8], key: &[u8], ca: &[u8]| {
        let mut img = build(
            64 * 1024,
            &[
                (CERT_PATH, cert),
                (KEY_PATH, key),
                (CA_PATH, ca),
                (CONFIG_PATH, json.as_bytes()),
            ],
        )
        .unwrap();
        let mut flash = &mut img[..];
        let mut bufs = CredentialBuffers::new();
        mount(&mut flash, |fs| fs.load_credentials(&mut bufs).map(drop))
    };
    assert_eq!(load(&cert, &key, &ca), Ok(()));
    // A byte of the CA's signature flipped.
    let mut flipped = ca.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    let err = load(&cert, &key, &flipped).unwrap_err();
    assert_eq!(
        err,
        ImageError::Creds {
            file: FlashFile::Ca,
            error: LoadError::BadSignature
        }
    );
    assert_eq!(
        err.to_string(),
        "/ca.der: its self-signature does not verify: the file is damaged"
    );
    assert_eq!(
        load(&cert, &[0x42; 121], &ca),
        Err(ImageError::Creds {
            file: FlashFile::Key,
            error: LoadError::Malformed
        })
    );
    assert_eq!(
        load(b"garbage", &key, &ca),
        Err(ImageError::Creds {
            file: FlashFile::Cert,
            error: LoadError::Malformed
        })
    );
    // The CA where the device certificate belongs: the key is not its key.
    assert_eq!(
        load(&ca, &key, &ca),
        Err(ImageError::Creds {
            file: FlashFile::Key,
            error: LoadError::KeyMismatch
        })
    );
    assert_eq!(
        load(&cert, &key, &cert),
        Err(ImageError::Creds {
            file: FlashFile::Ca,
            error: LoadError::NotCa
        })
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    // Arbitrary damage may be detected or may leave an intact copy; it must never panic
    // or read out of bounds.
    #[test]
    fn damaged_images_never_panic(offset in 0usize..64 * 1024, len in 1usize..4096, byte: u8) {
        let json = config_json();
        let mut img = build(64 * 1024, &[(CONFIG_PATH, json.as_bytes()), (CERT_PATH, &[3u8; 1000])]).unwrap();
        let end = (offset + len).min(img.len());
        img[offset..end].fill(byte);
        let mut flash = &mut img[..];
        let mut bufs = CredentialBuffers::new();
        let _ = mount(&mut flash, |fs| fs.load_credentials(&mut bufs).map(drop));
    }
}
