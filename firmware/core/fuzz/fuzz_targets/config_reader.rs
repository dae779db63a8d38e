//! `DeviceConfig::from_json` on arbitrary bytes: never a panic; whatever it accepts is
//! valid by the same rules `validate` applies.
#![no_main]

use firmware_core::config::DeviceConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = DeviceConfig::from_json(data) {
        assert!(config.validate().is_ok());
    }
});
