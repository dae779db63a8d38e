//! `mock-broker serve` as a process: the ready line, a client, the CA key loaded for the
//! server certificate presets, a clean stop on SIGINT.

mod common;

use std::process::Stdio;

use common::{Cert, Rig, WAIT, http, mosquitto, run};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

/// `mock-broker serve ARGS --certs DIR` with stdout (and stderr when `stderr`) piped,
/// and its ready line.
async fn serve(
    args: &[&str],
    dir: &std::path::Path,
    stderr: bool,
) -> (tokio::process::Child, serde_json::Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-broker"))
        .arg("serve")
        .args(args)
        .arg("--certs")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(if stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("ready line");
    (child, serde_json::from_str(&line).unwrap())
}

#[tokio::test]
async fn serve_prints_its_addresses_serves_and_stops_on_sigint() {
    let rig = Rig::new();
    rig.write_identity("server", &rig.pki.server);
    std::fs::write(rig.path("policy.json"), &rig.pki.policy).unwrap();
    // Writes ca.key.pem, which `serve` loads to sign the server certificate presets.
    rig.issuing_ca();
    let args = [
        "--port",
        "0",
        "--alpn-port",
        "0",
        "--sntp",
        "127.0.0.1:0",
        "--control",
        "127.0.0.1:0",
    ];
    let (mut child, ready) = serve(&args, rig.dir.path(), false).await;
    let line = ready.to_string();
    let mqtt: std::net::SocketAddr = ready["mqtt"].as_str().unwrap().parse().unwrap();
    assert!(
        ready["alpn"].as_str().is_some() && ready["sntp"].as_str().is_some(),
        "{line}"
    );

    // The default policy is the one `certs init` writes.
    let publish_hello = || {
        let mut publish = mosquitto(
            "mosquitto_pub",
            &rig,
            mqtt,
            "localhost",
            "mqttv5",
            Cert::File("device"),
            "ESPthing",
        );
        publish.args(["-t", "outTopic", "-q", "1", "-m", "hello"]);
        run(publish)
    };
    let (ok, _, err) = publish_hello().await;
    assert!(ok, "{err}");

    // A preset signed by the folder's CA: only possible because the key was loaded.
    let control = ready["control"].as_str().unwrap().parse().unwrap();
    let preset = serde_json::json!({"preset": "wrong-name"});
    let (status, body) = http(control, "PUT", "/server-certificate", Some(preset)).await;
    assert_eq!(status, 200, "{body}");
    let (ok, _, err) = publish_hello().await;
    assert!(!ok, "the wrong-name certificate must be refused");
    assert!(err.contains("TLS error"), "{err}");

    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .await
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn serve_with_missing_credentials_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mock-broker"))
        .args(["serve", "--port", "0", "--certs"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.key.pem"), "{stderr}");
}

#[tokio::test]
async fn serve_refuses_a_malformed_policy_naming_the_statement() {
    let rig = Rig::new();
    rig.write_identity("server", &rig.pki.server);
    let policy = rig.path("bad-policy.json");
    std::fs::write(
        &policy,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Permit","Action":"iot:*","Resource":"*"}]}"#,
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mock-broker"))
        .args(["serve", "--port", "0", "--certs"])
        .arg(rig.dir.path())
        .arg("--policy")
        .arg(&policy)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Statement[0].Effect"), "{stderr}");
}

#[tokio::test]
async fn serve_with_an_issuing_ca_that_is_not_a_ca_names_ca_pem_once() {
    let rig = Rig::new();
    rig.write_identity("server", &rig.pki.server);
    std::fs::write(rig.path("policy.json"), &rig.pki.policy).unwrap();
    // ca.key.pem is present, so `serve` loads the issuing CA; ca.pem is the device's
    // certificate, which is not a CA.
    rig.issuing_ca();
    std::fs::write(rig.path("ca.pem"), rig.pki.device.cert_pem()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mock-broker"))
        .args(["serve", "--port", "0", "--certs"])
        .arg(rig.dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("issuing CA: "), "{stderr}");
    assert!(stderr.contains("ca.pem: not a CA"), "{stderr}");
    assert!(
        !stderr.contains("ca.key.pem"),
        "the key is not at fault: {stderr}"
    );
}

/// `make broker` as a person meets it: a `certs init` folder serves the thing's policy
/// and the observer's (attached to the observer's certificate), and stderr prints the
/// exact commands to watch and send; they work as printed.
#[tokio::test]
async fn a_certs_init_folder_serves_the_observer_and_prints_how_to_watch() {
    let rig = Rig::new();
    certs::output::write_set(rig.dir.path(), &rig.pki.files(), true).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-broker"))
        .args([
            "serve",
            "--port",
            "0",
            "--control",
            "127.0.0.1:0",
            "--certs",
        ])
        .arg(rig.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(WAIT, out.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("ready line");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let mqtt: std::net::SocketAddr = ready["mqtt"].as_str().unwrap().parse().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut hints = Vec::new();
    while hints.len() < 5 {
        let line = tokio::time::timeout(WAIT, err.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("a hint line");
        hints.push(line);
    }
    let command_of = |label: &str| -> Vec<String> {
        let line = hints
            .iter()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} hint in {hints:#?}"));
        let command = line.split_once(':').unwrap().1.trim();
        // The hint quotes its JSON in single quotes for a shell: split it as one would.
        let mut words = Vec::new();
        let mut rest = command;
        while !rest.is_empty() {
            rest = rest.trim_start();
            if let Some(quoted) = rest.strip_prefix('\'') {
                let (word, after) = quoted.split_once('\'').unwrap();
                words.push(word.to_string());
                rest = after;
            } else {
                let end = rest.find(' ').unwrap_or(rest.len());
                words.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
        words
    };
    let watch = command_of("watch the device");
    assert!(watch.contains(&format!("{}", mqtt.port())), "{watch:?}");

    // The printed watch command, bounded: the observer's policy lets it subscribe.
    let mut sub = Command::new(&watch[0]);
    sub.args(&watch[1..])
        .args(["-C", "1", "-W", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut sub = sub.spawn().unwrap();
    let mut sub_out = sub.stdout.take().unwrap();
    // The thing publishes as the device does until the watcher, once subscribed, has
    // printed one message and exited.
    let mut published = false;
    for _ in 0..8 {
        let mut publish = mosquitto(
            "mosquitto_pub",
            &rig,
            mqtt,
            "localhost",
            "mqttv5",
            Cert::File("device"),
            "ESPthing",
        );
        publish.args(["-t", "outTopic", "-q", "1", "-m", "hello world #1"]);
        let (ok, _, e) = run(publish).await;
        assert!(ok, "{e}");
        // Over a second per round: AWS (and the mock) take one CONNECT per second per id.
        if let Ok(status) =
            tokio::time::timeout(std::time::Duration::from_millis(1200), sub.wait()).await
        {
            assert!(status.unwrap().success());
            published = true;
            break;
        }
    }
    assert!(published, "the observer never saw the thing's publish");
    let mut seen = String::new();
    sub_out.read_to_string(&mut seen).await.unwrap();
    assert!(seen.contains("outTopic hello world #1"), "{seen:?}");

    // The printed send command: the observer may publish to the thing's inbound topic.
    let send = command_of("send it a message");
    let mut publish = Command::new(&send[0]);
    publish.args(&send[1..]);
    let output = publish.output().await.unwrap();
    assert!(output.status.success(), "{output:?}");

    // The control API the hints point at answers.
    let control = ready["control"].as_str().unwrap().parse().unwrap();
    let (status, _) = http(control, "GET", "/status", None).await;
    assert_eq!(status, 200);
}
