//! SNTP: `firmware_core::sntp` over an embassy-net UDP socket, with a timeout and retries.
//!
//! Each request carries a random transmit timestamp that the server must echo, so a late
//! reply to an earlier request or a blind spoof is ignored, and the device's unset clock
//! is never sent.

use embassy_net::IpEndpoint;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_time::{Duration, Instant, with_deadline};
use esp_hal::rng::Trng;
use firmware_core::log::TimeError;
use firmware_core::session::Event;
use firmware_core::sntp::{self, Answer, NtpTimestamp, Reply};

use crate::net::Net;

/// Wait for a reply to one request.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Requests before giving up.
pub const ATTEMPTS: u32 = 3;

/// Why a sync gave no time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncError {
    Failed(TimeError),
    /// The server refused service with this kiss-o'-death code: no more requests now.
    KissOfDeath([u8; 4]),
}

impl SyncError {
    /// The session's event for this failure.
    pub fn event(self) -> Event<'static> {
        match self {
            Self::Failed(e) => Event::TimeSyncFailed(e),
            Self::KissOfDeath(code) => Event::TimeKissOfDeath(code),
        }
    }
}

impl From<TimeError> for SyncError {
    fn from(e: TimeError) -> Self {
        Self::Failed(e)
    }
}

/// Resolve `host` and query it on `port`.
pub async fn sync(net: &Net, rng: &Trng, host: &str, port: u16) -> Result<Reply, SyncError> {
    let Some(addr) = net.resolve(host).await else {
        return Err(TimeError::Dns.into());
    };
    let server = IpEndpoint::new(addr, port);
    let mut rx_meta = [PacketMetadata::EMPTY; 2];
    let mut tx_meta = [PacketMetadata::EMPTY; 2];
    let mut rx = [0u8; 256];
    let mut tx = [0u8; 128];
    let mut socket = UdpSocket::new(net.stack, &mut rx_meta, &mut rx, &mut tx_meta, &mut tx);
    // Port 0: the stack picks a free ephemeral port.
    socket.bind(0).map_err(|_| SyncError::Failed(TimeError::Io))?;
    let mut last = TimeError::Timeout;
    for _ in 0..ATTEMPTS {
        let sent = NtpTimestamp::from_bits(u64::from(rng.random()) << 32 | u64::from(rng.random()));
        socket
            .send_to(&sntp::request(sent), server)
            .await
            .map_err(|_| SyncError::Failed(TimeError::Io))?;
        match await_reply(&socket, server, sent, Instant::now() + TIMEOUT).await {
            Ok(reply) => return Ok(reply),
            // The server asked us to stop (kiss-o'-death): no more requests now.
            Err(Some(Answer::KissOfDeath(code))) => return Err(SyncError::KissOfDeath(code)),
            Err(Some(_)) => last = TimeError::BadResponse,
            Err(None) => last = TimeError::Timeout,
        }
    }
    Err(last.into())
}

/// The reply to `sent`; `Err(None)` on timeout, `Err(Some(answer))` for a refusal. A
/// datagram that does not answer this request (garbage, a late reply, a spoof) is
/// ignored: one bad datagram does not end the exchange.
async fn await_reply(
    socket: &UdpSocket<'_>,
    server: IpEndpoint,
    sent: NtpTimestamp,
    deadline: Instant,
) -> Result<Reply, Option<Answer>> {
    // Room for extension fields; anything longer is truncated, which the codec tolerates.
    let mut buf = [0u8; 128];
    loop {
        let (n, meta) = match with_deadline(deadline, socket.recv_from(&mut buf)).await {
            Err(_) => return Err(None),
            Ok(Err(_)) => continue,
            Ok(Ok(r)) => r,
        };
        if meta.endpoint != server {
            continue;
        }
        match sntp::answer(&buf[..n], sent) {
            Answer::Time(reply) => return Ok(reply),
            Answer::Ignore => {}
            refused => return Err(Some(refused)),
        }
    }
}
