//! The hooks a board gives the [`Runner`](super::Runner): tiny traits, one per kind of
//! hardware, so the runner can hold each apart and borrow them side by side.

use core::future::Future;
use core::net::IpAddr;

use embedded_io_async::{Read, Write};
use rand_core::{CryptoRng, RngCore};

use crate::config::{DeviceConfig, NtpServer};
use crate::image::{Flash, ImageFailure};
use crate::log::{ConnectFailure, HeapReport, Line, NetError, ShutdownReason};
use crate::session::{Event, Instant, RandomSource};

/// The board itself: what it owns that no other hook does, and the types of its hooks.
///
/// Rules for an implementation:
/// - [`log`](Board::log) never blocks for long and never fails: a line that cannot be
///   written is counted and reported by the serial writer (`W log: dropped lines=N`).
/// - [`stop_requested`](Board::stop_requested) may be dropped at any await point and
///   polled again; a board that never stops leaves it pending (the default).
pub trait Board {
    type Clock: Clock;
    type Network: Network;
    type TimeSync: TimeSync;
    type Storage: Storage;
    /// The random source for backoff jitter and the TLS handshake (a hardware RNG on the
    /// chip). Cloned for each handshake.
    type Rng: RngCore + CryptoRng + Clone;

    /// Write one serial log line.
    fn log(&mut self, line: &Line);

    /// The heap figures for the `heap:` line, if the board counts them.
    fn heap(&self) -> Option<HeapReport>;

    /// The MQTT connection is up (`true`) or down: a status LED, say.
    fn set_connected(&mut self, _up: bool) {}

    /// Resolves when the device is asked to stop (a signal on the host).
    fn stop_requested(&mut self) -> impl Future<Output = ShutdownReason> {
        core::future::pending()
    }
}

/// The one monotonic clock: instants are milliseconds since boot.
///
/// `sleep_until` is cancel-safe (the runner drops it whenever something else wins) and
/// returns at once for an instant in the past.
pub trait Clock {
    fn now(&self) -> Instant;
    fn sleep_until(&self, t: Instant) -> impl Future<Output = ()>;
}

/// The network: joining it, noticing it go, and opening TCP connections over it.
///
/// Rules:
/// - [`join`](Network::join) is bounded by the board (below the session's request
///   timeout) and runs to completion: the runner does not race it.
/// - [`link_lost`](Network::link_lost) is only awaited after a successful join; it is
///   cancel-safe.
/// - [`open`](Network::open) resolves `host` and connects; the runner drops it (and the
///   half-open socket) if the session's connect deadline passes. The socket's writes
///   must not be cancelled by the board itself; a board may bound a stalled write by
///   failing it (the runner then drops the connection as a whole).
pub trait Network {
    /// Buffers a socket borrows (its TCP windows on the chip; `()` on the host).
    type SocketBuffers;
    /// A connected TCP socket.
    type Socket<'b>: Read + Write;

    /// Join the network; the local address on success.
    fn join(&mut self, config: &DeviceConfig) -> impl Future<Output = Result<IpAddr, NetError>>;

    /// Resolves when the joined network goes down.
    fn link_lost(&self) -> impl Future<Output = ()>;

    /// Resolve `host` and connect to it on `port`.
    fn open<'b>(
        &self,
        host: &str,
        port: u16,
        bufs: &'b mut Self::SocketBuffers,
    ) -> impl Future<Output = Result<Self::Socket<'b>, ConnectFailure>>;
}

/// SNTP, answered beside the connection (a re-sync must never stall it).
///
/// Rules: [`request`](TimeSync::request) replaces any request still under way;
/// [`answer`](TimeSync::answer) stays pending while none is, and is cancel-safe (a
/// dropped `answer` loses nothing: the request goes on and the next call reports it).
pub trait TimeSync {
    fn request(&mut self, server: &NtpServer);
    /// `TimeSynced`, `TimeSyncFailed` or `TimeKissOfDeath`.
    fn answer(&mut self) -> impl Future<Output = Event<'static>>;
}

/// Where the flash image lives: the storage partition on the chip, a file on the host.
pub trait Storage {
    type Image<'s>: Flash
    where
        Self: 's;

    /// The image, ready to mount; a missing partition or file is a `Creds` failure
    /// naming `FlashFile::Image`.
    fn image(&mut self) -> Result<Self::Image<'_>, ImageFailure>;
}

/// The board's random source as the session's jitter.
#[derive(Debug, Clone)]
pub struct Jitter<R>(pub R);

impl<R: RngCore> RandomSource for Jitter<R> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
}
