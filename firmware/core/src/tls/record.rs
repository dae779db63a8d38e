//! A record-atomic transport to put *under* embedded-tls, so that a cancelled read
//! never desynchronises the TLS stream.
//!
//! Why: embedded-tls keeps the record header it is reading in the read future's locals.
//! When that future is dropped mid-record (minimq's `poll()` does so at its keep-alive
//! deadline), the bytes already taken from the socket are lost and the next read starts
//! inside a record ("Record too large for buffer").
//!
//! Rules:
//! - bytes go up only once the whole TLS record (5-byte header + its length) has been
//!   received; until then `read` waits on the inner transport and hands nothing up;
//! - all partial state lives in the struct, never in the future: dropping a `read`
//!   future at any await point loses nothing, provided the inner transport's own `read`
//!   is cancel-safe (embassy-net and tokio sockets are: data stays queued until returned);
//! - once a record is complete, reads are served from the buffer without awaiting, so
//!   the reader above cannot be cancelled between the header and the body;
//! - writes pass straight through (they are not made cancel-safe here).
//!
//! The buffer must hold one whole record: [`MAX_RECORD_LEN`] bytes, or less when the
//! server honours a negotiated max_fragment_length.

use core::fmt;

use embedded_io::{ErrorKind, ErrorType};
use embedded_io_async::{Read, Write};

/// TLS record header: content type, legacy version, length.
pub const RECORD_HEADER_LEN: usize = 5;
/// Largest TLSCiphertext body (RFC 8446 5.2: 2^14 + 256).
pub const MAX_RECORD_BODY: usize = 16384 + 256;
/// Largest whole record, header included: the buffer size that never refuses one.
pub const MAX_RECORD_LEN: usize = RECORD_HEADER_LEN + MAX_RECORD_BODY;

/// What went wrong below TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError<E> {
    /// The inner transport failed.
    Transport(E),
    /// A record longer than the buffer (or than TLS allows) was announced.
    RecordTooLarge,
    /// The bytes are not a TLS record header (unknown content type).
    InvalidRecord,
    /// The peer closed the stream in the middle of a record.
    UnexpectedEof,
}

impl<E: fmt::Debug> fmt::Display for RecordError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "transport: {e:?}"),
            Self::RecordTooLarge => f.write_str("record too large"),
            Self::InvalidRecord => f.write_str("invalid record header"),
            Self::UnexpectedEof => f.write_str("stream closed mid-record"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for RecordError<E> {}

impl<E: embedded_io::Error> embedded_io::Error for RecordError<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Transport(e) => e.kind(),
            Self::RecordTooLarge => ErrorKind::OutOfMemory,
            Self::InvalidRecord => ErrorKind::InvalidData,
            Self::UnexpectedEof => ErrorKind::ConnectionAborted,
        }
    }
}

/// Wraps a byte stream so that reads hand up whole TLS records only.
pub struct RecordAtomic<'b, T> {
    inner: T,
    buf: &'b mut [u8],
    /// Bytes received into `buf` (the current record, maybe the start of the next).
    filled: usize,
    /// Bytes of the current, complete record already handed up.
    handed: usize,
}

impl<'b, T> RecordAtomic<'b, T> {
    /// `buf` holds one whole record; [`MAX_RECORD_LEN`] bytes accept any record.
    pub fn new(inner: T, buf: &'b mut [u8]) -> Self {
        Self {
            inner,
            buf,
            filled: 0,
            handed: 0,
        }
    }

    /// The inner transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The inner transport, e.g. to close it.
    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Gives the inner transport back, dropping any buffered bytes.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Bytes received but not yet handed up (a partial record, or the rest of one).
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.filled - self.handed
    }

    /// Length of the record at the front of the buffer, once its header is in.
    fn record_len<E>(&self) -> Result<Option<usize>, RecordError<E>> {
        let Some(header) = self
            .buf
            .get(..RECORD_HEADER_LEN)
            .filter(|_| self.filled >= RECORD_HEADER_LEN)
        else {
            return Ok(None);
        };
        // change_cipher_spec, alert, handshake, application_data.
        if !(20..=23).contains(&header[0]) {
            return Err(RecordError::InvalidRecord);
        }
        let body = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if body > MAX_RECORD_BODY {
            return Err(RecordError::RecordTooLarge);
        }
        Ok(Some(RECORD_HEADER_LEN + body))
    }
}

impl<T: ErrorType> ErrorType for RecordAtomic<'_, T> {
    type Error = RecordError<T::Error>;
}

impl<T: Read> Read for RecordAtomic<'_, T> {
    async fn read(&mut self, out: &mut [u8]) -> Result<usize, Self::Error> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let len = self.record_len()?;
            if let Some(len) = len.filter(|&len| self.filled >= len) {
                let n = out.len().min(len - self.handed);
                out[..n].copy_from_slice(&self.buf[self.handed..self.handed + n]);
                self.handed += n;
                if self.handed == len {
                    // Record consumed: move the start of the next one to the front.
                    self.buf.copy_within(len..self.filled, 0);
                    self.filled -= len;
                    self.handed = 0;
                }
                return Ok(n);
            }
            let needed = len.unwrap_or(RECORD_HEADER_LEN);
            if needed > self.buf.len() {
                return Err(RecordError::RecordTooLarge);
            }
            // The only await: if the future is dropped here, nothing was taken.
            let n = self
                .inner
                .read(&mut self.buf[self.filled..])
                .await
                .map_err(RecordError::Transport)?;
            if n == 0 {
                return if self.filled == 0 {
                    Ok(0)
                } else {
                    Err(RecordError::UnexpectedEof)
                };
            }
            self.filled += n;
        }
    }
}

impl<T: Write> Write for RecordAtomic<'_, T> {
    async fn write(&mut self, data: &[u8]) -> Result<usize, Self::Error> {
        self.inner.write(data).await.map_err(RecordError::Transport)
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        self.inner.flush().await.map_err(RecordError::Transport)
    }
}

#[cfg(test)]
mod tests;
