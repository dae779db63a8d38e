//! One device of the fleet: the real device core (`firmware_core::driver::Runner` and
//! its session) over the virtual device's host adapters (tokio clock, host network,
//! SNTP over UDP), with its flash image in memory and its log lines turned into
//! [`Record`]s for the fleet's figures instead of being printed.

use std::time::Instant;

use firmware_core::driver::{Board, Parts};
use firmware_core::log::{HeapReport, Line, ShutdownReason};
use rand_core::OsRng;
use tokio::sync::{mpsc, watch};
use virtual_device::device::{Clock, HostNetwork, HostTime, ImageInMemory};

/// What a device did, as its log said it, with the host time it said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Happening {
    /// `mqtt: connecting`: a CONNECT attempt starts (TCP, TLS, CONNECT).
    Connecting,
    /// `mqtt: connected`.
    Connected,
    /// `mqtt: disconnected`, or a failed attempt after a connection.
    Disconnected,
    /// `mqtt: backoff delay_ms=…`: the wait before the next attempt.
    Backoff { delay_ms: u64 },
    /// `publish: seq=…`: a publish handed to MQTT.
    Published { seq: u32 },
}

/// One [`Happening`] of device `device` (its index in this process).
#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub device: u32,
    pub at: Instant,
    pub what: Happening,
}

/// The fleet device's board: no serial port, its lines go to the fleet's collector.
pub struct FleetBoard {
    device: u32,
    records: mpsc::UnboundedSender<Record>,
    stop: watch::Receiver<bool>,
}

impl FleetBoard {
    fn record(&self, what: Happening) {
        // The collector outlives the devices; a send after it stopped is moot.
        let _ = self.records.send(Record {
            device: self.device,
            at: Instant::now(),
            what,
        });
    }
}

/// The [`Happening`] a log line reports, if the fleet counts it.
pub fn happening(line: &Line) -> Option<Happening> {
    match (line.tag(), line.message()) {
        ("mqtt", "connecting") => Some(Happening::Connecting),
        ("mqtt", "connected") => Some(Happening::Connected),
        ("mqtt", "disconnected") => Some(Happening::Disconnected),
        ("mqtt", "backoff") => Some(Happening::Backoff {
            delay_ms: line.field_as("delay_ms")?,
        }),
        ("publish", "") => Some(Happening::Published {
            seq: line.field_as("seq")?,
        }),
        _ => None,
    }
}

impl Board for FleetBoard {
    type Clock = Clock;
    type Network = HostNetwork;
    type TimeSync = HostTime;
    type Storage = ImageInMemory;
    type Rng = OsRng;

    fn log(&mut self, line: &Line) {
        if let Some(what) = happening(line) {
            self.record(what);
        }
    }

    fn heap(&self) -> Option<HeapReport> {
        // One process, one allocator: per-device heap figures come from /proc instead.
        None
    }

    async fn stop_requested(&mut self) -> ShutdownReason {
        // The sender stays alive for the fleet's whole run; a dropped one also stops.
        let _ = self.stop.wait_for(|stop| *stop).await;
        ShutdownReason::Signal
    }
}

/// Run device `device` from its flash `image` until `stop` turns true.
pub async fn run(
    device: u32,
    image: Vec<u8>,
    records: mpsc::UnboundedSender<Record>,
    stop: watch::Receiver<bool>,
) {
    let parts = Parts {
        board: FleetBoard {
            device,
            records,
            stop,
        },
        clock: Clock::start(),
        network: HostNetwork::default(),
        time: HostTime::default(),
        storage: ImageInMemory(image),
        rng: OsRng,
    };
    virtual_device::device::run_parts(parts, virtual_device::device::settings(), None).await;
}
