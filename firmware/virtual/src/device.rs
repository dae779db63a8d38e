//! Main-loop wiring, kept minimal on purpose.
//!
//! This is the stand-in until `firmware_core::session` drives the device: it runs the
//! boot steps once in order (image, wifi, time, MQTT) and then logs inbound messages. The
//! publish cadence, the reconnect backoff and every line's format belong to the core
//! (`firmware_core::session`, `firmware_core::log`); the only policy here is
//! [`retry_delay`], a placeholder marked for replacement.

use std::path::Path;
use std::time::{Duration, Instant};

use firmware_core::log::{self, DisconnectReason, Line, ShutdownReason, Stage};
use minimq::TopicFilter;

use crate::cli::Args;
use crate::flash::{self, Identity};
use crate::heap::{CountingAlloc, HEAP_BUDGET};
use crate::net;
use crate::serial::Serial;
use crate::shutdown::Signals;
use crate::sntp::{self, SntpOptions};
use crate::transport::{self, MqttBuffers, Timings, TlsBuffers};

/// Board name in the boot line.
pub const BOARD: &str = "virtual";
/// Firmware version in the boot line.
pub const FIRMWARE: &str = env!("CARGO_PKG_VERSION");
/// Longest a TCP + TLS + CONNECT may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the device needs from its host.
pub struct Device<'a> {
    pub serial: &'a Serial,
    pub boot: Instant,
    pub heap: Option<&'static CountingAlloc>,
}

impl Device<'_> {
    fn uptime(&self) -> u64 {
        self.boot.elapsed().as_millis() as u64
    }

    fn log(&self, line: Line) {
        self.serial.line(line);
    }
}

/// Wall-clock time from SNTP, advanced by the monotonic clock.
#[derive(Debug, Clone, Copy)]
struct Clock {
    epoch: u64,
    at: Instant,
}

impl Clock {
    fn now(&self) -> u64 {
        self.epoch + self.at.elapsed().as_secs()
    }
}

/// TEMPORARY: doubling from 1 s to 60 s, until `firmware_core::session`'s backoff (full
/// jitter, reset after a stable connection) drives the retries.
pub fn retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(6)).min(Duration::from_secs(60))
}

/// Run the device until a signal arrives; the last line says why it stopped.
pub async fn run(args: &Args, serial: &Serial, heap: Option<&'static CountingAlloc>) {
    let mut signals = match Signals::install() {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("virtual-device: cannot install signal handlers: {e}");
            None
        }
    };
    let device = Device {
        serial,
        boot: Instant::now(),
        heap,
    };
    let reason = tokio::select! {
        reason = async {
            match signals.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        } => reason,
        () = device.main(&args.flash) => ShutdownReason::Requested,
    };
    device.log(Line::shutdown(device.uptime(), reason));
}

impl Device<'_> {
    async fn main(&self, flash: &Path) {
        let identity = self.load_image(flash).await;
        let config = &identity.config;
        self.log(Line::boot(
            self.uptime(),
            FIRMWARE,
            BOARD,
            &config.client_id,
        ));
        self.log(Line::config_loaded(self.uptime(), config));
        self.log(Line::creds(
            self.uptime(),
            identity.cert.len(),
            identity.key.len(),
            identity.ca.len(),
            log::CredSource::Flash,
        ));
        let net = self.wifi(&config.endpoint.host, config.endpoint.port).await;
        let clock = self.time(&config.ntp.host, config.ntp.port).await;
        self.mqtt(&identity, &net, clock).await;
    }

    /// Load the image, retrying until it is good: the rig may write it after the start.
    async fn load_image(&self, path: &Path) -> Identity {
        let mut attempt = 0;
        loop {
            match flash::load(path) {
                Ok(identity) => return identity,
                Err(e) => self.log(e.log_line(self.uptime())),
            }
            self.backoff(Stage::Creds, &mut attempt).await;
        }
    }

    async fn wifi(&self, host: &str, port: u16) -> net::NetInfo {
        let mut attempt = 0;
        loop {
            match net::up(host, port).await {
                Ok(info) => {
                    self.log(Line::wifi_up(self.uptime(), info.local));
                    return info;
                }
                Err(_) => self.log(Line::wifi_down(self.uptime(), log::NetError::Dhcp)),
            }
            self.backoff(Stage::Wifi, &mut attempt).await;
        }
    }

    /// Sync until it works: the verifier needs the time to check certificate validity.
    async fn time(&self, host: &str, port: u16) -> Clock {
        let mut attempt = 0;
        loop {
            match sntp::sync(host, port, SntpOptions::default()).await {
                Ok(reply) => {
                    self.log(Line::time_synced(self.uptime(), reply.time.secs));
                    return Clock {
                        epoch: reply.time.secs,
                        at: Instant::now(),
                    };
                }
                Err(e) => self.log(Line::time_sync_failed(self.uptime(), e.slug())),
            }
            self.backoff(Stage::Time, &mut attempt).await;
        }
    }

    async fn mqtt(&self, identity: &Identity, net: &net::NetInfo, clock: Clock) {
        let config = &identity.config;
        let (host, port) = (config.endpoint.host.as_str(), config.endpoint.port);
        let mut mqtt_bufs = MqttBuffers::new();
        let mut tls_bufs = TlsBuffers::new();
        let mut session =
            match transport::mqtt_session(&config.client_id, config.keepalive_s, &mut mqtt_bufs) {
                Ok(s) => s,
                Err(e) => {
                    self.log(Line::connect_failed(self.uptime(), e.failure()));
                    return std::future::pending().await;
                }
            };
        let mut attempt = 0;
        loop {
            self.log(Line::mqtt_connecting(self.uptime(), host, port));
            let mut timings = Timings::default();
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
                let tls = transport::connect_tls(
                    &net.remote,
                    host,
                    identity,
                    Some(clock.now()),
                    &mut tls_bufs,
                    &mut timings,
                )
                .await?;
                transport::connect_mqtt(&mut session, tls, &mut timings).await
            })
            .await
            .unwrap_or(Err(transport::TransportError::Timeout));
            let mut conn = match connected {
                Ok(conn) => conn,
                Err(e) => {
                    self.log(Line::connect_failed(self.uptime(), e.failure()));
                    self.backoff(Stage::Mqtt, &mut attempt).await;
                    continue;
                }
            };
            attempt = 0;
            let resumed = conn.connect_event() == minimq::ConnectEvent::Reconnected;
            self.log(Line::mqtt_connected(
                self.uptime(),
                host,
                port,
                resumed,
                Some(timings.tls_handshake.as_millis() as u32),
            ));
            if let Some(heap) = self.heap {
                let (free, min_free) = heap.stats().free_of(HEAP_BUDGET);
                self.log(Line::heap(self.uptime(), free, min_free));
            }
            let reason = self
                .serve(&mut conn, &config.sub_topic, config.qos, resumed)
                .await;
            self.log(Line::mqtt_disconnected(self.uptime(), reason));
            drop(conn);
            self.backoff(Stage::Mqtt, &mut attempt).await;
        }
    }

    /// Subscribe (on a new session) and log inbound messages until the connection ends.
    async fn serve(
        &self,
        conn: &mut transport::Mqtt<'_, '_, '_>,
        topic: &str,
        qos: u8,
        resumed: bool,
    ) -> DisconnectReason {
        if !resumed {
            let max_qos = if qos == 0 {
                minimq::QoS::AtMostOnce
            } else {
                minimq::QoS::AtLeastOnce
            };
            let filter = TopicFilter::new(topic)
                .options(minimq::SubscriptionOptions::default().maximum_qos(max_qos));
            if let Err(e) = conn.subscribe(&[filter], &[]).await {
                return disconnect_reason(&e);
            }
            self.log(Line::mqtt_subscribed(self.uptime(), topic, qos));
        }
        loop {
            match conn.recv().await {
                Ok(msg) => self.log(Line::inbound(self.uptime(), msg.topic(), msg.payload())),
                Err(e) => return disconnect_reason(&e),
            }
        }
    }

    async fn backoff(&self, stage: Stage, attempt: &mut u32) {
        *attempt += 1;
        let delay = retry_delay(*attempt - 1);
        self.log(Line::backoff(
            self.uptime(),
            stage,
            *attempt,
            delay.as_millis() as u64,
        ));
        tokio::time::sleep(delay).await;
    }
}

fn disconnect_reason(e: &transport::MqttError) -> DisconnectReason {
    match e {
        minimq::Error::Disconnected => DisconnectReason::PeerClosed,
        minimq::Error::Transport(_) | minimq::Error::WriteZero => DisconnectReason::Tls,
        _ => DisconnectReason::Protocol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_retry_delay_is_bounded() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(3), Duration::from_secs(8));
        assert_eq!(retry_delay(100), Duration::from_secs(60));
    }
}
