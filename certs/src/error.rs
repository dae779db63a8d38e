//! Errors, grouped by who is at fault, each rendered as one line naming the file.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Everything `certs` can fail with.
///
/// The first three groups are the user's to fix (exit status 2); the last two are the
/// environment's or ours (exit status 1). `Display` is one line that starts with the
/// file or flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A file the user gave us is unusable.
    #[error("{}: {problem}", path.display())]
    BadInput {
        path: PathBuf,
        problem: InputProblem,
    },

    /// A flag or configuration value is invalid.
    #[error("{flag}: {problem}")]
    BadArgument { flag: String, problem: String },

    /// The output cannot be written as asked (exists, too small for its contents).
    #[error("{}: {problem}", path.display())]
    BadOutput {
        path: PathBuf,
        problem: OutputProblem,
    },

    /// The operating system failed an operation that should have worked.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },

    /// An AWS call failed (or no credentials): which call, why, what was created.
    #[cfg(feature = "aws")]
    #[error("{0}")]
    Aws(Box<AwsFailure>),

    /// A library refused something we built ourselves: a bug in `certs`.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CertsError {
    /// The process exit status for this error: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::BadInput { .. } | Self::BadArgument { .. } | Self::BadOutput { .. } => 2,
            Self::Io { .. } | Self::Internal(_) => 1,
            #[cfg(feature = "aws")]
            Self::Aws(_) => 1,
        }
    }

    pub(crate) fn input(path: &Path, problem: InputProblem) -> Self {
        Self::BadInput {
            path: path.to_path_buf(),
            problem,
        }
    }

    pub(crate) fn argument(flag: &str, problem: impl fmt::Display) -> Self {
        Self::BadArgument {
            flag: flag.to_string(),
            problem: problem.to_string(),
        }
    }

    pub(crate) fn output(path: &Path, problem: OutputProblem) -> Self {
        Self::BadOutput {
            path: path.to_path_buf(),
            problem,
        }
    }

    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn internal(what: impl fmt::Display) -> Self {
        Self::Internal(what.to_string())
    }
}

/// What is wrong with an input file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputProblem {
    #[error("no such file")]
    Missing,
    #[error("cannot read: {0}")]
    Unreadable(String),
    #[error("not PEM or DER: {0}")]
    NotPemOrDer(String),
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("expected {expected}, found {found}")]
    WrongKind {
        expected: &'static str,
        found: String,
    },
    #[error(
        "encrypted private key; decrypt it first (openssl pkey -in KEY -out plain.pem) — the device cannot use a passphrase"
    )]
    EncryptedKey,
    #[error("unsupported key type {0} (the firmware supports EC P-256 and RSA-2048)")]
    UnsupportedKey(String),
    #[error("private key does not match the certificate {}", .0.display())]
    KeyMismatch(PathBuf),
    #[error("certificate expired on {0}")]
    Expired(String),
    #[error("certificate not valid before {0}")]
    NotYetValid(String),
    #[error("not a CA certificate (no basicConstraints CA:TRUE and not a self-signed v1 root)")]
    NotCa,
    #[error("corrupt flash image: {0}")]
    CorruptImage(String),
    /// The device's own credential check (`firmware_core::creds`) refuses the file.
    #[error("the device would refuse it: {0}")]
    DeviceRefuses(String),
    #[error("{0}")]
    Other(String),
}

/// What is wrong with an output path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputProblem {
    #[error("output exists (use --force to overwrite)")]
    Exists,
    #[error("exists and is not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("image too small: {0}")]
    ImageTooSmall(String),
}

/// A failed AWS call, with what `provision` had created before it.
#[cfg(feature = "aws")]
#[derive(Debug)]
pub struct AwsFailure {
    /// The API call, e.g. `CreateThing`, or the step in words (`policy check`).
    pub call: &'static str,
    /// AWS's error code (`AccessDeniedException`), or what failed before AWS answered.
    pub code: String,
    /// AWS's message or the SDK's error chain.
    pub detail: String,
    /// The likely cause and what to do.
    pub cause: String,
    /// AWS objects created so far, each with the command that removes it.
    pub created: Vec<Created>,
}

/// An object `provision` created in the account.
#[cfg(feature = "aws")]
#[derive(Debug, Clone)]
pub struct Created {
    pub what: String,
    pub cleanup: String,
}

#[cfg(feature = "aws")]
impl fmt::Display for AwsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // API calls are one word (`CreateThing`); other steps are described in words.
        if self.call.contains(' ') {
            write!(f, "{} failed", self.call)?;
        } else {
            write!(f, "AWS call {} failed", self.call)?;
        }
        write!(
            f,
            ": {}: {}\n  likely cause: {}",
            self.code, self.detail, self.cause
        )?;
        if self.created.is_empty() {
            write!(f, "\n  nothing was created in the AWS account")?;
        } else {
            write!(
                f,
                "\n  created in the AWS account before the failure (no output folder was written):"
            )?;
            for c in &self.created {
                write!(f, "\n    {}\n      remove: {}", c.what, c.cleanup)?;
            }
        }
        Ok(())
    }
}

#[cfg(feature = "aws")]
impl std::error::Error for AwsFailure {}
