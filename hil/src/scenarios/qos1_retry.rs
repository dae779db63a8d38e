//! `qos1-retry`: the broker withholds PUBACK from this device; the device must send the
//! unacknowledged QoS 1 publish again with the same packet id and the DUP flag (Device
//! Advisor's retry case), and once PUBACKs flow again its sequence carries on.
//!
//! The virtual device speaks MQTT 5, which allows a resend only on a new connection
//! (`Retransmit::ByReconnect`): after the core's `publish_retry` (5 s) without PUBACK it
//! drops the link (`mqtt: disconnected reason=puback-timeout`), reconnects resuming its
//! session, and minimq replays the publish. The fault is lifted as soon as the device has
//! dropped the link, so the resent publish is the one acknowledged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_broker::{Event, Faults, PublishObservation};

use super::stamped::{StampedEvents, first_publish, line_after, published};
use super::{CheckFuture, CheckResult, Scenario, ScenarioRun, is};
use crate::error::ScenarioError;
use firmware_core::session::hello_seq;

/// The core's `publish_retry` (5 s) plus scheduling and serial latency.
pub const PUBACK_TIMEOUT: Duration = Duration::from_secs(8);
/// From the device dropping the link to the resent publish at the broker: backoff after
/// one disconnect (at most 1 s) plus the handshake.
pub const RESENT_WITHIN: Duration = Duration::from_secs(5);
/// New publishes to see after the resend: more than `publish_retry` passes in which the
/// device would have dropped the link again had the resend not been acknowledged.
const AFTER: usize = 3;
const PERIOD: Duration = Duration::from_secs(2);

pub const SCENARIO: Scenario = Scenario {
    name: "qos1-retry",
    summary: "PUBACK withheld: the QoS 1 publish is resent with the same packet id and DUP; then acked, sequence carries on",
    tolerance: "link dropped (puback-timeout) within 8 s of the unacked publish; resent (same id, DUP) within 5 s of that; numbers consecutive after it, 3 new publishes, no further drop",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &["mqtt: disconnected"],
    limit: None,
    check,
};

fn check(run: &mut ScenarioRun) -> CheckFuture<'_> {
    Box::pin(qos1_retry(run))
}

async fn qos1_retry(run: &mut ScenarioRun) -> CheckResult {
    let rig = Arc::clone(&run.rig);
    let broker = rig.broker()?;
    let client = run.client_id.clone();
    let observer = run.start_device(|config| config.qos = 1)?;
    let events = StampedEvents::record(observer);
    first_publish(run, &events, &client).await?;
    let mine = |event: &Event| published(event, &client).cloned();

    broker.set_client_faults(
        &client,
        Faults {
            withhold_puback: true,
            ..Faults::default()
        },
    );
    let faulted = Instant::now();
    let outcome = withheld_then_resent(run, &events, &mine, faulted).await;
    // Lift the fault whatever happened (the success path lifted it already).
    broker.set_client_faults(&client, Faults::default());
    let (unacked, resent, dropped_at) = outcome?;
    let unacked_n = hello_seq(&unacked.payload).unwrap_or_default();

    // Acknowledged now: the numbers carry on from the resend, consecutively (the other
    // publishes sent while PUBACK was withheld come first, replayed with DUP too), until
    // AFTER new ones went out.
    let mut last = unacked_n;
    let mut from = resent.received_at;
    let mut fresh = 0;
    let mut replayed = 0;
    while fresh < AFTER {
        let timeout = PERIOD * 2;
        let next = events
            .wait_for(from, timeout, |e| {
                mine(e).filter(|p| hello_seq(&p.payload).is_some_and(|n| n > last))
            })
            .await;
        let Some((at, p)) = next else {
            return Err(run.failure(&format!(
                "expected #{} within {timeout:?} of #{last} after the resend, saw none",
                last + 1
            )));
        };
        let n = hello_seq(&p.payload).unwrap_or_default();
        if n != last + 1 {
            return Err(run.failure(&format!(
                "expected #{} after #{last}, saw #{n} (a gap in the sequence)",
                last + 1
            )));
        }
        if p.dup {
            replayed += 1;
        } else {
            fresh += 1;
        }
        last = n;
        from = at;
    }
    let dropped_again = run
        .log()
        .into_iter()
        .any(|l| l.at > dropped_at && l.line().is_some_and(|l| is(l, "mqtt", "disconnected")));
    if dropped_again {
        return Err(
            run.failure("expected no further disconnect once PUBACKs flowed again, saw one")
        );
    }
    Ok(format!(
        "#{unacked_n} resent with id {} and DUP {} ms after the drop; {replayed} more replayed, then #{}..#{last} new",
        resent.packet_id.unwrap_or_default(),
        resent
            .received_at
            .saturating_duration_since(dropped_at)
            .as_millis(),
        last + 1 - AFTER as u32,
    ))
}

/// With PUBACK withheld: the first publish after `faulted`, the device's drop for it,
/// then the resend of that publish at the broker. Lifts the fault once the device dropped
/// the link. Returns (first send, resend, when the drop was read).
async fn withheld_then_resent(
    run: &mut ScenarioRun,
    events: &StampedEvents,
    mine: &(impl Fn(&Event) -> Option<PublishObservation> + Sync),
    faulted: Instant,
) -> Result<(PublishObservation, PublishObservation, Instant), ScenarioError> {
    let Some((_, unacked)) = events
        .wait_for(faulted, PERIOD * 2, |e| mine(e).filter(|p| !p.dup))
        .await
    else {
        return Err(run.failure(&format!(
            "expected a publish within {:?} of withholding PUBACK, saw none",
            PERIOD * 2
        )));
    };
    let Some(n) = hello_seq(&unacked.payload) else {
        return Err(run.failure(&format!(
            "expected a `hello world #N` payload, saw {:?}",
            String::from_utf8_lossy(&unacked.payload)
        )));
    };
    let Some(id) = unacked.packet_id else {
        return Err(run.failure(&format!(
            "expected #{n} published at QoS 1 (with a packet id), saw {:?} without one",
            unacked.qos
        )));
    };
    let dropped = line_after(
        run,
        unacked.received_at,
        "`mqtt: disconnected reason=puback-timeout` for the unacknowledged publish",
        PUBACK_TIMEOUT,
        |l| is(l, "mqtt", "disconnected"),
    )
    .await?;
    let reason = dropped
        .line()
        .and_then(|l| l.field("reason"))
        .unwrap_or("(none)");
    if reason != "puback-timeout" {
        return Err(run.failure(&format!(
            "expected the device to drop the link with reason=puback-timeout, saw reason={reason}"
        )));
    }
    run.rig
        .broker()?
        .set_client_faults(&run.client_id, Faults::default());

    let resent = events
        .wait_for(unacked.received_at, PUBACK_TIMEOUT + RESENT_WITHIN, |e| {
            mine(e)
                .filter(|p| p.received_at > unacked.received_at && hello_seq(&p.payload) == Some(n))
        })
        .await;
    let Some((_, resent)) = resent else {
        return Err(run.failure(&format!(
            "expected #{n} (packet id {id}) sent again within {RESENT_WITHIN:?} of the drop, saw no resend"
        )));
    };
    if resent.packet_id != Some(id) || !resent.dup {
        return Err(run.failure(&format!(
            "expected #{n} resent with packet id {id} and DUP set, saw packet id {} and DUP {}",
            resent
                .packet_id
                .map_or_else(|| "(none)".to_string(), |i| i.to_string()),
            u8::from(resent.dup)
        )));
    }
    Ok((unacked, resent, dropped.at))
}
