//! The core builds without the standard library for the board. The crate attribute keeps
//! `std` out of the build; this keeps it out of the source too: outside the `tests.rs`
//! files that hold the unit tests, no file may name it, so nothing in the firmware's
//! code path leans on it even under `cfg(test)`.

use std::path::{Path, PathBuf};

/// The one line allowed to name it: the crate attribute itself.
const CRATE_ATTRIBUTE: &str = "#![cfg_attr(not(test), no_std)]";

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Whether `line` names `std` as a word (`std::`, `no_std`, `extern crate std`).
fn names_std(line: &str) -> bool {
    line.match_indices("std").any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + 3..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric());
        // `no_std` counts; `testdata` and `stdout`-like words inside others do not.
        (boundary(before) || line[..at].ends_with("no_")) && boundary(after)
    })
}

#[test]
fn std_is_named_only_in_unit_test_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 10, "found only {files:?}");
    let mut offenders = Vec::new();
    for file in files.iter().filter(|f| !f.ends_with("tests.rs")) {
        let text = std::fs::read_to_string(file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            if line.trim() != CRATE_ATTRIBUTE && names_std(line) {
                offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "std outside tests.rs:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_check_sees_every_way_of_naming_it() {
    for named in [
        "use std::vec::Vec;",
        "//! `no_std` crate",
        "extern crate std;",
        "std",
    ] {
        assert!(names_std(named), "{named}");
    }
    for not_named in [
        "include_bytes!(\"testdata/a.der\")",
        "let stdout = 1;",
        "must_d",
    ] {
        assert!(!names_std(not_named), "{not_named}");
    }
}
