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
mod tests {
    use super::*;
    use core::future::{Future, poll_fn};
    use core::pin::pin;
    use core::task::{Context, Poll, Waker};
    use std::cell::Cell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    /// A socket whose data arrives in scripted chunks; the test releases them one by
    /// one. Its `read` is cancel-safe, like embassy-net's and tokio's.
    struct Script {
        chunks: VecDeque<Vec<u8>>,
        released: Rc<Cell<usize>>,
    }

    impl ErrorType for Script {
        type Error = ErrorKind;
    }

    impl Read for Script {
        async fn read(&mut self, out: &mut [u8]) -> Result<usize, ErrorKind> {
            poll_fn(|_| {
                if self.released.get() == 0 {
                    return Poll::Pending;
                }
                let Some(chunk) = self.chunks.front_mut() else {
                    return Poll::Ready(Ok(0));
                };
                let n = out.len().min(chunk.len());
                out[..n].copy_from_slice(&chunk[..n]);
                chunk.drain(..n);
                if chunk.is_empty() {
                    self.chunks.pop_front();
                    self.released.set(self.released.get() - 1);
                }
                Poll::Ready(Ok(n))
            })
            .await
        }
    }

    fn record(content_type: u8, body_len: usize, fill: u8) -> Vec<u8> {
        let len = u16::try_from(body_len).unwrap().to_be_bytes();
        let mut r = vec![content_type, 3, 3, len[0], len[1]];
        r.extend((0..body_len).map(|i| fill.wrapping_add(i as u8)));
        r
    }

    /// Reads one record the way embedded-tls does: header, then body, with the
    /// progress kept in the future's locals (lost if the future is dropped).
    async fn read_record<R: Read>(r: &mut R) -> Result<Vec<u8>, R::Error> {
        let mut header = [0u8; RECORD_HEADER_LEN];
        let mut got = 0;
        while got < header.len() {
            got += r.read(&mut header[got..]).await?;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let mut body = vec![0u8; len];
        let mut got = 0;
        while got < len {
            got += r.read(&mut body[got..]).await?;
        }
        Ok([&header[..], &body].concat())
    }

    /// Releases one chunk at a time and polls a fresh `read_record` future once per
    /// chunk, dropping it whenever it is pending: a read cancelled at every await.
    fn read_with_cancellation<R: Read>(
        reader: &mut R,
        released: &Cell<usize>,
        chunks: usize,
        want: usize,
    ) -> Vec<Vec<u8>> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut records = Vec::new();
        let mut cancelled = 0;
        for _ in 0..chunks {
            released.set(released.get() + 1);
            loop {
                let mut read = pin!(read_record(reader));
                match read.as_mut().poll(&mut cx) {
                    Poll::Ready(Ok(r)) => records.push(r),
                    Poll::Ready(Err(_)) => return records,
                    Poll::Pending => {
                        cancelled += 1;
                        break; // the future is dropped here, mid-record
                    }
                }
                if records.len() == want {
                    assert!(cancelled > 0, "the test must cancel reads");
                    return records;
                }
            }
        }
        records
    }

    /// Two records cut at awkward places: inside A's header, inside A's body, and a
    /// chunk that ends A and starts B.
    fn scripted() -> (Vec<Vec<u8>>, VecDeque<Vec<u8>>) {
        let a = record(23, 300, 1);
        let b = record(23, 10, 100);
        let stream = [a.clone(), b.clone()].concat();
        let cuts = [0, 3, 100, 307, stream.len()];
        let chunks = cuts
            .windows(2)
            .map(|w| stream[w[0]..w[1]].to_vec())
            .collect();
        (vec![a, b], chunks)
    }

    #[test]
    fn dropping_reads_mid_record_loses_nothing() {
        let (expected, chunks) = scripted();
        let released = Rc::new(Cell::new(0));
        let n = chunks.len();
        let script = Script {
            chunks,
            released: released.clone(),
        };
        let mut buf = [0u8; MAX_RECORD_LEN];
        let mut reader = RecordAtomic::new(script, &mut buf);
        let got = read_with_cancellation(&mut reader, &released, n, expected.len());
        assert_eq!(got, expected);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn without_the_layer_the_same_cancellation_desynchronises() {
        let (expected, chunks) = scripted();
        let released = Rc::new(Cell::new(0));
        let n = chunks.len();
        let mut raw = Script {
            chunks,
            released: released.clone(),
        };
        let got = read_with_cancellation(&mut raw, &released, n, expected.len());
        assert_ne!(got, expected);
    }

    /// Drives a future that must complete without waiting.
    fn ready<F: Future>(f: F) -> F::Output {
        let mut cx = Context::from_waker(Waker::noop());
        match pin!(f).poll(&mut cx) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("future pending"),
        }
    }

    fn all_released(stream: &[u8], chunk: usize) -> Script {
        let chunks: VecDeque<_> = stream.chunks(chunk).map(<[u8]>::to_vec).collect();
        Script {
            released: Rc::new(Cell::new(chunks.len() + 1)),
            chunks,
        }
    }

    #[test]
    fn tiny_reads_see_the_exact_stream() {
        let stream = [record(22, 40, 7), record(21, 2, 0), record(23, 0, 0)].concat();
        let mut buf = [0u8; 64];
        let mut reader = RecordAtomic::new(all_released(&stream, 7), &mut buf);
        let mut out = Vec::new();
        let mut byte = [0u8; 3];
        loop {
            let n = ready(reader.read(&mut byte)).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&byte[..n]);
        }
        assert_eq!(out, stream);
    }

    #[test]
    fn eof_mid_record_is_an_error() {
        let stream = record(23, 40, 0);
        let mut buf = [0u8; 64];
        let mut reader = RecordAtomic::new(all_released(&stream[..20], 20), &mut buf);
        assert_eq!(
            ready(reader.read(&mut [0u8; 8])),
            Err(RecordError::UnexpectedEof)
        );
    }

    #[test]
    fn oversized_and_invalid_records_are_refused() {
        let mut small = [0u8; 32];
        let stream = record(23, 40, 0);
        let mut reader = RecordAtomic::new(all_released(&stream, 64), &mut small);
        assert_eq!(
            ready(reader.read(&mut [0u8; 8])),
            Err(RecordError::RecordTooLarge)
        );

        let mut buf = [0u8; 64];
        let junk = [0x47, 0x45, 0x54, 0x20, 0x2f, 0x20];
        let mut reader = RecordAtomic::new(all_released(&junk, 6), &mut buf);
        assert_eq!(
            ready(reader.read(&mut [0u8; 8])),
            Err(RecordError::InvalidRecord)
        );

        let mut buf = [0u8; MAX_RECORD_LEN + 10];
        let huge = [23, 3, 3, 0xff, 0xff];
        let mut reader = RecordAtomic::new(all_released(&huge, 5), &mut buf);
        assert_eq!(
            ready(reader.read(&mut [0u8; 8])),
            Err(RecordError::RecordTooLarge)
        );
    }
}
