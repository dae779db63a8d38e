//! What a board's driver does around minimq (MQTT 5), independent of its HAL, executor
//! and transport: the owned action queue, the session config, and the bookkeeping that
//! turns minimq's operation handles into the session's events.
//!
//! - [`OwnedAction`]: an [`Action`] owned, so it can wait in the driver's queue.
//! - [`session`]: the minimq session every board opens (client id, keep-alive, the
//!   session expiry that lets minimq replay unacknowledged QoS 1 publishes).
//! - [`Tracker`]: the SUBSCRIBE, the keep-alive probe and the QoS 1 publishes minimq
//!   holds, and what each `poll()` means for the session (`Subscribed`, `PublishAcked`,
//!   `SubscribeFailed`, `Received` or a lost connection).
//!   [`Tracker::subscribe`], [`Tracker::publish`] and [`Tracker::probe`] carry out the
//!   session's `Subscribe`, `Publish` and `Ping` on a live minimq connection over any
//!   transport, each write bounded by the board's [`WriteTimeout`].
//! - [`watch`]: what the broker says that minimq does not pass on (the DISCONNECT reason
//!   code, the CONNACK's Maximum QoS), read off the byte stream under minimq.
//! - [`inbound_violation`]: an inbound PUBLISH the device must refuse (topic alias).
//! - [`op_packet_id`], [`qos`], [`disconnect_reason`], [`connect_failure`] (with feature
//!   `tls`): minimq's types in the session's terms.
//!
//! Needs a global allocator (the queue owns topics and payloads).

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write as _;
use core::future::Future;

use minimq::{
    Buffers, ConfigBuilder, ConfigError, Connection, Io, Op, Publication, QoS, RetainHandling,
    Session, SubscriptionOptions, TopicFilter,
};

#[cfg(feature = "tls")]
use crate::log::{ConnectError, ConnectFailure};
use crate::log::{DisconnectReason, Line, ProtocolViolation, SubscribeError};
use crate::session::{Action, Event, Publish, Qos, SESSION_EXPIRY_S};

#[cfg(test)]
mod tests;
pub mod watch;

pub use watch::{BrokerNotes, PacketWatch, Watched};

/// An action, owned, so it can wait in the queue while the session is borrowed.
#[derive(Debug)]
pub enum OwnedAction {
    Log(Box<Line>),
    LoadConfig,
    LoadCredentials,
    JoinNetwork,
    SyncTime,
    Connect,
    Subscribe {
        topic: String,
        qos: Qos,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
        qos: Qos,
        seq: u32,
        /// The session's proposed id, used if minimq's cannot be read.
        packet_id: Option<u16>,
        dup: bool,
    },
    Ping,
    Disconnect,
}

impl OwnedAction {
    /// The owned form of an action; `Sleep` is not queued (it sets the deadline).
    pub fn from_action(action: Action<'_>) -> Option<Self> {
        Some(match action {
            Action::Log(line) => OwnedAction::Log(Box::new(line.clone())),
            Action::LoadConfig => OwnedAction::LoadConfig,
            Action::LoadCredentials => OwnedAction::LoadCredentials,
            Action::JoinNetwork => OwnedAction::JoinNetwork,
            Action::SyncTime => OwnedAction::SyncTime,
            Action::Connect => OwnedAction::Connect,
            Action::Subscribe { topic, qos } => OwnedAction::Subscribe {
                topic: topic.to_string(),
                qos,
            },
            Action::Publish(p) => OwnedAction::Publish {
                topic: p.topic.to_string(),
                payload: p.payload.to_vec(),
                qos: p.qos,
                seq: p.seq,
                packet_id: p.packet_id,
                dup: p.dup,
            },
            Action::Ping => OwnedAction::Ping,
            Action::Disconnect => OwnedAction::Disconnect,
            Action::Sleep(_) => return None,
        })
    }

    /// The publish this `Publish` holds, borrowed for [`Tracker::publish`].
    pub fn as_publish(&self) -> Option<Publish<'_>> {
        match self {
            OwnedAction::Publish {
                topic,
                payload,
                qos,
                seq,
                packet_id,
                dup,
            } => Some(Publish {
                topic,
                payload,
                qos: *qos,
                seq: *seq,
                packet_id: *packet_id,
                dup: *dup,
            }),
            _ => None,
        }
    }
}

/// A minimq session for `client_id` over the `rx`/`tx` packet buffers. Fails only for a
/// client id (or buffer split) minimq cannot hold.
pub fn session<'b>(
    client_id: &str,
    keepalive_s: u16,
    rx: &'b mut [u8],
    tx: &'b mut [u8],
) -> Result<Session<'b>, ConfigError> {
    let config = ConfigBuilder::new(Buffers::new(rx, tx))
        .client_id(client_id)?
        .keepalive_interval(keepalive_s)
        .session_expiry_interval(SESSION_EXPIRY_S);
    Ok(Session::new(config))
}

/// Why an MQTT connect over embedded-tls failed, as the log classifies it.
#[cfg(feature = "tls")]
#[must_use]
pub fn connect_failure(error: &minimq::Error<embedded_tls::TlsError>) -> ConnectFailure {
    use embedded_tls::TlsError;
    match error {
        minimq::Error::Peer(minimq::PeerError::Rejected(_)) => {
            ConnectFailure::Mqtt(ConnectError::Refused)
        }
        // A rejected client certificate surfaces here: TLS 1.3 sends the alert after
        // the client's Finished, so the CONNACK read fails, not the handshake.
        minimq::Error::Transport(TlsError::HandshakeAborted(..)) => {
            ConnectFailure::Tls(crate::log::TlsError::PeerAlert)
        }
        minimq::Error::Transport(_) | minimq::Error::Disconnected => {
            ConnectFailure::Mqtt(ConnectError::Io)
        }
        _ => ConnectFailure::Mqtt(ConnectError::Protocol),
    }
}

/// The packet id minimq gave an operation. minimq 0.13 keeps it private and shows it
/// only in `Debug` (`Op { kind: .., packet_id: N, generation: .. }`); the virtual
/// device's mosquitto test pins that format against the ids the broker logs.
pub fn op_packet_id(op: &Op) -> Option<u16> {
    let mut text = heapless::String::<96>::new();
    // Too long for the buffer means the format changed: no id.
    write!(text, "{op:?}").ok()?;
    packet_id_in_debug(&text)
}

/// The `packet_id: N` field of an `Op`'s `Debug` text.
fn packet_id_in_debug(text: &str) -> Option<u16> {
    let rest = &text[text.find("packet_id: ")? + "packet_id: ".len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// minimq's QoS for the session's.
pub fn qos(qos: Qos) -> QoS {
    match qos {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
    }
}

/// How a minimq error that ended the connection is logged.
pub fn disconnect_reason<E>(e: &minimq::Error<E>) -> DisconnectReason {
    match e {
        minimq::Error::Disconnected => DisconnectReason::PeerClosed,
        minimq::Error::Transport(_) | minimq::Error::WriteZero => DisconnectReason::Tls,
        _ => DisconnectReason::Protocol,
    }
}

/// Why an inbound PUBLISH must be refused: the device announces no Topic Alias Maximum,
/// so a Topic Alias (or an empty topic, which only an alias could fill) is a protocol
/// error (MQTT 5 section 3.3.2.3.4). The driver answers with DISCONNECT 0x94.
pub fn inbound_violation(msg: &minimq::InboundPublish<'_>) -> Option<ProtocolViolation> {
    let alias = msg
        .properties()
        .iter()
        .any(|p| matches!(p, Ok(minimq::Property::TopicAlias(_))));
    (alias || msg.topic().is_empty()).then_some(ProtocolViolation::TopicAliasInvalid)
}

/// The DISCONNECT the device sends after `violation`.
pub fn violation_disconnect(violation: ProtocolViolation) -> minimq::Disconnect<'static> {
    minimq::Disconnect::with_reason(minimq::ReasonCode::from(violation.reason_code()))
}

/// The filter for the session's SUBSCRIBE.
pub fn subscribe_filter(topic: &str, qos: Qos) -> TopicFilter<'_> {
    TopicFilter::new(topic).options(SubscriptionOptions::default().maximum_qos(self::qos(qos)))
}

/// The board's bound on a SUBSCRIBE or PUBLISH write, with its executor's timer: a broker
/// that stopped reading must not stall the loop (the connection then counts as lost).
pub trait WriteTimeout {
    /// `fut`'s output, or `None` if it did not finish within the bound.
    fn bound<F: Future>(&self, fut: F) -> impl Future<Output = Option<F::Output>>;
}

/// What carrying out an action on the connection means for the session: `Ok` with the
/// event to report (if any), or `Err` with the reason the connection is lost (for the
/// caller to report after [`Tracker::lost`]).
pub type Outcome = Result<Option<Event<'static>>, DisconnectReason>;

/// Where an operation stands; minimq's [`Session`] answers for its [`Op`]s.
pub trait OpStatus<O> {
    /// Still awaiting its ack.
    fn is_pending(&self, op: &O) -> bool;
    /// Acknowledged in the current session generation.
    fn is_complete(&self, op: &O) -> bool;
    /// Dropped with the local state of a session the broker did not resume.
    fn is_invalidated(&self, op: &O) -> bool;
}

impl OpStatus<Op> for Session<'_> {
    fn is_pending(&self, op: &Op) -> bool {
        Session::is_pending(self, op)
    }
    fn is_complete(&self, op: &Op) -> bool {
        Session::is_complete(self, op)
    }
    fn is_invalidated(&self, op: &Op) -> bool {
        Session::is_invalidated(self, op)
    }
}

/// A QoS 1 publish minimq holds for this device (until PUBACK or a fresh session).
#[derive(Debug, Clone, Copy)]
struct Sent<O> {
    seq: u32,
    packet_id: u16,
    op: O,
}

/// The operations a driver awaits acks for, generic over the operation handle (minimq's
/// [`Op`] on the boards).
#[derive(Debug)]
pub struct Tracker<O = Op> {
    /// The session's SUBSCRIBE awaiting its SUBACK.
    subscription: Option<O>,
    /// The subscription made on this connection, for keep-alive probes.
    subscribed: Option<(String, Qos)>,
    /// A keep-alive probe awaiting its SUBACK.
    probe: Option<O>,
    sent: Vec<Sent<O>>,
}

impl<O> Default for Tracker<O> {
    fn default() -> Self {
        Self {
            subscription: None,
            subscribed: None,
            probe: None,
            sent: Vec::new(),
        }
    }
}

impl<O: Copy> Tracker<O> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A connection is up. The publishes stay: on a resumed session minimq still holds
    /// (and replays) them; on a fresh one [`Tracker::polled`] drops them as invalidated.
    pub fn connected(&mut self) {
        self.forget_connection();
    }

    /// The connection died; the caller reports `Disconnected`.
    pub fn lost(&mut self) {
        self.forget_connection();
    }

    fn forget_connection(&mut self) {
        // The filter stays: a resumed session still holds it, and the keep-alive probe
        // repeats it without a new SUBSCRIBE from the session.
        self.subscription = None;
        self.probe = None;
    }

    /// The session's SUBSCRIBE to `topic` went out as `op`.
    pub fn subscribing(&mut self, op: O, topic: String, qos: Qos) {
        self.subscription = Some(op);
        self.subscribed = Some((topic, qos));
    }

    /// The filter of a keep-alive probe, unless there is no subscription to repeat or a
    /// probe is still out.
    ///
    /// minimq pings only after keep-alive - 5 s without *sending*, so a device that
    /// publishes QoS 0 never hears from the broker; and minimq has no ping call.
    /// Subscribing again to the same filter is the request-response the session wants:
    /// SUBACK proves the link, and retained messages are not sent again.
    pub fn probe_filter(&self) -> Option<TopicFilter<'_>> {
        let (topic, qos) = self.subscribed.as_ref().filter(|_| self.probe.is_none())?;
        Some(
            TopicFilter::new(topic).options(
                SubscriptionOptions::default()
                    .maximum_qos(self::qos(*qos))
                    .retain_behavior(RetainHandling::IfSubscriptionDoesNotExist),
            ),
        )
    }

    /// The keep-alive probe went out as `op`.
    pub fn probing(&mut self, op: O) {
        self.probe = Some(op);
    }

    /// Whether publish `seq` should go on the wire. minimq keeps an unacknowledged QoS 1
    /// packet and replays it (DUP, same id) on reconnect; MQTT 5 forbids resending it on a
    /// live connection, so a retry of a publish minimq still holds is already taken care
    /// of. Otherwise any earlier send of `seq` is forgotten.
    pub fn should_publish(&mut self, seq: u32, dup: bool, ops: &impl OpStatus<O>) -> bool {
        if dup
            && self
                .sent
                .iter()
                .any(|s| s.seq == seq && ops.is_pending(&s.op))
        {
            return false;
        }
        self.sent.retain(|s| s.seq != seq);
        true
    }

    /// Publish `seq` went out as `op` with `packet_id` (minimq's, or else the session's
    /// proposal): the event to report, if the id is known.
    pub fn published(&mut self, seq: u32, op: O, packet_id: Option<u16>) -> Option<Event<'static>> {
        let packet_id = packet_id?;
        self.sent.push(Sent { seq, packet_id, op });
        Some(Event::PublishSent { seq, packet_id })
    }

    /// Report what one `poll()` brought: `inbound` if it delivered a message (already
    /// reported), `error` if it failed, `connected` whether the connection is still up
    /// afterwards. Feeds the session its events; `Err` is the reason the connection is
    /// lost (for the caller to report after [`Tracker::lost`]).
    pub fn polled<E>(
        &mut self,
        inbound: bool,
        error: Option<minimq::Error<E>>,
        connected: bool,
        ops: &impl OpStatus<O>,
        feed: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), DisconnectReason> {
        match error {
            None => {}
            // A SUBACK or PUBACK with a failure code; the connection stays up.
            Some(minimq::Error::Peer(minimq::PeerError::Rejected(code))) if connected => {
                let refused = self.subscription.take_if(|op| !ops.is_pending(op));
                if refused.is_some() {
                    feed(Event::SubscribeFailed(SubscribeError::Refused));
                    return Ok(());
                }
                // minimq completes the publish it refers to before it reports the code
                // (one packet per poll), so the completed one is the refused one: it must
                // not be reported as acknowledged.
                if let Some(i) = self.sent.iter().position(|s| ops.is_complete(&s.op)) {
                    let s = self.sent.swap_remove(i);
                    feed(Event::PublishRefused {
                        packet_id: s.packet_id,
                        code: u8::from(&code),
                    });
                    return Ok(());
                }
            }
            Some(e) => return Err(disconnect_reason(&e)),
        }
        let reported = self.acks(ops, feed) || inbound;
        if !reported {
            // PINGRESP or another packet: proof the link is alive.
            feed(Event::Received);
        }
        Ok(())
    }

    /// Report SUBACK and PUBACKs minimq has processed. True if anything was reported.
    fn acks(&mut self, ops: &impl OpStatus<O>, feed: &mut dyn FnMut(Event<'_>)) -> bool {
        let mut reported = false;
        // A probe's SUBACK is reported as `Received` (by the caller, as nothing else is).
        self.probe = self.probe.filter(|op| ops.is_pending(op));
        if let Some(op) = self.subscription
            && ops.is_complete(&op)
        {
            self.subscription = None;
            feed(Event::Subscribed);
            reported = true;
        }
        let mut i = 0;
        while i < self.sent.len() {
            let s = self.sent[i];
            if ops.is_complete(&s.op) {
                self.sent.swap_remove(i);
                feed(Event::PublishAcked(s.packet_id));
                reported = true;
            } else if ops.is_invalidated(&s.op) {
                // A fresh broker session dropped it; the session sends it again.
                self.sent.swap_remove(i);
            } else {
                i += 1;
            }
        }
        reported
    }
}

impl Tracker<Op> {
    /// The session's `Subscribe` on `conn`.
    pub async fn subscribe<IO: Io>(
        &mut self,
        conn: &mut Connection<'_, '_, IO>,
        topic: String,
        qos: Qos,
        timeout: &impl WriteTimeout,
    ) -> Outcome {
        let filter = subscribe_filter(&topic, qos);
        match timeout.bound(conn.subscribe(&[filter], &[])).await {
            Some(Ok(op)) => {
                self.subscribing(op, topic, qos);
                Ok(None)
            }
            Some(Err(_)) if conn.is_connected() => {
                Ok(Some(Event::SubscribeFailed(SubscribeError::Refused)))
            }
            Some(Err(e)) => Err(disconnect_reason(&e)),
            None => Err(DisconnectReason::Io),
        }
    }

    /// The session's `Publish` on `conn` (see [`Tracker::should_publish`] for retries).
    pub async fn publish<IO: Io>(
        &mut self,
        conn: &mut Connection<'_, '_, IO>,
        publish: Publish<'_>,
        timeout: &impl WriteTimeout,
    ) -> Outcome {
        let seq = publish.seq;
        if !self.should_publish(seq, publish.dup, conn.session()) {
            return Ok(None);
        }
        let publication = Publication::bytes(publish.topic, publish.payload).qos(qos(publish.qos));
        match timeout.bound(conn.publish(publication)).await {
            None => Err(DisconnectReason::Io),
            Some(Ok(Some(op))) => {
                Ok(self.published(seq, op, op_packet_id(&op).or(publish.packet_id)))
            }
            Some(Ok(None)) => Ok(None),
            Some(Err(minimq::PubError::Session(e))) if !conn.is_connected() => {
                Err(disconnect_reason(&e))
            }
            // Not sent (no room in minimq's window): the session retries it.
            Some(Err(_)) => Ok(None),
        }
    }

    /// The session's `Ping` on `conn`: a keep-alive probe (see [`Tracker::probe_filter`]),
    /// unless one is out or there is nothing to subscribe to again.
    pub async fn probe<IO: Io>(
        &mut self,
        conn: &mut Connection<'_, '_, IO>,
        timeout: &impl WriteTimeout,
    ) -> Outcome {
        let Some(filter) = self.probe_filter() else {
            return Ok(None);
        };
        match timeout.bound(conn.subscribe(&[filter], &[])).await {
            Some(Ok(op)) => self.probing(op),
            Some(Err(_)) if conn.is_connected() => {}
            Some(Err(e)) => return Err(disconnect_reason(&e)),
            None => return Err(DisconnectReason::Io),
        }
        Ok(None)
    }
}
