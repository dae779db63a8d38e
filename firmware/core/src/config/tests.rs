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
