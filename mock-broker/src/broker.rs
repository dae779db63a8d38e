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
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backlog::{Offer, Outbox, QueueLimits};
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
    /// Longest a TLS handshake may take (and a control API request to arrive).
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
    /// How much one client may hold in the broker (waiting, being written, awaiting a
    /// PUBACK; a stored session likewise). QoS 0 deliveries give way at half of it, QoS 1
    /// deliveries beyond it are dropped ([`crate::backlog`]).
    pub queue_limits: QueueLimits,
    /// A client whose socket takes none of the bytes due to it for this long is
    /// disconnected (`THROTTLED`): it has stopped reading. The same holds for a control
    /// API `/events` reader.
    pub write_stall_timeout: Duration,
}

/// A client whose socket takes no bytes for this long is disconnected (`THROTTLED`) by
/// default ([`Config::write_stall_timeout`]).
pub const WRITE_STALL: Duration = Duration::from_secs(10);
/// How long a session may take to end after the broker is told to shut down, before its
/// task is dropped (sessions end sooner on their own; this is the backstop).
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);
/// Retained messages kept (a mock's limit: AWS's are per account and far larger).
pub const MAX_RETAINED_MESSAGES: usize = 10_000;
/// Bytes of retained messages kept.
pub const MAX_RETAINED_BYTES: usize = 64 * 1024 * 1024;
/// Client ids remembered for the CONNECT rate and lifecycle version numbers before
/// those no longer connected are forgotten.
const MAX_REMEMBERED_CLIENT_IDS: usize = 10_000;

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
            queue_limits: QueueLimits::default(),
            write_stall_timeout: WRITE_STALL,
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
            dropped_qos0: AtomicU64::new(0),
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
            event_streams: Arc::new(AtomicU64::new(0)),
        });
        if let Some(listener) = control_listener {
            tracker.spawn(control::serve(listener, controls.clone(), cancel.clone()));
        }
        Ok(Handle { controls })
    }
}

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
                // idle client never holds up the accept loop. At shutdown a session ends
                // at once (every wait in it is cancellable); SHUTDOWN_GRACE is the
                // backstop that drops its task should anything still hold it.
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
    /// Control API `/events` streams open.
    event_streams: Arc<AtomicU64>,
}

/// Counts an open control API event stream while alive.
pub(crate) struct OpenStream(Arc<AtomicU64>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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

/// What the broker holds for clients, from [`Controls::queue_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Bytes of deliveries held for clients (waiting, being written, awaiting a PUBACK,
    /// stored for a persistent session).
    pub queued_bytes: usize,
    /// Deliveries waiting for a connected client or stored for a persistent session.
    pub queued_messages: usize,
    /// QoS 0 deliveries dropped because their client was full, since the start.
    pub dropped_qos0: u64,
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
    /// How many control API `/events` streams are open.
    pub fn event_streams(&self) -> u64 {
        self.event_streams.load(Ordering::Relaxed)
    }

    pub(crate) fn event_stream_opened(&self) -> OpenStream {
        self.event_streams.fetch_add(1, Ordering::Relaxed);
        OpenStream(self.event_streams.clone())
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

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

    /// Change how the SNTP server answers from the next request on. An offset beyond
    /// [`sntp::MAX_OFFSET_SECS`] is limited to it (and logged); the control API refuses
    /// it instead.
    pub fn set_sntp(&self, behaviour: SntpBehaviour) {
        if let Err(invalid) = behaviour.check() {
            tracing::warn!(%invalid, "SNTP setting out of range: limited");
        }
        *self
            .sntp_behaviour
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = behaviour.within_limits();
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
            Some(client) => {
                client.outbox.command(session::Command::Kick(
                    DisconnectReason::ServerInitiatedDisconnect,
                ));
                true
            }
            None => false,
        }
    }

    /// Close `client_id`'s connection without a word (no MQTT 5 DISCONNECT), as a
    /// network failure would. Returns whether it was connected.
    pub fn drop_connection(&self, client_id: &str) -> bool {
        let state = self.shared.lock();
        match state.clients.get(client_id) {
            Some(client) => {
                client.outbox.command(session::Command::Drop);
                true
            }
            None => false,
        }
    }

    /// Apply `faults` to every client without faults of its own, from now on. Values
    /// beyond [`Faults::check`]'s limits are brought within them (and logged); the
    /// control API refuses them instead.
    pub fn set_faults(&self, faults: Faults) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .global = faults.within_limits();
    }

    /// Apply `faults` to `client_id` only (replacing the global faults for it), within
    /// limits as for [`Controls::set_faults`].
    pub fn set_client_faults(&self, client_id: &str, faults: Faults) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clients
            .insert(client_id.to_owned(), faults.within_limits());
    }

    /// What the broker holds for `client_id` (waiting, being written, awaiting a PUBACK),
    /// if connected.
    pub fn backlog(&self, client_id: &str) -> Option<crate::backlog::BacklogFigures> {
        let state = self.shared.lock();
        state.clients.get(client_id).map(|c| c.outbox.figures())
    }

    /// What the broker holds for clients that have not taken it yet: every connected
    /// client's outbox and in-flight deliveries, and stored sessions' queues.
    pub fn queue_stats(&self) -> QueueStats {
        let state = self.shared.lock();
        let connected_bytes: usize = state.clients.values().map(|c| c.outbox.held_bytes()).sum();
        let waiting: usize = state.clients.values().map(|c| c.outbox.waiting()).sum();
        let stored_bytes: usize = state.stored_sessions.values().map(|s| s.bytes).sum();
        let stored: usize = state.stored_sessions.values().map(|s| s.queued.len()).sum();
        QueueStats {
            queued_bytes: connected_bytes + stored_bytes,
            queued_messages: waiting + stored,
            dropped_qos0: self.shared.dropped_qos0.load(Ordering::Relaxed),
        }
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
        for client in state.clients.values() {
            client.outbox.command(session::Command::Drop);
        }
        state.clients.len()
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

impl Message {
    /// Roughly the bytes it takes to keep.
    fn cost(&self) -> usize {
        self.topic.len() + self.payload.len() + self.properties.len() + 64
    }
}

pub(crate) struct ClientEntry {
    pub connection: u64,
    pub outbox: Arc<Outbox>,
    pub info: ClientInfo,
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
    /// The queued deliveries' cost, bounded like a connected client's.
    pub bytes: usize,
    pub expires_at: Instant,
}

impl StoredSession {
    /// Keep `delivery` for later, dropping the oldest beyond `limits`.
    pub fn keep(&mut self, delivery: session::Delivery, limits: QueueLimits) {
        self.bytes += delivery.cost();
        self.queued.push_back(delivery);
        while self.queued.len() > limits.max_messages || self.bytes > limits.max_bytes {
            let Some(oldest) = self.queued.pop_front() else {
                break;
            };
            self.bytes -= oldest.cost();
        }
    }
}

impl State {
    /// Forget client ids that are neither connected nor stored once there are too many
    /// to remember (an attacker cycling ids must not grow the broker).
    pub fn forget_stale_client_ids(&mut self, now: Instant, connect_interval: Duration) {
        if self.last_connect.len() > MAX_REMEMBERED_CLIENT_IDS {
            self.last_connect
                .retain(|_, last| now.duration_since(*last) < connect_interval);
        }
        if self.lifecycle_versions.len() > MAX_REMEMBERED_CLIENT_IDS {
            let (clients, stored) = (&self.clients, &self.stored_sessions);
            self.lifecycle_versions
                .retain(|id, _| clients.contains_key(id) || stored.contains_key(id));
        }
        self.stored_sessions.retain(|_, s| s.expires_at > now);
    }
}

pub(crate) struct Shared {
    pub config: Config,
    pub tls: TlsFront,
    pub events: broadcast::Sender<Event>,
    pub state: Mutex<State>,
    pub faults: Mutex<FaultTable>,
    pub next_connection: AtomicU64,
    /// QoS 0 deliveries dropped because their client was full.
    pub dropped_qos0: AtomicU64,
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
                let replaced = state.retained.get(&message.topic).map(Message::cost);
                let count = state.retained.len() + usize::from(replaced.is_none());
                let bytes: usize = state.retained.values().map(Message::cost).sum::<usize>()
                    - replaced.unwrap_or(0)
                    + message.cost();
                if count <= MAX_RETAINED_MESSAGES && bytes <= MAX_RETAINED_BYTES {
                    state
                        .retained
                        .insert(message.topic.clone(), message.clone());
                } else {
                    tracing::warn!(topic = %message.topic, "retained store full: message routed, not retained");
                }
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
            };
            match client.outbox.offer(delivery) {
                Offer::Queued => delivered += 1,
                Offer::DroppedQos0 => {
                    self.dropped_qos0.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(client = %client.info.client_id, topic = %message.topic, "backlog half full: QoS 0 delivery dropped");
                }
                Offer::DroppedQos1 => {
                    tracing::info!(client = %client.info.client_id, topic = %message.topic, "backlog full: QoS 1 delivery dropped");
                }
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
                stored.keep(
                    session::Delivery {
                        topic: message.topic.clone(),
                        payload: message.payload.clone(),
                        qos: QoS::AtLeastOnce,
                        properties: message.properties.clone(),
                        retained: false,
                        redelivery: false,
                    },
                    self.config.queue_limits,
                );
            }
        }
        delivered
    }
}
