//! `reconnect-after-restart`: the broker stops listening and drops every connection; the
//! device notices, retries while it is down, reconnects once it is back, and its
//! sequence numbers carry on.

use std::time::{Duration, Instant};

use firmware_core::log::Line;
use mock_broker::{Event, Publisher};

use super::{CheckFuture, CheckResult, Scenario, ScenarioRun, is};
use crate::rig::OUT_TOPIC;
use firmware_core::session::hello_seq;

const FIRST_PUBLISH: Duration = Duration::from_secs(15);
/// Drop to the device's `disconnected` line.
pub const NOTICE: Duration = Duration::from_secs(5);
/// Broker back to the device's next publish: the backoff after one refused attempt is at
/// at most 2 s (DESIGN's full jitter from a 1 s base; the core's 500 ms base and 1 s
/// spacing stay within it), then a handshake and up to one period.
pub const RECOVER: Duration = Duration::from_secs(10);

pub const SCENARIO: Scenario = Scenario {
    name: "reconnect-after-restart",
    summary: "broker outage: device retries, reconnects, its publish numbers carry on",
    tolerance: "disconnect seen within 5 s; publishing again within 10 s of the broker's return",
    exclusive: true,
    needs_rig_ca: false,
    needs_broker_faults: false,
    restarts_broker: true,
    needs_lines: &["mqtt: disconnected"],
    limit: None,
    check,
};

fn check(run: &mut ScenarioRun) -> CheckFuture<'_> {
    Box::pin(reconnect(run))
}

/// A connection attempt that failed (`mqtt: connect failed`, `tls: handshake failed`).
fn is_refused_attempt(line: &Line) -> bool {
    matches!(line.tag(), "mqtt" | "tls") && line.message().ends_with("failed")
}

async fn reconnect(run: &mut ScenarioRun) -> CheckResult {
    let mut observer = run.start_device(|_| {})?;
    let client = Publisher::Client(run.client_id.clone());
    let mine = |event: &Event| match event {
        Event::Publish(p) if p.publisher == client && p.topic == OUT_TOPIC => hello_seq(&p.payload),
        _ => None,
    };
    let Some(mut before) = observer.wait_for(FIRST_PUBLISH, mine).await else {
        return Err(run.failure(&format!(
            "expected a `hello world #N` publish within {FIRST_PUBLISH:?}, saw none"
        )));
    };

    let rig = std::sync::Arc::clone(&run.rig);
    let dropped = rig.stop_broker().await?;
    let outage = Instant::now();
    // The last number the broker got before the outage.
    while let Some(event) = observer.try_next() {
        before = mine(&event).map_or(before, |n| n.max(before));
    }
    let result = async {
        if dropped == 0 {
            return Err(
                run.failure("expected the broker to drop the device's connection, it had none")
            );
        }
        run.expect_line("`mqtt: disconnected`", NOTICE, |l| {
            is(l, "mqtt", "disconnected")
        })
        .await?;
        // Event, not sleep: resume once the device has tried and been refused.
        run.expect_line(
            "a refused reconnect attempt while the broker was down",
            NOTICE,
            is_refused_attempt,
        )
        .await?;
        Ok(())
    }
    .await;
    let resumed = rig.start_broker().await;
    result?;
    resumed?;
    let down_ms = outage.elapsed().as_millis();
    let back = Instant::now();

    run.expect_line(
        "`mqtt: connected` after the broker came back",
        RECOVER,
        |l| is(l, "mqtt", "connected"),
    )
    .await?;
    let left = RECOVER.saturating_sub(back.elapsed());
    let after = observer
        .wait_for(left, |e| mine(e).filter(|n| *n > before))
        .await;
    let Some(after) = after else {
        return Err(run.failure(&format!(
            "expected a publish numbered above #{before} within {RECOVER:?} of the broker's return, saw none"
        )));
    };
    Ok(format!(
        "down {down_ms} ms, publishing again after {} ms, #{before} -> #{after}",
        back.elapsed().as_millis()
    ))
}
