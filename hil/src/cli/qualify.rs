//! `hil qualify`: the command around [`crate::qualify`].

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use certs::x509::CertInfo;

use super::{DeviceArgs, QualifyArgs, ready_device, start_rig};
use crate::error::{RigError, SetupError};
use crate::qualify::checks::{LongDuration, set_long_duration};
use crate::qualify::output::{self, DeviceIdentity};
use crate::qualify::policy::PolicySource;
use crate::qualify::{self as da, Qualification};
use crate::report::{RunInfo, write_report_dir};
use crate::rig::Rig;
use crate::runner::Progress;

/// `hil qualify --list`: every case with its rule.
pub fn list() -> String {
    da::cases::CASES
        .iter()
        .map(|c| {
            let scenarios = match c.scenarios() {
                [] => "the policy document".to_string(),
                names => names.join(", "),
            };
            format!(
                "{} ({}; {scenarios})\n    {}\n",
                c.name,
                c.category.name(),
                c.rule
            )
        })
        .collect()
}

pub async fn run(args: QualifyArgs) -> ExitCode {
    if args.list {
        print!("{}", list());
        return ExitCode::SUCCESS;
    }
    match qualify_command(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("hil: {} error: {e}", e.fault());
            ExitCode::from(2)
        }
    }
}

/// The device's identity for the qualification page.
fn identity(
    args: &DeviceArgs,
    rig: &Rig,
    q: &Qualification,
    started: SystemTime,
) -> DeviceIdentity {
    let fingerprint = |der: &[u8]| {
        CertInfo::from_der(der)
            .map(|info| info.fingerprint())
            .unwrap_or_else(|e| format!("(unreadable: {e})"))
    };
    let (client_id, certificate) = match rig.given_image() {
        Some(given) => {
            let cert = std::fs::read(&given.path)
                .ok()
                .and_then(|bytes| {
                    let contents = certs::image::read_image(&bytes).ok()?;
                    contents
                        .file(firmware_core::image::CERT_PATH)
                        .map(fingerprint)
                })
                .unwrap_or_else(|| "(image unreadable)".into());
            (
                given.config.client_id.to_string(),
                format!("SHA-256 {cert}"),
            )
        }
        None => (
            "hil-<scenario>: one identity per scenario".to_string(),
            match rig.ca() {
                Ok(ca) => format!(
                    "issued per scenario by the rig's CA, SHA-256 {}",
                    fingerprint(ca.cert_der())
                ),
                Err(_) => "(no CA)".to_string(),
            },
        ),
    };
    let info = RunInfo::collect(started, args.board.name(), args.target.name(), &q.reports);
    DeviceIdentity {
        board: args.board.name().into(),
        target: args.target.name().into(),
        client_id,
        firmware: output::firmware_of(q),
        certificate,
        started,
        commit: info.commit,
    }
}

/// `Ok(passed)`, or why the qualification could not run.
async fn qualify_command(args: &QualifyArgs) -> Result<bool, SetupError> {
    let started_wall = SystemTime::now();
    let cases = da::select(&args.cases)?;
    let policy = match &args.policy {
        Some(path) => Some(PolicySource::read(path).map_err(|e| RigError::file(path, e))?),
        None => None,
    };
    set_long_duration(LongDuration {
        outage: Duration::from_secs(args.long_outage),
        drops: args.drops,
        ..LongDuration::default()
    });
    let started = Instant::now();
    let (backend, binary) = ready_device(args).await?;
    let mut selected = da::scenarios_for(&cases);
    let (rig, skipped) = start_rig(args, true, binary, backend.vocabulary(), &mut selected).await?;
    let policy = policy.or_else(|| {
        rig.policy().map(|(origin, json)| PolicySource {
            origin: origin.to_string(),
            json: json.to_string(),
        })
    });
    eprintln!(
        "hil qualify: {}, {} case(s) from {} scenario(s) on the {} device",
        rig.describe(),
        cases.len(),
        selected.len(),
        backend.board()
    );
    let rig = Arc::new(rig);
    let q = da::qualify(
        Arc::clone(&rig),
        backend,
        cases,
        selected,
        skipped,
        policy,
        move |event| {
            let at = started.elapsed().as_secs_f64();
            match event {
                Progress::Started(name) => eprintln!("[{at:6.1}s] start {name}"),
                Progress::Finished(r) => match &r.result {
                    Ok(figure) => eprintln!("[{at:6.1}s] done  {}: {figure}", r.name),
                    Err(failed) => eprintln!("[{at:6.1}s] done  {}: {}", r.name, failed.headline()),
                },
            }
        },
    )
    .await;
    let total = started.elapsed();
    let summary = output::summary_table(&q.results);
    println!("\n{summary}");
    let identity = identity(args, &rig, &q, started_wall);
    if let Some(path) = &args.junit {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| RigError::io(parent.display().to_string(), e))?;
        }
        std::fs::write(path, output::junit_xml(&q.results, &identity, total))
            .map_err(|e| RigError::io(format!("write {}", path.display()), e))?;
        println!("JUnit: {}", path.display());
    }
    if let Some(dir) = &args.report {
        let info = RunInfo::collect(
            started_wall,
            args.board.name(),
            args.target.name(),
            &q.reports,
        );
        let scenario_summary = crate::report::summary_table(&q.reports);
        write_report_dir(dir, &q.reports, &scenario_summary, &info)
            .and_then(|()| std::fs::write(dir.join("qualification.txt"), &summary))
            .and_then(|()| {
                std::fs::write(
                    dir.join("qualification.html"),
                    output::render(&q, &identity),
                )
            })
            .map_err(|e| RigError::io(format!("write report {}", dir.display()), e))?;
        println!("report: {}", dir.join("qualification.html").display());
    }
    println!("wall time {:.1} s", total.as_secs_f64());
    let passed = q.passed();
    drop(q);
    if let Ok(rig) = Arc::try_unwrap(rig) {
        rig.shutdown().await;
    }
    Ok(passed)
}
