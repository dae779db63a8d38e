//! Errors, grouped by who is at fault, so a failing scenario and a broken rig read
//! differently: on stderr and in the summary table (`FAIL` when the device is at fault,
//! `ERROR` when the test setup is) and in JUnit (`<failure>` or `<error>`, typed with the
//! [`Fault`]).
//!
//! - [`RigError`]: the rig's own side: the command line, the PKI, flash images, the mock
//!   broker, the AWS observer, the virtual-device binary, report files.
//! - [`BackendError`]: the device backend or the board: serial ports, flashing, esptool,
//!   partition tables and firmware files, starting a device process.
//! - [`DeviceError`]: the device under test stopped running during a scenario.
//! - [`CheckFailure`]: the device ran but did not do what the scenario expects.
//!
//! A scenario's check returns a [`ScenarioError`] (any of the four); its report keeps a
//! [`Failed`]: the fault and the message. Before any scenario runs, `hil run` can only
//! stop with a [`SetupError`] (the rig's or the backend's).

use std::fmt;
use std::path::PathBuf;

/// The rig cannot do its part: nothing here says anything about the device.
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    /// The command line asks for something impossible or incomplete; names the flag.
    #[error("{0}")]
    Usage(String),
    /// A file the rig reads (a given flash image, an observer identity).
    #[error("{}: {problem}", path.display())]
    File { path: PathBuf, problem: String },
    /// Credentials the rig reads (the observer identity); the error names the file.
    #[error(transparent)]
    Certs(#[from] certs::CertsError),
    /// A `--pki` folder that is not a `certs init` output.
    #[error("--pki {}: {problem}", dir.display())]
    PkiDir { dir: PathBuf, problem: String },
    /// Making something the rig hands a device or the broker: the test PKI, an identity,
    /// a device config, a flash image, the policy.
    #[error("{what}: {problem}")]
    Make { what: String, problem: String },
    /// Reading or writing on the host (work folder, reports, sockets).
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The mock broker would not start, or not do what a scenario asked of it.
    #[error("{what}: {source}")]
    Broker {
        what: String,
        source: mock_broker::StartError,
    },
    /// The target lacks what a scenario needs (the mock broker with `--target aws`, the
    /// rig's CA with `--flash`).
    #[error("{0}")]
    Target(&'static str),
    /// The AWS observer connection; `who` is `observer CLIENT_ID at HOST:PORT`.
    #[error("{who}: {problem}")]
    Observer { who: String, problem: String },
    /// The AWS observer lost its connection during a scenario, so what the device did
    /// was not seen: `report` is the scenario's failure, which says so.
    #[error("{report}")]
    ObserverLost { trouble: String, report: String },
    /// No virtual-device binary to run.
    #[error("{0}")]
    DeviceBinary(String),
}

impl RigError {
    pub fn usage(message: impl Into<String>) -> Self {
        RigError::Usage(message.into())
    }

    pub fn make(what: impl Into<String>, problem: impl fmt::Display) -> Self {
        RigError::Make {
            what: what.into(),
            problem: problem.to_string(),
        }
    }

    pub fn file(path: impl Into<PathBuf>, problem: impl fmt::Display) -> Self {
        RigError::File {
            path: path.into(),
            problem: problem.to_string(),
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        RigError::Io {
            what: what.into(),
            source,
        }
    }

    pub fn broker(what: impl Into<String>, source: mock_broker::StartError) -> Self {
        RigError::Broker {
            what: what.into(),
            source,
        }
    }
}

/// The backend cannot put the device to work: the board, its port or its firmware.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The board named by `board` (`esp32c3`, `esp8266`): its port, bootloader or
    /// flashing; the problem names the port.
    #[error("{board}: {problem}")]
    Board {
        board: &'static str,
        problem: String,
    },
    /// The board on `port` did not answer or could not be flashed.
    #[error("{board} on {}: {problem}", port.display())]
    Port {
        board: &'static str,
        port: PathBuf,
        problem: String,
    },
    /// A file the backend puts on the board (firmware, flash image).
    #[error("{}: {problem}", path.display())]
    File { path: PathBuf, problem: String },
    /// A partition table the backend flashes by.
    #[error("partition table {}: {problem}", path.display())]
    PartitionTable { path: PathBuf, problem: String },
    /// Finding the board's serial port.
    #[error("{0}")]
    Ports(String),
    /// esptool, which flashes the ESP8266.
    #[error("{0}")]
    Esptool(String),
    /// The virtual device's process would not start.
    #[error("virtual device: {0}")]
    Start(std::io::Error),
}

impl BackendError {
    pub fn board(board: &'static str, problem: impl fmt::Display) -> Self {
        BackendError::Board {
            board,
            problem: problem.to_string(),
        }
    }

    pub fn file(path: impl Into<PathBuf>, problem: impl fmt::Display) -> Self {
        BackendError::File {
            path: path.into(),
            problem: problem.to_string(),
        }
    }
}

/// The device under test stopped running while a scenario waited for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// It stopped on its own (a process that exited): `report` is what the scenario
    /// expected, the exit status and the last serial lines.
    #[error("{report}")]
    Exited { status: String, report: String },
}

/// The device ran but did not do what the scenario expects: what was expected, what was
/// seen and, once a device started, its last serial lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailure(pub String);

/// Why a scenario's check did not pass.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(transparent)]
    Check(#[from] CheckFailure),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Rig(#[from] RigError),
}

impl ScenarioError {
    /// A check failure saying what was expected and what was seen.
    pub fn check(message: impl Into<String>) -> Self {
        ScenarioError::Check(CheckFailure(message.into()))
    }

    pub fn fault(&self) -> Fault {
        match self {
            ScenarioError::Check(_) => Fault::Check,
            ScenarioError::Device(_) => Fault::Device,
            ScenarioError::Backend(_) => Fault::Backend,
            ScenarioError::Rig(_) => Fault::Rig,
        }
    }
}

/// `hil run` stopped before running any scenario.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Rig(#[from] RigError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl SetupError {
    pub fn fault(&self) -> Fault {
        match self {
            SetupError::Rig(_) => Fault::Rig,
            SetupError::Backend(_) => Fault::Backend,
        }
    }
}

/// Who is at fault when a scenario does not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The device did not do what the scenario expects.
    Check,
    /// The device stopped running.
    Device,
    /// The backend or board could not run the device.
    Backend,
    /// The rig itself broke.
    Rig,
}

impl Fault {
    /// As JUnit's `type` attribute and the report's labels spell it.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Check => "check",
            Fault::Device => "device",
            Fault::Backend => "backend",
            Fault::Rig => "rig",
        }
    }

    /// The device is at fault (a failed scenario), not the test setup (an error).
    pub fn is_device(self) -> bool {
        matches!(self, Fault::Check | Fault::Device)
    }

    /// The result word of the summary table and the live view: `FAIL` when the device
    /// is at fault, `ERROR` when the test setup is.
    pub fn word(self) -> &'static str {
        if self.is_device() { "FAIL" } else { "ERROR" }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scenario that did not pass, as its report keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub fault: Fault,
    /// What was expected and what was seen, or what broke.
    pub message: String,
}

impl Failed {
    /// A failed check (the device's fault).
    pub fn check(message: impl Into<String>) -> Self {
        Self {
            fault: Fault::Check,
            message: message.into(),
        }
    }

    /// The first line of the message, for tables and headings.
    pub fn headline(&self) -> &str {
        self.message.lines().next().unwrap_or_default()
    }

    /// `FAIL` or `ERROR (rig)`: the result word, with the fault when it is the setup's.
    pub fn label(&self) -> String {
        if self.fault.is_device() {
            self.fault.word().to_string()
        } else {
            format!("{} ({})", self.fault.word(), self.fault)
        }
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ScenarioError> for Failed {
    fn from(error: ScenarioError) -> Self {
        Self {
            fault: error.fault(),
            message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_fails_a_scenario_and_the_setup_errs() {
        let check: Failed = ScenarioError::check("expected 2000 ms, saw 3001 ms").into();
        assert_eq!(check.label(), "FAIL");
        let exited: Failed = ScenarioError::from(DeviceError::Exited {
            status: "exit status: 1".into(),
            report: "expected boot (the device exited: exit status: 1)".into(),
        })
        .into();
        assert_eq!(
            (exited.fault, exited.label().as_str()),
            (Fault::Device, "FAIL")
        );
        let rig: Failed = ScenarioError::from(RigError::Target("needs the mock broker")).into();
        assert_eq!(rig.label(), "ERROR (rig)");
        assert_eq!(rig.message, "needs the mock broker");
        let backend: Failed =
            ScenarioError::from(BackendError::board("esp32c3", "open /dev/ttyACM0: busy")).into();
        assert_eq!(backend.label(), "ERROR (backend)");
        assert_eq!(backend.message, "esp32c3: open /dev/ttyACM0: busy");
    }
}
