use super::*;

fn sample() -> DeviceConfig {
    let mut c = DeviceConfig::new("localhost", "ESPthing").unwrap();
    c.wifi.ssid = set_str("wifi.ssid", "bench").unwrap();
    c.wifi.password = set_str("wifi.password", "p\"a\\ss").unwrap();
    c
}

#[test]
fn round_trips_through_serde_json_writer() {
    let c = sample();
    let json = serde_json::to_string_pretty(&c).unwrap();
    assert_eq!(DeviceConfig::from_json(json.as_bytes()).unwrap(), c);
}

#[test]
fn minimal_config_takes_tutorial_defaults() {
    let c =
        DeviceConfig::from_json(br#"{"endpoint":{"host":"h"},"client_id":"ESPthing"}"#).unwrap();
    assert_eq!(c.endpoint.port, 8883);
    assert_eq!(c.pub_topic.as_str(), "outTopic");
    assert_eq!(c.sub_topic.as_str(), "inTopic");
    assert_eq!(c.period_ms, 2000);
    assert_eq!(c.ntp.port, 123);
    assert_eq!(c.ntp.resync_s, 3600);
}

#[test]
fn ntp_resync_period_is_read_and_held_to_its_range() {
    let c = DeviceConfig::from_json(
        br#"{"endpoint":{"host":"h"},"client_id":"c","ntp":{"host":"n","resync_s":600}}"#,
    )
    .unwrap();
    assert_eq!(c.ntp.resync_s, 600);
    for bad in ["59", "86401", "0"] {
        let json = format!(
            r#"{{"endpoint":{{"host":"h"}},"client_id":"c","ntp":{{"host":"n","resync_s":{bad}}}}}"#
        );
        let e = DeviceConfig::from_json(json.as_bytes()).unwrap_err();
        assert_eq!(e.field, "ntp.resync_s", "{bad}");
        assert_eq!(e.to_string(), "ntp.resync_s: must be between 60 and 86400");
    }
}

#[test]
fn errors_name_the_field() {
    let e = DeviceConfig::from_json(br#"{"endpoint":{"host":"h"},"client_id":""}"#).unwrap_err();
    assert_eq!(e.field, "client_id");
    let e = DeviceConfig::from_json(
        br#"{"endpoint":{"host":"h"},"client_id":"c","pub_topic":"a/b/c/d/e/f/g/h/i"}"#,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "pub_topic: more than 7 '/' (AWS IoT limit)");
    let e = DeviceConfig::from_json(br#"{"endpoint":{"host":"h"},"client_id":"c","qos":2}"#)
        .unwrap_err();
    assert_eq!(e.field, "qos");
    let e =
        DeviceConfig::from_json(br#"{"endpoint":{"host":"h"},"client_id":"c","x":1}"#).unwrap_err();
    assert_eq!(e.field, "config.json");
    let e = DeviceConfig::from_json(br#"{"endpoint":{"host":"h"#).unwrap_err();
    assert_eq!(e.problem, Problem::Syntax("truncated JSON"));
}

#[test]
fn client_ids_the_mqtt_client_cannot_hold_are_refused() {
    let id = "a".repeat(DEVICE_MAX_CLIENT_ID + 1);
    let e = DeviceConfig::new("h", &id).unwrap_err();
    assert_eq!(e.to_string(), "client_id: longer than 64 bytes");
    assert!(DeviceConfig::new("h", &id[1..]).is_ok());
}

#[test]
fn debug_never_shows_the_wifi_password() {
    let c = sample();
    let shown = format!("{c:?}");
    assert!(!shown.contains("ss\""), "{shown}");
    assert!(shown.contains("***"));
}

proptest::proptest! {
    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = DeviceConfig::from_json(&bytes);
    }
}

/// `{"endpoint":{"host":"h"},"client_id":"c", <extra>}`
fn with(extra: &str) -> Result<DeviceConfig, ConfigError> {
    let json = format!(r#"{{"endpoint":{{"host":"h"}},"client_id":"c",{extra}}}"#);
    DeviceConfig::from_json(json.as_bytes())
}

fn blame(result: Result<DeviceConfig, ConfigError>) -> (&'static str, Problem) {
    let e = result.unwrap_err();
    (e.field, e.problem)
}

#[test]
fn values_serde_cannot_hold_name_their_field_and_rule() {
    let missing = DeviceConfig::from_json(br#"{"endpoint":{"host":"h"}}"#);
    assert_eq!(blame(missing), ("client_id", Problem::Missing));
    let long_id = format!(
        r#"{{"endpoint":{{"host":"h"}},"client_id":"{}"}}"#,
        "x".repeat(200)
    );
    assert_eq!(
        blame(DeviceConfig::from_json(long_id.as_bytes())),
        ("client_id", Problem::TooLong { max: 64 })
    );
    let port =
        DeviceConfig::from_json(br#"{"endpoint":{"host":"h","port":70000},"client_id":"c"}"#);
    assert_eq!(
        blame(port),
        ("endpoint.port", Problem::OutOfRange { min: 1, max: 65535 })
    );
    assert_eq!(
        blame(with(r#""period_ms":-2000"#)),
        (
            "period_ms",
            Problem::OutOfRange {
                min: 100,
                max: 3_600_000
            }
        )
    );
    assert_eq!(
        blame(with(r#""keepalive_s":70000"#)),
        ("keepalive_s", Problem::OutOfRange { min: 30, max: 1200 })
    );
    let e = with(r#""keepalive_s":70000"#).unwrap_err();
    assert_eq!(e.to_string(), "keepalive_s: must be between 30 and 1200");
}

#[test]
fn the_log_line_names_the_field_and_rule() {
    use crate::log::{ConfigFailure, Line};
    let line = |r: Result<DeviceConfig, ConfigError>| {
        Line::config_failed(5, ConfigFailure::Invalid(r.unwrap_err())).to_string()
    };
    assert_eq!(
        line(DeviceConfig::from_json(br#"{"endpoint":{"host":"h"}}"#)),
        "E (       5) config: invalid field=client_id error=missing"
    );
    assert_eq!(
        line(with(r#""period_ms":-2000"#)),
        "E (       5) config: invalid field=period_ms error=out-of-range"
    );
    assert_eq!(
        line(with(r#""sub_topic":"in/#/x""#)),
        "E (       5) config: invalid field=sub_topic error=misplaced-wildcard"
    );
}

#[test]
fn wrong_kinds_of_value_name_their_field() {
    let wrong = |field, extra: &str| {
        let (f, p) = blame(with(extra));
        assert_eq!(f, field, "{extra}");
        assert!(matches!(p, Problem::WrongType { .. }), "{extra}: {p:?}");
    };
    wrong("period_ms", r#""period_ms":"2000""#);
    wrong("period_ms", r#""period_ms":2000.5"#);
    wrong("qos", r#""qos":null"#);
    wrong("qos", r#""qos":true"#);
    wrong("pub_topic", r#""pub_topic":7"#);
    wrong("ntp", r#""ntp":5"#);
    wrong("ntp.port", r#""ntp":{"host":"n","port":"123"}"#);
    let e = DeviceConfig::from_json(br#"{"endpoint":"h","client_id":"c"}"#).unwrap_err();
    assert_eq!(e.to_string(), "endpoint: expected an object");
    assert_eq!(
        blame(with(r#""period_ms":1e400"#)),
        (
            "period_ms",
            Problem::WrongType {
                expected: "a whole number"
            }
        )
    );
}

#[test]
fn missing_unknown_and_repeated_keys_are_named() {
    assert_eq!(
        blame(DeviceConfig::from_json(br#"{"client_id":"c"}"#)),
        ("endpoint", Problem::Missing)
    );
    assert_eq!(
        blame(DeviceConfig::from_json(
            br#"{"endpoint":{},"client_id":"c"}"#
        )),
        ("endpoint.host", Problem::Missing)
    );
    assert_eq!(
        blame(with(r#""wifi":{"password":"p"}"#)),
        ("wifi.ssid", Problem::Missing)
    );
    assert_eq!(
        blame(DeviceConfig::from_json(
            br#"{"endpoint":{"host":"h","colour":1},"client_id":"c"}"#
        )),
        ("endpoint", Problem::UnknownField)
    );
    assert_eq!(
        blame(with(r#""qos":0,"qos":1"#)),
        ("qos", Problem::Duplicate)
    );
}

#[test]
fn long_strings_are_too_long_not_syntax_errors() {
    // Longer than the unescape buffer once unescaped.
    let escaped = "\\u0041".repeat(300);
    assert_eq!(
        blame(with(&format!(r#""pub_topic":"{escaped}""#))),
        ("pub_topic", Problem::TooLong { max: 256 })
    );
    assert_eq!(
        blame(with(&format!(r#""wifi":{{"ssid":"{}"}}"#, "s".repeat(33)))),
        ("wifi.ssid", Problem::TooLong { max: 32 })
    );
    // Escapes inside a field still unescape.
    let c = with(r#""pub_topic":"a\/b\u00e9""#).unwrap();
    assert_eq!(c.pub_topic.as_str(), "a/bé");
}

#[test]
fn subscribe_filters_follow_mqtt_wildcard_rules() {
    for bad in ["in/#/x", "in/a#", "in/+x", "#/x", "a/b+/c"] {
        assert_eq!(
            check_topic(bad, TopicUse::Subscribe),
            Err(Problem::MisplacedWildcard),
            "{bad}"
        );
    }
    for good in ["#", "+", "in/#", "+/x/#", "a/+/b", "in", "a//b"] {
        assert_eq!(check_topic(good, TopicUse::Subscribe), Ok(()), "{good}");
    }
    assert_eq!(
        check_topic("out/+", TopicUse::Publish),
        Err(Problem::Wildcard)
    );
    assert_eq!(
        blame(with(r#""sub_topic":"in/\u0000""#)),
        ("sub_topic", Problem::NulCharacter)
    );
    assert_eq!(
        check_topic(&"t".repeat(257), TopicUse::Publish),
        Err(Problem::TooLong { max: 256 })
    );
}

#[test]
fn reserved_topics_only_as_aws_documents_them() {
    use TopicUse::{Publish, Subscribe};
    let ok = [
        ("$aws/things/ESPthing/shadow/update", Publish),
        ("$aws/things/ESPthing/shadow/update/accepted", Subscribe),
        ("$aws/rules/my_rule", Publish),
        ("$aws/events/presence/connected/+", Subscribe),
    ];
    for (topic, usage) in ok {
        assert_eq!(check_topic(topic, usage), Ok(()), "{topic} {usage:?}");
    }
    let reserved = [
        ("$SYS/broker/load", Subscribe),
        ("$mine/out", Publish),
        ("$aws/rules/my_rule/#", Subscribe),
        ("$aws/events/presence/connected/x", Publish),
        ("$aws/unknown/x", Publish),
        ("$aws/things", Subscribe),
        ("$aws", Publish),
    ];
    for (topic, usage) in reserved {
        assert_eq!(
            check_topic(topic, usage),
            Err(Problem::Reserved),
            "{topic} {usage:?}"
        );
    }
}

#[test]
fn basic_ingest_prefix_slashes_do_not_count() {
    let seven_more = "$aws/rules/r/a/b/c/d/e/f/g/h";
    assert_eq!(check_topic(seven_more, TopicUse::Publish), Ok(()));
    assert_eq!(
        check_topic(&format!("{seven_more}/h"), TopicUse::Publish),
        Err(Problem::TooManySlashes)
    );
    assert_eq!(
        check_topic("a/b/c/d/e/f/g/h/i", TopicUse::Publish),
        Err(Problem::TooManySlashes)
    );
}

proptest::proptest! {
    // Whatever the parser accepts meets every rule `validate` applies.
    #[test]
    fn accepted_configs_are_valid(
        port in proptest::num::i64::ANY,
        period in proptest::num::i64::ANY,
        topic in "[a-z+#/$]{0,12}",
    ) {
        let json = format!(
            r#"{{"endpoint":{{"host":"h","port":{port}}},"client_id":"c","period_ms":{period},"sub_topic":"{topic}"}}"#
        );
        if let Ok(config) = DeviceConfig::from_json(json.as_bytes()) {
            proptest::prop_assert!(config.validate().is_ok());
            proptest::prop_assert_eq!(i64::from(config.endpoint.port), port);
        }
    }
}

#[test]
fn a_host_with_a_scheme_path_or_space_is_not_a_host() {
    for bad in ["https://example.com", "example.com/path", "exa mple.com"] {
        let mut config = DeviceConfig::new("example.com", "thing").unwrap();
        config.endpoint.host = bad.try_into().unwrap();
        let e = config.validate().unwrap_err();
        assert_eq!(
            (e.field, e.problem),
            ("endpoint.host", Problem::NotAHost),
            "{bad}"
        );
        assert!(e.to_string().contains("no scheme"), "{e}");
    }
    for good in [
        "abc-ats.iot.eu-west-1.amazonaws.com",
        "127.0.0.1",
        "::1",
        "my_host",
    ] {
        let mut config = DeviceConfig::new("example.com", "thing").unwrap();
        config.ntp.host = good.try_into().unwrap();
        assert!(config.validate().is_ok(), "{good}");
    }
}
