//! The serial log with what changes from run to run redacted, for `insta` snapshots and
//! the report: uptimes, addresses and ports, heap figures, the synced epoch and the
//! handshake time. What remains is the device's behaviour: which lines, in which order,
//! with which fields.

use firmware_core::log::Line;

use crate::serial::{SerialLine, SerialText};

/// Fields whose values differ between runs: time, addresses, ports, randomness, and
/// certificate sizes (an ECDSA signature's DER length varies by a byte or two).
const REDACTED_FIELDS: [&str; 8] = [
    "epoch",
    "handshake_ms",
    "ip",
    "endpoint",
    "delay_ms",
    "ntp",
    "cert",
    "ca",
];

/// Tags whose every field is a run-dependent figure.
const REDACTED_TAGS: [&str; 1] = ["heap"];

/// One normalised line: `I boot: firmware=0.1.0 board=virtual client_id=hil-boot`.
pub fn normalise_line(line: &Line) -> String {
    let mut out = format!("{} {}:", line.level.letter(), line.tag());
    if !line.message().is_empty() {
        out.push(' ');
        out.push_str(line.message());
    }
    for (key, value) in line.fields() {
        out.push(' ');
        out.push_str(key);
        out.push('=');
        if REDACTED_TAGS.contains(&line.tag()) || REDACTED_FIELDS.contains(&key) {
            out.push_str(&redacted(key, value));
        } else {
            out.push_str(value);
        }
    }
    if let Some(payload) = line.payload() {
        out.push_str(" payload=");
        out.push_str(payload);
    }
    out
}

/// `[key]`, keeping a host name but not its port (`localhost:[port]`).
fn redacted(key: &str, value: &str) -> String {
    match value.rsplit_once(':') {
        Some((host, port))
            if port.chars().all(|c| c.is_ascii_digit())
                && !host.chars().all(|c| c.is_ascii_digit() || c == '.') =>
        {
            format!("{host}:[port]")
        }
        _ => format!("[{key}]"),
    }
}

/// The whole log, one normalised line each; unparsed text is kept, marked with `?`.
pub fn normalise(lines: &[SerialLine]) -> String {
    let mut out = String::new();
    for line in lines {
        match &line.text {
            SerialText::Line(line) => out.push_str(&normalise_line(line)),
            SerialText::Unparsed(text) => {
                out.push_str("? ");
                out.push_str(text);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(text: &str) -> String {
        normalise_line(&text.parse().unwrap())
    }

    #[test]
    fn run_dependent_figures_are_redacted_and_behaviour_kept() {
        assert_eq!(
            norm(
                "I (    2900) mqtt: connected endpoint=localhost:40123 session=new handshake_ms=38"
            ),
            "I mqtt: connected endpoint=localhost:[port] session=new handshake_ms=[handshake_ms]"
        );
        assert_eq!(
            norm("I (    1310) time: synced epoch=1795000000"),
            "I time: synced epoch=[epoch]"
        );
        assert_eq!(
            norm("I (   12000) heap: free=41234 min_free=39000"),
            "I heap: free=[free] min_free=[min_free]"
        );
        assert_eq!(
            norm("I (    5100) inbound: topic=inTopic bytes=5 payload=hello there"),
            "I inbound: topic=inTopic bytes=5 payload=hello there"
        );
    }
}
