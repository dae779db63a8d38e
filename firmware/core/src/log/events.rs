//! Typed constructors for every line the device prints, and the vocabulary (stable
//! kebab-case slugs) of their reasons and errors.
//!
//! Boards never format lines by hand: they call these (or let the session do it), so the
//! keys stay stable and secrets cannot get in — credentials and the WiFi password are
//! never parameters, only their sizes. Values from outside (topics, client ids, hosts)
//! are escaped and capped at [`MAX_VALUE`](super::MAX_VALUE); payloads are escaped and
//! capped at [`MAX_PAYLOAD`](super::MAX_PAYLOAD) with `bytes=` and `truncated=1`.
//!
//! Every constructor fits its worst case in a [`Line`]'s fixed capacity (tested), so
//! they return a `Line`, not a `Result`.

use core::fmt;
use core::net::IpAddr;
use core::str::FromStr;

use super::{BuildError, Level, Line};
use crate::config::{ConfigError, DeviceConfig, Problem};

/// A slug that is not in the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownSlug;

/// Where the device's RAM is, for the `heap:` line. `free`/`min_free` are what the
/// board's allocator reports (bytes free now, low-water mark); `used`/`peak` are the
/// allocator's bytes in use now and at most; the buffer figures are the fixed TLS and
/// MQTT buffers, which are not on the heap on every board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeapReport {
    pub free: usize,
    pub min_free: usize,
    pub used: usize,
    pub peak: usize,
    pub tls_buffers: usize,
    pub mqtt_buffers: usize,
}

impl fmt::Display for UnknownSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown value")
    }
}

/// A fieldless enum printed as a fixed slug, parsed back by the rig.
macro_rules! slugs {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $slug:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The slug printed in the log.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $slug,)+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownSlug;
            fn from_str(s: &str) -> Result<Self, UnknownSlug> {
                match s { $($slug => Ok($name::$variant),)+ _ => Err(UnknownSlug) }
            }
        }
    };
}

slugs! {
    /// Where the credentials were read from.
    pub enum CredSource {
        /// The LittleFS data partition (the board) or the same image file (virtual device).
        Flash = "flash",
        /// Loose DER files in a directory (development only).
        Files = "files",
    }
}

slugs! {
    /// A file of the flash image.
    pub enum FlashFile {
        Config = "/config.json",
        Cert = "/cert.der",
        Key = "/private.der",
        Ca = "/ca.der",
        /// The image itself (partition missing, not LittleFS).
        Image = "image",
    }
}

slugs! {
    /// Why a file could not be loaded.
    pub enum LoadError {
        Missing = "missing",
        Empty = "empty",
        TooLarge = "too-large",
        /// Not DER / not the expected key type.
        Malformed = "malformed",
        Io = "io-error",
        /// A key (or certificate key) type the firmware cannot use.
        UnsupportedKey = "unsupported-key",
        /// `/private.der` is not the key of `/cert.der`.
        KeyMismatch = "key-mismatch",
        /// `/ca.der` is not a CA certificate.
        NotCa = "not-a-ca",
        /// Well-formed, but its signature does not verify: damaged.
        BadSignature = "bad-signature",
        /// PEM text where the device reads DER.
        Pem = "pem-not-der",
    }
}

slugs! {
    /// Why the MQTT connection ended.
    pub enum DisconnectReason {
        /// The broker closed the TCP/TLS stream.
        PeerClosed = "peer-closed",
        /// Nothing heard from the broker within 1.5x keep-alive.
        KeepaliveTimeout = "keepalive-timeout",
        /// The broker sent DISCONNECT.
        ServerDisconnect = "server-disconnect",
        NetworkDown = "network-down",
        Io = "io-error",
        Tls = "tls-error",
        Protocol = "protocol-error",
        /// SUBACK did not come in time.
        SubscribeTimeout = "subscribe-timeout",
        /// SUBACK refused the subscription.
        SubscribeRefused = "subscribe-refused",
        /// A QoS 1 publish went unacknowledged past its retry time; reconnecting lets the
        /// client resend it (MQTT 5 allows resending only on reconnect).
        PubackTimeout = "puback-timeout",
        Shutdown = "shutdown",
    }
}

slugs! {
    /// Why the TLS handshake failed (Device Advisor's TLS cases among them).
    pub enum TlsError {
        CertificateExpired = "certificate-expired",
        CertificateNotYetValid = "certificate-not-yet-valid",
        UnknownCa = "unknown-ca",
        BadCertificate = "bad-certificate",
        NameMismatch = "name-mismatch",
        BadSignature = "bad-signature",
        UnsupportedAlgorithm = "unsupported-algorithm",
        /// The server sent a fatal alert (e.g. it rejected our client certificate).
        PeerAlert = "peer-alert",
        Timeout = "timeout",
        Io = "io-error",
        /// No plausible wall clock to check certificate dates with (e.g. SNTP said 1970).
        ClockNotSet = "clock-not-set",
        /// `/ca.der` is not a usable trust anchor.
        BadTrustAnchor = "bad-trust-anchor",
        /// The server's certificate is not well-formed DER/X.509.
        MalformedCertificate = "malformed-certificate",
        Other = "other",
    }
}

impl TlsError {
    /// A failure that a wrong wall clock explains: the device re-syncs its clock at once.
    pub const fn is_time_related(self) -> bool {
        matches!(
            self,
            Self::CertificateExpired | Self::CertificateNotYetValid | Self::ClockNotSet
        )
    }
}

slugs! {
    /// Why an MQTT connection attempt failed, TLS aside.
    pub enum ConnectError {
        Dns = "dns-failed",
        Tcp = "tcp-failed",
        /// No CONNACK (or no TCP/TLS progress) within the connect timeout.
        Timeout = "timeout",
        /// TLS came up and CONNECT went out, but no CONNACK within the CONNACK timeout.
        ConnackTimeout = "connack-timeout",
        /// CONNACK with a failure reason code.
        Refused = "connack-refused",
        NotAuthorized = "not-authorized",
        Io = "io-error",
        Protocol = "protocol-error",
    }
}

slugs! {
    /// Why the network went down or could not come up.
    pub enum NetError {
        ApNotFound = "ap-not-found",
        AuthFailed = "auth-failed",
        Dhcp = "dhcp-failed",
        LinkLost = "link-lost",
        Timeout = "timeout",
    }
}

slugs! {
    /// Why SNTP failed.
    pub enum TimeError {
        Timeout = "timeout",
        Dns = "dns-failed",
        BadResponse = "bad-response",
        /// The server answered with a kiss-o'-death (stratum 0): `RATE` (poll less often),
        /// `DENY`/`RSTR` (access denied). The code is logged beside it; the device backs
        /// off for at least [`crate::session::KISS_OF_DEATH_BACKOFF`].
        KissOfDeath = "kiss-of-death",
        Io = "io-error",
    }
}

slugs! {
    /// Why a time from SNTP was refused.
    pub enum ImplausibleTime {
        /// Earlier than the firmware's build date: no clock can be that far behind.
        BeforeBuild = "before-build",
        /// Later than the device certificate's notAfter plus a margin: the certificate
        /// would be long dead, so the server is wrong, not the certificate.
        AfterCertExpiry = "after-cert-expiry",
    }
}

slugs! {
    /// Why a subscription failed.
    pub enum SubscribeError {
        Timeout = "timeout",
        Refused = "refused",
    }
}

slugs! {
    /// Why a cadence slot passed without a publish.
    pub enum SkipReason {
        /// The tick came after later slots had already passed.
        Late = "late",
        /// Too many QoS 1 publishes still wait for PUBACK.
        InFlightFull = "in-flight-full",
    }
}

slugs! {
    /// The boot stage a line or a retry belongs to; doubles as the line's tag.
    pub enum Stage {
        Config = "config",
        Creds = "creds",
        Wifi = "wifi",
        Time = "time",
        Mqtt = "mqtt",
    }
}

slugs! {
    /// Why the device stops.
    pub enum ShutdownReason {
        Requested = "requested",
        Signal = "signal",
    }
}

/// A failed connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    Tls(TlsError),
    Mqtt(ConnectError),
}

/// A failed read of `/config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFailure {
    Load(LoadError),
    Invalid(ConfigError),
}

/// The slug of a config validation problem.
pub const fn problem_slug(problem: &Problem) -> &'static str {
    // The vocabulary lives with the rules, in `config`.
    problem.slug()
}

/// Build a line whose tag and keys are constants. The capacities are chosen so the
/// worst case of every constructor fits (see the tests); should a part not fit anyway,
/// the builder leaves it out rather than failing the whole line.
fn line(
    level: Level,
    uptime_ms: u64,
    tag: &str,
    build: impl FnOnce(&mut Line) -> Result<(), BuildError>,
) -> Line {
    let mut line = match Line::new(level, uptime_ms, tag) {
        Ok(line) => line,
        // Tags here are constants that pass validation (tested); this keeps it total.
        Err(_) => Line::new(level, uptime_ms, "log").unwrap_or_else(|_| unreachable_line()),
    };
    let _ = build(&mut line);
    line
}

/// Never reached: "log" is a valid tag. Kept total without a panic path.
fn unreachable_line() -> Line {
    Line {
        level: Level::Error,
        uptime_ms: 0,
        tag: heapless::String::new(),
        body: heapless::String::new(),
        message_len: 0,
        fields: heapless::Vec::new(),
        payload: None,
    }
}

/// `host:port`, escaped as one value.
struct Endpoint<'a>(&'a str, u16);

fn endpoint_field(l: &mut Line, host: &str, port: u16) -> Result<(), BuildError> {
    let mut buf: heapless::String<{ crate::config::MAX_HOST + 6 }> = heapless::String::new();
    let _ = fmt::write(&mut buf, format_args!("{}", Endpoint(host, port)));
    l.field_escaped("endpoint", buf.as_bytes())?;
    Ok(())
}

impl fmt::Display for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0, self.1)
    }
}

/// A reason code prints as `0x98`.
struct Hex(u8);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x}", self.0)
    }
}

slugs! {
    /// How the broker broke MQTT 5 on an inbound packet.
    pub enum ProtocolViolation {
        /// A PUBLISH used a Topic Alias the device never allowed (it announces none), or
        /// had an empty topic without one.
        TopicAliasInvalid = "topic-alias-invalid",
    }
}

impl ProtocolViolation {
    /// The MQTT 5 reason code the device's DISCONNECT carries.
    pub const fn reason_code(self) -> u8 {
        match self {
            Self::TopicAliasInvalid => 0x94,
        }
    }
}

/// The MQTT 5 name of a reason code (section 2.4), as a slug; `unknown` otherwise.
pub const fn reason_code_name(code: u8) -> &'static str {
    match code {
        0x00 => "success",
        0x04 => "disconnect-with-will",
        0x10 => "no-matching-subscribers",
        0x80 => "unspecified-error",
        0x81 => "malformed-packet",
        0x82 => "protocol-error",
        0x83 => "implementation-specific-error",
        0x87 => "not-authorized",
        0x89 => "server-busy",
        0x8B => "server-shutting-down",
        0x8D => "keep-alive-timeout",
        0x8E => "session-taken-over",
        0x90 => "topic-name-invalid",
        0x91 => "packet-id-in-use",
        0x93 => "receive-maximum-exceeded",
        0x94 => "topic-alias-invalid",
        0x95 => "packet-too-large",
        0x96 => "message-rate-too-high",
        0x97 => "quota-exceeded",
        0x98 => "administrative-action",
        0x99 => "payload-format-invalid",
        0x9A => "retain-not-supported",
        0x9B => "qos-not-supported",
        0x9C => "use-another-server",
        0x9D => "server-moved",
        0x9E => "shared-subscriptions-not-supported",
        0x9F => "connection-rate-exceeded",
        0xA0 => "maximum-connect-time",
        0xA1 => "subscription-identifiers-not-supported",
        0xA2 => "wildcard-subscriptions-not-supported",
        _ => "unknown",
    }
}

/// Sizes print as `812B`.
struct Bytes(usize);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}B", self.0)
    }
}

impl Line {
    /// `I boot: firmware=0.1.0 board=virtual client_id=ESPthing`
    pub fn boot(uptime_ms: u64, firmware: &str, board: &str, client_id: &str) -> Line {
        line(Level::Info, uptime_ms, "boot", |l| {
            l.field_escaped("firmware", firmware.as_bytes())?
                .field_escaped("board", board.as_bytes())?
                .field_escaped("client_id", client_id.as_bytes())?;
            Ok(())
        })
    }

    /// `I config: loaded endpoint=host:8883 pub_topic=outTopic sub_topic=inTopic
    /// period_ms=2000 keepalive_s=60 qos=1` — never the WiFi password.
    pub fn config_loaded(uptime_ms: u64, config: &DeviceConfig) -> Line {
        line(Level::Info, uptime_ms, "config", |l| {
            l.message_text("loaded")?;
            endpoint_field(l, &config.endpoint.host, config.endpoint.port)?;
            l.field_escaped("pub_topic", config.pub_topic.as_bytes())?
                .field_escaped("sub_topic", config.sub_topic.as_bytes())?
                .field_display("period_ms", config.period_ms)?
                .field_display("keepalive_s", config.keepalive_s)?
                .field_display("qos", config.qos)?;
            Ok(())
        })
    }

    /// `E config: load failed error=missing` or
    /// `E config: invalid field=endpoint.host error=empty`
    pub fn config_failed(uptime_ms: u64, failure: ConfigFailure) -> Line {
        line(Level::Error, uptime_ms, "config", |l| {
            match failure {
                ConfigFailure::Load(e) => {
                    l.message_text("load failed")?.field_display("error", e)?;
                }
                ConfigFailure::Invalid(e) => {
                    l.message_text("invalid")?
                        .field_escaped("field", e.field.as_bytes())?
                        .field_display("error", problem_slug(&e.problem))?;
                }
            }
            Ok(())
        })
    }

    /// `I creds: cert=812B key=121B ca=837B source=flash` — sizes only.
    pub fn creds(uptime_ms: u64, cert: usize, key: usize, ca: usize, source: CredSource) -> Line {
        line(Level::Info, uptime_ms, "creds", |l| {
            l.field_display("cert", Bytes(cert))?
                .field_display("key", Bytes(key))?
                .field_display("ca", Bytes(ca))?
                .field_display("source", source)?;
            Ok(())
        })
    }

    /// `E creds: load failed file=/private.der error=missing`
    pub fn creds_failed(uptime_ms: u64, file: FlashFile, error: LoadError) -> Line {
        line(Level::Error, uptime_ms, "creds", |l| {
            l.message_text("load failed")?
                .field_display("file", file)?
                .field_display("error", error)?;
            Ok(())
        })
    }

    /// `I wifi: up ip=192.168.1.23`
    pub fn wifi_up(uptime_ms: u64, local_addr: IpAddr) -> Line {
        line(Level::Info, uptime_ms, "wifi", |l| {
            l.message_text("up")?.field_display("ip", local_addr)?;
            Ok(())
        })
    }

    /// `W wifi: down reason=link-lost`
    pub fn wifi_down(uptime_ms: u64, reason: NetError) -> Line {
        line(Level::Warn, uptime_ms, "wifi", |l| {
            l.message_text("down")?.field_display("reason", reason)?;
            Ok(())
        })
    }

    /// `I time: synced epoch=1795000000`
    pub fn time_synced(uptime_ms: u64, epoch: u64) -> Line {
        line(Level::Info, uptime_ms, "time", |l| {
            l.message_text("synced")?.field_display("epoch", epoch)?;
            Ok(())
        })
    }

    /// `W time: sync failed error=timeout server=pool.ntp.org:123`: the server named, so
    /// a wrong or missing one is seen at once (`None` when the board cannot say).
    pub fn time_sync_failed(uptime_ms: u64, error: TimeError, server: Option<(&str, u16)>) -> Line {
        line(Level::Warn, uptime_ms, "time", |l| {
            l.message_text("sync failed")?
                .field_display("error", error)?;
            if let Some((host, port)) = server {
                l.field_display("server", format_args!("{host}:{port}"))?;
            }
            Ok(())
        })
    }

    /// `W time: sync failed error=kiss-of-death code=RATE` (the code escaped: it comes from
    /// the server).
    pub fn time_kiss_of_death(uptime_ms: u64, code: [u8; 4]) -> Line {
        line(Level::Warn, uptime_ms, "time", |l| {
            l.message_text("sync failed")?
                .field_display("error", TimeError::KissOfDeath)?
                .field_escaped("code", &code)?;
            Ok(())
        })
    }

    /// `E time: implausible epoch=0 reason=before-build` — refused, SNTP is retried.
    pub fn time_implausible(uptime_ms: u64, epoch: u64, reason: ImplausibleTime) -> Line {
        line(Level::Error, uptime_ms, "time", |l| {
            l.message_text("implausible")?
                .field_display("epoch", epoch)?
                .field_display("reason", reason)?;
            Ok(())
        })
    }

    /// `W log: dropped lines=712` — lines the serial port could not take (nobody read
    /// it fast enough), printed as soon as there is room again.
    pub fn log_dropped(uptime_ms: u64, lines: u64) -> Line {
        line(Level::Warn, uptime_ms, "log", |l| {
            l.message_text("dropped")?.field_display("lines", lines)?;
            Ok(())
        })
    }

    /// `I mqtt: backoff attempt=1 delay_ms=734` (tag = the stage being retried).
    pub fn backoff(uptime_ms: u64, stage: Stage, attempt: u32, delay_ms: u64) -> Line {
        line(Level::Info, uptime_ms, stage.as_str(), |l| {
            l.message_text("backoff")?
                .field_display("attempt", attempt)?
                .field_display("delay_ms", delay_ms)?;
            Ok(())
        })
    }

    /// `I mqtt: connecting endpoint=localhost:8883`
    pub fn mqtt_connecting(uptime_ms: u64, host: &str, port: u16) -> Line {
        line(Level::Info, uptime_ms, "mqtt", |l| {
            l.message_text("connecting")?;
            endpoint_field(l, host, port)
        })
    }

    /// `I mqtt: connected endpoint=localhost:8883 session=new handshake_ms=38`
    /// (`session=resumed` when the broker kept the session; `handshake_ms` if known).
    pub fn mqtt_connected(
        uptime_ms: u64,
        host: &str,
        port: u16,
        session_present: bool,
        handshake_ms: Option<u32>,
    ) -> Line {
        line(Level::Info, uptime_ms, "mqtt", |l| {
            l.message_text("connected")?;
            endpoint_field(l, host, port)?;
            l.field_display("session", if session_present { "resumed" } else { "new" })?;
            if let Some(ms) = handshake_ms {
                l.field_display("handshake_ms", ms)?;
            }
            Ok(())
        })
    }

    /// `W tls: rsa accelerator signature failed its check fallback=software`: the board's
    /// RSA hardware made a signature that did not verify; it is not used again.
    pub fn rsa_accelerator_fault(uptime_ms: u64) -> Line {
        line(Level::Warn, uptime_ms, "tls", |l| {
            l.message_text("rsa accelerator signature failed its check")?
                .field_display("fallback", "software")?;
            Ok(())
        })
    }

    /// `E tls: handshake failed error=certificate-expired` or
    /// `E mqtt: connect failed error=connack-refused`
    pub fn connect_failed(uptime_ms: u64, failure: ConnectFailure) -> Line {
        match failure {
            ConnectFailure::Tls(e) => line(Level::Error, uptime_ms, "tls", |l| {
                l.message_text("handshake failed")?
                    .field_display("error", e)?;
                Ok(())
            }),
            ConnectFailure::Mqtt(e) => line(Level::Error, uptime_ms, "mqtt", |l| {
                l.message_text("connect failed")?
                    .field_display("error", e)?;
                Ok(())
            }),
        }
    }

    /// `I mqtt: subscribed topic=inTopic qos=1`
    pub fn mqtt_subscribed(uptime_ms: u64, topic: &str, qos: u8) -> Line {
        line(Level::Info, uptime_ms, "mqtt", |l| {
            l.message_text("subscribed")?
                .field_escaped("topic", topic.as_bytes())?
                .field_display("qos", qos)?;
            Ok(())
        })
    }

    /// `I mqtt: subscription resumed topic=inTopic qos=1`: the broker resumed the session
    /// that holds the subscription, so none is sent.
    pub fn mqtt_subscription_resumed(uptime_ms: u64, topic: &str, qos: u8) -> Line {
        line(Level::Info, uptime_ms, "mqtt", |l| {
            l.message_text("subscription resumed")?
                .field_escaped("topic", topic.as_bytes())?
                .field_display("qos", qos)?;
            Ok(())
        })
    }

    /// `E mqtt: subscribe failed topic=inTopic error=timeout`
    pub fn mqtt_subscribe_failed(uptime_ms: u64, topic: &str, error: SubscribeError) -> Line {
        line(Level::Error, uptime_ms, "mqtt", |l| {
            l.message_text("subscribe failed")?
                .field_escaped("topic", topic.as_bytes())?
                .field_display("error", error)?;
            Ok(())
        })
    }

    /// `W mqtt: disconnected reason=peer-closed`
    pub fn mqtt_disconnected(uptime_ms: u64, reason: DisconnectReason) -> Line {
        line(Level::Warn, uptime_ms, "mqtt", |l| {
            l.message_text("disconnected")?
                .field_display("reason", reason)?;
            Ok(())
        })
    }

    /// `W mqtt: disconnected reason=server-disconnect code=0x98 name=administrative-action`:
    /// the broker's DISCONNECT with its MQTT 5 reason code.
    pub fn mqtt_server_disconnect(uptime_ms: u64, code: u8) -> Line {
        line(Level::Warn, uptime_ms, "mqtt", |l| {
            l.message_text("disconnected")?
                .field_display("reason", DisconnectReason::ServerDisconnect)?
                .field_display("code", Hex(code))?
                .field_display("name", reason_code_name(code))?;
            Ok(())
        })
    }

    /// `E mqtt: protocol violation error=topic-alias-invalid` — the broker broke MQTT 5;
    /// the device sends DISCONNECT with that reason and reconnects.
    pub fn mqtt_protocol_violation(uptime_ms: u64, error: ProtocolViolation) -> Line {
        line(Level::Error, uptime_ms, "mqtt", |l| {
            l.message_text("protocol violation")?
                .field_display("error", error)?
                .field_display("code", Hex(error.reason_code()))?;
            Ok(())
        })
    }

    /// `W mqtt: qos downgraded max_qos=0 qos=1` — the broker's CONNACK allows less than
    /// the configured QoS; publishes on this connection go out at `max_qos`.
    pub fn mqtt_qos_downgraded(uptime_ms: u64, max_qos: u8, qos: u8) -> Line {
        line(Level::Warn, uptime_ms, "mqtt", |l| {
            l.message_text("qos downgraded")?
                .field_display("max_qos", max_qos)?
                .field_display("qos", qos)?;
            Ok(())
        })
    }

    /// `E publish: refused seq=7 id=3 code=0x80 name=unspecified-error` — a PUBACK with a
    /// failure reason code: the broker did not accept the message.
    pub fn publish_refused(uptime_ms: u64, seq: u32, packet_id: u16, code: u8) -> Line {
        line(Level::Error, uptime_ms, "publish", |l| {
            l.message_text("refused")?
                .field_display("seq", seq)?
                .field_display("id", packet_id)?
                .field_display("code", Hex(code))?
                .field_display("name", reason_code_name(code))?;
            Ok(())
        })
    }

    /// `I publish: topic=outTopic seq=1 bytes=29 payload={"message": "hello world #1"}`
    pub fn publish(uptime_ms: u64, topic: &str, seq: u32, payload: &[u8]) -> Line {
        line(Level::Info, uptime_ms, "publish", |l| {
            l.field_escaped("topic", topic.as_bytes())?
                .field_display("seq", seq)?
                .payload_raw(payload)?;
            Ok(())
        })
    }

    /// `W publish: retry topic=outTopic seq=7 id=3 attempt=2` — a QoS 1 retransmit
    /// (`attempt` counts sends, the first send is 1).
    pub fn publish_retry(
        uptime_ms: u64,
        topic: &str,
        seq: u32,
        packet_id: u16,
        attempt: u32,
    ) -> Line {
        line(Level::Warn, uptime_ms, "publish", |l| {
            l.message_text("retry")?
                .field_escaped("topic", topic.as_bytes())?
                .field_display("seq", seq)?
                .field_display("id", packet_id)?
                .field_display("attempt", attempt)?;
            Ok(())
        })
    }

    /// `W publish: skipped slots=3 reason=late`
    pub fn publish_skipped(uptime_ms: u64, slots: u64, reason: SkipReason) -> Line {
        line(Level::Warn, uptime_ms, "publish", |l| {
            l.message_text("skipped")?
                .field_display("slots", slots)?
                .field_display("reason", reason)?;
            Ok(())
        })
    }

    /// `I inbound: topic=inTopic bytes=5 payload=hello`; any payload, escaped and
    /// truncated.
    pub fn inbound(uptime_ms: u64, topic: &str, payload: &[u8]) -> Line {
        line(Level::Info, uptime_ms, "inbound", |l| {
            l.field_escaped("topic", topic.as_bytes())?
                .payload_raw(payload)?;
            Ok(())
        })
    }

    /// `W inbound: unsolicited topic=other bytes=5` — a message on a topic the device never
    /// subscribed to: acknowledged as MQTT requires, but not taken as ours (no payload).
    pub fn inbound_unsolicited(uptime_ms: u64, topic: &str, bytes: usize) -> Line {
        line(Level::Warn, uptime_ms, "inbound", |l| {
            l.message_text("unsolicited")?
                .field_escaped("topic", topic.as_bytes())?
                .field_display("bytes", bytes)?;
            Ok(())
        })
    }

    /// `I heap: free=41234 min_free=39000`
    pub fn heap(uptime_ms: u64, free: usize, min_free: usize) -> Line {
        line(Level::Info, uptime_ms, "heap", |l| {
            l.field_display("free", free)?
                .field_display("min_free", min_free)?;
            Ok(())
        })
    }

    /// `I heap: free=41234 min_free=39000 used=8000 peak=12000 tls_buf=37381 mqtt_buf=4096`:
    /// the short form's keys first, then the allocator's own figures and the bytes held in
    /// TLS and MQTT buffers, so the rig can track where RAM goes.
    pub fn heap_report(uptime_ms: u64, report: &HeapReport) -> Line {
        line(Level::Info, uptime_ms, "heap", |l| {
            l.field_display("free", report.free)?
                .field_display("min_free", report.min_free)?
                .field_display("used", report.used)?
                .field_display("peak", report.peak)?
                .field_display("tls_buf", report.tls_buffers)?
                .field_display("mqtt_buf", report.mqtt_buffers)?;
            Ok(())
        })
    }

    /// `I shutdown: reason=requested`
    pub fn shutdown(uptime_ms: u64, reason: ShutdownReason) -> Line {
        line(Level::Info, uptime_ms, "shutdown", |l| {
            l.field_display("reason", reason)?;
            Ok(())
        })
    }
}
