//! Images the device did not get from `certs image`: another block size, cut short,
//! files too large for the device's buffers. Each gets a named error, never a panic or a
//! misreading.

mod common;

use common::{Work, assert_bad_input};
use littlefs2::consts::{U2, U256};
use littlefs2::driver::Storage;
use littlefs2::fs::Filesystem;
use littlefs2::path;

/// 64 KiB of 512-byte blocks, as other LittleFS tools can make.
struct SmallBlocks {
    bytes: Vec<u8>,
}

impl Storage for SmallBlocks {
    const READ_SIZE: usize = 16;
    const WRITE_SIZE: usize = 16;
    const BLOCK_SIZE: usize = 512;
    const BLOCK_COUNT: usize = 128;
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

#[test]
fn another_block_size_is_named() {
    let mut storage = SmallBlocks {
        bytes: vec![0xFF; 65536],
    };
    Filesystem::format(&mut storage).unwrap();
    Filesystem::mount_and_then(&mut storage, |fs| fs.write(path!("/config.json"), b"{}")).unwrap();
    let work = Work::new();
    work.write("small-blocks.img", &storage.bytes);
    assert_bad_input(
        &work.certs(&["inspect", "small-blocks.img"]),
        &["small-blocks.img", "512-byte blocks", "4096-byte blocks"],
    );
    // The same reader the device runs.
    let err = certs::image::read_image(&storage.bytes).unwrap_err();
    assert_eq!(
        err,
        firmware_core::image::ImageError::BlockSize { found: 512 }
    );
}

#[test]
fn an_image_cut_at_a_block_boundary_is_named_truncated() {
    let work = Work::new();
    work.certs_ok(&["init", "--out", "pki"]);
    work.certs_ok(&["image", "--creds", "pki/device", "--out", "flash.img"]);
    let image = work.read("flash.img");
    work.write("cut.img", &image[..8 * 4096]);
    assert_bad_input(
        &work.certs(&["inspect", "cut.img"]),
        &["cut.img", "corrupt flash image", "truncated"],
    );
}

#[test]
fn files_larger_than_the_device_reads_are_named() {
    let work = Work::new();
    work.certs_ok(&["init", "--out", "pki"]);
    let padded = format!(
        "{{\"endpoint\":{{\"host\":\"h\"}},\"client_id\":\"c\"{}}}",
        " ".repeat(3000)
    );
    let image = certs::image::build_image_files(
        &[
            ("/cert.der", &work.read("pki/device/cert.der")),
            ("/private.der", &work.read("pki/device/private.der")),
            ("/ca.der", &work.read("pki/device/ca.der")),
            ("/config.json", padded.as_bytes()),
        ],
        65536,
    )
    .unwrap();
    work.write("big-config.img", image);
    assert_bad_input(
        &work.certs(&["inspect", "big-config.img"]),
        &[
            "big-config.img",
            "/config.json",
            "the device reads at most 2048",
        ],
    );
}
