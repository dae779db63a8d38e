//! Brokers under test behind one abstraction, and the client-side checks every broker
//! runs: the mock broker, mosquitto as a local process, and third-party broker images in
//! containers (where a Docker daemon answers). What every broker must do is asserted for
//! each; where AWS (and so the mock) differs from plain MQTT, the difference is asserted
//! explicitly.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::process::Stdio;

use mock_broker::{Handle, Policy};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, CopyTargetOptions, GenericImage, ImageExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::{Cert, Rig, WAIT, finish, mosquitto, run, spawn};

/// The mosquitto image the container checks run, pinned so a new release cannot change
/// a result unnoticed.
pub const MOSQUITTO_IMAGE: (&str, &str) = ("eclipse-mosquitto", "2.0.20");
/// Where the image reads its configuration.
const CONTAINER_CONFIG_DIR: &str = "/mosquitto/config";
const CONTAINER_TLS_PORT: u16 = 8883;

/// A broker under test.
pub enum Broker {
    Mock(Handle),
    Mosquitto {
        process: Box<Child>,
        addr: SocketAddr,
    },
    Container {
        container: Box<ContainerAsync<GenericImage>>,
        addr: SocketAddr,
        name: String,
    },
}

/// mosquitto's configuration: mutual TLS against the rig's CA on `listener` (`PORT
/// [ADDRESS]`), files read from `dir`. `user root` because mosquitto started as root
/// drops privileges and then cannot read the key.
fn mosquitto_conf(listener: &str, dir: &Path) -> String {
    format!(
        "user root\nlog_dest stderr\nlog_type all\nlistener {listener}\n\
         cafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate true\n\
         use_identity_as_username true\nallow_anonymous true\n",
        ca = dir.join("ca.pem").display(),
        cert = dir.join("server.pem").display(),
        key = dir.join("server.key.pem").display(),
    )
}

impl Broker {
    pub async fn mock(rig: &Rig) -> Self {
        let mut config = rig.config();
        config.policy = Policy::allow_all();
        Broker::Mock(rig.start(config).await)
    }

    /// mosquitto with mutual TLS on a free loopback port; ready once it says it listens.
    pub async fn mosquitto(rig: &Rig) -> Self {
        rig.write_identity("server", &rig.pki.server);
        // mosquitto needs a port number up front: take a free one from the OS.
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = rig.path("mosquitto.conf");
        std::fs::write(
            &conf,
            mosquitto_conf(&format!("{port} 127.0.0.1"), rig.dir.path()),
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

    /// The [`MOSQUITTO_IMAGE`] in a container with the same configuration and the rig's
    /// certificates copied in, its TLS port published on a free host port.
    pub async fn mosquitto_container(rig: &Rig) -> Result<Self, String> {
        let (image, tag) = MOSQUITTO_IMAGE;
        let dir = Path::new(CONTAINER_CONFIG_DIR);
        let file = |name: &str| {
            CopyTargetOptions::new(dir.join(name).display().to_string()).with_mode(0o644)
        };
        let container = GenericImage::new(image, tag)
            .with_exposed_port(CONTAINER_TLS_PORT.tcp())
            .with_wait_for(WaitFor::message_on_stderr(" running"))
            .with_copy_to(
                file("mosquitto.conf"),
                mosquitto_conf(&CONTAINER_TLS_PORT.to_string(), dir).into_bytes(),
            )
            .with_copy_to(file("ca.pem"), rig.pki.ca.cert_pem().into_bytes())
            .with_copy_to(file("server.pem"), rig.pki.server.cert_pem().into_bytes())
            .with_copy_to(
                file("server.key.pem"),
                rig.pki.server.key_pem().as_bytes().to_vec(),
            )
            .with_startup_timeout(std::time::Duration::from_secs(120))
            .start()
            .await
            .map_err(|e| format!("{image}:{tag} did not start: {e}"))?;
        let port = container
            .get_host_port_ipv4(CONTAINER_TLS_PORT.tcp())
            .await
            .map_err(|e| format!("{image}:{tag}: no host port for {CONTAINER_TLS_PORT}: {e}"))?;
        Ok(Broker::Container {
            container: Box::new(container),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            name: format!("{image}:{tag}"),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            Broker::Mock(handle) => handle.mqtt_addr(),
            Broker::Mosquitto { addr, .. } | Broker::Container { addr, .. } => *addr,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Broker::Mock(_) => "mock-broker",
            Broker::Mosquitto { .. } => "mosquitto",
            Broker::Container { name, .. } => name,
        }
    }

    /// Whether it applies AWS IoT Core's rules (only the mock does).
    pub fn is_aws_like(&self) -> bool {
        matches!(self, Broker::Mock(_))
    }

    pub async fn stop(self) {
        match self {
            Broker::Mock(handle) => handle.shutdown().await,
            Broker::Mosquitto { mut process, .. } => {
                let _ = process.kill().await;
            }
            Broker::Container { container, .. } => {
                let _ = container.rm().await;
            }
        }
    }
}

/// A mosquitto client for `broker`, dialling `localhost` (the server certificate's name,
/// sent as SNI) with MQTT `version` and the identity `cert`.
fn client(
    program: &str,
    rig: &Rig,
    broker: &Broker,
    version: &str,
    cert: Cert<'_>,
    client_id: &str,
) -> Command {
    mosquitto(
        program,
        rig,
        broker.addr(),
        "localhost",
        version,
        cert,
        client_id,
    )
}

/// Publish and subscribe round trip in MQTT 3.1.1 and 5.
pub async fn round_trip_in_both_versions(rig: &Rig, broker: &Broker) {
    for version in ["mqttv311", "mqttv5"] {
        let what = format!("{} {version}", broker.name());
        let sub_id = format!("ESPthing-sub-{version}");
        let mut sub = client(
            "mosquitto_sub",
            rig,
            broker,
            version,
            Cert::File("device"),
            &sub_id,
        );
        sub.args(["-t", "test/both", "-q", "1", "-C", "1", "-W", "10"]);
        let sub = spawn(sub);
        // There is no broker-neutral "subscribed" signal: publish until the subscriber
        // (which exits after one message) has received one.
        let publish_once = || {
            let mut publish = client(
                "mosquitto_pub",
                rig,
                broker,
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
}

/// No client certificate, or one from a CA the broker does not trust: refused.
pub async fn refuses_clients_without_a_trusted_certificate(rig: &Rig, broker: &Broker) {
    rig.write_untrusted_identity("rogue", "ESPthing");
    for cert in [Cert::None, Cert::File("rogue")] {
        let mut publish = client("mosquitto_pub", rig, broker, "mqttv5", cert, "ESPthing");
        publish.args(["-t", "test/x", "-m", "x"]);
        let (ok, _, _) = run(publish).await;
        assert!(!ok, "{}: must refuse", broker.name());
    }
}

/// An 8-slash topic: fine for MQTT, refused by AWS.
pub async fn eight_slash_topic_only_aws_refuses(rig: &Rig, broker: &Broker) {
    let mut publish = client(
        "mosquitto_pub",
        rig,
        broker,
        "mqttv311",
        Cert::File("device"),
        "ESPthing",
    );
    publish.args(["-t", "a/b/c/d/e/f/g/h/i", "-q", "1", "-m", "x"]);
    let (ok, _, err) = run(publish).await;
    if broker.is_aws_like() {
        assert!(!ok, "{}: AWS refuses 8 slashes", broker.name());
    } else {
        assert!(ok, "{}: MQTT allows 8 slashes: {err}", broker.name());
    }
}
