//! Third-party brokers the rig starts, each with mutual TLS from a `certs init`-style
//! folder (`ca.pem`, `server.pem`, `server.key.pem`) on free loopback ports. The device's
//! image points there; the rig watches and injects through the observer identity, as on
//! AWS (`crate::aws::AwsObserver`), so the same scenarios run and those needing the mock
//! broker's faults are skipped.
//!
//! - `--target mosquitto`: [`Mosquitto`], a mosquitto process (`require_certificate`,
//!   the certificate's CN as the user name).
//! - `--target rumqttd`: [`Rumqttd`], rumqttd embedded in a child process of the `hil`
//!   binary (`hil rumqttd-broker`, feature `rumqttd`) with `verify-client-cert`; a restart
//!   kills that process and starts another on the same ports.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::RigError;

#[cfg(feature = "rumqttd")]
pub mod rumqttd_broker;

/// mosquitto's log, in the folder it runs from.
pub const LOG: &str = "mosquitto.log";
/// How long mosquitto may take to open its listener.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A running mosquitto, killed when dropped.
pub struct Mosquitto {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Mosquitto {
    /// Start mosquitto in `dir` serving `ca.pem`, `server.pem` and `server.key.pem` from
    /// there on a free loopback port, and wait until it accepts connections.
    pub async fn start(dir: &Path) -> Result<Self, RigError> {
        // A free port: bound and released here, then given to mosquitto (which cannot
        // report a port it chose itself).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| RigError::io("a free port for mosquitto", e))?
            .port();
        Self::start_on(dir, port).await
    }

    /// As [`Mosquitto::start`], on `port` (a restart, on the port it had).
    pub async fn start_on(dir: &Path, port: u16) -> Result<Self, RigError> {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, config(dir, port))
            .map_err(|e| RigError::io(format!("write {}", conf.display()), e))?;
        let log = dir.join(LOG);
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| RigError::io(format!("create {}", log.display()), e))?;
        let err_file = log_file
            .try_clone()
            .map_err(|e| RigError::io(format!("open {}", log.display()), e))?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(|e| {
                RigError::make(
                    "mosquitto",
                    format!("cannot run `mosquitto` ({e}); `make deps` installs it"),
                )
            })?;
        let mut broker = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        broker.wait_ready().await?;
        Ok(broker)
    }

    async fn wait_ready(&mut self) -> Result<(), RigError> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(RigError::make(
                    "mosquitto",
                    format!("exited ({status}) before listening: {}", self.log_tail()),
                ));
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(RigError::make(
                    "mosquitto",
                    format!(
                        "not listening on {} within {READY_WITHIN:?}: {}",
                        self.addr,
                        self.log_tail()
                    ),
                ));
            }
            // Polled: mosquitto says nothing when its listener is up.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines mosquitto logged, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The TLS files a broker serves from its folder: the CA that client certificates must
/// chain to, the server's certificate and its private key (PEM, as `certs init` writes).
pub const TLS_FILES: [&str; 3] = ["ca.pem", "server.pem", "server.key.pem"];

/// rumqttd's log, in the folder it runs from.
pub const RUMQTTD_LOG: &str = "rumqttd.log";
/// Whether this `hil` was built with rumqttd (`--features rumqttd`).
pub const RUMQTTD_BUILT: bool = cfg!(feature = "rumqttd");
/// Why `--target rumqttd` cannot run in a `hil` built without it, and how to build it.
pub const RUMQTTD_MISSING: &str = "this hil was built without rumqttd: build it with \
    `cargo build -p hil --features rumqttd` (`make hil`, `make qualify` and `make test` do)";

/// The ports of a [`Rumqttd`]: rumqttd serves one MQTT version per listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RumqttdPorts {
    /// MQTT 5, for devices (the firmware speaks MQTT 5 only).
    pub device: u16,
    /// MQTT 3.1.1, for the observer (an MQTT 3.1.1 client); same TLS, same CA.
    pub observer: u16,
}

/// A running rumqttd: a `hil rumqttd-broker` child process, killed when dropped.
///
/// rumqttd has no way to stop its router or listeners in-process, so it runs in a process
/// of its own: [`Rumqttd::stop`] kills it (every connection drops, nothing listens) and
/// [`Rumqttd::resume`] starts a new one on the same ports, a real restart with all
/// sessions lost.
pub struct Rumqttd {
    child: Option<Child>,
    /// Where devices connect (MQTT 5, mutual TLS).
    pub addr: SocketAddr,
    /// Where the observer connects (MQTT 3.1.1, mutual TLS).
    pub observer_addr: SocketAddr,
    binary: PathBuf,
    dir: PathBuf,
    log: PathBuf,
}

impl Rumqttd {
    /// Start rumqttd serving `ca.pem`, `server.pem` and `server.key.pem` from `dir` on two
    /// free loopback ports, with its log in `dir`; returns once both listeners accept.
    /// The broker runs in the `hil` binary ([`hil_binary`]).
    pub async fn start(dir: &Path) -> Result<Self, RigError> {
        // Bound together and released, then given to rumqttd (which cannot report a port
        // it chose itself): two different free ports.
        let bind = || {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| Ok((l.local_addr()?.port(), l)))
                .map_err(|e| RigError::io("a free port for rumqttd", e))
        };
        let ((device, a), (observer, b)) = (bind()?, bind()?);
        drop((a, b));
        Self::start_on(&hil_binary()?, dir, RumqttdPorts { device, observer }).await
    }

    /// As [`Rumqttd::start`] with the `hil` binary `binary`, on `ports`.
    pub async fn start_on(
        binary: &Path,
        dir: &Path,
        ports: RumqttdPorts,
    ) -> Result<Self, RigError> {
        let mut broker = Self {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], ports.device)),
            observer_addr: SocketAddr::from(([127, 0, 0, 1], ports.observer)),
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            log: dir.join(RUMQTTD_LOG),
        };
        broker.resume().await?;
        Ok(broker)
    }

    /// Its ports.
    pub fn ports(&self) -> RumqttdPorts {
        RumqttdPorts {
            device: self.addr.port(),
            observer: self.observer_addr.port(),
        }
    }

    /// Whether its process runs (it was not stopped and has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kill the broker's process: every connection drops and nothing listens until
    /// [`Rumqttd::resume`]. Returns whether it was running.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let running = matches!(child.try_wait(), Ok(None));
        let _ = child.kill();
        let _ = child.wait();
        running
    }

    /// Start the broker again on its ports (after [`Rumqttd::stop`]; a running one is
    /// stopped first) and wait until both listeners accept.
    pub async fn resume(&mut self) -> Result<(), RigError> {
        self.stop();
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| RigError::io(format!("create {}", self.log.display()), e))?;
        let err_file = log_file
            .try_clone()
            .map_err(|e| RigError::io(format!("open {}", self.log.display()), e))?;
        let ports = self.ports();
        let child = Command::new(&self.binary)
            .arg("rumqttd-broker")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--port")
            .arg(ports.device.to_string())
            .arg("--observer-port")
            .arg(ports.observer.to_string())
            .arg("--exit-with-parent")
            // Its end of this pipe closes when the rig exits, however it exits: the
            // broker then exits too, instead of holding the ports.
            .stdin(Stdio::piped())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(|e| {
                RigError::make(
                    "rumqttd",
                    format!("cannot run {} rumqttd-broker ({e})", self.binary.display()),
                )
            })?;
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), RigError> {
        let deadline = Instant::now() + READY_WITHIN;
        for addr in [self.addr, self.observer_addr] {
            loop {
                if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                    return Err(RigError::make(
                        "rumqttd",
                        format!("exited ({status}) before listening: {}", self.log_tail()),
                    ));
                }
                // A bare TCP connection, closed at once: rumqttd's accept loop does the
                // TLS handshake itself, so a connection left open would hold up every
                // other client.
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(RigError::make(
                        "rumqttd",
                        format!(
                            "not listening on {addr} within {READY_WITHIN:?}: {}",
                            self.log_tail()
                        ),
                    ));
                }
                // Polled: nothing tells the rig when the listener is up.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// The last lines rumqttd logged, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

impl Drop for Rumqttd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `hil` binary, which runs rumqttd (`hil rumqttd-broker`): this process when it is
/// `hil`, else `hil` beside it or one folder up (a test binary in `target/debug/deps`).
pub fn hil_binary() -> Result<PathBuf, RigError> {
    let exe = std::env::current_exe().map_err(|e| RigError::io("current executable", e))?;
    let name = format!("hil{}", std::env::consts::EXE_SUFFIX);
    if exe.file_name().is_some_and(|n| n == name.as_str()) {
        return Ok(exe);
    }
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(&name))
        .collect();
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| {
            RigError::make(
                "rumqttd",
                format!(
                    "no hil binary at {} to run rumqttd in; build it with `cargo build -p hil --features rumqttd`",
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            )
        })
}

/// mosquitto's configuration: one mutual-TLS listener on loopback, clients known by their
/// certificate's CN, nothing persisted.
pub fn config(dir: &Path, port: u16) -> String {
    let file = |name: &str| dir.join(name).display().to_string();
    // As the invoking user: started as root, mosquitto would switch to `mosquitto`, who
    // cannot read the rig's private work folder.
    let user = Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|u| !u.is_empty())
        .map_or(String::new(), |u| format!("user {u}\n"));
    format!(
        "# Written by hil for --target mosquitto.\n\
         {user}\
         per_listener_settings false\n\
         persistence false\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n\
         log_type notice\n\
         allow_anonymous false\n\
         listener {port} 127.0.0.1\n\
         cafile {}\n\
         certfile {}\n\
         keyfile {}\n\
         require_certificate true\n\
         use_identity_as_username true\n",
        file("ca.pem"),
        file("server.pem"),
        file("server.key.pem"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_demands_a_client_certificate() {
        let conf = config(Path::new("/pki"), 18883);
        assert!(conf.contains("listener 18883 127.0.0.1\n"));
        assert!(conf.contains("require_certificate true\n"));
        assert!(conf.contains("use_identity_as_username true\n"));
        assert!(conf.contains("cafile /pki/ca.pem\n"));
        assert!(conf.contains("allow_anonymous false\n"));
    }
}
