//! The MQTT byte stream over TLS: reading whole packets, writing before the packet loop
//! runs (CONNACK, refusals), and the packet loop's write queue, which never blocks it.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::server::TlsStream;

use crate::mqtt::{self, ClientPacket, DecodeError, ServerPacket, Version};
use crate::rules;

pub(crate) type Stream = TlsStream<TcpStream>;

/// Longest a write outside the session loop may take (CONNACK, refusals): a client that
/// does not read must not hold a connection task, or the broker's shutdown, for long.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Decode(DecodeError),
}

/// The MQTT byte stream over TLS: a read half and a write half, so the session can
/// wait for both at once.
pub(crate) struct Link {
    pub input: Input,
    pub output: WriteHalf<Stream>,
    out: BytesMut,
    pub version: Option<Version>,
}

pub(crate) struct Input {
    reader: ReadHalf<Stream>,
    buf: BytesMut,
    /// The protocol level of the CONNECT being read, seen before it is decoded.
    pub connect_level: Option<u8>,
}

impl Input {
    /// Read until one whole packet is buffered. Cancel-safe: bytes read stay in `buf`.
    pub async fn read_packet(
        &mut self,
        version: Option<Version>,
    ) -> Result<ClientPacket, ReadError> {
        loop {
            if version.is_none() {
                self.connect_level = mqtt::peek_connect_level(&self.buf);
            }
            match mqtt::decode(&mut self.buf, version, rules::MAX_INBOUND_PACKET_BYTES) {
                Ok(packet) => return Ok(packet),
                Err(DecodeError::Incomplete) => {}
                Err(e) => return Err(ReadError::Decode(e)),
            }
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                return Err(ReadError::Closed);
            }
        }
    }
}

impl Link {
    /// The stream, before its CONNECT is read.
    pub fn new(stream: Stream) -> Self {
        let (reader, output) = tokio::io::split(stream);
        Self {
            input: Input {
                reader,
                buf: BytesMut::with_capacity(4096),
                connect_level: None,
            },
            output,
            out: BytesMut::with_capacity(4096),
            version: None,
        }
    }

    pub async fn read_packet(&mut self) -> Result<ClientPacket, ReadError> {
        self.input.read_packet(self.version).await
    }

    /// Write a packet before the session loop runs (CONNACK, refusals), within
    /// [`SEND_TIMEOUT`]; a failure shows up as the next read failing, so it is only
    /// logged.
    pub async fn send(&mut self, packet: &ServerPacket) {
        let version = self.version.unwrap_or(Version::V311);
        self.out.clear();
        mqtt::encode(packet, version, &mut self.out);
        if self.out.is_empty() {
            return;
        }
        let write = async {
            self.output.write_all(&self.out).await?;
            self.output.flush().await
        };
        match timeout(SEND_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "write failed"),
            Err(_) => tracing::debug!(
                packet = packet.name(),
                "client not reading: write abandoned"
            ),
        }
    }
}

/// Most bytes gathered into one write: two full TLS records.
const COALESCE_BYTES: usize = 32 * 1024;

/// What one [`Writer::drive`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    /// Bytes the socket (TLS) took in this write.
    pub bytes: usize,
    /// Budget bytes freed by packets written completely.
    pub released: usize,
}

/// One encoded packet waiting to be written.
struct Outgoing {
    bytes: Bytes,
    /// Not before this (the latency fault).
    due: tokio::time::Instant,
    /// Bytes of the client's budget freed once it is written (a QoS 0 delivery).
    release: usize,
}

/// What a session has to write, written as the socket takes it, never blocking the
/// session: a client that stops reading holds up only its own deliveries.
#[derive(Default)]
pub(crate) struct Writer {
    queue: VecDeque<Outgoing>,
    /// Bytes of the front packet already written.
    offset: usize,
    /// Bytes waiting to be written.
    pub bytes: usize,
    /// Written since the last flush.
    unflushed: bool,
    /// When the socket last took bytes (or the queue last filled from empty).
    progress_at: Option<tokio::time::Instant>,
}

impl Writer {
    pub fn push(&mut self, bytes: Bytes, due: tokio::time::Instant, release: usize) {
        if self.queue.is_empty() {
            self.progress_at = Some(tokio::time::Instant::now());
        }
        self.bytes += bytes.len();
        self.queue.push_back(Outgoing {
            bytes,
            due,
            release,
        });
    }

    /// Make everything waiting due at `now` (the last words skip the latency fault).
    pub fn due_now(&mut self, now: tokio::time::Instant) {
        for outgoing in self.queue.iter_mut() {
            outgoing.due = now;
        }
    }

    pub fn next_due(&self) -> Option<tokio::time::Instant> {
        self.queue.front().map(|o| o.due)
    }

    /// When the client counts as stuck if the socket takes nothing more.
    pub fn stall_deadline(&self, stall: Duration) -> Option<tokio::time::Instant> {
        let front = self.queue.front()?;
        let since = self.progress_at.map_or(front.due, |at| at.max(front.due));
        Some(since + stall)
    }

    /// Whether [`Writer::drive`] has something to do now.
    pub fn ready(&self, now: tokio::time::Instant) -> bool {
        match self.next_due() {
            Some(due) => due <= now,
            None => self.unflushed,
        }
    }

    /// The rest of the front packet and the packets due after it, up to
    /// [`COALESCE_BYTES`]; `None` when the front packet is the only one due.
    fn batch(&self, now: tokio::time::Instant) -> Option<BytesMut> {
        let mut queue = self.queue.iter();
        let front = queue.next()?;
        let mut due = queue.take_while(|o| o.due <= now).peekable();
        due.peek()?;
        let mut batch = BytesMut::from(&front.bytes[self.offset..]);
        for outgoing in due {
            if batch.len() >= COALESCE_BYTES {
                break;
            }
            batch.extend_from_slice(&outgoing.bytes);
        }
        Some(batch)
    }

    /// Write some of what is due (or flush once all is written). Cancel-safe: the state
    /// changes only after the socket took the bytes. Returns how many it took and the
    /// budget bytes freed by packets written completely.
    pub async fn drive(&mut self, output: &mut WriteHalf<Stream>) -> std::io::Result<Written> {
        let Some(front) = self.queue.front() else {
            output.flush().await?;
            self.unflushed = false;
            return Ok(Written::default());
        };
        // Packets due together go out in one write, so TLS frames them in full-size
        // records rather than one record per packet.
        let batch = self.batch(tokio::time::Instant::now());
        let written = match &batch {
            Some(batch) => output.write(batch).await?,
            None => output.write(&front.bytes[self.offset..]).await?,
        };
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.progress_at = Some(tokio::time::Instant::now());
        self.unflushed = true;
        self.bytes -= written;
        let mut left = written;
        let mut released = 0;
        while left > 0 {
            let Some(front) = self.queue.front() else {
                break;
            };
            let rest = front.bytes.len() - self.offset;
            if left < rest {
                self.offset += left;
                break;
            }
            left -= rest;
            self.offset = 0;
            released += self.queue.pop_front().map_or(0, |done| done.release);
        }
        Ok(Written {
            bytes: written,
            released,
        })
    }
}
