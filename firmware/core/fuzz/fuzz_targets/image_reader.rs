//! The flash image reader on damaged images: what the device does at boot (mount, list,
//! read every file, load the credentials and config) must end in a value or an
//! `ImageError`, never a panic, a hang or a crash in the littlefs C code.
//!
//! Input: byte 0 picks the mode.
//! - even: patches on a good image built once (format + the four files), so the fuzzer
//!   starts deep inside littlefs's metadata instead of guessing a superblock. Each patch
//!   is `offset: u16 LE, len: u8, bytes`.
//! - odd: the rest of the input *is* the image (zero-padded to whole blocks).
//!
//! Checks: a listed file's size is what `file_len` says and what `read_file` returns;
//! `load_credentials` agrees with reading the files one by one.
#![no_main]

use std::sync::OnceLock;

use firmware_core::config::MAX_CONFIG_JSON;
use firmware_core::image::{
    self, BLOCK_SIZE, CA_PATH, CERT_PATH, CONFIG_PATH, CredentialBuffers, ImageError, KEY_PATH,
    MIN_BLOCKS,
};
use libfuzzer_sys::fuzz_target;

const CONFIG: &[u8] = br#"{"wifi":{"ssid":"bench-ap","password":"secret"},"endpoint":{"host":"localhost","port":8883},"client_id":"ESPthing","pub_topic":"outTopic","sub_topic":"inTopic","period_ms":2000,"keepalive_s":60,"qos":1}"#;

/// A good image, as `certs image` writes it (file contents are stand-ins: the reader
/// does not parse DER).
fn good_image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let mut bytes = vec![0xFF; MIN_BLOCKS * BLOCK_SIZE];
        let mut flash = &mut bytes[..];
        image::format(&mut flash).expect("format");
        image::mount(&mut flash, |fs| {
            fs.write_file(CERT_PATH, &[0x30; 421])?;
            fs.write_file(KEY_PATH, &[0x30; 138])?;
            fs.write_file(CA_PATH, &[0x30; 410])?;
            fs.write_file(CONFIG_PATH, CONFIG)
        })
        .expect("write files");
        bytes
    })
}

fn image_from(data: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else {
        return Vec::new();
    };
    if mode & 1 == 1 {
        // Round up to whole blocks (at least two, or mount refuses the geometry first).
        let blocks = rest.len().div_ceil(BLOCK_SIZE).clamp(2, 4 * MIN_BLOCKS);
        let mut image = vec![0xFF; blocks * BLOCK_SIZE];
        let n = rest.len().min(image.len());
        image[..n].copy_from_slice(&rest[..n]);
        return image;
    }
    let mut image = good_image().to_vec();
    let mut rest = rest;
    while let [lo, hi, len, tail @ ..] = rest {
        let offset = usize::from(u16::from_le_bytes([*lo, *hi])) % image.len();
        let len = usize::from(*len).min(tail.len()).min(image.len() - offset);
        image[offset..offset + len].copy_from_slice(&tail[..len]);
        rest = &tail[len..];
    }
    image
}

fuzz_target!(|data: &[u8]| {
    let mut image = image_from(data);
    if image.is_empty() {
        return;
    }
    let mut flash = &mut image[..];
    let listed = image::mount(&mut flash, |fs| {
        let mut files: Vec<(String, usize)> = Vec::new();
        fs.list(|name, size| files.push((name.to_owned(), size)))?;
        let mut buf = vec![0u8; 2 * BLOCK_SIZE];
        for (name, size) in &files {
            let path = format!("/{name}");
            // A name littlefs lists may still be one the reader refuses (too long).
            let Ok(len) = fs.file_len(&path) else {
                continue;
            };
            assert_eq!(len, *size, "{path}: list and stat disagree");
            match fs.read_file(&path, &mut buf) {
                Ok(read) => assert_eq!(read.len(), len, "{path}: short read not reported"),
                Err(ImageError::TooLarge { len: big, .. }) => assert_eq!(big, len),
                Err(_) => {}
            }
        }
        let mut bufs = Box::new(CredentialBuffers::new());
        if let Ok(creds) = fs.load_credentials(&mut bufs) {
            let mut one = vec![0u8; MAX_CONFIG_JSON.max(image::MAX_CERT)];
            for (path, loaded) in [
                (CERT_PATH, creds.cert),
                (KEY_PATH, creds.key),
                (CA_PATH, creds.ca),
            ] {
                let again = fs.read_file(path, &mut one).expect("read twice");
                assert_eq!(again, loaded, "{path}: two reads differ");
            }
            assert!(creds.config.validate().is_ok());
            // The Debug form shows sizes only.
            let _ = format!("{creds:?}");
        }
        Ok(files.len())
    });
    if let Err(e) = listed {
        // Every error prints (the device logs it).
        let _ = e.to_string();
    }
});
