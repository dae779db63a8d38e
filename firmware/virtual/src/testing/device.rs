//! The `virtual-device` binary under test: its serial port on a pseudo-terminal (the rig's
//! capture path), the process, and an SNTP server for it.
//!
//! Serial lines are parsed with `firmware_core::log::Line` and stamped with the host's
//! monotonic time as they arrive, so tests can wait for events with timeouts and measure
//! latencies without sleeping.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use firmware_core::log::Line;
use firmware_core::sntp::NtpTimestamp;
use tokio::sync::mpsc;

/// One serial line as the rig saw it.
#[derive(Debug, Clone)]
pub struct Captured {
    pub line: Line,
    /// Host monotonic time at which the line was read from the pty.
    pub at: Instant,
}

/// The rig's side of the serial port: a pty master whose lines arrive on a channel.
pub struct SerialCapture {
    slave_path: PathBuf,
    // Held open so the master never sees a hang-up between device runs.
    _slave: OwnedFd,
    lines: mpsc::UnboundedReceiver<(Instant, String)>,
    /// Every line read so far, for failure messages.
    seen: Vec<Line>,
}

impl SerialCapture {
    pub fn open() -> io::Result<Self> {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: valid out-pointers; the optional arguments may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptors from openpty, owned from here on.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let slave_path = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd()))?;
        let (tx, lines) = mpsc::unbounded_channel();
        let mut reader = BufReader::new(File::from(master));
        std::thread::spawn(move || {
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if tx
                    .send((Instant::now(), std::mem::take(&mut line)))
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Self {
            slave_path,
            _slave: slave,
            lines,
            seen: Vec::new(),
        })
    }

    /// The path to hand the device as `--serial`.
    pub fn path(&self) -> &Path {
        &self.slave_path
    }

    /// Every line read so far.
    pub fn seen(&self) -> &[Line] {
        &self.seen
    }

    /// The next line within `timeout`. Panics on a line that is not CRLF-terminated or
    /// does not parse: the serial format is an API.
    pub async fn next(&mut self, timeout: Duration) -> Option<Captured> {
        let (at, raw) = tokio::time::timeout(timeout, self.lines.recv())
            .await
            .ok()
            .flatten()?;
        assert!(raw.ends_with("\r\n"), "serial line without CRLF: {raw:?}");
        let line: Line = raw
            .parse()
            .unwrap_or_else(|e| panic!("serial line does not parse: {raw:?}: {e:?}"));
        self.seen.push(line.clone());
        Some(Captured { line, at })
    }

    /// Read lines until one satisfies `pred`, within `timeout`; panics naming `what` and
    /// showing the recent lines otherwise.
    pub async fn until(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Line) -> bool,
    ) -> Captured {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(c) if pred(&c.line) => return c,
                Some(_) => {}
                None => {
                    let tail: Vec<String> = self
                        .seen
                        .iter()
                        .rev()
                        .take(30)
                        .rev()
                        .map(ToString::to_string)
                        .collect();
                    panic!("no {what} line within {timeout:?}; last lines:\n{tail:#?}");
                }
            }
        }
    }
}

/// The device process; killed on drop so a failing test leaves nothing behind.
pub struct DeviceProcess(Option<Child>);

impl DeviceProcess {
    /// Start `bin --flash FLASH --serial SERIAL`.
    pub fn spawn(bin: &Path, flash: &Path, serial: &Path) -> io::Result<Self> {
        let child = Command::new(bin)
            .arg("--flash")
            .arg(flash)
            .arg("--serial")
            .arg(serial)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Self(Some(child)))
    }

    pub fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        let Some(child) = &self.0 else {
            return Err(io::Error::other("already reaped"));
        };
        // SAFETY: plain kill(2) on our own, not yet reaped, child's pid.
        match unsafe { libc::kill(child.id() as libc::pid_t, sig) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Wait for the process to exit, up to `timeout`; killed if it has not by then.
    pub async fn wait_exit(mut self, timeout: Duration) -> io::Result<std::process::ExitStatus> {
        let mut child = self.0.take().ok_or_else(|| io::Error::other("reaped"))?;
        let pid = child.id() as libc::pid_t;
        let mut waiting = tokio::task::spawn_blocking(move || child.wait());
        match tokio::time::timeout(timeout, &mut waiting).await {
            Ok(exited) => exited.map_err(io::Error::other)?,
            Err(_) => {
                // SAFETY: kill(2) on our child, which the blocked wait has not reaped yet.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = waiting.await;
                Err(io::Error::new(io::ErrorKind::TimedOut, "did not exit"))
            }
        }
    }
}

impl Drop for DeviceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An SNTP server on loopback answering with the host's time (test certificates are
/// valid from the moment they were made). Returns its port; it lives as long as the
/// process.
pub fn sntp_server() -> io::Result<u16> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let port = socket.local_addr()?.port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 128];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            if n < 48 {
                continue;
            }
            let mut reply = [0u8; 48];
            reply[0] = (4 << 3) | 4;
            reply[1] = 1;
            reply[24..32].copy_from_slice(&buf[40..48]);
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let t = NtpTimestamp::from_unix(now.as_secs(), now.subsec_nanos())
                .to_bits()
                .to_be_bytes();
            reply[32..40].copy_from_slice(&t);
            reply[40..48].copy_from_slice(&t);
            let _ = socket.send_to(&reply, peer);
        }
    });
    Ok(port)
}
