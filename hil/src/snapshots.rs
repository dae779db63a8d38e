//! The serial-log snapshots in the daily loop: `hil run --snapshots DIR` compares the
//! normalised logs of `boot`, `cadence` and `inbound` with the `insta` snapshots that
//! `cargo test -p hil` checks (`hil/tests/snapshots/suite__NAME.snap`), reports every
//! mismatch with a diff, and leaves each new log as `suite__NAME.snap.new` beside it, in
//! insta's own pending format, so `cargo insta review` shows and accepts them.
//! `--update-snapshots` writes the new logs straight into the `.snap` files instead.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use crate::normalise::normalise;
use crate::runner::ScenarioReport;

/// The scenarios whose serial log is a snapshot, as in `tests/suite.rs`.
pub const SNAPSHOT_SCENARIOS: [&str; 3] = ["boot", "cadence", "inbound"];

/// The header of a snapshot this tool writes when there is none to copy.
const DEFAULT_HEADER: &str = "---\nsource: hil/tests/suite.rs\nexpression: \"normalise(&report(&reports, name).log)\"\n---\n";

/// `DIR/suite__NAME.snap`.
pub fn snapshot_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("suite__{name}.snap"))
}

/// A snapshot file split into its header (up to and including the second `---` line)
/// and its content.
fn split(text: &str) -> (&str, &str) {
    let mut dashes = 0;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        at += line.len();
        if line.trim_end() == "---" {
            dashes += 1;
            if dashes == 2 {
                return (&text[..at], &text[at..]);
            }
        }
    }
    ("", text)
}

/// What differs between a snapshot and this run's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub name: String,
    pub path: PathBuf,
    /// `-` lines only in the snapshot, `+` lines only in this run, in order.
    pub diff: String,
    /// No snapshot existed.
    pub new: bool,
}

/// Compare every snapshot scenario that ran (and passed) with its snapshot in `dir`.
/// With `update`, write the new content into the `.snap` files; without, write each
/// mismatching one as `.snap.new` for `cargo insta review`.
pub fn check(dir: &Path, reports: &[ScenarioReport], update: bool) -> io::Result<Vec<Mismatch>> {
    let mut mismatches = Vec::new();
    for r in reports
        .iter()
        .filter(|r| SNAPSHOT_SCENARIOS.contains(&r.name) && r.passed() && r.skipped.is_none())
    {
        let path = snapshot_path(dir, r.name);
        let content = normalise(&r.log);
        let existing = std::fs::read_to_string(&path).ok();
        let (header, old) = existing.as_deref().map_or((DEFAULT_HEADER, ""), split);
        let header = if header.is_empty() {
            DEFAULT_HEADER
        } else {
            header
        };
        if existing.is_some() && old.trim_end() == content.trim_end() {
            continue;
        }
        let body = format!("{header}{}\n", content.trim_end());
        if update {
            std::fs::write(&path, body)?;
        } else {
            std::fs::write(path.with_extension("snap.new"), body)?;
        }
        mismatches.push(Mismatch {
            name: r.name.to_string(),
            diff: diff(old, &content),
            new: existing.is_none(),
            path,
        });
    }
    Ok(mismatches)
}

/// A line diff (longest common subsequence): `-` removed, `+` added, `  ` kept lines only
/// around changes.
pub fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lcs[i][j]: longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            let _ = writeln!(out, "+ {}", b[j]);
            j += 1;
        } else {
            let _ = writeln!(out, "- {}", a[i]);
            i += 1;
        }
    }
    out
}

/// What to tell the person: every mismatch, and how to review or accept them.
pub fn describe(mismatches: &[Mismatch], updated: bool) -> String {
    let mut out = String::new();
    for m in mismatches {
        let what = if m.new {
            "new snapshot"
        } else {
            "snapshot differs"
        };
        let _ = writeln!(out, "{what}: {} ({})", m.name, m.path.display());
        out.push_str(&m.diff);
    }
    if updated {
        let _ = writeln!(
            out,
            "updated {} snapshot(s); commit them with the change",
            mismatches.len()
        );
    } else {
        let _ = writeln!(
            out,
            "{} snapshot(s) differ; review with `cargo insta review` (the new logs are in \
             the .snap.new files), or accept all with `make snapshots`",
            mismatches.len()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime};

    use super::*;
    use crate::serial::{SerialLine, SerialText};

    fn report(name: &'static str, lines: &[&str]) -> ScenarioReport {
        let log: Vec<SerialLine> = lines
            .iter()
            .map(|l| SerialLine {
                at: Instant::now(),
                wall: SystemTime::UNIX_EPOCH,
                text: SerialText::Line(Box::new(l.parse().unwrap())),
                said: None,
            })
            .collect();
        ScenarioReport {
            name,
            tolerance: "",
            result: Ok("ok".into()),
            duration: Duration::ZERO,
            log: log.clone(),
            full_log: log,
            skipped: None,
            broker_publishes: Vec::new(),
            broker_replays: Vec::new(),
        }
    }

    #[test]
    fn every_mismatch_is_reported_and_left_for_insta_review() {
        let dir = tempfile::tempdir().unwrap();
        let header = "---\nsource: hil/tests/suite.rs\nassertion_line: 54\nexpression: x\n---\n";
        std::fs::write(
            snapshot_path(dir.path(), "boot"),
            format!("{header}I boot: firmware=0.1.0\n"),
        )
        .unwrap();
        std::fs::write(
            snapshot_path(dir.path(), "cadence"),
            format!("{header}I publish: seq=1\n"),
        )
        .unwrap();
        let reports = [
            report("boot", &["I (     1) boot: firmware=0.1.0"]),
            report("cadence", &["I (     2) publish: seq=2"]),
            report("inbound", &["I (     3) inbound: topic=t"]),
        ];
        let found = check(dir.path(), &reports, false).unwrap();
        let names: Vec<&str> = found.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["cadence", "inbound"]);
        assert_eq!(found[0].diff, "+ I publish: seq=2\n- I publish: seq=1\n");
        assert!(found[1].new);
        // The pending file keeps the snapshot's header, as insta wants it.
        let pending = std::fs::read_to_string(dir.path().join("suite__cadence.snap.new")).unwrap();
        assert_eq!(pending, format!("{header}I publish: seq=2\n"));
        assert!(describe(&found, false).contains("cargo insta review"));
        // Updating writes them in place; then nothing differs.
        check(dir.path(), &reports, true).unwrap();
        assert!(check(dir.path(), &reports, false).unwrap().is_empty());
    }

    #[test]
    fn the_diff_keeps_order_and_marks_both_sides() {
        assert_eq!(diff("a\nb\nc\n", "a\nx\nc\n"), "+ x\n- b\n");
        assert_eq!(diff("", "a\n"), "+ a\n");
        assert_eq!(diff("a\n", ""), "- a\n");
        assert_eq!(diff("a\nb\n", "a\nb\n"), "");
    }
}
