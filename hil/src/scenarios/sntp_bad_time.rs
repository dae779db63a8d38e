//! `sntp-bad-time`: the SNTP server first answers with 1970 (a server that lost its
//! clock), then correctly. One bad answer must not wedge the device: it refuses the time
//! as implausible (`time: implausible reason=before-build`, never `time: synced epoch=0`),
//! asks again, syncs, connects and publishes. Before the fix the clock was set once to
//! 1970 and every handshake failed (`tls: handshake failed error=other`) until reboot.
//!
//! Like `sntp-silent`, it runs its own SNTP server and points the device's image at it,
//! so it runs alongside the other scenarios.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mock_broker::SntpBehaviour;

use super::sntp_silent::{SntpServer, publishing_after, synced_near_host_time};
use super::stamped::{StampedEvents, line_after};
use super::{CheckFuture, CheckResult, Scenario, ScenarioRun, is};
use crate::error::RigError;

/// The first answer: boot plus one request.
pub const REFUSED_WITHIN: Duration = Duration::from_secs(10);
/// Refusal to `time: synced`: the time phase's backoff (at most 2 s after one failure)
/// plus a request.
pub const SYNCED_WITHIN: Duration = Duration::from_secs(10);

pub const SCENARIO: Scenario = Scenario {
    name: "sntp-bad-time",
    summary: "SNTP answers 1970 once: refused as implausible, asked again, synced, publishing",
    tolerance: "`time: implausible reason=before-build` within 10 s and no `time: synced` or `mqtt:` line before it; synced within 10 s after, epoch within 5 s of the host; publishing within 10 s of sync",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &["time: implausible"],
    limit: None,
    check,
};

fn check(run: &mut ScenarioRun) -> CheckFuture<'_> {
    Box::pin(sntp_bad_time(run))
}

/// Seconds that take the host's clock back to 1970-01-01.
fn back_to_1970() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    -i64::try_from(now).unwrap_or(i64::MAX)
}

async fn sntp_bad_time(run: &mut ScenarioRun) -> CheckResult {
    if run.rig.given_image().is_some() {
        return Err(RigError::Target(
            "needs its own SNTP server in the device's image; run it without --flash",
        )
        .into());
    }
    let server = SntpServer::answering_as(SntpBehaviour::OffsetSecs(back_to_1970())).await?;
    let port = server.addr.port();
    let started = Instant::now();
    let observer = run.start_device(|config| config.ntp.port = port)?;
    let events = StampedEvents::record(observer);

    let refused = line_after(
        run,
        started,
        "`time: implausible` for the 1970 answer",
        REFUSED_WITHIN,
        |l| is(l, "time", "implausible") || is(l, "time", "synced") || l.tag() == "mqtt",
    )
    .await?;
    let line = refused.line().expect("picked a parsed line");
    if !is(line, "time", "implausible") {
        return Err(run.failure(&format!(
            "expected `time: implausible` for a 1970 answer before anything else, saw `{line}`"
        )));
    }
    if line.field("reason") != Some("before-build") {
        return Err(run.failure(&format!("expected reason=before-build, saw `{line}`")));
    }
    server.answer();
    let answered = Instant::now();

    let synced = synced_near_host_time(run, answered, SYNCED_WITHIN).await?;
    let published_at = publishing_after(run, &events, synced.at).await?;
    Ok(format!(
        "1970 refused {:.1} s after start ({} requests); synced {:.1} s after the server was fixed, publishing {:.1} s later",
        refused.at.duration_since(started).as_secs_f64(),
        server.requests(),
        synced.at.duration_since(answered).as_secs_f64(),
        published_at.duration_since(synced.at).as_secs_f64()
    ))
}
