//! The broker a fleet runs against: started here with the fleet's PKI (stopped and
//! started again for `--kill-broker-at`) or shared with other fleet processes
//! (`--broker`), and watched (every publish on `fleet/+`, with the time it arrived).
//!
//! Each target is one variant of [`Broker`] and one arm in each of its methods; a new
//! broker (an embedded rumqttd, say) plugs in as a variant that serves the same PKI on a
//! loopback port and an [`Observer`] of its publishes.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mock_broker::policy::{AccountScope, Action, Principal};
use mock_broker::{Config, Handle, MockBroker, Observer, Policy};

use super::pki::FleetPki;
use crate::aws::{AwsObserver, Endpoint, ObserverIdentity};
use crate::error::RigError;
use crate::third_party::{Mosquitto, RUMQTTD_BUILT, RUMQTTD_MISSING, Rumqttd, TLS_FILES};

/// Which broker the fleet runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// The project's mock broker, in this process.
    Mock,
    /// A mosquitto process with a mutual-TLS listener.
    Mosquitto,
    /// rumqttd (`verify-client-cert`) in a `hil rumqttd-broker` process.
    Rumqttd,
    /// AWS IoT Core (needs an endpoint and a list of thing certificates).
    Aws,
}

impl TargetKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Mock => "mock",
            Self::Mosquitto => "mosquitto",
            Self::Rumqttd => "rumqttd",
            Self::Aws => "aws",
        }
    }
}

/// The topic filter that sees every device's publishes (`fleet/<client id>`).
pub const WATCH_FILTER: &str = "fleet/+";

/// The topic device `client_id` publishes to: its client id in the topic lets a broker
/// that does not say who published (an MQTT observer) attribute each message.
pub fn pub_topic(client_id: &str) -> String {
    format!("fleet/{client_id}")
}

/// The client id a publish on `topic` came from.
pub fn client_of(topic: &str) -> Option<&str> {
    topic.strip_prefix("fleet/").filter(|id| !id.contains('/'))
}

/// Where the fleet's devices connect when the broker is not started here (`--broker`):
/// shared with other `hil fleet` processes, each with its own `--id-offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBroker {
    /// The host the devices dial; the broker's certificate must name it.
    pub host: String,
    pub port: u16,
    /// Where the observer connects, if not `port` (rumqttd's MQTT 3.1.1 listener).
    pub observer_port: Option<u16>,
}

/// A running broker and what the fleet needs of it.
pub struct Broker {
    kind: Kind,
    /// The host the devices dial (the server certificate names it).
    pub host: String,
    /// Where the devices connect.
    pub port: u16,
    /// The SNTP server the devices sync from (a mock broker's, in this process).
    pub sntp: SocketAddr,
}

enum Kind {
    Mock(Handle),
    Mosquitto {
        /// `None` while stopped.
        running: Option<Mosquitto>,
        /// mosquitto's configuration and the TLS files it reads.
        dir: tempfile::TempDir,
        /// Serves the devices' time; its MQTT side is unused.
        sntp: Handle,
        observer: Box<AwsObserver>,
    },
    Rumqttd {
        /// Stopped (its process killed) during an outage; resumed on the same ports.
        broker: Rumqttd,
        dir: tempfile::TempDir,
        sntp: Handle,
        observer: Box<AwsObserver>,
    },
    /// `--broker`: someone else's to start and stop.
    Shared {
        sntp: Handle,
        observer: Box<AwsObserver>,
    },
}

impl Broker {
    /// Start `kind` serving `pki` (its CA verifies the devices, its server certificate is
    /// presented; the mock enforces its policy.json) on a free loopback port.
    /// `id_offset` names this process's observer, so processes sharing a broker do not
    /// take over each other's session.
    pub async fn start(kind: TargetKind, pki: &FleetPki, id_offset: u32) -> Result<Self, RigError> {
        let host = "localhost".to_string();
        match kind {
            TargetKind::Mock => {
                let mock = mock_broker(pki, true).await?;
                let sntp = sntp_addr(&mock)?;
                Ok(Self {
                    host,
                    port: mock.mqtt_addr().port(),
                    sntp,
                    kind: Kind::Mock(mock),
                })
            }
            TargetKind::Mosquitto => {
                let dir = work_folder("hil-fleet-mosquitto-", pki)?;
                let running = Mosquitto::start(dir.path()).await?;
                let port = running.addr.port();
                let sntp_server = sntp_server(pki).await?;
                let sntp = sntp_addr(&sntp_server)?;
                let observer = observer(pki, &host, port, id_offset).await?;
                Ok(Self {
                    host,
                    port,
                    sntp,
                    kind: Kind::Mosquitto {
                        running: Some(running),
                        dir,
                        sntp: sntp_server,
                        observer: Box::new(observer),
                    },
                })
            }
            TargetKind::Rumqttd => {
                if !RUMQTTD_BUILT {
                    return Err(RigError::Target(RUMQTTD_MISSING));
                }
                let dir = work_folder("hil-fleet-rumqttd-", pki)?;
                let broker = Rumqttd::start(dir.path()).await?;
                let port = broker.addr.port();
                let sntp_server = sntp_server(pki).await?;
                let sntp = sntp_addr(&sntp_server)?;
                // rumqttd serves MQTT 3.1.1 (the observer's) on a listener of its own.
                let observer_port = broker.observer_addr.port();
                let observer = observer(pki, &host, observer_port, id_offset).await?;
                Ok(Self {
                    host,
                    port,
                    sntp,
                    kind: Kind::Rumqttd {
                        broker,
                        dir,
                        sntp: sntp_server,
                        observer: Box::new(observer),
                    },
                })
            }
            TargetKind::Aws => Err(RigError::usage(
                "--target aws needs --things DIR and --observer DIR (`certs aws provision` \
                 and `certs aws observer` folders)",
            )),
        }
    }

    /// AWS IoT Core at `endpoint` (or a broker standing in for it), watched through the
    /// identity in `observer_dir` (`certs aws observer --out`: observer.pem,
    /// observer.key.pem, AmazonRootCA1.pem and aws-manifest.json for its client id).
    pub async fn aws(
        endpoint: &Endpoint,
        observer_dir: &Path,
        id_offset: u32,
    ) -> Result<Self, RigError> {
        let file = |name: &str| {
            let path = observer_dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(RigError::file(
                    &path,
                    "missing: the fleet's observer needs it (`certs aws observer --out DIR \
                     --watch-topic 'fleet/+'`)",
                ))
            }
        };
        let (cert, key, ca) = (
            file("observer.pem")?,
            file("observer.key.pem")?,
            file("AmazonRootCA1.pem")?,
        );
        let base = manifest_name(observer_dir)?;
        let identity =
            ObserverIdentity::load(&cert, &key, &ca, &observer_client_id(&base, id_offset))?;
        // The devices run on this host: their clock comes from here too.
        let sntp_server = sntp_server(&FleetPki::fresh()?).await?;
        let sntp = sntp_addr(&sntp_server)?;
        let observer =
            AwsObserver::connect_following(endpoint, &identity, WATCH_FILTER, "fleet").await?;
        Ok(Self {
            host: endpoint.host.clone(),
            port: endpoint.port,
            sntp,
            kind: Kind::Shared {
                sntp: sntp_server,
                observer: Box::new(observer),
            },
        })
    }

    /// The broker at `shared`, which this process neither starts nor stops; watched
    /// through `pki`'s observer identity.
    pub async fn connect(
        shared: &SharedBroker,
        pki: &FleetPki,
        id_offset: u32,
    ) -> Result<Self, RigError> {
        let sntp_server = sntp_server(pki).await?;
        let sntp = sntp_addr(&sntp_server)?;
        let observer_port = shared.observer_port.unwrap_or(shared.port);
        let observer = observer(pki, &shared.host, observer_port, id_offset).await?;
        Ok(Self {
            host: shared.host.clone(),
            port: shared.port,
            sntp,
            kind: Kind::Shared {
                sntp: sntp_server,
                observer: Box::new(observer),
            },
        })
    }

    /// Every publish the broker receives on [`WATCH_FILTER`] from now on.
    pub fn observe(&self) -> Observer {
        match &self.kind {
            Kind::Mock(mock) => mock.observe(),
            Kind::Mosquitto { observer, .. }
            | Kind::Rumqttd { observer, .. }
            | Kind::Shared { observer, .. } => observer.observe(),
        }
    }

    /// How many clients the broker says are connected, if it can say.
    pub fn connected_clients(&self) -> Option<usize> {
        match &self.kind {
            // The observer is not one of the mock broker's clients (it watches in-process).
            Kind::Mock(mock) => Some(mock.clients().len()),
            Kind::Mosquitto { .. } | Kind::Rumqttd { .. } | Kind::Shared { .. } => None,
        }
    }

    /// Whether [`Broker::stop`] can stop it: not a shared broker.
    pub fn can_stop(&self) -> bool {
        !matches!(self.kind, Kind::Shared { .. })
    }

    /// An outage: the mock stops listening and drops every connection; mosquitto's and
    /// rumqttd's processes are killed. A shared broker is left alone.
    pub async fn stop(&mut self) {
        match &mut self.kind {
            Kind::Mock(mock) => {
                mock.stop_listening().await;
                mock.drop_all_connections();
            }
            Kind::Mosquitto { running, .. } => drop(running.take()),
            Kind::Rumqttd { broker, .. } => {
                broker.stop();
            }
            Kind::Shared { .. } => {}
        }
    }

    /// Back after [`Broker::stop`], on the same port.
    pub async fn restart(&mut self) -> Result<(), RigError> {
        match &mut self.kind {
            Kind::Mock(mock) => mock
                .resume_listening()
                .await
                .map_err(|e| RigError::broker("the broker could not listen again", e)),
            Kind::Mosquitto { running, dir, .. } => {
                *running = Some(Mosquitto::start_on(dir.path(), self.port).await?);
                Ok(())
            }
            Kind::Rumqttd { broker, .. } => broker.resume().await,
            Kind::Shared { .. } => Ok(()),
        }
    }

    pub async fn shutdown(self) {
        match self.kind {
            Kind::Mock(mock) => mock.shutdown().await,
            Kind::Mosquitto {
                running,
                dir,
                sntp,
                observer,
            } => {
                observer.shutdown().await;
                drop(running);
                sntp.shutdown().await;
                drop(dir);
            }
            Kind::Rumqttd {
                broker,
                dir,
                sntp,
                observer,
            } => {
                observer.shutdown().await;
                drop(broker);
                sntp.shutdown().await;
                drop(dir);
            }
            Kind::Shared { sntp, observer } => {
                observer.shutdown().await;
                sntp.shutdown().await;
            }
        }
    }
}

/// A temporary folder for a third-party broker: its configuration goes here, beside
/// copies of the TLS files it serves (a `--pki` folder is the user's: nothing is written
/// there).
fn work_folder(prefix: &str, pki: &FleetPki) -> Result<tempfile::TempDir, RigError> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| RigError::io("work folder", e))?;
    for name in TLS_FILES {
        let from = pki.file(name, "the broker")?;
        std::fs::copy(&from, dir.path().join(name))
            .map_err(|e| RigError::io(format!("copy {}", from.display()), e))?;
    }
    Ok(dir)
}

/// The mock broker serving `pki`'s folder with its policies (the fleet's own allow
/// exactly what the fleet does), with its SNTP server on. `check_policy`: refuse a
/// policy that would turn the fleet's devices away, before a thousand of them try.
async fn mock_broker(pki: &FleetPki, check_policy: bool) -> Result<Handle, RigError> {
    let mut config = Config::from_certs_dir(&pki.dir, None)
        .map_err(|e| RigError::broker(format!("mock broker for {}", pki.dir.display()), e))?;
    if check_policy {
        check_fleet_policy(pki, &config.policy)?;
    }
    config.mqtt_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.sntp_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    // A thousand handshakes at once queue behind each other on two cores: give them
    // time rather than refuse them.
    config.handshake_timeout = Duration::from_secs(120);
    config.connect_timeout = Duration::from_secs(120);
    MockBroker::start(config)
        .await
        .map_err(|e| RigError::broker("mock broker", e))
}

/// A mock broker for its SNTP server (the devices' clock), next to a broker that has
/// none; its MQTT side is unused.
async fn sntp_server(pki: &FleetPki) -> Result<Handle, RigError> {
    mock_broker(pki, false).await
}

/// The mock enforces policy.json as AWS would: a folder made for one thing (`certs
/// init`) would refuse every fleet device, which is worth saying before the run.
fn check_fleet_policy(pki: &FleetPki, policy: &Policy) -> Result<(), RigError> {
    let id = "fleet-000000";
    let principal = Principal {
        client_id: id,
        thing_name: Some(id),
    };
    let scope = AccountScope::default();
    let topic = pub_topic(id);
    for (action, name) in [(Action::Connect, id), (Action::Publish, topic.as_str())] {
        let decision = policy.check(&scope, action, name, &principal);
        if !decision.is_allowed() {
            return Err(RigError::file(
                pki.dir.join("policy.json"),
                format!(
                    "{action} on {name} for a fleet device: {decision}; a folder from \
                     `hil fleet pki --out DIR` has the fleet's policy"
                ),
            ));
        }
    }
    Ok(())
}

fn sntp_addr(mock: &Handle) -> Result<SocketAddr, RigError> {
    mock.sntp_addr()
        .ok_or(RigError::Target("the mock broker has no SNTP server"))
}

/// The client id of the observer of the fleet process with `id_offset`: `base-…`, which
/// the observer's policy allows beside `base`.
pub fn observer_client_id(base: &str, id_offset: u32) -> String {
    format!("{base}-fleet-{id_offset}")
}

/// The observer's client id from `certs aws observer`'s manifest, or the default one.
fn manifest_name(dir: &Path) -> Result<String, RigError> {
    let path = dir.join("aws-manifest.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(crate::aws::DEFAULT_CLIENT_ID.to_string());
    };
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| RigError::file(&path, e))?;
    json["name"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| RigError::file(&path, "no \"name\" (the observer's client id)"))
}

/// The observer identity's MQTT connection to a broker not in this process, following
/// its restarts, subscribed to every device's topic.
async fn observer(
    pki: &FleetPki,
    host: &str,
    port: u16,
    id_offset: u32,
) -> Result<AwsObserver, RigError> {
    let identity = ObserverIdentity::load(
        &pki.file("observer.pem", "the observer")?,
        &pki.file("observer.key.pem", "the observer")?,
        &pki.file("ca.pem", "the observer")?,
        &observer_client_id(crate::aws::DEFAULT_CLIENT_ID, id_offset),
    )?;
    let endpoint = Endpoint {
        host: host.into(),
        port,
        alpn: false,
    };
    AwsObserver::connect_following(&endpoint, &identity, WATCH_FILTER, "fleet").await
}
