//! `sntp-silent`: the device's SNTP server does not answer at first. The core's defined
//! behaviour (firmware_core::session, phase `Time`): nothing connects before the clock is
//! synced (TLS needs the date to check certificates), so the device logs
//! `time: sync failed error=timeout`, backs off (`time: backoff`), asks again, and once
//! the server answers it syncs, connects and publishes.
//!
//! The scenario runs its own SNTP server on `127.0.0.1:0` and points the device's image
//! at it, so the broker's SNTP server (shared by the other devices) is left alone and the
//! scenario runs alongside the others. Replies are built by the mock broker's SNTP code
//! (`mock_broker::sntp::reply`, the device's own codec). With a `--flash` image, whose
//! NTP address cannot be changed, the broker's server is silenced instead (scenarios then
//! run one at a time anyway).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mock_broker::{Handle, SntpBehaviour};
use tokio::net::UdpSocket;

use super::stamped::{StampedEvents, connected, line_after, published};
use super::{CheckFuture, CheckResult, Scenario, ScenarioRun, is};
use crate::error::{RigError, ScenarioError};
use crate::serial::SerialLine;

/// Failed syncs to see before the server answers: one could be a lost datagram, two is
/// the retry policy at work.
pub const FAILED_SYNCS: usize = 2;
/// One sync: 3 requests, 2 s each (the virtual device's SNTP client), plus the boot or a
/// backoff (at most 2 s) before it, plus latency.
pub const SYNC_FAILS_WITHIN: Duration = Duration::from_secs(12);
/// Server answering to `time: synced`: the rest of the current sync's requests or the
/// next backoff (at most 4 s after two failures), plus a request.
pub const SYNCED_WITHIN: Duration = Duration::from_secs(12);
/// `time: synced` to the first publish at the broker: connect, subscribe, one period.
pub const PUBLISHING_WITHIN: Duration = Duration::from_secs(10);
/// The synced time against the host's clock.
pub const CLOCK_TOLERANCE_S: u64 = 5;

pub const SCENARIO: Scenario = Scenario {
    name: "sntp-silent",
    summary: "SNTP silent at first: sync failures logged and retried, no connect unsynced, recovers",
    tolerance: "2 `time: sync failed` within 12 s each, no `mqtt:` line and no session before `time: synced`; synced within 12 s of SNTP answering, epoch within 5 s of the host; publishing within 10 s of sync",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &["time: sync failed"],
    limit: None,
    check,
};

fn check(run: &mut ScenarioRun) -> CheckFuture<'_> {
    Box::pin(sntp_silent(run))
}

/// An SNTP server on `127.0.0.1:0` that answers as `before` until told to answer
/// correctly; counts what it got.
pub(super) struct SntpServer {
    pub(super) addr: SocketAddr,
    answering: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SntpServer {
    async fn silent() -> Result<Self, RigError> {
        Self::answering_as(SntpBehaviour::Silent).await
    }

    /// Answers as `before` (silent, a wrong time, a kiss) until [`SntpServer::answer`].
    pub(super) async fn answering_as(before: SntpBehaviour) -> Result<Self, RigError> {
        let socket = UdpSocket::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| RigError::io("SNTP server on 127.0.0.1:0", e))?;
        let addr = socket
            .local_addr()
            .map_err(|e| RigError::io("SNTP server address", e))?;
        let answering = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let (answer, count) = (Arc::clone(&answering), Arc::clone(&requests));
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                    // ICMP errors from an earlier reply surface here; keep serving.
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let behaviour = if answer.load(Ordering::SeqCst) {
                    SntpBehaviour::Correct
                } else {
                    before
                };
                if let Some(reply) =
                    mock_broker::sntp::reply(&buf[..len], SystemTime::now(), behaviour)
                {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        Ok(Self {
            addr,
            answering,
            requests,
            task,
        })
    }
}

impl SntpServer {
    /// From now on, the host's time.
    pub(super) fn answer(&self) {
        self.answering.store(true, Ordering::SeqCst);
    }

    /// Requests received so far.
    pub(super) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for SntpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whose SNTP server the scenario silences.
enum Server<'a> {
    Own(SntpServer),
    /// The broker's, for a `--flash` image.
    Broker(&'a Handle),
}

impl Server<'_> {
    fn answer(&self) {
        match self {
            Self::Own(server) => server.answering.store(true, Ordering::SeqCst),
            Self::Broker(broker) => broker.set_sntp(SntpBehaviour::Correct),
        }
    }

    fn requests(&self) -> Option<usize> {
        match self {
            Self::Own(server) => Some(server.requests.load(Ordering::SeqCst)),
            Self::Broker(_) => None,
        }
    }
}

async fn sntp_silent(run: &mut ScenarioRun) -> CheckResult {
    let rig = Arc::clone(&run.rig);
    let server = if rig.given_image().is_some() {
        let broker = rig.broker()?;
        broker.set_sntp(SntpBehaviour::Silent);
        Server::Broker(broker)
    } else {
        Server::Own(SntpServer::silent().await?)
    };
    let result = silent_then_answering(run, &server).await;
    // The broker's server goes back to answering whatever happened.
    server.answer();
    result
}

async fn silent_then_answering(run: &mut ScenarioRun, server: &Server<'_>) -> CheckResult {
    let own = match server {
        Server::Own(own) => Some(own.addr),
        Server::Broker(_) => None,
    };
    let started = Instant::now();
    let observer = run.start_device(|config| {
        // The rig's config already names 127.0.0.1; only the port changes.
        if let Some(addr) = own {
            config.ntp.port = addr.port();
        }
    })?;
    let events = StampedEvents::record(observer);
    let client = run.client_id.clone();

    for attempt in 1..=FAILED_SYNCS {
        let line = line_after(
            run,
            started,
            &format!("`time: sync failed` (sync {attempt}) while SNTP is silent"),
            SYNC_FAILS_WITHIN,
            |l| is(l, "time", "sync failed") || is(l, "time", "synced"),
        )
        .await?;
        let line = line.line().expect("picked a parsed line");
        if is(line, "time", "synced") {
            return Err(
                run.failure("expected no `time: synced` while the SNTP server is silent, saw one")
            );
        }
        if line.field("error") != Some("timeout") {
            return Err(run.failure(&format!(
                "expected `time: sync failed error=timeout`, saw error={}",
                line.field("error").unwrap_or("(none)")
            )));
        }
    }
    let requests_unanswered = server.requests();
    let silent_for = started.elapsed();
    server.answer();
    let answered = Instant::now();

    let synced = synced_near_host_time(run, answered, SYNCED_WITHIN).await?;

    // Before the sync: retries, and nothing towards the broker.
    let log = run.log();
    let before: Vec<_> = log
        .iter()
        .take_while(|l| !l.line().is_some_and(|l| is(l, "time", "synced")))
        .filter_map(|l| l.line())
        .collect();
    if let Some(early) = before.iter().find(|l| l.tag() == "mqtt") {
        return Err(run.failure(&format!(
            "expected no MQTT activity before the clock was synced, saw `{early}`"
        )));
    }
    if !before.iter().any(|l| is(l, "time", "backoff")) {
        return Err(run.failure("expected a `time: backoff` between failed syncs, saw none"));
    }
    // Up to the moment the server answered (the device's own order, sync before MQTT, is
    // checked on its log above; host times of serial lines and broker events are not
    // comparable to the millisecond).
    let early_session = events
        .since(started)
        .into_iter()
        .find(|(at, e)| *at < answered && connected(e, &client));
    if early_session.is_some() {
        return Err(run.failure(
            "expected no session at the broker while SNTP was silent, saw the device connect",
        ));
    }

    let published_at = publishing_after(run, &events, synced.at).await?;
    let requests = requests_unanswered
        .map(|n| format!(", {n} requests unanswered"))
        .unwrap_or_default();
    Ok(format!(
        "{FAILED_SYNCS} syncs failed in {:.1} s{requests}; synced {:.1} s after SNTP answered, publishing {:.1} s later",
        silent_for.as_secs_f64(),
        synced.at.duration_since(answered).as_secs_f64(),
        published_at.duration_since(synced.at).as_secs_f64()
    ))
}

/// The `time: synced` line that comes within `within` of `since`, its epoch within
/// [`CLOCK_TOLERANCE_S`] of the host's clock.
pub(super) async fn synced_near_host_time(
    run: &mut ScenarioRun,
    since: Instant,
    within: Duration,
) -> Result<SerialLine, ScenarioError> {
    let synced = line_after(
        run,
        since,
        "`time: synced` once SNTP answers correctly",
        within,
        |l| is(l, "time", "synced"),
    )
    .await?;
    let epoch: Option<u64> = synced.line().and_then(|l| l.field_as("epoch"));
    let host = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    if epoch.is_none_or(|e| e.abs_diff(host) > CLOCK_TOLERANCE_S) {
        return Err(run.failure(&format!(
            "expected `time: synced epoch=` within {CLOCK_TOLERANCE_S} s of the host's {host}, saw {epoch:?}"
        )));
    }
    Ok(synced)
}

/// When the broker saw the device's first publish within [`PUBLISHING_WITHIN`] of
/// `synced_at`.
pub(super) async fn publishing_after(
    run: &mut ScenarioRun,
    events: &StampedEvents,
    synced_at: Instant,
) -> Result<Instant, ScenarioError> {
    let client = run.client_id.clone();
    let published = events
        .wait_for(synced_at, PUBLISHING_WITHIN, |e| {
            published(e, &client).map(|_| ())
        })
        .await;
    match published {
        Some((at, ())) => Ok(at),
        None => Err(run.failure(&format!(
            "expected a publish within {PUBLISHING_WITHIN:?} of `time: synced`, saw none"
        ))),
    }
}
