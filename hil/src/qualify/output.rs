//! The qualification's outputs: the summary table, JUnit (one testcase per Device Advisor
//! case) and the qualification page of the HTML report.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use super::{CaseResult, Qualification, Verdict};
use crate::report::html::{STYLE, escape, timeline, timeline_svg};
use crate::report::{rfc3339, xml_escape};

/// Who was qualified: what the page's header says about the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub board: String,
    pub target: String,
    /// The client id, or how the rig names its devices.
    pub client_id: String,
    /// `boot: firmware=` as the device printed it.
    pub firmware: Option<String>,
    /// SHA-256 of the device certificate (or of the CA that issued the rig's).
    pub certificate: String,
    pub started: SystemTime,
    pub commit: Option<String>,
}

/// The device's firmware version from the first `boot:` line in the reports.
pub fn firmware_of(q: &Qualification) -> Option<String> {
    q.reports
        .iter()
        .flat_map(|r| r.full_log.iter())
        .filter_map(|l| l.line())
        .find(|l| l.tag() == "boot")
        .and_then(|l| l.field("firmware").map(str::to_string))
}

const EVIDENCE_WIDTH: usize = 110;

fn clip(text: &str, width: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= width {
        return line.to_string();
    }
    let cut: String = line.chars().take(width - 1).collect();
    format!("{cut}…")
}

/// The summary: one row per case with its verdict, evidence and wall time; a last line
/// with the counts.
pub fn summary_table(results: &[CaseResult]) -> String {
    let width = results
        .iter()
        .map(|r| r.case.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<width$}  {:<18}  {:>7}  evidence\n",
        "case", "verdict", "time"
    );
    for r in results {
        let _ = writeln!(
            out,
            "{:<width$}  {:<18}  {:>6.1}s  {}",
            r.case.name,
            r.judgement.verdict.to_string(),
            r.duration.as_secs_f64(),
            clip(&r.judgement.evidence, EVIDENCE_WIDTH)
        );
    }
    let count = |v: Verdict| results.iter().filter(|r| r.judgement.verdict == v).count();
    let _ = writeln!(
        out,
        "{} case(s): {} pass, {} pass with warnings, {} fail, {} not run",
        results.len(),
        count(Verdict::Pass),
        count(Verdict::PassWithWarnings),
        count(Verdict::Fail),
        count(Verdict::NotRun)
    );
    out
}

/// JUnit XML: one testcase per case (`classname` Device Advisor's category). Fail is a
/// failure, not run is skipped, a warning is written to the testcase's output.
pub fn junit_xml(results: &[CaseResult], identity: &DeviceIdentity, total: Duration) -> String {
    let count = |v: Verdict| results.iter().filter(|r| r.judgement.verdict == v).count();
    let (failures, skipped) = (count(Verdict::Fail), count(Verdict::NotRun));
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"hil qualify\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\">",
        results.len(),
        total.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"device-advisor.{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\" timestamp=\"{}\">",
        xml_escape(&identity.board),
        results.len(),
        total.as_secs_f64(),
        rfc3339(identity.started)
    );
    for r in results {
        let class = format!("device-advisor.{}", r.case.category.name());
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            xml_escape(&class),
            xml_escape(r.case.name),
            r.duration.as_secs_f64()
        );
        let evidence = xml_escape(&r.judgement.evidence);
        match r.judgement.verdict {
            Verdict::Pass => {
                let _ = writeln!(
                    out,
                    ">\n      <system-out>pass: {evidence}</system-out>\n    </testcase>"
                );
            }
            Verdict::PassWithWarnings => {
                let _ = writeln!(
                    out,
                    ">\n      <system-out>pass with warnings: {evidence}</system-out>\n    </testcase>"
                );
            }
            Verdict::Fail => {
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{}\">{evidence}\nrule: {}</failure>\n    </testcase>",
                    xml_escape(&clip(&r.judgement.evidence, 200)),
                    xml_escape(r.case.rule)
                );
            }
            Verdict::NotRun => {
                let _ = writeln!(
                    out,
                    ">\n      <skipped message=\"{evidence}\"/>\n    </testcase>"
                );
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::PassWithWarnings => "warn",
        Verdict::Fail => "fail",
        Verdict::NotRun => "skip",
    }
}

/// Cases whose page shows the connects/disconnects timeline.
const TIMELINE_CASES: &[&str] = &[
    "MQTT_Connect_Jitter_Backoff_Retries",
    "MQTT_Connect_Exponential_Backoff_Retries",
    "MQTT_Reconnect_Backoff_Retries_On_Server_Disconnect",
    "MQTT_Reconnect_Backoff_Retries_On_Unstable_Connection",
];

/// The qualification page (`qualification.html`): the device's identity and the date,
/// then each case with its verdict, rule and evidence, and for the backoff cases the
/// timeline of connects, disconnects and backoffs from the device's log.
pub fn render(q: &Qualification, identity: &DeviceIdentity) -> String {
    let mut page =
        String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    page.push_str("<title>Device Advisor qualification (offline)</title>\n<style>");
    page.push_str(STYLE);
    page.push_str(
        ".warn{color:#b36b00;font-weight:bold}\npre.evidence{white-space:pre-wrap}\ntd.time{white-space:nowrap}\n</style>\n</head>\n<body>\n",
    );
    page.push_str("<h1>Device Advisor qualification, offline</h1>\n");
    let _ = writeln!(
        page,
        "<table>\n<tr><th>client id</th><td>{}</td></tr>\n<tr><th>firmware</th><td>{}</td></tr>\n\
         <tr><th>certificate</th><td>{}</td></tr>\n<tr><th>board, target</th><td>{}, {}</td></tr>\n\
         <tr><th>date</th><td>{}</td></tr>\n<tr><th>rig commit</th><td>{}</td></tr>\n</table>",
        escape(&identity.client_id),
        escape(identity.firmware.as_deref().unwrap_or("(no boot line)")),
        escape(&identity.certificate),
        escape(&identity.board),
        escape(&identity.target),
        escape(&rfc3339(identity.started)),
        escape(identity.commit.as_deref().unwrap_or("(not a checkout)")),
    );
    let count = |v: Verdict| {
        q.results
            .iter()
            .filter(|r| r.judgement.verdict == v)
            .count()
    };
    let _ = writeln!(
        page,
        "<p>{} case(s): {} pass, {} pass with warnings, {} fail, {} not run.</p>",
        q.results.len(),
        count(Verdict::Pass),
        count(Verdict::PassWithWarnings),
        count(Verdict::Fail),
        count(Verdict::NotRun)
    );
    page.push_str(
        "<table>\n<tr><th>case</th><th>verdict</th><th>evidence</th><th>time</th></tr>\n",
    );
    for r in &q.results {
        let _ = writeln!(
            page,
            "<tr><td><a href=\"#{id}\">{id}</a></td><td class=\"{class}\">{verdict}</td><td>{evidence}</td><td class=\"time\">{secs:.1} s</td></tr>",
            id = escape(r.case.name),
            class = verdict_class(r.judgement.verdict),
            verdict = r.judgement.verdict,
            evidence = escape(&clip(&r.judgement.evidence, 160)),
            secs = r.duration.as_secs_f64(),
        );
    }
    page.push_str("</table>\n");
    for r in &q.results {
        let _ = writeln!(
            page,
            "<h2 id=\"{id}\">{id} <span class=\"{class}\">{verdict}</span></h2>\n\
             <p class=\"note\">{category}. Scenarios: {scenarios}. Details and serial logs: \
             <a href=\"index.html\">the run's report</a>.</p>\n<p><b>Rule:</b> {rule}</p>\n\
             <pre class=\"evidence\">{evidence}</pre>",
            id = escape(r.case.name),
            class = verdict_class(r.judgement.verdict),
            verdict = r.judgement.verdict,
            category = escape(r.case.category.name()),
            scenarios = escape(&match r.case.scenarios() {
                [] => "none (the policy document)".to_string(),
                names => names.join(", "),
            }),
            rule = escape(r.case.rule),
            // One finding per line: the cipher-suite and long-duration cases list many.
            evidence = escape(&r.judgement.evidence.replace("; ", ";\n")),
        );
        if TIMELINE_CASES.contains(&r.case.name) {
            for name in r.case.scenarios() {
                let Some(report) = q.reports.iter().find(|rep| rep.name == *name) else {
                    continue;
                };
                let events = timeline(&report.full_log);
                if events.is_empty() {
                    continue;
                }
                let span = match (report.full_log.first(), report.full_log.last()) {
                    (Some(a), Some(b)) => b.at.saturating_duration_since(a.at),
                    _ => Duration::ZERO,
                };
                let _ = writeln!(
                    page,
                    "<p class=\"note\">Timeline of {} (● green connected, ● orange disconnected, grey bar backoff, ○ red connect failed):</p>",
                    escape(name)
                );
                page.push_str(&timeline_svg(&events, span));
                page.push('\n');
            }
        }
    }
    page.push_str("</body>\n</html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qualify::cases::CASES;
    use crate::qualify::{Judgement, Qualification};

    fn results() -> Vec<CaseResult> {
        let verdicts = [
            Verdict::Pass,
            Verdict::PassWithWarnings,
            Verdict::Fail,
            Verdict::NotRun,
        ];
        CASES
            .iter()
            .zip(verdicts.iter().cycle())
            .map(|(case, v)| CaseResult {
                case,
                judgement: Judgement::new(*v, format!("evidence <{}> & more", case.name)),
                duration: Duration::from_millis(1500),
            })
            .collect()
    }

    fn identity() -> DeviceIdentity {
        DeviceIdentity {
            board: "virtual".into(),
            target: "mock".into(),
            client_id: "ESPthing".into(),
            firmware: Some("0.1.0".into()),
            certificate: "ab12".into(),
            started: SystemTime::UNIX_EPOCH,
            commit: None,
        }
    }

    #[test]
    fn junit_has_one_testcase_per_case_with_its_verdict() {
        let xml = junit_xml(&results(), &identity(), Duration::from_secs(100));
        assert_eq!(xml.matches("<testcase ").count(), CASES.len());
        assert!(xml.contains("name=\"TLS_Connect\""));
        assert!(xml.contains("<failure message="));
        assert!(xml.contains("<skipped message="));
        assert!(xml.contains("pass with warnings: evidence &lt;"));
        assert!(!xml.contains("<TLS"), "escaped");
    }

    #[test]
    fn the_table_and_page_show_every_verdict_word() {
        let results = results();
        let table = summary_table(&results);
        for word in ["pass", "pass with warnings", "fail", "not run"] {
            assert!(table.contains(word), "{table}");
        }
        let page = render(
            &Qualification {
                results,
                reports: Vec::new(),
            },
            &identity(),
        );
        assert!(page.contains("<h2 id=\"MQTT_Long_Duration\">"));
        assert!(page.contains("evidence &lt;TLS_Connect&gt; &amp; more"));
        assert!(page.contains("ESPthing"));
    }
}
