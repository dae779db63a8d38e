//! The connection to the broker: embassy-net TCP, embedded-tls (TLS 1.3, client
//! certificate) with the core's provider and verifier, and minimq (MQTT 5).
//!
//! # Buffers (static, [`BUFFER_BYTES`] in all; the same sizes as the virtual device)
//! - TLS read [`TLS_READ_BUF`] = 16,640: one full TLS record; rustls-based brokers
//!   ignore max_fragment_length.
//! - TLS write [`TLS_WRITE_BUF`] = 4 KiB: every packet the device sends fits one record.
//! - Record buffer [`MAX_RECORD_LEN`] = 16,645 for the record-atomic layer.
//! - MQTT rx [`MQTT_RX_BUF`] = 5 KiB (a 4 KiB inbound payload plus headers; announced as
//!   MQTT 5 Maximum Packet Size), MQTT tx [`MQTT_TX_BUF`] = 2 KiB.
//! - TCP windows [`TCP_RX_BUF`] / [`TCP_TX_BUF`], not counted as TLS + MQTT buffers.
//!
//! # Cancel-safety
//! Reads: the TLS layer reads through `firmware_core::tls::RecordAtomic`, which hands
//! up whole records only, so the driver may drop a pending `poll()` at a deadline.
//! Writes: never cancelled on a connection that stays in use. The socket is wrapped in
//! `firmware_core::driver::Gated`; the driver waits for the gate to be idle before it lets
//! a deadline win over the connection. A write still stalled after [`IO_TIMEOUT`] ends
//! the connection (the socket's own timeout aborts unacknowledged data after as long;
//! the driver drops a connection whose write stalls on a zero window).

use embassy_net::tcp::TcpSocket;
use embassy_net::{IpEndpoint, Stack};
use embassy_time::Duration;
use embedded_tls::{Aes128GcmSha256, TlsConfig, TlsConnection, TlsContext, TlsError};
use esp_hal::rng::Trng;
use firmware_core::driver::{Gated, WriteGate};
use firmware_core::log::{ConnectError, ConnectFailure, TlsError as TlsSlug};
use firmware_core::mqtt::Watched;
use firmware_core::tls::{
    CertVerifier, DeviceKey, DeviceProvider, MAX_RECORD_LEN, RecordAtomic, handshake_error_kind,
    handshake_failure,
};

pub const TLS_READ_BUF: usize = 16_640;
pub const TLS_WRITE_BUF: usize = 4096;
pub const MQTT_RX_BUF: usize = 5120;
pub const MQTT_TX_BUF: usize = 2048;
pub const TCP_RX_BUF: usize = 4096;
pub const TCP_TX_BUF: usize = 2048;

/// TLS buffers (read, write, record), for the `heap:` line.
pub const TLS_BYTES: usize = TLS_READ_BUF + TLS_WRITE_BUF + MAX_RECORD_LEN;
/// MQTT buffers, for the `heap:` line.
pub const MQTT_BYTES: usize = MQTT_RX_BUF + MQTT_TX_BUF;
/// TLS + MQTT buffers: the budget is 48 KiB.
pub const BUFFER_BYTES: usize = TLS_BYTES + MQTT_BYTES;
const _: () = assert!(BUFFER_BYTES <= 48 * 1024);

/// A TCP segment that stays unacknowledged this long (a dead link) aborts the
/// connection, and a write that cannot finish in this time ends it (see the module docs).
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The cipher suite every AWS IoT endpoint and mosquitto offer for TLS 1.3.
pub type Suite = Aes128GcmSha256;
/// The TCP socket, its writes visible to the driver's gate.
pub type Tcp<'b> = Gated<'b, TcpSocket<'b>>;
/// The byte stream under TLS: whole records only.
pub type Records<'b> = RecordAtomic<'b, Tcp<'b>>;
pub type Tls<'b> = TlsConnection<'b, Records<'b>, Suite>;
/// minimq over TLS, with the broker's DISCONNECT reason code and CONNACK Maximum QoS
/// watched on the way (`firmware_core::mqtt::BrokerNotes`).
pub type Mqtt<'s, 'm, 'b> = minimq::Connection<'s, 'm, Watched<'b, Tls<'b>>>;
pub type MqttError = minimq::Error<TlsError>;

/// TLS buffers a connection borrows; one connection at a time.
pub struct TlsBuffers {
    pub read: [u8; TLS_READ_BUF],
    pub write: [u8; TLS_WRITE_BUF],
    pub record: [u8; MAX_RECORD_LEN],
}

impl TlsBuffers {
    pub const fn new() -> Self {
        Self {
            read: [0; TLS_READ_BUF],
            write: [0; TLS_WRITE_BUF],
            record: [0; MAX_RECORD_LEN],
        }
    }
}

impl Default for TlsBuffers {
    fn default() -> Self {
        Self::new()
    }
}

/// The TCP socket's windows.
pub struct TcpBuffers {
    pub rx: [u8; TCP_RX_BUF],
    pub tx: [u8; TCP_TX_BUF],
}

impl TcpBuffers {
    pub const fn new() -> Self {
        Self {
            rx: [0; TCP_RX_BUF],
            tx: [0; TCP_TX_BUF],
        }
    }
}

impl Default for TcpBuffers {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything one connection borrows.
pub struct ConnBuffers<'b> {
    pub tcp: &'b mut TcpBuffers,
    pub tls: &'b mut TlsBuffers,
}

/// minimq's packet buffers; the session keeps them across connections.
pub struct MqttBuffers {
    pub rx: [u8; MQTT_RX_BUF],
    pub tx: [u8; MQTT_TX_BUF],
}

impl MqttBuffers {
    pub const fn new() -> Self {
        Self {
            rx: [0; MQTT_RX_BUF],
            tx: [0; MQTT_TX_BUF],
        }
    }
}

impl Default for MqttBuffers {
    fn default() -> Self {
        Self::new()
    }
}

/// The device's identity for the handshake, borrowed from the loaded image.
pub struct Identity<'a> {
    pub cert: &'a [u8],
    pub key: &'a [u8],
    pub ca: &'a [u8],
}

/// TCP connect and TLS handshake to `remote`, presenting `server_name` as SNI and
/// verifying the server as that name at Unix time `now`.
#[allow(clippy::too_many_arguments)]
pub async fn connect_tls<'b>(
    stack: Stack<'static>,
    remote: IpEndpoint,
    server_name: &str,
    identity: &Identity<'_>,
    now: Option<u64>,
    rng: Trng,
    bufs: ConnBuffers<'b>,
    gate: &'b WriteGate,
) -> Result<Tls<'b>, ConnectFailure> {
    let key = DeviceKey::from_der(identity.key)
        .map_err(|_| ConnectFailure::Tls(TlsSlug::UnsupportedAlgorithm))?;
    let verifier = CertVerifier::new(identity.ca, now);
    let mut provider: DeviceProvider<'_, Trng, Suite> =
        DeviceProvider::new(rng, key, identity.cert, verifier);

    let TlsBuffers {
        read,
        write,
        record,
    } = bufs.tls;
    let mut socket = TcpSocket::new(stack, &mut bufs.tcp.rx, &mut bufs.tcp.tx);
    socket.set_timeout(Some(IO_TIMEOUT));
    socket
        .connect(remote)
        .await
        .map_err(|_| ConnectFailure::Mqtt(ConnectError::Tcp))?;
    let records = RecordAtomic::new(Gated::new(socket, gate), record);
    let mut tls = TlsConnection::new(records, read, write);
    let config = TlsConfig::new().with_server_name(server_name);
    match tls.open(TlsContext::new(&config, &mut provider)).await {
        Ok(()) => Ok(tls),
        Err(error) => {
            // Prefer the verifier's precise reason over embedded-tls's coarse error.
            let kind = handshake_error_kind(&error, provider.verify_error());
            Err(ConnectFailure::Tls(handshake_failure(&error, kind)))
        }
    }
}
