//! What the broker's owner sees: every publish with its arrival time, connections coming
//! and going, refusals; and AWS's lifecycle event documents.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::error::DisconnectReason;
use crate::mqtt::{QoS, Version};

/// Who published a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publisher {
    /// An MQTT client, by client id.
    Client(String),
    /// The broker's owner, through `inject`.
    Injected,
    /// The broker itself (lifecycle events).
    Broker,
}

/// One publish as the broker received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishObservation {
    pub publisher: Publisher,
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// The packet id of a QoS 1 publish from a client.
    pub packet_id: Option<u16>,
    /// The DUP flag: the client says this is a retransmission.
    pub dup: bool,
    /// When the whole packet had been read, on the monotonic clock.
    pub received_at: Instant,
    /// The same moment on the wall clock.
    pub received_at_system: SystemTime,
}

/// Everything an observer is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Publish(PublishObservation),
    Connected {
        client_id: String,
        thing_name: Option<String>,
        version: Version,
        peer: SocketAddr,
        /// A persistent session was resumed (CONNACK session-present).
        session_present: bool,
    },
    Disconnected {
        client_id: String,
        reason: DisconnectReason,
    },
    /// A subscription was granted (at `qos`).
    Subscribed {
        client_id: String,
        filter: String,
        qos: QoS,
    },
    /// A connection refused before it became a session (TLS or CONNECT).
    Refused {
        peer: SocketAddr,
        reason: String,
    },
    /// A fault changed what the broker did for `client_id`, e.g. "withheld PINGRESP".
    FaultApplied {
        client_id: String,
        fault: String,
    },
    /// A last will that was waiting out its MQTT 5 Will Delay Interval was not
    /// published, and why (the client connected again in time, or the broker stopped).
    WillDiscarded {
        client_id: String,
        why: String,
    },
    /// The SNTP server got a request, and answered it or (as told) did not.
    SntpRequest {
        peer: SocketAddr,
        answered: bool,
    },
}

impl Event {
    /// The event as one JSON object, as the control API streams it. Payloads are given
    /// as (lossy) UTF-8 text with their exact length.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Event::Publish(p) => json!({
                "type": "publish",
                "publisher": match &p.publisher {
                    Publisher::Client(id) => json!({ "client": id }),
                    Publisher::Injected => json!("injected"),
                    Publisher::Broker => json!("broker"),
                },
                "topic": p.topic,
                "payload": String::from_utf8_lossy(&p.payload),
                "payload_len": p.payload.len(),
                "qos": p.qos.level(),
                "retain": p.retain,
                "packet_id": p.packet_id,
                "dup": p.dup,
                "received_at_ms": millis(p.received_at_system),
            }),
            Event::Connected {
                client_id,
                thing_name,
                version,
                peer,
                session_present,
            } => json!({
                "type": "connected",
                "client_id": client_id,
                "thing_name": thing_name,
                "mqtt_version": version.name(),
                "peer": peer.to_string(),
                "session_present": session_present,
            }),
            Event::Disconnected { client_id, reason } => json!({
                "type": "disconnected",
                "client_id": client_id,
                "reason": reason.aws_name(),
            }),
            Event::Subscribed {
                client_id,
                filter,
                qos,
            } => json!({
                "type": "subscribed",
                "client_id": client_id,
                "filter": filter,
                "qos": qos.level(),
            }),
            Event::Refused { peer, reason } => json!({
                "type": "refused",
                "peer": peer.to_string(),
                "reason": reason,
            }),
            Event::FaultApplied { client_id, fault } => json!({
                "type": "fault",
                "client_id": client_id,
                "fault": fault,
            }),
            Event::WillDiscarded { client_id, why } => json!({
                "type": "will_discarded",
                "client_id": client_id,
                "why": why,
            }),
            Event::SntpRequest { peer, answered } => json!({
                "type": "sntp",
                "peer": peer.to_string(),
                "answered": answered,
            }),
        }
    }
}

/// Events an observer may fall behind by before it skips some. The ring is allocated
/// up front, so it is sized for a busy fleet (2,500 publishes/s) read a few seconds late,
/// not more.
pub const OBSERVER_BACKLOG: usize = 16 * 1024;

/// A stream of [`Event`]s from the moment it was made. It holds up to
/// [`OBSERVER_BACKLOG`] events; an observer that falls further behind skips the oldest
/// and is told how many it missed.
pub struct Observer {
    pub(crate) receiver: broadcast::Receiver<Event>,
}

/// The observer fell behind and `0` events were dropped for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("observer lagged: {0} events dropped")]
pub struct Lagged(pub u64);

impl Observer {
    /// An observer of events someone else reports, e.g. a client watching a real AWS IoT
    /// endpoint that turns what it receives into [`Event`]s, so the same waits work there.
    pub fn from_receiver(receiver: broadcast::Receiver<Event>) -> Self {
        Self { receiver }
    }

    /// The next event; `None` once the broker has shut down and everything was read.
    pub async fn next(&mut self) -> Option<Result<Event, Lagged>> {
        match self.receiver.recv().await {
            Ok(event) => Some(Ok(event)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Err(Lagged(n))),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event if one is already waiting (lag is skipped over).
    pub fn try_next(&mut self) -> Option<Event> {
        loop {
            match self.receiver.try_recv() {
                Ok(event) => return Some(event),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Wait up to `timeout` for the first event `pick` accepts; `None` on timeout or
    /// shutdown. Lag is skipped over.
    pub async fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Option<T> {
        let search = async {
            while let Some(next) = self.next().await {
                if let Ok(event) = next
                    && let Some(found) = pick(&event)
                {
                    return Some(found);
                }
            }
            None
        };
        tokio::time::timeout(timeout, search).await.ok().flatten()
    }

    /// Wait for a publish on `topic`.
    pub async fn wait_for_publish(
        &mut self,
        topic: &str,
        timeout: Duration,
    ) -> Option<PublishObservation> {
        self.wait_for(timeout, |event| match event {
            Event::Publish(p) if p.topic == topic => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Wait for `client_id` to disconnect; returns the reason.
    pub async fn wait_for_disconnect(
        &mut self,
        client_id: &str,
        timeout: Duration,
    ) -> Option<DisconnectReason> {
        self.wait_for(timeout, |event| match event {
            Event::Disconnected {
                client_id: id,
                reason,
            } if id == client_id => Some(*reason),
            _ => None,
        })
        .await
    }

    /// Wait for `client_id` to connect.
    pub async fn wait_for_connect(&mut self, client_id: &str, timeout: Duration) -> bool {
        self.wait_for_session(client_id, timeout).await.is_some()
    }

    /// Wait for `client_id` to be granted a subscription to `filter`.
    pub async fn wait_for_subscription(
        &mut self,
        client_id: &str,
        filter: &str,
        timeout: Duration,
    ) -> Option<QoS> {
        self.wait_for(timeout, |event| match event {
            Event::Subscribed {
                client_id: id,
                filter: f,
                qos,
            } if id == client_id && f == filter => Some(*qos),
            _ => None,
        })
        .await
    }

    /// Wait for `client_id` to connect; returns whether its session was resumed.
    pub async fn wait_for_session(&mut self, client_id: &str, timeout: Duration) -> Option<bool> {
        self.wait_for(timeout, |event| match event {
            Event::Connected {
                client_id: id,
                session_present,
                ..
            } if id == client_id => Some(*session_present),
            _ => None,
        })
        .await
    }

    /// Wait for a fault to act on `client_id`; returns its description.
    pub async fn wait_for_fault(&mut self, client_id: &str, timeout: Duration) -> Option<String> {
        self.wait_for(timeout, |event| match event {
            Event::FaultApplied {
                client_id: id,
                fault,
            } if id == client_id => Some(fault.clone()),
            _ => None,
        })
        .await
    }

    /// Wait for a refused connection; returns the reason.
    pub async fn wait_for_refusal(&mut self, timeout: Duration) -> Option<String> {
        self.wait_for(timeout, |event| match event {
            Event::Refused { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await
    }
}

/// The topic of AWS's connected lifecycle event for `client_id`; `None` for a client id
/// that cannot be part of a topic name (AWS: "Client IDs that contain # or + do not
/// receive lifecycle events").
pub fn connected_topic(client_id: &str) -> Option<String> {
    lifecycle_topic("connected", client_id)
}

/// The topic of AWS's disconnected lifecycle event for `client_id`; `None` as for
/// [`connected_topic`].
pub fn disconnected_topic(client_id: &str) -> Option<String> {
    lifecycle_topic("disconnected", client_id)
}

/// A lifecycle topic, built only from a client id that leaves it a valid topic name.
fn lifecycle_topic(event: &str, client_id: &str) -> Option<String> {
    if client_id.is_empty() || client_id.contains(['#', '+']) {
        return None;
    }
    let topic = format!("$aws/events/presence/{event}/{client_id}");
    // The client id is at most 128 bytes, so only a wildcard could make this invalid;
    // checked all the same so no topic is ever built from unchecked input.
    crate::rules::check_topic_name(&topic)
        .or_else(|problem| match problem {
            // AWS's own topics are not held to the 7-slash limit of client topics.
            crate::rules::TopicProblem::TooDeep(_) => Ok(()),
            other => Err(other),
        })
        .ok()?;
    Some(topic)
}

pub(crate) fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Facts about a session the lifecycle events report.
#[derive(Debug, Clone)]
pub(crate) struct SessionFacts {
    pub client_id: String,
    pub session_id: String,
    pub principal: String,
    pub ip_address: String,
    pub version_number: u64,
}

/// The connected event document, with AWS's field names.
pub(crate) fn connected_document(facts: &SessionFacts, at: SystemTime) -> String {
    serde_json::json!({
        "clientId": facts.client_id,
        "timestamp": millis(at),
        "eventType": "connected",
        "sessionIdentifier": facts.session_id,
        "principalIdentifier": facts.principal,
        "ipAddress": facts.ip_address,
        "versionNumber": facts.version_number,
    })
    .to_string()
}

/// The disconnected event document, with AWS's field names.
pub(crate) fn disconnected_document(
    facts: &SessionFacts,
    reason: DisconnectReason,
    at: SystemTime,
) -> String {
    serde_json::json!({
        "clientId": facts.client_id,
        "timestamp": millis(at),
        "eventType": "disconnected",
        "sessionIdentifier": facts.session_id,
        "principalIdentifier": facts.principal,
        "clientInitiatedDisconnect": reason == DisconnectReason::ClientInitiatedDisconnect,
        "disconnectReason": reason.aws_name(),
        "versionNumber": facts.version_number,
    })
    .to_string()
}
