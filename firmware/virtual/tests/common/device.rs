//! The `virtual-device` binary under test: its serial port on a pseudo-terminal (the
//! HIL rig's capture, `hil::serial::SerialCapture`), the process, and an SNTP server.
//!
//! Lines are parsed with `firmware_core::log::Line` and stamped with the host's monotonic
//! time as they arrive, so tests wait for events with timeouts and measure latencies
//! without sleeping.

use std::io;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use firmware_core::log::Line;
use firmware_core::sntp::NtpTimestamp;

/// One serial line as the rig saw it.
#[derive(Debug, Clone)]
pub struct Captured {
    pub line: Line,
    /// Host monotonic time at which the line was read from the pty.
    pub at: Instant,
}

/// The rig's side of the serial port, strict: every line must be a log line, as the
/// serial format is an API.
pub struct SerialCapture(hil::serial::SerialCapture);

impl SerialCapture {
    pub fn open() -> io::Result<Self> {
        hil::serial::SerialCapture::pseudo_terminal().map(Self)
    }

    /// The path the device opens as its serial port.
    pub fn path(&self) -> &Path {
        self.0.device_path().expect("a pseudo-terminal has a path")
    }

    /// Every line read so far, for failure messages.
    pub fn seen(&self) -> Vec<Line> {
        self.0
            .seen()
            .iter()
            .filter_map(|l| l.line().cloned())
            .collect()
    }

    /// The next line within `timeout`. Panics on a line that does not parse.
    pub async fn next(&mut self, timeout: Duration) -> Option<Captured> {
        let read = self.0.next(timeout).await?;
        let line = read
            .line()
            .unwrap_or_else(|| panic!("serial line does not parse: {:?}", read.text))
            .clone();
        Some(Captured { line, at: read.at })
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
                None => panic!(
                    "no {what} line within {timeout:?}; last lines:\n{}",
                    self.0.tail(30)
                ),
            }
        }
    }
}

/// The device process; killed on drop so a failing test leaves nothing behind.
pub struct DeviceProcess(Option<Child>);

impl DeviceProcess {
    /// Start `bin --flash FLASH --serial SERIAL`.
    pub fn spawn(bin: &Path, flash: &Path, serial: &Path) -> io::Result<Self> {
        Self::spawn_with(bin, flash, serial, &[])
    }

    /// As [`DeviceProcess::spawn`], with more arguments after those.
    pub fn spawn_with(bin: &Path, flash: &Path, serial: &Path, extra: &[&str]) -> io::Result<Self> {
        let child = Command::new(bin)
            .arg("--flash")
            .arg(flash)
            .arg("--serial")
            .arg(serial)
            .args(extra)
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
