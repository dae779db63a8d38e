//! Debian's mosquitto as a TLS 1.3 broker for tests, with an observer (`mosquitto_sub`)
//! and a publisher (`mosquitto_pub`).
//!
//! Every broker gets its own temp dir and a free port; readiness and client activity are
//! observed in mosquitto's log (stderr, `log_type all`), never guessed with sleeps. The
//! broker is killed on drop.

use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::pki::TestPki;

/// Longest a broker may take to report that it is running.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// mosquitto's log, shared with the thread that reads its stderr.
#[derive(Default)]
struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// Generation (start count) of the last process whose stderr reached EOF.
    exited: Option<u32>,
}

/// A server certificate (PEM, possibly a chain) and its key, for a second listener.
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

/// A running (or stopped) mosquitto.
pub struct Mosquitto {
    dir: tempfile::TempDir,
    port: u16,
    /// A second listener for the device with its own server certificate (bad ones in the
    /// refusal tests), so the observer still connects through the first.
    device_listener: Option<(u16, ServerCert)>,
    pki: TestPki,
    child: Option<Child>,
    generation: u32,
    log: Arc<Log>,
}

impl Mosquitto {
    /// Start a broker on a free port: TLS 1.3 only, client certificates required and
    /// their CN used as the username.
    pub fn start(pki: &TestPki) -> io::Result<Self> {
        Self::start_with(pki, None)
    }

    /// [`Self::start`], plus a second listener for the device on [`Self::device_port`]
    /// presenting `device_cert` (same client-certificate rules).
    pub fn start_with(pki: &TestPki, device_cert: Option<ServerCert>) -> io::Result<Self> {
        let mut broker = Self {
            dir: tempfile::tempdir()?,
            port: 0,
            device_listener: device_cert.map(|c| (0, c)),
            pki: pki.clone(),
            child: None,
            generation: 0,
            log: Arc::default(),
        };
        let mut last = io::Error::other("no attempt");
        // A free port can be taken between our probe and mosquitto's bind; try another.
        for _ in 0..10 {
            broker.port = free_port()?;
            if let Some((port, _)) = &mut broker.device_listener {
                *port = free_port()?;
            }
            match broker.spawn() {
                Ok(()) => return Ok(broker),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port the device should dial: the device listener's, or the only one.
    pub fn device_port(&self) -> u16 {
        self.device_listener.as_ref().map_or(self.port, |(p, _)| *p)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// Kill the broker (as a crash would: no DISCONNECT, sockets reset) and reap it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let mut last = io::Error::other("no attempt");
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return Ok(()),
                // Only a just-closed socket can hold the port; try again at once.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Every log line so far, across restarts.
    pub fn log(&self) -> Vec<String> {
        self.log
            .state
            .lock()
            .map(|s| s.lines.clone())
            .unwrap_or_default()
    }

    /// Wait until a log line (from the start, across restarts) contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_for_log_from(0, needle, timeout)
    }

    /// Index of the next log line, to wait for lines after an action.
    pub fn log_mark(&self) -> usize {
        self.log.state.lock().map(|s| s.lines.len()).unwrap_or(0)
    }

    /// Like [`Self::wait_for_log`], looking only at lines from index `from` on.
    pub fn wait_for_log_from(
        &self,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> Option<String> {
        Probe {
            log: self.log.clone(),
        }
        .wait(from, needle, timeout)
    }

    /// [`Self::wait_for_log`] from async code, without blocking the runtime.
    pub async fn wait_for_log_async(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_for_log_from_async(0, needle, timeout).await
    }

    pub async fn wait_for_log_from_async(
        &self,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> Option<String> {
        let log = self.log.clone();
        let needle = needle.to_owned();
        tokio::task::spawn_blocking(move || Probe { log }.wait(from, &needle, timeout))
            .await
            .ok()
            .flatten()
    }

    fn write_config(&self) -> io::Result<PathBuf> {
        let p = &self.pki;
        let mut conf = format!(
            "per_listener_settings false\n\
             listener {port} 127.0.0.1\n\
             tls_version tlsv1.3\n\
             cafile {ca}\n\
             certfile {cert}\n\
             keyfile {key}\n\
             require_certificate true\n\
             use_identity_as_username true\n\
             persistence false\n\
             log_dest stderr\n\
             log_type all\n\
             connection_messages true\n\
             set_tcp_nodelay true\n\
             user root\n",
            port = self.port,
            ca = p.ca_pem.display(),
            cert = p.server_cert_pem.display(),
            key = p.server_key_pem.display(),
        );
        if let Some((port, cert)) = &self.device_listener {
            conf.push_str(&format!(
                "listener {port} 127.0.0.1\n\
                 tls_version tlsv1.3\n\
                 cafile {ca}\n\
                 certfile {cert}\n\
                 keyfile {key}\n\
                 require_certificate true\n\
                 use_identity_as_username true\n",
                ca = p.ca_pem.display(),
                cert = cert.cert_pem.display(),
                key = cert.key_pem.display(),
            ));
        }
        let path = self.dir.path().join("mosquitto.conf");
        std::fs::write(&path, conf)?;
        Ok(path)
    }

    /// Spawn mosquitto and wait until it runs; `AddrInUse` if the port was taken.
    fn spawn(&mut self) -> io::Result<()> {
        let conf = self.write_config()?;
        self.generation += 1;
        let generation = self.generation;
        let from = self.log_mark();
        let mut child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("no stderr"))?;
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut s) = log.state.lock() {
                    s.lines.push(line);
                }
                log.changed.notify_all();
            }
            if let Ok(mut s) = log.state.lock() {
                s.exited = Some(generation);
            }
            log.changed.notify_all();
        });
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        let mut state = self
            .log
            .state
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        loop {
            let new = || state.lines.iter().skip(from);
            if new().any(|l| l.contains(" running")) {
                return Ok(());
            }
            if state.exited == Some(generation) {
                let text: Vec<String> = new().cloned().collect();
                drop(state);
                self.stop();
                let kind = if text.iter().any(|l| l.contains("Address already in use")) {
                    io::ErrorKind::AddrInUse
                } else {
                    io::ErrorKind::Other
                };
                return Err(io::Error::new(kind, format!("mosquitto exited: {text:?}")));
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                drop(state);
                self.stop();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "mosquitto did not start",
                ));
            };
            state = self
                .log
                .changed
                .wait_timeout(state, left)
                .map_err(|_| io::Error::other("poisoned"))?
                .0;
        }
    }

    /// Arguments every mosquitto client needs, with the observer identity.
    fn client_args(&self) -> Vec<String> {
        let p = &self.pki;
        vec![
            "-V".into(),
            "mqttv5".into(),
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "--cafile".into(),
            p.ca_pem.display().to_string(),
            "--cert".into(),
            p.observer_cert_pem.display().to_string(),
            "--key".into(),
            p.observer_key_pem.display().to_string(),
        ]
    }

    /// Publish `payload` to `topic` as the observer identity; returns when the broker
    /// acknowledged it (QoS 1) and mosquitto_pub exited.
    pub async fn publish(&self, topic: &str, payload: &[u8], qos: u8) -> io::Result<()> {
        let mut child = tokio::process::Command::new("mosquitto_pub")
            .args(self.client_args())
            .args(["-t", topic, "-q", &qos.to_string(), "-s"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(payload).await?;
        }
        let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "mosquitto_pub hung"))??;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "mosquitto_pub failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// Subscribe an observer to `topics`; returns once the broker acknowledged the
    /// subscription, so nothing published afterwards is missed.
    pub async fn observe(&self, topics: &[&str]) -> io::Result<Observer> {
        Observer::start(self, topics).await
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A log waiter usable off the broker's thread.
struct Probe {
    log: Arc<Log>,
}

impl Probe {
    fn wait(&self, from: usize, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.log.state.lock().ok()?;
        loop {
            if let Some(line) = state.lines.iter().skip(from).find(|l| l.contains(needle)) {
                return Some(line.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self.log.changed.wait_timeout(state, left).ok()?.0;
        }
    }
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A message the observer received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Host wall-clock time at which mosquitto_sub received it.
    pub at: SystemTime,
    /// Host monotonic time at which the harness read it (just after `at`).
    pub read_at: Instant,
}

impl Received {
    pub fn payload_str(&self) -> &str {
        std::str::from_utf8(&self.payload).unwrap_or("<binary>")
    }
}

/// `mosquitto_sub` with the observer identity; killed on drop.
pub struct Observer {
    _child: tokio::process::Child,
    rx: mpsc::UnboundedReceiver<Received>,
}

/// Marks message lines in mosquitto_sub's output.
const MSG_PREFIX: &str = "MSG ";

impl Observer {
    async fn start(broker: &Mosquitto, topics: &[&str]) -> io::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "observer-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut cmd = tokio::process::Command::new("mosquitto_sub");
        // -F tags message lines with the arrival time and the hex payload, so any payload
        // survives the line format.
        cmd.args(broker.client_args())
            .args(["-i", &id, "-F", "MSG %U %x %t"]);
        for topic in topics {
            cmd.args(["-t", topic]);
        }
        let mark = broker.log_mark();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        // mosquitto_sub's own debug output is block-buffered on a pipe, so readiness is
        // read from the broker's log instead: SUBACK sent means the subscription is live.
        broker
            .wait_for_log_from_async(mark, &format!("Sending SUBACK to {id}"), START_TIMEOUT)
            .await
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "observer got no SUBACK"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(msg) = parse_line(&line)
                    && tx.send(msg).is_err()
                {
                    break;
                }
            }
        });
        Ok(Self { _child: child, rx })
    }

    /// The next message, or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Received> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

/// `MSG <secs>.<nanos> <hex payload> <topic>`
pub fn parse_line(line: &str) -> Option<Received> {
    let rest = line.strip_prefix(MSG_PREFIX)?;
    let mut parts = rest.splitn(3, ' ');
    let (time, hex, topic) = (parts.next()?, parts.next()?, parts.next()?);
    let (secs, nanos) = time.split_once('.')?;
    let at = SystemTime::UNIX_EPOCH + Duration::new(secs.parse().ok()?, nanos.parse().ok()?);
    let payload = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(Received {
        topic: topic.to_owned(),
        payload,
        at,
        read_at: Instant::now(),
    })
}
