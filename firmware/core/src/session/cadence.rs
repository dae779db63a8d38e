//! The publish cadence: a drift-free schedule that skips, never bursts.

use super::time::{Duration, Instant};

/// Fires every `period` on a fixed grid anchored at the first [`start`](Self::start):
/// the next deadline is always the previous deadline plus `period` (never `now + period`),
/// so timing jitter in the driver never accumulates. A tick that comes late — even many
/// periods late, e.g. after a reconnect — fires once and moves the deadline to the first
/// slot after `now`, reporting how many slots it skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CadenceSchedule {
    period: Duration,
    next: Option<Instant>,
}

/// A slot came due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fire {
    /// The deadline that fired (on the grid).
    pub slot: Instant,
    /// Whole slots that passed unserved before this one fired.
    pub skipped: u64,
}

impl CadenceSchedule {
    /// A zero period is raised to 1 ms so the schedule always advances.
    pub fn new(period: Duration) -> Self {
        Self {
            period: period.max(Duration::from_millis(1)),
            next: None,
        }
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// Anchor the grid: the first slot is one period after `now`. Later calls keep the
    /// existing grid, so sequence timing survives reconnects.
    pub fn start(&mut self, now: Instant) {
        if self.next.is_none() {
            self.next = Some(now + self.period);
        }
    }

    pub fn is_started(&self) -> bool {
        self.next.is_some()
    }

    /// The next slot, once started.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next
    }

    /// Fire if a slot is due at `now`; afterwards the deadline is in the future.
    pub fn poll(&mut self, now: Instant) -> Option<Fire> {
        let slot = self.next?;
        if now < slot {
            return None;
        }
        let period = self.period.as_millis();
        let skipped = (now - slot).as_millis() / period;
        let advance = skipped.saturating_add(1).saturating_mul(period);
        self.next = Some(slot + Duration::from_millis(advance));
        Some(Fire { slot, skipped })
    }
}
