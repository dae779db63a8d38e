//! Log lines into a small transmit FIFO that only a reading host drains, never blocking
//! for long and never dropping a line silently (DESIGN section 2).
//!
//! No HAL here: the FIFO is a trait, so the host tests (`host-tests/`) drive this very
//! file with a FIFO of their own.
//!
//! - A full FIFO is flushed, then polled at most [`SPIN_BUDGET`] times for room, as
//!   esp-println waits; a host that reads frees room long before that.
//! - A line that did not go out whole is dropped and counted in [`DroppedLines`]; before
//!   the next line that fits, `W log: dropped lines=N` goes out, where the gap is.
//! - After a wait ran out (no host reading), the FIFO is tried once per line, without
//!   spinning, until it takes a byte again: a board without a host spends one budget per
//!   stall, not one per line.
//! - A line cut off mid-way is ended with [`CUT_END`] before the next one: the next line
//!   starts on a line of its own, and the fragment does not parse as a log line (the
//!   format is printable ASCII), so a reader never takes it for a whole one, such as an
//!   inbound message with a shorter payload.

use core::fmt::{self, Display, Write};

use firmware_core::log::{DroppedLines, Line};

/// Polls of a full FIFO before the line being written is given up (esp-println's
/// figure: a few milliseconds on the chip).
pub const SPIN_BUDGET: u32 = 50_000;

/// What each line ends with.
const LINE_END: &str = "\r\n";
/// What ends a line that was cut off.
pub const CUT_END: &str = "\u{2026} [cut]\r\n";

/// A transmit FIFO that a host drains.
pub trait Fifo {
    /// Put one byte in; `false` if the FIFO is full.
    fn try_write(&mut self, byte: u8) -> bool;
    /// Hand what the FIFO holds to the host (it goes out when the host next reads).
    fn flush(&mut self);
}

/// Writes whole log lines into a [`Fifo`], counting the lines it cannot write.
pub struct LineWriter<F> {
    fifo: F,
    dropped: DroppedLines,
    budget: u32,
    /// A wait for room ran out and the FIFO has not taken a byte since.
    stalled: bool,
    /// The last line was cut off mid-way and not yet ended.
    cut: bool,
}

impl<F: Fifo> LineWriter<F> {
    /// Polls of a full FIFO are bounded by `budget` per wait.
    pub const fn new(fifo: F, budget: u32) -> Self {
        Self {
            fifo,
            dropped: DroppedLines::new(),
            budget,
            stalled: false,
            cut: false,
        }
    }

    /// Write `line`, after the `log: dropped` marker if lines were dropped since the last
    /// marker went out; a line that does not go out whole is counted.
    pub fn log(&mut self, line: &Line) {
        if let Some(marker) = self.dropped.marker(line.uptime_ms) {
            if !self.write_line(&marker) {
                self.dropped.dropped();
                return;
            }
            self.dropped.reported();
        }
        if !self.write_line(line) {
            self.dropped.dropped();
        }
    }

    /// Lines dropped: reported and still owed.
    pub fn dropped(&self) -> &DroppedLines {
        &self.dropped
    }

    pub fn fifo(&self) -> &F {
        &self.fifo
    }

    pub fn fifo_mut(&mut self) -> &mut F {
        &mut self.fifo
    }

    /// Write `text` and the line end; `true` if all of it went out.
    fn write_line(&mut self, text: &dyn Display) -> bool {
        if self.cut {
            if !self.put_str(CUT_END) {
                return false;
            }
            self.cut = false;
        }
        let mut out = LineOut {
            writer: self,
            written: 0,
        };
        let text_out = write!(out, "{text}").is_ok();
        let started = out.written > 0;
        let whole = text_out && self.put_str(LINE_END);
        if !whole && started {
            self.cut = true;
        }
        self.fifo.flush();
        whole
    }

    fn put_str(&mut self, s: &str) -> bool {
        s.bytes().all(|b| self.put(b))
    }

    /// One byte into the FIFO, waiting for room within the budget unless stalled.
    fn put(&mut self, byte: u8) -> bool {
        if self.fifo.try_write(byte) {
            self.stalled = false;
            return true;
        }
        if self.stalled {
            return false;
        }
        // The hardware sends a full FIFO once told to; then wait for the host to read it.
        self.fifo.flush();
        for _ in 0..self.budget {
            if self.fifo.try_write(byte) {
                return true;
            }
        }
        self.stalled = true;
        false
    }
}

/// `fmt::Write` into the FIFO, line breaks left out (one event, one line: a break inside
/// the text would split it); fails at the first byte that does not fit.
struct LineOut<'w, F> {
    writer: &'w mut LineWriter<F>,
    written: usize,
}

impl<F: Fifo> Write for LineOut<'_, F> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes().filter(|&b| b != b'\r' && b != b'\n') {
            if !self.writer.put(b) {
                return Err(fmt::Error);
            }
            self.written += 1;
        }
        Ok(())
    }
}
