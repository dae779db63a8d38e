//! What the session is configured with besides `/config.json`: the board's identity,
//! timeouts and retry policy ([`Settings`]), and the protocol constants every board
//! shares.

use super::backoff::BackoffConfig;
use super::time::Duration;

/// MQTT 5 Session Expiry Interval a driver asks for in CONNECT: AWS IoT Core's default limit
/// for persistent sessions (1 h). With 0 the broker forgets the session on every disconnect,
/// the client drops its unacknowledged QoS 1 publishes, and they go out again as new packets
/// (new id, no DUP) instead of being replayed with their own id; a resumed session also gets
/// the QoS 1 messages sent while the device was away.
pub const SESSION_EXPIRY_S: u32 = 3600;
/// The earliest wall clock any build of this firmware accepts from SNTP (2020-01-01):
/// boards raise it to their build date ([`Settings::clock_floor`]).
pub const DEFAULT_CLOCK_FLOOR: u64 = 1_577_836_800;
/// How far past the device certificate's notAfter a time from SNTP may lie before it is
/// refused as implausible (the certificate, not the server, could be the one that is
/// wrong within this margin: the handshake then says `certificate-expired`).
pub const CERT_EXPIRY_MARGIN: Duration = Duration::from_secs(30 * 86_400);
/// The clock floor for a firmware built at `build_epoch` (Unix seconds as text, from the
/// board's build script): a day before it, allowing for a build machine whose clock ran
/// ahead; [`DEFAULT_CLOCK_FLOOR`] if the text is not a number or is older.
pub fn clock_floor(build_epoch: &str) -> u64 {
    build_epoch
        .trim()
        .parse::<u64>()
        .map_or(DEFAULT_CLOCK_FLOOR, |t| t.saturating_sub(86_400))
        .max(DEFAULT_CLOCK_FLOOR)
}

/// The shortest wait after an SNTP kiss-o'-death: RFC 4330 asks a client told `RATE` to
/// poll less often; 64 s is NTP's minimum poll interval.
pub const KISS_OF_DEATH_BACKOFF: Duration = Duration::from_secs(64);
/// How often the clock is synced again while the device runs, unless the config says
/// otherwise (`ntp.resync_s`).
pub const DEFAULT_RESYNC: Duration =
    Duration::from_secs(crate::config::DEFAULT_NTP_RESYNC_S as u64);

/// Everything that is not in `/config.json`: who we are and the timing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Firmware version for the boot line.
    pub firmware: &'static str,
    /// Board name for the boot line (`virtual`, `esp32c3`).
    pub board: &'static str,
    /// Reconnect backoff (also used, separately counted, for boot-phase retries).
    pub backoff: BackoffConfig,
    /// A connection that stayed up this long resets the reconnect backoff (one that drops
    /// sooner, e.g. right after CONNACK, does not).
    pub stable_after: Duration,
    /// Shortest time between the starts of two connection attempts (AWS IoT: one CONNECT
    /// per second per client id).
    pub min_connect_interval: Duration,
    /// Time allowed for TCP + TLS + CONNACK.
    pub connect_timeout: Duration,
    /// Time allowed for CONNACK once TLS is up and CONNECT is sent (within
    /// `connect_timeout`): a broker that takes the CONNECT and never answers is given up on
    /// long before a slow handshake would be.
    pub connack_timeout: Duration,
    /// Time allowed for SUBACK.
    pub subscribe_timeout: Duration,
    /// Time allowed for the driver to load files, bring the network up, sync the clock.
    pub request_timeout: Duration,
    /// QoS 1 publishes without PUBACK are sent again (DUP, same id) after this long.
    pub publish_retry: Duration,
    /// How an unacknowledged QoS 1 publish is sent again.
    pub retransmit: Retransmit,
    /// Unix seconds: an SNTP time before this is refused (the board's build date).
    pub clock_floor: u64,
    /// Deliberate departures from Device Advisor's rules, so a test can prove that the
    /// qualification catches them. Every board ships with [`Misbehaviour::NONE`].
    pub misbehaviour: Misbehaviour,
}

/// Rule breaks a test device can be built with (see [`Settings::misbehaviour`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Misbehaviour {
    /// Subscribe again on every connection, even when the broker resumed a session that
    /// already holds the subscription.
    pub resubscribe_on_resume: bool,
    /// On a SUBACK timeout, carry on without the subscription instead of retrying it.
    pub ignore_suback_timeout: bool,
}

impl Misbehaviour {
    pub const NONE: Self = Self {
        resubscribe_on_resume: false,
        ignore_suback_timeout: false,
    };
}

/// How a QoS 1 publish left without PUBACK for `publish_retry` is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retransmit {
    /// Ask for a DUP PUBLISH with the same id on the live connection (MQTT 3.1.1 clients,
    /// as Device Advisor's retry case expects).
    OnLiveConnection,
    /// Drop the connection (`puback-timeout`) and resend on reconnect: MQTT 5 forbids
    /// resending on a live connection, and minimq replays its unacknowledged publishes
    /// (DUP, same id) when the session resumes.
    ByReconnect,
}

impl Settings {
    pub const fn new(firmware: &'static str, board: &'static str) -> Self {
        Self {
            firmware,
            board,
            backoff: BackoffConfig::DEVICE,
            stable_after: Duration::from_secs(5),
            min_connect_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(30),
            connack_timeout: Duration::from_secs(5),
            subscribe_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            publish_retry: Duration::from_secs(5),
            retransmit: Retransmit::OnLiveConnection,
            clock_floor: DEFAULT_CLOCK_FLOOR,
            misbehaviour: Misbehaviour::NONE,
        }
    }
}
