//! Admission: AWS's CONNECT rules, entering a connection in the client table (taking
//! over an older connection or a stored session) and leaving it, and the lifecycle
//! events and last will that go with both. Decisions only: the connection answers the
//! client.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::backlog::{Command, Delivery, Outbox};
use crate::error::DisconnectReason;
use crate::mqtt::{self, Connect, QoS, SubscriptionOptions, Version, reason, return_code};
use crate::observe::{Event, Publisher};
use crate::policy::{Action, Principal};
use crate::router::{ClientEntry, ClientInfo, Message, Router, StoredSession};
use crate::rules;

/// Why a CONNECT is refused, and what to answer.
pub(crate) struct Refusal {
    /// The CONNACK code to answer with, if the client's MQTT version gets one (AWS closes
    /// some 3.1.1 connections without a word).
    pub connack: Option<u8>,
    pub why: String,
}

/// What [`register`] hands the new connection.
pub(crate) struct Registered {
    pub connection: u64,
    pub outbox: Arc<Outbox>,
    /// The lifecycle `versionNumber` of the connected event.
    pub version_number: u64,
    /// A persistent session was resumed (CONNACK session-present).
    pub session_present: bool,
    /// QoS 1 messages stored for the session while it was away.
    pub queued: Vec<Delivery>,
}

/// Enter a new session in the client table, dropping an older connection with the same
/// client id as AWS does. With `resume` (clean start off) the session's subscriptions
/// and stored messages carry over from the older connection or the stored session.
pub(crate) fn register(router: &Router, mut info: ClientInfo, resume: bool) -> Registered {
    let connection = router.new_connection_id();
    let outbox = Arc::new(Outbox::new(router.config.queue_limits));
    let client_id = info.client_id.clone();
    let mut state = router.lock();
    let now = Instant::now();
    let stored = state
        .stored_sessions
        .remove(&client_id)
        .filter(|stored| stored.expires_at > now);
    let mut session_present = false;
    let mut queued = Vec::new();
    let mut options = HashMap::new();
    // AWS ("MQTT persistent sessions"): "Cross MQTT version (MQTT 3 and MQTT 5)
    // persistent sessions are not supported. An MQTT 3 persistent session can't be
    // resumed as an MQTT 5 session, and vice versa." Such a session is replaced.
    let stored = stored.filter(|stored| stored.version == info.version);
    if let Some(older) = state.clients.remove(&client_id) {
        older
            .outbox
            .command(Command::Kick(DisconnectReason::DuplicateClientId));
        if resume && older.info.version == info.version {
            info.subscriptions = older.info.subscriptions;
            options = older.options;
            session_present = true;
        }
    } else if let (true, Some(stored)) = (resume, stored) {
        info.subscriptions = stored.subscriptions;
        options = stored.options;
        queued = stored.queued.into();
        session_present = true;
    }
    // A resumed member of shared subscriptions takes what each group queued while no
    // member was online.
    let shared: Vec<(String, QoS, SubscriptionOptions)> = info
        .subscriptions
        .iter()
        .filter(|(filter, _)| rules::shared_filter(filter).is_some())
        .map(|(filter, qos)| {
            let options = options.get(filter).copied().unwrap_or_default();
            (filter.clone(), *qos, options)
        })
        .collect();
    let thing_name = info.thing_name.clone();
    state.clients.insert(
        client_id.clone(),
        ClientEntry {
            connection,
            outbox: outbox.clone(),
            info,
            options,
        },
    );
    let version = state
        .lifecycle_versions
        .entry(client_id.clone())
        .or_insert(0);
    *version += 1;
    let version_number = *version;
    drop(state);
    let principal = Principal {
        client_id: &client_id,
        thing_name: thing_name.as_deref(),
    };
    for (filter, qos, options) in shared {
        queued.extend(router.take_shared_queued(&filter, qos, options, &principal));
    }
    Registered {
        connection,
        outbox,
        version_number,
        session_present,
        queued,
    }
}

/// Remove a finished session from the client table (unless a duplicate has already
/// replaced it), keeping it for `persist_for` if that is not zero, with the `owed`
/// deliveries to send when it returns. Returns the `versionNumber` for its disconnected
/// event.
pub(crate) fn unregister(
    router: &Router,
    client_id: &str,
    connection: u64,
    persist_for: Duration,
    owed: Vec<Delivery>,
) -> u64 {
    let mut state = router.lock();
    if state
        .clients
        .get(client_id)
        .is_some_and(|c| c.connection == connection)
        && let Some(entry) = state.clients.remove(client_id)
        && !persist_for.is_zero()
    {
        let mut stored = StoredSession {
            version: entry.info.version,
            subscriptions: entry.info.subscriptions,
            options: entry.options,
            thing_name: entry.info.thing_name,
            queued: VecDeque::new(),
            bytes: 0,
            expires_at: Instant::now() + persist_for,
        };
        for delivery in owed {
            stored.keep(delivery, router.config.queue_limits);
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

/// Why a will delayed since the connection whose disconnected event had lifecycle
/// version `version_number` must not be published now: a connection for the client id
/// has been made since (MQTT 5 [MQTT-3.1.3-9]). `None`: publish it.
pub(crate) fn will_cancelled(
    router: &Router,
    client_id: &str,
    version_number: u64,
) -> Option<String> {
    let state = router.lock();
    let connected_since = state.clients.contains_key(client_id)
        || state
            .lifecycle_versions
            .get(client_id)
            .is_some_and(|version| *version != version_number);
    connected_since
        .then(|| "the client id connected again within the Will Delay Interval".to_owned())
}

/// An abnormal end publishes the client's last will, if its policy allows the topic.
pub(crate) fn publish_will(
    router: &Router,
    client_id: &str,
    thing_name: Option<&str>,
    will: &mqtt::Will,
) {
    let principal = Principal {
        client_id,
        thing_name,
    };
    if !router.allowed(Action::Publish, &will.topic, &principal) {
        tracing::info!(client = %client_id, topic = %will.topic, "last will not allowed by policy");
        return;
    }
    router.publish(Message {
        publisher: Publisher::Client(client_id.to_owned()),
        topic: will.topic.clone(),
        payload: will.payload.clone(),
        qos: will.qos.min(QoS::AtLeastOnce),
        retain: will.retain,
        properties: will.properties.clone(),
        received_at: Instant::now(),
        packet_id: None,
        dup: false,
        expires_at: will
            .message_expiry_secs
            .map(|secs| Instant::now() + rules::effective_message_expiry(secs)),
    });
}

/// A client id for an MQTT 5 client that sent an empty one: unique for this broker's
/// life, and unlike any the rig's policies name.
pub(crate) fn assign_client_id(router: &Router) -> String {
    format!("assigned-{:016x}", router.new_connection_id())
}

pub(crate) fn refuse(router: &Router, peer: SocketAddr, reason: String) {
    tracing::info!(%peer, %reason, "connection refused");
    router.emit(Event::Refused { peer, reason });
}

pub(crate) fn lifecycle(router: &Router, client_id: &str, topic: Option<String>, document: String) {
    let Some(topic) = topic else {
        tracing::debug!(client = %client_id, "client id cannot be part of a topic: no lifecycle event");
        return;
    };
    router.publish(Message {
        publisher: Publisher::Broker,
        topic,
        payload: Bytes::from(document),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Bytes::new(),
        received_at: Instant::now(),
        packet_id: None,
        dup: false,
        expires_at: None,
    });
}

/// Apply AWS's CONNECT rules: the keep-alive the session will use, or how AWS refuses
/// the client.
pub(crate) fn admit(
    router: &Router,
    connect: &Connect,
    thing_name: Option<&str>,
) -> Result<u16, Refusal> {
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
    } else if id.starts_with(rules::RESERVED_CLIENT_ID_PREFIX) {
        // AWS's quotas: "$ is reserved for AWS IoT generated client IDs". AWS does not
        // say how it refuses one; the mock answers as for any client id it rejects.
        Some((
            reason::CLIENT_ID_INVALID,
            Some(return_code::IDENTIFIER_REJECTED),
            format!(
                "client id {id:?} starts with {:?}, which AWS reserves for the ids it generates",
                rules::RESERVED_CLIENT_ID_PREFIX
            ),
        ))
    } else {
        let now = Instant::now();
        let mut state = router.lock();
        let too_soon = state
            .last_connect
            .get(id)
            .is_some_and(|last| now.duration_since(*last) < router.config.connect_interval);
        state.forget_stale_client_ids(now, router.config.connect_interval);
        state.last_connect.insert(id.clone(), now);
        drop(state);
        if too_soon {
            // AWS throttles: 3.1.1 clients just see the connection close.
            Some((
                reason::CONNECTION_RATE_EXCEEDED,
                None,
                format!(
                    "more than one CONNECT per {:?} for client id {id:?}",
                    router.config.connect_interval
                ),
            ))
        } else {
            let principal = Principal {
                client_id: id,
                thing_name,
            };
            if !router.allowed(Action::Connect, id, &principal) {
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
                    .and_then(|will| will_refusal(router, will, &principal))
            }
        }
    };
    match refusal {
        None => Ok(rules::effective_keep_alive(
            connect.keep_alive_secs,
            router.config.min_keep_alive_secs,
        )),
        Some((v5_reason, v311_code, why)) => Err(Refusal {
            connack: if v5 { Some(v5_reason) } else { v311_code },
            why,
        }),
    }
}

/// AWS applies the publish rules to a will when the client connects, not when the will
/// is sent: topic validity and limits, reserved topics, QoS, payload size, and the
/// policy's iot:Publish on the will topic. A will that fails refuses the CONNECT: (MQTT 5
/// reason, MQTT 3.1.1 return code if any, why).
fn will_refusal(
    router: &Router,
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
    if !router.allowed(Action::Publish, topic, principal) {
        return Some((
            reason::NOT_AUTHORIZED,
            None,
            format!("policy does not allow iot:Publish on the will topic {topic:?}"),
        ));
    }
    None
}

/// How long AWS keeps a session after its connection: for clean-start-off 3.1.1 clients
/// its default expiry, for MQTT 5 clients the interval asked for, capped by the same.
pub(crate) fn session_expiry(connect: &Connect, max: Duration) -> Duration {
    match (connect.version, connect.clean_start) {
        (Version::V311, true) => Duration::ZERO,
        (Version::V311, false) => max,
        (Version::V5, _) => {
            Duration::from_secs(connect.session_expiry_secs.unwrap_or(0).into()).min(max)
        }
    }
}
