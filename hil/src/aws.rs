//! `--target aws`: the rig's view of a real AWS IoT endpoint, through a second identity
//! (the observer) that connects over MQTT + mutual TLS with its own client id, watches
//! the device's publish topic and injects on its subscribe topic.
//!
//! What it receives becomes the same [`mock_broker::Event`]s the mock broker reports, so
//! scenarios wait on one [`mock_broker::Observer`] type whichever the target. Two
//! differences are inherent to watching from outside:
//!
//! - arrival times are the observer's receive times (AWS does not say when it received a
//!   publish), so intervals include the endpoint-to-rig network jitter;
//! - AWS does not tell a subscriber who published, so every publish on the watched topic
//!   is attributed to the device under test (the observer's policy must not let it
//!   publish there itself; the cadence checks reject foreign payloads and numbering).
//!
//! The observer needs an AWS IoT policy allowing `iot:Connect` as its client id,
//! `iot:Subscribe`/`iot:Receive` on the device's publish topic and `iot:Publish` on the
//! device's subscribe topic: `certs::policy::observer_policy_document` writes it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mock_broker::{Event, Observer, PublishObservation, Publisher, QoS};
use rumqttc::{AsyncClient, EventLoop, Incoming, MqttOptions, Packet, SubscribeReasonCode};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::error::RigError;

/// The port AWS IoT serves MQTT over TLS on; 443 needs ALPN [`ALPN_MQTT`].
pub const DEFAULT_PORT: u16 = 8883;
/// The ALPN protocol AWS IoT expects for MQTT with client certificates on port 443.
pub const ALPN_MQTT: &[u8] = b"x-amzn-mqtt-ca";
/// The observer's client id when none is given (`--observer-client-id`).
pub const DEFAULT_CLIENT_ID: &str = certs::policy::DEFAULT_OBSERVER_CLIENT_ID;
/// Connecting and subscribing, including the TLS handshake to a far region.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// An injected QoS 1 publish to its PUBACK.
const PUBACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Events the scenarios may fall behind by (a publish every 2 s: plenty).
const BACKLOG: usize = 1024;
/// AWS IoT's largest payload is 128 KiB; leave room for the topic and header.
const MAX_PACKET: usize = 130 * 1024;
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// `HOST[:PORT]` of an AWS IoT data endpoint (`xxxx-ats.iot.REGION.amazonaws.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Offer ALPN [`ALPN_MQTT`]: AWS IoT needs it for MQTT with client certificates on
    /// port 443, which [`Endpoint::parse`] sets it for.
    pub alpn: bool,
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Self, RigError> {
        let bad = |why: &str| {
            RigError::usage(format!(
                "--endpoint {text:?}: {why} (expected HOST or HOST:PORT)"
            ))
        };
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
            ),
            None => (text, DEFAULT_PORT),
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(bad("not a host name"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
            alpn: port == 443,
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The observer's certificate (chain), private key, the CA the endpoint's certificate
/// chains to (Amazon Root CA 1 for AWS), and its client id.
pub struct ObserverIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: rustls::RootCertStore,
    pub client_id: String,
}

impl std::fmt::Debug for ObserverIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObserverIdentity")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl ObserverIdentity {
    /// Read the files (PEM or DER each); errors name the file at fault.
    pub fn load(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
        client_id: &str,
    ) -> Result<Self, RigError> {
        let (cert_der, info) = certs::x509::read_certificate(cert)?;
        let private = certs::x509::read_private_key(key)?;
        if !private.matches(&info.public_key) {
            return Err(RigError::file(
                key,
                format!(
                    "private key does not match the certificate {}",
                    cert.display()
                ),
            ));
        }
        let bytes = certs::x509::read_input(ca)?;
        let mut roots = rustls::RootCertStore::empty();
        for object in certs::x509::decode_objects(ca, &bytes)? {
            if let certs::x509::Object::Certificate(der) = object {
                roots
                    .add(CertificateDer::from(der))
                    .map_err(|e| RigError::file(ca, e))?;
            }
        }
        if roots.is_empty() {
            return Err(RigError::file(ca, "holds no CA certificate"));
        }
        if client_id.is_empty() || client_id.len() > 128 {
            return Err(RigError::usage(format!(
                "--observer-client-id {client_id:?}: must be 1 to 128 bytes (AWS IoT's limit)"
            )));
        }
        Ok(Self {
            chain: vec![CertificateDer::from(cert_der)],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(private.to_pkcs8_der().to_vec())),
            roots,
            client_id: client_id.to_string(),
        })
    }

    fn tls_config(&self, endpoint: &Endpoint) -> Result<rustls::ClientConfig, RigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| RigError::make("TLS setup", e))?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| RigError::make("observer certificate and key", e))?;
        if endpoint.alpn {
            config.alpn_protocols = vec![ALPN_MQTT.to_vec()];
        }
        Ok(config)
    }
}

/// A live observer connection.
pub struct AwsObserver {
    client: AsyncClient,
    events: broadcast::Sender<Event>,
    acks: watch::Receiver<u64>,
    /// Why the connection ended, once it has.
    lost: watch::Receiver<Option<String>>,
    task: JoinHandle<()>,
    endpoint: Endpoint,
    client_id: String,
}

impl AwsObserver {
    /// Connect to `endpoint` as `identity`, subscribe to `watch_topic` (QoS 1), and report
    /// every publish received there as coming from `device_client_id`. Returns once the
    /// subscription is granted.
    pub async fn connect(
        endpoint: &Endpoint,
        identity: &ObserverIdentity,
        watch_topic: &str,
        device_client_id: &str,
    ) -> Result<Self, RigError> {
        Self::connect_with(endpoint, identity, watch_topic, device_client_id, false).await
    }

    /// As [`AwsObserver::connect`], but a lost connection is made again (and the topic
    /// subscribed again) for as long as it takes, for a broker the rig itself restarts;
    /// [`AwsObserver::lost`] says why while it is down.
    pub async fn connect_following(
        endpoint: &Endpoint,
        identity: &ObserverIdentity,
        watch_topic: &str,
        device_client_id: &str,
    ) -> Result<Self, RigError> {
        Self::connect_with(endpoint, identity, watch_topic, device_client_id, true).await
    }

    async fn connect_with(
        endpoint: &Endpoint,
        identity: &ObserverIdentity,
        watch_topic: &str,
        device_client_id: &str,
        follow: bool,
    ) -> Result<Self, RigError> {
        let mut options = MqttOptions::new(&identity.client_id, &endpoint.host, endpoint.port);
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(identity.tls_config(endpoint)?)),
            ));
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let (events, _) = broadcast::channel(BACKLOG);
        let who = format!("observer {} at {endpoint}", identity.client_id);
        let failed = |problem: String| RigError::Observer {
            who: who.clone(),
            problem,
        };
        client
            .subscribe(watch_topic, rumqttc::QoS::AtLeastOnce)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let attribute = Publisher::Client(device_client_id.to_string());
        let subscribed = tokio::time::timeout(CONNECT_TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(Packet::SubAck(ack))) => {
                        return match ack.return_codes.first() {
                            Some(SubscribeReasonCode::Success(_)) => Ok(()),
                            _ => Err(failed(format!(
                                "subscription to {watch_topic} refused (the observer's policy must allow iot:Subscribe on topicfilter/{watch_topic})"
                            ))),
                        };
                    }
                    Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => {
                        let _ = events.send(observation(&attribute, p));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(failed(format!(
                            "{e} (before the subscription to {watch_topic} was granted; a policy that refuses the client id or the subscription closes the connection)"
                        )));
                    }
                }
            }
        })
        .await
        .map_err(|_| {
            failed(format!(
                "not connected and subscribed to {watch_topic} within {CONNECT_TIMEOUT:?}"
            ))
        })?;
        subscribed?;

        let (ack_tx, acks) = watch::channel(0u64);
        let (lost_tx, lost) = watch::channel(None);
        let follow = follow.then(|| (client.clone(), watch_topic.to_string()));
        let task = tokio::spawn(pump(
            eventloop,
            events.clone(),
            attribute,
            ack_tx,
            lost_tx,
            follow,
        ));
        Ok(Self {
            client,
            events,
            acks,
            lost,
            task,
            endpoint: endpoint.clone(),
            client_id: identity.client_id.clone(),
        })
    }

    /// Events from now on: every publish on the watched topic.
    pub fn observe(&self) -> Observer {
        Observer::from_receiver(self.events.subscribe())
    }

    /// Publish `payload` to `topic` at QoS 1 and wait for the endpoint's PUBACK.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), RigError> {
        let failed = |problem: String| RigError::Observer {
            who: format!("observer {} at {}", self.client_id, self.endpoint),
            problem,
        };
        if let Some(why) = self.lost() {
            return Err(failed(format!("connection lost: {why}")));
        }
        let mut acks = self.acks.clone();
        let before = *acks.borrow_and_update();
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let acked = tokio::time::timeout(PUBACK_TIMEOUT, acks.wait_for(|n| *n > before)).await;
        match acked {
            Ok(Ok(_)) => Ok(()),
            _ => {
                let lost = self.lost();
                Err(failed(format!(
                    "no PUBACK for the publish to {topic} within {PUBACK_TIMEOUT:?}{} (the observer's policy must allow iot:Publish on topic/{topic})",
                    lost.map(|why| format!("; connection lost: {why}"))
                        .unwrap_or_default()
                )))
            }
        }
    }

    /// The endpoint it is connected to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Why the connection ended, once it has: from then on nothing more is observed.
    pub fn lost(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    /// Wait up to `timeout` for the connection to end; its reason.
    pub async fn wait_lost(&self, timeout: Duration) -> Option<String> {
        let mut lost = self.lost.clone();
        let ended = tokio::time::timeout(timeout, lost.wait_for(Option::is_some)).await;
        ended.ok()?.ok()?.clone()
    }

    /// `AWS IoT endpoint HOST:PORT, observer CLIENT_ID`, for the banner.
    pub fn describe(&self) -> String {
        format!(
            "AWS IoT endpoint {} watched by observer {}",
            self.endpoint, self.client_id
        )
    }

    /// Disconnect cleanly (best effort) and stop the connection's task.
    pub async fn shutdown(self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.disconnect()).await;
        self.task.abort();
    }
}

fn observation(publisher: &Publisher, p: rumqttc::Publish) -> Event {
    Event::Publish(PublishObservation {
        publisher: publisher.clone(),
        topic: p.topic,
        payload: p.payload,
        qos: match p.qos {
            rumqttc::QoS::AtMostOnce => QoS::AtMostOnce,
            _ => QoS::AtLeastOnce,
        },
        retain: p.retain,
        // The device's packet id and DUP flag are not visible to another subscriber.
        packet_id: None,
        dup: false,
        received_at: Instant::now(),
        received_at_system: SystemTime::now(),
    })
}

/// Drive the connection: report publishes, count PUBACKs. Without `follow`, stop at the
/// first error (against AWS a reconnect would hide the gap from the scenarios). With
/// `follow` (the client and the watched topic), reconnect and subscribe again, for a
/// broker the rig restarts on purpose.
async fn pump(
    mut eventloop: EventLoop,
    events: broadcast::Sender<Event>,
    attribute: Publisher,
    acks: watch::Sender<u64>,
    lost: watch::Sender<Option<String>>,
    follow: Option<(AsyncClient, String)>,
) {
    /// Between reconnect attempts while the broker is down.
    const RETRY: Duration = Duration::from_millis(200);
    loop {
        match eventloop.poll().await {
            Ok(rumqttc::Event::Incoming(Incoming::Publish(p))) => {
                let _ = events.send(observation(&attribute, p));
            }
            Ok(rumqttc::Event::Incoming(Incoming::PubAck(_))) => acks.send_modify(|n| *n += 1),
            Ok(rumqttc::Event::Incoming(Incoming::ConnAck(_))) => {
                if let Some((client, topic)) = &follow
                    && lost.borrow().is_some()
                {
                    // A clean session: the subscription is made again.
                    let _ = client.try_subscribe(topic.as_str(), rumqttc::QoS::AtLeastOnce);
                }
            }
            Ok(rumqttc::Event::Incoming(Incoming::SubAck(_))) => {
                lost.send_replace(None);
            }
            Ok(_) => {}
            Err(e) => {
                lost.send_replace(Some(e.to_string()));
                if follow.is_none() {
                    return;
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_the_default_port_and_refuse_junk() {
        assert_eq!(
            Endpoint::parse("abc-ats.iot.eu-west-1.amazonaws.com").unwrap(),
            Endpoint {
                host: "abc-ats.iot.eu-west-1.amazonaws.com".into(),
                port: 8883,
                alpn: false,
            }
        );
        assert!(
            Endpoint::parse("abc-ats.iot.eu-west-1.amazonaws.com:443")
                .unwrap()
                .alpn
        );
        assert_eq!(
            Endpoint::parse("localhost:4433").unwrap().to_string(),
            "localhost:4433"
        );
        for junk in ["", ":8883", "host:0", "host:port", "host:70000", "a b:1"] {
            let why = Endpoint::parse(junk).expect_err(junk).to_string();
            assert!(why.starts_with("--endpoint"), "{why}");
        }
    }
}
