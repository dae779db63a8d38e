//! `Line::from_str` on arbitrary input: it must never panic, and whatever it accepts
//! must print back to a line that parses to the same value (and, when the input was in
//! the canonical form, to the very same text).
#![no_main]

use firmware_core::log::Line;
use libfuzzer_sys::fuzz_target;

fn check(text: &str) {
    let Ok(line) = text.parse::<Line>() else {
        return;
    };
    let printed = line.to_string();
    let again: Line = printed
        .parse()
        .unwrap_or_else(|e| panic!("printed form does not parse: {printed:?}: {e}"));
    assert_eq!(again, line, "round trip changed the line: {printed:?}");
    assert_eq!(again.to_string(), printed);
    // The accessors must hold up on anything that parsed.
    let _ = line.payload_bytes().map(|b| b.count());
    for (key, _) in line.fields() {
        let _ = line.field_bytes(key).map(|b| b.count());
    }
    // With the canonical uptime padding, an accepted line prints exactly as it came.
    let stripped = text.strip_suffix('\n').unwrap_or(text);
    let stripped = stripped.strip_suffix('\r').unwrap_or(stripped);
    let canonical_prefix = format!("{} ({:>8}) ", line.level, line.uptime_ms);
    if stripped.starts_with(&canonical_prefix) {
        assert_eq!(printed, stripped);
    }
}

fuzz_target!(|data: &[u8]| {
    match core::str::from_utf8(data) {
        Ok(text) => check(text),
        Err(_) => check(&String::from_utf8_lossy(data)),
    }
});
