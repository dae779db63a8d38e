//! The fleet's PKI: the CA that issues every device's identity, the server certificate a
//! broker started here presents, the observer's identity, and the AWS IoT policies that
//! let any fleet device and the observer do exactly what the fleet does.
//!
//! A run makes a fresh one in a temporary folder unless given a folder (`--pki DIR`):
//! several `hil fleet` processes sharing one broker must share its CA. `hil fleet pki
//! --out DIR` writes such a folder, in `certs init`'s layout, so `mock-broker serve
//! --certs DIR`, mosquitto and rumqttd serve it as they serve `certs/dev`.

use std::path::{Path, PathBuf};

use certs::output::write_set;
use certs::pki::{CertificateAuthority, InitOptions, Pki};

use crate::error::RigError;

/// The fleet's devices' policy: connect as any fleet client id, publish only on the
/// device's own topic, subscribe and receive only on its own inbound topic. Valid on AWS
/// IoT as it is: one policy for every thing of the fleet.
pub fn device_policy() -> String {
    policy(&[
        ("iot:Connect", "client/fleet-*"),
        ("iot:Publish", "topic/fleet/${iot:ClientId}"),
        ("iot:Subscribe", "topicfilter/fleet/${iot:ClientId}/in"),
        ("iot:Receive", "topic/fleet/${iot:ClientId}/in"),
    ])
}

/// The observer's policy: connect as `hil-observer` or `hil-observer-…` (one id per
/// fleet process), watch every device's topic, send to any device. A topic filter's
/// wildcard is literal in a policy's `topicfilter/` resource, so the watch filter is
/// granted as it is, and what it delivers is granted with `*`.
pub fn observer_policy() -> String {
    let client = crate::aws::DEFAULT_CLIENT_ID;
    policy(&[
        ("iot:Connect", &format!("client/{client}")),
        ("iot:Connect", &format!("client/{client}-*")),
        ("iot:Subscribe", "topicfilter/fleet/+"),
        ("iot:Receive", "topic/fleet/*"),
        ("iot:Publish", "topic/fleet/*/in"),
    ])
}

fn policy(grants: &[(&str, &str)]) -> String {
    let statements: Vec<serde_json::Value> = grants
        .iter()
        .map(|(action, resource)| {
            serde_json::json!({
                "Effect": "Allow",
                "Action": action,
                "Resource": format!("arn:aws:iot:*:*:{resource}"),
            })
        })
        .collect();
    let doc = serde_json::json!({ "Version": "2012-10-17", "Statement": statements });
    serde_json::to_string_pretty(&doc).expect("a JSON value serialises") + "\n"
}

/// A new fleet PKI in memory: a CA, a server certificate for `localhost`/`127.0.0.1`
/// plus `server_names`, the observer's identity and the fleet's policies.
fn generate(server_names: &[String]) -> Result<Pki, RigError> {
    let mut pki = Pki::generate(&InitOptions {
        thing: "fleet".into(),
        days: 30,
        extra_sans: server_names.to_vec(),
        ..InitOptions::default()
    })
    .map_err(|e| RigError::make("fleet PKI", e))?;
    pki.policy = device_policy();
    pki.observer_policy = observer_policy();
    Ok(pki)
}

/// Write a fleet PKI folder (`hil fleet pki --out DIR`); an existing file is refused.
pub fn write_folder(dir: &Path, server_names: &[String]) -> Result<(), RigError> {
    let pki = generate(server_names)?;
    write_set(dir, &pki.files(), false)?;
    Ok(())
}

/// The PKI a fleet run uses.
pub struct FleetPki {
    /// Issues each device's identity.
    pub ca: CertificateAuthority,
    /// Where ca.pem, server.pem, server.key.pem, observer.pem, observer.key.pem,
    /// policy.json and observer-policy.json are.
    pub dir: PathBuf,
    /// Holds a fresh PKI's folder for as long as the run needs it.
    _fresh: Option<tempfile::TempDir>,
}

impl FleetPki {
    /// A fresh PKI in a temporary folder, removed with this value.
    pub fn fresh() -> Result<Self, RigError> {
        let temp = tempfile::Builder::new()
            .prefix("hil-fleet-pki-")
            .tempdir()
            .map_err(|e| RigError::io("fleet PKI folder", e))?;
        let dir = temp.path().join("pki");
        write_folder(&dir, &[])?;
        let ca =
            CertificateAuthority::load_dir(&dir).map_err(|e| RigError::make("fleet PKI", e))?;
        Ok(Self {
            ca,
            dir,
            _fresh: Some(temp),
        })
    }

    /// The `certs init`-layout folder `dir` (`hil fleet pki` or `certs init`): its CA
    /// must have its key, to issue the devices' identities. The other files are checked
    /// when something needs them ([`FleetPki::file`]).
    pub fn load(dir: &Path) -> Result<Self, RigError> {
        let problem = |problem: String| RigError::PkiDir {
            dir: dir.to_path_buf(),
            problem,
        };
        if !dir.is_dir() {
            return Err(problem(
                "no such folder (make one with `hil fleet pki --out DIR`)".into(),
            ));
        }
        let ca = CertificateAuthority::load_dir(dir).map_err(|e| {
            problem(format!(
                "{e} (the fleet issues its devices' identities from this CA)"
            ))
        })?;
        Ok(Self {
            ca,
            dir: dir.to_path_buf(),
            _fresh: None,
        })
    }

    /// A file of the folder, which must exist: `what` says who needs it.
    pub fn file(&self, name: &str, what: &str) -> Result<PathBuf, RigError> {
        let path = self.dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(RigError::file(&path, format!("missing: {what} needs it")))
        }
    }

    pub fn read(&self, name: &str, what: &str) -> Result<String, RigError> {
        let path = self.file(name, what)?;
        std::fs::read_to_string(&path).map_err(|e| RigError::io(path.display().to_string(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policies_are_json_with_one_allow_per_grant() {
        for (doc, grants) in [(device_policy(), 4), (observer_policy(), 5)] {
            let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
            let statements = v["Statement"].as_array().unwrap();
            assert_eq!(statements.len(), grants);
            assert!(statements.iter().all(|s| s["Effect"] == "Allow"));
        }
        assert!(device_policy().contains("arn:aws:iot:*:*:topic/fleet/${iot:ClientId}\""));
    }

    #[test]
    fn a_folder_is_written_once_and_loads() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("fleet");
        write_folder(&dir, &["bench.local".into()]).unwrap();
        let pki = FleetPki::load(&dir).unwrap();
        assert!(
            pki.read("policy.json", "test")
                .unwrap()
                .contains("client/fleet-*")
        );
        pki.file("observer.pem", "test").unwrap();
        let again = write_folder(&dir, &[]).unwrap_err().to_string();
        assert!(again.contains("exists"), "{again}");
    }

    #[test]
    fn a_folder_without_the_ca_key_is_refused_by_name() {
        let temp = tempfile::tempdir().unwrap();
        write_folder(temp.path(), &[]).unwrap();
        std::fs::remove_file(temp.path().join("ca.key.pem")).unwrap();
        let why = FleetPki::load(temp.path()).err().unwrap().to_string();
        assert!(why.contains("--pki") && why.contains("ca.key.pem"), "{why}");
    }
}
