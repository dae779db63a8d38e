//! The firmware's serial line writer (`src/serial/lines.rs`) against a model of the
//! USB-Serial-JTAG transmit FIFO: 64 bytes, emptied only when a host reads it.

use firmware_core::log::Line;
use firmware_esp32c3_host_tests::lines::{CUT_END, Fifo, LineWriter};

/// The chip's FIFO size.
const FIFO_BYTES: usize = 64;
/// A small budget keeps the poll counts below readable; the logic is the same.
const BUDGET: u32 = 1000;

/// Whether, and how fast, a host reads the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host {
    /// Reads a full, flushed FIFO after this many polls of it.
    Reading { after_polls: u32 },
    /// Nobody reads.
    Absent,
}

/// The FIFO and what the host has read from it.
struct Port {
    fifo: Vec<u8>,
    /// The FIFO was handed to the host (WR_DONE) since it last changed.
    flushed: bool,
    host: Host,
    /// Polls of the full FIFO since it filled.
    polls_while_full: u32,
    /// Every `try_write` call.
    polls: u64,
    received: Vec<u8>,
}

impl Port {
    fn new(host: Host) -> Self {
        Self {
            fifo: Vec::new(),
            flushed: false,
            host,
            polls_while_full: 0,
            polls: 0,
            received: Vec::new(),
        }
    }

    /// The host reads what the FIFO holds (as it does once the firmware flushed it).
    fn host_reads(&mut self) {
        self.received.append(&mut self.fifo);
        self.polls_while_full = 0;
    }

    fn text(&self) -> String {
        String::from_utf8(self.received.clone()).unwrap()
    }
}

impl Fifo for Port {
    fn try_write(&mut self, byte: u8) -> bool {
        self.polls += 1;
        if self.fifo.len() == FIFO_BYTES {
            self.polls_while_full += 1;
            match self.host {
                Host::Reading { after_polls }
                    if self.flushed && self.polls_while_full >= after_polls =>
                {
                    self.host_reads()
                }
                _ => return false,
            }
        }
        self.fifo.push(byte);
        self.flushed = false;
        true
    }

    fn flush(&mut self) {
        self.flushed = true;
    }
}

/// An inbound line, all of the same length, so no fragment can equal a whole line.
fn line(i: u64) -> Line {
    Line::inbound(
        10_000 + i,
        "inTopic",
        format!("hello world #{i:06}").as_bytes(),
    )
}

fn writer(host: Host) -> LineWriter<Port> {
    LineWriter::new(Port::new(host), BUDGET)
}

/// The received text as lines (without `\r\n`).
fn received_lines(w: &LineWriter<Port>) -> Vec<String> {
    w.fifo()
        .text()
        .split_terminator("\r\n")
        .map(str::to_string)
        .collect()
}

fn marker_count(text: &str) -> Option<u64> {
    let l: Line = text.parse().ok()?;
    (l.tag() == "log" && l.message() == "dropped").then(|| l.field_as("lines"))?
}

#[test]
fn every_line_goes_out_whole_while_a_host_reads() {
    let mut w = writer(Host::Reading { after_polls: 50 });
    let mut expected = String::new();
    for i in 0..40 {
        w.log(&line(i));
        expected.push_str(&format!("{}\r\n", line(i)));
    }
    // A long line spans many FIFO loads.
    let long = Line::inbound(99_000, "inTopic", &[b'x'; 1500]);
    w.log(&long);
    expected.push_str(&format!("{long}\r\n"));
    w.fifo_mut().host_reads();
    assert_eq!(w.fifo().text(), expected);
    assert_eq!(w.dropped().total(), 0);
}

#[test]
fn without_a_host_lines_are_counted_then_reported_before_the_next_line_that_fits() {
    let mut w = writer(Host::Absent);
    for i in 0..10 {
        w.log(&line(i));
    }
    assert_eq!(w.dropped().pending(), 10);
    // A host opens the port: it reads what the FIFO held, and keeps reading.
    w.fifo_mut().host = Host::Reading { after_polls: 3 };
    w.fifo_mut().host_reads();
    w.log(&line(10));
    w.fifo_mut().host_reads();

    let lines = received_lines(&w);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    // The first line's first 64 bytes, ended as cut: never read as a whole line.
    let first = line(0).to_string();
    let fragment = lines[0].strip_suffix(CUT_END.trim_end()).unwrap();
    assert_eq!(fragment, &first[..FIFO_BYTES]);
    assert!(lines[0].parse::<Line>().is_err(), "{}", lines[0]);
    // Then the gap, stamped with the next line's uptime, and that line.
    assert_eq!(lines[1], "W (   10010) log: dropped lines=10");
    assert_eq!(lines[2], line(10).to_string());
    assert_eq!((w.dropped().pending(), w.dropped().total()), (0, 10));
}

#[test]
fn a_board_without_a_host_waits_once_per_stall_not_once_per_line() {
    let mut w = writer(Host::Absent);
    for i in 0..100 {
        w.log(&line(i));
    }
    assert_eq!(w.dropped().total(), 100);
    // 64 bytes fit, one budget runs out, then one poll per line.
    let polls = w.fifo().polls;
    assert!(
        polls <= FIFO_BYTES as u64 + 1 + u64::from(BUDGET) + 100,
        "{polls} polls"
    );
}

#[test]
fn a_line_breaking_payload_stays_on_one_line() {
    let mut w = writer(Host::Reading { after_polls: 1 });
    let tricky = Line::inbound(5, "inTopic", b"one\r\ntwo\nthree");
    w.log(&tricky);
    w.fifo_mut().host_reads();
    let lines = received_lines(&w);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let back: Line = lines[0].parse().unwrap();
    assert_eq!(back.tag(), "inbound");
}

/// A deterministic pseudo-random sequence (xorshift), so every run sees the same ports.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn every_line_is_written_whole_or_counted_in_a_marker_however_the_host_reads() {
    for seed in 1..=200u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut w = writer(Host::Absent);
        let mut sent = Vec::new();
        for i in 0..60 {
            // The host comes and goes, reads fast or too slowly, or reads part of a line.
            w.fifo_mut().host = match rng.next() % 4 {
                0 => Host::Absent,
                1 => Host::Reading {
                    after_polls: BUDGET + 1,
                },
                _ => Host::Reading {
                    after_polls: (rng.next() % 20) as u32 + 1,
                },
            };
            if rng.next().is_multiple_of(5) {
                w.fifo_mut().host_reads();
            }
            w.log(&line(i));
            sent.push(line(i).to_string());
        }
        // Finally a host that reads, and one more line that carries any marker owed.
        w.fifo_mut().host = Host::Reading { after_polls: 1 };
        w.fifo_mut().host_reads();
        w.log(&line(60));
        sent.push(line(60).to_string());
        w.fifo_mut().host_reads();

        let lines = received_lines(&w);
        let whole = lines.iter().filter(|l| sent.contains(l)).count() as u64;
        let reported: u64 = lines.iter().filter_map(|l| marker_count(l)).sum();
        let context = format!("seed {seed}: {lines:#?}");
        assert_eq!(whole + reported, sent.len() as u64, "{context}");
        assert_eq!(reported, w.dropped().total(), "{context}");
        assert_eq!(w.dropped().pending(), 0, "{context}");
        // Anything else is a fragment, ended as cut.
        for l in &lines {
            assert!(
                sent.contains(l) || marker_count(l).is_some() || l.ends_with(CUT_END.trim_end()),
                "{context}"
            );
        }
        // Lines that went out whole keep their order.
        let order: Vec<_> = lines
            .iter()
            .filter_map(|l| sent.iter().position(|s| s == l))
            .collect();
        assert!(order.windows(2).all(|p| p[0] < p[1]), "{context}");
    }
}
