//! The MQTT 3.1.1 and 5 packets the broker exchanges: decoding what clients send and
//! encoding what the broker answers.
//!
//! Only the broker's side is implemented: [`decode`] reads client-to-server packets,
//! [`encode`] writes server-to-client packets (and, for tests, the client-to-server ones
//! a raw client needs). Every MQTT 5 property list is checked against the packet it sits
//! in (MQTT 5 section 2.2.2.2: allowed properties, duplicates, value ranges); a publish's
//! properties that a subscriber may receive are re-encoded from what was checked (minus
//! the topic alias, which is per-connection) and reach MQTT 5 subscribers that way.

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

/// Why bytes could not be read as a packet. [`DecodeError::reason_code`] says which MQTT 5
/// reason code refuses it; MQTT 3.1.1 clients are just disconnected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a whole packet yet: read more.
    #[error("incomplete packet")]
    Incomplete,
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// Well-formed bytes that break a rule of the protocol.
    #[error("protocol error: {0}")]
    ProtocolError(&'static str),
    /// A property the packet may not carry (MQTT 5 section 2.2.2.2): malformed.
    #[error("malformed packet: {property} is not allowed in {packet}")]
    PropertyNotAllowed {
        property: &'static str,
        packet: &'static str,
    },
    /// A property that may appear once appears again: a protocol error.
    #[error("protocol error: {property} appears more than once in {packet}")]
    DuplicateProperty {
        property: &'static str,
        packet: &'static str,
    },
    /// A property value the specification forbids: a protocol error.
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
    /// The MQTT 5 reason code of the DISCONNECT (or CONNACK) that refuses the packet.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::Incomplete
            | DecodeError::Malformed(_)
            | DecodeError::PropertyNotAllowed { .. } => reason::MALFORMED,
            DecodeError::ProtocolError(_)
            | DecodeError::DuplicateProperty { .. }
            | DecodeError::InvalidProperty { .. }
            | DecodeError::UnexpectedType(_) => reason::PROTOCOL_ERROR,
            DecodeError::TooLarge(_) => reason::PACKET_TOO_LARGE,
            DecodeError::UnsupportedVersion(_) => reason::UNSUPPORTED_VERSION,
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
    /// MQTT 5: a topic alias the client used (the broker offers none, so any is an error).
    pub topic_alias: Option<u16>,
    /// MQTT 5: the encoded properties other than the topic alias and subscription ids.
    pub properties: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub filter: String,
    pub qos: QoS,
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
    },
    Unsubscribe {
        packet_id: u16,
        filters: Vec<String>,
    },
    PingReq,
    Disconnect {
        reason: u8,
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
    pub receive_maximum: Option<u16>,
}

/// MQTT 5 reason codes the broker uses.
pub mod reason {
    pub const SUCCESS: u8 = 0x00;
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
    pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
    pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const CONNECTION_RATE_EXCEEDED: u8 = 0x9F;
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
        if i > 0 && byte == 0 {
            return Err(DecodeError::Malformed(
                "remaining length not in its shortest encoding",
            ));
        }
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((first, 2 + i, remaining));
        }
    }
    Err(DecodeError::Malformed(
        "remaining length longer than 4 bytes",
    ))
}

/// The flags (low four bits of the first byte) each client packet type must carry;
/// anything else is malformed (MQTT-2.1.3-1). PUBLISH's flags are checked on their own.
fn required_flags(packet_type: u8) -> Option<u8> {
    match packet_type {
        1 | 4 | 5 | 7 | 12 | 14 => Some(0),
        6 | 8 | 10 => Some(0b0010),
        _ => None,
    }
}

/// Read one client packet from the front of `buf`, consuming it. `version` is `None`
/// until CONNECT has been read (the CONNECT says which version the rest uses).
/// `max_size` bounds a whole packet; a larger one is refused before it is buffered.
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
    if let Some(required) = required_flags(packet_type)
        && flags != required
    {
        return Err(DecodeError::Malformed(
            "reserved flags of the fixed header are wrong",
        ));
    }
    let packet = match packet_type {
        1 => ClientPacket::Connect(read_connect(&mut body)?),
        3 => ClientPacket::Publish(read_publish(flags, &mut body, v5)?),
        4..=7 => {
            let packet_id = read_packet_id(&mut body)?;
            if v5 && body.has_remaining() {
                // The reason code and properties are informational here, but checked.
                read_u8(&mut body)?;
                if body.has_remaining() {
                    read_properties(&mut body, PropertyPlace::Ack)?;
                }
            }
            match packet_type {
                4 => ClientPacket::PubAck { packet_id },
                5 => ClientPacket::PubRec { packet_id },
                6 => ClientPacket::PubRel { packet_id },
                _ => ClientPacket::PubComp { packet_id },
            }
        }
        8 => read_subscribe(&mut body, v5)?,
        10 => {
            let packet_id = read_packet_id(&mut body)?;
            if v5 {
                read_properties(&mut body, PropertyPlace::Unsubscribe)?;
            }
            let mut filters = Vec::new();
            while body.has_remaining() {
                filters.push(read_string(&mut body)?);
            }
            if filters.is_empty() {
                return Err(DecodeError::ProtocolError(
                    "UNSUBSCRIBE without a topic filter",
                ));
            }
            ClientPacket::Unsubscribe { packet_id, filters }
        }
        12 => ClientPacket::PingReq,
        14 => ClientPacket::Disconnect {
            reason: if v5 && body.has_remaining() {
                let reason = read_u8(&mut body)?;
                if body.has_remaining() {
                    read_properties(&mut body, PropertyPlace::Disconnect)?;
                }
                reason
            } else {
                0
            },
        },
        other => return Err(DecodeError::UnexpectedType(other)),
    };
    if body.has_remaining() {
        return Err(DecodeError::Malformed(
            "bytes after the end of the packet's fields",
        ));
    }
    Ok(packet)
}

/// A packet identifier, which is never 0 (MQTT-2.3.1-1).
fn read_packet_id(body: &mut Bytes) -> Result<u16, DecodeError> {
    match read_u16(body)? {
        0 => Err(DecodeError::ProtocolError("packet identifier 0")),
        id => Ok(id),
    }
}

fn read_subscribe(body: &mut Bytes, v5: bool) -> Result<ClientPacket, DecodeError> {
    let packet_id = read_packet_id(body)?;
    if v5 {
        read_properties(body, PropertyPlace::Subscribe)?;
    }
    let mut subscriptions = Vec::new();
    while body.has_remaining() {
        let filter = read_string(body)?;
        let options = read_u8(body)?;
        // 3.1.1 uses only the QoS bits; MQTT 5 adds No Local, Retain As Published and
        // Retain Handling. The rest are reserved.
        let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
        if options & reserved != 0 {
            return Err(DecodeError::Malformed(
                "reserved subscription option bits set",
            ));
        }
        if v5 && (options >> 4) & 0b11 == 3 {
            return Err(DecodeError::ProtocolError("Retain Handling 3 is reserved"));
        }
        subscriptions.push(Subscription {
            filter,
            qos: QoS::from_bits(options & 0b11)?,
        });
    }
    if subscriptions.is_empty() {
        return Err(DecodeError::ProtocolError(
            "SUBSCRIBE without a topic filter",
        ));
    }
    Ok(ClientPacket::Subscribe {
        packet_id,
        subscriptions,
    })
}

fn read_connect(body: &mut Bytes) -> Result<Connect, DecodeError> {
    let name = read_string(body)?;
    let level = read_u8(body)?;
    if name != "MQTT" {
        // MQTT 3.1 ("MQIsdp") and anything else.
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
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0b10_0000 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::Malformed(
            "will QoS or will retain set without the will flag",
        ));
    }
    let has_username = flags & 0b1000_0000 != 0;
    let has_password = flags & 0b0100_0000 != 0;
    if version == Version::V311 && has_password && !has_username {
        return Err(DecodeError::Malformed(
            "password flag set without the user name flag",
        ));
    }
    let keep_alive_secs = read_u16(body)?;
    let mut max_packet_size = None;
    let mut receive_maximum = None;
    let mut session_expiry_secs = None;
    if version == Version::V5 {
        let properties = read_properties(body, PropertyPlace::Connect)?;
        let mut authentication_method = false;
        let mut authentication_data = false;
        for property in properties {
            match (property.id, property.value) {
                (MAXIMUM_PACKET_SIZE, PropertyValue::U32(v)) => max_packet_size = Some(v),
                (RECEIVE_MAXIMUM, PropertyValue::U16(v)) => receive_maximum = Some(v),
                (SESSION_EXPIRY_INTERVAL, PropertyValue::U32(v)) => session_expiry_secs = Some(v),
                (AUTHENTICATION_METHOD, _) => authentication_method = true,
                (AUTHENTICATION_DATA, _) => authentication_data = true,
                _ => {}
            }
        }
        if authentication_data && !authentication_method {
            return Err(DecodeError::ProtocolError(
                "Authentication Data without an Authentication Method",
            ));
        }
    }
    let client_id = read_string(body)?;
    let will = if will_flag {
        if version == Version::V5 {
            read_properties(body, PropertyPlace::Will)?;
        }
        let topic = read_string(body)?;
        let payload = read_binary(body)?;
        Some(Will {
            topic,
            payload,
            qos: QoS::from_bits(will_qos)?,
            retain: will_retain,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(read_string(body)?)
    } else {
        None
    };
    // The password is read past and dropped: AWS ignores it on mutual-TLS endpoints.
    if has_password {
        read_binary(body)?;
    }
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
    // Only validated properties a PUBLISH to a subscriber may carry are passed on,
    // re-encoded, so subscribers get exactly what was checked here.
    let mut forwarded = BytesMut::new();
    if v5 {
        for property in read_properties(body, PropertyPlace::Publish)? {
            match (property.id, &property.value) {
                (TOPIC_ALIAS, PropertyValue::U16(alias)) => topic_alias = Some(*alias),
                (SUBSCRIPTION_IDENTIFIER, _) => {
                    // MQTT-3.3.4-6: identifiers belong to the receiving subscription.
                    return Err(DecodeError::ProtocolError(
                        "a client's PUBLISH carries a Subscription Identifier",
                    ));
                }
                _ => put_property(&mut forwarded, &property),
            }
        }
    }
    Ok(Publish {
        dup,
        qos,
        retain: flags & 1 != 0,
        topic,
        packet_id,
        payload: body.split_to(body.len()),
        topic_alias,
        properties: forwarded.freeze(),
    })
}

const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const SERVER_REFERENCE: u8 = 0x1C;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;

/// Where a property list sits in a client's packet; each place allows its own set
/// (MQTT 5 section 2.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PropertyPlace {
    Connect,
    Will,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    Subscribe,
    Unsubscribe,
    Disconnect,
}

impl PropertyPlace {
    fn name(self) -> &'static str {
        match self {
            PropertyPlace::Connect => "CONNECT",
            PropertyPlace::Will => "the will properties",
            PropertyPlace::Publish => "PUBLISH",
            PropertyPlace::Ack => "a publish acknowledgement",
            PropertyPlace::Subscribe => "SUBSCRIBE",
            PropertyPlace::Unsubscribe => "UNSUBSCRIBE",
            PropertyPlace::Disconnect => "DISCONNECT",
        }
    }

    fn allows(self, id: u8) -> bool {
        match self {
            PropertyPlace::Connect => matches!(
                id,
                SESSION_EXPIRY_INTERVAL
                    | AUTHENTICATION_METHOD
                    | AUTHENTICATION_DATA
                    | REQUEST_PROBLEM_INFORMATION
                    | REQUEST_RESPONSE_INFORMATION
                    | RECEIVE_MAXIMUM
                    | TOPIC_ALIAS_MAXIMUM
                    | USER_PROPERTY
                    | MAXIMUM_PACKET_SIZE
            ),
            PropertyPlace::Will => matches!(
                id,
                PAYLOAD_FORMAT_INDICATOR
                    | MESSAGE_EXPIRY_INTERVAL
                    | CONTENT_TYPE
                    | RESPONSE_TOPIC
                    | CORRELATION_DATA
                    | WILL_DELAY_INTERVAL
                    | USER_PROPERTY
            ),
            PropertyPlace::Publish => matches!(
                id,
                PAYLOAD_FORMAT_INDICATOR
                    | MESSAGE_EXPIRY_INTERVAL
                    | CONTENT_TYPE
                    | RESPONSE_TOPIC
                    | CORRELATION_DATA
                    | SUBSCRIPTION_IDENTIFIER
                    | TOPIC_ALIAS
                    | USER_PROPERTY
            ),
            PropertyPlace::Ack => matches!(id, REASON_STRING | USER_PROPERTY),
            PropertyPlace::Subscribe => matches!(id, SUBSCRIPTION_IDENTIFIER | USER_PROPERTY),
            PropertyPlace::Unsubscribe => id == USER_PROPERTY,
            PropertyPlace::Disconnect => matches!(
                id,
                SESSION_EXPIRY_INTERVAL | REASON_STRING | SERVER_REFERENCE | USER_PROPERTY
            ),
        }
    }
}

/// How a property's value is encoded.
#[derive(Debug, Clone, Copy)]
enum PropertyType {
    Byte,
    U16,
    U32,
    VarInt,
    Text,
    Binary,
    TextPair,
}

/// Every property MQTT 5 defines: (name, type). All identifiers fit one byte.
fn property_kind(id: u8) -> Option<(&'static str, PropertyType)> {
    use PropertyType::*;
    Some(match id {
        0x01 => ("Payload Format Indicator", Byte),
        0x02 => ("Message Expiry Interval", U32),
        0x03 => ("Content Type", Text),
        0x08 => ("Response Topic", Text),
        0x09 => ("Correlation Data", Binary),
        0x0B => ("Subscription Identifier", VarInt),
        0x11 => ("Session Expiry Interval", U32),
        0x12 => ("Assigned Client Identifier", Text),
        0x13 => ("Server Keep Alive", U16),
        0x15 => ("Authentication Method", Text),
        0x16 => ("Authentication Data", Binary),
        0x17 => ("Request Problem Information", Byte),
        0x18 => ("Will Delay Interval", U32),
        0x19 => ("Request Response Information", Byte),
        0x1A => ("Response Information", Text),
        0x1C => ("Server Reference", Text),
        0x1F => ("Reason String", Text),
        0x21 => ("Receive Maximum", U16),
        0x22 => ("Topic Alias Maximum", U16),
        0x23 => ("Topic Alias", U16),
        0x24 => ("Maximum QoS", Byte),
        0x25 => ("Retain Available", Byte),
        0x26 => ("User Property", TextPair),
        0x27 => ("Maximum Packet Size", U32),
        0x28 => ("Wildcard Subscription Available", Byte),
        0x29 => ("Subscription Identifier Available", Byte),
        0x2A => ("Shared Subscription Available", Byte),
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PropertyValue {
    U8(u8),
    U16(u16),
    U32(u32),
    VarInt(usize),
    Text(String),
    Binary(Bytes),
    TextPair(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Property {
    id: u8,
    value: PropertyValue,
}

/// Read a property list and check it against `place`: only allowed properties, each
/// at most once (User Property may repeat), values within their ranges.
fn read_properties(body: &mut Bytes, place: PropertyPlace) -> Result<Vec<Property>, DecodeError> {
    let length = read_varint(body)?;
    if body.remaining() < length {
        return Err(DecodeError::Malformed("properties longer than the packet"));
    }
    let mut list = body.split_to(length);
    let mut seen = [false; 128];
    let mut properties = Vec::new();
    while list.has_remaining() {
        // Identifiers are variable byte integers; every defined one fits a single byte,
        // so a longer one (even one whose low byte names a property) is unknown.
        let raw_id = read_varint(&mut list)?;
        let Some((id, (property, kind))) = u8::try_from(raw_id)
            .ok()
            .and_then(|id| property_kind(id).map(|kind| (id, kind)))
        else {
            return Err(DecodeError::Malformed("unknown property identifier"));
        };
        let packet = place.name();
        if !place.allows(id) {
            return Err(DecodeError::PropertyNotAllowed { property, packet });
        }
        let seen_before = &mut seen[usize::from(id)];
        if *seen_before && id != USER_PROPERTY {
            return Err(DecodeError::DuplicateProperty { property, packet });
        }
        *seen_before = true;
        let value = match kind {
            PropertyType::Byte => PropertyValue::U8(read_u8(&mut list)?),
            PropertyType::U16 => PropertyValue::U16(read_u16(&mut list)?),
            PropertyType::U32 => PropertyValue::U32(read_u32(&mut list)?),
            PropertyType::VarInt => PropertyValue::VarInt(read_varint(&mut list)?),
            PropertyType::Text => PropertyValue::Text(read_string(&mut list)?),
            PropertyType::Binary => PropertyValue::Binary(read_binary(&mut list)?),
            PropertyType::TextPair => {
                PropertyValue::TextPair(read_string(&mut list)?, read_string(&mut list)?)
            }
        };
        if let Some(problem) = property_value_problem(id, &value) {
            return Err(DecodeError::InvalidProperty {
                property,
                packet,
                problem,
            });
        }
        properties.push(Property { id, value });
    }
    Ok(properties)
}

/// What is wrong with a property's value, if anything (each a protocol error).
fn property_value_problem(id: u8, value: &PropertyValue) -> Option<&'static str> {
    match (id, value) {
        (
            PAYLOAD_FORMAT_INDICATOR | REQUEST_PROBLEM_INFORMATION | REQUEST_RESPONSE_INFORMATION,
            PropertyValue::U8(v),
        ) if *v > 1 => Some("is neither 0 nor 1"),
        (RECEIVE_MAXIMUM | TOPIC_ALIAS, PropertyValue::U16(0)) => Some("is 0"),
        (MAXIMUM_PACKET_SIZE, PropertyValue::U32(0)) => Some("is 0"),
        (SUBSCRIPTION_IDENTIFIER, PropertyValue::VarInt(0)) => Some("is 0"),
        (RESPONSE_TOPIC, PropertyValue::Text(topic))
            if topic.is_empty() || topic.contains(['+', '#']) =>
        {
            Some("is not a topic name (empty or with a wildcard)")
        }
        _ => None,
    }
}

/// Append one property in its only encoding (one-byte identifier, fixed-size or
/// length-prefixed value).
fn put_property(out: &mut BytesMut, property: &Property) {
    out.put_u8(property.id);
    match &property.value {
        PropertyValue::U8(v) => out.put_u8(*v),
        PropertyValue::U16(v) => out.put_u16(*v),
        PropertyValue::U32(v) => out.put_u32(*v),
        PropertyValue::VarInt(v) => put_varint(out, *v),
        PropertyValue::Text(text) => put_string(out, text),
        PropertyValue::Binary(bytes) => {
            out.put_u16(bytes.len() as u16);
            out.put_slice(bytes);
        }
        PropertyValue::TextPair(key, value) => {
            put_string(out, key);
            put_string(out, value);
        }
    }
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

fn read_varint(body: &mut Bytes) -> Result<usize, DecodeError> {
    let mut value = 0usize;
    for i in 0..4 {
        let byte = read_u8(body)?;
        if i > 0 && byte == 0 {
            return Err(DecodeError::Malformed(
                "variable byte integer not in its shortest encoding",
            ));
        }
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
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
                put_properties(&mut body, &publish.properties);
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
                    qos: QoS::ExactlyOnce
                }]
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

    /// An MQTT 5 CONNECT with `flags`, `properties` and then `rest` after the client id.
    fn connect_v5(flags: u8, properties: &[u8], rest: &[u8]) -> BytesMut {
        let mut body = BytesMut::new();
        put_string(&mut body, "MQTT");
        body.put_u8(5);
        body.put_u8(flags);
        body.put_u16(60);
        put_properties(&mut body, properties);
        put_string(&mut body, "dev");
        body.put_slice(rest);
        packet(0x10, &body)
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
            Err(DecodeError::ProtocolError("packet identifier 0"))
        );
        let v5 = [0x32, 7, 0, 1, b't', 0, 0, 0, b'x'];
        assert_eq!(refusal(&v5, Version::V5), reason::PROTOCOL_ERROR);
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
        assert_eq!(&p.properties[..], &props[3..]);
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
                reason::PROTOCOL_ERROR,
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
                reason::PROTOCOL_ERROR,
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
                reason::PROTOCOL_ERROR,
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
            Ok(ClientPacket::Disconnect { reason: 4 })
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
