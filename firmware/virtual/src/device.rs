//! The virtual board: `firmware_core::driver::Runner` over tokio, the flash image file,
//! the host's network and a serial port (stdout or a pseudo-terminal).
//!
//! Only what is the host's own lives here: the clock (tokio time), the network (the
//! broker resolved with the host's DNS, TCP over tokio), SNTP over tokio UDP, the image
//! file, the counting allocator's figures and the signals that stop the device. The loop,
//! the TLS handshake, the buffers and the cancel-safety rules are the chip's, from the
//! core.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use embedded_io_adapters::tokio_1::FromTokio;
use firmware_core::config::{DeviceConfig, NtpServer};
use firmware_core::driver::{
    self, Board, ConnBuffers, Network, Parts, Runner, Storage, TimeSync, buffers,
};
use firmware_core::image::{CredentialBuffers, Flash, FlashError, ImageFailure};
use firmware_core::log::{
    ConnectError, ConnectFailure, FlashFile, HeapReport, Line, LoadError, NetError, ShutdownReason,
    TimeError,
};
use firmware_core::mqtt::BrokerNotes;
use firmware_core::session::{Event, Instant, Settings};
use firmware_core::tls::WriteGate;
use firmware_core::tls::rsa_accel::{
    ModExpOperands, RsaExponentiator, SoftwareExponentiator, Unsupported,
};
use rand_core::OsRng;
use tokio::net::TcpStream;

use crate::cli::{Args, RsaHook};
use crate::heap::{CountingAlloc, HEAP_BUDGET};
use crate::net;
use crate::serial::Serial;
use crate::shutdown::Signals;
use crate::sntp::{self, SntpOptions};

/// Board name in the boot line.
pub const BOARD: &str = "virtual";
/// Firmware version in the boot line.
pub const FIRMWARE: &str = env!("CARGO_PKG_VERSION");
/// The build date (Unix seconds): the floor for a plausible SNTP time.
pub const BUILD_EPOCH: &str = env!("BUILD_EPOCH");
/// Longest the "wifi" step (resolving the broker) may take, as on the chip.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Run the device until a signal arrives; the last line says why it stopped.
pub async fn run(args: &Args, serial: &Serial, heap: Option<&'static CountingAlloc>) {
    let signals = match Signals::install() {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("virtual-device: cannot install signal handlers: {e}");
            None
        }
    };
    let parts = Parts {
        board: VirtualBoard {
            serial,
            heap,
            signals,
        },
        clock: Clock::start(),
        network: HostNetwork::default(),
        time: HostTime::default(),
        storage: ImageFile {
            path: args.flash.clone(),
        },
        rng: OsRng,
    };
    let mut settings = settings();
    for rule in &args.misbehave {
        let name = clap::ValueEnum::to_possible_value(rule)
            .map_or(String::new(), |v| v.get_name().to_string());
        eprintln!("virtual-device: breaking a rule on purpose (--misbehave {name})");
        rule.apply(&mut settings);
    }
    let mut software = SoftwareExponentiator;
    let mut faulty = FaultyExponentiator;
    let rsa: Option<&mut dyn RsaExponentiator> = match args.rsa_exponentiator {
        None => None,
        Some(RsaHook::Software) => Some(&mut software),
        Some(RsaHook::Faulty) => Some(&mut faulty),
    };
    run_parts(parts, settings, rsa).await;
}

/// The session settings of this firmware on the virtual board.
pub fn settings() -> Settings {
    driver::settings(FIRMWARE, BOARD, BUILD_EPOCH)
}

/// Run one device core over `parts` until its board asks it to stop: the entry point for
/// anything that runs devices in-process (the binary above, `hil fleet`). Allocates the
/// buffers once, as the chip's static ones, and wipes the key on the way out. `rsa`
/// stands in for a board's RSA accelerator (`--rsa-exponentiator`); `None` signs an RSA
/// key in software directly.
pub async fn run_parts<B: Board>(
    parts: Parts<B>,
    settings: Settings,
    rsa: Option<&mut dyn RsaExponentiator>,
) where
    B::Network: Network<SocketBuffers = ()>,
{
    let gate = WriteGate::new();
    let notes = BrokerNotes::new();
    let mut creds = Box::new(CredentialBuffers::new());
    let mut bufs = Box::new(ConnBuffers::new(()));
    let runner = Runner::new(parts, settings, &mut creds, &gate, &notes);
    let mut runner = match rsa {
        Some(hw) => runner.with_rsa_exponentiator(hw),
        None => runner,
    };
    runner.run(&mut bufs).await;
    // The key stays loaded while the device runs, as on the chip; wipe it on the way out.
    creds.key.iter_mut().for_each(|b| {
        // SAFETY: valid, aligned &mut u8.
        unsafe { std::ptr::write_volatile(b, 0) }
    });
}

/// An RSA accelerator that has gone wrong: the right result plus one, so every signature
/// it makes fails the core's public-key check (`--rsa-exponentiator faulty`).
struct FaultyExponentiator;

impl RsaExponentiator for FaultyExponentiator {
    fn mod_exp(
        &mut self,
        operands: &ModExpOperands<'_>,
        out: &mut [u32],
    ) -> Result<(), Unsupported> {
        SoftwareExponentiator.mod_exp(operands, out)?;
        match out.first_mut() {
            Some(word) => *word ^= 1,
            None => return Err(Unsupported),
        }
        Ok(())
    }
}

/// The serial port, the heap figures and the signals.
pub struct VirtualBoard<'a> {
    serial: &'a Serial,
    heap: Option<&'static CountingAlloc>,
    signals: Option<Signals>,
}

impl Board for VirtualBoard<'_> {
    type Clock = Clock;
    type Network = HostNetwork;
    type TimeSync = HostTime;
    type Storage = ImageFile;
    type Rng = OsRng;

    fn log(&mut self, line: &Line) {
        self.serial.log(line);
    }

    fn heap(&self) -> Option<HeapReport> {
        let stats = self.heap?.stats();
        let (free, min_free) = stats.free_of(HEAP_BUDGET);
        Some(HeapReport {
            free,
            min_free,
            used: stats.current,
            peak: stats.peak,
            tls_buffers: buffers::TLS_BYTES,
            mqtt_buffers: buffers::MQTT_BYTES,
        })
    }

    async fn stop_requested(&mut self) -> ShutdownReason {
        match self.signals.as_mut() {
            Some(s) => s.recv().await,
            None => std::future::pending().await,
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

    /// The tokio instant of a session instant (for sleeping until it).
    pub fn at(&self, t: Instant) -> tokio::time::Instant {
        // A deadline beyond what the platform's clock can hold is as good as never.
        self.boot
            .checked_add(Duration::from_millis(t.as_millis()))
            .unwrap_or_else(|| self.boot + Duration::from_secs(100 * 365 * 86_400))
    }
}

impl driver::Clock for Clock {
    fn now(&self) -> Instant {
        Instant::from_millis(self.boot.elapsed().as_millis() as u64)
    }

    async fn sleep_until(&self, t: Instant) {
        tokio::time::sleep_until(self.at(t)).await
    }
}

/// The host's network: always "joined"; joining resolves the broker and finds the local
/// address the device talks from.
#[derive(Debug, Default)]
pub struct HostNetwork {
    /// Every address of the endpoint, from the last join.
    remote: Vec<SocketAddr>,
}

impl Network for HostNetwork {
    type SocketBuffers = ();
    type Socket<'b> = FromTokio<TcpStream>;

    async fn join(&mut self, config: &DeviceConfig) -> Result<IpAddr, NetError> {
        let up = net::up(&config.endpoint.host, config.endpoint.port);
        match tokio::time::timeout(JOIN_TIMEOUT, up).await {
            Ok(Ok(info)) => {
                self.remote = info.remote;
                Ok(info.local)
            }
            // Failing to resolve or route to the broker is what a board sees as no
            // DHCP lease.
            Ok(Err(_)) => Err(NetError::Dhcp),
            Err(_) => Err(NetError::Timeout),
        }
    }

    async fn link_lost(&self) {
        std::future::pending().await
    }

    /// TCP to the first address of the endpoint (resolved at join) that accepts.
    async fn open(
        &self,
        _host: &str,
        _port: u16,
        _bufs: &mut (),
    ) -> Result<FromTokio<TcpStream>, ConnectFailure> {
        for addr in &self.remote {
            if let Ok(stream) = TcpStream::connect(addr).await {
                // MQTT packets are small and latency matters more than batching.
                let _ = stream.set_nodelay(true);
                return Ok(FromTokio::new(stream));
            }
        }
        Err(ConnectFailure::Mqtt(ConnectError::Tcp))
    }
}

type TimeRequest = Pin<Box<dyn Future<Output = Event<'static>> + Send>>;

/// SNTP over tokio UDP, in the background.
#[derive(Default)]
pub struct HostTime {
    request: Option<TimeRequest>,
    /// The server asked last, for the hint below.
    server: String,
    /// A person running the device by hand has been told once why no time comes.
    hinted: bool,
}

impl TimeSync for HostTime {
    fn request(&mut self, server: &NtpServer) {
        let (host, port) = (server.host.to_string(), server.port);
        self.server = format!("{host}:{port}");
        self.request = Some(Box::pin(async move {
            match sntp::sync(&host, port, SntpOptions::default()).await {
                Ok(reply) => Event::TimeSynced(reply.time.secs),
                Err(e) => e.event(),
            }
        }));
    }

    async fn answer(&mut self) -> Event<'static> {
        let event = match self.request.as_mut() {
            Some(request) => request.await,
            None => std::future::pending().await,
        };
        self.request = None;
        if matches!(
            event,
            Event::TimeSyncFailed(TimeError::Timeout | TimeError::Io)
        ) && !self.hinted
        {
            self.hinted = true;
            eprintln!(
                "virtual-device: no SNTP answer from {}; the test image syncs from the mock \
                 broker's SNTP server: start it with `make broker`",
                self.server
            );
        }
        event
    }
}

/// The flash image: the very file `certs image` writes, read whole at each load (the
/// chip mounts its partition the same way, and mounting may write to it).
#[derive(Debug)]
pub struct ImageFile {
    path: PathBuf,
}

impl Storage for ImageFile {
    type Image<'s> = ImageBytes;

    fn image(&mut self) -> Result<ImageBytes, ImageFailure> {
        let error = match std::fs::read(&self.path) {
            Ok(bytes) => return Ok(ImageBytes(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LoadError::Missing,
            Err(_) => LoadError::Io,
        };
        Err(ImageFailure::Creds {
            file: FlashFile::Image,
            error,
        })
    }
}

/// A flash image held in memory, for devices run in-process many at a time (`hil fleet`):
/// the same bytes an image file holds, mounted in place as the chip mounts its partition.
#[derive(Debug)]
pub struct ImageInMemory(pub Vec<u8>);

impl Storage for ImageInMemory {
    type Image<'s> = &'s mut [u8];

    fn image(&mut self) -> Result<&mut [u8], ImageFailure> {
        Ok(&mut self.0[..])
    }
}

/// An image file's bytes in memory.
pub struct ImageBytes(Vec<u8>);

impl Flash for ImageBytes {
    fn capacity(&self) -> usize {
        self.0.len()
    }
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), FlashError> {
        (&mut self.0[..]).read(offset, buf)
    }
    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), FlashError> {
        (&mut self.0[..]).write(offset, data)
    }
    fn erase(&mut self, offset: usize, len: usize) -> Result<(), FlashError> {
        (&mut self.0[..]).erase(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_core::driver::Clock as _;

    #[test]
    fn clock_maps_session_instants_back_to_tokio_time() {
        let clock = Clock::start();
        let t = Instant::from_millis(2000);
        assert_eq!(clock.at(t) - clock.boot, Duration::from_millis(2000));
        assert!(clock.now() < t);
    }
}
