//! Real TLS 1.3 handshakes: embedded-tls 0.19 with firmware-core's `DeviceProvider`,
//! `CertVerifier` and `RecordAtomic` transport against `openssl s_server`, which
//! requires a client certificate (`-Verify 1`) and echoes each line reversed (`-rev`).
//!
//! Every test makes its own PKI in a tempdir and its own server on port 0, and waits
//! for observed events (the server's ACCEPT line, the reply) under timeouts.
#![cfg(feature = "tls")]

mod tls_pki;

use std::process::Stdio;
use std::time::Duration;

use embedded_io_adapters::tokio_1::FromTokio;
use embedded_tls::{Aes128GcmSha256, TlsConfig, TlsConnection, TlsContext, TlsError};
use firmware_core::tls::{
    CertVerifier, DeviceKey, DeviceProvider, MAX_RECORD_LEN, RecordAtomic, VerifyError,
    handshake_error_kind,
};
use rand_core::OsRng;
use tls_pki::{Alg, Issued, Pki, Spec, now};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(20);

/// `openssl s_server` for one connection; killed on drop.
struct Server {
    _child: Child,
    port: u16,
}

impl Server {
    /// Serves `leaf` (plus `chain`, intermediates or roots as the test wants), and
    /// demands a client certificate issued by `client_ca`.
    async fn start(pki: &Pki, leaf: &Issued, chain: &[&Issued], client_ca: &Issued) -> Server {
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_server",
            "-accept",
            "127.0.0.1:0",
            "-tls1_3",
            "-naccept",
            "1",
            "-rev",
        ])
        .args(["-Verify", "1", "-verify_return_error"])
        .arg("-cert")
        .arg(&leaf.cert)
        .arg("-key")
        .arg(&leaf.key)
        .arg("-CAfile")
        .arg(&client_ca.cert)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
        if !chain.is_empty() {
            cmd.arg("-cert_chain").arg(pki.bundle("chain.pem", chain));
        }
        let mut child = cmd.spawn().expect("openssl s_server starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let port = timeout(STEP, async {
            while let Some(line) = lines.next_line().await.expect("read s_server output") {
                if let Some(addr) = line.strip_prefix("ACCEPT ") {
                    let port = addr.rsplit(':').next().expect("port");
                    return port.parse::<u16>().expect("numeric port");
                }
            }
            panic!("s_server exited before ACCEPT");
        })
        .await
        .expect("s_server ACCEPT within the timeout");
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server {
            _child: child,
            port,
        }
    }
}

/// The device side of a connection attempt.
struct Device<'a> {
    trust_anchor: &'a [u8],
    key_der: &'a [u8],
    cert_der: &'a [u8],
    server_name: &'a str,
    now: u64,
}

/// Handshakes, sends a line, and returns the server's (reversed) reply; or the
/// handshake error with the verifier's precise reason.
async fn exchange(
    port: u16,
    device: &Device<'_>,
) -> Result<String, (TlsError, Option<VerifyError>)> {
    exchange_with(port, device, |provider| provider, |_| ()).await
}

/// [`exchange`], with `setup` applied to the provider before the handshake and `after`
/// shown it once the handshake is over.
async fn exchange_with<'d>(
    port: u16,
    device: &Device<'d>,
    setup: impl FnOnce(DeviceProvider<'d, OsRng>) -> DeviceProvider<'d, OsRng>,
    after: impl FnOnce(&DeviceProvider<'d, OsRng>),
) -> Result<String, (TlsError, Option<VerifyError>)> {
    let stream = timeout(STEP, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect in time")
        .expect("connect");
    let mut record_buf = vec![0; MAX_RECORD_LEN];
    let mut rx = vec![0; 16640];
    let mut tx = vec![0; 16640];
    let transport = RecordAtomic::new(FromTokio::new(stream), &mut record_buf);
    let mut tls: TlsConnection<'_, _, Aes128GcmSha256> =
        TlsConnection::new(transport, &mut rx, &mut tx);
    let key = DeviceKey::from_der(device.key_der).expect("device key loads");
    let verifier = CertVerifier::new(device.trust_anchor, Some(device.now));
    let mut provider = setup(DeviceProvider::new(OsRng, key, device.cert_der, verifier));
    let config = TlsConfig::new().with_server_name(device.server_name);
    let opened = timeout(STEP, tls.open(TlsContext::new(&config, &mut provider)))
        .await
        .expect("handshake in time");
    after(&provider);
    if let Err(e) = opened {
        let reason = provider.verify_error();
        // The log kind must be the precise one whenever the verifier refused.
        if let Some(v) = reason {
            assert_eq!(handshake_error_kind(&e, reason), v.kind());
        }
        return Err((e, reason));
    }
    tls.write(b"hello device\n").await.map_err(|e| (e, None))?;
    tls.flush().await.map_err(|e| (e, None))?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 256];
    while !reply.ends_with(b"\n") {
        let n = timeout(STEP, tls.read(&mut buf))
            .await
            .expect("reply in time")
            .map_err(|e| (e, None))?;
        assert!(n > 0, "server closed before replying");
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8(reply).expect("utf-8 reply"))
}

/// A client CA and a device certificate for `alg`, returning (client CA, device cert).
fn device_identity(pki: &mut Pki, alg: Alg) -> (Issued, Issued) {
    let client_ca = pki.root("Device CA", Alg::P256);
    let device = pki.issue(&Spec::leaf("ESPthing", alg, ""), Some(&client_ca));
    (client_ca, device)
}

const REPLY: &str = "ecived olleh\n";

#[tokio::test]
async fn p256_device_and_p256_server_exchange_bytes() {
    let mut pki = Pki::new();
    let root = pki.root("Test Root P256", Alg::P256);
    let leaf = pki.issue(
        &Spec::leaf("broker.test", Alg::P256, "DNS:broker.test"),
        Some(&root),
    );
    let (client_ca, device) = device_identity(&mut pki, Alg::P256);
    for encoding in ["sec1", "pkcs8"] {
        let server = Server::start(&pki, &leaf, &[], &client_ca).await;
        let key_der = pki.key_der(&device.key, encoding);
        let reply = exchange(
            server.port,
            &Device {
                trust_anchor: &root.der,
                key_der: &key_der,
                cert_der: &device.der,
                server_name: "broker.test",
                now: now(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{encoding} key: {e:?}"));
        assert_eq!(reply, REPLY);
    }
}

#[tokio::test]
async fn fifth_dns_san_matches() {
    let mut pki = Pki::new();
    let root = pki.root("Test Root SANs", Alg::P256);
    let san = "DNS:a.test,DNS:b.test,DNS:c.test,DNS:d.test,DNS:broker.test,DNS:f.test";
    let leaf = pki.issue(&Spec::leaf("a.test", Alg::P256, san), Some(&root));
    let (client_ca, device) = device_identity(&mut pki, Alg::P256);
    let server = Server::start(&pki, &leaf, &[], &client_ca).await;
    let key_der = pki.key_der(&device.key, "pkcs8");
    let device = Device {
        trust_anchor: &root.der,
        key_der: &key_der,
        cert_der: &device.der,
        server_name: "broker.test",
        now: now(),
    };
    assert_eq!(
        exchange(server.port, &device).await.expect("5th SAN"),
        REPLY
    );
}

#[tokio::test]
async fn ip_san_matches() {
    let mut pki = Pki::new();
    let root = pki.root("Test Root IP", Alg::P256);
    let leaf = pki.issue(
        &Spec::leaf("localhost", Alg::P256, "DNS:localhost,IP:127.0.0.1,IP:::1"),
        Some(&root),
    );
    let (client_ca, device) = device_identity(&mut pki, Alg::P256);
    let server = Server::start(&pki, &leaf, &[], &client_ca).await;
    let key_der = pki.key_der(&device.key, "pkcs8");
    let device = Device {
        trust_anchor: &root.der,
        key_der: &key_der,
        cert_der: &device.der,
        server_name: "127.0.0.1",
        now: now(),
    };
    assert_eq!(exchange(server.port, &device).await.expect("IP SAN"), REPLY);
}

#[tokio::test]
async fn p384_chain_connects() {
    // Shaped like Amazon Root CA 4: P-384 root signing ecdsa-with-SHA384.
    let mut pki = Pki::new();
    let root = pki.root("Test Root P384", Alg::P384);
    let inter = pki.issue(&Spec::ca("Test Intermediate P384", Alg::P384), Some(&root));
    let leaf = pki.issue(
        &Spec::leaf("broker.test", Alg::P384, "DNS:broker.test"),
        Some(&inter),
    );
    let (client_ca, device) = device_identity(&mut pki, Alg::P256);
    let server = Server::start(&pki, &leaf, &[&inter], &client_ca).await;
    let key_der = pki.key_der(&device.key, "sec1");
    let device = Device {
        trust_anchor: &root.der,
        key_der: &key_der,
        cert_der: &device.der,
        server_name: "broker.test",
        now: now(),
    };
    assert_eq!(
        exchange(server.port, &device).await.expect("P-384 chain"),
        REPLY
    );
}

/// Runs one refused handshake and returns the verifier's reason.
async fn refused(pki: &mut Pki, leaf: &Issued, anchor: &Issued, server_name: &str) -> VerifyError {
    let (client_ca, device) = device_identity(pki, Alg::P256);
    let server = Server::start(pki, leaf, &[], &client_ca).await;
    let key_der = pki.key_der(&device.key, "pkcs8");
    let device = Device {
        trust_anchor: &anchor.der,
        key_der: &key_der,
        cert_der: &device.der,
        server_name,
        now: now(),
    };
    let (error, reason) = exchange(server.port, &device)
        .await
        .expect_err("handshake must be refused");
    assert!(
        matches!(
            error,
            TlsError::InvalidCertificate | TlsError::InvalidSignature
        ),
        "{error:?}"
    );
    reason.expect("verifier says why")
}

#[tokio::test]
async fn untrusted_ca_is_refused() {
    let mut pki = Pki::new();
    let root = pki.root("Test Root Trusted", Alg::P256);
    let rogue = pki.root("Rogue Root", Alg::P256);
    let leaf = pki.issue(
        &Spec::leaf("broker.test", Alg::P256, "DNS:broker.test"),
        Some(&rogue),
    );
    assert_eq!(
        refused(&mut pki, &leaf, &root, "broker.test").await,
        VerifyError::UnknownCa
    );
}

#[tokio::test]
async fn wrong_name_is_refused() {
    let mut pki = Pki::new();
    let root = pki.root("Test Root Names", Alg::P256);
    let leaf = pki.issue(
        &Spec::leaf("other.test", Alg::P256, "DNS:other.test,DNS:*.other.test"),
        Some(&root),
    );
    let reason = refused(&mut pki, &leaf, &root, "broker.test").await;
    assert_eq!(reason, VerifyError::NameMismatch);
    assert_eq!(reason.kind(), "name-mismatch");
}

#[tokio::test]
async fn expired_server_certificate_is_refused() {
    let mut pki = Pki::new();
    let root = pki.root("Test Root Expiry", Alg::P256);
    let mut spec = Spec::leaf("broker.test", Alg::P256, "DNS:broker.test");
    spec.dates = Some(("20200101000000Z", "20210101000000Z"));
    let leaf = pki.issue(&spec, Some(&root));
    let reason = refused(&mut pki, &leaf, &root, "broker.test").await;
    assert_eq!(reason, VerifyError::CertificateExpired);
    assert_eq!(reason.kind(), "certificate-expired");
}

#[cfg(feature = "tls-rsa")]
mod rsa {
    use firmware_core::tls::rsa_accel::{
        ModExpOperands, RsaExponentiator, SoftwareExponentiator, Unsupported,
    };

    use super::*;

    /// Root -> intermediate -> leaf, all RSA-2048 sha256WithRSAEncryption, like Amazon
    /// Root CA 1 -> Amazon RSA 2048 M0x -> *.iot.<region>.amazonaws.com.
    struct AwsLike {
        pki: Pki,
        root: Issued,
        inter: Issued,
        leaf: Issued,
    }

    fn aws_like() -> AwsLike {
        let mut pki = Pki::new();
        let root = pki.root("Test Amazon Root CA 1", Alg::Rsa2048);
        let inter = pki.issue(
            &Spec::ca("Test Amazon RSA 2048 M01", Alg::Rsa2048),
            Some(&root),
        );
        let leaf = pki.issue(
            &Spec::leaf(
                "*.iot.us-east-1.amazonaws.com",
                Alg::Rsa2048,
                "DNS:iot.us-east-1.amazonaws.com,DNS:*.iot.us-east-1.amazonaws.com",
            ),
            Some(&inter),
        );
        AwsLike {
            pki,
            root,
            inter,
            leaf,
        }
    }

    const ENDPOINT: &str = "a1b2c3d4e5f6g7-ats.iot.us-east-1.amazonaws.com";

    async fn connect_aws(aws: &mut AwsLike, chain: &[&Issued], device_alg: Alg, encoding: &str) {
        let (client_ca, device) = device_identity(&mut aws.pki, device_alg);
        let server = Server::start(&aws.pki, &aws.leaf, chain, &client_ca).await;
        let key_der = aws.pki.key_der(&device.key, encoding);
        let reply = exchange(
            server.port,
            &Device {
                trust_anchor: &aws.root.der,
                key_der: &key_der,
                cert_der: &device.der,
                server_name: ENDPOINT,
                now: now(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{device_alg:?}/{encoding}: {e:?}"));
        assert_eq!(reply, REPLY);
    }

    #[tokio::test]
    async fn rsa_device_key_pkcs1_and_pkcs8() {
        let mut aws = aws_like();
        let inter = aws.inter.clone();
        connect_aws(&mut aws, &[&inter], Alg::Rsa2048, "pkcs1").await;
        connect_aws(&mut aws, &[&inter], Alg::Rsa2048, "pkcs8").await;
    }

    /// A board's exponentiator in software, counting its calls; `spoil` flips a bit of
    /// every result, as a broken accelerator would.
    struct Counting {
        calls: usize,
        spoil: bool,
    }

    impl RsaExponentiator for Counting {
        fn mod_exp(&mut self, op: &ModExpOperands<'_>, out: &mut [u32]) -> Result<(), Unsupported> {
            self.calls += 1;
            SoftwareExponentiator.mod_exp(op, out)?;
            if self.spoil {
                out[0] ^= 1;
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn rsa_device_key_signs_through_the_boards_exponentiator() {
        // OpenSSL checks the CertificateVerify made through the hook; a spoiled result
        // is caught before it is sent, and the software signature goes instead.
        for spoil in [false, true] {
            let mut aws = aws_like();
            let (client_ca, device) = device_identity(&mut aws.pki, Alg::Rsa2048);
            let inter = aws.inter.clone();
            let server = Server::start(&aws.pki, &aws.leaf, &[&inter], &client_ca).await;
            let key_der = aws.pki.key_der(&device.key, "pkcs8");
            let mut hw = Counting { calls: 0, spoil };
            let mut faulted = None;
            let reply = exchange_with(
                server.port,
                &Device {
                    trust_anchor: &aws.root.der,
                    key_der: &key_der,
                    cert_der: &device.der,
                    server_name: ENDPOINT,
                    now: now(),
                },
                |provider| provider.with_rsa_exponentiator(&mut hw),
                |provider| faulted = Some(provider.rsa_exponentiator_faulted()),
            )
            .await
            .unwrap_or_else(|e| panic!("spoil={spoil}: {e:?}"));
            assert_eq!(reply, REPLY);
            assert_eq!(hw.calls, 2, "one CertificateVerify: two CRT halves");
            assert_eq!(faulted, Some(spoil));
        }
    }

    #[tokio::test]
    async fn amazon_root_ca_1_shaped_chain() {
        let mut aws = aws_like();
        let inter = aws.inter.clone();
        connect_aws(&mut aws, &[&inter], Alg::P256, "sec1").await;
    }

    #[tokio::test]
    async fn chain_including_the_root() {
        let mut aws = aws_like();
        let (inter, root) = (aws.inter.clone(), aws.root.clone());
        connect_aws(&mut aws, &[&inter, &root], Alg::P256, "pkcs8").await;
    }

    #[tokio::test]
    async fn chain_ending_in_a_cross_signed_root() {
        // AWS may send Amazon Root CA 1 cross-signed by Starfield: same subject and key
        // as the trust anchor, issued by another root.
        let mut aws = aws_like();
        let starfield = aws
            .pki
            .root("Test Starfield Services Root G2", Alg::Rsa2048);
        let mut spec = Spec::ca(&aws.root.cn, Alg::Rsa2048);
        let root_key = aws.root.key.clone();
        spec.key = Some(&root_key);
        let cross = aws.pki.issue(&spec, Some(&starfield));
        let inter = aws.inter.clone();
        connect_aws(&mut aws, &[&inter, &cross], Alg::P256, "pkcs8").await;
    }
}

/// Forwards a TCP connection to `upstream`. Once `armed`, every chunk from the server is
/// cut in two and the second half is held until the client signals `release`: the
/// device's read deadline always fires in the middle of a record.
async fn half_record_proxy(
    upstream: u16,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    release: std::sync::Arc<tokio::sync::Notify>,
) -> u16 {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let port = listener.local_addr().expect("proxy addr").port();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.expect("accept device");
        let server = TcpStream::connect(("127.0.0.1", upstream))
            .await
            .expect("connect upstream");
        let (mut client_rx, mut client_tx) = client.into_split();
        let (mut server_rx, mut server_tx) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
        });
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if armed.load(Ordering::SeqCst) && n >= 2 {
                let half = n / 2;
                if client_tx.write_all(&buf[..half]).await.is_err() {
                    break;
                }
                release.notified().await;
                if client_tx.write_all(&buf[half..n]).await.is_err() {
                    break;
                }
            } else if client_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    port
}

/// Handshakes through the proxy, then reads the reply with a short deadline that
/// cancels the read mid-record, as minimq's `poll()` does. Returns the reply and how
/// many reads were cancelled; or why the reply never came (a TLS error, or a stream
/// so out of step that it waits for bytes that will never arrive).
async fn reply_with_cancelled_reads(atomic: bool) -> Result<(String, usize), String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut pki = Pki::new();
    let root = pki.root("Test Root Cancel", Alg::P256);
    let leaf = pki.issue(
        &Spec::leaf("broker.test", Alg::P256, "DNS:broker.test"),
        Some(&root),
    );
    let (client_ca, device) = device_identity(&mut pki, Alg::P256);
    let server = Server::start(&pki, &leaf, &[], &client_ca).await;
    let armed = Arc::new(AtomicBool::new(false));
    let release = Arc::new(tokio::sync::Notify::new());
    let port = half_record_proxy(server.port, armed.clone(), release.clone()).await;

    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let key_der = pki.key_der(&device.key, "pkcs8");
    let key = DeviceKey::from_der(&key_der).expect("key");
    let mut provider: DeviceProvider<'_, _> = DeviceProvider::new(
        OsRng,
        key,
        &device.der,
        CertVerifier::new(&root.der, Some(now())),
    );
    let config = TlsConfig::new().with_server_name("broker.test");
    let mut rx = vec![0; 16640];
    let mut tx = vec![0; 16640];
    let mut record_buf = vec![0; MAX_RECORD_LEN];

    // The same client code over either transport.
    macro_rules! run {
        ($transport:expr) => {{
            let mut tls: TlsConnection<'_, _, Aes128GcmSha256> =
                TlsConnection::new($transport, &mut rx, &mut tx);
            timeout(STEP, tls.open(TlsContext::new(&config, &mut provider)))
                .await
                .expect("handshake in time")
                .map_err(|e| format!("handshake: {e:?}"))?;
            armed.store(true, Ordering::SeqCst);
            tls.write(b"hello device\n")
                .await
                .map_err(|e| format!("write: {e:?}"))?;
            tls.flush().await.map_err(|e| format!("flush: {e:?}"))?;
            let mut reply = Vec::new();
            let mut cancelled = 0;
            let mut buf = [0u8; 256];
            while !reply.ends_with(b"\n") {
                match timeout(Duration::from_millis(50), tls.read(&mut buf)).await {
                    // The deadline dropped the read future mid-record: let the rest through.
                    Err(_) => {
                        cancelled += 1;
                        if cancelled > 20 {
                            return Err(format!("stuck after {cancelled} cancelled reads"));
                        }
                        release.notify_one();
                    }
                    Ok(read) => {
                        let n = read.map_err(|e| format!("read: {e:?}"))?;
                        assert!(n > 0, "server closed before replying");
                        reply.extend_from_slice(&buf[..n]);
                    }
                }
            }
            Ok((String::from_utf8(reply).expect("utf-8"), cancelled))
        }};
    }
    if atomic {
        run!(RecordAtomic::new(FromTokio::new(stream), &mut record_buf))
    } else {
        run!(FromTokio::new(stream))
    }
}

#[tokio::test]
async fn cancelled_reads_mid_record_keep_the_stream_in_sync() {
    let (reply, cancelled) = reply_with_cancelled_reads(true)
        .await
        .expect("reply through the record-atomic layer");
    assert_eq!(reply, REPLY);
    assert!(cancelled > 0, "no read was cancelled");
}

#[tokio::test]
async fn without_the_layer_cancelled_reads_desynchronise() {
    // The control: the same cancellations straight over the socket break embedded-tls.
    let result = reply_with_cancelled_reads(false).await;
    assert!(
        result.is_err(),
        "expected a desynchronised stream, got {result:?}"
    );
}
