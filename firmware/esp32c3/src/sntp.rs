//! SNTP: `firmware_core::sntp` over an embassy-net UDP socket, with a timeout and retries,
//! in a task of its own so a sync runs beside the MQTT connection.
//!
//! The session asks for the time again while connected (hourly, and after a handshake
//! failed for a date reason): the driver hands the request to [`sntp_task`] through
//! [`TimeClient`] and keeps polling the connection; the answer comes back as one more
//! thing the driver waits for. Requests and answers go through two signals, so waiting
//! for an answer can be cancelled (the driver's other wake-ups win) without losing it.
//!
//! Each request carries a random transmit timestamp that the server must echo, so a late
//! reply to an earlier request or a blind spoof is ignored, and the device's unset clock
//! is never sent.

use embassy_executor::Spawner;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpEndpoint, Stack};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::{Duration, Instant, with_deadline, with_timeout};
use esp_hal::rng::Trng;
use firmware_core::config::NtpServer;
use firmware_core::log::TimeError;
use firmware_core::session::Event;
use firmware_core::sntp::{self, Answer, NtpTimestamp, Reply};

use crate::net;

/// Wait for a reply to one request.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Requests before giving up.
pub const ATTEMPTS: u32 = 3;
/// Longest a whole sync may take (DNS, then every attempt, with room to spare); below the
/// session's request timeout, so the session always hears the outcome from the driver.
pub const SYNC_LIMIT: Duration = Duration::from_secs(15);
const _: () = assert!(
    SYNC_LIMIT.as_millis() > net::DNS_TIMEOUT.as_millis() + ATTEMPTS as u64 * TIMEOUT.as_millis()
);

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

/// The server the driver asks the task to query.
static REQUEST: Signal<CriticalSectionRawMutex, NtpServer> = Signal::new();
/// The task's outcome for the last request.
static ANSWER: Signal<CriticalSectionRawMutex, Result<Reply, SyncError>> = Signal::new();

/// The driver's end of [`sntp_task`]: one sync under way at a time.
pub struct TimeClient {
    /// A request is out and its answer not yet taken.
    busy: bool,
}

impl TimeClient {
    /// Spawn the SNTP task on `stack`. `None` if it cannot be spawned (a second call).
    pub fn start(spawner: Spawner, stack: Stack<'static>, rng: Trng) -> Option<Self> {
        let token = sntp_task(stack, rng).ok()?;
        spawner.spawn(token);
        Some(Self { busy: false })
    }

    /// Ask `server` for the time, unless a sync is already under way: its answer (due
    /// within [`SYNC_LIMIT`]) serves this request too.
    pub fn request(&mut self, server: &NtpServer) {
        if !self.busy {
            self.busy = true;
            REQUEST.signal(server.clone());
        }
    }

    /// The outcome of the sync under way; never resolves when none is. Cancel-safe: an
    /// answer not yet taken stays for the next call.
    pub async fn answer(&mut self) -> Result<Reply, SyncError> {
        if !self.busy {
            return core::future::pending().await;
        }
        let answer = ANSWER.wait().await;
        self.busy = false;
        answer
    }
}

/// Run each requested sync to completion, bounded by [`SYNC_LIMIT`].
#[embassy_executor::task]
async fn sntp_task(stack: Stack<'static>, rng: Trng) {
    loop {
        let server = REQUEST.wait().await;
        let outcome = with_timeout(SYNC_LIMIT, sync(stack, &rng, &server.host, server.port))
            .await
            .unwrap_or(Err(SyncError::Failed(TimeError::Timeout)));
        ANSWER.signal(outcome);
    }
}

/// Resolve `host` and query it on `port`.
pub async fn sync(
    stack: Stack<'static>,
    rng: &Trng,
    host: &str,
    port: u16,
) -> Result<Reply, SyncError> {
    let Some(addr) = net::resolve(stack, host).await else {
        return Err(TimeError::Dns.into());
    };
    let server = IpEndpoint::new(addr, port);
    let mut rx_meta = [PacketMetadata::EMPTY; 2];
    let mut tx_meta = [PacketMetadata::EMPTY; 2];
    let mut rx = [0u8; 256];
    let mut tx = [0u8; 128];
    let mut socket = UdpSocket::new(stack, &mut rx_meta, &mut rx, &mut tx_meta, &mut tx);
    // Port 0: the stack picks a free ephemeral port.
    socket
        .bind(0)
        .map_err(|_| SyncError::Failed(TimeError::Io))?;
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
