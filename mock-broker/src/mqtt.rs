//! The MQTT 3.1.1 and 5 packets the broker exchanges: decoding what clients send and
//! encoding what the broker answers.
//!
//! Only the broker's side is implemented: [`decode`] reads client-to-server packets,
//! [`encode`] writes server-to-client packets (and, for tests, the client-to-server ones
//! a raw client needs). Every MQTT 5 property list is checked against the packet it sits
//! in (MQTT 5 section 2.2.2.2: allowed properties, repeats, values); of a publish's (or a
//! will's) properties only the checked ones a subscriber may receive are passed on.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// MQTT protocol levels the broker speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

impl Version {
    pub fn name(self) -> &'static str {
        match self {
            Version::V311 => "3.1.1",
            Version::V5 => "5",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    fn from_bits(bits: u8) -> Result<Self, DecodeError> {
        match bits {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            _ => Err(DecodeError::Malformed("QoS 3 is reserved")),
        }
    }

    pub fn level(self) -> u8 {
        self as u8
    }
}

/// Why bytes could not be read as a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a whole packet yet: read more.
    #[error("incomplete packet")]
    Incomplete,
    /// The bytes do not follow the packet's format (MQTT 5: 0x81 Malformed Packet).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// Well-formed, but against a protocol rule, e.g. a property given twice (MQTT 5:
    /// 0x82 Protocol Error).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A property identifier not valid for the packet (MQTT 5 section 2.2.2.2: 0x81).
    #[error("malformed packet: {property} is not allowed in {packet}")]
    PropertyNotAllowed {
        property: &'static str,
        packet: &'static str,
    },
    /// A property that may appear once given again (0x82).
    #[error("protocol error: {property} appears more than once in {packet}")]
    DuplicateProperty {
        property: &'static str,
        packet: &'static str,
    },
    /// A property value MQTT 5 forbids (0x82).
    #[error("protocol error: {property} in {packet} {problem}")]
    InvalidProperty {
        property: &'static str,
        packet: &'static str,
        problem: &'static str,
    },
    #[error("packet of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("protocol level {0} is not supported")]
    UnsupportedVersion(u8),
    #[error("a client does not send packet type {0}")]
    UnexpectedType(u8),
}

impl DecodeError {
    /// The MQTT 5 reason code a server answers this error with (CONNACK or DISCONNECT).
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::Protocol(_)
            | DecodeError::DuplicateProperty { .. }
            | DecodeError::InvalidProperty { .. }
            | DecodeError::UnexpectedType(_) => reason::PROTOCOL_ERROR,
            DecodeError::TooLarge(_) => reason::PACKET_TOO_LARGE,
            DecodeError::UnsupportedVersion(_) => reason::UNSUPPORTED_VERSION,
            DecodeError::Incomplete
            | DecodeError::Malformed(_)
            | DecodeError::PropertyNotAllowed { .. } => reason::MALFORMED,
        }
    }
}

/// The CONNECT fields the broker acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub version: Version,
    pub client_id: String,
    pub clean_start: bool,
    pub keep_alive_secs: u16,
    pub username: Option<String>,
    /// MQTT 5: the largest packet the client accepts.
    pub max_packet_size: Option<u32>,
    /// MQTT 5: how many QoS 1 deliveries the client accepts at once.
    pub receive_maximum: Option<u16>,
    /// MQTT 5: how long the session outlives the connection (absent: 0).
    pub session_expiry_secs: Option<u32>,
    pub will: Option<Will>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5: the will's properties to publish it with (checked; the will delay and
    /// message expiry left out).
    pub properties: Bytes,
    /// MQTT 5: the will's Message Expiry Interval.
    pub message_expiry_secs: Option<u32>,
    /// MQTT 5: the Will Delay Interval (absent: 0, published at once).
    pub delay_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: String,
    /// Present for QoS 1 and 2.
    pub packet_id: Option<u16>,
    pub payload: Bytes,
    /// MQTT 5: the topic alias the client used, if any.
    pub topic_alias: Option<u16>,
    /// MQTT 5: Message Expiry Interval, kept apart because the broker counts it down.
    pub message_expiry_secs: Option<u32>,
    /// MQTT 5: the encoded properties other than the topic alias, the message expiry and
    /// subscription ids.
    pub properties: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub filter: String,
    pub qos: QoS,
    /// MQTT 5 subscription options (all off for 3.1.1).
    pub options: SubscriptionOptions,
}

/// MQTT 5 subscription options beyond the QoS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Never send the subscriber its own messages.
    pub no_local: bool,
    /// Keep the RETAIN flag of live messages as published.
    pub retain_as_published: bool,
    /// 0: retained messages on subscribing; 1: only for a new subscription; 2: never.
    pub retain_handling: u8,
}

/// Packets a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientPacket {
    Connect(Connect),
    Publish(Publish),
    PubAck {
        packet_id: u16,
    },
    PubRec {
        packet_id: u16,
    },
    PubRel {
        packet_id: u16,
    },
    PubComp {
        packet_id: u16,
    },
    Subscribe {
        packet_id: u16,
        subscriptions: Vec<Subscription>,
        /// MQTT 5 Subscription Identifier, if the client gave one.
        identifier: Option<usize>,
    },
    Unsubscribe {
        packet_id: u16,
        filters: Vec<String>,
    },
    PingReq,
    Disconnect {
        reason: u8,
        /// MQTT 5: a new Session Expiry Interval for the session.
        session_expiry_secs: Option<u32>,
    },
}

impl ClientPacket {
    /// The packet type's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            ClientPacket::Connect(_) => "CONNECT",
            ClientPacket::Publish(_) => "PUBLISH",
            ClientPacket::PubAck { .. } => "PUBACK",
            ClientPacket::PubRec { .. } => "PUBREC",
            ClientPacket::PubRel { .. } => "PUBREL",
            ClientPacket::PubComp { .. } => "PUBCOMP",
            ClientPacket::Subscribe { .. } => "SUBSCRIBE",
            ClientPacket::Unsubscribe { .. } => "UNSUBSCRIBE",
            ClientPacket::PingReq => "PINGREQ",
            ClientPacket::Disconnect { .. } => "DISCONNECT",
        }
    }
}

/// Packets the broker sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerPacket {
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck {
        packet_id: u16,
        reason: u8,
    },
    /// `granted`: per filter, the granted QoS (0, 1) or a failure code (0x80, or MQTT 5's
    /// reason codes).
    SubAck {
        packet_id: u16,
        codes: Vec<u8>,
    },
    UnsubAck {
        packet_id: u16,
        count: usize,
    },
    PingResp,
    /// MQTT 5 only: 3.1.1 has no server DISCONNECT, the broker just closes.
    Disconnect {
        reason: u8,
    },
}

impl ServerPacket {
    /// The packet type's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            ServerPacket::ConnAck(_) => "CONNACK",
            ServerPacket::Publish(_) => "PUBLISH",
            ServerPacket::PubAck { .. } => "PUBACK",
            ServerPacket::SubAck { .. } => "SUBACK",
            ServerPacket::UnsubAck { .. } => "UNSUBACK",
            ServerPacket::PingResp => "PINGRESP",
            ServerPacket::Disconnect { .. } => "DISCONNECT",
        }
    }
}

/// CONNACK; for MQTT 3.1.1 `code` is the return code (0-5), for MQTT 5 the reason code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    pub session_present: bool,
    pub code: u8,
    /// MQTT 5 properties (ignored for 3.1.1).
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<bool>,
    pub maximum_packet_size: Option<u32>,
    pub topic_alias_maximum: Option<u16>,
    pub server_keep_alive: Option<u16>,
    /// The Session Expiry Interval the server applies, when it is not the one asked for.
    pub session_expiry_interval: Option<u32>,
    pub receive_maximum: Option<u16>,
    pub wildcard_subscription_available: Option<bool>,
    pub subscription_identifier_available: Option<bool>,
    pub shared_subscription_available: Option<bool>,
    /// The client id the server gave a client that sent an empty one.
    pub assigned_client_identifier: Option<String>,
}

/// MQTT 5 reason codes the broker uses.
pub mod reason {
    pub const SUCCESS: u8 = 0x00;
    /// DISCONNECT from a client: end, and publish the will all the same.
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    pub const UNSPECIFIED: u8 = 0x80;
    pub const MALFORMED: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const UNSUPPORTED_VERSION: u8 = 0x84;
    pub const CLIENT_ID_INVALID: u8 = 0x85;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
    pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const CONNECTION_RATE_EXCEEDED: u8 = 0x9F;
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: u8 = 0xA1;
}

/// MQTT 3.1.1 CONNACK return codes.
pub mod return_code {
    pub const ACCEPTED: u8 = 0;
    pub const UNACCEPTABLE_VERSION: u8 = 1;
    pub const IDENTIFIER_REJECTED: u8 = 2;
    pub const SERVER_UNAVAILABLE: u8 = 3;
    pub const NOT_AUTHORIZED: u8 = 5;
}

/// The fixed header of the next packet in `buf`, if complete: (first byte, header
/// length, remaining length).
fn fixed_header(buf: &[u8]) -> Result<(u8, usize, usize), DecodeError> {
    let Some(&first) = buf.first() else {
        return Err(DecodeError::Incomplete);
    };
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Err(DecodeError::Incomplete);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(DecodeError::Malformed(
                    "remaining length not in its shortest form",
                ));
            }
            return Ok((first, 2 + i, remaining));
        }
    }
    Err(DecodeError::Malformed(
        "remaining length longer than 4 bytes",
    ))
}

/// The protocol level of the CONNECT at the front of `buf`, without consuming
/// anything: lets the broker answer a CONNECT it cannot read in the client's own
/// version (an MQTT 5 client gets a CONNACK with the reason code), whatever protocol
/// name it gave.
pub fn peek_connect_level(buf: &[u8]) -> Option<u8> {
    let (first, header_len, _) = fixed_header(buf).ok()?;
    let body = buf.get(header_len..)?;
    if first >> 4 != 1 {
        return None;
    }
    // The protocol name as a 2-byte-length string, then the level.
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_len).copied()
}

/// Read one client packet from the front of `buf`, consuming it. `version` is `None`
/// until CONNECT has been read (the CONNECT says which version the rest uses).
/// `max_size` bounds a whole packet; a larger one is refused before it is buffered.
///
/// Every field is checked as MQTT 3.1.1 and 5 require of a server: fixed-header flags,
/// packet ids, trailing bytes, and (MQTT 5) each property's type, value and count
/// against the packet it appears in. Only a packet that passes is returned.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<Version>,
    max_size: usize,
) -> Result<ClientPacket, DecodeError> {
    let (first, header_len, remaining) = fixed_header(buf)?;
    let total = header_len + remaining;
    if total > max_size {
        return Err(DecodeError::TooLarge(total));
    }
    if buf.len() < total {
        return Err(DecodeError::Incomplete);
    }
    buf.advance(header_len);
    let mut body = buf.split_to(remaining).freeze();
    let v5 = version == Some(Version::V5);
    let packet_type = first >> 4;
    let flags = first & 0x0f;
    let expect_flags = |wanted: u8, why: &'static str| {
        if flags == wanted {
            Ok(())
        } else {
            Err(DecodeError::Malformed(why))
        }
    };
    let packet = match packet_type {
        1 => {
            expect_flags(0, "CONNECT flags must be 0000")?;
            ClientPacket::Connect(read_connect(&mut body)?)
        }
        3 => ClientPacket::Publish(read_publish(flags, &mut body, v5)?),
        4..=7 => {
            if packet_type == 6 {
                expect_flags(0b0010, "PUBREL flags must be 0010")?;
            } else {
                expect_flags(0, "acknowledgement flags must be 0000")?;
            }
            let packet_id = read_packet_id(&mut body)?;
            if v5 && body.has_remaining() {
                // Reason code, then properties (both optional).
                read_u8(&mut body)?;
                if body.has_remaining() {
                    read_properties(&mut body, PropertyContext::Ack)?;
                }
            }
            expect_end(&body)?;
            match packet_type {
                4 => ClientPacket::PubAck { packet_id },
                5 => ClientPacket::PubRec { packet_id },
                6 => ClientPacket::PubRel { packet_id },
                _ => ClientPacket::PubComp { packet_id },
            }
        }
        8 => {
            expect_flags(0b0010, "SUBSCRIBE flags must be 0010")?;
            let packet_id = read_packet_id(&mut body)?;
            let mut identifier = None;
            if v5 {
                for property in read_properties(&mut body, PropertyContext::Subscribe)?.iter() {
                    if let PropertyValue::VarInt(id) = property.value {
                        identifier = Some(id);
                    }
                }
            }
            let mut subscriptions = Vec::new();
            while body.has_remaining() {
                let filter = read_string(&mut body)?;
                let options = read_u8(&mut body)?;
                let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
                if options & reserved != 0 {
                    return Err(DecodeError::Malformed(
                        "SUBSCRIBE options use reserved bits",
                    ));
                }
                if v5 && (options >> 4) & 0b11 == 3 {
                    return Err(DecodeError::Protocol("retain handling 3 is reserved"));
                }
                subscriptions.push(Subscription {
                    filter,
                    qos: QoS::from_bits(options & 0b11)?,
                    options: SubscriptionOptions {
                        no_local: v5 && options & 0b100 != 0,
                        retain_as_published: v5 && options & 0b1000 != 0,
                        retain_handling: if v5 { (options >> 4) & 0b11 } else { 0 },
                    },
                });
            }
            if subscriptions.is_empty() {
                return Err(DecodeError::Protocol("SUBSCRIBE without a topic filter"));
            }
            ClientPacket::Subscribe {
                packet_id,
                subscriptions,
                identifier,
            }
        }
        10 => {
            expect_flags(0b0010, "UNSUBSCRIBE flags must be 0010")?;
            let packet_id = read_packet_id(&mut body)?;
            if v5 {
                read_properties(&mut body, PropertyContext::Unsubscribe)?;
            }
            let mut filters = Vec::new();
            while body.has_remaining() {
                filters.push(read_string(&mut body)?);
            }
            if filters.is_empty() {
                return Err(DecodeError::Protocol("UNSUBSCRIBE without a topic filter"));
            }
            ClientPacket::Unsubscribe { packet_id, filters }
        }
        12 => {
            expect_flags(0, "PINGREQ flags must be 0000")?;
            expect_end(&body)?;
            ClientPacket::PingReq
        }
        14 => {
            expect_flags(0, "DISCONNECT flags must be 0000")?;
            let mut reason = 0;
            let mut session_expiry_secs = None;
            if v5 && body.has_remaining() {
                reason = read_u8(&mut body)?;
                if body.has_remaining() {
                    for property in read_properties(&mut body, PropertyContext::Disconnect)?.iter()
                    {
                        if let PropertyValue::U32(secs) = property.value {
                            session_expiry_secs = Some(secs);
                        }
                    }
                }
            }
            expect_end(&body)?;
            ClientPacket::Disconnect {
                reason,
                session_expiry_secs,
            }
        }
        other => return Err(DecodeError::UnexpectedType(other)),
    };
    Ok(packet)
}

fn expect_end(body: &Bytes) -> Result<(), DecodeError> {
    if body.has_remaining() {
        Err(DecodeError::Malformed("bytes after the end of the packet"))
    } else {
        Ok(())
    }
}

/// A packet id of a SUBSCRIBE, UNSUBSCRIBE, QoS 1 PUBLISH or acknowledgement: never 0.
fn read_packet_id(body: &mut Bytes) -> Result<u16, DecodeError> {
    match read_u16(body)? {
        0 => Err(DecodeError::Malformed("packet id 0")),
        id => Ok(id),
    }
}

fn read_connect(body: &mut Bytes) -> Result<Connect, DecodeError> {
    let name = read_string(body)?;
    let level = read_u8(body)?;
    if name != "MQTT" {
        // MQTT 3.1 ("MQIsdp") and anything else; a level of 5 still gets an MQTT 5
        // answer.
        return Err(DecodeError::UnsupportedVersion(level));
    }
    let version = match level {
        4 => Version::V311,
        5 => Version::V5,
        other => return Err(DecodeError::UnsupportedVersion(other)),
    };
    let flags = read_u8(body)?;
    if flags & 1 != 0 {
        return Err(DecodeError::Malformed("CONNECT reserved flag set"));
    }
    let will_flag = flags & 0b100 != 0;
    let will_bits = flags & 0b11_1000;
    if !will_flag && will_bits != 0 {
        return Err(DecodeError::Malformed(
            "will QoS or will retain set without the will flag",
        ));
    }
    let username_flag = flags & 0b1000_0000 != 0;
    let password_flag = flags & 0b0100_0000 != 0;
    if version == Version::V311 && password_flag && !username_flag {
        return Err(DecodeError::Malformed("password without a user name"));
    }
    let keep_alive_secs = read_u16(body)?;
    let mut max_packet_size = None;
    let mut receive_maximum = None;
    let mut session_expiry_secs = None;
    if version == Version::V5 {
        for property in read_properties(body, PropertyContext::Connect)?.iter() {
            match property.value {
                PropertyValue::U32(v) if property.id == MAXIMUM_PACKET_SIZE => {
                    max_packet_size = Some(v)
                }
                PropertyValue::U16(v) if property.id == RECEIVE_MAXIMUM => {
                    receive_maximum = Some(v)
                }
                PropertyValue::U32(v) if property.id == SESSION_EXPIRY_INTERVAL => {
                    session_expiry_secs = Some(v)
                }
                _ => {}
            }
        }
    }
    let client_id = read_string(body)?;
    let will = if will_flag {
        let (properties, message_expiry_secs, delay_secs) = if version == Version::V5 {
            let read = read_properties(body, PropertyContext::Will)?;
            let expiry = message_expiry(&read);
            let delay = read.iter().find_map(|p| match p.value {
                PropertyValue::U32(secs) if p.id == WILL_DELAY_INTERVAL => Some(secs),
                _ => None,
            });
            (read.forwarded, expiry, delay.unwrap_or(0))
        } else {
            (Bytes::new(), None, 0)
        };
        let topic = read_string(body)?;
        let payload = read_binary(body)?;
        Some(Will {
            topic,
            payload,
            qos: QoS::from_bits((flags >> 3) & 0b11)?,
            retain: flags & 0b10_0000 != 0,
            properties,
            message_expiry_secs,
            delay_secs,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(read_string(body)?)
    } else {
        None
    };
    // The password is read past and dropped: AWS ignores it on mutual-TLS endpoints.
    if password_flag {
        read_binary(body)?;
    }
    expect_end(body)?;
    Ok(Connect {
        version,
        client_id,
        clean_start: flags & 0b10 != 0,
        keep_alive_secs,
        username,
        max_packet_size,
        receive_maximum,
        session_expiry_secs,
        will,
    })
}

fn read_publish(flags: u8, body: &mut Bytes, v5: bool) -> Result<Publish, DecodeError> {
    let qos = QoS::from_bits((flags >> 1) & 0b11)?;
    let dup = flags & 0b1000 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
    }
    let topic = read_string(body)?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(read_packet_id(body)?)
    };
    let mut topic_alias = None;
    let mut message_expiry_secs = None;
    let mut properties = Bytes::new();
    if v5 {
        let read = read_properties(body, PropertyContext::Publish)?;
        topic_alias = read.iter().find_map(|p| match p.value {
            PropertyValue::U16(alias) if p.id == TOPIC_ALIAS => Some(alias),
            _ => None,
        });
        message_expiry_secs = message_expiry(&read);
        properties = read.forwarded;
    }
    Ok(Publish {
        dup,
        qos,
        retain: flags & 1 != 0,
        topic,
        packet_id,
        payload: body.split_to(body.len()),
        topic_alias,
        message_expiry_secs,
        properties,
    })
}

fn message_expiry(read: &Properties) -> Option<u32> {
    read.iter().find_map(|p| match p.value {
        PropertyValue::U32(secs) if p.id == MESSAGE_EXPIRY_INTERVAL => Some(secs),
        _ => None,
    })
}

// MQTT 5 property identifiers (section 2.2.2.2).
const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;

/// Which packet a property list belongs to: each allows its own set (MQTT 5 table 2-4,
/// as sent by a client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PropertyContext {
    Connect,
    Will,
    Publish,
    Ack,
    Subscribe,
    Unsubscribe,
    Disconnect,
}

impl PropertyContext {
    fn name(self) -> &'static str {
        match self {
            PropertyContext::Connect => "CONNECT",
            PropertyContext::Will => "the will properties",
            PropertyContext::Publish => "PUBLISH",
            PropertyContext::Ack => "a publish acknowledgement",
            PropertyContext::Subscribe => "SUBSCRIBE",
            PropertyContext::Unsubscribe => "UNSUBSCRIBE",
            PropertyContext::Disconnect => "DISCONNECT",
        }
    }

    fn allows(self, id: u8) -> bool {
        let allowed: &[u8] = match self {
            PropertyContext::Connect => &[
                SESSION_EXPIRY_INTERVAL,
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
                REQUEST_PROBLEM_INFORMATION,
                REQUEST_RESPONSE_INFORMATION,
                RECEIVE_MAXIMUM,
                TOPIC_ALIAS_MAXIMUM,
                USER_PROPERTY,
                MAXIMUM_PACKET_SIZE,
            ],
            PropertyContext::Will => &[
                PAYLOAD_FORMAT_INDICATOR,
                MESSAGE_EXPIRY_INTERVAL,
                CONTENT_TYPE,
                RESPONSE_TOPIC,
                CORRELATION_DATA,
                WILL_DELAY_INTERVAL,
                USER_PROPERTY,
            ],
            // Valid in PUBLISH, but a client never sends one (see property_value_problem).
            PropertyContext::Publish => &[
                PAYLOAD_FORMAT_INDICATOR,
                MESSAGE_EXPIRY_INTERVAL,
                CONTENT_TYPE,
                RESPONSE_TOPIC,
                CORRELATION_DATA,
                SUBSCRIPTION_IDENTIFIER,
                TOPIC_ALIAS,
                USER_PROPERTY,
            ],
            PropertyContext::Ack => &[REASON_STRING, USER_PROPERTY],
            PropertyContext::Subscribe => &[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY],
            PropertyContext::Unsubscribe => &[USER_PROPERTY],
            PropertyContext::Disconnect => &[
                SESSION_EXPIRY_INTERVAL,
                REASON_STRING,
                SERVER_REFERENCE,
                USER_PROPERTY,
            ],
        };
        allowed.contains(&id)
    }

    /// Whether a property read in this context is passed on to subscribers: the
    /// application properties of a PUBLISH or a will, not the topic alias (which is
    /// per connection), the will delay (which is about the will, not the message) nor
    /// the message expiry (which the broker counts down and writes afresh).
    fn forwards(self, id: u8) -> bool {
        matches!(self, PropertyContext::Publish | PropertyContext::Will)
            && !matches!(
                id,
                TOPIC_ALIAS | WILL_DELAY_INTERVAL | MESSAGE_EXPIRY_INTERVAL
            )
    }
}

/// One property's value, as far as the broker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PropertyValue {
    U8(u8),
    U16(u16),
    U32(u32),
    VarInt(usize),
    Text(String),
    /// Binary data or a string pair: checked, not kept apart.
    Other,
}

#[derive(Debug, Clone)]
struct Property {
    id: u8,
    value: PropertyValue,
}

/// A checked property list: the properties read, and the encoded bytes of those to
/// pass on to subscribers.
struct Properties {
    read: Vec<Property>,
    forwarded: Bytes,
}

impl Properties {
    fn iter(&self) -> impl Iterator<Item = &Property> {
        self.read.iter()
    }
}

/// Read a property list for `context`, refusing unknown identifiers and properties the
/// packet does not allow (0x81), repeats of a property that may appear once and values
/// MQTT 5 forbids (0x82).
fn read_properties(body: &mut Bytes, context: PropertyContext) -> Result<Properties, DecodeError> {
    let length = read_varint(body)?;
    if body.remaining() < length {
        return Err(DecodeError::Malformed("properties longer than the packet"));
    }
    let mut list = body.split_to(length);
    let mut read: Vec<Property> = Vec::new();
    let mut forwarded = BytesMut::new();
    let mut authentication_method = false;
    let packet = context.name();
    while list.has_remaining() {
        let start = list.clone();
        // Identifiers are variable byte integers, but every defined one fits one byte:
        // a longer one is unknown even if its low byte names a property.
        let Some((id, property)) = u8::try_from(read_varint(&mut list)?)
            .ok()
            .and_then(|id| property_name(id).map(|name| (id, name)))
        else {
            return Err(DecodeError::Malformed("unknown property identifier"));
        };
        if !context.allows(id) {
            return Err(DecodeError::PropertyNotAllowed { property, packet });
        }
        if id != USER_PROPERTY && read.iter().any(|p| p.id == id) {
            return Err(DecodeError::DuplicateProperty { property, packet });
        }
        let value = read_property_value(id, &mut list)?;
        authentication_method |= id == AUTHENTICATION_METHOD;
        let problem = match id {
            AUTHENTICATION_DATA if !authentication_method => {
                Some("comes without an Authentication Method before it")
            }
            _ => property_value_problem(id, &value, context),
        };
        if let Some(problem) = problem {
            return Err(DecodeError::InvalidProperty {
                property,
                packet,
                problem,
            });
        }
        if context.forwards(id) {
            // A checked property with a one-byte identifier: these bytes are its only
            // encoding, so subscribers get exactly what was checked.
            forwarded.extend_from_slice(&start[..start.len() - list.len()]);
        }
        read.push(Property { id, value });
    }
    Ok(Properties {
        read,
        forwarded: forwarded.freeze(),
    })
}

/// What is wrong with a property's value, if anything.
fn property_value_problem(
    id: u8,
    value: &PropertyValue,
    context: PropertyContext,
) -> Option<&'static str> {
    match (id, value) {
        (
            PAYLOAD_FORMAT_INDICATOR | REQUEST_PROBLEM_INFORMATION | REQUEST_RESPONSE_INFORMATION,
            PropertyValue::U8(v),
        ) if *v > 1 => Some("is neither 0 nor 1"),
        (RECEIVE_MAXIMUM | TOPIC_ALIAS, PropertyValue::U16(0)) => Some("is 0"),
        (MAXIMUM_PACKET_SIZE, PropertyValue::U32(0)) => Some("is 0"),
        (SUBSCRIPTION_IDENTIFIER, PropertyValue::VarInt(0)) => Some("is 0"),
        // Identifiers belong to the receiving subscription [MQTT-3.3.4-6].
        (SUBSCRIPTION_IDENTIFIER, _) if context == PropertyContext::Publish => {
            Some("is never sent by a client")
        }
        // Subscribers publish their responses to it [MQTT-3.3.2-14].
        (RESPONSE_TOPIC, PropertyValue::Text(topic))
            if topic.is_empty() || topic.contains(['+', '#']) =>
        {
            Some("is not a topic name (empty or with a wildcard)")
        }
        _ => None,
    }
}

/// The name of each property MQTT 5 defines (all identifiers fit one byte).
fn property_name(id: u8) -> Option<&'static str> {
    Some(match id {
        0x01 => "Payload Format Indicator",
        0x02 => "Message Expiry Interval",
        0x03 => "Content Type",
        0x08 => "Response Topic",
        0x09 => "Correlation Data",
        0x0B => "Subscription Identifier",
        0x11 => "Session Expiry Interval",
        0x12 => "Assigned Client Identifier",
        0x13 => "Server Keep Alive",
        0x15 => "Authentication Method",
        0x16 => "Authentication Data",
        0x17 => "Request Problem Information",
        0x18 => "Will Delay Interval",
        0x19 => "Request Response Information",
        0x1A => "Response Information",
        0x1C => "Server Reference",
        0x1F => "Reason String",
        0x21 => "Receive Maximum",
        0x22 => "Topic Alias Maximum",
        0x23 => "Topic Alias",
        0x24 => "Maximum QoS",
        0x25 => "Retain Available",
        0x26 => "User Property",
        0x27 => "Maximum Packet Size",
        0x28 => "Wildcard Subscription Available",
        0x29 => "Subscription Identifier Available",
        0x2A => "Shared Subscription Available",
        _ => return None,
    })
}

fn read_property_value(id: u8, body: &mut Bytes) -> Result<PropertyValue, DecodeError> {
    Ok(match id {
        0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => PropertyValue::U8(read_u8(body)?),
        0x13 | 0x21 | 0x22 | 0x23 => PropertyValue::U16(read_u16(body)?),
        0x02 | 0x11 | 0x18 | 0x27 => PropertyValue::U32(read_u32(body)?),
        0x0B => PropertyValue::VarInt(read_varint(body)?),
        0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => PropertyValue::Text(read_string(body)?),
        0x09 | 0x16 => {
            read_binary(body)?;
            PropertyValue::Other
        }
        0x26 => {
            read_string(body)?;
            read_string(body)?;
            PropertyValue::Other
        }
        _ => return Err(DecodeError::Malformed("unknown property identifier")),
    })
}

fn read_u8(body: &mut Bytes) -> Result<u8, DecodeError> {
    if body.remaining() < 1 {
        return Err(DecodeError::Malformed("packet ends early"));
    }
    Ok(body.get_u8())
}

fn read_u16(body: &mut Bytes) -> Result<u16, DecodeError> {
    if body.remaining() < 2 {
        return Err(DecodeError::Malformed("packet ends early"));
    }
    Ok(body.get_u16())
}

fn read_u32(body: &mut Bytes) -> Result<u32, DecodeError> {
    if body.remaining() < 4 {
        return Err(DecodeError::Malformed("packet ends early"));
    }
    Ok(body.get_u32())
}

/// A variable byte integer, in its shortest form as MQTT requires.
fn read_varint(body: &mut Bytes) -> Result<usize, DecodeError> {
    let mut value = 0usize;
    for i in 0..4 {
        let byte = read_u8(body)?;
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(DecodeError::Malformed(
                    "variable byte integer not in its shortest form",
                ));
            }
            return Ok(value);
        }
    }
    Err(DecodeError::Malformed(
        "variable byte integer longer than 4 bytes",
    ))
}

fn read_binary(body: &mut Bytes) -> Result<Bytes, DecodeError> {
    let length = usize::from(read_u16(body)?);
    if body.remaining() < length {
        return Err(DecodeError::Malformed("field longer than the packet"));
    }
    Ok(body.split_to(length))
}

fn read_string(body: &mut Bytes) -> Result<String, DecodeError> {
    let bytes = read_binary(body)?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| DecodeError::Malformed("string is not UTF-8"))?;
    if text.contains('\0') {
        return Err(DecodeError::Malformed("string contains U+0000"));
    }
    Ok(text.to_owned())
}

fn put_varint(out: &mut BytesMut, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

fn put_string(out: &mut BytesMut, text: &str) {
    out.put_u16(text.len() as u16);
    out.put_slice(text.as_bytes());
}

fn put_packet(out: &mut BytesMut, first: u8, body: &[u8]) {
    out.put_u8(first);
    put_varint(out, body.len());
    out.put_slice(body);
}

fn put_properties(out: &mut BytesMut, properties: &[u8]) {
    put_varint(out, properties.len());
    out.put_slice(properties);
}

/// The encoded size of `packet`, to hold outgoing packets to a client's maximum.
pub fn encoded_len(packet: &ServerPacket, version: Version) -> usize {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out);
    out.len()
}

/// Append `packet`, encoded for `version`, to `out`.
pub fn encode(packet: &ServerPacket, version: Version, out: &mut BytesMut) {
    let v5 = version == Version::V5;
    let mut body = BytesMut::new();
    match packet {
        ServerPacket::ConnAck(ack) => {
            body.put_u8(u8::from(ack.session_present));
            body.put_u8(ack.code);
            if v5 {
                let mut props = BytesMut::new();
                if let Some(max) = ack.receive_maximum {
                    props.put_u8(0x21);
                    props.put_u16(max);
                }
                if let Some(qos) = ack.maximum_qos {
                    props.put_u8(0x24);
                    props.put_u8(qos);
                }
                if let Some(retain) = ack.retain_available {
                    props.put_u8(0x25);
                    props.put_u8(u8::from(retain));
                }
                if let Some(size) = ack.maximum_packet_size {
                    props.put_u8(0x27);
                    props.put_u32(size);
                }
                if let Some(max) = ack.topic_alias_maximum {
                    props.put_u8(0x22);
                    props.put_u16(max);
                }
                if let Some(secs) = ack.server_keep_alive {
                    props.put_u8(0x13);
                    props.put_u16(secs);
                }
                if let Some(secs) = ack.session_expiry_interval {
                    props.put_u8(SESSION_EXPIRY_INTERVAL);
                    props.put_u32(secs);
                }
                for (id, flag) in [
                    (0x28, ack.wildcard_subscription_available),
                    (0x29, ack.subscription_identifier_available),
                    (0x2A, ack.shared_subscription_available),
                ] {
                    if let Some(flag) = flag {
                        props.put_u8(id);
                        props.put_u8(u8::from(flag));
                    }
                }
                if let Some(id) = &ack.assigned_client_identifier {
                    props.put_u8(0x12);
                    put_string(&mut props, id);
                }
                put_properties(&mut body, &props);
            }
            put_packet(out, 0x20, &body);
        }
        ServerPacket::Publish(publish) => {
            put_string(&mut body, &publish.topic);
            if let Some(id) = publish.packet_id {
                body.put_u16(id);
            }
            if v5 {
                // Topic aliases are the client's to the broker only: never sent back.
                let mut props = BytesMut::new();
                if let Some(secs) = publish.message_expiry_secs {
                    props.put_u8(MESSAGE_EXPIRY_INTERVAL);
                    props.put_u32(secs);
                }
                props.put_slice(&publish.properties);
                put_properties(&mut body, &props);
            }
            body.put_slice(&publish.payload);
            let first = 0x30
                | (u8::from(publish.dup) << 3)
                | (publish.qos.level() << 1)
                | u8::from(publish.retain);
            put_packet(out, first, &body);
        }
        ServerPacket::PubAck { packet_id, reason } => {
            body.put_u16(*packet_id);
            if v5 && *reason != reason::SUCCESS {
                body.put_u8(*reason);
            }
            put_packet(out, 0x40, &body);
        }
        ServerPacket::SubAck { packet_id, codes } => {
            body.put_u16(*packet_id);
            if v5 {
                put_properties(&mut body, &[]);
            }
            body.put_slice(codes);
            put_packet(out, 0x90, &body);
        }
        ServerPacket::UnsubAck { packet_id, count } => {
            body.put_u16(*packet_id);
            if v5 {
                put_properties(&mut body, &[]);
                for _ in 0..*count {
                    body.put_u8(reason::SUCCESS);
                }
            }
            put_packet(out, 0xB0, &body);
        }
        ServerPacket::PingResp => put_packet(out, 0xD0, &[]),
        ServerPacket::Disconnect { reason } => {
            if v5 {
                body.put_u8(*reason);
                put_properties(&mut body, &[]);
                put_packet(out, 0xE0, &body);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_bytes(level: u8, client_id: &str, keep_alive: u16, properties: &[u8]) -> BytesMut {
        let mut body = BytesMut::new();
        put_string(&mut body, "MQTT");
        body.put_u8(level);
        body.put_u8(0b10);
        body.put_u16(keep_alive);
        if level == 5 {
            put_properties(&mut body, properties);
        }
        put_string(&mut body, client_id);
        let mut out = BytesMut::new();
        put_packet(&mut out, 0x10, &body);
        out
    }

    #[test]
    fn reads_connect_311_and_5_with_maximum_packet_size() {
        let mut buf = connect_bytes(4, "dev", 60, &[]);
        let ClientPacket::Connect(c) = decode(&mut buf, None, 1024).unwrap() else {
            panic!()
        };
        assert_eq!(
            (c.version, c.client_id.as_str(), c.keep_alive_secs),
            (Version::V311, "dev", 60)
        );
        assert!(buf.is_empty());

        let mut buf = connect_bytes(
            5,
            "dev5",
            0,
            &[0x27, 0, 0, 0x10, 0, 0x21, 0, 5, 0x11, 0, 0, 0x0e, 0x10],
        );
        let ClientPacket::Connect(c) = decode(&mut buf, None, 1024).unwrap() else {
            panic!()
        };
        assert_eq!(c.version, Version::V5);
        assert_eq!(c.max_packet_size, Some(4096));
        assert_eq!(c.receive_maximum, Some(5));
        assert_eq!(c.session_expiry_secs, Some(3600));
    }

    #[test]
    fn refuses_other_protocol_levels() {
        let mut buf = connect_bytes(3, "old", 60, &[]);
        assert_eq!(
            decode(&mut buf, None, 1024),
            Err(DecodeError::UnsupportedVersion(3))
        );
    }

    #[test]
    fn incomplete_packets_wait_and_oversize_ones_are_refused_early() {
        let full = connect_bytes(4, "dev", 60, &[]);
        let mut part = BytesMut::from(&full[..full.len() - 1]);
        assert_eq!(decode(&mut part, None, 1024), Err(DecodeError::Incomplete));
        assert_eq!(part.len(), full.len() - 1, "nothing consumed");
        // Only the header has arrived, but it already says too much is coming.
        let mut header = BytesMut::from(&[0x30u8, 0xff, 0xff, 0x7f][..]);
        assert!(matches!(
            decode(&mut header, Some(Version::V311), 1024),
            Err(DecodeError::TooLarge(_))
        ));
    }

    #[test]
    fn publish_round_trips_in_both_versions_and_drops_the_topic_alias() {
        for version in [Version::V311, Version::V5] {
            let publish = Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "a/b".into(),
                packet_id: Some(7),
                payload: Bytes::from_static(b"hello"),
                topic_alias: None,
                message_expiry_secs: None,
                properties: if version == Version::V5 {
                    // content type "t"
                    Bytes::from_static(&[0x03, 0, 1, b't'])
                } else {
                    Bytes::new()
                },
            };
            let mut out = BytesMut::new();
            encode(&ServerPacket::Publish(publish.clone()), version, &mut out);
            let ClientPacket::Publish(back) = decode(&mut out, Some(version), 1024).unwrap() else {
                panic!()
            };
            assert_eq!(back, publish);
        }
        // Topic alias 1 and a user property: the alias is taken out, the rest kept.
        let mut body = BytesMut::new();
        put_string(&mut body, "t");
        let props = [0x23, 0, 1, 0x26, 0, 1, b'k', 0, 1, b'v'];
        put_properties(&mut body, &props);
        body.put_slice(b"x");
        let mut buf = BytesMut::new();
        put_packet(&mut buf, 0x30, &body);
        let ClientPacket::Publish(p) = decode(&mut buf, Some(Version::V5), 1024).unwrap() else {
            panic!()
        };
        assert_eq!(p.topic_alias, Some(1));
        assert_eq!(&p.properties[..], &props[3..]);
        assert_eq!(&p.payload[..], b"x");
    }

    #[test]
    fn reads_subscribe_with_options() {
        let mut body = BytesMut::new();
        body.put_u16(3);
        put_properties(&mut body, &[]);
        put_string(&mut body, "inTopic");
        body.put_u8(0b0000_0110); // no-local + QoS 2
        let mut buf = BytesMut::new();
        put_packet(&mut buf, 0x82, &body);
        assert_eq!(
            decode(&mut buf, Some(Version::V5), 1024).unwrap(),
            ClientPacket::Subscribe {
                packet_id: 3,
                subscriptions: vec![Subscription {
                    filter: "inTopic".into(),
                    qos: QoS::ExactlyOnce,
                    options: SubscriptionOptions {
                        no_local: true,
                        ..SubscriptionOptions::default()
                    },
                }],
                identifier: None,
            }
        );
    }

    #[test]
    fn connack_carries_properties_only_in_v5() {
        let ack = ConnAck {
            maximum_qos: Some(1),
            server_keep_alive: Some(30),
            ..ConnAck::default()
        };
        let mut out = BytesMut::new();
        encode(&ServerPacket::ConnAck(ack.clone()), Version::V311, &mut out);
        assert_eq!(&out[..], &[0x20, 2, 0, 0]);
        out.clear();
        encode(&ServerPacket::ConnAck(ack), Version::V5, &mut out);
        assert_eq!(&out[..], &[0x20, 8, 0, 0, 5, 0x24, 1, 0x13, 0, 30]);
    }

    fn v5_packet(first: u8, body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        put_packet(&mut out, first, body);
        out
    }

    fn publish_with_properties(qos: u8, packet_id: Option<u16>, props: &[u8]) -> BytesMut {
        let mut body = BytesMut::new();
        put_string(&mut body, "test/t");
        if let Some(id) = packet_id {
            body.put_u16(id);
        }
        put_properties(&mut body, props);
        body.put_slice(b"x");
        v5_packet(0x30 | (qos << 1), &body)
    }

    fn decode_v5(mut buf: BytesMut) -> Result<ClientPacket, DecodeError> {
        decode(&mut buf, Some(Version::V5), 1024)
    }

    #[test]
    fn publish_properties_are_checked_per_packet_type_count_and_value() {
        let content_type = [0x03, 0, 1, b't'];
        let twice = [content_type, content_type].concat();
        let cases: &[(&[u8], u8)] = &[
            // Content type twice: protocol error.
            (&twice, reason::PROTOCOL_ERROR),
            // Session Expiry Interval belongs to CONNECT, not PUBLISH: an identifier not
            // valid for the packet is malformed (MQTT 5 section 2.2.2.2).
            (&[0x11, 0, 0, 0, 1], reason::MALFORMED),
            // A client never sends a subscription identifier in PUBLISH.
            (&[0x0B, 1], reason::PROTOCOL_ERROR),
            // Payload format indicator 2.
            (&[0x01, 2], reason::PROTOCOL_ERROR),
            // Topic alias 0.
            (&[0x23, 0, 0], reason::PROTOCOL_ERROR),
            // Unknown identifier 0x7F.
            (&[0x7F, 0], reason::MALFORMED),
            // Identifier 257 as a two-byte variable byte integer: not 0x01 in disguise.
            (&[0x81, 0x02, 1], reason::MALFORMED),
            // Identifier 1 in a non-minimal two-byte form.
            (&[0x81, 0x00, 1], reason::MALFORMED),
            // A string property running past the list.
            (&[0x03, 0, 9, b't'], reason::MALFORMED),
        ];
        for (props, code) in cases {
            let error = decode_v5(publish_with_properties(0, None, props)).unwrap_err();
            assert_eq!(error.reason_code(), *code, "{props:x?}: {error}");
        }
        // User properties may repeat; they are passed on with the rest.
        let users = [0x26, 0, 1, b'k', 0, 1, b'v', 0x26, 0, 1, b'k', 0, 1, b'w'];
        let ClientPacket::Publish(p) = decode_v5(publish_with_properties(0, None, &users)).unwrap()
        else {
            panic!()
        };
        assert_eq!(&p.properties[..], &users[..]);
    }

    #[test]
    fn packet_ids_flags_and_trailing_bytes_are_checked() {
        // QoS 1 with packet id 0.
        let e = decode_v5(publish_with_properties(1, Some(0), &[])).unwrap_err();
        assert_eq!(e, DecodeError::Malformed("packet id 0"));
        // DUP on QoS 0.
        let mut body = BytesMut::new();
        put_string(&mut body, "t");
        put_properties(&mut body, &[]);
        assert!(decode_v5(v5_packet(0x38, &body)).is_err());
        // PINGREQ with a body, and with flags.
        assert!(decode_v5(v5_packet(0xC0, &[0])).is_err());
        assert!(decode_v5(v5_packet(0xC1, &[])).is_err());
        assert_eq!(decode_v5(v5_packet(0xC0, &[])), Ok(ClientPacket::PingReq));
        // A 3.1.1 PUBACK is exactly a packet id.
        let mut buf = v5_packet(0x40, &[0, 1, 0]);
        assert!(decode(&mut buf, Some(Version::V311), 1024).is_err());
        // UNSUBSCRIBE: wrong flags, no filters, packet id 0.
        let mut body = BytesMut::new();
        body.put_u16(1);
        put_properties(&mut body, &[]);
        assert_eq!(
            decode_v5(v5_packet(0xA2, &body)).unwrap_err().reason_code(),
            reason::PROTOCOL_ERROR,
            "no filters"
        );
        put_string(&mut body, "a");
        assert!(decode_v5(v5_packet(0xA0, &body)).is_err(), "flags 0000");
        assert!(decode_v5(v5_packet(0xA2, &body)).is_ok());
        body[1] = 0;
        assert!(decode_v5(v5_packet(0xA2, &body)).is_err(), "packet id 0");
        // A remaining length in a non-minimal form.
        let mut buf = BytesMut::from(&[0xC0u8, 0x80, 0x00][..]);
        assert!(decode(&mut buf, Some(Version::V5), 1024).is_err());
    }

    #[test]
    fn subscribe_options_reserved_bits_and_retain_handling_3_are_refused() {
        let subscribe = |options: u8, packet_id: u16, version: Version| {
            let mut body = BytesMut::new();
            body.put_u16(packet_id);
            if version == Version::V5 {
                put_properties(&mut body, &[]);
            }
            put_string(&mut body, "a/b");
            body.put_u8(options);
            let mut buf = v5_packet(0x82, &body);
            decode(&mut buf, Some(version), 1024)
        };
        assert!(subscribe(0b0010_1101, 1, Version::V5).is_ok());
        assert_eq!(
            subscribe(0b0011_0001, 1, Version::V5)
                .unwrap_err()
                .reason_code(),
            reason::PROTOCOL_ERROR
        );
        assert!(subscribe(0b0100_0001, 1, Version::V5).is_err());
        assert!(subscribe(0b0000_0101, 1, Version::V311).is_err());
        assert!(subscribe(1, 0, Version::V5).is_err());
    }

    fn connect_v5(flags: u8, properties: &[u8], tail: &[u8]) -> BytesMut {
        let mut body = BytesMut::new();
        put_string(&mut body, "MQTT");
        body.put_u8(5);
        body.put_u8(flags);
        body.put_u16(60);
        put_properties(&mut body, properties);
        put_string(&mut body, "dev");
        body.put_slice(tail);
        v5_packet(0x10, &body)
    }

    #[test]
    fn connect_is_checked_and_its_level_is_seen_before_decoding() {
        let ok = connect_v5(0b10, &[], &[]);
        assert_eq!(peek_connect_level(&ok), Some(5));
        assert!(decode(&mut ok.clone(), None, 1024).is_ok());
        let refused: &[(BytesMut, u8)] = &[
            // Receive Maximum 0, Maximum Packet Size 0.
            (connect_v5(0b10, &[0x21, 0, 0], &[]), reason::PROTOCOL_ERROR),
            (
                connect_v5(0b10, &[0x27, 0, 0, 0, 0], &[]),
                reason::PROTOCOL_ERROR,
            ),
            // Session expiry twice.
            (
                connect_v5(0b10, &[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2], &[]),
                reason::PROTOCOL_ERROR,
            ),
            // Topic alias is a PUBLISH property: not valid in CONNECT, so malformed
            // (MQTT 5 section 2.2.2.2).
            (connect_v5(0b10, &[0x23, 0, 1], &[]), reason::MALFORMED),
            // Will QoS 1 without the will flag.
            (connect_v5(0b1010, &[], &[]), reason::MALFORMED),
            // Will retain without the will flag.
            (connect_v5(0b10_0010, &[], &[]), reason::MALFORMED),
            // Bytes after the last field.
            (connect_v5(0b10, &[], &[0xAA]), reason::MALFORMED),
        ];
        for (packet, code) in refused {
            let error = decode(&mut packet.clone(), None, 1024).unwrap_err();
            assert_eq!(error.reason_code(), *code, "{packet:x?}: {error}");
        }
        // A will with its own properties: checked, kept (minus the will delay).
        let mut tail = BytesMut::new();
        put_properties(&mut tail, &[0x18, 0, 0, 0, 5, 0x03, 0, 1, b'j']);
        put_string(&mut tail, "test/will");
        put_string(&mut tail, "bye");
        let mut buf = connect_v5(0b1110, &[], &tail);
        let ClientPacket::Connect(c) = decode(&mut buf, None, 1024).unwrap() else {
            panic!()
        };
        let will = c.will.unwrap();
        assert_eq!(
            (will.topic.as_str(), will.qos),
            ("test/will", QoS::AtLeastOnce)
        );
        assert_eq!(&will.properties[..], &[0x03, 0, 1, b'j']);
        // The same will with the will delay twice.
        let mut tail = BytesMut::new();
        put_properties(&mut tail, &[0x18, 0, 0, 0, 5, 0x18, 0, 0, 0, 5]);
        put_string(&mut tail, "test/will");
        put_string(&mut tail, "bye");
        assert!(decode(&mut connect_v5(0b1110, &[], &tail), None, 1024).is_err());
    }

    fn packet(first: u8, body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        put_packet(&mut out, first, body);
        out
    }

    /// Decode one packet from `bytes` as a client of `version` would send it.
    fn read(bytes: &[u8], version: Version) -> Result<ClientPacket, DecodeError> {
        decode(&mut BytesMut::from(bytes), Some(version), 1 << 20)
    }

    /// The MQTT 5 reason code refusing `bytes`; panics if they are accepted.
    fn refusal(bytes: &[u8], version: Version) -> u8 {
        match read(bytes, version) {
            Ok(packet) => panic!("accepted {packet:?} from {bytes:02x?}"),
            Err(e) => e.reason_code(),
        }
    }

    /// A QoS 1 MQTT 5 PUBLISH to "t" with packet id 9 and the given property list.
    fn publish_v5(properties: &[u8]) -> BytesMut {
        let mut body = BytesMut::new();
        put_string(&mut body, "t");
        body.put_u16(9);
        put_properties(&mut body, properties);
        body.put_slice(b"x");
        packet(0x32, &body)
    }

    const CONTENT_TYPE_T: [u8; 4] = [0x03, 0, 1, b't'];
    const USER_K_V: [u8; 7] = [0x26, 0, 1, b'k', 0, 1, b'v'];

    #[test]
    fn publish_properties_that_may_appear_once_are_refused_twice_as_a_protocol_error() {
        for (name, property) in [
            ("Content Type", &CONTENT_TYPE_T[..]),
            ("Payload Format Indicator", &[0x01, 1][..]),
            ("Message Expiry Interval", &[0x02, 0, 0, 0, 9][..]),
            ("Response Topic", &[0x08, 0, 1, b'r'][..]),
            ("Correlation Data", &[0x09, 0, 1, 7][..]),
            ("Topic Alias", &[0x23, 0, 1][..]),
        ] {
            let twice = [property, property].concat();
            let error = read(&publish_v5(&twice), Version::V5).unwrap_err();
            assert_eq!(
                error,
                DecodeError::DuplicateProperty {
                    property: name,
                    packet: "PUBLISH"
                }
            );
            assert_eq!(error.reason_code(), reason::PROTOCOL_ERROR, "{name}");
        }
        // User Property is the one a client may repeat.
        let users = [&USER_K_V[..], &USER_K_V[..]].concat();
        let ClientPacket::Publish(p) = read(&publish_v5(&users), Version::V5).unwrap() else {
            panic!()
        };
        assert_eq!(&p.properties[..], &users[..]);
    }

    #[test]
    fn publish_properties_a_publish_cannot_carry_are_malformed() {
        for (name, property) in [
            ("Session Expiry Interval", &[0x11, 0, 0, 0, 1][..]),
            ("Receive Maximum", &[0x21, 0, 1][..]),
            ("Reason String", &[0x1F, 0, 1, b'r'][..]),
            ("Will Delay Interval", &[0x18, 0, 0, 0, 1][..]),
            ("Maximum QoS", &[0x24, 1][..]),
            ("Assigned Client Identifier", &[0x12, 0, 1, b'a'][..]),
        ] {
            let error = read(&publish_v5(property), Version::V5).unwrap_err();
            assert_eq!(
                error,
                DecodeError::PropertyNotAllowed {
                    property: name,
                    packet: "PUBLISH"
                }
            );
            assert_eq!(error.reason_code(), reason::MALFORMED, "{name}");
        }
    }

    #[test]
    fn property_identifiers_are_single_byte_variable_byte_integers() {
        // 0x81 0x02 is identifier 257: its low byte is 0x01 (Payload Format
        // Indicator) but no such property exists.
        assert_eq!(
            refusal(&publish_v5(&[0x81, 0x02, 1]), Version::V5),
            reason::MALFORMED
        );
        // 0x83 0x00 spells Content Type (3) in two bytes: not the shortest encoding.
        assert_eq!(
            refusal(&publish_v5(&[0x83, 0x00, 0, 1, b't']), Version::V5),
            reason::MALFORMED
        );
        // An identifier no version defines.
        assert_eq!(
            refusal(&publish_v5(&[0x7F, 0]), Version::V5),
            reason::MALFORMED
        );
    }

    #[test]
    fn property_lengths_that_disagree_with_the_packet_are_malformed() {
        // A list longer than the packet.
        let mut body = BytesMut::new();
        put_string(&mut body, "t");
        body.put_u8(9);
        body.put_slice(&CONTENT_TYPE_T);
        let error = read(&packet(0x30, &body), Version::V5).unwrap_err();
        assert_eq!(error.reason_code(), reason::MALFORMED, "{error}");
        // A string running past the end of its list (the payload is not its tail).
        for truncated in [
            &[0x03, 0, 5, b't'][..],
            &[0x26, 0, 1, b'k', 0][..],
            &[0x02, 0, 0][..],
        ] {
            let error = read(&publish_v5(truncated), Version::V5).unwrap_err();
            assert!(matches!(error, DecodeError::Malformed(_)), "{error}");
            assert_eq!(error.reason_code(), reason::MALFORMED);
        }
        // A property string that is not UTF-8.
        let error = read(&publish_v5(&[0x03, 0, 1, 0xff]), Version::V5).unwrap_err();
        assert_eq!(error.reason_code(), reason::MALFORMED);
    }

    #[test]
    fn publish_property_values_out_of_range_are_a_protocol_error() {
        for (what, property) in [
            ("Payload Format Indicator 2", &[0x01, 2][..]),
            ("Topic Alias 0", &[0x23, 0, 0][..]),
            (
                "Response Topic with a wildcard",
                &[0x08, 0, 3, b'a', b'/', b'#'][..],
            ),
            ("empty Response Topic", &[0x08, 0, 0][..]),
            // Identifiers belong to the receiving subscription (MQTT-3.3.4-6).
            ("Subscription Identifier from a client", &[0x0B, 1][..]),
        ] {
            assert_eq!(
                refusal(&publish_v5(property), Version::V5),
                reason::PROTOCOL_ERROR,
                "{what}"
            );
        }
    }

    #[test]
    fn publish_qos_1_with_packet_id_0_and_qos_0_with_dup_are_refused() {
        // Topic "t", packet id 0, (MQTT 5: no properties,) payload "x".
        let v311 = [0x32, 6, 0, 1, b't', 0, 0, b'x'];
        assert_eq!(
            read(&v311, Version::V311),
            Err(DecodeError::Malformed("packet id 0"))
        );
        let v5 = [0x32, 7, 0, 1, b't', 0, 0, 0, b'x'];
        assert_eq!(refusal(&v5, Version::V5), reason::MALFORMED);
        // DUP must be 0 on QoS 0 (MQTT-3.3.1-2).
        let dup_qos0 = [0x38, 4, 0, 1, b't', b'x'];
        assert_eq!(refusal(&dup_qos0, Version::V311), reason::MALFORMED);
    }

    #[test]
    fn forwarded_publish_properties_are_exactly_the_checked_ones_re_encoded() {
        let props = [
            &[0x23, 0, 1][..], // topic alias: per connection, not forwarded
            &[0x01, 1],
            &[0x02, 0, 0, 0x0e, 0x10],
            &CONTENT_TYPE_T,
            &[0x08, 0, 1, b'r'],
            &[0x09, 0, 2, 0xde, 0xad],
            &USER_K_V,
            &USER_K_V,
        ]
        .concat();
        let ClientPacket::Publish(p) = read(&publish_v5(&props), Version::V5).unwrap() else {
            panic!()
        };
        assert_eq!(p.topic_alias, Some(1));
        // The message expiry is kept apart: the broker writes what is left of it.
        assert_eq!(p.message_expiry_secs, Some(3600));
        assert_eq!(
            &p.properties[..],
            &[&props[3..5], &props[10..]].concat()[..]
        );
        // What a subscriber gets decodes again to the same publish.
        let mut out = BytesMut::new();
        encode(&ServerPacket::Publish(p.clone()), Version::V5, &mut out);
        let ClientPacket::Publish(again) = decode(&mut out, Some(Version::V5), 1024).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            again,
            Publish {
                topic_alias: None,
                ..p
            }
        );
    }

    #[test]
    fn connect_duplicated_properties_and_zero_limits_are_a_protocol_error() {
        for (what, properties) in [
            (
                "Session Expiry twice",
                &[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2][..],
            ),
            ("Receive Maximum twice", &[0x21, 0, 5, 0x21, 0, 6][..]),
            (
                "Maximum Packet Size twice",
                &[0x27, 0, 0, 1, 0, 0x27, 0, 0, 1, 0][..],
            ),
            ("Receive Maximum 0", &[0x21, 0, 0][..]),
            ("Maximum Packet Size 0", &[0x27, 0, 0, 0, 0][..]),
            ("Request Problem Information 2", &[0x17, 2][..]),
            ("Request Response Information 2", &[0x19, 2][..]),
            ("Authentication Data alone", &[0x16, 0, 1, 1][..]),
        ] {
            assert_eq!(
                refusal(&connect_v5(0b10, properties, &[]), Version::V5),
                reason::PROTOCOL_ERROR,
                "{what}"
            );
        }
        // A publish-only property in CONNECT.
        assert_eq!(
            read(&connect_v5(0b10, &CONTENT_TYPE_T, &[]), Version::V5),
            Err(DecodeError::PropertyNotAllowed {
                property: "Content Type",
                packet: "CONNECT"
            })
        );
    }

    #[test]
    fn connect_will_bits_without_the_will_flag_and_trailing_bytes_are_malformed() {
        // Will QoS 1, will retain, each without the will flag.
        for flags in [0b0000_1010, 0b0010_0010] {
            assert_eq!(
                refusal(&connect_v5(flags, &[], &[]), Version::V5),
                reason::MALFORMED,
                "flags {flags:08b}"
            );
        }
        // Bytes after the last field.
        assert_eq!(
            refusal(&connect_v5(0b10, &[], &[0, 1, b'x']), Version::V5),
            reason::MALFORMED
        );
        let mut v311 = connect_bytes(4, "dev", 60, &[]);
        v311[1] += 1;
        v311.put_u8(0);
        assert!(matches!(
            read(&v311, Version::V311),
            Err(DecodeError::Malformed(_))
        ));
        // 3.1.1: a password needs a user name (MQTT-3.1.2-22).
        let mut body = BytesMut::new();
        put_string(&mut body, "MQTT");
        body.put_u8(4);
        body.put_u8(0b0100_0010);
        body.put_u16(60);
        put_string(&mut body, "dev");
        put_string(&mut body, "pw");
        assert!(matches!(
            read(&packet(0x10, &body), Version::V311),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn will_properties_are_checked_like_a_publishs() {
        let will = |properties: &[u8]| {
            let mut rest = BytesMut::new();
            put_properties(&mut rest, properties);
            put_string(&mut rest, "w");
            rest.put_u16(1);
            rest.put_u8(b'x');
            connect_v5(0b0000_1110, &[], &rest)
        };
        let ClientPacket::Connect(c) = read(
            &will(&[0x18, 0, 0, 0, 5, 0x26, 0, 1, b'k', 0, 0]),
            Version::V5,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.will.unwrap().qos, QoS::AtLeastOnce);
        assert_eq!(
            read(&will(&[0x11, 0, 0, 0, 1]), Version::V5),
            Err(DecodeError::PropertyNotAllowed {
                property: "Session Expiry Interval",
                packet: "the will properties"
            })
        );
        assert_eq!(
            refusal(&will(&[0x18, 0, 0, 0, 5, 0x18, 0, 0, 0, 6]), Version::V5),
            reason::PROTOCOL_ERROR
        );
    }

    fn subscribe(
        version: Version,
        packet_id: u16,
        properties: &[u8],
        entries: &[(&str, u8)],
    ) -> BytesMut {
        let mut body = BytesMut::new();
        body.put_u16(packet_id);
        if version == Version::V5 {
            put_properties(&mut body, properties);
        }
        for (filter, options) in entries {
            put_string(&mut body, filter);
            body.put_u8(*options);
        }
        packet(0x82, &body)
    }

    #[test]
    fn subscribe_reserved_options_retain_handling_3_packet_id_0_and_no_filter_are_refused() {
        let v5 = Version::V5;
        assert!(
            read(
                &subscribe(v5, 1, &[0x0B, 5, 0x26, 0, 0, 0, 0], &[("a", 0b0010_1101)]),
                v5
            )
            .is_ok()
        );
        for (what, bytes, code) in [
            (
                "reserved bit 6",
                subscribe(v5, 1, &[], &[("a", 0b0100_0001)]),
                reason::MALFORMED,
            ),
            (
                "reserved bit 7",
                subscribe(v5, 1, &[], &[("a", 0b1000_0001)]),
                reason::MALFORMED,
            ),
            (
                "Retain Handling 3",
                subscribe(v5, 1, &[], &[("a", 0b0011_0001)]),
                reason::PROTOCOL_ERROR,
            ),
            (
                "packet id 0",
                subscribe(v5, 0, &[], &[("a", 1)]),
                reason::MALFORMED,
            ),
            (
                "no filter",
                subscribe(v5, 1, &[], &[]),
                reason::PROTOCOL_ERROR,
            ),
            (
                "Subscription Identifier 0",
                subscribe(v5, 1, &[0x0B, 0], &[("a", 1)]),
                reason::PROTOCOL_ERROR,
            ),
            (
                "Subscription Identifier twice",
                subscribe(v5, 1, &[0x0B, 1, 0x0B, 2], &[("a", 1)]),
                reason::PROTOCOL_ERROR,
            ),
            (
                "Content Type",
                subscribe(v5, 1, &CONTENT_TYPE_T, &[("a", 1)]),
                reason::MALFORMED,
            ),
        ] {
            assert_eq!(refusal(&bytes, v5), code, "{what}");
        }
        // 3.1.1 defines only the QoS bits (MQTT-3.8.3-4).
        let v311 = Version::V311;
        assert!(read(&subscribe(v311, 1, &[], &[("a", 1)]), v311).is_ok());
        assert!(read(&subscribe(v311, 1, &[], &[("a", 0b0000_0101)]), v311).is_err());
        assert!(read(&subscribe(v311, 0, &[], &[("a", 1)]), v311).is_err());
    }

    #[test]
    fn unsubscribe_without_filters_with_wrong_flags_or_packet_id_0_is_refused() {
        let unsubscribe = |first: u8, packet_id: u16, properties: &[u8], filters: &[&str]| {
            let mut body = BytesMut::new();
            body.put_u16(packet_id);
            put_properties(&mut body, properties);
            for filter in filters {
                put_string(&mut body, filter);
            }
            packet(first, &body)
        };
        let v5 = Version::V5;
        assert_eq!(
            read(&unsubscribe(0xA2, 4, &USER_K_V, &["a"]), v5),
            Ok(ClientPacket::Unsubscribe {
                packet_id: 4,
                filters: vec!["a".into()]
            })
        );
        for (what, bytes, code) in [
            (
                "no filter",
                unsubscribe(0xA2, 4, &[], &[]),
                reason::PROTOCOL_ERROR,
            ),
            (
                "flags 0000",
                unsubscribe(0xA0, 4, &[], &["a"]),
                reason::MALFORMED,
            ),
            (
                "packet id 0",
                unsubscribe(0xA2, 0, &[], &["a"]),
                reason::MALFORMED,
            ),
            (
                "Subscription Identifier",
                unsubscribe(0xA2, 4, &[0x0B, 1], &["a"]),
                reason::MALFORMED,
            ),
        ] {
            assert_eq!(refusal(&bytes, v5), code, "{what}");
        }
    }

    #[test]
    fn pingreq_with_a_body_or_flags_is_malformed() {
        for version in [Version::V311, Version::V5] {
            assert_eq!(read(&[0xC0, 0], version), Ok(ClientPacket::PingReq));
            assert_eq!(refusal(&[0xC0, 1, 0], version), reason::MALFORMED);
            assert_eq!(refusal(&[0xC1, 0], version), reason::MALFORMED);
        }
    }

    #[test]
    fn acks_and_disconnect_are_checked_to_their_last_byte() {
        let v5 = Version::V5;
        let v311 = Version::V311;
        // PUBACK: reason code and a reason string are fine in MQTT 5.
        assert_eq!(
            read(&[0x40, 7, 0, 3, 0x10, 3, 0x1F, 0, 0], v5),
            Ok(ClientPacket::PubAck { packet_id: 3 })
        );
        for (what, bytes, version, code) in [
            (
                "3.1.1 PUBACK with a reason code",
                &[0x40, 3, 0, 3, 0][..],
                v311,
                reason::MALFORMED,
            ),
            (
                "PUBACK packet id 0",
                &[0x40, 2, 0, 0][..],
                v5,
                reason::MALFORMED,
            ),
            ("PUBACK flags", &[0x41, 2, 0, 3][..], v5, reason::MALFORMED),
            (
                "PUBREL flags 0000",
                &[0x60, 2, 0, 3][..],
                v5,
                reason::MALFORMED,
            ),
            (
                "PUBACK with Content Type",
                &[0x40, 8, 0, 3, 0, 4, 3, 0, 1, b't'][..],
                v5,
                reason::MALFORMED,
            ),
            (
                "PUBACK with trailing bytes",
                &[0x40, 5, 0, 3, 0, 0, 9][..],
                v5,
                reason::MALFORMED,
            ),
            (
                "3.1.1 DISCONNECT with a body",
                &[0xE0, 1, 0][..],
                v311,
                reason::MALFORMED,
            ),
            ("DISCONNECT flags", &[0xE2, 0][..], v5, reason::MALFORMED),
            (
                "DISCONNECT with Topic Alias",
                &[0xE0, 5, 0, 3, 0x23, 0, 1][..],
                v5,
                reason::MALFORMED,
            ),
            (
                "DISCONNECT with Session Expiry twice",
                &[0xE0, 12, 0, 10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1][..],
                v5,
                reason::PROTOCOL_ERROR,
            ),
        ] {
            assert_eq!(refusal(bytes, version), code, "{what}");
        }
        assert_eq!(
            read(&[0xE0, 7, 4, 5, 0x11, 0, 0, 0, 0], v5),
            Ok(ClientPacket::Disconnect {
                reason: 4,
                session_expiry_secs: Some(0)
            })
        );
    }

    #[test]
    fn a_remaining_length_not_in_its_shortest_encoding_is_malformed() {
        assert_eq!(refusal(&[0xC0, 0x80, 0x00], Version::V5), reason::MALFORMED);
        let mut part = BytesMut::from(&[0xC0u8, 0x80][..]);
        assert_eq!(
            decode(&mut part, Some(Version::V5), 1024),
            Err(DecodeError::Incomplete)
        );
    }
}
