//! Device Advisor's test cases, each with the rule this rig applies (Device Advisor's own
//! where AWS publishes it, ours where it does not, saying so) and the scenarios whose
//! results decide it.

use firmware_core::log::Line;

use super::checks;
use super::{Judgement, Verdict};
use crate::runner::ScenarioReport;
use crate::scenarios::backoff::classify::{Class, classify};
use crate::scenarios::is;

/// Device Advisor's test categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Tls,
    Mqtt,
    LongDuration,
    Permissions,
}

impl Category {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tls => "TLS",
            Self::Mqtt => "MQTT",
            Self::LongDuration => "Long duration",
            Self::Permissions => "Permissions and policies",
        }
    }
}

/// What decides a case.
#[derive(Debug)]
pub enum Source {
    /// These scenarios' reports, through `judge`.
    Scenarios {
        names: &'static [&'static str],
        judge: fn(&[&ScenarioReport]) -> Judgement,
    },
    /// The device's policy document.
    Policy,
}

/// One Device Advisor test case.
#[derive(Debug)]
pub struct Case {
    /// Device Advisor's test id.
    pub name: &'static str,
    pub category: Category,
    /// The rule applied: what passes, warns and fails.
    pub rule: &'static str,
    pub source: Source,
}

impl Case {
    /// The scenarios it needs run.
    pub fn scenarios(&self) -> &'static [&'static str] {
        match self.source {
            Source::Scenarios { names, .. } => names,
            Source::Policy => &[],
        }
    }
}

/// Pass if every scenario passed (evidence: their key figures), else fail with the first
/// failure's headline.
pub fn all_passed(reports: &[&ScenarioReport]) -> Judgement {
    if let Some((name, failed)) = reports
        .iter()
        .find_map(|r| r.result.as_ref().err().map(|f| (r.name, f)))
    {
        let why = if reports.len() > 1 {
            format!("{name}: {}", failed.headline())
        } else {
            failed.headline().to_string()
        };
        return Judgement::new(Verdict::Fail, why);
    }
    let figures: Vec<String> = reports
        .iter()
        .map(|r| {
            let figure = r.result.as_deref().unwrap_or_default();
            if reports.len() > 1 {
                format!("{}: {figure}", r.name)
            } else {
                figure.to_string()
            }
        })
        .collect();
    Judgement::new(Verdict::Pass, figures.join("; "))
}

/// The reconnect delays the device announced (`mqtt: backoff delay_ms=`) in each outage
/// after its first connection, an outage ending at the next `mqtt: connected`.
pub fn outages(report: &ScenarioReport) -> Vec<Vec<u64>> {
    let lines: Vec<&Line> = report.full_log.iter().filter_map(|l| l.line()).collect();
    let mut rounds = Vec::new();
    let mut current = Vec::new();
    let mut connected_once = false;
    for line in lines {
        if is(line, "mqtt", "connected") {
            if !current.is_empty() {
                rounds.push(std::mem::take(&mut current));
            }
            connected_once = true;
        } else if connected_once
            && is(line, "mqtt", "backoff")
            && let Some(delay) = line.field_as::<u64>("delay_ms")
        {
            current.push(delay);
        }
    }
    rounds
}

/// The class of each round of withheld CONNACKs, with its delays, or why it could not be
/// judged.
fn round_classes(reports: &[&ScenarioReport]) -> Result<Vec<(Class, String)>, Judgement> {
    let report = reports[0];
    if let Err(failed) = &report.result {
        return Err(Judgement::new(Verdict::Fail, failed.headline()));
    }
    let rounds = outages(report);
    if rounds.len() < checks::ROUNDS {
        return Err(Judgement::new(
            Verdict::Fail,
            format!(
                "expected {} rounds of reconnect delays (`mqtt: backoff`) in the log, saw {}",
                checks::ROUNDS,
                rounds.len()
            ),
        ));
    }
    rounds
        .iter()
        .take(checks::ROUNDS)
        .map(|delays| {
            let shown = delays
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join("/");
            classify(delays, 5)
                .map(|c| (c.class, format!("{c}: {shown} ms")))
                .map_err(|e| Judgement::new(Verdict::Fail, e.to_string()))
        })
        .collect()
}

fn rounds_evidence(classes: &[(Class, String)], figure: &str) -> String {
    let rounds: Vec<String> = classes
        .iter()
        .enumerate()
        .map(|(i, (_, shown))| format!("round {}: {shown}", i + 1))
        .collect();
    format!("{figure}; {}", rounds.join("; "))
}

/// Jitter passes, pure exponential passes with warnings, constant or linear fails.
pub fn jitter_backoff(reports: &[&ScenarioReport]) -> Judgement {
    let classes = match round_classes(reports) {
        Ok(c) => c,
        Err(j) => return j,
    };
    let figure = reports[0].result.as_deref().unwrap_or_default();
    let verdict = if classes
        .iter()
        .any(|(c, _)| matches!(c, Class::Constant | Class::Linear))
    {
        Verdict::Fail
    } else if classes.iter().any(|(c, _)| *c == Class::Exponential) {
        Verdict::PassWithWarnings
    } else {
        Verdict::Pass
    };
    Judgement::new(verdict, rounds_evidence(&classes, figure))
}

/// Exponential growth passes, with or without jitter; constant or linear fails.
pub fn exponential_backoff(reports: &[&ScenarioReport]) -> Judgement {
    let classes = match round_classes(reports) {
        Ok(c) => c,
        Err(j) => return j,
    };
    let figure = reports[0].result.as_deref().unwrap_or_default();
    let verdict = if classes
        .iter()
        .any(|(c, _)| matches!(c, Class::Constant | Class::Linear))
    {
        Verdict::Fail
    } else {
        Verdict::Pass
    };
    Judgement::new(verdict, rounds_evidence(&classes, figure))
}

/// The attempt numbers the device announced after each connection that dropped right
/// after CONNACK must keep counting up: a reset means the backoff trusted a connection
/// that never stayed up.
pub fn backoff_not_reset(reports: &[&ScenarioReport]) -> Judgement {
    let report = reports[0];
    if let Err(failed) = &report.result {
        return Judgement::new(Verdict::Fail, failed.headline());
    }
    let mut attempts: Vec<(u32, u64)> = Vec::new();
    let mut connected_once = false;
    for line in report.full_log.iter().filter_map(|l| l.line()) {
        if is(line, "mqtt", "connected") {
            connected_once = true;
        } else if connected_once
            && is(line, "mqtt", "backoff")
            && let (Some(attempt), Some(delay)) =
                (line.field_as("attempt"), line.field_as("delay_ms"))
        {
            attempts.push((attempt, delay));
        }
    }
    let shown = attempts
        .iter()
        .map(|(a, d)| format!("#{a} {d} ms"))
        .collect::<Vec<_>>()
        .join(", ");
    if attempts.len() < checks::UNSTABLE_DROPS {
        return Judgement::new(
            Verdict::Fail,
            format!(
                "expected a `mqtt: backoff` line after each of the {} drops, saw {}: {shown}",
                checks::UNSTABLE_DROPS,
                attempts.len()
            ),
        );
    }
    if let Some(w) = attempts.windows(2).find(|w| w[1].0 <= w[0].0) {
        return Judgement::new(
            Verdict::Fail,
            format!(
                "the backoff was reset after a connection that dropped right after CONNACK: attempt={} then attempt={}; {shown}",
                w[0].0, w[1].0
            ),
        );
    }
    Judgement::new(
        Verdict::Pass,
        format!("attempts counted up over every drop: {shown}"),
    )
}

macro_rules! scenarios {
    ($($name:literal),+ => $judge:path) => {
        Source::Scenarios {
            names: &[$($name),+],
            judge: $judge,
        }
    };
}

/// Every case, in Device Advisor's order (TLS, MQTT, long duration, permissions).
pub static CASES: &[Case] = &[
    Case {
        name: "TLS_Connect",
        category: Category::Tls,
        rule: "The device completes a TLS handshake with the broker's (trusted, valid) certificate and connects.",
        source: scenarios!("boot" => all_passed),
    },
    Case {
        name: "TLS_Unsecure_Server_Cert",
        category: Category::Tls,
        rule: "A server certificate from a CA the device does not trust: every handshake refused (unknown-ca), never connected.",
        source: scenarios!("tls-untrusted-ca" => all_passed),
    },
    Case {
        name: "TLS_Incorrect_Subject_Name_Server_Cert",
        category: Category::Tls,
        rule: "A trusted certificate for another name (CN and SANs): every handshake refused (name-mismatch).",
        source: scenarios!("tls-wrong-name" => all_passed),
    },
    Case {
        name: "TLS_Expired_Server_Cert",
        category: Category::Tls,
        rule: "A trusted certificate past its notAfter: every handshake refused (certificate-expired).",
        source: scenarios!("tls-expired" => all_passed),
    },
    Case {
        name: "TLS_Large_Size_Server_Cert",
        category: Category::Tls,
        rule: "A server chain over 1.2x the usual size (an extra intermediate): accepted, the device connects and publishes.",
        source: scenarios!("tls-large-chain" => all_passed),
    },
    Case {
        name: "TLS_Receive_Maximum_Size_Fragments",
        category: Category::Tls,
        rule: "The broker writes five 4000-byte messages at once (over 16 KiB: a full 16,384-byte TLS record and the rest); the device logs all five and stays connected. (Device Advisor does not publish how it sends the fragments; this is ours.)",
        source: scenarios!("max-fragments" => all_passed),
    },
    Case {
        name: "TLS_Support_AWS_IoT_Cipher_Suites",
        category: Category::Tls,
        rule: "A broker offers one suite of AWS IoT's TLS 1.3/1.2 policy at a time (TLS 1.2 suites matching the server key); the device must negotiate at least one. The evidence lists each suite's outcome.",
        source: scenarios!("cipher-suites" => all_passed),
    },
    Case {
        name: "MQTT_Connect",
        category: Category::Mqtt,
        rule: "The device sends CONNECT and is connected (CONNACK accepted), then subscribes and publishes.",
        source: scenarios!("boot" => all_passed),
    },
    Case {
        name: "MQTT_Connect_Jitter_Backoff_Retries",
        category: Category::Mqtt,
        rule: "CONNACK withheld from 5 attempts, the 6th let through, twice (12 connects). Each round's announced delays are classified: jitter passes, pure exponential passes with warnings, constant or linear fails.",
        source: scenarios!("connack-withheld" => jitter_backoff),
    },
    Case {
        name: "MQTT_Connect_Exponential_Backoff_Retries",
        category: Category::Mqtt,
        rule: "The same 12 connects: exponential growth passes, with or without jitter; constant or linear fails.",
        source: scenarios!("connack-withheld" => exponential_backoff),
    },
    Case {
        name: "MQTT_Reconnect_Backoff_Retries_On_Server_Disconnect",
        category: Category::Mqtt,
        rule: "The broker disconnects the device five times (kick, then silent drop, alternately): the delays must be jitter within the exponential ceilings, and the broker must see each reconnect when the device said.",
        source: scenarios!("backoff" => all_passed),
    },
    Case {
        name: "MQTT_Reconnect_Backoff_Retries_On_Unstable_Connection",
        category: Category::Mqtt,
        rule: "CONNACK then an immediate drop, six times: the announced attempt number must count up every time (the backoff is not reset by a connection that did not stay up); then the device reconnects.",
        source: scenarios!("unstable-connection" => backoff_not_reset),
    },
    Case {
        name: "MQTT_Publish",
        category: Category::Mqtt,
        rule: "The device publishes to its topic: 10 publishes, every interval at the broker 2000 +- 150 ms (stricter than Device Advisor, which needs one publish).",
        source: scenarios!("cadence" => all_passed),
    },
    Case {
        name: "MQTT_Publish_Retry_No_Puback",
        category: Category::Mqtt,
        rule: "PUBACK withheld: the QoS 1 publish is sent again with the same packet id and DUP, then acknowledged; numbering carries on.",
        source: scenarios!("qos1-retry" => all_passed),
    },
    Case {
        name: "MQTT_Client_Puback_QoS1",
        category: Category::Mqtt,
        rule: "QoS 1 messages of 1 B, 1 KiB and 4 KiB (the device's stated maximum payload) are logged and PUBACKed: the broker holds nothing for the device afterwards.",
        source: scenarios!("qos1-puback" => all_passed),
    },
    Case {
        name: "MQTT_Subscribe",
        category: Category::Mqtt,
        rule: "The device subscribes to its topic (SUBACK granted) and logs what arrives there.",
        source: scenarios!("inbound" => all_passed),
    },
    Case {
        name: "MQTT_Subscribe_Retry_No_Suback",
        category: Category::Mqtt,
        rule: "SUBACK withheld: a second SUBSCRIBE for the same filter within 30 s (on the same or a new connection); once SUBACKs flow, the device publishes.",
        source: scenarios!("suback-withheld" => all_passed),
    },
    Case {
        name: "MQTT_No_Ack_PingResp",
        category: Category::Mqtt,
        rule: "The broker answers nothing (no PUBACK, SUBACK or PINGRESP) on a 30 s keep-alive: the device must find the dead link and disconnect within 1.5x keep-alive, then reconnect.",
        source: scenarios!("dead-link" => all_passed),
    },
    Case {
        name: "MQTT_Persistent_Session_Happy_Case",
        category: Category::Mqtt,
        rule: "Dropped while subscribed; 3 QoS 1 messages queued while away. The device reconnects to its session (session present), sends no SUBSCRIBE, and logs all 3.",
        source: scenarios!("persistent-session" => all_passed),
    },
    Case {
        name: "MQTT_Expired_Persistent_Session",
        category: Category::Mqtt,
        rule: "The broker ends the device's session: on the new session (session present = 0) the device subscribes again, and receives.",
        source: scenarios!("expired-session" => all_passed),
    },
    Case {
        name: "MQTT_Long_Duration",
        category: Category::LongDuration,
        rule: "Shortened: keep-alive (dead link found), reconnect backoff (server disconnects), intermittent connectivity (drops, numbers carry on) and a long server disconnect (attempts spaced >= 1 s, back soon after); durations from --long-outage and --drops.",
        source: scenarios!("dead-link", "backoff", "intermittent", "long-outage" => all_passed),
    },
    Case {
        name: "Security_Device_Policies",
        category: Category::Permissions,
        rule: "The policy attached to the device's certificate grants no iot:* or * action and no wildcard resource beyond policy variables; a wildcard region or account in the ARN passes with warnings.",
        source: Source::Policy,
    },
];

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime};

    use super::*;
    use crate::serial::{SerialLine, SerialText};

    fn report(lines: &[&str]) -> ScenarioReport {
        let base = Instant::now();
        ScenarioReport {
            name: "connack-withheld",
            tolerance: "",
            result: Ok("12 connects".into()),
            duration: Duration::from_secs(1),
            log: Vec::new(),
            full_log: lines
                .iter()
                .enumerate()
                .map(|(i, text)| SerialLine {
                    at: base + Duration::from_millis(i as u64),
                    wall: SystemTime::UNIX_EPOCH,
                    text: SerialText::Line(Box::new(text.parse().unwrap())),
                    said: None,
                })
                .collect(),
            skipped: None,
            broker_publishes: Vec::new(),
            broker_replays: Vec::new(),
        }
    }

    fn rounds(delays: [[u64; 6]; 2]) -> ScenarioReport {
        let mut lines =
            vec!["I (       1) mqtt: connected endpoint=localhost:1 session=new".to_string()];
        for round in delays {
            for (n, d) in round.iter().enumerate() {
                lines.push(format!(
                    "I (       2) mqtt: backoff attempt={} delay_ms={d}",
                    n + 1
                ));
            }
            lines.push("I (       3) mqtt: connected endpoint=localhost:1 session=resumed".into());
        }
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        report(&refs)
    }

    #[test]
    fn jitter_passes_exponential_warns_constant_fails() {
        let jitter = rounds([
            [312, 811, 1740, 950, 6012, 2210],
            [120, 903, 377, 3100, 1544, 9920],
        ]);
        assert_eq!(jitter_backoff(&[&jitter]).verdict, Verdict::Pass);
        assert_eq!(exponential_backoff(&[&jitter]).verdict, Verdict::Pass);

        let exponential = rounds([
            [500, 1000, 2000, 4000, 8000, 16000],
            [500, 1000, 2000, 4000, 8000, 16000],
        ]);
        let j = jitter_backoff(&[&exponential]);
        assert_eq!(j.verdict, Verdict::PassWithWarnings, "{}", j.evidence);
        assert!(
            j.evidence.contains("round 1: exponential"),
            "{}",
            j.evidence
        );
        assert_eq!(exponential_backoff(&[&exponential]).verdict, Verdict::Pass);

        let constant = rounds([[5000; 6], [5000; 6]]);
        let j = jitter_backoff(&[&constant]);
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.evidence.contains("constant (5000 ms)"), "{}", j.evidence);
        assert_eq!(exponential_backoff(&[&constant]).verdict, Verdict::Fail);
    }

    #[test]
    fn a_backoff_reset_on_an_unstable_connection_fails() {
        let mut lines = vec!["I (       1) mqtt: connected endpoint=localhost:1 session=new"];
        let counting = [
            "I (       2) mqtt: backoff attempt=1 delay_ms=300",
            "I (       2) mqtt: backoff attempt=2 delay_ms=700",
            "I (       2) mqtt: backoff attempt=3 delay_ms=1500",
            "I (       2) mqtt: backoff attempt=4 delay_ms=900",
            "I (       2) mqtt: backoff attempt=5 delay_ms=6000",
            "I (       2) mqtt: backoff attempt=6 delay_ms=3000",
        ];
        lines.extend(counting);
        let mut r = report(&lines);
        r.name = "unstable-connection";
        assert_eq!(backoff_not_reset(&[&r]).verdict, Verdict::Pass);

        let mut lines = vec!["I (       1) mqtt: connected endpoint=localhost:1 session=new"];
        lines.extend(std::iter::repeat_n(
            "I (       2) mqtt: backoff attempt=1 delay_ms=300",
            6,
        ));
        let r = report(&lines);
        let j = backoff_not_reset(&[&r]);
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(
            j.evidence.contains("attempt=1 then attempt=1"),
            "{}",
            j.evidence
        );
    }

    #[test]
    fn every_case_names_scenarios_that_exist() {
        let known: Vec<&str> = super::super::all_scenarios()
            .iter()
            .map(|s| s.name)
            .collect();
        for case in CASES {
            for name in case.scenarios() {
                assert!(known.contains(name), "{}: {name}", case.name);
            }
        }
    }
}
