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
//! dropped (and counted), as a USB-CDC console drops output nobody reads.

use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    dropped: Arc<AtomicU64>,
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
            dropped: Arc::new(AtomicU64::new(0)),
            writer: Arc::new(writer),
        }
    }

    /// Queue one line (without its line ending); never blocks.
    pub fn line(&self, line: impl Display) {
        let mut text = line.to_string();
        // Keep one event on one line even if a caller passes a line break.
        text.retain(|c| c != '\r' && c != '\n');
        text.push_str("\r\n");
        match self.tx.try_send(text) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Write out every queued line and stop the writer. Call it on the last handle (the
    /// others dropped): the writer thread ends when the last sender goes.
    pub fn close(self) {
        let Self { tx, writer, .. } = self;
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

    #[test]
    fn target_parses_dash_as_stdout() {
        assert_eq!("-".parse::<Target>().unwrap(), Target::Stdout);
        assert_eq!(
            "/dev/pts/7".parse::<Target>().unwrap(),
            Target::Path("/dev/pts/7".into())
        );
    }
}
