//! The broker presents one of Device Advisor's server certificates
//! ([`mock_broker::ServerCertificateCase`]):
//! - `tls-untrusted-ca`, `tls-wrong-name`, `tls-expired`: the device must refuse the
//!   handshake with the matching error and never connect or publish;
//! - `tls-large-chain`: a valid chain well over the usual size (an extra RSA intermediate);
//!   the device must take it and publish, which proves its TLS buffers fit it.

use std::time::{Duration, Instant};

use certs::pki;
use mock_broker::{Event, Publisher, ServerCertificateCase};

use super::{CheckResult, Scenario, ScenarioRun, is};
use crate::error::RigError;
use crate::rig::{OUT_TOPIC, Rig};

/// Start to the `tls: handshake failed` line.
pub const REFUSED_WITHIN: Duration = Duration::from_secs(10);
/// Refused attempts to see before passing: one could be luck, two is a policy.
const ATTEMPTS: usize = 2;
/// The second attempt comes after a backoff of at most 2 s (DESIGN's full jitter from a
/// 1 s base; the core's 500 ms base and 1 s spacing stay within it).
const SECOND_ATTEMPT: Duration = Duration::from_secs(5);
/// Start to the first publish the broker sees through the large chain.
pub const LARGE_CHAIN_PUBLISH_WITHIN: Duration = Duration::from_secs(10);

/// Which bad certificate the broker presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadServer {
    UntrustedCa,
    WrongName,
    Expired,
}

impl BadServer {
    /// The `error=` slug the device must log.
    pub fn expected_error(self) -> &'static str {
        match self {
            Self::UntrustedCa => "unknown-ca",
            Self::WrongName => "name-mismatch",
            Self::Expired => "certificate-expired",
        }
    }

    fn case(self) -> ServerCertificateCase {
        match self {
            Self::UntrustedCa => ServerCertificateCase::UntrustedCa,
            Self::WrongName => ServerCertificateCase::WrongName,
            Self::Expired => ServerCertificateCase::Expired,
        }
    }
}

/// Have the broker present `case`, made for the names of the rig's server certificate.
fn present(rig: &Rig, case: ServerCertificateCase) -> Result<(), RigError> {
    let names: Vec<String> = pki::InitOptions::default().server_names();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    // Only the untrusted-CA case is made without the rig's CA.
    let ca = match case {
        ServerCertificateCase::UntrustedCa => None,
        _ => Some(rig.ca()?),
    };
    let (chain, key) = case
        .make(ca, &names)
        .map_err(|e| RigError::broker(format!("{} server certificate", case.name()), e))?;
    rig.broker()?
        .replace_server_certificate_pem(&chain, &key)
        .map_err(|e| {
            RigError::broker(
                format!("the broker would not take the {} certificate", case.name()),
                e,
            )
        })
}

/// Run `check` while the broker presents `case`, then put the good certificate back
/// whatever happened, for the scenarios after this one.
async fn presenting(
    run: &mut ScenarioRun,
    case: ServerCertificateCase,
    check: impl AsyncFnOnce(&mut ScenarioRun) -> CheckResult,
) -> CheckResult {
    let rig = std::sync::Arc::clone(&run.rig);
    present(&rig, case)?;
    let outcome = check(run).await;
    let restored = rig.broker()?.restore_server_credentials();
    let figure = outcome?;
    restored.map_err(|e| RigError::broker("the broker could not restore its certificate", e))?;
    Ok(figure)
}

pub const UNTRUSTED_CA: Scenario = Scenario {
    name: "tls-untrusted-ca",
    summary: "server certificate from a CA the device does not trust: refused, no publish",
    tolerance: "2 handshakes refused with error=unknown-ca, the first within 10 s",
    exclusive: true,
    needs_rig_ca: false,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &[],
    limit: None,
    check: |run| Box::pin(refuses(run, BadServer::UntrustedCa)),
};

pub const WRONG_NAME: Scenario = Scenario {
    name: "tls-wrong-name",
    summary: "server certificate for another host name: refused, no publish",
    tolerance: "2 handshakes refused with error=name-mismatch, the first within 10 s",
    exclusive: true,
    needs_rig_ca: true,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &[],
    limit: None,
    check: |run| Box::pin(refuses(run, BadServer::WrongName)),
};

pub const EXPIRED: Scenario = Scenario {
    name: "tls-expired",
    summary: "expired server certificate: refused, no publish",
    tolerance: "2 handshakes refused with error=certificate-expired, the first within 10 s",
    exclusive: true,
    needs_rig_ca: true,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &[],
    limit: None,
    check: |run| Box::pin(refuses(run, BadServer::Expired)),
};

async fn refuses(run: &mut ScenarioRun, case: BadServer) -> CheckResult {
    presenting(run, case.case(), async |run| refused_twice(run, case).await).await
}

pub const LARGE_CHAIN: Scenario = Scenario {
    name: "tls-large-chain",
    summary: "server chain over 1.2x the usual size (extra intermediate): accepted, publishes",
    tolerance: "connected and the first publish at the broker within 10 s",
    exclusive: true,
    needs_rig_ca: true,
    needs_broker_faults: true,
    restarts_broker: false,
    needs_lines: &[],
    limit: None,
    check: |run| {
        Box::pin(presenting(
            run,
            ServerCertificateCase::LargeChain,
            accepts_large_chain,
        ))
    },
};

async fn accepts_large_chain(run: &mut ScenarioRun) -> CheckResult {
    let started = Instant::now();
    let mut observer = run.start_device(|_| {})?;
    let line = run
        .expect_line(
            "`mqtt: connected` through the large chain",
            LARGE_CHAIN_PUBLISH_WITHIN,
            |l| is(l, "mqtt", "connected") || is(l, "tls", "handshake failed"),
        )
        .await?;
    let line = line.line().expect("picked a parsed line");
    if is(line, "tls", "handshake failed") {
        return Err(run.failure(&format!(
            "expected the valid large chain accepted, saw the handshake refused with error={}",
            line.field("error").unwrap_or("(none)")
        )));
    }
    let left = LARGE_CHAIN_PUBLISH_WITHIN.saturating_sub(started.elapsed());
    let client = Publisher::Client(run.client_id.clone());
    let published = observer
        .wait_for(left, |event| match event {
            Event::Publish(p) if p.topic == OUT_TOPIC && p.publisher == client => Some(()),
            _ => None,
        })
        .await;
    if published.is_none() {
        return Err(run.failure(&format!(
            "expected a publish on {OUT_TOPIC} by {} within {LARGE_CHAIN_PUBLISH_WITHIN:?} of \
             start, the broker saw none",
            run.client_id
        )));
    }
    Ok(format!(
        "connected and published {} ms after start",
        started.elapsed().as_millis()
    ))
}

async fn refused_twice(run: &mut ScenarioRun, case: BadServer) -> CheckResult {
    let expected = case.expected_error();
    let mut observer = run.start_device(|_| {})?;
    let started = std::time::Instant::now();
    let mut first_ms = 0;
    for attempt in 1..=ATTEMPTS {
        let timeout = if attempt == 1 {
            REFUSED_WITHIN
        } else {
            SECOND_ATTEMPT
        };
        let line = run
            .expect_line(
                &format!("`tls: handshake failed` (attempt {attempt})"),
                timeout,
                |l| is(l, "tls", "handshake failed") || is(l, "mqtt", "connected"),
            )
            .await?;
        let line = line.line().expect("picked a parsed line");
        if is(line, "mqtt", "connected") {
            return Err(run.failure(&format!(
                "expected the handshake refused with error={expected}, saw the device connect"
            )));
        }
        if line.field("error") != Some(expected) {
            return Err(run.failure(&format!(
                "expected `tls: handshake failed error={expected}`, saw error={}",
                line.field("error").unwrap_or("(none)")
            )));
        }
        if attempt == 1 {
            first_ms = started.elapsed().as_millis();
        }
    }
    // Nothing the broker saw may come from this device as a session.
    let client = Publisher::Client(run.client_id.clone());
    while let Some(event) = observer.try_next() {
        let leaked = match &event {
            Event::Publish(p) => p.publisher == client,
            Event::Connected { client_id, .. } => *client_id == run.client_id,
            _ => false,
        };
        if leaked {
            return Err(run.failure(&format!(
                "expected no session for {} behind a bad certificate, the broker saw {event:?}",
                run.client_id
            )));
        }
    }
    Ok(format!(
        "refused {ATTEMPTS}x with {expected}, first after {first_ms} ms"
    ))
}
