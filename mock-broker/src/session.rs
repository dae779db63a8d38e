//! One client connection: TLS handshake, CONNECT and AWS's admission rules, then the
//! session loop (packets in, deliveries out, keep-alive), and the lifecycle events.

use crate::backlog::Backlog;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::broker::{ClientEntry, ClientInfo, Message, Shared, StoredSession};
use crate::error::DisconnectReason;
use crate::faults::Faults;
use crate::mqtt::{
    self, ClientPacket, ConnAck, Connect, DecodeError, Publish, QoS, ServerPacket, Version, reason,
    return_code,
};
use crate::observe::{
    Event, Publisher, SessionFacts, connected_document, connected_topic, disconnected_document,
    disconnected_topic,
};
use crate::policy::{Action, Principal};
use crate::rules;
use crate::tls::{HandshakeRefusal, ListenerKind};

/// What the broker tells a session to do.
#[derive(Debug)]
pub(crate) enum Command {
    Deliver(Delivery),
    Kick(DisconnectReason),
    /// Close without a DISCONNECT, as a broken network would.
    Drop,
}

#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub properties: Bytes,
    /// A retained message sent because of a new subscription.
    pub retained: bool,
    /// Sent before to an earlier connection of the session, never acknowledged (DUP).
    pub redelivery: bool,
    /// Counted in the connection's backlog (routed to it live): released once written
    /// or dropped.
    pub metered: bool,
}

impl Delivery {
    /// What the delivery weighs in a backlog.
    pub fn cost(&self) -> usize {
        self.payload.len() + self.topic.len() + self.properties.len() + 64
    }
}

/// Longest a write to a client may take: a client that takes no bytes for this long is
/// disconnected (its backlog would otherwise only grow).
pub const WRITE_STALL: std::time::Duration = std::time::Duration::from_secs(10);

type Stream = TlsStream<TcpStream>;

/// Serve one accepted TCP connection until it ends.
pub(crate) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let handshake = timeout(
        shared.config.handshake_timeout,
        shared.tls.accept(tcp, kind),
    );
    let accepted = tokio::select! {
        _ = cancel.cancelled() => return,
        result = handshake => result.unwrap_or(Err(HandshakeRefusal::Timeout)),
    };
    let accepted = match accepted {
        Ok(accepted) => accepted,
        Err(refusal) => {
            tracing::info!(%peer, %refusal, "TLS refused");
            shared.emit(Event::Refused {
                peer,
                reason: refusal.to_string(),
            });
            return;
        }
    };
    tracing::debug!(%peer, thing = ?accepted.thing_name, version = accepted.tls_version, "TLS established");
    let mut link = Link {
        stream: accepted.stream,
        buf: BytesMut::with_capacity(4096),
        out: BytesMut::with_capacity(4096),
        version: None,
        connect_level: None,
    };
    let connect = tokio::select! {
        _ = cancel.cancelled() => return,
        result = timeout(shared.config.connect_timeout, link.read_packet()) => result,
    };
    let connect = match connect {
        Ok(Ok(ClientPacket::Connect(connect))) => connect,
        Ok(Ok(other)) => {
            return refuse(
                &shared,
                peer,
                format!("first packet was {}, not CONNECT", other.name()),
            );
        }
        Ok(Err(ReadError::Decode(DecodeError::UnsupportedVersion(level)))) => {
            // 3.1.1's answer to an unknown level; MQTT 5 clients never get here.
            link.version = Some(Version::V311);
            link.send(&ServerPacket::ConnAck(ConnAck {
                code: return_code::UNACCEPTABLE_VERSION,
                ..ConnAck::default()
            }))
            .await;
            return refuse(
                &shared,
                peer,
                format!("MQTT protocol level {level} not supported"),
            );
        }
        Ok(Err(ReadError::Decode(e))) => {
            // MQTT 5 lets the server say why it cannot read a CONNECT; 3.1.1 just closes.
            if link.connect_level == Some(5) {
                link.version = Some(Version::V5);
                link.send(&ServerPacket::ConnAck(ConnAck {
                    code: e.reason_code(),
                    ..ConnAck::default()
                }))
                .await;
            }
            return refuse(&shared, peer, format!("reading CONNECT: {e}"));
        }
        Ok(Err(e)) => return refuse(&shared, peer, format!("reading CONNECT: {e}")),
        Err(_) => return refuse(&shared, peer, "no CONNECT in time".into()),
    };
    link.version = Some(connect.version);
    let admitted = admit(
        &shared,
        &mut link,
        &connect,
        accepted.thing_name.as_deref(),
        peer,
    )
    .await;
    let Some(keep_alive_secs) = admitted else {
        return;
    };
    let faults = shared.faults_for(&connect.client_id);
    if faults.withhold_connack {
        tracing::info!(client = %connect.client_id, "fault: CONNACK withheld");
        // Hold the connection open, reading and ignoring, until the client gives up.
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = async { while link.read_packet().await.is_ok() {} } => {}
        }
        return refuse(&shared, peer, "CONNACK withheld (fault)".into());
    }
    let info = ClientInfo {
        client_id: connect.client_id.clone(),
        thing_name: accepted.thing_name.clone(),
        version: connect.version,
        peer,
        keep_alive_secs,
        subscriptions: Vec::new(),
        connected_at: SystemTime::now(),
    };
    let Registered {
        connection,
        inbox,
        version_number,
        session_present,
        queued,
        backlog,
    } = register(&shared, info, !connect.clean_start);
    // AWS keeps a session after the connection for clean-start-off clients: 3.1.1 for
    // its default expiry, MQTT 5 for the interval asked for, capped by the same.
    let persist_for = match (connect.version, connect.clean_start) {
        (Version::V311, true) => std::time::Duration::ZERO,
        (Version::V311, false) => shared.config.max_session_expiry,
        (Version::V5, _) => {
            std::time::Duration::from_secs(connect.session_expiry_secs.unwrap_or(0).into())
                .min(shared.config.max_session_expiry)
        }
    };
    let facts = SessionFacts {
        client_id: connect.client_id.clone(),
        session_id: format!("{:032x}", connection),
        principal: accepted.certificate_id.clone(),
        ip_address: peer.ip().to_string(),
        version_number,
    };
    let ack = ConnAck {
        session_present,
        code: 0,
        maximum_qos: Some(1),
        retain_available: Some(true),
        maximum_packet_size: Some(rules::MAX_INBOUND_PACKET_BYTES as u32),
        topic_alias_maximum: None,
        server_keep_alive: (keep_alive_secs != connect.keep_alive_secs).then_some(keep_alive_secs),
        receive_maximum: None,
    };
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    link.send(&ServerPacket::ConnAck(ack)).await;
    tracing::info!(client = %connect.client_id, thing = ?accepted.thing_name, mqtt = connect.version.name(), keep_alive_secs, %peer, "connected");
    shared.emit(Event::Connected {
        client_id: connect.client_id.clone(),
        thing_name: accepted.thing_name.clone(),
        version: connect.version,
        peer,
        session_present,
    });
    lifecycle(
        &shared,
        connected_topic(&connect.client_id),
        connected_document(&facts, SystemTime::now()),
    );

    let mut session = Session {
        shared: shared.clone(),
        link,
        client_id: connect.client_id.clone(),
        thing_name: accepted.thing_name.clone(),
        connection,
        keep_alive: rules::keep_alive_deadline(keep_alive_secs),
        max_outbound_packet: connect.max_packet_size.map(|m| m as usize),
        receive_maximum: connect
            .receive_maximum
            .filter(|max| *max > 0)
            .map_or(usize::from(u16::MAX), usize::from),
        in_flight: Vec::new(),
        waiting: VecDeque::new(),
        next_packet_id: 1,
        backlog,
        stalled: false,
    };
    // Messages stored for a resumed session go out first, within Receive Maximum.
    for delivery in queued {
        session.deliver(delivery).await;
    }
    let reason = session.run(inbox, &cancel).await;
    // Bounded: a client that stopped reading would block the close_notify forever.
    let _ = timeout(
        std::time::Duration::from_secs(1),
        session.link.stream.shutdown(),
    )
    .await;

    let owed = session.unfinished();
    let version_number = unregister(&shared, &connect.client_id, connection, persist_for, owed);
    if reason != DisconnectReason::ClientInitiatedDisconnect
        && let Some(will) = &connect.will
    {
        publish_will(
            &shared,
            &connect.client_id,
            accepted.thing_name.as_deref(),
            will,
        );
    }
    tracing::info!(client = %connect.client_id, %reason, "disconnected");
    shared.emit(Event::Disconnected {
        client_id: connect.client_id.clone(),
        reason,
    });
    let facts = SessionFacts {
        version_number,
        ..facts
    };
    lifecycle(
        &shared,
        disconnected_topic(&connect.client_id),
        disconnected_document(&facts, reason, SystemTime::now()),
    );
}

/// What [`register`] hands the new session.
struct Registered {
    connection: u64,
    inbox: mpsc::UnboundedReceiver<Command>,
    /// The lifecycle `versionNumber` of the connected event.
    version_number: u64,
    /// A persistent session was resumed (CONNACK session-present).
    session_present: bool,
    /// QoS 1 messages stored for the session while it was away.
    queued: Vec<Delivery>,
    /// The connection's backlog, shared with the router.
    backlog: Arc<Backlog>,
}

/// Enter a new session in the client table, dropping an older connection with the same
/// client id as AWS does. With `resume` (clean start off) the session's subscriptions
/// and stored messages carry over from the older connection or the stored session.
fn register(shared: &Shared, mut info: ClientInfo, resume: bool) -> Registered {
    let connection = shared.new_connection_id();
    // Unbounded as a channel, bounded by `backlog`: the router admits each delivery
    // against the connection's limits before it sends it.
    let (commands, inbox) = mpsc::unbounded_channel();
    let backlog = Arc::new(Backlog::default());
    let client_id = info.client_id.clone();
    let mut state = shared.lock();
    let now = Instant::now();
    let stored = state
        .stored_sessions
        .remove(&client_id)
        .filter(|stored| stored.expires_at > now);
    let mut session_present = false;
    let mut queued = Vec::new();
    if let Some(older) = state.clients.remove(&client_id) {
        let _ = older
            .commands
            .send(Command::Kick(DisconnectReason::DuplicateClientId));
        if resume {
            info.subscriptions = older.info.subscriptions;
            session_present = true;
        }
    } else if let (true, Some(stored)) = (resume, stored) {
        info.subscriptions = stored.subscriptions;
        queued = stored.queued.into();
        session_present = true;
    }
    state.clients.insert(
        client_id.clone(),
        ClientEntry {
            connection,
            commands,
            info,
            backlog: Arc::clone(&backlog),
        },
    );
    let version = state.lifecycle_versions.entry(client_id).or_insert(0);
    *version += 1;
    Registered {
        connection,
        inbox,
        version_number: *version,
        session_present,
        queued,
        backlog,
    }
}

/// Remove a finished session from the client table (unless a duplicate has already
/// replaced it), keeping it for `persist_for` if that is not zero, with the `owed`
/// deliveries to send when it returns. Returns the
/// `versionNumber` for its disconnected event.
fn unregister(
    shared: &Shared,
    client_id: &str,
    connection: u64,
    persist_for: std::time::Duration,
    owed: Vec<Delivery>,
) -> u64 {
    let mut state = shared.lock();
    if state
        .clients
        .get(client_id)
        .is_some_and(|c| c.connection == connection)
        && let Some(entry) = state.clients.remove(client_id)
        && !persist_for.is_zero()
    {
        state.stored_sessions.insert(
            client_id.to_owned(),
            StoredSession {
                subscriptions: entry.info.subscriptions,
                thing_name: entry.info.thing_name,
                queued: owed.into(),
                expires_at: Instant::now() + persist_for,
            },
        );
    }
    let version = state
        .lifecycle_versions
        .entry(client_id.to_owned())
        .or_insert(0);
    *version += 1;
    *version
}

/// An abnormal end publishes the client's last will, if its policy allows the topic.
fn publish_will(shared: &Shared, client_id: &str, thing_name: Option<&str>, will: &mqtt::Will) {
    let principal = Principal {
        client_id,
        thing_name,
    };
    if !shared.allowed(Action::Publish, &will.topic, &principal) {
        tracing::info!(client = %client_id, topic = %will.topic, "last will not allowed by policy");
        return;
    }
    shared.publish(Message {
        publisher: Publisher::Client(client_id.to_owned()),
        topic: will.topic.clone(),
        payload: will.payload.clone(),
        qos: will.qos.min(QoS::AtLeastOnce),
        retain: will.retain,
        properties: will.properties.clone(),
        received_at: Instant::now(),
        packet_id: None,
        dup: false,
    });
}

fn refuse(shared: &Shared, peer: SocketAddr, reason: String) {
    tracing::info!(%peer, %reason, "connection refused");
    shared.emit(Event::Refused { peer, reason });
}

/// Publish a lifecycle event, unless the client id gave no topic for it.
fn lifecycle(shared: &Shared, topic: Option<String>, document: String) {
    let Some(topic) = topic else {
        return;
    };
    shared.publish(Message {
        publisher: Publisher::Broker,
        topic,
        payload: Bytes::from(document),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Bytes::new(),
        received_at: Instant::now(),
        packet_id: None,
        dup: false,
    });
}

/// Apply AWS's CONNECT rules. On refusal, answer as AWS does and return `None`; on
/// success return the keep-alive the session will use.
async fn admit(
    shared: &Shared,
    link: &mut Link,
    connect: &Connect,
    thing_name: Option<&str>,
    peer: SocketAddr,
) -> Option<u16> {
    let v5 = connect.version == Version::V5;
    let id = &connect.client_id;
    // (MQTT 5 reason, MQTT 3.1.1 return code, why)
    let refusal = if id.is_empty() || id.len() > rules::MAX_CLIENT_ID_BYTES {
        Some((
            reason::CLIENT_ID_INVALID,
            Some(return_code::IDENTIFIER_REJECTED),
            format!(
                "client id of {} bytes (1..={} allowed)",
                id.len(),
                rules::MAX_CLIENT_ID_BYTES
            ),
        ))
    } else {
        let now = Instant::now();
        let mut state = shared.lock();
        let too_soon = state
            .last_connect
            .get(id)
            .is_some_and(|last| now.duration_since(*last) < shared.config.connect_interval);
        state.last_connect.insert(id.clone(), now);
        drop(state);
        if too_soon {
            // AWS throttles: 3.1.1 clients just see the connection close.
            Some((
                reason::CONNECTION_RATE_EXCEEDED,
                None,
                format!(
                    "more than one CONNECT per {:?} for client id {id:?}",
                    shared.config.connect_interval
                ),
            ))
        } else {
            let principal = Principal {
                client_id: id,
                thing_name,
            };
            if shared.allowed(Action::Connect, id, &principal) {
                connect
                    .will
                    .as_ref()
                    .and_then(|will| refuse_will(shared, will, &principal))
            } else {
                // AWS closes 3.1.1 connections without a CONNACK on authorization failure.
                Some((
                    reason::NOT_AUTHORIZED,
                    None,
                    format!("policy does not allow iot:Connect for client id {id:?}"),
                ))
            }
        }
    };
    match refusal {
        None => Some(rules::effective_keep_alive(
            connect.keep_alive_secs,
            shared.config.min_keep_alive_secs,
        )),
        Some((v5_reason, v311_code, why)) => {
            let code = if v5 { Some(v5_reason) } else { v311_code };
            if let Some(code) = code {
                link.send(&ServerPacket::ConnAck(ConnAck {
                    code,
                    ..ConnAck::default()
                }))
                .await;
            }
            refuse(shared, peer, why);
            None
        }
    }
}

/// A will the broker could never publish refuses the CONNECT, as a publish to that topic
/// would be refused: an invalid topic name (v5 0x90), QoS 2 (0x9B), or a topic the policy
/// does not let this client publish to (0x87). MQTT 3.1.1 clients are closed.
fn refuse_will(
    shared: &Shared,
    will: &mqtt::Will,
    principal: &Principal<'_>,
) -> Option<(u8, Option<u8>, String)> {
    if let Err(problem) = rules::check_topic_name(&will.topic) {
        return Some((
            reason::TOPIC_NAME_INVALID,
            None,
            format!("will topic {:?}: {problem}", will.topic),
        ));
    }
    if will.qos == QoS::ExactlyOnce {
        return Some((
            reason::QOS_NOT_SUPPORTED,
            None,
            "will QoS 2 (AWS IoT supports QoS 0 and 1)".into(),
        ));
    }
    if !shared.allowed(Action::Publish, &will.topic, principal) {
        return Some((
            reason::NOT_AUTHORIZED,
            None,
            format!(
                "policy does not allow iot:Publish to the will topic {:?}",
                will.topic
            ),
        ));
    }
    None
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Decode(DecodeError),
}

/// The MQTT byte stream over TLS.
struct Link {
    stream: Stream,
    buf: BytesMut,
    out: BytesMut,
    version: Option<Version>,
    /// The protocol level of the CONNECT being read, seen before it is decoded.
    connect_level: Option<u8>,
}

impl Link {
    /// Read until one whole packet is buffered. Cancel-safe: bytes read stay in `buf`.
    async fn read_packet(&mut self) -> Result<ClientPacket, ReadError> {
        loop {
            if self.version.is_none() {
                self.connect_level = mqtt::peek_connect_level(&self.buf);
            }
            match mqtt::decode(&mut self.buf, self.version, rules::MAX_INBOUND_PACKET_BYTES) {
                Ok(packet) => return Ok(packet),
                Err(DecodeError::Incomplete) => {}
                Err(e) => return Err(ReadError::Decode(e)),
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ReadError::Closed);
            }
        }
    }

    /// Write a packet; a failure shows up as the next read failing, so it is only logged.
    async fn send(&mut self, packet: &ServerPacket) {
        let version = self.version.unwrap_or(Version::V311);
        self.out.clear();
        mqtt::encode(packet, version, &mut self.out);
        if self.out.is_empty() {
            return;
        }
        if let Err(e) = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        }
        .await
        {
            tracing::debug!(error = %e, "write failed");
        }
    }
}

struct Session {
    shared: Arc<Shared>,
    link: Link,
    client_id: String,
    thing_name: Option<String>,
    connection: u64,
    keep_alive: std::time::Duration,
    /// MQTT 5 Maximum Packet Size of the client: larger deliveries are dropped, as the
    /// specification requires of servers.
    max_outbound_packet: Option<usize>,
    /// MQTT 5 Receive Maximum of the client: QoS 1 deliveries beyond it wait in
    /// `waiting` until a PUBACK frees a slot.
    receive_maximum: usize,
    /// QoS 1 deliveries not yet acknowledged, oldest first, with their packet ids.
    in_flight: Vec<(u16, Delivery)>,
    waiting: VecDeque<Delivery>,
    next_packet_id: u16,
    /// Deliveries routed to this connection and not yet written.
    backlog: Arc<Backlog>,
    /// A write did not finish within [`WRITE_STALL`]: the client stopped reading.
    stalled: bool,
}

/// What handling one packet leads to.
enum Flow {
    Continue,
    /// End the session; MQTT 5 clients get a DISCONNECT with the reason code, if any.
    Close(DisconnectReason, Option<u8>),
}

impl Session {
    async fn run(
        &mut self,
        mut inbox: mpsc::UnboundedReceiver<Command>,
        cancel: &CancellationToken,
    ) -> DisconnectReason {
        if self.faults().disconnect_after_connack {
            tracing::info!(client = %self.client_id, "fault: disconnect after CONNACK");
            return DisconnectReason::ServerInitiatedDisconnect;
        }
        let mut deadline = tokio::time::Instant::now() + self.keep_alive;
        loop {
            let flow = tokio::select! {
                _ = cancel.cancelled() => {
                    Flow::Close(DisconnectReason::ServerInitiatedDisconnect, Some(reason::SERVER_SHUTTING_DOWN))
                }
                _ = sleep_until(deadline) => {
                    Flow::Close(DisconnectReason::MqttKeepAliveTimeout, Some(reason::KEEP_ALIVE_TIMEOUT))
                }
                command = inbox.recv() => match command {
                    Some(Command::Deliver(delivery)) => {
                        self.deliver(delivery).await;
                        Flow::Continue
                    }
                    Some(Command::Kick(why)) => {
                        let code = match why {
                            DisconnectReason::DuplicateClientId => reason::SESSION_TAKEN_OVER,
                            _ => reason::ADMINISTRATIVE_ACTION,
                        };
                        Flow::Close(why, Some(code))
                    }
                    Some(Command::Drop) => Flow::Close(DisconnectReason::ServerInitiatedDisconnect, None),
                    // The broker dropped this client's entry: a duplicate took over.
                    None => Flow::Close(DisconnectReason::DuplicateClientId, Some(reason::SESSION_TAKEN_OVER)),
                },
                packet = self.link.read_packet() => {
                    deadline = tokio::time::Instant::now() + self.keep_alive;
                    match packet {
                        Ok(packet) if self.faults().black_hole => {
                            self.shared.emit(Event::FaultApplied {
                                client_id: self.client_id.clone(),
                                fault: format!("black hole: ignored {}", packet.name()),
                            });
                            Flow::Continue
                        }
                        Ok(packet) => self.handle(packet).await,
                        Err(ReadError::Closed | ReadError::Io(_)) => Flow::Close(DisconnectReason::ConnectionLost, None),
                        Err(ReadError::Decode(DecodeError::TooLarge(size))) => {
                            tracing::info!(client = %self.client_id, size, "packet too large");
                            Flow::Close(DisconnectReason::ClientError, Some(reason::PACKET_TOO_LARGE))
                        }
                        Err(ReadError::Decode(e)) => {
                            tracing::info!(client = %self.client_id, error = %e, "packet refused");
                            Flow::Close(DisconnectReason::ClientError, Some(e.reason_code()))
                        }
                    }
                }
            };
            let flow = if self.stalled {
                Flow::Close(DisconnectReason::Throttled, None)
            } else {
                flow
            };
            if let Flow::Close(why, code) = flow {
                if let Some(code) = code {
                    self.reply(&ServerPacket::Disconnect { reason: code }).await;
                }
                return why;
            }
        }
    }

    fn faults(&self) -> Faults {
        self.shared.faults_for(&self.client_id)
    }

    /// Send a packet, unless a fault says otherwise: black-holed connections get
    /// nothing, withheld acknowledgements are skipped, latency is added.
    /// Returns whether the packet went out.
    async fn reply(&mut self, packet: &ServerPacket) -> bool {
        let faults = self.faults();
        let withheld = match packet {
            _ if faults.black_hole => true,
            ServerPacket::SubAck { .. } => faults.withhold_suback,
            ServerPacket::PubAck { .. } => faults.withhold_puback,
            ServerPacket::PingResp => faults.withhold_pingresp,
            _ => false,
        };
        if withheld {
            tracing::debug!(client = %self.client_id, packet = packet.name(), "fault: not sent");
            self.shared.emit(Event::FaultApplied {
                client_id: self.client_id.clone(),
                fault: format!("withheld {}", packet.name()),
            });
            return false;
        }
        if !faults.latency.is_zero() {
            tokio::time::sleep(faults.latency).await;
        }
        if tokio::time::timeout(WRITE_STALL, self.link.send(packet))
            .await
            .is_err()
        {
            tracing::info!(client = %self.client_id, packet = packet.name(), "write stalled: the client stopped reading");
            self.stalled = true;
            return false;
        }
        true
    }

    fn principal(&self) -> Principal<'_> {
        Principal {
            client_id: &self.client_id,
            thing_name: self.thing_name.as_deref(),
        }
    }

    async fn handle(&mut self, packet: ClientPacket) -> Flow {
        match packet {
            ClientPacket::Publish(publish) => self.on_publish(publish).await,
            ClientPacket::PubAck { packet_id } => {
                self.in_flight.retain(|(id, _)| *id != packet_id);
                while self.in_flight.len() < self.receive_maximum
                    && let Some(delivery) = self.waiting.pop_front()
                {
                    self.deliver(delivery).await;
                }
                Flow::Continue
            }
            ClientPacket::PubRec { .. }
            | ClientPacket::PubRel { .. }
            | ClientPacket::PubComp { .. } => {
                tracing::info!(client = %self.client_id, "QoS 2 flow packet: not supported");
                Flow::Close(
                    DisconnectReason::ClientError,
                    Some(reason::QOS_NOT_SUPPORTED),
                )
            }
            ClientPacket::Subscribe {
                packet_id,
                subscriptions,
            } => self.on_subscribe(packet_id, subscriptions).await,
            ClientPacket::Unsubscribe { packet_id, filters } => {
                {
                    let mut state = self.shared.lock();
                    if let Some(entry) = state.clients.get_mut(&self.client_id)
                        && entry.connection == self.connection
                    {
                        entry
                            .info
                            .subscriptions
                            .retain(|(f, _)| !filters.contains(f));
                    }
                }
                self.reply(&ServerPacket::UnsubAck {
                    packet_id,
                    count: filters.len(),
                })
                .await;
                Flow::Continue
            }
            ClientPacket::PingReq => {
                self.reply(&ServerPacket::PingResp).await;
                Flow::Continue
            }
            ClientPacket::Disconnect { .. } => {
                Flow::Close(DisconnectReason::ClientInitiatedDisconnect, None)
            }
            ClientPacket::Connect(_) => {
                tracing::info!(client = %self.client_id, "second CONNECT");
                Flow::Close(DisconnectReason::ClientError, Some(reason::PROTOCOL_ERROR))
            }
        }
    }

    async fn on_publish(&mut self, publish: Publish) -> Flow {
        let received_at = Instant::now();
        let client = &self.client_id;
        if publish.qos == QoS::ExactlyOnce {
            // AWS does not support QoS 2: MQTT 5 clients are told so, 3.1.1 clients are
            // disconnected.
            tracing::info!(%client, topic = %publish.topic, "QoS 2 publish: not supported");
            return Flow::Close(
                DisconnectReason::ClientError,
                Some(reason::QOS_NOT_SUPPORTED),
            );
        }
        if publish.topic_alias.is_some() {
            tracing::info!(%client, "topic alias used, none offered");
            return Flow::Close(
                DisconnectReason::ClientError,
                Some(reason::TOPIC_ALIAS_INVALID),
            );
        }
        if let Err(problem) = rules::check_topic_name(&publish.topic) {
            tracing::info!(%client, topic = %publish.topic, %problem, "publish topic refused");
            return Flow::Close(
                DisconnectReason::ClientError,
                Some(reason::TOPIC_NAME_INVALID),
            );
        }
        if publish.payload.len() > rules::MAX_PAYLOAD_BYTES {
            tracing::info!(%client, size = publish.payload.len(), "payload larger than 128 KiB");
            return Flow::Close(
                DisconnectReason::ClientError,
                Some(reason::PACKET_TOO_LARGE),
            );
        }
        if !self
            .shared
            .allowed(Action::Publish, &publish.topic, &self.principal())
        {
            tracing::info!(%client, topic = %publish.topic, "policy does not allow iot:Publish");
            return Flow::Close(
                DisconnectReason::ForbiddenAccess,
                Some(reason::NOT_AUTHORIZED),
            );
        }
        let packet_id = publish.packet_id;
        self.shared.publish(Message {
            publisher: Publisher::Client(self.client_id.clone()),
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties: publish.properties,
            received_at,
            packet_id,
            dup: publish.dup,
        });
        if let Some(packet_id) = packet_id {
            self.reply(&ServerPacket::PubAck {
                packet_id,
                reason: reason::SUCCESS,
            })
            .await;
        }
        Flow::Continue
    }

    async fn on_subscribe(
        &mut self,
        packet_id: u16,
        subscriptions: Vec<mqtt::Subscription>,
    ) -> Flow {
        let v5 = self.link.version == Some(Version::V5);
        let mut codes = Vec::with_capacity(subscriptions.len());
        let mut granted = Vec::new();
        for subscription in subscriptions {
            if let Err(problem) = rules::check_topic_filter(&subscription.filter) {
                tracing::info!(client = %self.client_id, filter = %subscription.filter, %problem, "subscription refused");
                codes.push(if v5 {
                    reason::TOPIC_FILTER_INVALID
                } else {
                    0x80
                });
                continue;
            }
            if !self
                .shared
                .allowed(Action::Subscribe, &subscription.filter, &self.principal())
            {
                tracing::info!(client = %self.client_id, filter = %subscription.filter, "policy does not allow iot:Subscribe");
                return Flow::Close(
                    DisconnectReason::ForbiddenAccess,
                    Some(reason::NOT_AUTHORIZED),
                );
            }
            // AWS grants QoS 1 to a QoS 2 request.
            let qos = subscription.qos.min(QoS::AtLeastOnce);
            codes.push(qos.level());
            granted.push((subscription.filter, qos));
        }
        {
            let mut state = self.shared.lock();
            if let Some(entry) = state.clients.get_mut(&self.client_id)
                && entry.connection == self.connection
            {
                for (filter, qos) in granted.iter().cloned() {
                    let subscriptions = &mut entry.info.subscriptions;
                    match subscriptions.iter_mut().find(|(f, _)| *f == filter) {
                        Some(existing) => existing.1 = qos,
                        None => subscriptions.push((filter, qos)),
                    }
                }
            }
        }
        self.reply(&ServerPacket::SubAck { packet_id, codes }).await;
        for (filter, qos) in granted {
            // Retained messages follow the SUBACK, as on AWS.
            for delivery in self.shared.retained_for(&filter, qos, &self.principal()) {
                self.deliver(delivery).await;
            }
            self.shared.emit(Event::Subscribed {
                client_id: self.client_id.clone(),
                filter,
                qos,
            });
        }
        Flow::Continue
    }

    async fn deliver(&mut self, delivery: Delivery) {
        let qos1 = delivery.qos == QoS::AtLeastOnce;
        if qos1 && self.in_flight.len() >= self.receive_maximum {
            // Still counted in the backlog: waiting is part of what the broker holds.
            self.waiting.push_back(delivery);
            return;
        }
        if delivery.metered {
            self.backlog.release(delivery.cost());
        }
        let delivery = Delivery {
            metered: false,
            ..delivery
        };
        let packet_id = qos1.then(|| self.new_packet_id());
        let packet = ServerPacket::Publish(Publish {
            dup: delivery.redelivery,
            qos: delivery.qos,
            retain: delivery.retained,
            topic: delivery.topic.clone(),
            packet_id,
            payload: delivery.payload.clone(),
            topic_alias: None,
            properties: delivery.properties.clone(),
        });
        if let (Some(max), Some(version)) = (self.max_outbound_packet, self.link.version) {
            let size = mqtt::encoded_len(&packet, version);
            if size > max {
                tracing::info!(client = %self.client_id, size, max, "delivery larger than the client's Maximum Packet Size: dropped");
                return;
            }
        }
        if self.reply(&packet).await
            && let Some(id) = packet_id
        {
            self.in_flight.push((id, delivery));
        }
    }

    /// What a persistent session still owes the client when the connection ends:
    /// unacknowledged deliveries (to be resent as duplicates), then those waiting.
    fn unfinished(&mut self) -> Vec<Delivery> {
        let mut owed: Vec<Delivery> = std::mem::take(&mut self.in_flight)
            .into_iter()
            .map(|(_, delivery)| Delivery {
                redelivery: true,
                ..delivery
            })
            .collect();
        owed.extend(self.waiting.drain(..));
        owed
    }

    /// A packet id not in flight (1..=65535).
    fn new_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.in_flight.iter().any(|(used, _)| *used == id) {
                return id;
            }
        }
    }
}
