use super::*;
use proptest::prelude::*;

const SENT: NtpTimestamp = NtpTimestamp {
    seconds: 0x1234_5678,
    fraction: 0x9abc_def0,
};

/// A valid server reply to `SENT` claiming Unix time `secs`.
fn reply(secs: u64, millis: u32) -> [u8; PACKET_LEN] {
    let mut b = [0u8; PACKET_LEN];
    b[0] = (4 << 3) | 4;
    b[OFF_STRATUM] = 2;
    b[OFF_REF_ID..OFF_REF_ID + 4].copy_from_slice(&[127, 0, 0, 1]);
    b[OFF_ORIGINATE..OFF_ORIGINATE + 8].copy_from_slice(&SENT.to_bits().to_be_bytes());
    let t = NtpTimestamp::from_unix(secs, millis * 1_000_000).to_bits();
    b[OFF_RECEIVE..OFF_RECEIVE + 8].copy_from_slice(&t.to_be_bytes());
    b[OFF_TRANSMIT..OFF_TRANSMIT + 8].copy_from_slice(&t.to_be_bytes());
    b
}

#[test]
fn request_layout() {
    let r = request(SENT);
    assert_eq!(r.len(), 48);
    // LI 0, VN 4, mode 3.
    assert_eq!(r[0], 0x23);
    assert!(r[1..40].iter().all(|&b| b == 0));
    assert_eq!(
        &r[40..48],
        &[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0]
    );
}

#[test]
fn parses_a_valid_reply() {
    let r = parse_reply(&reply(1_795_000_000, 250), SENT).unwrap();
    assert_eq!(r.time.secs, 1_795_000_000);
    // The fraction is truncated on the way in and out, so allow one ms.
    assert!((249..=250).contains(&r.time.millis), "{:?}", r.time);
    assert_eq!(r.receive.secs, 1_795_000_000);
    assert_eq!(r.stratum, 2);
}

#[test]
fn accepts_version_3_broadcast_and_trailing_bytes() {
    let mut b = reply(1_700_000_000, 0);
    b[0] = (3 << 3) | 5;
    assert!(parse_reply(&b, SENT).is_ok());
    let mut long = [0u8; PACKET_LEN + 20];
    long[..PACKET_LEN].copy_from_slice(&reply(1_700_000_000, 0));
    assert!(parse_reply(&long, SENT).is_ok());
}

#[test]
fn rejects_short_replies() {
    assert_eq!(parse_reply(&[], SENT), Err(Error::TooShort(0)));
    assert_eq!(
        parse_reply(&reply(1, 0)[..47], SENT),
        Err(Error::TooShort(47))
    );
}

#[test]
fn rejects_wrong_mode_and_version() {
    let mut b = reply(1_700_000_000, 0);
    b[0] = (4 << 3) | 3;
    assert_eq!(parse_reply(&b, SENT), Err(Error::Mode(3)));
    b[0] = (2 << 3) | 4;
    assert_eq!(parse_reply(&b, SENT), Err(Error::Version(2)));
    b[0] = (5 << 3) | 4;
    assert_eq!(parse_reply(&b, SENT), Err(Error::Version(5)));
}

#[test]
fn reports_kiss_of_death() {
    let mut b = reply(1_700_000_000, 0);
    b[OFF_STRATUM] = 0;
    b[OFF_REF_ID..OFF_REF_ID + 4].copy_from_slice(b"RATE");
    let err = parse_reply(&b, SENT).unwrap_err();
    assert_eq!(err, Error::KissOfDeath(*b"RATE"));
    assert_eq!(err.kiss_code(), Some("RATE"));
    b[OFF_REF_ID..OFF_REF_ID + 4].copy_from_slice(&[0, 1, 2, 3]);
    assert_eq!(parse_reply(&b, SENT).unwrap_err().kiss_code(), None);
}

#[test]
fn rejects_unsynchronised_servers() {
    let mut b = reply(1_700_000_000, 0);
    b[OFF_STRATUM] = 16;
    assert_eq!(parse_reply(&b, SENT), Err(Error::Stratum(16)));
    let mut b = reply(1_700_000_000, 0);
    b[0] |= 0xC0;
    assert_eq!(parse_reply(&b, SENT), Err(Error::Unsynchronized));
}

#[test]
fn rejects_spoofed_and_empty_replies() {
    let b = reply(1_700_000_000, 0);
    let other = NtpTimestamp {
        seconds: SENT.seconds,
        fraction: SENT.fraction ^ 1,
    };
    assert_eq!(parse_reply(&b, other), Err(Error::OriginateMismatch));
    let mut b = reply(1_700_000_000, 0);
    b[OFF_TRANSMIT..].fill(0);
    assert_eq!(parse_reply(&b, SENT), Err(Error::ZeroTransmit));
}

#[test]
fn handles_the_2036_rollover() {
    // Last second of era 0 and the first seconds of era 1.
    let last = NtpTimestamp {
        seconds: u32::MAX,
        fraction: 0,
    };
    assert_eq!(last.to_unix().secs, (1u64 << 32) - 1 - NTP_UNIX_OFFSET);
    let wrapped = NtpTimestamp {
        seconds: 0,
        fraction: 0,
    };
    // 2036-02-07T06:28:16Z
    assert_eq!(wrapped.to_unix().secs, 2_085_978_496);
    let r = parse_reply(&reply(2_085_978_496 + 10, 0), SENT).unwrap();
    assert_eq!(r.time.secs, 2_085_978_506);
    // Well into era 1 (2100-01-01).
    let r = parse_reply(&reply(4_102_444_800, 0), SENT).unwrap();
    assert_eq!(r.time.secs, 4_102_444_800);
}

#[test]
fn unix_round_trip_and_fraction() {
    let t = NtpTimestamp::from_unix(1_795_000_000, 500_000_000);
    assert_eq!(t.fraction, 0x8000_0000);
    assert_eq!(
        t.to_unix(),
        UnixTime {
            secs: 1_795_000_000,
            millis: 500
        }
    );
    assert_eq!(NtpTimestamp::from_bits(t.to_bits()), t);
}

proptest! {
    #[test]
    fn parsing_arbitrary_bytes_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..128),
        sent in any::<u64>(),
    ) {
        let _ = parse_reply(&bytes, NtpTimestamp::from_bits(sent));
    }

    #[test]
    fn every_era_1968_to_2104_round_trips(secs in 0u64..4_294_967_296 - 2_208_988_800 + (1 << 31), ms in 0u32..1000) {
        // Unix 0 .. end of the pivot window.
        let t = NtpTimestamp::from_unix(secs, ms * 1_000_000);
        let u = t.to_unix();
        prop_assert_eq!(u.secs, secs);
        prop_assert!(u.millis as u32 == ms || u.millis as u32 + 1 == ms);
    }
}

#[test]
fn answer_ignores_anything_that_does_not_echo_the_request() {
    let good = reply(1_795_000_000, 0);
    assert!(matches!(answer(&good, SENT), Answer::Time(r) if r.time.secs == 1_795_000_000));
    // Garbage, a short datagram, a client packet, a spoofed kiss: all ignored.
    assert_eq!(answer(&[0xff; 48], SENT), Answer::Ignore);
    assert_eq!(answer(&good[..47], SENT), Answer::Ignore);
    let mut client = good;
    client[0] = (4 << 3) | 3;
    assert_eq!(answer(&client, SENT), Answer::Ignore);
    let mut spoofed_kiss = good;
    spoofed_kiss[1] = 0;
    spoofed_kiss[12..16].copy_from_slice(b"DENY");
    spoofed_kiss[24] ^= 1;
    assert_eq!(answer(&spoofed_kiss, SENT), Answer::Ignore);
}

#[test]
fn answer_names_a_kiss_of_death_and_a_refusal() {
    let mut kiss = reply(1_795_000_000, 0);
    kiss[1] = 0;
    kiss[12..16].copy_from_slice(b"RATE");
    assert_eq!(answer(&kiss, SENT), Answer::KissOfDeath(*b"RATE"));
    let mut unsynced = reply(1_795_000_000, 0);
    unsynced[1] = 16;
    assert_eq!(answer(&unsynced, SENT), Answer::Refused(Error::Stratum(16)));
}
