//! `certs image` read back by an independent LittleFS implementation (the `littlefs2`
//! crate), and `certs inspect` on good and damaged images.

mod common;

use common::{Work, assert_bad_input};
use firmware_core::config::DeviceConfig;
use littlefs2::consts::{U2, U256};
use littlefs2::driver::Storage;
use littlefs2::fs::Filesystem;
use littlefs2::path;

const IMAGE_SIZE: usize = 65536;

/// A RAM image for littlefs2, with the geometry of DESIGN.md section 3 (4096-byte blocks)
/// and the read/program sizes of `firmware_core::image`.
struct Ram {
    bytes: Vec<u8>,
}

impl Storage for Ram {
    const READ_SIZE: usize = 16;
    const WRITE_SIZE: usize = 16;
    const BLOCK_SIZE: usize = 4096;
    const BLOCK_COUNT: usize = IMAGE_SIZE / 4096;
    type CACHE_SIZE = U256;
    type LOOKAHEAD_SIZE = U2;

    fn read(&mut self, off: usize, buf: &mut [u8]) -> littlefs2::io::Result<usize> {
        buf.copy_from_slice(&self.bytes[off..off + buf.len()]);
        Ok(buf.len())
    }
    fn write(&mut self, off: usize, data: &[u8]) -> littlefs2::io::Result<usize> {
        self.bytes[off..off + data.len()].copy_from_slice(data);
        Ok(data.len())
    }
    fn erase(&mut self, off: usize, len: usize) -> littlefs2::io::Result<usize> {
        self.bytes[off..off + len].fill(0xFF);
        Ok(len)
    }
}

struct ReadBack {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
    config: Vec<u8>,
    names: Vec<String>,
}

fn read_with_littlefs2(image: Vec<u8>) -> ReadBack {
    assert_eq!(image.len(), IMAGE_SIZE);
    let mut storage = Ram { bytes: image };
    Filesystem::mount_and_then(&mut storage, |fs| {
        let mut names = Vec::new();
        fs.read_dir_and_then(path!("/"), |dir| {
            for entry in dir {
                let entry = entry?;
                if entry.file_type().is_file() {
                    names.push(entry.file_name().as_str().to_string());
                }
            }
            Ok(())
        })?;
        names.sort();
        Ok(ReadBack {
            cert: fs.read::<4096>(path!("/cert.der"))?.to_vec(),
            key: fs.read::<4096>(path!("/private.der"))?.to_vec(),
            ca: fs.read::<4096>(path!("/ca.der"))?.to_vec(),
            config: fs.read::<4096>(path!("/config.json"))?.to_vec(),
            names,
        })
    })
    .expect("littlefs2 mounts and reads the image")
}

/// The same files through the firmware's own reader (`firmware_core::image`).
fn read_with_firmware(image: Vec<u8>) -> ReadBack {
    let contents = certs::image::read_image(&image).expect("firmware reader mounts the image");
    let file = |p: &str| contents.file(p).expect(p).to_vec();
    let mut names: Vec<String> = contents
        .files
        .iter()
        .map(|(p, _)| p.trim_start_matches('/').to_string())
        .collect();
    names.sort();
    ReadBack {
        cert: file("/cert.der"),
        key: file("/private.der"),
        ca: file("/ca.der"),
        config: file("/config.json"),
        names,
    }
}

// The `littlefs2` crate mounts only on-disk version 2.0, which is why the image writes it.
#[test]
fn image_reads_back_with_littlefs2() {
    full_round_trip(read_with_littlefs2);
}

#[test]
fn image_reads_back_with_the_firmware_reader() {
    full_round_trip(read_with_firmware);
}

fn full_round_trip(reader: fn(Vec<u8>) -> ReadBack) {
    let work = Work::new();
    work.certs_ok(&["init", "--out", "pki", "--thing", "bench-7"]);
    let stdout = work.certs_ok(&[
        "image",
        "--creds",
        "pki/device",
        "--out",
        "flash.img",
        "--wifi-ssid",
        "bench-ap",
        "--wifi-password",
        "hunter2hunter2",
        "--endpoint",
        "mock.local:18883",
        "--period-ms",
        "500",
        "--keepalive-s",
        "30",
        "--qos",
        "0",
        "--ntp",
        "127.0.0.1:12345",
        "--ntp-resync-s",
        "900",
        "--sub-topic",
        "cmd/+",
    ]);
    assert!(
        !stdout.contains("hunter2"),
        "summary leaks the password: {stdout}"
    );

    let back = reader(work.read("flash.img"));
    assert_eq!(
        back.names,
        ["ca.der", "cert.der", "config.json", "private.der"]
    );
    assert_eq!(back.cert, work.read("pki/device/cert.der"));
    assert_eq!(back.key, work.read("pki/device/private.der"));
    assert_eq!(back.ca, work.read("pki/device/ca.der"));

    // The device's own parser accepts what was written.
    let config = DeviceConfig::from_json(&back.config).unwrap();
    assert_eq!(
        config.client_id.as_str(),
        "bench-7",
        "client id defaults to the certificate CN"
    );
    assert_eq!(config.endpoint.host.as_str(), "mock.local");
    assert_eq!(config.endpoint.port, 18883);
    assert_eq!(config.wifi.ssid.as_str(), "bench-ap");
    assert_eq!(config.wifi.password.as_str(), "hunter2hunter2");
    assert_eq!(config.period_ms, 500);
    assert_eq!(config.keepalive_s, 30);
    assert_eq!(config.qos, 0);
    assert_eq!(config.ntp.host.as_str(), "127.0.0.1");
    assert_eq!(config.ntp.port, 12345);
    assert_eq!(config.ntp.resync_s, 900);
    assert_eq!(config.pub_topic.as_str(), "outTopic");
    assert_eq!(config.sub_topic.as_str(), "cmd/+");
}

#[test]
fn defaults_are_the_tutorials_and_the_init_root_is_accepted() {
    let work = Work::new();
    work.certs_ok(&["init", "--out", "pki"]);
    // The root of an init output: its device/ folder is used.
    work.certs_ok(&["image", "--creds", "pki", "--out", "flash.img"]);
    let back = read_with_firmware(work.read("flash.img"));
    let config = DeviceConfig::from_json(&back.config).unwrap();
    assert_eq!(config.client_id.as_str(), "ESPthing");
    assert_eq!(config.endpoint.port, 8883);
    assert_eq!(config.pub_topic.as_str(), "outTopic");
    assert_eq!(config.sub_topic.as_str(), "inTopic");
    assert_eq!(config.period_ms, 2000);
    assert_eq!(back.cert, work.read("pki/device.der"));
}

#[test]
fn config_file_then_flags_override_it() {
    let work = Work::new();
    work.certs_ok(&["init", "--out", "pki"]);
    work.write(
        "device.json",
        r#"{"wifi": {"ssid": "from-file", "password": "file-pass"},
            "endpoint": {"host": "file.example", "port": 1883},
            "pub_topic": "file/out", "period_ms": 3000}"#,
    );
    work.certs_ok(&[
        "image",
        "--creds",
        "pki/device",
        "--out",
        "flash.img",
        "--config",
        "device.json",
        "--endpoint",
        "flag.example",
        "--client-id",
        "flag-id",
    ]);
    let config =
        DeviceConfig::from_json(&read_with_firmware(work.read("flash.img")).config).unwrap();
    assert_eq!(config.wifi.ssid.as_str(), "from-file");
    assert_eq!(config.wifi.password.as_str(), "file-pass");
    assert_eq!(config.endpoint.host.as_str(), "flag.example");
    assert_eq!(
        config.endpoint.port, 8883,
        "--endpoint without a port means 8883"
    );
    assert_eq!(config.client_id.as_str(), "flag-id");
    assert_eq!(config.pub_topic.as_str(), "file/out");
    assert_eq!(config.period_ms, 3000);
}

#[test]
fn rsa_credentials_read_back_with_littlefs2() {
    rsa_round_trip(read_with_littlefs2);
}

#[test]
fn rsa_credentials_read_back_with_the_firmware_reader() {
    rsa_round_trip(read_with_firmware);
}

fn rsa_round_trip(reader: fn(Vec<u8>) -> ReadBack) {
    let work = Work::new();
    work.certs_ok(&["init", "--out", "pki", "--key", "rsa-2048"]);
    work.certs_ok(&["image", "--creds", "pki/device", "--out", "flash.img"]);
    let back = reader(work.read("flash.img"));
    assert_eq!(back.key, work.read("pki/device/private.der"));
    assert_eq!(back.cert, work.read("pki/device/cert.der"));
}

#[test]
fn inspect_shows_files_and_config_but_never_the_password_or_key() {
    let work = Work::new();
    work.certs_ok(&["init", "--out", "pki"]);
    work.certs_ok(&[
        "image",
        "--creds",
        "pki/device",
        "--out",
        "flash.img",
        "--wifi-ssid",
        "bench-ap",
        "--wifi-password",
        "hunter2hunter2",
    ]);
    let out = work.certs_ok(&["inspect", "flash.img"]);
    for expected in [
        "/cert.der",
        "/private.der",
        "/ca.der",
        "/config.json",
        "bench-ap",
        "\"***\"",
        "CN=ESPthing",
        "matches",
    ] {
        assert!(out.contains(expected), "missing {expected}: {out}");
    }
    assert!(!out.contains("hunter2"), "{out}");
    let key_hex: String = work
        .read("pki/device/private.der")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!out.to_lowercase().contains(&key_hex[20..60]), "{out}");
}

#[test]
fn inspect_certificates_and_keys() {
    let work = Work::new();
    work.certs_ok(&["init", "--out", "pki"]);
    let out = work.certs_ok(&[
        "inspect",
        "pki/server.pem",
        "pki/device.der",
        "pki/device.key.pem",
        "pki/device/private.der",
        "--cert",
        "pki/device.pem",
    ]);
    let fingerprint = String::from_utf8(work.openssl(&[
        "x509",
        "-in",
        "pki/server.pem",
        "-noout",
        "-fingerprint",
        "-sha256",
    ]))
    .unwrap();
    let fingerprint = fingerprint.trim().rsplit('=').next().unwrap().to_string();
    for expected in [
        "subject:  CN=localhost",
        "issuer:   CN=ESPthing test CA",
        "EC P-256",
        "localhost, 127.0.0.1",
        fingerprint.as_str(),
        "matches:  pki/device.pem",
        "days left",
    ] {
        assert!(out.contains(expected), "missing {expected}: {out}");
    }
    assert!(!out.contains("PRIVATE KEY"), "{out}");
}

#[test]
fn corrupted_image_is_reported_not_misread() {
    let work = Work::new();
    work.certs_ok(&["init", "--out", "pki"]);
    work.certs_ok(&["image", "--creds", "pki/device", "--out", "flash.img"]);
    let good = work.read("flash.img");

    // Both superblock copies damaged: not mountable.
    let mut bad = good.clone();
    for block in [0, 1] {
        for b in &mut bad[block * 4096..block * 4096 + 64] {
            *b ^= 0x5A;
        }
    }
    work.write("superblock.img", &bad);
    assert_bad_input(
        &work.certs(&["inspect", "superblock.img"]),
        &["superblock.img", "corrupt flash image"],
    );

    // Every block after the superblocks flipped: metadata or file data is damaged either
    // way, and inspect must say so rather than print garbage as a certificate.
    let mut bad = good.clone();
    for b in &mut bad[2 * 4096..] {
        *b ^= 0xFF;
    }
    work.write("contents.img", &bad);
    assert_bad_input(
        &work.certs(&["inspect", "contents.img"]),
        &["contents.img", "corrupt flash image"],
    );

    // File data damaged in place: littlefs does not checksum data, so inspect parses it.
    let cert = work.read("pki/device/cert.der");
    let at = good
        .windows(cert.len())
        .position(|w| w == cert.as_slice())
        .expect("cert stored contiguously");
    let mut bad = good.clone();
    bad[at + 20..at + 40].fill(0);
    work.write("data.img", &bad);
    assert_bad_input(
        &work.certs(&["inspect", "data.img"]),
        &["data.img", "corrupt flash image", "/cert.der"],
    );

    // Truncated to a partial block.
    work.write("short.img", &good[..10000]);
    let out = work.certs(&["inspect", "short.img"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}
