//! Runs a suite: the independent scenarios at once (each with its own device against the
//! one broker), then those that need the broker to themselves, one by one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_broker::{Event, Publisher};

use crate::backend::Backend;
use crate::backend::virtual_device::VirtualBackend;
use crate::error::Failed;
use crate::rig::Rig;
use crate::scenarios::{Scenario, ScenarioRun};
use crate::serial::SerialLine;

/// A scenario that has not finished in this long has hung; it fails rather than stalls
/// the suite. The slowest correct run is `duplicate-id` when the original device ends the
/// takeover fight at a backoff near the 60 s cap: about 95 s.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(120);

/// How one scenario went.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    pub name: &'static str,
    pub tolerance: &'static str,
    /// The key figure, or who is at fault and what was expected and seen (or broke).
    pub result: Result<String, Failed>,
    pub duration: Duration,
    /// The serial lines the scenario read, in order (its snapshot).
    pub log: Vec<SerialLine>,
    /// Everything the device printed until it was stopped.
    pub full_log: Vec<SerialLine>,
    /// Why the scenario did not run, when it was skipped (its `result` is then `Ok`, so
    /// it counts as no failure).
    pub skipped: Option<String>,
    /// When the broker received each publish of the scenario's client id (lifecycle
    /// topics and retransmissions excluded), in order: the broker's side of the interval
    /// plot.
    pub broker_publishes: Vec<Instant>,
    /// Retransmissions (DUP) the broker received: replays, not cadence slots.
    pub broker_replays: Vec<Instant>,
}

impl ScenarioReport {
    pub fn passed(&self) -> bool {
        self.result.is_ok()
    }

    /// A scenario this run cannot do, and why (e.g. it needs the mock broker's faults and
    /// the target is AWS).
    pub fn skipped(scenario: &Scenario, why: &str) -> Self {
        Self {
            name: scenario.name,
            tolerance: scenario.tolerance,
            result: Ok(format!("skipped: {why}")),
            duration: Duration::ZERO,
            log: Vec::new(),
            full_log: Vec::new(),
            broker_publishes: Vec::new(),
            broker_replays: Vec::new(),
            skipped: Some(why.to_string()),
        }
    }
}

/// A progress event, for the live view.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    Started(&'a str),
    Finished(&'a ScenarioReport),
}

/// Run `scenarios` in `rig` on virtual devices of the rig's `virtual-device` binary.
pub async fn run_suite(
    rig: Arc<Rig>,
    scenarios: Vec<Scenario>,
    progress: impl Fn(Progress<'_>) + Send + Sync + 'static,
) -> Vec<ScenarioReport> {
    let backend = Arc::new(VirtualBackend::new(rig.device_binary()));
    run_suite_on(rig, backend, scenarios, progress).await
}

/// Run `scenarios` in `rig` on devices `backend` starts, reporting progress as it goes;
/// reports come back in the order given.
pub async fn run_suite_on(
    rig: Arc<Rig>,
    backend: Arc<dyn Backend>,
    scenarios: Vec<Scenario>,
    progress: impl Fn(Progress<'_>) + Send + Sync + 'static,
) -> Vec<ScenarioReport> {
    let progress = Arc::new(progress);
    let order: Vec<&'static str> = scenarios.iter().map(|s| s.name).collect();
    // One given image is one identity: a second device with its client id would take
    // over the first's session. One board is one device. Either way everything then
    // runs in sequence.
    let one_identity = rig.given_image().is_some() || backend.single_device();
    let (exclusive, concurrent): (Vec<_>, Vec<_>) = scenarios
        .into_iter()
        .partition(|s| s.exclusive || one_identity);
    let mut reports = Vec::new();

    let mut tasks = tokio::task::JoinSet::new();
    for scenario in concurrent {
        let rig = Arc::clone(&rig);
        let backend = Arc::clone(&backend);
        let progress = Arc::clone(&progress);
        tasks.spawn(async move {
            progress(Progress::Started(scenario.name));
            let report = run_one(rig, backend, &scenario).await;
            progress(Progress::Finished(&report));
            report
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(report) => reports.push(report),
            Err(e) => panic!("a scenario task panicked: {e}"),
        }
    }
    for scenario in exclusive {
        progress(Progress::Started(scenario.name));
        let report = run_one(Arc::clone(&rig), Arc::clone(&backend), &scenario).await;
        progress(Progress::Finished(&report));
        reports.push(report);
    }
    reports.sort_by_key(|r| order.iter().position(|n| *n == r.name));
    reports
}

async fn run_one(rig: Arc<Rig>, backend: Arc<dyn Backend>, scenario: &Scenario) -> ScenarioReport {
    let started = Instant::now();
    // Subscribed before the device starts, so its first publish is seen.
    let mut observer = rig.observe();
    let mut run = ScenarioRun::on(rig, backend, scenario);
    let limit = scenario.limit.unwrap_or(SCENARIO_LIMIT);
    let result = match tokio::time::timeout(limit, (scenario.check)(&mut run)).await {
        Ok(result) => result,
        Err(_) => Err(run.failure(&format!(
            "expected the scenario to finish within {limit:?}, it did not"
        ))),
    };
    let full_log = run.log();
    let result = note_dropped_lines(result.map_err(Failed::from), dropped_lines(&full_log));
    let (mut broker_publishes, mut broker_replays) = (Vec::new(), Vec::new());
    while let Some(event) = observer.try_next() {
        if let Event::Publish(publish) = event
            && publish.publisher == Publisher::Client(run.client_id.clone())
            && !publish.topic.starts_with("$aws/")
        {
            if publish.dup {
                broker_replays.push(publish.received_at);
            } else {
                broker_publishes.push(publish.received_at);
            }
        }
    }
    ScenarioReport {
        name: scenario.name,
        tolerance: scenario.tolerance,
        result,
        duration: started.elapsed(),
        log: run.taken(),
        full_log,
        skipped: None,
        broker_publishes,
        broker_replays,
    }
}

/// Lines the device said its serial port dropped (`W log: dropped lines=N`).
pub fn dropped_lines(log: &[SerialLine]) -> u64 {
    log.iter()
        .filter_map(SerialLine::line)
        .filter(|l| l.tag() == "log" && l.message() == "dropped")
        .filter_map(|l| l.field_as::<u64>("lines"))
        .sum()
}

/// A scenario's result, saying so when the device dropped serial lines: the log the
/// checks read is then incomplete, which explains a line that never came, and a pass is
/// marked as resting on a partial log.
pub fn note_dropped_lines(result: Result<String, Failed>, dropped: u64) -> Result<String, Failed> {
    if dropped == 0 {
        return result;
    }
    let note = format!("the device's serial port dropped {dropped} lines (W log: dropped)");
    match result {
        Ok(figure) => Ok(format!("{figure}; {note}")),
        Err(failed) => Err(Failed {
            message: format!(
                "{}\n{note}: lines this check waited for may be among them",
                failed.message
            ),
            ..failed
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial::SerialText;
    use firmware_core::log::Line;

    fn at(line: Line) -> SerialLine {
        SerialLine {
            at: Instant::now(),
            wall: std::time::SystemTime::now(),
            text: SerialText::Line(Box::new(line)),
            said: None,
        }
    }

    #[test]
    fn dropped_serial_lines_are_counted_and_named_in_the_result() {
        let log = vec![
            at(Line::inbound(1, "inTopic", b"a")),
            at(Line::log_dropped(2, 700)),
            at(Line::log_dropped(3, 12)),
        ];
        assert_eq!(dropped_lines(&log), 712);
        let failed = note_dropped_lines(
            Err(Failed::check("expected 3000 inbound lines, saw 2288")),
            712,
        );
        let text = failed.unwrap_err().message;
        assert!(text.contains("dropped 712 lines"), "{text}");
        let passed = note_dropped_lines(Ok("10 intervals".into()), 712).unwrap();
        assert!(passed.starts_with("10 intervals; "), "{passed}");
        assert_eq!(note_dropped_lines(Ok("x".into()), 0), Ok("x".into()));
    }
}
