//! The scenarios: each is data (name, what it proves, its tolerances, whether it needs the
//! broker to itself) plus an async check that drives the broker and reads the device.
//!
//! A check returns its key figure (`10 intervals 1994..2006 ms`) or a [`ScenarioError`]:
//! a check failure that says what was expected and what was seen, the device stopping,
//! or the rig or backend breaking (which is no verdict on the device).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use firmware_core::config::DeviceConfig;
use firmware_core::log::Line;
use mock_broker::Observer;

use crate::backend::virtual_device::VirtualBackend;
use crate::backend::{Backend, Device};
use crate::error::{CheckFailure, DeviceError, RigError, ScenarioError};
use crate::rig::Rig;
use crate::serial::{SerialCapture, SerialLine};
pub use crate::vocabulary::Vocabulary;

pub mod backoff;
pub mod boot;
pub mod cadence;
pub mod dead_link;
pub mod duplicate_id;
pub mod inbound;
pub mod qos1_retry;
pub mod reconnect;
pub mod sntp_bad_time;
pub mod sntp_silent;
pub mod stamped;
pub mod tls;

/// What a check's future resolves to: the key figure, or what went wrong.
pub type CheckResult = Result<String, ScenarioError>;
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = CheckResult> + Send + 'a>>;

/// One scenario of the suite.
pub struct Scenario {
    pub name: &'static str,
    /// What it proves, in one line.
    pub summary: &'static str,
    /// The tolerances it asserts, stated so `hil list` and failures can show them.
    pub tolerance: &'static str,
    /// Disturbs the whole broker (stops its listener, swaps its certificate), so it runs
    /// after the concurrent ones, alone.
    pub exclusive: bool,
    /// Issues certificates from the rig's CA, so it cannot run against a `--pki` folder.
    pub needs_rig_ca: bool,
    /// Drives the mock broker's fault hooks (outages, bad certificates, withheld
    /// packets), which a real endpoint such as AWS IoT Core does not offer.
    pub needs_broker_faults: bool,
    /// Stops and starts the broker (the mock's listener, or a third-party broker's
    /// process), which a test cannot do to AWS IoT.
    pub restarts_broker: bool,
    /// Log lines (`tag: message`) it cannot judge without; a board whose firmware never
    /// prints one skips it, saying why.
    pub needs_lines: &'static [&'static str],
    /// How long it may take before it counts as hung, when not
    /// [`crate::runner::SCENARIO_LIMIT`].
    pub limit: Option<std::time::Duration>,
    pub check: for<'a> fn(&'a mut ScenarioRun) -> CheckFuture<'a>,
}

/// Every scenario, in the order they are listed and reported.
pub fn all() -> Vec<Scenario> {
    vec![
        boot::SCENARIO,
        cadence::SCENARIO,
        inbound::SCENARIO,
        reconnect::SCENARIO,
        tls::UNTRUSTED_CA,
        tls::WRONG_NAME,
        tls::EXPIRED,
        tls::LARGE_CHAIN,
        backoff::SCENARIO,
        qos1_retry::SCENARIO,
        dead_link::SCENARIO,
        sntp_silent::SCENARIO,
        sntp_bad_time::SCENARIO,
        duplicate_id::SCENARIO,
    ]
}

/// The scenarios named in `names` (all of them when empty), or the unknown name.
pub fn select(names: &[String]) -> Result<Vec<Scenario>, RigError> {
    if names.is_empty() {
        return Ok(all());
    }
    let mut chosen = Vec::new();
    for name in names {
        let scenario = all().into_iter().find(|s| s.name == name).ok_or_else(|| {
            let known: Vec<&str> = all().iter().map(|s| s.name).collect();
            RigError::usage(format!(
                "unknown scenario {name:?}; known: {}",
                known.join(", ")
            ))
        })?;
        if !chosen.iter().any(|s: &Scenario| s.name == scenario.name) {
            chosen.push(scenario);
        }
    }
    Ok(chosen)
}

/// A scenario's state while it runs: the shared rig, the backend that starts its
/// device, its own device and client id.
pub struct ScenarioRun {
    pub rig: Arc<Rig>,
    pub client_id: String,
    backend: Arc<dyn Backend>,
    device: Option<Box<dyn Device>>,
}

impl ScenarioRun {
    /// A run on the virtual device of the rig's `virtual-device` binary.
    pub fn new(rig: Arc<Rig>, scenario: &Scenario) -> Self {
        let backend = Arc::new(VirtualBackend::new(rig.device_binary()));
        Self::on(rig, backend, scenario)
    }

    /// A run whose device `backend` starts.
    pub fn on(rig: Arc<Rig>, backend: Arc<dyn Backend>, scenario: &Scenario) -> Self {
        let client_id = match rig.given_image() {
            Some(given) => given.config.client_id.to_string(),
            None => format!("hil-{}", scenario.name),
        };
        Self {
            rig,
            client_id,
            backend,
            device: None,
        }
    }

    /// The log lines the device's firmware can print.
    pub fn vocabulary(&self) -> Vocabulary {
        self.backend.vocabulary()
    }

    /// The topic this scenario's device subscribes to.
    pub fn inbound_topic(&self) -> String {
        self.rig.inbound_topic_of(&self.client_id)
    }

    /// Start this scenario's device with the rig's config for its client id, changed by
    /// `adjust`. Returns a broker observer opened before the device started, so it sees
    /// everything the device does.
    pub fn start_device(
        &mut self,
        adjust: impl FnOnce(&mut DeviceConfig),
    ) -> Result<Observer, ScenarioError> {
        let image = match self.rig.given_image() {
            Some(given) => given.path.clone(),
            None => {
                let mut config = self.rig.device_config(&self.client_id)?;
                adjust(&mut config);
                self.rig.write_image(&config)?
            }
        };
        let observer = self.rig.observe();
        // A scenario restarting its device stops the old one first (a board has one).
        self.device = None;
        let device = if self.backend.single_device()
            && tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
        {
            // Flashing a board blocks for seconds: keep the broker's tasks running.
            tokio::task::block_in_place(|| self.backend.start(&image))?
        } else {
            self.backend.start(&image)?
        };
        self.device = Some(device);
        Ok(observer)
    }

    /// The device's serial capture. Panics if no device was started: a scenario bug.
    pub fn serial(&mut self) -> &mut SerialCapture {
        self.device
            .as_mut()
            .expect("the scenario started its device")
            .serial()
    }

    /// Read the device's log until a line satisfies `pick`; on timeout, a failure that
    /// names what was expected and shows the last lines seen.
    pub async fn expect_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pick: impl Fn(&Line) -> bool,
    ) -> Result<SerialLine, ScenarioError> {
        self.expect_serial(what, timeout, |l| l.line().is_some_and(&pick))
            .await
    }

    /// As [`Self::expect_line`], `pick` judging the whole serial line (its read time too).
    pub async fn expect_serial(
        &mut self,
        what: &str,
        timeout: Duration,
        pick: impl Fn(&SerialLine) -> bool,
    ) -> Result<SerialLine, ScenarioError> {
        let found = self
            .serial()
            .until(timeout, |l| pick(l).then_some(()))
            .await;
        match found {
            Some((line, ())) => Ok(line),
            None => Err(self.failure(&format!("expected {what} within {timeout:?}"))),
        }
    }

    /// `message`, then the device's last serial lines (or why there are none), as the
    /// error of whoever is at fault: the device if it stopped, the rig if its observer
    /// lost sight of the device, else the check.
    pub fn failure(&mut self, message: &str) -> ScenarioError {
        let Some(device) = self.device.as_mut() else {
            return CheckFailure(message.to_string()).into();
        };
        let status = device.exited();
        let trouble = self.rig.trouble();
        let mut report = message.to_string();
        if let Some(status) = &status {
            report.push_str(&format!(" (the device exited: {status})"));
        }
        if let Some(trouble) = &trouble {
            report.push_str(&format!(" ({trouble})"));
        }
        report.push_str(&format!(
            "\nlast serial lines:\n{}",
            device.capture().tail(12)
        ));
        if let Some(hint) = self.backend.explain(&device.capture().seen()) {
            report.push_str(&format!("\nhint: {hint}"));
        }
        match (status, trouble) {
            (Some(status), _) => DeviceError::Exited { status, report }.into(),
            (None, Some(trouble)) => RigError::ObserverLost { trouble, report }.into(),
            (None, None) => CheckFailure(report).into(),
        }
    }

    /// The serial lines this scenario has read, in order.
    pub fn taken(&self) -> Vec<SerialLine> {
        self.device
            .as_ref()
            .map(|d| d.capture().taken().to_vec())
            .unwrap_or_default()
    }

    /// Every serial line the device printed.
    pub fn log(&self) -> Vec<SerialLine> {
        self.device
            .as_ref()
            .map(|d| d.capture().seen())
            .unwrap_or_default()
    }
}

/// Whether `line` is `tag: message ...`.
pub fn is(line: &Line, tag: &str, message: &str) -> bool {
    line.tag() == tag && line.message() == message
}
