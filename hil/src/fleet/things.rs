//! `hil fleet --target aws`: the fleet's devices are things registered in an AWS account,
//! one folder each as `certs aws provision --out` writes it. Each device boots from its
//! folder's `flash.img` (its certificate, key, the endpoint's CA, client id and topics),
//! with two changes: the clock comes from the fleet's own SNTP server (the devices run on
//! this host), and `--endpoint`, if given, replaces the image's.
//!
//! The collector tells devices apart by topic, so each thing must publish to
//! `fleet/<thing name>` (`certs aws provision --pub-topic fleet/<thing>`), which the
//! observer's `fleet/+` covers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use certs::image::{self, CONFIG_PATH, ImageContents};
use firmware_core::config::DeviceConfig;

use super::target::pub_topic;
use crate::aws::Endpoint;
use crate::error::RigError;

/// The image each thing folder holds.
pub const IMAGE_FILE: &str = "flash.img";

/// One thing: its folder and what its image holds.
pub struct Thing {
    pub dir: PathBuf,
    contents: ImageContents,
    size: usize,
    pub config: DeviceConfig,
}

impl Thing {
    fn read(dir: &Path) -> Result<Self, RigError> {
        let path = dir.join(IMAGE_FILE);
        let bytes = std::fs::read(&path).map_err(|e| RigError::file(&path, e))?;
        let contents = image::read_image(&bytes)
            .map_err(|e| RigError::file(&path, format!("not a flash image: {e}")))?;
        let config = contents
            .file(CONFIG_PATH)
            .ok_or_else(|| RigError::file(&path, format!("no {CONFIG_PATH}")))
            .and_then(|json| {
                DeviceConfig::from_json(json)
                    .map_err(|e| RigError::file(&path, format!("{CONFIG_PATH}: {e:?}")))
            })?;
        let id = config.client_id.as_str();
        let wanted = pub_topic(id);
        if config.pub_topic.as_str() != wanted {
            return Err(RigError::file(
                &path,
                format!(
                    "{id} publishes to {:?}; a fleet device publishes to {wanted:?} (the \
                     fleet tells devices apart by topic): provision it with `certs aws \
                     provision --thing {id} --pub-topic {wanted} --sub-topic {wanted}/in`",
                    config.pub_topic.as_str()
                ),
            ));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            size: bytes.len(),
            contents,
            config,
        })
    }

    pub fn client_id(&self) -> &str {
        self.config.client_id.as_str()
    }

    /// Where the image says the broker is.
    pub fn endpoint(&self) -> String {
        format!(
            "{}:{}",
            self.config.endpoint.host.as_str(),
            self.config.endpoint.port
        )
    }

    /// The thing's image, its clock from `sntp` and its broker `endpoint` if given.
    pub fn image(
        &self,
        endpoint: Option<&Endpoint>,
        sntp: SocketAddr,
    ) -> Result<Vec<u8>, RigError> {
        let path = self.dir.join(IMAGE_FILE);
        let what = |e: &dyn std::fmt::Display| RigError::file(&path, e.to_string());
        let mut config = self.config.clone();
        if let Some(endpoint) = endpoint {
            config.endpoint.host = endpoint
                .host
                .as_str()
                .try_into()
                .map_err(|_| what(&"--endpoint: host too long"))?;
            config.endpoint.port = endpoint.port;
        }
        config.ntp.host = sntp
            .ip()
            .to_string()
            .as_str()
            .try_into()
            .map_err(|_| what(&"NTP host too long"))?;
        config.ntp.port = sntp.port();
        let json = image::config_json(&config);
        let files: Vec<(&str, &[u8])> = self
            .contents
            .files
            .iter()
            .map(|(name, data)| {
                let data = if name == CONFIG_PATH {
                    json.as_bytes()
                } else {
                    data.as_slice()
                };
                (name.as_str(), data)
            })
            .collect();
        image::build_image_files(&files, self.size).map_err(|e| what(&e))
    }
}

/// The first `devices` thing folders of `dir` (every one if `None`), in name order: each
/// subfolder with a `flash.img`. Two things with one client id, or fewer things than
/// asked for, are refused.
pub fn read(dir: &Path, devices: Option<u32>) -> Result<Vec<Thing>, RigError> {
    let entries = std::fs::read_dir(dir).map_err(|e| RigError::file(dir, e))?;
    let mut folders: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.join(IMAGE_FILE).is_file())
        .collect();
    folders.sort();
    if folders.is_empty() {
        return Err(RigError::file(
            dir,
            "no thing folders (subfolders with a flash.img, from `certs aws provision --out \
             DIR/<thing>`)",
        ));
    }
    if let Some(wanted) = devices {
        if wanted as usize > folders.len() {
            return Err(RigError::file(
                dir,
                format!(
                    "--devices {wanted}, but only {} thing folders",
                    folders.len()
                ),
            ));
        }
        folders.truncate(wanted as usize);
    }
    let things = folders
        .iter()
        .map(|folder| Thing::read(folder))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = std::collections::HashMap::new();
    for thing in &things {
        if let Some(other) = seen.insert(thing.client_id().to_string(), &thing.dir) {
            return Err(RigError::file(
                &thing.dir,
                format!(
                    "client id {} is also {}'s: each device needs its own",
                    thing.client_id(),
                    other.display()
                ),
            ));
        }
    }
    Ok(things)
}

/// The endpoint the things dial: `--endpoint`, or the one their images agree on.
pub fn endpoint(things: &[Thing], given: Option<&Endpoint>) -> Result<Endpoint, RigError> {
    if let Some(given) = given {
        return Ok(given.clone());
    }
    let first = things[0].endpoint();
    if let Some(other) = things.iter().find(|t| t.endpoint() != first) {
        return Err(RigError::file(
            other.dir.join(IMAGE_FILE),
            format!(
                "dials {}, but {} dials {first}: give --endpoint",
                other.endpoint(),
                things[0].dir.display()
            ),
        ));
    }
    Endpoint::parse(&first)
}
