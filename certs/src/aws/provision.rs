//! `certs aws provision` and `certs aws observer`: key here, certificate from a CSR,
//! thing, policy, attachments, endpoint, then the output folder in one rename.

use std::path::{Path, PathBuf};

use aws_sdk_iot::types::CertificateStatus;
use firmware_core::config::{self, DeviceConfig};
use rcgen::{CertificateParams, DistinguishedName, DnType};

use super::errors::{AwsFailure, Created, from_sdk};
use super::{IdentityKind, MANIFEST_FILE, Manifest, Progress, Session};
use crate::creds::{CA_FILE, CERT_FILE, Credentials, KEY_FILE};
use crate::error::{CertsError, OutputProblem};
use crate::image;
use crate::keys::{KeyAlgorithm, PrivateKey};
use crate::output::OutFile;
use crate::x509::{self, CertInfo};

/// What to provision.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: IdentityKind,
    /// Thing name (device) or MQTT client id (observer): the certificate's CN too.
    pub name: String,
    pub policy_name: String,
    pub policy_document: String,
    pub key: KeyAlgorithm,
    pub out: PathBuf,
    /// Replace an output folder provision did not write, and a policy with other content.
    pub force: bool,
}

/// The device image's settings beyond the identity.
#[derive(Debug, Clone, Default)]
pub struct DeviceSettings {
    /// `HOST[:PORT]` instead of the account's `iot:Data-ATS` endpoint.
    pub endpoint: Option<String>,
    pub wifi_ssid: Option<String>,
    pub wifi_password: Option<String>,
    pub pub_topic: String,
    pub sub_topic: String,
    /// `HOST[:PORT]` of the SNTP server instead of the default.
    pub ntp: Option<String>,
    /// DER of the CA the device trusts for the broker (Amazon Root CA 1 unless told).
    pub server_ca_der: Vec<u8>,
}

/// The identity as provisioned: what goes into the output folder.
pub struct Provisioned {
    pub manifest: Manifest,
    pub cert_der: Vec<u8>,
    pub key: PrivateKey,
}

/// Where the private key lives in an output folder of `kind`.
fn key_file(kind: IdentityKind) -> &'static str {
    match kind {
        IdentityKind::Thing => "device/private.der",
        IdentityKind::Observer => "observer.key.pem",
    }
}

/// What an earlier run left in `out` that this run may reuse: its manifest and key.
/// An output folder written by something else is refused unless `force`.
pub fn previous_run(plan: &Plan) -> Result<Option<(Manifest, PrivateKey)>, CertsError> {
    if plan.out.exists() && !plan.out.is_dir() {
        return Err(CertsError::output(&plan.out, OutputProblem::NotADirectory));
    }
    let manifest = match super::Manifest::read(&plan.out)? {
        Some(m) if m.kind == plan.kind && m.name == plan.name => m,
        other => {
            let empty = std::fs::read_dir(&plan.out)
                .map(|mut d| d.next().is_none())
                .unwrap_or(true);
            if !empty && !plan.force {
                let whose = match other {
                    Some(m) => format!("holds {:?} {:?}", m.kind, m.name),
                    None => format!("has no {MANIFEST_FILE}"),
                };
                return Err(CertsError::argument(
                    "--out",
                    format!(
                        "{} exists and {whose}: not this identity's folder (use --force to \
                         replace it, or another --out)",
                        plan.out.display()
                    ),
                ));
            }
            return Ok(None);
        }
    };
    let path = plan.out.join(key_file(plan.kind));
    if !path.exists() {
        // The manifest without its key: the certificate cannot be used again.
        return Ok(None);
    }
    let key = x509::read_private_key(&path)?;
    Ok(Some((manifest, key)))
}

/// Run every AWS step of `plan`, printing progress. On failure the error lists what was
/// created so far.
pub async fn provision(
    session: &Session,
    plan: &Plan,
    previous: Option<(Manifest, PrivateKey)>,
    endpoint_override: Option<&str>,
    progress: &mut Progress<'_>,
) -> Result<Provisioned, CertsError> {
    let client = &session.client;
    let region = session.region.as_str();
    let mut created: Vec<Created> = Vec::new();
    let failed = |progress: &mut Progress<'_>, mut failure: AwsFailure, created: &[Created]| {
        progress.done("FAILED");
        failure.created = created.to_vec();
        CertsError::Aws(Box::new(failure))
    };
    if let Some((m, _)) = &previous
        && m.region != region
    {
        return Err(CertsError::argument(
            "--region",
            format!(
                "{} holds {} provisioned in region {}, not {region}: pass --region {} or \
                 deprovision it first",
                plan.out.display(),
                m.name,
                m.region,
                m.region
            ),
        ));
    }

    // 1-2. Key and certificate: reuse the earlier run's if AWS still has it active.
    progress.start("key and certificate");
    let mut reused: Option<(Manifest, PrivateKey, Vec<u8>)> = None;
    if let Some((m, key)) = previous {
        let described = client
            .describe_certificate()
            .certificate_id(&m.certificate_id)
            .send()
            .await;
        match described {
            Ok(out) => {
                let desc = out.certificate_description();
                let active = desc.and_then(|d| d.status()) == Some(&CertificateStatus::Active);
                let der = desc
                    .and_then(|d| d.certificate_pem())
                    .and_then(|p| pem::parse(p).ok())
                    .map(|p| p.into_contents());
                if let (true, Some(der)) = (active, der)
                    && key_matches(&key, &der)
                {
                    reused = Some((m, key, der));
                }
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) => {}
            Err(e) => {
                return Err(failed(
                    progress,
                    from_sdk("DescribeCertificate", region, &e),
                    &created,
                ));
            }
        }
    }
    let (previous_manifest, key, cert_der, cert_id, cert_arn) = match reused {
        Some((m, key, der)) => {
            progress.done(&format!(
                "reused certificate {} (ACTIVE) and its key from {}",
                m.certificate_id,
                plan.out.display()
            ));
            let (id, arn) = (m.certificate_id.clone(), m.certificate_arn.clone());
            (Some(m), key, der, id, arn)
        }
        None => {
            let key = PrivateKey::generate(plan.key)
                .map_err(|e| CertsError::internal(format!("key generation: {e:?}")))?;
            let csr = csr_pem(&key, &plan.name)?;
            let out = client
                .create_certificate_from_csr()
                .certificate_signing_request(csr)
                .set_as_active(true)
                .send()
                .await
                .map_err(|e| {
                    failed(
                        progress,
                        from_sdk("CreateCertificateFromCsr", region, &e),
                        &created,
                    )
                })?;
            let id = out.certificate_id().unwrap_or_default().to_string();
            let arn = out.certificate_arn().unwrap_or_default().to_string();
            created.push(Created {
                what: format!("certificate {id} (ACTIVE)"),
                cleanup: format!(
                    "aws iot update-certificate --region {region} --certificate-id {id} \
                     --new-status INACTIVE && aws iot delete-certificate --region {region} \
                     --certificate-id {id} --force-delete (detach its policy and thing first)"
                ),
            });
            let der = out
                .certificate_pem()
                .and_then(|p| pem::parse(p).ok())
                .map(|p| p.into_contents());
            let der = match der {
                Some(der) if key_matches(&key, &der) => der,
                Some(_) => {
                    return Err(failed(
                        progress,
                        AwsFailure {
                            call: "CreateCertificateFromCsr",
                            code: "CertificateKeyMismatch".into(),
                            detail: "the certificate returned does not hold the public key \
                                     of the CSR"
                                .into(),
                            cause: "the service did not sign the CSR's key; the device could \
                                    never use this certificate"
                                .into(),
                            created: Vec::new(),
                        },
                        &created,
                    ));
                }
                None => {
                    return Err(failed(
                        progress,
                        AwsFailure {
                            call: "CreateCertificateFromCsr",
                            code: "NoCertificate".into(),
                            detail: "the response holds no PEM certificate".into(),
                            cause: "an unexpected answer from the service".into(),
                            created: Vec::new(),
                        },
                        &created,
                    ));
                }
            };
            progress.done(&format!(
                "created certificate {id} for a new {} key (the key stays here)",
                plan.key
            ));
            (None, key, der, id, arn)
        }
    };

    // 3. The thing (the observer has none: its policy names its client id).
    let mut thing_created = previous_manifest.as_ref().is_some_and(|m| m.thing_created);
    if plan.kind == IdentityKind::Thing {
        progress.start(&format!("thing {}", plan.name));
        match client.describe_thing().thing_name(&plan.name).send().await {
            Ok(_) => progress.done("reused (exists)"),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                client
                    .create_thing()
                    .thing_name(&plan.name)
                    .send()
                    .await
                    .map_err(|e| failed(progress, from_sdk("CreateThing", region, &e), &created))?;
                thing_created = true;
                created.push(Created {
                    what: format!("thing {}", plan.name),
                    cleanup: format!(
                        "aws iot delete-thing --region {region} --thing-name {}",
                        plan.name
                    ),
                });
                progress.done("created");
            }
            Err(e) => {
                return Err(failed(
                    progress,
                    from_sdk("DescribeThing", region, &e),
                    &created,
                ));
            }
        }
    }

    // 4. The policy: created, reused if identical, replaced only with --force.
    let mut policy_created = previous_manifest.as_ref().is_some_and(|m| m.policy_created);
    progress.start(&format!("policy {}", plan.policy_name));
    match client
        .get_policy()
        .policy_name(&plan.policy_name)
        .send()
        .await
    {
        Ok(existing) => {
            let current = existing.policy_document().unwrap_or_default();
            if same_policy(current, &plan.policy_document) {
                progress.done("reused (same document)");
            } else if plan.force {
                client
                    .create_policy_version()
                    .policy_name(&plan.policy_name)
                    .policy_document(&plan.policy_document)
                    .set_as_default(true)
                    .send()
                    .await
                    .map_err(|e| {
                        failed(
                            progress,
                            from_sdk("CreatePolicyVersion", region, &e),
                            &created,
                        )
                    })?;
                progress.done("updated (--force: new default version)");
                progress.line(&indent(&policy_diff(current, &plan.policy_document)));
            } else {
                progress.done("differs");
                let mut failure = AwsFailure {
                    call: "policy check",
                    code: "PolicyDiffers".into(),
                    detail: format!(
                        "policy {} exists with other content (- in AWS, + wanted):\n{}",
                        plan.policy_name,
                        indent(&policy_diff(current, &plan.policy_document))
                    ),
                    cause: "another setup uses this policy name: pass --force to make the \
                            wanted document its default version, or --policy-name to use another"
                        .into(),
                    created: Vec::new(),
                };
                failure.created = created.clone();
                return Err(CertsError::Aws(Box::new(failure)));
            }
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            client
                .create_policy()
                .policy_name(&plan.policy_name)
                .policy_document(&plan.policy_document)
                .send()
                .await
                .map_err(|e| failed(progress, from_sdk("CreatePolicy", region, &e), &created))?;
            policy_created = true;
            created.push(Created {
                what: format!("policy {}", plan.policy_name),
                cleanup: format!(
                    "aws iot delete-policy --region {region} --policy-name {}",
                    plan.policy_name
                ),
            });
            progress.done("created");
        }
        Err(e) => {
            return Err(failed(
                progress,
                from_sdk("GetPolicy", region, &e),
                &created,
            ));
        }
    }

    // 5. Attachments (both calls are idempotent on AWS's side).
    progress.start(match plan.kind {
        IdentityKind::Thing => "attach policy and thing to the certificate",
        IdentityKind::Observer => "attach policy to the certificate",
    });
    client
        .attach_policy()
        .policy_name(&plan.policy_name)
        .target(&cert_arn)
        .send()
        .await
        .map_err(|e| failed(progress, from_sdk("AttachPolicy", region, &e), &created))?;
    if plan.kind == IdentityKind::Thing {
        client
            .attach_thing_principal()
            .thing_name(&plan.name)
            .principal(&cert_arn)
            .send()
            .await
            .map_err(|e| {
                failed(
                    progress,
                    from_sdk("AttachThingPrincipal", region, &e),
                    &created,
                )
            })?;
        progress.done("attached");
    } else {
        progress.done("attached");
    }

    // 6. The endpoint devices connect to.
    progress.start("endpoint");
    let endpoint = match endpoint_override {
        Some(e) => {
            progress.done(&format!("{e} (from --endpoint)"));
            e.to_string()
        }
        None => {
            let out = client
                .describe_endpoint()
                .endpoint_type("iot:Data-ATS")
                .send()
                .await
                .map_err(|e| {
                    failed(progress, from_sdk("DescribeEndpoint", region, &e), &created)
                })?;
            let address = out.endpoint_address().unwrap_or_default().to_string();
            progress.done(&format!("{address} (iot:Data-ATS)"));
            address
        }
    };

    Ok(Provisioned {
        manifest: Manifest {
            kind: plan.kind,
            name: plan.name.clone(),
            region: region.to_string(),
            certificate_id: cert_id,
            certificate_arn: cert_arn,
            thing_created,
            policy_name: plan.policy_name.clone(),
            policy_created,
            endpoint,
        },
        cert_der,
        key,
    })
}

/// The device's files: `device/{cert,private,ca}.der`, `flash.img`, the policy, the manifest.
pub fn device_files(
    done: &Provisioned,
    settings: &DeviceSettings,
    policy_document: &str,
) -> Result<Vec<OutFile>, CertsError> {
    let creds = Credentials::new(
        done.cert_der.clone(),
        done.key.clone(),
        settings.server_ca_der.clone(),
    )
    .map_err(CertsError::internal)?;
    let (host, port) = split_endpoint(&done.manifest.endpoint)?;
    let mut config = DeviceConfig::new(host, &done.manifest.name)
        .map_err(|e| CertsError::argument("--thing", e))?;
    config.endpoint.port = port;
    if let Some(ssid) = &settings.wifi_ssid {
        config.wifi.ssid = config::set_str("wifi.ssid", ssid)
            .map_err(|e| CertsError::argument("--wifi-ssid", e))?;
    }
    if let Some(password) = &settings.wifi_password {
        config.wifi.password = config::set_str("wifi.password", password)
            .map_err(|e| CertsError::argument(image::WIFI_PASSWORD_ENV, e))?;
    }
    config.pub_topic = config::set_str("pub_topic", &settings.pub_topic)
        .map_err(|e| CertsError::argument("--pub-topic", e))?;
    config.sub_topic = config::set_str("sub_topic", &settings.sub_topic)
        .map_err(|e| CertsError::argument("--sub-topic", e))?;
    if let Some(ntp) = &settings.ntp {
        let (host, port) = match ntp.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .map_err(|_| CertsError::argument("--ntp", format!("{ntp:?}: bad port")))?,
            ),
            None => (ntp.as_str(), config::DEFAULT_NTP_PORT),
        };
        config.ntp.host =
            config::set_str("ntp.host", host).map_err(|e| CertsError::argument("--ntp", e))?;
        config.ntp.port = port;
    }
    let img = image::build_image(&creds, &config, image::DEFAULT_IMAGE_SIZE)
        .map_err(|e| CertsError::internal(format!("flash image: {e}")))?;
    Ok(vec![
        OutFile::public(Path::new("device").join(CERT_FILE), creds.cert_der.clone()),
        OutFile::secret(Path::new("device").join(KEY_FILE), creds.key_der()),
        OutFile::public(Path::new("device").join(CA_FILE), creds.ca_der.clone()),
        OutFile::secret("flash.img", img),
        OutFile::public("policy.json", policy_document.to_string()),
        OutFile::public(MANIFEST_FILE, done.manifest.to_json()),
    ])
}

/// The observer's files, in the forms `hil --observer-cert/--observer-key/--observer-ca` read.
pub fn observer_files(
    done: &Provisioned,
    server_ca_der: &[u8],
    policy_document: &str,
) -> Vec<OutFile> {
    vec![
        OutFile::public("observer.pem", x509::cert_pem(&done.cert_der)),
        OutFile::secret("observer.key.pem", done.key.to_pkcs8_pem().as_bytes()),
        OutFile::public("AmazonRootCA1.pem", x509::cert_pem(server_ca_der)),
        OutFile::public("observer-policy.json", policy_document.to_string()),
        OutFile::public(MANIFEST_FILE, done.manifest.to_json()),
    ]
}

/// Write `files` as the folder `out`, whole or not at all: into a temporary folder
/// beside it, then one rename (an earlier run's folder is moved aside first and removed
/// after).
pub fn write_folder(out: &Path, files: &[OutFile]) -> Result<(), CertsError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| CertsError::io(&parent, e))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.new-"))
        .tempdir_in(&parent)
        .map_err(|e| CertsError::io(&parent, e))?;
    for file in files {
        let path = staging.path().join(&file.name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| CertsError::io(dir, e))?;
        }
        crate::output::write_file(&path, &file.contents, file.secret, false)?;
    }
    let aside = if out.exists() {
        let aside = tempfile::Builder::new()
            .prefix(&format!(".{name}.old-"))
            .tempdir_in(&parent)
            .map_err(|e| CertsError::io(&parent, e))?;
        let old = aside.path().join(&name);
        std::fs::rename(out, &old).map_err(|e| CertsError::io(out, e))?;
        Some((aside, old))
    } else {
        None
    };
    if let Err(e) = std::fs::rename(staging.path(), out) {
        if let Some((_, old)) = &aside {
            // Put the earlier folder back; the error is what matters.
            let _ = std::fs::rename(old, out);
        }
        return Err(CertsError::io(out, e));
    }
    // `aside` (the old folder) is removed when dropped.
    Ok(())
}

fn csr_pem(key: &PrivateKey, common_name: &str) -> Result<String, CertsError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(CertsError::internal)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let signer = key.to_rcgen().map_err(CertsError::internal)?;
    params
        .serialize_request(&signer)
        .and_then(|csr| csr.pem())
        .map_err(CertsError::internal)
}

fn key_matches(key: &PrivateKey, cert_der: &[u8]) -> bool {
    CertInfo::from_der(cert_der).is_ok_and(|info| key.matches(&info.public_key))
}

/// Policies are equal if their JSON is (AWS may reformat the text).
pub fn same_policy(current: &str, wanted: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(current),
        serde_json::from_str::<serde_json::Value>(wanted),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => current.trim() == wanted.trim(),
    }
}

/// A line diff of the two documents, pretty-printed: `-` only in `current`, `+` only
/// in `wanted`.
pub fn policy_diff(current: &str, wanted: &str) -> String {
    let pretty = |s: &str| {
        serde_json::from_str::<serde_json::Value>(s)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| s.to_string())
    };
    let (a, b) = (pretty(current), pretty(wanted));
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    // Longest common subsequence table: the documents are a few dozen lines.
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut diff) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            diff.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            diff.push(format!("- {}", a[i]));
            i += 1;
        } else {
            diff.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    diff.join("\n")
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `HOST[:PORT]`, port 8883 if absent.
fn split_endpoint(endpoint: &str) -> Result<(&str, u16), CertsError> {
    match endpoint.rsplit_once(':') {
        Some((host, port)) => port
            .parse()
            .map(|p| (host, p))
            .map_err(|_| CertsError::argument("--endpoint", format!("{endpoint:?}: bad port"))),
        None => Ok((endpoint, config::DEFAULT_MQTT_PORT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_diff_marks_removed_and_added_lines() {
        let diff = policy_diff(r#"{"a": 1, "b": 2}"#, r#"{"a": 1, "b": 3}"#);
        assert_eq!(diff, "  {\n    \"a\": 1,\n-   \"b\": 2\n+   \"b\": 3\n  }");
        assert!(same_policy(r#"{"a": [1, 2]}"#, "{\n \"a\":[1,2]}"));
        assert!(!same_policy(r#"{"a": [1, 2]}"#, r#"{"a": [2, 1]}"#));
    }
}
