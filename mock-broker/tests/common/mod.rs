//! Shared test rig: a fresh PKI in a temporary folder, a broker on an ephemeral port, and
//! helpers to run mosquitto's clients and a raw rustls client against it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use certs::pki::{CertificateAuthority, Identity, InitOptions, KeyAlgorithm, Pki, Validity};
use mock_broker::{Config, Credentials, Handle, MockBroker, Policy};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long any single wait in a test may take before it counts as a failure.
pub const WAIT: Duration = Duration::from_secs(10);

/// A policy for protocol tests: any client id starting with the thing name connects;
/// publish, subscribe and receive under `test/`; lifecycle events may be watched.
pub const TEST_POLICY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": "iot:Connect",
     "Resource": "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}*"},
    {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
     "Resource": "arn:aws:iot:*:*:topic/test/*"},
    {"Effect": "Allow", "Action": "iot:Subscribe",
     "Resource": ["arn:aws:iot:*:*:topicfilter/test/*",
                  "arn:aws:iot:*:*:topicfilter/$aws/events/*"]},
    {"Effect": "Allow", "Action": "iot:Receive",
     "Resource": "arn:aws:iot:*:*:topic/$aws/events/*"}
  ]
}"#;

pub struct Rig {
    pub pki: Pki,
    pub dir: tempfile::TempDir,
}

impl Rig {
    pub fn new() -> Self {
        let pki = Pki::generate(&InitOptions::default()).expect("test PKI");
        let dir = tempfile::tempdir().expect("tempdir");
        let rig = Self { pki, dir };
        std::fs::write(rig.path("ca.pem"), rig.pki.ca.cert_pem()).unwrap();
        rig.write_identity("device", &rig.pki.device);
        rig.write_identity("observer", &rig.pki.observer);
        rig
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write `NAME.pem` and `NAME.key.pem`.
    pub fn write_identity(&self, name: &str, identity: &Identity) {
        std::fs::write(self.path(&format!("{name}.pem")), identity.cert_pem()).unwrap();
        std::fs::write(
            self.path(&format!("{name}.key.pem")),
            identity.key_pem().as_bytes(),
        )
        .unwrap();
    }

    pub fn credentials(&self) -> Credentials {
        Credentials {
            client_ca_der: vec![self.pki.ca.cert_der().to_vec()],
            server_chain_der: vec![self.pki.server.cert_der.clone()],
            server_key_der: self.pki.server.key.to_pkcs8_der().to_vec(),
        }
    }

    /// AWS's rules with [`TEST_POLICY`], no CONNECT rate limit (tests reconnect fast) and
    /// no inbound throttle (tests flood).
    pub fn config(&self) -> Config {
        let mut config = Config::new(self.credentials(), Policy::from_json(TEST_POLICY).unwrap());
        config.connect_interval = Duration::ZERO;
        config.inbound_limits = None;
        config
    }

    /// The rig's CA as the broker's issuing CA, loaded back from `ca.pem` and
    /// `ca.key.pem` as `mock-broker serve` does.
    pub fn issuing_ca(&self) -> Arc<CertificateAuthority> {
        std::fs::write(
            self.path("ca.key.pem"),
            self.pki.ca.identity.key_pem().as_bytes(),
        )
        .unwrap();
        Arc::new(CertificateAuthority::load_dir(self.dir.path()).expect("the rig's CA loads"))
    }

    pub async fn start(&self, config: Config) -> Handle {
        MockBroker::start(config).await.expect("broker starts")
    }

    /// A client certificate with CN `name` from a CA the broker does not trust.
    pub fn write_untrusted_identity(&self, file: &str, name: &str) {
        let rogue =
            CertificateAuthority::root("rogue", KeyAlgorithm::EcP256, Validity::days(1)).unwrap();
        let identity = rogue
            .issue_client(name, KeyAlgorithm::EcP256, Validity::days(1))
            .unwrap();
        self.write_identity(file, &identity);
    }
}

/// Which identity a mosquitto client presents.
#[derive(Clone, Copy)]
pub enum Cert<'a> {
    None,
    /// `NAME.pem` and `NAME.key.pem` from the rig's folder.
    File(&'a str),
}

/// A mosquitto client command (`mosquitto_pub` or `mosquitto_sub`) for the broker at
/// `addr`, dialling `host` (its SNI), MQTT `version` ("mqttv311" or "mqttv5").
pub fn mosquitto(
    program: &str,
    rig: &Rig,
    addr: SocketAddr,
    host: &str,
    version: &str,
    cert: Cert<'_>,
    client_id: &str,
) -> Command {
    let mut command = Command::new(program);
    command
        .arg("-h")
        .arg(host)
        .arg("-p")
        .arg(addr.port().to_string())
        .arg("-V")
        .arg(version)
        .arg("-i")
        .arg(client_id)
        .arg("--cafile")
        .arg(rig.path("ca.pem"));
    if let Cert::File(name) = cert {
        command
            .arg("--cert")
            .arg(rig.path(&format!("{name}.pem")))
            .arg("--key")
            .arg(rig.path(&format!("{name}.key.pem")));
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Run a command to completion (bounded by [`WAIT`]): (success, stdout, stderr).
pub async fn run(mut command: Command) -> (bool, String, String) {
    let output = tokio::time::timeout(WAIT, command.output())
        .await
        .expect("mosquitto client finished in time")
        .expect("mosquitto client runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub fn spawn(mut command: Command) -> Child {
    command.spawn().expect("mosquitto client starts")
}

/// Wait for a spawned client to exit: (success, stdout, stderr).
pub async fn finish(child: Child) -> (bool, String, String) {
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("client exited in time")
        .expect("client output");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A rustls client configuration trusting the rig's CA, presenting `identity` (if any),
/// offering `alpn`.
pub fn client_config(
    rig: &Rig,
    identity: Option<&Identity>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(rig.pki.ca.cert_der().to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(identity.cert_der.clone())],
                PrivateKeyDer::try_from(identity.key.to_pkcs8_der().to_vec()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Connect and handshake with rustls, `sni` as the server name.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// A file with `size` bytes of payload.
pub fn payload_file(dir: &Path, size: usize) -> PathBuf {
    let path = dir.join(format!("payload-{size}"));
    std::fs::write(&path, vec![b'x'; size]).unwrap();
    path
}

fn put_varint(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            break;
        }
    }
}

/// A packet from its first byte and body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    put_varint(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// A raw MQTT CONNECT (`level` 4 or 5, clean start); `properties` are MQTT 5's, encoded.
pub fn connect_packet(
    level: u8,
    client_id: &str,
    keep_alive_secs: u16,
    properties: &[u8],
) -> Vec<u8> {
    connect_packet_with(level, client_id, keep_alive_secs, properties, true)
}

/// [`connect_packet`] choosing clean start.
pub fn connect_packet_with(
    level: u8,
    client_id: &str,
    keep_alive_secs: u16,
    properties: &[u8],
    clean_start: bool,
) -> Vec<u8> {
    let mut body = Vec::new();
    put_string(&mut body, "MQTT");
    body.push(level);
    body.push(if clean_start { 0b10 } else { 0 });
    body.extend_from_slice(&keep_alive_secs.to_be_bytes());
    if level == 5 {
        put_varint(&mut body, properties.len());
        body.extend_from_slice(properties);
    }
    put_string(&mut body, client_id);
    packet(0x10, &body)
}

/// A raw MQTT 5 SUBSCRIBE of one filter at QoS 1.
pub fn subscribe_packet_v5(packet_id: u16, filter: &str) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.push(0);
    put_string(&mut body, filter);
    body.push(1);
    packet(0x82, &body)
}

/// A raw MQTT 5 PUBLISH.
pub fn publish_packet_v5(qos: u8, packet_id: u16, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    put_string(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.push(0);
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// An MQTT client that speaks bytes, for what mosquitto will not do.
pub struct RawClient {
    pub stream: tokio_rustls::client::TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl RawClient {
    pub async fn connect(rig: &Rig, addr: SocketAddr) -> Self {
        let config = client_config(rig, Some(&rig.pki.device), &[]);
        let stream = tls_connect(addr, "localhost", config).await.expect("TLS");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The next packet as (first byte, body); `None` when the broker closed the
    /// connection. Bounded by [`WAIT`].
    pub async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let read = async {
            loop {
                if self.buf.len() >= 2 {
                    let mut remaining = 0usize;
                    let mut header = 1;
                    let mut complete = false;
                    for (i, byte) in self.buf[1..].iter().take(4).enumerate() {
                        remaining |= usize::from(byte & 0x7f) << (7 * i);
                        header += 1;
                        if byte & 0x80 == 0 {
                            complete = true;
                            break;
                        }
                    }
                    if complete && self.buf.len() >= header + remaining {
                        let first = self.buf[0];
                        let body = self.buf[header..header + remaining].to_vec();
                        self.buf.drain(..header + remaining);
                        return Some((first, body));
                    }
                }
                let mut chunk = [0u8; 4096];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("broker answered in time")
    }
}

/// One request; returns the status and the JSON body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let status = response[9..12].parse().unwrap();
    let json = response.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(json).unwrap())
}
