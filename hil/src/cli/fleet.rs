//! `hil fleet`: the command around [`crate::fleet`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::aws::Endpoint;
use crate::error::RigError;
use crate::fleet::{self, AwsFleet, FleetOptions, SharedBroker, TargetKind, report};

/// Which broker the fleet runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FleetTarget {
    /// The project's mock broker, in this process.
    Mock,
    /// A mosquitto process with a mutual-TLS listener (`make deps` installs it).
    Mosquitto,
    /// rumqttd with client-certificate checks, in a process of its own (a hil built with
    /// the `rumqttd` feature).
    Rumqttd,
    /// AWS IoT Core: each device is a thing of --things, watched through --observer.
    Aws,
}

impl From<FleetTarget> for TargetKind {
    fn from(t: FleetTarget) -> Self {
        match t {
            FleetTarget::Mock => TargetKind::Mock,
            FleetTarget::Mosquitto => TargetKind::Mosquitto,
            FleetTarget::Rumqttd => TargetKind::Rumqttd,
            FleetTarget::Aws => TargetKind::Aws,
        }
    }
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub action: Option<FleetAction>,
    #[command(flatten)]
    pub run: FleetRunArgs,
}

#[derive(Debug, Subcommand)]
pub enum FleetAction {
    /// Merge the fleet.json files of several `hil fleet` processes that ran against one
    /// broker (disjoint --id-offset ranges) into one fleet.json and fleet.html.
    Merge {
        /// The fleet.json files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where the merged fleet.json and fleet.html go.
        #[arg(long, default_value = "target/fleet/merged")]
        out: PathBuf,
    },
    /// Write a PKI folder for fleets sharing one broker (`certs init`'s layout: a CA the
    /// fleets issue their devices' identities from, a server certificate, the observer's
    /// identity, and policies that let any fleet device and the observer do what a fleet
    /// does), for `--pki DIR` and the broker (`mock-broker serve --certs DIR`).
    Pki {
        /// The folder to write; existing files are refused.
        #[arg(long)]
        out: PathBuf,
        /// More names (DNS or IP) for the server certificate, besides `localhost` and
        /// `127.0.0.1`: the broker's host as other machines' fleets dial it.
        #[arg(long = "server-name", value_name = "NAME")]
        server_names: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct FleetRunArgs {
    /// Devices to run in this process [default: 100; with --target aws, one per thing
    /// folder].
    #[arg(long)]
    pub devices: Option<u32>,
    /// The broker: started here on a free loopback port, serving the fleet's PKI (a fresh
    /// one, or --pki); or AWS IoT Core (--things, --observer).
    #[arg(long, value_enum, default_value_t = FleetTarget::Mock)]
    pub target: FleetTarget,
    /// How long the fleet runs, in minutes.
    #[arg(long, conflicts_with = "seconds")]
    pub minutes: Option<u64>,
    /// How long the fleet runs, in seconds (default 60).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Stop the broker this many seconds after the start, and start it again
    /// --outage-seconds later: the reconnect storm.
    #[arg(long, value_name = "SECONDS")]
    pub kill_broker_at: Option<u64>,
    /// How long the broker stays down for --kill-broker-at.
    #[arg(long, default_value_t = 5)]
    pub outage_seconds: u64,
    /// First client id number: devices are fleet-<K>…fleet-<K+N-1>. Give processes
    /// sharing a broker disjoint ranges.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub id_offset: u32,
    /// Spread the devices' boots evenly over this many milliseconds (0: all at once).
    #[arg(long, default_value_t = 2000)]
    pub ramp_ms: u64,
    /// Where fleet.json and fleet.html go.
    #[arg(long, default_value = "target/fleet")]
    pub out: PathBuf,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// The PKI folder (`hil fleet pki --out DIR`) whose CA issues the devices'
    /// identities and whose server and observer identities are used; a fresh one when
    /// absent. Processes sharing a broker share it.
    #[arg(long, value_name = "DIR")]
    pub pki: Option<PathBuf>,
    /// Connect to the broker at HOST[:PORT] (8883 by default), started by someone else
    /// and trusting --pki's CA, instead of starting --target: several fleet processes
    /// share it, each with its own --id-offset range.
    #[arg(long, value_name = "HOST[:PORT]", requires = "pki", conflicts_with_all = ["target", "kill_broker_at"])]
    pub broker: Option<String>,
    /// With --broker: the observer's port, if not the devices' (rumqttd's MQTT 3.1.1
    /// listener).
    #[arg(long, value_name = "PORT", requires = "broker")]
    pub observer_port: Option<u16>,
    /// --target aws: a folder of thing folders, one per device, each as `certs aws
    /// provision --thing NAME --pub-topic fleet/NAME --out DIR/NAME` writes it.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["pki", "broker"])]
    pub things: Option<PathBuf>,
    /// --target aws: the observer's folder (`certs aws observer --watch-topic 'fleet/+'`).
    #[arg(long, value_name = "DIR", default_value = "certs/aws-observer")]
    pub observer: PathBuf,
    /// --target aws: dial HOST[:PORT] instead of the endpoint in the things' images.
    #[arg(long, value_name = "HOST[:PORT]", requires = "things")]
    pub endpoint: Option<String>,
}

impl FleetRunArgs {
    pub fn options(&self) -> Result<FleetOptions, RigError> {
        let secs = match (self.minutes, self.seconds) {
            (Some(m), _) => m.saturating_mul(60),
            (None, Some(s)) => s,
            (None, None) => 60,
        };
        let shared = match &self.broker {
            Some(text) => {
                let endpoint = Endpoint::parse(text).map_err(|e| {
                    RigError::usage(e.to_string().replace("--endpoint", "--broker"))
                })?;
                Some(SharedBroker {
                    host: endpoint.host,
                    port: endpoint.port,
                    observer_port: self.observer_port,
                })
            }
            None => None,
        };
        let aws = match (self.target, &self.things) {
            (FleetTarget::Aws, Some(things)) => Some(AwsFleet {
                things: things.clone(),
                observer: self.observer.clone(),
                endpoint: self.endpoint.as_deref().map(Endpoint::parse).transpose()?,
            }),
            (FleetTarget::Aws, None) => {
                return Err(RigError::usage(
                    "--target aws needs --things DIR: one folder per thing, from `certs aws \
                     provision --thing NAME --pub-topic fleet/NAME --sub-topic fleet/NAME/in \
                     --out DIR/NAME`",
                ));
            }
            (_, Some(_)) => return Err(RigError::usage("--things goes with --target aws")),
            (_, None) => None,
        };
        Ok(FleetOptions {
            devices: self.devices,
            target: self.target.into(),
            duration: Duration::from_secs(secs),
            kill_broker_at: self.kill_broker_at.map(Duration::from_secs),
            outage: Duration::from_secs(self.outage_seconds),
            id_offset: self.id_offset,
            ramp: Duration::from_millis(self.ramp_ms),
            out: self.out.clone(),
            progress_every: (!self.quiet).then_some(Duration::from_secs(5)),
            pki: self.pki.clone(),
            shared,
            aws,
        })
    }
}

fn print_summary(json: &serde_json::Value) {
    for (name, value) in report::summary_rows(json) {
        println!("{name:>32}: {value}");
    }
}

async fn fleet_command(args: &FleetArgs) -> Result<(), RigError> {
    match &args.action {
        Some(FleetAction::Merge { files, out }) => {
            let mut loaded = Vec::new();
            for path in files {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| RigError::io(format!("read {}", path.display()), e))?;
                let json: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| RigError::make(path.display().to_string(), e))?;
                loaded.push((path.clone(), json));
            }
            let merged = report::merge(&loaded)?;
            let (json_path, html_path) = report::write(out, &merged)?;
            print_summary(&merged);
            println!("wrote {} and {}", json_path.display(), html_path.display());
        }
        Some(FleetAction::Pki { out, server_names }) => {
            fleet::pki::write_folder(out, server_names)?;
            println!(
                "wrote {}: serve it (mock-broker serve --certs {0}, or mosquitto/rumqttd with \
                 its ca.pem, server.pem, server.key.pem) and give each fleet --pki {0}",
                out.display()
            );
        }
        None => {
            let options = args.run.options()?;
            if options
                .kill_broker_at
                .is_some_and(|at| at >= options.duration)
            {
                return Err(RigError::make(
                    "--kill-broker-at",
                    "must be before the end of the run (--seconds/--minutes)",
                ));
            }
            let run = fleet::run(&options).await?;
            print_summary(&run.json);
            println!(
                "wrote {} and {}",
                run.json_path.display(),
                run.html_path.display()
            );
        }
    }
    Ok(())
}

pub async fn run(args: FleetArgs) -> ExitCode {
    match fleet_command(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hil fleet: {e}");
            ExitCode::from(2)
        }
    }
}
