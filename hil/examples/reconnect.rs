//! Reconnect bench: how fast the device is back after an outage, how it behaves on a
//! flapping link, and what a fleet does when its broker restarts.
//!
//! ```sh
//! make bench                # cargo run --release -p hil --example reconnect
//! ```
//!
//! - **Outages** (real processes): one virtual device per outage length against its own
//!   in-process mock broker (the HIL rig: fresh test PKI, loopback ports, serial on a
//!   pseudo-terminal), all lengths at once. Each outage closes the broker's listener and
//!   drops the device's connection, waits the length, then listens again. Measured: from
//!   the broker's return to the broker accepting the device's CONNECT, and to the first
//!   publish the broker sees from it (host timestamps; after an outage that missed no
//!   cadence slot, that publish waits for the next slot), and the connection attempts the device logged (`mqtt: connecting`)
//!   from the drop to that publish. Between outages the device stays up 8 s (over its 5 s
//!   stable period).
//! - **Flapping** (real processes): a 3 s outage every 10 s, and every 30 s, for
//!   `--flap-minutes` each: time back per outage, and QoS 1 publishes lost (numbers
//!   missing at the broker), sent again, and cadence slots the device skipped.
//! - **Fleet** (simulated): `--fleet` copies of the core's session state machine (the
//!   device's own code, sans-IO) with simulated time, all connected when their broker
//!   restarts (down 5 s). Counted: CONNECTs per second over the first minute after the
//!   return, and the most any one client id sent within one second; for the device's
//!   schedule, for full jitter from 1 s (the earlier schedule) and for the tutorial's
//!   fixed 5 s.
//!
//! Prints the tables; writes `results.json`, `fleet.csv` and `fleet.svg` to `--out`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use firmware_core::config::DeviceConfig;
use firmware_core::log::{ConnectError, ConnectFailure, CredSource, DisconnectReason};
use firmware_core::session::{
    self, Action, BackoffConfig, Event, JitterShape, RandomSource, Session, Settings,
};
use hil::backend::virtual_device::find_virtual_device;
use hil::rig::{OUT_TOPIC, Rig};
use hil::scenarios::stamped::{self, StampedEvents, first_publish, published};
use hil::scenarios::{CheckFuture, Scenario, ScenarioRun, is};

#[derive(Parser)]
#[command(about = "Reconnect figures: outages, a flapping link, a fleet's CONNECT storm")]
struct Args {
    /// Outages per length.
    #[arg(long, default_value_t = 15)]
    outages: usize,
    /// Outage lengths in seconds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,3,10,60")]
    lengths: Vec<u64>,
    /// Minutes of each flapping pattern (0: skip).
    #[arg(long, default_value_t = 5)]
    flap_minutes: u64,
    /// Devices in the simulated fleet.
    #[arg(long, default_value_t = 500)]
    fleet: usize,
    /// Only the fleet simulation (no device processes).
    #[arg(long)]
    fleet_only: bool,
    /// Where results.json, fleet.csv and fleet.svg go.
    #[arg(long, default_value = "target/bench/reconnect")]
    out: PathBuf,
}

/// Up between outages: over the session's 5 s stable period, so each outage starts afresh.
const UP_BETWEEN: Duration = Duration::from_secs(8);
/// Longest wait for the device to publish again after the broker is back.
const BACK_WITHIN: Duration = Duration::from_secs(120);
/// The flapping patterns: (outage every, outage length).
const FLAPS: [(Duration, Duration); 2] = [
    (Duration::from_secs(10), Duration::from_secs(3)),
    (Duration::from_secs(30), Duration::from_secs(3)),
];

fn unused_check(_: &mut ScenarioRun) -> CheckFuture<'_> {
    Box::pin(async { Ok(String::new()) })
}

/// A scenario record for the rig (its name gives the client id `hil-<name>`).
fn scenario(name: String) -> &'static Scenario {
    Box::leak(Box::new(Scenario {
        name: Box::leak(name.into_boxed_str()),
        summary: "reconnect bench",
        tolerance: "figures only",
        exclusive: true,
        needs_rig_ca: false,
        needs_broker_faults: true,
        restarts_broker: false,
        needs_lines: &[],
        limit: None,
        check: unused_check,
    }))
}

/// One outage's figures.
#[derive(Debug, Clone, Copy)]
struct Outage {
    /// From the broker's return to the device's CONNECT being accepted.
    connected: Option<Duration>,
    /// From the broker's return to the device's first publish; `None`: not back in time.
    /// Includes the wait for the next cadence slot when the outage missed none.
    back: Option<Duration>,
    /// Connection attempts from the drop to that publish.
    attempts: usize,
}

/// A device with its own broker, publishing at QoS 1.
struct Bench {
    rig: Arc<Rig>,
    run: ScenarioRun,
    events: StampedEvents,
}

impl Bench {
    async fn start(name: String) -> Result<Self, BenchError> {
        let rig = Arc::new(Rig::start(find_virtual_device()?).await?);
        let mut run = ScenarioRun::new(Arc::clone(&rig), scenario(name));
        let observer = run.start_device(|config| config.qos = 1)?;
        let events = StampedEvents::record(observer);
        let client = run.client_id.clone();
        first_publish(&mut run, &events, &client).await?;
        Ok(Self { rig, run, events })
    }

    /// Close the listener and drop the device's connection for `length`, then listen
    /// again; the figures of that outage. `up_for` bounds the wait for the device.
    async fn outage(&mut self, length: Duration, up_for: Duration) -> Result<Outage, BenchError> {
        let broker = self.rig.broker()?;
        let client = self.run.client_id.clone();
        let dropped = Instant::now();
        broker.stop_listening().await;
        broker.drop_connection(&client);
        tokio::time::sleep(length).await;
        broker
            .resume_listening()
            .await
            .map_err(|e| format!("resume listening: {e}"))?;
        let returned = Instant::now();
        let connected = self
            .events
            .wait_for(returned, up_for, |e| {
                stamped::connected(e, &client).then_some(())
            })
            .await
            .map(|(at, ())| at.saturating_duration_since(returned));
        let seen = self
            .events
            .wait_for(returned, up_for, |e| published(e, &client).map(|_| ()))
            .await;
        let until = seen.map_or_else(Instant::now, |(at, ())| at);
        let attempts = self
            .run
            .log()
            .iter()
            .filter(|l| l.at >= dropped && l.at <= until)
            .filter(|l| l.line().is_some_and(|l| is(l, "mqtt", "connecting")))
            .count();
        Ok(Outage {
            connected,
            back: seen.map(|(at, ())| at.saturating_duration_since(returned)),
            attempts,
        })
    }

    /// QoS 1 numbers missing at the broker, numbers received more than once, and the
    /// cadence slots the device logged as skipped.
    fn publish_losses(&self) -> (usize, usize, u64) {
        let client = &self.run.client_id;
        let mut seen = BTreeSet::new();
        let mut again = 0;
        for (_, event) in self
            .events
            .since(Instant::now() - Duration::from_secs(86_400))
        {
            if let Some(p) = published(&event, client).filter(|p| p.topic == OUT_TOPIC)
                && let Some(n) = session::hello_seq(&p.payload)
                && !seen.insert(n)
            {
                again += 1;
            }
        }
        let (lo, hi) = (
            seen.first().copied().unwrap_or(0),
            seen.last().copied().unwrap_or(0),
        );
        let missing = (lo..=hi).filter(|n| !seen.contains(n)).count();
        let skipped = self
            .run
            .log()
            .iter()
            .filter_map(|l| l.line())
            .filter(|l| is(l, "publish", "skipped"))
            .filter_map(|l| l.field("slots").and_then(|s| s.parse::<u64>().ok()))
            .sum();
        (missing, again, skipped)
    }

    async fn stop(self) {
        let Self { rig, run, events } = self;
        drop(events);
        drop(run);
        if let Ok(rig) = Arc::try_unwrap(rig) {
            rig.shutdown().await;
        }
    }
}

async fn outage_series(length_s: u64, count: usize) -> OutageResult {
    let mut bench = Bench::start(format!("bench-outage-{length_s}s")).await?;
    let mut outages = Vec::new();
    for _ in 0..count {
        tokio::time::sleep(UP_BETWEEN).await;
        outages.push(
            bench
                .outage(Duration::from_secs(length_s), BACK_WITHIN)
                .await?,
        );
    }
    bench.stop().await;
    Ok(outages)
}

/// A flapping link: an outage of `length` every `every`, for `minutes`.
async fn flap_series(every: Duration, length: Duration, minutes: u64) -> FlapResult {
    let mut bench = Bench::start(format!("bench-flap-{}s", every.as_secs())).await?;
    let end = Instant::now() + Duration::from_secs(minutes * 60);
    let mut outages = Vec::new();
    while Instant::now() < end {
        let cycle = Instant::now() + every;
        // Time back is measured until the next outage starts.
        outages.push(bench.outage(length, every - length).await?);
        tokio::time::sleep_until(cycle.into()).await;
    }
    // Let the last resends land before counting.
    tokio::time::sleep(UP_BETWEEN).await;
    let losses = bench.publish_losses();
    bench.stop().await;
    Ok((outages, losses))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// (p50, p90, max) of the times back in seconds, with the count not back in time.
fn summary(outages: &[Outage]) -> (f64, f64, f64, usize) {
    spread(outages.iter().map(|o| o.back))
}

/// (p50, p90, max) in seconds of the durations given, with the count of `None`s.
fn spread(durations: impl Iterator<Item = Option<Duration>>) -> (f64, f64, f64, usize) {
    let all: Vec<Option<Duration>> = durations.collect();
    let mut back: Vec<f64> = all
        .iter()
        .filter_map(|o| o.map(|d| d.as_secs_f64()))
        .collect();
    back.sort_by(f64::total_cmp);
    let missed = all.len() - back.len();
    (
        percentile(&back, 50.0),
        percentile(&back, 90.0),
        back.last().copied().unwrap_or(f64::NAN),
        missed,
    )
}

// ---- fleet simulation ----

/// xorshift32: each simulated device its own deterministic stream.
struct SimRandom(u32);

impl RandomSource for SimRandom {
    fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

/// A schedule to compare.
struct Schedule {
    name: &'static str,
    settings: Settings,
}

fn schedules() -> [Schedule; 3] {
    let device = Settings::new("bench", "sim");
    let mut full = Settings::new("bench", "sim");
    full.backoff = BackoffConfig {
        base: session::Duration::from_secs(1),
        shape: JitterShape::Full,
        outage_cap: false,
        ..BackoffConfig::DEVICE
    };
    full.stable_after = session::Duration::from_secs(30);
    full.min_connect_interval = session::Duration::ZERO;
    let mut fixed = Settings::new("bench", "sim");
    fixed.backoff = BackoffConfig {
        base: session::Duration::from_secs(5),
        cap: session::Duration::from_secs(5),
        shape: JitterShape::Fixed,
        outage_cap: false,
        ..BackoffConfig::DEVICE
    };
    fixed.min_connect_interval = session::Duration::ZERO;
    [
        Schedule {
            name: "device (full jitter, 500 ms base, outage cap)",
            settings: device,
        },
        Schedule {
            name: "full jitter from 1 s",
            settings: full,
        },
        Schedule {
            name: "fixed 5 s (tutorial)",
            settings: fixed,
        },
    ]
}

/// The broker restarts at `DOWN_AT` for `DOWN_FOR`; a CONNECT while it is down fails at
/// once (connection refused), one while it is up succeeds after `HANDSHAKE`.
const DOWN_AT_MS: u64 = 60_000;
const DOWN_FOR_MS: u64 = 5_000;
const HANDSHAKE_MS: u64 = 50;
const WATCH_MS: u64 = 60_000;

/// CONNECTs per second from the broker's return over `WATCH_MS`, and the most one client
/// sent within any second.
fn simulate_fleet(settings: &Settings, devices: usize) -> (Vec<u64>, usize) {
    let up_at = DOWN_AT_MS + DOWN_FOR_MS;
    let mut per_second = vec![0u64; (WATCH_MS / 1000) as usize];
    let mut worst_client = 0usize;
    let config_text = {
        let mut c = DeviceConfig::new("broker.example", "thing").expect("config");
        c.qos = 0;
        c
    };
    for id in 0..devices {
        let mut session = Session::new(*settings, SimRandom(0x9E37_79B9 ^ (id as u32 + 1)));
        // (time, event) for this device; its own deadline from `Sleep`.
        let mut pending: BinaryHeap<Reverse<(u64, u8)>> = BinaryHeap::new();
        let mut deadline: Option<u64> = None;
        let mut connects: Vec<u64> = Vec::new();
        // Event codes, so the heap stays simple.
        const TICK: u8 = 0;
        const CONFIG: u8 = 1;
        const CREDS: u8 = 2;
        const NET: u8 = 3;
        const TIME: u8 = 4;
        const CONNECTED: u8 = 5;
        const REFUSED: u8 = 6;
        const SUBSCRIBED: u8 = 7;
        const DROPPED: u8 = 8;
        pending.push(Reverse((DOWN_AT_MS, DROPPED)));
        let mut now = 0u64;
        let mut event_code = None::<u8>;
        let mut connected = false;
        loop {
            let event = match event_code.take() {
                None => Event::Start,
                Some(TICK) => Event::Tick,
                Some(CONFIG) => Event::ConfigLoaded(&config_text),
                Some(CREDS) => Event::CredsLoaded {
                    cert: 1,
                    key: 1,
                    ca: 1,
                    source: CredSource::Flash,
                    cert_not_after: None,
                },
                Some(NET) => Event::NetUp {
                    local_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                },
                Some(TIME) => Event::TimeSynced(1_900_000_000),
                Some(CONNECTED) => {
                    connected = true;
                    Event::Connected {
                        session_present: false,
                        handshake_ms: Some(HANDSHAKE_MS as u32),
                    }
                }
                Some(REFUSED) => Event::ConnectFailed(ConnectFailure::Mqtt(ConnectError::Tcp)),
                Some(SUBSCRIBED) => Event::Subscribed,
                Some(_) => {
                    if !connected {
                        Event::Tick
                    } else {
                        connected = false;
                        Event::Disconnected(DisconnectReason::PeerClosed)
                    }
                }
            };
            let mut replies: Vec<(u64, u8)> = Vec::new();
            let at = session::Instant::from_millis(now);
            session.handle(at, event, &mut |action| match action {
                Action::Sleep(t) => deadline = Some(t.as_millis()),
                Action::LoadConfig => replies.push((now, CONFIG)),
                Action::LoadCredentials => replies.push((now, CREDS)),
                Action::JoinNetwork => replies.push((now, NET)),
                Action::SyncTime => replies.push((now, TIME)),
                Action::Connect => {
                    connects.push(now);
                    let down = (DOWN_AT_MS..up_at).contains(&now);
                    replies.push(if down {
                        (now + 1, REFUSED)
                    } else {
                        (now + HANDSHAKE_MS, CONNECTED)
                    });
                }
                Action::Subscribe { .. } => replies.push((now + 10, SUBSCRIBED)),
                _ => {}
            });
            for r in replies {
                pending.push(Reverse(r));
            }
            // Next: the earliest pending reply, or the session's deadline.
            let next_reply = pending.peek().map(|Reverse((t, _))| *t);
            let (t, code) = match (next_reply, deadline) {
                (Some(r), Some(d)) if d < r => (d, TICK),
                (Some(_), _) => {
                    let Reverse((t, code)) = pending.pop().expect("peeked");
                    (t, code)
                }
                (None, Some(d)) => (d, TICK),
                (None, None) => break,
            };
            if t > up_at + WATCH_MS {
                break;
            }
            if code == TICK {
                deadline = None;
            }
            now = t.max(now);
            event_code = Some(code);
        }
        for &t in &connects {
            if t >= up_at && t < up_at + WATCH_MS {
                per_second[((t - up_at) / 1000) as usize] += 1;
            }
        }
        // The most CONNECTs this client sent within one second, after the outage began.
        let after: Vec<u64> = connects.into_iter().filter(|t| *t >= DOWN_AT_MS).collect();
        for (i, &t) in after.iter().enumerate() {
            let within = after[i..].iter().take_while(|&&u| u < t + 1000).count();
            worst_client = worst_client.max(within);
        }
    }
    (per_second, worst_client)
}

fn fleet_svg(series: &[(&str, Vec<u64>)]) -> String {
    let (w, h, pad) = (720.0, 320.0, 40.0);
    let peak = series
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let colours = ["#1f77b4", "#d62728", "#2ca02c"];
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{pad}\" y=\"16\">CONNECTs per second after the broker's return ({} s window)</text>\n\
         <line x1=\"{pad}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"black\"/>\n\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{y0}\" stroke=\"black\"/>\n\
         <text x=\"4\" y=\"{pad}\">{peak}</text><text x=\"4\" y=\"{y0}\">0</text>\n\
         <text x=\"{x1}\" y=\"{ylab}\" text-anchor=\"end\">seconds</text>\n",
        WATCH_MS / 1000,
        y0 = h - pad,
        x1 = w - 10.0,
        ylab = h - 10.0,
    );
    // A tick every 10 s along the time axis.
    let seconds = (WATCH_MS / 1000) as f64;
    for tick in (0..WATCH_MS / 1000).step_by(10) {
        let x = pad + (w - pad - 10.0) * tick as f64 / (seconds - 1.0).max(1.0);
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{y0}\" x2=\"{x:.1}\" y2=\"{y1}\" stroke=\"black\"/>\
             <text x=\"{x:.1}\" y=\"{yt}\" text-anchor=\"middle\">{tick}</text>",
            y0 = h - pad,
            y1 = h - pad + 4.0,
            yt = h - pad + 16.0,
        );
    }
    for (i, (name, s)) in series.iter().enumerate() {
        let n = s.len().max(2) as f64 - 1.0;
        let points: Vec<String> = s
            .iter()
            .enumerate()
            .map(|(x, &v)| {
                let px = pad + (w - pad - 10.0) * x as f64 / n;
                let py = (h - pad) - (h - 2.0 * pad) * v as f64 / peak;
                format!("{px:.1},{py:.1}")
            })
            .collect();
        let colour = colours[i % colours.len()];
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n\
             <text x=\"{}\" y=\"{}\" fill=\"{colour}\">{name}</text>",
            points.join(" "),
            w - 260.0,
            pad + 16.0 * i as f64,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = bench(&args).await {
        eprintln!("reconnect bench: {e}");
        std::process::exit(2);
    }
}

async fn bench(args: &Args) -> Result<(), BenchError> {
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let mut json = String::from("{\n");

    if !args.fleet_only {
        println!(
            "reconnect bench: {} outages each of {:?} s, flapping {} min each (real devices, mock broker)",
            args.outages, args.lengths, args.flap_minutes
        );
        let outages = futures_join_all(
            args.lengths
                .iter()
                .map(|&l| Box::pin(outage_series(l, args.outages)) as Boxed<'_, OutageResult>)
                .collect(),
        );
        let flaps = futures_join_all(
            FLAPS
                .iter()
                .filter(|_| args.flap_minutes > 0)
                .map(|&(every, length)| {
                    Box::pin(flap_series(every, length, args.flap_minutes)) as Boxed<'_, FlapResult>
                })
                .collect(),
        );
        let (outages, flaps) = tokio::join!(outages, flaps);

        println!(
            "\noutage  outages  CONNACK p50  CONNACK p90  publish p50  publish p90  publish max  not back  attempts (mean, max)"
        );
        json.push_str("  \"outages\": [\n");
        for (i, (length, series)) in args.lengths.iter().zip(outages).enumerate() {
            let series = series?;
            let (p50, p90, max, missed) = summary(&series);
            let (c50, c90, _, _) = spread(series.iter().map(|o| o.connected));
            let attempts: Vec<usize> = series.iter().map(|o| o.attempts).collect();
            let mean = attempts.iter().sum::<usize>() as f64 / attempts.len().max(1) as f64;
            let most = attempts.iter().max().copied().unwrap_or(0);
            println!(
                "{length:>5} s  {:>7}  {c50:>9.2} s  {c90:>9.2} s  {p50:>9.2} s  {p90:>9.2} s  {max:>9.2} s  {missed:>8}  {mean:.1}, {most}",
                series.len()
            );
            let _ = writeln!(
                json,
                "    {{\"length_s\": {length}, \"outages\": {}, \"connack_p50_s\": {c50:.3}, \"connack_p90_s\": {c90:.3}, \"back_p50_s\": {p50:.3}, \"back_p90_s\": {p90:.3}, \"back_max_s\": {max:.3}, \"not_back\": {missed}, \"attempts_mean\": {mean:.2}, \"attempts_max\": {most}}}{}",
                series.len(),
                if i + 1 < args.lengths.len() { "," } else { "" }
            );
        }
        json.push_str("  ],\n  \"flapping\": [\n");
        println!(
            "\nflapping                 outages  back p90  back max  not back  QoS 1 lost  sent again  slots skipped"
        );
        let flap_count = flaps.len();
        for (i, ((every, length), result)) in FLAPS.iter().zip(flaps).enumerate() {
            let (series, (lost, again, skipped)) = result?;
            let (_, p90, max, missed) = summary(&series);
            println!(
                "{}s outage every {:>2}s  {:>9}  {p90:>7.2} s  {max:>7.2} s  {missed:>8}  {lost:>10}  {again:>10}  {skipped:>13}",
                length.as_secs(),
                every.as_secs(),
                series.len()
            );
            let _ = writeln!(
                json,
                "    {{\"every_s\": {}, \"length_s\": {}, \"outages\": {}, \"back_p90_s\": {p90:.3}, \"back_max_s\": {max:.3}, \"not_back\": {missed}, \"qos1_lost\": {lost}, \"sent_again\": {again}, \"slots_skipped\": {skipped}}}{}",
                every.as_secs(),
                length.as_secs(),
                series.len(),
                if i + 1 < flap_count { "," } else { "" }
            );
        }
        json.push_str("  ],\n");
    }

    println!(
        "\nfleet of {} (simulated sessions), broker down {} s: CONNECTs per second after its return",
        args.fleet,
        DOWN_FOR_MS / 1000
    );
    println!(
        "schedule                               peak/s  first 5 s  first 60 s  most per client in 1 s"
    );
    let mut csv = String::from("second");
    let mut series = Vec::new();
    json.push_str("  \"fleet\": [\n");
    let all = schedules();
    for (i, schedule) in all.iter().enumerate() {
        let (per_second, worst) = simulate_fleet(&schedule.settings, args.fleet);
        let peak = per_second.iter().max().copied().unwrap_or(0);
        let first5: u64 = per_second.iter().take(5).sum();
        let total: u64 = per_second.iter().sum();
        println!(
            "{:<38} {peak:>6}  {first5:>9}  {total:>10}  {worst:>22}",
            schedule.name
        );
        let _ = writeln!(
            json,
            "    {{\"schedule\": \"{}\", \"devices\": {}, \"peak_per_s\": {peak}, \"first_5_s\": {first5}, \"first_60_s\": {total}, \"most_per_client_in_1_s\": {worst}, \"per_second\": {:?}}}{}",
            schedule.name,
            args.fleet,
            per_second,
            if i + 1 < all.len() { "," } else { "" }
        );
        let _ = write!(csv, ",{}", schedule.name);
        series.push((schedule.name, per_second));
    }
    json.push_str("  ]\n}\n");
    csv.push('\n');
    for s in 0..(WATCH_MS / 1000) as usize {
        let _ = write!(csv, "{s}");
        for (_, per_second) in &series {
            let _ = write!(csv, ",{}", per_second[s]);
        }
        csv.push('\n');
    }
    let write = |name: &str, text: &str| -> Result<(), BenchError> {
        let path = args.out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()).into())
    };
    write("results.json", &json)?;
    write("fleet.csv", &csv)?;
    write("fleet.svg", &fleet_svg(&series))?;
    println!(
        "\nwritten: {}/{{results.json,fleet.csv,fleet.svg}}",
        args.out.display()
    );
    Ok(())
}

/// What stops the bench: the rig, the device or a file, said in the message.
type BenchError = Box<dyn std::error::Error>;
type OutageResult = Result<Vec<Outage>, BenchError>;
type FlapResult = Result<(Vec<Outage>, (usize, usize, u64)), BenchError>;
type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>;

/// Run futures concurrently on this task (they share the rig's single-threaded parts).
async fn futures_join_all<T>(futures: Vec<Boxed<'_, T>>) -> Vec<T> {
    let mut slots: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    let mut running: Vec<(usize, Boxed<'_, T>)> = futures.into_iter().enumerate().collect();
    std::future::poll_fn(|cx| {
        running.retain_mut(|(i, f)| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => {
                slots[*i] = Some(v);
                false
            }
            std::task::Poll::Pending => true,
        });
        if running.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    slots
        .into_iter()
        .map(|s| s.expect("every future finished"))
        .collect()
}
