// minimq's timeouts need embassy-time's driver on the host.
use host_time as _;
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
            Event::PublishRefused { packet_id, code } => Event::PublishRefused { packet_id, code },
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
    let Some(OwnedAction::Log(owned)) = OwnedAction::from_action(Action::Log(&line)) else {
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
    let owned = OwnedAction::from_action(Action::Publish(publish)).unwrap();
    assert_eq!(owned.as_publish(), Some(publish));
    assert!(OwnedAction::Ping.as_publish().is_none());
    match OwnedAction::from_action(Action::Publish(publish)) {
        Some(OwnedAction::Publish {
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
        OwnedAction::from_action(Action::Subscribe { topic: "inTopic", qos: Qos::AtMostOnce }),
        Some(OwnedAction::Subscribe { ref topic, qos: Qos::AtMostOnce }) if topic == "inTopic"
    ));
    assert!(
        OwnedAction::from_action(Action::Sleep(crate::session::Instant::from_millis(1))).is_none()
    );
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
    // A new connection keeps the filter: a resumed session still holds it.
    tracker.connected();
    assert!(tracker.probe_filter().is_some());
}

/// A live minimq connection over an in-memory transport: what the device writes is kept,
/// what the broker says is queued by the test.
mod on_a_connection {
    use std::collections::VecDeque;
    use std::future::Future;
    use std::rc::Rc;

    use embedded_io_async::{ErrorKind, ErrorType, Read, Write};
    use minimq::{ConnectEvent, Connection};

    use super::*;

    #[derive(Default)]
    struct Wire {
        from_broker: VecDeque<u8>,
        from_device: Vec<u8>,
    }

    #[derive(Clone, Default)]
    struct Link(Rc<RefCell<Wire>>);

    impl Link {
        fn say(&self, bytes: &[u8]) {
            self.0.borrow_mut().from_broker.extend(bytes);
        }
        /// The packet types the device wrote since the last call.
        fn written(&self) -> Vec<u8> {
            let bytes = std::mem::take(&mut self.0.borrow_mut().from_device);
            let mut types = Vec::new();
            let mut rest = &bytes[..];
            // Fixed header: type, then a one-byte remaining length (small packets only).
            while let [kind, len, tail @ ..] = rest {
                types.push(kind >> 4);
                rest = &tail[usize::from(*len)..];
            }
            types
        }
    }

    impl ErrorType for Link {
        type Error = ErrorKind;
    }

    impl Read for Link {
        async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
            let mut wire = self.0.borrow_mut();
            let n = buf.len().min(wire.from_broker.len());
            assert!(
                n > 0,
                "the test polls only when the broker has said something"
            );
            for (b, x) in buf.iter_mut().zip(wire.from_broker.drain(..n)) {
                *b = x;
            }
            Ok(n)
        }
    }

    impl Write for Link {
        async fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
            self.0.borrow_mut().from_device.extend_from_slice(buf);
            Ok(buf.len())
        }
        async fn flush(&mut self) -> Result<(), ErrorKind> {
            Ok(())
        }
    }

    /// Every write finishes.
    struct Unbounded;
    impl WriteTimeout for Unbounded {
        async fn bound<F: Future>(&self, fut: F) -> Option<F::Output> {
            Some(fut.await)
        }
    }

    /// Every write is past the bound (a broker that stopped reading).
    struct Stalled;
    impl WriteTimeout for Stalled {
        async fn bound<F: Future>(&self, _fut: F) -> Option<F::Output> {
            None
        }
    }

    const SUBSCRIBE: u8 = 8;
    const PUBLISH: u8 = 3;
    const CONNACK: [u8; 5] = [0x20, 3, 0, 0, 0];

    fn suback(id: u16, reason: u8) -> [u8; 6] {
        let [hi, lo] = id.to_be_bytes();
        [0x90, 4, hi, lo, 0, reason]
    }

    fn puback(id: u16) -> [u8; 4] {
        let [hi, lo] = id.to_be_bytes();
        [0x40, 2, hi, lo]
    }

    fn publish(seq: u32, dup: bool) -> Publish<'static> {
        Publish {
            topic: "outTopic",
            payload: b"{\"message\": \"hello world\"}",
            qos: Qos::AtLeastOnce,
            seq,
            packet_id: Some(1000 + seq as u16),
            dup,
        }
    }

    /// One `poll()` and what the tracker reports for it.
    async fn poll_once(
        tracker: &mut Tracker,
        conn: &mut Connection<'_, '_, Link>,
    ) -> (Vec<Event<'static>>, Result<(), DisconnectReason>) {
        let (inbound, error) = match conn.poll().await {
            Ok(msg) => (msg.is_some(), None),
            Err(e) => (false, Some(e)),
        };
        let mut events = Vec::new();
        let connected = conn.is_connected();
        let outcome = tracker.polled(inbound, error, connected, conn.session(), &mut |e| {
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

    #[tokio::test(flavor = "current_thread")]
    async fn subscribe_publish_and_their_acks_over_a_real_minimq_session() {
        let (mut rx, mut tx) = (vec![0u8; 1024], vec![0u8; 1024]);
        let mut client = session("thing-1", 60, &mut rx, &mut tx).unwrap();
        let link = Link::default();
        link.say(&CONNACK);
        let mut conn = client.connect(link.clone()).await.unwrap();
        assert_eq!(conn.connect_event(), ConnectEvent::Connected);
        let _connect = link.written();
        let mut tracker = Tracker::new();
        tracker.connected();

        let subscribed = tracker
            .subscribe(&mut conn, "inTopic".into(), Qos::AtLeastOnce, &Unbounded)
            .await;
        assert_eq!(subscribed, Ok(None));
        assert_eq!(link.written(), [SUBSCRIBE]);

        // minimq numbers its packets itself; the id read from its `Op` is reported.
        let sent = tracker
            .publish(&mut conn, publish(1, false), &Unbounded)
            .await;
        assert_eq!(
            sent,
            Ok(Some(Event::PublishSent {
                seq: 1,
                packet_id: 2
            }))
        );
        assert_eq!(link.written(), [PUBLISH]);

        // A retry of a publish minimq holds is not written again.
        let retry = tracker
            .publish(&mut conn, publish(1, true), &Unbounded)
            .await;
        assert_eq!(retry, Ok(None));
        assert!(link.written().is_empty());

        link.say(&suback(1, 1));
        assert_eq!(
            poll_once(&mut tracker, &mut conn).await,
            (vec![Event::Subscribed], Ok(()))
        );
        link.say(&puback(2));
        assert_eq!(
            poll_once(&mut tracker, &mut conn).await,
            (vec![Event::PublishAcked(2)], Ok(()))
        );

        // A keep-alive probe goes out once; its SUBACK is proof of life only.
        assert_eq!(tracker.probe(&mut conn, &Unbounded).await, Ok(None));
        assert_eq!(link.written(), [SUBSCRIBE]);
        assert_eq!(tracker.probe(&mut conn, &Unbounded).await, Ok(None));
        assert!(link.written().is_empty());
        link.say(&suback(3, 1));
        assert_eq!(
            poll_once(&mut tracker, &mut conn).await,
            (vec![Event::Received], Ok(()))
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn refused_subscription_and_stalled_writes() {
        let (mut rx, mut tx) = (vec![0u8; 1024], vec![0u8; 1024]);
        let mut client = session("thing-1", 60, &mut rx, &mut tx).unwrap();
        let link = Link::default();
        link.say(&CONNACK);
        let mut conn = client.connect(link.clone()).await.unwrap();
        let mut tracker = Tracker::new();

        let subscribed = tracker
            .subscribe(&mut conn, "inTopic".into(), Qos::AtLeastOnce, &Unbounded)
            .await;
        assert_eq!(subscribed, Ok(None));
        // SUBACK with "not authorized": reported, and the connection stays up.
        link.say(&suback(1, 0x87));
        assert_eq!(
            poll_once(&mut tracker, &mut conn).await,
            (
                vec![Event::SubscribeFailed(SubscribeError::Refused)],
                Ok(())
            )
        );
        assert!(conn.is_connected());

        // A write that does not finish in time: the connection is lost as `io-error`.
        let stalled = tracker
            .publish(&mut conn, publish(1, false), &Stalled)
            .await;
        assert_eq!(stalled, Err(DisconnectReason::Io));
        let stalled = tracker
            .subscribe(&mut conn, "inTopic".into(), Qos::AtLeastOnce, &Stalled)
            .await;
        assert_eq!(stalled, Err(DisconnectReason::Io));
    }
}

#[test]
fn a_puback_with_a_failure_code_is_reported_as_refused_not_acked() {
    let ops = Ops::default();
    let mut tracker = Tracker::<u16>::new();
    tracker.connected();
    assert!(tracker.should_publish(1, false, &ops));
    tracker.published(1, 10, Some(7));
    assert!(tracker.should_publish(2, false, &ops));
    tracker.published(2, 11, Some(8));
    // minimq completed op 10 and reported PUBACK reason 0x80.
    ops.set(10, Status::Complete);
    let rejected = E::Peer(minimq::PeerError::Rejected(minimq::ReasonCode::from(0x80)));
    let (events, outcome) = poll(&mut tracker, &ops, false, Some(rejected), true);
    assert_eq!(outcome, Ok(()));
    assert_eq!(
        events,
        [Event::PublishRefused {
            packet_id: 7,
            code: 0x80
        }]
    );
    // The next successful PUBACK is an ack, and the refused one is not reported again.
    ops.set(11, Status::Complete);
    let (events, _) = poll(&mut tracker, &ops, false, None, true);
    assert_eq!(events, [Event::PublishAcked(8)]);
}
