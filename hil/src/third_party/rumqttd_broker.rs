//! The broker side of `--target rumqttd`: rumqttd embedded in this process (`hil
//! rumqttd-broker`), with mutual TLS from a `certs init` folder. Built with the `rumqttd`
//! feature only.
//!
//! It runs in a process of its own because rumqttd cannot be stopped in-process: its
//! router and listener threads have no shutdown, so a restart is a kill of this process
//! and a new one on the same ports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings, TlsConfig};

use super::{RumqttdPorts, TLS_FILES};

/// The largest MQTT payload either listener accepts from a client (rumqttd closes the
/// connection of a client that sends more). The rig injects 8 KiB (`inbound`).
const MAX_PAYLOAD: usize = 20 * 1024;

/// rumqttd's configuration: an MQTT 5 listener for devices and an MQTT 3.1.1 listener
/// for the observer (rumqttd speaks one protocol per listener), both on loopback with TLS
/// from `dir` and client certificates verified against its `ca.pem`.
pub fn config(dir: &Path, ports: RumqttdPorts) -> Config {
    let file = |name: &str| dir.join(name).display().to_string();
    let [ca, cert, key] = TLS_FILES;
    let listener = |name: &str, port: u16| {
        let settings = ServerSettings {
            name: name.to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            tls: Some(TlsConfig::Rustls {
                capath: Some(file(ca)),
                certpath: file(cert),
                keypath: file(key),
            }),
            next_connection_delay_ms: 1,
            connections: ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: MAX_PAYLOAD,
                max_inflight_count: 100,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        };
        HashMap::from([(name.to_string(), settings)])
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(listener("observer-v4", ports.observer)),
        v5: Some(listener("device-v5", ports.device)),
        ..Config::default()
    }
}

/// Run rumqttd until it fails (it never returns otherwise). Its log goes to stderr.
pub fn run(dir: &Path, ports: RumqttdPorts) -> Result<(), String> {
    // rumqttd reads the TLS files at every accept: name a missing one now, not in a log
    // line at the first connection.
    for name in TLS_FILES {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(format!(
                "{}: not found (the folder must be a `certs init` folder: ca.pem, server.pem, server.key.pem)",
                path.display()
            ));
        }
    }
    // A listener rumqttd cannot bind only ends its own thread, with a log line, while
    // the other keeps serving: name a taken port now instead.
    if ports.device == ports.observer {
        return Err(format!(
            "port {}: the MQTT 5 and MQTT 3.1.1 listeners need a port each",
            ports.device
        ));
    }
    let bound: Result<Vec<_>, String> = [ports.device, ports.observer]
        .into_iter()
        .map(|port| {
            std::net::TcpListener::bind(("127.0.0.1", port))
                .map_err(|e| format!("127.0.0.1:{port}: {e} (is another broker running there?)"))
        })
        .collect();
    drop(bound?);
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .try_init();
    let mut broker = Broker::new(config(dir, ports));
    broker.start().map_err(|e| format!("rumqttd: {e}"))?;
    Err("rumqttd: every listener stopped (see the log above)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_or_a_shared_port_is_named_before_rumqttd_starts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = |device, observer| RumqttdPorts { device, observer };
        let why = run(dir.path(), ports(0, 1)).expect_err("no files");
        assert!(
            why.starts_with(&format!(
                "{}: not found",
                dir.path().join("ca.pem").display()
            )),
            "{why}"
        );
        for name in TLS_FILES {
            std::fs::write(dir.path().join(name), "").expect("write");
        }
        let why = run(dir.path(), ports(18883, 18883)).expect_err("one port");
        assert_eq!(
            why,
            "port 18883: the MQTT 5 and MQTT 3.1.1 listeners need a port each"
        );
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let why = run(dir.path(), ports(port, 0)).expect_err("taken port");
        assert!(
            why.starts_with(&format!("127.0.0.1:{port}: ")) && why.contains("another broker"),
            "{why}"
        );
    }

    #[test]
    fn both_listeners_are_loopback_tls_with_client_certificates() {
        let ports = RumqttdPorts {
            device: 18883,
            observer: 18884,
        };
        let config = config(Path::new("/pki"), ports);
        for (servers, port) in [(&config.v5, 18883), (&config.v4, 18884)] {
            let servers = servers.as_ref().expect("listener");
            assert_eq!(servers.len(), 1);
            let server = servers.values().next().expect("one");
            assert_eq!(server.listen, SocketAddr::from(([127, 0, 0, 1], port)));
            match &server.tls {
                Some(TlsConfig::Rustls {
                    capath,
                    certpath,
                    keypath,
                }) => {
                    assert_eq!(capath.as_deref(), Some("/pki/ca.pem"));
                    assert_eq!(certpath, "/pki/server.pem");
                    assert_eq!(keypath, "/pki/server.key.pem");
                }
                other => panic!("expected rustls with a CA, got {other:?}"),
            }
        }
    }
}
