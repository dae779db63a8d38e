//! `hil qualify`: AWS IoT Device Advisor's qualification test cases, offline, against the
//! mock broker, under Device Advisor's own names and verdict words.
//!
//! # Layout
//! - [`cases`]: the case table (Device Advisor's name, the rule used, the scenarios that
//!   prove it) and the judges that turn scenario results into verdicts.
//! - [`checks`]: the scenarios only the qualification runs (withheld CONNACK rounds,
//!   unstable connections, sessions, full-size TLS records, cipher suites, ...).
//! - [`policy`]: `Security_Device_Policies`, judged on the policy document itself.
//! - [`output`]: the summary table, JUnit and the qualification page.
//!
//! Cases reuse `hil run`'s scenarios where those already prove them (mapped, not copied),
//! and every scenario a selection needs runs once, concurrently as in `hil run`.

pub mod cases;
pub mod checks;
pub mod output;
pub mod policy;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;
use crate::error::RigError;
use crate::rig::Rig;
use crate::runner::{Progress, ScenarioReport, run_suite_on};
use crate::scenarios::{self, Scenario};

pub use cases::{Case, Category, Source};

/// Device Advisor's verdict words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Pass,
    PassWithWarnings,
    Fail,
    /// Not run here, and why is in the evidence (never counted as passed).
    NotRun,
}

impl Verdict {
    /// Whether the qualification as a whole can still pass with this verdict.
    pub fn is_failure(self) -> bool {
        self == Self::Fail
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "pass",
            Self::PassWithWarnings => "pass with warnings",
            Self::Fail => "fail",
            Self::NotRun => "not run",
        })
    }
}

/// A verdict and the evidence line that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub evidence: String,
}

impl Judgement {
    pub fn new(verdict: Verdict, evidence: impl Into<String>) -> Self {
        Self {
            verdict,
            evidence: evidence.into(),
        }
    }
}

/// One case's outcome.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub case: &'static Case,
    pub judgement: Judgement,
    /// Wall time of the scenarios that decided it (the longest, as they run at once).
    pub duration: Duration,
}

/// What a qualification run produced: the case results and the scenario reports behind
/// them (for the HTML report's logs and timelines).
#[derive(Debug, Clone)]
pub struct Qualification {
    pub results: Vec<CaseResult>,
    pub reports: Vec<ScenarioReport>,
}

impl Qualification {
    /// No case failed (warnings and cases not run do not fail a qualification).
    pub fn passed(&self) -> bool {
        !self
            .results
            .iter()
            .any(|r| r.judgement.verdict.is_failure())
    }
}

/// Every scenario a case may name: `hil run`'s and the qualification's own.
pub fn all_scenarios() -> Vec<Scenario> {
    let mut all = scenarios::all();
    all.extend(checks::all());
    all
}

/// The cases named in `names` (all when empty), or the unknown name with the known ones.
pub fn select(names: &[String]) -> Result<Vec<&'static Case>, RigError> {
    if names.is_empty() {
        return Ok(cases::CASES.iter().collect());
    }
    let mut chosen: Vec<&'static Case> = Vec::new();
    for name in names {
        let case = cases::CASES
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let known: Vec<&str> = cases::CASES.iter().map(|c| c.name).collect();
                RigError::usage(format!(
                    "unknown Device Advisor case {name:?}; known: {}",
                    known.join(", ")
                ))
            })?;
        if !chosen.iter().any(|c| c.name == case.name) {
            chosen.push(case);
        }
    }
    Ok(chosen)
}

/// The scenarios `cases` need, each once, in the order of [`all_scenarios`].
pub fn scenarios_for(cases: &[&'static Case]) -> Vec<Scenario> {
    all_scenarios()
        .into_iter()
        .filter(|s| cases.iter().any(|c| c.scenarios().contains(&s.name)))
        .collect()
}

/// What the cases need that this run cannot give: scenarios skipped with the reason.
pub type Skipped = Vec<(&'static str, String)>;

/// Run `cases` in `rig` on devices `backend` starts: the scenarios they need (less
/// `skipped`, reported as not run with the reason), then each case's judgement. `policy`
/// is the policy document the device's certificate has, for `Security_Device_Policies`.
pub async fn qualify(
    rig: Arc<Rig>,
    backend: Arc<dyn Backend>,
    cases: Vec<&'static Case>,
    scenarios: Vec<Scenario>,
    skipped: Skipped,
    policy: Option<policy::PolicySource>,
    progress: impl Fn(Progress<'_>) + Send + Sync + 'static,
) -> Qualification {
    let mut reports = run_suite_on(rig, backend, scenarios, progress).await;
    for (name, why) in skipped {
        if let Some(scenario) = all_scenarios().into_iter().find(|s| s.name == name) {
            reports.push(ScenarioReport::skipped(&scenario, &why));
        }
    }
    let results = cases
        .into_iter()
        .map(|case| judge(case, &reports, policy.as_ref()))
        .collect();
    Qualification { results, reports }
}

/// `case`'s judgement from the scenario reports (or the policy).
pub fn judge(
    case: &'static Case,
    reports: &[ScenarioReport],
    policy: Option<&policy::PolicySource>,
) -> CaseResult {
    match &case.source {
        Source::Policy => CaseResult {
            case,
            judgement: match policy {
                Some(source) => policy::judge(source),
                None => Judgement::new(
                    Verdict::NotRun,
                    "no policy document: give --policy FILE (the policy attached to the device's certificate)",
                ),
            },
            duration: Duration::ZERO,
        },
        Source::Scenarios { names, judge } => {
            let found: Vec<&ScenarioReport> = names
                .iter()
                .filter_map(|n| reports.iter().find(|r| r.name == *n))
                .collect();
            let duration = found.iter().map(|r| r.duration).max().unwrap_or_default();
            let judgement = if found.len() < names.len() {
                Judgement::new(Verdict::NotRun, "its scenarios did not run")
            } else if let Some(skipped) = found.iter().find_map(|r| r.skipped.as_ref()) {
                Judgement::new(Verdict::NotRun, skipped.clone())
            } else {
                judge(&found)
            };
            CaseResult {
                case,
                judgement,
                duration,
            }
        }
    }
}
