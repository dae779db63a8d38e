//! `boot`: the boot sequence, in order, within a deadline.

use std::time::{Duration, Instant};

use firmware_core::log::Line;
use mock_broker::QoS;

use super::{CheckFuture, CheckResult, Scenario, ScenarioRun, Vocabulary, is};

/// From the device's start (a board's reset, after flashing) to SUBACK. A board on WiFi
/// needs a few seconds; the virtual device a fraction of one.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub const SCENARIO: Scenario = Scenario {
    name: "boot",
    summary: "boot, config, creds, wifi, time, connected, subscribed in order",
    tolerance: "subscribed within 10 s of the device's start (a board's reset, after flashing)",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: false,
    restarts_broker: false,
    needs_lines: &[],
    limit: None,
    check,
};

/// A step's description and the line that shows it happened.
type Step = (&'static str, fn(&Line) -> bool);

/// The steps, in the order the device must log them.
const STEPS: [Step; 7] = [
    ("`boot:`", |l| l.tag() == "boot"),
    ("`config: loaded`", |l| is(l, "config", "loaded")),
    ("`creds:`", |l| {
        l.tag() == "creds" && l.field("source").is_some()
    }),
    ("`wifi: up`", |l| is(l, "wifi", "up")),
    ("`time: synced`", |l| is(l, "time", "synced")),
    ("`mqtt: connected`", |l| is(l, "mqtt", "connected")),
    ("`mqtt: subscribed`", |l| is(l, "mqtt", "subscribed")),
];

fn check(run: &mut ScenarioRun) -> CheckFuture<'_> {
    Box::pin(boot(run))
}

/// The tutorial's sketch joins WiFi (and sets its clock, silently) before it loads its
/// credentials, and prints neither banner, config nor subscription.
const TUTORIAL_STEPS: [Step; 3] = [STEPS[3], STEPS[2], STEPS[5]];

async fn boot(run: &mut ScenarioRun) -> CheckResult {
    let mut observer = run.start_device(|_| {})?;
    // After flashing: the deadline is the device's, not the flasher's.
    let started = Instant::now();
    let deadline = started + DEADLINE;
    let mut previous = "the start";
    let vocabulary = run.vocabulary();
    let (steps, unshown): (&[Step], Vec<&str>) = match vocabulary {
        Vocabulary::Firmware => (&STEPS, Vec::new()),
        Vocabulary::TutorialSketch => (
            &TUTORIAL_STEPS,
            STEPS
                .iter()
                .map(|(what, _)| *what)
                .filter(|what| !TUTORIAL_STEPS.iter().any(|(w, _)| w == what))
                .collect(),
        ),
    };
    for &(what, pick) in steps {
        let left = deadline.saturating_duration_since(Instant::now());
        run.expect_line(&format!("{what} after {previous}"), left, pick)
            .await?;
        previous = what;
    }
    let subscribed_ms = started.elapsed().as_millis();
    let topic = run.inbound_topic();
    let granted = if run.rig.sees_broker_events() {
        observer
            .wait_for_subscription(&run.client_id, &topic, Duration::from_secs(1))
            .await
    } else {
        // An AWS observer is not told about other clients' subscriptions: the device's
        // SUBACK, as it logged it, is the evidence.
        let log = run.log();
        log.iter()
            .filter_map(|l| l.line())
            .find(|l| is(l, "mqtt", "subscribed") && l.field("topic") == Some(topic.as_str()))
            .and_then(|l| match l.field("qos") {
                Some("1") => Some(QoS::AtLeastOnce),
                Some("0") => Some(QoS::AtMostOnce),
                _ => None,
            })
    };
    if granted != Some(QoS::AtLeastOnce) {
        return Err(run.failure(&format!(
            "expected the broker to see a QoS 1 subscription to {topic} by {}, saw {granted:?}",
            run.client_id
        )));
    }
    if unshown.is_empty() {
        return Ok(format!("subscribed after {subscribed_ms} ms"));
    }
    // What the board cannot print is named, not passed: the subscription is the
    // broker's record, the rest is unjudged.
    Ok(format!(
        "subscribed (at the broker) after {subscribed_ms} ms; not shown by this firmware, so \
         not judged: {}",
        unshown.join(", ")
    ))
}
