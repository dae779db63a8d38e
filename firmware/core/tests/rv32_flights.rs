//! Records the flights the RISC-V budget run replays (`firmware/rv32-budgets`).
//!
//! For each device key (P-256, RSA-2048) this makes an AWS-shaped PKI (RSA-2048 root ->
//! RSA-2048 intermediate -> RSA-2048 server leaf for an `-ats.iot` endpoint; device
//! certificates from an RSA-2048 device CA), runs the very session the emulator runs
//! (`rv32-budgets/src/session.rs`, same fixed-seed RNG) against a rustls server that
//! requires and verifies the client certificate and answers MQTT CONNECT, SUBSCRIBE and
//! PUBLISH, and writes both directions' bytes, the credentials and the server chain to
//! `firmware/rv32-budgets/flights/<key>/`. The emulator then sends byte-identical client
//! flights or fails, so what it measured is a handshake rustls accepted.
//!
//! Run by hand after changing the session, the RNG or a TLS dependency:
//! `cargo test -p firmware-core --all-features --test rv32_flights -- --ignored`
#![cfg(all(feature = "tls-rsa", feature = "driver"))]

mod tls_pki;

#[path = "../../rv32-budgets/src/rng.rs"]
mod rng;
#[path = "../../rv32-budgets/src/session.rs"]
#[allow(dead_code, reason = "the step counts are read on the emulator only")]
mod session;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use embedded_io_adapters::tokio_1::FromTokio;
use firmware_core::driver::buffers::{TLS_READ_BUF, TLS_WRITE_BUF};
use firmware_core::tls::{CertVerifier, DeviceKey, DeviceProvider, MAX_RECORD_LEN};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tls_pki::{Alg, Pki, Spec};

/// The synced clock the replay verifies the server chain at (2026-11-18).
const NOW: u64 = 1_795_000_000;
const VALIDITY: (&str, &str) = ("20250101000000Z", "20350101000000Z");

/// A transport that keeps a copy of every byte each way.
struct Tap<T> {
    inner: T,
    rx: Arc<Mutex<Vec<u8>>>,
    tx: Arc<Mutex<Vec<u8>>>,
}

impl<T: embedded_io_async::ErrorType> embedded_io_async::ErrorType for Tap<T> {
    type Error = T::Error;
}

impl<T: embedded_io_async::Read> embedded_io_async::Read for Tap<T> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = self.inner.read(buf).await?;
        self.rx.lock().unwrap().extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl<T: embedded_io_async::Write> embedded_io_async::Write for Tap<T> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let n = self.inner.write(buf).await?;
        self.tx.lock().unwrap().extend_from_slice(&buf[..n]);
        Ok(n)
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        self.inner.flush().await
    }
}

/// Answers one client: CONNACK, SUBACK (QoS 1), PUBACK; checks what the device sent.
fn broker(mut tls: impl std::io::Read + std::io::Write) {
    let mut expect = [0x10u8, 0x82, 0x32].into_iter();
    loop {
        let mut header = [0u8; 2];
        if tls.read_exact(&mut header).is_err() {
            return; // the device closed after its PUBACK
        }
        let mut body = vec![0u8; usize::from(header[1])];
        tls.read_exact(&mut body).expect("packet body");
        assert_eq!(Some(header[0]), expect.next(), "packet order");
        let reply: Vec<u8> = match header[0] {
            0x10 => {
                assert!(body.ends_with(session::CLIENT_ID.as_bytes()));
                vec![0x20, 3, 0, 0, 0]
            }
            0x82 => vec![0x90, 4, body[0], body[1], 0, 1],
            0x32 => {
                assert!(body.ends_with(session::PAYLOAD));
                let at = 2 + session::PUB_TOPIC.len();
                vec![0x40, 2, body[at], body[at + 1]]
            }
            other => panic!("unexpected packet {other:#x}"),
        };
        tls.write_all(&reply).expect("reply");
        tls.flush().expect("flush");
    }
}

fn out_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../rv32-budgets/flights")
        .join(name);
    std::fs::create_dir_all(&dir).expect("flights dir");
    dir
}

async fn record(name: &str, device_alg: Alg) {
    let mut pki = Pki::new();
    let dated = |mut spec: Spec<'static>| {
        spec.dates = Some(VALIDITY);
        spec
    };
    let root = pki.issue(&dated(Spec::ca("Test Root CA 1", Alg::Rsa2048)), None);
    let inter = pki.issue(
        &dated(Spec::ca("Test Server CA 1B", Alg::Rsa2048)),
        Some(&root),
    );
    let san: &'static str = Box::leak(format!("DNS:{}", session::ENDPOINT).into_boxed_str());
    let leaf = pki.issue(
        &dated(Spec::leaf(session::ENDPOINT, Alg::Rsa2048, san)),
        Some(&inter),
    );
    let device_ca = pki.issue(&dated(Spec::ca("Test Device CA", Alg::Rsa2048)), None);
    let device = pki.issue(
        &dated(Spec::leaf(session::CLIENT_ID, device_alg, "")),
        Some(&device_ca),
    );
    let device_key = pki.key_der(&device.key, "pkcs8");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(device_ca.der.clone()))
        .expect("device CA");
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let server_key = PrivateKeyDer::try_from(pki.key_der(&leaf.key, "pkcs8")).expect("server key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(
            vec![
                CertificateDer::from(leaf.der.clone()),
                CertificateDer::from(inter.der.clone()),
            ],
            server_key,
        )
        .expect("server config");

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        let conn = rustls::ServerConnection::new(Arc::new(config)).expect("server conn");
        broker(rustls::StreamOwned::new(conn, tcp));
    });

    let rx = Arc::new(Mutex::new(Vec::new()));
    let tx = Arc::new(Mutex::new(Vec::new()));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let tap = Tap {
        inner: FromTokio::new(tcp),
        rx: rx.clone(),
        tx: tx.clone(),
    };
    let key = DeviceKey::from_der(&device_key).expect("device key");
    let verifier = CertVerifier::new(&root.der, Some(NOW));
    let mut provider: DeviceProvider<'_, _> =
        DeviceProvider::new(rng::FixedRng::new(rng::SEED), key, &device.der, verifier);
    let (mut read, mut write, mut record) = (
        vec![0; TLS_READ_BUF],
        vec![0; TLS_WRITE_BUF],
        vec![0; MAX_RECORD_LEN],
    );
    session::run(
        tap,
        &mut provider,
        (&mut read, &mut write, &mut record),
        || 0,
    )
    .await
    .expect("session against rustls");
    server.join().expect("server thread");

    let dir = out_dir(name);
    let write_file = |file: &str, bytes: &[u8]| std::fs::write(dir.join(file), bytes).expect(file);
    write_file("ca.der", &root.der);
    write_file("server-leaf.der", &leaf.der);
    write_file("server-intermediate.der", &inter.der);
    write_file("cert.der", &device.der);
    write_file("private.der", &device_key);
    write_file("server.bin", &rx.lock().unwrap());
    write_file("client.bin", &tx.lock().unwrap());
}

#[tokio::test]
#[ignore = "writes firmware/rv32-budgets/flights; run by hand (see the module doc)"]
async fn record_flights() {
    record("p256", Alg::P256).await;
    record("rsa2048", Alg::Rsa2048).await;
}
