//! The broker's MQTT codec (`mock_broker::mqtt`) in both directions, on arbitrary bytes
//! from a client.
//!
//! Decode: `decode` on a stream of packets, as the session reads it (MQTT 3.1.1 or 5, or
//! before CONNECT), never panics; `Incomplete` consumes nothing; every strict prefix of a
//! packet it read is `Incomplete`; a packet is refused as too large before it is
//! buffered, and nothing larger than the limit is ever read.
//!
//! Encode -> decode: whatever decoded and has a broker-side encoding (PUBLISH, PUBACK,
//! MQTT 5 DISCONNECT) is encoded with `encode` and read back to the same packet (a
//! PUBLISH without its topic alias, which the broker never forwards); `encoded_len`
//! agrees with `encode`; the broker's answers to what decoded (CONNACK, SUBACK,
//! UNSUBACK, PINGRESP) carry a remaining length that matches their body.
//!
//! Input: byte 0 picks the version the session is in (none / 3.1.1 / 5) and the packet
//! size limit; the rest is the client's stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

/// The broker's codec, this very file (see Cargo.toml for why not the crate).
#[allow(dead_code)]
#[path = "../../src/mqtt.rs"]
mod mqtt;

use mqtt::{
    ClientPacket, ConnAck, DecodeError, Publish, ServerPacket, Version, decode, encode, encoded_len,
};

/// Remaining length of the packet at the front of `bytes`: (header length, body length).
fn fixed_header(bytes: &[u8]) -> (usize, usize) {
    let mut len = 0usize;
    for (i, b) in bytes[1..].iter().take(4).enumerate() {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (2 + i, len);
        }
    }
    panic!("encoded a remaining length longer than 4 bytes: {bytes:02x?}");
}

fn encoded(packet: &ServerPacket, version: Version) -> BytesMut {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out);
    assert_eq!(out.len(), encoded_len(packet, version), "{packet:?}");
    if !out.is_empty() {
        let (header, body) = fixed_header(&out);
        assert_eq!(
            header + body,
            out.len(),
            "{} length field wrong",
            packet.name()
        );
    }
    out
}

/// Encode what has a server-side form and read it back.
fn round_trip(packet: &ClientPacket, version: Version) {
    let (server, expected) = match packet {
        ClientPacket::Publish(p) => {
            let forwarded = Publish {
                topic_alias: None,
                properties: if version == Version::V5 {
                    p.properties.clone()
                } else {
                    Default::default()
                },
                ..p.clone()
            };
            (
                ServerPacket::Publish(forwarded.clone()),
                ClientPacket::Publish(forwarded),
            )
        }
        ClientPacket::PubAck { packet_id } => (
            ServerPacket::PubAck {
                packet_id: *packet_id,
                reason: mqtt::reason::SUCCESS,
            },
            packet.clone(),
        ),
        ClientPacket::Disconnect { reason, .. } if version == Version::V5 => (
            ServerPacket::Disconnect { reason: *reason },
            // The server's DISCONNECT carries no properties.
            ClientPacket::Disconnect {
                reason: *reason,
                session_expiry_secs: None,
            },
        ),
        _ => return,
    };
    let mut wire = encoded(&server, version);
    let back = decode(&mut wire, Some(version), usize::MAX).unwrap_or_else(|e| {
        panic!(
            "{} encoded by the broker does not decode: {e}",
            server.name()
        )
    });
    assert_eq!(back, expected, "round trip changed the packet");
    assert!(wire.is_empty(), "round trip left bytes behind");
}

/// The broker's answers to a decoded packet: their framing must be right.
fn answers(packet: &ClientPacket, version: Version) {
    match packet {
        ClientPacket::Connect(c) => {
            let ack = ConnAck {
                session_present: !c.clean_start,
                maximum_packet_size: c.max_packet_size,
                receive_maximum: c.receive_maximum,
                server_keep_alive: Some(c.keep_alive_secs),
                maximum_qos: Some(1),
                retain_available: Some(false),
                ..ConnAck::default()
            };
            encoded(&ServerPacket::ConnAck(ack), c.version);
        }
        ClientPacket::Subscribe {
            packet_id,
            subscriptions,
            ..
        } => {
            let codes = subscriptions.iter().map(|s| s.qos.level()).collect();
            encoded(
                &ServerPacket::SubAck {
                    packet_id: *packet_id,
                    codes,
                },
                version,
            );
        }
        ClientPacket::Unsubscribe { packet_id, filters } => {
            encoded(
                &ServerPacket::UnsubAck {
                    packet_id: *packet_id,
                    count: filters.len(),
                },
                version,
            );
        }
        ClientPacket::PingReq => {
            encoded(&ServerPacket::PingResp, version);
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let mut version = match mode % 3 {
        0 => None,
        1 => Some(Version::V311),
        _ => Some(Version::V5),
    };
    let max_size = match (mode / 3) % 3 {
        0 => 128 * 1024 + 5,
        1 => 256,
        _ => 16,
    };
    let mut buf = BytesMut::from(stream);
    loop {
        let before = buf.clone();
        match decode(&mut buf, version, max_size) {
            Ok(packet) => {
                let used = before.len() - buf.len();
                assert!(
                    used <= max_size,
                    "read a {used}-byte packet over the {max_size} limit"
                );
                assert_eq!(&before[used..], &buf[..], "consumed bytes are not a prefix");
                // Bytes arriving one piece at a time: every shorter prefix waits for more.
                if used <= 64 {
                    for cut in 0..used {
                        let mut prefix = BytesMut::from(&before[..cut]);
                        assert_eq!(
                            decode(&mut prefix, version, max_size),
                            Err(DecodeError::Incomplete),
                            "prefix of {cut}/{used} bytes of a {}",
                            packet.name()
                        );
                        assert_eq!(prefix.len(), cut, "a prefix was consumed");
                    }
                }
                if let ClientPacket::Connect(c) = &packet {
                    version = Some(c.version);
                }
                let v = version.unwrap_or(Version::V311);
                round_trip(&packet, v);
                answers(&packet, v);
            }
            Err(DecodeError::Incomplete) => {
                assert_eq!(buf, before, "Incomplete consumed bytes");
                break;
            }
            Err(e) => {
                let _ = (e.to_string(), e.reason_code());
                break;
            }
        }
    }
});
