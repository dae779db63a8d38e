//! An SNTP server on loopback, so devices sync their clock without the internet, with
//! switches to make it misbehave: stop answering, serve a wrong time, or send a
//! kiss-o'-death. The wire format is the device's own ([`firmware_core::sntp`]): its
//! timestamp type builds the replies and its parser checks them in the tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use firmware_core::sntp::{NtpTimestamp, PACKET_LEN};

use crate::observe::Event;
use tokio::net::UdpSocket;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How the SNTP server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SntpBehaviour {
    /// The host's time.
    #[default]
    Correct,
    /// Requests are read and dropped: the device sees a timeout.
    Silent,
    /// The host's time shifted by this many seconds (negative: in the past).
    OffsetSecs(i64),
    /// Stratum 0 with this four-letter code (e.g. `*b"RATE"`, `*b"DENY"`).
    KissOfDeath([u8; 4]),
}

/// Largest `OffsetSecs` either way: a hundred years reaches 1970 and 2100 from today,
/// within what an NTP timestamp can hold (1968..2104).
pub const MAX_OFFSET_SECS: i64 = 100 * 365 * 86_400;

impl SntpBehaviour {
    /// Refuse behaviours the server cannot serve, naming the field (`offset_secs`,
    /// `kiss_of_death`).
    pub fn check(&self) -> Result<(), crate::faults::FaultError> {
        match self {
            Self::OffsetSecs(secs) if secs.unsigned_abs() > MAX_OFFSET_SECS as u64 => {
                Err(crate::faults::FaultError {
                    field: "offset_secs",
                    problem: format!(
                        "{secs} is beyond +-{MAX_OFFSET_SECS} s (100 years), which no NTP \
                         timestamp of today's era can carry"
                    ),
                })
            }
            Self::KissOfDeath(code) if !code.iter().all(u8::is_ascii_alphanumeric) => {
                Err(crate::faults::FaultError {
                    field: "kiss_of_death",
                    problem: "must be 4 ASCII letters or digits (RATE, DENY, RSTR)".into(),
                })
            }
            _ => Ok(()),
        }
    }

    /// This behaviour with the offset brought within [`MAX_OFFSET_SECS`] (the library's
    /// setter uses it; the control API refuses instead).
    pub fn within_limits(self) -> Self {
        match self {
            Self::OffsetSecs(secs) => {
                Self::OffsetSecs(secs.clamp(-MAX_OFFSET_SECS, MAX_OFFSET_SECS))
            }
            other => other,
        }
    }
}

const MODE_CLIENT: u8 = 3;
const MODE_SERVER: u8 = 4;
/// The reference id of a local clock.
const REFERENCE_ID: [u8; 4] = *b"LOCL";

/// The reply to `request` received at `now`, or `None` if the request is not an SNTP
/// client request or the server is told to stay silent.
pub fn reply(
    request: &[u8],
    now: SystemTime,
    behaviour: SntpBehaviour,
) -> Option<[u8; PACKET_LEN]> {
    if request.len() < PACKET_LEN {
        return None;
    }
    let version = (request[0] >> 3) & 0x7;
    if request[0] & 0x7 != MODE_CLIENT || !(1..=4).contains(&version) {
        return None;
    }
    let served = match behaviour {
        SntpBehaviour::Silent => return None,
        // Out-of-range offsets are refused by `check`; should one get here anyway, the
        // reply is the nearest time the arithmetic can hold, never a panic.
        SntpBehaviour::OffsetSecs(secs) if secs >= 0 => now
            .checked_add(Duration::from_secs(secs.unsigned_abs()))
            .unwrap_or(now),
        SntpBehaviour::OffsetSecs(secs) => now
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .unwrap_or(UNIX_EPOCH),
        _ => now,
    };
    let since_epoch = served.duration_since(UNIX_EPOCH).unwrap_or_default();
    let timestamp = NtpTimestamp::from_unix(since_epoch.as_secs(), since_epoch.subsec_nanos())
        .to_bits()
        .to_be_bytes();
    let mut out = [0u8; PACKET_LEN];
    out[0] = (version << 3) | MODE_SERVER;
    out[2] = request[2]; // poll interval, echoed
    out[3] = (-20i8) as u8; // precision: about a microsecond
    match behaviour {
        SntpBehaviour::KissOfDeath(code) => {
            out[1] = 0;
            out[12..16].copy_from_slice(&code);
        }
        _ => {
            out[1] = 1;
            out[12..16].copy_from_slice(&REFERENCE_ID);
        }
    }
    out[16..24].copy_from_slice(&timestamp); // reference
    out[24..32].copy_from_slice(&request[40..48]); // originate = client's transmit
    out[32..40].copy_from_slice(&timestamp); // receive
    out[40..48].copy_from_slice(&timestamp); // transmit
    Some(out)
}

/// Serve SNTP on `socket` until cancelled, answering as `behaviour` says at the time.
pub(crate) async fn serve(
    socket: UdpSocket,
    behaviour: Arc<Mutex<SntpBehaviour>>,
    events: broadcast::Sender<Event>,
    cancel: CancellationToken,
) {
    let mut buf = [0u8; 512];
    loop {
        let (len, peer): (usize, SocketAddr) = tokio::select! {
            _ = cancel.cancelled() => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(e) => {
                    // ICMP port-unreachable from an earlier reply and the like.
                    tracing::debug!(error = %e, "SNTP receive failed");
                    continue;
                }
            },
        };
        let now = SystemTime::now();
        let mode = *behaviour.lock().unwrap_or_else(|e| e.into_inner());
        let answered = match reply(&buf[..len], now, mode) {
            Some(answer) => {
                if let Err(e) = socket.send_to(&answer, peer).await {
                    tracing::debug!(%peer, error = %e, "SNTP reply failed");
                }
                true
            }
            None => {
                tracing::debug!(%peer, ?mode, "SNTP request not answered");
                false
            }
        };
        let _ = events.send(Event::SntpRequest { peer, answered });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_core::sntp::{Error, parse_reply, request};

    const SENT: NtpTimestamp = NtpTimestamp {
        seconds: 0xdead_beef,
        fraction: 42,
    };

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_device_parser_accepts_the_reply() {
        let answer = reply(&request(SENT), at(1_795_000_000), SntpBehaviour::Correct).unwrap();
        let parsed = parse_reply(&answer, SENT).unwrap();
        assert_eq!(parsed.time.secs, 1_795_000_000);
        assert_eq!(parsed.stratum, 1);
    }

    #[test]
    fn wrong_time_silence_and_kiss_of_death() {
        let now = at(1_795_000_000);
        let ahead = reply(&request(SENT), now, SntpBehaviour::OffsetSecs(3600)).unwrap();
        assert_eq!(parse_reply(&ahead, SENT).unwrap().time.secs, 1_795_003_600);
        let behind = reply(&request(SENT), now, SntpBehaviour::OffsetSecs(-86_400)).unwrap();
        assert_eq!(parse_reply(&behind, SENT).unwrap().time.secs, 1_794_913_600);
        assert_eq!(reply(&request(SENT), now, SntpBehaviour::Silent), None);
        let kod = reply(&request(SENT), now, SntpBehaviour::KissOfDeath(*b"RATE")).unwrap();
        assert_eq!(parse_reply(&kod, SENT), Err(Error::KissOfDeath(*b"RATE")));
    }

    #[test]
    fn non_requests_are_ignored() {
        let now = at(1_795_000_000);
        assert_eq!(reply(&[0u8; 10], now, SntpBehaviour::Correct), None);
        let mut server_packet = request(SENT);
        server_packet[0] = (4 << 3) | MODE_SERVER;
        assert_eq!(reply(&server_packet, now, SntpBehaviour::Correct), None);
    }

    #[test]
    fn absurd_offsets_are_refused_and_never_panic() {
        let now = at(1_795_000_000);
        for secs in [i64::MIN, i64::MAX] {
            let behaviour = SntpBehaviour::OffsetSecs(secs);
            assert_eq!(behaviour.check().unwrap_err().field, "offset_secs");
            // Even unchecked, the server answers instead of panicking.
            assert!(reply(&request(SENT), now, behaviour).is_some());
        }
        // 1970 and 2100 from today are fine.
        assert!(SntpBehaviour::OffsetSecs(-1_795_000_000).check().is_ok());
        assert!(SntpBehaviour::OffsetSecs(2_300_000_000).check().is_ok());
        assert!(SntpBehaviour::KissOfDeath(*b"R\0TE").check().is_err());
        assert_eq!(
            SntpBehaviour::OffsetSecs(i64::MIN).within_limits(),
            SntpBehaviour::OffsetSecs(-MAX_OFFSET_SECS)
        );
    }
}
