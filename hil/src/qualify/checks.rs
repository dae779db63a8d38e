//! The scenarios only the qualification runs: Device Advisor's cases no `hil run`
//! scenario already proves. Each drives the mock broker's controls and faults the way the
//! case describes and returns what it saw; the case's verdict is drawn from that (and the
//! serial log) in [`super::cases`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use firmware_core::log::Line;
use mock_broker::{Event, Faults, MockBroker, QoS};

use crate::error::RigError;
use crate::scenarios::stamped::{StampedEvents, connected, first_publish, line_after, published};
use crate::scenarios::{CheckResult, Scenario, ScenarioRun, is};
use firmware_core::session::hello_seq;

/// Device Advisor withholds CONNACK from this many attempts in a row, then lets the next
/// one through.
pub const WITHHELD_ATTEMPTS: usize = 5;
/// Rounds of withheld attempts: Device Advisor wants at least 12 connects in all.
pub const ROUNDS: usize = 2;
/// Connected between the rounds: longer than the device's 5 s stable period, so each
/// round starts from a fresh backoff (each round is then classified on its own).
pub const BETWEEN_ROUNDS: Duration = Duration::from_secs(6);
/// One withheld attempt: the device's backoff (at most 60 s) plus its CONNACK timeout.
const NEXT_ATTEMPT: Duration = Duration::from_secs(75);
/// Back to publishing after a fault is lifted: backoff, handshake, a period.
const RECOVER: Duration = Duration::from_secs(20);

/// `event` is the broker withholding CONNACK from `client_id`.
fn withheld_connack(event: &Event, client_id: &str) -> bool {
    matches!(event, Event::FaultApplied { client_id: id, fault } if id == client_id && fault == "withheld CONNACK")
}

/// `event` is `client_id` subscribing.
fn subscribed(event: &Event, client_id: &str) -> bool {
    matches!(event, Event::Subscribed { client_id: id, .. } if id == client_id)
}

fn disconnected(event: &Event, client_id: &str) -> bool {
    matches!(event, Event::Disconnected { client_id: id, .. } if id == client_id)
}

fn only(client: &str, faults: Faults, broker: &mock_broker::Handle) {
    broker.set_client_faults(client, faults);
}

pub const CONNACK_WITHHELD: Scenario = Scenario {
    name: "connack-withheld",
    summary: "CONNACK withheld from 5 attempts, the 6th let through, twice: 12 connects and the delays between them",
    tolerance: "at least 12 CONNECTs at the broker; each withheld attempt followed by another within 75 s; publishing again within 20 s of each 6th attempt",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &["mqtt: backoff"],
    limit: Some(Duration::from_secs(200)),
    check: |run| Box::pin(connack_withheld(run)),
};

async fn connack_withheld(run: &mut ScenarioRun) -> CheckResult {
    let rig = Arc::clone(&run.rig);
    let broker = rig.broker()?;
    let client = run.client_id.clone();
    let events = StampedEvents::record(run.start_device(|_| {})?);
    first_publish(run, &events, &client).await?;
    let mut connects = 1;
    for round in 1..=ROUNDS {
        let started = Instant::now();
        only(
            &client,
            Faults {
                withhold_connack: true,
                ..Faults::default()
            },
            broker,
        );
        broker.kick(&client);
        let mut from = started;
        for attempt in 1..=WITHHELD_ATTEMPTS {
            let Some((at, ())) = events
                .wait_for(from, NEXT_ATTEMPT, |e| {
                    withheld_connack(e, &client).then_some(())
                })
                .await
            else {
                return Err(run.failure(&format!(
                    "round {round}: expected CONNECT attempt {attempt} (CONNACK withheld) within \
                     {NEXT_ATTEMPT:?} of the last, saw none ({} connects so far)",
                    connects
                )));
            };
            connects += 1;
            from = at + Duration::from_millis(1);
        }
        broker.set_client_faults(&client, Faults::default());
        let Some((at, ())) = events
            .wait_for(from, NEXT_ATTEMPT, |e| connected(e, &client).then_some(()))
            .await
        else {
            return Err(run.failure(&format!(
                "round {round}: expected the 6th attempt (CONNACK let through) within \
                 {NEXT_ATTEMPT:?} of the 5th, saw none"
            )));
        };
        connects += 1;
        // The verdict reads the round's delays from the serial log up to this line: wait
        // until it has been read, not only seen by the broker.
        line_after(
            run,
            started,
            &format!("`mqtt: connected` ending round {round}"),
            RECOVER,
            |l| is(l, "mqtt", "connected"),
        )
        .await?;
        let publishes = |e: &Event| published(e, &client).map(|_| ());
        if events.wait_for(at, RECOVER, publishes).await.is_none() {
            return Err(run.failure(&format!(
                "round {round}: expected a publish within {RECOVER:?} of the 6th attempt, saw none"
            )));
        }
        if round < ROUNDS {
            // Stay up past the stable period, still publishing.
            let stay = at + BETWEEN_ROUNDS;
            let later = |e: &Event| {
                published(e, &client)
                    .filter(|p| p.received_at >= stay)
                    .map(|_| ())
            };
            if events
                .wait_for(at, BETWEEN_ROUNDS + RECOVER, later)
                .await
                .is_none()
            {
                return Err(run.failure(&format!(
                    "round {round}: expected the device connected and publishing for {BETWEEN_ROUNDS:?}, it stopped"
                )));
            }
        }
    }
    Ok(format!(
        "{connects} connects ({} with CONNACK withheld)",
        ROUNDS * WITHHELD_ATTEMPTS
    ))
}

pub const UNSTABLE_CONNECTION: Scenario = Scenario {
    name: "unstable-connection",
    summary: "CONNACK then an immediate drop, 6 times: the backoff keeps growing, never reset",
    tolerance: "6 drops right after CONNACK, each within 70 s of the last; then publishing within 20 s of the fault lifted",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &["mqtt: backoff"],
    limit: Some(Duration::from_secs(200)),
    check: |run| Box::pin(unstable_connection(run)),
};

/// Connections cut right after CONNACK.
pub const UNSTABLE_DROPS: usize = 6;

async fn unstable_connection(run: &mut ScenarioRun) -> CheckResult {
    let rig = Arc::clone(&run.rig);
    let broker = rig.broker()?;
    let client = run.client_id.clone();
    let events = StampedEvents::record(run.start_device(|_| {})?);
    first_publish(run, &events, &client).await?;
    only(
        &client,
        Faults {
            disconnect_after_connack: true,
            ..Faults::default()
        },
        broker,
    );
    broker.drop_connection(&client);
    let mut from = Instant::now();
    for drop in 1..=UNSTABLE_DROPS {
        let Some((at, ())) = events
            .wait_for(from, Duration::from_secs(70), |e| {
                connected(e, &client).then_some(())
            })
            .await
        else {
            return Err(run.failure(&format!(
                "expected reconnect {drop} (to be dropped after CONNACK) within 70 s, saw none"
            )));
        };
        from = at + Duration::from_millis(1);
    }
    broker.set_client_faults(&client, Faults::default());
    let lifted = Instant::now();
    let publishes = |e: &Event| published(e, &client).map(|_| ());
    if events
        .wait_for(lifted, Duration::from_secs(70), publishes)
        .await
        .is_none()
    {
        return Err(run.failure("expected a publish within 70 s of the fault lifted, saw none"));
    }
    Ok(format!(
        "{UNSTABLE_DROPS} connections dropped right after CONNACK"
    ))
}

pub const SUBACK_WITHHELD: Scenario = Scenario {
    name: "suback-withheld",
    summary: "SUBACK withheld: the device subscribes again",
    tolerance: "a second SUBSCRIBE for the same filter within 30 s of the first; publishing within 20 s once SUBACKs flow",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &[],
    limit: None,
    check: |run| Box::pin(suback_withheld(run)),
};

/// Time allowed for the device to subscribe again after SUBACK did not come.
pub const RESUBSCRIBE_WITHIN: Duration = Duration::from_secs(30);

async fn suback_withheld(run: &mut ScenarioRun) -> CheckResult {
    let rig = Arc::clone(&run.rig);
    let broker = rig.broker()?;
    let client = run.client_id.clone();
    only(
        &client,
        Faults {
            withhold_suback: true,
            ..Faults::default()
        },
        broker,
    );
    let events = StampedEvents::record(run.start_device(|_| {})?);
    let Some((first, ())) = events
        .wait_for(Instant::now(), Duration::from_secs(15), |e| {
            subscribed(e, &client).then_some(())
        })
        .await
    else {
        return Err(run.failure("expected a SUBSCRIBE within 15 s of boot, saw none"));
    };
    let again = events
        .wait_for(first + Duration::from_millis(1), RESUBSCRIBE_WITHIN, |e| {
            subscribed(e, &client).then_some(())
        })
        .await;
    broker.set_client_faults(&client, Faults::default());
    let Some((second, ())) = again else {
        return Err(run.failure(&format!(
            "expected a second SUBSCRIBE within {RESUBSCRIBE_WITHIN:?} of the first (SUBACK \
             withheld), saw only one"
        )));
    };
    let publishes = |e: &Event| published(e, &client).map(|_| ());
    if events
        .wait_for(second, RECOVER + Duration::from_secs(10), publishes)
        .await
        .is_none()
    {
        return Err(run.failure("expected a publish once SUBACKs flowed again, saw none"));
    }
    Ok(format!(
        "subscribed again {:.1} s after the unanswered SUBSCRIBE",
        second.duration_since(first).as_secs_f64()
    ))
}

pub const PERSISTENT_SESSION: Scenario = Scenario {
    name: "persistent-session",
    summary: "dropped, 3 QoS 1 messages queued while away: resumed without SUBSCRIBE, all 3 logged",
    tolerance: "reconnect with session present; no SUBSCRIBE after it; the 3 queued messages logged within 10 s of the reconnect",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &[],
    limit: None,
    check: |run| Box::pin(persistent_session(run)),
};

/// Messages queued while the device is away.
pub const QUEUED: usize = 3;
/// A SUBSCRIBE this soon after the reconnect counts as re-subscribing.
const RESUBSCRIBE_WINDOW: Duration = Duration::from_secs(5);

async fn persistent_session(run: &mut ScenarioRun) -> CheckResult {
    let rig = Arc::clone(&run.rig);
    let broker = rig.broker()?;
    let client = run.client_id.clone();
    let topic = run.inbound_topic();
    let events = StampedEvents::record(run.start_device(|_| {})?);
    first_publish(run, &events, &client).await?;
    let cut = Instant::now();
    broker.drop_connection(&client);
    if events
        .wait_for(cut, Duration::from_secs(5), |e| {
            disconnected(e, &client).then_some(())
        })
        .await
        .is_none()
    {
        return Err(run.failure("expected the broker to see the device gone, it did not"));
    }
    let payloads: Vec<String> = (1..=QUEUED).map(|n| format!("queued-{n}")).collect();
    for payload in &payloads {
        broker.inject(&topic, payload.clone().into_bytes(), QoS::AtLeastOnce);
    }
    let Some((back, session_present)) = events
        .wait_for(cut, RECOVER, |e| match e {
            Event::Connected {
                client_id,
                session_present,
                ..
            } if *client_id == client => Some(*session_present),
            _ => None,
        })
        .await
    else {
        return Err(run.failure(&format!(
            "expected a reconnect within {RECOVER:?}, saw none"
        )));
    };
    if !session_present {
        return Err(
            run.failure("expected the broker to resume the session (session present), it did not")
        );
    }
    for payload in &payloads {
        // From the drop, not the broker's reconnect event: the serial capture can read the
        // device's lines before the event recorder stamps the reconnect.
        line_after(
            run,
            cut,
            &format!("`inbound: ... payload={payload}` (queued while away)"),
            Duration::from_secs(10),
            |l| l.tag() == "inbound" && l.payload() == Some(payload.as_str()),
        )
        .await?;
    }
    if let Some((at, ())) = events
        .wait_for(back, RESUBSCRIBE_WINDOW, |e| {
            subscribed(e, &client).then_some(())
        })
        .await
    {
        return Err(run.failure(&format!(
            "expected no SUBSCRIBE on the resumed session, saw one {:.1} s after the reconnect",
            at.duration_since(back).as_secs_f64()
        )));
    }
    Ok(format!(
        "resumed {:.1} s after the drop, no SUBSCRIBE, {QUEUED} queued messages logged",
        back.duration_since(cut).as_secs_f64()
    ))
}

pub const EXPIRED_SESSION: Scenario = Scenario {
    name: "expired-session",
    summary: "the broker expires the device's session: it reconnects to a new session and subscribes again",
    tolerance: "reconnect (session new) within 20 s; a SUBSCRIBE after it within 10 s; an injected message logged",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &[],
    limit: None,
    check: |run| Box::pin(expired_session(run)),
};

async fn expired_session(run: &mut ScenarioRun) -> CheckResult {
    let rig = Arc::clone(&run.rig);
    let broker = rig.broker()?;
    let client = run.client_id.clone();
    let topic = run.inbound_topic();
    let events = StampedEvents::record(run.start_device(|_| {})?);
    first_publish(run, &events, &client).await?;
    let cut = Instant::now();
    if !broker.expire_session(&client) {
        return Err(run.failure("expected the device connected to expire its session, it was not"));
    }
    let Some((back, session_present)) = events
        .wait_for(cut, RECOVER, |e| match e {
            Event::Connected {
                client_id,
                session_present,
                ..
            } if *client_id == client => Some(*session_present),
            _ => None,
        })
        .await
    else {
        return Err(run.failure(&format!(
            "expected a reconnect within {RECOVER:?}, saw none"
        )));
    };
    if session_present {
        return Err(run.failure("expected a new session after the expiry, the broker resumed one"));
    }
    let Some((subscribed_at, ())) = events
        .wait_for(back, Duration::from_secs(10), |e| {
            subscribed(e, &client).then_some(())
        })
        .await
    else {
        return Err(run.failure(
            "expected a SUBSCRIBE within 10 s of reconnecting to a new session, saw none",
        ));
    };
    broker.inject(&topic, b"after-expiry".to_vec(), QoS::AtLeastOnce);
    line_after(
        run,
        subscribed_at,
        "`inbound: ... payload=after-expiry`",
        Duration::from_secs(10),
        |l| l.tag() == "inbound" && l.payload() == Some("after-expiry"),
    )
    .await?;
    Ok(format!(
        "new session {:.1} s after the expiry, subscribed again {:.1} s later",
        back.duration_since(cut).as_secs_f64(),
        subscribed_at.duration_since(back).as_secs_f64()
    ))
}

pub const QOS1_PUBACK: Scenario = Scenario {
    name: "qos1-puback",
    summary: "QoS 1 messages of 1 B, 1 KiB and 4 KiB (the device's stated maximum) are logged and acknowledged",
    tolerance: "each logged within 5 s; the broker holds nothing for the device within 5 s (every PUBACK in)",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &[],
    limit: None,
    check: |run| Box::pin(qos1_puback(run)),
};

/// The largest payload the device states it takes: 4 KiB (its 5 KiB MQTT receive buffer
/// less topic, header and properties; see `firmware_core::driver::buffers`).
pub const MAX_INBOUND_PAYLOAD: usize = 4096;

async fn qos1_puback(run: &mut ScenarioRun) -> CheckResult {
    let rig = Arc::clone(&run.rig);
    let broker = rig.broker()?;
    let client = run.client_id.clone();
    let topic = run.inbound_topic();
    let events = StampedEvents::record(run.start_device(|_| {})?);
    first_publish(run, &events, &client).await?;
    for size in [1, 1024, MAX_INBOUND_PAYLOAD] {
        let sent = Instant::now();
        broker.inject(&topic, vec![b'q'; size], QoS::AtLeastOnce);
        line_after(
            run,
            sent,
            &format!("`inbound: ... bytes={size}`"),
            Duration::from_secs(5),
            |l| l.tag() == "inbound" && l.payload_size() == Some(size),
        )
        .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let held = broker.backlog(&client).map_or(0, |b| b.bytes);
        if held == 0 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(run.failure(&format!(
                "expected every QoS 1 delivery acknowledged (nothing held), the broker still holds {held} bytes after 5 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(format!(
        "1 B, 1 KiB and {MAX_INBOUND_PAYLOAD} B logged and PUBACKed"
    ))
}

pub const MAX_FRAGMENTS: Scenario = Scenario {
    name: "max-fragments",
    summary: "five 4000-byte messages sent in one TLS write: full 16 KiB records arrive, all logged",
    tolerance: "the broker writes more than 16384 bytes at once (a full-size record); 5 messages logged within 10 s; still publishing",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &[],
    limit: None,
    check: |run| Box::pin(max_fragments(run)),
};

/// TLS's largest record: 2^14 bytes of plaintext.
pub const MAX_RECORD: usize = 16_384;
const BURST: usize = 5;
const BURST_PAYLOAD: usize = 4000;

async fn max_fragments(run: &mut ScenarioRun) -> CheckResult {
    let rig = Arc::clone(&run.rig);
    let broker = rig.broker()?;
    let client = run.client_id.clone();
    let topic = run.inbound_topic();
    let events = StampedEvents::record(run.start_device(|_| {})?);
    first_publish(run, &events, &client).await?;
    only(
        &client,
        Faults {
            hold_output: true,
            ..Faults::default()
        },
        broker,
    );
    let held = Instant::now();
    for n in 0..BURST {
        broker.inject(&topic, vec![b'a' + n as u8; BURST_PAYLOAD], QoS::AtMostOnce);
    }
    // The session takes them into its (held) output; then the hold is lifted, and one
    // more message wakes the session to write everything at once.
    let deadline = Instant::now() + Duration::from_secs(2);
    while broker.backlog(&client).is_some_and(|b| b.messages > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker.set_client_faults(&client, Faults::default());
    broker.inject(&topic, b"wake".to_vec(), QoS::AtMostOnce);
    let Some((_, bytes)) = events
        .wait_for(held, Duration::from_secs(10), |e| match e {
            Event::FaultApplied { client_id, fault } if *client_id == client => fault
                .strip_prefix("hold output lifted: ")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<usize>().ok()),
            _ => None,
        })
        .await
    else {
        let seen: Vec<String> = events
            .since(held)
            .iter()
            .filter_map(|(_, e)| match e {
                Event::FaultApplied { client_id, fault } => Some(format!("{client_id}: {fault}")),
                _ => None,
            })
            .collect();
        return Err(run.failure(&format!("expected the broker to write the held messages, it did not (faults applied meanwhile: {seen:?})")));
    };
    if bytes <= MAX_RECORD {
        return Err(RigError::make(
            "full-size TLS records",
            format!(
                "the broker wrote {bytes} bytes at once, not enough for a {MAX_RECORD}-byte record"
            ),
        )
        .into());
    }
    for n in 0..BURST {
        let first = char::from(b'a' + n as u8);
        line_after(
            run,
            held,
            &format!("`inbound: ... bytes={BURST_PAYLOAD}` (message {})", n + 1),
            Duration::from_secs(10),
            move |l| {
                l.tag() == "inbound"
                    && l.payload_size() == Some(BURST_PAYLOAD)
                    && l.payload().is_some_and(|p| p.starts_with(first))
            },
        )
        .await?;
    }
    let after = Instant::now();
    let publishes = |e: &Event| published(e, &client).map(|_| ());
    if events
        .wait_for(after, Duration::from_secs(5), publishes)
        .await
        .is_none()
    {
        return Err(
            run.failure("expected publishing to go on after the full-size records, it stopped")
        );
    }
    Ok(format!(
        "{bytes} bytes in one TLS write (a {MAX_RECORD}-byte record and the rest), {BURST} messages logged"
    ))
}

pub const CIPHER_SUITES: Scenario = Scenario {
    name: "cipher-suites",
    summary: "a broker offering one cipher suite at a time, each of AWS IoT's policy rustls has: which the device negotiates",
    tolerance: "at least one suite negotiated (`mqtt: connected`); each attempt decided within 15 s",
    exclusive: false,
    // It writes an image per suite (each broker has its own port), so it cannot run a
    // given --flash image.
    needs_rig_ca: true,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &[],
    limit: Some(Duration::from_secs(180)),
    check: |run| Box::pin(cipher_suites(run)),
};

/// AWS IoT Core's TLS 1.3 and 1.2 security policy (`IoTSecurityPolicy_TLS13_1_2_2022_10`),
/// as rustls names the suites it implements; the CBC and static-RSA suites of AWS's older
/// policies are not offered (rustls has none).
pub const AWS_SUITES: &[&str] = &[
    "TLS13_AES_128_GCM_SHA256",
    "TLS13_AES_256_GCM_SHA384",
    "TLS13_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// What the device did with one suite.
pub const NEGOTIATED: &str = "negotiated";

async fn cipher_suites(run: &mut ScenarioRun) -> CheckResult {
    let rig = Arc::clone(&run.rig);
    let base = rig.broker()?.config().clone();
    let rsa_server = server_key_is_rsa(&base.credentials.server_key_der);
    let mut results: Vec<(String, String)> = Vec::new();
    for suite in AWS_SUITES {
        // A TLS 1.2 suite signs with the server's key type: only those matching it can be
        // negotiated by anyone.
        let tls12 = !suite.starts_with("TLS13_");
        if tls12 && suite.contains("_RSA_") != rsa_server {
            results.push((
                suite.to_string(),
                format!(
                    "not offered (needs a{} server key)",
                    if rsa_server { "n ECDSA" } else { "n RSA" }
                ),
            ));
            continue;
        }
        let mut config = base.clone();
        config.mqtt_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        config.alpn_addr = None;
        config.sntp_addr = None;
        config.control_addr = None;
        config.cipher_suites = Some(vec![suite.to_string()]);
        let broker = MockBroker::start(config)
            .await
            .map_err(|e| RigError::broker(format!("broker offering {suite}"), e))?;
        let port = broker.mqtt_addr().port();
        let started = Instant::now();
        run.start_device(|c| c.endpoint.port = port)?;
        let line = line_after(
            run,
            started,
            &format!("`mqtt: connected` or a failed handshake with {suite} alone"),
            Duration::from_secs(15),
            |l| {
                is(l, "mqtt", "connected")
                    || is(l, "tls", "handshake failed")
                    || is(l, "mqtt", "connect failed")
            },
        )
        .await?;
        let line: &Line = line.line().expect("picked a parsed line");
        let outcome = if is(line, "mqtt", "connected") {
            NEGOTIATED.to_string()
        } else {
            format!("refused ({})", line.field("error").unwrap_or("?"))
        };
        results.push((suite.to_string(), outcome));
        broker.shutdown().await;
    }
    let negotiated: Vec<&str> = results
        .iter()
        .filter(|(_, o)| o == NEGOTIATED)
        .map(|(s, _)| s.as_str())
        .collect();
    let listing = results
        .iter()
        .map(|(s, o)| format!("{s}: {o}"))
        .collect::<Vec<_>>()
        .join("; ");
    if negotiated.is_empty() {
        return Err(run.failure(&format!(
            "expected the device to negotiate at least one of AWS IoT's suites, it negotiated none: {listing}"
        )));
    }
    Ok(format!("negotiated {}; {listing}", negotiated.join(", ")))
}

/// Whether the PKCS#8 key is RSA (else ECDSA), from its algorithm identifier.
fn server_key_is_rsa(pkcs8: &[u8]) -> bool {
    // rsaEncryption, 1.2.840.113549.1.1.1
    const RSA_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    pkcs8.windows(RSA_OID.len()).take(40).any(|w| w == RSA_OID)
}

/// The long-duration case's durations, from `hil qualify`'s flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongDuration {
    /// How long the broker stays unavailable in the long server disconnect.
    pub outage: Duration,
    /// How many times the link drops in the intermittent-connectivity part.
    pub drops: usize,
    /// Between the drops.
    pub drop_every: Duration,
}

impl Default for LongDuration {
    fn default() -> Self {
        Self {
            outage: Duration::from_secs(30),
            drops: 3,
            drop_every: Duration::from_secs(6),
        }
    }
}

static LONG_DURATION: std::sync::OnceLock<LongDuration> = std::sync::OnceLock::new();

/// Set the long-duration durations for this process (once; later calls are ignored).
pub fn set_long_duration(durations: LongDuration) {
    let _ = LONG_DURATION.set(durations);
}

fn long_duration() -> LongDuration {
    LONG_DURATION.get().copied().unwrap_or_default()
}

pub const INTERMITTENT: Scenario = Scenario {
    name: "intermittent",
    summary: "the link drops every few seconds (no DISCONNECT): the device comes back each time, its numbers carry on",
    tolerance: "after each drop publishing again within 20 s; sequence numbers consecutive over the drops (a QoS 1 message is resent, none lost)",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &[],
    limit: Some(Duration::from_secs(300)),
    check: |run| Box::pin(intermittent(run)),
};

async fn intermittent(run: &mut ScenarioRun) -> CheckResult {
    let rig = Arc::clone(&run.rig);
    let broker = rig.broker()?;
    let client = run.client_id.clone();
    let plan = long_duration();
    let events = StampedEvents::record(run.start_device(|_| {})?);
    first_publish(run, &events, &client).await?;
    let started = Instant::now();
    for drop in 1..=plan.drops {
        let cut = Instant::now();
        broker.drop_connection(&client);
        let Some((back, ())) = events
            .wait_for(cut, RECOVER, |e| connected(e, &client).then_some(()))
            .await
        else {
            return Err(run.failure(&format!(
                "expected a reconnect within {RECOVER:?} of drop {drop}, saw none"
            )));
        };
        let stay = back + plan.drop_every;
        let later = |e: &Event| {
            published(e, &client)
                .filter(|p| p.received_at >= stay)
                .map(|_| ())
        };
        if events
            .wait_for(back, plan.drop_every + RECOVER, later)
            .await
            .is_none()
        {
            return Err(run.failure(&format!(
                "expected publishing for {:?} after drop {drop}, it stopped",
                plan.drop_every
            )));
        }
    }
    let seqs: Vec<u32> = events
        .since(started)
        .iter()
        .filter_map(|(_, e)| published(e, &client))
        .filter(|p| !p.dup)
        .filter_map(|p| hello_seq(&p.payload))
        .collect();
    if let Some(w) = seqs.windows(2).find(|w| w[1] != w[0] + 1 && w[1] > w[0]) {
        return Err(run.failure(&format!(
            "expected consecutive publish numbers over the drops, saw #{} then #{}",
            w[0], w[1]
        )));
    }
    Ok(format!(
        "{} drops, back each time; publishes #{}..#{} consecutive",
        plan.drops,
        seqs.first().copied().unwrap_or_default(),
        seqs.last().copied().unwrap_or_default()
    ))
}

pub const LONG_OUTAGE: Scenario = Scenario {
    name: "long-outage",
    summary: "the server disconnects the device and refuses it (no CONNACK) for the outage: it keeps trying, spaced out, and is back soon after",
    tolerance: "no two CONNECTs less than 1 s apart during the outage; publishing again within max(20 s, outage/2 + 10 s) of its end",
    exclusive: false,
    needs_rig_ca: false,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &[],
    limit: Some(Duration::from_secs(600)),
    check: |run| Box::pin(long_outage(run)),
};

async fn long_outage(run: &mut ScenarioRun) -> CheckResult {
    let rig = Arc::clone(&run.rig);
    let broker = rig.broker()?;
    let client = run.client_id.clone();
    let plan = long_duration();
    let events = StampedEvents::record(run.start_device(|_| {})?);
    first_publish(run, &events, &client).await?;
    only(
        &client,
        Faults {
            withhold_connack: true,
            ..Faults::default()
        },
        broker,
    );
    let cut = Instant::now();
    broker.kick(&client);
    // The outage lasts its set length (a duration under test, not a wait for an event);
    // the broker records the device's attempts meanwhile.
    tokio::time::sleep_until((cut + plan.outage).into()).await;
    broker.set_client_faults(&client, Faults::default());
    let ended = Instant::now();
    let attempts: Vec<Instant> = events
        .since(cut)
        .iter()
        .filter(|(at, e)| *at < ended && withheld_connack(e, &client))
        .map(|(at, _)| *at)
        .collect();
    if let Some(w) = attempts
        .windows(2)
        .find(|w| w[1] - w[0] < Duration::from_secs(1))
    {
        return Err(run.failure(&format!(
            "expected CONNECTs at least 1 s apart during the outage, saw two {} ms apart",
            (w[1] - w[0]).as_millis()
        )));
    }
    let recover = RECOVER.max(plan.outage / 2 + Duration::from_secs(10));
    let publishes = |e: &Event| published(e, &client).map(|_| ());
    let Some((back, ())) = events.wait_for(ended, recover, publishes).await else {
        return Err(run.failure(&format!(
            "expected publishing again within {recover:?} of the outage's end, saw none"
        )));
    };
    Ok(format!(
        "{} attempts in the {:.0} s outage, publishing {:.1} s after it ended",
        attempts.len(),
        plan.outage.as_secs_f64(),
        back.duration_since(ended).as_secs_f64()
    ))
}

/// Every qualification-only scenario.
pub fn all() -> Vec<Scenario> {
    vec![
        CONNACK_WITHHELD,
        UNSTABLE_CONNECTION,
        SUBACK_WITHHELD,
        PERSISTENT_SESSION,
        EXPIRED_SESSION,
        QOS1_PUBACK,
        MAX_FRAGMENTS,
        CIPHER_SUITES,
        INTERMITTENT,
        LONG_OUTAGE,
    ]
}
