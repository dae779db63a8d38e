//! `mock-broker serve`: the broker as a process, for scripts and bench users.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::broker::{Handle, MockBroker};
use crate::config::Config;
use crate::error::StartError;
use crate::tls::SniRule;

#[derive(Debug, Parser)]
#[command(
    name = "mock-broker",
    version,
    about = "A local broker that behaves like AWS IoT Core"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MQTT over mutual TLS on loopback until interrupted.
    Serve(ServeArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// A `certs init` folder: ca.pem, server.pem, server.key.pem, policy.json.
    #[arg(long, default_value = "certs/dev")]
    pub certs: PathBuf,
    /// The host name clients must send as SNI.
    #[arg(long, default_value = "localhost")]
    pub endpoint: String,
    /// AWS IoT policy document (default: CERTS/policy.json).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// MQTT-over-TLS port (AWS's 8883); 0 picks a free one.
    #[arg(long, default_value_t = 8883)]
    pub port: u16,
    /// ALPN (`x-amzn-mqtt-ca`) port (AWS's 443); 0 picks a free one. None by default.
    #[arg(long)]
    pub alpn_port: Option<u16>,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// Accept clients that send no SNI (e.g. dialling 127.0.0.1 with rustls).
    #[arg(long)]
    pub allow_missing_sni: bool,
    /// Loopback HTTP/JSON control API address, e.g. 127.0.0.1:8080; none by default.
    #[arg(long)]
    pub control: Option<SocketAddr>,
    /// SNTP server address (UDP), e.g. 127.0.0.1:1123; none by default.
    #[arg(long)]
    pub sntp: Option<SocketAddr>,
}

impl ServeArgs {
    /// The broker configuration these arguments describe.
    pub fn config(&self) -> Result<Config, StartError> {
        let mut config = Config::from_certs_dir(&self.certs, self.policy.as_deref())?;
        config.endpoint = self.endpoint.clone();
        config.mqtt_addr = SocketAddr::new(self.bind, self.port);
        config.alpn_addr = self.alpn_port.map(|port| SocketAddr::new(self.bind, port));
        config.sntp_addr = self.sntp;
        config.control_addr = self.control;
        if self.allow_missing_sni {
            config.sni = SniRule::AllowMissing;
        }
        Ok(config)
    }
}

/// The one JSON line `serve` prints on start: the bound addresses.
pub fn ready_line(handle: &Handle) -> String {
    serde_json::json!({
        "mqtt": handle.mqtt_addr().to_string(),
        "alpn": handle.alpn_addr().map(|a| a.to_string()),
        "sntp": handle.sntp_addr().map(|a| a.to_string()),
        "control": handle.control_addr().map(|a| a.to_string()),
    })
    .to_string()
}

/// Start the broker, print the ready line, serve until `shutdown` resolves, then stop
/// cleanly.
pub async fn run(
    args: &ServeArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let handle = MockBroker::start(args.config()?).await?;
    println!("{}", ready_line(&handle));
    shutdown.await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}
