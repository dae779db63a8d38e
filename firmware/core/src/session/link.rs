//! Link liveness while connected: when the broker was last heard from and when the
//! device last sent, for keep-alive pings and dead-link detection.

use super::time::{Duration, Instant};

/// Link liveness while connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Link {
    pub(super) last_rx: Instant,
    pub(super) last_tx: Instant,
    pub(super) ping_sent: Option<Instant>,
}

/// No traffic from the broker for this long means the link is dead: 1.5x keep-alive.
pub(super) fn dead_after(keepalive: Duration) -> Duration {
    keepalive.mul_div(3, 2)
}
