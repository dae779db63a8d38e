//! What the chip adds under the core's connection (`firmware_core::driver`): the TCP
//! socket's windows and its timeout. TLS and MQTT buffer sizes are the core's
//! (`firmware_core::driver::buffers`), the same on every board.

use embassy_time::Duration;

pub const TCP_RX_BUF: usize = 4096;
pub const TCP_TX_BUF: usize = 2048;

/// A TCP segment that stays unacknowledged this long (a dead link) aborts the
/// connection; the runner's own write bound (`IO_TIMEOUT_MS`) is as long.
pub const IO_TIMEOUT: Duration = Duration::from_millis(firmware_core::driver::IO_TIMEOUT_MS);

/// The TCP socket's windows.
pub struct TcpBuffers {
    pub rx: [u8; TCP_RX_BUF],
    pub tx: [u8; TCP_TX_BUF],
}

impl TcpBuffers {
    pub const fn new() -> Self {
        Self {
            rx: [0; TCP_RX_BUF],
            tx: [0; TCP_TX_BUF],
        }
    }
}

impl Default for TcpBuffers {
    fn default() -> Self {
        Self::new()
    }
}
