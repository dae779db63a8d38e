//! Lines a serial port could not take, reported in-band (DESIGN section 2: a line the
//! board cannot write is counted and reported, never dropped silently).
//!
//! A board's serial writer counts each line it had to drop and, before the next line it
//! can write, writes the [`Line::log_dropped`] marker, so the gap shows in the log exactly
//! where it happened: `W log: dropped lines=712`.

use super::Line;

/// The count of lines dropped since the last marker went out.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DroppedLines {
    pending: u64,
    total: u64,
}

impl DroppedLines {
    pub const fn new() -> Self {
        Self {
            pending: 0,
            total: 0,
        }
    }

    /// One line could not be written.
    pub fn dropped(&mut self) {
        self.pending = self.pending.saturating_add(1);
        self.total = self.total.saturating_add(1);
    }

    /// The marker to write (with the next line's uptime) before the next line, if lines
    /// were dropped since the last one. Call [`DroppedLines::reported`] once it is written.
    pub fn marker(&self, uptime_ms: u64) -> Option<Line> {
        (self.pending > 0).then(|| Line::log_dropped(uptime_ms, self.pending))
    }

    /// The marker from [`DroppedLines::marker`] went out.
    pub fn reported(&mut self) {
        self.pending = 0;
    }

    /// Lines dropped and not yet reported.
    pub const fn pending(&self) -> u64 {
        self.pending
    }

    /// Lines dropped since boot.
    pub const fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests;
