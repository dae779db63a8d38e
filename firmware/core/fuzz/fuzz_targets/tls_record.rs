//! The record-atomic transport under TLS (`firmware_core::tls::RecordAtomic`) against a
//! model, on arbitrary byte streams delivered in arbitrary pieces, with reads cancelled
//! whenever they would wait (as minimq's keep-alive deadline cancels them).
//!
//! The model: bytes go up only as parts of whole records, in stream order, none lost or
//! repeated across cancellations; a read waits only while no whole record is buffered; a
//! bad content type, a record longer than the buffer or TLS allows, and an end of stream
//! inside a record are reported as such; a clean end of stream between records reads 0.
#![no_main]

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use embedded_io::ErrorType;
use embedded_io_async::Read;
use firmware_core::tls::{
    MAX_RECORD_BODY, MAX_RECORD_LEN, RECORD_HEADER_LEN, RecordAtomic, RecordError,
};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Step {
    /// The peer sends these bytes (the socket queues them).
    Send(Vec<u8>),
    /// The peer sends a record header announcing `len` body bytes of `content_type`.
    Header { content_type: u8, len: u16 },
    /// The peer closes the stream.
    Close,
    /// The device reads into a buffer of this size (at least 1).
    Read(u16),
}

#[derive(Debug, Arbitrary)]
struct Script {
    /// The record buffer's size, up to a full record.
    buffer: u16,
    /// The socket hands up at most this many bytes per read (at least 1).
    socket_chunk: u8,
    steps: Vec<Step>,
}

/// A socket: queued bytes, handed up a few at a time; nothing queued = the read waits.
struct Socket {
    queued: VecDeque<u8>,
    closed: bool,
    chunk: usize,
}

impl ErrorType for Socket {
    type Error = embedded_io::ErrorKind;
}

impl Read for Socket {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if self.queued.is_empty() && !self.closed {
            std::future::pending::<()>().await;
        }
        let n = buf.len().min(self.queued.len()).min(self.chunk);
        for (b, x) in buf.iter_mut().zip(self.queued.drain(..n)) {
            *b = x;
        }
        Ok(n)
    }
}

/// What the model says one read must give.
#[derive(Debug, PartialEq)]
enum Expect {
    Bytes(usize),
    Wait,
    Eof,
    Fail(RecordError<embedded_io::ErrorKind>),
}

struct Model {
    /// Everything the peer sent.
    stream: Vec<u8>,
    closed: bool,
    /// Bytes handed up so far.
    handed: usize,
    /// End of the record being handed up, while one is.
    record_end: Option<usize>,
    buffer: usize,
}

impl Model {
    fn expect(&self, want: usize) -> Expect {
        if let Some(end) = self.record_end {
            return Expect::Bytes(want.min(end - self.handed));
        }
        let rest = &self.stream[self.handed..];
        if rest.len() >= RECORD_HEADER_LEN && self.buffer >= RECORD_HEADER_LEN {
            if !(20..=23).contains(&rest[0]) {
                return Expect::Fail(RecordError::InvalidRecord);
            }
            let body = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            let len = RECORD_HEADER_LEN + body;
            if body > MAX_RECORD_BODY || len > self.buffer {
                return Expect::Fail(RecordError::RecordTooLarge);
            }
            if rest.len() >= len {
                return Expect::Bytes(want.min(len));
            }
        } else if self.buffer < RECORD_HEADER_LEN {
            return Expect::Fail(RecordError::RecordTooLarge);
        } else if rest.is_empty() && self.closed {
            return Expect::Eof;
        }
        if self.closed {
            Expect::Fail(RecordError::UnexpectedEof)
        } else {
            Expect::Wait
        }
    }

    fn took(&mut self, n: usize) {
        let end = match self.record_end {
            Some(end) => end,
            None => {
                let h = &self.stream[self.handed..];
                self.handed + RECORD_HEADER_LEN + usize::from(u16::from_be_bytes([h[3], h[4]]))
            }
        };
        self.handed += n;
        self.record_end = (self.handed < end).then_some(end);
    }
}

fuzz_target!(|script: Script| {
    let buffer = usize::from(script.buffer) % (MAX_RECORD_LEN + 1);
    let mut buf = vec![0u8; buffer];
    let socket = Socket {
        queued: VecDeque::new(),
        closed: false,
        chunk: usize::from(script.socket_chunk).max(1),
    };
    let mut records = RecordAtomic::new(socket, &mut buf);
    let mut model = Model {
        stream: Vec::new(),
        closed: false,
        handed: 0,
        record_end: None,
        buffer,
    };
    let mut cx = Context::from_waker(Waker::noop());
    for step in script.steps {
        match step {
            Step::Send(bytes) if !model.closed => {
                model.stream.extend_from_slice(&bytes);
                records.inner_mut().queued.extend(bytes);
            }
            Step::Header { content_type, len } if !model.closed => {
                let [hi, lo] = (len % (MAX_RECORD_BODY as u16 + 2)).to_be_bytes();
                let header = [content_type, 3, 3, hi, lo];
                model.stream.extend_from_slice(&header);
                records.inner_mut().queued.extend(header);
            }
            Step::Close => {
                model.closed = true;
                records.inner_mut().closed = true;
            }
            Step::Read(size) => {
                let mut out = vec![0u8; usize::from(size).max(1)];
                let expect = model.expect(out.len());
                let got = {
                    let read = pin!(records.read(&mut out));
                    // Polled once: a read that would wait is cancelled, as at a deadline.
                    match read.poll(&mut cx) {
                        Poll::Pending => Expect::Wait,
                        Poll::Ready(Ok(0)) => Expect::Eof,
                        Poll::Ready(Ok(n)) => Expect::Bytes(n),
                        Poll::Ready(Err(e)) => Expect::Fail(e),
                    }
                };
                assert_eq!(got, expect, "at stream offset {}", model.handed);
                match got {
                    Expect::Bytes(n) => {
                        assert_eq!(
                            &out[..n],
                            &model.stream[model.handed..model.handed + n],
                            "bytes handed up out of order"
                        );
                        model.took(n);
                    }
                    // The stream is dead after an error; nothing more to compare.
                    Expect::Fail(_) => return,
                    Expect::Wait | Expect::Eof => {}
                }
                assert_eq!(
                    records.buffered() + records.inner().queued.len(),
                    model.stream.len() - model.handed,
                    "bytes lost or duplicated"
                );
            }
            _ => {}
        }
    }
});
