//! Ctrl-C and SIGTERM end the device cleanly.

use firmware_core::log::ShutdownReason;
use tokio::signal::unix::{SignalKind, signal};

/// Resolves on the first SIGINT or SIGTERM. Install it before the device starts so an
/// early signal is not lost.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Wait for a signal.
    pub async fn recv(&mut self) -> ShutdownReason {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        ShutdownReason::Signal
    }
}
