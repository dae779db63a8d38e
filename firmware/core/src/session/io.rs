//! The session's interface: the [`Event`]s a driver reports and the [`Action`]s it
//! carries out, in order.

use core::net::IpAddr;

use super::time::Instant;
use crate::config::DeviceConfig;
use crate::log::{
    ConfigFailure, ConnectFailure, CredSource, DisconnectReason, FlashFile, HeapReport, Line,
    LoadError, NetError, ProtocolViolation, ShutdownReason, SubscribeError, TimeError,
};

/// MQTT quality of service; QoS 2 is not supported by AWS IoT Core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

impl Qos {
    /// 0 or 1; anything else (rejected by config validation) is taken as 1.
    pub const fn from_u8(q: u8) -> Self {
        if q == 0 {
            Qos::AtMostOnce
        } else {
            Qos::AtLeastOnce
        }
    }

    pub const fn as_u8(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        }
    }
}

/// What the driver reports. Each comes with `now` in [`Session::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// Power on: start the boot sequence.
    Start,
    /// A deadline passed (or the driver just wants the session to look at the time).
    Tick,
    ConfigLoaded(&'a DeviceConfig),
    ConfigFailed(ConfigFailure),
    /// Sizes of the DER files read; the bytes stay with the driver.
    CredsLoaded {
        cert: usize,
        key: usize,
        ca: usize,
        source: CredSource,
        /// The device certificate's notAfter (Unix seconds), to refuse an SNTP time far
        /// beyond it.
        cert_not_after: Option<u64>,
    },
    CredsFailed {
        file: FlashFile,
        error: LoadError,
    },
    NetUp {
        local_addr: IpAddr,
    },
    NetDown(NetError),
    /// Unix time in seconds from SNTP (checked for plausibility before it is used).
    TimeSynced(u64),
    TimeSyncFailed(TimeError),
    /// The SNTP server answered with a kiss-o'-death carrying this code.
    TimeKissOfDeath([u8; 4]),
    /// CONNACK accepted.
    Connected {
        session_present: bool,
        /// TCP + TLS + CONNACK time, if the driver measured it.
        handshake_ms: Option<u32>,
    },
    ConnectFailed(ConnectFailure),
    /// The CONNACK's Maximum QoS, when the broker sent one (right after `Connected`).
    MaxQos(Qos),
    /// SUBACK granted the subscription.
    Subscribed,
    SubscribeFailed(SubscribeError),
    Disconnected(DisconnectReason),
    /// The broker sent DISCONNECT with this MQTT 5 reason code; the connection is closed.
    ServerDisconnected {
        code: u8,
    },
    /// The broker broke MQTT 5; the driver has sent DISCONNECT with
    /// [`ProtocolViolation::reason_code`] and closed the connection.
    ProtocolViolation(ProtocolViolation),
    Inbound {
        topic: &'a str,
        payload: &'a [u8],
    },
    /// The client sent publish `seq` with this packet id (when it differs from the
    /// proposed one).
    PublishSent {
        seq: u32,
        packet_id: u16,
    },
    /// PUBACK for this packet id.
    PublishAcked(u16),
    /// PUBACK for this packet id with a failure reason code (0x80 and up): the broker did
    /// not take the message.
    PublishRefused {
        packet_id: u16,
        code: u8,
    },
    /// Any other packet from the broker (PINGRESP…): proof the link is alive.
    Received,
    /// Heap and buffer figures to log.
    Heap(HeapReport),
    Shutdown(ShutdownReason),
}

/// One publish to put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: Qos,
    /// The message's sequence number (`hello world #seq`).
    pub seq: u32,
    /// QoS 1: the packet id to use (proposed on the first send, the same on retries).
    pub packet_id: Option<u16>,
    /// A retransmission of an unacknowledged QoS 1 publish.
    pub dup: bool,
}

/// What the session asks the driver to do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Print this line on the serial port.
    Log(&'a Line),
    /// Read and parse `/config.json`; answer `ConfigLoaded` or `ConfigFailed`.
    LoadConfig,
    /// Read the three DER files; answer `CredsLoaded` or `CredsFailed`.
    LoadCredentials,
    /// Bring the network up; answer `NetUp` or `NetDown`.
    JoinNetwork,
    /// Query SNTP; answer `TimeSynced` or `TimeSyncFailed`.
    SyncTime,
    /// Open TCP + TLS + MQTT; answer `Connected` or `ConnectFailed`.
    Connect,
    /// Answer `Subscribed` or `SubscribeFailed`.
    Subscribe {
        topic: &'a str,
        qos: Qos,
    },
    Publish(Publish<'a>),
    /// Send PINGREQ (clients that ping on their own may ignore this).
    Ping,
    /// Close the connection (no `Disconnected` event needed).
    Disconnect,
    /// Send `Tick` at this time unless another event comes first. Always the last action.
    Sleep(Instant),
}
