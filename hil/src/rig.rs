//! The rig a suite runs in: one test PKI, one mock broker (MQTT over TLS and SNTP on
//! loopback ephemeral ports) and a work folder for the devices' flash images; or, with
//! `--target aws`, an observer connection to a real AWS IoT endpoint instead of a broker;
//! or, with `--target mosquitto|rumqttd`, that broker (`crate::third_party`) watched
//! through the same observer.
//!
//! The PKI is fresh for every run by default (nothing on disk to go stale), or the CA of a
//! `certs init` folder (`--pki DIR`), whose server certificate the broker then presents.
//!
//! Every scenario gets its own device identity from the one CA, so virtual devices can
//! run side by side against the one broker without taking over each other's sessions.
//! Each device subscribes to its own inbound topic ([`inbound_topic`]), so a message
//! injected for one scenario never shows up in another's log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use certs::creds::Credentials;
use certs::image;
use certs::pki::{CertificateAuthority, InitOptions, KeyAlgorithm, Pki, Validity};
use certs::policy::{THING_NAME_CLIENT, policy_document};
use firmware_core::config::DeviceConfig;
use firmware_core::image::CONFIG_PATH;
use mock_broker::{Config, Handle, MockBroker, Observer, Policy, QoS};

use crate::aws::{AwsObserver, Endpoint, ObserverIdentity};
use crate::error::RigError;
use crate::third_party::{Mosquitto, Rumqttd};

/// The topic the devices publish to (the tutorial's).
pub const OUT_TOPIC: &str = "outTopic";
/// Validity of the identities the rig issues.
const VALIDITY_DAYS: u32 = 30;

/// The inbound topic of the device named `client_id`.
pub fn inbound_topic(client_id: &str) -> String {
    format!("inTopic/{client_id}")
}

/// A deliberate change to every image the rig writes, to show that a wrong image makes
/// the matching scenarios fail (a period of 3000 ms, a CA the broker's certificate does
/// not chain to).
#[derive(Debug, Clone, Default)]
pub struct ImageSabotage {
    pub period_ms: Option<u32>,
    /// DER of the CA put in the image instead of the rig's.
    pub ca_der: Option<Vec<u8>>,
}

/// A flash image given on the command line (`--flash`) and the config read from it.
#[derive(Debug, Clone)]
pub struct GivenImage {
    pub path: PathBuf,
    pub config: DeviceConfig,
}

impl GivenImage {
    pub fn read(path: &Path) -> Result<Self, RigError> {
        let bytes = std::fs::read(path).map_err(|e| RigError::file(path, e))?;
        let contents = image::read_image(&bytes).map_err(|e| {
            RigError::file(
                path,
                format!(
                    "not a flash image ({e}); make one with `certs image` \
                     (`make certs` writes certs/dev/flash.img)"
                ),
            )
        })?;
        let json = contents
            .file(CONFIG_PATH)
            .ok_or_else(|| RigError::file(path, format!("no {CONFIG_PATH}")))?;
        let config = DeviceConfig::from_json(json).map_err(|e| {
            RigError::file(format!("{}{CONFIG_PATH}", path.display()), format!("{e:?}"))
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            config,
        })
    }
}

/// `host:port` as an address to listen on, if `host` names this machine: `localhost` or a
/// loopback address (127.0.0.1), or an address of one of its interfaces (a bench image
/// names the host's LAN address, which a board dials over WiFi).
fn loopback(host: &str, port: u16) -> Option<SocketAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let ip = host.parse::<std::net::IpAddr>().ok()?;
    if ip.is_loopback() {
        return Some(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    // Binding succeeds only for an address assigned to this machine.
    std::net::UdpSocket::bind((ip, 0)).ok()?;
    Some(SocketAddr::new(ip, port))
}

/// What the devices connect to, and how the rig sees what they do there.
enum Target {
    /// The in-process mock broker.
    Mock(Handle),
    /// The observer connection to AWS IoT (`--target aws`).
    Aws(AwsObserver),
    /// A mosquitto or rumqttd the rig started, watched through the observer as AWS is
    /// (`--target mosquitto|rumqttd`).
    ThirdParty(Box<ThirdParty>),
}

/// Which third-party broker (`--target mosquitto|rumqttd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThirdPartyKind {
    Mosquitto,
    Rumqttd,
}

impl ThirdPartyKind {
    /// As on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mosquitto => "mosquitto",
            Self::Rumqttd => "rumqttd",
        }
    }

    fn log(self) -> &'static str {
        match self {
            Self::Mosquitto => crate::third_party::LOG,
            Self::Rumqttd => crate::third_party::RUMQTTD_LOG,
        }
    }
}

/// A third-party broker's process. A stopped mosquitto is gone (it is started again from
/// its folder and port); a stopped [`Rumqttd`] keeps its ports to resume on.
enum BrokerProcess {
    Mosquitto(Mosquitto),
    Rumqttd(Rumqttd),
}

impl ThirdParty {
    /// The port the observer connects to, which stays while the broker restarts (the
    /// device's too for mosquitto; rumqttd serves the observer on a port of its own).
    fn observer_port(&self) -> u16 {
        self.observer.endpoint().port
    }

    fn log_tail(&self) -> String {
        std::fs::read_to_string(self.dir.join(self.kind.log()))
            .map(|text| {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(5)..].join(" | ")
            })
            .unwrap_or_default()
    }
}

/// A third-party broker the rig started, the observer watching it, and the mock broker
/// that serves the device its time (nothing else of it is used).
pub struct ThirdParty {
    kind: ThirdPartyKind,
    observer: AwsObserver,
    /// `None` while mosquitto is stopped ([`Rig::stop_broker`]) or being started again.
    broker: std::sync::Mutex<Option<BrokerProcess>>,
    /// Where the broker's configuration and log are, to start it again.
    dir: PathBuf,
    /// Where the device connects.
    device_port: u16,
    sntp: Handle,
}

/// Everything scenarios share.
pub struct Rig {
    target: Target,
    /// The CA that issues the devices' identities (fresh, or a `--pki` folder's); absent
    /// when every device runs a given image.
    ca: Option<CertificateAuthority>,
    device_binary: PathBuf,
    workdir: tempfile::TempDir,
    sabotage: ImageSabotage,
    given: Option<GivenImage>,
    /// The policy document the broker judges the devices by: where it comes from, and
    /// its JSON (unknown on AWS: the account holds it).
    policy: Option<(String, String)>,
}

impl Rig {
    /// Make a fresh test PKI and start the broker with the least-privilege policy: each
    /// thing may connect as itself, publish to [`OUT_TOPIC`] and subscribe to its own
    /// inbound topic.
    pub async fn start(device_binary: PathBuf) -> Result<Self, RigError> {
        let pki = Pki::generate(&InitOptions {
            thing: "hil".into(),
            days: VALIDITY_DAYS,
            ..InitOptions::default()
        })
        .map_err(|e| RigError::make("test PKI", e))?;
        let credentials = mock_broker::Credentials::with_server_pem(
            vec![pki.ca.cert_der().to_vec()],
            &pki.server.cert_pem(),
            &pki.server.key_pem(),
        )
        .map_err(|e| RigError::broker("broker credentials", e))?;
        Self::start_issuing(device_binary, pki.ca, credentials).await
    }

    /// As [`Self::start`], with the `certs init` folder `dir`: devices get identities from
    /// its CA (`ca.pem`, `ca.key.pem`), the broker presents its server certificate
    /// (`server.pem`, `server.key.pem`). The policy stays the rig's, which gives each
    /// device its own inbound topic (the folder's `policy.json` names one thing's topics).
    pub async fn with_pki_dir(device_binary: PathBuf, dir: &Path) -> Result<Self, RigError> {
        let not_pki = |problem: String| RigError::PkiDir {
            dir: dir.to_path_buf(),
            problem,
        };
        let ca = CertificateAuthority::load_dir(dir).map_err(|e| {
            not_pki(format!(
                "{e}; it must be a `certs init` folder (make one with \
                 `cargo run -p certs -- init --out {}`, or `make certs` for certs/dev)",
                dir.display()
            ))
        })?;
        let credentials =
            mock_broker::Credentials::from_dir(dir).map_err(|e| not_pki(e.to_string()))?;
        Self::start_issuing(device_binary, ca, credentials).await
    }

    /// The broker with `credentials` and the per-device policy; identities from `ca`.
    async fn start_issuing(
        device_binary: PathBuf,
        ca: CertificateAuthority,
        credentials: mock_broker::Credentials,
    ) -> Result<Self, RigError> {
        let policy_json = policy_document(
            THING_NAME_CLIENT,
            OUT_TOPIC,
            &inbound_topic(THING_NAME_CLIENT),
        );
        let policy = Policy::from_json(&policy_json).map_err(|e| RigError::make("policy", e))?;
        let mut config = Config::new(credentials, policy);
        config.sntp_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        let broker = MockBroker::start(config)
            .await
            .map_err(|e| RigError::broker("mock broker", e))?;
        let mut rig = Self::assemble(Target::Mock(broker), Some(ca), device_binary, None)?;
        rig.policy = Some(("the rig's per-device policy".into(), policy_json));
        Ok(rig)
    }

    /// Run every device from `image`, against a broker that serves the `certs init` folder
    /// `pki_dir` (server certificate, client CA, policy) and listens where the image's
    /// config points, as on a bench whose image names the host's address and ports.
    pub async fn with_given_image(
        device_binary: PathBuf,
        pki_dir: &Path,
        image: GivenImage,
    ) -> Result<Self, RigError> {
        let mut config = Config::from_certs_dir(pki_dir, None)
            .map_err(|e| RigError::broker(format!("broker from {}", pki_dir.display()), e))?;
        let endpoint = &image.config.endpoint;
        config.mqtt_addr = loopback(&endpoint.host, endpoint.port).ok_or_else(|| {
            RigError::file(
                &image.path,
                format!(
                    "not yet supported: the image's endpoint {}:{} is not this machine",
                    endpoint.host, endpoint.port
                ),
            )
        })?;
        config.endpoint = endpoint.host.to_string();
        // A client dialling an IP address sends no SNI (RFC 6066 allows only names).
        if endpoint.host.parse::<std::net::IpAddr>().is_ok() {
            config.sni = mock_broker::SniRule::AllowMissing;
        }
        config.sntp_addr = loopback(&image.config.ntp.host, image.config.ntp.port);
        let broker = MockBroker::start(config)
            .await
            .map_err(|e| RigError::broker("mock broker", e))?;
        let mut rig = Self::assemble(Target::Mock(broker), None, device_binary, Some(image))?;
        let policy_file = pki_dir.join("policy.json");
        rig.policy = std::fs::read_to_string(&policy_file)
            .ok()
            .map(|json| (policy_file.display().to_string(), json));
        Ok(rig)
    }

    /// Run every device from `image` (built from `certs import`) against the AWS IoT
    /// endpoint it names, watched through `identity`: no broker is started. The image's
    /// endpoint must be `endpoint`, so the rig watches where the device publishes.
    pub async fn aws(
        device_binary: PathBuf,
        image: GivenImage,
        endpoint: &Endpoint,
        identity: &ObserverIdentity,
    ) -> Result<Self, RigError> {
        let dialled = &image.config.endpoint;
        if !dialled.host.eq_ignore_ascii_case(&endpoint.host) || dialled.port != endpoint.port {
            return Err(RigError::file(
                &image.path,
                format!(
                    "the image's config dials {}:{}, not --endpoint {endpoint}",
                    dialled.host, dialled.port
                ),
            ));
        }
        let observer = AwsObserver::connect(
            endpoint,
            identity,
            &image.config.pub_topic,
            &image.config.client_id,
        )
        .await?;
        Self::assemble(Target::Aws(observer), None, device_binary, Some(image))
    }

    /// A mosquitto process with a mutual-TLS listener, serving a fresh test PKI; one
    /// device identity (its image built here, so scenarios run one at a time, as with
    /// `--flash`), watched through the observer identity.
    pub async fn mosquitto(device_binary: PathBuf) -> Result<Self, RigError> {
        Self::third_party(device_binary, ThirdPartyKind::Mosquitto).await
    }

    /// As [`Rig::mosquitto`], with rumqttd ([`Rumqttd`]: MQTT 5 for the device, MQTT
    /// 3.1.1 for the observer, both with client certificates).
    pub async fn rumqttd(device_binary: PathBuf) -> Result<Self, RigError> {
        Self::third_party(device_binary, ThirdPartyKind::Rumqttd).await
    }

    async fn third_party(device_binary: PathBuf, kind: ThirdPartyKind) -> Result<Self, RigError> {
        let pki = Pki::generate(&InitOptions {
            thing: "hil-thing".into(),
            days: VALIDITY_DAYS,
            ..InitOptions::default()
        })
        .map_err(|e| RigError::make("test PKI", e))?;
        let workdir = tempfile::Builder::new()
            .prefix(&format!("hil-{}-", kind.name()))
            .tempdir()
            .map_err(|e| RigError::io("work folder", e))?;
        let dir = workdir.path();
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text)
                .map_err(|e| RigError::io(format!("write {name}"), e))
        };
        write("ca.pem", &pki.ca.cert_pem())?;
        write("server.pem", &pki.server.cert_pem())?;
        write("server.key.pem", &pki.server.key_pem())?;
        write("observer.pem", &pki.observer.cert_pem())?;
        write("observer.key.pem", &pki.observer.key_pem())?;
        let (broker, device_port, observer_port) = match kind {
            ThirdPartyKind::Mosquitto => {
                let broker = Mosquitto::start(dir).await?;
                let port = broker.addr.port();
                (BrokerProcess::Mosquitto(broker), port, port)
            }
            ThirdPartyKind::Rumqttd => {
                let broker = Rumqttd::start(dir).await?;
                let ports = broker.ports();
                (BrokerProcess::Rumqttd(broker), ports.device, ports.observer)
            }
        };
        // The time server: the mock broker's SNTP, on its own (its MQTT port is unused).
        let credentials = mock_broker::Credentials::with_server_pem(
            vec![pki.ca.cert_der().to_vec()],
            &pki.server.cert_pem(),
            &pki.server.key_pem(),
        )
        .map_err(|e| RigError::broker("SNTP server credentials", e))?;
        let mut config = Config::new(credentials, Policy::allow_all());
        config.sntp_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        let sntp = MockBroker::start(config)
            .await
            .map_err(|e| RigError::broker("SNTP server", e))?;
        let sntp_port = sntp.sntp_addr().map_or(0, |a| a.port());

        let client_id = "hil-thing";
        let mut device = DeviceConfig::new("localhost", client_id)
            .map_err(|e| RigError::make("device config", format!("{e:?}")))?;
        device.endpoint.port = device_port;
        device.ntp.host = "127.0.0.1"
            .try_into()
            .map_err(|_| RigError::make("device config", "ntp host"))?;
        device.ntp.port = sntp_port;
        let creds = Credentials::from_pki(&pki).map_err(|e| RigError::make("credentials", e))?;
        let bytes = image::build_image(&creds, &device, image::DEFAULT_IMAGE_SIZE)
            .map_err(|e| RigError::make("flash image", e))?;
        let image_path = dir.join("thing.img");
        std::fs::write(&image_path, bytes).map_err(|e| RigError::io("write thing.img", e))?;
        let image = GivenImage::read(&image_path)?;

        let identity = ObserverIdentity::load(
            &dir.join("observer.pem"),
            &dir.join("observer.key.pem"),
            &dir.join("ca.pem"),
            crate::aws::DEFAULT_CLIENT_ID,
        )?;
        let endpoint = Endpoint {
            host: "localhost".into(),
            port: observer_port,
            alpn: false,
        };
        // It follows the broker's restarts (`reconnect-after-restart`).
        let observer =
            AwsObserver::connect_following(&endpoint, &identity, &device.pub_topic, client_id)
                .await?;
        Ok(Self {
            target: Target::ThirdParty(Box::new(ThirdParty {
                kind,
                observer,
                broker: std::sync::Mutex::new(Some(broker)),
                dir: dir.to_path_buf(),
                device_port,
                sntp,
            })),
            ca: None,
            device_binary,
            workdir,
            sabotage: ImageSabotage::default(),
            given: Some(image),
            policy: None,
        })
    }

    /// The rig around a started `target`, with a fresh work folder for its images.
    fn assemble(
        target: Target,
        ca: Option<CertificateAuthority>,
        device_binary: PathBuf,
        given: Option<GivenImage>,
    ) -> Result<Self, RigError> {
        let workdir = tempfile::Builder::new()
            .prefix("hil-")
            .tempdir()
            .map_err(|e| RigError::io("work folder", e))?;
        Ok(Self {
            target,
            ca,
            device_binary,
            workdir,
            sabotage: ImageSabotage::default(),
            given,
            policy: None,
        })
    }

    /// The policy document the broker judges the devices by (where from, JSON), when
    /// the rig knows it.
    pub fn policy(&self) -> Option<(&str, &str)> {
        self.policy
            .as_ref()
            .map(|(from, json)| (from.as_str(), json.as_str()))
    }

    /// The mock broker, for scenarios that drive it (faults, restarts, certificates).
    pub fn broker(&self) -> Result<&Handle, RigError> {
        match &self.target {
            Target::Mock(broker) => Ok(broker),
            Target::Aws(_) => Err(RigError::Target(
                "needs the mock broker, and --target aws has none",
            )),
            Target::ThirdParty(t) => Err(RigError::Target(match t.kind {
                ThirdPartyKind::Mosquitto => {
                    "needs the mock broker, and --target mosquitto runs mosquitto"
                }
                ThirdPartyKind::Rumqttd => {
                    "needs the mock broker, and --target rumqttd runs rumqttd"
                }
            })),
        }
    }

    /// Stop the broker as an outage would: the mock stops listening and drops every
    /// connection; a third-party broker's process is killed. Returns how many connections
    /// were dropped (third-party: 1 if it was running; they do not say).
    pub async fn stop_broker(&self) -> Result<usize, RigError> {
        match &self.target {
            Target::Mock(broker) => {
                broker.stop_listening().await;
                Ok(broker.drop_all_connections())
            }
            Target::Aws(_) => Err(RigError::Target(
                "restarts the broker, which a test cannot do to AWS IoT",
            )),
            Target::ThirdParty(t) => {
                let mut broker = t.broker.lock().unwrap_or_else(|e| e.into_inner());
                let was_running = match broker.take() {
                    None => false,
                    Some(BrokerProcess::Mosquitto(m)) => {
                        drop(m);
                        true
                    }
                    Some(BrokerProcess::Rumqttd(mut r)) => {
                        let running = r.stop();
                        *broker = Some(BrokerProcess::Rumqttd(r));
                        running
                    }
                };
                Ok(usize::from(was_running))
            }
        }
    }

    /// Start the broker again after [`Rig::stop_broker`], on the same port.
    pub async fn start_broker(&self) -> Result<(), RigError> {
        match &self.target {
            Target::Mock(broker) => broker
                .resume_listening()
                .await
                .map_err(|e| RigError::broker("the broker could not listen again", e)),
            Target::Aws(_) => Err(RigError::Target(
                "restarts the broker, which a test cannot do to AWS IoT",
            )),
            Target::ThirdParty(t) => {
                let stopped = t.broker.lock().unwrap_or_else(|e| e.into_inner()).take();
                let restarted = match stopped {
                    Some(BrokerProcess::Rumqttd(mut r)) => {
                        let resumed = r.resume().await;
                        // Kept even when it failed: it holds the ports to try again on.
                        let mut slot = t.broker.lock().unwrap_or_else(|e| e.into_inner());
                        *slot = Some(BrokerProcess::Rumqttd(r));
                        return resumed;
                    }
                    // Started again, not twice: a running one is replaced.
                    Some(BrokerProcess::Mosquitto(m)) => {
                        drop(m);
                        Mosquitto::start_on(&t.dir, t.device_port).await?
                    }
                    None => Mosquitto::start_on(&t.dir, t.device_port).await?,
                };
                *t.broker.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(BrokerProcess::Mosquitto(restarted));
                Ok(())
            }
        }
    }

    /// The broker's name, if it delivers messages larger than the MQTT 5 Maximum Packet
    /// Size a client announced (rumqttd 0.20 does; the mock broker, AWS IoT and mosquitto
    /// drop them for that client).
    pub fn ignores_maximum_packet_size(&self) -> Option<&'static str> {
        match &self.target {
            Target::ThirdParty(t) if t.kind == ThirdPartyKind::Rumqttd => Some("rumqttd"),
            Target::Mock(_) | Target::Aws(_) | Target::ThirdParty(_) => None,
        }
    }

    /// Whether the rig sees the broker's side of things beyond publishes (connections,
    /// subscriptions, refusals): the mock broker does, an AWS observer only sees publishes.
    pub fn sees_broker_events(&self) -> bool {
        matches!(self.target, Target::Mock(_))
    }

    /// What the broker (or the AWS observer) sees from now on.
    pub fn observe(&self) -> Observer {
        match &self.target {
            Target::Mock(broker) => broker.observe(),
            Target::Aws(aws) => aws.observe(),
            Target::ThirdParty(t) => t.observer.observe(),
        }
    }

    /// Publish `payload` to `topic` at QoS 1 as the broker's owner (mock) or the observer
    /// (AWS). Returns how many subscribers it was delivered to, when the target can tell
    /// (the mock broker); AWS only acknowledges.
    pub async fn inject(&self, topic: &str, payload: Vec<u8>) -> Result<Option<usize>, RigError> {
        match &self.target {
            Target::Mock(broker) => Ok(Some(broker.inject(topic, payload, QoS::AtLeastOnce))),
            Target::Aws(aws) => aws.publish(topic, payload).await.map(|()| None),
            Target::ThirdParty(t) => t.observer.publish(topic, payload).await.map(|()| None),
        }
    }

    /// What is wrong on the rig's side, for failure messages: the AWS observer's lost
    /// connection (after which nothing the device does is seen).
    pub fn trouble(&self) -> Option<String> {
        match &self.target {
            Target::Mock(_) => None,
            Target::Aws(aws) => aws
                .lost()
                .map(|why| format!("the AWS observer's connection was lost: {why}")),
            Target::ThirdParty(t) => t.observer.lost().map(|why| {
                let name = t.kind.name();
                format!(
                    "the observer's connection to {name} was lost: {why} ({name}'s log: {})",
                    t.log_tail()
                )
            }),
        }
    }

    /// Where the rig is connected, for the banner.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Mock(broker) => format!(
                "mock broker on {} (SNTP {})",
                broker.mqtt_addr(),
                broker
                    .sntp_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "none".into())
            ),
            Target::Aws(aws) => aws.describe(),
            Target::ThirdParty(t) => format!(
                "{} on 127.0.0.1:{}{} (SNTP {}), watched by observer {}",
                t.kind.name(),
                t.device_port,
                match t.kind {
                    ThirdPartyKind::Mosquitto => String::new(),
                    ThirdPartyKind::Rumqttd => format!(
                        " (MQTT 5; the observer on MQTT 3.1.1 at 127.0.0.1:{})",
                        t.observer_port()
                    ),
                },
                t.sntp
                    .sntp_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "none".into()),
                crate::aws::DEFAULT_CLIENT_ID
            ),
        }
    }

    /// Stop the broker or disconnect the observer.
    pub async fn shutdown(self) {
        match self.target {
            Target::Mock(broker) => broker.shutdown().await,
            Target::Aws(aws) => aws.shutdown().await,
            Target::ThirdParty(t) => {
                let ThirdParty {
                    observer,
                    broker,
                    sntp,
                    ..
                } = *t;
                observer.shutdown().await;
                drop(broker);
                sntp.shutdown().await;
            }
        }
    }

    /// The image given with `--flash`, if any: then every scenario uses it, one at a time.
    pub fn given_image(&self) -> Option<&GivenImage> {
        self.given.as_ref()
    }

    /// The topic the device named `client_id` subscribes to.
    pub fn inbound_topic_of(&self, client_id: &str) -> String {
        match &self.given {
            Some(given) => given.config.sub_topic.to_string(),
            None => inbound_topic(client_id),
        }
    }

    /// The rig's CA, for scenarios that issue certificates.
    pub fn ca(&self) -> Result<&CertificateAuthority, RigError> {
        self.ca.as_ref().ok_or(RigError::Target(
            "needs the rig's CA, and every device runs the --flash image",
        ))
    }

    /// Write every later image with `sabotage` applied.
    pub fn sabotage_images(&mut self, sabotage: ImageSabotage) {
        self.sabotage = sabotage;
    }

    pub fn device_binary(&self) -> &Path {
        &self.device_binary
    }

    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    /// The config a device named `client_id` gets: the broker's endpoint as `localhost`
    /// (the server certificate's name), its SNTP server, its own inbound topic.
    pub fn device_config(&self, client_id: &str) -> Result<DeviceConfig, RigError> {
        let what = || format!("config for {client_id}");
        let mut config = DeviceConfig::new("localhost", client_id)
            .map_err(|e| RigError::make(what(), format!("{e:?}")))?;
        let broker = self.broker()?;
        config.endpoint.port = broker.mqtt_addr().port();
        let sntp = broker
            .sntp_addr()
            .ok_or(RigError::Target("the broker has no SNTP server"))?;
        config.ntp.host = "127.0.0.1"
            .try_into()
            .map_err(|_| RigError::make(what(), "NTP host too long"))?;
        config.ntp.port = sntp.port();
        config.sub_topic = inbound_topic(client_id)
            .as_str()
            .try_into()
            .map_err(|_| RigError::make(what(), "inbound topic too long"))?;
        if let Some(period_ms) = self.sabotage.period_ms {
            config.period_ms = period_ms;
        }
        Ok(config)
    }

    /// Issue an identity for `config.client_id` and write its flash image; returns the
    /// image's path.
    pub fn write_image(&self, config: &DeviceConfig) -> Result<PathBuf, RigError> {
        let client_id = config.client_id.as_str();
        let ca = self.ca()?;
        let identity = ca
            .issue_client(
                client_id,
                KeyAlgorithm::EcP256,
                Validity::days(VALIDITY_DAYS),
            )
            .map_err(|e| RigError::make(format!("identity for {client_id}"), e))?;
        let ca_der = match &self.sabotage.ca_der {
            Some(ca) => ca.clone(),
            None => ca.cert_der().to_vec(),
        };
        let image_for = || format!("image for {client_id}");
        let creds = Credentials::new(identity.cert_der, identity.key, ca_der)
            .map_err(|e| RigError::make(image_for(), e))?;
        let bytes = image::build_image(&creds, config, image::DEFAULT_IMAGE_SIZE)
            .map_err(|e| RigError::make(image_for(), e))?;
        let path = self.workdir.path().join(format!("{client_id}.img"));
        std::fs::write(&path, bytes)
            .map_err(|e| RigError::io(format!("write {}", path.display()), e))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_this_machine_are_listened_on_and_others_refused() {
        let local = |port| Some(SocketAddr::from(([127, 0, 0, 1], port)));
        assert_eq!(loopback("localhost", 8883), local(8883));
        assert_eq!(loopback("127.0.0.2", 1123), local(1123));
        // The address this machine would send from: one of its interfaces.
        let interface = std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.connect("198.51.100.1:9").and(s.local_addr()))
            .map(|a| a.ip());
        if let Ok(ip) = interface {
            assert_eq!(
                loopback(&ip.to_string(), 8883),
                Some(SocketAddr::new(ip, 8883))
            );
        }
        assert_eq!(loopback("203.0.113.7", 8883), None);
        assert_eq!(loopback("broker.example", 8883), None);
    }
}
