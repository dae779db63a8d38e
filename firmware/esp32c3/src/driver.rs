//! The driver: `firmware_core::session` on the chip — the embassy counterpart of the
//! virtual device's tokio driver.
//!
//! The session owns every policy; this module carries out its actions in order and
//! reports what happened, with `now` from embassy-time (milliseconds since boot). The
//! loop:
//!
//! - drain the queue of actions (logs go to the serial port, requests run to completion:
//!   reading the image, joining WiFi, each bounded by its own timeout below the
//!   session's request timeout; an SNTP sync is handed to the SNTP task, as the session
//!   asks for one while connected too);
//! - wait for whichever comes first: the session's deadline (`Sleep`), the MQTT
//!   connection (minimq is polled all the time, so inbound messages and acks are
//!   reported as they arrive), the network going down, the SNTP task's answer, or the
//!   next heap report;
//! - feed the resulting event, which queues more actions.
//!
//! Writes on a connection that stays in use (SUBSCRIBE, PUBLISH, and whatever `poll()`
//! sends) are never cancelled: a deadline or timer wins over a pending `poll()` only
//! once the transport's write gate is idle (see `crate::transport`). A write that has not
//! finished after [`IO_TIMEOUT`] (a broker that stopped reading) ends the connection:
//! it is reported lost and dropped as a whole, so the cut record is never followed by
//! another.

use alloc::collections::VecDeque;
use core::future::{Future, pending};

use embassy_executor::Spawner;
use embassy_futures::select::{Either, Either4, select, select4};
use embassy_net::IpEndpoint;
use embassy_time::{Duration, Timer, with_timeout};
use esp_hal::rng::Trng;
use esp_storage::FlashStorage;
use firmware_core::config::DeviceConfig;
use firmware_core::driver::{ImageFailure, WriteGate};
use firmware_core::image::{self, CredentialBuffers, ImageError};
use firmware_core::log::{
    ConnectError, ConnectFailure, CredSource, DisconnectReason, FlashFile, Level, Line, LoadError,
    NetError, ProtocolViolation,
};
use firmware_core::mqtt::{self, BrokerNotes, Todo, Tracker, Watched};
use firmware_core::session::{Action, Event, Instant, RandomSource, Retransmit, Session, Settings};
use static_cell::{ConstStaticCell, StaticCell};

use crate::board::{BOARD, Board, FIRMWARE};
use crate::net::Net;
use crate::serial::Serial;
use crate::storage::Partition;
use crate::transport::{
    self, ConnBuffers, IO_TIMEOUT, Identity, MQTT_BYTES, Mqtt, MqttBuffers, MqttError, TLS_BYTES,
    TcpBuffers, TlsBuffers,
};
use crate::{heap, led, sntp};

/// How often the `heap:` line is logged (besides once after each connect).
pub const HEAP_REPORT_EVERY: Duration = Duration::from_secs(30);
/// Longest a graceful MQTT DISCONNECT may take; the connection is dropped afterwards
/// either way, so cutting it short cannot desynchronise anything.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The session's random source for backoff jitter: the hardware RNG.
pub struct Jitter(pub Trng);

impl RandomSource for Jitter {
    fn next_u32(&mut self) -> u32 {
        self.0.random()
    }
}

/// The core's settings for this board. minimq speaks MQTT 5: an unacknowledged publish
/// is resent on reconnect, where minimq replays it itself.
pub fn session_settings() -> Settings {
    let mut settings = Settings::new(FIRMWARE, BOARD);
    settings.retransmit = Retransmit::ByReconnect;
    settings.clock_floor = firmware_core::session::clock_floor(env!("BUILD_EPOCH"));
    settings
}

fn now() -> Instant {
    Instant::from_millis(embassy_time::Instant::now().as_millis())
}

fn at(t: Instant) -> embassy_time::Instant {
    embassy_time::Instant::from_millis(t.as_millis())
}

/// Why [`Driver::drive`] returned.
enum Flow {
    /// The session asks for a connection.
    Connect,
    /// The connection passed in is closed (or dead); drop it.
    Closed,
}

/// Sizes of the files loaded into [`CredentialBuffers`].
#[derive(Debug, Clone, Copy)]
struct Loaded {
    cert: usize,
    key: usize,
    ca: usize,
    /// The device certificate's notAfter, for the session's check of SNTP times.
    cert_not_after: Option<u64>,
}

/// Everything the loop needs except the buffers a connection borrows.
struct Driver {
    spawner: Spawner,
    core: Session<Jitter>,
    queue: VecDeque<Todo>,
    /// The last `Sleep` of the last `handle` call.
    deadline: Option<Instant>,
    flash: FlashStorage<'static>,
    serial: Serial,
    files: &'static mut CredentialBuffers,
    loaded: Option<Loaded>,
    config: Option<DeviceConfig>,
    net: Option<Net>,
    /// The SNTP task, started with the network stack.
    time: Option<sntp::TimeClient>,
    /// The session has been told the network is up.
    net_up: bool,
    rng: Trng,
    gate: &'static WriteGate,
    next_heap: embassy_time::Instant,
    /// The SUBSCRIBE, keep-alive probe and QoS 1 publishes awaiting acks.
    mqtt: Tracker,
    /// What the broker says that minimq does not pass on (DISCONNECT code, Maximum QoS).
    notes: &'static BrokerNotes,
}

/// Buffers of the one connection; static so they are counted in `.bss`, not the stack.
static TLS_BUFS: ConstStaticCell<TlsBuffers> = ConstStaticCell::new(TlsBuffers::new());
static TCP_BUFS: ConstStaticCell<TcpBuffers> = ConstStaticCell::new(TcpBuffers::new());
static MQTT_BUFS: ConstStaticCell<MqttBuffers> = ConstStaticCell::new(MqttBuffers::new());
static GATE: StaticCell<WriteGate> = StaticCell::new();
static FILES: ConstStaticCell<CredentialBuffers> = ConstStaticCell::new(CredentialBuffers::new());
/// Atomics only: shared by the connection's reader (inside minimq) and the driver.
static NOTES: BrokerNotes = BrokerNotes::new();

/// Run the device forever.
pub async fn run(spawner: Spawner, board: Board) -> ! {
    let Board {
        flash,
        mut serial,
        wifi,
        rng,
        led,
        ..
    } = board;
    if let Some((pin, off)) = led
        && let Ok(token) = led::blink(pin, off)
    {
        spawner.spawn(token);
    }
    let seed = u64::from(rng.random()) << 32 | u64::from(rng.random());
    let net = match Net::new(spawner, wifi, seed) {
        Ok(net) => Some(net),
        Err(e) => {
            // Without WiFi every join fails and is retried; say why once.
            if let Ok(mut line) = Line::new(Level::Error, now().as_millis(), "wifi") {
                let _ = line
                    .message_text("init-failed")
                    .and_then(|l| l.field_display("error", DebugSlug(&e)));
                serial.log(&line);
            }
            None
        }
    };
    let time = net
        .as_ref()
        .and_then(|net| sntp::TimeClient::start(spawner, net.stack, rng.clone()));
    let mut driver = Driver {
        spawner,
        core: Session::new(session_settings(), Jitter(rng.clone())),
        queue: VecDeque::new(),
        deadline: None,
        flash,
        serial,
        files: FILES.take(),
        loaded: None,
        config: None,
        net,
        time,
        net_up: false,
        rng,
        gate: GATE.init(WriteGate::new()),
        next_heap: embassy_time::Instant::now() + HEAP_REPORT_EVERY,
        mqtt: Tracker::new(),
        notes: &NOTES,
    };
    let tls_bufs = TLS_BUFS.take();
    let tcp_bufs = TCP_BUFS.take();
    let mut spare_mqtt_bufs = Some(MQTT_BUFS.take());
    let mut client: Option<minimq::Session<'static>> = None;

    driver.feed(Event::Start);
    loop {
        match driver.drive(None).await {
            Flow::Closed => {}
            Flow::Connect => {
                if client.is_none()
                    && let (Some(config), Some(bufs)) =
                        (driver.config.as_ref(), spare_mqtt_bufs.take())
                {
                    // Fails only for a client id minimq cannot hold; every later attempt
                    // then fails the same way, logged and backed off by the session.
                    client = mqtt::session(
                        &config.client_id,
                        config.keepalive_s,
                        &mut bufs.rx,
                        &mut bufs.tx,
                    )
                    .ok();
                }
                let Some(session) = client.as_mut() else {
                    driver.connect_failed(ConnectError::Protocol);
                    continue;
                };
                if let Some(mut conn) = driver
                    .connect(
                        session,
                        ConnBuffers {
                            tcp: &mut *tcp_bufs,
                            tls: &mut *tls_bufs,
                        },
                    )
                    .await
                {
                    led::set_connected(true);
                    driver.drive(Some(&mut conn)).await;
                    led::set_connected(false);
                }
            }
        }
    }
}

/// `Debug` of a driver error as one log field value (no spaces).
struct DebugSlug<'a, T>(&'a T);

impl<T: core::fmt::Debug> core::fmt::Display for DebugSlug<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut text = heapless::String::<48>::new();
        let _ = core::fmt::write(&mut text, format_args!("{:?}", self.0));
        for c in text.chars() {
            let c = if c.is_ascii_alphanumeric() { c } else { '-' };
            core::fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

impl Driver {
    /// Feed one event with the current time; its actions join the queue.
    fn feed(&mut self, event: Event<'_>) {
        let queue = &mut self.queue;
        let mut deadline = None;
        self.core.handle(now(), event, &mut |action| match action {
            Action::Sleep(t) => deadline = Some(t),
            other => queue.extend(Todo::from_action(other)),
        });
        self.deadline = deadline;
        if let Event::NetUp { .. } = event {
            self.net_up = true;
        }
        if let Event::NetDown(_) = event {
            self.net_up = false;
        }
    }

    fn connect_failed(&mut self, error: ConnectError) {
        self.feed(Event::ConnectFailed(ConnectFailure::Mqtt(error)));
    }

    /// Carry out queued actions and wait for events until the session asks for a
    /// connection or the connection `conn` ends.
    async fn drive(&mut self, mut conn: Option<&mut Mqtt<'_, '_, '_>>) -> Flow {
        loop {
            while let Some(todo) = self.queue.pop_front() {
                match todo {
                    Todo::Connect => {
                        if let Some(c) = conn.take() {
                            // Not expected while connected; close first, then connect.
                            self.queue.push_front(Todo::Connect);
                            close(c).await;
                            return Flow::Closed;
                        }
                        return Flow::Connect;
                    }
                    Todo::Disconnect => {
                        if let Some(c) = conn.take() {
                            close(c).await;
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
            if self.wait(conn.as_deref_mut()).await.is_err() {
                return Flow::Closed;
            }
        }
    }

    /// Carry out one action. `Err` means the connection died (already reported).
    async fn carry_out(
        &mut self,
        todo: Todo,
        conn: Option<&mut Mqtt<'_, '_, '_>>,
    ) -> Result<(), ()> {
        match todo {
            Todo::Log(line) => self.serial.log(&line),
            Todo::LoadConfig => match self.load_config() {
                Ok(config) => {
                    self.feed(Event::ConfigLoaded(&config));
                    self.config = Some(config);
                }
                Err(failure) => self.feed(failure.config_event()),
            },
            Todo::LoadCredentials => match self.load_credentials() {
                Ok(loaded) => {
                    self.loaded = Some(loaded);
                    self.feed(Event::CredsLoaded {
                        cert: loaded.cert,
                        key: loaded.key,
                        ca: loaded.ca,
                        source: CredSource::Flash,
                        cert_not_after: loaded.cert_not_after,
                    });
                }
                Err(failure) => self.feed(failure.creds_event()),
            },
            Todo::JoinNetwork => {
                let result = match (self.net.as_mut(), self.config.as_ref()) {
                    (Some(net), Some(config)) => net.join(self.spawner, &config.wifi).await,
                    // WiFi did not start (logged at boot): wait as long as a join would.
                    _ => {
                        Timer::after(crate::net::JOIN_TIMEOUT).await;
                        Err(NetError::Timeout)
                    }
                };
                match result {
                    Ok(local_addr) => self.feed(Event::NetUp { local_addr }),
                    Err(e) => self.feed(Event::NetDown(e)),
                }
            }
            // Answered in `wait`, beside the connection (a re-sync must not stall it).
            Todo::SyncTime => {
                if let (Some(time), Some(config)) = (self.time.as_mut(), &self.config) {
                    time.request(&config.ntp);
                }
            }
            Todo::Connect | Todo::Disconnect => {}
            Todo::Subscribe { topic, qos } => {
                let Some(conn) = conn else { return Ok(()) };
                let outcome = self.mqtt.subscribe(conn, topic, qos, &IoTimeout).await;
                return self.report(outcome);
            }
            todo @ Todo::Publish { .. } => {
                let (Some(conn), Some(publish)) = (conn, todo.as_publish()) else {
                    return Ok(());
                };
                let outcome = self.mqtt.publish(conn, publish, &IoTimeout).await;
                return self.report(outcome);
            }
            Todo::Ping => {
                let Some(conn) = conn else { return Ok(()) };
                let outcome = self.mqtt.probe(conn, &IoTimeout).await;
                return self.report(outcome);
            }
        }
        Ok(())
    }

    /// `/config.json` from the storage partition.
    fn load_config(&mut self) -> Result<DeviceConfig, ImageFailure> {
        let buf = &mut self.files.config;
        let mut partition = Partition::find(&mut self.flash).map_err(|_| missing_image())?;
        image::mount(&mut partition, |fs| {
            let json = fs.read_file(image::CONFIG_PATH, &mut buf[..])?;
            DeviceConfig::from_json(json).map_err(ImageError::Config)
        })
        .map_err(|e| ImageFailure::of(&e))
    }

    /// The three DER files (and the config again, validated with them) into
    /// [`CredentialBuffers`], where they stay for every handshake.
    fn load_credentials(&mut self) -> Result<Loaded, ImageFailure> {
        self.loaded = None;
        let files = &mut *self.files;
        let mut partition = Partition::find(&mut self.flash).map_err(|_| missing_image())?;
        image::mount(&mut partition, |fs| {
            let creds = fs.load_credentials(files)?;
            Ok(Loaded {
                cert: creds.cert.len(),
                key: creds.key.len(),
                ca: creds.ca.len(),
                cert_not_after: firmware_core::tls::certificate_not_after(creds.cert),
            })
        })
        .map_err(|e| ImageFailure::of(&e))
    }

    /// Wait for one event and feed it. `Err` means the connection died (reported).
    async fn wait(&mut self, conn: Option<&mut Mqtt<'_, '_, '_>>) -> Result<(), ()> {
        let gate = self.gate;
        let (deadline, next_heap) = (self.deadline, self.next_heap);
        let net = self.net.as_ref().filter(|_| self.net_up);
        let time = self.time.as_mut();
        // Timers win over a pending poll() only between writes (see the module docs).
        let deadline = async {
            match deadline {
                Some(t) => Timer::at(at(t)).await,
                None => pending().await,
            }
            between_writes(gate).await
        };
        let heap_due = async {
            Timer::at(next_heap).await;
            between_writes(gate).await
        };
        let net_down = async {
            match net {
                Some(net) => net.wait_down().await,
                None => pending().await,
            }
            between_writes(gate).await
        };
        let time_answer = async {
            let answer = match time {
                Some(time) => time.answer().await,
                None => pending().await,
            };
            (answer, between_writes(gate).await)
        };
        let connected = conn.is_some();
        let mut conn = conn;
        let polled = async {
            match conn.as_deref_mut() {
                Some(c) => c.poll().await,
                None => pending().await,
            }
        };
        let woke = select(select4(deadline, heap_due, net_down, time_answer), polled).await;
        match woke {
            Either::First(Either4::Fourth((answer, gate))) => {
                // The answer is taken: report it even if the connection turns out dead.
                match answer {
                    Ok(reply) => self.feed(Event::TimeSynced(reply.time.secs)),
                    Err(e) => self.feed(e.event()),
                }
                if connected && gate == Stalled {
                    return self.lost(DisconnectReason::Io);
                }
            }
            // A write poll() started has stalled: the connection is dead, and dropping it
            // (the only way out) is safe because it is never used again.
            Either::First(Either4::First(Stalled))
            | Either::First(Either4::Second(Stalled))
            | Either::First(Either4::Third(Stalled))
                if connected =>
            {
                return self.lost(DisconnectReason::Io);
            }
            Either::First(Either4::First(_)) => self.feed(Event::Tick),
            Either::First(Either4::Second(_)) => {
                // From now, not from the missed time: a long request must not cause a
                // burst of catch-up reports.
                self.next_heap = embassy_time::Instant::now() + HEAP_REPORT_EVERY;
                self.report_heap();
            }
            Either::First(Either4::Third(_)) => self.feed(Event::NetDown(NetError::LinkLost)),
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
                if connected && let Some(c) = conn {
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
        self.feed(Event::Heap(heap::report(TLS_BYTES, MQTT_BYTES)));
    }

    /// Report what one `poll()` brought: an inbound message, acks, any other packet, or
    /// the end of the connection.
    fn polled(
        &mut self,
        inbound: bool,
        error: Option<MqttError>,
        conn: &mut Mqtt<'_, '_, '_>,
    ) -> Result<(), ()> {
        // The tracker feeds the session while it is borrowed; it is put back at once.
        let mut tracker = core::mem::take(&mut self.mqtt);
        let outcome = tracker.polled(
            inbound,
            error,
            conn.is_connected(),
            conn.session(),
            &mut |event| self.feed(event),
        );
        self.mqtt = tracker;
        outcome.or_else(|reason| self.lost(reason))
    }

    /// The broker broke the protocol: DISCONNECT with the reason (bounded in time), then
    /// report it. Always `Err`: the connection is over.
    async fn refuse(
        &mut self,
        violation: ProtocolViolation,
        conn: &mut Mqtt<'_, '_, '_>,
    ) -> Result<(), ()> {
        let disconnect = mqtt::violation_disconnect(violation);
        let _ = with_timeout(DISCONNECT_TIMEOUT, conn.disconnect_with(disconnect)).await;
        self.mqtt.lost();
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
        self.mqtt.lost();
        self.feed(self.notes.lost_event(reason));
        Err(())
    }

    /// DNS + TCP + TLS + CONNECT, racing the session's deadline (its connect timeout).
    /// Reports the outcome; returns the connection on success.
    async fn connect<'s, 'm, 'b>(
        &mut self,
        client: &'s mut minimq::Session<'m>,
        bufs: ConnBuffers<'b>,
    ) -> Option<Mqtt<'s, 'm, 'b>>
    where
        'b: 's,
    {
        let (Some(loaded), Some(net), Some(config)) = (self.loaded, &self.net, &self.config) else {
            self.connect_failed(ConnectError::Protocol);
            return None;
        };
        let unix_now = self.core.unix_time(now());
        let deadline = self.deadline.map(at);
        let started = embassy_time::Instant::now();
        let files = &*self.files;
        let identity = Identity {
            cert: &files.cert[..loaded.cert],
            key: &files.key[..loaded.key],
            ca: &files.ca[..loaded.ca],
        };
        let host = config.endpoint.host.as_str();
        let port = config.endpoint.port;
        let stack = net.stack;
        let rng = self.rng.clone();
        let gate = self.gate;
        let notes = self.notes;
        let attempt = async {
            let Some(addr) = net.resolve(host).await else {
                return Err(ConnectFailure::Mqtt(ConnectError::Dns));
            };
            let remote = IpEndpoint::new(addr, port);
            let tls =
                transport::connect_tls(stack, remote, host, &identity, unix_now, rng, bufs, gate)
                    .await?;
            client
                .connect(Watched::new(tls, notes))
                .await
                .map_err(|e| firmware_core::mqtt::connect_failure(&e))
        };
        // A cancelled attempt drops the half-open connection as a whole, so nothing is
        // left to desynchronise.
        let outcome = select(attempt, async {
            match deadline {
                Some(t) => Timer::at(t).await,
                None => pending().await,
            }
        })
        .await;
        match outcome {
            Either::First(Ok(conn)) => {
                let handshake_ms = u32::try_from(started.elapsed().as_millis()).ok();
                self.mqtt.connected();
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
            Either::First(Err(failure)) => {
                self.feed(Event::ConnectFailed(failure));
                None
            }
            // The session's connect timeout: it logs and backs off.
            Either::Second(()) => {
                self.feed(Event::Tick);
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
    /// A write has not finished within [`IO_TIMEOUT`] of the timer.
    Stalled,
}
use Gate::Stalled;

/// Wait until no write is under way on the connection, at most [`IO_TIMEOUT`].
async fn between_writes(gate: &WriteGate) -> Gate {
    match with_timeout(IO_TIMEOUT, gate.idle()).await {
        Ok(()) => Gate::Idle,
        Err(_) => Gate::Stalled,
    }
}

/// The partition table has no `storage` partition (or none at all).
fn missing_image() -> ImageFailure {
    ImageFailure::Creds {
        file: FlashFile::Image,
        error: LoadError::Missing,
    }
}

/// [`IO_TIMEOUT`] on a SUBSCRIBE or PUBLISH write.
struct IoTimeout;

impl mqtt::WriteTimeout for IoTimeout {
    async fn bound<F: Future>(&self, fut: F) -> Option<F::Output> {
        with_timeout(IO_TIMEOUT, fut).await.ok()
    }
}

/// Send DISCONNECT (bounded in time) and let the caller drop the connection.
async fn close(conn: &mut Mqtt<'_, '_, '_>) {
    if conn.is_connected() {
        let _ = with_timeout(DISCONNECT_TIMEOUT, conn.disconnect()).await;
    }
}
