//! How the broker is set up: listeners, AWS's limits as the mock applies them, the
//! policy and the credentials.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use certs::pki::CertificateAuthority;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::backlog::QueueLimits;
use crate::error::StartError;
use crate::policy::{AccountScope, Policy};
use crate::rules;
use crate::tls::{Credentials, SniRule};

/// How the broker is set up. [`Config::new`] gives AWS's behaviour on a loopback
/// ephemeral port; the policy is the caller's.
#[derive(Debug, Clone)]
pub struct Config {
    pub credentials: Credentials,
    /// The host name clients must send as SNI.
    pub endpoint: String,
    pub sni: SniRule,
    pub policy: Policy,
    /// Policies attached to other certificates, by the certificate's subject CN (the
    /// thing name the mock derives from it). AWS attaches policies per certificate; a
    /// client whose certificate has none of these CNs is judged by `policy`.
    pub certificate_policies: Vec<(String, Policy)>,
    pub scope: AccountScope,
    /// The MQTT-over-TLS listener (AWS's 8883).
    pub mqtt_addr: SocketAddr,
    /// The ALPN listener (AWS's 443), if wanted.
    pub alpn_addr: Option<SocketAddr>,
    /// The SNTP server (UDP), if wanted.
    pub sntp_addr: Option<SocketAddr>,
    /// The HTTP/JSON control API (loopback only: it has no authentication), if wanted.
    pub control_addr: Option<SocketAddr>,
    /// Longest a TLS handshake may take (and a control API request to arrive).
    pub handshake_timeout: Duration,
    /// Longest between the handshake and the CONNECT packet.
    pub connect_timeout: Duration,
    /// Least time between two CONNECTs with the same client id (AWS: 1 s).
    pub connect_interval: Duration,
    /// The lower keep-alive clamp (AWS: 30 s); tests lower it to see a timeout quickly.
    pub min_keep_alive_secs: u16,
    /// How long a persistent session outlives its connection at most (AWS's default:
    /// 1 hour).
    pub max_session_expiry: Duration,
    /// The CA that signed the server certificate, with its key: it signs the
    /// [`crate::server_cert::ServerCertificateCase`] presets (all but `untrusted-ca` need it).
    pub issuing_ca: Option<Arc<CertificateAuthority>>,
    /// How much one client may hold in the broker (waiting, being written, awaiting a
    /// PUBACK; a stored session likewise). QoS 0 deliveries give way at half of it, QoS 1
    /// deliveries beyond it are dropped ([`crate::backlog`]).
    pub queue_limits: QueueLimits,
    /// A client whose socket takes none of the bytes due to it for this long is
    /// disconnected (`THROTTLED`): it has stopped reading. The same holds for a control
    /// API `/events` reader.
    pub write_stall_timeout: Duration,
    /// AWS's per-connection inbound quotas, per second: publishes past 100 are dropped
    /// (no PUBACK), and a client past 512 KiB is not read until the second is over.
    /// `None` takes everything as fast as the client sends.
    pub inbound_limits: Option<InboundLimits>,
    /// Offer only these TLS cipher suites (rustls names, e.g. `TLS13_AES_128_GCM_SHA256`,
    /// `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`); `None` offers every suite rustls has
    /// (AWS's TLS 1.2/1.3 security policy). One at a time shows which a device speaks.
    pub cipher_suites: Option<Vec<String>>,
}

/// Per-connection inbound quotas, per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundLimits {
    pub publishes: u32,
    pub bytes: usize,
}

impl Default for InboundLimits {
    /// AWS's quotas ("Publish requests per second per connection": 100; "Throughput per
    /// connection": 512 KiB/s).
    fn default() -> Self {
        Self {
            publishes: rules::MAX_PUBLISHES_PER_SECOND,
            bytes: rules::MAX_INBOUND_BYTES_PER_SECOND,
        }
    }
}

/// A client whose socket takes no bytes for this long is disconnected (`THROTTLED`) by
/// default ([`Config::write_stall_timeout`]).
pub const WRITE_STALL: Duration = Duration::from_secs(10);

/// The subject CN of the certificate in `cert_pem` and the policy in `policy_json`.
fn observer_binding(cert_pem: &Path, policy_json: &Path) -> Result<(String, Policy), StartError> {
    let der = CertificateDer::from_pem_file(cert_pem)
        .map_err(|e| StartError::credentials(cert_pem, e))?;
    let cn = certs::x509::CertInfo::from_der(&der)
        .ok()
        .and_then(|info| info.common_name)
        .ok_or_else(|| StartError::credentials(cert_pem, "no subject CN in the certificate"))?;
    let text = std::fs::read_to_string(policy_json)
        .map_err(|e| StartError::credentials(policy_json, e))?;
    let policy = Policy::from_json(&text).map_err(|source| StartError::Policy {
        path: policy_json.display().to_string(),
        source,
    })?;
    Ok((cn, policy))
}

impl Config {
    /// The policy that judges a client with certificate CN `thing_name`.
    pub fn policy_for(&self, thing_name: Option<&str>) -> &Policy {
        thing_name
            .and_then(|cn| {
                self.certificate_policies
                    .iter()
                    .find(|(name, _)| name == cn)
                    .map(|(_, policy)| policy)
            })
            .unwrap_or(&self.policy)
    }

    /// AWS's rules on `127.0.0.1:0`, endpoint `localhost`, with `policy`; no ALPN
    /// listener, SNTP server or control API until their addresses are set.
    pub fn new(credentials: Credentials, policy: Policy) -> Self {
        Self {
            credentials,
            endpoint: "localhost".into(),
            sni: SniRule::Required,
            policy,
            certificate_policies: Vec::new(),
            scope: AccountScope::default(),
            mqtt_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            alpn_addr: None,
            sntp_addr: None,
            control_addr: None,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            connect_interval: Duration::from_secs(1),
            min_keep_alive_secs: rules::MIN_KEEP_ALIVE_SECS,
            max_session_expiry: Duration::from_secs(3600),
            issuing_ca: None,
            queue_limits: QueueLimits::default(),
            write_stall_timeout: WRITE_STALL,
            inbound_limits: Some(InboundLimits::default()),
            cipher_suites: None,
        }
    }

    /// Credentials, policy and (if `ca.key.pem` is there) the issuing CA from a `certs
    /// init` folder (`policy_file` overrides `DIR/policy.json`).
    pub fn from_certs_dir(dir: &Path, policy_file: Option<&Path>) -> Result<Self, StartError> {
        let credentials = Credentials::from_dir(dir)?;
        let policy_path = policy_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join("policy.json"));
        let text = std::fs::read_to_string(&policy_path)
            .map_err(|e| StartError::credentials(&policy_path, e))?;
        let policy = Policy::from_json(&text).map_err(|source| StartError::Policy {
            path: policy_path.display().to_string(),
            source,
        })?;
        let mut config = Self::new(credentials, policy);
        // `certs init` writes the observer's identity and policy beside the thing's: serve
        // both, so a person can watch with the observer certificate as on AWS.
        let (observer_cert, observer_policy) =
            (dir.join("observer.pem"), dir.join("observer-policy.json"));
        if observer_cert.exists() && observer_policy.exists() {
            config
                .certificate_policies
                .push(observer_binding(&observer_cert, &observer_policy)?);
        }
        // The CA key signs the server certificate presets; a folder without one (only
        // the public CA, as on a bench) still serves, and the presets say what is missing.
        let ca_key = dir.join(certs::load::CA_KEY_FILE);
        if ca_key.exists() {
            let ca = CertificateAuthority::load_dir(dir).map_err(StartError::IssuingCa)?;
            config.issuing_ca = Some(Arc::new(ca));
        }
        Ok(config)
    }
}
