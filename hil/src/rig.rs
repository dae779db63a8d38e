//! The rig a suite runs in: one test PKI, one mock broker (MQTT over TLS and SNTP on
//! loopback ephemeral ports) and a work folder for the devices' flash images.
//!
//! Every scenario gets its own device identity from the one CA, so virtual devices can
//! run side by side against the one broker without taking over each other's sessions.
//! Each device subscribes to its own inbound topic ([`inbound_topic`]), so a message
//! injected for one scenario never shows up in another's log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use certs::creds::Credentials;
use certs::image;
use certs::pki::{InitOptions, KeyAlgorithm, Pki, THING_NAME_CLIENT, Validity, policy_document};
use firmware_core::config::DeviceConfig;
use firmware_core::image::CONFIG_PATH;
use mock_broker::{Config, Handle, MockBroker, Policy};

/// The topic the devices publish to (the tutorial's).
pub const OUT_TOPIC: &str = "outTopic";
/// Validity of the identities the rig issues.
const VALIDITY_DAYS: u32 = 30;

/// The inbound topic of the device named `client_id`.
pub fn inbound_topic(client_id: &str) -> String {
    format!("inTopic/{client_id}")
}

/// A deliberate change to every image the rig writes, to show that a wrong image makes
/// the matching scenarios fail (a period of 3000 ms, a CA the broker's certificate does
/// not chain to).
#[derive(Debug, Clone, Default)]
pub struct ImageSabotage {
    pub period_ms: Option<u32>,
    /// DER of the CA put in the image instead of the rig's.
    pub ca_der: Option<Vec<u8>>,
}

/// A flash image given on the command line (`--flash`) and the config read from it.
#[derive(Debug, Clone)]
pub struct GivenImage {
    pub path: PathBuf,
    pub config: DeviceConfig,
}

impl GivenImage {
    pub fn read(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let contents = image::read_image(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let json = contents
            .file(CONFIG_PATH)
            .ok_or_else(|| format!("{}: no {CONFIG_PATH}", path.display()))?;
        let config = DeviceConfig::from_json(json)
            .map_err(|e| format!("{}{CONFIG_PATH}: {e:?}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            config,
        })
    }
}

/// `host:port` as a loopback socket address, if `host` names this machine.
fn loopback(host: &str, port: u16) -> Option<SocketAddr> {
    let is_loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    is_loopback.then(|| SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Everything scenarios share.
pub struct Rig {
    pub broker: Handle,
    /// The rig's own PKI (with the CA key); absent when the broker serves a `--pki` folder.
    pub pki: Option<Pki>,
    device_binary: PathBuf,
    workdir: tempfile::TempDir,
    sabotage: ImageSabotage,
    given: Option<GivenImage>,
}

impl Rig {
    /// Make a fresh test PKI and start the broker with the least-privilege policy: each
    /// thing may connect as itself, publish to [`OUT_TOPIC`] and subscribe to its own
    /// inbound topic.
    pub async fn start(device_binary: PathBuf) -> Result<Self, String> {
        let pki = Pki::generate(&InitOptions {
            thing: "hil".into(),
            days: VALIDITY_DAYS,
            ..InitOptions::default()
        })
        .map_err(|e| format!("test PKI: {e}"))?;
        let credentials = mock_broker::Credentials::with_server_pem(
            vec![pki.ca.cert_der().to_vec()],
            &pki.server.cert_pem(),
            &pki.server.key_pem(),
        )
        .map_err(|e| format!("broker credentials: {e}"))?;
        let policy_json = policy_document(
            THING_NAME_CLIENT,
            OUT_TOPIC,
            &inbound_topic(THING_NAME_CLIENT),
        );
        let policy = Policy::from_json(&policy_json).map_err(|e| format!("policy: {e}"))?;
        let mut config = Config::new(credentials, policy);
        config.sntp_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        let broker = MockBroker::start(config)
            .await
            .map_err(|e| format!("mock broker: {e}"))?;
        let workdir = tempfile::Builder::new()
            .prefix("hil-")
            .tempdir()
            .map_err(|e| format!("work folder: {e}"))?;
        Ok(Self {
            broker,
            pki: Some(pki),
            device_binary,
            workdir,
            sabotage: ImageSabotage::default(),
            given: None,
        })
    }

    /// Run every device from `image`, against a broker that serves the `certs init` folder
    /// `pki_dir` (server certificate, client CA, policy) and listens where the image's
    /// config points, as on a bench whose image names the host's address and ports.
    pub async fn with_given_image(
        device_binary: PathBuf,
        pki_dir: &Path,
        image: GivenImage,
    ) -> Result<Self, String> {
        let mut config = Config::from_certs_dir(pki_dir, None)
            .map_err(|e| format!("broker from {}: {e}", pki_dir.display()))?;
        let endpoint = &image.config.endpoint;
        config.mqtt_addr = loopback(&endpoint.host, endpoint.port).ok_or_else(|| {
            format!(
                "not yet supported: the image's endpoint {}:{} is not this machine",
                endpoint.host, endpoint.port
            )
        })?;
        config.endpoint = endpoint.host.to_string();
        config.sntp_addr = loopback(&image.config.ntp.host, image.config.ntp.port);
        let broker = MockBroker::start(config)
            .await
            .map_err(|e| format!("mock broker: {e}"))?;
        let workdir = tempfile::Builder::new()
            .prefix("hil-")
            .tempdir()
            .map_err(|e| format!("work folder: {e}"))?;
        Ok(Self {
            broker,
            pki: None,
            device_binary,
            workdir,
            sabotage: ImageSabotage::default(),
            given: Some(image),
        })
    }

    /// The image given with `--flash`, if any: then every scenario uses it, one at a time.
    pub fn given_image(&self) -> Option<&GivenImage> {
        self.given.as_ref()
    }

    /// The topic the device named `client_id` subscribes to.
    pub fn inbound_topic_of(&self, client_id: &str) -> String {
        match &self.given {
            Some(given) => given.config.sub_topic.to_string(),
            None => inbound_topic(client_id),
        }
    }

    /// The rig's CA, for scenarios that issue certificates.
    pub fn ca(&self) -> Result<&certs::pki::CertificateAuthority, String> {
        self.pki
            .as_ref()
            .map(|p| &p.ca)
            .ok_or_else(|| "needs the rig's own CA, which a --pki folder does not provide".into())
    }

    /// Write every later image with `sabotage` applied.
    pub fn sabotage_images(&mut self, sabotage: ImageSabotage) {
        self.sabotage = sabotage;
    }

    pub fn device_binary(&self) -> &Path {
        &self.device_binary
    }

    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    /// The config a device named `client_id` gets: the broker's endpoint as `localhost`
    /// (the server certificate's name), its SNTP server, its own inbound topic.
    pub fn device_config(&self, client_id: &str) -> Result<DeviceConfig, String> {
        let mut config = DeviceConfig::new("localhost", client_id)
            .map_err(|e| format!("config for {client_id}: {e:?}"))?;
        config.endpoint.port = self.broker.mqtt_addr().port();
        let sntp = self
            .broker
            .sntp_addr()
            .ok_or("the broker has no SNTP server")?;
        config.ntp.host = "127.0.0.1"
            .try_into()
            .map_err(|_| "NTP host too long".to_string())?;
        config.ntp.port = sntp.port();
        config.sub_topic = inbound_topic(client_id)
            .as_str()
            .try_into()
            .map_err(|_| format!("inbound topic for {client_id} too long"))?;
        if let Some(period_ms) = self.sabotage.period_ms {
            config.period_ms = period_ms;
        }
        Ok(config)
    }

    /// Issue an identity for `config.client_id` and write its flash image; returns the
    /// image's path.
    pub fn write_image(&self, config: &DeviceConfig) -> Result<PathBuf, String> {
        let client_id = config.client_id.as_str();
        let ca = self.ca()?;
        let identity = ca
            .issue_client(
                client_id,
                KeyAlgorithm::EcP256,
                Validity::days(VALIDITY_DAYS),
            )
            .map_err(|e| format!("identity for {client_id}: {e}"))?;
        let ca_der = match &self.sabotage.ca_der {
            Some(ca) => ca.clone(),
            None => ca.cert_der().to_vec(),
        };
        let creds = Credentials::new(identity.cert_der, identity.key, ca_der)?;
        let bytes = image::build_image(&creds, config, image::DEFAULT_IMAGE_SIZE)
            .map_err(|e| format!("image for {client_id}: {e}"))?;
        let path = self.workdir.path().join(format!("{client_id}.img"));
        std::fs::write(&path, bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(path)
    }
}
