//! A client's outbox: the deliveries routed to it that it has not taken yet, and the
//! commands for its session. Bounded in messages and bytes, so a subscriber that stops
//! reading cannot grow the broker: when it is full, QoS 0 deliveries are dropped and a
//! QoS 1 delivery marks the client as stuck (its session disconnects it), as AWS does
//! with a client that cannot keep up.
//!
//! The byte budget covers everything the client holds in the broker: deliveries waiting
//! here, and (released by the session) those being written or awaiting a PUBACK.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::mqtt::QoS;
use crate::session::{Command, Delivery};

/// How much one client may hold in the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Deliveries waiting for the session to take them.
    pub max_messages: usize,
    /// Bytes of deliveries waiting, being written, or awaiting a PUBACK.
    pub max_bytes: usize,
}

/// What became of a delivery offered to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    Queued,
    /// The client is full: a QoS 0 delivery is dropped.
    DroppedQos0,
    /// The client is full: a QoS 1 delivery cannot be held, the client is stuck.
    Overflow,
}

#[derive(Default)]
struct State {
    deliveries: VecDeque<Delivery>,
    /// Bytes charged to the client (see the module notes).
    held_bytes: usize,
    /// The first kick or drop ordered; later ones change nothing.
    command: Option<Command>,
    overflowed: bool,
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
        let mut state = self.lock();
        let full = state.deliveries.len() >= self.limits.max_messages
            || state.held_bytes + cost > self.limits.max_bytes;
        let offer = match (full, delivery.qos) {
            (false, _) => {
                state.held_bytes += cost;
                state.deliveries.push_back(delivery);
                Offer::Queued
            }
            (true, QoS::AtMostOnce) => return Offer::DroppedQos0,
            (true, _) => {
                state.overflowed = true;
                Offer::Overflow
            }
        };
        drop(state);
        self.wake.notify_one();
        offer
    }

    /// Order the session to end; the first order stands.
    pub fn command(&self, command: Command) {
        self.lock().command.get_or_insert(command);
        self.wake.notify_one();
    }

    pub fn take_command(&self) -> Option<Command> {
        self.lock().command.take()
    }

    /// A QoS 1 delivery did not fit: the client cannot keep up.
    pub fn overflowed(&self) -> bool {
        self.lock().overflowed
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
    use bytes::Bytes;

    fn delivery(qos: QoS, size: usize) -> Delivery {
        Delivery {
            topic: "t".into(),
            payload: Bytes::from(vec![0u8; size]),
            qos,
            properties: Bytes::new(),
            retained: false,
            redelivery: false,
        }
    }

    #[test]
    fn a_full_outbox_drops_qos0_and_marks_a_qos1_overflow() {
        let one = delivery(QoS::AtMostOnce, 1000).cost();
        let outbox = Outbox::new(QueueLimits {
            max_messages: 10,
            max_bytes: 2 * one,
        });
        assert_eq!(outbox.offer(delivery(QoS::AtMostOnce, 1000)), Offer::Queued);
        assert_eq!(
            outbox.offer(delivery(QoS::AtLeastOnce, 1000)),
            Offer::Queued
        );
        assert_eq!(outbox.held_bytes(), 2 * one);
        assert_eq!(
            outbox.offer(delivery(QoS::AtMostOnce, 1000)),
            Offer::DroppedQos0
        );
        assert!(!outbox.overflowed());
        assert_eq!(
            outbox.offer(delivery(QoS::AtLeastOnce, 1000)),
            Offer::Overflow
        );
        assert!(outbox.overflowed());
        assert_eq!(outbox.waiting(), 2);
        // Taken and written: the budget is free again.
        let taken = outbox.pop_if(|_| true).unwrap();
        outbox.release(taken.cost());
        assert_eq!(outbox.held_bytes(), one);
        assert_eq!(outbox.drain().len(), 1);
        assert_eq!(outbox.held_bytes(), 0);
    }

    #[test]
    fn the_message_count_is_bounded_too_and_the_first_command_stands() {
        let outbox = Outbox::new(QueueLimits {
            max_messages: 2,
            max_bytes: usize::MAX,
        });
        for _ in 0..2 {
            assert_eq!(outbox.offer(delivery(QoS::AtMostOnce, 1)), Offer::Queued);
        }
        assert_eq!(
            outbox.offer(delivery(QoS::AtMostOnce, 1)),
            Offer::DroppedQos0
        );
        outbox.command(Command::Drop);
        outbox.command(Command::Kick(
            crate::DisconnectReason::ServerInitiatedDisconnect,
        ));
        assert!(matches!(outbox.take_command(), Some(Command::Drop)));
        assert!(outbox.take_command().is_none());
    }
}
