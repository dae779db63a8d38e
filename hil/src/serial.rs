//! Serial capture: the device's log lines with the host's timestamps.
//!
//! A board's USB serial port and the virtual device's pseudo-terminal are read by the same
//! code (the `serialport` crate opens both), so running the suite virtually exercises the
//! capture path a bench uses. Lines are parsed with `firmware_core::log::Line`, the one
//! definition of the format; a line that does not parse is kept as text, because a board
//! prints ROM and bootloader noise before the firmware's first line.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use firmware_core::log::Line;
use serialport::{SerialPort, TTYPort};
use tokio::sync::mpsc;

/// How long one blocking read waits before the reader checks whether anyone still listens.
const READ_POLL: Duration = Duration::from_millis(200);
/// Baud rate for real ports (the ESP32-C3's USB-Serial-JTAG ignores it).
pub const DEFAULT_BAUD: u32 = 115_200;

/// What one serial line turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum SerialText {
    // Boxed: a parsed line is a fixed 640-byte buffer, unparsed text is usually short.
    Line(Box<Line>),
    /// Not a firmware log line (boot ROM output, a torn line); kept verbatim.
    Unparsed(String),
}

impl fmt::Display for SerialText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line(line) => write!(f, "{line}"),
            Self::Unparsed(text) => f.write_str(text),
        }
    }
}

/// One line as the rig read it.
#[derive(Debug, Clone)]
pub struct SerialLine {
    /// Host monotonic time when the line's end was read: what tolerances are measured in.
    pub at: Instant,
    /// The same moment on the wall clock, for reports.
    pub wall: SystemTime,
    pub text: SerialText,
    /// For a line translated from a board's own vocabulary: what the board printed, in
    /// its words and with their meaning (`failed, rc=-2 ... (PubSubClient rc=-2: network
    /// connect failed)`), so a failure reads in the terms of the firmware that ran.
    pub said: Option<String>,
}

impl SerialLine {
    pub fn line(&self) -> Option<&Line> {
        match &self.text {
            SerialText::Line(line) => Some(line),
            SerialText::Unparsed(_) => None,
        }
    }
}

/// Turns a line that is not a firmware log line (already stripped of `\r\n`) into the
/// log lines it stands for: a board whose firmware speaks another vocabulary (the ESP8266
/// reference sketch) is read as if it printed `firmware_core::log::Line`s. Empty: the
/// line is kept verbatim.
pub type Translate = Box<dyn FnMut(&[u8]) -> Translation + Send>;

/// What one board line stands for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Translation {
    pub lines: Vec<Line>,
    /// The board's line as failures quote it, with what it means when the words alone
    /// do not say (PubSubClient's return codes); `None`: the line as printed.
    pub said: Option<String>,
}

impl From<Vec<Line>> for Translation {
    fn from(lines: Vec<Line>) -> Self {
        Self { lines, said: None }
    }
}

/// Reads a serial port on a thread and hands out its lines, keeping every line seen.
pub struct SerialCapture {
    name: String,
    lines: mpsc::UnboundedReceiver<SerialLine>,
    seen: Arc<Mutex<Vec<SerialLine>>>,
    /// The lines handed out by `next`, in order: what a scenario has read, which ends at
    /// a point the scenario chose (unlike `seen`, which grows while the device runs).
    taken: Vec<SerialLine>,
    /// For a pseudo-terminal: the device's end, held open so the reader never sees a
    /// hang-up while the device restarts.
    _device_end: Option<TTYPort>,
    device_path: Option<PathBuf>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl SerialCapture {
    /// A pseudo-terminal pair: the rig reads the master, the device is given
    /// [`SerialCapture::device_path`] (the slave, in raw mode).
    pub fn pseudo_terminal() -> io::Result<Self> {
        Self::pty(None)
    }

    /// A pseudo-terminal pair whose lines pass through `translate` (a recorded board
    /// transcript replayed through the capture path).
    pub fn pseudo_terminal_translated(translate: Translate) -> io::Result<Self> {
        Self::pty(Some(translate))
    }

    fn pty(translate: Option<Translate>) -> io::Result<Self> {
        let (master, slave) = TTYPort::pair().map_err(io::Error::other)?;
        let path = slave
            .name()
            .ok_or_else(|| io::Error::other("pseudo-terminal without a name"))?;
        let mut capture = Self::from_serial(Box::new(master), path.clone(), translate);
        capture.device_path = Some(path.into());
        capture._device_end = Some(slave);
        Ok(capture)
    }

    /// A USB serial port (or any tty) at `baud`.
    pub fn open_port(path: &Path, baud: u32) -> io::Result<Self> {
        Self::open_port_with(path, baud, |_| Ok(()), None)
    }

    /// A USB serial port at `baud`, after `prepare` ran on it (a board reset through the
    /// modem lines: reading starts before the board prints its first byte), its lines
    /// passed through `translate`.
    pub fn open_port_with(
        path: &Path,
        baud: u32,
        prepare: impl FnOnce(&mut dyn SerialPort) -> io::Result<()>,
        translate: Option<Translate>,
    ) -> io::Result<Self> {
        let mut port = serialport::new(path.to_string_lossy(), baud)
            .timeout(READ_POLL)
            .open()
            .map_err(|e| io::Error::other(format!("open {}: {e}", path.display())))?;
        prepare(port.as_mut()).map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        Ok(Self::from_serial(
            port,
            path.display().to_string(),
            translate,
        ))
    }

    /// Capture an already open port (e.g. the one a flasher used, so nothing the board
    /// prints after its reset is lost), its lines passed through `translate`.
    pub fn from_serial(
        mut port: Box<dyn SerialPort>,
        name: String,
        translate: Option<Translate>,
    ) -> Self {
        let _ = port.set_timeout(READ_POLL);
        let (tx, lines) = mpsc::unbounded_channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&seen);
        let reader = std::thread::Builder::new()
            .name(format!("serial {name}"))
            .spawn(move || read_lines(port.as_mut(), &tx, &keep, translate))
            .expect("spawn the serial reader thread");
        Self {
            name,
            lines,
            seen,
            taken: Vec::new(),
            _device_end: None,
            device_path: None,
            reader: Some(reader),
        }
    }

    /// Stop reading and release the port, waiting for the reader (at most one read poll,
    /// 200 ms): a board's port opens exclusively, and the next flashing needs it.
    pub fn close(&mut self) {
        self.lines.close();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// The port's name (device path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// For a pseudo-terminal, the path the device writes to.
    pub fn device_path(&self) -> Option<&Path> {
        self.device_path.as_deref()
    }

    /// The next line within `timeout`, `None` on timeout or when the port closed.
    pub async fn next(&mut self, timeout: Duration) -> Option<SerialLine> {
        let line = tokio::time::timeout(timeout, self.lines.recv())
            .await
            .ok()
            .flatten()?;
        self.taken.push(line.clone());
        Some(line)
    }

    /// Every line `next` has returned so far.
    pub fn taken(&self) -> &[SerialLine] {
        &self.taken
    }

    /// Read lines until one satisfies `pick`, within `timeout`.
    pub async fn until<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&SerialLine) -> Option<T>,
    ) -> Option<(SerialLine, T)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = self.next(left).await?;
            if let Some(found) = pick(&line) {
                return Some((line, found));
            }
        }
    }

    /// Every line read so far (also those nobody has taken with `next` yet).
    pub fn seen(&self) -> Vec<SerialLine> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The last `n` lines seen, one per line, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let seen = self.seen();
        let start = seen.len().saturating_sub(n);
        seen[start..]
            .iter()
            .map(|l| match &l.said {
                Some(said) => format!("  {}    (board: {said})", l.text),
                None => format!("  {}", l.text),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Longest line the rig keeps. A firmware log line is at most about 640 bytes; a device
/// (or a noisy port) that sends more without a line end gets its text cut here, marked
/// with [`CUT_MARKER`], and the rest of that line dropped, so a stream without newlines
/// cannot grow the rig's memory without limit.
pub const MAX_LINE: usize = 4096;
/// Appended to a line cut at [`MAX_LINE`].
pub const CUT_MARKER: &str = " [cut: no line end within 4096 bytes]";

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
struct LineSplitter {
    pending: Vec<u8>,
    /// Inside a line already cut: drop bytes up to its end.
    discarding: bool,
}

impl LineSplitter {
    /// Feed bytes; returns the complete lines (with their `\n`; a cut line without).
    fn feed(&mut self, mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|&b| b == b'\n');
            if self.discarding {
                match newline {
                    Some(end) => {
                        self.discarding = false;
                        bytes = &bytes[end + 1..];
                    }
                    None => return lines,
                }
                continue;
            }
            let (take, rest) = match newline {
                Some(end) => bytes.split_at(end + 1),
                None => (bytes, &bytes[bytes.len()..]),
            };
            let room = MAX_LINE - self.pending.len();
            if take.len() > room {
                self.pending.extend_from_slice(&take[..room]);
                let mut cut = std::mem::take(&mut self.pending);
                cut.extend_from_slice(CUT_MARKER.as_bytes());
                lines.push(cut);
                // The line's end was in this chunk: go on after it.
                self.discarding = newline.is_none();
            } else {
                self.pending.extend_from_slice(take);
                if newline.is_some() {
                    lines.push(std::mem::take(&mut self.pending));
                }
            }
            bytes = rest;
        }
        lines
    }
}

/// The reader thread: split on `\n`, strip `\r`, parse, stamp, forward.
fn read_lines(
    port: &mut dyn SerialPort,
    tx: &mpsc::UnboundedSender<SerialLine>,
    seen: &Mutex<Vec<SerialLine>>,
    mut translate: Option<Translate>,
) {
    let mut splitter = LineSplitter::default();
    let mut buf = [0u8; 1024];
    loop {
        let lines = match port.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => splitter.feed(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                if tx.is_closed() {
                    return;
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        for raw in lines {
            for line in parse(&raw, translate.as_mut()) {
                if let Ok(mut seen) = seen.lock() {
                    seen.push(line.clone());
                }
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    }
}

/// One raw line as the lines it stands for: a firmware log line, else what `translate`
/// makes of it, else the text verbatim.
fn parse(raw: &[u8], translate: Option<&mut Translate>) -> Vec<SerialLine> {
    let (at, wall) = (Instant::now(), SystemTime::now());
    let stamp = |text, said| SerialLine {
        at,
        wall,
        text,
        said,
    };
    let end = raw
        .iter()
        .rposition(|b| !matches!(b, b'\r' | b'\n'))
        .map_or(0, |i| i + 1);
    let raw = &raw[..end];
    let text = String::from_utf8_lossy(raw);
    if let Ok(line) = text.parse::<Line>() {
        return vec![stamp(SerialText::Line(Box::new(line)), None)];
    }
    let translated = translate.map(|t| t(raw)).unwrap_or_default();
    if translated.lines.is_empty() {
        return vec![stamp(SerialText::Unparsed(text.into_owned()), None)];
    }
    let said = translated.said.unwrap_or_else(|| text.into_owned());
    translated
        .lines
        .into_iter()
        .map(|line| stamp(SerialText::Line(Box::new(line)), Some(said.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn lines_written_to_the_device_end_arrive_parsed_or_verbatim() {
        let mut capture = SerialCapture::pseudo_terminal().unwrap();
        let mut device = std::fs::OpenOptions::new()
            .write(true)
            .open(capture.device_path().unwrap())
            .unwrap();
        device
            .write_all(b"rst:0x1 (POWERON)\r\nI (     812) boot: firmware=0.1.0 board=virtual client_id=a\r\n")
            .unwrap();
        let first = capture.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(first.text, SerialText::Unparsed("rst:0x1 (POWERON)".into()));
        let second = capture.next(Duration::from_secs(5)).await.unwrap();
        let line = second.line().expect("a log line");
        assert_eq!(line.tag(), "boot");
        assert_eq!(line.field("client_id"), Some("a"));
        assert!(second.at >= first.at);
        assert_eq!(capture.seen().len(), 2);
    }

    #[test]
    fn a_stream_without_line_ends_is_cut_not_kept() {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        // 1 MiB of noise without a newline, in chunks, then the rest of that line.
        for _ in 0..1024 {
            lines.extend(splitter.feed(&[b'x'; 1024]));
            assert!(splitter.pending.len() <= MAX_LINE);
        }
        lines.extend(splitter.feed(b"tail of the noise\nI (     1) boot: x=1\r\n"));
        assert_eq!(
            lines.len(),
            2,
            "{:?}",
            lines.iter().map(|l| l.len()).collect::<Vec<_>>()
        );
        assert_eq!(lines[0].len(), MAX_LINE + CUT_MARKER.len());
        assert!(lines[0].ends_with(CUT_MARKER.as_bytes()));
        assert_eq!(lines[1], b"I (     1) boot: x=1\r\n");
    }

    #[test]
    fn lines_split_across_reads_and_several_in_one_read() {
        let mut splitter = LineSplitter::default();
        assert!(splitter.feed(b"ab").is_empty());
        assert_eq!(
            splitter.feed(b"c\nde\nf"),
            vec![b"abc\n".to_vec(), b"de\n".to_vec()]
        );
        assert_eq!(splitter.feed(b"\n"), vec![b"f\n".to_vec()]);
        // A line of exactly MAX_LINE bytes plus its newline is cut (the newline is a byte).
        let long = vec![b'y'; MAX_LINE];
        let out = splitter.feed(&[&long[..], b"\nz\n"].concat());
        assert_eq!(out.len(), 2);
        assert!(out[0].ends_with(CUT_MARKER.as_bytes()));
        assert_eq!(out[1], b"z\n");
    }

    #[test]
    fn a_closed_capture_releases_its_exclusive_port_at_once() {
        let pty = SerialCapture::pseudo_terminal().unwrap();
        let path = pty.device_path().unwrap().to_path_buf();
        let mut first = SerialCapture::open_port(&path, DEFAULT_BAUD).unwrap();
        // Ports open exclusively: while one capture reads, a flasher cannot open it.
        assert!(SerialCapture::open_port(&path, DEFAULT_BAUD).is_err());
        first.close();
        SerialCapture::open_port(&path, DEFAULT_BAUD).expect("released by close");
    }
}
