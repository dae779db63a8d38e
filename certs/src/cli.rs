//! The command line. `main.rs` parses it; [`crate::run`] executes it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::keys::KeyAlgorithm;

/// Test PKI, AWS IoT console import, flash image builder and inspector for the thing.
#[derive(Debug, Parser)]
#[command(name = "certs", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a self-signed test PKI: CA, broker server cert, device cert, observer cert,
    /// AWS IoT policy.
    Init(InitArgs),
    /// Turn AWS IoT console downloads into the DER files the device reads.
    Import(ImportArgs),
    /// Build the LittleFS flash image holding the credentials and /config.json.
    Image(ImageArgs),
    /// Describe certificates, keys and flash images (never prints secrets).
    Inspect(InspectArgs),
    /// Provision or remove AWS IoT identities with the AWS SDK (credentials and region
    /// as the AWS CLI finds them).
    #[cfg(feature = "aws")]
    Aws(AwsArgs),
}

#[cfg(feature = "aws")]
#[derive(Debug, Args)]
pub struct AwsArgs {
    #[command(subcommand)]
    pub command: AwsCommand,
}

#[cfg(feature = "aws")]
#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// Device key (made here), certificate from a CSR, thing, least-privilege policy,
    /// attachments, endpoint; writes OUT/device/{cert,private,ca}.der and OUT/flash.img.
    Provision(AwsProvisionArgs),
    /// The same for the rig's observer identity (`make hil TARGET=aws`) with the
    /// observer policy; writes OUT/observer.pem, observer.key.pem, AmazonRootCA1.pem.
    Observer(AwsObserverArgs),
    /// Detach, deactivate and delete the certificate, and the thing and policy if
    /// provision created them, as recorded in OUT/aws-manifest.json.
    Deprovision(AwsDeprovisionArgs),
}

/// Which account and region: unset flags fall back to the AWS CLI's environment
/// variables and profiles.
#[cfg(feature = "aws")]
#[derive(Debug, Args)]
pub struct AwsAccount {
    /// AWS region [default: AWS_REGION, or the profile's region].
    #[arg(long, value_name = "R")]
    pub region: Option<String>,
    /// Named profile from ~/.aws/config [default: AWS_PROFILE, or `default`].
    #[arg(long, value_name = "P")]
    pub profile: Option<String>,
}

#[cfg(feature = "aws")]
#[derive(Debug, Args)]
pub struct AwsProvisionArgs {
    /// Thing name: the certificate's CN and the device's MQTT client id.
    #[arg(long, value_name = "NAME")]
    pub thing: String,
    #[command(flatten)]
    pub account: AwsAccount,
    /// Output folder (written whole at the end, or not at all).
    #[arg(long, value_name = "DIR", default_value = "certs/aws")]
    pub out: PathBuf,
    /// WiFi network name for the image (passphrase from WIFI_PASSWORD, never a flag).
    #[arg(long, value_name = "S")]
    pub wifi_ssid: Option<String>,
    /// Device key algorithm.
    #[arg(long, value_enum, default_value_t = KeyAlgorithm::EcP256)]
    pub key: KeyAlgorithm,
    /// Policy name [default: THING-policy].
    #[arg(long, value_name = "NAME")]
    pub policy_name: Option<String>,
    /// Topic the device publishes to (and the policy allows).
    #[arg(long, value_name = "T", default_value = "outTopic")]
    pub pub_topic: String,
    /// Topic filter the device subscribes to (and the policy allows).
    #[arg(long, value_name = "T", default_value = "inTopic")]
    pub sub_topic: String,
    /// Broker for the image instead of the account's iot:Data-ATS endpoint (a custom
    /// domain), HOST[:PORT].
    #[arg(long, value_name = "HOST[:PORT]")]
    pub endpoint: Option<String>,
    /// The CA the device trusts for the broker [default: Amazon Root CA 1, built in].
    #[arg(long, value_name = "FILE")]
    pub server_ca: Option<PathBuf>,
    /// SNTP server for the image [default: pool.ntp.org:123; port 123 if omitted].
    #[arg(long, value_name = "HOST[:PORT]")]
    pub ntp: Option<String>,
    /// Replace an output folder provision did not write, and make the wanted document
    /// the default version of a policy that exists with other content.
    #[arg(long)]
    pub force: bool,
}

#[cfg(feature = "aws")]
#[derive(Debug, Args)]
pub struct AwsObserverArgs {
    /// The observer's MQTT client id (the policy also allows NAME-*).
    #[arg(long, value_name = "NAME", default_value = "hil-observer")]
    pub name: String,
    #[command(flatten)]
    pub account: AwsAccount,
    /// Output folder (written whole at the end, or not at all).
    #[arg(long, value_name = "DIR", default_value = "certs/aws-observer")]
    pub out: PathBuf,
    /// Key algorithm.
    #[arg(long, value_enum, default_value_t = KeyAlgorithm::EcP256)]
    pub key: KeyAlgorithm,
    /// Policy name [default: NAME-policy].
    #[arg(long, value_name = "NAME")]
    pub policy_name: Option<String>,
    /// The device's publish topic, which the observer watches, or a filter covering a
    /// fleet's (`fleet/+` for `hil fleet --target aws`).
    #[arg(long, value_name = "T", default_value = "outTopic")]
    pub watch_topic: String,
    /// The device's subscribe topic, on which the observer injects.
    #[arg(long, value_name = "T", default_value = "inTopic")]
    pub inject_topic: String,
    /// Replace an output folder provision did not write, and a policy with other content.
    #[arg(long)]
    pub force: bool,
}

#[cfg(feature = "aws")]
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["thing", "observer"])))]
pub struct AwsDeprovisionArgs {
    /// The thing provisioned into OUT [OUT default: certs/aws].
    #[arg(long, value_name = "NAME")]
    pub thing: Option<String>,
    /// The observer provisioned into OUT [OUT default: certs/aws-observer].
    #[arg(long, value_name = "NAME")]
    pub observer: Option<String>,
    /// AWS region [default: the one the manifest records].
    #[arg(long, value_name = "R")]
    pub region: Option<String>,
    /// Named profile from ~/.aws/config [default: AWS_PROFILE, or `default`].
    #[arg(long, value_name = "P")]
    pub profile: Option<String>,
    /// The folder provision wrote (its aws-manifest.json says what to remove).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// AWS IoT thing name: the device certificate's CN and the client id.
    #[arg(long, value_name = "NAME", default_value = "ESPthing")]
    pub thing: String,
    /// Key algorithm for every key of the PKI.
    #[arg(long, value_enum, default_value_t = KeyAlgorithm::EcP256)]
    pub key: KeyAlgorithm,
    /// The broker's host name (server certificate CN and SAN).
    #[arg(long, value_name = "HOST", default_value = "localhost")]
    pub endpoint: String,
    /// Extra server certificate SAN (DNS name or IP address); repeatable.
    #[arg(long = "san", value_name = "NAME|IP")]
    pub sans: Vec<String>,
    /// Validity in days.
    #[arg(long, value_name = "N", default_value_t = 365)]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Device certificate from the console (`xxxx-certificate.pem.crt[.txt]`).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Device private key from the console (`xxxx-private.pem.key`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Root CA the broker chains to (`AmazonRootCA1.pem`).
    #[arg(long, value_name = "FILE")]
    pub ca: PathBuf,
    /// Output directory for cert.der, private.der, ca.der.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Directory with cert.der, private.der, ca.der (`certs import` output, or the
    /// `device/` folder of `certs init`).
    #[arg(long, value_name = "DIR")]
    pub creds: PathBuf,
    /// Image file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// A device.json to start from (the /config.json format); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// WiFi network name.
    #[arg(long, value_name = "S")]
    pub wifi_ssid: Option<String>,
    /// WiFi passphrase (stored in the image, never printed). Visible to every user in
    /// the process list: prefer the WIFI_PASSWORD environment variable or
    /// --wifi-password-stdin. Order: --wifi-password-stdin, this flag, WIFI_PASSWORD.
    #[arg(long, value_name = "P")]
    pub wifi_password: Option<String>,
    /// Read the WiFi passphrase from the first line of stdin (`read -rs P; printf
    /// '%s\n' "$P" | certs image ...`), out of sight of `ps`.
    #[arg(long, conflicts_with = "wifi_password")]
    pub wifi_password_stdin: bool,
    /// MQTT broker [default: localhost:8883; port 8883 if omitted].
    #[arg(long, value_name = "HOST[:PORT]")]
    pub endpoint: Option<String>,
    /// MQTT client id [default: the device certificate's CN].
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Topic the device publishes to [default: outTopic].
    #[arg(long, value_name = "T")]
    pub pub_topic: Option<String>,
    /// Topic filter the device subscribes to [default: inTopic].
    #[arg(long, value_name = "T")]
    pub sub_topic: Option<String>,
    /// Publish period in milliseconds [default: 2000].
    #[arg(long, value_name = "N")]
    pub period_ms: Option<u32>,
    /// MQTT keep-alive in seconds, 30..=1200 [default: 60].
    #[arg(long, value_name = "N")]
    pub keepalive_s: Option<u16>,
    /// QoS of publishes and the subscription [default: 1].
    #[arg(long, value_name = "0|1")]
    pub qos: Option<u8>,
    /// SNTP server [default: pool.ntp.org:123; port 123 if omitted].
    #[arg(long, value_name = "HOST[:PORT]")]
    pub ntp: Option<String>,
    /// Seconds between clock re-syncs, 60..=86400 [default: 3600].
    #[arg(long, value_name = "N")]
    pub ntp_resync_s: Option<u32>,
    /// Image size in bytes, a multiple of 4096.
    #[arg(long, value_name = "BYTES", default_value_t = 65536)]
    pub size: usize,
    /// Overwrite an existing image.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Certificates, keys (PEM or DER) or flash images.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Certificate to match keys against.
    #[arg(long, value_name = "CERT")]
    pub cert: Option<PathBuf>,
}
