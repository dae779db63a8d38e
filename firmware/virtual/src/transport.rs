//! The connection to the broker: tokio TCP, embedded-tls (TLS 1.3, client certificate)
//! and minimq (MQTT 5), with the buffer sizes the ESP32-C3 uses.
//!
//! # Buffers
//! The chip's sizes, from `firmware_core::driver::buffers` (defined once there); here on
//! the heap. The device itself connects through `firmware_core::driver::Runner`; this
//! module is the same connection for tests and benches that drive minimq directly
//! (mosquitto interop, handshake figures).
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
//! [`provider`] is the one place that chooses it: `firmware_core::tls::DeviceProvider`,
//! the same as on the board — the device key (P-256 or RSA, SEC1/PKCS#8/PKCS#1), the
//! certificate, and a verifier that checks the server chain against `/ca.der`, the
//! endpoint name and the synced clock.

use firmware_core::mqtt::{BrokerNotes, Watched};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use embedded_io_adapters::tokio_1::FromTokio;
use embedded_tls::{
    Aes128GcmSha256, CryptoProvider, TlsConfig, TlsConnection, TlsContext, TlsError,
};
use firmware_core::log::{self, ConnectFailure};
use firmware_core::tls::{
    CertVerifier, DeviceKey, DeviceProvider, KeyError, MAX_RECORD_LEN, RecordAtomic,
    handshake_error_kind, handshake_failure,
};
use minimq::Session;
use rand_core::OsRng;
use tokio::net::TcpStream;

use crate::flash::Identity;

pub use firmware_core::driver::buffers::{MQTT_RX_BUF, MQTT_TX_BUF, TLS_READ_BUF, TLS_WRITE_BUF};

pub use firmware_core::mqtt::op_packet_id;
pub use firmware_core::session::SESSION_EXPIRY_S;
/// The cipher suite every AWS IoT endpoint and mosquitto offer for TLS 1.3.
pub type Suite = Aes128GcmSha256;
/// The TCP stream.
pub type Tcp = FromTokio<TcpStream>;
/// The byte stream under TLS: whole records only, so cancelled reads lose nothing.
pub type Records<'b> = RecordAtomic<'b, Tcp>;
/// An open TLS connection, borrowing its buffers.
pub type Tls<'b> = TlsConnection<'b, Records<'b>, Suite>;
/// The MQTT connection over TLS.
/// minimq over TLS, with the broker's DISCONNECT code and Maximum QoS watched on the way.
pub type Mqtt<'s, 'b, 't> = minimq::Connection<'s, 'b, Watched<'t, Tls<'t>>>;
pub type MqttError = minimq::Error<TlsError>;

/// TLS record buffers; heap-allocated once and reused across reconnects.
pub struct TlsBuffers {
    pub read: Box<[u8]>,
    pub write: Box<[u8]>,
    /// For [`RecordAtomic`].
    pub record: Box<[u8]>,
}

impl TlsBuffers {
    pub fn new() -> Self {
        Self {
            read: vec![0; TLS_READ_BUF].into_boxed_slice(),
            write: vec![0; TLS_WRITE_BUF].into_boxed_slice(),
            record: vec![0; MAX_RECORD_LEN].into_boxed_slice(),
        }
    }
}

impl TlsBuffers {
    /// Bytes held, for the `heap:` line.
    pub const BYTES: usize = TLS_READ_BUF + TLS_WRITE_BUF + MAX_RECORD_LEN;
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

impl MqttBuffers {
    /// Bytes held, for the `heap:` line.
    pub const BYTES: usize = MQTT_RX_BUF + MQTT_TX_BUF;
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
    /// The device key in the image is not usable.
    Key(KeyError),
    /// The handshake failed; `kind` is the log slug (`unknown-ca`, `certificate-expired`,
    /// `peer-rejected-certificate`, ...), the verifier's reason when it refused the server.
    Tls {
        error: TlsError,
        kind: &'static str,
    },
    Mqtt(MqttError),
    /// A bad client id or buffer split.
    Config(minimq::ConfigError),
    Timeout,
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(e) => write!(f, "tcp: {e}"),
            Self::Key(e) => write!(f, "device key: {}", e.kind()),
            Self::Tls { error, kind } => write!(f, "tls: {kind} ({error:?})"),
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
            Self::Key(_) => ConnectFailure::Tls(T::UnsupportedAlgorithm),
            Self::Tls { error, kind } => ConnectFailure::Tls(handshake_failure(error, kind)),
            Self::Mqtt(e) => firmware_core::mqtt::connect_failure(e),
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

/// The crypto provider for the handshake: the one place that chooses it. `now` is the
/// synced wall clock (Unix seconds); without it the verifier refuses every server
/// (`clock-not-set`), as certificate validity cannot be checked.
pub fn provider(
    identity: &Identity,
    now: Option<u64>,
) -> Result<DeviceProvider<'_, OsRng, Suite>, TransportError> {
    let key = DeviceKey::from_der(identity.key.expose()).map_err(TransportError::Key)?;
    let verifier = CertVerifier::new(&identity.ca, now);
    Ok(DeviceProvider::new(OsRng, key, &identity.cert, verifier))
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
/// `server_name` as SNI and verifying the server as that name at time `now`.
pub async fn connect_tls<'b>(
    addrs: &[SocketAddr],
    server_name: &str,
    identity: &Identity,
    now: Option<u64>,
    bufs: &'b mut TlsBuffers,
    timings: &mut Timings,
) -> Result<Tls<'b>, TransportError> {
    let mut provider = provider(identity, now)?;
    let result = connect_tls_with(addrs, server_name, &mut provider, bufs, timings).await;
    // Prefer the verifier's precise reason over embedded-tls's coarse error.
    result.map_err(|e| match e {
        TransportError::Tls { error, .. } => TransportError::Tls {
            kind: handshake_error_kind(&error, provider.verify_error()),
            error,
        },
        other => other,
    })
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
    let records = RecordAtomic::new(tcp, &mut bufs.record);
    let mut tls = TlsConnection::new(records, &mut bufs.read, &mut bufs.write);
    let config = TlsConfig::new().with_server_name(server_name);
    tls.open(TlsContext::new(&config, &mut provider))
        .await
        .map_err(|error| TransportError::Tls {
            kind: handshake_error_kind(&error, None),
            error,
        })?;
    timings.tls_handshake = start.elapsed();
    Ok(tls)
}

/// A minimq session for `client_id` over `bufs`, configured as on the board.
pub fn mqtt_session<'b>(
    client_id: &str,
    keepalive_s: u16,
    bufs: &'b mut MqttBuffers,
) -> Result<Session<'b>, TransportError> {
    firmware_core::mqtt::session(client_id, keepalive_s, &mut bufs.rx, &mut bufs.tx)
        .map_err(TransportError::Config)
}

/// MQTT CONNECT over an open TLS connection; returns the live connection. What the broker
/// says that minimq does not pass on goes to `notes` (cleared here).
pub async fn connect_mqtt<'s, 'b, 't>(
    session: &'s mut Session<'b>,
    tls: Tls<'t>,
    notes: &'t BrokerNotes,
    timings: &mut Timings,
) -> Result<Mqtt<'s, 'b, 't>, TransportError> {
    let start = Instant::now();
    let conn = session
        .connect(Watched::new(tls, notes))
        .await
        .map_err(TransportError::Mqtt)?;
    timings.mqtt_connect = start.elapsed();
    Ok(conn)
}
