//! Errors, grouped by who is at fault.
//!
//! - [`StartError`]: the operator's configuration (credentials, policy, addresses) keeps
//!   the broker from starting.
//! - [`crate::tls::HandshakeRefusal`] and [`DisconnectReason`]: a client's behaviour (or
//!   the network) ends its connection; these are logged and observed, never returned to
//!   the broker's owner as failures.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use crate::policy::PolicyError;

/// The broker could not start: a problem with its configuration or environment.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{path}: {problem}")]
    Credentials { path: String, problem: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The issuing CA (`ca.pem` + `ca.key.pem`) cannot sign; the error names the file.
    #[error("issuing CA: {0}")]
    IssuingCa(certs::error::CertsError),
    #[error("{path}: {source}")]
    Policy { path: String, source: PolicyError },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl StartError {
    pub(crate) fn credentials(path: &Path, problem: impl fmt::Display) -> Self {
        StartError::Credentials {
            path: path.display().to_string(),
            problem: problem.to_string(),
        }
    }
}

/// Why a connection ended, as AWS names it in the `disconnectReason` of its lifecycle
/// events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT.
    ClientInitiatedDisconnect,
    /// The socket closed or failed without a DISCONNECT.
    ConnectionLost,
    /// Another connection with the same client id took over.
    DuplicateClientId,
    /// The policy denied a publish or subscribe.
    ForbiddenAccess,
    /// Nothing arrived within 1.5 x keep-alive.
    MqttKeepAliveTimeout,
    /// The client broke a protocol rule or an AWS limit (QoS 2, topic, payload size).
    ClientError,
    /// The broker's owner kicked the client or the broker shut down.
    ServerInitiatedDisconnect,
    /// The client exceeded a limit: it stopped reading what the broker sends it.
    Throttled,
}

impl DisconnectReason {
    /// The `disconnectReason` string of AWS's lifecycle events.
    pub fn aws_name(self) -> &'static str {
        match self {
            DisconnectReason::ClientInitiatedDisconnect => "CLIENT_INITIATED_DISCONNECT",
            DisconnectReason::ConnectionLost => "CONNECTION_LOST",
            DisconnectReason::DuplicateClientId => "DUPLICATE_CLIENTID",
            DisconnectReason::ForbiddenAccess => "FORBIDDEN_ACCESS",
            DisconnectReason::MqttKeepAliveTimeout => "MQTT_KEEP_ALIVE_TIMEOUT",
            DisconnectReason::ClientError => "CLIENT_ERROR",
            DisconnectReason::ServerInitiatedDisconnect => "SERVER_INITIATED_DISCONNECT",
            DisconnectReason::Throttled => "THROTTLED",
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.aws_name())
    }
}
