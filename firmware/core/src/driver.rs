//! Glue a board's driver needs around the [`session`](crate::session), independent of
//! the board's HAL and executor.
//!
//! - [`ImageFailure`] (feature `flash-image`): how a failure to load the flash image is
//!   reported to the session — `/config.json` problems as config failures, everything
//!   else as a credentials failure naming the file.
//! - [`WriteGate`] and [`Gated`] (feature `tls`): a transport wrapper that tells the
//!   driver whether a write is under way. embedded-tls is not cancel-safe while it writes
//!   a record (a half-sent record desynchronises the stream for good), so a driver that
//!   races the connection against its deadlines waits for [`WriteGate::idle`] before it
//!   drops the connection's future. Reads need no gate: [`RecordAtomic`] makes them
//!   cancel-safe.
//!
//! [`RecordAtomic`]: crate::tls::RecordAtomic

#[cfg(feature = "tls")]
use core::cell::Cell;
#[cfg(feature = "tls")]
use core::future::poll_fn;
#[cfg(feature = "tls")]
use core::task::{Poll, Waker};

#[cfg(feature = "tls")]
use embedded_io_async::{ErrorType, Read, Write};

#[cfg(feature = "flash-image")]
use crate::image::{self, ImageError};
#[cfg(feature = "flash-image")]
use crate::log::{ConfigFailure, FlashFile, LoadError};
#[cfg(feature = "flash-image")]
use crate::session::Event;

#[cfg(test)]
mod tests;

/// A flash-image load failure as the session hears it.
#[cfg(feature = "flash-image")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFailure {
    /// `/config.json` is missing or invalid.
    Config(ConfigFailure),
    /// A credential file (or the image itself) is missing, too large or unreadable.
    Creds { file: FlashFile, error: LoadError },
}

#[cfg(feature = "flash-image")]
impl ImageFailure {
    /// Classify a failure of [`image::mount`] or [`image::Mounted::load_credentials`].
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

#[cfg(feature = "flash-image")]
fn flash_file(path: &str) -> Option<FlashFile> {
    Some(match path {
        image::CONFIG_PATH => FlashFile::Config,
        image::CERT_PATH => FlashFile::Cert,
        image::KEY_PATH => FlashFile::Key,
        image::CA_PATH => FlashFile::Ca,
        _ => return None,
    })
}

/// Whether a write is under way on a [`Gated`] transport. For one single-threaded
/// executor (the board's): not `Sync`, and one waiter at a time.
#[cfg(feature = "tls")]
#[derive(Default)]
pub struct WriteGate {
    busy: Cell<bool>,
    waiter: Cell<Option<Waker>>,
}

#[cfg(feature = "tls")]
impl WriteGate {
    pub const fn new() -> Self {
        Self {
            busy: Cell::new(false),
            waiter: Cell::new(None),
        }
    }

    /// A write or flush is pending on the transport.
    pub fn is_busy(&self) -> bool {
        self.busy.get()
    }

    /// Resolves at once when no write is pending, else when the pending one returns
    /// (or its future is dropped). Only the latest caller is woken.
    pub async fn idle(&self) {
        poll_fn(|cx| {
            if self.busy.get() {
                self.waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    fn enter(&self) -> Busy<'_> {
        self.busy.set(true);
        Busy(self)
    }
}

/// Marks the gate busy while alive; clears it and wakes the waiter when dropped, whether
/// the write returned or its future was dropped.
#[cfg(feature = "tls")]
struct Busy<'g>(&'g WriteGate);

#[cfg(feature = "tls")]
impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.set(false);
        if let Some(waker) = self.0.waiter.take() {
            waker.wake();
        }
    }
}

/// A transport that marks its [`WriteGate`] busy during every `write` and `flush`.
/// Put it directly over the socket, under TLS.
#[cfg(feature = "tls")]
pub struct Gated<'g, T> {
    inner: T,
    gate: &'g WriteGate,
}

#[cfg(feature = "tls")]
impl<'g, T> Gated<'g, T> {
    pub fn new(inner: T, gate: &'g WriteGate) -> Self {
        Self { inner, gate }
    }

    pub fn into_inner(self) -> T {
        self.inner
    }
}

#[cfg(feature = "tls")]
impl<T: ErrorType> ErrorType for Gated<'_, T> {
    type Error = T::Error;
}

#[cfg(feature = "tls")]
impl<T: Read> Read for Gated<'_, T> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.inner.read(buf).await
    }
}

#[cfg(feature = "tls")]
impl<T: Write> Write for Gated<'_, T> {
    async fn write(&mut self, data: &[u8]) -> Result<usize, Self::Error> {
        let _busy = self.gate.enter();
        self.inner.write(data).await
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        let _busy = self.gate.enter();
        self.inner.flush().await
    }
}
