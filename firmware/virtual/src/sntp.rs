//! The SNTP client: `firmware_core::sntp` over tokio UDP, with a timeout and retries.
//!
//! Each request carries a random transmit timestamp. The server must echo it, so a reply
//! to an earlier (timed-out) request or a blind spoof is ignored rather than trusted, and
//! the device's unsynchronised clock is never sent.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use firmware_core::log::TimeError;
use firmware_core::sntp::{self, Answer, NtpTimestamp, Reply};
use rand_core::{OsRng, RngCore};
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct SntpOptions {
    /// Wait for a reply to one request.
    pub timeout: Duration,
    /// Requests to send before giving up.
    pub attempts: u32,
}

impl Default for SntpOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            attempts: 3,
        }
    }
}

#[derive(Debug)]
pub enum SntpError {
    /// The host name did not resolve.
    Dns(io::Error),
    Io(io::Error),
    /// No valid reply to any request.
    Timeout,
    /// The server refused service with this kiss-o'-death code: the attempts end at once
    /// (the server asked us to stop) and the session backs off.
    KissOfDeath([u8; 4]),
    /// The server answered but its reply was unusable, on the last attempt.
    Rejected(sntp::Error),
}

impl SntpError {
    /// The log slug for this failure.
    pub fn slug(&self) -> TimeError {
        match self {
            Self::Dns(_) => TimeError::Dns,
            Self::Io(_) => TimeError::Io,
            Self::Timeout => TimeError::Timeout,
            Self::KissOfDeath(_) => TimeError::KissOfDeath,
            Self::Rejected(_) => TimeError::BadResponse,
        }
    }

    /// The session's event for this failure.
    pub fn event(&self) -> firmware_core::session::Event<'static> {
        use firmware_core::session::Event;
        match self {
            Self::KissOfDeath(code) => Event::TimeKissOfDeath(*code),
            other => Event::TimeSyncFailed(other.slug()),
        }
    }
}

impl std::fmt::Display for SntpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dns(e) => write!(f, "dns: {e}"),
            Self::Io(e) => write!(f, "io: {e}"),
            Self::Timeout => f.write_str("no reply"),
            Self::KissOfDeath(code) => {
                write!(f, "kiss-o'-death {}", String::from_utf8_lossy(code))
            }
            Self::Rejected(e) => write!(f, "rejected: {e}"),
        }
    }
}

impl std::error::Error for SntpError {}

/// Resolve `host:port` and query it.
pub async fn sync(host: &str, port: u16, options: SntpOptions) -> Result<Reply, SntpError> {
    let addr = tokio::net::lookup_host((host, port))
        .await
        .map_err(SntpError::Dns)?
        .next()
        .ok_or_else(|| SntpError::Dns(io::Error::new(io::ErrorKind::NotFound, "no address")))?;
    sync_addr(addr, options).await
}

/// Query the server at `addr`.
pub async fn sync_addr(addr: SocketAddr, options: SntpOptions) -> Result<Reply, SntpError> {
    let local: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(SntpError::Io)?;
    // A connected socket only delivers datagrams from the server.
    socket.connect(addr).await.map_err(SntpError::Io)?;
    let mut last = SntpError::Timeout;
    for _ in 0..options.attempts.max(1) {
        let sent = NtpTimestamp::from_bits(OsRng.next_u64());
        socket
            .send(&sntp::request(sent))
            .await
            .map_err(SntpError::Io)?;
        match await_reply(&socket, sent, Instant::now() + options.timeout).await {
            Ok(reply) => return Ok(reply),
            Err(e @ SntpError::KissOfDeath(_)) => return Err(e),
            Err(e @ SntpError::Rejected(_)) | Err(e @ SntpError::Timeout) => last = e,
            // ICMP port unreachable shows up as a refused receive: worth another try.
            Err(SntpError::Io(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                last = SntpError::Io(e)
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

async fn await_reply(
    socket: &UdpSocket,
    sent: NtpTimestamp,
    deadline: Instant,
) -> Result<Reply, SntpError> {
    // Room for extension fields; anything longer is truncated, which the codec tolerates.
    let mut buf = [0u8; 128];
    loop {
        let n = match timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => return Err(SntpError::Timeout),
            Ok(Err(e)) => return Err(SntpError::Io(e)),
            Ok(Ok(n)) => n,
        };
        match sntp::answer(&buf[..n], sent) {
            Answer::Time(reply) => return Ok(reply),
            // Not an answer to this request (late, spoofed, garbage): keep waiting.
            Answer::Ignore => {}
            Answer::KissOfDeath(code) => return Err(SntpError::KissOfDeath(code)),
            Answer::Refused(e) => return Err(SntpError::Rejected(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    const EPOCH: u64 = 1_795_000_000;

    /// A server reply to `request` claiming [`EPOCH`], with `stratum`.
    fn answer(request: &[u8], stratum: u8, ref_id: [u8; 4]) -> Vec<u8> {
        let mut b = vec![0u8; 48];
        b[0] = (4 << 3) | 4;
        b[1] = stratum;
        b[12..16].copy_from_slice(&ref_id);
        b[24..32].copy_from_slice(&request[40..48]);
        let t = NtpTimestamp::from_unix(EPOCH, 0).to_bits().to_be_bytes();
        b[32..40].copy_from_slice(&t);
        b[40..48].copy_from_slice(&t);
        b
    }

    /// A UDP server on 127.0.0.1:0; `respond(n, request)` gives the datagrams to send back
    /// to the n-th request (0-based). Returns the address and the request counter.
    async fn server(
        respond: impl Fn(u32, &[u8]) -> Vec<Vec<u8>> + Send + 'static,
    ) -> (SocketAddr, Arc<AtomicU32>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let count = Arc::new(AtomicU32::new(0));
        let counter = count.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let i = counter.fetch_add(1, Ordering::SeqCst);
                for datagram in respond(i, &buf[..n]) {
                    let _ = socket.send_to(&datagram, peer).await;
                }
            }
        });
        (addr, count)
    }

    fn quick(attempts: u32) -> SntpOptions {
        SntpOptions {
            timeout: Duration::from_millis(300),
            attempts,
        }
    }

    #[tokio::test]
    async fn syncs_with_a_good_server() {
        let (addr, count) = server(|_, req| vec![answer(req, 2, [127, 0, 0, 1])]).await;
        let reply = sync_addr(addr, quick(3)).await.unwrap();
        assert_eq!(reply.time.secs, EPOCH);
        assert_eq!(reply.stratum, 2);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn resolves_host_names() {
        let (addr, _) = server(|_, req| vec![answer(req, 1, *b"GPS\0")]).await;
        let reply = sync("localhost", addr.port(), quick(1)).await;
        // "localhost" may resolve to ::1 first on some hosts, where nothing listens.
        if let Ok(reply) = reply {
            assert_eq!(reply.time.secs, EPOCH);
        }
        assert!(matches!(
            sync("no-such-host.invalid", 123, quick(1)).await,
            Err(SntpError::Dns(_))
        ));
    }

    #[tokio::test]
    async fn retries_after_a_lost_request() {
        let (addr, count) = server(|i, req| {
            if i == 0 {
                vec![]
            } else {
                vec![answer(req, 2, [0; 4])]
            }
        })
        .await;
        let reply = sync_addr(addr, quick(3)).await.unwrap();
        assert_eq!(reply.time.secs, EPOCH);
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn ignores_replies_to_other_requests() {
        let (addr, count) = server(|_, req| {
            let mut stale = answer(req, 2, [0; 4]);
            stale[31] ^= 1;
            let mut spoof = answer(req, 2, [0; 4]);
            spoof[40] ^= 0x40;
            spoof[24..32].fill(0);
            vec![stale, spoof, answer(req, 2, [0; 4])]
        })
        .await;
        let reply = sync_addr(addr, quick(1)).await.unwrap();
        assert_eq!(reply.time.secs, EPOCH);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn kiss_of_death_stops_at_once() {
        let (addr, count) = server(|_, req| vec![answer(req, 0, *b"RATE")]).await;
        let err = sync_addr(addr, quick(3)).await.unwrap_err();
        assert!(
            matches!(err, SntpError::KissOfDeath(code) if &code == b"RATE"),
            "{err:?}"
        );
        assert_eq!(err.slug(), TimeError::KissOfDeath);
        assert_eq!(
            err.event(),
            firmware_core::session::Event::TimeKissOfDeath(*b"RATE")
        );
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn one_garbage_datagram_does_not_abort_the_exchange() {
        let (addr, count) = server(|_, req| {
            let mut wrong_mode = answer(req, 2, [0; 4]);
            wrong_mode[0] = (4 << 3) | 3;
            vec![vec![0xff; 48], wrong_mode, answer(req, 2, [0; 4])]
        })
        .await;
        let reply = sync_addr(addr, quick(1)).await.unwrap();
        assert_eq!(reply.time.secs, EPOCH);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_spoofed_kiss_of_death_is_ignored() {
        let (addr, _) = server(|_, req| {
            let mut spoof = answer(req, 0, *b"DENY");
            spoof[24..32].fill(0);
            vec![spoof, answer(req, 2, [0; 4])]
        })
        .await;
        assert_eq!(sync_addr(addr, quick(1)).await.unwrap().time.secs, EPOCH);
    }

    #[tokio::test]
    async fn unsynchronised_server_is_retried_then_rejected() {
        let (addr, count) = server(|_, req| vec![answer(req, 16, [0; 4])]).await;
        let err = sync_addr(addr, quick(2)).await.unwrap_err();
        assert!(matches!(err, SntpError::Rejected(sntp::Error::Stratum(16))));
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn silent_server_times_out_after_every_attempt() {
        let (addr, count) = server(|_, _| vec![]).await;
        let err = sync_addr(addr, quick(2)).await.unwrap_err();
        assert!(matches!(err, SntpError::Timeout));
        assert_eq!(err.slug(), TimeError::Timeout);
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }
}
