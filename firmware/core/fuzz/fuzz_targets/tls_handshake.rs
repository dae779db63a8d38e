//! The device's TLS client on whatever a server (or anything on the path) sends: the
//! handshake as the boards open it — embedded-tls over the record-atomic transport, with
//! the firmware's crypto provider (device key) and certificate verifier — fed arbitrary
//! bytes. It must end in a `TlsError` that classifies into a log kind, never a panic or a
//! hang.
//!
//! Input: the server's byte stream. The seeds are real server flights (openssl
//! `s_server` with the test PKI) answering another ClientHello: their ServerHello parses,
//! the key exchange then fails, so the fuzzer starts past the record and hello parsing.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use embedded_io::ErrorType;
use embedded_io_async::{Read, Write};
use embedded_tls::{Aes128GcmSha256, TlsConfig, TlsConnection, TlsContext};
use firmware_core::tls::{
    CertVerifier, DeviceKey, DeviceProvider, MAX_RECORD_LEN, RecordAtomic, handshake_error_kind,
    handshake_failure,
};
use libfuzzer_sys::fuzz_target;
use rand_core::{CryptoRng, RngCore};

const TEST_CA: &[u8] = include_bytes!("../testdata/test-ca.der");
const DEVICE_KEY: &[u8] = include_bytes!("../../src/tls/testdata/p256.pkcs8.der");
/// 2026-12-05: inside the test PKI's validity.
const NOW: u64 = 1_796_428_800;

/// The server side: its bytes from the input, a few at a time; what the device writes is
/// dropped. The end of the input is the end of the stream.
struct Peer<'a> {
    from_server: &'a [u8],
}

impl ErrorType for Peer<'_> {
    type Error = embedded_io::ErrorKind;
}

impl Read for Peer<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        // Odd-sized pieces so records straddle reads.
        let n = buf.len().min(self.from_server.len()).min(997);
        buf[..n].copy_from_slice(&self.from_server[..n]);
        self.from_server = &self.from_server[n..];
        Ok(n)
    }
}

impl Write for Peer<'_> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        Ok(buf.len())
    }
    async fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Deterministic "randomness", so a crash reproduces.
struct Counter(u64);

impl RngCore for Counter {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let x = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Counter {}

fuzz_target!(|data: &[u8]| {
    let key = DeviceKey::from_der(DEVICE_KEY).expect("test key");
    let verifier = CertVerifier::new(TEST_CA, Some(NOW));
    let mut provider: DeviceProvider<'_, _, Aes128GcmSha256> =
        DeviceProvider::new(Counter(7), key, b"client-certificate", verifier);
    let mut record_buf = vec![0u8; MAX_RECORD_LEN];
    let (mut rx, mut tx) = (vec![0u8; 16_640], vec![0u8; 4096]);
    let records = RecordAtomic::new(Peer { from_server: data }, &mut record_buf);
    let mut tls: TlsConnection<'_, _, Aes128GcmSha256> =
        TlsConnection::new(records, &mut rx, &mut tx);
    let config = TlsConfig::new().with_server_name("localhost");
    let result = {
        let open = pin!(tls.open(TlsContext::new(&config, &mut provider)));
        // The peer never makes a read wait, so the handshake finishes in one poll.
        match open.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("handshake waits on a transport that never does"),
        }
    };
    match result {
        // A forged handshake would need the CA's key: accepting one is a verifier bug.
        Ok(()) => panic!("handshake completed against fuzz input"),
        Err(error) => {
            let kind = handshake_error_kind(&error, provider.verify_error());
            let _ = handshake_failure(&error, kind);
        }
    }
});
