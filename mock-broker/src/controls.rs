//! [`Controls`]: what the broker's owner can see and do while it runs. The [`Handle`]
//! reaches them through `Deref`, the control API over HTTP.
//!
//! [`Handle`]: crate::Handle

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backlog::{BacklogFigures, Command};
use crate::config::Config;
use crate::error::{DisconnectReason, StartError};
use crate::faults::{FaultTable, Faults};
use crate::listener::ListenerSlot;
use crate::mqtt::QoS;
use crate::observe::{Observer, Publisher};
use crate::router::{ClientInfo, Message, Router};
use crate::server_cert::{self, ServerCertificateCase};
use crate::sntp::SntpBehaviour;
use crate::tls::{Credentials, TlsFront};

/// What the broker's owner can see and do: addresses, observation, clients, injection,
/// faults, listeners, SNTP. Shared by the [`Handle`] and the control API.
///
/// [`Handle`]: crate::Handle
pub struct Controls {
    pub(crate) router: Arc<Router>,
    pub(crate) tls: Arc<TlsFront>,
    pub(crate) control_addr: Option<SocketAddr>,
    pub(crate) mqtt_addr: SocketAddr,
    pub(crate) alpn_addr: Option<SocketAddr>,
    pub(crate) sntp_addr: Option<SocketAddr>,
    pub(crate) sntp_behaviour: Arc<Mutex<SntpBehaviour>>,
    pub(crate) listeners: tokio::sync::Mutex<Vec<ListenerSlot>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
    /// Control API `/events` streams open.
    pub(crate) event_streams: Arc<AtomicU64>,
}

/// Counts an open control API event stream while alive.
pub(crate) struct OpenStream(Arc<AtomicU64>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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
        &self.router.config
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
    /// [`crate::sntp::MAX_OFFSET_SECS`] is limited to it (and logged); the control API refuses
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
            receiver: self.router.events.subscribe(),
        }
    }

    /// The connected clients, sorted by client id.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let state = self.router.lock();
        let mut list: Vec<ClientInfo> = state.clients.values().map(|c| c.info.clone()).collect();
        list.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        list
    }

    /// Disconnect `client_id` (MQTT 5 clients get DISCONNECT "administrative action").
    /// Returns whether it was connected.
    pub fn kick(&self, client_id: &str) -> bool {
        let state = self.router.lock();
        match state.clients.get(client_id) {
            Some(client) => {
                client
                    .outbox
                    .command(Command::Kick(DisconnectReason::ServerInitiatedDisconnect));
                true
            }
            None => false,
        }
    }

    /// Close `client_id`'s connection without a word (no MQTT 5 DISCONNECT), as a
    /// network failure would. Returns whether it was connected.
    pub fn drop_connection(&self, client_id: &str) -> bool {
        let state = self.router.lock();
        match state.clients.get(client_id) {
            Some(client) => {
                client.outbox.command(Command::Drop);
                true
            }
            None => false,
        }
    }

    /// End `client_id`'s session as its Session Expiry Interval running out would: a
    /// connected client is disconnected (MQTT 5: "administrative action") and nothing of
    /// its session is kept; a stored session is dropped. Returns whether there was one.
    pub fn expire_session(&self, client_id: &str) -> bool {
        let mut state = self.router.lock();
        let stored = state.stored_sessions.remove(client_id).is_some();
        match state.clients.get(client_id) {
            Some(client) => {
                client.outbox.command(Command::Expire);
                true
            }
            None => stored,
        }
    }

    /// Apply `faults` to every client without faults of its own, from now on. Values
    /// beyond [`Faults::check`]'s limits are brought within them (and logged); the
    /// control API refuses them instead.
    pub fn set_faults(&self, faults: Faults) {
        self.router
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .global = faults.within_limits();
    }

    /// Apply `faults` to `client_id` only (replacing the global faults for it), within
    /// limits as for [`Controls::set_faults`].
    pub fn set_client_faults(&self, client_id: &str, faults: Faults) {
        self.router
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clients
            .insert(client_id.to_owned(), faults.within_limits());
    }

    /// What the broker holds for `client_id` (waiting, being written, awaiting a PUBACK),
    /// if connected.
    pub fn backlog(&self, client_id: &str) -> Option<BacklogFigures> {
        let state = self.router.lock();
        state.clients.get(client_id).map(|c| c.outbox.figures())
    }

    /// What the broker holds for clients that have not taken it yet: every connected
    /// client's outbox and in-flight deliveries, and stored sessions' queues.
    pub fn queue_stats(&self) -> QueueStats {
        let state = self.router.lock();
        let connected_bytes: usize = state.clients.values().map(|c| c.outbox.held_bytes()).sum();
        let waiting: usize = state.clients.values().map(|c| c.outbox.waiting()).sum();
        let stored_bytes: usize = state.stored_sessions.values().map(|s| s.bytes).sum();
        let stored: usize = state.stored_sessions.values().map(|s| s.queued.len()).sum();
        QueueStats {
            queued_bytes: connected_bytes + stored_bytes,
            queued_messages: waiting + stored,
            dropped_qos0: self.router.dropped_qos0.load(Ordering::Relaxed),
        }
    }

    /// Clear every fault, global and per client.
    pub fn reset_faults(&self) {
        *self.router.faults.lock().unwrap_or_else(|e| e.into_inner()) = FaultTable::default();
    }

    /// Publish as the broker's owner; subscribers' policies still decide delivery.
    /// Returns how many clients it was sent to.
    pub fn inject(&self, topic: &str, payload: impl Into<Bytes>, qos: QoS) -> usize {
        self.router.publish(Message {
            publisher: Publisher::Injected,
            topic: topic.to_owned(),
            payload: payload.into(),
            qos: qos.min(QoS::AtLeastOnce),
            retain: false,
            properties: Bytes::new(),
            received_at: Instant::now(),
            packet_id: None,
            dup: false,
            expires_at: None,
        })
    }

    /// Present other server credentials (e.g. an expired or untrusted certificate) to
    /// new connections.
    pub fn replace_server_credentials(&self, credentials: &Credentials) -> Result<(), StartError> {
        self.tls.replace_credentials(credentials)
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
            self.router.config.credentials.client_ca_der.clone(),
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
            .router
            .config
            .credentials
            .server_chain_der
            .first()
            .ok_or_else(|| StartError::Tls("no configured server certificate".into()))?;
        let names = server_cert::names_of(leaf)?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (chain, key) = case.make(self.router.config.issuing_ca.as_deref(), &names)?;
        self.replace_server_certificate_pem(&chain, &key)?;
        tracing::info!(preset = %case, "presenting a server certificate preset");
        Ok(())
    }

    /// Go back to the configured server credentials.
    pub fn restore_server_credentials(&self) -> Result<(), StartError> {
        self.tls
            .replace_credentials(&self.router.config.credentials)
    }

    /// Close the listening sockets (connecting clients are refused by the OS); existing
    /// connections stay up. Returns once the ports are closed. With
    /// [`Controls::drop_all_connections`] this is a broker outage.
    pub async fn stop_listening(&self) {
        let mut listeners = self.listeners.lock().await;
        for slot in listeners.iter_mut() {
            slot.stop().await;
        }
    }

    /// Listen again on the same addresses after [`Controls::stop_listening`].
    pub async fn resume_listening(&self) -> Result<(), StartError> {
        let mut listeners = self.listeners.lock().await;
        for slot in listeners.iter_mut() {
            if !slot.is_listening() {
                let listener =
                    TcpListener::bind(slot.addr)
                        .await
                        .map_err(|source| StartError::Bind {
                            addr: slot.addr,
                            source,
                        })?;
                slot.start(
                    listener,
                    &self.tls,
                    &self.router,
                    &self.cancel,
                    &self.tracker,
                );
                tracing::info!(kind = ?slot.kind, addr = %slot.addr, "listening again");
            }
        }
        Ok(())
    }

    /// Close every client connection without a word, as a network failure would.
    /// Returns how many there were.
    pub fn drop_all_connections(&self) -> usize {
        let state = self.router.lock();
        for client in state.clients.values() {
            client.outbox.command(Command::Drop);
        }
        state.clients.len()
    }
}
