//! A selection of the core's own test vectors, run on the emulated CPU: what the core
//! computes must not depend on the ISA (32-bit `usize`, no atomics, `opt-level = "s"`).
//! Each mirrors a host unit test in `firmware/core`; each prints `vector <name> pass` or
//! `vector <name> FAIL <why>`.

use alloc::vec;
use core::fmt::Write as _;

use firmware_core::image::{self, CA_PATH, CERT_PATH, CONFIG_PATH, CredentialBuffers, KEY_PATH};
use firmware_core::log::{Level, Line};
use firmware_core::session::backoff::ceiling;
use firmware_core::session::{
    Backoff, BackoffConfig, CadenceSchedule, Duration, Instant, RandomSource,
};
use firmware_core::sntp::{self, NtpTimestamp};
use firmware_core::tls::{
    DeviceKey, KeyAlgorithm, VerifyError, detect_key_format, verify_server_chain,
};
use semihosting::println;

use crate::session::ENDPOINT;

type Outcome = Result<(), &'static str>;
/// A named vector.
type Vector = (&'static str, fn() -> Outcome);

fn check(ok: bool, why: &'static str) -> Outcome {
    if ok { Ok(()) } else { Err(why) }
}

/// Runs every vector; true if all passed.
pub fn run_all() -> bool {
    let vectors: [Vector; 10] = [
        ("log-design-example-round-trip", log_round_trip),
        ("log-parse-fields-and-errors", log_fields),
        ("image-in-memory-credentials", image_credentials),
        ("sntp-request-and-reply", sntp_codec),
        ("backoff-ceilings-and-draws", backoff),
        ("cadence-drift-free-skips", cadence),
        ("verifier-aws-chain-accepted", verify_accepts),
        ("verifier-aws-chain-refusals", verify_refuses),
        ("key-p256-parse", key_p256),
        ("key-rsa2048-parse", key_rsa),
    ];
    let mut all = true;
    for (name, vector) in vectors {
        match vector() {
            Ok(()) => println!("vector {name} pass"),
            Err(why) => {
                println!("vector {name} FAIL {why}");
                all = false;
            }
        }
    }
    all
}

const DESIGN_EXAMPLE: [&str; 11] = [
    "I (     812) boot: firmware=0.1.0 board=virtual client_id=ESPthing",
    "I (     815) creds: cert=812B key=121B ca=837B source=flash",
    "I (    1310) time: synced epoch=1795000000",
    "I (    2900) mqtt: connected endpoint=localhost:8883 session=new handshake_ms=38",
    "I (    2910) mqtt: subscribed topic=inTopic qos=1",
    r#"I (    4910) publish: topic=outTopic seq=1 bytes=30 payload={"message": "hello world #1"}"#,
    "I (    5100) inbound: topic=inTopic bytes=5 payload=hello",
    "W (    9000) mqtt: disconnected reason=peer-closed",
    "I (    9000) mqtt: backoff attempt=1 delay_ms=734",
    "E (   11000) tls: handshake failed error=certificate-expired",
    "I (   12000) heap: free=41234 min_free=39000",
];

fn log_round_trip() -> Outcome {
    for text in DESIGN_EXAMPLE {
        let line: Line = text.parse().map_err(|_| "a design line does not parse")?;
        let mut back = heapless::String::<256>::new();
        write!(back, "{line}").map_err(|_| "line too long")?;
        check(back == text, "a design line does not print back exactly")?;
    }
    Ok(())
}

fn log_fields() -> Outcome {
    let line: Line = "E (   11000) tls: handshake failed error=certificate-expired\r\n"
        .parse()
        .map_err(|_| "does not parse")?;
    check(line.level == Level::Error, "level")?;
    check(line.uptime_ms == 11000, "uptime")?;
    check(line.tag() == "tls", "tag")?;
    check(line.message() == "handshake failed", "message")?;
    check(line.field("error") == Some("certificate-expired"), "field")?;
    check(line.payload().is_none(), "payload")?;
    for bad in [
        "",
        "I (x) boot: a=b",
        "Q (     1) boot: a=b",
        "I (     1) : a=b",
    ] {
        check(bad.parse::<Line>().is_err(), "garbage parsed")?;
    }
    Ok(())
}

fn image_credentials() -> Outcome {
    let (cert, key, ca) = (P256_CERT, P256_KEY, P256_CA);
    let config = br#"{"endpoint":{"host":"a1b2c3d4e5f6g7-ats.iot.us-east-1.amazonaws.com"},"client_id":"ESPthing"}"#;
    let mut img = vec![0xFFu8; 64 * 1024];
    let mut flash = &mut img[..];
    image::format(&mut flash).map_err(|_| "format")?;
    image::mount(&mut flash, |fs| {
        fs.write_file(CERT_PATH, cert)?;
        fs.write_file(KEY_PATH, key)?;
        fs.write_file(CA_PATH, ca)?;
        fs.write_file(CONFIG_PATH, config)
    })
    .map_err(|_| "write files")?;
    let mut flash = &mut img[..];
    let mut bufs = CredentialBuffers::new();
    let same = image::mount(&mut flash, |fs| {
        let creds = fs.load_credentials(&mut bufs)?;
        Ok(creds.cert == cert
            && creds.key == key
            && creds.ca == ca
            && creds.config.client_id == "ESPthing")
    })
    .map_err(|_| "load credentials")?;
    check(same, "credentials read back differ")?;
    // A blank partition is reported, not mounted.
    let mut blank = vec![0xFFu8; 64 * 1024];
    let mut flash = &mut blank[..];
    check(
        image::mount(&mut flash, |_| Ok(())).is_err(),
        "blank image mounted",
    )
}

const SENT: NtpTimestamp = NtpTimestamp {
    seconds: 0x1234_5678,
    fraction: 0x9abc_def0,
};

fn sntp_codec() -> Outcome {
    let request = sntp::request(SENT);
    check(request[0] == 0x23, "request: LI 0, VN 4, mode 3")?;
    check(
        request[40..48] == [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0],
        "request: transmit timestamp",
    )?;
    // A server reply (VN 4, mode 4, stratum 2) to SENT at 1795000000.250.
    let mut reply = [0u8; 48];
    reply[0] = (4 << 3) | 4;
    reply[1] = 2;
    reply[12..16].copy_from_slice(&[127, 0, 0, 1]);
    reply[24..32].copy_from_slice(&SENT.to_bits().to_be_bytes());
    let t = NtpTimestamp::from_unix(1_795_000_000, 250_000_000).to_bits();
    reply[32..40].copy_from_slice(&t.to_be_bytes());
    reply[40..48].copy_from_slice(&t.to_be_bytes());
    let parsed = sntp::parse_reply(&reply, SENT).map_err(|_| "valid reply refused")?;
    check(parsed.time.secs == 1_795_000_000, "reply: seconds")?;
    check((249..=250).contains(&parsed.time.millis), "reply: millis")?;
    // A reply to some other request (originate mismatch) is refused: anti-spoofing.
    let other = NtpTimestamp::from_bits(SENT.to_bits() + 1);
    check(
        sntp::parse_reply(&reply, other).is_err(),
        "spoofed reply accepted",
    )
}

/// The same cheap sequence on every CPU.
struct Counter(u32);

impl RandomSource for Counter {
    fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        self.0
    }
}

fn backoff() -> Outcome {
    let config = BackoffConfig::DEVICE;
    check(
        ceiling(&config, 0) == Duration::from_millis(500),
        "ceiling 0",
    )?;
    check(ceiling(&config, 3) == Duration::from_secs(4), "ceiling 3")?;
    check(
        ceiling(&config, 7) == Duration::from_secs(60),
        "ceiling capped",
    )?;
    check(
        ceiling(&config, 200) == Duration::from_secs(60),
        "ceiling saturates",
    )?;
    let mut backoff = Backoff::new(config);
    let mut rng = Counter(7);
    for attempt in 0..1000u32 {
        let top = backoff.ceiling();
        let delay = backoff.next_delay(&mut rng);
        check(
            delay <= top && delay >= config.floor,
            "draw outside [floor, ceiling]",
        )?;
        check(backoff.attempt() == attempt + 1, "attempt count")?;
    }
    backoff.reset();
    check(backoff.ceiling() == Duration::from_millis(500), "reset")
}

fn cadence() -> Outcome {
    let mut schedule = CadenceSchedule::new(Duration::from_millis(2000));
    schedule.start(Instant::from_millis(0));
    check(
        schedule.poll(Instant::from_millis(1999)).is_none(),
        "early fire",
    )?;
    let fire = schedule
        .poll(Instant::from_millis(2000))
        .ok_or("no fire on time")?;
    check(
        fire.slot == Instant::from_millis(2000) && fire.skipped == 0,
        "on-time slot",
    )?;
    // Late by 2.1 periods: one publish, two slots skipped, the grid kept.
    let fire = schedule
        .poll(Instant::from_millis(9100))
        .ok_or("no late fire")?;
    check(
        fire.slot == Instant::from_millis(4000) && fire.skipped == 2,
        "late slot",
    )?;
    check(
        schedule.next_deadline() == Some(Instant::from_millis(10_000)),
        "drifted grid",
    )?;
    // A second start keeps the grid (sequence timing survives reconnects).
    schedule.start(Instant::from_millis(9500));
    check(
        schedule.next_deadline() == Some(Instant::from_millis(10_000)),
        "restart moved the grid",
    )
}

const NOW: u64 = crate::NOW;
const P256_CA: &[u8] = include_bytes!("../flights/p256/ca.der");
const P256_CERT: &[u8] = include_bytes!("../flights/p256/cert.der");
const P256_KEY: &[u8] = include_bytes!("../flights/p256/private.der");
const RSA_KEY: &[u8] = include_bytes!("../flights/rsa2048/private.der");
const ROOT: &[u8] = include_bytes!("../flights/rsa2048/ca.der");
const LEAF: &[u8] = include_bytes!("../flights/rsa2048/server-leaf.der");
const INTER: &[u8] = include_bytes!("../flights/rsa2048/server-intermediate.der");

fn verify_accepts() -> Outcome {
    // RSA-2048 root -> intermediate -> leaf, as AWS IoT presents it (with and without
    // the root appended, intermediate in either position).
    verify_server_chain(ROOT, &[LEAF, INTER], ENDPOINT, Some(NOW)).map_err(|_| "leaf+inter")?;
    verify_server_chain(ROOT, &[LEAF, INTER, ROOT], ENDPOINT, Some(NOW))
        .map_err(|_| "leaf+inter+root")
}

fn verify_refuses() -> Outcome {
    let expect = |r: Result<(), VerifyError>, want: VerifyError| r == Err(want);
    check(
        expect(
            verify_server_chain(
                ROOT,
                &[LEAF, INTER],
                "other-ats.iot.us-east-1.amazonaws.com",
                Some(NOW),
            ),
            VerifyError::NameMismatch,
        ),
        "wrong name accepted",
    )?;
    // 2036-01-01: after the chain's notAfter.
    check(
        expect(
            verify_server_chain(ROOT, &[LEAF, INTER], ENDPOINT, Some(2_082_758_400)),
            VerifyError::CertificateExpired,
        ),
        "expired chain accepted",
    )?;
    // Another PKI's root did not issue this chain.
    check(
        expect(
            verify_server_chain(P256_CA, &[LEAF, INTER], ENDPOINT, Some(NOW)),
            VerifyError::UnknownCa,
        ),
        "untrusted CA accepted",
    )?;
    check(
        verify_server_chain(ROOT, &[LEAF], ENDPOINT, Some(NOW)).is_err(),
        "missing intermediate accepted",
    )
}

fn key_p256() -> Outcome {
    check(detect_key_format(P256_KEY).is_ok(), "format not detected")?;
    let key = DeviceKey::from_der(P256_KEY).map_err(|_| "refused")?;
    check(key.algorithm() == KeyAlgorithm::P256, "not P-256")?;
    check(
        DeviceKey::from_der(&P256_KEY[..60]).is_err(),
        "truncated key accepted",
    )
}

fn key_rsa() -> Outcome {
    check(detect_key_format(RSA_KEY).is_ok(), "format not detected")?;
    let key = DeviceKey::from_der(RSA_KEY).map_err(|_| "refused")?;
    check(key.algorithm() == KeyAlgorithm::Rsa(2048), "not RSA-2048")?;
    check(
        DeviceKey::from_der(&RSA_KEY[..600]).is_err(),
        "truncated key accepted",
    )
}
