//! `hil fleet`: the command around [`crate::fleet`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::error::RigError;
use crate::fleet::{self, FleetOptions, TargetKind, report};

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
    /// AWS IoT Core (not available yet: needs a thing certificate per device).
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
}

#[derive(Debug, Args)]
pub struct FleetRunArgs {
    /// Devices to run in this process.
    #[arg(long, default_value_t = 100)]
    pub devices: u32,
    /// The broker: started here, serving a fresh test PKI on a free loopback port.
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
}

impl FleetRunArgs {
    pub fn options(&self) -> FleetOptions {
        let secs = match (self.minutes, self.seconds) {
            (Some(m), _) => m.saturating_mul(60),
            (None, Some(s)) => s,
            (None, None) => 60,
        };
        FleetOptions {
            devices: self.devices,
            target: self.target.into(),
            duration: Duration::from_secs(secs),
            kill_broker_at: self.kill_broker_at.map(Duration::from_secs),
            outage: Duration::from_secs(self.outage_seconds),
            id_offset: self.id_offset,
            ramp: Duration::from_millis(self.ramp_ms),
            out: self.out.clone(),
            progress_every: (!self.quiet).then_some(Duration::from_secs(5)),
        }
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
        None => {
            let options = args.run.options();
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
