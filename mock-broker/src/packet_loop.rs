//! The packet loop of one admitted client: packets in (publish, subscribe, acks, pings),
//! deliveries out from its outbox, keep-alive, faults, and the last words when it ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::time::{sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::backlog::{Command, Delivery, Offer, Outbox};
use crate::error::DisconnectReason;
use crate::faults::Faults;
use crate::link::{Link, ReadError, Writer, Written};
use crate::mqtt::{
    self, ClientPacket, Connect, DecodeError, Publish, QoS, ServerPacket, SubscriptionOptions,
    Version, reason,
};
use crate::observe::{Event, Publisher};
use crate::policy::{Action, Principal};
use crate::router::{Message, Router};
use crate::rules;

/// Longest the last words to a closing client (DISCONNECT, TLS close) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Encoded bytes a session keeps ready to write; it takes more deliveries from its
/// outbox only below this.
const WRITE_AHEAD_BYTES: usize = 64 * 1024;
/// While this much is waiting to be written, the session stops reading the client (so a
/// client that sends but never reads cannot queue answers without limit).
const READ_PAUSE_BYTES: usize = 256 * 1024;

/// One admitted client's connection, served until it ends.
pub(crate) struct PacketLoop {
    router: Arc<Router>,
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
    /// The Session Expiry Interval the CONNECT asked for (MQTT 5; absent is 0).
    connect_session_expiry: u32,
    /// A new Session Expiry Interval from the client's DISCONNECT.
    pub session_expiry_update: Option<u32>,
    /// The client ended with DISCONNECT 0x04: publish its will all the same.
    pub will_requested: bool,
    /// The topics of the client's topic aliases (1..=[`rules::TOPIC_ALIAS_MAXIMUM`]).
    topic_aliases: Vec<Option<String>>,
    /// The current one-second window of inbound publishes: its start (the first publish
    /// in it), publishes, bytes.
    inbound_window: (tokio::time::Instant, u32, usize),
    /// The `hold_output` fault held packets back: the next write releases them.
    holding: bool,
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
    Written(std::io::Result<Written>),
    Due,
    Packet(Result<ClientPacket, ReadError>),
}

impl PacketLoop {
    pub fn new(
        router: Arc<Router>,
        link: Link,
        outbox: Arc<Outbox>,
        connect: &Connect,
        thing_name: Option<String>,
        connection: u64,
        keep_alive_secs: u16,
    ) -> Self {
        Self {
            router,
            link,
            outbox,
            writer: Writer::default(),
            client_id: connect.client_id.clone(),
            thing_name,
            connection,
            keep_alive: rules::keep_alive_deadline(keep_alive_secs),
            max_outbound_packet: connect.max_packet_size.map(|m| m as usize),
            // AWS holds at most 100 unacknowledged QoS 1 deliveries per client, fewer if
            // the client's Receive Maximum says so.
            receive_maximum: connect
                .receive_maximum
                .map_or(rules::MAX_OUTBOUND_IN_FLIGHT, usize::from)
                .min(rules::MAX_OUTBOUND_IN_FLIGHT),
            in_flight: Vec::new(),
            next_packet_id: 1,
            connect_session_expiry: connect.session_expiry_secs.unwrap_or(0),
            session_expiry_update: None,
            will_requested: false,
            topic_aliases: vec![None; usize::from(rules::TOPIC_ALIAS_MAXIMUM)],
            inbound_window: (tokio::time::Instant::now(), 0, 0),
            holding: false,
        }
    }

    /// Serve the client until the session ends: why, and the MQTT 5 reason code to tell
    /// the client, if any.
    pub async fn run(&mut self, cancel: &CancellationToken) -> (DisconnectReason, Option<u8>) {
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
            let hold = self.faults().hold_output;
            self.holding |= hold && self.writer.next_due().is_some();
            let write_now = self.writer.ready(now) && !hold;
            let due_later = self.writer.next_due().filter(|due| *due > now);
            let stall = self
                .writer
                .stall_deadline(self.router.config.write_stall_timeout);
            let throttled_until = self.throttled_until(now);
            let reading = self.writer.bytes < READ_PAUSE_BYTES && throttled_until.is_none();
            let version = self.link.version;
            let wake = tokio::select! {
                biased;
                _ = cancel.cancelled() => Wake::Cancelled,
                _ = self.outbox.changed() => Wake::Outbox,
                _ = sleep_until(deadline) => Wake::KeepAlive,
                _ = sleep_until(stall.unwrap_or(far)), if stall.is_some() => Wake::Stalled,
                written = self.writer.drive(&mut self.link.output), if write_now => Wake::Written(written),
                _ = sleep_until(due_later.unwrap_or(far)), if due_later.is_some() => Wake::Due,
                _ = sleep_until(throttled_until.unwrap_or(far)), if throttled_until.is_some() => Wake::Due,
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
                Wake::Written(Ok(written)) => {
                    if written.released > 0 {
                        self.outbox.release(written.released);
                    }
                    if std::mem::take(&mut self.holding) {
                        self.router.emit(Event::FaultApplied {
                            client_id: self.client_id.clone(),
                            fault: format!(
                                "hold output lifted: {} bytes in one TLS write",
                                written.bytes
                            ),
                        });
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

    /// Until when the client is not read: it has used its inbound byte quota for the
    /// current second (AWS: data beyond the throughput quota is delayed, not lost).
    fn throttled_until(&mut self, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        let limits = self.router.config.inbound_limits?;
        let (start, publishes, bytes) = &mut self.inbound_window;
        let end = *start + Duration::from_secs(1);
        if now >= end {
            *publishes = 0;
            *bytes = 0;
            return None;
        }
        (*bytes >= limits.bytes).then_some(end)
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
            Some(Command::Expire) => {
                // As if the Session Expiry Interval ran out: nothing is kept.
                self.session_expiry_update = Some(0);
                return Flow::Close(
                    DisconnectReason::ServerInitiatedDisconnect,
                    Some(reason::ADMINISTRATIVE_ACTION),
                );
            }
            None => {}
        }
        if self.writer.bytes > self.router.config.queue_limits.max_bytes {
            tracing::info!(client = %self.client_id, waiting = self.writer.bytes, "too much to write to the client: disconnected");
            return Flow::Close(DisconnectReason::Throttled, Some(reason::QUOTA_EXCEEDED));
        }
        Flow::Continue
    }

    fn on_packet(&mut self, packet: Result<ClientPacket, ReadError>) -> Flow {
        match packet {
            Ok(packet) if self.faults().black_hole => {
                self.router.emit(Event::FaultApplied {
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
    pub async fn close(&mut self, code: Option<u8>) {
        if let Some(code) = code {
            self.reply(&ServerPacket::Disconnect { reason: code });
        }
        let now = tokio::time::Instant::now();
        self.writer.due_now(now);
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
        self.router.faults_for(&self.client_id)
    }

    /// Queue a packet, unless a fault says otherwise: black-holed connections get
    /// nothing, withheld acknowledgements are skipped, latency delays it. Returns
    /// whether it will go out.
    fn reply(&mut self, packet: &ServerPacket) -> bool {
        self.reply_freeing(packet, 0)
    }

    /// [`PacketLoop::reply`], freeing `release` bytes of the client's budget once written.
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
            self.router.emit(Event::FaultApplied {
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
                identifier: Some(_),
                ..
            } => {
                // The CONNACK said Subscription Identifier Available 0, as AWS's does.
                tracing::info!(client = %self.client_id, "subscription identifier: not supported");
                Flow::Close(
                    DisconnectReason::ClientError,
                    Some(reason::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED),
                )
            }
            ClientPacket::Subscribe {
                packet_id,
                subscriptions,
                identifier: None,
            } => self.on_subscribe(packet_id, subscriptions),
            ClientPacket::Unsubscribe { packet_id, filters } => {
                {
                    let mut state = self.router.lock();
                    if let Some(entry) = state.clients.get_mut(&self.client_id)
                        && entry.connection == self.connection
                    {
                        entry
                            .info
                            .subscriptions
                            .retain(|(f, _)| !filters.contains(f));
                        entry.options.retain(|f, _| !filters.contains(f));
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
            ClientPacket::Disconnect {
                reason,
                session_expiry_secs,
            } => {
                if let Some(secs) = session_expiry_secs {
                    if self.connect_session_expiry == 0 && secs != 0 {
                        // MQTT 5 §3.14.2.2.2: a session CONNECT said ends cannot be revived.
                        tracing::info!(client = %self.client_id, "DISCONNECT sets a session expiry after CONNECT set none");
                        return Flow::Close(
                            DisconnectReason::ClientError,
                            Some(reason::PROTOCOL_ERROR),
                        );
                    }
                    self.session_expiry_update = Some(secs);
                }
                self.will_requested = reason == reason::DISCONNECT_WITH_WILL;
                Flow::Close(DisconnectReason::ClientInitiatedDisconnect, None)
            }
            ClientPacket::Connect(_) => {
                tracing::info!(client = %self.client_id, "second CONNECT");
                Flow::Close(DisconnectReason::ClientError, Some(reason::PROTOCOL_ERROR))
            }
        }
    }

    fn on_publish(&mut self, mut publish: Publish) -> Flow {
        let received_at = Instant::now();
        let now = tokio::time::Instant::now();
        if self.inbound_window.1 == 0 || now >= self.inbound_window.0 + Duration::from_secs(1) {
            // A window opens with the first publish after the last one closed (also when
            // this publish is what ended an idle wait past the window's end: it belongs to
            // the new second, not the old one).
            self.inbound_window = (now, 0, 0);
        }
        self.inbound_window.1 += 1;
        self.inbound_window.2 += publish.topic.len() + publish.payload.len();
        if let Some(limits) = self.router.config.inbound_limits
            && self.inbound_window.1 > limits.publishes
        {
            // Past the publish-rate quota AWS keeps the connection but drops the publish:
            // no PUBACK, so a QoS 1 sender retries.
            tracing::info!(client = %self.client_id, topic = %publish.topic, "more than {} publishes this second: dropped", limits.publishes);
            return Flow::Continue;
        }
        if let Some(alias) = publish.topic_alias {
            // AWS supports client-to-server topic aliases, up to its CONNACK's Topic Alias
            // Maximum (MQTT 5 §3.3.2.3.4: a topic sets the alias, an empty one uses it).
            let Some(slot) = usize::from(alias)
                .checked_sub(1)
                .and_then(|at| self.topic_aliases.get_mut(at))
            else {
                tracing::info!(client = %self.client_id, alias, "topic alias above the maximum");
                return Flow::Close(
                    DisconnectReason::ClientError,
                    Some(reason::TOPIC_ALIAS_INVALID),
                );
            };
            if publish.topic.is_empty() {
                let Some(topic) = slot.clone() else {
                    tracing::info!(client = %self.client_id, alias, "topic alias used before it was set");
                    return Flow::Close(
                        DisconnectReason::ClientError,
                        Some(reason::PROTOCOL_ERROR),
                    );
                };
                publish.topic = topic;
            } else {
                *slot = Some(publish.topic.clone());
            }
        }
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
            .router
            .allowed(Action::Publish, &publish.topic, &self.principal())
        {
            tracing::info!(%client, topic = %publish.topic, "policy does not allow iot:Publish");
            // AWS's MQTT 5 reason codes: a QoS 1 PUBLISH is answered PUBACK 0x87 and the
            // connection stays; MQTT 3.1.1 (no reason codes) and QoS 0 (no PUBACK) end it.
            if let (Some(Version::V5), Some(packet_id)) = (self.link.version, publish.packet_id) {
                self.reply(&ServerPacket::PubAck {
                    packet_id,
                    reason: reason::NOT_AUTHORIZED,
                });
                return Flow::Continue;
            }
            return Flow::Close(
                DisconnectReason::ForbiddenAccess,
                Some(reason::NOT_AUTHORIZED),
            );
        }
        let packet_id = publish.packet_id;
        self.router.publish(Message {
            publisher: Publisher::Client(self.client_id.clone()),
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties: publish.properties,
            received_at,
            packet_id,
            dup: publish.dup,
            expires_at: publish
                .message_expiry_secs
                .map(|secs| received_at + rules::effective_message_expiry(secs)),
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
        if !v5 && subscriptions.iter().any(|s| s.qos == QoS::ExactlyOnce) {
            // AWS, differences from MQTT 3.1.1: "When QoS level 2 is requested, the
            // message broker doesn't send a PUBACK or SUBACK." Nothing is subscribed.
            tracing::info!(client = %self.client_id, "QoS 2 SUBSCRIBE over MQTT 3.1.1: ignored, no SUBACK");
            return Flow::Continue;
        }
        let mut codes = Vec::with_capacity(subscriptions.len());
        let mut granted: Vec<(String, QoS, SubscriptionOptions, bool)> = Vec::new();
        let held: Vec<String> = {
            let state = self.router.lock();
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
        for (index, subscription) in subscriptions.into_iter().enumerate() {
            if index >= rules::MAX_FILTERS_PER_SUBSCRIBE {
                tracing::info!(client = %self.client_id, filter = %subscription.filter, "more than {} filters in one SUBSCRIBE: refused", rules::MAX_FILTERS_PER_SUBSCRIBE);
                codes.push(if v5 { reason::QUOTA_EXCEEDED } else { 0x80 });
                continue;
            }
            let new_filter = !held.contains(&subscription.filter)
                && !granted.iter().any(|(f, ..)| *f == subscription.filter);
            if new_filter && held.len() + granted.len() >= rules::MAX_SUBSCRIPTIONS_PER_CONNECTION {
                tracing::info!(client = %self.client_id, filter = %subscription.filter, "more than {} subscriptions: refused", rules::MAX_SUBSCRIPTIONS_PER_CONNECTION);
                codes.push(if v5 { reason::QUOTA_EXCEEDED } else { 0x80 });
                continue;
            }
            let shared = subscription.filter.starts_with("$share/");
            if shared && subscription.options.no_local {
                // MQTT 5 [MQTT-3.8.3-4]: No Local on a shared subscription.
                tracing::info!(client = %self.client_id, filter = %subscription.filter, "No Local on a shared subscription");
                return Flow::Close(DisconnectReason::ClientError, Some(reason::PROTOCOL_ERROR));
            }
            let checked = if shared {
                rules::check_shared_filter(&subscription.filter)
            } else {
                rules::check_topic_filter(&subscription.filter)
            };
            if let Err(problem) = checked {
                tracing::info!(client = %self.client_id, filter = %subscription.filter, %problem, "subscription refused");
                codes.push(if v5 {
                    reason::TOPIC_FILTER_INVALID
                } else {
                    0x80
                });
                continue;
            }
            if !self
                .router
                .allowed(Action::Subscribe, &subscription.filter, &self.principal())
            {
                tracing::info!(client = %self.client_id, filter = %subscription.filter, "policy does not allow iot:Subscribe");
                // AWS's MQTT 5 reason codes: SUBACK 0x87 for the filter; MQTT 3.1.1 has
                // no code for it, and AWS closes the connection.
                if v5 {
                    codes.push(reason::NOT_AUTHORIZED);
                    continue;
                }
                return Flow::Close(
                    DisconnectReason::ForbiddenAccess,
                    Some(reason::NOT_AUTHORIZED),
                );
            }
            // MQTT 5: AWS grants QoS 1 to a QoS 2 request.
            let qos = subscription.qos.min(QoS::AtLeastOnce);
            codes.push(qos.level());
            // MQTT 5 Retain Handling: 0 sends retained messages on every SUBSCRIBE, 1 only
            // for a subscription that did not exist, 2 never.
            let send_retained = match subscription.options.retain_handling {
                0 => true,
                1 => !held.contains(&subscription.filter),
                _ => false,
            };
            granted.push((
                subscription.filter,
                qos,
                subscription.options,
                send_retained,
            ));
        }
        {
            let mut state = self.router.lock();
            if let Some(entry) = state.clients.get_mut(&self.client_id)
                && entry.connection == self.connection
            {
                for (filter, qos, options, _) in granted.iter().cloned() {
                    let subscriptions = &mut entry.info.subscriptions;
                    match subscriptions.iter_mut().find(|(f, _)| *f == filter) {
                        Some(existing) => existing.1 = qos,
                        None => subscriptions.push((filter.clone(), qos)),
                    }
                    entry.options.insert(filter, options);
                }
            }
        }
        self.reply(&ServerPacket::SubAck { packet_id, codes });
        for (filter, qos, options, send_retained) in granted {
            // A member joining a shared subscription takes what the group queued while
            // no member was online (AWS, "Shared subscriptions message queuing").
            if rules::shared_filter(&filter).is_some() {
                for delivery in
                    self.router
                        .take_shared_queued(&filter, qos, options, &self.principal())
                {
                    if self.outbox.offer(delivery) != Offer::Queued {
                        tracing::info!(client = %self.client_id, %filter, "client full: queued shared subscription message dropped");
                    }
                }
            }
            // Retained messages follow the SUBACK, as on AWS, within the client's limits.
            if send_retained
                && let Some(delivery) = self.router.retained_for(&filter, qos, &self.principal())
                && self.outbox.offer(delivery) == Offer::DroppedQos0
            {
                tracing::debug!(client = %self.client_id, "client full: retained QoS 0 delivery dropped");
            }
            self.router.emit(Event::Subscribed {
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
        // MQTT 5 §3.3.2.3.3, which AWS supports ("MQTT 5 supported features"): an expired
        // message is not sent, a live one carries the whole seconds it has left.
        let message_expiry_secs = match delivery.expires_at {
            None => None,
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(
                    u32::try_from(left.as_secs() + u64::from(left.subsec_nanos() > 0))
                        .unwrap_or(u32::MAX),
                ),
                _ => {
                    tracing::debug!(client = %self.client_id, topic = %delivery.topic, "message expired: not delivered");
                    self.outbox.release(cost);
                    return;
                }
            },
        };
        let qos1 = delivery.qos == QoS::AtLeastOnce;
        let resend = delivery
            .redelivery
            .filter(|id| !self.in_flight.iter().any(|(used, _)| used == id));
        let packet_id = qos1.then(|| resend.unwrap_or_else(|| self.new_packet_id()));
        let packet = ServerPacket::Publish(Publish {
            dup: qos1 && resend.is_some(),
            qos: delivery.qos,
            retain: delivery.retained,
            topic: delivery.topic.clone(),
            packet_id,
            payload: delivery.payload.clone(),
            topic_alias: None,
            message_expiry_secs,
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
    pub fn unfinished(&mut self) -> Vec<Delivery> {
        let mut owed: Vec<Delivery> = std::mem::take(&mut self.in_flight)
            .into_iter()
            .map(|(id, delivery)| Delivery {
                redelivery: Some(id),
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
