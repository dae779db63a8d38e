//! `hil fleet`: N virtual devices in one process — the real device core (session and
//! driver, TLS and MQTT, each with its own identity from the fleet's CA) over the
//! virtual device's host adapters, one tokio runtime — against one broker, with the
//! figures a fleet operator asks for: connected count over time, publish-interval error
//! at the broker, publish-to-observe latency, reconnect storms and their spread, lost
//! QoS 1 messages, CPU and memory per device.
//!
//! # Layout
//! - [`pki`]: the CA that issues the devices' identities, the server and observer
//!   identities, the fleet's policies; fresh, or a shared folder (`--pki`).
//! - [`target`]: the broker (mock in-process, mosquitto or rumqttd process, or a shared
//!   one at `--broker`), stop/restart, observer.
//! - [`things`]: `--target aws`: the devices from `certs aws provision` folders.
//! - [`device`]: one device: the core's `Runner` on a board that records its log lines.
//! - [`collect`]: records and broker observations in, [`collect::Figures`] out.
//! - [`stats`]: mergeable histograms, `/proc/self` CPU and memory.
//! - [`report`]: `fleet.json` (schema [`report::SCHEMA`]), `fleet.html`, and `merge`.

pub mod collect;
pub mod device;
pub mod pki;
pub mod report;
pub mod stats;
pub mod target;
pub mod things;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use certs::creds::Credentials;
use certs::image;
use certs::pki::{CertificateAuthority, KeyAlgorithm, Validity};
use firmware_core::config::DeviceConfig;
use tokio::sync::{mpsc, watch};

use crate::error::RigError;
use collect::{Collector, Phase};
pub use target::{SharedBroker, TargetKind};

/// Longest the devices may take to say goodbye once told to stop.
const STOP_WITHIN: Duration = Duration::from_secs(15);
/// Longest to wait for publishes still on their way after the devices stopped.
const DRAIN_WITHIN: Duration = Duration::from_secs(5);

/// What `hil fleet` runs.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// How many devices: [`DEFAULT_DEVICES`] if `None`, or with `aws` every thing.
    pub devices: Option<u32>,
    pub target: TargetKind,
    /// How long the fleet runs, from the first device's boot.
    pub duration: Duration,
    /// Stop the broker this long after the start…
    pub kill_broker_at: Option<Duration>,
    /// …for this long.
    pub outage: Duration,
    /// Client ids are `fleet-<offset + i>`: disjoint ranges for several processes.
    pub id_offset: u32,
    /// Boots are spread evenly over this span (a fleet does not power on in one
    /// millisecond; zero boots all at once).
    pub ramp: Duration,
    /// Where fleet.json and fleet.html go.
    pub out: PathBuf,
    /// A progress line this often (None: quiet).
    pub progress_every: Option<Duration>,
    /// A `certs init`-layout folder whose CA issues the devices' identities (`None`: a
    /// fresh PKI): processes sharing a broker share its CA.
    pub pki: Option<PathBuf>,
    /// Connect to this broker instead of starting `target` (it must trust `pki`'s CA).
    pub shared: Option<SharedBroker>,
    /// `--target aws`: the things and the observer.
    pub aws: Option<AwsFleet>,
}

/// Devices in a run that does not say.
pub const DEFAULT_DEVICES: u32 = 100;

/// `--target aws`: devices that are things of an AWS account.
#[derive(Debug, Clone)]
pub struct AwsFleet {
    /// One folder per thing (`certs aws provision --out DIR/<thing>`).
    pub things: PathBuf,
    /// The observer's folder (`certs aws observer --out DIR`).
    pub observer: PathBuf,
    /// Dial this instead of the endpoint in the things' images.
    pub endpoint: Option<crate::aws::Endpoint>,
}

/// A fleet's outcome: the figures and where the report went.
pub struct FleetRun {
    pub json: serde_json::Value,
    pub json_path: PathBuf,
    pub html_path: PathBuf,
}

/// The client id of device `index` of a process started with `--id-offset offset`.
pub fn client_id(offset: u32, index: u32) -> String {
    format!("fleet-{:06}", u64::from(offset) + u64::from(index))
}

/// Issue an identity for each device and build its flash image (in memory).
fn images(
    options: &FleetOptions,
    ca: &CertificateAuthority,
    broker: &target::Broker,
) -> Result<(Vec<String>, Vec<Vec<u8>>), RigError> {
    let count = options.devices.unwrap_or(DEFAULT_DEVICES);
    let mut ids = Vec::with_capacity(count as usize);
    let mut images = Vec::with_capacity(count as usize);
    for index in 0..count {
        let id = client_id(options.id_offset, index);
        let what = || format!("image for {id}");
        let mut config = DeviceConfig::new(&broker.host, &id)
            .map_err(|e| RigError::make(what(), format!("{e:?}")))?;
        config.endpoint.port = broker.port;
        config.ntp.host = "127.0.0.1"
            .try_into()
            .map_err(|_| RigError::make(what(), "NTP host too long"))?;
        config.ntp.port = broker.sntp.port();
        config.pub_topic = target::pub_topic(&id)
            .as_str()
            .try_into()
            .map_err(|_| RigError::make(what(), "topic too long"))?;
        config.sub_topic = format!("{}/in", target::pub_topic(&id))
            .as_str()
            .try_into()
            .map_err(|_| RigError::make(what(), "topic too long"))?;
        let identity = ca
            .issue_client(&id, KeyAlgorithm::EcP256, Validity::days(30))
            .map_err(|e| RigError::make(format!("identity for {id}"), e))?;
        let creds = Credentials::new(identity.cert_der, identity.key, ca.cert_der().to_vec())
            .map_err(|e| RigError::make(what(), e))?;
        images.push(
            image::build_image(&creds, &config, image::DEFAULT_IMAGE_SIZE)
                .map_err(|e| RigError::make(what(), e))?,
        );
        ids.push(id);
    }
    Ok((ids, images))
}

/// Run the fleet and write its report.
///
/// The devices run on the calling thread (a `LocalSet`: the core's driver keeps its
/// write gate in `Cell`s, as on the single-core chip), the broker and the collector on the
/// runtime's workers: on a 2-core host, one core for the devices and one for the rest.
pub async fn run(options: &FleetOptions) -> Result<FleetRun, RigError> {
    tokio::task::LocalSet::new()
        .run_until(run_local(options))
        .await
}

async fn run_local(options: &FleetOptions) -> Result<FleetRun, RigError> {
    if options.devices == Some(0) {
        return Err(RigError::make("--devices", "must be at least 1"));
    }
    if options.shared.is_some() && options.kill_broker_at.is_some() {
        return Err(RigError::usage(
            "--kill-broker-at stops the broker this process started: not one given with --broker",
        ));
    }
    let issuing = Instant::now();
    let (mut broker, ids, images) = match (&options.aws, options.target) {
        (Some(aws), _) => {
            if options.kill_broker_at.is_some() {
                return Err(RigError::usage(
                    "--kill-broker-at stops the broker this process started: not AWS IoT",
                ));
            }
            let things = things::read(&aws.things, options.devices)?;
            let endpoint = things::endpoint(&things, aws.endpoint.as_ref())?;
            let broker = target::Broker::aws(&endpoint, &aws.observer, options.id_offset).await?;
            let ids = things.iter().map(|t| t.client_id().to_string()).collect();
            let images = things
                .iter()
                .map(|t| t.image(aws.endpoint.as_ref(), broker.sntp))
                .collect::<Result<Vec<_>, _>>()?;
            (broker, ids, images)
        }
        (None, TargetKind::Aws) => {
            return Err(RigError::usage(
                "--target aws needs --things DIR and --observer DIR (`certs aws provision` \
                 and `certs aws observer` folders)",
            ));
        }
        (None, _) => {
            let pki = match &options.pki {
                Some(dir) => pki::FleetPki::load(dir)?,
                None => pki::FleetPki::fresh()?,
            };
            let broker = match &options.shared {
                Some(shared) => target::Broker::connect(shared, &pki, options.id_offset).await?,
                None => target::Broker::start(options.target, &pki, options.id_offset).await?,
            };
            let (ids, images) = images(options, &pki.ca, &broker)?;
            (broker, ids, images)
        }
    };
    let issue_s = issuing.elapsed().as_secs_f64();
    let period = Duration::from_millis(u64::from(firmware_core::config::DEFAULT_PERIOD_MS));

    let (record_tx, record_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let (rss_before_kb, _) = stats::memory_kb();
    let cpu_before = stats::cpu_seconds();
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let collector = Collector::new(&ids, period, started, options.progress_every);
    let collecting = tokio::spawn(collector.run(record_rx, broker.observe(), phase_rx));

    let mut devices = tokio::task::JoinSet::new();
    let count = ids.len() as u32;
    for (index, image) in images.into_iter().enumerate() {
        let boot_at = started + options.ramp.mul_f64(index as f64 / f64::from(count));
        let (records, stop) = (record_tx.clone(), stop_rx.clone());
        devices.spawn_local(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(boot_at)).await;
            device::run(index as u32, image, records, stop).await;
        });
    }
    drop(record_tx);

    let end = started + options.duration;
    let mut outage = None;
    if let Some(at) = options.kill_broker_at.filter(|at| *at < options.duration) {
        tokio::time::sleep_until(tokio::time::Instant::from_std(started + at)).await;
        let down = Instant::now();
        broker.stop().await;
        if options.progress_every.is_some() {
            eprintln!(
                "fleet: broker stopped at {:.1}s for {:.1}s",
                down.duration_since(started).as_secs_f64(),
                options.outage.as_secs_f64()
            );
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(down + options.outage)).await;
        broker.restart().await?;
        let back = Instant::now();
        let _ = phase_tx.send(Phase::BrokerBack(back));
        if options.progress_every.is_some() {
            eprintln!(
                "fleet: broker back at {:.1}s",
                back.duration_since(started).as_secs_f64()
            );
        }
        outage = Some((down, back));
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await;
    let broker_clients = broker.connected_clients();
    let shared_broker = (!broker.can_stop()).then(|| format!("{}:{}", broker.host, broker.port));
    let cpu_s = stats::cpu_seconds() - cpu_before;
    let (rss_kb, peak_kb) = stats::memory_kb();
    let stopped = Instant::now();

    let _ = phase_tx.send(Phase::Draining {
        stopped,
        deadline: stopped + STOP_WITHIN + DRAIN_WITHIN,
    });
    let _ = stop_tx.send(true);
    let goodbye = async { while devices.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_WITHIN, goodbye).await.is_err() {
        devices.abort_all();
    }
    let figures = collecting
        .await
        .map_err(|e| RigError::make("fleet collector", e))?;
    broker.shutdown().await;

    let run_info = report::RunInfo {
        target: options.target,
        shared_broker,
        devices: count,
        id_offset: options.id_offset,
        period,
        duration: options.duration,
        ramp: options.ramp,
        started_wall,
        outage: outage.map(|(down, back)| {
            (
                down.duration_since(started).as_secs_f64(),
                back.duration_since(started).as_secs_f64(),
            )
        }),
        issue_s,
        cpu_s,
        wall_s: stopped.duration_since(started).as_secs_f64(),
        rss_before_kb,
        rss_kb,
        peak_kb,
        broker_clients,
        load: report::load_average(),
    };
    let json = report::to_json(&run_info, &figures);
    let (json_path, html_path) = report::write(&options.out, &json)?;
    Ok(FleetRun {
        json,
        json_path,
        html_path,
    })
}
