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
    /// Take everything clients send, past AWS's 100 publishes and 512 KiB per second
    /// per connection.
    #[arg(long)]
    pub no_inbound_throttle: bool,
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
        if self.no_inbound_throttle {
            config.inbound_limits = None;
        }
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

/// What the observer's policy in a `certs init` folder lets it do: (client ids to watch
/// and to send with, topic it may watch, topic it may publish to), read from
/// `observer-policy.json`.
fn observer_grants(dir: &std::path::Path) -> Option<((String, String), String, String)> {
    let text = std::fs::read_to_string(dir.join("observer-policy.json")).ok()?;
    let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
    let mut found = (None, None, None);
    let mut prefixed = None;
    for statement in doc["Statement"].as_array()? {
        let resources = match &statement["Resource"] {
            serde_json::Value::String(r) => vec![r.as_str()],
            serde_json::Value::Array(list) => list.iter().filter_map(|r| r.as_str()).collect(),
            _ => continue,
        };
        for resource in resources {
            let tail = |kind: &str| resource.split_once(kind).map(|(_, t)| t.to_string());
            match statement["Action"].as_str() {
                Some("iot:Connect") => match tail(":client/") {
                    Some(id) if id.ends_with('*') => {
                        prefixed = Some(id.trim_end_matches('*').to_string())
                    }
                    id => found.0 = found.0.take().or(id),
                },
                Some("iot:Subscribe") => found.1 = found.1.take().or(tail(":topicfilter/")),
                Some("iot:Publish") => found.2 = found.2.take().or(tail(":topic/")),
                _ => {}
            }
        }
    }
    // Two ids when the policy allows them, so watching and sending do not take over each
    // other's session.
    let ids = match (prefixed, found.0) {
        (Some(prefix), _) => (format!("{prefix}watch"), format!("{prefix}send")),
        (None, Some(id)) => (id.clone(), id),
        (None, None) => return None,
    };
    Some((ids, found.1?, found.2?))
}

/// For a person at a terminal: the exact commands that watch the device, send it a
/// message and apply a fault, when the certs folder has the observer's identity.
pub fn watch_hints(args: &ServeArgs, handle: &Handle) -> Option<String> {
    let ((watch_id, send_id), watch, inject) = observer_grants(&args.certs)?;
    let dir = args.certs.display();
    let port = handle.mqtt_addr().port();
    let tls = format!(
        "-h {} -p {port} --cafile {dir}/ca.pem --cert {dir}/observer.pem --key {dir}/observer.key.pem",
        args.endpoint
    );
    let mut hints = format!(
        "watch the device:  mosquitto_sub {tls} -i {watch_id} -t {watch} -v\n\
         send it a message: mosquitto_pub {tls} -i {send_id} -t {} -m '{{\"message\": \"hello from the bench\"}}'{}\n",
        publish_topic(&inject),
        if inject.contains('*') {
            format!("  (the policy allows {inject}: put one device's client id for *)")
        } else {
            String::new()
        },
    );
    if let Some(control) = handle.control_addr() {
        hints.push_str(&format!(
            "add 500 ms latency: curl -X PUT http://{control}/faults -d '{{\"faults\": {{\"latency_ms\": 500}}}}'\n\
             clear the faults:   curl -X DELETE http://{control}/faults\n\
             broker status:      curl http://{control}/status\n"
        ));
    }
    Some(hints)
}

/// A topic to publish to from the policy's `topic/` resource: a policy wildcard `*` is no
/// topic (a fleet's `fleet/*/in`), so it becomes a placeholder to fill in, quoted for the
/// shell.
fn publish_topic(resource: &str) -> String {
    if resource.contains('*') {
        format!("'{}'", resource.replace('*', "<client id>"))
    } else {
        resource.to_string()
    }
}

/// Start the broker, print the ready line, serve until `shutdown` resolves, then stop
/// cleanly.
pub async fn run(
    args: &ServeArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let handle = MockBroker::start(args.config()?).await?;
    println!("{}", ready_line(&handle));
    // The ready line stays the one line on stdout (scripts read it); people read stderr.
    if let Some(hints) = watch_hints(args, &handle) {
        eprint!("{hints}");
    }
    shutdown.await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::publish_topic;

    #[test]
    fn a_policy_wildcard_in_the_inject_topic_becomes_a_placeholder() {
        assert_eq!(publish_topic("inTopic"), "inTopic");
        assert_eq!(publish_topic("fleet/*/in"), "'fleet/<client id>/in'");
    }
}
