//! The device's MQTT input path: whatever the broker sends after CONNACK, through minimq
//! (MQTT 5) over an in-memory transport and the core's `mqtt::Tracker`, to the `inbound:`
//! log line the rig parses.
//!
//! As on the boards, `poll()` is cancelled whenever it would wait (the driver's other
//! deadlines) and resumed when more bytes arrive; the device has subscribed to `inTopic`
//! and has QoS 1 publishes waiting for PUBACK.
//!
//! Input: byte 0 is how many broker bytes arrive per step (0: all at once); the rest is
//! the broker's stream after a fixed CONNACK.
//!
//! Checks: no panic or hang; `PublishAcked` only for a publish the device sent, once; an
//! inbound message's log line parses back to its size and (a prefix of) its payload and
//! topic; after an error the tracker names a disconnect reason unless the connection is
//! still up.
#![no_main]

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use embedded_io_async::{ErrorKind, ErrorType, Read, Write};
use firmware_core::log::{Line, TRUNCATION_MARKER};
use firmware_core::mqtt::{self, Tracker, WriteTimeout};
use firmware_core::session::{Event, Publish, Qos};
use libfuzzer_sys::fuzz_target;

const CONNACK: [u8; 5] = [0x20, 3, 0, 0, 0];

#[derive(Default)]
struct Wire {
    /// Arrived from the broker, not yet read.
    from_broker: VecDeque<u8>,
}

#[derive(Clone, Default)]
struct Link(Rc<RefCell<Wire>>);

impl ErrorType for Link {
    type Error = ErrorKind;
}

impl Read for Link {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        // Nothing arrived: wait (cancel-safe: nothing is taken until it is returned).
        std::future::poll_fn(|_| {
            if self.0.borrow().from_broker.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        let mut wire = self.0.borrow_mut();
        let n = buf.len().min(wire.from_broker.len());
        for (b, x) in buf.iter_mut().zip(wire.from_broker.drain(..n)) {
            *b = x;
        }
        Ok(n)
    }
}

impl Write for Link {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        Ok(buf.len())
    }
    async fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

struct Unbounded;
impl WriteTimeout for Unbounded {
    async fn bound<F: Future>(&self, fut: F) -> Option<F::Output> {
        Some(fut.await)
    }
}

/// Poll once; `None` if it would wait (the future is then dropped: cancelled).
fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// The `inbound:` line as the device prints it, parsed as the rig parses it.
fn check_log_line(topic: &str, payload: &[u8]) {
    let printed = Line::inbound(1234, topic, payload).to_string();
    let line: Line = printed
        .parse()
        .unwrap_or_else(|e| panic!("{printed:?}: {e}"));
    assert_eq!(line.payload_size(), Some(payload.len()), "{printed:?}");
    let logged: Vec<u8> = line
        .payload_bytes()
        .expect("payload")
        .collect::<Result<_, _>>()
        .expect("unescape");
    assert!(
        payload.starts_with(&logged),
        "{printed:?} is not a prefix of the payload"
    );
    assert!(
        line.is_truncated() || logged == payload,
        "{printed:?} lost bytes silently"
    );
    let logged_topic: Vec<u8> = line
        .field_bytes("topic")
        .expect("topic")
        .collect::<Result<_, _>>()
        .expect("unescape");
    let kept = logged_topic
        .strip_suffix(TRUNCATION_MARKER.as_bytes())
        .unwrap_or(&logged_topic);
    assert!(
        topic.as_bytes().starts_with(kept),
        "{printed:?}: topic changed"
    );
}

fn publish(seq: u32) -> Publish<'static> {
    Publish {
        topic: "outTopic",
        payload: b"{\"message\": \"hello world\"}",
        qos: Qos::AtLeastOnce,
        seq,
        packet_id: None,
        dup: false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = if step == 0 {
        usize::MAX
    } else {
        usize::from(step)
    };
    let (mut rx, mut tx) = (vec![0u8; 1024], vec![0u8; 1024]);
    let mut client = mqtt::session("ESPthing", 60, &mut rx, &mut tx).expect("session");
    let link = Link::default();
    link.0.borrow_mut().from_broker.extend(CONNACK);
    let Some(Ok(mut conn)) = poll_once(client.connect(link.clone())) else {
        panic!("CONNACK not taken");
    };
    let mut tracker = Tracker::new();
    tracker.connected();
    let subscribed =
        poll_once(tracker.subscribe(&mut conn, "inTopic".into(), Qos::AtLeastOnce, &Unbounded));
    assert_eq!(subscribed, Some(Ok(None)));
    let mut sent = HashSet::new();
    let mut seq = 0;
    let send = |tracker: &mut Tracker,
                conn: &mut minimq::Connection<'_, '_, Link>,
                seq: &mut u32,
                sent: &mut HashSet<u16>| {
        *seq += 1;
        if let Some(Ok(Some(Event::PublishSent { packet_id: id, .. }))) =
            poll_once(tracker.publish(conn, publish(*seq), &Unbounded))
        {
            sent.insert(id);
        }
    };
    send(&mut tracker, &mut conn, &mut seq, &mut sent);
    send(&mut tracker, &mut conn, &mut seq, &mut sent);

    let mut acked = HashSet::new();
    let mut rest = stream;
    // Bounded: every round either delivers bytes or ends.
    for round in 0..(stream.len() + 2) * 2 {
        let (inbound, error) = match poll_once(conn.poll()) {
            None => {
                if rest.is_empty() {
                    break;
                }
                let n = step.min(rest.len());
                link.0.borrow_mut().from_broker.extend(&rest[..n]);
                rest = &rest[n..];
                continue;
            }
            Some(Ok(Some(msg))) => {
                check_log_line(msg.topic(), msg.payload());
                (true, None)
            }
            Some(Ok(None)) => (false, None),
            Some(Err(e)) => (false, Some(e)),
        };
        let failed = error.is_some();
        let connected = conn.is_connected();
        let mut events = Vec::new();
        let outcome = tracker.polled(inbound, error, connected, conn.session(), &mut |e| {
            events.push(match e {
                Event::PublishAcked(id) => Some(id),
                _ => None,
            })
        });
        for id in events.into_iter().flatten() {
            assert!(
                sent.contains(&id),
                "PUBACK {id} reported for a publish never sent"
            );
            assert!(acked.insert(id), "PUBACK {id} reported twice");
        }
        if failed && !connected {
            assert!(outcome.is_err(), "a lost connection not reported");
        }
        if outcome.is_err() || !connected {
            break;
        }
        if round % 8 == 7 {
            send(&mut tracker, &mut conn, &mut seq, &mut sent);
        }
    }
});
