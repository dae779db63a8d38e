use std::cell::RefCell;
use std::collections::HashMap;

use super::*;
use crate::log::Level;
use crate::session::Publish;

/// Operation handles with a status the test sets, standing in for minimq's session.
#[derive(Default)]
struct Ops(RefCell<HashMap<u16, Status>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Complete,
    Invalidated,
}

impl Ops {
    fn set(&self, op: u16, status: Status) {
        self.0.borrow_mut().insert(op, status);
    }
    fn get(&self, op: u16) -> Status {
        self.0.borrow().get(&op).copied().unwrap_or(Status::Pending)
    }
}

impl OpStatus<u16> for Ops {
    fn is_pending(&self, op: &u16) -> bool {
        self.get(*op) == Status::Pending
    }
    fn is_complete(&self, op: &u16) -> bool {
        self.get(*op) == Status::Complete
    }
    fn is_invalidated(&self, op: &u16) -> bool {
        self.get(*op) == Status::Invalidated
    }
}

type E = minimq::Error<()>;

/// One `poll()` reported to `tracker`: the events fed and the outcome.
fn poll(
    tracker: &mut Tracker<u16>,
    ops: &Ops,
    inbound: bool,
    error: Option<E>,
    connected: bool,
) -> (Vec<Event<'static>>, Result<(), DisconnectReason>) {
    let mut events = Vec::new();
    let outcome = tracker.polled(inbound, error, connected, ops, &mut |e| {
        events.push(match e {
            Event::Subscribed => Event::Subscribed,
            Event::SubscribeFailed(f) => Event::SubscribeFailed(f),
            Event::PublishAcked(id) => Event::PublishAcked(id),
            Event::Received => Event::Received,
            other => panic!("unexpected event {other:?}"),
        })
    });
    (events, outcome)
}

#[test]
fn packet_id_read_from_an_op_debug_text() {
    // minimq 0.13.5's derived `Debug` of `Op` (pinned against a broker by the virtual
    // device's mosquitto test).
    let text = "Op { kind: PublishAtLeastOnce, packet_id: 4711, generation: 3 }";
    assert_eq!(packet_id_in_debug(text), Some(4711));
    assert_eq!(packet_id_in_debug("Op { packet_id: 65535 }"), Some(65535));
    assert_eq!(packet_id_in_debug("packet_id: 9"), Some(9));
    // Another format, or an id out of range: no id rather than a wrong one.
    assert_eq!(packet_id_in_debug("Op { kind: Subscribe, id: 2 }"), None);
    assert_eq!(
        packet_id_in_debug("Op { packet_id: 70000, generation: 0 }"),
        None
    );
    assert_eq!(
        packet_id_in_debug("Op { packet_id: , generation: 0 }"),
        None
    );
}

#[test]
fn qos_maps_to_minimq() {
    assert_eq!(qos(Qos::AtMostOnce), QoS::AtMostOnce);
    assert_eq!(qos(Qos::AtLeastOnce), QoS::AtLeastOnce);
}

#[test]
fn disconnect_reasons() {
    assert_eq!(
        disconnect_reason(&E::Disconnected),
        DisconnectReason::PeerClosed
    );
    assert_eq!(disconnect_reason(&E::Transport(())), DisconnectReason::Tls);
    assert_eq!(disconnect_reason(&E::WriteZero), DisconnectReason::Tls);
    for e in [
        E::NotReady,
        E::InvalidRequest,
        E::Peer(minimq::PeerError::InvalidPacket),
        E::Resource(minimq::ResourceError::BufferTooSmall),
    ] {
        assert_eq!(disconnect_reason(&e), DisconnectReason::Protocol, "{e:?}");
    }
}

#[test]
fn session_takes_the_client_id_or_refuses_it() {
    let (mut rx, mut tx) = ([0u8; 512], [0u8; 512]);
    assert!(session("thing-1", 60, &mut rx, &mut tx).is_ok());
    let (mut rx, mut tx) = ([0u8; 512], [0u8; 512]);
    let long = "x".repeat(1024);
    assert!(matches!(
        session(&long, 60, &mut rx, &mut tx),
        Err(ConfigError::ClientIdTooLong)
    ));
}

#[test]
fn todo_owns_every_action_but_sleep() {
    let line = Line::new(Level::Info, 5, "mqtt").unwrap();
    let Some(Todo::Log(owned)) = Todo::from_action(Action::Log(&line)) else {
        panic!("log not queued");
    };
    assert_eq!(*owned, line);
    let publish = Publish {
        topic: "outTopic",
        payload: b"{}",
        qos: Qos::AtLeastOnce,
        seq: 3,
        packet_id: Some(7),
        dup: true,
    };
    match Todo::from_action(Action::Publish(publish)) {
        Some(Todo::Publish {
            topic,
            payload,
            qos: Qos::AtLeastOnce,
            seq: 3,
            packet_id: Some(7),
            dup: true,
        }) => assert_eq!(
            (topic.as_str(), payload.as_slice()),
            ("outTopic", &b"{}"[..])
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Todo::from_action(Action::Subscribe { topic: "inTopic", qos: Qos::AtMostOnce }),
        Some(Todo::Subscribe { ref topic, qos: Qos::AtMostOnce }) if topic == "inTopic"
    ));
    assert!(Todo::from_action(Action::Sleep(crate::session::Instant::from_millis(1))).is_none());
}

#[test]
fn suback_then_pubacks_are_reported_once_each() {
    let ops = Ops::default();
    let mut tracker = Tracker::new();
    tracker.connected();
    tracker.subscribing(1, "inTopic".into(), Qos::AtLeastOnce);
    assert!(tracker.should_publish(10, false, &ops));
    assert_eq!(
        tracker.published(10, 2, Some(2)),
        Some(Event::PublishSent {
            seq: 10,
            packet_id: 2
        })
    );
    assert!(tracker.should_publish(11, false, &ops));
    assert!(tracker.published(11, 3, Some(3)).is_some());

    // Nothing acked yet: the packet is proof of life.
    assert_eq!(
        poll(&mut tracker, &ops, false, None, true).0,
        [Event::Received]
    );

    ops.set(1, Status::Complete);
    ops.set(3, Status::Complete);
    let (events, outcome) = poll(&mut tracker, &ops, false, None, true);
    assert_eq!(outcome, Ok(()));
    assert_eq!(events, [Event::Subscribed, Event::PublishAcked(3)]);

    ops.set(2, Status::Complete);
    assert_eq!(
        poll(&mut tracker, &ops, false, None, true).0,
        [Event::PublishAcked(2)]
    );
    // Each ack once; an inbound message already reported is not followed by `Received`.
    assert_eq!(poll(&mut tracker, &ops, true, None, true).0, []);
}

#[test]
fn publish_without_a_known_id_is_not_tracked() {
    let ops = Ops::default();
    let mut tracker = Tracker::new();
    assert_eq!(tracker.published(1, 5, None), None);
    ops.set(5, Status::Complete);
    assert_eq!(
        poll(&mut tracker, &ops, false, None, true).0,
        [Event::Received]
    );
}

#[test]
fn retry_of_a_publish_minimq_holds_is_skipped() {
    let ops = Ops::default();
    let mut tracker = Tracker::new();
    assert!(tracker.should_publish(4, false, &ops));
    tracker.published(4, 9, Some(9));
    // minimq replays it on reconnect itself.
    assert!(!tracker.should_publish(4, true, &ops));
    // A first send of another message goes out; so does a retry minimq no longer holds,
    // and the old handle is forgotten.
    assert!(tracker.should_publish(5, false, &ops));
    ops.set(9, Status::Invalidated);
    assert!(tracker.should_publish(4, true, &ops));
    ops.set(9, Status::Complete);
    assert_eq!(
        poll(&mut tracker, &ops, false, None, true).0,
        [Event::Received]
    );
}

#[test]
fn fresh_broker_session_drops_held_publishes_silently() {
    let ops = Ops::default();
    let mut tracker = Tracker::new();
    tracker.published(1, 1, Some(1));
    tracker.published(2, 2, Some(2));
    tracker.lost();
    tracker.connected();
    ops.set(1, Status::Invalidated);
    ops.set(2, Status::Complete);
    assert_eq!(
        poll(&mut tracker, &ops, false, None, true).0,
        [Event::PublishAcked(2)]
    );
    ops.set(1, Status::Complete);
    assert_eq!(
        poll(&mut tracker, &ops, false, None, true).0,
        [Event::Received]
    );
}

#[test]
fn refused_subscription_is_reported_and_the_connection_stays() {
    let ops = Ops::default();
    let mut tracker = Tracker::new();
    tracker.subscribing(1, "inTopic".into(), Qos::AtLeastOnce);
    let rejected = || {
        Some(E::Peer(minimq::PeerError::Rejected(
            minimq::ReasonCode::NotAuthorized,
        )))
    };
    ops.set(1, Status::Complete);
    let (events, outcome) = poll(&mut tracker, &ops, false, rejected(), true);
    assert_eq!(outcome, Ok(()));
    assert_eq!(events, [Event::SubscribeFailed(SubscribeError::Refused)]);
    // A rejected PUBACK (no subscription waiting): acks are looked at as usual.
    assert_eq!(
        poll(&mut tracker, &ops, false, rejected(), true).0,
        [Event::Received]
    );
    // Rejected while the connection went down: lost.
    assert_eq!(
        poll(&mut tracker, &ops, false, rejected(), false).1,
        Err(DisconnectReason::Protocol)
    );
}

#[test]
fn connection_errors_end_it_with_their_reason() {
    let ops = Ops::default();
    let mut tracker = Tracker::new();
    let (events, outcome) = poll(&mut tracker, &ops, false, Some(E::Disconnected), true);
    assert!(events.is_empty());
    assert_eq!(outcome, Err(DisconnectReason::PeerClosed));
}

#[test]
fn probe_only_with_a_subscription_and_none_outstanding() {
    let ops = Ops::default();
    let mut tracker = Tracker::new();
    assert!(tracker.probe_filter().is_none());
    tracker.subscribing(1, "inTopic".into(), Qos::AtLeastOnce);
    assert!(tracker.probe_filter().is_some());
    tracker.probing(2);
    assert!(tracker.probe_filter().is_none());
    // The probe's SUBACK is proof of life, not a new subscription.
    ops.set(2, Status::Complete);
    assert_eq!(
        poll(&mut tracker, &ops, false, None, true).0,
        [Event::Received]
    );
    assert!(tracker.probe_filter().is_some());
    // A new connection forgets the subscription until it is made again.
    tracker.connected();
    assert!(tracker.probe_filter().is_none());
}
