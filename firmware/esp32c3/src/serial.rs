//! The serial log (DESIGN section 2) over the chip's USB-Serial-JTAG port.
//!
//! The port's 64-byte transmit FIFO empties only while a USB host reads it. Lines go in
//! through [`lines::LineWriter`], which knows whether each line went out whole: a board
//! without a host never blocks on logging, and the lines it could not write are counted
//! and reported in-band (`W log: dropped lines=N`) once the port takes lines again.
//!
//! The panic handler (esp-backtrace) still prints through esp-println, which writes the
//! same FIFO registers: it needs no driver, and a panic is the last thing written.

pub mod lines;

use esp_hal::Blocking;
use esp_hal::peripherals::USB_DEVICE;
use esp_hal::usb::usb_serial_jtag::UsbSerialJtag;
use firmware_core::log::Line;

use self::lines::{Fifo, LineWriter, SPIN_BUDGET};

/// The USB-Serial-JTAG transmit FIFO.
pub struct JtagFifo(UsbSerialJtag<'static, Blocking>);

impl Fifo for JtagFifo {
    fn try_write(&mut self, byte: u8) -> bool {
        self.0.write_byte_nb(byte).is_ok()
    }

    fn flush(&mut self) {
        // Only sets WR_DONE; whether the host has taken the packet yet does not matter here.
        let _ = self.0.flush_tx_nb();
    }
}

/// The log port.
pub struct Serial {
    writer: LineWriter<JtagFifo>,
}

impl Serial {
    /// Take the USB-Serial-JTAG peripheral. It is never reset here (the clock stays on
    /// from boot), so a host's open port survives.
    pub fn new(usb: USB_DEVICE<'static>) -> Self {
        Self {
            writer: LineWriter::new(JtagFifo(UsbSerialJtag::new(usb)), SPIN_BUDGET),
        }
    }

    /// Write one log line, after the `log: dropped` marker if lines were dropped.
    pub fn log(&mut self, line: &Line) {
        self.writer.log(line);
    }
}
