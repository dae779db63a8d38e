//! The device session: a sans-IO state machine (DESIGN contract 1).
//!
//! The driver (the ESP32-C3 firmware, the virtual device) owns the clock and the I/O.
//! It feeds [`Event`]s, each with the current [`Instant`], into [`Session::handle`], and
//! carries out the [`Action`]s handed to its callback, in order:
//!
//! ```text
//! session.handle(now, Event::Start, &mut |action| queue.push(action.into_owned_form()));
//! loop {
//!     // wait for I/O or until the last `Action::Sleep(until)` (= `next_deadline()`)
//!     let event = select(io_event, sleep_until(deadline)).await;  // Tick on timeout
//!     session.handle(now(), event, &mut |action| ...);
//! }
//! ```
//!
//! Every call ends with `Action::Sleep(deadline)` when the session has a deadline; the
//! driver must send `Event::Tick` at (or after) that time if nothing else happened.
//! Every deadline is strictly in the future when handed out, so a driver that follows
//! this never spins. `Action::Log` lines are printed to the serial port as they come.
//!
//! # Phases
//! `Start` → load config (`LoadConfig`) → load credentials (`LoadCredentials`) → network
//! (`JoinNetwork`) → SNTP (`SyncTime`; TLS needs a valid clock to check certificate
//! dates, so nothing connects before it) → `Connect` → `Subscribe` → run (publish on the
//! cadence). Each request has a timeout; a failure or timeout is logged and retried after
//! a backoff. A lost connection goes back to `Connect` (or to the network phase if the
//! network went down), after the reconnect backoff.
//!
//! # Contract for the driver
//! - Report each request's outcome: `ConfigLoaded`/`ConfigFailed`,
//!   `CredsLoaded`/`CredsFailed`, `NetUp`/`NetDown`, `TimeSynced`/`TimeSyncFailed`,
//!   `Connected`/`ConnectFailed`, `Subscribed`/`SubscribeFailed`.
//! - Report `Disconnected(reason)` when the client reports the connection lost, and
//!   carry out `Disconnect` by closing the transport (no event needed afterwards).
//! - Keep-alive: report every packet from the broker — `Inbound`, `PublishAcked`,
//!   `Subscribed`, and `Received` for anything else (PINGRESP…). The session asks for
//!   `Ping` when the link has been quiet for 3/4 of the keep-alive and declares the link
//!   dead (`Disconnect` + reconnect) after 1.5x keep-alive without anything received. A
//!   client that pings on its own (minimq) may ignore `Ping`, but must still report
//!   received traffic.
//! - QoS 1: each new publish carries a proposed `packet_id`. If the client assigns its
//!   own ids (minimq 0.13 does), report the id it used with `PublishSent { seq,
//!   packet_id }`; the session then uses that id. Report `PublishAcked(id)` on PUBACK.
//!   Without PUBACK within `publish_retry`, and on every reconnect, the session asks again
//!   with the same `seq`, payload and `packet_id` and `dup: true`: send a DUP PUBLISH with
//!   that id. A client that keeps the packet and replays it itself (minimq replays its
//!   retained publishes with DUP on reconnect) satisfies a reconnect retransmit by doing
//!   nothing new; for a timeout retransmit it must put the same packet on the wire again —
//!   or, for an MQTT 5 client, set [`Retransmit::ByReconnect`]: the session then drops the
//!   link (`puback-timeout`) instead and the retransmit happens on reconnect.
//! - `Connect` means: open TCP + TLS to the configured endpoint and send CONNECT with the
//!   configured client id and keep-alive; the session needs the broker's answer within
//!   `connect_timeout`. After `Connected`, report the CONNACK's Maximum QoS with `MaxQos`
//!   if it sent one (publishes then go out at that QoS).
//! - `SyncTime` can come in any phase after the first sync (an hourly re-sync, or at once
//!   after a handshake failed for a date reason): run it beside the connection and report
//!   `TimeSynced`, `TimeSyncFailed` or `TimeKissOfDeath`. The session refuses a time before
//!   `Settings::clock_floor` or long after the device certificate's notAfter.
//! - Say what the broker said when it can be told: `ServerDisconnected { code }` for its
//!   DISCONNECT, `PublishRefused` for a PUBACK with a failure code, `ProtocolViolation`
//!   after closing a connection on which the broker broke MQTT 5.
//!
//! # Layout
//! - `mod.rs`: the state machine's frame: phases, requests, deadlines, and `on_event`,
//!   which hands each event to the handler of its concern;
//! - `boot`: config, credentials, network and clock events; `link`: the MQTT connection's
//!   events and its liveness (keep-alive, dead link); `traffic`: inbound messages and
//!   the acks that settle QoS 1 publishes;
//! - [`io`](Event): the events in and the actions out; [`settings`](Settings): the board's
//!   policy and the shared constants;
//! - `clock`: which SNTP times are believed, and the re-sync; `publishing`: the cadence's
//!   publishes and QoS 1 retransmits; `inflight`: their state;
//! - [`hello`]: the `hello world #N` payload, made and read back; [`backoff`],
//!   [`cadence`], [`time`]: the policies and the time types.

pub mod backoff;
mod boot;
pub mod cadence;
mod clock;
pub mod hello;
mod inflight;
mod io;
mod link;
mod publishing;
mod settings;
pub mod time;
mod traffic;

#[cfg(test)]
mod tests;

use heapless::{String, Vec};

pub use backoff::{Backoff, BackoffConfig, JitterShape, RandomSource};
pub use cadence::{CadenceSchedule, Fire};
pub use hello::{MAX_PAYLOAD, hello_payload, hello_seq};
pub use inflight::MAX_IN_FLIGHT;
pub use io::{Action, Event, Publish, Qos};
pub use settings::{
    CERT_EXPIRY_MARGIN, DEFAULT_CLOCK_FLOOR, DEFAULT_RESYNC, KISS_OF_DEATH_BACKOFF, Misbehaviour,
    Retransmit, SESSION_EXPIRY_S, Settings, clock_floor,
};
pub use time::{Duration, Instant};

use inflight::{InFlight, next_free_id};
use link::{Link, dead_after};

use crate::config::{DeviceConfig, MAX_HOST, MAX_TOPIC};
use crate::log::{
    ConfigFailure, ConnectError, ConnectFailure, DisconnectReason, FlashFile, ImplausibleTime,
    Line, LoadError, NetError, SkipReason, Stage, SubscribeError, TimeError,
};

/// Which phase the session is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Before `Start`.
    Idle,
    Config,
    Creds,
    Network,
    Time,
    Connect,
    Subscribe,
    Run,
    Stopped,
}

/// The phase's request: due to be sent at a time, or sent and awaited until a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    None,
    Due(Instant),
    Awaiting(Instant),
}

/// What the session keeps from `/config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Profile {
    host: String<MAX_HOST>,
    port: u16,
    pub_topic: String<MAX_TOPIC>,
    sub_topic: String<MAX_TOPIC>,
    qos: Qos,
    keepalive: Duration,
    resync: Duration,
    ntp_host: String<MAX_HOST>,
    ntp_port: u16,
}

type Out<'o> = dyn FnMut(Action<'_>) + 'o;

/// The device session. See the module docs for the driver contract.
pub struct Session<R> {
    settings: Settings,
    rng: R,
    phase: Phase,
    request: Request,
    /// Boot-phase retries (config, creds, network, time); reset when a phase succeeds.
    retry: Backoff,
    /// Reconnects; reset only after a stable connection.
    reconnect: Backoff,
    /// No connect attempt before this (the reconnect backoff survives a network drop).
    connect_not_before: Instant,
    /// When the last connection attempt started: the next waits `min_connect_interval`.
    last_connect: Option<Instant>,
    /// Since when the link has been down, counted from the end of the last connection
    /// that stayed up its stable period (or the first attempt): caps the backoff.
    down_since: Option<Instant>,
    profile: Option<Profile>,
    net_up: bool,
    /// (Unix seconds, instant) of the last SNTP sync.
    clock: Option<(u64, Instant)>,
    /// The device certificate's notAfter, once the credentials are loaded.
    cert_not_after: Option<u64>,
    /// A clock re-sync while connected (or between connects): due, or awaited.
    resync: Request,
    /// Retries of a failed re-sync (the boot phases have `retry`).
    resync_retry: Backoff,
    /// The QoS publishes go out at on this connection: the configured one, or less if
    /// the broker's CONNACK says so.
    link_qos: Qos,
    connected_since: Option<Instant>,
    /// The broker granted the subscription in the session it keeps for this device: a
    /// connection that resumes that session (CONNACK session present) needs no SUBSCRIBE.
    subscription_held: bool,
    link: Link,
    cadence: CadenceSchedule,
    seq: u32,
    next_packet_id: u16,
    in_flight: Vec<InFlight, MAX_IN_FLIGHT>,
    now: Instant,
}

impl<R: RandomSource> Session<R> {
    /// Zero durations in `settings` are raised to 1 ms, so no deadline can equal `now`.
    pub fn new(settings: Settings, rng: R) -> Self {
        let at_least_1ms = |d: Duration| d.max(Duration::from_millis(1));
        let mut settings = settings;
        settings.backoff.floor = at_least_1ms(settings.backoff.floor);
        settings.backoff.base = at_least_1ms(settings.backoff.base);
        settings.connect_timeout = at_least_1ms(settings.connect_timeout);
        settings.subscribe_timeout = at_least_1ms(settings.subscribe_timeout);
        settings.request_timeout = at_least_1ms(settings.request_timeout);
        settings.publish_retry = at_least_1ms(settings.publish_retry);
        Self {
            settings,
            rng,
            phase: Phase::Idle,
            request: Request::None,
            retry: Backoff::new(settings.backoff),
            reconnect: Backoff::new(settings.backoff),
            connect_not_before: Instant::ZERO,
            last_connect: None,
            down_since: None,
            profile: None,
            net_up: false,
            clock: None,
            cert_not_after: None,
            resync: Request::None,
            resync_retry: Backoff::new(settings.backoff),
            link_qos: Qos::AtLeastOnce,
            connected_since: None,
            subscription_held: false,
            link: Link {
                last_rx: Instant::ZERO,
                last_tx: Instant::ZERO,
                ping_sent: None,
            },
            cadence: CadenceSchedule::new(Duration::from_millis(
                crate::config::DEFAULT_PERIOD_MS.into(),
            )),
            seq: 0,
            next_packet_id: 1,
            in_flight: Vec::new(),
            now: Instant::ZERO,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The settings in force (zero durations raised to 1 ms).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether an MQTT connection is up (subscribing or running).
    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Subscribe | Phase::Run)
    }

    /// Sequence number of the last publish (0 before the first).
    pub fn last_seq(&self) -> u32 {
        self.seq
    }

    /// QoS 1 publishes waiting for PUBACK.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Reconnect attempts since the last stable connection.
    pub fn reconnect_attempts(&self) -> u32 {
        self.reconnect.attempt()
    }

    /// Wall-clock Unix seconds at `now`, once SNTP has synced (for certificate checks).
    pub fn unix_time(&self, now: Instant) -> Option<u64> {
        self.clock
            .map(|(epoch, at)| epoch.saturating_add((now - at).as_millis() / 1000))
    }

    /// The earliest time the session needs a `Tick`; always after the last `now`.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        let resync = if self.resync_active() {
            self.resync
        } else {
            Request::None
        };
        for request in [self.request, resync] {
            match request {
                Request::Due(t) | Request::Awaiting(t) => consider(t),
                Request::None => {}
            }
        }
        if self.is_connected()
            && let Some(profile) = &self.profile
        {
            consider(self.link.last_rx + dead_after(profile.keepalive));
            if self.link.ping_sent.is_none() {
                consider(self.ping_due(profile.keepalive));
            }
        }
        if self.phase == Phase::Run {
            if let Some(t) = self.cadence.next_deadline() {
                consider(t);
            }
            if self.link_qos == Qos::AtLeastOnce {
                for f in &self.in_flight {
                    consider(f.sent_at + self.settings.publish_retry);
                }
            }
        }
        next
    }

    fn ping_due(&self, keepalive: Duration) -> Instant {
        self.link.last_rx.min(self.link.last_tx) + keepalive.mul_div(3, 4)
    }

    /// Feed one event at `now`; actions go to `out` in order, the last being
    /// `Action::Sleep` when there is a deadline.
    pub fn handle(&mut self, now: Instant, event: Event<'_>, out: &mut impl FnMut(Action<'_>)) {
        self.handle_dyn(now, event, out);
    }

    fn handle_dyn(&mut self, now: Instant, event: Event<'_>, out: &mut Out<'_>) {
        // A clock that steps back is treated as standing still.
        let now = now.max(self.now);
        self.now = now;
        if self.phase == Phase::Stopped {
            return;
        }
        self.on_event(now, event, out);
        self.service(now, out);
        if let Some(deadline) = self.next_deadline() {
            out(Action::Sleep(deadline));
        }
    }

    fn log(out: &mut Out<'_>, line: Line) {
        out(Action::Log(&line));
    }

    /// What a log line's uptime is: milliseconds since boot.
    fn uptime_ms(now: Instant) -> u64 {
        now.as_millis()
    }

    /// Dispatch by concern: the boot phases, the MQTT link, the traffic on it.
    fn on_event(&mut self, now: Instant, event: Event<'_>, out: &mut Out<'_>) {
        let t = Self::uptime_ms(now);
        match event {
            Event::Start
            | Event::ConfigLoaded(_)
            | Event::ConfigFailed(_)
            | Event::CredsLoaded { .. }
            | Event::CredsFailed { .. }
            | Event::NetUp { .. }
            | Event::NetDown(_)
            | Event::TimeSynced(_)
            | Event::TimeSyncFailed(_)
            | Event::TimeKissOfDeath(_) => self.on_boot_event(now, event, out),
            Event::Connected { .. }
            | Event::ConnectFailed(_)
            | Event::MaxQos(_)
            | Event::Subscribed
            | Event::SubscribeFailed(_)
            | Event::Disconnected(_)
            | Event::ServerDisconnected { .. }
            | Event::ProtocolViolation(_) => self.on_link_event(now, event, out),
            Event::Inbound { .. }
            | Event::PublishSent { .. }
            | Event::PublishAcked(_)
            | Event::PublishRefused { .. }
            | Event::Received => self.on_traffic_event(now, event, out),
            Event::Tick => {}
            Event::Heap(report) => Self::log(out, Line::heap_report(t, &report)),
            Event::Shutdown(reason) => {
                Self::log(out, Line::shutdown(t, reason));
                if self.is_connected() || matches!(self.request, Request::Awaiting(_)) {
                    out(Action::Disconnect);
                }
                self.phase = Phase::Stopped;
                self.request = Request::None;
            }
        }
    }

    /// The SNTP server, for log lines.
    fn ntp_server(&self) -> Option<(&str, u16)> {
        self.profile
            .as_ref()
            .map(|p| (p.ntp_host.as_str(), p.ntp_port))
    }

    fn load_profile(&mut self, config: &DeviceConfig) {
        self.profile = Some(Profile {
            host: config.endpoint.host.clone(),
            port: config.endpoint.port,
            pub_topic: config.pub_topic.clone(),
            sub_topic: config.sub_topic.clone(),
            qos: Qos::from_u8(config.qos),
            keepalive: Duration::from_secs(config.keepalive_s.max(1).into()),
            resync: Duration::from_secs(config.ntp.resync_s.into()),
            ntp_host: config.ntp.host.clone(),
            ntp_port: config.ntp.port,
        });
        // The grid is anchored on the first subscribe, so a new period applies cleanly.
        if !self.cadence.is_started() {
            self.cadence = CadenceSchedule::new(Duration::from_millis(config.period_ms.into()));
        }
    }

    /// Enter a phase whose request goes out now.
    fn enter(&mut self, phase: Phase, now: Instant) {
        self.phase = phase;
        self.request = match phase {
            Phase::Connect => Request::Due(now.max(self.connect_not_before)),
            Phase::Idle | Phase::Run | Phase::Stopped => Request::None,
            _ => Request::Due(now),
        };
    }

    fn after_creds(&mut self, now: Instant) {
        if self.net_up {
            self.after_network(now);
        } else {
            self.enter(Phase::Network, now);
        }
    }

    fn after_network(&mut self, now: Instant) {
        if self.clock.is_some() {
            self.enter(Phase::Connect, now);
        } else {
            self.enter(Phase::Time, now);
        }
    }

    /// The broker ended the connection (or broke the protocol, and the driver closed it).
    fn closed_by_peer(&mut self, now: Instant, lost: Lost, out: &mut Out<'_>) {
        match self.phase {
            Phase::Subscribe | Phase::Run => self.connection_lost(now, lost, out),
            Phase::Connect if matches!(self.request, Request::Awaiting(_)) => {
                self.connect_failed(now, ConnectFailure::Mqtt(ConnectError::Io), out);
            }
            _ => {}
        }
    }

    /// A boot-phase request failed: try it again after a backoff.
    fn schedule_retry(&mut self, now: Instant, stage: Stage, out: &mut Out<'_>) {
        self.schedule_retry_at_least(now, stage, Duration::ZERO, out);
    }

    fn schedule_retry_at_least(
        &mut self,
        now: Instant,
        stage: Stage,
        at_least: Duration,
        out: &mut Out<'_>,
    ) {
        let delay = self.retry.next_delay(&mut self.rng).max(at_least);
        Self::log(
            out,
            Line::backoff(
                Self::uptime_ms(now),
                stage,
                self.retry.attempt(),
                delay.as_millis(),
            ),
        );
        self.request = Request::Due(now + delay);
    }

    fn schedule_reconnect(&mut self, now: Instant, out: &mut Out<'_>) {
        self.schedule_reconnect_after(now, false, out);
    }

    /// `taken_over`: the broker closed the connection because another client connected
    /// with this client id. That is no outage that ends: coming back fast only takes the
    /// id back and gets taken over again, so the delay follows the attempt count alone
    /// (no outage cap), and the two clients' CONNECTs thin out exponentially.
    fn schedule_reconnect_after(&mut self, now: Instant, taken_over: bool, out: &mut Out<'_>) {
        let down_for = now.saturating_since(*self.down_since.get_or_insert(now));
        let mut delay = if taken_over {
            self.reconnect.next_delay(&mut self.rng)
        } else {
            self.reconnect.next_delay_after(down_for, &mut self.rng)
        };
        // AWS IoT accepts one CONNECT per second per client id.
        if let Some(last) = self.last_connect {
            let earliest = last + self.settings.min_connect_interval;
            delay = delay.max(earliest.saturating_since(now));
        }
        Self::log(
            out,
            Line::backoff(
                Self::uptime_ms(now),
                Stage::Mqtt,
                self.reconnect.attempt(),
                delay.as_millis(),
            ),
        );
        self.connect_not_before = now + delay;
        if self.net_up {
            self.phase = Phase::Connect;
            self.request = Request::Due(self.connect_not_before);
        } else {
            self.enter(Phase::Network, now);
        }
    }

    fn connect_failed(&mut self, now: Instant, failure: ConnectFailure, out: &mut Out<'_>) {
        Self::log(out, Line::connect_failed(Self::uptime_ms(now), failure));
        self.schedule_reconnect(now, out);
        // A certificate that looks expired or not yet valid may be a wrong clock: sync it
        // again before the next attempt (which still waits for its backoff).
        if let ConnectFailure::Tls(e) = failure
            && e.is_time_related()
            && self.net_up
        {
            self.resync = Request::None;
            self.enter(Phase::Time, now);
        }
    }

    fn subscribe_failed(&mut self, now: Instant, error: SubscribeError, out: &mut Out<'_>) {
        if let Some(p) = &self.profile {
            Self::log(
                out,
                Line::mqtt_subscribe_failed(Self::uptime_ms(now), &p.sub_topic, error),
            );
        }
        if error == SubscribeError::Timeout && self.settings.misbehaviour.ignore_suback_timeout {
            // The rule break under test: run on without the subscription (publishing at
            // once if a slot is already due, so no deadline handed out lies in the past).
            self.start_running(now, out);
            self.service_connection(now, out);
            return;
        }
        out(Action::Disconnect);
        let reason = match error {
            SubscribeError::Timeout => DisconnectReason::SubscribeTimeout,
            SubscribeError::Refused => DisconnectReason::SubscribeRefused,
        };
        self.connection_lost(now, Lost::Reason(reason), out);
    }

    /// The connection is gone (already closed, or `Disconnect` was just asked for).
    fn connection_lost(&mut self, now: Instant, lost: Lost, out: &mut Out<'_>) {
        if let Some(since) = self.connected_since.take()
            && now - since >= self.settings.stable_after
        {
            // A connection that stayed up is trusted: the outage starts now.
            self.reconnect.reset();
            self.down_since = Some(now);
        }
        self.link.ping_sent = None;
        let t = Self::uptime_ms(now);
        Self::log(
            out,
            match lost {
                Lost::Reason(reason) => Line::mqtt_disconnected(t, reason),
                Lost::ServerDisconnect(code) => Line::mqtt_server_disconnect(t, code),
            },
        );
        let taken_over = matches!(lost, Lost::ServerDisconnect(SESSION_TAKEN_OVER));
        self.schedule_reconnect_after(now, taken_over, out);
    }

    fn received(&mut self, now: Instant) {
        if self.is_connected() {
            self.link.last_rx = now;
            self.link.ping_sent = None;
        }
    }

    /// Act on every deadline that has passed at `now`.
    fn service(&mut self, now: Instant, out: &mut Out<'_>) {
        self.service_connection(now, out);
        self.service_resync(now, out);
        // A timeout can lead to a request that is due at once (e.g. rejoin the network);
        // settle here so every deadline handed out is in the future. Each round either
        // stops or sends a request awaited for a non-zero timeout, so two rounds suffice.
        for _ in 0..3 {
            match self.request {
                Request::Due(t) if now >= t => self.issue(now, out),
                Request::Awaiting(t) if now >= t => self.timed_out(now, out),
                _ => break,
            }
        }
    }

    fn service_connection(&mut self, now: Instant, out: &mut Out<'_>) {
        if self.is_connected()
            && let Some(keepalive) = self.profile.as_ref().map(|p| p.keepalive)
        {
            if now >= self.link.last_rx + dead_after(keepalive) {
                out(Action::Disconnect);
                self.connection_lost(now, Lost::Reason(DisconnectReason::KeepaliveTimeout), out);
                return;
            }
            if self.link.ping_sent.is_none() && now >= self.ping_due(keepalive) {
                out(Action::Ping);
                self.link.ping_sent = Some(now);
                self.link.last_tx = now;
            }
        }
        if self.phase == Phase::Run {
            if self.settings.retransmit == Retransmit::ByReconnect
                && self.link_qos == Qos::AtLeastOnce
            {
                let retry = self.settings.publish_retry;
                if self.in_flight.iter().any(|f| now >= f.sent_at + retry) {
                    out(Action::Disconnect);
                    self.connection_lost(now, Lost::Reason(DisconnectReason::PubackTimeout), out);
                    return;
                }
            }
            self.retransmit_due(now, out);
            if let Some(fire) = self.cadence.poll(now) {
                if fire.skipped > 0 {
                    Self::log(
                        out,
                        Line::publish_skipped(Self::uptime_ms(now), fire.skipped, SkipReason::Late),
                    );
                }
                self.publish_next(now, out);
            }
        }
    }

    /// Send the current phase's request.
    fn issue(&mut self, now: Instant, out: &mut Out<'_>) {
        let timeout = match self.phase {
            Phase::Config => {
                out(Action::LoadConfig);
                self.settings.request_timeout
            }
            Phase::Creds => {
                out(Action::LoadCredentials);
                self.settings.request_timeout
            }
            Phase::Network => {
                out(Action::JoinNetwork);
                self.settings.request_timeout
            }
            Phase::Time => {
                out(Action::SyncTime);
                self.settings.request_timeout
            }
            Phase::Connect => {
                if let Some(p) = &self.profile {
                    Self::log(
                        out,
                        Line::mqtt_connecting(Self::uptime_ms(now), &p.host, p.port),
                    );
                }
                out(Action::Connect);
                self.last_connect = Some(now);
                self.down_since.get_or_insert(now);
                self.settings.connect_timeout
            }
            Phase::Subscribe => {
                if let Some(p) = &self.profile {
                    out(Action::Subscribe {
                        topic: &p.sub_topic,
                        qos: p.qos,
                    });
                }
                self.link.last_tx = now;
                self.settings.subscribe_timeout
            }
            Phase::Idle | Phase::Run | Phase::Stopped => {
                self.request = Request::None;
                return;
            }
        };
        self.request = Request::Awaiting(now + timeout);
    }

    /// The driver did not answer the current request in time.
    fn timed_out(&mut self, now: Instant, out: &mut Out<'_>) {
        let t = Self::uptime_ms(now);
        match self.phase {
            Phase::Config => {
                Self::log(
                    out,
                    Line::config_failed(t, ConfigFailure::Load(LoadError::Io)),
                );
                self.schedule_retry(now, Stage::Config, out);
            }
            Phase::Creds => {
                Self::log(out, Line::creds_failed(t, FlashFile::Image, LoadError::Io));
                self.schedule_retry(now, Stage::Creds, out);
            }
            Phase::Network => {
                Self::log(out, Line::wifi_down(t, NetError::Timeout));
                self.schedule_retry(now, Stage::Wifi, out);
            }
            Phase::Time => {
                Self::log(
                    out,
                    Line::time_sync_failed(t, TimeError::Timeout, self.ntp_server()),
                );
                self.schedule_retry(now, Stage::Time, out);
            }
            Phase::Connect => {
                out(Action::Disconnect);
                self.connect_failed(now, ConnectFailure::Mqtt(ConnectError::Timeout), out);
            }
            Phase::Subscribe => self.subscribe_failed(now, SubscribeError::Timeout, out),
            Phase::Idle | Phase::Run | Phase::Stopped => self.request = Request::None,
        }
    }
}

/// How a connection ended, for its `mqtt: disconnected` line.
/// MQTT 5 DISCONNECT reason "Session taken over": another client connected with this
/// client id (AWS IoT sends it to the older connection).
const SESSION_TAKEN_OVER: u8 = 0x8E;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    Reason(DisconnectReason),
    /// The broker's DISCONNECT with its reason code.
    ServerDisconnect(u8),
}
