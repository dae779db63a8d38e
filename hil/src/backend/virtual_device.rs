//! The virtual device backend: the `virtual-device` binary with its serial port on a
//! pseudo-terminal, read through [`SerialCapture`] exactly as a board's USB port is.
//! Every start is a new process, so scenarios can run side by side.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{Backend, Device};
use crate::error::{BackendError, RigError};
use crate::serial::SerialCapture;

/// Environment variable that names the `virtual-device` binary explicitly.
pub const VIRTUAL_DEVICE_ENV: &str = "HIL_VIRTUAL_DEVICE";
const BINARY_NAME: &str = "virtual-device";

/// Where the `virtual-device` binary is: `$HIL_VIRTUAL_DEVICE`, else next to the running
/// executable (`target/<profile>/`), else one folder up (test binaries live in
/// `target/<profile>/deps/`).
pub fn find_virtual_device() -> Result<PathBuf, RigError> {
    if let Some(path) = std::env::var_os(VIRTUAL_DEVICE_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(RigError::DeviceBinary(format!(
                "{VIRTUAL_DEVICE_ENV}={} is not a file",
                path.display()
            )))
        };
    }
    let exe = std::env::current_exe().map_err(|e| RigError::io("current executable", e))?;
    let name = format!("{BINARY_NAME}{}", std::env::consts::EXE_SUFFIX);
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
            RigError::DeviceBinary(format!(
                "no {BINARY_NAME} binary at {}; build it with `cargo build -p virtual-device` \
                 (or set {VIRTUAL_DEVICE_ENV})",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))
        })
}

/// A running virtual device and the rig's end of its serial port. The process is killed
/// when this is dropped, so a failed scenario leaves nothing behind.
pub struct VirtualDevice {
    child: Option<Child>,
    pub serial: SerialCapture,
}

impl VirtualDevice {
    /// `binary --flash IMAGE --serial PTY`, its serial captured from the start.
    pub fn spawn(binary: &Path, image: &Path) -> io::Result<Self> {
        Self::spawn_with(binary, image, &[])
    }

    /// As [`VirtualDevice::spawn`], with `extra` arguments after the others.
    pub fn spawn_with(binary: &Path, image: &Path, extra: &[String]) -> io::Result<Self> {
        let serial = SerialCapture::pseudo_terminal()?;
        let pty = serial
            .device_path()
            .ok_or_else(|| io::Error::other("pseudo-terminal without a device path"))?;
        let child = Command::new(binary)
            .arg("--flash")
            .arg(image)
            .arg("--serial")
            .arg(pty)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::other(format!("start {}: {e}", binary.display())))?;
        Ok(Self {
            child: Some(child),
            serial,
        })
    }

    /// Whether the process has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Device for VirtualDevice {
    fn serial(&mut self) -> &mut SerialCapture {
        &mut self.serial
    }

    fn capture(&self) -> &SerialCapture {
        &self.serial
    }

    fn exited(&mut self) -> Option<String> {
        VirtualDevice::exited(self).map(|status| status.to_string())
    }
}

/// Starts a `virtual-device` process per scenario.
#[derive(Debug, Clone)]
pub struct VirtualBackend {
    binary: PathBuf,
    /// Arguments every device gets besides the image and serial port.
    extra: Vec<String>,
}

impl VirtualBackend {
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            extra: Vec::new(),
        }
    }

    /// Devices that break Device Advisor's `rule` on purpose (`virtual-device
    /// --misbehave RULE`): the tests proving that `hil qualify` can fail.
    pub fn misbehaving(mut self, rule: &str) -> Self {
        self.extra
            .extend(["--misbehave".to_string(), rule.to_string()]);
        self
    }
}

impl Backend for VirtualBackend {
    fn board(&self) -> &'static str {
        "virtual"
    }

    fn single_device(&self) -> bool {
        false
    }

    fn start(&self, image: &Path) -> Result<Box<dyn Device>, BackendError> {
        VirtualDevice::spawn_with(&self.binary, image, &self.extra)
            .map(|device| Box::new(device) as Box<dyn Device>)
            .map_err(BackendError::Start)
    }
}

impl Drop for VirtualDevice {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
