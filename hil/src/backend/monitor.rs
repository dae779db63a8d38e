//! `--no-flash`: a board used as it is. Nothing is written; each start opens its serial
//! port (any tty: a USB bridge, a pseudo-terminal, a remote bridge), resets the board
//! through RTS when the port has modem lines, and reads what its firmware prints.

use std::path::{Path, PathBuf};

use super::esp8266::{self, Sketch};
use super::ports;
use super::{Backend, BoardDevice, Device};
use crate::error::BackendError;
use crate::rig::GivenImage;
use crate::serial::{SerialCapture, SerialLine};
use crate::vocabulary::Vocabulary;

/// A board on a serial port, running whatever it runs.
pub struct MonitorBackend {
    board: &'static str,
    port: PathBuf,
    baud: u32,
    /// For an ESP8266: the sketch whose lines are translated.
    sketch: Option<Sketch>,
}

impl MonitorBackend {
    /// The ESP8266 on `port`, running `sketch`.
    pub fn esp8266(port: PathBuf, sketch: Sketch) -> Result<Self, BackendError> {
        Self::on("esp8266", port, esp8266::LOG_BAUD, Some(sketch))
    }

    /// The ESP32-C3 on `port`, running the project's firmware (its USB-Serial-JTAG
    /// ignores the baud rate).
    pub fn esp32c3(port: PathBuf) -> Result<Self, BackendError> {
        Self::on("esp32c3", port, crate::serial::DEFAULT_BAUD, None)
    }

    fn on(
        board: &'static str,
        port: PathBuf,
        baud: u32,
        sketch: Option<Sketch>,
    ) -> Result<Self, BackendError> {
        if !port.exists() {
            return Err(BackendError::board(
                board,
                format!(
                    "no serial port {}; ports seen: {}",
                    port.display(),
                    ports::describe_available()
                ),
            ));
        }
        Ok(Self {
            board,
            port,
            baud,
            sketch,
        })
    }

    pub fn port(&self) -> &Path {
        &self.port
    }
}

impl Backend for MonitorBackend {
    fn board(&self) -> &'static str {
        self.board
    }

    fn single_device(&self) -> bool {
        true
    }

    fn vocabulary(&self) -> Vocabulary {
        match self.sketch {
            Some(Sketch::Tutorial) => Vocabulary::TutorialSketch,
            Some(Sketch::Adapted) | None => Vocabulary::Firmware,
        }
    }

    fn explain(&self, seen: &[SerialLine]) -> Option<String> {
        (self.sketch == Some(Sketch::Adapted) && esp8266::looks_like_the_tutorial(seen)).then(
            || {
                "the board prints the original tutorial sketch's lines (`Success to open cert \
             file`); run with --sketch tutorial"
                    .to_string()
            },
        )
    }

    /// The image is the one the board holds already: only its settings are used (an
    /// unreadable one leaves the endpoint unnamed in translated lines).
    fn start(&self, image: &Path) -> Result<Box<dyn Device>, BackendError> {
        let config = GivenImage::read(image).ok().map(|given| given.config);
        let serial = SerialCapture::open_port_with(
            &self.port,
            self.baud,
            |port| esp8266::reset_if_possible(port, &self.port),
            self.sketch
                .map(|_| esp8266::translator_for(config.as_ref())),
        )
        .map_err(|e| BackendError::board(self.board, e))?;
        Ok(Box::new(BoardDevice { serial }))
    }
}
