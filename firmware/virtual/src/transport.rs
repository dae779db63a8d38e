//! The connection to the broker: tokio TCP, embedded-tls (TLS 1.3, client certificate)
//! and minimq (MQTT 5), with the buffer sizes the ESP32-C3 uses.
//!
//! # Buffers
//! - TLS read: [`TLS_READ_BUF`] = 16,640 bytes, one full TLS record (2^14 plaintext +
//!   256 overhead). rustls-based brokers (the mock broker) ignore max_fragment_length, so a
//!   smaller buffer fails with `InsufficientSpace` on the first large record.
//! - TLS write: [`TLS_WRITE_BUF`] = 4 KiB: every packet the device sends (CONNECT, a
//!   publish of a short JSON payload, acks) fits one record; larger writes are split.
//! - MQTT rx: [`MQTT_RX_BUF`] = 2 KiB, the largest inbound packet. minimq announces it
//!   as MQTT 5 Maximum Packet Size, so a broker that honours it (mosquitto, AWS) drops
//!   larger messages for this client instead of sending them.
//! - MQTT tx: [`MQTT_TX_BUF`] = 2 KiB: the CONNECT workspace (client id up to 128 bytes)
//!   plus a few retained QoS 1 publishes awaiting PUBACK, replayed on reconnect.
//!
//! # Cancel-safety
//! embedded-tls reads a record's 5-byte header into a local and then the body into its
//! buffer; dropping the read future between the two loses the header, and the next read
//! takes body bytes for a header (`InsufficientSpace`/"Record too large"). minimq's
//! `Connection::poll()`/`recv()` wrap the transport read in `with_deadline(keep-alive
//! deadline)`, i.e. they cancel reads by design. So a record split across a keep-alive
//! deadline desynchronises the stream unless the layer under TLS is record-atomic
//! (`firmware_core::tls`'s transport, which slots in at [`open_tcp`]).
//!
//! # Crypto provider
//! [`provider`] is the one place that chooses it. For now it is embedded-tls's
//! `UnsecureProvider`: it signs with a P-256 SEC1 key and verifies NOTHING about the
//! server. `firmware_core::tls::DeviceProvider` (the device key in SEC1/PKCS#8/RSA and a
//! real chain verifier) replaces it there.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use embedded_io_adapters::tokio_1::FromTokio;
use embedded_tls::{
    Aes128GcmSha256, Certificate, CryptoProvider, TlsConfig, TlsConnection, TlsContext, TlsError,
    UnsecureProvider,
};
use firmware_core::log::{self, ConnectFailure};
use minimq::{Buffers, ConfigBuilder, Session};
use rand_core::OsRng;
use tokio::net::TcpStream;

use crate::flash::Identity;

pub const TLS_READ_BUF: usize = 16_640;
pub const TLS_WRITE_BUF: usize = 4096;
pub const MQTT_RX_BUF: usize = 2048;
pub const MQTT_TX_BUF: usize = 2048;

/// The cipher suite every AWS IoT endpoint and mosquitto offer for TLS 1.3.
pub type Suite = Aes128GcmSha256;
/// The byte stream under TLS.
pub type Tcp = FromTokio<TcpStream>;
/// An open TLS connection, borrowing its record buffers.
pub type Tls<'b> = TlsConnection<'b, Tcp, Suite>;
/// The MQTT connection over TLS.
pub type Mqtt<'s, 'b, 't> = minimq::Connection<'s, 'b, Tls<'t>>;
pub type MqttError = minimq::Error<TlsError>;

/// TLS record buffers; heap-allocated once and reused across reconnects.
pub struct TlsBuffers {
    pub read: Box<[u8]>,
    pub write: Box<[u8]>,
}

impl TlsBuffers {
    pub fn new() -> Self {
        Self {
            read: vec![0; TLS_READ_BUF].into_boxed_slice(),
            write: vec![0; TLS_WRITE_BUF].into_boxed_slice(),
        }
    }
}

impl Default for TlsBuffers {
    fn default() -> Self {
        Self::new()
    }
}

/// MQTT packet buffers for [`mqtt_session`].
pub struct MqttBuffers {
    pub rx: Box<[u8]>,
    pub tx: Box<[u8]>,
}

impl MqttBuffers {
    pub fn new() -> Self {
        Self {
            rx: vec![0; MQTT_RX_BUF].into_boxed_slice(),
            tx: vec![0; MQTT_TX_BUF].into_boxed_slice(),
        }
    }
}

impl Default for MqttBuffers {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a connection attempt failed.
#[derive(Debug)]
pub enum TransportError {
    Tcp(std::io::Error),
    Tls(TlsError),
    Mqtt(MqttError),
    /// A bad client id or buffer split.
    Config(minimq::ConfigError),
    Timeout,
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(e) => write!(f, "tcp: {e}"),
            Self::Tls(e) => write!(f, "tls: {e:?}"),
            Self::Mqtt(e) => write!(f, "mqtt: {e}"),
            Self::Config(e) => write!(f, "mqtt config: {e:?}"),
            Self::Timeout => f.write_str("timeout"),
        }
    }
}

impl std::error::Error for TransportError {}

impl TransportError {
    /// The log classification of this failure.
    pub fn failure(&self) -> ConnectFailure {
        use log::{ConnectError as C, TlsError as T};
        match self {
            Self::Tcp(_) => ConnectFailure::Mqtt(C::Tcp),
            Self::Timeout => ConnectFailure::Mqtt(C::Timeout),
            Self::Config(_) => ConnectFailure::Mqtt(C::Protocol),
            Self::Tls(TlsError::HandshakeAborted(..)) => ConnectFailure::Tls(T::PeerAlert),
            Self::Tls(TlsError::Io(_) | TlsError::IoError | TlsError::ConnectionClosed) => {
                ConnectFailure::Tls(T::Io)
            }
            Self::Tls(_) => ConnectFailure::Tls(T::Other),
            Self::Mqtt(minimq::Error::Peer(minimq::PeerError::Rejected(_))) => {
                ConnectFailure::Mqtt(C::Refused)
            }
            // A rejected client certificate surfaces here: TLS 1.3 sends the alert after
            // the client's Finished, so the handshake "succeeds" and the CONNACK read fails.
            Self::Mqtt(minimq::Error::Transport(TlsError::HandshakeAborted(..))) => {
                ConnectFailure::Tls(T::PeerAlert)
            }
            Self::Mqtt(minimq::Error::Transport(_) | minimq::Error::Disconnected) => {
                ConnectFailure::Mqtt(C::Io)
            }
            Self::Mqtt(_) => ConnectFailure::Mqtt(C::Protocol),
        }
    }
}

/// How long each phase of a connection took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub tcp: Duration,
    pub tls_handshake: Duration,
    pub mqtt_connect: Duration,
}

/// The crypto provider for the handshake: the one place to swap in the real one.
fn provider<'a>(identity: &'a Identity) -> impl CryptoProvider<CipherSuite = Suite> + 'a {
    // Spike only: verifies nothing about the server; P-256 SEC1 keys only.
    UnsecureProvider::new::<Suite>(OsRng)
        .with_priv_key(identity.key.expose())
        .with_cert(Certificate::X509(&identity.cert[..]))
}

/// Connect TCP to the first address of `addrs` that accepts.
pub async fn open_tcp(addrs: &[SocketAddr]) -> Result<Tcp, TransportError> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // MQTT packets are small and latency matters more than batching.
                let _ = stream.set_nodelay(true);
                return Ok(FromTokio::new(stream));
            }
            Err(e) => last = e,
        }
    }
    Err(TransportError::Tcp(last))
}

/// TCP connect and TLS handshake to `addrs` with the device's identity, presenting
/// `server_name` as SNI.
pub async fn connect_tls<'b>(
    addrs: &[SocketAddr],
    server_name: &str,
    identity: &Identity,
    bufs: &'b mut TlsBuffers,
    timings: &mut Timings,
) -> Result<Tls<'b>, TransportError> {
    connect_tls_with(addrs, server_name, provider(identity), bufs, timings).await
}

/// [`connect_tls`] with any crypto provider (tests use one without a certificate).
pub async fn connect_tls_with<'b>(
    addrs: &[SocketAddr],
    server_name: &str,
    mut provider: impl CryptoProvider<CipherSuite = Suite>,
    bufs: &'b mut TlsBuffers,
    timings: &mut Timings,
) -> Result<Tls<'b>, TransportError> {
    let start = Instant::now();
    let tcp = open_tcp(addrs).await?;
    timings.tcp = start.elapsed();
    let start = Instant::now();
    let mut tls = TlsConnection::new(tcp, &mut bufs.read, &mut bufs.write);
    let config = TlsConfig::new().with_server_name(server_name);
    tls.open(TlsContext::new(&config, &mut provider))
        .await
        .map_err(TransportError::Tls)?;
    timings.tls_handshake = start.elapsed();
    Ok(tls)
}

/// A minimq session for `client_id` over `bufs`.
pub fn mqtt_session<'b>(
    client_id: &str,
    keepalive_s: u16,
    bufs: &'b mut MqttBuffers,
) -> Result<Session<'b>, TransportError> {
    let config = ConfigBuilder::new(Buffers::new(&mut bufs.rx, &mut bufs.tx))
        .client_id(client_id)
        .map_err(TransportError::Config)?
        .keepalive_interval(keepalive_s);
    Ok(Session::new(config))
}

/// MQTT CONNECT over an open TLS connection; returns the live connection.
pub async fn connect_mqtt<'s, 'b, 't>(
    session: &'s mut Session<'b>,
    tls: Tls<'t>,
    timings: &mut Timings,
) -> Result<Mqtt<'s, 'b, 't>, TransportError> {
    let start = Instant::now();
    let conn = session.connect(tls).await.map_err(TransportError::Mqtt)?;
    timings.mqtt_connect = start.elapsed();
    Ok(conn)
}
