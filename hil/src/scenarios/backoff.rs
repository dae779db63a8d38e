//! `backoff`: the broker disconnects the device five times in a row (a kick, then a silent
//! drop, alternately), each time once the device is back and publishing. The rig records
//! the delay the device announces (`mqtt: backoff attempt=N delay_ms=D`) and the gap from
//! the disconnect to the next CONNECT the broker accepts, checks that the two agree and
//! classifies the delays (see [`classify`]): only jitter passes, as in Device Advisor.
//!
//! No connection lasts the 30 s after which the device resets its backoff, so the
//! attempts count 1..5 and the ceilings grow (1, 2, 4, 8, 16 s).

pub mod classify;

use std::sync::Arc;
use std::time::{Duration, Instant};

use firmware_core::log::Line;
use mock_broker::Event;

use self::classify::{Class, classify};
use super::stamped::{FIRST_PUBLISH, StampedEvents, connected, line_after, published};
use super::{CheckFuture, CheckResult, Scenario, ScenarioRun, is};
use crate::error::CheckFailure;
use crate::rig::OUT_TOPIC;
use crate::serial::SerialLine;

pub const DISCONNECTS: usize = 5;
/// Device backoff policy (DESIGN.md contract 1): attempt n waits up to
/// `min(CAP, BASE * 2^(n-1))`, at least `FLOOR` (itself capped by the ceiling).
pub const BASE_MS: u64 = 1000;
pub const CAP_MS: u64 = 60_000;
pub const FLOOR_MS: u64 = 100;
/// The broker's gap (disconnect to accepted CONNECT) minus the announced delay: at least
/// this (timer granularity)...
pub const GAP_EARLY_MS: i64 = -50;
/// ...and at most this (noticing the disconnect, TCP, TLS, CONNECT on a loaded host).
pub const GAP_LATE_MS: i64 = 1500;
/// Announced delays are exact; this absorbs a device's rounding.
const DEVICE_SLACK_MS: u64 = 5;
/// AWS accepts one CONNECT per second per client id (so does the mock broker).
const CONNECT_INTERVAL: Duration = Duration::from_millis(1100);
/// Disconnect to the device's `backoff` line.
const NOTICE: Duration = Duration::from_secs(5);

pub const SCENARIO: Scenario = Scenario {
    name: "backoff",
    summary: "5 server disconnects: reconnect delays classified (jitter/exponential/linear/constant); only jitter passes",
    tolerance: "announced delays classify as jitter (no constant, linear or exponential law within 2 %); attempt n's delay within [0.1 s, min(60 s, 1 s x 2^(n-1))]; broker gap = delay -50/+1500 ms",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &[],
    limit: None,
    check,
};

fn check(run: &mut ScenarioRun) -> CheckFuture<'_> {
    Box::pin(backoff(run))
}

/// The ceiling of attempt `attempt` (from 1).
pub fn ceiling_ms(attempt: u32) -> u64 {
    let doubled = BASE_MS.saturating_mul(1u64 << attempt.saturating_sub(1).min(32));
    doubled.min(CAP_MS)
}

/// One reconnect as the rig saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// As the device announced it.
    pub attempt: u32,
    /// The wait the device announced.
    pub delay_ms: u64,
    /// From the disconnect (or the announcement) to the next attempt, measured.
    pub gap_ms: u64,
}

/// The reconnects of the first outage in a serial log: each `mqtt: backoff` line from
/// the first one up to the first `mqtt: connected` after it, with the gap to the next
/// `mqtt: connecting` as the host read them. A recorded board transcript, replayed at
/// its pace, is judged with it like a live run.
pub fn one_outage(log: &[SerialLine]) -> Vec<Reconnect> {
    let mut seen = Vec::new();
    let mut waiting: Option<(&SerialLine, u32, u64)> = None;
    for line in log {
        let Some(l) = line.line() else { continue };
        if is(l, "mqtt", "backoff") {
            if let (Some(attempt), Some(delay_ms)) = (l.field_as("attempt"), l.field_as("delay_ms"))
            {
                waiting = Some((line, attempt, delay_ms));
            }
        } else if is(l, "mqtt", "connecting")
            && let Some((announced, attempt, delay_ms)) = waiting.take()
        {
            seen.push(Reconnect {
                attempt,
                delay_ms,
                gap_ms: line.at.duration_since(announced.at).as_millis() as u64,
            });
        } else if is(l, "mqtt", "connected") && !seen.is_empty() {
            break;
        }
    }
    seen
}

async fn backoff(run: &mut ScenarioRun) -> CheckResult {
    let rig = Arc::clone(&run.rig);
    let broker = rig.broker()?;
    let observer = run.start_device(|_| {})?;
    let events = StampedEvents::record(observer);
    let client = run.client_id.clone();
    let publishes = |event: &Event| published(event, &client).map(|_| ());

    let mut seen: Vec<Reconnect> = Vec::with_capacity(DISCONNECTS);
    let mut back_at = Instant::now();
    let mut wait = FIRST_PUBLISH;
    for k in 1..=DISCONNECTS {
        // Back and publishing a second after the CONNECT: the connection works, and the
        // broker's one-CONNECT-per-second rule is not what the next reconnect runs into.
        if events
            .wait_for(back_at + CONNECT_INTERVAL, wait, publishes)
            .await
            .is_none()
        {
            return Err(run.failure(&format!(
                "expected a publish on {OUT_TOPIC} within {wait:?} before disconnect {k}, saw none"
            )));
        }
        let how = if k % 2 == 1 { "kick" } else { "drop" };
        let cut_at = Instant::now();
        let was_connected = if k % 2 == 1 {
            broker.kick(&client)
        } else {
            broker.drop_connection(&client)
        };
        if !was_connected {
            return Err(run.failure(&format!(
                "expected {client} connected at the broker for disconnect {k} ({how}), it was not"
            )));
        }
        let line = line_after(
            run,
            cut_at,
            &format!("`mqtt: backoff` after disconnect {k} ({how})"),
            NOTICE,
            // Only the backoff line: lines the device printed before the disconnect can
            // be read after it.
            |l| is(l, "mqtt", "backoff"),
        )
        .await?;
        let line: &Line = line.line().expect("picked a parsed line");
        let (Some(attempt), Some(delay_ms)) = (
            line.field_as::<u32>("attempt"),
            line.field_as::<u64>("delay_ms"),
        ) else {
            return Err(run.failure(&format!(
                "expected `mqtt: backoff attempt=N delay_ms=D` after disconnect {k}, saw `{line}`"
            )));
        };
        let limit = Duration::from_millis(delay_ms) + Duration::from_millis(GAP_LATE_MS as u64);
        let Some((connected_at, ())) = events
            .wait_for(cut_at, limit + NOTICE, |e| {
                connected(e, &client).then_some(())
            })
            .await
        else {
            return Err(run.failure(&format!(
                "expected the broker to accept a CONNECT within {limit:?} of disconnect {k} \
                 (announced delay {delay_ms} ms), saw none"
            )));
        };
        let gap_ms = connected_at.duration_since(cut_at).as_millis() as u64;
        seen.push(Reconnect {
            attempt,
            delay_ms,
            gap_ms,
        });
        back_at = connected_at;
        wait = Duration::from_secs(10);
    }

    judge(&seen).map_err(|why| run.failure(&why.0))
}

/// The verdict on five reconnects: the key figure, or what was expected and what was seen.
/// The delays must be jitter (judged first: a fixed delay is named `constant`, as Device
/// Advisor names it, whatever else is wrong with it), attempts must count 1.. (no
/// reset), each delay must lie within its ceiling, and the broker must have seen each
/// reconnect when the device said it would.
pub fn judge(seen: &[Reconnect]) -> Result<String, CheckFailure> {
    let series = seen
        .iter()
        .map(|r| format!("#{} {} ms (broker {} ms)", r.attempt, r.delay_ms, r.gap_ms))
        .collect::<Vec<_>>()
        .join(", ");
    let delays: Vec<u64> = seen.iter().map(|r| r.delay_ms).collect();
    let found = classify(&delays, DEVICE_SLACK_MS).map_err(|e| CheckFailure(e.to_string()))?;
    if found.class != Class::Jitter {
        return Err(CheckFailure(format!(
            "expected jittered reconnect delays, saw {found}: {series}"
        )));
    }
    for (i, r) in seen.iter().enumerate() {
        let expected_attempt = i as u32 + 1;
        if r.attempt != expected_attempt {
            return Err(CheckFailure(format!(
                "expected attempt={expected_attempt} after disconnect {} (no connection lasted \
                 the 30 s that resets the backoff), saw attempt={}; series: {series}",
                i + 1,
                r.attempt,
            )));
        }
        let ceiling = ceiling_ms(r.attempt);
        let floor = FLOOR_MS.min(ceiling);
        if !(floor..=ceiling).contains(&r.delay_ms) {
            return Err(CheckFailure(format!(
                "expected attempt {}'s delay within [{floor}, {ceiling}] ms, saw {} ms; series: {series}",
                r.attempt, r.delay_ms,
            )));
        }
        let off = r.gap_ms as i64 - r.delay_ms as i64;
        if !(GAP_EARLY_MS..=GAP_LATE_MS).contains(&off) {
            return Err(CheckFailure(format!(
                "expected the broker's reconnect gap to be the announced delay \
                 {GAP_EARLY_MS:+}/+{GAP_LATE_MS} ms, saw {} ms for {} ms (attempt {})",
                r.gap_ms, r.delay_ms, r.attempt
            )));
        }
    }
    let offs: Vec<i64> = seen
        .iter()
        .map(|r| r.gap_ms as i64 - r.delay_ms as i64)
        .collect();
    Ok(format!(
        "jitter: delays {} ms, broker gaps +{}..+{} ms over them",
        delays
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("/"),
        offs.iter().min().copied().unwrap_or_default(),
        offs.iter().max().copied().unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::{Reconnect, ceiling_ms, judge};

    /// Reconnects as the rig records them: announced delays, broker gaps 10 ms longer.
    fn reconnects(delays: &[u64]) -> Vec<Reconnect> {
        delays
            .iter()
            .enumerate()
            .map(|(i, &delay_ms)| Reconnect {
                attempt: i as u32 + 1,
                delay_ms,
                gap_ms: delay_ms + 10,
            })
            .collect()
    }

    #[test]
    fn the_virtual_devices_recorded_delays_pass() {
        // `backoff` on the virtual device, as `hil run` printed it.
        let figure = judge(&reconnects(&[914, 1458, 3101, 2388, 7732])).unwrap();
        assert_eq!(
            figure,
            "jitter: delays 914/1458/3101/2388/7732 ms, broker gaps +10..+10 ms over them"
        );
    }

    #[test]
    fn a_fixed_delay_device_fails_as_constant() {
        // A firmware with `delay(1000)` between attempts, within every ceiling.
        let why = judge(&reconnects(&[1000, 1000, 1000, 1000, 1000]))
            .unwrap_err()
            .0;
        assert!(
            why.starts_with("expected jittered reconnect delays, saw constant (1000 ms)"),
            "{why}"
        );
    }

    #[test]
    fn the_esp8266_sketchs_at_once_reconnects_fail_as_constant() {
        // The sketch reconnects at once after each disconnect (read as `delay_ms=0`); its
        // attempts restart at 1 and its handshake is slow, but the verdict is the law.
        let seen: Vec<Reconnect> = (0..5)
            .map(|_| Reconnect {
                attempt: 1,
                delay_ms: 0,
                gap_ms: 1800,
            })
            .collect();
        let why = judge(&seen).unwrap_err().0;
        assert!(
            why.starts_with("expected jittered reconnect delays, saw constant (0 ms)"),
            "{why}"
        );
    }

    #[test]
    fn plain_exponential_and_linear_backoff_fail() {
        let exponential = [1000, 2000, 4000, 8000, 16000];
        let why = judge(&reconnects(&exponential)).unwrap_err().0;
        assert!(why.contains("saw exponential (1000 * 2.00^n ms)"), "{why}");
        let why = judge(&reconnects(&[200, 400, 600, 800, 1000]))
            .unwrap_err()
            .0;
        assert!(why.contains("saw linear"), "{why}");
    }

    #[test]
    fn delays_over_the_ceiling_a_reset_or_a_lying_log_fail() {
        let why = judge(&reconnects(&[914, 2458, 3101, 2388, 7732]))
            .unwrap_err()
            .0;
        assert!(
            why.starts_with("expected attempt 2's delay within [100, 2000] ms, saw 2458 ms"),
            "{why}"
        );
        let mut reset = reconnects(&[914, 1458, 3101, 2388, 7732]);
        reset[3].attempt = 1;
        let why = judge(&reset).unwrap_err().0;
        assert!(
            why.starts_with("expected attempt=4 after disconnect 4"),
            "{why}"
        );
        let mut early = reconnects(&[914, 1458, 3101, 2388, 7732]);
        early[2].gap_ms = 900;
        let why = judge(&early).unwrap_err().0;
        assert!(why.contains("saw 900 ms for 3101 ms (attempt 3)"), "{why}");
    }

    #[test]
    fn four_reconnects_are_too_few_to_judge() {
        let why = judge(&reconnects(&[914, 1458, 3101])).unwrap_err().0;
        assert!(why.contains("at least 4 are needed"), "{why}");
    }

    #[test]
    fn ceilings_double_from_one_second_up_to_the_cap() {
        assert_eq!(ceiling_ms(1), 1000);
        assert_eq!(ceiling_ms(5), 16_000);
        assert_eq!(ceiling_ms(7), 60_000);
        assert_eq!(ceiling_ms(40), 60_000);
    }
}
