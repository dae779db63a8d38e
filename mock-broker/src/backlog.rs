//! Per-client backlog: what the broker holds for a subscriber, and its limits.
//!
//! Each connected client has an `Outbox`: the `Delivery`s routed to it that its session
//! has not taken yet, and the `Command`s for the session. The byte budget covers
//! everything the client holds in the broker: deliveries waiting here, and (released by
//! the session) those being written or awaiting a PUBACK. Past the limits the broker does
//! what AWS IoT Core does with a client that cannot keep up: QoS 0 deliveries give way
//! first (once the backlog is half full), QoS 1 deliveries are held up to the full limit
//! and dropped beyond it, and a client whose socket takes nothing for the write stall
//! timeout is disconnected (`THROTTLED`) by its session.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::error::DisconnectReason;
use crate::mqtt::QoS;

/// Most bytes held for one client by default (payload, topic, properties, overhead).
pub const MAX_BACKLOG_BYTES: usize = 4 * 1024 * 1024;
/// Most deliveries waiting for one client by default (and stored for a persistent
/// session).
pub const MAX_BACKLOG_MESSAGES: usize = 1000;

/// How much one client may hold in the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Deliveries waiting for the session to take them.
    pub max_messages: usize,
    /// Bytes of deliveries waiting, being written, or awaiting a PUBACK.
    pub max_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_messages: MAX_BACKLOG_MESSAGES,
            max_bytes: MAX_BACKLOG_BYTES,
        }
    }
}

/// A client's backlog as figures ([`crate::Controls::backlog`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogFigures {
    /// Bytes held for the client.
    pub bytes: usize,
    /// Deliveries waiting for its session to take them.
    pub messages: usize,
    /// Deliveries dropped because the backlog was full, since the client connected.
    pub dropped: u64,
}

/// A message on its way to one client, as its session will send it.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub properties: Bytes,
    /// A retained message sent because of a new subscription.
    pub retained: bool,
    /// The packet id it was sent with to an earlier connection of the session, never
    /// acknowledged: resent with that id and DUP, as MQTT requires (AWS's note on
    /// duplicates without DUP is about resends under a different packet id).
    pub redelivery: Option<u16>,
    /// When the publisher's Message Expiry Interval runs out: not sent after that, and
    /// sent with what is left of it before.
    pub expires_at: Option<Instant>,
}

impl Delivery {
    /// Roughly the bytes it takes to hold, charged to its client's budget.
    pub fn cost(&self) -> usize {
        self.topic.len() + self.payload.len() + self.properties.len() + 64
    }
}

/// What the broker's owner (or a newer connection) tells a session to do.
#[derive(Debug)]
pub(crate) enum Command {
    Kick(DisconnectReason),
    /// Close without a DISCONNECT, as a broken network would.
    Drop,
    /// Kick, and keep no session: the client's next CONNACK says no session present.
    Expire,
}

/// What became of a delivery offered to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    Queued,
    /// The backlog is half full: a QoS 0 delivery gives way.
    DroppedQos0,
    /// The backlog is full: a QoS 1 delivery cannot be held.
    DroppedQos1,
}

#[derive(Default)]
struct State {
    deliveries: VecDeque<Delivery>,
    /// Bytes charged to the client (see the module notes).
    held_bytes: usize,
    /// The first kick or drop ordered; later ones change nothing.
    command: Option<Command>,
    dropped: u64,
}

pub(crate) struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    limits: QueueLimits,
}

impl Outbox {
    pub fn new(limits: QueueLimits) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `delivery` if the client's limits allow it.
    pub fn offer(&self, delivery: Delivery) -> Offer {
        let cost = delivery.cost();
        // QoS 0 gives way early, so room stays for the deliveries that must arrive.
        let (max_messages, max_bytes, dropped) = match delivery.qos {
            QoS::AtMostOnce => (
                self.limits.max_messages / 2,
                self.limits.max_bytes / 2,
                Offer::DroppedQos0,
            ),
            _ => (
                self.limits.max_messages,
                self.limits.max_bytes,
                Offer::DroppedQos1,
            ),
        };
        let mut state = self.lock();
        if state.deliveries.len() >= max_messages
            || state.held_bytes.saturating_add(cost) > max_bytes
        {
            state.dropped += 1;
            return dropped;
        }
        state.held_bytes += cost;
        state.deliveries.push_back(delivery);
        drop(state);
        self.wake.notify_one();
        Offer::Queued
    }

    /// Order the session to end; the first order stands.
    pub fn command(&self, command: Command) {
        self.lock().command.get_or_insert(command);
        self.wake.notify_one();
    }

    pub fn take_command(&self) -> Option<Command> {
        self.lock().command.take()
    }

    /// The front delivery, if `ready` says the session can send it now.
    pub fn pop_if(&self, ready: impl FnOnce(&Delivery) -> bool) -> Option<Delivery> {
        let mut state = self.lock();
        if ready(state.deliveries.front()?) {
            state.deliveries.pop_front()
        } else {
            None
        }
    }

    /// The session is done with `bytes` of deliveries (written, acknowledged, dropped).
    pub fn release(&self, bytes: usize) {
        let mut state = self.lock();
        state.held_bytes = state.held_bytes.saturating_sub(bytes);
    }

    /// Everything still waiting, for a persistent session to keep.
    pub fn drain(&self) -> Vec<Delivery> {
        let mut state = self.lock();
        let drained: Vec<Delivery> = state.deliveries.drain(..).collect();
        let bytes: usize = drained.iter().map(Delivery::cost).sum();
        state.held_bytes = state.held_bytes.saturating_sub(bytes);
        drained
    }

    pub fn held_bytes(&self) -> usize {
        self.lock().held_bytes
    }

    pub fn figures(&self) -> BacklogFigures {
        let state = self.lock();
        BacklogFigures {
            bytes: state.held_bytes,
            messages: state.deliveries.len(),
            dropped: state.dropped,
        }
    }

    pub fn waiting(&self) -> usize {
        self.lock().deliveries.len()
    }

    /// Resolves once something was offered or commanded since the last call.
    pub async fn changed(&self) {
        self.wake.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(qos: QoS, size: usize) -> Delivery {
        Delivery {
            topic: "t".into(),
            payload: Bytes::from(vec![0u8; size]),
            qos,
            properties: Bytes::new(),
            retained: false,
            redelivery: None,
            expires_at: None,
        }
    }

    #[test]
    fn qos0_gives_way_at_half_and_qos1_at_the_limit() {
        let chunk = delivery(QoS::AtMostOnce, 128 * 1024).cost();
        let outbox = Outbox::new(QueueLimits {
            max_messages: 1000,
            max_bytes: 8 * chunk,
        });
        let mut qos0 = 0;
        while outbox.offer(delivery(QoS::AtMostOnce, 128 * 1024)) == Offer::Queued {
            qos0 += 1;
        }
        assert_eq!(qos0, 4);
        let mut qos1 = 0;
        while outbox.offer(delivery(QoS::AtLeastOnce, 128 * 1024)) == Offer::Queued {
            qos1 += 1;
        }
        assert_eq!(qos0 + qos1, 8);
        assert!(outbox.held_bytes() <= 8 * chunk);
        assert_eq!(outbox.figures().dropped, 2);
        // Taken and written: the budget is free again.
        let taken = outbox.pop_if(|_| true).unwrap();
        outbox.release(taken.cost());
        assert_eq!(
            outbox.offer(delivery(QoS::AtLeastOnce, 128 * 1024)),
            Offer::Queued
        );
        assert_eq!(outbox.drain().len(), 8);
        assert_eq!(outbox.held_bytes(), 0);
    }

    #[test]
    fn the_message_count_is_bounded_too_and_the_first_command_stands() {
        let outbox = Outbox::new(QueueLimits {
            max_messages: 2,
            max_bytes: usize::MAX,
        });
        for _ in 0..2 {
            assert_eq!(outbox.offer(delivery(QoS::AtLeastOnce, 1)), Offer::Queued);
        }
        assert_eq!(
            outbox.offer(delivery(QoS::AtLeastOnce, 1)),
            Offer::DroppedQos1
        );
        outbox.command(Command::Drop);
        outbox.command(Command::Kick(DisconnectReason::ServerInitiatedDisconnect));
        assert!(matches!(outbox.take_command(), Some(Command::Drop)));
        assert!(outbox.take_command().is_none());
    }
}
