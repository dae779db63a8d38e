//! `hil::third_party::Rumqttd`, the broker of `--target rumqttd` (and of fleets against
//! rumqttd): a real rumqttd in a `hil rumqttd-broker` process with mutual TLS from a
//! `certs init`-style folder. It stops and resumes on its ports; and one of rumqttd's
//! limits the README names is shown here: its accept loop does each TLS handshake itself,
//! so one idle connection holds up every new client of that listener.
#![cfg(feature = "rumqttd")]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certs::pki::{InitOptions, Pki};
use hil::aws::{AwsObserver, Endpoint, ObserverIdentity};
use hil::third_party::Rumqttd;
use mock_broker::Event;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// A fresh PKI written as `certs init` lays it out (what `Rumqttd::start` serves).
fn pki_dir() -> (Pki, tempfile::TempDir) {
    let pki = Pki::generate(&InitOptions {
        thing: "rumqttd-test".into(),
        days: 30,
        ..InitOptions::default()
    })
    .expect("test PKI");
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect(name);
    write("ca.pem", &pki.ca.cert_pem());
    write("server.pem", &pki.server.cert_pem());
    write("server.key.pem", &pki.server.key_pem());
    write("observer.pem", &pki.observer.cert_pem());
    write("observer.key.pem", &pki.observer.key_pem());
    (pki, dir)
}

fn observer_identity(dir: &Path) -> ObserverIdentity {
    ObserverIdentity::load(
        &dir.join("observer.pem"),
        &dir.join("observer.key.pem"),
        &dir.join("ca.pem"),
        hil::aws::DEFAULT_CLIENT_ID,
    )
    .expect("observer identity")
}

/// Publish `payload` on `topic` and wait until the observer receives it back.
async fn round_trip(observer: &AwsObserver, topic: &str, payload: &[u8]) {
    let mut events = observer.observe();
    observer
        .publish(topic, payload.to_vec())
        .await
        .expect("publish acknowledged");
    let seen = events
        .wait_for(Duration::from_secs(5), |event| match event {
            Event::Publish(p) if p.topic == topic && p.payload.as_ref() == payload => Some(()),
            _ => None,
        })
        .await;
    assert!(seen.is_some(), "{payload:?} not received back within 5 s");
}

#[tokio::test]
async fn rumqttd_stops_and_resumes_on_its_ports_and_clients_reconnect() {
    let (_pki, dir) = pki_dir();
    let mut broker = Rumqttd::start(dir.path()).await.expect("rumqttd starts");
    let ports = broker.ports();
    assert_ne!(ports.device, ports.observer);
    let endpoint = Endpoint {
        host: "localhost".into(),
        port: ports.observer,
        alpn: false,
    };
    let observer =
        AwsObserver::connect_following(&endpoint, &observer_identity(dir.path()), "t", "nobody")
            .await
            .expect("observer connects with its client certificate");
    round_trip(&observer, "t", b"before").await;

    assert!(broker.stop(), "it was running");
    assert!(!broker.is_running());
    for port in [ports.device, ports.observer] {
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err(),
            "port {port} still accepts after stop"
        );
    }
    assert!(
        observer.wait_lost(Duration::from_secs(5)).await.is_some(),
        "the observer's connection did not drop"
    );

    broker.resume().await.expect("rumqttd starts again");
    assert_eq!(broker.ports(), ports, "resumed on other ports");
    // The observer retries every 200 ms; it is back once it has subscribed again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while observer.lost().is_some() {
        assert!(
            Instant::now() < deadline,
            "observer not back within 10 s: {:?} (log: {})",
            observer.lost(),
            broker.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    round_trip(&observer, "t", b"after").await;
    observer.shutdown().await;
}

/// rumqttd's accept loop runs each TLS handshake before accepting the next connection,
/// with no timeout: while one TCP connection sends nothing, no other client of the
/// listener gets its handshake answered; once it closes, the next one goes through.
#[tokio::test]
async fn one_idle_connection_holds_up_every_new_handshake() {
    let (pki, dir) = pki_dir();
    let broker = Rumqttd::start(dir.path()).await.expect("rumqttd starts");
    let addr = broker.observer_addr;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.ca.cert_der().to_vec()))
        .expect("CA");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        pki.observer.key.to_pkcs8_der().to_vec(),
    ));
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from(pki.observer.cert_der.clone())],
        key,
    )
    .expect("client certificate");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = || async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("TCP");
        let name = ServerName::try_from("localhost").expect("name");
        connector.connect(name, tcp).await
    };

    // The broker is up: a handshake goes through.
    tokio::time::timeout(Duration::from_secs(5), handshake())
        .await
        .expect("handshake answered")
        .expect("handshake succeeds");

    let idle = tokio::net::TcpStream::connect(addr)
        .await
        .expect("idle TCP");
    // Lower bound only: rumqttd has no handshake timeout, so this waits for as long as
    // the idle connection stays open; 2 s is far beyond a loopback handshake (~5 ms).
    let held = tokio::time::timeout(Duration::from_secs(2), handshake()).await;
    assert!(
        held.is_err(),
        "a handshake completed while an idle connection was open: rumqttd no longer \
         serialises handshakes in its accept loop (update the README's rumqttd limits)"
    );
    drop(idle);
    tokio::time::timeout(Duration::from_secs(5), handshake())
        .await
        .expect("handshake answered once the idle connection closed")
        .expect("handshake succeeds");
}
