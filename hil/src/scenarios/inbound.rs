//! `inbound`: messages injected by the broker are logged within 1 s, escaped and truncated
//! as the log format says.

use std::time::{Duration, Instant};

use firmware_core::log::{Context, MAX_PAYLOAD, escape};

use super::{CheckFuture, CheckResult, Scenario, ScenarioRun};

/// Injection to `inbound:` line, on the host's clock.
pub const LATENCY: Duration = Duration::from_secs(1);
const SUBSCRIBED: Duration = Duration::from_secs(15);
/// A broker that forwards a packet over the device's Maximum Packet Size: injection to
/// the device's `mqtt: disconnected` line, and that line to `mqtt: connected` again
/// (the first backoff delay is at most 1 s).
const DROPS_LINK: Duration = Duration::from_secs(5);
const RECONNECTS: Duration = Duration::from_secs(10);

pub const SCENARIO: Scenario = Scenario {
    name: "inbound",
    summary: "text, JSON, binary, 4 KiB and 1 KiB payloads injected by the broker are logged; an 8 KiB one in between is dropped by the broker",
    tolerance: "each logged within 1 s, escaped, cut at 256 B with truncated=1; 8 KiB (over the device's 5 KiB Maximum Packet Size) never logged",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: false,
    restarts_broker: false,
    needs_lines: &[],
    limit: None,
    check,
};

/// What the device must do with an injected payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// An `inbound:` line within [`LATENCY`].
    Logged,
    /// Nothing: the payload is over the device's MQTT 5 Maximum Packet Size (its 5 KiB
    /// receive buffer), so the broker drops it for this client, as AWS does. The next
    /// logged payload must be the next line, which proves this one never was.
    DroppedByBroker,
}

/// The payloads injected, in order, with a name for failure messages.
pub fn payloads() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let pattern = |n: u32| -> Vec<u8> {
        (0..n)
            .map(|i| b"0123456789abcdef"[(i % 16) as usize])
            .collect()
    };
    vec![
        ("text", b"hello from the rig".to_vec(), Expect::Logged),
        (
            "json",
            br#"{"led": "on", "level": 3}"#.to_vec(),
            Expect::Logged,
        ),
        (
            "binary",
            vec![
                0x00, 0x01, 0xff, 0x1b, b'\\', b'\r', b'\n', b' ', 0x7f, 0x80,
            ],
            Expect::Logged,
        ),
        ("4 KiB", pattern(4096), Expect::Logged),
        ("8 KiB", pattern(8192), Expect::DroppedByBroker),
        ("1 KiB", pattern(1024), Expect::Logged),
    ]
}

fn check(run: &mut ScenarioRun) -> CheckFuture<'_> {
    Box::pin(inbound(run))
}

async fn inbound(run: &mut ScenarioRun) -> CheckResult {
    let mut observer = run.start_device(|_| {})?;
    let topic = run.inbound_topic();
    // An AWS observer is not told about the device's subscription; its `mqtt: subscribed`
    // line (below) is then the only sign.
    if run.rig.sees_broker_events()
        && observer
            .wait_for_subscription(&run.client_id, &topic, SUBSCRIBED)
            .await
            .is_none()
    {
        return Err(run.failure(&format!(
            "expected {} to subscribe to {topic} within {SUBSCRIBED:?}",
            run.client_id
        )));
    }
    // The broker's SUBACK may still be on its way; the device logs `subscribed` on it
    // (a firmware that never does, the tutorial's sketch, has the broker's word only).
    if run.vocabulary().cannot_show("mqtt: subscribed").is_none() {
        run.expect_line("`mqtt: subscribed`", SUBSCRIBED, |l| {
            super::is(l, "mqtt", "subscribed")
        })
        .await?;
    }

    // A broker that ignores the device's Maximum Packet Size (rumqttd) delivers the
    // 8 KiB payload: it goes last, and the device must then drop the link as a protocol
    // error (the packet does not fit its receive buffer) and reconnect, never log it.
    let oversize_delivered = run.rig.ignores_maximum_packet_size();
    let mut order = payloads();
    if oversize_delivered.is_some() {
        order.sort_by_key(|(_, _, expect)| *expect == Expect::DroppedByBroker);
    }
    let mut slowest = Duration::ZERO;
    let mut oversize = "8 KiB dropped by the broker".to_string();
    for (name, payload, expect) in order {
        let sent = Instant::now();
        let delivered = run.rig.inject(&topic, payload.clone()).await;
        // The mock broker says how many subscribers got it; AWS only acknowledges.
        match delivered {
            Ok(None | Some(1)) => {}
            Ok(Some(n)) => {
                return Err(run.failure(&format!(
                    "expected the {name} payload delivered to 1 subscriber of {topic}, saw {n}"
                )));
            }
            Err(why) => {
                return Err(run.failure(&format!("could not inject the {name} payload: {why}")));
            }
        }
        let size = payload.len();
        if expect == Expect::DroppedByBroker {
            if let Some(broker) = oversize_delivered {
                let dropped = run
                    .expect_line(
                        &format!("`mqtt: disconnected` after {broker} delivered the {name} payload (over the device's Maximum Packet Size)"),
                        DROPS_LINK,
                        |l| l.tag() == "inbound" || super::is(l, "mqtt", "disconnected"),
                    )
                    .await?;
                let line = dropped.line().expect("picked a parsed line");
                if line.tag() == "inbound" || line.field("reason") != Some("protocol-error") {
                    return Err(run.failure(&format!(
                        "expected the {name} payload refused with `mqtt: disconnected reason=protocol-error`, saw `{}`",
                        dropped.text
                    )));
                }
                run.expect_line(
                    &format!("`mqtt: connected` after dropping the {name} payload's link"),
                    RECONNECTS,
                    |l| super::is(l, "mqtt", "connected"),
                )
                .await?;
                oversize = format!(
                    "{broker} ignores the Maximum Packet Size: 8 KiB delivered, the device dropped the link (protocol-error) and reconnected"
                );
            }
            continue;
        }
        let logged = run
            .expect_line(
                &format!("`inbound: topic={topic} bytes={size}` for the {name} payload"),
                LATENCY,
                |l| l.tag() == "inbound",
            )
            .await?;
        slowest = slowest.max(logged.at.duration_since(sent));
        let line = logged.line().expect("picked a parsed line");
        if line.payload_size() != Some(size) {
            return Err(run.failure(&format!(
                "expected the next `inbound:` line to be the {name} payload (bytes={size}), saw bytes={:?}",
                line.field("bytes")
            )));
        }
        if line
            .field_bytes("topic")
            .map(|b| b.flatten().collect::<Vec<u8>>())
            != Some(topic.as_bytes().to_vec())
        {
            return Err(run.failure(&format!(
                "expected the {name} payload's line to name topic {topic}, saw {:?}",
                line.field("topic")
            )));
        }
        let kept: Result<Vec<u8>, _> = line.payload_bytes().into_iter().flatten().collect();
        let Ok(kept) = kept else {
            return Err(run.failure(&format!(
                "expected the {name} payload escaped so it decodes, saw {:?}",
                line.payload()
            )));
        };
        let printed = line.payload().unwrap_or_default().len();
        let must_truncate = escape::escaped_len(&payload, Context::Payload) > MAX_PAYLOAD;
        if must_truncate {
            if !line.is_truncated()
                || kept.is_empty()
                || !payload.starts_with(&kept)
                || printed > MAX_PAYLOAD
            {
                return Err(run.failure(&format!(
                    "expected the {name} payload ({size} B) cut to at most {MAX_PAYLOAD} printed bytes \
                     with truncated=1 and a prefix of the original, saw truncated={} printed={printed} B",
                    line.is_truncated()
                )));
            }
        } else if line.is_truncated() || kept != payload {
            return Err(run.failure(&format!(
                "expected the {name} payload logged whole, saw {:?} (truncated={})",
                line.payload(),
                line.is_truncated()
            )));
        }
    }
    let logged = payloads()
        .iter()
        .filter(|(_, _, e)| *e == Expect::Logged)
        .count();
    Ok(format!(
        "{logged} logged (slowest {:.1} ms), {oversize}",
        slowest.as_secs_f64() * 1000.0
    ))
}
