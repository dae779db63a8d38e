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
