//! Routing: the client table, retained messages and stored sessions, and `publish`,
//! which observes a message and hands it to every subscriber the policy lets receive it.
//! Connections, controls and the broker's lifecycle events all route through
//! `Router::publish`; nothing here waits on a socket.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::backlog::{Delivery, Offer, Outbox, QueueLimits};
use crate::config::Config;
use crate::faults::{FaultTable, Faults};
use crate::mqtt::{QoS, SubscriptionOptions, Version};
use crate::observe::{Event, PublishObservation, Publisher};
use crate::policy::{Action, Principal};
use crate::rules;

/// Retained messages kept (a mock's limit: AWS's are per account and far larger).
pub const MAX_RETAINED_MESSAGES: usize = 10_000;
/// Bytes of retained messages kept.
pub const MAX_RETAINED_BYTES: usize = 64 * 1024 * 1024;
/// Client ids remembered for the CONNECT rate and lifecycle version numbers before
/// those no longer connected are forgotten.
const MAX_REMEMBERED_CLIENT_IDS: usize = 10_000;

/// A connected client, as listed by [`crate::Controls::clients`].
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
    /// When the publisher's Message Expiry Interval runs out.
    pub expires_at: Option<Instant>,
}

impl Message {
    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Roughly the bytes it takes to keep.
    fn cost(&self) -> usize {
        self.topic.len() + self.payload.len() + self.properties.len() + 64
    }
}

pub(crate) struct ClientEntry {
    pub connection: u64,
    pub outbox: Arc<Outbox>,
    pub info: ClientInfo,
    /// MQTT 5 options of each subscription in `info.subscriptions`, by filter.
    pub options: HashMap<String, SubscriptionOptions>,
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
    /// Per shared subscription (`$share/group/filter`), whose turn is next.
    pub shared_turns: HashMap<String, usize>,
    /// Per shared subscription, the QoS 1 messages queued while none of its members was
    /// online and at least one was an offline persistent session.
    pub shared_queues: HashMap<String, VecDeque<SharedQueued>>,
}

/// A message a shared subscription group holds for whichever member comes online next.
pub(crate) struct SharedQueued {
    /// RETAIN as published: each member's Retain As Published decides on delivery.
    pub delivery: Delivery,
    /// Dropped after this: AWS keeps queued messages for the persistent session expiry
    /// period unless the message's own expiry (`delivery.expires_at`) says otherwise.
    pub drop_after: Instant,
}

/// A persistent session between connections: its subscriptions and the QoS 1 messages
/// that arrived for it meanwhile.
pub(crate) struct StoredSession {
    /// The MQTT version it was made with: AWS does not resume it in the other one.
    pub version: Version,
    pub subscriptions: Vec<(String, QoS)>,
    pub options: HashMap<String, SubscriptionOptions>,
    pub thing_name: Option<String>,
    pub queued: VecDeque<Delivery>,
    /// The queued deliveries' cost, bounded like a connected client's.
    pub bytes: usize,
    pub expires_at: Instant,
}

impl StoredSession {
    /// Keep `delivery` for later, dropping the oldest beyond `limits`.
    pub fn keep(&mut self, delivery: Delivery, limits: QueueLimits) {
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
        // A shared group's queue outlives its members by the session expiry at most.
        self.shared_queues.retain(|_, queue| {
            queue.retain(|q| q.drop_after > now);
            !queue.is_empty()
        });
    }
}

/// Everything connections and controls share: the configuration, the observers, the
/// client table and the faults.
pub(crate) struct Router {
    pub config: Config,
    pub events: broadcast::Sender<Event>,
    pub state: Mutex<State>,
    pub faults: Mutex<FaultTable>,
    pub next_connection: AtomicU64,
    /// QoS 0 deliveries dropped because their client was full.
    pub dropped_qos0: AtomicU64,
}

impl Router {
    pub fn new(config: Config, events: broadcast::Sender<Event>) -> Self {
        Self {
            config,
            events,
            state: Mutex::new(State::default()),
            faults: Mutex::new(FaultTable::default()),
            next_connection: AtomicU64::new(1),
            dropped_qos0: AtomicU64::new(0),
        }
    }

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
        let decision = self.config.policy_for(principal.thing_name).check(
            &self.config.scope,
            action,
            name,
            principal,
        );
        tracing::trace!(%action, name, client = principal.client_id, %decision, "policy");
        decision.is_allowed()
    }

    /// The retained message a new subscription to `filter` at `qos` receives, if the
    /// policy lets `principal` receive it. AWS ("MQTT retained messages"): "To receive a
    /// retained message upon subscription, the topic filter in the subscription request
    /// must match the retained message topic exactly", so a filter with wildcards gets
    /// none.
    pub fn retained_for(
        &self,
        filter: &str,
        qos: QoS,
        principal: &Principal<'_>,
    ) -> Option<Delivery> {
        let mut state = self.lock();
        let message = state.retained.get(filter)?;
        if message.expired(Instant::now()) {
            state.retained.remove(filter);
            return None;
        }
        if !self.allowed(Action::Receive, &message.topic, principal) {
            return None;
        }
        Some(Delivery {
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            qos: message.qos.min(qos),
            properties: message.properties.clone(),
            retained: true,
            redelivery: None,
            expires_at: message.expires_at,
        })
    }

    /// Offer `message` to `client` at `granted` QoS; whether it was queued.
    fn offer(
        &self,
        client: &ClientEntry,
        message: &Message,
        granted: QoS,
        retain_as_published: bool,
    ) -> bool {
        // AWS: "Retained messages that are received by a subscribing client after
        // subscription, don't [have the RETAIN flag set]", unless MQTT 5's Retain As
        // Published asks for it.
        let delivery = Delivery {
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            qos: message.qos.min(granted),
            properties: message.properties.clone(),
            retained: message.retain && retain_as_published,
            redelivery: None,
            expires_at: message.expires_at,
        };
        match client.outbox.offer(delivery) {
            Offer::Queued => true,
            Offer::DroppedQos0 => {
                self.dropped_qos0.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(client = %client.info.client_id, topic = %message.topic, "backlog half full: QoS 0 delivery dropped");
                false
            }
            Offer::DroppedQos1 => {
                tracing::info!(client = %client.info.client_id, topic = %message.topic, "backlog full: QoS 1 delivery dropped");
                false
            }
        }
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
        let publisher = match &message.publisher {
            Publisher::Client(id) => Some(id.as_str()),
            _ => None,
        };
        // Shared subscriptions by their whole filter: the members the message may go to.
        let mut groups: BTreeMap<String, Vec<(String, QoS, bool)>> = BTreeMap::new();
        for client in state.clients.values() {
            let own = publisher == Some(client.info.client_id.as_str());
            let principal = Principal {
                client_id: &client.info.client_id,
                thing_name: client.info.thing_name.as_deref(),
            };
            let mut granted = None;
            let mut retain_as_published = false;
            for (filter, qos) in &client.info.subscriptions {
                let options = client.options.get(filter).copied().unwrap_or_default();
                if let Some((_, inner)) = rules::shared_filter(filter) {
                    if rules::filter_matches(inner, &message.topic)
                        && self.allowed(Action::Receive, &message.topic, &principal)
                    {
                        groups.entry(filter.clone()).or_default().push((
                            client.info.client_id.clone(),
                            *qos,
                            options.retain_as_published,
                        ));
                    }
                    continue;
                }
                if !rules::filter_matches(filter, &message.topic) {
                    continue;
                }
                if own && options.no_local {
                    continue;
                }
                granted = granted.max(Some(*qos));
                retain_as_published |= options.retain_as_published;
            }
            let Some(granted) = granted else { continue };
            if !self.allowed(Action::Receive, &message.topic, &principal) {
                tracing::debug!(client = %client.info.client_id, topic = %message.topic, "receive not allowed by policy: not delivered");
                continue;
            }
            delivered += usize::from(self.offer(client, &message, granted, retain_as_published));
        }
        // Each shared subscription's group gets the message once, its members in turn
        // (AWS: "distributes messages ... in a balanced manner"; the mock's balance is a
        // round robin by client id, so tests can predict it).
        let state = &mut *state;
        let online_groups: Vec<String> = groups.keys().cloned().collect();
        for (filter, mut members) in groups {
            members.sort();
            let turn = state.shared_turns.entry(filter).or_insert(0);
            let (client_id, qos, retain_as_published) = &members[*turn % members.len()];
            *turn = turn.wrapping_add(1);
            if let Some(client) = state.clients.get(client_id) {
                delivered += usize::from(self.offer(client, &message, *qos, *retain_as_published));
            }
        }
        // Persistent sessions without a connection keep QoS 1 messages for later, with
        // the RETAIN flag their subscription's Retain As Published asks for. A shared
        // subscription none of whose members is online queues them for the group (AWS,
        // "Shared subscriptions message queuing").
        if message.qos == QoS::AtLeastOnce {
            let now = Instant::now();
            state
                .stored_sessions
                .retain(|_, stored| stored.expires_at > now);
            let mut offline_groups: Vec<String> = Vec::new();
            for (client_id, stored) in state.stored_sessions.iter_mut() {
                let principal = Principal {
                    client_id,
                    thing_name: stored.thing_name.as_deref(),
                };
                let mut subscribed = false;
                let mut retain_as_published = false;
                for (filter, qos) in &stored.subscriptions {
                    if *qos != QoS::AtLeastOnce {
                        continue;
                    }
                    if let Some((_, inner)) = rules::shared_filter(filter) {
                        if !online_groups.contains(filter)
                            && !offline_groups.contains(filter)
                            && rules::filter_matches(inner, &message.topic)
                            && self.allowed(Action::Receive, &message.topic, &principal)
                        {
                            offline_groups.push(filter.clone());
                        }
                        continue;
                    }
                    if rules::filter_matches(filter, &message.topic) {
                        subscribed = true;
                        retain_as_published |= stored
                            .options
                            .get(filter)
                            .is_some_and(|o| o.retain_as_published);
                    }
                }
                if !subscribed || !self.allowed(Action::Receive, &message.topic, &principal) {
                    continue;
                }
                stored.keep(
                    Delivery {
                        topic: message.topic.clone(),
                        payload: message.payload.clone(),
                        qos: QoS::AtLeastOnce,
                        properties: message.properties.clone(),
                        retained: message.retain && retain_as_published,
                        redelivery: None,
                        expires_at: message.expires_at,
                    },
                    self.config.queue_limits,
                );
            }
            for filter in offline_groups {
                let queue = state.shared_queues.entry(filter.clone()).or_default();
                queue.retain(|q| {
                    q.drop_after > now && q.delivery.expires_at.is_none_or(|at| at > now)
                });
                // AWS: past the limit "New incoming messages ... are dropped. The system
                // does not replace older queued messages with newer ones." The mock's limit
                // is a client's backlog limit, in messages and bytes.
                let limits = self.config.queue_limits;
                let held: usize = queue.iter().map(|q| q.delivery.cost()).sum();
                let cost = message.cost();
                if queue.len() >= limits.max_messages || held + cost > limits.max_bytes {
                    tracing::info!(%filter, topic = %message.topic, "shared subscription queue full: message dropped");
                    continue;
                }
                queue.push_back(SharedQueued {
                    delivery: Delivery {
                        topic: message.topic.clone(),
                        payload: message.payload.clone(),
                        qos: QoS::AtLeastOnce,
                        properties: message.properties.clone(),
                        retained: message.retain,
                        redelivery: None,
                        expires_at: message.expires_at,
                    },
                    drop_after: now + self.config.max_session_expiry,
                });
                delivered += 1;
            }
        }
        delivered
    }

    /// What the shared subscription `filter` queued while no member was online, for a
    /// member that comes online (a persistent session resuming, or a new subscriber):
    /// AWS, "Queued messages are delivered when either existing members resume their
    /// persistent sessions, or new members join the group". Messages the member's policy
    /// does not let it receive stay queued.
    pub fn take_shared_queued(
        &self,
        filter: &str,
        granted: QoS,
        options: SubscriptionOptions,
        principal: &Principal<'_>,
    ) -> Vec<Delivery> {
        let now = Instant::now();
        let mut state = self.lock();
        let Some(queue) = state.shared_queues.get_mut(filter) else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        let mut kept = VecDeque::new();
        for queued in queue.drain(..) {
            if queued.drop_after <= now {
                continue;
            }
            if self.allowed(Action::Receive, &queued.delivery.topic, principal) {
                taken.push(Delivery {
                    qos: queued.delivery.qos.min(granted),
                    retained: queued.delivery.retained && options.retain_as_published,
                    ..queued.delivery
                });
            } else {
                kept.push_back(queued);
            }
        }
        if kept.is_empty() {
            state.shared_queues.remove(filter);
        } else {
            state.shared_queues.insert(filter.to_owned(), kept);
        }
        taken
    }
}
