//! What people look at after a run: the summary table, JUnit XML for CI, and a report
//! folder with each scenario's serial log (as captured and normalised) and one
//! self-contained HTML page ([`html`]).

pub mod html;

use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::SetupError;
use crate::normalise::normalise;
use crate::runner::ScenarioReport;

/// What a run was: when, of which commit, on what, against what. Printed at the top of
/// the HTML report and carried by the JUnit suite, so a report stands on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    /// When the run started.
    pub started: SystemTime,
    /// `git rev-parse --short HEAD` where the rig ran, if it is a checkout.
    pub commit: Option<String>,
    pub board: String,
    pub target: String,
    /// The machine the rig ran on.
    pub host: String,
    /// The device's own `boot: firmware=` (the first seen), if any scenario booted it.
    pub firmware: Option<String>,
}

impl RunInfo {
    /// The run started at `started` on `board` against `target`; the rest is looked up
    /// here (commit, host) or read from the reports (firmware).
    pub fn collect(
        started: SystemTime,
        board: &str,
        target: &str,
        reports: &[ScenarioReport],
    ) -> Self {
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into());
        let firmware = reports
            .iter()
            .flat_map(|r| &r.full_log)
            .filter_map(|l| l.line())
            .find(|l| l.tag() == "boot")
            .and_then(|l| l.field("firmware").map(str::to_string));
        Self {
            started,
            commit,
            board: board.into(),
            target: target.into(),
            host,
            firmware,
        }
    }

    /// One line: `2026-12-04T03:45:10Z · commit 1a2b3c4 · board virtual · ...`.
    pub fn describe(&self) -> String {
        format!(
            "{} · commit {} · board {} · target {} · host {} · firmware {}",
            rfc3339(self.started),
            self.commit.as_deref().unwrap_or("unknown"),
            self.board,
            self.target,
            self.host,
            self.firmware.as_deref().unwrap_or("unknown"),
        )
    }
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ` (UTC), as JUnit's `timestamp` wants it.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The summary table: scenario, result, key figure (or the first line of the failure),
/// duration.
/// Widest key figure the table shows; a longer one is cut with `…` (the progress lines,
/// JUnit and the HTML report carry it whole).
pub const FIGURE_WIDTH: usize = 96;

/// `text` cut to `width` characters, the cut marked with `…`.
fn clip(text: String, width: usize) -> String {
    if text.chars().count() <= width {
        return text;
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

pub fn summary_table(reports: &[ScenarioReport]) -> String {
    let rows: Vec<[String; 4]> = reports
        .iter()
        .map(|r| {
            let (result, figure) = match (&r.skipped, &r.result) {
                (Some(why), _) => ("skip".to_string(), why.clone()),
                (None, Ok(figure)) => ("pass".to_string(), figure.clone()),
                (None, Err(failed)) => (failed.label(), failed.headline().to_string()),
            };
            [
                r.name.to_string(),
                result,
                clip(figure, FIGURE_WIDTH),
                format!("{:.1} s", r.duration.as_secs_f64()),
            ]
        })
        .collect();
    let header = ["scenario", "result", "key figure", "duration"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

/// Escape for XML (and HTML) text and attribute values.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML when the suite could not run at all: one `setup` test case with the error
/// (typed `rig` or `backend`), so CI shows why instead of a missing file.
pub fn junit_setup_error(info: &RunInfo, error: &SetupError) -> String {
    let error_text = error.to_string();
    let suite = xml_escape(&format!("hil.{}", info.board));
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <testsuites name=\"hil\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\" time=\"0.000\">\n\
         \x20 <testsuite name=\"{suite}\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\" time=\"0.000\" timestamp=\"{ts}\" hostname=\"{host}\">\n\
         \x20   <testcase classname=\"{suite}\" name=\"setup\" time=\"0.000\">\n\
         \x20     <error message=\"{msg}\" type=\"{fault}\">{body}</error>\n\
         \x20   </testcase>\n\
         \x20 </testsuite>\n\
         </testsuites>\n",
        ts = rfc3339(info.started),
        host = xml_escape(&info.host),
        msg = xml_escape(error_text.lines().next().unwrap_or_default()),
        body = xml_escape(&error_text),
        fault = error.fault(),
    )
}

/// JUnit XML: one suite `hil.<board>`, one test case per scenario, the failure message
/// and the normalised serial log of each. A scenario the device failed is a `<failure>`,
/// one the rig or backend broke an `<error>`, each typed with its
/// [`Fault`](crate::error::Fault).
pub fn junit_xml(info: &RunInfo, reports: &[ScenarioReport], total: Duration) -> String {
    let board = info.board.as_str();
    let faults = |device: bool| {
        reports
            .iter()
            .filter(|r| matches!(&r.result, Err(f) if f.fault.is_device() == device))
            .count()
    };
    let (failures, errors) = (faults(true), faults(false));
    let skipped = reports.iter().filter(|r| r.skipped.is_some()).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let suite = xml_escape(&format!("hil.{board}"));
    let _ = writeln!(
        out,
        "<testsuites name=\"hil\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{:.3}\">",
        reports.len(),
        total.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{suite}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{:.3}\" timestamp=\"{}\" hostname=\"{}\">",
        reports.len(),
        total.as_secs_f64(),
        rfc3339(info.started),
        xml_escape(&info.host),
    );
    let _ = writeln!(
        out,
        "    <properties><property name=\"run\" value=\"{}\"/></properties>",
        xml_escape(&info.describe())
    );
    for r in reports {
        let _ = writeln!(
            out,
            "    <testcase classname=\"{suite}\" name=\"{}\" time=\"{:.3}\">",
            xml_escape(r.name),
            r.duration.as_secs_f64()
        );
        match (&r.skipped, &r.result) {
            (Some(why), _) => {
                let _ = writeln!(out, "      <skipped message=\"{}\"/>", xml_escape(why));
            }
            (None, Ok(figure)) => {
                let _ = writeln!(
                    out,
                    "      <properties><property name=\"key_figure\" value=\"{}\"/><property name=\"tolerance\" value=\"{}\"/></properties>",
                    xml_escape(figure),
                    xml_escape(r.tolerance)
                );
            }
            (None, Err(failed)) => {
                let element = if failed.fault.is_device() {
                    "failure"
                } else {
                    "error"
                };
                let _ = writeln!(
                    out,
                    "      <{element} message=\"{}\" type=\"{}\">{}</{element}>",
                    xml_escape(failed.headline()),
                    failed.fault,
                    xml_escape(&format!("{failed}\n\ntolerance: {}", r.tolerance))
                );
            }
        }
        // The key figure first: GitHub and GitLab show system-out, not properties.
        let head = match (&r.skipped, &r.result) {
            (Some(why), _) => format!("skipped: {why}"),
            (None, Ok(figure)) => format!("pass: {figure}"),
            (None, Err(failed)) => format!("{}: {}", failed.label(), failed.headline()),
        };
        let _ = writeln!(
            out,
            "      <system-out>{}</system-out>",
            xml_escape(&format!("{head}\n\n{}", normalise(&r.full_log)))
        );
        let _ = writeln!(out, "    </testcase>");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// `DIR/index.html` (see [`html`]), `DIR/summary.txt`, and per scenario
/// `DIR/<name>/serial.log` (as captured, with host timestamps relative to the first line)
/// and `DIR/<name>/serial.normalised.log`.
/// Scenario folders of an earlier run into the same `DIR` that this run did not write
/// (they hold a `result.txt`) are removed, so the folder never mixes two runs.
pub fn write_report_dir(
    dir: &Path,
    reports: &[ScenarioReport],
    summary: &str,
    info: &RunInfo,
) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.join("result.txt").is_file() && !reports.iter().any(|r| r.name == name) {
            std::fs::remove_dir_all(&path)?;
        }
    }
    std::fs::write(dir.join("summary.txt"), summary)?;
    std::fs::write(dir.join("index.html"), html::render(reports, info))?;
    for r in reports {
        let folder = dir.join(r.name);
        std::fs::create_dir_all(&folder)?;
        let mut raw = String::new();
        if let Some(first) = r.full_log.first() {
            for line in &r.full_log {
                let at = line.at.duration_since(first.at).as_secs_f64();
                let _ = writeln!(raw, "+{at:9.3}s {}", line.text);
            }
        }
        std::fs::write(folder.join("serial.log"), raw)?;
        std::fs::write(folder.join("serial.normalised.log"), normalise(&r.full_log))?;
        let result = match &r.result {
            Ok(figure) => format!("pass: {figure}\n"),
            Err(failed) => format!("{}: {failed}\n", failed.label()),
        };
        std::fs::write(folder.join("result.txt"), result)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Failed, Fault, RigError};

    fn report(name: &'static str, result: Result<String, Failed>) -> ScenarioReport {
        ScenarioReport {
            name,
            tolerance: "2000 +- 150 ms",
            result,
            duration: Duration::from_millis(1500),
            log: Vec::new(),
            full_log: Vec::new(),
            broker_publishes: Vec::new(),
            broker_replays: Vec::new(),
            skipped: None,
        }
    }

    #[test]
    fn the_table_has_one_row_per_scenario_with_the_first_line_of_a_failure() {
        let table = summary_table(&[
            report("boot", Ok("subscribed after 20 ms".into())),
            report(
                "cadence",
                Err(Failed::check("expected 2000 ms, saw 3001 ms\nlast lines")),
            ),
        ]);
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 3, "{table}");
        assert!(rows[0].starts_with("scenario"), "{table}");
        assert!(
            rows[1].contains("pass") && rows[1].ends_with("1.5 s"),
            "{table}"
        );
        assert!(
            rows[2].contains("FAIL")
                && rows[2].contains("saw 3001 ms")
                && !table.contains("last lines"),
            "{table}"
        );
    }

    #[test]
    fn a_long_key_figure_is_cut_in_the_table_and_the_columns_stay_aligned() {
        let long = format!("backed off {}", "#1 323 ms, ".repeat(20));
        let table = summary_table(&[
            report("duplicate-id", Ok(long.clone())),
            report("boot", Ok("subscribed after 20 ms ±0".into())),
        ]);
        let rows: Vec<&str> = table.lines().collect();
        assert!(rows[1].contains('…') && !rows[1].contains(&long), "{table}");
        let duration_at = |row: &str| row.chars().count() - "1.5 s".len();
        assert_eq!(duration_at(rows[1]), duration_at(rows[2]), "{table}");
        assert!(
            rows[1].chars().count() < FIGURE_WIDTH + 40,
            "{}",
            rows[1].len()
        );
    }

    #[test]
    fn skipped_scenarios_show_as_skipped_with_the_reason_and_do_not_fail() {
        let scenario = crate::scenarios::all()
            .into_iter()
            .find(|s| s.name == "tls-expired")
            .unwrap();
        let reports = [
            report("boot", Ok("subscribed after 20 ms".into())),
            ScenarioReport::skipped(&scenario, "needs the mock broker's faults"),
        ];
        let table = summary_table(&reports);
        let row = table.lines().nth(2).unwrap();
        assert!(
            row.starts_with("tls-expired")
                && row.contains("skip")
                && row.contains("needs the mock broker's faults"),
            "{table}"
        );
        let xml = junit_xml(&info(), &reports, Duration::from_secs(2));
        assert!(
            xml.contains(r#"tests="2" failures="0" errors="0" skipped="1""#)
                && xml.contains(r#"<skipped message="needs the mock broker&apos;s faults"/>"#),
            "{xml}"
        );
        assert!(reports.iter().all(ScenarioReport::passed));
    }

    #[test]
    fn the_report_folder_has_the_html_page_next_to_the_logs() {
        let dir = tempfile::tempdir().unwrap();
        let reports = [report("cadence", Err(Failed::check("saw <3001> ms")))];
        std::fs::create_dir_all(dir.path().join("old-scenario")).unwrap();
        std::fs::write(dir.path().join("old-scenario/result.txt"), "pass").unwrap();
        std::fs::create_dir_all(dir.path().join("notes")).unwrap();
        write_report_dir(dir.path(), &reports, "table", &info()).unwrap();
        // A stale scenario folder goes; a folder the rig did not write stays.
        assert!(!dir.path().join("old-scenario").exists());
        assert!(dir.path().join("notes").is_dir());
        let page = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
        assert!(page.contains(&info().describe()), "{page}");
        assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
        assert!(page.contains("saw &lt;3001&gt; ms"), "{page}");
        assert!(dir.path().join("cadence/serial.log").is_file());
    }

    #[test]
    fn junit_escapes_what_it_carries_and_counts_failures() {
        let xml = junit_xml(
            &info(),
            &[report("inbound", Err(Failed::check("saw <\"&'\u{1b}>")))],
            Duration::from_secs(2),
        );
        assert!(xml.contains(r#"tests="1" failures="1""#), "{xml}");
        assert!(
            xml.contains(r#"message="saw &lt;&quot;&amp;&apos;\x1b&gt;""#),
            "{xml}"
        );
    }

    #[test]
    fn a_broken_rig_is_an_error_and_a_failing_device_a_failure() {
        let rig = Failed {
            fault: Fault::Rig,
            message: "mock broker: cannot listen on 127.0.0.1:1".into(),
        };
        let reports = [
            report(
                "cadence",
                Err(Failed::check("expected 2000 ms, saw 3001 ms")),
            ),
            report("reconnect", Err(rig)),
        ];
        let xml = junit_xml(&info(), &reports, Duration::from_secs(2));
        assert!(xml.contains(r#"failures="1" errors="1""#), "{xml}");
        assert!(
            xml.contains(r#"<failure message="expected 2000 ms, saw 3001 ms" type="check">"#)
                && xml.contains(
                    r#"<error message="mock broker: cannot listen on 127.0.0.1:1" type="rig">"#
                ),
            "{xml}"
        );
        let table = summary_table(&reports);
        assert!(
            table.lines().nth(1).unwrap().contains("FAIL")
                && table.lines().nth(2).unwrap().contains("ERROR (rig)"),
            "{table}"
        );
    }

    fn info() -> RunInfo {
        RunInfo {
            started: UNIX_EPOCH + Duration::from_secs(1_795_000_000),
            commit: Some("1a2b3c4".into()),
            board: "virtual".into(),
            target: "mock".into(),
            host: "bench-1".into(),
            firmware: Some("0.1.0".into()),
        }
    }

    #[test]
    fn dates_are_utc_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_000_000)),
            "2026-11-18T11:06:40Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn junit_says_when_where_and_the_key_figure_where_ci_shows_it() {
        let xml = junit_xml(
            &info(),
            &[report("cadence", Ok("10 intervals".into()))],
            Duration::from_secs(2),
        );
        assert!(
            xml.contains(r#"timestamp="2026-11-18T11:06:40Z" hostname="bench-1""#),
            "{xml}"
        );
        assert!(xml.contains("<system-out>pass: 10 intervals"), "{xml}");
        assert!(
            xml.contains("commit 1a2b3c4 · board virtual · target mock"),
            "{xml}"
        );
    }

    #[test]
    fn a_suite_that_cannot_start_still_writes_junit_with_the_error() {
        let error = SetupError::Rig(RigError::DeviceBinary(
            "no virtual-device binary\nbuild it first".into(),
        ));
        let xml = junit_setup_error(&info(), &error);
        assert!(xml.contains(r#"errors="1""#), "{xml}");
        assert!(
            xml.contains(r#"<error message="no virtual-device binary" type="rig">"#),
            "{xml}"
        );
        assert!(xml.contains("build it first</error>"), "{xml}");
    }
}
