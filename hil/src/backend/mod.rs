//! Device backends: how a scenario gets a running device and its serial log.
//!
//! A [`Backend`] starts a device on a given flash image and hands back a [`Device`]: the
//! [`SerialCapture`] of its serial port (lines with host timestamps) and whether it
//! stopped on its own. The virtual backend starts a process per scenario; a board backend
//! is one physical device, so scenarios take turns on it: the first start flashes the
//! application, every start flashes the scenario's image into the data partition and
//! resets the board.

use std::path::Path;

use crate::error::BackendError;
use crate::serial::{SerialCapture, SerialLine};
use crate::vocabulary::Vocabulary;

pub mod esp32c3;
pub mod esp8266;
pub mod flashing;
pub mod monitor;
pub mod ports;
pub mod virtual_device;

/// A running device. Dropping it stops it (a process is killed; a board is left to the
/// next start, which resets it).
pub trait Device: Send {
    /// Its serial log, for reading.
    fn serial(&mut self) -> &mut SerialCapture;
    /// Its serial log, for looking at what was read.
    fn capture(&self) -> &SerialCapture;
    /// How it stopped, if it stopped on its own (a process that exited); `None` while it
    /// runs, and always for a board (a board that resets keeps its port).
    fn exited(&mut self) -> Option<String>;
}

/// Starts devices of one kind.
pub trait Backend: Send + Sync {
    /// The board's name as `--board` spells it.
    fn board(&self) -> &'static str;
    /// One physical device: scenarios must run one at a time.
    fn single_device(&self) -> bool;
    /// The log lines its firmware can print (scenarios skip what it cannot show).
    fn vocabulary(&self) -> Vocabulary {
        Vocabulary::Firmware
    }
    /// What a failure's reader should know about the device's output `seen`, beyond the
    /// lines themselves (e.g. that another firmware than the one assumed is running).
    fn explain(&self, _seen: &[SerialLine]) -> Option<String> {
        None
    }
    /// Before the first scenario: put on the device what every start shares (a board's
    /// firmware), so no scenario's deadline includes it. Blocks while a board flashes.
    fn prepare(&self) -> Result<(), BackendError> {
        Ok(())
    }
    /// Start a device running the flash image at `image`. Blocks while a board flashes.
    fn start(&self, image: &Path) -> Result<Box<dyn Device>, BackendError>;
}

/// A board after a start: its serial port, captured from the reset on. The board keeps
/// running when this is dropped; the next start flashes and resets it.
pub struct BoardDevice {
    pub serial: SerialCapture,
}

impl Drop for BoardDevice {
    fn drop(&mut self) {
        // The next start's flasher opens the port exclusively.
        self.serial.close();
    }
}

impl Device for BoardDevice {
    fn serial(&mut self) -> &mut SerialCapture {
        &mut self.serial
    }

    fn capture(&self) -> &SerialCapture {
        &self.serial
    }

    fn exited(&mut self) -> Option<String> {
        None
    }
}
