//! `--target mosquitto`: a real mosquitto process with a mutual-TLS listener on a free
//! port, serving the rig's test PKI (`require_certificate`, the certificate's CN as the
//! user name). The device's image points there; the rig watches and injects through the
//! observer identity, as on AWS (`crate::aws::AwsObserver`), so the same scenarios run
//! and those needing the mock broker's faults are skipped.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::RigError;

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
