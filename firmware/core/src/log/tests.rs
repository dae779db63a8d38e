use super::*;
use crate::config::{self, DeviceConfig};
use proptest::prelude::*;
use std::string::String;
use std::vec::Vec;

fn parse(s: &str) -> Line {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn err(s: &str) -> ParseError {
    s.parse::<Line>().expect_err(s)
}

fn payload_of(line: &Line) -> Vec<u8> {
    line.payload_bytes()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

const DESIGN_EXAMPLE: &str = r#"I (     812) boot: firmware=0.1.0 board=virtual client_id=ESPthing
I (     815) creds: cert=812B key=121B ca=837B source=flash
I (    1310) time: synced epoch=1795000000
I (    2900) mqtt: connected endpoint=localhost:8883 session=new handshake_ms=38
I (    2910) mqtt: subscribed topic=inTopic qos=1
I (    4910) publish: topic=outTopic seq=1 bytes=30 payload={"message": "hello world #1"}
I (    5100) inbound: topic=inTopic bytes=5 payload=hello
W (    9000) mqtt: disconnected reason=peer-closed
I (    9000) mqtt: backoff attempt=1 delay_ms=734
E (   11000) tls: handshake failed error=certificate-expired
I (   12000) heap: free=41234 min_free=39000"#;

#[test]
fn the_design_example_parses_and_prints_back_exactly() {
    for text in DESIGN_EXAMPLE.lines() {
        let line = parse(text);
        assert_eq!(line.to_string(), text);
    }
}

#[test]
fn parsed_form_is_convenient() {
    let line = parse("E (   11000) tls: handshake failed error=certificate-expired\r\n");
    assert_eq!(line.level, Level::Error);
    assert_eq!(line.uptime_ms, 11000);
    assert_eq!(line.tag(), "tls");
    assert_eq!(line.message(), "handshake failed");
    assert_eq!(line.words().collect::<Vec<_>>(), ["handshake", "failed"]);
    assert_eq!(line.field("error"), Some("certificate-expired"));
    assert_eq!(
        line.field_as::<TlsError>("error"),
        Some(TlsError::CertificateExpired)
    );
    assert_eq!(line.payload(), None);

    let line = parse(
        r#"I (    4910) publish: topic=outTopic seq=1 bytes=30 payload={"message": "a=b c"}"#,
    );
    assert_eq!(line.message(), "");
    assert_eq!(
        line.fields().collect::<Vec<_>>(),
        [("topic", "outTopic"), ("seq", "1"), ("bytes", "30")]
    );
    assert_eq!(line.field_as::<u32>("seq"), Some(1));
    assert_eq!(line.payload(), Some(r#"{"message": "a=b c"}"#));
    assert!(!line.is_truncated());

    // ESP-IDF's own unpadded uptime is accepted too.
    assert_eq!(parse("I (812) boot:").uptime_ms, 812);
    assert_eq!(parse("I (812) boot:").to_string(), "I (     812) boot:");
    // Values keep any '=' after the first.
    assert_eq!(parse("I (1) x: k=a=b").field("k"), Some("a=b"));
    assert_eq!(parse("I (1) x: k=").field("k"), Some(""));
    assert_eq!(parse("I (1) x: payload=").payload(), Some(""));
    assert_eq!(parse("I (1) x: payload=  ").payload(), Some("  "));
}

#[test]
fn parse_errors_name_what_is_wrong() {
    use ParseErrorKind as K;
    assert_eq!(err("").kind, K::Empty);
    assert_eq!(err("X (1) a: b").kind, K::BadLevel);
    assert_eq!(err("I(1) a: b").kind, K::Expected("\" (\" after the level"));
    assert_eq!(err("I (1 a: b").kind, K::Expected("')' after the uptime"));
    assert_eq!(err("I () a:").kind, K::BadUptime);
    assert_eq!(err("I (12x) a:").kind, K::BadUptime);
    assert_eq!(err("I (99999999999999999999) a:").kind, K::BadUptime);
    assert_eq!(err("I (1)a:").kind, K::Expected("' ' after ')'"));
    assert_eq!(err("I (1) a").kind, K::Expected("':' after the tag"));
    assert!(matches!(err("I (1) a b: c").kind, K::BadTag(_)));
    assert!(matches!(err("I (1) : c").kind, K::BadTag(_)));
    assert_eq!(
        err("I (1) a:b").kind,
        K::Expected("' ' after the tag's ':'")
    );
    assert!(matches!(err("I (1) a: x  y").kind, K::BadWord(_)));
    assert!(matches!(err("I (1) a: x ").kind, K::BadWord(_)));
    assert!(matches!(err("I (1) a: Key=1").kind, K::BadKey(_)));
    assert!(matches!(err("I (1) a: =1").kind, K::BadKey(_)));
    assert_eq!(err("I (1) a: k=1 word").kind, K::TextAfterFields);
    let e = err("I (1) a: x\ty");
    assert_eq!((e.kind, e.at), (K::NonPrintable, 10));
    let many = format!("I (1) a:{}", " k=1".repeat(MAX_FIELDS + 1));
    assert_eq!(err(&many).kind, K::TooManyFields);
    let long = format!("I (1) a: payload={}", "x".repeat(MAX_BODY));
    assert_eq!(err(&long).kind, K::TooLong("body"));
    let e = err("I (1) a: k=1 word");
    assert_eq!(
        e.to_string(),
        "log line, at byte 13: free text after the first field"
    );
}

#[test]
fn builder_enforces_the_grammar() {
    let mut line = Line::new(Level::Info, 1, "t").unwrap();
    line.field_display("k", 1).unwrap();
    assert_eq!(line.message_text("late"), Err(BuildError::OutOfOrder));
    assert!(matches!(
        line.field_display("payload", 1),
        Err(BuildError::Invalid(_))
    ));
    assert!(matches!(
        line.field_display("v", "a b"),
        Err(BuildError::Invalid(_))
    ));
    line.payload_text("x y").unwrap();
    assert_eq!(line.field_display("k2", 2), Err(BuildError::OutOfOrder));
    // Failed calls left the line unchanged.
    assert_eq!(line.to_string(), "I (       1) t: k=1 payload=x y");
    assert!(Line::new(Level::Info, 1, "no space").is_err());
    assert!(Line::new(Level::Info, 1, "seventeen-bytes-x").is_err());
}

#[test]
fn payload_is_escaped_and_round_trips() {
    let raw = b"bin\x00\xff\\ \"q\" \n end";
    let line = Line::inbound(5100, "inTopic", raw);
    let text = line.to_string();
    assert_eq!(
        text,
        r#"I (    5100) inbound: topic=inTopic bytes=16 payload=bin\x00\xff\\ "q" \x0a end"#
    );
    let back = parse(&text);
    assert_eq!(back, line);
    assert_eq!(payload_of(&back), raw);
    assert_eq!(back.payload_size(), Some(raw.len()));
}

#[test]
fn truncation_keeps_the_original_size_and_says_so() {
    let raw = [0xabu8; 10_000];
    let line = Line::inbound(1, "inTopic", &raw);
    let text = line.to_string();
    assert!(text.len() < 400, "{}", text.len());
    let back = parse(&text);
    assert_eq!(back.payload_size(), Some(10_000));
    assert!(back.is_truncated());
    assert!(back.payload().unwrap().ends_with(TRUNCATION_MARKER));
    assert!(back.payload().unwrap().len() <= MAX_PAYLOAD);
    let kept = payload_of(&back);
    assert!(!kept.is_empty() && raw.starts_with(&kept));
    // A payload that fits is not marked.
    assert!(!Line::inbound(1, "t", &[b'x'; 100]).is_truncated());
}

#[test]
fn topics_with_spaces_stay_one_field() {
    let line = Line::inbound(1, "my topic/é", b"x");
    let back = parse(&line.to_string());
    let topic: Vec<u8> = back
        .field_bytes("topic")
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(topic, "my topic/é".as_bytes());
    assert_eq!(back.payload(), Some("x"));
}

fn max_str(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

#[test]
fn every_constructor_fits_its_worst_case() {
    // Worst case: every outside string at its limit and made of bytes that escape to 4.
    let topic = max_str('\u{7f}', config::MAX_TOPIC);
    let host = max_str('\u{7f}', config::MAX_HOST);
    let id = max_str('\u{7f}', config::MAX_CLIENT_ID);
    let payload = vec![0u8; 200_000];
    let mut config = DeviceConfig::new("h", "c").unwrap();
    config.endpoint.host = config::set_str("h", &host).unwrap();
    config.pub_topic = config::set_str("t", &topic).unwrap();
    config.sub_topic = config::set_str("t", &topic).unwrap();
    let lines = [
        (Line::boot(u64::MAX, &id, &id, &id), 3),
        (Line::config_loaded(u64::MAX, &config), 6),
        (Line::publish(u64::MAX, &topic, u32::MAX, &payload), 4),
        (Line::inbound(u64::MAX, &topic, &payload), 3),
        (
            Line::mqtt_connected(u64::MAX, &host, u16::MAX, true, Some(u32::MAX)),
            3,
        ),
        (Line::mqtt_subscribed(u64::MAX, &topic, 1), 2),
        (
            Line::publish_retry(u64::MAX, &topic, u32::MAX, u16::MAX, u32::MAX),
            4,
        ),
    ];
    for (line, fields) in lines {
        assert_eq!(line.fields().count(), fields, "{line}");
        assert_eq!(parse(&line.to_string()), line);
    }
    let line = Line::inbound(0, &topic, &payload);
    assert!(line.is_truncated());
    assert!(line.field("topic").unwrap().ends_with(TRUNCATION_MARKER));
}

#[test]
fn constructors_print_the_documented_lines() {
    use core::net::{IpAddr, Ipv4Addr};
    let cases = [
        (
            Line::boot(812, "0.1.0", "virtual", "ESPthing"),
            "I (     812) boot: firmware=0.1.0 board=virtual client_id=ESPthing",
        ),
        (
            Line::creds(815, 812, 121, 837, CredSource::Flash),
            "I (     815) creds: cert=812B key=121B ca=837B source=flash",
        ),
        (
            Line::time_synced(1310, 1_795_000_000),
            "I (    1310) time: synced epoch=1795000000",
        ),
        (
            Line::mqtt_connected(2900, "localhost", 8883, false, Some(38)),
            "I (    2900) mqtt: connected endpoint=localhost:8883 session=new handshake_ms=38",
        ),
        (
            Line::mqtt_subscribed(2910, "inTopic", 1),
            "I (    2910) mqtt: subscribed topic=inTopic qos=1",
        ),
        (
            Line::publish(4910, "outTopic", 1, br#"{"message": "hello world #1"}"#),
            r#"I (    4910) publish: topic=outTopic seq=1 bytes=29 payload={"message": "hello world #1"}"#,
        ),
        (
            Line::inbound(5100, "inTopic", b"hello"),
            "I (    5100) inbound: topic=inTopic bytes=5 payload=hello",
        ),
        (
            Line::mqtt_disconnected(9000, DisconnectReason::PeerClosed),
            "W (    9000) mqtt: disconnected reason=peer-closed",
        ),
        (
            Line::backoff(9000, Stage::Mqtt, 1, 734),
            "I (    9000) mqtt: backoff attempt=1 delay_ms=734",
        ),
        (
            Line::connect_failed(11000, ConnectFailure::Tls(TlsError::CertificateExpired)),
            "E (   11000) tls: handshake failed error=certificate-expired",
        ),
        (
            Line::connect_failed(11000, ConnectFailure::Mqtt(ConnectError::Refused)),
            "E (   11000) mqtt: connect failed error=connack-refused",
        ),
        (
            Line::rsa_accelerator_fault(11000),
            "W (   11000) tls: rsa accelerator signature failed its check fallback=software",
        ),
        (
            Line::heap(12000, 41234, 39000),
            "I (   12000) heap: free=41234 min_free=39000",
        ),
        (
            Line::heap_report(
                12000,
                &HeapReport {
                    free: 41234,
                    min_free: 39000,
                    used: 8000,
                    peak: 12000,
                    tls_buffers: 37381,
                    mqtt_buffers: 4096,
                },
            ),
            "I (   12000) heap: free=41234 min_free=39000 used=8000 peak=12000 tls_buf=37381 mqtt_buf=4096",
        ),
        (
            Line::wifi_up(700, IpAddr::V4(Ipv4Addr::new(192, 168, 1, 23))),
            "I (     700) wifi: up ip=192.168.1.23",
        ),
        (
            Line::creds_failed(5, FlashFile::Key, LoadError::Missing),
            "E (       5) creds: load failed file=/private.der error=missing",
        ),
        (
            Line::config_failed(
                5,
                ConfigFailure::Invalid(DeviceConfig::from_json(b"{").unwrap_err()),
            ),
            "E (       5) config: invalid field=config.json error=syntax",
        ),
        (
            Line::publish_skipped(5, 3, SkipReason::Late),
            "W (       5) publish: skipped slots=3 reason=late",
        ),
        (
            Line::shutdown(5, ShutdownReason::Signal),
            "I (       5) shutdown: reason=signal",
        ),
    ];
    for (line, text) in cases {
        assert_eq!(line.to_string(), text);
        assert_eq!(parse(text), line);
    }
}

#[test]
fn the_config_line_never_shows_the_wifi_password() {
    let mut c = DeviceConfig::new("localhost", "ESPthing").unwrap();
    c.wifi.password = config::set_str("p", "hunter2-secret").unwrap();
    let text = Line::config_loaded(1, &c).to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("endpoint=localhost:8883"), "{text}");
}

#[test]
fn slugs_parse_back() {
    for r in DisconnectReason::ALL {
        assert_eq!(r.as_str().parse::<DisconnectReason>(), Ok(*r));
    }
    for e in TlsError::ALL {
        assert_eq!(e.as_str().parse::<TlsError>(), Ok(*e));
    }
    for s in Stage::ALL {
        assert!(Line::new(Level::Info, 0, s.as_str()).is_ok());
    }
    assert_eq!("nope".parse::<TlsError>(), Err(UnknownSlug));
}

fn arb_line() -> impl Strategy<Value = Line> {
    let level = proptest::sample::select(Level::ALL.to_vec());
    let tag = "[A-Za-z0-9_.-]{1,16}";
    let words = proptest::collection::vec("[!-<>-~]{1,10}", 0..4);
    let fields = proptest::collection::vec(("[a-z0-9_]{1,10}", "[!-~]{0,20}"), 0..6);
    let payload = prop_oneof![
        Just(None),
        proptest::collection::vec(any::<u8>(), 0..400).prop_map(Some),
    ];
    (level, any::<u64>(), tag, words, fields, payload).prop_filter_map(
        "reserved key",
        |(level, uptime, tag, words, fields, payload)| {
            let mut line = Line::new(level, uptime, &tag).ok()?;
            if !words.is_empty() {
                line.message_text(&words.join(" ")).ok()?;
            }
            for (k, v) in &fields {
                if k == PAYLOAD_KEY {
                    return None;
                }
                line.field_display(k, v).ok()?;
            }
            if let Some(p) = payload {
                line.payload_raw(&p).ok()?;
            }
            Some(line)
        },
    )
}

proptest! {
    #[test]
    fn display_then_parse_is_identity(line in arb_line()) {
        let text = line.to_string();
        let back: Line = text.parse().map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(&back, &line);
        prop_assert_eq!(back.to_string(), text);
    }

    #[test]
    fn any_payload_and_topic_round_trip(
        topic in proptest::collection::vec(any::<u8>(), 0..300),
        payload in proptest::collection::vec(any::<u8>(), 0..2000),
        uptime in any::<u64>(),
    ) {
        let topic = String::from_utf8_lossy(&topic);
        let line = Line::inbound(uptime, &topic, &payload);
        let text = line.to_string();
        prop_assert!(text.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        let back: Line = text.parse().map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(&back, &line);
        prop_assert_eq!(back.payload_size(), Some(payload.len()));
        let kept = payload_of(&back);
        if back.is_truncated() {
            prop_assert!(payload.starts_with(&kept) && kept.len() < payload.len());
        } else {
            prop_assert_eq!(kept, payload);
        }
    }

    #[test]
    fn parse_never_panics_and_reparses_to_itself(text in "[EWIDV] \\([ 0-9]{0,12}\\) [a-z:]{0,6}:? ?[ -~]{0,80}") {
        if let Ok(line) = text.parse::<Line>() {
            let again: Line = line.to_string().parse().unwrap();
            prop_assert_eq!(again, line);
        }
    }
}
