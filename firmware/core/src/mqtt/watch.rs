//! What the broker says that minimq does not pass on: the reason code of its DISCONNECT
//! (minimq reports every close, DISCONNECT or EOF, as `Error::Disconnected`) and the
//! Maximum QoS of its CONNACK.
//!
//! [`Watched`] sits between minimq and the TLS connection and shows every byte minimq
//! reads to a [`PacketWatch`], a streaming MQTT framer that needs no buffer beyond a few
//! bytes of the two packets it cares about. What it finds goes to [`BrokerNotes`], which
//! the driver owns and reads after `connect` and after the connection is lost. The bytes
//! pass through untouched, and a read is never held back: the wrapper is as cancel-safe
//! as the transport under it.

use core::sync::atomic::{AtomicU16, Ordering};

use embedded_io_async::{ErrorType, Read, Write};

use crate::log::DisconnectReason;
use crate::session::{Event, Qos};

#[cfg(test)]
mod tests;

/// MQTT control packet types (the high nibble of the first byte).
const CONNACK: u8 = 2;
const DISCONNECT: u8 = 14;
/// MQTT 5 property id of Maximum QoS.
const MAXIMUM_QOS: u8 = 0x24;
/// CONNACK bytes kept to look for Maximum QoS: flags, reason code, property length and
/// the properties AWS IoT Core and common brokers send before it.
const CONNACK_CAPTURE: usize = 96;
/// No note (an atomic `Option<u8>` where the chip has no compare-and-swap: load and
/// store only).
const NONE: u16 = u16::MAX;

/// What the watch found, shared between the wrapper (inside minimq) and the driver.
#[derive(Debug)]
pub struct BrokerNotes {
    disconnect: AtomicU16,
    max_qos: AtomicU16,
}

impl Default for BrokerNotes {
    fn default() -> Self {
        Self::new()
    }
}

impl BrokerNotes {
    pub const fn new() -> Self {
        Self {
            disconnect: AtomicU16::new(NONE),
            max_qos: AtomicU16::new(NONE),
        }
    }

    /// Forget the last connection's notes; call before each connect.
    pub fn clear(&self) {
        self.disconnect.store(NONE, Ordering::Relaxed);
        self.max_qos.store(NONE, Ordering::Relaxed);
    }

    /// The reason code of the broker's DISCONNECT on this connection, if it sent one.
    pub fn disconnect_code(&self) -> Option<u8> {
        get(&self.disconnect)
    }

    /// The CONNACK's Maximum QoS, if the broker sent one.
    pub fn max_qos(&self) -> Option<u8> {
        get(&self.max_qos)
    }

    /// The session's event for the CONNACK's Maximum QoS (report it after `Connected`).
    pub fn max_qos_event(&self) -> Option<Event<'static>> {
        self.max_qos().map(|q| Event::MaxQos(Qos::from_u8(q)))
    }

    /// The session's event for a lost connection: the broker's DISCONNECT with its
    /// reason code if it sent one, else `reason`.
    pub fn lost_event(&self, reason: DisconnectReason) -> Event<'static> {
        match self.disconnect_code() {
            Some(code) => Event::ServerDisconnected { code },
            None => Event::Disconnected(reason),
        }
    }
}

fn get(cell: &AtomicU16) -> Option<u8> {
    u8::try_from(cell.load(Ordering::Relaxed)).ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for a fixed header's first byte.
    Header,
    /// Reading the Remaining Length (variable byte integer).
    Length { value: u32, shift: u32 },
    /// Inside the body; `left` bytes to go.
    Body { left: u32 },
    /// The stream broke the framing (a length over 4 bytes): stop looking.
    Lost,
}

/// A streaming MQTT framer over the bytes the broker sends.
#[derive(Debug, Clone)]
pub struct PacketWatch {
    stage: Stage,
    kind: u8,
    captured: heapless::Vec<u8, CONNACK_CAPTURE>,
}

impl Default for PacketWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketWatch {
    pub const fn new() -> Self {
        Self {
            stage: Stage::Header,
            kind: 0,
            captured: heapless::Vec::new(),
        }
    }

    /// Look at the next bytes of the stream.
    pub fn feed(&mut self, mut bytes: &[u8], notes: &BrokerNotes) {
        while let Some((&b, rest)) = bytes.split_first() {
            match self.stage {
                Stage::Lost => return,
                Stage::Header => {
                    self.kind = b >> 4;
                    self.captured.clear();
                    self.stage = Stage::Length { value: 0, shift: 0 };
                    bytes = rest;
                }
                Stage::Length { value, shift } => {
                    let value = value | (u32::from(b & 0x7f) << shift);
                    bytes = rest;
                    if b & 0x80 != 0 {
                        self.stage = if shift >= 21 {
                            Stage::Lost
                        } else {
                            Stage::Length {
                                value,
                                shift: shift + 7,
                            }
                        };
                    } else if value == 0 {
                        self.complete(notes);
                    } else {
                        self.stage = Stage::Body { left: value };
                    }
                }
                Stage::Body { left } => {
                    let take = bytes.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let (body, rest) = bytes.split_at(take);
                    if matches!(self.kind, CONNACK | DISCONNECT) {
                        let room = self.captured.capacity() - self.captured.len();
                        let _ = self
                            .captured
                            .extend_from_slice(&body[..body.len().min(room)]);
                    }
                    bytes = rest;
                    let left = left - take as u32;
                    if left == 0 {
                        self.complete(notes);
                    } else {
                        self.stage = Stage::Body { left };
                    }
                }
            }
        }
    }

    fn complete(&mut self, notes: &BrokerNotes) {
        self.stage = Stage::Header;
        match self.kind {
            // No reason code byte means 0x00, normal disconnection.
            DISCONNECT => notes.disconnect.store(
                u16::from(self.captured.first().copied().unwrap_or(0)),
                Ordering::Relaxed,
            ),
            CONNACK => {
                if let Some(q) = connack_max_qos(&self.captured) {
                    notes.max_qos.store(u16::from(q), Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
}

/// The Maximum QoS property of a CONNACK body (flags, reason code, properties), if it is
/// there and well-formed within the captured bytes.
fn connack_max_qos(body: &[u8]) -> Option<u8> {
    let props = body.get(2..)?;
    let (len, used) = varint(props)?;
    let end = used.checked_add(usize::try_from(len).ok()?)?;
    let mut props = props.get(used..end.min(props.len()))?;
    while let Some((&id, rest)) = props.split_first() {
        let size = match id {
            MAXIMUM_QOS => return rest.first().copied().filter(|&q| q <= 2),
            0x01 | 0x17 | 0x19 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x0B => varint(rest)?.1,
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                2 + usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]))
            }
            0x26 => {
                let k = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
                let v = rest.get(2 + k..)?;
                4 + k + usize::from(u16::from_be_bytes([*v.first()?, *v.get(1)?]))
            }
            _ => return None,
        };
        props = rest.get(size..)?;
    }
    None
}

/// A variable byte integer and the bytes it took.
fn varint(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value = 0u32;
    for (i, &b) in bytes.iter().take(4).enumerate() {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A transport whose inbound bytes a [`PacketWatch`] sees on their way to minimq.
pub struct Watched<'n, T> {
    inner: T,
    watch: PacketWatch,
    notes: &'n BrokerNotes,
}

impl<'n, T> Watched<'n, T> {
    /// Wrap `inner`; findings go to `notes` (cleared here: a new connection).
    pub fn new(inner: T, notes: &'n BrokerNotes) -> Self {
        notes.clear();
        Self {
            inner,
            watch: PacketWatch::new(),
            notes,
        }
    }

    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: ErrorType> ErrorType for Watched<'_, T> {
    type Error = T::Error;
}

impl<T: Read> Read for Watched<'_, T> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = self.inner.read(buf).await?;
        self.watch.feed(&buf[..n], self.notes);
        Ok(n)
    }
}

impl<T: Write> Write for Watched<'_, T> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.inner.write(buf).await
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        self.inner.flush().await
    }
}
