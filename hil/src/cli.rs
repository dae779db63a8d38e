//! The `hil` command line: `hil list` and `hil run`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};

use crate::aws::{Endpoint, ObserverIdentity};
use crate::backend::Backend;
use crate::backend::esp32c3::{self, Esp32c3Backend};
use crate::backend::esp8266::{Esp8266Backend, Sketch};
use crate::backend::monitor::MonitorBackend;
use crate::backend::ports;
use crate::backend::virtual_device::{VirtualBackend, find_virtual_device};
use crate::error::{RigError, SetupError};
use crate::report::{RunInfo, junit_setup_error, junit_xml, summary_table, write_report_dir};
use crate::rig::{GivenImage, Rig};
use crate::runner::{Progress, ScenarioReport, run_suite_on};
use crate::scenarios::{self, Vocabulary};

mod fleet;
mod qualify;

/// The test PKI the broker serves with `--flash` when `--pki` is absent (`make certs`).
pub const DEFAULT_PKI: &str = "certs/dev";

#[derive(Debug, Parser)]
#[command(
    name = "hil",
    about = "Hardware-in-the-loop runner for the thing's firmware"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once per process: the size of `RunArgs` does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// List the scenarios, one line each with its tolerance.
    List,
    /// Run the suite (or the named scenarios) and report.
    Run(RunArgs),
    /// Run AWS IoT Device Advisor's qualification cases offline (mock broker) and report
    /// each with Device Advisor's verdict words.
    Qualify(QualifyArgs),
    /// Run N virtual devices (the real device core, each with its own identity) in one
    /// process against one broker, and report connections, cadence, latency, reconnect
    /// storms, QoS 1 losses and host cost (fleet.json, fleet.html).
    Fleet(fleet::FleetArgs),
    /// Run rumqttd in the foreground with mutual TLS from a `certs init` folder: what
    /// `--target rumqttd` starts and `make broker BROKER=rumqttd` runs. Needs a hil built
    /// with the `rumqttd` feature.
    RumqttdBroker(RumqttdBrokerArgs),
}

#[derive(Debug, clap::Args)]
pub struct RumqttdBrokerArgs {
    /// The folder with ca.pem (client certificates must chain to it), server.pem and
    /// server.key.pem.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PKI)]
    pub dir: PathBuf,
    /// The MQTT 5 listener (devices), on 127.0.0.1.
    #[arg(long, default_value_t = 8883)]
    pub port: u16,
    /// The MQTT 3.1.1 listener (observers, mosquitto_sub/pub without -V 5), on
    /// 127.0.0.1: rumqttd serves one MQTT version per listener.
    #[arg(long, default_value_t = 8884)]
    pub observer_port: u16,
    /// Exit when standard input closes (the rig holds it open while it runs).
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Board {
    /// The `virtual-device` binary behind a pseudo-terminal.
    Virtual,
    Esp32c3,
    Esp8266,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// The mock broker, started in-process.
    Mock,
    /// AWS IoT Core at `--endpoint`.
    Aws,
    /// A mosquitto process the rig starts (mutual TLS, the rig's test PKI).
    Mosquitto,
    /// rumqttd, which the rig starts in a child process (mutual TLS, the rig's test
    /// PKI); needs a hil built with the `rumqttd` feature.
    Rumqttd,
}

impl Board {
    /// As on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Virtual => "virtual",
            Self::Esp32c3 => "esp32c3",
            Self::Esp8266 => "esp8266",
        }
    }
}

impl Target {
    /// As on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mock => "mock",
            Self::Aws => "aws",
            Self::Mosquitto => "mosquitto",
            Self::Rumqttd => "rumqttd",
        }
    }
}

/// Which device, against which target: the options `hil run` and `hil qualify` share.
#[derive(Debug, clap::Args)]
pub struct DeviceArgs {
    #[arg(long, value_enum, default_value = "virtual")]
    pub board: Board,
    /// Serial port of a board (auto-detected by USB VID/PID when absent).
    #[arg(long)]
    pub port: Option<PathBuf>,
    /// Firmware to flash onto a board.
    #[arg(long)]
    pub firmware: Option<PathBuf>,
    /// Use the board as it is: flash nothing, read its serial port (any tty, also a
    /// pseudo-terminal; reset through RTS only when the port has modem lines). --flash
    /// then names the image the board already holds, for its client id and topics.
    #[arg(long, conflicts_with = "firmware", verbatim_doc_comment)]
    pub no_flash: bool,
    /// With --board esp8266 --no-flash: which sketch the board runs (the tutorial's
    /// prints fewer lines; scenarios needing the others are skipped, saying why).
    #[arg(long, value_enum, default_value = "adapted", requires = "no_flash")]
    pub sketch: Sketch,
    /// Run with this flash image instead of the per-scenario images the rig builds (with
    /// --target aws: the image built from `certs import`, required).
    #[arg(long)]
    pub flash: Option<PathBuf>,
    /// mock: the mock broker in-process. aws: the AWS IoT endpoint the --flash image
    /// dials, watched through the observer identity (--observer-*); no broker is started,
    /// the scenarios that need broker faults are skipped, and publish times are the
    /// observer's receive times (they include the endpoint-to-rig network jitter).
    /// mosquitto, rumqttd: that broker, started by the rig with the rig's test PKI and
    /// watched through an observer identity; fault scenarios are skipped.
    #[arg(long, value_enum, default_value = "mock", verbatim_doc_comment)]
    pub target: Target,
    /// AWS IoT data endpoint, HOST[:PORT] (xxxx-ats.iot.REGION.amazonaws.com; port 8883
    /// by default, 443 speaks ALPN x-amzn-mqtt-ca); --target aws only.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub endpoint: Option<String>,
    /// A `certs init` folder. Without --flash: the devices' identities come from its CA
    /// (ca.pem, ca.key.pem) and the broker presents its server certificate; the default
    /// is a fresh test PKI every run, so `make hil` needs nothing on disk. With --flash:
    /// the broker serves it (server certificate, CA, policy.json; default certs/dev).
    #[arg(long, value_name = "DIR", verbatim_doc_comment)]
    pub pki: Option<PathBuf>,
    /// The observer's certificate (--target aws): a second identity, registered in the
    /// account with a policy allowing iot:Connect as --observer-client-id,
    /// iot:Subscribe/iot:Receive on the image's publish topic and iot:Publish on its
    /// subscribe topic (see hil/README.md).
    #[arg(long, value_name = "FILE", verbatim_doc_comment)]
    pub observer_cert: Option<PathBuf>,
    /// The observer's private key (PEM or DER; --target aws).
    #[arg(long, value_name = "FILE")]
    pub observer_key: Option<PathBuf>,
    /// The CA the endpoint's certificate chains to, for the observer (AmazonRootCA1.pem
    /// on AWS; --target aws).
    #[arg(long, value_name = "FILE")]
    pub observer_ca: Option<PathBuf>,
    /// The observer's MQTT client id (--target aws).
    #[arg(long, value_name = "ID", default_value = crate::aws::DEFAULT_CLIENT_ID)]
    pub observer_client_id: String,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Run only these scenarios (repeatable); all when absent.
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    /// Write JUnit XML here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write per-scenario logs and the summary into this folder.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Compare the serial logs of boot, cadence and inbound with the insta snapshots in
    /// this folder (`hil/tests/snapshots`); a mismatch fails the run and leaves
    /// `.snap.new` files for `cargo insta review`.
    #[arg(long, value_name = "DIR")]
    pub snapshots: Option<PathBuf>,
    /// With --snapshots: write this run's logs into the snapshots instead of comparing.
    #[arg(long, requires = "snapshots")]
    pub update_snapshots: bool,
}

impl std::ops::Deref for RunArgs {
    type Target = DeviceArgs;
    fn deref(&self) -> &DeviceArgs {
        &self.device
    }
}

#[derive(Debug, clap::Args)]
pub struct QualifyArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Run only these Device Advisor cases (repeatable, e.g. MQTT_Connect); all when
    /// absent. `hil qualify --list` names them.
    #[arg(long = "case", value_name = "NAME")]
    pub cases: Vec<String>,
    /// List the cases with their rules and exit.
    #[arg(long)]
    pub list: bool,
    /// The policy attached to the device's certificate, for Security_Device_Policies
    /// (default: the policy the mock broker applies; required to judge it on AWS).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// MQTT_Long_Duration: how long the server refuses the device in the long server
    /// disconnect, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub long_outage: u64,
    /// MQTT_Long_Duration: how many times the link drops in the intermittent part.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub drops: usize,
    /// Write JUnit XML here (one testcase per case).
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write the report here: qualification.html and .txt, and the scenarios' logs
    /// (index.html) behind them.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

impl std::ops::Deref for QualifyArgs {
    type Target = DeviceArgs;
    fn deref(&self) -> &DeviceArgs {
        &self.device
    }
}

/// The scenario list `hil list` prints.
pub fn list() -> String {
    let all = scenarios::all();
    let width = all.iter().map(|s| s.name.len()).max().unwrap_or(0);
    all.iter()
        .map(|s| {
            let alone = if s.exclusive { " (runs alone)" } else { "" };
            format!(
                "{:<width$}  {}; tolerance: {}{alone}\n",
                s.name, s.summary, s.tolerance
            )
        })
        .collect()
}

/// Options that mean nothing with the others given, as one error message.
fn unsupported(args: &DeviceArgs) -> Option<String> {
    let board_only: Vec<&str> = [
        ("--port", args.port.is_some()),
        ("--firmware", args.firmware.is_some()),
        ("--no-flash", args.no_flash),
    ]
    .into_iter()
    .filter(|(_, given)| *given && args.board == Board::Virtual)
    .map(|(flag, _)| flag)
    .collect();
    if !board_only.is_empty() {
        return Some(format!(
            "{}: only with --board esp32c3 or --board esp8266",
            board_only.join(", ")
        ));
    }
    (args.sketch != Sketch::Adapted && args.board != Board::Esp8266)
        .then(|| "--sketch: only with --board esp8266".to_string())
}

/// A board dials the host over WiFi: the rig's own images (WiFi-less, broker at
/// `localhost`) cannot reach it, so a board needs a `--flash` image made for the bench.
fn board_without_image(args: &DeviceArgs) -> Option<String> {
    (args.board != Board::Virtual && args.flash.is_none()).then(|| {
        "a board needs --flash IMAGE: an image with the WiFi credentials and this machine's \
         LAN address as endpoint and NTP server (certs image --endpoint ADDR:8883 --ntp \
         ADDR:1123 --wifi-ssid ...; see the README's Bench), with --pki its PKI folder"
            .to_string()
    })
}

/// Why the `--flash` image cannot serve a board the rig flashes: a board joins WiFi and
/// dials the host from the LAN, so an image without an SSID, or whose endpoint is this
/// machine's loopback (the virtual device's images, `make certs`'s flash.img), would
/// leave it retrying forever.
fn image_unfit_for_board(args: &DeviceArgs, image: &GivenImage) -> Option<String> {
    if args.board == Board::Virtual || args.no_flash {
        return None;
    }
    let path = image.path.display();
    let remake = "make one for the bench: certs image --wifi-ssid SSID --wifi-password PASS \
                  --endpoint LAN_ADDR:8883 --ntp LAN_ADDR:1123 (see the README's Bench)";
    if image.config.wifi.ssid.is_empty() {
        return Some(format!(
            "{path} has no WiFi SSID (an image for the virtual device, which needs no WiFi); \
             the {} could not join a network. {remake}",
            args.board.name()
        ));
    }
    let host = image.config.endpoint.host.as_str();
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback.then(|| {
        format!("{path} dials {host}, the board's own loopback, not this machine; {remake}")
    })
}

/// The backend `--board` names. A board is looked for first: without it nothing can run,
/// and the error says which ports were seen.
fn backend(args: &DeviceArgs) -> Result<Arc<dyn Backend>, SetupError> {
    Ok(match args.board {
        Board::Virtual => Arc::new(VirtualBackend::new(find_virtual_device()?)),
        Board::Esp32c3 | Board::Esp8266 if args.no_flash => {
            let board = match args.board {
                Board::Esp8266 => MonitorBackend::esp8266(
                    given_or_detected(args, &[ports::CP210X, ports::CH340], "esp8266")?,
                    args.sketch,
                )?,
                _ => MonitorBackend::esp32c3(given_or_detected(
                    args,
                    &[ports::ESPRESSIF_USB_SERIAL_JTAG],
                    "esp32c3",
                )?)?,
            };
            eprintln!(
                "hil: {} on {}, as it is (--no-flash)",
                board.board(),
                board.port().display()
            );
            Arc::new(board)
        }
        Board::Esp32c3 => {
            let board = Esp32c3Backend::new(
                args.port.clone(),
                args.firmware.clone(),
                Path::new(esp32c3::DEFAULT_PARTITIONS),
            )?;
            eprintln!("hil: esp32c3 on {}", board.port().display());
            Arc::new(board)
        }
        Board::Esp8266 => {
            let board = Esp8266Backend::new(args.port.clone(), args.firmware.clone())?;
            eprintln!("hil: esp8266 on {}", board.port().display());
            Arc::new(board)
        }
    })
}

/// `--port`, else the one port whose USB id is one of `ids`.
fn given_or_detected(
    args: &DeviceArgs,
    ids: &[ports::UsbId],
    board: &'static str,
) -> Result<PathBuf, SetupError> {
    Ok(match &args.port {
        Some(port) => port.clone(),
        None => ports::detect(ids, board)?.0,
    })
}

/// The `--target aws` settings, checked together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    pub endpoint: Endpoint,
    /// The device's image, built from `certs import`.
    pub image: PathBuf,
    pub observer_cert: PathBuf,
    pub observer_key: PathBuf,
    pub observer_ca: PathBuf,
    pub observer_client_id: String,
}

/// Check that the target options belong together: `Some` settings for `--target aws`.
pub fn target_settings(args: &DeviceArgs) -> Result<Option<AwsSettings>, RigError> {
    let observer = [
        ("--observer-cert", &args.observer_cert),
        ("--observer-key", &args.observer_key),
        ("--observer-ca", &args.observer_ca),
    ];
    match args.target {
        Target::Mock | Target::Mosquitto | Target::Rumqttd => {
            let mut stray: Vec<&str> = observer
                .iter()
                .filter(|(_, given)| given.is_some())
                .map(|(flag, _)| *flag)
                .collect();
            if args.endpoint.is_some() {
                stray.insert(0, "--endpoint");
            }
            if args.observer_client_id != crate::aws::DEFAULT_CLIENT_ID {
                stray.push("--observer-client-id");
            }
            if stray.is_empty() {
                Ok(None)
            } else {
                Err(RigError::usage(format!(
                    "{}: only with --target aws",
                    stray.join(", ")
                )))
            }
        }
        Target::Aws => {
            if args.pki.is_some() {
                return Err(RigError::usage(
                    "--pki: --target aws starts no broker (the device's credentials are in the --flash image)",
                ));
            }
            let image = args.flash.clone().ok_or(RigError::usage(
                "--target aws needs --flash IMAGE: the device's image, built with `certs image` from what `certs import` wrote",
            ))?;
            let endpoint = args.endpoint.as_deref().ok_or(RigError::usage(
                "--target aws needs --endpoint HOST[:PORT]: the account's AWS IoT data endpoint",
            ))?;
            let endpoint = Endpoint::parse(endpoint)?;
            let missing: Vec<&str> = observer
                .iter()
                .filter(|(_, given)| given.is_none())
                .map(|(flag, _)| *flag)
                .collect();
            if !missing.is_empty() {
                return Err(RigError::usage(format!(
                    "--target aws needs {} FILE: the observer identity that watches and injects (see hil/README.md)",
                    missing.join(" FILE, ")
                )));
            }
            let file = |given: &Option<PathBuf>| given.clone().expect("checked above");
            Ok(Some(AwsSettings {
                endpoint,
                image,
                observer_cert: file(&args.observer_cert),
                observer_key: file(&args.observer_key),
                observer_ca: file(&args.observer_ca),
                observer_client_id: args.observer_client_id.clone(),
            }))
        }
    }
}

/// Why `scenario` cannot run on this command line, if it cannot.
fn skip_reason(
    args: &DeviceArgs,
    named: bool,
    vocabulary: Vocabulary,
    scenario: &scenarios::Scenario,
) -> Option<String> {
    if let Some(why) = vocabulary.skip_reason(scenario.needs_lines) {
        return Some(why);
    }
    if scenario.restarts_broker && args.target == Target::Aws {
        return Some("restarts the broker, which a test cannot do to AWS IoT".into());
    }
    if scenario.needs_broker_faults {
        match args.target {
            Target::Mock => {}
            Target::Aws => {
                return Some("needs the mock broker's faults, which AWS IoT does not offer".into());
            }
            Target::Mosquitto => {
                return Some(
                    "needs the mock broker's faults, which mosquitto does not offer".into(),
                );
            }
            Target::Rumqttd => {
                return Some("needs the mock broker's faults, which rumqttd does not offer".into());
            }
        }
    }
    // Named explicitly with --flash, it runs (and fails visibly): the user asked for it.
    let given_image = args.flash.is_some() && (!named || args.target == Target::Aws);
    if given_image && scenario.needs_rig_ca {
        return Some(
            "issues certificates from the rig's CA, and every device runs the --flash image".into(),
        );
    }
    None
}

/// Start the rig the command line asks for; drops the scenarios it cannot run from
/// `selected` and returns them with the reason.
async fn start_rig(
    args: &DeviceArgs,
    named: bool,
    binary: PathBuf,
    vocabulary: Vocabulary,
    selected: &mut Vec<scenarios::Scenario>,
) -> Result<(Rig, Vec<(&'static str, String)>), RigError> {
    let aws = target_settings(args)?;
    let skipped: Vec<(&'static str, String)> = selected
        .iter()
        .filter_map(|s| skip_reason(args, named, vocabulary, s).map(|why| (s.name, why)))
        .collect();
    selected.retain(|s| skip_reason(args, named, vocabulary, s).is_none());
    if matches!(args.target, Target::Mosquitto | Target::Rumqttd) {
        if args.flash.is_some() || args.pki.is_some() {
            return Err(RigError::usage(format!(
                "--flash, --pki: --target {} makes its own test PKI and image",
                args.target.name()
            )));
        }
        let rig = if args.target == Target::Rumqttd {
            if !crate::third_party::RUMQTTD_BUILT {
                return Err(RigError::usage(format!(
                    "--target rumqttd: {}",
                    crate::third_party::RUMQTTD_MISSING
                )));
            }
            Rig::rumqttd(binary).await?
        } else {
            Rig::mosquitto(binary).await?
        };
        eprintln!(
            "hil: every scenario runs the one thing image (client id {}), one at a time",
            rig.given_image()
                .map_or("?", |g| g.config.client_id.as_str())
        );
        return Ok((rig, skipped));
    }
    let rig = match (aws, &args.flash) {
        (Some(aws), _) => {
            let identity = ObserverIdentity::load(
                &aws.observer_cert,
                &aws.observer_key,
                &aws.observer_ca,
                &aws.observer_client_id,
            )?;
            let image = GivenImage::read(&aws.image)?;
            eprintln!(
                "hil: every scenario runs {} (client id {}), one at a time",
                aws.image.display(),
                image.config.client_id
            );
            Rig::aws(binary, image, &aws.endpoint, &identity).await?
        }
        (None, None) => match &args.pki {
            None => Rig::start(binary).await?,
            Some(dir) => Rig::with_pki_dir(binary, dir).await?,
        },
        (None, Some(image)) => {
            let pki = args
                .pki
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PKI));
            let image = GivenImage::read(image)?;
            eprintln!(
                "hil: every scenario runs {} (client id {}), one at a time",
                image.path.display(),
                image.config.client_id
            );
            Rig::with_given_image(binary, &pki, image).await?
        }
    };
    Ok((rig, skipped))
}

pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::List => {
            print!("{}", list());
            ExitCode::SUCCESS
        }
        Command::Qualify(args) => qualify::run(args).await,
        Command::RumqttdBroker(args) => rumqttd_broker(&args),
        Command::Fleet(args) => fleet::run(args).await,
        Command::Run(args) => {
            let started = std::time::SystemTime::now();
            match run_suite_command(&args, started).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    // Named as the rig's or the backend's: no scenario ran, so nothing
                    // here is a verdict on the device.
                    eprintln!("hil: {} error: {e}", e.fault());
                    // CI reads the JUnit file: say there why nothing ran.
                    if let Some(path) = &args.junit {
                        let info =
                            RunInfo::collect(started, args.board.name(), args.target.name(), &[]);
                        let written = path
                            .parent()
                            .map_or(Ok(()), std::fs::create_dir_all)
                            .and_then(|()| std::fs::write(path, junit_setup_error(&info, &e)));
                        if let Err(w) = written {
                            eprintln!("hil: write {}: {w}", path.display());
                        }
                    }
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// `hil rumqttd-broker`: rumqttd until it fails or is killed.
fn rumqttd_broker(args: &RumqttdBrokerArgs) -> ExitCode {
    #[cfg(feature = "rumqttd")]
    {
        use crate::third_party::{RumqttdPorts, rumqttd_broker};
        if args.exit_with_parent {
            std::thread::spawn(|| {
                let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
                std::process::exit(0);
            });
        }
        let ports = RumqttdPorts {
            device: args.port,
            observer: args.observer_port,
        };
        eprintln!(
            "hil: starting rumqttd with {}: MQTT 5 on 127.0.0.1:{}, MQTT 3.1.1 on 127.0.0.1:{}, client certificates required",
            args.dir.display(),
            ports.device,
            ports.observer
        );
        // rumqttd runs its listeners on threads of their own and blocks this one.
        let failed = rumqttd_broker::run(&args.dir, ports);
        if let Err(why) = failed {
            eprintln!("hil rumqttd-broker: {why}");
        }
        ExitCode::from(2)
    }
    #[cfg(not(feature = "rumqttd"))]
    {
        let _ = args;
        eprintln!(
            "hil rumqttd-broker: {}",
            crate::third_party::RUMQTTD_MISSING
        );
        ExitCode::from(2)
    }
}

/// Check the device options, find the backend and prepare it (a board is flashed here,
/// outside every scenario's deadline): the backend and the virtual-device binary (empty
/// for a board).
async fn ready_device(args: &DeviceArgs) -> Result<(Arc<dyn Backend>, PathBuf), SetupError> {
    if let Some(e) = unsupported(args) {
        return Err(RigError::Usage(e).into());
    }
    let backend = backend(args)?;
    if let Some(e) = board_without_image(args) {
        return Err(RigError::Usage(e).into());
    }
    if let Some(path) = args
        .flash
        .as_deref()
        .filter(|_| args.board != Board::Virtual)
        && let Some(e) = image_unfit_for_board(args, &GivenImage::read(path)?)
    {
        return Err(RigError::Usage(e).into());
    }
    let preparing = Arc::clone(&backend);
    tokio::task::spawn_blocking(move || preparing.prepare())
        .await
        .map_err(|e| {
            crate::error::BackendError::board(backend.board(), format!("preparing the device: {e}"))
        })??;
    // The rig's own virtual-device binary is only run by the virtual backend.
    let binary = match args.board {
        Board::Virtual => find_virtual_device()?,
        Board::Esp32c3 | Board::Esp8266 => PathBuf::new(),
    };
    Ok((backend, binary))
}

/// `hil run`: `Ok(passed)`, or why the suite could not run at all.
async fn run_suite_command(
    args: &RunArgs,
    started_wall: std::time::SystemTime,
) -> Result<bool, SetupError> {
    let mut selected = scenarios::select(&args.scenarios)?;
    let started = Instant::now();
    let (backend, binary) = ready_device(args).await?;
    let named = !args.scenarios.is_empty();
    let (rig, skipped) =
        start_rig(args, named, binary, backend.vocabulary(), &mut selected).await?;
    for (name, why) in &skipped {
        eprintln!("hil: skipping {name}: {why}");
    }
    eprintln!(
        "hil: {}, {} scenario(s) on the {} device",
        rig.describe(),
        selected.len(),
        backend.board()
    );
    let rig = Arc::new(rig);
    let reports = run_suite_on(
        Arc::clone(&rig),
        Arc::clone(&backend),
        selected,
        move |event| {
            let at = started.elapsed().as_secs_f64();
            match event {
                Progress::Started(name) => eprintln!("[{at:6.1}s] start {name}"),
                Progress::Finished(r) => match &r.result {
                    Ok(figure) => eprintln!("[{at:6.1}s] pass  {}: {figure}", r.name),
                    Err(failed) => {
                        eprintln!("[{at:6.1}s] {:<5} {}: {failed}", failed.label(), r.name)
                    }
                },
            }
        },
    )
    .await;
    let mut reports = reports;
    let all = scenarios::all();
    for (name, why) in &skipped {
        if let Some(scenario) = all.iter().find(|s| s.name == *name) {
            reports.push(ScenarioReport::skipped(scenario, why));
        }
    }
    let total = started.elapsed();
    let summary = summary_table(&reports);
    println!("\n{summary}");
    let info = RunInfo::collect(started_wall, backend.board(), args.target.name(), &reports);
    if let Some(path) = &args.junit {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| RigError::io(parent.display().to_string(), e))?;
        }
        std::fs::write(path, junit_xml(&info, &reports, total))
            .map_err(|e| RigError::io(format!("write {}", path.display()), e))?;
        println!("JUnit: {}", path.display());
    }
    if let Some(dir) = &args.report {
        write_report_dir(dir, &reports, &summary, &info)
            .map_err(|e| RigError::io(format!("write report {}", dir.display()), e))?;
        println!("report: {}", dir.join("index.html").display());
    }
    let mut snapshots_differ = false;
    if let Some(dir) = &args.snapshots {
        let mismatches = crate::snapshots::check(dir, &reports, args.update_snapshots)
            .map_err(|e| RigError::io(format!("snapshots in {}", dir.display()), e))?;
        if !mismatches.is_empty() {
            print!(
                "\n{}",
                crate::snapshots::describe(&mismatches, args.update_snapshots)
            );
            snapshots_differ = !args.update_snapshots;
        }
    }
    let failed = reports.iter().filter(|r| !r.passed()).count();
    let broken = reports
        .iter()
        .filter(|r| r.result.as_ref().is_err_and(|f| !f.fault.is_device()))
        .count();
    let skips = if skipped.is_empty() {
        String::new()
    } else {
        format!(", {} skipped", skipped.len())
    };
    // A scenario the rig or backend broke says nothing about the device: counted apart.
    let errors = if broken == 0 {
        String::new()
    } else {
        format!(", {broken} not run to a verdict (rig or backend error)")
    };
    println!(
        "{} passed, {} failed{errors}{skips}{}; wall time {:.1} s",
        reports.len() - failed - skipped.len(),
        failed - broken,
        if snapshots_differ {
            "; serial-log snapshots differ"
        } else {
            ""
        },
        total.as_secs_f64()
    );
    if let Ok(rig) = Arc::try_unwrap(rig) {
        rig.shutdown().await;
    }
    Ok(failed == 0 && !snapshots_differ)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> RunArgs {
        let argv = ["hil", "run"].iter().chain(args);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Run(args) => args,
            Command::List | Command::Qualify(_) | Command::RumqttdBroker(_) | Command::Fleet(_) => {
                unreachable!()
            }
        }
    }

    #[test]
    fn qualify_takes_the_device_options_and_names_its_own() {
        let argv = [
            "hil",
            "qualify",
            "--case",
            "MQTT_Connect",
            "--case",
            "TLS_Connect",
            "--long-outage",
            "10",
            "--board",
            "virtual",
        ];
        let Command::Qualify(args) = Cli::try_parse_from(argv).expect("parses").command else {
            unreachable!()
        };
        assert_eq!(args.cases, ["MQTT_Connect", "TLS_Connect"]);
        assert_eq!((args.long_outage, args.drops), (10, 3));
        assert_eq!((args.board, args.target), (Board::Virtual, Target::Mock));
        let why = crate::qualify::select(&["MQTT_Nonsense".to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            why.contains("unknown Device Advisor case \"MQTT_Nonsense\"; known: TLS_Connect"),
            "{why}"
        );
        assert!(
            qualify::list()
                .contains("MQTT_Persistent_Session_Happy_Case (MQTT; persistent-session)")
        );
    }

    #[test]
    fn the_defaults_are_the_virtual_device_against_the_mock_broker() {
        let args = run_args(&[]);
        assert_eq!((args.board, args.target), (Board::Virtual, Target::Mock));
        assert_eq!(unsupported(&args), None);
    }

    #[test]
    fn board_options_are_taken_with_a_board_and_refused_by_name_without() {
        let args = run_args(&["--board", "esp32c3", "--port", "/dev/ttyACM0"]);
        assert_eq!(unsupported(&args), None);
        let args = run_args(&["--board", "esp8266", "--firmware", "sketch.bin"]);
        assert_eq!(unsupported(&args), None);
        assert!(board_without_image(&args).is_some_and(|e| e.contains("--flash IMAGE")));
        let args = run_args(&["--board", "esp32c3", "--flash", "bench.img"]);
        assert_eq!(board_without_image(&args), None);
        assert_eq!(board_without_image(&run_args(&[])), None);
        let args = run_args(&["--port", "/dev/ttyACM0", "--firmware", "fw.elf"]);
        assert_eq!(
            unsupported(&args),
            Some("--port, --firmware: only with --board esp32c3 or --board esp8266".into())
        );
    }

    #[test]
    fn a_pki_folder_without_an_image_is_supported() {
        let args = run_args(&["--pki", "certs/dev"]);
        assert_eq!(unsupported(&args), None);
        assert!(matches!(target_settings(&args), Ok(None)));
    }

    #[test]
    fn aws_needs_an_image_an_endpoint_and_the_observer_identity() {
        let full = [
            "--target",
            "aws",
            "--flash",
            "aws.img",
            "--endpoint",
            "abc-ats.iot.eu-west-1.amazonaws.com",
            "--observer-cert",
            "o.pem",
            "--observer-key",
            "o.key",
            "--observer-ca",
            "AmazonRootCA1.pem",
        ];
        let settings = target_settings(&run_args(&full)).unwrap().expect("aws");
        assert_eq!(
            settings.endpoint.to_string(),
            "abc-ats.iot.eu-west-1.amazonaws.com:8883"
        );
        assert_eq!(settings.observer_client_id, "hil-observer");
        assert_eq!(unsupported(&run_args(&full)), None);

        // Each required flag, left out, is named.
        for (flag, expected) in [
            ("--flash", "--target aws needs --flash IMAGE"),
            ("--endpoint", "--target aws needs --endpoint HOST[:PORT]"),
            ("--observer-key", "--target aws needs --observer-key FILE"),
        ] {
            let at = full.iter().position(|a| *a == flag).unwrap();
            let mut args = full.to_vec();
            args.drain(at..at + 2);
            let why = target_settings(&run_args(&args))
                .expect_err(flag)
                .to_string();
            assert!(why.starts_with(expected), "{why}");
        }
        let mut with_pki = full.to_vec();
        with_pki.extend(["--pki", "certs/dev"]);
        let why = target_settings(&run_args(&with_pki))
            .unwrap_err()
            .to_string();
        assert!(
            why.starts_with("--pki: --target aws starts no broker"),
            "{why}"
        );
    }

    #[test]
    fn aws_options_without_target_aws_are_refused_by_name() {
        let args = run_args(&["--endpoint", "h", "--observer-ca", "ca.pem"]);
        assert_eq!(
            target_settings(&args).map_err(|e| e.to_string()),
            Err("--endpoint, --observer-ca: only with --target aws".into())
        );
    }

    #[test]
    fn aws_skips_the_fault_scenarios_with_the_reason() {
        let args = run_args(&["--target", "aws", "--flash", "aws.img"]);
        for scenario in scenarios::all() {
            let why = skip_reason(
                &args,
                !args.scenarios.is_empty(),
                Vocabulary::Firmware,
                &scenario,
            );
            if scenario.restarts_broker {
                assert_eq!(
                    why.as_deref(),
                    Some("restarts the broker, which a test cannot do to AWS IoT"),
                    "{}",
                    scenario.name
                );
            } else if scenario.needs_broker_faults {
                assert_eq!(
                    why.as_deref(),
                    Some("needs the mock broker's faults, which AWS IoT does not offer"),
                    "{}",
                    scenario.name
                );
            } else if !scenario.needs_rig_ca {
                assert_eq!(why, None, "{}", scenario.name);
            }
        }
        for kept in ["boot", "cadence", "inbound"] {
            let scenario = scenarios::all()
                .into_iter()
                .find(|s| s.name == kept)
                .unwrap();
            assert_eq!(
                skip_reason(
                    &args,
                    !args.scenarios.is_empty(),
                    Vocabulary::Firmware,
                    &scenario
                ),
                None,
                "{kept}"
            );
        }
    }

    #[test]
    fn the_readme_states_every_tolerance_as_hil_list_does() {
        let readme = include_str!("../README.md");
        for scenario in scenarios::all() {
            let head = format!("| `{}` |", scenario.name);
            let row = readme
                .lines()
                .find(|l| l.starts_with(&head))
                .unwrap_or_else(|| panic!("hil/README.md has no row for {}", scenario.name));
            let tolerance = row.trim_end_matches('|').rsplit('|').next().unwrap().trim();
            assert_eq!(tolerance, scenario.tolerance, "{}", scenario.name);
        }
    }

    #[test]
    fn a_loopback_image_is_refused_for_a_board_the_rig_flashes() {
        let image = |json: &str| GivenImage {
            path: PathBuf::from("certs/dev/flash.img"),
            config: firmware_core::config::DeviceConfig::from_json(json.as_bytes()).unwrap(),
        };
        let virtual_image = image(r#"{"endpoint": {"host": "localhost"}, "client_id": "a"}"#);
        let board = run_args(&["--board", "esp8266", "--flash", "certs/dev/flash.img"]);
        let why = image_unfit_for_board(&board, &virtual_image).unwrap();
        assert!(
            why.starts_with("certs/dev/flash.img has no WiFi SSID")
                && why.contains("certs image --wifi-ssid"),
            "{why}"
        );
        let loopback = image(
            r#"{"wifi": {"ssid": "bench", "password": "p"}, "endpoint": {"host": "127.0.0.1"}, "client_id": "a"}"#,
        );
        let why = image_unfit_for_board(&board, &loopback).unwrap();
        assert!(
            why.contains("dials 127.0.0.1, the board's own loopback"),
            "{why}"
        );
        let bench = image(
            r#"{"wifi": {"ssid": "bench", "password": "p"}, "endpoint": {"host": "192.168.1.10"}, "client_id": "a"}"#,
        );
        assert_eq!(image_unfit_for_board(&board, &bench), None);
        // The virtual device needs no WiFi; a board used as it is keeps its own image.
        let virtual_run = run_args(&["--flash", "certs/dev/flash.img"]);
        assert_eq!(image_unfit_for_board(&virtual_run, &virtual_image), None);
        let as_it_is = run_args(&["--board", "esp8266", "--no-flash", "--flash", "x.img"]);
        assert_eq!(image_unfit_for_board(&as_it_is, &virtual_image), None);
    }

    #[test]
    fn no_flash_is_for_boards_and_the_tutorial_sketch_skips_what_it_cannot_show() {
        let args = run_args(&["--no-flash"]);
        assert_eq!(
            unsupported(&args).as_deref(),
            Some("--no-flash: only with --board esp32c3 or --board esp8266")
        );
        let args = run_args(&["--board", "esp32c3", "--no-flash", "--sketch", "tutorial"]);
        assert_eq!(
            unsupported(&args).as_deref(),
            Some("--sketch: only with --board esp8266")
        );
        let args = run_args(&[
            "--board",
            "esp8266",
            "--no-flash",
            "--sketch",
            "tutorial",
            "--port",
            "/dev/pts/7",
        ]);
        assert_eq!(unsupported(&args), None);
        assert!(args.no_flash && args.sketch == Sketch::Tutorial);
        let all = scenarios::all();
        let named = |name: &str| all.iter().find(|s| s.name == name).unwrap();
        let why = skip_reason(
            &args,
            !args.scenarios.is_empty(),
            Vocabulary::TutorialSketch,
            named("dead-link"),
        )
        .unwrap();
        assert!(
            why.starts_with("needs `mqtt: disconnected`, and the tutorial's sketch prints nothing"),
            "{why}"
        );
        for runs in ["boot", "cadence", "inbound", "backoff"] {
            assert_eq!(
                skip_reason(
                    &args,
                    !args.scenarios.is_empty(),
                    Vocabulary::TutorialSketch,
                    named(runs)
                ),
                None,
                "{runs}"
            );
        }
    }

    #[test]
    fn scenarios_are_selected_by_name_and_unknown_names_listed() {
        let chosen = scenarios::select(&["inbound".into(), "boot".into()]).unwrap();
        let names: Vec<&str> = chosen.iter().map(|s| s.name).collect();
        assert_eq!(names, ["inbound", "boot"]);
        let Err(why) = scenarios::select(&["nope".into()]).map_err(|e| e.to_string()) else {
            panic!("an unknown scenario was accepted");
        };
        assert!(
            why.contains("unknown scenario \"nope\"") && why.contains("cadence"),
            "{why}"
        );
    }

    #[test]
    fn every_scenario_is_listed_with_its_tolerance() {
        let listing = list();
        for scenario in scenarios::all() {
            let line = listing
                .lines()
                .find(|l| l.starts_with(scenario.name))
                .expect("listed");
            assert!(line.contains(scenario.tolerance), "{line}");
        }
    }
}
