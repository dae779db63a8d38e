//! Per-client backlog limits: what the broker holds for a subscriber that cannot keep up.
//!
//! Every delivery routed to a connected client is counted (messages and bytes) from the
//! moment it is queued until it is written to the client's socket or dropped, including
//! the QoS 1 deliveries waiting for a Receive Maximum slot. Past the limits the broker
//! does what AWS IoT Core does with a slow subscriber: QoS 0 messages are dropped first
//! (once the backlog is half full), QoS 1 messages are held up to the full limit and
//! dropped beyond it, and a client whose socket takes no bytes for
//! [`crate::session::WRITE_STALL`] is disconnected. Memory per client stays bounded by
//! [`MAX_BACKLOG_BYTES`] whatever the client does.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::mqtt::QoS;

/// Most bytes held for one client (payload, topic and properties).
pub const MAX_BACKLOG_BYTES: usize = 4 * 1024 * 1024;
/// Most messages held for one client.
pub const MAX_BACKLOG_MESSAGES: usize = 1000;

/// A client's backlog; shared by the router (which admits) and its session (which
/// releases).
#[derive(Debug, Default)]
pub struct Backlog {
    bytes: AtomicUsize,
    messages: AtomicUsize,
    dropped: AtomicU64,
}

/// A client's backlog as figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogFigures {
    pub bytes: usize,
    pub messages: usize,
    /// Messages dropped because the backlog was full, since the client connected.
    pub dropped: u64,
}

impl Backlog {
    /// Count a delivery of `size` bytes at `qos` if the limits allow it; `false` means
    /// drop it (counted).
    pub fn admit(&self, size: usize, qos: QoS) -> bool {
        let (bytes, messages) = (
            self.bytes.load(Ordering::Relaxed),
            self.messages.load(Ordering::Relaxed),
        );
        // QoS 0 gives way early, so room stays for the messages that must arrive.
        let (max_bytes, max_messages) = match qos {
            QoS::AtMostOnce => (MAX_BACKLOG_BYTES / 2, MAX_BACKLOG_MESSAGES / 2),
            _ => (MAX_BACKLOG_BYTES, MAX_BACKLOG_MESSAGES),
        };
        if bytes.saturating_add(size) > max_bytes || messages >= max_messages {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.messages.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// A delivery admitted with `size` was written or dropped.
    pub fn release(&self, size: usize) {
        // Saturating: a release is never larger than what was admitted, but a wrap here
        // would turn the limit off.
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(size))
            });
        let _ = self
            .messages
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                Some(m.saturating_sub(1))
            });
    }

    pub fn figures(&self) -> BacklogFigures {
        BacklogFigures {
            bytes: self.bytes.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos0_gives_way_at_half_and_qos1_at_the_limit() {
        let b = Backlog::default();
        let chunk = 128 * 1024;
        let mut qos0 = 0;
        while b.admit(chunk, QoS::AtMostOnce) {
            qos0 += 1;
        }
        assert_eq!(qos0, MAX_BACKLOG_BYTES / 2 / chunk);
        let mut qos1 = 0;
        while b.admit(chunk, QoS::AtLeastOnce) {
            qos1 += 1;
        }
        assert_eq!(qos0 + qos1, MAX_BACKLOG_BYTES / chunk);
        assert!(b.figures().bytes <= MAX_BACKLOG_BYTES);
        assert_eq!(b.figures().dropped, 2);
        b.release(chunk);
        assert!(b.admit(chunk, QoS::AtLeastOnce));
        // Small messages stop at the count limit.
        let small = Backlog::default();
        let admitted = (0..5000)
            .filter(|_| small.admit(10, QoS::AtLeastOnce))
            .count();
        assert_eq!(admitted, MAX_BACKLOG_MESSAGES);
    }
}
