//! Fleet benchmark: N simulated devices over mutual TLS, each publishing QoS 1 every
//! `--period-ms`, against one in-process broker. Reports connections held, the
//! publish-to-observe latency (client write to the broker's observer) at p50/p99, lost
//! QoS 1 messages (no PUBACK) and the process's CPU time.
//!
//! ```sh
//! cargo run -p mock-broker --example fleet -- --clients 5000 --seconds 20
//! ```
//!
//! Clients and broker share the machine, so the figures are an upper bound on the
//! broker's own cost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certs::pki::{InitOptions, Pki};
use mock_broker::{Config, Credentials, Event, MockBroker, Policy, Publisher};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

struct Options {
    clients: usize,
    seconds: u64,
    period: Duration,
}

fn options() -> Options {
    let mut options = Options {
        clients: 1000,
        seconds: 20,
        period: Duration::from_millis(2000),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        match pair[0].as_str() {
            "--clients" => options.clients = value.parse().expect("--clients N"),
            "--seconds" => options.seconds = value.parse().expect("--seconds N"),
            "--period-ms" => {
                options.period = Duration::from_millis(value.parse().expect("--period-ms N"))
            }
            other => panic!("unknown option {other}; use --clients N --seconds N --period-ms N"),
        }
    }
    options
}

/// CPU seconds (user + system) this process has used, from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0b10, 0, 60, 0];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

fn publish_packet(topic: &str, packet_id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&packet_id.to_be_bytes());
    body.push(0);
    body.extend_from_slice(payload);
    let mut packet = vec![0x32, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

/// Sent-at times by (client index, sequence), to match observations against.
type SentLog = Arc<Mutex<HashMap<(usize, u32), Instant>>>;

#[tokio::main]
async fn main() {
    let options = options();
    let pki = Pki::generate(&InitOptions::default()).expect("PKI");
    let credentials = Credentials {
        client_ca_der: vec![pki.ca.cert_der().to_vec()],
        server_chain_der: vec![pki.server.cert_der.clone()],
        server_key_der: pki.server.key.to_pkcs8_der().to_vec(),
    };
    let mut config = Config::new(credentials, Policy::allow_all());
    config.handshake_timeout = Duration::from_secs(120);
    config.connect_timeout = Duration::from_secs(120);
    let broker = MockBroker::start(config).await.expect("broker");
    let addr = broker.mqtt_addr();

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.ca.cert_der().to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from(pki.device.cert_der.clone())],
                PrivateKeyDer::try_from(pki.device.key.to_pkcs8_der().to_vec()).unwrap(),
            )
            .unwrap(),
    );

    // Observe before anyone publishes: latency = observer's arrival - client's write.
    let sent: SentLog = Arc::new(Mutex::new(HashMap::new()));
    let mut observer = broker.observe();
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let collector = {
        let sent = sent.clone();
        let latencies = latencies.clone();
        tokio::spawn(async move {
            while let Some(event) = observer.next().await {
                let Ok(Event::Publish(p)) = event else {
                    continue;
                };
                let Publisher::Client(_) = p.publisher else {
                    continue;
                };
                let text = String::from_utf8_lossy(&p.payload);
                let Some((client, seq)) = text.split_once(':') else {
                    continue;
                };
                let key = (client.parse().unwrap_or(0), seq.parse().unwrap_or(0));
                if let Some(at) = sent.lock().await.remove(&key) {
                    latencies
                        .lock()
                        .await
                        .push(p.received_at.saturating_duration_since(at));
                }
            }
        })
    };

    // Phase 1: every device connects. Phase 2: all publish for `seconds`.
    let connect_started = Instant::now();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let (go_tx, go_rx) = tokio::sync::watch::channel::<Option<Instant>>(None);
    let mut tasks = Vec::with_capacity(options.clients);
    for index in 0..options.clients {
        let tls = tls.clone();
        let sent = sent.clone();
        let period = options.period;
        let ready = ready_tx.clone();
        let go = go_rx.clone();
        tasks.push(tokio::spawn(async move {
            device(index, addr, tls, sent, period, ready, go).await
        }));
    }
    for _ in 0..options.clients {
        ready_rx.recv().await;
    }
    let connect_elapsed = connect_started.elapsed();
    let held = broker.clients().len();
    let started = Instant::now();
    let cpu_start = cpu_seconds();
    let _ = go_tx.send(Some(started + Duration::from_secs(options.seconds)));
    let mut connected = 0;
    let (mut published, mut acked) = (0u64, 0u64);
    for task in tasks {
        if let Ok(Some((p, a))) = task.await {
            connected += 1;
            published += p;
            acked += a;
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu_start;
    broker.shutdown().await;
    let _ = collector.await;
    let mut latencies = latencies.lock().await.clone();
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "clients={} connected={connected} held={held} connect_s={:.1} published={published} acked={acked} lost_qos1={} observed={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} wall_s={:.1} cpu_s={cpu:.1} cpu_pct={:.0}",
        options.clients,
        connect_elapsed.as_secs_f64(),
        published - acked,
        latencies.len(),
        pick(0.50).as_secs_f64() * 1000.0,
        pick(0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        elapsed.as_secs_f64(),
        100.0 * cpu / elapsed.as_secs_f64(),
    );
}

/// One device: connect, say so on `ready`, wait for `go` to give the end time, then
/// publish QoS 1 every `period` until then, counting PUBACKs. `None` if it never
/// connected.
async fn device(
    index: usize,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    sent: SentLog,
    period: Duration,
    ready: tokio::sync::mpsc::UnboundedSender<bool>,
    mut go: tokio::sync::watch::Receiver<Option<Instant>>,
) -> Option<(u64, u64)> {
    let connected = connect(index, addr, tls).await;
    let _ = ready.send(connected.is_some());
    let (mut stream, mut pending) = connected?;
    let end = (*go.wait_for(Option::is_some).await.ok()?)?;
    let mut buf = vec![0u8; 1024];
    let offset = period.mul_f64((index % 1000) as f64 / 1000.0);
    publish_until(
        index,
        &mut stream,
        &mut pending,
        &mut buf,
        sent,
        period,
        offset,
        end,
    )
    .await
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(
    index: usize,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Option<(Tls, Vec<u8>)> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .ok()?;
    stream
        .write_all(&connect_packet(&format!("dev-{index}")))
        .await
        .ok()?;
    let mut buf = vec![0u8; 1024];
    let mut pending = Vec::new();
    // CONNACK.
    while pending.len() < 2 || pending.len() < 2 + pending[1] as usize {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&buf[..n]);
    }
    pending.drain(..2 + pending[1] as usize);
    Some((stream, pending))
}

#[allow(clippy::too_many_arguments)]
async fn publish_until(
    index: usize,
    stream: &mut Tls,
    pending: &mut Vec<u8>,
    buf: &mut [u8],
    sent: SentLog,
    period: Duration,
    // Spread the fleet's publishes over the period, as real devices would be.
    offset: Duration,
    end: Instant,
) -> Option<(u64, u64)> {
    let mut next = tokio::time::Instant::now() + offset;
    let (mut published, mut acked) = (0u64, 0u64);
    let mut seq = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                if Instant::now() >= end {
                    break;
                }
                seq += 1;
                let payload = format!("{index}:{seq}");
                sent.lock().await.insert((index, seq), Instant::now());
                let packet_id = (seq % 65535 + 1) as u16;
                if stream.write_all(&publish_packet("fleet/telemetry", packet_id, payload.as_bytes())).await.is_err() {
                    break;
                }
                published += 1;
                next += period;
            }
            read = stream.read(buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    acked += take_pubacks(pending);
                }
            },
        }
    }
    // Collect the last PUBACKs.
    let drain = async {
        while acked < published {
            match stream.read(buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    acked += take_pubacks(pending);
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
    let _ = stream.write_all(&[0xE0, 0]).await;
    Some((published, acked))
}

/// Remove the complete packets at the front of `pending` and count the PUBACKs among
/// them. The broker sends this client nothing but short packets (remaining length below
/// 128, one length byte); a PUBACK with reason success is 4 bytes: 0x40 0x02 id id.
fn take_pubacks(pending: &mut Vec<u8>) -> u64 {
    let mut acked = 0;
    while pending.len() >= 2 && pending.len() >= 2 + pending[1] as usize {
        if pending[0] == 0x40 {
            acked += 1;
        }
        pending.drain(..2 + pending[1] as usize);
    }
    acked
}
