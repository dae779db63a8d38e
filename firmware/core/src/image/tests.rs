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

#[test]
fn files_round_trip() {
    let cert: Vec<u8> = (0..900u32).map(|i| i as u8).collect();
    let key = [7u8; 121];
    let json = config_json();
    let mut img = build(
        64 * 1024,
        &[
            (CERT_PATH, &cert),
            (KEY_PATH, &key),
            (CA_PATH, b"ca"),
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
        assert_eq!(creds.ca, b"ca");
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
            ("ca.der".to_owned(), 2),
            ("cert.der".to_owned(), 900),
            ("config.json".to_owned(), json.len()),
            ("private.der".to_owned(), 121)
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
