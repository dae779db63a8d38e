//! Server certificate presets (Device Advisor's TLS cases) through the library and the
//! control API, checked with openssl's client and the virtual device.

mod common;

use std::net::SocketAddr;

use common::{Rig, WAIT, http, run};
use mock_broker::{Handle, ServerCertificateCase};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use tokio::process::Command;

/// Device Advisor's "large server certificate chain" asks for at least this much more
/// than the usual chain.
const LARGE_CHAIN_RATIO: f64 = 1.2;

async fn broker_with_ca(rig: &Rig) -> Handle {
    let mut config = rig.config();
    config.issuing_ca = Some(rig.issuing_ca());
    config.control_addr = Some("127.0.0.1:0".parse().unwrap());
    rig.start(config).await
}

/// What openssl's client saw: whether it verified the chain for `localhost` against the
/// rig's CA, and the DER of each certificate the server sent.
async fn openssl_view(rig: &Rig, addr: SocketAddr) -> (bool, Vec<Vec<u8>>, String) {
    let mut client = Command::new("openssl");
    client
        .args(["s_client", "-connect", &addr.to_string()])
        .args(["-servername", "localhost", "-verify_hostname", "localhost"])
        .args(["-verify_return_error", "-showcerts", "-CAfile"])
        .arg(rig.path("ca.pem"))
        .arg("-cert")
        .arg(rig.path("device.pem"))
        .arg("-key")
        .arg(rig.path("device.key.pem"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let (_, out, err) = tokio::time::timeout(WAIT, run(client))
        .await
        .expect("openssl ends");
    let verified = out.contains("Verify return code: 0 (ok)");
    let chain = CertificateDer::pem_slice_iter(out.as_bytes())
        .map(|cert| cert.expect("openssl prints valid PEM").to_vec())
        .collect();
    (verified, chain, format!("{out}\n{err}"))
}

fn total_len(chain: &[Vec<u8>]) -> usize {
    chain.iter().map(Vec::len).sum()
}

#[tokio::test]
async fn the_large_chain_is_over_1_2x_the_usual_and_openssl_verifies_it() {
    let rig = Rig::new();
    let broker = broker_with_ca(&rig).await;
    let (verified, usual, log) = openssl_view(&rig, broker.mqtt_addr()).await;
    assert!(verified && usual.len() == 1, "the usual chain: {log}");

    broker
        .present_server_certificate(ServerCertificateCase::LargeChain)
        .unwrap();
    let (verified, large, log) = openssl_view(&rig, broker.mqtt_addr()).await;
    assert!(verified, "openssl must accept the large chain: {log}");
    assert_eq!(large.len(), 2, "leaf and intermediate: {log}");
    let ratio = total_len(&large) as f64 / total_len(&usual) as f64;
    eprintln!(
        "large chain {} B, usual {} B: {ratio:.2}x",
        total_len(&large),
        total_len(&usual)
    );
    assert!(
        ratio >= LARGE_CHAIN_RATIO,
        "large chain {} B vs usual {} B: ratio {ratio:.2} < {LARGE_CHAIN_RATIO}",
        total_len(&large),
        total_len(&usual)
    );

    broker.restore_server_credentials().unwrap();
    let (_, restored, log) = openssl_view(&rig, broker.mqtt_addr()).await;
    assert_eq!(restored, usual, "{log}");
    broker.shutdown().await;
}

#[tokio::test]
async fn openssl_refuses_the_bad_presets_and_each_fails_for_its_own_reason() {
    let rig = Rig::new();
    let broker = broker_with_ca(&rig).await;
    for (case, reason) in [
        (
            ServerCertificateCase::UntrustedCa,
            "unable to get local issuer certificate",
        ),
        (ServerCertificateCase::WrongName, "hostname mismatch"),
        (ServerCertificateCase::Expired, "certificate has expired"),
    ] {
        assert!(case.must_be_refused());
        broker.present_server_certificate(case).unwrap();
        let (verified, _, log) = openssl_view(&rig, broker.mqtt_addr()).await;
        assert!(!verified, "{case}: openssl must refuse: {log}");
        assert!(log.contains(reason), "{case}: expected {reason:?}: {log}");
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn the_control_api_presents_presets_by_name_and_explains_refusals() {
    let rig = Rig::new();
    let broker = broker_with_ca(&rig).await;
    let control = broker.control_addr().unwrap();
    let put = |body| http(control, "PUT", "/server-certificate", Some(body));

    assert_eq!(put(json!({"preset": "large-chain"})).await.0, 200);
    let (verified, chain, log) = openssl_view(&rig, broker.mqtt_addr()).await;
    assert!(verified && chain.len() == 2, "{log}");
    assert_eq!(put(json!({"preset": "expired"})).await.0, 200);
    let (verified, _, log) = openssl_view(&rig, broker.mqtt_addr()).await;
    assert!(
        !verified && log.contains("certificate has expired"),
        "{log}"
    );
    assert_eq!(
        http(control, "DELETE", "/server-certificate", None).await.0,
        200
    );

    let (status, body) = put(json!({"preset": "huge"})).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("\"huge\""),
        "{body}"
    );
    let (status, body) = put(json!({"preset": "expired", "key_pem": "x"})).await;
    assert_eq!(status, 400, "{body}");
    broker.shutdown().await;

    // Without the CA's key only the untrusted CA can be made; the others say why not.
    let mut config = rig.config();
    config.control_addr = Some("127.0.0.1:0".parse().unwrap());
    let broker = rig.start(config).await;
    let control = broker.control_addr().unwrap();
    let put = |body| http(control, "PUT", "/server-certificate", Some(body));
    assert_eq!(put(json!({"preset": "untrusted-ca"})).await.0, 200);
    let (status, body) = put(json!({"preset": "large-chain"})).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("ca.key.pem"),
        "{body}"
    );
    broker.shutdown().await;
}
