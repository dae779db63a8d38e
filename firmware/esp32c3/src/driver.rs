//! The chip's hooks for `firmware_core::driver::Runner`, the loop every board runs.
//!
//! Only what is the chip's own lives here: embassy-time as the clock, WiFi and
//! embassy-net TCP as the network, the SNTP task, the `storage` flash partition, the
//! USB-Serial-JTAG log, esp-alloc's heap figures, the LED and the RSA accelerator. The
//! loop, the TLS handshake, the buffer sizes and the cancel-safety rules come from the
//! core.

use core::future::pending;
use core::net::IpAddr;

use embassy_executor::Spawner;
use embassy_net::IpEndpoint;
use embassy_net::tcp::TcpSocket;
use embassy_time::{Duration, Timer};
use esp_hal::rng::Trng;
use esp_storage::FlashStorage;
use firmware_core::config::{DeviceConfig, NtpServer};
use firmware_core::driver::{
    self, Board, ConnBuffers, Network, Parts, Runner, Storage, TimeSync, buffers,
};
use firmware_core::image::{CredentialBuffers, ImageFailure};
use firmware_core::log::{
    ConnectError, ConnectFailure, FlashFile, HeapReport, Level, Line, LoadError, NetError,
};
use firmware_core::mqtt::BrokerNotes;
use firmware_core::session::{Event, Instant};
use firmware_core::tls::WriteGate;
use static_cell::{ConstStaticCell, StaticCell};

use crate::board::{BOARD, Board as Peripherals, FIRMWARE};
use crate::net::{JOIN_TIMEOUT, Net};
use crate::rsa::RsaAccelerator;
use crate::serial::Serial;
use crate::storage::Partition;
use crate::transport::{IO_TIMEOUT, TcpBuffers};
use crate::{heap, led, sntp};

/// Buffers of the one connection; static so they are counted in `.bss`, not the stack.
static BUFS: ConstStaticCell<ConnBuffers<TcpBuffers>> =
    ConstStaticCell::new(ConnBuffers::new(TcpBuffers::new()));
static FILES: ConstStaticCell<CredentialBuffers> = ConstStaticCell::new(CredentialBuffers::new());
static GATE: StaticCell<WriteGate> = StaticCell::new();
/// The RSA accelerator, lent to the runner for the program's life.
static RSA: StaticCell<RsaAccelerator> = StaticCell::new();
/// Atomics only: shared by the connection's reader (inside minimq) and the runner.
static NOTES: BrokerNotes = BrokerNotes::new();

/// Run the device forever.
pub async fn run(spawner: Spawner, peripherals: Peripherals) -> ! {
    let Peripherals {
        flash,
        mut serial,
        wifi,
        rng,
        rsa,
        led,
        ..
    } = peripherals;
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
    let parts = Parts {
        board: Esp32c3 { serial },
        clock: EmbassyClock,
        network: Wifi { net, spawner },
        time: SntpTask(time),
        storage: FlashPartition(flash),
        rng,
    };
    let settings = driver::settings(FIRMWARE, BOARD, env!("BUILD_EPOCH"));
    let gate = GATE.init(WriteGate::new());
    let rsa = RSA.init(rsa);
    Runner::new(parts, settings, FILES.take(), gate, &NOTES)
        .with_rsa_exponentiator(rsa)
        .run(BUFS.take())
        .await;
    // Only a stop request ends the session, and the chip never makes one.
    loop {
        Timer::after(Duration::from_secs(3600)).await;
    }
}

fn now() -> Instant {
    Instant::from_millis(embassy_time::Instant::now().as_millis())
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

/// The log port, the heap figures and the LED.
pub struct Esp32c3 {
    serial: Serial,
}

impl Board for Esp32c3 {
    type Clock = EmbassyClock;
    type Network = Wifi;
    type TimeSync = SntpTask;
    type Storage = FlashPartition;
    type Rng = Trng;

    fn log(&mut self, line: &Line) {
        self.serial.log(line);
    }

    fn heap(&self) -> Option<HeapReport> {
        Some(heap::report(buffers::TLS_BYTES, buffers::MQTT_BYTES))
    }

    fn set_connected(&mut self, up: bool) {
        led::set_connected(up);
    }
}

/// embassy-time: milliseconds since boot.
pub struct EmbassyClock;

impl driver::Clock for EmbassyClock {
    fn now(&self) -> Instant {
        now()
    }

    async fn sleep_until(&self, t: Instant) {
        Timer::at(embassy_time::Instant::from_millis(t.as_millis())).await
    }
}

/// WiFi station and embassy-net; `net` is `None` when WiFi did not start (logged at
/// boot), and every join then fails as a timeout would.
pub struct Wifi {
    net: Option<Net>,
    spawner: Spawner,
}

impl Network for Wifi {
    type SocketBuffers = TcpBuffers;
    type Socket<'b> = TcpSocket<'b>;

    async fn join(&mut self, config: &DeviceConfig) -> Result<IpAddr, NetError> {
        match self.net.as_mut() {
            Some(net) => net.join(self.spawner, &config.wifi).await,
            None => {
                Timer::after(JOIN_TIMEOUT).await;
                Err(NetError::Timeout)
            }
        }
    }

    async fn link_lost(&self) {
        match &self.net {
            Some(net) => net.wait_down().await,
            None => pending().await,
        }
    }

    async fn open<'b>(
        &self,
        host: &str,
        port: u16,
        bufs: &'b mut TcpBuffers,
    ) -> Result<TcpSocket<'b>, ConnectFailure> {
        let tcp = ConnectFailure::Mqtt(ConnectError::Tcp);
        let Some(net) = &self.net else {
            return Err(tcp);
        };
        let Some(addr) = net.resolve(host).await else {
            return Err(ConnectFailure::Mqtt(ConnectError::Dns));
        };
        let mut socket = TcpSocket::new(net.stack, &mut bufs.rx, &mut bufs.tx);
        // Unacknowledged data this old aborts the connection (a dead link).
        socket.set_timeout(Some(IO_TIMEOUT));
        socket
            .connect(IpEndpoint::new(addr, port))
            .await
            .map_err(|_| tcp)?;
        Ok(socket)
    }
}

/// The SNTP task's client end (`None` without a network stack).
pub struct SntpTask(Option<sntp::TimeClient>);

impl TimeSync for SntpTask {
    fn request(&mut self, server: &NtpServer) {
        if let Some(time) = self.0.as_mut() {
            time.request(server);
        }
    }

    async fn answer(&mut self) -> Event<'static> {
        let Some(time) = self.0.as_mut() else {
            return pending().await;
        };
        match time.answer().await {
            Ok(reply) => Event::TimeSynced(reply.time.secs),
            Err(e) => e.event(),
        }
    }
}

/// The flash, where the `storage` partition holds the image.
pub struct FlashPartition(FlashStorage<'static>);

impl Storage for FlashPartition {
    type Image<'s> = Partition<'s>;

    fn image(&mut self) -> Result<Partition<'_>, ImageFailure> {
        // No partition table, or no `storage` partition in it.
        Partition::find(&mut self.0).map_err(|_| ImageFailure::Creds {
            file: FlashFile::Image,
            error: LoadError::Missing,
        })
    }
}
