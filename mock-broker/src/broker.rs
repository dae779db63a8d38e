//! The broker: configuration, listeners, the client table and message routing, and the
//! handle its owner controls it with.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use certs::pki::CertificateAuthority;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control;
use crate::error::{DisconnectReason, StartError};
use crate::faults::{FaultTable, Faults};
use crate::mqtt::{QoS, Version};
use crate::observe::{Event, Observer, PublishObservation, Publisher};
use crate::policy::{AccountScope, Action, Policy, Principal};
use crate::rules;
use crate::server_cert::ServerCertificateCase;
use crate::session;
use crate::sntp::{self, SntpBehaviour};
use crate::tls::{Credentials, ListenerKind, SniRule, TlsFront};

/// How the broker is set up. [`Config::new`] gives AWS's behaviour on a loopback
/// ephemeral port; the policy is the caller's.
#[derive(Debug, Clone)]
pub struct Config {
    pub credentials: Credentials,
    /// The host name clients must send as SNI.
    pub endpoint: String,
    pub sni: SniRule,
    pub policy: Policy,
    pub scope: AccountScope,
    /// The MQTT-over-TLS listener (AWS's 8883).
    pub mqtt_addr: SocketAddr,
    /// The ALPN listener (AWS's 443), if wanted.
    pub alpn_addr: Option<SocketAddr>,
    /// The SNTP server (UDP), if wanted.
    pub sntp_addr: Option<SocketAddr>,
    /// The HTTP/JSON control API (loopback only: it has no authentication), if wanted.
    pub control_addr: Option<SocketAddr>,
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Longest between the handshake and the CONNECT packet.
    pub connect_timeout: Duration,
    /// Least time between two CONNECTs with the same client id (AWS: 1 s).
    pub connect_interval: Duration,
    /// The lower keep-alive clamp (AWS: 30 s); tests lower it to see a timeout quickly.
    pub min_keep_alive_secs: u16,
    /// How long a persistent session outlives its connection at most (AWS's default:
    /// 1 hour).
    pub max_session_expiry: Duration,
    /// The CA that signed the server certificate, with its key: it signs the
    /// [`ServerCertificateCase`] presets (all but `untrusted-ca` need it).
    pub issuing_ca: Option<Arc<CertificateAuthority>>,
}

impl Config {
    /// AWS's rules on `127.0.0.1:0`, endpoint `localhost`, with `policy`; no ALPN
    /// listener, SNTP server or control API until their addresses are set.
    pub fn new(credentials: Credentials, policy: Policy) -> Self {
        Self {
            credentials,
            endpoint: "localhost".into(),
            sni: SniRule::Required,
            policy,
            scope: AccountScope::default(),
            mqtt_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            alpn_addr: None,
            sntp_addr: None,
            control_addr: None,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            connect_interval: Duration::from_secs(1),
            min_keep_alive_secs: rules::MIN_KEEP_ALIVE_SECS,
            max_session_expiry: Duration::from_secs(3600),
            issuing_ca: None,
        }
    }

    /// Credentials, policy and (if `ca.key.pem` is there) the issuing CA from a `certs
    /// init` folder (`policy_file` overrides `DIR/policy.json`).
    pub fn from_certs_dir(dir: &Path, policy_file: Option<&Path>) -> Result<Self, StartError> {
        let credentials = Credentials::from_dir(dir)?;
        let policy_path = policy_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join("policy.json"));
        let text = std::fs::read_to_string(&policy_path)
            .map_err(|e| StartError::credentials(&policy_path, e))?;
        let policy = Policy::from_json(&text).map_err(|source| StartError::Policy {
            path: policy_path.display().to_string(),
            source,
        })?;
        let mut config = Self::new(credentials, policy);
        // The CA key signs the server certificate presets; a folder without one (only
        // the public CA, as on a bench) still serves, and the presets say what is missing.
        let ca_key = dir.join(certs::load::CA_KEY_FILE);
        if ca_key.exists() {
            let ca = CertificateAuthority::load_dir(dir).map_err(StartError::IssuingCa)?;
            config.issuing_ca = Some(Arc::new(ca));
        }
        Ok(config)
    }
}

/// Events an observer may fall behind by before it skips some. The ring is allocated
/// up front, so it is sized for a busy fleet (2,500 publishes/s) read a few seconds late,
/// not more.
pub const OBSERVER_BACKLOG: usize = 16 * 1024;

/// The broker's constructor.
pub struct MockBroker;

impl MockBroker {
    /// Bind the listeners and start serving. Every task and port belongs to the returned
    /// [`Handle`] and ends with it.
    pub async fn start(config: Config) -> Result<Handle, StartError> {
        let tls = TlsFront::new(&config.credentials, config.endpoint.clone(), config.sni)?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let mqtt_listener = bind(config.mqtt_addr).await?;
        let alpn_listener = match config.alpn_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let local = |l: &TcpListener, addr| {
            l.local_addr()
                .map_err(|source| StartError::Bind { addr, source })
        };
        let mqtt_addr = local(&mqtt_listener, config.mqtt_addr)?;
        let alpn_addr = match (&alpn_listener, config.alpn_addr) {
            (Some(l), Some(addr)) => Some(local(l, addr)?),
            _ => None,
        };
        let sntp_socket = match config.sntp_addr {
            Some(addr) => Some(
                UdpSocket::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        let sntp_addr = match (&sntp_socket, config.sntp_addr) {
            (Some(socket), Some(addr)) => Some(
                socket
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            _ => None,
        };
        let control_addr = config.control_addr;
        let (events, _) = broadcast::channel(OBSERVER_BACKLOG);
        let shared = Arc::new(Shared {
            config,
            tls,
            events,
            state: Mutex::new(State::default()),
            faults: Mutex::new(FaultTable::default()),
            next_connection: AtomicU64::new(1),
        });
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let sntp_behaviour = Arc::new(Mutex::new(SntpBehaviour::default()));
        if let Some(socket) = sntp_socket {
            tracker.spawn(sntp::serve(
                socket,
                sntp_behaviour.clone(),
                shared.events.clone(),
                cancel.clone(),
            ));
        }
        let mut bound = vec![(mqtt_listener, ListenerKind::Mqtt, mqtt_addr)];
        if let (Some(listener), Some(addr)) = (alpn_listener, alpn_addr) {
            bound.push((listener, ListenerKind::Alpn, addr));
        }
        let listeners = bound
            .into_iter()
            .map(|(listener, kind, addr)| ListenerSlot {
                kind,
                addr,
                running: Some(spawn_accept_loop(
                    listener, kind, &shared, &cancel, &tracker,
                )),
            })
            .collect();
        tracing::info!(%mqtt_addr, ?alpn_addr, ?sntp_addr, endpoint = %shared.config.endpoint, "broker listening");
        let control_listener = match control_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let control_addr = match (&control_listener, control_addr) {
            (Some(l), Some(addr)) => Some(local(l, addr)?),
            _ => None,
        };
        let controls = Arc::new(Controls {
            shared,
            control_addr,
            mqtt_addr,
            alpn_addr,
            sntp_addr,
            sntp_behaviour,
            listeners: tokio::sync::Mutex::new(listeners),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
        });
        if let Some(listener) = control_listener {
            tracker.spawn(control::serve(listener, controls.clone(), cancel.clone()));
        }
        Ok(Handle { controls })
    }
}

/// How long a session may take to end after the broker is told to shut down.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Accept until `stop`; sessions end with `shutdown` (the whole broker), not with `stop`.
async fn accept_loop(
    listener: TcpListener,
    kind: ListenerKind,
    shared: Arc<Shared>,
    stop: CancellationToken,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // Each connection, handshake included, runs in its own task: a slow or
                // idle client never holds up the accept loop. At shutdown a session gets
                // SHUTDOWN_GRACE to say goodbye; one stuck in a fault's latency or on a
                // client that stopped reading is then dropped, so shutdown always ends.
                let session = session::serve(tcp, peer, kind, shared.clone(), shutdown.clone());
                let shutdown = shutdown.clone();
                tracker.spawn(async move {
                    tokio::select! {
                        () = session => {}
                        () = async {
                            shutdown.cancelled().await;
                            tokio::time::sleep(SHUTDOWN_GRACE).await;
                        } => {}
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off briefly, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!(?kind, "listener closed");
}

/// A running broker. Dropping it stops the broker (listeners close at once, sessions
/// end shortly after); [`Handle::shutdown`] also waits until everything has ended. Its
/// controls are [`Controls`]' methods, reached through `Deref`.
pub struct Handle {
    controls: Arc<Controls>,
}

impl std::ops::Deref for Handle {
    type Target = Controls;

    fn deref(&self) -> &Controls {
        &self.controls
    }
}

impl Handle {
    /// Stop accepting, disconnect every client and wait for every task to end.
    pub async fn shutdown(self) {
        self.controls.cancel.cancel();
        self.controls.tracker.close();
        self.controls.tracker.wait().await;
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.controls.cancel.cancel();
        self.controls.tracker.close();
    }
}

/// What the broker's owner can see and do: addresses, observation, clients, injection,
/// faults, listeners, SNTP. Shared by the [`Handle`] and the control API.
pub struct Controls {
    shared: Arc<Shared>,
    control_addr: Option<SocketAddr>,
    mqtt_addr: SocketAddr,
    alpn_addr: Option<SocketAddr>,
    sntp_addr: Option<SocketAddr>,
    sntp_behaviour: Arc<Mutex<SntpBehaviour>>,
    listeners: tokio::sync::Mutex<Vec<ListenerSlot>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

/// One listening socket, which can be closed and opened again on the same address.
struct ListenerSlot {
    kind: ListenerKind,
    addr: SocketAddr,
    /// The accept loop's own stop switch and task, while listening.
    running: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

fn spawn_accept_loop(
    listener: TcpListener,
    kind: ListenerKind,
    shared: &Arc<Shared>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    // A child token: stopping this listener leaves the rest of the broker running,
    // shutting the broker down stops it too.
    let stop = cancel.child_token();
    let task = tracker.spawn(accept_loop(
        listener,
        kind,
        shared.clone(),
        stop.clone(),
        cancel.clone(),
        tracker.clone(),
    ));
    (stop, task)
}

/// A connected client, as listed by [`Controls::clients`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub client_id: String,
    pub thing_name: Option<String>,
    pub version: Version,
    pub peer: SocketAddr,
    pub keep_alive_secs: u16,
    pub subscriptions: Vec<(String, QoS)>,
    pub connected_at: SystemTime,
}

impl Controls {
    /// The bound address of the HTTP/JSON control API, if configured.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    /// The bound address of the MQTT listener.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// The bound address of the ALPN listener, if configured.
    pub fn alpn_addr(&self) -> Option<SocketAddr> {
        self.alpn_addr
    }

    /// The bound address of the SNTP server, if configured.
    pub fn sntp_addr(&self) -> Option<SocketAddr> {
        self.sntp_addr
    }

    /// Change how the SNTP server answers from the next request on.
    pub fn set_sntp(&self, behaviour: SntpBehaviour) {
        *self
            .sntp_behaviour
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = behaviour;
    }

    /// A stream of everything that happens from now on.
    pub fn observe(&self) -> Observer {
        Observer {
            receiver: self.shared.events.subscribe(),
        }
    }

    /// The connected clients, sorted by client id.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let state = self.shared.lock();
        let mut list: Vec<ClientInfo> = state.clients.values().map(|c| c.info.clone()).collect();
        list.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        list
    }

    /// Disconnect `client_id` (MQTT 5 clients get DISCONNECT "administrative action").
    /// Returns whether it was connected.
    pub fn kick(&self, client_id: &str) -> bool {
        let state = self.shared.lock();
        match state.clients.get(client_id) {
            Some(client) => client
                .commands
                .send(session::Command::Kick(
                    DisconnectReason::ServerInitiatedDisconnect,
                ))
                .is_ok(),
            None => false,
        }
    }

    /// Close `client_id`'s connection without a word (no MQTT 5 DISCONNECT), as a
    /// network failure would. Returns whether it was connected.
    pub fn drop_connection(&self, client_id: &str) -> bool {
        let state = self.shared.lock();
        state
            .clients
            .get(client_id)
            .is_some_and(|client| client.commands.send(session::Command::Drop).is_ok())
    }

    /// Apply `faults` to every client without faults of its own, from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .global = faults;
    }

    /// What the broker holds for `client_id` (routed, not yet written), if connected.
    pub fn backlog(&self, client_id: &str) -> Option<crate::backlog::BacklogFigures> {
        let state = self.shared.lock();
        state.clients.get(client_id).map(|c| c.backlog.figures())
    }

    /// Apply `faults` to `client_id` only (replacing the global faults for it).
    pub fn set_client_faults(&self, client_id: &str, faults: Faults) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clients
            .insert(client_id.to_owned(), faults);
    }

    /// Clear every fault, global and per client.
    pub fn reset_faults(&self) {
        *self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()) = FaultTable::default();
    }

    /// Publish as the broker's owner; subscribers' policies still decide delivery.
    /// Returns how many clients it was sent to.
    pub fn inject(&self, topic: &str, payload: impl Into<Bytes>, qos: QoS) -> usize {
        self.shared.publish(Message {
            publisher: Publisher::Injected,
            topic: topic.to_owned(),
            payload: payload.into(),
            qos: qos.min(QoS::AtLeastOnce),
            retain: false,
            properties: Bytes::new(),
            received_at: Instant::now(),
            packet_id: None,
            dup: false,
        })
    }

    /// Present other server credentials (e.g. an expired or untrusted certificate) to
    /// new connections.
    pub fn replace_server_credentials(&self, credentials: &Credentials) -> Result<(), StartError> {
        self.shared.tls.replace_credentials(credentials)
    }

    /// Present this server chain and key (PEM) to new connections, trusting the same
    /// client CA as before: Device Advisor's TLS cases (untrusted CA, wrong name,
    /// expired, oversized chain).
    pub fn replace_server_certificate_pem(
        &self,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<(), StartError> {
        let credentials = Credentials::with_server_pem(
            self.shared.config.credentials.client_ca_der.clone(),
            chain_pem,
            key_pem,
        )?;
        self.replace_server_credentials(&credentials)
    }

    /// Present one of Device Advisor's TLS cases to new connections (see
    /// [`ServerCertificateCase`]); [`Controls::restore_server_credentials`] ends it.
    pub fn present_server_certificate(
        &self,
        case: ServerCertificateCase,
    ) -> Result<(), StartError> {
        let leaf = self
            .shared
            .config
            .credentials
            .server_chain_der
            .first()
            .ok_or_else(|| StartError::Tls("no configured server certificate".into()))?;
        let names = crate::server_cert::names_of(leaf)?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (chain, key) = case.make(self.shared.config.issuing_ca.as_deref(), &names)?;
        self.replace_server_certificate_pem(&chain, &key)?;
        tracing::info!(preset = %case, "presenting a server certificate preset");
        Ok(())
    }

    /// Go back to the configured server credentials.
    pub fn restore_server_credentials(&self) -> Result<(), StartError> {
        self.shared
            .tls
            .replace_credentials(&self.shared.config.credentials)
    }

    /// Close the listening sockets (connecting clients are refused by the OS); existing
    /// connections stay up. Returns once the ports are closed. With
    /// [`Controls::drop_all_connections`] this is a broker outage.
    pub async fn stop_listening(&self) {
        let mut listeners = self.listeners.lock().await;
        for slot in listeners.iter_mut() {
            if let Some((stop, task)) = slot.running.take() {
                stop.cancel();
                let _ = task.await;
                tracing::info!(kind = ?slot.kind, addr = %slot.addr, "stopped listening");
            }
        }
    }

    /// Listen again on the same addresses after [`Controls::stop_listening`].
    pub async fn resume_listening(&self) -> Result<(), StartError> {
        let mut listeners = self.listeners.lock().await;
        for slot in listeners.iter_mut() {
            if slot.running.is_none() {
                let listener =
                    TcpListener::bind(slot.addr)
                        .await
                        .map_err(|source| StartError::Bind {
                            addr: slot.addr,
                            source,
                        })?;
                slot.running = Some(spawn_accept_loop(
                    listener,
                    slot.kind,
                    &self.shared,
                    &self.cancel,
                    &self.tracker,
                ));
                tracing::info!(kind = ?slot.kind, addr = %slot.addr, "listening again");
            }
        }
        Ok(())
    }

    /// Close every client connection without a word, as a network failure would.
    /// Returns how many there were.
    pub fn drop_all_connections(&self) -> usize {
        let state = self.shared.lock();
        state
            .clients
            .values()
            .filter(|client| client.commands.send(session::Command::Drop).is_ok())
            .count()
    }
}

/// A message on its way to subscribers.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub publisher: Publisher,
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 publish properties to pass on.
    pub properties: Bytes,
    pub received_at: Instant,
    /// The client's packet id and DUP flag, for observers (none for the broker's own).
    pub packet_id: Option<u16>,
    pub dup: bool,
}

pub(crate) struct ClientEntry {
    pub connection: u64,
    pub commands: mpsc::UnboundedSender<session::Command>,
    pub info: ClientInfo,
    /// What is queued for the connection; the router admits each delivery against it.
    pub backlog: Arc<crate::backlog::Backlog>,
}

#[derive(Default)]
pub(crate) struct State {
    pub clients: HashMap<String, ClientEntry>,
    /// When each client id last sent a CONNECT, for AWS's 1/s limit.
    pub last_connect: HashMap<String, Instant>,
    /// Per client id, the lifecycle events' `versionNumber`.
    pub lifecycle_versions: HashMap<String, u64>,
    /// Retained messages by topic.
    pub retained: HashMap<String, Message>,
    /// Persistent sessions whose connection has ended, by client id.
    pub stored_sessions: HashMap<String, StoredSession>,
}

/// A persistent session between connections: its subscriptions and the QoS 1 messages
/// that arrived for it meanwhile.
pub(crate) struct StoredSession {
    pub subscriptions: Vec<(String, QoS)>,
    pub thing_name: Option<String>,
    pub queued: std::collections::VecDeque<session::Delivery>,
    pub expires_at: Instant,
}

/// Most QoS 1 messages kept for one stored session; older ones are dropped beyond it.
const MAX_QUEUED_PER_SESSION: usize = 1000;

pub(crate) struct Shared {
    pub config: Config,
    pub tls: TlsFront,
    pub events: broadcast::Sender<Event>,
    pub state: Mutex<State>,
    pub faults: Mutex<FaultTable>,
    pub next_connection: AtomicU64,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking session must not wedge the broker.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn faults_for(&self, client_id: &str) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .for_client(client_id)
    }

    pub fn emit(&self, event: Event) {
        // No observers is fine.
        let _ = self.events.send(event);
    }

    pub fn new_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    pub fn allowed(&self, action: Action, name: &str, principal: &Principal<'_>) -> bool {
        let decision = self
            .config
            .policy
            .check(&self.config.scope, action, name, principal);
        tracing::trace!(%action, name, client = principal.client_id, %decision, "policy");
        decision.is_allowed()
    }

    /// The retained messages a new subscription to `filter` at `qos` receives: those
    /// whose topic matches and that the policy lets `principal` receive.
    pub fn retained_for(
        &self,
        filter: &str,
        qos: QoS,
        principal: &Principal<'_>,
    ) -> Vec<session::Delivery> {
        let state = self.lock();
        state
            .retained
            .values()
            .filter(|m| rules::filter_matches(filter, &m.topic))
            .filter(|m| self.allowed(Action::Receive, &m.topic, principal))
            .map(|m| session::Delivery {
                topic: m.topic.clone(),
                payload: m.payload.clone(),
                qos: m.qos.min(qos),
                properties: m.properties.clone(),
                retained: true,
                redelivery: false,
                metered: false,
            })
            .collect()
    }

    /// Observe `message` and deliver it to every client with a matching subscription
    /// whose policy allows `iot:Receive` on the topic, at the lower of the publish's and
    /// the subscription's QoS. Returns how many clients it went to.
    pub fn publish(&self, message: Message) -> usize {
        let observation = PublishObservation {
            publisher: message.publisher.clone(),
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            qos: message.qos,
            retain: message.retain,
            packet_id: message.packet_id,
            dup: message.dup,
            received_at: message.received_at,
            received_at_system: {
                let now = SystemTime::now();
                now.checked_sub(message.received_at.elapsed())
                    .unwrap_or(now)
            },
        };
        self.emit(Event::Publish(observation));
        let mut state = self.lock();
        if message.retain {
            // An empty retained payload clears the topic's retained message.
            if message.payload.is_empty() {
                state.retained.remove(&message.topic);
            } else {
                state
                    .retained
                    .insert(message.topic.clone(), message.clone());
            }
        }
        let mut delivered = 0;
        for client in state.clients.values() {
            let granted = client
                .info
                .subscriptions
                .iter()
                .filter(|(filter, _)| rules::filter_matches(filter, &message.topic))
                .map(|(_, qos)| *qos)
                .max();
            let Some(granted) = granted else { continue };
            let principal = Principal {
                client_id: &client.info.client_id,
                thing_name: client.info.thing_name.as_deref(),
            };
            if !self.allowed(Action::Receive, &message.topic, &principal) {
                tracing::debug!(client = %client.info.client_id, topic = %message.topic, "receive not allowed by policy: not delivered");
                continue;
            }
            let delivery = session::Delivery {
                topic: message.topic.clone(),
                payload: message.payload.clone(),
                qos: message.qos.min(granted),
                properties: message.properties.clone(),
                retained: false,
                redelivery: false,
                metered: true,
            };
            if !client.backlog.admit(delivery.cost(), delivery.qos) {
                tracing::info!(client = %client.info.client_id, topic = %message.topic, qos = ?delivery.qos, "backlog full: delivery dropped");
                continue;
            }
            if client
                .commands
                .send(session::Command::Deliver(delivery))
                .is_ok()
            {
                delivered += 1;
            }
        }
        // Persistent sessions without a connection keep QoS 1 messages for later.
        if message.qos == QoS::AtLeastOnce {
            let now = Instant::now();
            state
                .stored_sessions
                .retain(|_, stored| stored.expires_at > now);
            for (client_id, stored) in state.stored_sessions.iter_mut() {
                let subscribed = stored.subscriptions.iter().any(|(filter, qos)| {
                    *qos == QoS::AtLeastOnce && rules::filter_matches(filter, &message.topic)
                });
                let principal = Principal {
                    client_id,
                    thing_name: stored.thing_name.as_deref(),
                };
                if !subscribed || !self.allowed(Action::Receive, &message.topic, &principal) {
                    continue;
                }
                if stored.queued.len() >= MAX_QUEUED_PER_SESSION {
                    stored.queued.pop_front();
                }
                stored.queued.push_back(session::Delivery {
                    topic: message.topic.clone(),
                    payload: message.payload.clone(),
                    qos: QoS::AtLeastOnce,
                    properties: message.properties.clone(),
                    retained: false,
                    redelivery: false,
                    metered: false,
                });
            }
        }
        delivered
    }
}
