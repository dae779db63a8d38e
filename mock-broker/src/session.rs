//! One client connection: TLS handshake, CONNECT and AWS's admission rules, then the
//! session loop (packets in, deliveries out, keep-alive), and the lifecycle events.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::backlog::{Offer, Outbox};
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

/// What the broker's owner (or a newer connection) tells a session to do.
#[derive(Debug)]
pub(crate) enum Command {
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
}

impl Delivery {
    /// Roughly the bytes it takes to hold, charged to its client's budget.
    pub fn cost(&self) -> usize {
        self.topic.len() + self.payload.len() + self.properties.len() + 64
    }
}

type Stream = TlsStream<TcpStream>;

/// Longest a write outside the session loop may take (CONNACK, refusals): a client that
/// does not read must not hold a connection task, or the broker's shutdown, for long.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest the last words to a closing client (DISCONNECT, TLS close) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Encoded bytes a session keeps ready to write; it takes more deliveries from its
/// outbox only below this.
const WRITE_AHEAD_BYTES: usize = 64 * 1024;
/// While this much is waiting to be written, the session stops reading the client (so a
/// client that sends but never reads cannot queue answers without limit).
const READ_PAUSE_BYTES: usize = 256 * 1024;

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
    let (reader, output) = tokio::io::split(accepted.stream);
    let mut link = Link {
        input: Input {
            reader,
            buf: BytesMut::with_capacity(4096),
            connect_level: None,
        },
        output,
        out: BytesMut::with_capacity(4096),
        version: None,
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
            if link.input.connect_level == Some(5) {
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
        outbox,
        version_number,
        session_present,
        queued,
    } = register(&shared, info, !connect.clean_start);
    // Messages stored for a resumed session go out first, within the client's limits.
    for delivery in queued {
        outbox.offer(delivery);
    }
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
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(faults.latency) => {}
        }
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
        &connect.client_id,
        connected_topic(&connect.client_id),
        connected_document(&facts, SystemTime::now()),
    );

    let mut session = Session {
        shared: shared.clone(),
        link,
        outbox,
        writer: Writer::default(),
        client_id: connect.client_id.clone(),
        thing_name: accepted.thing_name.clone(),
        connection,
        keep_alive: rules::keep_alive_deadline(keep_alive_secs),
        max_outbound_packet: connect.max_packet_size.map(|m| m as usize),
        // AWS holds at most 100 unacknowledged QoS 1 deliveries per client, fewer if the
        // client's Receive Maximum says so.
        receive_maximum: connect
            .receive_maximum
            .map_or(rules::MAX_OUTBOUND_IN_FLIGHT, usize::from)
            .min(rules::MAX_OUTBOUND_IN_FLIGHT),
        in_flight: Vec::new(),
        next_packet_id: 1,
    };
    let (reason, code) = session.run(&cancel).await;
    session.close(code).await;

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
        &connect.client_id,
        disconnected_topic(&connect.client_id),
        disconnected_document(&facts, reason, SystemTime::now()),
    );
}

/// What [`register`] hands the new session.
struct Registered {
    connection: u64,
    outbox: Arc<Outbox>,
    /// The lifecycle `versionNumber` of the connected event.
    version_number: u64,
    /// A persistent session was resumed (CONNACK session-present).
    session_present: bool,
    /// QoS 1 messages stored for the session while it was away.
    queued: Vec<Delivery>,
}

/// Enter a new session in the client table, dropping an older connection with the same
/// client id as AWS does. With `resume` (clean start off) the session's subscriptions
/// and stored messages carry over from the older connection or the stored session.
fn register(shared: &Shared, mut info: ClientInfo, resume: bool) -> Registered {
    let connection = shared.new_connection_id();
    let outbox = Arc::new(Outbox::new(shared.config.queue_limits));
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
        older
            .outbox
            .command(Command::Kick(DisconnectReason::DuplicateClientId));
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
            outbox: outbox.clone(),
            info,
        },
    );
    let version = state.lifecycle_versions.entry(client_id).or_insert(0);
    *version += 1;
    Registered {
        connection,
        outbox,
        version_number: *version,
        session_present,
        queued,
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
        let mut stored = StoredSession {
            subscriptions: entry.info.subscriptions,
            thing_name: entry.info.thing_name,
            queued: VecDeque::new(),
            bytes: 0,
            expires_at: Instant::now() + persist_for,
        };
        for delivery in owed {
            stored.keep(delivery, shared.config.queue_limits);
        }
        state.stored_sessions.insert(client_id.to_owned(), stored);
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

fn lifecycle(shared: &Shared, client_id: &str, topic: Option<String>, document: String) {
    let Some(topic) = topic else {
        tracing::debug!(client = %client_id, "client id cannot be part of a topic: no lifecycle event");
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
        state.forget_stale_client_ids(now, shared.config.connect_interval);
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
            if !shared.allowed(Action::Connect, id, &principal) {
                // AWS closes 3.1.1 connections without a CONNACK on authorization failure.
                Some((
                    reason::NOT_AUTHORIZED,
                    None,
                    format!("policy does not allow iot:Connect for client id {id:?}"),
                ))
            } else {
                connect
                    .will
                    .as_ref()
                    .and_then(|will| will_refusal(shared, will, &principal))
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

/// AWS applies the publish rules to a will when the client connects, not when the will
/// is sent: topic validity and limits, reserved topics, QoS, payload size, and the
/// policy's iot:Publish on the will topic. A will that fails refuses the CONNECT: (MQTT 5
/// reason, MQTT 3.1.1 return code if any, why).
fn will_refusal(
    shared: &Shared,
    will: &mqtt::Will,
    principal: &Principal<'_>,
) -> Option<(u8, Option<u8>, String)> {
    let topic = &will.topic;
    if let Err(problem) = rules::check_publish_topic(topic) {
        return Some((
            reason::TOPIC_NAME_INVALID,
            None,
            format!("will topic {topic:?}: {problem}"),
        ));
    }
    if will.qos == QoS::ExactlyOnce {
        return Some((
            reason::QOS_NOT_SUPPORTED,
            None,
            "will QoS 2: AWS supports QoS 0 and 1".into(),
        ));
    }
    if will.payload.len() > rules::MAX_PAYLOAD_BYTES {
        return Some((
            reason::PACKET_TOO_LARGE,
            None,
            format!("will payload of {} bytes", will.payload.len()),
        ));
    }
    if !shared.allowed(Action::Publish, topic, principal) {
        return Some((
            reason::NOT_AUTHORIZED,
            None,
            format!("policy does not allow iot:Publish on the will topic {topic:?}"),
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

/// The MQTT byte stream over TLS: a read half and a write half, so the session can
/// wait for both at once.
struct Link {
    input: Input,
    output: WriteHalf<Stream>,
    out: BytesMut,
    version: Option<Version>,
}

struct Input {
    reader: ReadHalf<Stream>,
    buf: BytesMut,
    /// The protocol level of the CONNECT being read, seen before it is decoded.
    connect_level: Option<u8>,
}

impl Input {
    /// Read until one whole packet is buffered. Cancel-safe: bytes read stay in `buf`.
    async fn read_packet(&mut self, version: Option<Version>) -> Result<ClientPacket, ReadError> {
        loop {
            if version.is_none() {
                self.connect_level = mqtt::peek_connect_level(&self.buf);
            }
            match mqtt::decode(&mut self.buf, version, rules::MAX_INBOUND_PACKET_BYTES) {
                Ok(packet) => return Ok(packet),
                Err(DecodeError::Incomplete) => {}
                Err(e) => return Err(ReadError::Decode(e)),
            }
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                return Err(ReadError::Closed);
            }
        }
    }
}

impl Link {
    async fn read_packet(&mut self) -> Result<ClientPacket, ReadError> {
        self.input.read_packet(self.version).await
    }

    /// Write a packet before the session loop runs (CONNACK, refusals), within
    /// [`SEND_TIMEOUT`]; a failure shows up as the next read failing, so it is only
    /// logged.
    async fn send(&mut self, packet: &ServerPacket) {
        let version = self.version.unwrap_or(Version::V311);
        self.out.clear();
        mqtt::encode(packet, version, &mut self.out);
        if self.out.is_empty() {
            return;
        }
        let write = async {
            self.output.write_all(&self.out).await?;
            self.output.flush().await
        };
        match timeout(SEND_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "write failed"),
            Err(_) => tracing::debug!(
                packet = packet.name(),
                "client not reading: write abandoned"
            ),
        }
    }
}

/// One encoded packet waiting to be written.
struct Outgoing {
    bytes: Bytes,
    /// Not before this (the latency fault).
    due: tokio::time::Instant,
    /// Bytes of the client's budget freed once it is written (a QoS 0 delivery).
    release: usize,
}

/// What a session has to write, written as the socket takes it, never blocking the
/// session: a client that stops reading holds up only its own deliveries.
#[derive(Default)]
struct Writer {
    queue: VecDeque<Outgoing>,
    /// Bytes of the front packet already written.
    offset: usize,
    /// Bytes waiting to be written.
    bytes: usize,
    /// Written since the last flush.
    unflushed: bool,
    /// When the socket last took bytes (or the queue last filled from empty).
    progress_at: Option<tokio::time::Instant>,
}

impl Writer {
    fn push(&mut self, bytes: Bytes, due: tokio::time::Instant, release: usize) {
        if self.queue.is_empty() {
            self.progress_at = Some(tokio::time::Instant::now());
        }
        self.bytes += bytes.len();
        self.queue.push_back(Outgoing {
            bytes,
            due,
            release,
        });
    }

    fn next_due(&self) -> Option<tokio::time::Instant> {
        self.queue.front().map(|o| o.due)
    }

    /// When the client counts as stuck if the socket takes nothing more.
    fn stall_deadline(&self, stall: Duration) -> Option<tokio::time::Instant> {
        let front = self.queue.front()?;
        let since = self.progress_at.map_or(front.due, |at| at.max(front.due));
        Some(since + stall)
    }

    /// Whether [`Writer::drive`] has something to do now.
    fn ready(&self, now: tokio::time::Instant) -> bool {
        match self.next_due() {
            Some(due) => due <= now,
            None => self.unflushed,
        }
    }

    /// Write some of the front packet (or flush once all is written). Cancel-safe: the
    /// state changes only after the socket took the bytes. Returns the budget bytes
    /// freed by packets written completely.
    async fn drive(&mut self, output: &mut WriteHalf<Stream>) -> std::io::Result<usize> {
        let Some(front) = self.queue.front() else {
            output.flush().await?;
            self.unflushed = false;
            return Ok(0);
        };
        let written = output.write(&front.bytes[self.offset..]).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.progress_at = Some(tokio::time::Instant::now());
        self.unflushed = true;
        self.offset += written;
        self.bytes -= written;
        if self.offset < front.bytes.len() {
            return Ok(0);
        }
        self.offset = 0;
        Ok(self.queue.pop_front().map_or(0, |done| done.release))
    }
}

struct Session {
    shared: Arc<Shared>,
    link: Link,
    /// Deliveries routed to this client and commands for it, bounded.
    outbox: Arc<Outbox>,
    writer: Writer,
    client_id: String,
    thing_name: Option<String>,
    connection: u64,
    keep_alive: Duration,
    /// MQTT 5 Maximum Packet Size of the client: larger deliveries are dropped, as the
    /// specification requires of servers.
    max_outbound_packet: Option<usize>,
    /// How many QoS 1 deliveries may await a PUBACK; further ones wait in the outbox.
    receive_maximum: usize,
    /// QoS 1 deliveries not yet acknowledged, oldest first, with their packet ids.
    in_flight: Vec<(u16, Delivery)>,
    next_packet_id: u16,
}

/// What handling one packet leads to.
enum Flow {
    Continue,
    /// End the session; MQTT 5 clients get a DISCONNECT with the reason code, if any.
    Close(DisconnectReason, Option<u8>),
}

/// What woke the session loop.
enum Wake {
    Cancelled,
    Outbox,
    KeepAlive,
    Stalled,
    Written(std::io::Result<usize>),
    Due,
    Packet(Result<ClientPacket, ReadError>),
}

impl Session {
    /// Serve the client until the session ends: why, and the MQTT 5 reason code to tell
    /// the client, if any.
    async fn run(&mut self, cancel: &CancellationToken) -> (DisconnectReason, Option<u8>) {
        if self.faults().disconnect_after_connack {
            tracing::info!(client = %self.client_id, "fault: disconnect after CONNACK");
            return (DisconnectReason::ServerInitiatedDisconnect, None);
        }
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let mut deadline = tokio::time::Instant::now() + self.keep_alive;
        loop {
            if let Flow::Close(why, code) = self.orders() {
                return (why, code);
            }
            self.fill();
            let now = tokio::time::Instant::now();
            let write_now = self.writer.ready(now);
            let due_later = self.writer.next_due().filter(|due| *due > now);
            let stall = self
                .writer
                .stall_deadline(self.shared.config.write_stall_timeout);
            let reading = self.writer.bytes < READ_PAUSE_BYTES;
            let version = self.link.version;
            let wake = tokio::select! {
                biased;
                _ = cancel.cancelled() => Wake::Cancelled,
                _ = self.outbox.changed() => Wake::Outbox,
                _ = sleep_until(deadline) => Wake::KeepAlive,
                _ = sleep_until(stall.unwrap_or(far)), if stall.is_some() => Wake::Stalled,
                written = self.writer.drive(&mut self.link.output), if write_now => Wake::Written(written),
                _ = sleep_until(due_later.unwrap_or(far)), if due_later.is_some() => Wake::Due,
                packet = self.link.input.read_packet(version), if reading => Wake::Packet(packet),
            };
            let flow = match wake {
                Wake::Cancelled => Flow::Close(
                    DisconnectReason::ServerInitiatedDisconnect,
                    Some(reason::SERVER_SHUTTING_DOWN),
                ),
                Wake::Outbox | Wake::Due => Flow::Continue,
                Wake::KeepAlive => Flow::Close(
                    DisconnectReason::MqttKeepAliveTimeout,
                    Some(reason::KEEP_ALIVE_TIMEOUT),
                ),
                Wake::Stalled => {
                    tracing::info!(client = %self.client_id, waiting = self.writer.bytes, "client stopped reading: disconnected");
                    Flow::Close(DisconnectReason::Throttled, Some(reason::QUOTA_EXCEEDED))
                }
                Wake::Written(Ok(released)) => {
                    if released > 0 {
                        self.outbox.release(released);
                    }
                    Flow::Continue
                }
                Wake::Written(Err(e)) => {
                    tracing::debug!(client = %self.client_id, error = %e, "write failed");
                    Flow::Close(DisconnectReason::ConnectionLost, None)
                }
                Wake::Packet(packet) => {
                    deadline = tokio::time::Instant::now() + self.keep_alive;
                    self.on_packet(packet)
                }
            };
            if let Flow::Close(why, code) = flow {
                return (why, code);
            }
        }
    }

    /// Orders from outside, and limits: a kick or drop, or too much to write.
    fn orders(&mut self) -> Flow {
        match self.outbox.take_command() {
            Some(Command::Kick(why)) => {
                let code = match why {
                    DisconnectReason::DuplicateClientId => reason::SESSION_TAKEN_OVER,
                    _ => reason::ADMINISTRATIVE_ACTION,
                };
                return Flow::Close(why, Some(code));
            }
            Some(Command::Drop) => {
                return Flow::Close(DisconnectReason::ServerInitiatedDisconnect, None);
            }
            None => {}
        }
        if self.writer.bytes > self.shared.config.queue_limits.max_bytes {
            tracing::info!(client = %self.client_id, waiting = self.writer.bytes, "too much to write to the client: disconnected");
            return Flow::Close(DisconnectReason::Throttled, Some(reason::QUOTA_EXCEEDED));
        }
        Flow::Continue
    }

    fn on_packet(&mut self, packet: Result<ClientPacket, ReadError>) -> Flow {
        match packet {
            Ok(packet) if self.faults().black_hole => {
                self.shared.emit(Event::FaultApplied {
                    client_id: self.client_id.clone(),
                    fault: format!("black hole: ignored {}", packet.name()),
                });
                Flow::Continue
            }
            Ok(packet) => self.handle(packet),
            Err(ReadError::Closed | ReadError::Io(_)) => {
                Flow::Close(DisconnectReason::ConnectionLost, None)
            }
            Err(ReadError::Decode(DecodeError::TooLarge(size))) => {
                tracing::info!(client = %self.client_id, size, "packet too large");
                Flow::Close(
                    DisconnectReason::ClientError,
                    Some(reason::PACKET_TOO_LARGE),
                )
            }
            Err(ReadError::Decode(e)) => {
                tracing::info!(client = %self.client_id, error = %e, "packet refused");
                Flow::Close(DisconnectReason::ClientError, Some(e.reason_code()))
            }
        }
    }

    /// The last words: a DISCONNECT with `code` (MQTT 5), what is still due, and the TLS
    /// close, all within [`CLOSE_TIMEOUT`] and without the latency fault, so a client
    /// that does not read cannot hold the broker up.
    async fn close(&mut self, code: Option<u8>) {
        if let Some(code) = code {
            self.reply(&ServerPacket::Disconnect { reason: code });
        }
        let now = tokio::time::Instant::now();
        for outgoing in self.writer.queue.iter_mut() {
            outgoing.due = now;
        }
        let (writer, output) = (&mut self.writer, &mut self.link.output);
        let last_words = async {
            while writer.ready(now) {
                writer.drive(output).await?;
            }
            output.shutdown().await
        };
        if timeout(CLOSE_TIMEOUT, last_words).await.is_err() {
            tracing::debug!(client = %self.client_id, "client not reading: closed without the last words");
        }
    }

    fn faults(&self) -> Faults {
        self.shared.faults_for(&self.client_id)
    }

    /// Queue a packet, unless a fault says otherwise: black-holed connections get
    /// nothing, withheld acknowledgements are skipped, latency delays it. Returns
    /// whether it will go out.
    fn reply(&mut self, packet: &ServerPacket) -> bool {
        self.reply_freeing(packet, 0)
    }

    /// [`Session::reply`], freeing `release` bytes of the client's budget once written.
    fn reply_freeing(&mut self, packet: &ServerPacket, release: usize) -> bool {
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
        let mut encoded = BytesMut::new();
        mqtt::encode(
            packet,
            self.link.version.unwrap_or(Version::V311),
            &mut encoded,
        );
        if encoded.is_empty() {
            return false;
        }
        let due = tokio::time::Instant::now() + faults.latency;
        self.writer.push(encoded.freeze(), due, release);
        true
    }

    fn principal(&self) -> Principal<'_> {
        Principal {
            client_id: &self.client_id,
            thing_name: self.thing_name.as_deref(),
        }
    }

    fn handle(&mut self, packet: ClientPacket) -> Flow {
        match packet {
            ClientPacket::Publish(publish) => self.on_publish(publish),
            ClientPacket::PubAck { packet_id } => {
                if let Some(at) = self.in_flight.iter().position(|(id, _)| *id == packet_id) {
                    let (_, delivery) = self.in_flight.remove(at);
                    self.outbox.release(delivery.cost());
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
            } => self.on_subscribe(packet_id, subscriptions),
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
                });
                Flow::Continue
            }
            ClientPacket::PingReq => {
                self.reply(&ServerPacket::PingResp);
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

    fn on_publish(&mut self, publish: Publish) -> Flow {
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
        if let Err(problem) = rules::check_publish_topic(&publish.topic) {
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
            });
        }
        Flow::Continue
    }

    fn on_subscribe(&mut self, packet_id: u16, subscriptions: Vec<mqtt::Subscription>) -> Flow {
        let v5 = self.link.version == Some(Version::V5);
        let mut codes = Vec::with_capacity(subscriptions.len());
        let mut granted: Vec<(String, QoS)> = Vec::new();
        let held: Vec<String> = {
            let state = self.shared.lock();
            state
                .clients
                .get(&self.client_id)
                .filter(|entry| entry.connection == self.connection)
                .map(|entry| {
                    entry
                        .info
                        .subscriptions
                        .iter()
                        .map(|(f, _)| f.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        for subscription in subscriptions {
            let new_filter = !held.contains(&subscription.filter)
                && !granted.iter().any(|(f, _)| *f == subscription.filter);
            if new_filter && held.len() + granted.len() >= rules::MAX_SUBSCRIPTIONS_PER_CONNECTION {
                tracing::info!(client = %self.client_id, filter = %subscription.filter, "more than {} subscriptions: refused", rules::MAX_SUBSCRIPTIONS_PER_CONNECTION);
                codes.push(if v5 { reason::QUOTA_EXCEEDED } else { 0x80 });
                continue;
            }
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
        self.reply(&ServerPacket::SubAck { packet_id, codes });
        for (filter, qos) in granted {
            // Retained messages follow the SUBACK, as on AWS, within the client's limits.
            for delivery in self.shared.retained_for(&filter, qos, &self.principal()) {
                if self.outbox.offer(delivery) == Offer::DroppedQos0 {
                    tracing::debug!(client = %self.client_id, "client full: retained QoS 0 delivery dropped");
                }
            }
            self.shared.emit(Event::Subscribed {
                client_id: self.client_id.clone(),
                filter,
                qos,
            });
        }
        Flow::Continue
    }

    /// Take deliveries from the outbox while there is room to write them and, for QoS
    /// 1, a free slot under the Receive Maximum.
    fn fill(&mut self) {
        while self.writer.bytes < WRITE_AHEAD_BYTES {
            let slot_free = self.in_flight.len() < self.receive_maximum;
            let Some(delivery) = self
                .outbox
                .pop_if(|d| d.qos == QoS::AtMostOnce || slot_free)
            else {
                break;
            };
            self.send_delivery(delivery);
        }
    }

    fn send_delivery(&mut self, delivery: Delivery) {
        let cost = delivery.cost();
        let qos1 = delivery.qos == QoS::AtLeastOnce;
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
                self.outbox.release(cost);
                return;
            }
        }
        // A QoS 1 delivery stays charged until its PUBACK, a QoS 0 one until written.
        let release = if qos1 { 0 } else { cost };
        match (self.reply_freeing(&packet, release), packet_id) {
            (true, Some(id)) => self.in_flight.push((id, delivery)),
            (true, None) => {}
            (false, _) => self.outbox.release(cost),
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
        owed.extend(self.outbox.drain());
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
