//! The TLS front: mutual TLS as AWS IoT Core does it.
//!
//! - The client certificate is required and verified against the configured CA; its CN
//!   becomes the thing name (`${iot:Connection.Thing.ThingName}`).
//! - SNI must name the endpoint (case-insensitively). AWS requires SNI, so a client
//!   without it is refused unless [`SniRule::AllowMissing`] is chosen. Clients that dial
//!   an IP address send no SNI (rustls, embedded-tls); a device configured with the
//!   endpoint `localhost` sends SNI `localhost` and is accepted by a broker whose endpoint
//!   is `localhost` (the default).
//! - The ALPN listener (AWS's port 443) requires the client to offer `x-amzn-mqtt-ca`;
//!   the plain listener (8883) ignores ALPN.
//!
//! The ClientHello is inspected before the handshake continues, so refusals name their
//! reason in the log. Every handshake runs in the connection's own task under a timeout.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::{Acceptor, WebPkiClientVerifier};
use rustls::{ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use crate::error::StartError;

/// The ALPN protocol AWS IoT requires for MQTT on port 443.
pub const AWS_MQTT_ALPN: &[u8] = b"x-amzn-mqtt-ca";

/// The broker's TLS identity and the CA its clients' certificates must chain to.
#[derive(Clone)]
pub struct Credentials {
    /// Trusted roots for client certificates (DER).
    pub client_ca_der: Vec<Vec<u8>>,
    /// The server's chain, leaf first (DER).
    pub server_chain_der: Vec<Vec<u8>>,
    /// The server's private key (PKCS#8, SEC1 or PKCS#1 DER).
    pub server_key_der: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_cas", &self.client_ca_der.len())
            .field("server_chain", &self.server_chain_der.len())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Client CAs (DER) with a server chain and key given as PEM text.
    pub fn with_server_pem(
        client_ca_der: Vec<Vec<u8>>,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<Self, StartError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StartError::Tls(format!("server chain PEM: {e}")))?;
        if chain.is_empty() {
            return Err(StartError::Tls(
                "server chain PEM holds no certificate".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| StartError::Tls(format!("server key PEM: {e}")))?;
        Ok(Self {
            client_ca_der,
            server_chain_der: chain.into_iter().map(|c| c.to_vec()).collect(),
            server_key_der: key.secret_der().to_vec(),
        })
    }

    /// Read `ca.pem`, `server.pem` and `server.key.pem` from a `certs init` folder.
    pub fn from_dir(dir: &Path) -> Result<Self, StartError> {
        let path = |name: &str| dir.join(name);
        let certs = |file: PathBuf| -> Result<Vec<Vec<u8>>, StartError> {
            let list = CertificateDer::pem_file_iter(&file)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| StartError::credentials(&file, e))?;
            if list.is_empty() {
                return Err(StartError::credentials(&file, "no certificate in the file"));
            }
            Ok(list.into_iter().map(|c| c.to_vec()).collect())
        };
        let key_file = path("server.key.pem");
        let key = PrivateKeyDer::from_pem_file(&key_file)
            .map_err(|e| StartError::credentials(&key_file, e))?;
        Ok(Self {
            client_ca_der: certs(path("ca.pem"))?,
            server_chain_der: certs(path("server.pem"))?,
            server_key_der: key.secret_der().to_vec(),
        })
    }
}

/// Whether a ClientHello without SNI is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SniRule {
    /// As AWS: SNI must be present and name the endpoint.
    #[default]
    Required,
    /// SNI, when present, must name the endpoint; a client dialling an IP may omit it.
    AllowMissing,
}

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Port 8883 style: MQTT over mutual TLS.
    Mqtt,
    /// Port 443 style: MQTT over mutual TLS with ALPN `x-amzn-mqtt-ca`.
    Alpn,
}

/// Why a TLS connection was refused: the client's doing (or the network's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeRefusal {
    #[error("no SNI in the ClientHello (AWS requires it; expected {expected:?})")]
    MissingSni { expected: String },
    #[error("SNI {got:?} does not name the endpoint {expected:?}")]
    WrongSni { got: String, expected: String },
    #[error("ALPN {AWS_MQTT_ALPN:?} not offered on the ALPN listener")]
    MissingAlpn,
    #[error("handshake timed out")]
    Timeout,
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

/// A finished handshake: the stream and what the client proved.
pub(crate) struct Accepted {
    pub stream: TlsStream<TcpStream>,
    /// The client certificate's CN.
    pub thing_name: Option<String>,
    /// SHA-256 of the client certificate (hex), AWS's certificate id.
    pub certificate_id: String,
    pub tls_version: &'static str,
}

/// Builds server configurations and checks ClientHellos.
pub(crate) struct TlsFront {
    endpoint: String,
    sni: SniRule,
    /// Swappable so a test can present another server certificate to new connections.
    configs: RwLock<Configs>,
    /// The cipher suites offered (every one when `None`).
    suites: Option<Vec<String>>,
}

struct Configs {
    mqtt: Arc<ServerConfig>,
    alpn: Arc<ServerConfig>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The cipher suites rustls (ring) offers, by name: the TLS 1.3 and 1.2 suites of AWS
/// IoT Core's security policy that rustls implements.
pub fn cipher_suite_names() -> Vec<&'static str> {
    rustls::crypto::ring::default_provider()
        .cipher_suites
        .iter()
        .filter_map(|s| s.suite().as_str())
        .collect()
}

/// The default provider restricted to `names` (every suite when `None`).
fn provider_offering(names: Option<&[String]>) -> Result<Arc<CryptoProvider>, StartError> {
    let Some(names) = names else {
        return Ok(provider());
    };
    let mut restricted = rustls::crypto::ring::default_provider();
    let all = std::mem::take(&mut restricted.cipher_suites);
    for name in names {
        let suite = all
            .iter()
            .find(|s| s.suite().as_str() == Some(name.as_str()))
            .ok_or_else(|| {
                StartError::Tls(format!(
                    "cipher suite {name:?}: not one the broker has (it has {})",
                    cipher_suite_names().join(", ")
                ))
            })?;
        restricted.cipher_suites.push(*suite);
    }
    if restricted.cipher_suites.is_empty() {
        return Err(StartError::Tls("cipher suites: the list is empty".into()));
    }
    Ok(Arc::new(restricted))
}

const VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

fn server_configs(
    credentials: &Credentials,
    suites: Option<&[String]>,
) -> Result<Configs, StartError> {
    let mut roots = RootCertStore::empty();
    for der in &credentials.client_ca_der {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| StartError::Tls(format!("client CA: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| StartError::Tls(format!("client verifier: {e}")))?;
    let chain: Vec<CertificateDer<'static>> = credentials
        .server_chain_der
        .iter()
        .map(|der| CertificateDer::from(der.clone()))
        .collect();
    let key = PrivateKeyDer::try_from(credentials.server_key_der.clone())
        .map_err(|e| StartError::Tls(format!("server key: {e}")))?;
    let mqtt = ServerConfig::builder_with_provider(provider_offering(suites)?)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| StartError::Tls(format!("server certificate and key: {e}")))?;
    let mut alpn = mqtt.clone();
    alpn.alpn_protocols = vec![AWS_MQTT_ALPN.to_vec()];
    Ok(Configs {
        mqtt: Arc::new(mqtt),
        alpn: Arc::new(alpn),
    })
}

impl TlsFront {
    pub(crate) fn new(
        credentials: &Credentials,
        endpoint: String,
        sni: SniRule,
    ) -> Result<Self, StartError> {
        Ok(Self {
            endpoint,
            sni,
            configs: RwLock::new(server_configs(credentials, None)?),
            suites: None,
        })
    }

    /// The same, offering only the cipher suites named (every one when `None`).
    pub(crate) fn offering(
        mut self,
        suites: Option<&[String]>,
        credentials: &Credentials,
    ) -> Result<Self, StartError> {
        if suites.is_some() {
            self.suites = suites.map(<[String]>::to_vec);
            *self.configs.get_mut().unwrap_or_else(|e| e.into_inner()) =
                server_configs(credentials, suites)?;
        }
        Ok(self)
    }

    /// Present `credentials` to connections from now on (existing ones keep theirs).
    pub(crate) fn replace_credentials(&self, credentials: &Credentials) -> Result<(), StartError> {
        let configs = server_configs(credentials, self.suites.as_deref())?;
        *self.configs.write().unwrap_or_else(|e| e.into_inner()) = configs;
        Ok(())
    }

    fn check_hello(
        &self,
        sni: Option<&str>,
        mut alpn: Option<impl Iterator<Item = impl AsRef<[u8]>>>,
        kind: ListenerKind,
    ) -> Result<(), HandshakeRefusal> {
        match (sni, self.sni) {
            (Some(name), _) if name.eq_ignore_ascii_case(&self.endpoint) => {}
            (Some(name), _) => {
                return Err(HandshakeRefusal::WrongSni {
                    got: name.to_owned(),
                    expected: self.endpoint.clone(),
                });
            }
            (None, SniRule::AllowMissing) => {}
            (None, SniRule::Required) => {
                return Err(HandshakeRefusal::MissingSni {
                    expected: self.endpoint.clone(),
                });
            }
        }
        if kind == ListenerKind::Alpn {
            let offered = alpn
                .as_mut()
                .is_some_and(|list| list.any(|p| p.as_ref() == AWS_MQTT_ALPN));
            if !offered {
                return Err(HandshakeRefusal::MissingAlpn);
            }
        }
        Ok(())
    }

    /// Run the server side of the handshake on `tcp`. The caller bounds it with a timeout.
    pub(crate) async fn accept(
        &self,
        tcp: TcpStream,
        kind: ListenerKind,
    ) -> Result<Accepted, HandshakeRefusal> {
        let start = LazyConfigAcceptor::new(Acceptor::default(), tcp)
            .await
            .map_err(|e| HandshakeRefusal::Tls(e.to_string()))?;
        {
            let hello = start.client_hello();
            self.check_hello(hello.server_name(), hello.alpn(), kind)?;
        }
        let config = {
            let configs = self.configs.read().unwrap_or_else(|e| e.into_inner());
            match kind {
                ListenerKind::Mqtt => configs.mqtt.clone(),
                ListenerKind::Alpn => configs.alpn.clone(),
            }
        };
        let stream = start
            .into_stream(config)
            .await
            .map_err(|e| HandshakeRefusal::Tls(e.to_string()))?;
        let (_, connection) = stream.get_ref();
        let tls_version = match connection.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "unknown",
        };
        let leaf = connection
            .peer_certificates()
            .and_then(|certs| certs.first())
            .ok_or_else(|| HandshakeRefusal::Tls("no client certificate".into()))?;
        let thing_name = common_name(leaf);
        let certificate_id = hex(ring::digest::digest(&ring::digest::SHA256, leaf).as_ref());
        Ok(Accepted {
            stream,
            thing_name,
            certificate_id,
            tls_version,
        })
    }
}

fn common_name(der: &[u8]) -> Option<String> {
    certs::x509::CertInfo::from_der(der).ok()?.common_name
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn front(sni: SniRule) -> TlsFront {
        let pki = certs::pki::Pki::generate(&certs::pki::InitOptions::default()).unwrap();
        let credentials = Credentials {
            client_ca_der: vec![pki.ca.cert_der().to_vec()],
            server_chain_der: vec![pki.server.cert_der.clone()],
            server_key_der: pki.server.key.to_pkcs8_der().to_vec(),
        };
        TlsFront::new(&credentials, "localhost".into(), sni).unwrap()
    }

    fn no_alpn() -> Option<std::vec::IntoIter<&'static [u8]>> {
        None
    }

    #[test]
    fn sni_must_name_the_endpoint() {
        let front = front(SniRule::Required);
        assert!(
            front
                .check_hello(Some("LocalHost"), no_alpn(), ListenerKind::Mqtt)
                .is_ok()
        );
        assert!(matches!(
            front.check_hello(Some("example.com"), no_alpn(), ListenerKind::Mqtt),
            Err(HandshakeRefusal::WrongSni { .. })
        ));
        assert!(matches!(
            front.check_hello(None, no_alpn(), ListenerKind::Mqtt),
            Err(HandshakeRefusal::MissingSni { .. })
        ));
        let lenient = self::front(SniRule::AllowMissing);
        assert!(
            lenient
                .check_hello(None, no_alpn(), ListenerKind::Mqtt)
                .is_ok()
        );
        assert!(
            lenient
                .check_hello(Some("other"), no_alpn(), ListenerKind::Mqtt)
                .is_err()
        );
    }

    #[test]
    fn alpn_listener_requires_the_aws_protocol() {
        let front = front(SniRule::Required);
        let offered = |list: Vec<&'static [u8]>| Some(list.into_iter());
        assert!(
            front
                .check_hello(
                    Some("localhost"),
                    offered(vec![b"h2", AWS_MQTT_ALPN]),
                    ListenerKind::Alpn
                )
                .is_ok()
        );
        assert_eq!(
            front.check_hello(
                Some("localhost"),
                offered(vec![b"mqtt"]),
                ListenerKind::Alpn
            ),
            Err(HandshakeRefusal::MissingAlpn)
        );
        assert_eq!(
            front.check_hello(Some("localhost"), no_alpn(), ListenerKind::Alpn),
            Err(HandshakeRefusal::MissingAlpn)
        );
        // The plain listener does not care.
        assert!(
            front
                .check_hello(
                    Some("localhost"),
                    offered(vec![b"mqtt"]),
                    ListenerKind::Mqtt
                )
                .is_ok()
        );
    }

    #[test]
    fn common_name_is_the_thing_name() {
        let ca = certs::pki::CertificateAuthority::root(
            "ca",
            certs::pki::KeyAlgorithm::EcP256,
            certs::pki::Validity::days(1),
        )
        .unwrap();
        let device = ca
            .issue_client(
                "ESPthing",
                certs::pki::KeyAlgorithm::EcP256,
                certs::pki::Validity::days(1),
            )
            .unwrap();
        assert_eq!(common_name(&device.cert_der).as_deref(), Some("ESPthing"));
    }
}
