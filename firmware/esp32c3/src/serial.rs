//! The serial log (DESIGN section 2) over the chip's USB-Serial-JTAG port.
//!
//! esp-println writes straight to the USB-Serial-JTAG FIFO and drops output when no host
//! reads it, so a board without a monitor attached never blocks on logging.

use firmware_core::log::Line;

/// Print one log line.
pub fn line(line: &Line) {
    esp_println::println!("{line}");
}
