//! Flash images for tests, from the `certs` tool's writer and the one config format.

use firmware_core::config::DeviceConfig;
use firmware_core::image;

/// Blocks in a test image (128 KiB): room for RSA chains.
pub const TEST_IMAGE_BLOCKS: usize = 32;

/// A formatted image holding `files`, from the `certs` tool's writer. Panics on
/// failure: test input only.
pub fn build_image(files: &[(&str, &[u8])]) -> Vec<u8> {
    certs::image::build_image_files(files, TEST_IMAGE_BLOCKS * image::BLOCK_SIZE)
        .expect("test image")
}

/// `/config.json` for a device named `client_id` talking to `host:port`, syncing time
/// from `ntp` (`host:port`), written from the one definition of the format.
pub fn config_json(host: &str, port: u16, ntp: (&str, u16), client_id: &str) -> String {
    device_config(host, port, ntp, client_id, |_| {})
}

/// [`config_json`] with changes made by `edit` (period, QoS, keep-alive, ...).
pub fn device_config(
    host: &str,
    port: u16,
    ntp: (&str, u16),
    client_id: &str,
    edit: impl FnOnce(&mut DeviceConfig),
) -> String {
    let mut config = DeviceConfig::new(host, client_id).expect("a valid host and client id");
    config.endpoint.port = port;
    config.ntp.host = ntp.0.try_into().expect("an NTP host that fits");
    config.ntp.port = ntp.1;
    config.keepalive_s = 30;
    edit(&mut config);
    certs::image::config_json(&config)
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
