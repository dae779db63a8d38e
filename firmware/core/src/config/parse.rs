//! Reading `/config.json` so that every error names its field and the rule it broke.
//!
//! serde-json-core stops at the first value that does not fit its Rust type and says
//! only what went wrong (`CustomError`, `InvalidNumber`), never where. So the JSON is read
//! in two steps:
//! 1. into wide types that accept any value of the right JSON kind — strings of any
//!    length ([`Text`] keeps the length of one that does not fit), numbers as `f64` — by
//!    hand-written object visitors that note which field they are reading in a
//!    [`Cursor`], so a value of the wrong kind is reported against its field;
//! 2. into [`DeviceConfig`], checking presence, length and range field by field against
//!    [`FIELDS`], the one table of each field's rule.

use core::cell::Cell;
use core::fmt;

use heapless::String;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::*;

/// What a field holds and the rule it must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Object,
    /// A string of at most `max` bytes (the device's limit where it is below AWS's).
    Text {
        max: usize,
    },
    /// A whole number in `min..=max`.
    Integer {
        min: u32,
        max: u32,
    },
}

/// Every field of `/config.json` by JSON path, with its rule. `validate` checks the same
/// ranges, so a config built in code meets the same rules as one read from flash.
pub(super) const FIELDS: &[(&str, Kind)] = &[
    ("wifi", Kind::Object),
    ("wifi.ssid", Kind::Text { max: MAX_SSID }),
    ("wifi.password", Kind::Text { max: MAX_PASSWORD }),
    ("endpoint", Kind::Object),
    ("endpoint.host", Kind::Text { max: MAX_HOST }),
    ("endpoint.port", PORT),
    ("ntp", Kind::Object),
    ("ntp.host", Kind::Text { max: MAX_HOST }),
    ("ntp.port", PORT),
    (
        "ntp.resync_s",
        Kind::Integer {
            min: *NTP_RESYNC_RANGE_S.start(),
            max: *NTP_RESYNC_RANGE_S.end(),
        },
    ),
    (
        "client_id",
        Kind::Text {
            max: DEVICE_MAX_CLIENT_ID,
        },
    ),
    ("pub_topic", Kind::Text { max: MAX_TOPIC }),
    ("sub_topic", Kind::Text { max: MAX_TOPIC }),
    (
        "period_ms",
        Kind::Integer {
            min: *PERIOD_RANGE_MS.start(),
            max: *PERIOD_RANGE_MS.end(),
        },
    ),
    (
        "keepalive_s",
        Kind::Integer {
            min: *KEEPALIVE_RANGE_S.start() as u32,
            max: *KEEPALIVE_RANGE_S.end() as u32,
        },
    ),
    (
        "qos",
        Kind::Integer {
            min: *QOS_RANGE.start() as u32,
            max: *QOS_RANGE.end() as u32,
        },
    ),
];

const PORT: Kind = Kind::Integer { min: 1, max: 65535 };

/// The rule of the field at `path` (every path used here is in [`FIELDS`]).
pub(super) fn kind(path: &str) -> Kind {
    FIELDS
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(Kind::Object, |(_, kind)| *kind)
}

/// Parse `/config.json` into a config whose fields each meet their rule (cross-field
/// and topic checks are `validate`'s).
pub(super) fn parse(json: &[u8]) -> Result<DeviceConfig, ConfigError> {
    let cursor = Cursor {
        field: Cell::new(None),
        found: Cell::new(None),
    };
    // Big enough for the longest string any field allows once unescaped (a topic).
    let mut scratch = [0u8; MAX_TOPIC];
    let mut de = serde_json_core::de::Deserializer::new(json, Some(&mut scratch));
    let raw = match ConfigSeed(&cursor).deserialize(&mut de) {
        Ok(raw) => raw,
        Err(e) => return Err(cursor.blame(&e)),
    };
    de.end().map_err(|e| syntax(&e))?;
    raw.into_config()
}

fn syntax(e: &serde_json_core::de::Error) -> ConfigError {
    ConfigError {
        field: "config.json",
        problem: Problem::Syntax(json_error(e)),
    }
}

/// Which field is being read, and a problem a visitor found (unknown or repeated key).
struct Cursor {
    field: Cell<Option<&'static str>>,
    found: Cell<Option<ConfigError>>,
}

impl Cursor {
    fn fail<E: de::Error>(&self, field: &'static str, problem: Problem) -> E {
        self.found.set(Some(ConfigError { field, problem }));
        E::custom("config problem")
    }

    /// The error a failed parse stands for, against the field being read if any.
    fn blame(&self, e: &serde_json_core::de::Error) -> ConfigError {
        use serde_json_core::de::Error as E;
        if let Some(found) = self.found.get() {
            return found;
        }
        let Some(field) = self.field.get() else {
            return syntax(e);
        };
        let problem = match (e, kind(field)) {
            // Truncation is the file's fault, not the field's.
            (
                E::EofWhileParsingList
                | E::EofWhileParsingObject
                | E::EofWhileParsingString
                | E::EofWhileParsingNumber
                | E::EofWhileParsingValue,
                _,
            ) => return syntax(e),
            (E::EscapedStringIsTooLong, Kind::Text { max }) => Problem::TooLong { max },
            (E::InvalidEscapeSequence | E::InvalidUnicodeCodePoint, _) => {
                Problem::Syntax(json_error(e))
            }
            (_, kind) => Problem::WrongType {
                expected: expected(kind),
            },
        };
        ConfigError { field, problem }
    }
}

fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Object => "an object",
        Kind::Text { .. } => "a string",
        Kind::Integer { .. } => "a whole number",
    }
}

/// A JSON string of any length: kept if it fits in `N` bytes, else only its length.
struct Text<const N: usize> {
    value: String<N>,
    len: usize,
}

impl<'de, const N: usize> de::Deserialize<'de> for Text<N> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor<const N: usize>;
        impl<const N: usize> Visitor<'_> for TextVisitor<N> {
            type Value = Text<N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<N>, E> {
                let mut value = String::new();
                // Too long: keep nothing but the length, step 2 reports it.
                let _ = value.push_str(v);
                Ok(Text {
                    value,
                    len: v.len(),
                })
            }
        }
        d.deserialize_str(TextVisitor::<N>)
    }
}

/// A JSON number, any size or sign, checked against its field's range in step 2.
struct Number(f64);

impl<'de> de::Deserialize<'de> for Number {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NumberVisitor;
        impl Visitor<'_> for NumberVisitor {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                Ok(Number(v))
            }
        }
        d.deserialize_f64(NumberVisitor)
    }
}

/// A key of a JSON object: its index in the object's field list, or `None` if unknown.
struct KeySeed(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<usize>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        struct KeyVisitor(&'static [&'static str]);
        impl Visitor<'_> for KeyVisitor {
            type Value = Option<usize>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
                Ok(self.0.iter().position(|name| *name == v))
            }
        }
        d.deserialize_identifier(KeyVisitor(self.0))
    }
}

/// Read the fields of one JSON object: `names` are its keys, `paths` their JSON paths,
/// `object` the path of the object itself (for an unknown key). `read(i, map)` reads the
/// value of key `i` with the cursor on its path.
fn read_object<'de, A: MapAccess<'de>>(
    map: &mut A,
    cursor: &Cursor,
    object: &'static str,
    names: &'static [&'static str],
    paths: &'static [&'static str],
    mut read: impl FnMut(usize, &mut A) -> Result<(), A::Error>,
) -> Result<(), A::Error> {
    let mut seen = 0u32;
    while let Some(key) = map.next_key_seed(KeySeed(names))? {
        let Some(i) = key else {
            // Consume nothing more: the first unknown key ends the parse.
            return Err(cursor.fail(object, Problem::UnknownField));
        };
        if seen & (1 << i) != 0 {
            return Err(cursor.fail(paths[i], Problem::Duplicate));
        }
        seen |= 1 << i;
        cursor.field.set(Some(paths[i]));
        read(i, map)?;
        cursor.field.set(None);
    }
    Ok(())
}

/// Generates the wide twin of an object and the seed that reads it.
macro_rules! raw_object {
    ($raw:ident, $seed:ident, $object:literal, { $($field:ident: $ty:ty = $path:literal,)+ }) => {
        #[derive(Default)]
        struct $raw {
            $($field: Option<$ty>,)+
        }

        struct $seed<'c>(&'c Cursor);

        impl<'de> DeserializeSeed<'de> for $seed<'_> {
            type Value = $raw;
            fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<$raw, D::Error> {
                d.deserialize_map(self)
            }
        }

        impl<'de> Visitor<'de> for $seed<'_> {
            type Value = $raw;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$raw, A::Error> {
                const NAMES: &[&str] = &[$(stringify!($field),)+];
                const PATHS: &[&str] = &[$($path,)+];
                let mut raw = $raw::default();
                let cursor = self.0;
                read_object(&mut map, cursor, $object, NAMES, PATHS, |i, map| {
                    let mut n = 0;
                    $(
                        if i == n {
                            raw.$field = Some(map.next_value_seed(Seed::<$ty>::new(cursor))?);
                            return Ok(());
                        }
                        n += 1;
                    )+
                    let _ = n;
                    map.next_value::<IgnoredAny>().map(drop)
                })?;
                Ok(raw)
            }
        }
    };
}

/// A value read with the cursor at hand: leaf values ignore it, objects pass it on.
struct Seed<'c, T> {
    cursor: &'c Cursor,
    _value: core::marker::PhantomData<T>,
}

impl<'c, T> Seed<'c, T> {
    fn new(cursor: &'c Cursor) -> Self {
        Self {
            cursor,
            _value: core::marker::PhantomData,
        }
    }
}

macro_rules! leaf_seed {
    ($($ty:ty),+) => {$(
        impl<'de> DeserializeSeed<'de> for Seed<'_, $ty> {
            type Value = $ty;
            fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<$ty, D::Error> {
                let _ = self.cursor;
                <$ty as de::Deserialize>::deserialize(d)
            }
        }
    )+};
}

macro_rules! object_seed {
    ($($ty:ident => $seed:ident),+) => {$(
        impl<'de> DeserializeSeed<'de> for Seed<'_, $ty> {
            type Value = $ty;
            fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<$ty, D::Error> {
                $seed(self.cursor).deserialize(d)
            }
        }
    )+};
}

leaf_seed!(
    Number,
    Text<MAX_SSID>,
    Text<MAX_PASSWORD>,
    Text<MAX_HOST>,
    Text<MAX_CLIENT_ID>,
    Text<MAX_TOPIC>
);
object_seed!(RawWifi => WifiSeed, RawEndpoint => EndpointSeed, RawNtp => NtpSeed);

raw_object!(RawWifi, WifiSeed, "wifi", {
    ssid: Text<MAX_SSID> = "wifi.ssid",
    password: Text<MAX_PASSWORD> = "wifi.password",
});

raw_object!(RawEndpoint, EndpointSeed, "endpoint", {
    host: Text<MAX_HOST> = "endpoint.host",
    port: Number = "endpoint.port",
});

raw_object!(RawNtp, NtpSeed, "ntp", {
    host: Text<MAX_HOST> = "ntp.host",
    port: Number = "ntp.port",
    resync_s: Number = "ntp.resync_s",
});

raw_object!(RawConfig, ConfigSeed, "config.json", {
    wifi: RawWifi = "wifi",
    endpoint: RawEndpoint = "endpoint",
    ntp: RawNtp = "ntp",
    client_id: Text<MAX_CLIENT_ID> = "client_id",
    pub_topic: Text<MAX_TOPIC> = "pub_topic",
    sub_topic: Text<MAX_TOPIC> = "sub_topic",
    period_ms: Number = "period_ms",
    keepalive_s: Number = "keepalive_s",
    qos: Number = "qos",
});

fn missing(field: &'static str) -> ConfigError {
    ConfigError {
        field,
        problem: Problem::Missing,
    }
}

/// A string field: present (and fitting), or `default` if the field is optional.
fn text<const N: usize>(
    field: &'static str,
    value: Option<Text<N>>,
    default: Option<fn() -> String<N>>,
) -> Result<String<N>, ConfigError> {
    let Some(text) = value else {
        return default.map(|d| d()).ok_or_else(|| missing(field));
    };
    let max = match kind(field) {
        Kind::Text { max } => max,
        _ => N,
    };
    if text.len > N || text.len > max {
        return Err(ConfigError {
            field,
            problem: Problem::TooLong { max },
        });
    }
    Ok(text.value)
}

/// A whole-number field within its range, or `default` if absent.
fn integer(field: &'static str, value: Option<Number>, default: u32) -> Result<u32, ConfigError> {
    let Some(Number(n)) = value else {
        return Ok(default);
    };
    let Kind::Integer { min, max } = kind(field) else {
        return Err(missing(field));
    };
    let fail = |problem| Err(ConfigError { field, problem });
    // `null` arrives as NaN; 1e400 as infinity.
    if !n.is_finite() || n != (n as i64) as f64 {
        return fail(Problem::WrongType {
            expected: expected(Kind::Integer { min, max }),
        });
    }
    if n < f64::from(min) || n > f64::from(max) {
        return fail(Problem::OutOfRange { min, max });
    }
    Ok(n as u32)
}

/// Narrow a value already checked against a range that fits the target type.
fn narrow<T: TryFrom<u32>>(field: &'static str, value: u32) -> Result<T, ConfigError> {
    T::try_from(value).map_err(|_| ConfigError {
        field,
        problem: Problem::OutOfRange {
            min: 0,
            max: u32::MAX,
        },
    })
}

impl RawConfig {
    fn into_config(self) -> Result<DeviceConfig, ConfigError> {
        let wifi = match self.wifi {
            None => Wifi::default(),
            Some(w) => Wifi {
                ssid: text("wifi.ssid", w.ssid, None)?,
                password: text("wifi.password", w.password, Some(String::new))?,
            },
        };
        let endpoint = self.endpoint.ok_or_else(|| missing("endpoint"))?;
        let endpoint = Endpoint {
            host: text("endpoint.host", endpoint.host, None)?,
            port: narrow(
                "endpoint.port",
                integer("endpoint.port", endpoint.port, DEFAULT_MQTT_PORT.into())?,
            )?,
        };
        let ntp = match self.ntp {
            None => NtpServer::default(),
            Some(n) => NtpServer {
                host: text("ntp.host", n.host, None)?,
                port: narrow(
                    "ntp.port",
                    integer("ntp.port", n.port, DEFAULT_NTP_PORT.into())?,
                )?,
                resync_s: integer("ntp.resync_s", n.resync_s, DEFAULT_NTP_RESYNC_S)?,
            },
        };
        Ok(DeviceConfig {
            wifi,
            endpoint,
            ntp,
            client_id: text("client_id", self.client_id, None)?,
            pub_topic: text("pub_topic", self.pub_topic, Some(default_pub_topic))?,
            sub_topic: text("sub_topic", self.sub_topic, Some(default_sub_topic))?,
            period_ms: integer("period_ms", self.period_ms, DEFAULT_PERIOD_MS)?,
            keepalive_s: narrow(
                "keepalive_s",
                integer("keepalive_s", self.keepalive_s, DEFAULT_KEEPALIVE_S.into())?,
            )?,
            qos: narrow("qos", integer("qos", self.qos, DEFAULT_QOS.into())?)?,
        })
    }
}
