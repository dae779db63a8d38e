use super::*;
use crate::config::DeviceConfig;
use crate::log::{
    ConfigFailure, ConnectError, ConnectFailure, CredSource, DisconnectReason, FlashFile,
    LoadError, NetError, ProtocolViolation, ShutdownReason, SubscribeError, TimeError, TlsError,
};
use core::net::{IpAddr, Ipv4Addr};
use proptest::prelude::*;
use std::string::String;
use std::vec::Vec;

/// The device certificate's notAfter in these tests (2030-03-17).
const CERT_NOT_AFTER: u64 = 1_900_000_000;
/// What SNTP says in these tests (2026-11-19).
const SYNCED_EPOCH: u64 = 1_795_000_000;

/// xorshift32: deterministic, seeded per test.
struct Rng(u32);

impl RandomSource for Rng {
    fn next_u32(&mut self) -> u32 {
        let mut x = self.0.max(1);
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

/// Always the same draw.
struct Fixed(u32);

impl RandomSource for Fixed {
    fn next_u32(&mut self) -> u32 {
        self.0
    }
}

/// An owned copy of an action, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Act {
    Log(String),
    LoadConfig,
    LoadCredentials,
    JoinNetwork,
    SyncTime,
    Connect,
    Subscribe(String, Qos),
    Publish {
        payload: String,
        seq: u32,
        id: Option<u16>,
        dup: bool,
    },
    Ping,
    Disconnect,
    Sleep(u64),
}

impl Act {
    fn from(a: Action<'_>) -> Self {
        match a {
            Action::Log(line) => {
                // Every line the session prints parses back to itself.
                let text = line.to_string();
                assert_eq!(&text.parse::<Line>().unwrap(), line, "{text}");
                Act::Log(text)
            }
            Action::LoadConfig => Act::LoadConfig,
            Action::LoadCredentials => Act::LoadCredentials,
            Action::JoinNetwork => Act::JoinNetwork,
            Action::SyncTime => Act::SyncTime,
            Action::Connect => Act::Connect,
            Action::Subscribe { topic, qos } => Act::Subscribe(topic.into(), qos),
            Action::Publish(p) => Act::Publish {
                payload: String::from_utf8(p.payload.to_vec()).unwrap(),
                seq: p.seq,
                id: p.packet_id,
                dup: p.dup,
            },
            Action::Ping => Act::Ping,
            Action::Disconnect => Act::Disconnect,
            Action::Sleep(t) => Act::Sleep(t.as_millis()),
        }
    }
}

fn config(qos: u8) -> DeviceConfig {
    let mut c = DeviceConfig::new("localhost", "ESPthing").unwrap();
    c.qos = qos;
    c
}

const KEEPALIVE_MS: u64 = 60_000;

struct Rig<R> {
    s: Session<R>,
    now: u64,
    config: DeviceConfig,
    acts: Vec<Act>,
}

impl<R: RandomSource> Rig<R> {
    fn new(rng: R, qos: u8) -> Self {
        Self::with_settings(Settings::new("0.1.0", "virtual"), rng, qos)
    }

    fn with_settings(settings: Settings, rng: R, qos: u8) -> Self {
        Self {
            s: Session::new(settings, rng),
            now: 0,
            config: config(qos),
            acts: Vec::new(),
        }
    }

    /// Feed an event at `at` ms; returns the actions (the sleep included).
    fn at(&mut self, at: u64, event: Event<'_>) -> Vec<Act> {
        assert!(at >= self.now);
        self.now = at;
        let mut acts = Vec::new();
        self.s.handle(Instant::from_millis(at), event, &mut |a| {
            acts.push(Act::from(a))
        });
        // The sleep is last, strictly in the future, and equals next_deadline().
        let deadline = self.s.next_deadline().map(Instant::as_millis);
        match acts.last() {
            Some(Act::Sleep(t)) => {
                assert!(*t > at, "deadline {t} not after {at}: {acts:?}");
                assert_eq!(Some(*t), deadline);
            }
            _ => assert_eq!(deadline, None),
        }
        assert_eq!(
            acts.iter().filter(|a| matches!(a, Act::Sleep(_))).count(),
            usize::from(deadline.is_some())
        );
        self.acts.extend(acts.iter().cloned());
        acts
    }

    fn ev(&mut self, event: Event<'_>) -> Vec<Act> {
        self.at(self.now, event)
    }

    fn deadline(&self) -> u64 {
        self.s.next_deadline().unwrap().as_millis()
    }

    /// Tick at the next deadline.
    fn tick(&mut self) -> Vec<Act> {
        let d = self.deadline();
        self.at(d, Event::Tick)
    }

    /// Boot through config, creds, network, time; up to the `Connect` action.
    fn boot(&mut self) {
        assert!(self.ev(Event::Start).contains(&Act::LoadConfig));
        let config = self.config.clone();
        assert!(
            self.ev(Event::ConfigLoaded(&config))
                .contains(&Act::LoadCredentials)
        );
        let creds = Event::CredsLoaded {
            cert: 812,
            key: 121,
            ca: 837,
            source: CredSource::Flash,
            cert_not_after: Some(CERT_NOT_AFTER),
        };
        assert!(self.ev(creds).contains(&Act::JoinNetwork));
        let up = Event::NetUp {
            local_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        };
        assert!(self.ev(up).contains(&Act::SyncTime));
        assert!(
            self.ev(Event::TimeSynced(1_795_000_000))
                .contains(&Act::Connect)
        );
    }

    /// Answer the pending `Connect` and `Subscribe`.
    fn connect(&mut self) {
        let acts = self.ev(Event::Connected {
            session_present: false,
            handshake_ms: Some(38),
        });
        assert!(
            acts.contains(&Act::Subscribe("inTopic".into(), self.qos())),
            "{acts:?}"
        );
        self.ev(Event::Subscribed);
        assert_eq!(self.s.phase(), Phase::Run);
    }

    fn qos(&self) -> Qos {
        Qos::from_u8(self.config.qos)
    }

    /// Tick until the next `Connect` action (waiting out the backoff).
    fn wait_for_connect(&mut self) -> u64 {
        for _ in 0..10 {
            if self.tick().contains(&Act::Connect) {
                return self.now;
            }
        }
        panic!("no Connect: {:?}", self.acts);
    }
}

fn publishes(acts: &[Act]) -> Vec<(u32, Option<u16>, bool)> {
    acts.iter()
        .filter_map(|a| match a {
            Act::Publish { seq, id, dup, .. } => Some((*seq, *id, *dup)),
            _ => None,
        })
        .collect()
}

fn logs(acts: &[Act]) -> Vec<String> {
    acts.iter()
        .filter_map(|a| match a {
            Act::Log(l) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

/// `attempt=` and `delay_ms=` of the `mqtt: backoff` lines.
fn mqtt_backoffs(acts: &[Act]) -> Vec<(u32, u64)> {
    logs(acts)
        .iter()
        .map(|l| l.parse::<Line>().unwrap())
        .filter(|l| l.tag() == "mqtt" && l.message() == "backoff")
        .map(|l| {
            (
                l.field_as("attempt").unwrap(),
                l.field_as("delay_ms").unwrap(),
            )
        })
        .collect()
}

// ---- cadence ----

#[test]
fn cadence_has_zero_drift_over_10_000_periods() {
    let period = 2000;
    let mut c = CadenceSchedule::new(Duration::from_millis(period));
    let anchor = 12_345;
    c.start(Instant::from_millis(anchor));
    let mut rng = Rng(7);
    for k in 1..=10_000u64 {
        let slot = anchor + k * period;
        assert_eq!(c.next_deadline(), Some(Instant::from_millis(slot)));
        // Ticks come late by up to just under a period: still one fire per slot.
        let late = u64::from(rng.next_u32()) % period;
        assert_eq!(c.poll(Instant::from_millis(slot - 1)), None);
        let fire = c.poll(Instant::from_millis(slot + late)).unwrap();
        assert_eq!(fire.slot.as_millis(), slot);
        assert_eq!(fire.skipped, 0);
    }
}

#[test]
fn late_tick_publishes_once_and_skips_missed_slots() {
    let mut c = CadenceSchedule::new(Duration::from_millis(2000));
    c.start(Instant::from_millis(0));
    let fire = c.poll(Instant::from_millis(2000 + 4 * 2000 + 500)).unwrap();
    assert_eq!(fire.skipped, 4);
    assert_eq!(c.next_deadline(), Some(Instant::from_millis(12_000)));
    assert_eq!(c.poll(Instant::from_millis(10_600)), None);

    // The same through the session: one publish, a `skipped` line, the grid kept.
    let mut rig = Rig::new(Rng(1), 1);
    rig.boot();
    rig.connect();
    let anchor = rig.now;
    let acts = rig.at(anchor + 2000, Event::Tick);
    assert_eq!(publishes(&acts), [(1, Some(1), false)]);
    rig.ev(Event::PublishAcked(1));
    let acts = rig.at(anchor + 9_100, Event::Tick);
    assert_eq!(publishes(&acts), [(2, Some(2), false)]);
    assert!(
        logs(&acts)
            .iter()
            .any(|l| l.contains("publish: skipped slots=2 reason=late"))
    );
    assert_eq!(rig.deadline(), anchor + 10_000);
}

#[test]
fn session_publishes_on_the_grid_with_the_exact_payload() {
    let mut rig = Rig::new(Rng(3), 0);
    rig.boot();
    rig.connect();
    let anchor = rig.now;
    let mut rng = Rng(99);
    let mut keepalive_answers = 0;
    for k in 1..=10_000u64 {
        // Wake up late by a random amount; stay on the grid regardless.
        let slot = anchor + k * 2000;
        let late = u64::from(rng.next_u32()) % 1500;
        let acts = rig.at(slot + late, Event::Tick);
        if acts.contains(&Act::Ping) {
            rig.ev(Event::Received);
            keepalive_answers += 1;
        }
        let p: Vec<_> = acts
            .iter()
            .filter_map(|a| match a {
                Act::Publish { payload, seq, .. } => Some((payload.clone(), *seq)),
                _ => None,
            })
            .collect();
        assert_eq!(
            p,
            [(format!("{{\"message\": \"hello world #{k}\"}}"), k as u32)]
        );
    }
    assert!(keepalive_answers > 0);
    assert_eq!(rig.s.last_seq(), 10_000);
}

// ---- backoff ----

proptest! {
    #[test]
    fn backoff_delays_stay_within_full_jitter_bounds(seed in any::<u32>(), draws in 1usize..40) {
        let config = BackoffConfig::default();
        let mut b = Backoff::new(config);
        let mut rng = Rng(seed);
        let mut seen = Vec::new();
        for n in 0..draws {
            let ceiling = (500u64 << n.min(20)).min(60_000);
            prop_assert_eq!(b.ceiling().as_millis(), ceiling);
            let d = b.next_delay(&mut rng).as_millis();
            prop_assert!(d <= ceiling, "attempt {} delay {} > {}", n, d, ceiling);
            prop_assert!(d >= config.floor.as_millis());
            seen.push(d);
        }
        if draws >= 8 {
            seen.dedup();
            prop_assert!(seen.len() > 1, "constant delays {:?}", seen);
        }
    }

    #[test]
    fn backoff_never_overflows(base in any::<u64>(), cap in any::<u64>(), floor in any::<u64>(), r in any::<u32>()) {
        let config = BackoffConfig {
            base: Duration::from_millis(base),
            cap: Duration::from_millis(cap),
            floor: Duration::from_millis(floor),
            ..BackoffConfig::default()
        };
        let mut b = Backoff::new(config);
        for _ in 0..70 {
            let c = b.ceiling();
            prop_assert!(b.next_delay(&mut Fixed(r)) <= c);
        }
    }

    #[test]
    fn the_ceiling_is_at_most_half_the_outage_and_at_least_the_base(
        seed in any::<u32>(),
        attempts in 0u32..30,
        down_ms in 0u64..600_000,
    ) {
        let config = BackoffConfig::default();
        let mut b = Backoff::new(config);
        let mut rng = Rng(seed);
        for _ in 0..attempts {
            b.next_delay(&mut rng);
        }
        let by_attempt = b.ceiling().as_millis();
        let ceiling = by_attempt.min((down_ms / 2).max(500));
        let d = b.next_delay_after(Duration::from_millis(down_ms), &mut rng).as_millis();
        prop_assert!(d <= ceiling, "delay {} over ceiling {}", d, ceiling);
        prop_assert!(d >= 100, "delay {} under the floor", d);
    }
}

#[test]
fn zero_draws_are_floored_and_max_draws_hit_the_ceiling() {
    let mut b = Backoff::new(BackoffConfig::default());
    // Full jitter: a zero draw is the floor, a full one the ceiling.
    assert_eq!(b.next_delay(&mut Fixed(0)), Duration::from_millis(100));
    assert_eq!(
        b.next_delay(&mut Fixed(u32::MAX)),
        Duration::from_millis(1000)
    );
    let mut equal = Backoff::new(BackoffConfig {
        shape: super::JitterShape::Equal,
        ..BackoffConfig::default()
    });
    assert_eq!(equal.next_delay(&mut Fixed(0)), Duration::from_millis(250));
    b.reset();
    assert_eq!(b.attempt(), 0);
}

#[test]
fn the_comparison_shapes_draw_full_and_fixed_delays() {
    use super::JitterShape;
    let full = BackoffConfig {
        base: Duration::from_secs(1),
        shape: JitterShape::Full,
        outage_cap: false,
        ..BackoffConfig::default()
    };
    let mut b = Backoff::new(full);
    assert_eq!(b.next_delay(&mut Fixed(0)), Duration::from_millis(100));
    // No outage cap: a fresh outage does not lower the 2 s ceiling.
    assert_eq!(
        b.next_delay_after(Duration::ZERO, &mut Fixed(u32::MAX)),
        Duration::from_secs(2)
    );
    let fixed = BackoffConfig {
        base: Duration::from_secs(5),
        cap: Duration::from_secs(5),
        shape: JitterShape::Fixed,
        outage_cap: false,
        ..BackoffConfig::default()
    };
    let mut b = Backoff::new(fixed);
    for r in [0, 7, u32::MAX] {
        assert_eq!(b.next_delay(&mut Fixed(r)), Duration::from_secs(5));
    }
}

#[test]
fn reconnect_backoff_grows_and_resets_only_after_a_stable_connection() {
    let mut rig = Rig::new(Rng(11), 1);
    rig.boot();
    // Three quick failures: attempts 1, 2, 3. (Not a date error: that would re-sync
    // the clock first, see a_handshake_that_fails_for_a_time_reason_...)
    for _ in 0..3 {
        rig.ev(Event::ConnectFailed(ConnectFailure::Tls(
            TlsError::UnknownCa,
        )));
        rig.wait_for_connect();
    }
    // Up for 4 s only (under the 5 s stable period): no reset, the next is attempt 4.
    rig.connect();
    rig.at(
        rig.now + 4_000,
        Event::Disconnected(DisconnectReason::PeerClosed),
    );
    rig.wait_for_connect();
    // Up for 31 s: reset, attempt 1 again.
    rig.connect();
    let mut t = rig.now;
    for _ in 0..16 {
        t += 2000;
        rig.at(t, Event::Tick);
        rig.ev(Event::PublishAcked(rig.s.next_packet_id.wrapping_sub(1)));
    }
    rig.at(t, Event::Disconnected(DisconnectReason::PeerClosed));
    let attempts: Vec<u32> = mqtt_backoffs(&rig.acts).iter().map(|b| b.0).collect();
    assert_eq!(attempts, [1, 2, 3, 4, 1]);
    assert!(
        logs(&rig.acts)
            .iter()
            .any(|l| l.contains("tls: handshake failed error=unknown-ca"))
    );
}

#[test]
fn reconnect_delays_respect_the_backoff_and_vary() {
    let mut rig = Rig::new(Rng(5), 1);
    rig.boot();
    let mut last = rig.now;
    for _ in 0..12 {
        rig.ev(Event::ConnectFailed(ConnectFailure::Mqtt(
            ConnectError::Tcp,
        )));
        let at = rig.wait_for_connect();
        let (attempt, delay) = *mqtt_backoffs(&rig.acts).last().unwrap();
        assert_eq!(at - last, delay, "connect exactly after the logged delay");
        // Under the attempt's ceiling (the outage's may be lower), but never under a
        // second after the last attempt started (AWS IoT: one CONNECT per second per
        // client id).
        let ceiling = (500u64 << (attempt - 1)).min(60_000);
        assert!(
            (1000..=ceiling.max(1000)).contains(&delay),
            "{attempt}: {delay}"
        );
        last = at;
    }
    let mut delays: Vec<u64> = mqtt_backoffs(&rig.acts).iter().map(|b| b.1).collect();
    delays.dedup();
    assert!(delays.len() > 1);
}

/// Device Advisor's unstable-connection case: the broker accepts CONNECT, then drops the
/// connection at once, again and again. The backoff must keep growing, not reset.
#[test]
fn a_connack_then_an_immediate_drop_does_not_reset_the_backoff() {
    let mut rig = Rig::new(Rng(3), 1);
    rig.boot();
    let mut previous_ceiling = 0;
    for n in 1..=6u32 {
        rig.ev(Event::Disconnected(DisconnectReason::PeerClosed));
        let (attempt, _) = *mqtt_backoffs(&rig.acts).last().unwrap();
        assert_eq!(attempt, n, "the count goes on through unstable connections");
        let ceiling = rig.s.reconnect.ceiling().as_millis();
        assert!(ceiling >= previous_ceiling);
        previous_ceiling = ceiling;
        rig.wait_for_connect();
        rig.connect();
    }
}

/// A link that flaps (3 s down every 10 s) comes back fast each time: a connection that
/// stayed up its stable period resets the count, so every outage starts at attempt 1.
#[test]
fn a_flapping_link_with_stable_spells_starts_each_outage_afresh() {
    let mut rig = Rig::new(Rng(9), 1);
    rig.boot();
    for _ in 0..5 {
        rig.at(
            rig.now + 7_000,
            Event::Disconnected(DisconnectReason::PeerClosed),
        );
        let (attempt, delay) = *mqtt_backoffs(&rig.acts).last().unwrap();
        assert_eq!(attempt, 1);
        assert!(
            (100..=1000).contains(&delay),
            "first retry within a second: {delay}"
        );
        rig.wait_for_connect();
        rig.connect();
    }
}

/// Another client with this id took the session over (DISCONNECT 0x8E): no outage that
/// ends, so the delays follow the attempt count alone and the two clients thin out.
#[test]
fn a_taken_over_session_backs_off_by_attempt_not_by_outage() {
    // Every draw at the ceiling, so a delay shows which ceiling applied.
    let mut rig = Rig::new(Fixed(u32::MAX), 1);
    rig.boot();
    let mut delays = Vec::new();
    for _ in 0..5 {
        rig.at(rig.now + 200, Event::ServerDisconnected { code: 0x8E });
        delays.push(mqtt_backoffs(&rig.acts).last().unwrap().1);
        rig.wait_for_connect();
        rig.connect();
    }
    // 500 ms * 2^n, the first raised to 1 s after the last attempt started (200 ms ago);
    // an outage-capped schedule would have stayed near 1 s throughout.
    assert_eq!(delays, [800, 1000, 2000, 4000, 8000]);
}

/// However the attempts fail, two connection attempts never start less than a second
/// apart.
#[test]
fn connection_attempts_are_at_least_a_second_apart() {
    let mut rig = Rig::new(Rng(21), 1);
    rig.boot();
    let mut starts = vec![rig.now];
    for i in 0..20 {
        if i % 3 == 0 {
            rig.connect();
            rig.ev(Event::Disconnected(DisconnectReason::PeerClosed));
        } else {
            rig.ev(Event::ConnectFailed(ConnectFailure::Mqtt(
                ConnectError::Tcp,
            )));
        }
        starts.push(rig.wait_for_connect());
    }
    for pair in starts.windows(2) {
        assert!(pair[1] - pair[0] >= 1000, "attempts at {pair:?}");
    }
}

// ---- keep-alive ----

#[test]
fn dead_link_is_detected_within_1_5x_keepalive() {
    let mut rig = Rig::new(Rng(2), 1);
    rig.boot();
    rig.connect();
    let last_rx = rig.now;
    // Publishes go out but nothing comes back: no PUBACK, no PINGRESP.
    let mut pinged = false;
    loop {
        let acts = rig.tick();
        pinged |= acts.contains(&Act::Ping);
        if acts.contains(&Act::Disconnect) {
            assert!(rig.now <= last_rx + KEEPALIVE_MS * 3 / 2);
            assert!(rig.now >= last_rx + KEEPALIVE_MS);
            assert!(
                logs(&acts)
                    .iter()
                    .any(|l| l.contains("reason=keepalive-timeout"))
            );
            break;
        }
        assert!(rig.now < last_rx + KEEPALIVE_MS * 3 / 2, "not detected");
    }
    assert!(pinged);
    assert!(!rig.s.is_connected());
    rig.wait_for_connect();
}

#[test]
fn healthy_quiet_link_pings_and_stays_up() {
    let mut rig = Rig::new(Rng(2), 0);
    rig.boot();
    rig.connect();
    let start = rig.now;
    let mut pings = 0;
    while rig.now < start + 10 * KEEPALIVE_MS {
        if rig.tick().contains(&Act::Ping) {
            pings += 1;
            rig.at(rig.now + 40, Event::Received);
        }
        assert!(rig.s.is_connected());
    }
    assert!(pings >= 10, "{pings}");
}

// ---- reconnect, sequence, QoS 1 ----

#[test]
fn a_resumed_session_keeps_the_subscription_and_seq_continues() {
    let mut rig = Rig::new(Rng(8), 0);
    rig.boot();
    rig.connect();
    for _ in 0..3 {
        rig.tick();
    }
    assert_eq!(rig.s.last_seq(), 3);
    rig.ev(Event::Disconnected(DisconnectReason::PeerClosed));
    // No publishing while disconnected.
    let acts = rig.tick();
    assert!(acts.contains(&Act::Connect), "{acts:?}");
    assert!(publishes(&acts).is_empty());
    let acts = rig.ev(Event::Connected {
        session_present: true,
        handshake_ms: None,
    });
    assert!(
        !acts.iter().any(|a| matches!(a, Act::Subscribe(..))),
        "{acts:?}"
    );
    assert!(
        logs(&acts)
            .iter()
            .any(|l| l.contains("mqtt: subscription resumed topic=inTopic qos=0")),
        "{acts:?}"
    );
    assert_eq!(rig.s.phase(), Phase::Run);
    let mut seqs = Vec::new();
    while seqs.len() < 2 {
        seqs.extend(publishes(&rig.tick()).iter().map(|p| p.0));
    }
    assert_eq!(seqs, [4, 5]);
}

#[test]
fn a_fresh_session_or_an_unconfirmed_subscription_is_subscribed_again() {
    let mut rig = Rig::new(Rng(8), 1);
    rig.boot();
    rig.connect();
    // The broker lost the session: subscribe again.
    rig.ev(Event::Disconnected(DisconnectReason::PeerClosed));
    rig.wait_for_connect();
    let acts = rig.ev(Event::Connected {
        session_present: false,
        handshake_ms: None,
    });
    assert!(acts.contains(&Act::Subscribe("inTopic".into(), Qos::AtLeastOnce)));
    // No SUBACK: the session may hold the subscription, but the device cannot know, so a
    // resumed session is subscribed again too.
    let acts = rig.at(rig.now + 10_000, Event::Tick);
    assert!(acts.contains(&Act::Disconnect), "{acts:?}");
    rig.wait_for_connect();
    let acts = rig.ev(Event::Connected {
        session_present: true,
        handshake_ms: None,
    });
    assert!(acts.contains(&Act::Subscribe("inTopic".into(), Qos::AtLeastOnce)));
}

#[test]
fn misbehaviours_break_the_rules_they_name() {
    let mut settings = Settings::new("0.1.0", "virtual");
    settings.misbehaviour = Misbehaviour {
        resubscribe_on_resume: true,
        ignore_suback_timeout: true,
    };
    let mut rig = Rig::with_settings(settings, Rng(8), 1);
    rig.boot();
    rig.connect();
    rig.ev(Event::Disconnected(DisconnectReason::PeerClosed));
    rig.wait_for_connect();
    let acts = rig.ev(Event::Connected {
        session_present: true,
        handshake_ms: None,
    });
    assert!(acts.contains(&Act::Subscribe("inTopic".into(), Qos::AtLeastOnce)));
    // No SUBACK: the device runs on unsubscribed instead of retrying.
    let acts = rig.at(rig.now + 10_000, Event::Tick);
    assert!(!acts.contains(&Act::Disconnect), "{acts:?}");
    assert_eq!(rig.s.phase(), Phase::Run);
}

#[test]
fn qos1_publish_is_retried_with_the_same_packet_id_until_acked() {
    let mut rig = Rig::new(Rng(4), 1);
    rig.boot();
    rig.connect();
    let acts = rig.tick();
    assert_eq!(publishes(&acts), [(1, Some(1), false)]);
    // The client used its own id 17: the session adopts it.
    rig.ev(Event::PublishSent {
        seq: 1,
        packet_id: 17,
    });
    let sent = rig.now;
    let mut retries = Vec::new();
    while rig.now < sent + 12_000 {
        let acts = rig.tick();
        retries.extend(publishes(&acts).into_iter().filter(|p| p.2));
        if publishes(&acts).iter().any(|p| !p.2) {
            let new = publishes(&acts).into_iter().find(|p| !p.2).unwrap();
            rig.ev(Event::PublishAcked(new.1.unwrap()));
        }
    }
    assert_eq!(retries, [(1, Some(17), true), (1, Some(17), true)]);
    assert!(
        logs(&rig.acts)
            .iter()
            .any(|l| l.contains("publish: retry topic=outTopic seq=1 id=17 attempt=3"))
    );
    rig.ev(Event::PublishAcked(17));
    assert_eq!(rig.s.in_flight(), 0);
    let until = rig.now + 20_000;
    while rig.now < until {
        let acts = rig.tick();
        for p in publishes(&acts) {
            assert!(!p.2, "retry after ack: {p:?}");
            rig.ev(Event::PublishAcked(p.1.unwrap()));
        }
    }
}

#[test]
fn by_reconnect_a_missing_puback_drops_the_link_and_resends_with_the_same_id() {
    let mut settings = Settings::new("0.1.0", "virtual");
    settings.retransmit = Retransmit::ByReconnect;
    let mut rig = Rig::new(Rng(9), 1);
    rig.s = Session::new(settings, Rng(9));
    rig.boot();
    rig.connect();
    assert_eq!(publishes(&rig.tick()), [(1, Some(1), false)]);
    rig.ev(Event::PublishSent {
        seq: 1,
        packet_id: 23,
    });
    let sent = rig.now;
    // Nothing is resent on the live connection; after `publish_retry` the link is dropped.
    let mut dropped_at = None;
    while dropped_at.is_none() {
        let acts = rig.tick();
        assert!(
            rig.now <= sent + 5_000,
            "no drop by publish_retry: {acts:?}"
        );
        for p in publishes(&acts) {
            assert!(!p.2, "resent on a live connection: {p:?}");
            if p.0 != 1 {
                rig.ev(Event::PublishAcked(p.1.unwrap()));
            }
        }
        if acts.contains(&Act::Disconnect) {
            dropped_at = Some(rig.now);
        }
    }
    assert_eq!(dropped_at, Some(sent + 5_000));
    assert!(
        logs(&rig.acts)
            .iter()
            .any(|l| l.contains("mqtt: disconnected reason=puback-timeout"))
    );
    rig.wait_for_connect();
    // The resumed session holds the subscription: running (and resending) at once.
    let resent = publishes(&rig.ev(Event::Connected {
        session_present: true,
        handshake_ms: None,
    }));
    assert_eq!(resent.first(), Some(&(1, Some(23), true)));
    rig.ev(Event::PublishAcked(23));
    assert!(rig.s.in_flight() < MAX_IN_FLIGHT);
}

#[test]
fn unacked_qos1_publishes_are_resent_after_reconnect_and_bounded() {
    let mut rig = Rig::new(Rng(6), 1);
    rig.boot();
    rig.connect();
    // Never acked: the in-flight window fills, then slots are skipped (seq not used).
    let mut seqs = Vec::new();
    for _ in 0..6 {
        seqs.extend(
            publishes(&rig.at(rig.now + 2000, Event::Tick))
                .iter()
                .filter(|p| !p.2)
                .map(|p| p.0),
        );
    }
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(rig.s.in_flight(), MAX_IN_FLIGHT);
    assert!(
        logs(&rig.acts)
            .iter()
            .any(|l| l.contains("reason=in-flight-full"))
    );
    rig.ev(Event::Disconnected(DisconnectReason::PeerClosed));
    rig.wait_for_connect();
    let acts = rig.ev(Event::Connected {
        session_present: true,
        handshake_ms: None,
    });
    let resent = publishes(&acts);
    assert_eq!(
        resent,
        [
            (1, Some(1), true),
            (2, Some(2), true),
            (3, Some(3), true),
            (4, Some(4), true)
        ]
    );
    for id in 1..=4 {
        rig.ev(Event::PublishAcked(id));
    }
    let mut next = Vec::new();
    while next.is_empty() {
        next = publishes(&rig.tick());
    }
    assert_eq!(next, [(5, Some(5), false)]);
}

// ---- boot phases ----

#[test]
fn boot_logs_and_never_connects_before_time_sync() {
    let mut rig = Rig::new(Rng(12), 1);
    rig.ev(Event::Start);
    let config = rig.config.clone();
    rig.at(10, Event::ConfigLoaded(&config));
    rig.at(
        15,
        Event::CredsLoaded {
            cert: 812,
            key: 121,
            ca: 837,
            source: CredSource::Flash,
            cert_not_after: None,
        },
    );
    let up = Event::NetUp {
        local_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
    };
    assert!(rig.at(700, up).contains(&Act::SyncTime));
    // SNTP fails twice (once by timeout): retried with backoff, no Connect meanwhile.
    let acts = rig.at(800, Event::TimeSyncFailed(TimeError::Timeout));
    assert!(!acts.contains(&Act::SyncTime));
    let acts = rig.tick();
    assert!(acts.contains(&Act::SyncTime), "{acts:?}");
    let sent = rig.now;
    let acts = rig.tick();
    assert_eq!(rig.now, sent + 30_000, "request timeout");
    assert!(
        logs(&acts)
            .iter()
            .any(|l| l.contains("time: sync failed error=timeout server=pool.ntp.org:123"))
    );
    assert!(rig.tick().contains(&Act::SyncTime));
    assert!(!rig.acts.contains(&Act::Connect));
    assert!(
        rig.ev(Event::TimeSynced(1_795_000_000))
            .contains(&Act::Connect)
    );
    assert_eq!(
        rig.s.unix_time(Instant::from_millis(rig.now + 5_500)),
        Some(1_795_000_005)
    );
    let logs = logs(&rig.acts);
    assert!(
        logs[0].starts_with("I (      10) boot: firmware=0.1.0 board=virtual client_id=ESPthing")
    );
    assert!(logs[1].starts_with("I (      10) config: loaded endpoint=localhost:8883"));
    assert_eq!(
        logs[2],
        "I (      15) creds: cert=812B key=121B ca=837B source=flash"
    );
    assert_eq!(logs[3], "I (     700) wifi: up ip=10.0.0.2");
    assert!(logs.iter().any(|l| l.contains("time: backoff attempt=2")));
    assert!(
        logs.iter()
            .any(|l| l.contains("mqtt: connecting endpoint=localhost:8883"))
    );
}

#[test]
fn bad_config_and_missing_creds_are_logged_and_retried() {
    let mut rig = Rig::new(Rng(13), 1);
    rig.ev(Event::Start);
    let e = DeviceConfig::from_json(b"{}").unwrap_err();
    let acts = rig.at(5, Event::ConfigFailed(ConfigFailure::Invalid(e)));
    assert!(
        logs(&acts)[0].starts_with("E (       5) config: invalid field=endpoint error=missing")
    );
    assert!(rig.tick().contains(&Act::LoadConfig));
    let config = rig.config.clone();
    rig.ev(Event::ConfigLoaded(&config));
    let acts = rig.ev(Event::CredsFailed {
        file: FlashFile::Key,
        error: LoadError::Missing,
    });
    assert!(logs(&acts)[0].contains("creds: load failed file=/private.der error=missing"));
    assert!(logs(&acts)[1].contains("creds: backoff attempt=1"));
    assert!(rig.tick().contains(&Act::LoadCredentials));
}

#[test]
fn withheld_connack_and_suback_time_out_into_a_reconnect() {
    let mut rig = Rig::new(Rng(14), 1);
    rig.boot();
    let acts = rig.tick();
    assert!(acts.contains(&Act::Disconnect), "{acts:?}");
    assert!(
        logs(&acts)
            .iter()
            .any(|l| l.contains("mqtt: connect failed error=timeout"))
    );
    rig.wait_for_connect();
    rig.ev(Event::Connected {
        session_present: false,
        handshake_ms: None,
    });
    let acts = rig.tick();
    assert!(acts.contains(&Act::Disconnect));
    assert!(
        logs(&acts)
            .iter()
            .any(|l| l.contains("subscribe failed topic=inTopic error=timeout"))
    );
    rig.wait_for_connect();
}

#[test]
fn network_loss_goes_back_to_joining_and_keeps_the_clock() {
    let mut rig = Rig::new(Rng(15), 0);
    rig.boot();
    rig.connect();
    let acts = rig.ev(Event::NetDown(NetError::LinkLost));
    assert!(acts.contains(&Act::Disconnect));
    assert!(acts.contains(&Act::JoinNetwork));
    assert!(
        logs(&acts)
            .iter()
            .any(|l| l.contains("mqtt: disconnected reason=network-down"))
    );
    let up = Event::NetUp {
        local_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)),
    };
    let acts = rig.at(rig.now + 50, up);
    assert!(!acts.contains(&Act::SyncTime));
    rig.wait_for_connect();
}

#[test]
fn inbound_is_logged_escaped_and_shutdown_stops() {
    let mut rig = Rig::new(Rng(16), 1);
    rig.boot();
    rig.connect();
    let acts = rig.ev(Event::Inbound {
        topic: "inTopic",
        payload: &[b'x'; 5000],
    });
    let line: Line = logs(&acts)[0].parse().unwrap();
    assert_eq!(line.tag(), "inbound");
    assert_eq!(line.payload_size(), Some(5000));
    assert!(line.is_truncated());
    let acts = rig.ev(Event::Shutdown(ShutdownReason::Requested));
    assert_eq!(acts[1], Act::Disconnect);
    assert_eq!(rig.s.next_deadline(), None);
    assert!(rig.ev(Event::Tick).is_empty());
}

// ---- arbitrary event sequences ----

fn arb_event() -> impl Strategy<Value = (u64, u8, u16)> {
    (0u64..120_000, 0u8..28, any::<u16>())
}

fn event_for(kind: u8, n: u16, config: &DeviceConfig) -> Event<'_> {
    let up = Event::NetUp {
        local_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    match kind {
        0 => Event::Start,
        1 => Event::ConfigLoaded(config),
        2 => Event::CredsLoaded {
            cert: 1,
            key: 2,
            ca: 3,
            source: CredSource::Flash,
            cert_not_after: Some(CERT_NOT_AFTER),
        },
        3 => up,
        4 => Event::NetDown(NetError::LinkLost),
        5 => Event::TimeSynced(SYNCED_EPOCH + u64::from(n)),
        6 => Event::TimeSyncFailed(TimeError::Timeout),
        7 => Event::Connected {
            session_present: n.is_multiple_of(2),
            handshake_ms: None,
        },
        8 => Event::ConnectFailed(ConnectFailure::Tls(TlsError::UnknownCa)),
        9 => Event::Subscribed,
        10 => Event::SubscribeFailed(SubscribeError::Refused),
        11 => Event::Disconnected(DisconnectReason::PeerClosed),
        12 => Event::Inbound {
            topic: "inTopic",
            payload: b"\x00hi\xff",
        },
        13 => Event::PublishAcked(n % 8),
        14 => Event::PublishSent {
            seq: (n % 8).into(),
            packet_id: n,
        },
        15 => Event::Received,
        16 => Event::ConfigFailed(ConfigFailure::Load(LoadError::Missing)),
        17 => Event::CredsFailed {
            file: FlashFile::Ca,
            error: LoadError::Malformed,
        },
        18 => Event::TimeSynced(n.into()),
        19 => Event::TimeKissOfDeath(*b"RATE"),
        20 => Event::ServerDisconnected { code: n as u8 },
        21 => Event::PublishRefused {
            packet_id: n % 8,
            code: 0x80,
        },
        22 => Event::MaxQos(Qos::AtMostOnce),
        23 => Event::ProtocolViolation(ProtocolViolation::TopicAliasInvalid),
        24 => Event::Inbound {
            topic: "other",
            payload: b"x",
        },
        25 => Event::ConnectFailed(ConnectFailure::Tls(TlsError::CertificateExpired)),
        _ => Event::Tick,
    }
}

proptest! {
    #[test]
    fn any_event_sequence_keeps_the_invariants(
        seed in any::<u32>(),
        qos in 0u8..2,
        steps in proptest::collection::vec(arb_event(), 1..200),
    ) {
        let mut rig = Rig::new(Rng(seed), qos);
        let config = rig.config.clone();
        let mut last_seq = 0;
        // The broker's Maximum QoS 0 (kind 22) holds until the next connection (kind 7).
        let mut downgraded = false;
        for (dt, kind, n) in steps {
            if kind == 7 && rig.s.phase() == Phase::Connect {
                downgraded = false;
            }
            if kind == 22 && rig.s.is_connected() {
                downgraded = true;
            }
            // Half the time follow the deadline, as a driver would.
            let at = if dt.is_multiple_of(2) { rig.s.next_deadline().map_or(rig.now + dt, Instant::as_millis) } else { rig.now + dt };
            let acts = rig.at(at, event_for(kind, n, &config));
            for (seq, id, dup) in publishes(&acts) {
                if !dup {
                    prop_assert_eq!(seq, last_seq + 1);
                    last_seq = seq;
                }
                prop_assert_eq!(id.is_some(), qos == 1 && !downgraded);
            }
            prop_assert!(rig.s.in_flight() <= MAX_IN_FLIGHT);
            if !acts.is_empty() && rig.s.phase() != Phase::Idle {
                // Connect only with a synced clock.
                if acts.contains(&Act::Connect) {
                    prop_assert!(rig.s.unix_time(Instant::from_millis(rig.now)).is_some());
                }
            }
        }
    }
}

#[test]
fn settings_of_zero_cannot_make_the_session_spin() {
    let mut settings = Settings::new("0", "b");
    settings.backoff.floor = Duration::ZERO;
    settings.request_timeout = Duration::ZERO;
    let mut s = Session::new(settings, Fixed(0));
    let mut now = 0;
    let mut n = 0;
    s.handle(Instant::from_millis(now), Event::Start, &mut |_| {});
    for _ in 0..100 {
        let d = s.next_deadline().unwrap().as_millis();
        assert!(d > now);
        now = d;
        s.handle(Instant::from_millis(now), Event::Tick, &mut |a| {
            n += usize::from(matches!(a, Action::LoadConfig));
        });
    }
    assert!(n > 10);
}

// ---- a wrong clock, a refusing broker, a broker that breaks the protocol ----

/// Boot up to the `SyncTime` action (config, creds with the test notAfter, network).
fn boot_to_time_sync(rig: &mut Rig<Rng>) {
    rig.ev(Event::Start);
    let config = rig.config.clone();
    rig.ev(Event::ConfigLoaded(&config));
    rig.ev(Event::CredsLoaded {
        cert: 812,
        key: 121,
        ca: 837,
        source: CredSource::Flash,
        cert_not_after: Some(CERT_NOT_AFTER),
    });
    let acts = rig.ev(Event::NetUp {
        local_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
    });
    assert!(acts.contains(&Act::SyncTime), "{acts:?}");
}

/// Tick until the session asks for `want` (at most 5000 deadlines). While connected,
/// the broker answers each tick (keep-alive traffic), so the link stays up.
fn tick_until(rig: &mut Rig<Rng>, want: &Act) -> Vec<Act> {
    for _ in 0..5000 {
        let acts = rig.tick();
        if acts.contains(want) {
            return acts;
        }
        if rig.s.is_connected() {
            rig.ev(Event::Received);
        }
    }
    panic!("no {want:?}: {:?}", rig.acts);
}

#[test]
fn a_1970_answer_is_refused_as_before_build_and_sntp_is_asked_again() {
    let mut rig = Rig::new(Rng(21), 1);
    boot_to_time_sync(&mut rig);
    let acts = rig.ev(Event::TimeSynced(0));
    assert!(!acts.contains(&Act::Connect), "{acts:?}");
    assert!(
        logs(&acts)
            .iter()
            .any(|l| l.contains("time: implausible epoch=0 reason=before-build")),
        "{acts:?}"
    );
    assert_eq!(rig.s.unix_time(Instant::from_millis(rig.now)), None);
    tick_until(&mut rig, &Act::SyncTime);
    let acts = rig.ev(Event::TimeSynced(SYNCED_EPOCH));
    assert!(acts.contains(&Act::Connect), "{acts:?}");
}

#[test]
fn a_2100_answer_is_refused_as_after_the_certificates_expiry() {
    let mut rig = Rig::new(Rng(22), 1);
    boot_to_time_sync(&mut rig);
    let year_2100 = 4_102_444_800;
    let acts = rig.ev(Event::TimeSynced(year_2100));
    assert!(!acts.contains(&Act::Connect), "{acts:?}");
    assert!(
        logs(&acts)
            .iter()
            .any(|l| l.contains("reason=after-cert-expiry")),
        "{acts:?}"
    );
    // Within the margin after notAfter the time is believed (the handshake will say
    // whether the certificate is really expired).
    tick_until(&mut rig, &Act::SyncTime);
    let acts = rig.ev(Event::TimeSynced(CERT_NOT_AFTER + 86_400));
    assert!(acts.contains(&Act::Connect), "{acts:?}");
}

#[test]
fn the_build_date_is_the_clock_floor() {
    let mut settings = Settings::new("0.1.0", "test");
    settings.clock_floor = SYNCED_EPOCH;
    let mut rig = Rig::new(Rng(23), 1);
    rig.s = Session::new(settings, Rng(23));
    boot_to_time_sync(&mut rig);
    let acts = rig.ev(Event::TimeSynced(SYNCED_EPOCH - 1));
    assert!(!acts.contains(&Act::Connect), "{acts:?}");
    tick_until(&mut rig, &Act::SyncTime);
    assert!(
        rig.ev(Event::TimeSynced(SYNCED_EPOCH))
            .contains(&Act::Connect)
    );
}

#[test]
fn the_clock_is_synced_again_every_hour_while_connected() {
    let mut rig = Rig::new(Rng(24), 0);
    rig.boot();
    rig.connect();
    let synced_at = rig.now;
    let acts = tick_until(&mut rig, &Act::SyncTime);
    assert!(rig.now >= synced_at + 3_600_000, "{}", rig.now);
    // Still connected and publishing: the re-sync runs beside the connection.
    assert!(!acts.contains(&Act::Disconnect));
    assert_eq!(rig.s.phase(), Phase::Run);
    let epoch = SYNCED_EPOCH + 3600;
    rig.ev(Event::TimeSynced(epoch));
    assert_eq!(rig.s.unix_time(Instant::from_millis(rig.now)), Some(epoch));
    // A failed re-sync keeps the clock in use and tries again later.
    tick_until(&mut rig, &Act::SyncTime);
    let acts = rig.ev(Event::TimeSyncFailed(TimeError::Timeout));
    assert!(!acts.contains(&Act::Disconnect));
    assert!(rig.s.unix_time(Instant::from_millis(rig.now)).is_some());
    let failed_at = rig.now;
    tick_until(&mut rig, &Act::SyncTime);
    assert!(
        rig.now - failed_at <= 2_000,
        "retried after {}",
        rig.now - failed_at
    );
}

#[test]
fn an_unanswered_resync_times_out_and_is_retried() {
    let mut rig = Rig::new(Rng(25), 0);
    rig.boot();
    rig.connect();
    tick_until(&mut rig, &Act::SyncTime);
    let asked = rig.now;
    // Nobody answers: the session notices after its request timeout and asks again.
    tick_until(&mut rig, &Act::SyncTime);
    assert!(rig.now > asked + 30_000);
    assert!(
        logs(&rig.acts)
            .iter()
            .any(|l| l.contains("time: sync failed error=timeout"))
    );
}

#[test]
fn a_handshake_that_fails_for_a_time_reason_syncs_the_clock_before_the_next_attempt() {
    for error in [
        TlsError::CertificateExpired,
        TlsError::CertificateNotYetValid,
        TlsError::ClockNotSet,
    ] {
        let mut rig = Rig::new(Rng(26), 1);
        rig.boot();
        let acts = rig.ev(Event::ConnectFailed(ConnectFailure::Tls(error)));
        assert!(acts.contains(&Act::SyncTime), "{error:?}: {acts:?}");
        assert!(!acts.contains(&Act::Connect));
        let acts = rig.ev(Event::TimeSynced(SYNCED_EPOCH + 10));
        assert!(!acts.contains(&Act::Connect), "backoff still applies");
        tick_until(&mut rig, &Act::Connect);
    }
    // Other TLS failures keep the clock and just back off.
    let mut rig = Rig::new(Rng(27), 1);
    rig.boot();
    let acts = rig.ev(Event::ConnectFailed(ConnectFailure::Tls(
        TlsError::UnknownCa,
    )));
    assert!(!acts.contains(&Act::SyncTime), "{acts:?}");
}

#[test]
fn a_kiss_of_death_is_logged_with_its_code_and_backs_off_at_least_64_s() {
    let mut rig = Rig::new(Rng(28), 1);
    boot_to_time_sync(&mut rig);
    let at = rig.now;
    let acts = rig.ev(Event::TimeKissOfDeath(*b"RATE"));
    assert!(
        logs(&acts)
            .iter()
            .any(|l| l.contains("time: sync failed error=kiss-of-death code=RATE")),
        "{acts:?}"
    );
    tick_until(&mut rig, &Act::SyncTime);
    assert!(rig.now - at >= 64_000, "retried after {} ms", rig.now - at);
}

#[test]
fn inbound_on_a_topic_never_subscribed_is_not_taken_as_ours() {
    let mut rig = Rig::new(Rng(29), 1);
    rig.boot();
    rig.connect();
    let acts = rig.ev(Event::Inbound {
        topic: "other/topic",
        payload: b"hello",
    });
    let lines = logs(&acts);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("W (")
                && l.contains("inbound: unsolicited topic=other/topic bytes=5")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("payload=hello")));
    let acts = rig.ev(Event::Inbound {
        topic: "inTopic",
        payload: b"hello",
    });
    assert!(
        logs(&acts)
            .iter()
            .any(|l| l.contains("inbound: topic=inTopic bytes=5 payload=hello"))
    );
}

#[test]
fn a_puback_with_a_failure_code_is_a_refusal_not_a_success() {
    let mut rig = Rig::new(Rng(30), 1);
    rig.boot();
    rig.connect();
    let acts = rig.tick();
    assert_eq!(publishes(&acts), [(1, Some(1), false)]);
    assert_eq!(rig.s.in_flight(), 1);
    let acts = rig.ev(Event::PublishRefused {
        packet_id: 1,
        code: 0x80,
    });
    assert!(
        logs(&acts)
            .iter()
            .any(|l| l.contains("E (") && l.contains("publish: refused seq=1 id=1 code=0x80")),
        "{acts:?}"
    );
    // Done with (no retry on this connection), and the device stays connected.
    assert_eq!(rig.s.in_flight(), 0);
    assert!(!acts.contains(&Act::Disconnect));
    assert_eq!(rig.s.phase(), Phase::Run);
}

#[test]
fn a_server_disconnect_is_logged_with_its_reason_code() {
    let mut rig = Rig::new(Rng(31), 1);
    rig.boot();
    rig.connect();
    let acts = rig.ev(Event::ServerDisconnected { code: 0x98 });
    let lines = logs(&acts);
    assert!(
        lines.iter().any(|l| l.contains(
            "mqtt: disconnected reason=server-disconnect code=0x98 name=administrative-action"
        )),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("peer-closed")));
    rig.wait_for_connect();
}

#[test]
fn a_broker_maximum_qos_of_0_downgrades_publishes_and_says_so() {
    let mut rig = Rig::new(Rng(32), 1);
    rig.boot();
    rig.ev(Event::Connected {
        session_present: false,
        handshake_ms: None,
    });
    let acts = rig.ev(Event::MaxQos(Qos::AtMostOnce));
    assert!(
        logs(&acts)
            .iter()
            .any(|l| l.contains("mqtt: qos downgraded max_qos=0 qos=1")),
        "{acts:?}"
    );
    rig.ev(Event::Subscribed);
    let mut sent = Vec::new();
    while sent.len() < 3 {
        sent.extend(publishes(&rig.tick()));
    }
    // QoS 0: no packet id, nothing waits for a PUBACK that will never come.
    assert!(sent.iter().all(|p| p.1.is_none() && !p.2), "{sent:?}");
    assert_eq!(rig.s.in_flight(), 0);
    // The next connection starts from the configured QoS again.
    rig.ev(Event::Disconnected(DisconnectReason::PeerClosed));
    rig.wait_for_connect();
    rig.connect();
    let first = loop {
        if let Some(p) = publishes(&rig.tick()).first() {
            break *p;
        }
    };
    assert!(first.1.is_some(), "{first:?}");
}

#[test]
fn a_protocol_violation_is_named_and_the_device_reconnects() {
    let mut rig = Rig::new(Rng(33), 1);
    rig.boot();
    rig.connect();
    let acts = rig.ev(Event::ProtocolViolation(
        ProtocolViolation::TopicAliasInvalid,
    ));
    let lines = logs(&acts);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("mqtt: protocol violation error=topic-alias-invalid code=0x94")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("mqtt: disconnected reason=protocol-error"))
    );
    rig.wait_for_connect();
}

#[test]
fn the_clock_floor_is_a_day_before_the_build_and_never_before_2020() {
    assert_eq!(clock_floor("1795000000"), 1_795_000_000 - 86_400);
    assert_eq!(clock_floor(" 1795000000\n"), 1_795_000_000 - 86_400);
    assert_eq!(clock_floor("12"), DEFAULT_CLOCK_FLOOR);
    assert_eq!(clock_floor("not a number"), DEFAULT_CLOCK_FLOOR);
}

#[test]
fn the_resync_period_comes_from_the_config() {
    let mut rig = Rig::new(Rng(34), 0);
    rig.config.ntp.resync_s = 600;
    rig.boot();
    rig.connect();
    let synced_at = rig.now;
    tick_until(&mut rig, &Act::SyncTime);
    assert!(
        (synced_at + 600_000..synced_at + 602_001).contains(&rig.now),
        "re-synced at {} ms, synced at {synced_at} ms",
        rig.now
    );
}
