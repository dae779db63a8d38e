//! The buffers one connection uses, sized once for every board, and the types of the
//! connection built on them.
//!
//! - TLS read [`TLS_READ_BUF`] = 16,640 bytes: one full TLS record (2^14 plaintext + 256
//!   overhead). rustls-based brokers (the mock broker) ignore max_fragment_length, so a
//!   smaller buffer fails with `InsufficientSpace` on the first large record.
//! - TLS write [`TLS_WRITE_BUF`] = 4 KiB: every packet the device sends (CONNECT, a
//!   publish of a short JSON payload, acks) fits one record; larger writes are split.
//! - Record buffer [`MAX_RECORD_LEN`] = 16,645 bytes for the record-atomic layer under
//!   TLS: it must hold one whole record before handing any of it up.
//! - MQTT rx [`MQTT_RX_BUF`] = 5 KiB, the largest inbound packet: a 4 KiB payload plus
//!   topic, header and properties. minimq announces it as MQTT 5 Maximum Packet Size, so a
//!   broker that honours it (mosquitto, AWS) drops larger messages for this client.
//! - MQTT tx [`MQTT_TX_BUF`] = 2 KiB: the CONNECT workspace (client id up to 128 bytes)
//!   plus a few QoS 1 publishes awaiting PUBACK, replayed on reconnect.
//!
//! TLS + MQTT buffers stay under the chip's 48 KiB budget ([`BUFFER_BYTES`]).

use embedded_tls::{Aes128GcmSha256, TlsConnection};

use crate::mqtt::Watched;
use crate::tls::{Gated, MAX_RECORD_LEN, RecordAtomic};

pub const TLS_READ_BUF: usize = 16_640;
pub const TLS_WRITE_BUF: usize = 4096;
pub const MQTT_RX_BUF: usize = 5120;
pub const MQTT_TX_BUF: usize = 2048;

/// TLS buffers (read, write, record), for the `heap:` line.
pub const TLS_BYTES: usize = TLS_READ_BUF + TLS_WRITE_BUF + MAX_RECORD_LEN;
/// MQTT buffers, for the `heap:` line.
pub const MQTT_BYTES: usize = MQTT_RX_BUF + MQTT_TX_BUF;
/// TLS + MQTT buffers: the budget is 48 KiB.
pub const BUFFER_BYTES: usize = TLS_BYTES + MQTT_BYTES;
const _: () = assert!(BUFFER_BYTES <= 48 * 1024);

/// The cipher suite every AWS IoT endpoint and mosquitto offer for TLS 1.3.
pub type Suite = Aes128GcmSha256;
/// The byte stream under TLS: the board's socket, its writes visible to the write gate,
/// handing up whole records only.
pub type Records<'b, S> = RecordAtomic<'b, Gated<'b, S>>;
/// An open TLS connection over socket `S`, borrowing its buffers.
pub type Tls<'b, S> = TlsConnection<'b, Records<'b, S>, Suite>;
/// minimq over TLS, with the broker's DISCONNECT reason code and CONNACK Maximum QoS
/// watched on the way.
pub type Link<'s, 'm, 'b, S> = minimq::Connection<'s, 'm, Watched<'b, Tls<'b, S>>>;
/// What minimq reports on a [`Link`].
pub type LinkError = minimq::Error<embedded_tls::TlsError>;

/// TLS record buffers a connection borrows; one connection at a time.
pub struct TlsBuffers {
    pub read: [u8; TLS_READ_BUF],
    pub write: [u8; TLS_WRITE_BUF],
    pub record: [u8; MAX_RECORD_LEN],
}

/// minimq's packet buffers; its session keeps them across connections.
pub struct MqttBuffers {
    pub rx: [u8; MQTT_RX_BUF],
    pub tx: [u8; MQTT_TX_BUF],
}

/// Everything a connection borrows: the TLS and MQTT buffers, and the board's socket
/// buffers `S`. Static on the chip (counted in `.bss`), boxed on the host.
pub struct ConnBuffers<S> {
    pub tls: TlsBuffers,
    pub mqtt: MqttBuffers,
    pub socket: S,
}

impl<S> ConnBuffers<S> {
    pub const fn new(socket: S) -> Self {
        Self {
            tls: TlsBuffers {
                read: [0; TLS_READ_BUF],
                write: [0; TLS_WRITE_BUF],
                record: [0; MAX_RECORD_LEN],
            },
            mqtt: MqttBuffers {
                rx: [0; MQTT_RX_BUF],
                tx: [0; MQTT_TX_BUF],
            },
            socket,
        }
    }
}
