//! Which log lines a board's firmware can print: the Rust firmware's (and the adapted
//! ESP8266 sketch's, translated line for line), or the original tutorial sketch's few.
//! Backends say which they speak; scenarios say which lines they need.

/// Which log lines a board's firmware can print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vocabulary {
    /// The Rust firmware's, and the adapted ESP8266 sketch's (translated line for line).
    Firmware,
    /// The original tutorial's ESP8266 sketch: WiFi, credentials, connection attempts,
    /// publishes and inbound messages, nothing else.
    TutorialSketch,
}

impl Vocabulary {
    /// Why `line` (`tag: message`, or `tag:` for any message) never appears in this
    /// vocabulary, if it does not.
    pub fn cannot_show(self, line: &str) -> Option<&'static str> {
        if self == Self::Firmware {
            return None;
        }
        let tag = line.split(':').next().unwrap_or(line);
        match (tag, line) {
            ("boot", _) => Some("the tutorial's sketch prints no banner (version, client id)"),
            ("config", _) => {
                Some("the tutorial's sketch has its settings compiled in and prints none")
            }
            ("time", _) => Some(
                "the tutorial's sketch sets its clock with NTPClient (pool.ntp.org) and prints nothing about it",
            ),
            (_, "mqtt: disconnected") => Some(
                "the tutorial's sketch prints nothing when its connection drops (only its next `Attempting MQTT connection...`)",
            ),
            (_, "mqtt: subscribed") => Some("the tutorial's sketch subscribes without a word"),
            _ => None,
        }
    }

    /// Why a scenario that needs the log lines `needs_lines` cannot be judged on a board
    /// speaking this vocabulary.
    pub fn skip_reason(self, needs_lines: &[&str]) -> Option<String> {
        needs_lines.iter().find_map(|line| {
            self.cannot_show(line)
                .map(|why| format!("needs `{line}`, and {why}"))
        })
    }
}
