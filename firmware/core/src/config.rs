//! The device configuration, stored as `/config.json` in the flash image.
//!
//! This is the one definition of the format: the `certs` tool writes it (with
//! `serde_json`), the firmware and the virtual device read it with [`DeviceConfig::from_json`]
//! (with `serde-json-core`, no allocator). Limits follow AWS IoT Core's quotas so a
//! configuration that parses here is one AWS will accept; topics are held to AWS's topic
//! rules ([`check_topic`]).
//!
//! Every error names the field (`client_id`, `endpoint.port`) and the rule it broke
//! ([`Problem`]: missing, too long, out of range, wrong type...); only JSON that is not
//! valid at all is blamed on `config.json`.
//!
//! ```json
//! {
//!   "wifi": { "ssid": "bench-ap", "password": "..." },
//!   "endpoint": { "host": "xxxxxxxxxxxxxx-ats.iot.us-east-1.amazonaws.com", "port": 8883 },
//!   "ntp": { "host": "pool.ntp.org", "port": 123, "resync_s": 3600 },
//!   "client_id": "ESPthing",
//!   "pub_topic": "outTopic",
//!   "sub_topic": "inTopic",
//!   "period_ms": 2000,
//!   "keepalive_s": 60,
//!   "qos": 1
//! }
//! ```

use core::fmt;

use heapless::String;
use serde::{Deserialize, Serialize};

mod parse;
mod topic;

pub use topic::{TopicUse, check_topic};

/// Longest WiFi SSID (IEEE 802.11).
pub const MAX_SSID: usize = 32;
/// Longest WPA2 passphrase.
pub const MAX_PASSWORD: usize = 64;
/// Longest DNS name.
pub const MAX_HOST: usize = 253;
/// AWS IoT Core's client id limit, in bytes.
pub const MAX_CLIENT_ID: usize = 128;
/// The firmware's own limit: minimq 0.13 holds at most 64 bytes of client id, so a longer
/// one (which AWS would accept) could never connect. Refused when the image is made.
pub const DEVICE_MAX_CLIENT_ID: usize = 64;
/// AWS IoT Core's topic limit, in bytes.
pub const MAX_TOPIC: usize = 256;
/// AWS IoT Core allows at most 7 forward slashes in a topic.
pub const MAX_TOPIC_SLASHES: usize = 7;
/// AWS IoT Core clamps keep-alive to this range (seconds).
pub const KEEPALIVE_RANGE_S: core::ops::RangeInclusive<u16> = 30..=1200;
/// Accepted publish periods (milliseconds).
pub const PERIOD_RANGE_MS: core::ops::RangeInclusive<u32> = 100..=3_600_000;
/// QoS 2 is refused by AWS IoT Core.
pub const QOS_RANGE: core::ops::RangeInclusive<u8> = 0..=1;
/// Largest `/config.json` the device reads.
pub const MAX_CONFIG_JSON: usize = 2048;

pub const DEFAULT_MQTT_PORT: u16 = 8883;
pub const DEFAULT_NTP_HOST: &str = "pool.ntp.org";
pub const DEFAULT_NTP_PORT: u16 = 123;
/// How often the device re-syncs its clock once synced, in seconds.
pub const DEFAULT_NTP_RESYNC_S: u32 = 3600;
/// Accepted `ntp.resync_s`: at least a minute (public NTP pools throttle faster
/// clients), at most a day (a crystal drifts by seconds a day, enough to fail TLS
/// validity checks near a certificate's edges).
pub const NTP_RESYNC_RANGE_S: core::ops::RangeInclusive<u32> = 60..=86_400;
pub const DEFAULT_PUB_TOPIC: &str = "outTopic";
pub const DEFAULT_SUB_TOPIC: &str = "inTopic";
pub const DEFAULT_PERIOD_MS: u32 = 2000;
pub const DEFAULT_KEEPALIVE_S: u16 = 60;
pub const DEFAULT_QOS: u8 = 1;

/// WiFi station credentials. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Wifi {
    pub ssid: String<MAX_SSID>,
    #[serde(default)]
    pub password: String<MAX_PASSWORD>,
}

impl fmt::Debug for Wifi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wifi")
            .field("ssid", &self.ssid)
            .field("password", &"***")
            .finish()
    }
}

/// The MQTT broker: AWS IoT Core's device data endpoint, or the mock broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub host: String<MAX_HOST>,
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
}

/// The SNTP server the device syncs its clock with, and how often it re-syncs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NtpServer {
    pub host: String<MAX_HOST>,
    #[serde(default = "default_ntp_port")]
    pub port: u16,
    /// Seconds between clock re-syncs once the clock is set.
    #[serde(default = "default_ntp_resync_s")]
    pub resync_s: u32,
}

impl Default for NtpServer {
    fn default() -> Self {
        Self {
            host: bounded(DEFAULT_NTP_HOST),
            port: DEFAULT_NTP_PORT,
            resync_s: DEFAULT_NTP_RESYNC_S,
        }
    }
}

/// Everything a device needs besides its credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    #[serde(default)]
    pub wifi: Wifi,
    pub endpoint: Endpoint,
    #[serde(default)]
    pub ntp: NtpServer,
    pub client_id: String<MAX_CLIENT_ID>,
    #[serde(default = "default_pub_topic")]
    pub pub_topic: String<MAX_TOPIC>,
    #[serde(default = "default_sub_topic")]
    pub sub_topic: String<MAX_TOPIC>,
    #[serde(default = "default_period_ms")]
    pub period_ms: u32,
    #[serde(default = "default_keepalive_s")]
    pub keepalive_s: u16,
    #[serde(default = "default_qos")]
    pub qos: u8,
}

fn default_mqtt_port() -> u16 {
    DEFAULT_MQTT_PORT
}
fn default_ntp_port() -> u16 {
    DEFAULT_NTP_PORT
}
fn default_ntp_resync_s() -> u32 {
    DEFAULT_NTP_RESYNC_S
}
fn default_pub_topic() -> String<MAX_TOPIC> {
    bounded(DEFAULT_PUB_TOPIC)
}
fn default_sub_topic() -> String<MAX_TOPIC> {
    bounded(DEFAULT_SUB_TOPIC)
}
fn default_period_ms() -> u32 {
    DEFAULT_PERIOD_MS
}
fn default_keepalive_s() -> u16 {
    DEFAULT_KEEPALIVE_S
}
fn default_qos() -> u8 {
    DEFAULT_QOS
}

/// A compile-time default that is known to fit.
fn bounded<const N: usize>(s: &str) -> String<N> {
    let mut out = String::new();
    // Defaults are short constants; a failure here is a programming error caught by tests.
    let _ = out.push_str(s);
    out
}

/// What is wrong with a configuration, naming the field at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigError {
    /// JSON path of the field (`endpoint.host`), or `config.json` for a syntax error.
    pub field: &'static str,
    pub problem: Problem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Not valid JSON (or a bad string escape in a field).
    Syntax(&'static str),
    /// A required field is absent.
    Missing,
    /// A value of the wrong JSON kind (a string for a number, a fraction for a count...).
    WrongType {
        expected: &'static str,
    },
    /// The object has a key the format does not define.
    UnknownField,
    /// The same key twice in one object.
    Duplicate,
    Empty,
    TooLong {
        max: usize,
    },
    TooManySlashes,
    /// A wildcard in a topic name (publish topic).
    Wildcard,
    /// A topic filter with `#` not alone as its last level, or `+` not alone in a level.
    MisplacedWildcard,
    /// A topic containing U+0000, which MQTT forbids.
    NulCharacter,
    /// A `$` topic AWS IoT does not offer in this direction.
    Reserved,
    OutOfRange {
        min: u32,
        max: u32,
    },
    /// Not a host name or IP address: a scheme (`https://`), a path or spaces.
    NotAHost,
}

impl Problem {
    /// The stable slug of this problem in the serial log (`error=too-long`).
    pub const fn slug(&self) -> &'static str {
        match self {
            Self::Syntax(_) => "syntax",
            Self::Missing => "missing",
            Self::WrongType { .. } => "wrong-type",
            Self::UnknownField => "unknown-field",
            Self::Duplicate => "duplicate",
            Self::Empty => "empty",
            Self::TooLong { .. } => "too-long",
            Self::TooManySlashes => "too-many-slashes",
            Self::Wildcard => "wildcard",
            Self::MisplacedWildcard => "misplaced-wildcard",
            Self::NulCharacter => "nul-character",
            Self::Reserved => "reserved-topic",
            Self::OutOfRange { .. } => "out-of-range",
            Self::NotAHost => "not-a-host",
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.field)?;
        match self.problem {
            Problem::Syntax(what) => write!(f, "{what}"),
            Problem::Missing => write!(f, "required field missing"),
            Problem::WrongType { expected } => write!(f, "expected {expected}"),
            Problem::UnknownField => write!(f, "unknown field"),
            Problem::Duplicate => write!(f, "given twice"),
            Problem::Empty => write!(f, "must not be empty"),
            Problem::TooLong { max } => write!(f, "longer than {max} bytes"),
            Problem::TooManySlashes => {
                write!(f, "more than {MAX_TOPIC_SLASHES} '/' (AWS IoT limit)")
            }
            Problem::Wildcard => write!(f, "publish topic must not contain '+' or '#'"),
            Problem::MisplacedWildcard => write!(
                f,
                "'#' must be a whole last level and '+' a whole level (MQTT topic filter)"
            ),
            Problem::NulCharacter => write!(f, "contains a NUL character (MQTT forbids it)"),
            Problem::Reserved => write!(
                f,
                "'$' topics are AWS IoT's: only its documented $aws/ topics, in their direction"
            ),
            Problem::OutOfRange { min, max } => write!(f, "must be between {min} and {max}"),
            Problem::NotAHost => write!(
                f,
                "must be a host name or IP address only: no scheme (https://), path or spaces"
            ),
        }
    }
}

impl DeviceConfig {
    /// A configuration with the tutorial's defaults for everything but the broker and
    /// the client id.
    pub fn new(host: &str, client_id: &str) -> Result<Self, ConfigError> {
        let config = Self {
            wifi: Wifi::default(),
            endpoint: Endpoint {
                host: set_str("endpoint.host", host)?,
                port: DEFAULT_MQTT_PORT,
            },
            ntp: NtpServer::default(),
            client_id: set_str("client_id", client_id)?,
            pub_topic: default_pub_topic(),
            sub_topic: default_sub_topic(),
            period_ms: DEFAULT_PERIOD_MS,
            keepalive_s: DEFAULT_KEEPALIVE_S,
            qos: DEFAULT_QOS,
        };
        config.validate()?;
        Ok(config)
    }

    /// Parse and validate `/config.json`. Needs no allocator. Errors name the field and
    /// the rule it broke; `config.json` only for JSON that is not valid at all.
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        let config = parse::parse(json)?;
        config.validate()?;
        Ok(config)
    }

    /// Check every field against the device's and AWS IoT Core's limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        host("endpoint.host", &self.endpoint.host)?;
        host("ntp.host", &self.ntp.host)?;
        non_empty("client_id", &self.client_id)?;
        if self.client_id.len() > DEVICE_MAX_CLIENT_ID {
            return Err(ConfigError {
                field: "client_id",
                problem: Problem::TooLong {
                    max: DEVICE_MAX_CLIENT_ID,
                },
            });
        }
        topic("pub_topic", &self.pub_topic, TopicUse::Publish)?;
        topic("sub_topic", &self.sub_topic, TopicUse::Subscribe)?;
        range("endpoint.port", self.endpoint.port.into(), 1, 65535)?;
        range("ntp.port", self.ntp.port.into(), 1, 65535)?;
        range(
            "ntp.resync_s",
            self.ntp.resync_s,
            *NTP_RESYNC_RANGE_S.start(),
            *NTP_RESYNC_RANGE_S.end(),
        )?;
        range(
            "period_ms",
            self.period_ms,
            *PERIOD_RANGE_MS.start(),
            *PERIOD_RANGE_MS.end(),
        )?;
        range(
            "keepalive_s",
            self.keepalive_s.into(),
            (*KEEPALIVE_RANGE_S.start()).into(),
            (*KEEPALIVE_RANGE_S.end()).into(),
        )?;
        range(
            "qos",
            self.qos.into(),
            (*QOS_RANGE.start()).into(),
            (*QOS_RANGE.end()).into(),
        )?;
        Ok(())
    }
}

/// Set a bounded string field, naming the field if the value does not fit.
pub fn set_str<const N: usize>(field: &'static str, value: &str) -> Result<String<N>, ConfigError> {
    let mut out = String::new();
    out.push_str(value).map_err(|_| ConfigError {
        field,
        problem: Problem::TooLong { max: N },
    })?;
    Ok(out)
}

fn non_empty(field: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(ConfigError {
            field,
            problem: Problem::Empty,
        });
    }
    Ok(())
}

/// A DNS name or an IP literal: letters, digits, `.`, `-`, `_` and the `:` of IPv6.
fn host(field: &'static str, value: &str) -> Result<(), ConfigError> {
    non_empty(field, value)?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if !value.chars().all(allowed) {
        return Err(ConfigError {
            field,
            problem: Problem::NotAHost,
        });
    }
    Ok(())
}

fn topic(field: &'static str, value: &str, usage: TopicUse) -> Result<(), ConfigError> {
    check_topic(value, usage).map_err(|problem| ConfigError { field, problem })
}

fn range(field: &'static str, value: u32, min: u32, max: u32) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError {
            field,
            problem: Problem::OutOfRange { min, max },
        });
    }
    Ok(())
}

fn json_error(e: &serde_json_core::de::Error) -> &'static str {
    use serde_json_core::de::Error as E;
    match e {
        E::EofWhileParsingList
        | E::EofWhileParsingObject
        | E::EofWhileParsingString
        | E::EofWhileParsingNumber
        | E::EofWhileParsingValue => "truncated JSON",
        E::InvalidNumber | E::InvalidType => "a field has the wrong type",
        E::InvalidEscapeSequence | E::EscapedStringIsTooLong => "bad string escape",
        E::InvalidUnicodeCodePoint => "invalid unicode",
        E::TrailingCharacters => "trailing characters after the object",
        E::ExpectedSomeValue | E::ExpectedSomeIdent | E::ExpectedColon => "malformed JSON",
        E::ExpectedListCommaOrEnd | E::ExpectedObjectCommaOrEnd => "malformed JSON",
        E::KeyMustBeAString => "object key is not a string",
        E::CustomError => "malformed JSON",
        _ => "malformed JSON",
    }
}

#[cfg(test)]
mod tests;
