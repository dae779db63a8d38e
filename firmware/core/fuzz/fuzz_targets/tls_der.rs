//! The DER the device parses before and during a handshake: its private key from the
//! flash image (`DeviceKey::from_der`, format detection) and the server's certificate
//! chain (`verify_server_chain`, the verifier the handshake uses).
//!
//! Input: byte 0 picks the mode.
//! - 0 mod 3: the rest is a private key.
//! - 1 mod 3: a chain against the test CA (`testdata/test-ca.der`, embedded):
//!   `count: u8`, then per certificate `len: u16 BE` + DER.
//! - 2 mod 3: the same, but the first certificate is the trust anchor.
//!
//! Checks: no panic; a chain accepted at one time is refused long after every
//! certificate has expired and before any was issued; a key accepted has a usable
//! signature scheme.
#![no_main]

use firmware_core::tls::{DeviceKey, detect_key_format, verify_server_chain};
use libfuzzer_sys::fuzz_target;

const TEST_CA: &[u8] = include_bytes!("../testdata/test-ca.der");
/// The broker names in the test PKI's server certificate.
const NAMES: [&str; 4] = [
    "localhost",
    "127.0.0.1",
    "broker.local",
    "xxxxxxxxxxxxxx-ats.iot.us-east-1.amazonaws.com",
];
/// 2026-12-05: inside the validity of the test PKI in testdata/ and the seeds.
const NOW: u64 = 1_796_428_800;
/// Year 9999 has ended: every X.509 validity period is over.
const AFTER_ALL: u64 = 253_402_300_800;

fn chain(mut rest: &[u8]) -> Vec<&[u8]> {
    let Some((&count, tail)) = rest.split_first() else {
        return Vec::new();
    };
    rest = tail;
    let mut certs = Vec::new();
    for _ in 0..usize::from(count % 6) {
        let [hi, lo, tail @ ..] = rest else { break };
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        certs.push(&tail[..len]);
        rest = &tail[len..];
    }
    certs
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let format = detect_key_format(rest);
            match DeviceKey::from_der(rest) {
                Ok(key) => {
                    assert!(format.is_ok(), "key accepted in an undetected format");
                    let _ = (key.algorithm(), key.signature_scheme());
                }
                Err(e) => {
                    let _ = e.kind();
                }
            }
        }
        m => {
            let certs = chain(rest);
            let (anchor, certs) = if m == 2 {
                match certs.split_first() {
                    Some((anchor, certs)) => (*anchor, certs.to_vec()),
                    None => return,
                }
            } else {
                (TEST_CA, certs)
            };
            let name = NAMES[usize::from(mode / 3) % NAMES.len()];
            for now in [Some(NOW), None, Some(0)] {
                let verdict = verify_server_chain(anchor, &certs, name, now);
                if let Err(e) = verdict {
                    let _ = (e.kind(), e.to_tls_error());
                }
            }
            if verify_server_chain(anchor, &certs, name, Some(NOW)).is_ok() {
                assert!(
                    verify_server_chain(anchor, &certs, name, Some(AFTER_ALL)).is_err(),
                    "a chain valid after year 9999"
                );
                assert!(
                    verify_server_chain(anchor, &certs, name, Some(0)).is_err(),
                    "a chain valid in 1970"
                );
                assert!(!certs.is_empty());
            }
        }
    }
});
