//! `certs aws`: an AWS IoT identity from an AWS account in one command, and its removal.
//!
//! - [`provision`]: device key made here, certificate from `CreateCertificateFromCsr`,
//!   thing, least-privilege policy, attachments, the `iot:Data-ATS` endpoint, then the
//!   DER files and the flash image (or, for the rig's observer, PEM files for `hil`).
//! - [`deprovision`]: removes exactly what provision recorded in its manifest.
//!
//! Credentials and region come from the SDK's standard chains (environment, profiles,
//! SSO, `credential_process`, instance roles), `AWS_ENDPOINT_URL` included, so the tool
//! behaves as the AWS CLI does in the same shell.

pub mod deprovision;
pub mod errors;
pub mod provision;

use std::io::Write;
use std::path::Path;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_iot::config::ProvideCredentials;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use serde::{Deserialize, Serialize};

use crate::error::{CertsError, InputProblem};
use errors::AwsFailure;

/// Amazon Root CA 1, the root AWS IoT Core's ATS endpoints chain to (a public
/// certificate, from <https://www.amazontrust.com/repository/AmazonRootCA1.pem>).
pub const AMAZON_ROOT_CA1_PEM: &str = include_str!("../../ca/AmazonRootCA1.pem");

/// What provision created, in the output folder: deprovision removes these and no more.
pub const MANIFEST_FILE: &str = "aws-manifest.json";

/// The identity a manifest describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityKind {
    /// The device: a thing, its certificate, the thing's policy.
    Thing,
    /// The rig's observer: a certificate and the observer policy (no thing).
    Observer,
}

/// The AWS objects behind one provisioned identity, and which of them provision made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub kind: IdentityKind,
    /// Thing name (device) or MQTT client id (observer).
    pub name: String,
    pub region: String,
    pub certificate_id: String,
    pub certificate_arn: String,
    /// Whether provision created the thing (false: it existed and was reused).
    pub thing_created: bool,
    pub policy_name: String,
    /// Whether provision created the policy (false: it existed and was reused).
    pub policy_created: bool,
    pub endpoint: String,
}

impl Manifest {
    /// The manifest in `dir`, if there is one. A manifest that does not parse is an
    /// error naming the file: guessing would risk deleting the wrong objects.
    pub fn read(dir: &Path) -> Result<Option<Self>, CertsError> {
        let path = dir.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CertsError::io(&path, e)),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            CertsError::input(
                &path,
                InputProblem::Malformed {
                    what: "provision manifest",
                    detail: e.to_string(),
                },
            )
        })
    }

    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("plain struct serialises");
        text.push('\n');
        text
    }
}

/// A client for AWS IoT in a resolved region.
pub struct Session {
    pub client: aws_sdk_iot::Client,
    pub region: String,
}

/// Resolve region and credentials the standard way, with `region`/`profile` from the
/// flags on top, and check the credentials before any call so "no credentials" is said
/// plainly rather than as a failed request.
pub async fn connect(region: Option<&str>, profile: Option<&str>) -> Result<Session, CertsError> {
    // rustls with ring: the SDK's default HTTPS client would pull in aws-lc-rs.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_string()));
    }
    if let Some(profile) = profile {
        loader = loader.profile_name(profile);
    }
    let config = loader.load().await;
    let region = config.region().map(|r| r.to_string()).ok_or_else(|| {
        CertsError::argument(
            "--region",
            "no AWS region: pass --region, set AWS_REGION, or set region in the profile",
        )
    })?;
    let no_credentials = |detail: String| {
        CertsError::Aws(Box::new(AwsFailure {
            call: "loading AWS credentials",
            code: "NoCredentials".into(),
            detail,
            cause: "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                    pass --profile (or set AWS_PROFILE), or log in (`aws configure`, \
                    `aws sso login`)"
                .into(),
            created: Vec::new(),
        }))
    };
    let provider = config
        .credentials_provider()
        .ok_or_else(|| no_credentials("no credentials provider configured".into()))?;
    provider
        .provide_credentials()
        .await
        .map_err(|e| no_credentials(errors::error_chain(&e)))?;
    Ok(Session {
        client: aws_sdk_iot::Client::new(&config),
        region,
    })
}

/// Run `work` on a single-threaded runtime: the calls are sequential anyway.
pub fn block_on<T>(work: impl std::future::Future<Output = T>) -> Result<T, CertsError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CertsError::internal(format!("tokio runtime: {e}")))?;
    Ok(runtime.block_on(work))
}

/// Progress lines: `[n/total] step: outcome`.
pub struct Progress<'a> {
    out: &'a mut dyn Write,
    step: usize,
    total: usize,
}

impl<'a> Progress<'a> {
    pub fn new(out: &'a mut dyn Write, total: usize) -> Self {
        Self {
            out,
            step: 0,
            total,
        }
    }

    /// Announce the next step before its (possibly slow) AWS call.
    pub fn start(&mut self, what: &str) {
        self.step += 1;
        write!(self.out, "[{}/{}] {what} ... ", self.step, self.total).ok();
        self.out.flush().ok();
    }

    /// The outcome of the step just started.
    pub fn done(&mut self, outcome: &str) {
        writeln!(self.out, "{outcome}").ok();
    }

    /// A line after the steps.
    pub fn line(&mut self, text: &str) {
        writeln!(self.out, "{text}").ok();
    }
}

/// Execute a `certs aws` command line; `wifi_password` is WIFI_PASSWORD's value.
pub fn run(
    command: crate::cli::AwsCommand,
    wifi_password: Option<String>,
    out: &mut dyn Write,
) -> Result<(), CertsError> {
    use crate::cli::AwsCommand;
    match command {
        AwsCommand::Provision(args) => run_provision(&args, wifi_password, out),
        AwsCommand::Observer(args) => run_observer(&args, out),
        AwsCommand::Deprovision(args) => run_deprovision(&args, out),
    }
}

/// AWS IoT's thing-name rule (`[a-zA-Z0-9:_-]+`, 1 to 128 characters), checked before
/// anything is created rather than learnt from CreateThing half-way.
fn check_thing_name(name: &str) -> Result<(), CertsError> {
    let valid = (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(CertsError::argument(
            "--thing",
            format!(
                "{}: AWS IoT thing names are 1 to 128 of a-z A-Z 0-9 : _ -",
                crate::show::text(name)
            ),
        ))
    }
}

fn server_ca_der(path: Option<&Path>) -> Result<Vec<u8>, CertsError> {
    match path {
        Some(path) => {
            let (der, info) = crate::x509::read_certificate(path)?;
            if !info.usable_as_ca() {
                return Err(CertsError::input(path, InputProblem::NotCa));
            }
            Ok(der)
        }
        None => pem::parse(AMAZON_ROOT_CA1_PEM)
            .map(|p| p.into_contents())
            .map_err(CertsError::internal),
    }
}

fn run_provision(
    args: &crate::cli::AwsProvisionArgs,
    wifi_password: Option<String>,
    out: &mut dyn Write,
) -> Result<(), CertsError> {
    check_thing_name(&args.thing)?;
    // The thing name is the MQTT client id: hold it to the device's limits up front.
    firmware_core::config::DeviceConfig::new("localhost", &args.thing)
        .map_err(|e| CertsError::argument("--thing", e))?;
    let settings = provision::DeviceSettings {
        endpoint: args.endpoint.clone(),
        wifi_ssid: args.wifi_ssid.clone(),
        wifi_password: args.wifi_ssid.as_ref().and(wifi_password),
        pub_topic: args.pub_topic.clone(),
        sub_topic: args.sub_topic.clone(),
        ntp: args.ntp.clone(),
        server_ca_der: server_ca_der(args.server_ca.as_deref())?,
    };
    let plan = provision::Plan {
        kind: IdentityKind::Thing,
        name: args.thing.clone(),
        policy_name: args
            .policy_name
            .clone()
            .unwrap_or_else(|| format!("{}-policy", args.thing)),
        policy_document: crate::policy::policy_document(
            crate::policy::THING_NAME_CLIENT,
            &args.pub_topic,
            &args.sub_topic,
        ),
        key: args.key,
        out: args.out.clone(),
        force: args.force,
    };
    let previous = provision::previous_run(&plan)?;
    let done = block_on(async {
        let session = connect(
            args.account.region.as_deref(),
            args.account.profile.as_deref(),
        )
        .await?;
        writeln!(
            out,
            "provisioning thing {} in {}",
            crate::show::text(&plan.name),
            session.region
        )
        .ok();
        let mut progress = Progress::new(out, 5);
        provision::provision(
            &session,
            &plan,
            previous,
            settings.endpoint.as_deref(),
            &mut progress,
        )
        .await
    })??;
    let files = provision::device_files(&done, &settings, &plan.policy_document)?;
    provision::write_folder(&plan.out, &files)?;
    let dir = plan.out.display();
    writeln!(out, "wrote {dir}/").ok();
    writeln!(
        out,
        "  device/cert.der private.der ca.der   the thing's credentials (key mode 0600)"
    )
    .ok();
    writeln!(
        out,
        "  flash.img   endpoint {}, client id {}{}",
        done.manifest.endpoint,
        crate::show::text(&plan.name),
        if settings.wifi_ssid.is_some() {
            ", WiFi"
        } else {
            ", no WiFi (--wifi-ssid)"
        }
    )
    .ok();
    writeln!(
        out,
        "  {MANIFEST_FILE}   what `certs aws deprovision --thing {}` removes",
        plan.name
    )
    .ok();
    Ok(())
}

fn run_observer(args: &crate::cli::AwsObserverArgs, out: &mut dyn Write) -> Result<(), CertsError> {
    if args.name.is_empty() {
        return Err(CertsError::argument("--name", "must not be empty"));
    }
    let ca = server_ca_der(None)?;
    let plan = provision::Plan {
        kind: IdentityKind::Observer,
        name: args.name.clone(),
        policy_name: args
            .policy_name
            .clone()
            .unwrap_or_else(|| format!("{}-policy", args.name)),
        policy_document: crate::policy::observer_policy_document(
            &args.name,
            &args.watch_topic,
            &args.inject_topic,
        ),
        key: args.key,
        out: args.out.clone(),
        force: args.force,
    };
    let previous = provision::previous_run(&plan)?;
    let done = block_on(async {
        let session = connect(
            args.account.region.as_deref(),
            args.account.profile.as_deref(),
        )
        .await?;
        writeln!(
            out,
            "provisioning observer {} in {}",
            crate::show::text(&plan.name),
            session.region
        )
        .ok();
        let mut progress = Progress::new(out, 4);
        provision::provision(&session, &plan, previous, None, &mut progress).await
    })??;
    let files = provision::observer_files(&done, &ca, &plan.policy_document);
    provision::write_folder(&plan.out, &files)?;
    let dir = plan.out.display();
    writeln!(
        out,
        "wrote {dir}/observer.pem observer.key.pem AmazonRootCA1.pem {MANIFEST_FILE}"
    )
    .ok();
    writeln!(
        out,
        "  make hil TARGET=aws ENDPOINT={} OBSERVER_CERT={dir}/observer.pem OBSERVER_KEY={dir}/observer.key.pem OBSERVER_CA={dir}/AmazonRootCA1.pem",
        done.manifest.endpoint
    )
    .ok();
    Ok(())
}

/// What provision wrote for each kind, removed by deprovision.
const THING_OUTPUTS: &[&str] = &[
    "device/cert.der",
    "device/private.der",
    "device/ca.der",
    "flash.img",
    "policy.json",
];
const OBSERVER_OUTPUTS: &[&str] = &[
    "observer.pem",
    "observer.key.pem",
    "AmazonRootCA1.pem",
    "observer-policy.json",
];

fn run_deprovision(
    args: &crate::cli::AwsDeprovisionArgs,
    out: &mut dyn Write,
) -> Result<(), CertsError> {
    let (kind, name, default_out, outputs) = match (&args.thing, &args.observer) {
        (Some(thing), _) => (IdentityKind::Thing, thing, "certs/aws", THING_OUTPUTS),
        (None, Some(observer)) => (
            IdentityKind::Observer,
            observer,
            "certs/aws-observer",
            OBSERVER_OUTPUTS,
        ),
        (None, None) => return Err(CertsError::argument("--thing", "required (or --observer)")),
    };
    let dir = args.out.clone().unwrap_or_else(|| default_out.into());
    let manifest = Manifest::read(&dir)?.ok_or_else(|| {
        CertsError::input(
            &dir.join(MANIFEST_FILE),
            InputProblem::Other(
                "no provision manifest: deprovision removes only what `certs aws provision` \
                 recorded (--out DIR names the folder it wrote)"
                    .into(),
            ),
        )
    })?;
    if manifest.kind != kind || &manifest.name != name {
        return Err(CertsError::input(
            &dir.join(MANIFEST_FILE),
            InputProblem::Other(format!(
                "records {:?} {:?}, not {:?} {:?}",
                manifest.kind, manifest.name, kind, name
            )),
        ));
    }
    let region = args
        .region
        .clone()
        .unwrap_or_else(|| manifest.region.clone());
    block_on(async {
        let session = connect(Some(&region), args.profile.as_deref()).await?;
        writeln!(
            out,
            "deprovisioning {} in {}",
            crate::show::text(name),
            session.region
        )
        .ok();
        let steps = if kind == IdentityKind::Thing { 5 } else { 3 };
        let mut progress = Progress::new(out, steps);
        deprovision::deprovision(&session, &manifest, &mut progress).await
    })??;
    deprovision::remove_outputs(&dir, outputs)?;
    writeln!(
        out,
        "removed {} (its credentials no longer work)",
        dir.display()
    )
    .ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// The shipped root is Amazon Root CA 1 itself: its SHA-256 fingerprint as Amazon
    /// Trust Services publishes it.
    #[test]
    fn the_shipped_root_is_amazon_root_ca_1() {
        let der = pem::parse(AMAZON_ROOT_CA1_PEM).unwrap().into_contents();
        let fingerprint: String = Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            fingerprint,
            "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e"
        );
        let info = crate::x509::CertInfo::from_der(&der).unwrap();
        assert_eq!(info.subject, "C=US, O=Amazon, CN=Amazon Root CA 1");
        assert!(info.usable_as_ca());
    }
}
