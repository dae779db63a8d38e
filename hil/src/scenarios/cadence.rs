//! `cadence`: publishes every 2000 ms at the broker, consecutively numbered, and the
//! device's log agrees with what the broker received.

use std::time::Duration;

use firmware_core::session::hello_seq;
use mock_broker::{Event, PublishObservation, Publisher};

use super::{CheckFuture, CheckResult, Scenario, ScenarioRun};
use crate::rig::OUT_TOPIC;

/// Publishes observed (so `PUBLISHES - 1` intervals are measured).
pub const PUBLISHES: usize = 11;
pub const PERIOD_MS: u64 = 2000;
/// Allowed deviation of each interval at the broker (Wi-Fi jitter on a real board).
pub const TOLERANCE_MS: u64 = 150;
/// Boot to the first publish.
const FIRST_PUBLISH: Duration = Duration::from_secs(15);

pub const SCENARIO: Scenario = Scenario {
    name: "cadence",
    summary: "11 publishes `hello world #N`, consecutive, device log and broker agree",
    tolerance: "every interval 2000 +- 150 ms at the broker",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: false,
    restarts_broker: false,
    needs_lines: &[],
    limit: None,
    check,
};

fn check(run: &mut ScenarioRun) -> CheckFuture<'_> {
    Box::pin(cadence(run))
}

async fn cadence(run: &mut ScenarioRun) -> CheckResult {
    let mut observer = run.start_device(|_| {})?;
    // Against AWS (or a third-party broker) the times are the observer's receive times:
    // they add the broker-to-rig jitter to the device's, within the same tolerance.
    let at = if run.rig.sees_broker_events() {
        "at the broker"
    } else {
        "at the observer"
    };
    let client = Publisher::Client(run.client_id.clone());
    // Checked as they arrive, so a wrong cadence fails at its first bad interval.
    let mut publishes: Vec<PublishObservation> = Vec::with_capacity(PUBLISHES);
    let mut numbers: Vec<u32> = Vec::with_capacity(PUBLISHES);
    let mut intervals: Vec<u64> = Vec::with_capacity(PUBLISHES);
    while publishes.len() < PUBLISHES {
        let timeout = if publishes.is_empty() {
            FIRST_PUBLISH
        } else {
            Duration::from_millis(PERIOD_MS + TOLERANCE_MS + 1000)
        };
        let next = observer
            .wait_for(timeout, |event| match event {
                Event::Publish(p) if p.publisher == client && p.topic == OUT_TOPIC => {
                    Some(p.clone())
                }
                _ => None,
            })
            .await;
        let Some(p) = next else {
            return Err(run.failure(&format!(
                "expected publish {} of {PUBLISHES} on {OUT_TOPIC} within {timeout:?}, saw none",
                publishes.len() + 1
            )));
        };
        let Some(n) = hello_seq(&p.payload) else {
            return Err(run.failure(&format!(
                "expected payload {{\"message\": \"hello world #N\"}}, saw {:?}",
                String::from_utf8_lossy(&p.payload)
            )));
        };
        if let (Some(previous), Some(last)) = (numbers.last(), publishes.last()) {
            if n != previous + 1 {
                return Err(run.failure(&format!(
                    "expected consecutive numbers, saw #{previous} followed by #{n}"
                )));
            }
            let ms = p.received_at.duration_since(last.received_at).as_millis() as u64;
            if ms.abs_diff(PERIOD_MS) > TOLERANCE_MS {
                let so_far = if intervals.is_empty() {
                    "the first interval".to_string()
                } else {
                    format!("after intervals {intervals:?} ms")
                };
                return Err(run.failure(&format!(
                    "expected every interval {PERIOD_MS} +- {TOLERANCE_MS} ms {at}, \
                     saw #{n} after {ms} ms ({so_far})"
                )));
            }
            intervals.push(ms);
        }
        numbers.push(n);
        publishes.push(p);
    }

    // The device's own account: a `publish:` line for every publish the broker saw,
    // with the same sequence number and payload.
    let last = *numbers.last().expect("PUBLISHES > 0");
    run.expect_line(
        &format!("`publish: seq={last}`"),
        Duration::from_secs(2),
        |l| l.tag() == "publish" && l.field_as::<u32>("seq") == Some(last),
    )
    .await?;
    let log = run.log();
    for (p, n) in publishes.iter().zip(&numbers) {
        let logged = log.iter().filter_map(|l| l.line()).find(|l| {
            l.tag() == "publish" && l.message().is_empty() && l.field_as::<u32>("seq") == Some(*n)
        });
        let Some(logged) = logged else {
            return Err(run.failure(&format!(
                "expected a `publish: seq={n}` line for the broker's #{n}, saw none"
            )));
        };
        let bytes: Result<Vec<u8>, _> = logged.payload_bytes().into_iter().flatten().collect();
        if bytes.as_deref().ok() != Some(&p.payload[..]) {
            return Err(run.failure(&format!(
                "expected the log's seq={n} payload to be what the broker got ({:?}), saw {:?}",
                String::from_utf8_lossy(&p.payload),
                logged.payload()
            )));
        }
    }

    let min = intervals.iter().min().copied().unwrap_or_default();
    let max = intervals.iter().max().copied().unwrap_or_default();
    Ok(format!(
        "{} intervals {min}..{max} ms {at} (#{}..#{last})",
        intervals.len(),
        numbers[0]
    ))
}
