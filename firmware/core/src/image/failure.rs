//! How a failure to load the flash image is reported to the session: `/config.json`
//! problems as config failures, everything else as a credentials failure naming the file.

use super::{self as image, ImageError};
use crate::log::{ConfigFailure, FlashFile, LoadError};
use crate::session::Event;

#[cfg(test)]
mod tests;

/// A flash-image load failure as the session hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFailure {
    /// `/config.json` is missing or invalid.
    Config(ConfigFailure),
    /// A credential file (or the image itself) is missing, too large or unreadable.
    Creds { file: FlashFile, error: LoadError },
}

impl ImageFailure {
    /// Classify a failure of [`image::mount`](super::mount) or [`image::Mounted::load_credentials`](super::Mounted::load_credentials).
    pub fn of(error: &ImageError) -> Self {
        let creds = |file, error| Self::Creds { file, error };
        match error {
            ImageError::Config(c) => Self::Config(ConfigFailure::Invalid(*c)),
            ImageError::NotFound(path) => match flash_file(path) {
                Some(FlashFile::Config) => Self::Config(ConfigFailure::Load(LoadError::Missing)),
                Some(file) => creds(file, LoadError::Missing),
                None => creds(FlashFile::Image, LoadError::Missing),
            },
            ImageError::TooLarge { path, .. } => creds(
                flash_file(path).unwrap_or(FlashFile::Image),
                LoadError::TooLarge,
            ),
            ImageError::Creds { file, error } => creds(*file, *error),
            ImageError::Flash(_) => creds(FlashFile::Image, LoadError::Io),
            // Not an image, a damaged one, or one that does not fit the partition.
            ImageError::Geometry { .. }
            | ImageError::Corrupt
            | ImageError::BlockSize { .. }
            | ImageError::Truncated { .. }
            | ImageError::NoSpace
            | ImageError::BadPath
            | ImageError::Lfs(_) => creds(FlashFile::Image, LoadError::Malformed),
        }
    }

    /// The failure when only `/config.json` was asked for: an image that cannot be
    /// mounted or read means the config cannot be loaded either.
    pub fn config_failure(self) -> ConfigFailure {
        match self {
            Self::Config(f) => f,
            Self::Creds { error, .. } => ConfigFailure::Load(error),
        }
    }

    /// The event answering `Action::LoadCredentials`.
    pub fn creds_event(self) -> Event<'static> {
        match self {
            Self::Config(_) => Event::CredsFailed {
                file: FlashFile::Config,
                error: LoadError::Malformed,
            },
            Self::Creds { file, error } => Event::CredsFailed { file, error },
        }
    }

    /// The event answering `Action::LoadConfig`.
    pub fn config_event(self) -> Event<'static> {
        Event::ConfigFailed(self.config_failure())
    }
}

fn flash_file(path: &str) -> Option<FlashFile> {
    Some(match path {
        image::CONFIG_PATH => FlashFile::Config,
        image::CERT_PATH => FlashFile::Cert,
        image::KEY_PATH => FlashFile::Key,
        image::CA_PATH => FlashFile::Ca,
        _ => return None,
    })
}
