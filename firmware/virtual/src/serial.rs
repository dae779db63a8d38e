//! The device's serial port: one log line per write, to stdout or to a (pseudo-)terminal.
//!
//! Lines end in CRLF. That is what a capture of the ESP32-C3's USB-serial console sees
//! (ESP-IDF's console translates `\n` to `\r\n`), so the rig reads the virtual device and
//! the board through the same path; `firmware_core::log::Line`'s parser strips either
//! ending. When the sink is a terminal, output post-processing (`OPOST`, which would turn
//! our `\r\n` into `\r\r\n`) is switched off so the bytes arrive exactly as written.
//!
//! Writes happen on a dedicated thread so a reader that stops draining the terminal can
//! stall only that thread, never the device's event loop. When the queue is full, lines are
//! dropped, as a USB-CDC console drops output nobody reads, but never silently: they are
//! counted, and [`Serial::log`] writes `W log: dropped lines=N` before the next line
//! that fits (and [`Serial::close`] before it stops), where the gap is.

use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use firmware_core::log::{DroppedLines, Line};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::JoinHandle;

/// Lines queued for the writer thread before new ones are dropped.
const QUEUE_LINES: usize = 256;

/// Where the serial output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    /// A file or a terminal, typically the slave side of a pseudo-terminal (`/dev/pts/N`).
    Path(std::path::PathBuf),
}

impl std::str::FromStr for Target {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "-" {
            Self::Stdout
        } else {
            Self::Path(s.into())
        })
    }
}

/// A handle to the serial port; clones share the port.
#[derive(Clone)]
pub struct Serial {
    tx: SyncSender<String>,
    dropped: Arc<Mutex<DroppedLines>>,
    /// Uptime of the last line logged, for the marker written at close.
    last_uptime: Arc<AtomicU64>,
    writer: Arc<Option<JoinHandle<()>>>,
}

impl Serial {
    /// Open the serial sink. Fails only if the path cannot be opened for writing.
    pub fn open(target: &Target) -> io::Result<Self> {
        let sink: Box<dyn Write + Send> = match target {
            Target::Stdout => Box::new(io::stdout()),
            Target::Path(path) => Box::new(open_port(path)?),
        };
        Ok(Self::with_sink(sink))
    }

    /// Write lines to any sink (tests use a pipe or a buffer).
    pub fn with_sink(mut sink: Box<dyn Write + Send>) -> Self {
        let (tx, rx) = mpsc::sync_channel::<String>(QUEUE_LINES);
        let writer = std::thread::Builder::new()
            .name("serial".into())
            .spawn(move || {
                let mut failed = false;
                for line in rx {
                    // One write per line, flushed at once: no line sits in a buffer.
                    let result = sink.write_all(line.as_bytes()).and_then(|()| sink.flush());
                    if let Err(e) = result {
                        // A closed terminal (EIO) must not stop the device; say so once.
                        if !failed {
                            eprintln!("serial: write failed: {e}; dropping output");
                            failed = true;
                        }
                    }
                }
            })
            .ok();
        Self {
            tx,
            dropped: Arc::new(Mutex::new(DroppedLines::new())),
            last_uptime: Arc::new(AtomicU64::new(0)),
            writer: Arc::new(writer),
        }
    }

    /// Queue one log line, after the `log: dropped` marker if lines were dropped since
    /// the last one; never blocks.
    pub fn log(&self, line: &Line) {
        self.last_uptime.store(line.uptime_ms, Ordering::Relaxed);
        let mut dropped = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(marker) = dropped.marker(line.uptime_ms) {
            if !self.send(&marker) {
                dropped.dropped();
                return;
            }
            dropped.reported();
        }
        if !self.send(line) {
            dropped.dropped();
        }
    }

    /// Queue one line of any text (without its line ending); never blocks. A line that
    /// does not fit is counted like a log line.
    pub fn line(&self, line: impl Display) {
        if !self.send(line) {
            self.dropped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .dropped();
        }
    }

    /// Queue `line`; false if the queue is full (or the writer is gone).
    fn send(&self, line: impl Display) -> bool {
        let mut text = line.to_string();
        // Keep one event on one line even if a caller passes a line break.
        text.retain(|c| c != '\r' && c != '\n');
        text.push_str("\r\n");
        match self.tx.try_send(text) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Lines dropped since start because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .total()
    }

    /// Write out every queued line (and the `log: dropped` marker still owed, waiting for
    /// room) and stop the writer. Call it on the last handle (the others dropped): the
    /// writer thread ends when the last sender goes.
    pub fn close(self) {
        let Self {
            tx,
            writer,
            dropped,
            last_uptime,
        } = self;
        let marker = dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .marker(last_uptime.load(Ordering::Relaxed));
        if let Some(marker) = marker {
            // Blocking: the writer drains the queue, so this ends unless the sink is stuck
            // for good, and then nothing more can be said anyway.
            let _ = tx.send(format!("{marker}\r\n"));
        }
        drop(tx);
        if let Ok(Some(handle)) = Arc::try_unwrap(writer) {
            let _ = handle.join();
        }
    }
}

/// Open a serial path for writing; a terminal gets raw output.
fn open_port(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        // Never become the controlling terminal of a pty we merely write to.
        .custom_flags(libc::O_NOCTTY)
        .open(path)?;
    let fd = file.as_raw_fd();
    // SAFETY: fd is an open descriptor owned by `file`; termios is a plain C struct.
    unsafe {
        if libc::isatty(fd) == 1 {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut t) == 0 {
                t.c_oflag &= !libc::OPOST;
                libc::tcsetattr(fd, libc::TCSANOW, &t);
            }
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::fd::{FromRawFd, OwnedFd};

    /// A pseudo-terminal pair: (master, slave path).
    fn openpty() -> (File, std::path::PathBuf) {
        let mut master: libc::c_int = -1;
        let mut slave: libc::c_int = -1;
        // SAFETY: out-pointers are valid; name/termios/winsize may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", io::Error::last_os_error());
        // SAFETY: openpty returned two fresh descriptors we now own.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let path = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd())).unwrap();
        // Keep the slave open in this process too, as the rig does, so the pty stays up
        // between the device's open and its first write.
        std::mem::forget(slave);
        (File::from(master), path)
    }

    #[test]
    fn lines_arrive_through_a_pty_with_crlf() {
        let (master, slave_path) = openpty();
        let serial = Serial::open(&Target::Path(slave_path)).unwrap();
        let line = firmware_core::log::Line::time_synced(1310, 1_795_000_000);
        serial.line(&line);
        serial.line("second\nline");
        let mut reader = BufReader::new(master);
        let mut got = String::new();
        reader.read_line(&mut got).unwrap();
        assert_eq!(got, format!("{line}\r\n"));
        let parsed: firmware_core::log::Line = got.parse().unwrap();
        assert_eq!(parsed.field("epoch"), Some("1795000000"));
        got.clear();
        reader.read_line(&mut got).unwrap();
        assert_eq!(got, "secondline\r\n");
        serial.close();
    }

    #[test]
    fn close_flushes_every_queued_line() {
        struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let serial = Serial::with_sink(Box::new(Shared(buf.clone())));
        for i in 0..100 {
            serial.line(format_args!("n={i}"));
        }
        serial.close();
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 100);
        assert!(text.ends_with("n=99\r\n"));
    }

    /// A sink that blocks every write until the test lets it go, as a terminal nobody
    /// reads does.
    struct Stalled {
        gate: std::sync::mpsc::Receiver<()>,
        out: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            // Released for good once the test drops its sender.
            let _ = self.gate.recv();
            self.out.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn dropped_lines_are_reported_in_band_where_the_gap_is() {
        let (release, gate) = std::sync::mpsc::channel();
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let serial = Serial::with_sink(Box::new(Stalled {
            gate,
            out: out.clone(),
        }));
        let sent = 3000u64;
        for i in 0..sent {
            serial.log(&Line::inbound(i, "inTopic", format!("m{i}").as_bytes()));
        }
        let dropped = serial.dropped();
        assert!(dropped > 0, "the stalled sink must overflow the queue");
        drop(release);
        // The next line that fits carries the marker before it.
        serial.log(&Line::shutdown(
            sent,
            firmware_core::log::ShutdownReason::Requested,
        ));
        serial.close();
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let lines: Vec<Line> = text.lines().map(|l| l.parse().unwrap()).collect();
        let is_marker = |l: &Line| l.tag() == "log" && l.message() == "dropped";
        let written = lines.iter().filter(|l| !is_marker(l)).count() as u64;
        let reported: u64 = lines
            .iter()
            .filter(|l| is_marker(l))
            .map(|l| l.field_as::<u64>("lines").unwrap())
            .sum();
        // Every line (the 3000 and the last one) is accounted for: written, or counted in
        // a marker. The writer may still be draining when the last line comes, so it too
        // may be among the dropped; close() then writes the marker still owed.
        assert_eq!(written + reported, sent + 1, "{text}");
        assert!(reported >= dropped, "{reported} < {dropped}");
        // The log ends with the last line, or with the marker that accounts for it.
        let last = lines.last().unwrap();
        assert!(last.tag() == "shutdown" || is_marker(last), "{text}");
    }

    #[test]
    fn a_marker_still_owed_is_written_at_close() {
        let (release, gate) = std::sync::mpsc::channel();
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let serial = Serial::with_sink(Box::new(Stalled {
            gate,
            out: out.clone(),
        }));
        for i in 0..1000 {
            serial.log(&Line::inbound(i, "inTopic", b"x"));
        }
        let dropped = serial.dropped();
        drop(release);
        serial.close();
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let lines: Vec<Line> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(lines.last().unwrap().tag(), "log", "{text}");
        // A slot freed mid-burst may have let an earlier marker out; together they
        // account for every dropped line.
        let reported: u64 = lines
            .iter()
            .filter(|l| l.tag() == "log")
            .filter_map(|l| l.field_as::<u64>("lines"))
            .sum();
        assert_eq!(reported, dropped);
    }

    #[test]
    fn target_parses_dash_as_stdout() {
        assert_eq!("-".parse::<Target>().unwrap(), Target::Stdout);
        assert_eq!(
            "/dev/pts/7".parse::<Target>().unwrap(),
            Target::Path("/dev/pts/7".into())
        );
    }
}
