//! SNTPv4 client codec (RFC 4330 / RFC 5905 wire format), sans-IO.
//!
//! The device sends [`request`] over UDP and hands the reply to [`parse_reply`] together
//! with the transmit timestamp it put in the request. Nothing here reads a clock: the
//! caller chooses the transmit timestamp. It need not be the time at all — a random value
//! works as well and hides the device's (unsynchronised) clock; what matters is that the
//! server echoes it back as the originate timestamp, which is how a reply is tied to our
//! request and a blind spoofer is rejected.
//!
//! # NTP eras
//! NTP timestamps count seconds since 1900 in 32 bits and wrap on 2036-02-07. Following
//! RFC 4330 §3, a timestamp with the top bit set is read as 1968..2036 (era 0) and one
//! with the top bit clear as 2036..2104 (era 1), so the device keeps working across the
//! rollover without knowing the date beforehand.

use core::fmt;

/// Length of an SNTP packet without extension fields or authenticator.
pub const PACKET_LEN: usize = 48;

/// Seconds from 1900-01-01 (NTP epoch) to 1970-01-01 (Unix epoch).
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

const VERSION: u8 = 4;
const MODE_CLIENT: u8 = 3;
const MODE_SERVER: u8 = 4;
const MODE_BROADCAST: u8 = 5;
const LEAP_ALARM: u8 = 3;
const MAX_STRATUM: u8 = 15;

const OFF_STRATUM: usize = 1;
const OFF_REF_ID: usize = 12;
const OFF_ORIGINATE: usize = 24;
const OFF_RECEIVE: usize = 32;
const OFF_TRANSMIT: usize = 40;

/// A 64-bit NTP timestamp: seconds since 1900 (modulo the era) and a binary fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NtpTimestamp {
    pub seconds: u32,
    pub fraction: u32,
}

impl NtpTimestamp {
    /// From the 64-bit wire value.
    pub const fn from_bits(bits: u64) -> Self {
        Self {
            seconds: (bits >> 32) as u32,
            fraction: bits as u32,
        }
    }

    pub const fn to_bits(self) -> u64 {
        ((self.seconds as u64) << 32) | self.fraction as u64
    }

    /// The NTP timestamp of a Unix time (seconds and nanoseconds); wraps into the
    /// matching era, as on the wire.
    pub const fn from_unix(secs: u64, nanos: u32) -> Self {
        let seconds = (secs + NTP_UNIX_OFFSET) as u32;
        // nanos < 1e9 < 2^30, so this fits: fraction = nanos * 2^32 / 1e9.
        let fraction = (((nanos as u64) << 32) / 1_000_000_000) as u32;
        Self { seconds, fraction }
    }

    /// Unix seconds and milliseconds, using the RFC 4330 era pivot (1968..2104).
    pub const fn to_unix(self) -> UnixTime {
        let ntp_secs = if self.seconds & 0x8000_0000 != 0 {
            self.seconds as u64
        } else {
            self.seconds as u64 + (1u64 << 32)
        };
        // 1968..1970 lies before the Unix epoch; saturate rather than wrap.
        let secs = ntp_secs.saturating_sub(NTP_UNIX_OFFSET);
        let millis = ((self.fraction as u64 * 1000) >> 32) as u16;
        UnixTime { secs, millis }
    }

    fn read(buf: &[u8], at: usize) -> Self {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[at..at + 8]);
        Self::from_bits(u64::from_be_bytes(b))
    }
}

/// A wall-clock time from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnixTime {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub secs: u64,
    /// Milliseconds within the second (0..=999).
    pub millis: u16,
}

/// A validated server reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The server's transmit timestamp: the time to set the clock to.
    pub time: UnixTime,
    /// When the server received the request, for callers that estimate the offset.
    pub receive: UnixTime,
    /// 1 = primary reference, up to 15.
    pub stratum: u8,
}

/// Why a reply was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than [`PACKET_LEN`] bytes.
    TooShort(usize),
    /// Not a server (4) or broadcast (5) packet.
    Mode(u8),
    /// Not NTP version 3 or 4.
    Version(u8),
    /// Stratum 0: the server refuses service; the four ASCII letters say why
    /// (`RATE`: poll less often, `DENY`/`RSTR`: access denied).
    KissOfDeath([u8; 4]),
    /// Stratum 16 or more: the server itself is not synchronised.
    Stratum(u8),
    /// Leap indicator 3: the server's clock is not synchronised.
    Unsynchronized,
    /// The originate timestamp is not our transmit timestamp: a stale, duplicate or
    /// spoofed reply.
    OriginateMismatch,
    /// The server sent a zero transmit timestamp.
    ZeroTransmit,
}

impl Error {
    /// The kiss code as text, when this is a printable kiss-o'-death.
    pub fn kiss_code(&self) -> Option<&str> {
        match self {
            Self::KissOfDeath(code) => core::str::from_utf8(code)
                .ok()
                .filter(|s| s.bytes().all(|b| b.is_ascii_graphic())),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort(n) => write!(f, "reply of {n} bytes, need {PACKET_LEN}"),
            Self::Mode(m) => write!(f, "unexpected mode {m}"),
            Self::Version(v) => write!(f, "unsupported version {v}"),
            Self::KissOfDeath(code) => match self.kiss_code() {
                Some(s) => write!(f, "kiss-o'-death {s}"),
                None => write!(f, "kiss-o'-death {code:02x?}"),
            },
            Self::Stratum(s) => write!(f, "unsynchronised server (stratum {s})"),
            Self::Unsynchronized => f.write_str("unsynchronised server (leap alarm)"),
            Self::OriginateMismatch => f.write_str("originate timestamp mismatch"),
            Self::ZeroTransmit => f.write_str("zero transmit timestamp"),
        }
    }
}

/// A client request (version 4, mode 3) carrying `transmit` as its transmit timestamp.
/// Every other field is zero, as RFC 4330 §5 recommends.
pub fn request(transmit: NtpTimestamp) -> [u8; PACKET_LEN] {
    let mut buf = [0u8; PACKET_LEN];
    buf[0] = (VERSION << 3) | MODE_CLIENT;
    buf[OFF_TRANSMIT..OFF_TRANSMIT + 8].copy_from_slice(&transmit.to_bits().to_be_bytes());
    buf
}

/// Validate a server reply to the request sent with `sent` as its transmit timestamp.
///
/// Longer packets (extension fields, an authenticator) are accepted; only the fixed
/// header is read.
pub fn parse_reply(buf: &[u8], sent: NtpTimestamp) -> Result<Reply, Error> {
    if buf.len() < PACKET_LEN {
        return Err(Error::TooShort(buf.len()));
    }
    let leap = buf[0] >> 6;
    let version = (buf[0] >> 3) & 0x7;
    let mode = buf[0] & 0x7;
    if mode != MODE_SERVER && mode != MODE_BROADCAST {
        return Err(Error::Mode(mode));
    }
    if version != 3 && version != 4 {
        return Err(Error::Version(version));
    }
    let stratum = buf[OFF_STRATUM];
    if stratum == 0 {
        let mut code = [0u8; 4];
        code.copy_from_slice(&buf[OFF_REF_ID..OFF_REF_ID + 4]);
        return Err(Error::KissOfDeath(code));
    }
    if stratum > MAX_STRATUM {
        return Err(Error::Stratum(stratum));
    }
    if leap == LEAP_ALARM {
        return Err(Error::Unsynchronized);
    }
    if NtpTimestamp::read(buf, OFF_ORIGINATE) != sent {
        return Err(Error::OriginateMismatch);
    }
    let transmit = NtpTimestamp::read(buf, OFF_TRANSMIT);
    if transmit.to_bits() == 0 {
        return Err(Error::ZeroTransmit);
    }
    Ok(Reply {
        time: transmit.to_unix(),
        receive: NtpTimestamp::read(buf, OFF_RECEIVE).to_unix(),
        stratum,
    })
}

/// What one datagram that arrived while a request is out means for that request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The server's time: done.
    Time(Reply),
    /// Not an answer to this request (too short, not a server packet, or it does not
    /// echo our transmit timestamp: a late reply, a duplicate, a spoof, garbage). Keep
    /// waiting: one bad datagram must not end an exchange a good answer would finish.
    Ignore,
    /// The server refused service (stratum 0) with this code; the client must back off.
    KissOfDeath([u8; 4]),
    /// The server answered this request but its time is unusable (unsynchronised, zero
    /// transmit timestamp): this request is over; another may fare better.
    Refused(Error),
}

/// Classify a datagram received for the request sent with `sent`.
///
/// The originate check comes first, so nothing a blind spoofer sends (a kiss-o'-death
/// included) can end the exchange.
pub fn answer(buf: &[u8], sent: NtpTimestamp) -> Answer {
    if buf.len() < PACKET_LEN || NtpTimestamp::read(buf, OFF_ORIGINATE) != sent {
        return Answer::Ignore;
    }
    match parse_reply(buf, sent) {
        Ok(reply) => Answer::Time(reply),
        Err(Error::KissOfDeath(code)) => Answer::KissOfDeath(code),
        Err(Error::Mode(_) | Error::Version(_) | Error::TooShort(_)) => Answer::Ignore,
        Err(e) => Answer::Refused(e),
    }
}

#[cfg(test)]
mod tests;
