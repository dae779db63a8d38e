//! `tls-untrusted-ca`, `tls-wrong-name`, `tls-expired`: the broker presents a bad server
//! certificate (Device Advisor's TLS cases); the device must refuse the handshake with
//! the matching error and never connect or publish.

use std::time::Duration;

use certs::pki::{self, KeyAlgorithm};
use mock_broker::{Event, Publisher};

use super::{CheckResult, Scenario, ScenarioRun, is};
use crate::rig::Rig;

/// Start to the `tls: handshake failed` line.
pub const REFUSED_WITHIN: Duration = Duration::from_secs(10);
/// Refused attempts to see before passing: one could be luck, two is a policy.
const ATTEMPTS: usize = 2;
/// The second attempt comes after a backoff of at most 2 s (full jitter, base 1 s).
const SECOND_ATTEMPT: Duration = Duration::from_secs(5);

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

    /// The server certificate and key (PEM) for this case, from the rig's PKI.
    fn credentials(self, rig: &Rig) -> Result<(String, String), String> {
        let names: Vec<String> = pki::InitOptions::default().server_names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let identity = match self {
            Self::UntrustedCa => pki::server_cert_untrusted(&names, KeyAlgorithm::EcP256)
                .map(|(identity, _rogue)| identity),
            Self::WrongName => pki::server_cert_wrong_name(rig.ca()?),
            Self::Expired => pki::server_cert_expired(rig.ca()?, &names),
        }
        .map_err(|e| format!("bad server certificate: {e}"))?;
        Ok((identity.cert_pem(), identity.key_pem().to_string()))
    }
}

pub const UNTRUSTED_CA: Scenario = Scenario {
    name: "tls-untrusted-ca",
    summary: "server certificate from a CA the device does not trust: refused, no publish",
    tolerance: "2 handshakes refused with error=unknown-ca, the first within 10 s",
    exclusive: true,
    needs_rig_ca: false,
    needs_broker_faults: true,
    check: |run| Box::pin(refuses(run, BadServer::UntrustedCa)),
};

pub const WRONG_NAME: Scenario = Scenario {
    name: "tls-wrong-name",
    summary: "server certificate for another host name: refused, no publish",
    tolerance: "2 handshakes refused with error=name-mismatch, the first within 10 s",
    exclusive: true,
    needs_rig_ca: true,
    needs_broker_faults: true,
    check: |run| Box::pin(refuses(run, BadServer::WrongName)),
};

pub const EXPIRED: Scenario = Scenario {
    name: "tls-expired",
    summary: "expired server certificate: refused, no publish",
    tolerance: "2 handshakes refused with error=certificate-expired, the first within 10 s",
    exclusive: true,
    needs_rig_ca: true,
    needs_broker_faults: true,
    check: |run| Box::pin(refuses(run, BadServer::Expired)),
};

async fn refuses(run: &mut ScenarioRun, case: BadServer) -> CheckResult {
    let (chain, key) = case.credentials(&run.rig)?;
    let rig = std::sync::Arc::clone(&run.rig);
    let broker = rig.broker()?;
    broker
        .replace_server_certificate_pem(&chain, &key)
        .map_err(|e| format!("the broker would not take the bad certificate: {e}"))?;
    let outcome = refused_twice(run, case).await;
    // Put the good certificate back whatever happened, for the scenarios after this one.
    let restored = broker.restore_server_credentials();
    let figure = outcome?;
    restored.map_err(|e| format!("the broker could not restore its certificate: {e}"))?;
    Ok(figure)
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
