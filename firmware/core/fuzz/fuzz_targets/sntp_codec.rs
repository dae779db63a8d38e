//! The SNTP reply parser on arbitrary datagrams: never a panic, and a reply it accepts
//! obeys every rule it claims to check (server/broadcast mode, version 3 or 4, stratum
//! 1..=15, no leap alarm, originate = our transmit timestamp, non-zero transmit), with the
//! time read by the RFC 4330 era pivot.
//!
//! Input: 8 bytes of our transmit timestamp, then the datagram.
#![no_main]

use firmware_core::sntp::{self, Error, NTP_UNIX_OFFSET, NtpTimestamp, PACKET_LEN};
use libfuzzer_sys::fuzz_target;

fn be64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes[..8].try_into().unwrap())
}

/// RFC 4330 section 3: top bit set = 1968..2036, clear = 2036..2104.
fn expected_unix_secs(ntp_seconds: u32) -> u64 {
    let era = if ntp_seconds & 0x8000_0000 != 0 {
        0
    } else {
        1u64 << 32
    };
    (u64::from(ntp_seconds) + era).saturating_sub(NTP_UNIX_OFFSET)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let sent = NtpTimestamp::from_bits(be64(data));
    let reply = &data[8..];
    match sntp::parse_reply(reply, sent) {
        Ok(r) => {
            assert!(reply.len() >= PACKET_LEN);
            let (leap, version, mode) = (reply[0] >> 6, (reply[0] >> 3) & 7, reply[0] & 7);
            assert!(mode == 4 || mode == 5, "mode {mode} accepted");
            assert!(version == 3 || version == 4, "version {version} accepted");
            assert_ne!(leap, 3, "leap alarm accepted");
            assert!((1..=15).contains(&r.stratum) && r.stratum == reply[1]);
            assert_eq!(be64(&reply[24..]), sent.to_bits(), "originate not checked");
            let transmit = NtpTimestamp::from_bits(be64(&reply[40..]));
            assert_ne!(transmit.to_bits(), 0);
            assert_eq!(r.time.secs, expected_unix_secs(transmit.seconds));
            assert!(r.time.millis < 1000 && r.receive.millis < 1000);
        }
        Err(e) => {
            let _ = e.to_string();
            if let Some(code) = e.kiss_code() {
                assert!(code.len() == 4 && code.bytes().all(|b| b.is_ascii_graphic()));
            }
        }
    }

    // Our own request is never taken for a reply (mode 3).
    assert_eq!(
        sntp::parse_reply(&sntp::request(sent), sent),
        Err(Error::Mode(3))
    );

    // Inside the era window, a Unix time survives the trip through NTP's wire form.
    let secs = u64::from(sent.seconds) % ((3u64 << 31) - NTP_UNIX_OFFSET);
    let nanos = sent.fraction % 1_000_000_000;
    let back = NtpTimestamp::from_unix(secs, nanos).to_unix();
    assert_eq!(back.secs, secs);
    let millis = u16::try_from(nanos / 1_000_000).unwrap();
    // The binary fraction truncates: at most one millisecond is lost.
    assert!(
        back.millis == millis || back.millis + 1 == millis,
        "{nanos} ns -> {back:?}"
    );
});
