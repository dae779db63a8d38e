//! `dead-link`: the broker black-holes this device's connection (keeps it open, reads and
//! ignores everything, sends nothing), as a NAT that forgot the flow or a half-dead WiFi
//! link would. The device must notice within 1.5x its keep-alive from its own side and
//! reconnect; nothing on the wire tells it.
//!
//! The image asks for a 30 s keep-alive (AWS IoT Core's minimum; it clamps anything lower
//! up to 30 s) and QoS 0 publishes, so only the keep-alive can find the dead link: with
//! QoS 1 the missing PUBACKs would end the link after 5 s (see `qos1-retry`).
//!
//! The device pings (a probe) after 3/4 keep-alive without hearing from the broker and
//! declares the link dead 1.5x keep-alive after the last packet it received. That packet
//! came at most 22.5 s before the black hole started, so detection lies between
//! 22.5 s and 45 s after it, measured on the host from the moment the fault was applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_broker::{Event, Faults};

use super::stamped::{StampedEvents, first_publish, line_after, published};
use super::{CheckFuture, CheckResult, Scenario, ScenarioRun, is};

/// AWS IoT Core's smallest keep-alive.
pub const KEEPALIVE_S: u16 = 30;
/// 1.5x keep-alive.
pub const DEAD_AFTER: Duration = Duration::from_millis(KEEPALIVE_S as u64 * 1500);
/// Scheduling and serial latency on a loaded host.
pub const MARGIN: Duration = Duration::from_secs(5);
/// Earliest acceptable detection: the last packet before the fault can be up to 3/4
/// keep-alive old (the probe interval), minus a second of slack. Earlier means the device
/// gives up on a link that is merely quiet.
pub const EARLIEST: Duration = Duration::from_millis(KEEPALIVE_S as u64 * 750 - 1000);
/// Fault lifted to the next publish: a backoff of at most 1 s and a handshake, or, if the
/// device reconnected before the fault was lifted, its 10 s subscribe timeout on top.
pub const RECOVER: Duration = Duration::from_secs(20);

pub const SCENARIO: Scenario = Scenario {
    name: "dead-link",
    summary: "black-holed connection: dead link found by the 30 s keep-alive, device reconnects",
    tolerance: "keep-alive 30 s, QoS 0: `disconnected reason=keepalive-timeout` 21.5 s (3/4 keep-alive - 1 s) to 50 s (1.5x keep-alive + 5 s) after the black hole, host time; publishing again within 20 s of lifting it",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &["mqtt: disconnected"],
    limit: None,
    check,
};

fn check(run: &mut ScenarioRun) -> CheckFuture<'_> {
    Box::pin(dead_link(run))
}

async fn dead_link(run: &mut ScenarioRun) -> CheckResult {
    let rig = Arc::clone(&run.rig);
    let broker = rig.broker()?;
    let client = run.client_id.clone();
    let observer = run.start_device(|config| {
        config.keepalive_s = KEEPALIVE_S;
        config.qos = 0;
    })?;
    let events = StampedEvents::record(observer);
    first_publish(run, &events, &client).await?;
    let publishes = |event: &Event| published(event, &client).map(|_| ());

    broker.set_client_faults(
        &client,
        Faults {
            black_hole: true,
            ..Faults::default()
        },
    );
    let holed = Instant::now();
    let limit = DEAD_AFTER + MARGIN;
    let noticed = line_after(
        run,
        holed,
        "`mqtt: disconnected` once the link went dead",
        limit,
        |l| is(l, "mqtt", "disconnected"),
    )
    .await;
    // Lift the fault at once, so the reconnect finds a working broker.
    broker.set_client_faults(&client, Faults::default());
    let lifted = Instant::now();
    let noticed = noticed?;
    let after = noticed.at.duration_since(holed);
    let reason = noticed
        .line()
        .and_then(|l| l.field("reason"))
        .unwrap_or("(none)");
    if reason != "keepalive-timeout" {
        return Err(run.failure(&format!(
            "expected the dead link found by the keep-alive (reason=keepalive-timeout), \
             saw reason={reason} after {after:.1?}"
        )));
    }
    if after < EARLIEST {
        return Err(run.failure(&format!(
            "expected the link declared dead no sooner than {EARLIEST:?} after the black hole \
             (1.5x keep-alive after the last packet received), saw it after {after:.1?}"
        )));
    }

    let back = events.wait_for(lifted, RECOVER, &publishes).await;
    let Some((back_at, ())) = back else {
        return Err(run.failure(&format!(
            "expected publishing again within {RECOVER:?} of lifting the black hole, saw none"
        )));
    };
    Ok(format!(
        "dead link found after {:.1} s (window {:.1}..{:.0} s), publishing again {:.1} s after the fault was lifted",
        after.as_secs_f64(),
        EARLIEST.as_secs_f64(),
        limit.as_secs_f64(),
        back_at.duration_since(lifted).as_secs_f64()
    ))
}
