//! One device session as the board runs it: a TLS 1.3 handshake (embedded-tls over the
//! core's record-atomic transport, the board's buffer sizes), then MQTT 5 CONNECT,
//! SUBSCRIBE and one QoS 1 PUBLISH, each waiting for its ack.
//!
//! Shared, byte for byte, by the emulated run (`main.rs`) and the host recorder
//! (`firmware/core/tests/rv32_flights.rs`): the recorder runs it against a real rustls
//! server to capture the server's bytes, the emulator replays them. `counter` reads the
//! CPU's retired-instruction count (the recorder passes a constant).

use embedded_io_async::{Read, Write};
use embedded_tls::{Aes128GcmSha256, CryptoProvider, TlsConfig, TlsConnection, TlsContext};
use firmware_core::tls::RecordAtomic;

/// What the device is called and says; also what the recorder's server expects.
pub const CLIENT_ID: &str = "ESPthing";
pub const SUB_TOPIC: &str = "inTopic";
pub const PUB_TOPIC: &str = "outTopic";
pub const PAYLOAD: &[u8] = br#"{"message": "hello world #1"}"#;
/// An AWS-shaped endpoint: the server certificate's only DNS name.
pub const ENDPOINT: &str = "a1b2c3d4e5f6g7-ats.iot.us-east-1.amazonaws.com";

/// Retired instructions per step of the session.
#[derive(Debug, Default, Clone, Copy)]
pub struct Steps {
    pub handshake: u64,
    pub connect: u64,
    pub subscribe: u64,
    pub publish: u64,
}

/// Where a session failed (printed through `Debug`).
#[derive(Debug)]
#[allow(dead_code, reason = "read through Debug only")]
pub enum Failure {
    Tls(&'static str, embedded_tls::TlsError),
    Mqtt(&'static str),
}

/// Runs the session over `transport`; `read_buf`, `write_buf` and `record_buf` are the
/// TLS buffers (the board's sizes: `firmware_core::driver::buffers`).
pub async fn run<T, P>(
    transport: T,
    provider: &mut P,
    bufs: (&mut [u8], &mut [u8], &mut [u8]),
    counter: fn() -> u64,
) -> Result<Steps, Failure>
where
    T: Read + Write,
    P: CryptoProvider<CipherSuite = Aes128GcmSha256>,
{
    let (read_buf, write_buf, record_buf) = bufs;
    let mut steps = Steps::default();
    let records = RecordAtomic::new(transport, record_buf);
    let mut tls: TlsConnection<'_, _, Aes128GcmSha256> =
        TlsConnection::new(records, read_buf, write_buf);
    let config = TlsConfig::new().with_server_name(ENDPOINT);

    let start = counter();
    tls.open(TlsContext::new(&config, provider))
        .await
        .map_err(|e| Failure::Tls("handshake", e))?;
    steps.handshake = counter() - start;

    let mut packet = [0u8; 128];
    let mut reply = [0u8; 64];

    let start = counter();
    let n = connect(&mut packet);
    exchange(&mut tls, &packet[..n], &mut reply).await?;
    if reply[0] != 0x20 || reply[3] != 0 {
        return Err(Failure::Mqtt("CONNACK refused"));
    }
    steps.connect = counter() - start;

    let start = counter();
    let n = subscribe(&mut packet, 1);
    exchange(&mut tls, &packet[..n], &mut reply).await?;
    // SUBACK: packet id 1, no properties, QoS 1 granted.
    if reply[..6] != [0x90, 4, 0, 1, 0, 1] {
        return Err(Failure::Mqtt("SUBACK not QoS 1"));
    }
    steps.subscribe = counter() - start;

    let start = counter();
    let n = publish(&mut packet, 2);
    exchange(&mut tls, &packet[..n], &mut reply).await?;
    if reply[..4] != [0x40, 2, 0, 2] {
        return Err(Failure::Mqtt("no PUBACK for packet 2"));
    }
    steps.publish = counter() - start;
    Ok(steps)
}

/// Sends one packet and reads one whole reply packet into `reply`.
async fn exchange<T: Read + Write>(
    tls: &mut TlsConnection<'_, RecordAtomic<'_, T>, Aes128GcmSha256>,
    packet: &[u8],
    reply: &mut [u8],
) -> Result<(), Failure> {
    tls.write(packet)
        .await
        .map_err(|e| Failure::Tls("write", e))?;
    tls.flush().await.map_err(|e| Failure::Tls("flush", e))?;
    let mut have = 0;
    // The acks are short: a one-byte remaining length is enough to frame them.
    while have < 2 || have < 2 + usize::from(reply[1]) {
        if have == reply.len() {
            return Err(Failure::Mqtt("reply too long"));
        }
        let n = tls
            .read(&mut reply[have..])
            .await
            .map_err(|e| Failure::Tls("read", e))?;
        if n == 0 {
            return Err(Failure::Mqtt("closed"));
        }
        have += n;
    }
    Ok(())
}

/// Writes a packet with fixed header byte `kind` and `body` into `out`; returns its length.
fn frame(out: &mut [u8], kind: u8, body: &[&[u8]]) -> usize {
    let len: usize = body.iter().map(|b| b.len()).sum();
    // Every packet here is under 128 bytes: a one-byte remaining length.
    out[0] = kind;
    out[1] = len as u8;
    let mut at = 2;
    for part in body {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    at
}

fn connect(out: &mut [u8]) -> usize {
    // Protocol name, level 5, clean start, keep-alive 60 s, no properties.
    let header = [0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0];
    let id_len = (CLIENT_ID.len() as u16).to_be_bytes();
    frame(out, 0x10, &[&header, &id_len, CLIENT_ID.as_bytes()])
}

fn subscribe(out: &mut [u8], id: u16) -> usize {
    let id = id.to_be_bytes();
    let topic_len = (SUB_TOPIC.len() as u16).to_be_bytes();
    frame(
        out,
        0x82,
        &[&id, &[0], &topic_len, SUB_TOPIC.as_bytes(), &[0x01]],
    )
}

fn publish(out: &mut [u8], id: u16) -> usize {
    let id = id.to_be_bytes();
    let topic_len = (PUB_TOPIC.len() as u16).to_be_bytes();
    frame(
        out,
        0x32,
        &[&topic_len, PUB_TOPIC.as_bytes(), &id, &[0], PAYLOAD],
    )
}
