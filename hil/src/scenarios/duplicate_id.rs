//! `duplicate-id`: a second device with the same client id (a second virtual device whose
//! image names the same thing) comes up while the first is connected.
//!
//! What AWS IoT Core does: a CONNECT with a client id already in use disconnects the older
//! connection (lifecycle `disconnectReason` `DUPLICATE_CLIENTID`, MQTT 5 reason 0x8E
//! "session taken over"), and it accepts one CONNECT per second per client id. It does
//! nothing to stop two clients from taking the id from each other in turn.
//!
//! The right device behaviour, and the one this scenario asserts: treat the takeover as
//! any lost connection and reconnect with exponential backoff and full jitter, without
//! resetting the backoff until a connection has lasted its stable period (5 s). A device
//! cannot tell whether it or the other one is the rightful owner of the id, so it must not
//! give up for good (it would stay off-line after the duplicate is gone); but it must not
//! fight either. Two such devices degrade into a slow alternation whose gaps grow towards
//! the 60 s cap instead of a reconnect storm, and as soon as one of them leaves, the other
//! stays connected. The mock broker takes the same rules from AWS, so the fight seen here
//! is the one AWS would see.
//!
//! Asserted: the broker disconnects the original for the duplicate; in the 15 s after the
//! duplicate starts, the broker sees at most 14 CONNECTs for the id (accepted or refused
//! by the one-per-second rule; two devices retrying every second would make 15 or more, a
//! tight loop hundreds); the original's backoff attempts count up, reset only after a
//! connection that lasted the stable period, and each delay stays under its ceiling; once the duplicate is gone the original reconnects
//! within its announced delay and stays connected.
//!
//! Also asserted: the original names the takeover in its log with the broker's MQTT 5
//! reason code, `mqtt: disconnected reason=server-disconnect code=0x8e
//! name=session-taken-over` (minimq reports a broker DISCONNECT without its code; the
//! device reads it off the byte stream, `firmware_core::mqtt::watch`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_broker::{DisconnectReason, Event};

use super::backoff::{FLOOR_MS, ceiling_ms};
use super::stamped::{StampedEvents, first_publish, published};
use super::{CheckFuture, CheckResult, Scenario, ScenarioRun, is};
use crate::backend::virtual_device::VirtualDevice;
use crate::error::BackendError;

/// How long both devices run side by side.
pub const WINDOW: Duration = Duration::from_secs(15);
/// CONNECTs for the id the broker may see in [`WINDOW`]. Two devices with the device's
/// full-jitter exponential backoff make about 8, and at most 12 in 20,000 modelled runs
/// (the unit tests below); two retrying every second make 15, every 100 ms over 100.
pub const MAX_CONNECTS: usize = 14;
/// Duplicate started to the broker's takeover (the duplicate boots and connects).
pub const TAKEOVER_WITHIN: Duration = Duration::from_secs(15);
/// On top of the original's announced delay: handshake, subscribe, one period.
pub const RECOVER_MARGIN: Duration = Duration::from_secs(10);
/// A connection that stays up this long resets the device's backoff
/// (`Settings::stable_after`).
const STABLE_PERIOD: Duration = Duration::from_millis(
    firmware_core::session::Settings::new("", "")
        .stable_after
        .as_millis(),
);
/// Serial latency between a connection's two lines, as the host reads them.
const STABLE_SLACK: Duration = Duration::from_millis(500);
/// Publishes in a row without a disconnect once the original is alone.
const STABLE_PUBLISHES: usize = 3;
const PERIOD: Duration = Duration::from_secs(2);

pub const SCENARIO: Scenario = Scenario {
    name: "duplicate-id",
    summary: "a second device with the same client id takes over: backoff, no reconnect storm, settles when it leaves",
    tolerance: "takeover within 15 s; <= 14 CONNECTs for the id in the 15 s both run; original's backoff attempts 1, 2, 3.. each within its ceiling; after the duplicate leaves, publishing within its announced delay + 10 s and 3 publishes without a disconnect",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &["mqtt: disconnected"],
    limit: None,
    check,
};

fn check(run: &mut ScenarioRun) -> CheckFuture<'_> {
    Box::pin(duplicate_id(run))
}

async fn duplicate_id(run: &mut ScenarioRun) -> CheckResult {
    let rig = Arc::clone(&run.rig);
    // The broker's client table and refusals are what this scenario counts.
    rig.broker()?;
    let client = run.client_id.clone();
    let observer = run.start_device(|_| {})?;
    let events = StampedEvents::record(observer);
    first_publish(run, &events, &client).await?;
    let publishes = |event: &Event| published(event, &client).map(|_| ());

    // The duplicate: with a --flash image the very same image (a cloned device), else a
    // second certificate for the same thing. Writing it replaces the original's image
    // file, which the running original has already read.
    let image = match rig.given_image() {
        Some(given) => given.path.clone(),
        None => rig.write_image(&rig.device_config(&client)?)?,
    };
    let arrived = Instant::now();
    let duplicate =
        VirtualDevice::spawn(rig.device_binary(), &image).map_err(BackendError::Start)?;
    let taken_over = events
        .wait_for(arrived, TAKEOVER_WITHIN, |e| match e {
            Event::Disconnected { client_id, reason }
                if *client_id == client && *reason == DisconnectReason::DuplicateClientId =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    let Some((taken_at, ())) = taken_over else {
        return Err(run.failure(&format!(
            "expected the broker to drop the original for the duplicate within \
             {TAKEOVER_WITHIN:?}, saw no DUPLICATE_CLIENTID disconnect; the duplicate's log:\n{}",
            duplicate.serial.tail(8)
        )));
    };

    // The original's own account of it.
    let reason = |l: &firmware_core::log::Line| {
        is(l, "mqtt", "disconnected") && l.field("reason") != Some("shutdown")
    };
    let said = run
        .log()
        .into_iter()
        .filter(|l| l.at >= arrived)
        .find_map(|l| l.line().filter(|l| reason(l)).cloned());
    let said = match said {
        Some(line) => line,
        None => run
            .expect_line(
                "`mqtt: disconnected` for the takeover",
                TAKEOVER_WITHIN,
                reason,
            )
            .await?
            .line()
            .cloned()
            .ok_or_else(|| run.failure("expected a parsed `mqtt: disconnected` line"))?,
    };
    if said.field("reason") != Some("server-disconnect") || said.field("code") != Some("0x8e") {
        return Err(run.failure(&format!(
            "expected the original to log `mqtt: disconnected reason=server-disconnect \
             code=0x8e` for the takeover, saw `{said}`"
        )));
    }

    // Both run for the window: a measurement period, not a wait for an event.
    tokio::time::sleep_until((arrived + WINDOW).into()).await;
    let window_end = Instant::now();
    let refused_for_rate = format!("for client id {client:?}");
    let connects = events
        .since(arrived)
        .into_iter()
        .filter(|(at, _)| *at <= arrived + WINDOW)
        .filter(|(_, e)| match e {
            Event::Connected { client_id, .. } => *client_id == client,
            Event::Refused { reason, .. } => reason.contains(&refused_for_rate),
            _ => false,
        })
        .count();
    if connects > MAX_CONNECTS {
        return Err(run.failure(&format!(
            "expected at most {MAX_CONNECTS} CONNECTs for {client} in the {WINDOW:?} both \
             devices ran, saw {connects} (a reconnect storm)"
        )));
    }

    // The original's backoff while the two took turns, with how long the connection
    // before each backoff stayed up (a connection past the stable period may reset it).
    let log = run.log();
    let mut backoffs: Vec<(u32, u64, Option<Duration>)> = Vec::new();
    let (mut up_at, mut up_for) = (None, None);
    for serial in log.iter().filter(|l| l.at >= arrived && l.at <= window_end) {
        let Some(l) = serial.line() else { continue };
        if is(l, "mqtt", "connected") {
            up_at = Some(serial.at);
        } else if is(l, "mqtt", "disconnected") {
            up_for = up_at.take().map(|at| serial.at.duration_since(at));
        } else if is(l, "mqtt", "backoff")
            && let (Some(attempt), Some(delay_ms)) = (l.field_as("attempt"), l.field_as("delay_ms"))
        {
            backoffs.push((attempt, delay_ms, up_for.take()));
        }
    }
    let Some(&(first, _, _)) = backoffs.first() else {
        return Err(run.failure(
            "expected the original to back off after the takeover, saw no `mqtt: backoff`",
        ));
    };
    let series = backoffs
        .iter()
        .map(|(a, d, _)| format!("#{a} {d} ms"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut expected = first;
    for &(attempt, delay_ms, stayed_up) in &backoffs {
        // A reset is right after a connection that lasted the stable period (the host
        // reads the two lines up to a serial latency apart: half a second allowed).
        if attempt == 1 && stayed_up.is_some_and(|up| up + STABLE_SLACK >= STABLE_PERIOD) {
            expected = 1;
        }
        let ceiling = ceiling_ms(attempt);
        if attempt != expected || delay_ms > ceiling || delay_ms < FLOOR_MS.min(ceiling) {
            return Err(run.failure(&format!(
                "expected the original's backoff attempts to count up ({expected} next) with \
                 each delay within [{}, {ceiling}] ms, saw attempt={attempt} delay_ms={delay_ms}; \
                 series: {series}",
                FLOOR_MS.min(ceiling)
            )));
        }
        expected += 1;
    }

    // The duplicate leaves; the original must come back by its own schedule and stay.
    drop(duplicate);
    let left = Instant::now();
    let due = run
        .log()
        .iter()
        .rev()
        .filter_map(|l| Some((l.at, l.line()?)))
        .find(|(_, l)| is(l, "mqtt", "backoff") || is(l, "mqtt", "connected"))
        .and_then(|(at, l)| {
            let delay = Duration::from_millis(l.field_as("delay_ms")?);
            Some((at + delay).saturating_duration_since(left))
        })
        .unwrap_or_default();
    let recover = due + RECOVER_MARGIN;
    let Some((back_at, ())) = events.wait_for(left, recover, &publishes).await else {
        return Err(run.failure(&format!(
            "expected the original publishing again within {recover:.1?} of the duplicate \
             leaving (its announced delay + {RECOVER_MARGIN:?}), saw none"
        )));
    };
    let mut last = back_at;
    for i in 1..=STABLE_PUBLISHES {
        let timeout = PERIOD * 2;
        let after_last = last + Duration::from_millis(1);
        let Some((at, ())) = events.wait_for(after_last, timeout, &publishes).await else {
            return Err(run.failure(&format!(
                "expected publish {i} of {STABLE_PUBLISHES} in a row once the original was \
                 alone, saw none within {timeout:?}"
            )));
        };
        last = at;
    }
    let kicked_again = events
        .since(back_at)
        .into_iter()
        .any(|(_, e)| matches!(e, Event::Disconnected { client_id, .. } if client_id == client));
    if kicked_again {
        return Err(run.failure(
            "expected the original to stay connected once the duplicate had left, saw it disconnected",
        ));
    }
    Ok(format!(
        "taken over {} ms after the duplicate started; {connects} CONNECTs in {} s \
         (limit {MAX_CONNECTS}); original backed off {series}; alone again, publishing \
         {:.1} s after the duplicate left, stable",
        taken_at.duration_since(arrived).as_millis(),
        WINDOW.as_secs(),
        back_at.duration_since(left).as_secs_f64()
    ))
}

#[cfg(test)]
mod tests {
    //! Where [`MAX_CONNECTS`] comes from: a model of the fight with the device's own
    //! backoff (`firmware_core::session::Backoff`, the virtual device's settings) and the
    //! broker's rules (the newer connection wins; one CONNECT per second per client id,
    //! a refused one counting as an attempt).

    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    use firmware_core::session::{Backoff, BackoffConfig, RandomSource};

    use super::{MAX_CONNECTS, WINDOW};

    /// TCP + TLS + CONNECT on loopback, roughly.
    const HANDSHAKE_MS: u64 = 20;
    const RATE_MS: u64 = 1000;
    const STABLE_MS: u64 = 30_000;

    struct XorShift(u64);

    impl RandomSource for XorShift {
        fn next_u32(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 32) as u32
        }
    }

    /// How long a device waits before its next attempt.
    trait Policy {
        fn delay_ms(&mut self, backoff: &mut Backoff) -> u64;
    }

    struct FullJitter(XorShift);

    impl Policy for FullJitter {
        fn delay_ms(&mut self, backoff: &mut Backoff) -> u64 {
            backoff.next_delay(&mut self.0).as_millis()
        }
    }

    struct Fixed(u64);

    impl Policy for Fixed {
        fn delay_ms(&mut self, _: &mut Backoff) -> u64 {
            self.0
        }
    }

    /// CONNECTs the broker sees in the window, the original (0) connected at 0 and the
    /// duplicate (1) connecting at 0.
    fn connects(policy: &mut dyn Policy) -> usize {
        let window = WINDOW.as_millis() as u64;
        let mut backoff = [
            Backoff::new(BackoffConfig::default()),
            Backoff::new(BackoffConfig::default()),
        ];
        let mut since: [Option<u64>; 2] = [Some(0), None];
        let mut last_connect: Option<u64> = None;
        let mut attempts = BinaryHeap::from([Reverse((0u64, 1usize))]);
        let mut count = 0;
        while let Some(Reverse((t, who))) = attempts.pop() {
            if t > window {
                break;
            }
            count += 1;
            let throttled = last_connect.is_some_and(|last| t - last < RATE_MS);
            last_connect = Some(t);
            if throttled {
                let wait = policy.delay_ms(&mut backoff[who]);
                attempts.push(Reverse((t + wait + HANDSHAKE_MS, who)));
                continue;
            }
            since[who] = Some(t);
            let other = 1 - who;
            if let Some(up) = since[other].take() {
                if t - up >= STABLE_MS {
                    backoff[other].reset();
                }
                let wait = policy.delay_ms(&mut backoff[other]);
                attempts.push(Reverse((t + wait + HANDSHAKE_MS, other)));
            }
        }
        count
    }

    #[test]
    fn two_full_jitter_devices_stay_under_the_connect_bound() {
        let runs = 20_000;
        let counts: Vec<usize> = (0..runs)
            .map(|i| connects(&mut FullJitter(XorShift(0x9e37_79b9_7f4a_7c15 ^ (i + 1)))))
            .collect();
        let max = counts.iter().copied().max().unwrap_or_default();
        let mean = counts.iter().sum::<usize>() as f64 / runs as f64;
        assert!(
            max <= MAX_CONNECTS,
            "max {max} in {runs} runs (mean {mean:.1})"
        );
        assert!((5.0..11.0).contains(&mean), "mean {mean:.1}");
    }

    #[test]
    fn devices_retrying_every_second_or_faster_exceed_it() {
        for fixed_ms in [1000, 500, 100] {
            let count = connects(&mut Fixed(fixed_ms));
            assert!(count > MAX_CONNECTS, "{fixed_ms} ms: {count}");
        }
    }
}
