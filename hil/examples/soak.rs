//! Soak: one virtual device against the in-process mock broker for `--minutes`, with
//! inbound QoS 1 traffic and a fault every minute, on the rig the HIL suite uses (fresh
//! test PKI, broker on loopback ports, the device behind a pseudo-terminal).
//!
//! ```sh
//! make soak MINUTES=30        # cargo run -p hil --example soak -- --minutes 30
//! ```
//!
//! Traffic: a QoS 1 message `soak #K` injected on the device's inbound topic every 2 s.
//! Faults, one a minute in turn (the first at 30 s): the broker kicks the device
//! (DISCONNECT), drops its connection (no DISCONNECT), withholds its PUBACKs for 12 s
//! (the device drops the link and resends), stops listening for 8 s (reconnect refused).
//!
//! Verdicts (the exit code is 1 if any fails):
//! - no QoS 1 loss inbound: every message the broker injected *to the device* (delivered
//!   or queued for its session: `inject` counted it) appears as an `inbound:` line;
//! - no QoS 1 loss outbound: the `hello world #N` numbers the broker received from the
//!   device are consecutive and first arrive in order, and every publish the device
//!   logged before its last few arrived;
//! - flat RSS: the device process sampled every minute; from the first minute's sample
//!   to the last, growth stays within 10% + 2 MiB;
//! - bounded broker queues: the bytes the broker holds for clients (its own accounting,
//!   `queued_bytes`) sampled every minute stay under 64 KiB. This process's RSS (the
//!   broker plus the rig, which keeps every serial line and broker event for the
//!   verdicts above, so it grows with the run) is shown, not judged; the broker's own
//!   RSS is measured out of process in the README's soak section.
//!
//! The samples are printed as a table and written to `target/soak/rss.csv`; the verdicts
//! and counts to `target/soak/summary.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use firmware_core::session::hello_seq;
use hil::backend::virtual_device::find_virtual_device;
use hil::rig::{OUT_TOPIC, Rig};
use hil::scenarios::stamped::{StampedEvents, first_publish, published};
use hil::scenarios::{CheckFuture, Scenario, ScenarioRun, is};
use mock_broker::Faults;

#[derive(Parser)]
#[command(
    about = "One virtual device against the mock broker for N minutes: inbound QoS 1 \
                   traffic, a fault a minute; checks QoS 1 loss both ways and flat RSS"
)]
struct Args {
    /// How long to run.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Where rss.csv and summary.json go.
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
}

const INJECT_EVERY: Duration = Duration::from_secs(2);
const SAMPLE_EVERY: Duration = Duration::from_secs(60);
const FIRST_FAULT: Duration = Duration::from_secs(30);
const FAULT_EVERY: Duration = Duration::from_secs(60);
const PUBACK_WITHHELD_FOR: Duration = Duration::from_secs(12);
const LISTENER_DOWN_FOR: Duration = Duration::from_secs(8);
/// After the last injection: time for queued messages and resends to arrive (a
/// reconnect's backoff is capped at 60 s, but the faults are over by then).
const DRAIN: Duration = Duration::from_secs(20);
/// Publishes the device logged in the last seconds may still be unacked at the end.
const IN_FLIGHT_AT_END: u32 = 3;
/// RSS growth allowed from the first minute's sample to the last.
const RSS_GROWTH_PCT: u64 = 10;
const RSS_GROWTH_KIB: u64 = 2048;
/// Most the broker may hold for clients at a sample: a few QoS 1 messages in flight.
const QUEUED_BYTES_MAX: usize = 64 * 1024;

/// The soak as a scenario of the rig (its name gives the client id `hil-soak`).
const SOAK: Scenario = Scenario {
    name: "soak",
    summary: "one device, inbound QoS 1 traffic, a fault a minute",
    tolerance: "no QoS 1 loss either way; RSS within 10% + 2 MiB",
    exclusive: true,
    needs_rig_ca: false,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &[],
    limit: None,
    check: unused_check,
};

fn unused_check(_: &mut ScenarioRun) -> CheckFuture<'_> {
    Box::pin(async { Ok(String::new()) })
}

struct Sample {
    minute: u64,
    device_kib: Option<u64>,
    host_kib: Option<u64>,
    queued_bytes: usize,
    device_lines: usize,
    injected: usize,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match soak(&args).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    }
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The device process: our child running the virtual-device binary.
fn device_pid(binary: &Path) -> Option<u32> {
    let me = std::process::id();
    let binary = binary.canonicalize().ok()?;
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let parent: u32 = status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))?
                .trim()
                .parse()
                .ok()?;
            let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
            (parent == me && exe == binary).then_some(pid)
        })
}

async fn soak(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    let binary = find_virtual_device()?;
    let rig = Arc::new(Rig::start(binary.clone()).await?);
    let mut run = ScenarioRun::new(Arc::clone(&rig), &SOAK);
    let client = run.client_id.clone();
    let topic = run.inbound_topic();
    let observer = run.start_device(|config| config.qos = 1)?;
    let events = StampedEvents::record(observer);
    first_publish(&mut run, &events, &client).await?;
    let pid = device_pid(&binary).ok_or("cannot find the device process")?;
    let broker = rig.broker()?;
    println!(
        "soak: {} min, device pid {pid} ({client}), broker {}",
        args.minutes,
        broker.mqtt_addr()
    );

    let start = Instant::now();
    let end = start + Duration::from_secs(args.minutes * 60);
    let mut injected_to_device = BTreeSet::new();
    let mut not_injected = 0usize;
    let mut samples = Vec::new();
    let mut faults_applied = Vec::new();
    let mut next_inject = start;
    let mut next_sample = start;
    let mut next_fault = start + FIRST_FAULT;
    let mut fault_index = 0usize;
    let mut k = 0u32;
    // (when to undo, what) for the timed faults.
    let mut undo: Option<(Instant, &str)> = None;

    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_sample {
            samples.push(Sample {
                minute: now.duration_since(start).as_secs() / 60,
                device_kib: rss_kib(pid),
                host_kib: rss_kib(std::process::id()),
                queued_bytes: broker.queue_stats().queued_bytes,
                device_lines: run.log().len(),
                injected: injected_to_device.len(),
            });
            next_sample += SAMPLE_EVERY;
        }
        if now >= next_inject {
            k += 1;
            let delivered = rig
                .inject(&topic, format!("soak #{k}").into_bytes())
                .await?;
            if delivered.unwrap_or(0) > 0 {
                injected_to_device.insert(k);
            } else {
                not_injected += 1;
            }
            next_inject += INJECT_EVERY;
        }
        if let Some((at, what)) = undo
            && now >= at
        {
            undo_fault(broker, &client, what).await?;
            undo = None;
        }
        if now >= next_fault && undo.is_none() {
            let at = now.duration_since(start).as_secs();
            let what = match fault_index % 4 {
                0 => format!("kick (connected: {})", broker.kick(&client)),
                1 => format!(
                    "drop connection (connected: {})",
                    broker.drop_connection(&client)
                ),
                2 => {
                    broker.set_client_faults(
                        &client,
                        Faults {
                            withhold_puback: true,
                            ..Faults::default()
                        },
                    );
                    undo = Some((now + PUBACK_WITHHELD_FOR, "puback"));
                    format!("withhold PUBACK for {PUBACK_WITHHELD_FOR:?}")
                }
                _ => {
                    broker.stop_listening().await;
                    undo = Some((now + LISTENER_DOWN_FOR, "listener"));
                    format!("stop listening for {LISTENER_DOWN_FOR:?}")
                }
            };
            println!("  {at:>5} s  fault: {what}");
            faults_applied.push((at, what));
            fault_index += 1;
            next_fault += FAULT_EVERY;
        }
        if let Some(status) = device_exited(pid) {
            return Err(run
                .failure(&format!("the device exited during the soak ({status})"))
                .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some((_, what)) = undo {
        undo_fault(broker, &client, what).await?;
    }
    tokio::time::sleep(DRAIN).await;
    samples.push(Sample {
        minute: start.elapsed().as_secs() / 60,
        device_kib: rss_kib(pid),
        host_kib: rss_kib(std::process::id()),
        queued_bytes: broker.queue_stats().queued_bytes,
        device_lines: run.log().len(),
        injected: injected_to_device.len(),
    });

    // Inbound: every injected K in an `inbound:` line.
    let log = run.log();
    let mut inbound_seen: BTreeMap<u32, usize> = BTreeMap::new();
    let mut device_published = BTreeSet::new();
    let mut connects = 0;
    for line in log.iter().filter_map(|l| l.line()) {
        if line.tag() == "inbound" {
            let payload: Option<Vec<u8>> = line
                .payload_bytes()
                .and_then(|b| b.collect::<Result<Vec<u8>, _>>().ok());
            if let Some(n) = payload
                .as_deref()
                .and_then(|p| std::str::from_utf8(p).ok())
                .and_then(|p| p.strip_prefix("soak #"))
                .and_then(|n| n.parse().ok())
            {
                *inbound_seen.entry(n).or_default() += 1;
            }
        } else if line.tag() == "publish"
            && let Some(seq) = line.field("seq").and_then(|s| s.parse::<u32>().ok())
        {
            device_published.insert(seq);
        } else if is(line, "mqtt", "connected") {
            connects += 1;
        }
    }
    let lost_inbound: Vec<u32> = injected_to_device
        .iter()
        .filter(|k| !inbound_seen.contains_key(k))
        .copied()
        .collect();
    let duplicates: usize = inbound_seen.values().map(|c| c - 1).sum();

    // Outbound: the numbers the broker received from the device.
    let mut first_arrivals = Vec::new();
    let mut seen = BTreeSet::new();
    let mut resent = 0;
    for (_, event) in events.since(start - Duration::from_secs(3600)) {
        if let Some(p) = published(&event, &client).filter(|p| p.topic == OUT_TOPIC)
            && let Some(n) = hello_seq(&p.payload)
        {
            if seen.insert(n) {
                first_arrivals.push(n);
            } else {
                resent += 1;
            }
        }
    }
    let out_of_order = first_arrivals.windows(2).filter(|w| w[1] < w[0]).count();
    let (lo, hi) = (
        seen.first().copied().unwrap_or(0),
        seen.last().copied().unwrap_or(0),
    );
    let gaps: Vec<u32> = (lo..=hi).filter(|n| !seen.contains(n)).collect();
    let logged_not_received: Vec<u32> = device_published
        .iter()
        .filter(|n| **n + IN_FLIGHT_AT_END <= hi && !seen.contains(n))
        .copied()
        .collect();

    // RSS: first minute's sample (after start-up) to the last.
    let growth_ok = |pick: fn(&Sample) -> Option<u64>| -> (bool, String) {
        let base = samples.get(1).or(samples.first()).and_then(pick);
        let last = samples.last().and_then(pick);
        match (base, last) {
            (Some(b), Some(l)) => {
                let allowed = b + b * RSS_GROWTH_PCT / 100 + RSS_GROWTH_KIB;
                (
                    l <= allowed,
                    format!("{b} KiB -> {l} KiB (allowed up to {allowed} KiB)"),
                )
            }
            _ => (false, "not sampled".into()),
        }
    };
    let (device_flat, device_rss) = growth_ok(|s| s.device_kib);
    let (_, host_rss) = growth_ok(|s| s.host_kib);
    let most_queued = samples.iter().map(|s| s.queued_bytes).max().unwrap_or(0);
    let queues_bounded = most_queued <= QUEUED_BYTES_MAX;

    let mut table = String::from(
        "minute  device_rss_kib  broker+rig_rss_kib  broker_queued_b  serial_lines  injected\n",
    );
    let mut csv = String::from(
        "minute,device_rss_kib,broker_rig_rss_kib,broker_queued_bytes,serial_lines,injected_to_device\n",
    );
    let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for s in &samples {
        let _ = writeln!(
            table,
            "{:>6}  {:>14}  {:>18}  {:>15}  {:>12}  {:>8}",
            s.minute,
            show(s.device_kib),
            show(s.host_kib),
            s.queued_bytes,
            s.device_lines,
            s.injected
        );
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{}",
            s.minute,
            show(s.device_kib),
            show(s.host_kib),
            s.queued_bytes,
            s.device_lines,
            s.injected
        );
    }
    let verdicts = [
        ("no inbound QoS 1 loss", lost_inbound.is_empty()),
        (
            "outbound numbers consecutive and in order",
            gaps.is_empty() && out_of_order == 0,
        ),
        (
            "every publish the device logged reached the broker",
            logged_not_received.is_empty(),
        ),
        ("device RSS flat", device_flat),
        ("broker queues bounded", queues_bounded),
    ];
    println!("\n{table}");
    println!(
        "inbound: {} injected to the device ({not_injected} found no session), {} seen, {duplicates} duplicate deliveries, lost: {lost_inbound:?}",
        injected_to_device.len(),
        inbound_seen.len()
    );
    println!(
        "outbound: #{lo}..#{hi} at the broker ({resent} resends), gaps: {gaps:?}, out of order: {out_of_order}, logged but not received: {logged_not_received:?}"
    );
    println!(
        "faults: {}; device connected {connects} times",
        faults_applied.len()
    );
    println!(
        "RSS: device {device_rss}; broker+rig {host_rss} (shown, not judged: the rig keeps every line and event); broker queues at most {most_queued} B"
    );
    for (what, ok) in verdicts {
        println!("  {} {what}", if ok { "PASS" } else { "FAIL" });
    }

    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let csv_path = args.out.join("rss.csv");
    std::fs::write(&csv_path, csv).map_err(|e| format!("{}: {e}", csv_path.display()))?;
    let summary = format!(
        "{{\n  \"minutes\": {},\n  \"injected_to_device\": {},\n  \"inbound_seen\": {},\n  \"inbound_lost\": {:?},\n  \"inbound_duplicates\": {duplicates},\n  \"outbound_first\": {lo},\n  \"outbound_last\": {hi},\n  \"outbound_gaps\": {gaps:?},\n  \"outbound_out_of_order\": {out_of_order},\n  \"outbound_resends\": {resent},\n  \"logged_not_received\": {logged_not_received:?},\n  \"faults\": {},\n  \"connects\": {connects},\n  \"device_rss\": \"{device_rss}\",\n  \"broker_rig_rss\": \"{host_rss}\",\n  \"broker_queued_bytes_max\": {most_queued},\n  \"passed\": {}\n}}\n",
        args.minutes,
        injected_to_device.len(),
        inbound_seen.len(),
        lost_inbound,
        faults_applied.len(),
        verdicts.iter().all(|(_, ok)| *ok)
    );
    let summary_path = args.out.join("summary.json");
    std::fs::write(&summary_path, summary)
        .map_err(|e| format!("{}: {e}", summary_path.display()))?;
    println!(
        "written: {} and {}",
        csv_path.display(),
        summary_path.display()
    );

    drop(run);
    Arc::try_unwrap(rig)
        .map_err(|_| "rig still shared")?
        .shutdown()
        .await;
    Ok(verdicts.iter().all(|(_, ok)| *ok))
}

/// End a timed fault: give `client` its PUBACKs again, or listen again.
async fn undo_fault(broker: &mock_broker::Handle, client: &str, what: &str) -> Result<(), String> {
    match what {
        "puback" => broker.set_client_faults(client, Faults::default()),
        _ => broker
            .resume_listening()
            .await
            .map_err(|e| format!("resume listening: {e}"))?,
    }
    Ok(())
}

/// Whether the device process is gone (its /proc entry, or a zombie).
fn device_exited(pid: u32) -> Option<String> {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => Some("no such process".into()),
        Ok(status)
            if status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z')) =>
        {
            Some("exited".into())
        }
        Ok(_) => None,
    }
}
