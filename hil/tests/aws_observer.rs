//! `hil run --target aws` against the mock broker acting as the AWS IoT endpoint: the
//! device runs the one image it is given, the rig starts no broker of its own and watches
//! and injects through a second identity (the observer) with the policy
//! `certs::policy::observer_policy_document` writes. Boot, cadence and inbound pass
//! through the observer; the scenarios that need broker faults are reported skipped.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use certs::creds::Credentials;
use certs::image;
use certs::pki::{InitOptions, Pki};
use certs::policy::{
    DEFAULT_OBSERVER_CLIENT_ID, THING_NAME_CLIENT, observer_policy_document, policy_document,
};
use firmware_core::config::DeviceConfig;
use mock_broker::{Config, Event, Handle, MockBroker, Policy, Publisher};

/// One policy for the broker holding both identities' statements: on AWS each
/// certificate has its own policy, the mock broker applies one document to everyone.
fn thing_and_observer_policy(observer_client_id: &str) -> Policy {
    let statements = |text: &str| -> Vec<serde_json::Value> {
        let doc: serde_json::Value = serde_json::from_str(text).expect("policy JSON");
        doc["Statement"].as_array().expect("statements").clone()
    };
    let mut all = statements(&policy_document(THING_NAME_CLIENT, "outTopic", "inTopic"));
    all.extend(statements(&observer_policy_document(
        observer_client_id,
        "outTopic",
        "inTopic",
    )));
    let doc = serde_json::json!({ "Version": "2012-10-17", "Statement": all });
    Policy::from_json(&doc.to_string()).expect("policy")
}

/// The "endpoint": a mock broker serving `pki`'s server certificate with `policy`, and
/// SNTP on loopback for the device.
async fn endpoint(pki: &Pki, policy: Policy) -> Handle {
    let credentials = mock_broker::Credentials::with_server_pem(
        vec![pki.ca.cert_der().to_vec()],
        &pki.server.cert_pem(),
        &pki.server.key_pem(),
    )
    .expect("credentials");
    let mut config = Config::new(credentials, policy);
    config.sntp_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    MockBroker::start(config).await.expect("broker")
}

/// What `certs import` + `certs image` make for a real thing: its identity, the CA the
/// endpoint chains to, the endpoint and the tutorial's topics.
fn write_thing_image(dir: &Path, pki: &Pki, broker: &Handle) -> std::path::PathBuf {
    let mut config = DeviceConfig::new("localhost", "ESPthing").expect("config");
    config.endpoint.port = broker.mqtt_addr().port();
    config.ntp.host = "127.0.0.1".try_into().unwrap();
    config.ntp.port = broker.sntp_addr().expect("sntp").port();
    let creds = Credentials::from_pki(pki).expect("creds");
    let bytes = image::build_image(&creds, &config, image::DEFAULT_IMAGE_SIZE).expect("image");
    let path = dir.join("thing.img");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn write_observer_files(dir: &Path, pki: &Pki) {
    std::fs::write(dir.join("observer.pem"), pki.observer.cert_pem()).unwrap();
    std::fs::write(
        dir.join("observer.key.pem"),
        pki.observer.key_pem().as_bytes(),
    )
    .unwrap();
    std::fs::write(dir.join("ca.pem"), pki.ca.cert_pem()).unwrap();
}

fn hil_aws(dir: &Path, broker: &Handle, extra: &[&str]) -> Output {
    hil_aws_command(dir, broker, "run", extra)
}

/// `hil COMMAND --target aws ...` against `broker` standing in for the endpoint.
fn hil_aws_command(dir: &Path, broker: &Handle, command: &str, extra: &[&str]) -> Output {
    common::virtual_device();
    let endpoint = format!("localhost:{}", broker.mqtt_addr().port());
    Command::new(env!("CARGO_BIN_EXE_hil"))
        .current_dir(dir)
        .args([
            command,
            "--target",
            "aws",
            "--endpoint",
            &endpoint,
            "--flash",
            "thing.img",
            "--observer-cert",
            "observer.pem",
            "--observer-key",
            "observer.key.pem",
            "--observer-ca",
            "ca.pem",
        ])
        .args(extra)
        .output()
        .expect("run hil")
}

#[tokio::test(flavor = "multi_thread")]
async fn boot_cadence_and_inbound_pass_through_the_observer_and_fault_scenarios_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&InitOptions::default()).expect("pki");
    let broker = endpoint(&pki, thing_and_observer_policy(DEFAULT_OBSERVER_CLIENT_ID)).await;
    let mut seen = broker.observe();
    write_thing_image(dir.path(), &pki, &broker);
    write_observer_files(dir.path(), &pki);

    let out = hil_aws(dir.path(), &broker, &["--junit", "junit.xml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hil failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for name in ["boot", "cadence", "inbound"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(name) && l.contains(" pass ")),
            "{name} did not pass:\n{stdout}"
        );
    }
    let faulty: Vec<&str> = hil::scenarios::all()
        .iter()
        .filter(|s| s.needs_broker_faults)
        .map(|s| s.name)
        .collect();
    assert!(faulty.contains(&"tls-expired"));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("reconnect-after-restart")
                && l.contains("skip    restarts the broker, which a test cannot do to AWS IoT")),
        "{stdout}"
    );
    for name in faulty.iter().copied() {
        assert!(
            stderr.contains(&format!(
                "skipping {name}: needs the mock broker's faults, which AWS IoT does not offer"
            )),
            "{name} not skipped with the reason:\n{stderr}"
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(name) && l.contains(" skip ")),
            "{name} not in the summary as skipped:\n{stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("3 passed, 0 failed, {} skipped", faulty.len() + 1)),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "AWS IoT endpoint localhost:{} watched by observer hil-observer",
            broker.mqtt_addr().port()
        )),
        "{stderr}"
    );

    // The endpoint's own account: the observer connected under its client id, and the
    // inbound payloads came from it, not from a back door into the broker.
    let mut observer_connected = false;
    let mut observer_publishes = 0;
    while let Some(event) = seen.try_next() {
        match event {
            Event::Connected { client_id, .. } if client_id == DEFAULT_OBSERVER_CLIENT_ID => {
                observer_connected = true;
            }
            Event::Publish(p)
                if p.publisher == Publisher::Client(DEFAULT_OBSERVER_CLIENT_ID.into()) =>
            {
                assert_eq!(p.topic, "inTopic");
                observer_publishes += 1;
            }
            Event::Publish(p) => assert_ne!(p.publisher, Publisher::Injected, "{p:?}"),
            _ => {}
        }
    }
    assert!(observer_connected);
    assert_eq!(
        observer_publishes,
        hil::scenarios::inbound::payloads().len()
    );
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    assert!(junit.contains("name=\"cadence\""), "{junit}");
    assert!(
        junit.contains(&format!(
            r#"failures="0" errors="0" skipped="{}""#,
            faulty.len() + 1
        )) && junit.contains("<skipped message=\"needs the mock broker&apos;s faults"),
        "{junit}"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn qualify_on_aws_judges_what_aws_can_show_and_lists_the_rest_as_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&InitOptions::default()).expect("pki");
    let broker = endpoint(&pki, thing_and_observer_policy(DEFAULT_OBSERVER_CLIENT_ID)).await;
    write_thing_image(dir.path(), &pki, &broker);
    write_observer_files(dir.path(), &pki);
    let cases = [
        "TLS_Connect",
        "MQTT_Subscribe",
        "MQTT_Persistent_Session_Happy_Case",
        "TLS_Expired_Server_Cert",
        "Security_Device_Policies",
    ];
    let mut extra = vec!["--junit", "junit.xml"];
    for case in cases {
        extra.extend(["--case", case]);
    }
    let out = hil_aws_command(dir.path(), &broker, "qualify", &extra);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Cases not run fail nothing: the qualification passes on what it could judge.
    assert!(
        out.status.success(),
        "hil qualify failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let row = |case: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{case} ")))
            .unwrap_or_else(|| panic!("no row for {case}:\n{stdout}"))
            .to_string()
    };
    for case in ["TLS_Connect", "MQTT_Subscribe"] {
        assert!(row(case).contains(" pass "), "{}", row(case));
    }
    for case in [
        "MQTT_Persistent_Session_Happy_Case",
        "TLS_Expired_Server_Cert",
    ] {
        let row = row(case);
        assert!(
            row.contains(" not run ")
                && row.contains("needs the mock broker's faults, which AWS IoT does not offer"),
            "{row}"
        );
    }
    // The account holds the policy: without --policy it cannot be judged.
    assert!(
        row("Security_Device_Policies").contains("no policy document: give --policy FILE"),
        "{stdout}"
    );
    assert!(
        stdout.contains("5 case(s): 2 pass, 0 pass with warnings, 0 fail, 3 not run"),
        "{stdout}"
    );
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 5, "{junit}");
    assert_eq!(junit.matches("<skipped message=").count(), 3, "{junit}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_observer_its_policy_does_not_let_watch_the_topic_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&InitOptions::default()).expect("pki");
    // The thing's policy only: the observer (CN=observer) may connect as itself, but not
    // subscribe to outTopic.
    let policy = Policy::from_json(&policy_document(THING_NAME_CLIENT, "outTopic", "inTopic"))
        .expect("policy");
    let broker = endpoint(&pki, policy).await;
    write_thing_image(dir.path(), &pki, &broker);
    write_observer_files(dir.path(), &pki);

    let out = hil_aws(
        dir.path(),
        &broker,
        &["--observer-client-id", "observer", "--scenario", "boot"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("observer observer at localhost:") && stderr.contains("outTopic"),
        "{stderr}"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_other_than_the_one_the_image_dials_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&InitOptions::default()).expect("pki");
    let broker = endpoint(&pki, thing_and_observer_policy(DEFAULT_OBSERVER_CLIENT_ID)).await;
    write_thing_image(dir.path(), &pki, &broker);
    write_observer_files(dir.path(), &pki);
    let dialled = broker.mqtt_addr().port();
    broker.shutdown().await;

    common::virtual_device();
    let out = Command::new(env!("CARGO_BIN_EXE_hil"))
        .current_dir(dir.path())
        .args([
            "run",
            "--target",
            "aws",
            "--endpoint",
            "other-ats.iot.eu-west-1.amazonaws.com",
            "--flash",
            "thing.img",
            "--observer-cert",
            "observer.pem",
            "--observer-key",
            "observer.key.pem",
            "--observer-ca",
            "ca.pem",
        ])
        .output()
        .expect("run hil");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "thing.img: the image's config dials localhost:{dialled}, not --endpoint other-ats.iot.eu-west-1.amazonaws.com:8883"
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_observer_watches_and_injects_on_a_443_style_listener_with_alpn() {
    use hil::aws::{AwsObserver, Endpoint, ObserverIdentity};
    use mock_broker::QoS;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&InitOptions::default()).expect("pki");
    let credentials = mock_broker::Credentials::with_server_pem(
        vec![pki.ca.cert_der().to_vec()],
        &pki.server.cert_pem(),
        &pki.server.key_pem(),
    )
    .expect("credentials");
    let mut config = Config::new(
        credentials,
        thing_and_observer_policy(DEFAULT_OBSERVER_CLIENT_ID),
    );
    config.alpn_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let broker = MockBroker::start(config).await.expect("broker");
    write_observer_files(dir.path(), &pki);
    let identity = ObserverIdentity::load(
        &dir.path().join("observer.pem"),
        &dir.path().join("observer.key.pem"),
        &dir.path().join("ca.pem"),
        DEFAULT_OBSERVER_CLIENT_ID,
    )
    .expect("observer identity");
    let mut endpoint = Endpoint {
        host: "localhost".into(),
        port: broker.alpn_addr().expect("ALPN listener").port(),
        alpn: false,
    };

    // The 443-style listener requires ALPN x-amzn-mqtt-ca, as AWS does.
    let Err(why) = AwsObserver::connect(&endpoint, &identity, "outTopic", "ESPthing").await else {
        panic!("connected without ALPN");
    };
    let why = why.to_string();
    assert!(
        why.starts_with("observer hil-observer at localhost:"),
        "{why}"
    );

    endpoint.alpn = true;
    let observer = AwsObserver::connect(&endpoint, &identity, "outTopic", "ESPthing")
        .await
        .expect("observer with ALPN");
    // Watching: a publish on outTopic reaches the observer, attributed to the device.
    let mut watched = observer.observe();
    assert_eq!(
        broker.inject("outTopic", b"hello world #1".to_vec(), QoS::AtLeastOnce),
        1
    );
    let seen = watched
        .wait_for_publish("outTopic", Duration::from_secs(5))
        .await
        .expect("the observer saw the publish");
    assert_eq!(
        (seen.publisher, &seen.payload[..]),
        (Publisher::Client("ESPthing".into()), &b"hello world #1"[..])
    );
    // Injecting: the observer's publish reaches the broker under its own client id.
    let mut at_broker = broker.observe();
    observer
        .publish("inTopic", b"hi".to_vec())
        .await
        .expect("PUBACK");
    let injected = at_broker
        .wait_for_publish("inTopic", Duration::from_secs(5))
        .await
        .expect("the broker got the injection");
    assert_eq!(
        injected.publisher,
        Publisher::Client(DEFAULT_OBSERVER_CLIENT_ID.into())
    );
    // The endpoint going away is noticed and named, so failures can say why nothing more
    // was seen.
    assert_eq!(observer.lost(), None);
    broker.shutdown().await;
    let why = observer
        .wait_lost(Duration::from_secs(10))
        .await
        .expect("the observer noticed the endpoint go away");
    let refused = observer
        .publish("inTopic", b"late".to_vec())
        .await
        .expect_err("published after the connection was lost")
        .to_string();
    assert!(
        refused.contains(&format!("connection lost: {why}")),
        "{refused}"
    );
    observer.shutdown().await;
}
