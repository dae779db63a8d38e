//! The network: WiFi station (esp-radio) and the embassy-net stack (DHCP, DNS, TCP, UDP).
//!
//! The SSID and password are only known once `/config.json` is loaded, so the station
//! starts on the session's first `JoinNetwork`: the controller is configured and handed
//! to [`wifi_task`], which keeps the station associated (reconnecting after a drop) and
//! records why the last attempt failed, for the `wifi:` log line.

use core::net::IpAddr;
use core::sync::atomic::{AtomicU8, Ordering};

use embassy_executor::Spawner;
use embassy_net::dns::DnsQueryType;
use embassy_net::{IpAddress, Runner, Stack, StackResources};
use embassy_time::{Duration, Timer, with_timeout};
use esp_radio::wifi::sta::StationConfig;
use esp_radio::wifi::{
    AuthenticationMethodConfig, Config, ConnectionError, DisconnectReason, Interface,
    WifiController, WifiError,
};
use firmware_core::config::Wifi;
use firmware_core::log::NetError;
use static_cell::StaticCell;

/// Longest wait for association + DHCP before `JoinNetwork` is answered with `NetDown`;
/// below the session's request timeout, so the driver always answers first.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for a DNS answer.
pub const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between association attempts of the WiFi task.
const REASSOCIATE_AFTER: Duration = Duration::from_secs(2);
/// Sockets: the MQTT connection, SNTP, DNS, DHCP.
const SOCKETS: usize = 4;

/// Why the last association failed (a [`NetError`] code + 1; 0 = none).
static LAST_FAILURE: AtomicU8 = AtomicU8::new(0);

/// The network stack and, until the first join, the WiFi controller.
pub struct Net {
    pub stack: Stack<'static>,
    controller: Option<WifiController<'static>>,
}

impl Net {
    /// Create the stack and spawn its runner. `seed` randomises TCP ports and DNS ids.
    pub fn new(
        spawner: Spawner,
        wifi: Result<(WifiController<'static>, Interface), WifiError>,
        seed: u64,
    ) -> Result<Self, WifiError> {
        static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
        let (controller, interface) = wifi?;
        let resources = RESOURCES.init(StackResources::new());
        let config = embassy_net::Config::dhcpv4(Default::default());
        let (stack, runner) = embassy_net::new(interface, config, resources, seed);
        // Spawning fails only if the task is already running, which `StaticCell` above
        // rules out (it panics on a second init first).
        if let Ok(token) = net_task(runner) {
            spawner.spawn(token);
        }
        Ok(Self {
            stack,
            controller: Some(controller),
        })
    }

    /// Start the station with `wifi` (first call only), then wait for an IPv4 address.
    pub async fn join(&mut self, spawner: Spawner, wifi: &Wifi) -> Result<IpAddr, NetError> {
        if let Some(mut controller) = self.controller.take() {
            let auth = if wifi.password.is_empty() {
                AuthenticationMethodConfig::Open
            } else {
                match wifi.password.as_str().try_into() {
                    Ok(p) => AuthenticationMethodConfig::Wpa2Personal(p),
                    Err(_) => return Err(NetError::AuthFailed),
                }
            };
            let ssid = wifi
                .ssid
                .as_str()
                .try_into()
                .map_err(|_| NetError::ApNotFound)?;
            let station = StationConfig::default()
                .with_ssid(ssid)
                .with_authentication(auth);
            if controller.set_config(&Config::Station(station)).is_err() {
                // Keep the controller for the next attempt.
                self.controller = Some(controller);
                return Err(NetError::Timeout);
            }
            match wifi_task(controller) {
                Ok(token) => spawner.spawn(token),
                Err(_) => return Err(NetError::Timeout),
            }
        }
        match with_timeout(JOIN_TIMEOUT, self.stack.wait_config_up()).await {
            Ok(()) => match self.stack.config_v4() {
                Some(c) => Ok(IpAddr::V4(c.address.address())),
                None => Err(NetError::Dhcp),
            },
            Err(_) => Err(last_failure().unwrap_or(if self.stack.is_link_up() {
                NetError::Dhcp
            } else {
                NetError::Timeout
            })),
        }
    }

    /// Resolve `host` (a name or an IPv4 literal) to its first IPv4 address.
    pub async fn resolve(&self, host: &str) -> Option<IpAddress> {
        resolve(self.stack, host).await
    }

    /// Resolves when the stack loses its address (WiFi dropped, DHCP lease lost).
    pub async fn wait_down(&self) {
        self.stack.wait_config_down().await
    }
}

/// Resolve `host` (a name or an IPv4 literal) on `stack` to its first IPv4 address.
pub async fn resolve(stack: Stack<'static>, host: &str) -> Option<IpAddress> {
    match with_timeout(DNS_TIMEOUT, stack.dns_query(host, DnsQueryType::A)).await {
        Ok(Ok(addrs)) => addrs.first().copied(),
        _ => None,
    }
}

fn last_failure() -> Option<NetError> {
    match LAST_FAILURE.load(Ordering::Relaxed) {
        1 => Some(NetError::ApNotFound),
        2 => Some(NetError::AuthFailed),
        3 => Some(NetError::LinkLost),
        4 => Some(NetError::Timeout),
        _ => None,
    }
}

fn record_failure(error: Option<NetError>) {
    let code = match error {
        None => 0,
        Some(NetError::ApNotFound) => 1,
        Some(NetError::AuthFailed) => 2,
        Some(NetError::LinkLost) => 3,
        Some(_) => 4,
    };
    LAST_FAILURE.store(code, Ordering::Relaxed);
}

/// The log's reason for an association failure.
fn net_error(reason: DisconnectReason) -> NetError {
    match reason {
        DisconnectReason::NoAccessPointFound
        | DisconnectReason::NoAccessPointFoundWithCompatibleSecurity
        | DisconnectReason::NoAccessPointFoundInAuthmodeThreshold
        | DisconnectReason::NoAccessPointFoundInRssiThreshold
        | DisconnectReason::BeaconTimeout => NetError::ApNotFound,
        DisconnectReason::AuthenticationFailed
        | DisconnectReason::AuthenticationExpired
        | DisconnectReason::FourWayHandshakeTimeout
        | DisconnectReason::HandshakeTimeout => NetError::AuthFailed,
        _ => NetError::LinkLost,
    }
}

/// Keep the station associated.
#[embassy_executor::task]
async fn wifi_task(mut controller: WifiController<'static>) {
    loop {
        match controller.connect_async().await {
            Ok(_) => {
                record_failure(None);
                let reason = controller.wait_for_disconnect_async().await;
                record_failure(Some(match reason {
                    Ok(info) => net_error(info.reason),
                    Err(_) => NetError::LinkLost,
                }));
            }
            Err(ConnectionError::Failed(info)) => record_failure(Some(net_error(info.reason))),
            Err(_) => record_failure(Some(NetError::Timeout)),
        }
        Timer::after(REASSOCIATE_AFTER).await;
    }
}

/// Run the embassy-net stack.
#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Interface>) {
    runner.run().await
}
