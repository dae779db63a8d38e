//! The driver: `firmware_core::session` over tokio, the flash image, SNTP, TCP + TLS and
//! minimq.
//!
//! The session owns every policy (boot order, publish cadence, backoff, keep-alive, QoS 1
//! retries, the log lines); this module only carries out its actions in order and reports
//! what happened, with `now` from one monotonic clock ([`Clock`]). The loop:
//!
//! - drain the queue of actions (logs go to the serial port, requests start I/O);
//! - wait for whichever comes first: a signal, the session's deadline (`Sleep`), the
//!   network or SNTP request, the MQTT connection (minimq is polled all the time, so
//!   inbound messages and acks are reported as they arrive), or the next heap report;
//! - feed the resulting event, which queues more actions.
//!
//! A live connection borrows the minimq session and the TLS buffers, so it lives in a
//! scope of its own: [`run`] connects, then drives the loop with the connection until the
//! session asks to disconnect or the link dies, then drops it and goes on without.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use firmware_core::config::DeviceConfig;
use firmware_core::log::{
    ConnectError, ConnectFailure, CredSource, DisconnectReason, HeapReport, NetError,
    ShutdownReason,
};
use firmware_core::mqtt::{self, BrokerNotes, Todo, Tracker};
use firmware_core::session::{Action, Event, Instant, RandomSource, Retransmit, Session, Settings};
use rand_core::{OsRng, RngCore};

use crate::cli::Args;
use crate::flash::{self, Identity};
use crate::heap::{CountingAlloc, HEAP_BUDGET};
use crate::net::{self, NetInfo};
use crate::serial::Serial;
use crate::shutdown::Signals;
use crate::sntp::{self, SntpOptions};
use crate::transport::{self, Mqtt, MqttBuffers, MqttError, Timings, TlsBuffers};

/// Board name in the boot line.
pub const BOARD: &str = "virtual";
/// Firmware version in the boot line.
pub const FIRMWARE: &str = env!("CARGO_PKG_VERSION");
/// How often the `heap:` line is logged (besides once after each connect).
pub const HEAP_REPORT_EVERY: Duration = Duration::from_secs(30);
/// Longest a graceful MQTT DISCONNECT may take before the socket is just dropped.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a SUBSCRIBE or PUBLISH write may stall (a broker that stopped reading) before
/// the connection counts as lost; the loop cannot serve deadlines meanwhile.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The session's random source: the operating system's RNG.
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn next_u32(&mut self) -> u32 {
        let mut bytes = [0u8; 4];
        match OsRng.try_fill_bytes(&mut bytes) {
            Ok(()) => u32::from_le_bytes(bytes),
            // Jitter only spreads reconnects; the clock's low bits are a good enough
            // fallback and never a reason to stop.
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos()),
        }
    }
}

/// The one monotonic clock: session instants are milliseconds since boot.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    boot: tokio::time::Instant,
}

impl Clock {
    pub fn start() -> Self {
        Self {
            boot: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Instant {
        Instant::from_millis(self.boot.elapsed().as_millis() as u64)
    }

    /// The tokio instant of a session instant (for sleeping until it).
    pub fn at(&self, t: Instant) -> tokio::time::Instant {
        // A deadline beyond what the platform's clock can hold is as good as never.
        self.boot
            .checked_add(Duration::from_millis(t.as_millis()))
            .unwrap_or_else(|| self.boot + Duration::from_secs(100 * 365 * 86_400))
    }
}

/// The outcome of a request that runs in the background.
enum Reply {
    Net(std::io::Result<NetInfo>),
    Time(Result<firmware_core::sntp::Reply, sntp::SntpError>),
}

type Request = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Why [`Driver::drive`] returned.
enum Flow {
    /// The session asks for a connection.
    Connect,
    /// The connection passed in is closed (or dead); drop it.
    Closed,
    /// Shut down.
    Stop,
}

/// Everything the loop needs except the buffers a connection borrows.
struct Driver<'a> {
    flash: PathBuf,
    serial: &'a Serial,
    heap: Option<&'static CountingAlloc>,
    clock: Clock,
    core: Session<OsRandom>,
    queue: VecDeque<Todo>,
    /// The last `Sleep` of the last `handle` call.
    deadline: Option<Instant>,
    stopped: bool,
    signals: Option<Signals>,
    request: Option<Request>,
    next_heap: tokio::time::Instant,
    config: Option<DeviceConfig>,
    identity: Option<Identity>,
    net: Option<NetInfo>,
    /// The SUBSCRIBE, keep-alive probe and QoS 1 publishes awaiting acks.
    mqtt: Tracker,
    /// What the broker says that minimq does not pass on (DISCONNECT code, Maximum QoS).
    notes: &'a BrokerNotes,
}

/// Run the device until a signal arrives; the last line says why it stopped.
pub async fn run(args: &Args, serial: &Serial, heap: Option<&'static CountingAlloc>) {
    let signals = match Signals::install() {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("virtual-device: cannot install signal handlers: {e}");
            None
        }
    };
    let clock = Clock::start();
    let notes = BrokerNotes::new();
    let mut driver = Driver {
        flash: args.flash.clone(),
        serial,
        heap,
        clock,
        core: Session::new(session_settings(), OsRandom),
        queue: VecDeque::new(),
        deadline: None,
        stopped: false,
        signals,
        request: None,
        next_heap: clock.boot + HEAP_REPORT_EVERY,
        config: None,
        identity: None,
        net: None,
        mqtt: Tracker::new(),
        notes: &notes,
    };
    // Allocated once, as the board's static buffers; a connection borrows them.
    let mut tls_bufs = TlsBuffers::new();
    let mut mqtt_bufs = MqttBuffers::new();
    let mut client: Option<minimq::Session<'_>> = None;
    // The MQTT buffers go to the minimq session once the config names the client.
    let mut spare_mqtt_bufs = Some(&mut mqtt_bufs);

    driver.feed(Event::Start);
    loop {
        match driver.drive(None).await {
            Flow::Stop => break,
            Flow::Closed => {}
            Flow::Connect => {
                if client.is_none()
                    && let (Some(config), Some(bufs)) =
                        (driver.config.as_ref(), spare_mqtt_bufs.take())
                {
                    // Fails only for a client id minimq cannot hold; every later attempt
                    // then fails the same way, logged and backed off by the session.
                    client =
                        transport::mqtt_session(&config.client_id, config.keepalive_s, bufs).ok();
                }
                let Some(session) = client.as_mut() else {
                    driver.connect_failed(ConnectError::Protocol);
                    continue;
                };
                if let Some(mut conn) = driver.connect(session, &mut tls_bufs).await
                    && let Flow::Stop = driver.drive(Some(&mut conn)).await
                {
                    break;
                }
            }
        }
    }
}

/// The core's settings for this board. minimq speaks MQTT 5, which allows resending an
/// unacknowledged publish only on reconnect, and replays it itself when the session resumes.
fn session_settings() -> Settings {
    let mut settings = Settings::new(FIRMWARE, BOARD);
    settings.retransmit = Retransmit::ByReconnect;
    settings.clock_floor = firmware_core::session::clock_floor(env!("BUILD_EPOCH"));
    settings
}

impl<'a> Driver<'a> {
    /// Feed one event with the current time; its actions join the queue.
    fn feed(&mut self, event: Event<'_>) {
        let now = self.clock.now();
        let queue = &mut self.queue;
        let mut deadline = None;
        self.core.handle(now, event, &mut |action| match action {
            Action::Sleep(t) => deadline = Some(t),
            other => queue.extend(Todo::from_action(other)),
        });
        self.deadline = deadline;
        if self.core.phase() == firmware_core::session::Phase::Stopped {
            self.stopped = true;
        }
    }

    fn connect_failed(&mut self, error: ConnectError) {
        self.feed(Event::ConnectFailed(ConnectFailure::Mqtt(error)));
    }

    /// Carry out queued actions and wait for events until the session asks for a
    /// connection, the connection `conn` ends, or the device stops.
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
            if self.stopped {
                return Flow::Stop;
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
            Todo::LoadConfig => match flash::load_config(&self.flash) {
                Ok(config) => {
                    self.feed(Event::ConfigLoaded(&config));
                    self.config = Some(config);
                }
                Err(e) => self.feed(Event::ConfigFailed(e.config_failure())),
            },
            Todo::LoadCredentials => match flash::load(&self.flash) {
                Ok(identity) => {
                    self.feed(Event::CredsLoaded {
                        cert: identity.cert.len(),
                        key: identity.key.len(),
                        ca: identity.ca.len(),
                        source: CredSource::Flash,
                        cert_not_after: firmware_core::tls::certificate_not_after(&identity.cert),
                    });
                    self.identity = Some(identity);
                }
                Err(e) => self.feed(e.failure().creds_event()),
            },
            Todo::JoinNetwork => {
                if let Some(c) = &self.config {
                    let (host, port) = (c.endpoint.host.to_string(), c.endpoint.port);
                    self.request = Some(Box::pin(
                        async move { Reply::Net(net::up(&host, port).await) },
                    ));
                }
            }
            Todo::SyncTime => {
                if let Some(c) = &self.config {
                    let (host, port) = (c.ntp.host.to_string(), c.ntp.port);
                    self.request = Some(Box::pin(async move {
                        Reply::Time(sntp::sync(&host, port, SntpOptions::default()).await)
                    }));
                }
            }
            // Handled by `drive`, which owns the connection's scope.
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

    /// Wait for one event and feed it. `Err` means the connection died (reported).
    async fn wait(&mut self, conn: Option<&mut Mqtt<'_, '_, '_>>) -> Result<(), ()> {
        let deadline = self.deadline.map(|t| self.clock.at(t));
        let has_request = self.request.is_some();
        let Self {
            signals,
            request,
            next_heap,
            ..
        } = self;
        let connected = conn.is_some();
        let mut conn = conn;
        tokio::select! {
            reason = async {
                match signals.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                self.feed(Event::Shutdown(reason));
            }
            () = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => self.feed(Event::Tick),
            reply = async {
                match request.as_mut() {
                    Some(r) => r.await,
                    None => std::future::pending().await,
                }
            }, if has_request => {
                self.request = None;
                self.reply(reply);
            }
            () = tokio::time::sleep_until(*next_heap) => {
                self.next_heap += HEAP_REPORT_EVERY;
                self.report_heap();
            }
            polled = async {
                match conn.as_deref_mut() {
                    Some(c) => c.poll().await,
                    None => std::future::pending().await,
                }
            }, if connected => {
                // Report the message while it borrows the connection, then look at acks.
                let mut violation = None;
                let (inbound, error) = match polled {
                    Ok(Some(msg)) => {
                        violation = mqtt::inbound_violation(&msg);
                        if violation.is_none() {
                            self.feed(Event::Inbound { topic: msg.topic(), payload: msg.payload() });
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

    fn reply(&mut self, reply: Reply) {
        match reply {
            Reply::Net(Ok(info)) => {
                let local_addr = info.local;
                self.net = Some(info);
                self.feed(Event::NetUp { local_addr });
            }
            // The host's network is always "joined"; failing to resolve or route to the
            // broker is what a board sees as no DHCP lease.
            Reply::Net(Err(_)) => self.feed(Event::NetDown(NetError::Dhcp)),
            Reply::Time(Ok(reply)) => self.feed(Event::TimeSynced(reply.time.secs)),
            Reply::Time(Err(e)) => self.feed(e.event()),
        }
    }

    fn report_heap(&mut self) {
        if let Some(heap) = self.heap {
            let stats = heap.stats();
            let (free, min_free) = stats.free_of(HEAP_BUDGET);
            self.feed(Event::Heap(HeapReport {
                free,
                min_free,
                used: stats.current,
                peak: stats.peak,
                tls_buffers: TlsBuffers::BYTES,
                mqtt_buffers: MqttBuffers::BYTES,
            }));
        }
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
        let mut tracker = std::mem::take(&mut self.mqtt);
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
        violation: firmware_core::log::ProtocolViolation,
        conn: &mut Mqtt<'_, '_, '_>,
    ) -> Result<(), ()> {
        let disconnect = mqtt::violation_disconnect(violation);
        let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, conn.disconnect_with(disconnect)).await;
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

    /// The connection died: report it. Always `Err`, for the caller to return.
    fn lost(&mut self, reason: DisconnectReason) -> Result<(), ()> {
        self.mqtt.lost();
        self.feed(self.notes.lost_event(reason));
        Err(())
    }

    /// TCP + TLS + CONNECT, racing the session's deadline (its connect timeout) and the
    /// signals. Reports the outcome; returns the connection on success.
    async fn connect<'s, 'b, 't>(
        &mut self,
        client: &'s mut minimq::Session<'b>,
        tls_bufs: &'t mut TlsBuffers,
    ) -> Option<Mqtt<'s, 'b, 't>>
    where
        'a: 't,
    {
        let (Some(identity), Some(net), Some(config)) = (&self.identity, &self.net, &self.config)
        else {
            self.connect_failed(ConnectError::Protocol);
            return None;
        };
        let unix_now = self.core.unix_time(self.clock.now());
        let notes = self.notes;
        let deadline = self.deadline.map(|t| self.clock.at(t));
        let mut timings = Timings::default();
        let started = tokio::time::Instant::now();
        let attempt = async move {
            let tls = transport::connect_tls(
                &net.remote,
                &config.endpoint.host,
                identity,
                unix_now,
                tls_bufs,
                &mut timings,
            )
            .await?;
            transport::connect_mqtt(client, tls, notes, &mut timings).await
        };
        let signals = &mut self.signals;
        enum Outcome<T> {
            Done(T),
            Signal(ShutdownReason),
            Deadline,
        }
        let outcome = tokio::select! {
            result = attempt => Outcome::Done(result),
            reason = async {
                match signals.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            } => Outcome::Signal(reason),
            () = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => Outcome::Deadline,
        };
        match outcome {
            Outcome::Done(Ok(conn)) => {
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
            Outcome::Done(Err(e)) => {
                self.feed(Event::ConnectFailed(e.failure()));
                None
            }
            Outcome::Signal(reason) => {
                self.feed(Event::Shutdown(reason));
                None
            }
            // The session's connect timeout: it logs and backs off.
            Outcome::Deadline => {
                self.feed(Event::Tick);
                None
            }
        }
    }
}

/// [`IO_TIMEOUT`] on a SUBSCRIBE or PUBLISH write.
struct IoTimeout;

impl mqtt::WriteTimeout for IoTimeout {
    async fn bound<F: Future>(&self, fut: F) -> Option<F::Output> {
        tokio::time::timeout(IO_TIMEOUT, fut).await.ok()
    }
}

/// Send DISCONNECT (bounded in time) and let the caller drop the connection.
async fn close(conn: &mut Mqtt<'_, '_, '_>) {
    if conn.is_connected() {
        let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, conn.disconnect()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_maps_session_instants_back_to_tokio_time() {
        let clock = Clock::start();
        let t = Instant::from_millis(2000);
        assert_eq!(clock.at(t) - clock.boot, Duration::from_millis(2000));
        assert!(clock.now() < t);
    }

    #[test]
    fn os_random_varies() {
        let mut r = OsRandom;
        let draws: Vec<u32> = (0..8).map(|_| r.next_u32()).collect();
        assert!(draws.windows(2).any(|w| w[0] != w[1]));
    }
}
