//! The broker a fleet runs against: started here with the fleet's PKI, stopped and
//! started again for `--kill-broker-at`, and watched (every publish on `fleet/+`, with
//! the time it arrived).
//!
//! Each target is one variant of [`Broker`] and one arm in each of its methods; a new
//! broker (an embedded rumqttd, say) plugs in as a variant that serves the same PKI on a
//! loopback port and an [`Observer`] of its publishes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use certs::pki::{InitOptions, Pki};
use mock_broker::{Config, Handle, MockBroker, Observer, Policy};

use crate::aws::{AwsObserver, Endpoint, ObserverIdentity};
use crate::error::RigError;
use crate::third_party::{Mosquitto, RUMQTTD_BUILT, RUMQTTD_MISSING, Rumqttd};

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

/// A running broker and what the fleet needs of it.
pub struct Broker {
    kind: Kind,
    /// Where the devices connect (the server certificate names `localhost`).
    pub port: u16,
    /// The SNTP server the devices sync from (the mock broker's).
    pub sntp: SocketAddr,
}

enum Kind {
    Mock(Handle),
    Mosquitto {
        /// `None` while stopped.
        running: Option<Mosquitto>,
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
}

impl Broker {
    /// Start `kind` serving `pki` (its CA verifies the devices, its server certificate is
    /// presented) on a free loopback port.
    pub async fn start(kind: TargetKind, pki: &Pki) -> Result<Self, RigError> {
        match kind {
            TargetKind::Mock => {
                let mock = mock_with_sntp(pki).await?;
                let sntp = sntp_addr(&mock)?;
                Ok(Self {
                    port: mock.mqtt_addr().port(),
                    sntp,
                    kind: Kind::Mock(mock),
                })
            }
            TargetKind::Mosquitto => {
                let dir = pki_folder("hil-fleet-mosquitto-", pki)?;
                let running = Mosquitto::start(dir.path()).await?;
                let port = running.addr.port();
                let sntp_server = mock_with_sntp(pki).await?;
                let sntp = sntp_addr(&sntp_server)?;
                let observer = Box::new(observer(dir.path().to_path_buf(), port).await?);
                Ok(Self {
                    port,
                    sntp,
                    kind: Kind::Mosquitto {
                        running: Some(running),
                        dir,
                        sntp: sntp_server,
                        observer,
                    },
                })
            }
            TargetKind::Rumqttd => {
                if !RUMQTTD_BUILT {
                    return Err(RigError::Target(RUMQTTD_MISSING));
                }
                let dir = pki_folder("hil-fleet-rumqttd-", pki)?;
                let broker = Rumqttd::start(dir.path()).await?;
                let port = broker.addr.port();
                let sntp_server = mock_with_sntp(pki).await?;
                let sntp = sntp_addr(&sntp_server)?;
                // rumqttd serves MQTT 3.1.1 (the observer's) on a listener of its own.
                let observer = observer(dir.path().to_path_buf(), broker.observer_addr.port());
                let observer = Box::new(observer.await?);
                Ok(Self {
                    port,
                    sntp,
                    kind: Kind::Rumqttd {
                        broker,
                        dir,
                        sntp: sntp_server,
                        observer,
                    },
                })
            }
            TargetKind::Aws => Err(RigError::Target(
                "`hil fleet --target aws` is not available yet: it needs one thing \
                 certificate per device (a list made with `certs`) and an endpoint; run \
                 the fleet against mock or mosquitto",
            )),
        }
    }

    /// Every publish the broker receives on [`WATCH_FILTER`] from now on.
    pub fn observe(&self) -> Observer {
        match &self.kind {
            Kind::Mock(mock) => mock.observe(),
            Kind::Mosquitto { observer, .. } | Kind::Rumqttd { observer, .. } => observer.observe(),
        }
    }

    /// How many clients the broker says are connected, if it can say.
    pub fn connected_clients(&self) -> Option<usize> {
        match &self.kind {
            // The observer is not one of the mock broker's clients (it watches in-process).
            Kind::Mock(mock) => Some(mock.clients().len()),
            Kind::Mosquitto { .. } | Kind::Rumqttd { .. } => None,
        }
    }

    /// An outage: the mock stops listening and drops every connection; mosquitto's
    /// process is killed.
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
        }
    }
}

/// A temporary folder with `pki`'s CA, server and observer files, as a third-party
/// broker and the observer read them.
fn pki_folder(prefix: &str, pki: &Pki) -> Result<tempfile::TempDir, RigError> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| RigError::io("work folder", e))?;
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text)
            .map_err(|e| RigError::io(format!("write {name}"), e))
    };
    write("ca.pem", &pki.ca.cert_pem())?;
    write("server.pem", &pki.server.cert_pem())?;
    write("server.key.pem", &pki.server.key_pem())?;
    write("observer.pem", &pki.observer.cert_pem())?;
    write("observer.key.pem", &pki.observer.key_pem())?;
    Ok(dir)
}

/// The mock broker with `pki`, any client allowed (the fleet's devices are all the CA's),
/// and its SNTP server on.
async fn mock_with_sntp(pki: &Pki) -> Result<Handle, RigError> {
    let credentials = mock_broker::Credentials::with_server_pem(
        vec![pki.ca.cert_der().to_vec()],
        &pki.server.cert_pem(),
        &pki.server.key_pem(),
    )
    .map_err(|e| RigError::broker("broker credentials", e))?;
    let mut config = Config::new(credentials, Policy::allow_all());
    config.sntp_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    // A thousand handshakes at once queue behind each other on two cores: give them
    // time rather than refuse them.
    config.handshake_timeout = Duration::from_secs(120);
    config.connect_timeout = Duration::from_secs(120);
    MockBroker::start(config)
        .await
        .map_err(|e| RigError::broker("mock broker", e))
}

fn sntp_addr(mock: &Handle) -> Result<SocketAddr, RigError> {
    mock.sntp_addr()
        .ok_or(RigError::Target("the mock broker has no SNTP server"))
}

/// The observer identity's MQTT connection to a third-party broker, following its
/// restarts, subscribed to every device's topic.
async fn observer(dir: PathBuf, port: u16) -> Result<AwsObserver, RigError> {
    let identity = ObserverIdentity::load(
        &dir.join("observer.pem"),
        &dir.join("observer.key.pem"),
        &dir.join("ca.pem"),
        crate::aws::DEFAULT_CLIENT_ID,
    )?;
    let endpoint = Endpoint {
        host: "localhost".into(),
        port,
        alpn: false,
    };
    AwsObserver::connect_following(&endpoint, &identity, WATCH_FILTER, "fleet").await
}

/// A fleet's PKI: a fresh CA, the server certificate and the observer identity.
pub fn fresh_pki() -> Result<Pki, RigError> {
    Pki::generate(&InitOptions {
        thing: "fleet".into(),
        days: 30,
        ..InitOptions::default()
    })
    .map_err(|e| RigError::make("fleet PKI", e))
}
