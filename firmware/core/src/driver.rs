//! The driver loop every board runs: [`Runner`] carries out the
//! [`session`](crate::session)'s actions with the board's hooks and reports what happened.
//!
//! # The loop
//! - Drain the queue of actions: log lines go to the serial port; requests run to
//!   completion (reading the flash image, joining the network, each bounded by the
//!   board); an SNTP sync is handed to [`TimeSync`] and answered beside the connection.
//! - Wait for whichever comes first: the session's deadline, the MQTT connection (minimq
//!   is polled all the time, so inbound messages and acks are reported as they arrive),
//!   the network going down, the SNTP answer, the next heap report, or a stop request.
//! - Feed the resulting event, which queues more actions.
//!
//! # The board boundary ([`board`])
//! A board implements [`Board`] (log, heap figures, status LED, stop requests) and four
//! tiny hooks held apart so the runner can borrow them side by side: [`Clock`],
//! [`Network`] (join, link loss, TCP open), [`TimeSync`] (SNTP) and [`Storage`] (the
//! flash image). The runner owns everything else: the TLS handshake with the core's
//! provider and verifier, minimq, the write gate, timeouts, and every buffer size
//! ([`buffers`]).
//!
//! A board may: bound its own requests (join, open) and fail them; answer SNTP from a
//! task of its own; drop any of its futures at an await point. A board must not: cancel
//! a write on the socket it opened (a half-sent TLS record desynchronises the stream for
//! good), keep state the session should own (retries, backoff, cadence), or log lines of
//! its own between the session's.
//!
//! # Cancel-safety
//! Reads: the socket is read through [`RecordAtomic`](crate::tls::RecordAtomic), which
//! hands up whole records only, so a pending `poll()` may be dropped when a timer wins.
//! Writes are never cancelled on a connection that stays in use: a deadline, timer or
//! board event wins over a pending `poll()` only once the [`WriteGate`] is idle. A write
//! still under way after [`IO_TIMEOUT_MS`] (a broker that stopped reading) ends the
//! connection: it is reported lost and dropped as a whole, never written to again.

use alloc::collections::VecDeque;
use core::future::{Future, pending};

use embassy_futures::select::{Either, Either3, select, select3};
use embedded_tls::{TlsConfig, TlsConnection, TlsContext};

use crate::config::DeviceConfig;
use crate::image::{self, CredentialBuffers, ImageError, ImageFailure};
use crate::log::{
    ConnectError, ConnectFailure, CredSource, DisconnectReason, NetError, ProtocolViolation,
    TlsError as TlsSlug,
};
use crate::mqtt::{self, BrokerNotes, OwnedAction, Tracker, Watched};
use crate::session::{Action, Duration, Event, Instant, Phase, Retransmit, Session, Settings};
use crate::tls::{
    CertVerifier, DeviceKey, DeviceProvider, Gated, RecordAtomic, WriteGate, handshake_error_kind,
    handshake_failure,
};

pub mod board;
pub mod buffers;

pub use board::{Board, Clock, Jitter, Network, Storage, TimeSync};
pub use buffers::{ConnBuffers, Link, LinkError, MqttBuffers, Suite, Tls, TlsBuffers};

/// How often the `heap:` line is logged (besides once after each connect).
pub const HEAP_REPORT_EVERY_MS: u64 = 30_000;
/// Longest a write may stay under way (a broker that stopped reading, a zero TCP
/// window) before the connection counts as lost.
pub const IO_TIMEOUT_MS: u64 = 10_000;
/// Longest a graceful MQTT DISCONNECT may take; the connection is dropped afterwards
/// either way, so cutting it short cannot desynchronise anything.
const DISCONNECT_TIMEOUT_MS: u64 = 2_000;

/// The session settings every board shares, for `firmware` on `board` built at
/// `build_epoch` (Unix seconds, the floor for a plausible SNTP time). minimq speaks
/// MQTT 5, which resends an unacknowledged publish only on reconnect, and replays it
/// itself when the session resumes.
pub fn settings(firmware: &'static str, board: &'static str, build_epoch: &str) -> Settings {
    let mut settings = Settings::new(firmware, board);
    settings.retransmit = Retransmit::ByReconnect;
    settings.clock_floor = crate::session::clock_floor(build_epoch);
    settings
}

/// The board's hooks, each held apart.
pub struct Parts<B: Board> {
    pub board: B,
    pub clock: B::Clock,
    pub network: B::Network,
    pub time: B::TimeSync,
    pub storage: B::Storage,
    pub rng: B::Rng,
}

/// The socket type of board `B`'s network.
type Socket<'b, B> = <<B as Board>::Network as Network>::Socket<'b>;

/// Why [`Runner::drive`] returned.
enum Flow {
    /// The session asks for a connection.
    Connect,
    /// The connection passed in is closed (or dead); drop it.
    Closed,
    /// The session stopped.
    Stop,
}

/// Sizes of the loaded credential files.
#[derive(Debug, Clone, Copy)]
struct Loaded {
    cert: usize,
    key: usize,
    ca: usize,
}

/// The driver loop of one device: the session, the board's hooks and the state the
/// loop keeps between events. Buffers a connection borrows are passed to [`Runner::run`].
pub struct Runner<'a, B: Board> {
    board: B,
    clock: B::Clock,
    network: B::Network,
    time: B::TimeSync,
    storage: B::Storage,
    rng: B::Rng,
    session: Session<Jitter<B::Rng>>,
    queue: VecDeque<OwnedAction>,
    /// The last `Sleep` of the last `handle` call.
    deadline: Option<Instant>,
    stopped: bool,
    /// The session has been told the network is up.
    net_up: bool,
    next_heap: Instant,
    config: Option<DeviceConfig>,
    creds: &'a mut CredentialBuffers,
    loaded: Option<Loaded>,
    /// The SUBSCRIBE, keep-alive probe and QoS 1 publishes awaiting acks.
    tracker: Tracker,
    /// What the broker says that minimq does not pass on (DISCONNECT code, Maximum QoS).
    notes: &'a BrokerNotes,
    gate: &'a WriteGate,
    /// The board's RSA exponentiation hardware for an RSA device key; dropped after a
    /// signature from it fails the public-key check.
    #[cfg(feature = "tls-rsa")]
    rsa: Option<&'a mut dyn crate::tls::rsa_accel::RsaExponentiator>,
}

impl<'a, B: Board> Runner<'a, B> {
    /// A runner for `settings` (see [`settings`]); `creds` holds the loaded credential
    /// files for every handshake.
    pub fn new(
        parts: Parts<B>,
        settings: Settings,
        creds: &'a mut CredentialBuffers,
        gate: &'a WriteGate,
        notes: &'a BrokerNotes,
    ) -> Self {
        let Parts {
            board,
            clock,
            network,
            time,
            storage,
            rng,
        } = parts;
        let next_heap = clock.now() + Duration::from_millis(HEAP_REPORT_EVERY_MS);
        Self {
            session: Session::new(settings, Jitter(rng.clone())),
            board,
            clock,
            network,
            time,
            storage,
            rng,
            queue: VecDeque::new(),
            deadline: None,
            stopped: false,
            net_up: false,
            next_heap,
            config: None,
            creds,
            loaded: None,
            tracker: Tracker::new(),
            notes,
            gate,
            #[cfg(feature = "tls-rsa")]
            rsa: None,
        }
    }

    /// Sign CertificateVerify for an RSA device key with the board's hardware `hw` (see
    /// [`crate::tls::rsa_accel`]); without it, an RSA key signs in software. A signature
    /// from `hw` that fails the public-key check is replaced by a software one, and `hw`
    /// is not used again.
    #[cfg(feature = "tls-rsa")]
    #[must_use]
    pub fn with_rsa_exponentiator(
        mut self,
        hw: &'a mut dyn crate::tls::rsa_accel::RsaExponentiator,
    ) -> Self {
        self.rsa = Some(hw);
        self
    }

    /// Whether CertificateVerify is signed with the board's RSA hardware (given and not
    /// dropped after a fault).
    #[cfg(feature = "tls-rsa")]
    #[must_use]
    pub fn uses_rsa_exponentiator(&self) -> bool {
        self.rsa.is_some()
    }

    /// The board, e.g. to read what it recorded.
    pub fn board(&self) -> &B {
        &self.board
    }

    /// Run the device until the session stops (it never does on a chip: only a board's
    /// stop request stops it).
    pub async fn run(&mut self, bufs: &mut ConnBuffers<<B::Network as Network>::SocketBuffers>) {
        let ConnBuffers { tls, mqtt, socket } = bufs;
        // The MQTT buffers go to the minimq session once the config names the client.
        let mut spare_mqtt = Some(mqtt);
        let mut client: Option<minimq::Session<'_>> = None;

        self.feed(Event::Start);
        loop {
            match self.drive(None).await {
                Flow::Stop => return,
                Flow::Closed => {}
                Flow::Connect => {
                    if client.is_none()
                        && let (Some(config), Some(bufs)) =
                            (self.config.as_ref(), spare_mqtt.take())
                    {
                        // Fails only for a client id minimq cannot hold; every later
                        // attempt then fails the same way, logged and backed off.
                        client = mqtt::session(
                            &config.client_id,
                            config.keepalive_s,
                            &mut bufs.rx,
                            &mut bufs.tx,
                        )
                        .ok();
                    }
                    let Some(client) = client.as_mut() else {
                        self.connect_failed(ConnectError::Protocol);
                        continue;
                    };
                    if let Some(mut conn) = self.connect(client, tls, socket).await {
                        self.board.set_connected(true);
                        let flow = self.drive(Some(&mut conn)).await;
                        self.board.set_connected(false);
                        if let Flow::Stop = flow {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Feed one event with the current time; its actions join the queue.
    fn feed(&mut self, event: Event<'_>) {
        let queue = &mut self.queue;
        let mut deadline = None;
        self.session
            .handle(self.clock.now(), event, &mut |action| match action {
                Action::Sleep(t) => deadline = Some(t),
                other => queue.extend(OwnedAction::from_action(other)),
            });
        self.deadline = deadline;
        match event {
            Event::NetUp { .. } => self.net_up = true,
            Event::NetDown(_) => self.net_up = false,
            _ => {}
        }
        if self.session.phase() == Phase::Stopped {
            self.stopped = true;
        }
    }

    fn connect_failed(&mut self, error: ConnectError) {
        self.feed(Event::ConnectFailed(ConnectFailure::Mqtt(error)));
    }

    /// Carry out queued actions and wait for events until the session asks for a
    /// connection, the connection `conn` ends, or the session stops.
    async fn drive<'b>(&mut self, mut conn: Option<&mut Link<'_, '_, 'b, Socket<'b, B>>>) -> Flow {
        loop {
            while let Some(action) = self.queue.pop_front() {
                match action {
                    OwnedAction::Connect => {
                        if let Some(c) = conn.take() {
                            // Not expected while connected; close first, then connect.
                            self.queue.push_front(OwnedAction::Connect);
                            self.close(c).await;
                            return Flow::Closed;
                        }
                        return Flow::Connect;
                    }
                    OwnedAction::Disconnect => {
                        if let Some(c) = conn.take() {
                            self.close(c).await;
                            return Flow::Closed;
                        }
                    }
                    other => {
                        if self.carry_out(other, conn.as_deref_mut()).await.is_err() {
                            return Flow::Closed;
                        }
                    }
                }
            }
            if self.stopped {
                return Flow::Stop;
            }
            if self.wait(conn.as_deref_mut()).await.is_err() {
                return Flow::Closed;
            }
        }
    }

    /// Carry out one action. `Err` means the connection died (already reported).
    async fn carry_out<'b>(
        &mut self,
        action: OwnedAction,
        conn: Option<&mut Link<'_, '_, 'b, Socket<'b, B>>>,
    ) -> Result<(), ()> {
        let timeout = IoTimeout(&self.clock);
        let outcome = match action {
            OwnedAction::Log(line) => {
                self.board.log(&line);
                return Ok(());
            }
            OwnedAction::LoadConfig => {
                match self.load_config() {
                    Ok(config) => {
                        self.feed(Event::ConfigLoaded(&config));
                        self.config = Some(config);
                    }
                    Err(failure) => self.feed(failure.config_event()),
                }
                return Ok(());
            }
            OwnedAction::LoadCredentials => {
                match self.load_credentials() {
                    Ok((loaded, cert_not_after)) => {
                        self.loaded = Some(loaded);
                        self.feed(Event::CredsLoaded {
                            cert: loaded.cert,
                            key: loaded.key,
                            ca: loaded.ca,
                            source: CredSource::Flash,
                            cert_not_after,
                        });
                    }
                    Err(failure) => self.feed(failure.creds_event()),
                }
                return Ok(());
            }
            OwnedAction::JoinNetwork => {
                let result = match &self.config {
                    Some(config) => self.network.join(config).await,
                    None => Err(NetError::Timeout),
                };
                match result {
                    Ok(local_addr) => self.feed(Event::NetUp { local_addr }),
                    Err(e) => self.feed(Event::NetDown(e)),
                }
                return Ok(());
            }
            // Answered in `wait`, beside the connection.
            OwnedAction::SyncTime => {
                if let Some(config) = &self.config {
                    self.time.request(&config.ntp);
                }
                return Ok(());
            }
            OwnedAction::Connect | OwnedAction::Disconnect => return Ok(()),
            OwnedAction::Subscribe { topic, qos } => {
                let Some(conn) = conn else { return Ok(()) };
                self.tracker.subscribe(conn, topic, qos, &timeout).await
            }
            action @ OwnedAction::Publish { .. } => {
                let (Some(conn), Some(publish)) = (conn, action.as_publish()) else {
                    return Ok(());
                };
                self.tracker.publish(conn, publish, &timeout).await
            }
            OwnedAction::Ping => {
                let Some(conn) = conn else { return Ok(()) };
                self.tracker.probe(conn, &timeout).await
            }
        };
        self.report(outcome)
    }

    /// `/config.json` from the flash image.
    fn load_config(&mut self) -> Result<DeviceConfig, ImageFailure> {
        let buf = &mut self.creds.config;
        let mut flash = self.storage.image()?;
        image::mount(&mut flash, |fs| {
            let json = fs.read_file(image::CONFIG_PATH, &mut buf[..])?;
            DeviceConfig::from_json(json).map_err(ImageError::Config)
        })
        .map_err(|e| ImageFailure::of(&e))
    }

    /// The three DER files (and the config again, validated with them) into the
    /// credential buffers, where they stay for every handshake; with the device
    /// certificate's notAfter, for the session's check of SNTP times.
    fn load_credentials(&mut self) -> Result<(Loaded, Option<u64>), ImageFailure> {
        self.loaded = None;
        let files = &mut *self.creds;
        let mut flash = self.storage.image()?;
        image::mount(&mut flash, |fs| {
            let creds = fs.load_credentials(files)?;
            let loaded = Loaded {
                cert: creds.cert.len(),
                key: creds.key.len(),
                ca: creds.ca.len(),
            };
            Ok((loaded, crate::tls::certificate_not_after(creds.cert)))
        })
        .map_err(|e| ImageFailure::of(&e))
    }

    /// Wait for one event and feed it. `Err` means the connection died (reported).
    async fn wait<'b>(
        &mut self,
        conn: Option<&mut Link<'_, '_, 'b, Socket<'b, B>>>,
    ) -> Result<(), ()> {
        let (gate, clock) = (self.gate, &self.clock);
        let (deadline, next_heap) = (self.deadline, self.next_heap);
        let network = &self.network;
        let net_up = self.net_up;
        let time = &mut self.time;
        let board = &mut self.board;
        // Timers and board events win over a pending poll() only between writes.
        let deadline = async {
            match deadline {
                Some(t) => clock.sleep_until(t).await,
                None => pending().await,
            }
            between_writes(gate, clock).await
        };
        let heap_due = async {
            clock.sleep_until(next_heap).await;
            between_writes(gate, clock).await
        };
        let board_event = async {
            let woke = select3(
                async {
                    if net_up {
                        network.link_lost().await
                    } else {
                        pending().await
                    }
                },
                time.answer(),
                board.stop_requested(),
            )
            .await;
            (woke, between_writes(gate, clock).await)
        };
        let connected = conn.is_some();
        let mut conn = conn;
        let polled = async {
            match conn.as_deref_mut() {
                Some(c) => c.poll().await,
                None => pending().await,
            }
        };
        let woke = select(select3(deadline, heap_due, board_event), polled).await;
        match woke {
            Either::First(Either3::Third((woke, gate))) => {
                // What the board said is taken: report it even if the connection turns
                // out dead.
                match woke {
                    Either3::First(()) => self.feed(Event::NetDown(NetError::LinkLost)),
                    Either3::Second(answer) => self.feed(answer),
                    Either3::Third(reason) => self.feed(Event::Shutdown(reason)),
                }
                if connected && gate == Gate::Stalled {
                    return self.lost(DisconnectReason::Io);
                }
            }
            // A write poll() started has stalled: the connection is dead, and dropping it
            // (the only way out) is safe because it is never used again.
            Either::First(Either3::First(Gate::Stalled))
            | Either::First(Either3::Second(Gate::Stalled))
                if connected =>
            {
                return self.lost(DisconnectReason::Io);
            }
            Either::First(Either3::First(_)) => self.feed(Event::Tick),
            Either::First(Either3::Second(_)) => {
                // From now, not from the missed time: a long request must not cause a
                // burst of catch-up reports.
                self.next_heap = self.clock.now() + Duration::from_millis(HEAP_REPORT_EVERY_MS);
                self.report_heap();
            }
            Either::Second(polled) => {
                // Report the message while it borrows the connection, then look at acks.
                let mut violation = None;
                let (inbound, error) = match polled {
                    Ok(Some(msg)) => {
                        violation = mqtt::inbound_violation(&msg);
                        if violation.is_none() {
                            self.feed(Event::Inbound {
                                topic: msg.topic(),
                                payload: msg.payload(),
                            });
                        }
                        (true, None)
                    }
                    Ok(None) => (false, None),
                    Err(e) => (false, Some(e)),
                };
                if let Some(c) = conn {
                    if let Some(violation) = violation {
                        return self.refuse(violation, c).await;
                    }
                    return self.polled(inbound, error, c);
                }
            }
        }
        Ok(())
    }

    fn report_heap(&mut self) {
        if let Some(report) = self.board.heap() {
            self.feed(Event::Heap(report));
        }
    }

    /// Report what one `poll()` brought: an inbound message, acks, any other packet, or
    /// the end of the connection.
    fn polled<'b>(
        &mut self,
        inbound: bool,
        error: Option<LinkError>,
        conn: &mut Link<'_, '_, 'b, Socket<'b, B>>,
    ) -> Result<(), ()> {
        // The tracker feeds the session while it is borrowed; it is put back at once.
        let mut tracker = core::mem::take(&mut self.tracker);
        let outcome = tracker.polled(
            inbound,
            error,
            conn.is_connected(),
            conn.session(),
            &mut |event| self.feed(event),
        );
        self.tracker = tracker;
        outcome.or_else(|reason| self.lost(reason))
    }

    /// The broker broke the protocol: DISCONNECT with the reason (bounded in time), then
    /// report it. Always `Err`: the connection is over.
    async fn refuse<'b>(
        &mut self,
        violation: ProtocolViolation,
        conn: &mut Link<'_, '_, 'b, Socket<'b, B>>,
    ) -> Result<(), ()> {
        let disconnect = mqtt::violation_disconnect(violation);
        let _ = within(
            &self.clock,
            DISCONNECT_TIMEOUT_MS,
            conn.disconnect_with(disconnect),
        )
        .await;
        self.tracker.lost();
        self.feed(Event::ProtocolViolation(violation));
        Err(())
    }

    /// Report what an action on the connection brought. `Err` means the connection died
    /// (reported).
    fn report(&mut self, outcome: mqtt::Outcome) -> Result<(), ()> {
        match outcome {
            Ok(event) => {
                if let Some(event) = event {
                    self.feed(event);
                }
                Ok(())
            }
            Err(reason) => self.lost(reason),
        }
    }

    /// The connection died: report it (with the broker's DISCONNECT reason code if it
    /// sent one). Always `Err`, for the caller to return.
    fn lost(&mut self, reason: DisconnectReason) -> Result<(), ()> {
        self.tracker.lost();
        self.feed(self.notes.lost_event(reason));
        Err(())
    }

    /// Send DISCONNECT (bounded in time) and let the caller drop the connection.
    async fn close<'b>(&self, conn: &mut Link<'_, '_, 'b, Socket<'b, B>>) {
        if conn.is_connected() {
            let _ = within(&self.clock, DISCONNECT_TIMEOUT_MS, conn.disconnect()).await;
        }
    }

    /// DNS + TCP + TLS + CONNECT, racing the session's deadline (its connect timeout)
    /// and the board's stop request. Reports the outcome; returns the connection.
    async fn connect<'s, 'm, 'b>(
        &mut self,
        client: &'s mut minimq::Session<'m>,
        tls: &'b mut TlsBuffers,
        socket: &'b mut <B::Network as Network>::SocketBuffers,
    ) -> Option<Link<'s, 'm, 'b, Socket<'b, B>>>
    where
        'a: 'b,
        B::Network: 'b,
    {
        let (Some(loaded), Some(config)) = (self.loaded, &self.config) else {
            self.connect_failed(ConnectError::Protocol);
            return None;
        };
        let unix_now = self.session.unix_time(self.clock.now());
        let started = self.clock.now();
        let files = &*self.creds;
        let (cert, key, ca) = (
            &files.cert[..loaded.cert],
            &files.key[..loaded.key],
            &files.ca[..loaded.ca],
        );
        let host = config.endpoint.host.as_str();
        let port = config.endpoint.port;
        let rng = self.rng.clone();
        let (network, gate, notes) = (&self.network, self.gate, self.notes);
        let clock = &self.clock;
        let connack_ms = self.session.settings().connack_timeout.as_millis();
        #[cfg(feature = "tls-rsa")]
        let rsa = self
            .rsa
            .as_deref_mut()
            .map(|hw| hw as &mut dyn crate::tls::rsa_accel::RsaExponentiator);
        // Set when the RSA hardware's signature failed its check in this attempt.
        #[cfg(feature = "tls-rsa")]
        let rsa_fault = core::cell::Cell::new(false);
        let attempt = async {
            let key = DeviceKey::from_der(key)
                .map_err(|_| ConnectFailure::Tls(TlsSlug::UnsupportedAlgorithm))?;
            let verifier = CertVerifier::new(ca, unix_now);
            let mut provider: DeviceProvider<'_, B::Rng, Suite> =
                DeviceProvider::new(rng, key, cert, verifier);
            #[cfg(feature = "tls-rsa")]
            if let Some(hw) = rsa {
                provider = provider.with_rsa_exponentiator(hw);
            }
            let socket = network.open(host, port, socket).await?;
            let records = RecordAtomic::new(Gated::new(socket, gate), &mut tls.record);
            let mut conn = TlsConnection::new(records, &mut tls.read, &mut tls.write);
            let config = TlsConfig::new().with_server_name(host);
            let opened = conn.open(TlsContext::new(&config, &mut provider)).await;
            #[cfg(feature = "tls-rsa")]
            rsa_fault.set(provider.rsa_exponentiator_faulted());
            if let Err(error) = opened {
                // Prefer the verifier's precise reason over embedded-tls's coarse error.
                let kind = handshake_error_kind(&error, provider.verify_error());
                return Err(ConnectFailure::Tls(handshake_failure(&error, kind)));
            }
            within(clock, connack_ms, client.connect(Watched::new(conn, notes)))
                .await
                .ok_or(ConnectFailure::Mqtt(ConnectError::ConnackTimeout))?
                .map_err(|e| mqtt::connect_failure(&e))
        };
        let deadline = self.deadline;
        // A cancelled attempt drops the half-open connection as a whole, so nothing is
        // left to desynchronise.
        let outcome = select3(
            attempt,
            async {
                match deadline {
                    Some(t) => clock.sleep_until(t).await,
                    None => pending().await,
                }
            },
            self.board.stop_requested(),
        )
        .await;
        #[cfg(feature = "tls-rsa")]
        if rsa_fault.get() && self.rsa.take().is_some() {
            // A broken or glitched accelerator does not mend itself: software from now on,
            // said once.
            let line = crate::log::Line::rsa_accelerator_fault(self.clock.now().as_millis());
            self.board.log(&line);
        }
        match outcome {
            Either3::First(Ok(conn)) => {
                let handshake_ms =
                    u32::try_from(self.clock.now().saturating_since(started).as_millis()).ok();
                self.tracker.connected();
                self.feed(Event::Connected {
                    session_present: conn.connect_event() == minimq::ConnectEvent::Reconnected,
                    handshake_ms,
                });
                if let Some(event) = self.notes.max_qos_event() {
                    self.feed(event);
                }
                self.report_heap();
                Some(conn)
            }
            Either3::First(Err(failure)) => {
                self.feed(Event::ConnectFailed(failure));
                None
            }
            // The session's connect timeout: it logs and backs off.
            Either3::Second(()) => {
                self.feed(Event::Tick);
                None
            }
            Either3::Third(reason) => {
                self.feed(Event::Shutdown(reason));
                None
            }
        }
    }
}

/// Whether the connection's writes let a timer through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// No write under way: the timer's event can be handled.
    Idle,
    /// A write has not finished within [`IO_TIMEOUT_MS`] of the timer.
    Stalled,
}

/// Wait until no write is under way on the connection, at most [`IO_TIMEOUT_MS`].
async fn between_writes<C: Clock>(gate: &WriteGate, clock: &C) -> Gate {
    match within(clock, IO_TIMEOUT_MS, gate.idle()).await {
        Some(()) => Gate::Idle,
        None => Gate::Stalled,
    }
}

/// `fut`'s output, or `None` if it did not finish within `ms` milliseconds.
async fn within<C: Clock, F: Future>(clock: &C, ms: u64, fut: F) -> Option<F::Output> {
    let until = clock.now() + Duration::from_millis(ms);
    match select(fut, clock.sleep_until(until)).await {
        Either::First(output) => Some(output),
        Either::Second(()) => None,
    }
}

/// [`IO_TIMEOUT_MS`] on a SUBSCRIBE or PUBLISH write.
struct IoTimeout<'c, C>(&'c C);

impl<C: Clock> mqtt::WriteTimeout for IoTimeout<'_, C> {
    async fn bound<F: Future>(&self, fut: F) -> Option<F::Output> {
        within(self.0, IO_TIMEOUT_MS, fut).await
    }
}
