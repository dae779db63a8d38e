//! Faults the broker's owner switches on to see how a device copes: withheld
//! acknowledgements, dropped or black-holed connections, added latency.

use std::collections::HashMap;
use std::time::Duration;

/// What to do wrong. The default does nothing wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Read CONNECT, never answer it.
    pub withhold_connack: bool,
    /// Grant subscriptions, never acknowledge them.
    pub withhold_suback: bool,
    /// Route QoS 1 publishes, never acknowledge them.
    pub withhold_puback: bool,
    /// Never answer PINGREQ.
    pub withhold_pingresp: bool,
    /// Send CONNACK, then close the connection at once.
    pub disconnect_after_connack: bool,
    /// Keep the connection open but ignore everything the client sends and send it
    /// nothing.
    pub black_hole: bool,
    /// Write nothing to the client while set; once lifted, everything held goes out in
    /// as few TLS writes as possible, so the client gets full-size (16 KiB) records
    /// (Device Advisor's `TLS_Receive_Maximum_Size_Fragments`).
    pub hold_output: bool,
    /// Delay every packet the broker sends by this long.
    #[serde(with = "millis", rename = "latency_ms")]
    pub latency: Duration,
}

/// Most latency the fault adds to a packet: ten minutes is already beyond AWS IoT's
/// longest keep-alive (1200 s x 1.5 = 30 min is the dead-link window; past a few
/// minutes the fault is a black hole by another name).
pub const MAX_LATENCY: Duration = Duration::from_secs(600);

/// A fault value the broker refuses, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FaultError {
    pub field: &'static str,
    pub problem: String,
}

impl Faults {
    /// Refuse values that cannot mean anything (an added latency of 584 million years).
    pub fn check(&self) -> Result<(), FaultError> {
        if self.latency > MAX_LATENCY {
            return Err(FaultError {
                field: "latency_ms",
                problem: format!(
                    "{} ms is more than the {} ms allowed",
                    self.latency.as_millis(),
                    MAX_LATENCY.as_millis()
                ),
            });
        }
        Ok(())
    }

    /// These faults with every value brought within [`Faults::check`]'s limits.
    pub fn within_limits(mut self) -> Self {
        if let Err(invalid) = self.check() {
            tracing::warn!(%invalid, "fault out of range: limited");
            self.latency = self.latency.min(MAX_LATENCY);
        }
        self
    }
}

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms: u64 = serde::Deserialize::deserialize(d)?;
        Ok(Duration::from_millis(ms))
    }
}

/// The faults in force: one set for everyone, and per-client sets that replace it.
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultTable {
    pub global: Faults,
    pub clients: HashMap<String, Faults>,
}

impl FaultTable {
    pub fn for_client(&self, client_id: &str) -> Faults {
        self.clients.get(client_id).unwrap_or(&self.global).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_faults_replace_the_global_ones() {
        let mut table = FaultTable::default();
        table.global.withhold_puback = true;
        table.clients.insert(
            "a".into(),
            Faults {
                black_hole: true,
                ..Faults::default()
            },
        );
        assert!(table.for_client("a").black_hole);
        assert!(!table.for_client("a").withhold_puback);
        assert!(table.for_client("b").withhold_puback);
    }

    #[test]
    fn absurd_latencies_are_refused_naming_the_field() {
        let faults: Faults =
            serde_json::from_str(&format!(r#"{{"latency_ms": {}}}"#, u64::MAX)).unwrap();
        let e = faults.check().unwrap_err();
        assert_eq!(e.field, "latency_ms");
        assert!(e.to_string().starts_with("latency_ms: "), "{e}");
        let ok = Faults {
            latency: MAX_LATENCY,
            ..Faults::default()
        };
        assert_eq!(ok.check(), Ok(()));
    }

    #[test]
    fn json_form_uses_milliseconds_and_refuses_unknown_fields() {
        let faults: Faults =
            serde_json::from_str(r#"{"withhold_pingresp": true, "latency_ms": 250}"#).unwrap();
        assert!(faults.withhold_pingresp);
        assert_eq!(faults.latency, Duration::from_millis(250));
        assert!(serde_json::from_str::<Faults>(r#"{"withold_puback": true}"#).is_err());
    }

    #[test]
    fn absurd_latency_set_through_the_library_is_limited() {
        let faults: Faults =
            serde_json::from_str(&format!(r#"{{"latency_ms": {}}}"#, u64::MAX)).unwrap();
        assert_eq!(faults.within_limits().latency, MAX_LATENCY);
    }
}
