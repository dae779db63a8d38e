//! Flash images for tests, written with `firmware_core::image` (the `certs` tool's
//! writer, without the CLI).

use firmware_core::image;

/// Blocks in a test image (128 KiB): room for RSA chains.
pub const TEST_IMAGE_BLOCKS: usize = 32;

/// A formatted image holding `files`. Panics on failure: test input only.
pub fn build_image(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut buf = vec![0xFFu8; TEST_IMAGE_BLOCKS * image::BLOCK_SIZE];
    let mut flash = &mut buf[..];
    image::format(&mut flash).expect("format");
    image::mount(&mut flash, |fs| {
        for (path, data) in files {
            fs.write_file(path, data)?;
        }
        Ok(())
    })
    .expect("write files");
    buf
}

/// `/config.json` for a device named `client_id` talking to `host:port`, syncing time
/// from `ntp` (`host:port`).
pub fn config_json(host: &str, port: u16, ntp: (&str, u16), client_id: &str) -> String {
    format!(
        r#"{{"endpoint":{{"host":"{host}","port":{port}}},"ntp":{{"host":"{}","port":{}}},"client_id":"{client_id}","keepalive_s":30}}"#,
        ntp.0, ntp.1
    )
}

/// A complete image: config, device certificate and key, CA.
pub fn device_image(config_json: &str, cert: &[u8], key: &[u8], ca: &[u8]) -> Vec<u8> {
    build_image(&[
        (image::CONFIG_PATH, config_json.as_bytes()),
        (image::CERT_PATH, cert),
        (image::KEY_PATH, key),
        (image::CA_PATH, ca),
    ])
}
