//! The same client-side scenarios against two brokers through one abstraction: the mock
//! broker and mosquitto (a second, independent MQTT 3.1.1/5 broker with mutual TLS).
//! What both must do is asserted for both; where AWS (and so the mock) differs from
//! plain MQTT, the difference is asserted explicitly.

mod common;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::Stdio;

use common::{Cert, Rig, WAIT, finish, mosquitto, run, spawn};
use mock_broker::{Handle, Policy};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A broker under test.
enum Broker {
    Mock(Handle),
    Mosquitto {
        process: Box<Child>,
        addr: SocketAddr,
    },
}

impl Broker {
    async fn mock(rig: &Rig) -> Self {
        let mut config = rig.config();
        config.policy = Policy::allow_all();
        Broker::Mock(rig.start(config).await)
    }

    /// mosquitto with mutual TLS on a free loopback port; ready once it says it listens.
    async fn mosquitto(rig: &Rig) -> Self {
        std::fs::write(rig.path("server.pem"), rig.pki.server.cert_pem()).unwrap();
        std::fs::write(
            rig.path("server.key.pem"),
            rig.pki.server.key_pem().as_bytes(),
        )
        .unwrap();
        // mosquitto needs a port number up front: take a free one from the OS.
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = rig.path("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\nlog_dest stderr\nlog_type all\nlistener {port} 127.0.0.1\n\
                 cafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate true\n\
                 use_identity_as_username true\nallow_anonymous true\n",
                ca = rig.path("ca.pem").display(),
                cert = rig.path("server.pem").display(),
                key = rig.path("server.key.pem").display(),
            ),
        )
        .unwrap();
        let mut process = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto starts");
        let mut log = BufReader::new(process.stderr.take().unwrap()).lines();
        let ready = async {
            while let Some(line) = log.next_line().await.unwrap() {
                if line.contains("running") {
                    return;
                }
                assert!(!line.contains("Error"), "mosquitto: {line}");
            }
            panic!("mosquitto exited");
        };
        tokio::time::timeout(WAIT, ready)
            .await
            .expect("mosquitto ready");
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
        Broker::Mosquitto {
            process: Box::new(process),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Broker::Mock(handle) => handle.mqtt_addr(),
            Broker::Mosquitto { addr, .. } => *addr,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Broker::Mock(_) => "mock-broker",
            Broker::Mosquitto { .. } => "mosquitto",
        }
    }

    async fn stop(self) {
        match self {
            Broker::Mock(handle) => handle.shutdown().await,
            Broker::Mosquitto { mut process, .. } => {
                let _ = process.kill().await;
            }
        }
    }
}

async fn both(rig: &Rig) -> [Broker; 2] {
    [Broker::mock(rig).await, Broker::mosquitto(rig).await]
}

#[tokio::test]
async fn round_trip_in_both_versions_on_both_brokers() {
    let rig = Rig::new();
    for broker in both(&rig).await {
        for version in ["mqttv311", "mqttv5"] {
            let what = format!("{} {version}", broker.name());
            let sub_id = format!("ESPthing-sub-{version}");
            let mut sub = mosquitto(
                "mosquitto_sub",
                &rig,
                broker.addr(),
                "localhost",
                version,
                Cert::File("device"),
                &sub_id,
            );
            sub.args(["-t", "test/both", "-q", "1", "-C", "1", "-W", "10"]);
            let sub = spawn(sub);
            // There is no broker-neutral "subscribed" signal: publish until the
            // subscriber (which exits after one message) has received one.
            let publish_once = || {
                let mut publish = mosquitto(
                    "mosquitto_pub",
                    &rig,
                    broker.addr(),
                    "localhost",
                    version,
                    Cert::File("device"),
                    "ESPthing-pub",
                );
                publish.args(["-t", "test/both", "-q", "1", "-m", "both"]);
                publish
            };
            let delivered = async {
                let mut sub = Some(sub);
                loop {
                    let (ok, _, err) = run(publish_once()).await;
                    assert!(ok, "{what}: {err}");
                    let child = sub.as_mut().unwrap();
                    if let Ok(Some(_)) = child.try_wait() {
                        return finish(sub.take().unwrap()).await;
                    }
                    tokio::task::yield_now().await;
                }
            };
            let (ok, out, err) = tokio::time::timeout(WAIT, delivered).await.expect(&what);
            assert!(ok, "{what}: {err}");
            assert_eq!(out.trim(), "both", "{what}");
        }
        broker.stop().await;
    }
}

#[tokio::test]
async fn both_brokers_refuse_clients_without_a_trusted_certificate() {
    let rig = Rig::new();
    rig.write_untrusted_identity("rogue", "ESPthing");
    for broker in both(&rig).await {
        for cert in [Cert::None, Cert::File("rogue")] {
            let mut publish = mosquitto(
                "mosquitto_pub",
                &rig,
                broker.addr(),
                "localhost",
                "mqttv5",
                cert,
                "ESPthing",
            );
            publish.args(["-t", "test/x", "-m", "x"]);
            let (ok, _, _) = run(publish).await;
            assert!(!ok, "{}: must refuse", broker.name());
        }
        broker.stop().await;
    }
}

#[tokio::test]
async fn where_aws_differs_from_plain_mqtt() {
    let rig = Rig::new();
    for broker in both(&rig).await {
        // An 8-slash topic: fine for MQTT, refused by AWS.
        let mut publish = mosquitto(
            "mosquitto_pub",
            &rig,
            broker.addr(),
            "localhost",
            "mqttv311",
            Cert::File("device"),
            "ESPthing",
        );
        publish.args(["-t", "a/b/c/d/e/f/g/h/i", "-q", "1", "-m", "x"]);
        let (ok, _, _) = run(publish).await;
        match broker {
            Broker::Mock(_) => assert!(!ok, "AWS refuses 8 slashes"),
            Broker::Mosquitto { .. } => assert!(ok, "MQTT allows 8 slashes"),
        }
        broker.stop().await;
    }
}
