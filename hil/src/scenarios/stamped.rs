//! Broker events with the host time they happened, for scenarios that measure gaps
//! between broker events (a disconnect and the next connect) while they also read the
//! device's log, and the device's lines from a given moment on. An [`Observer`] hands out events when asked, so the time an event is
//! read is not the time it happened; a task that reads them as they come is.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firmware_core::log::Line;
use mock_broker::{Event, Observer, PublishObservation, Publisher};
use tokio::sync::Notify;

use super::ScenarioRun;
use crate::error::ScenarioError;
use crate::rig::OUT_TOPIC;
use crate::serial::SerialLine;

/// A freshly started device's first publish: boot, SNTP, handshake, subscribe, a period.
pub const FIRST_PUBLISH: Duration = Duration::from_secs(15);

/// Records every broker event with the host's monotonic time it arrived.
pub struct StampedEvents {
    events: Arc<Mutex<Vec<(Instant, Event)>>>,
    arrived: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl StampedEvents {
    /// Start recording from `observer` (opened before the device started, so nothing is
    /// missed).
    pub fn record(mut observer: Observer) -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let (keep, notify) = (Arc::clone(&events), Arc::clone(&arrived));
        let task = tokio::spawn(async move {
            // Lag (a backlog of 16 Ki events) is skipped: a gap in the record, not an end.
            while let Some(next) = observer.next().await {
                if let Ok(event) = next {
                    keep.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((Instant::now(), event));
                    notify.notify_waiters();
                }
            }
        });
        Self {
            events,
            arrived,
            task,
        }
    }

    /// The events recorded at or after `from`, in order.
    pub fn since(&self, from: Instant) -> Vec<(Instant, Event)> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(at, _)| *at >= from)
            .cloned()
            .collect()
    }

    /// The first event at or after `from` that `pick` accepts, with its time, waiting up
    /// to `timeout` for it.
    pub async fn wait_for<T>(
        &self,
        from: Instant,
        timeout: Duration,
        pick: impl Fn(&Event) -> Option<T>,
    ) -> Option<(Instant, T)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before looking, so an event that arrives in between wakes us.
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let found = self
                .events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|(at, _)| *at >= from)
                .find_map(|(at, event)| pick(event).map(|found| (*at, found)));
            if found.is_some() {
                return found;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return None;
            }
        }
    }
}

impl Drop for StampedEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The first serial line read at or after `from` that `pick` accepts (earlier lines are
/// skipped), within `timeout`; on timeout, a failure naming `what` with the last lines.
pub async fn line_after(
    run: &mut ScenarioRun,
    from: Instant,
    what: &str,
    timeout: Duration,
    pick: impl Fn(&Line) -> bool,
) -> Result<SerialLine, ScenarioError> {
    run.expect_serial(what, timeout, |l| {
        l.at >= from && l.line().is_some_and(&pick)
    })
    .await
}

/// Wait up to [`FIRST_PUBLISH`] for `client_id`'s first publish on [`OUT_TOPIC`]; on
/// timeout, a failure saying so with the last serial lines.
pub async fn first_publish(
    run: &mut ScenarioRun,
    events: &StampedEvents,
    client_id: &str,
) -> Result<(), ScenarioError> {
    if events
        .wait_for(Instant::now(), FIRST_PUBLISH, |e| {
            published(e, client_id).map(|_| ())
        })
        .await
        .is_none()
    {
        return Err(run.failure(&format!(
            "expected a publish on {OUT_TOPIC} within {FIRST_PUBLISH:?}, saw none"
        )));
    }
    Ok(())
}

/// `event` is `client_id` publishing on [`OUT_TOPIC`]: the publish.
pub fn published<'a>(event: &'a Event, client_id: &str) -> Option<&'a PublishObservation> {
    match event {
        Event::Publish(p)
            if matches!(&p.publisher, Publisher::Client(id) if id == client_id)
                && p.topic == OUT_TOPIC =>
        {
            Some(p)
        }
        _ => None,
    }
}

/// `event` is `client_id` connecting.
pub fn connected(event: &Event, client_id: &str) -> bool {
    matches!(event, Event::Connected { client_id: id, .. } if id == client_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_matches_only_that_client() {
        let event = Event::Connected {
            client_id: "a".into(),
            thing_name: None,
            version: mock_broker::mqtt::Version::V5,
            peer: ([127, 0, 0, 1], 1).into(),
            session_present: false,
        };
        assert!(connected(&event, "a"));
        assert!(!connected(&event, "b"));
    }
}
