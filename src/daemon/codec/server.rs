//! The server side of the codec: packets from local MQTT clients (3.1.1 and
//! 5) and the replies to them. The daemon's local endpoint is the only user.
//!
//! Packets are framed here (with the client side's `frame`), then walked
//! field by field over exactly their own bytes; MQTT 5 property sections go
//! to rumqttc's readers (`ConnectProperties::read` and the like), each given
//! exactly its section, and PUBLISH is encoded by rumqttc. rumqttc's
//! whole-packet readers are a client's: they let through what a server must
//! refuse, and cannot say where they stopped. The traps, each handled here
//! with a regression test below:
//!
//! 1. `v4::Connect::read` accepts protocol level 5 and misreads the
//!    properties as the client id. The name and level (`00 04 MQTT`, 4 or
//!    5) are read first; anything else (3.1's `MQIsdp`, a bridge's 0x84,
//!    garbage) is "unsupported protocol version".
//! 2. Fixed-header flags are never checked: each type's are checked here
//!    (SUBSCRIBE and UNSUBSCRIBE 0x2, PUBLISH neither QoS 3 nor DUP at QoS 0,
//!    the rest 0). The client side's "0 except PUBLISH" would refuse every
//!    real SUBSCRIBE.
//! 3. CONNECT: the reserved flag, will flags without a will, will QoS 3 and
//!    bytes after the payload all pass; the password, binary in MQTT, is
//!    read as text and fails when it is not UTF-8. Here the password is
//!    skipped as bytes (the daemon takes no credentials), the rest checked.
//! 4. SUBSCRIBE and UNSUBSCRIBE: packet id 0, reserved option bits (3.1.1:
//!    bits 2-7, where MQTT 5 keeps no-local and the retain options) and
//!    filter syntax are not checked, and an UNSUBSCRIBE may be empty. A
//!    filter that is not valid refuses the whole packet
//!    ([`reason::TOPIC_FILTER_INVALID`]); a Subscription Identifier 0 is a
//!    protocol error.
//! 5. PUBLISH: the MQTT 5 topic is raw bytes, and wildcards, an empty topic,
//!    a Topic Alias (none is granted: [`reason::TOPIC_ALIAS_INVALID`]) and a
//!    Subscription Identifier (only a server sends one) all pass; checked
//!    here. QoS 2 is decoded: the caller refuses it, with its reason.
//! 6. The maximum packet size is checked on the remaining length, leaving
//!    the input as it was: the whole packet is counted here, and too large
//!    ends the connection ([`reason::PACKET_TOO_LARGE`]) before the body
//!    arrives.
//! 7. The MQTT 5 short DISCONNECTs (`E0 00`, `E0 01 rc`) do not decode:
//!    decoded here (the reason; properties are ignored).
//! 8. A property reader that runs out reports "insufficient bytes": any
//!    error after framing is a malformed packet, never "need more bytes".
//! 9. Encoding: `ConnAck::write` panics on some codes and
//!    `Disconnect::write` adds a stray byte to a reason without properties:
//!    the replies are written by hand. `Publish::write` at QoS 1 with packet
//!    id 0 writes 7 bytes, then fails: checked first, nothing written.
//!
//! Text fields (topics, filters, client id, user name) must be UTF-8
//! without NUL, else the packet is malformed, as MQTT says; a topic or
//! filter that is text but not a valid name or filter has its own code.

use super::{Attributes, QoS, put_varint};
use bytes::{BufMut, Bytes, BytesMut};
use rumqttc::mqttbytes::QoS as V4QoS;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5::{
    self, ConnectProperties, LastWillProperties, PubAckProperties, PublishProperties,
    SubscribeProperties, UnsubscribeProperties,
};

/// The protocol a local client speaks, from its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// A will message, sent upstream when the client vanishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    /// 0, 1 or 2 as sent (the client machine refuses 2).
    pub qos: u8,
    pub attributes: Attributes,
    /// Will Delay Interval, seconds (MQTT 5; 0 for 3.1.1).
    pub delay: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub version: Version,
    /// May be empty (the server assigns one).
    pub client_id: String,
    pub clean_start: bool,
    pub keep_alive: u16,
    /// MQTT 5 Session Expiry Interval; 0 for 3.1.1.
    pub session_expiry: u32,
    /// The client's Receive Maximum (65,535 when absent).
    pub receive_maximum: u16,
    /// The client's Maximum Packet Size, if it set one.
    pub max_packet: Option<u32>,
    pub will: Option<Will>,
    /// MQTT 5 Authentication Method, if any (the daemon does not do
    /// enhanced authentication: CONNACK 0x8C).
    pub auth_method: Option<String>,
    pub username: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Bytes,
    /// 0, 1 or 2 as sent (the client machine refuses 2).
    pub qos: u8,
    pub dup: bool,
    /// 0 for QoS 0.
    pub pkid: u16,
    pub attributes: Attributes,
}

/// One filter of a SUBSCRIBE, with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub filter: String,
    /// Requested maximum QoS: 0, 1 or 2.
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0, 1 or 2.
    pub retain_handling: u8,
}

/// A packet from a local client after its CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Publish(Publish),
    /// For a QoS 1 message the daemon delivered.
    PubAck {
        pkid: u16,
        reason: u8,
    },
    Subscribe {
        pkid: u16,
        subscriptions: Vec<Subscription>,
        /// MQTT 5 Subscription Identifier.
        id: Option<u32>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    /// `reason` 0x00 normal, 0x04 "with will message", ...
    Disconnect {
        reason: u8,
    },
}

/// Why input from a client cannot be taken. Every error ends the
/// connection: `code` is the MQTT 5 reason code for the DISCONNECT (or,
/// before CONNECT was accepted, the CONNACK) that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u8,
    /// For the log: what was wrong, in words.
    pub why: String,
}

/// Reason codes (MQTT 5, 2.4) the server side uses.
pub mod reason {
    pub const SUCCESS: u8 = 0x00;
    pub const GRANTED_QOS_1: u8 = 0x01;
    pub const GRANTED_QOS_2: u8 = 0x02;
    pub const UNSPECIFIED: u8 = 0x80;
    pub const MALFORMED: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const IMPLEMENTATION_SPECIFIC: u8 = 0x83;
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    pub const CLIENT_ID_NOT_VALID: u8 = 0x85;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const SERVER_BUSY: u8 = 0x89;
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const PACKET_ID_IN_USE: u8 = 0x91;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    pub const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
    pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
    pub const SUBSCRIPTION_IDS_NOT_SUPPORTED: u8 = 0xA1;
    pub const WILDCARDS_NOT_SUPPORTED: u8 = 0xA2;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
}

/// Properties of a CONNACK that accepts (MQTT 5; 3.1.1 has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    pub assigned_client_id: Option<String>,
    /// Session Expiry Interval the server uses, when it differs from the
    /// client's (the daemon keeps no sessions: 0).
    pub session_expiry: Option<u32>,
    pub receive_maximum: u16,
    pub max_packet: u32,
    /// Server Keep Alive, when it overrides the client's.
    pub server_keep_alive: Option<u16>,
    pub reason_string: Option<String>,
}

/// Takes the first packet of a connection off the front of `buf`: it must
/// be a CONNECT, of protocol level 4 (3.1.1) or 5. `Ok(None)`: more bytes
/// needed. An error for a CONNECT of another level has `code`
/// [`reason::UNSUPPORTED_PROTOCOL_VERSION`].
///
/// Answering a refusal: to an unsupported version, a 3.1.1 CONNACK
/// (`encode_connack(Version::V311, code, None)`, return code 1), which
/// clients of every version read; to the others, closing the connection,
/// which MQTT allows for a CONNECT a server cannot take.
pub fn decode_connect(buf: &mut BytesMut, max_packet: usize) -> Result<Option<Connect>, Refusal> {
    // Known from the first byte: no need to wait for the rest.
    if let Some(&byte1) = buf.first() {
        if byte1 >> 4 != 1 {
            return Err(protocol_error(format!(
                "the first packet is {}, not CONNECT",
                kind_name(byte1 >> 4)
            )));
        }
    }
    let Some((byte1, rest)) = take_frame(buf, max_packet)? else {
        return Ok(None);
    };
    flags(byte1, 0, "CONNECT")?;
    let mut body = Body::new("CONNECT", rest);
    let version = protocol(&mut body)?;
    connect(body, version).map(Some)
}

/// Takes one packet after CONNECT off the front of `buf`, validated as a
/// server must (MQTT 3.1.1 / 5: flags, packet ids, topic names and filters,
/// properties). `Ok(None)`: more bytes needed.
///
/// A topic filter that is not valid refuses the whole SUBSCRIBE or
/// UNSUBSCRIBE ([`reason::TOPIC_FILTER_INVALID`]), as a malformed packet;
/// what the daemon does not offer (QoS 2, shared subscriptions, a QoS 2
/// will) is decoded, for the caller to refuse with its own code.
pub fn decode(
    buf: &mut BytesMut,
    version: Version,
    max_packet: usize,
) -> Result<Option<Packet>, Refusal> {
    let Some((byte1, rest)) = take_frame(buf, max_packet)? else {
        return Ok(None);
    };
    let kind = byte1 >> 4;
    let body = Body::new(kind_name(kind), rest);
    match kind {
        3 => publish(byte1, body, version),
        4 => flags(byte1, 0, "PUBACK").and_then(|()| puback(body, version)),
        8 => flags(byte1, 2, "SUBSCRIBE").and_then(|()| subscribe(body, version)),
        10 => flags(byte1, 2, "UNSUBSCRIBE").and_then(|()| unsubscribe(body, version)),
        12 => flags(byte1, 0, "PINGREQ").and_then(|()| body.end().map(|()| Packet::PingReq)),
        14 => flags(byte1, 0, "DISCONNECT").and_then(|()| disconnect(body, version)),
        _ => Err(unexpected(kind, version)),
    }
    .map(Some)
}

fn refuse(code: u8, why: impl Into<String>) -> Refusal {
    Refusal {
        code,
        why: why.into(),
    }
}

fn malformed(why: impl Into<String>) -> Refusal {
    refuse(reason::MALFORMED, why)
}

fn protocol_error(why: impl Into<String>) -> Refusal {
    refuse(reason::PROTOCOL_ERROR, why)
}

/// Packet type names, for the reasons in words.
fn kind_name(kind: u8) -> &'static str {
    const NAMES: [&str; 16] = [
        "packet type 0 (reserved)",
        "CONNECT",
        "CONNACK",
        "PUBLISH",
        "PUBACK",
        "PUBREC",
        "PUBREL",
        "PUBCOMP",
        "SUBSCRIBE",
        "SUBACK",
        "UNSUBSCRIBE",
        "UNSUBACK",
        "PINGREQ",
        "PINGRESP",
        "DISCONNECT",
        "AUTH",
    ];
    NAMES[usize::from(kind & 0x0F)]
}

/// Why a packet type the decoder does not take is refused.
fn unexpected(kind: u8, version: Version) -> Refusal {
    let name = kind_name(kind);
    match (kind, version) {
        (1, _) => protocol_error("a second CONNECT"),
        (2 | 9 | 11 | 13, _) => protocol_error(format!("{name}, which only a server sends")),
        (5..=7, _) => protocol_error(format!("{name}: QoS 2 is not supported (maximum QoS 1)")),
        (15, Version::V5) => protocol_error("AUTH: enhanced authentication is not supported"),
        _ => malformed(format!("reserved packet type {kind}")),
    }
}

/// Takes one whole packet off `buf`: its first byte and what follows the
/// fixed header. Too large is known from the header alone (trap 6), and is
/// final, as is a remaining length over 4 bytes.
fn take_frame(buf: &mut BytesMut, max_packet: usize) -> Result<Option<(u8, Bytes)>, Refusal> {
    let (header, remaining) = match super::frame(buf) {
        Ok(Some(lengths)) => lengths,
        Ok(None) => return Ok(None),
        Err(_) => return Err(malformed("remaining length longer than 4 bytes")),
    };
    let size = header + remaining;
    if size > max_packet {
        return Err(refuse(
            reason::PACKET_TOO_LARGE,
            format!("a {size}-byte packet, larger than the maximum of {max_packet}"),
        ));
    }
    if buf.len() < size {
        return Ok(None);
    }
    let packet = buf.split_to(size).freeze();
    Ok(Some((packet[0], packet.slice(header..))))
}

/// Checks the flags of the fixed header: MQTT fixes them per type (trap 2).
fn flags(byte1: u8, expected: u8, name: &str) -> Result<(), Refusal> {
    match byte1 & 0x0F {
        f if f == expected => Ok(()),
        f => Err(malformed(format!(
            "{name} with header flags {f:#x}, not {expected:#x}"
        ))),
    }
}

/// The bytes of one packet after its fixed header, read front to back.
/// Every read is checked against what is left: the frame is whole, so
/// running out is a malformed packet (trap 8), never a wait.
struct Body {
    rest: Bytes,
    /// The packet type, for the reasons in words.
    name: &'static str,
}

impl Body {
    fn new(name: &'static str, rest: Bytes) -> Body {
        Body { rest, name }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize, what: &str) -> Result<Bytes, Refusal> {
        if self.rest.len() < n {
            return Err(malformed(format!(
                "{}: the {what} runs past the packet's end",
                self.name
            )));
        }
        Ok(self.rest.split_to(n))
    }

    fn u8(&mut self, what: &str) -> Result<u8, Refusal> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, Refusal> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A packet identifier: never 0 where there is one (MQTT 2.2.1).
    fn pkid(&mut self) -> Result<u16, Refusal> {
        match self.u16("packet id")? {
            0 => Err(malformed(format!("{}: packet id 0", self.name))),
            pkid => Ok(pkid),
        }
    }

    /// Binary data: a two-byte length, then the bytes.
    fn binary(&mut self, what: &str) -> Result<Bytes, Refusal> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }

    /// A UTF-8 string (MQTT 1.5.4).
    fn text(&mut self, what: &str) -> Result<String, Refusal> {
        let raw = self.binary(what)?;
        utf8(&raw, self.name, what)
    }

    /// An MQTT 5 property section, read by rumqttc from exactly its own
    /// bytes, so it can neither run into the payload nor leave some over.
    fn properties<T>(&mut self, read: PropertyReader<T>) -> Result<Option<T>, Refusal> {
        let Some((prefix, len)) = varint(&self.rest) else {
            return Err(malformed(format!(
                "{}: the property length is not valid",
                self.name
            )));
        };
        let mut section = self.take(prefix.saturating_add(len), "properties")?;
        let properties = read(&mut section)
            .map_err(|e| malformed(format!("{}: {}", self.name, super::words(&e))))?;
        if !section.is_empty() {
            return Err(malformed(format!(
                "{}: properties shorter than their length",
                self.name
            )));
        }
        Ok(properties)
    }

    /// Nothing may follow the last field.
    fn end(&self) -> Result<(), Refusal> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(malformed(format!("{}: {n} bytes after its end", self.name))),
        }
    }
}

/// rumqttc's reader of one kind of property section.
type PropertyReader<T> = fn(&mut Bytes) -> Result<Option<T>, rumqttc::v5::mqttbytes::Error>;

/// A variable byte integer (MQTT 1.5.5) at the start of `bytes`: `(its
/// length, its value)`; `None` if it runs out or is longer than 4 bytes.
fn varint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, &byte) in bytes.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((i + 1, value));
        }
    }
    None
}

/// A UTF-8 string field: valid UTF-8 without U+0000, else the packet is
/// malformed (MQTT 1.5.4).
fn utf8(raw: &[u8], name: &str, what: &str) -> Result<String, Refusal> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| malformed(format!("{name}: the {what} is not valid UTF-8")))?;
    if text.contains('\0') {
        return Err(malformed(format!("{name}: the {what} contains U+0000")));
    }
    Ok(text.to_owned())
}

/// A topic name from a client: text (else malformed), not empty, without
/// wildcards (MQTT 4.7.3).
fn topic_name(raw: &[u8], name: &str, what: &str) -> Result<String, Refusal> {
    let topic = utf8(raw, name, what)?;
    let invalid = |why: &str| {
        refuse(
            reason::TOPIC_NAME_INVALID,
            format!("{name}: the {what} {topic:?} {why}"),
        )
    };
    if topic.is_empty() {
        return Err(invalid("is empty"));
    }
    if topic.contains(['+', '#']) {
        return Err(invalid("contains a wildcard"));
    }
    Ok(topic)
}

/// A topic filter's syntax (MQTT 4.7.1): not empty, `#` only as the whole
/// last level, `+` only as a whole level.
fn topic_filter(filter: &str, name: &str) -> Result<(), Refusal> {
    let invalid = |why: &str| {
        refuse(
            reason::TOPIC_FILTER_INVALID,
            format!("{name}: topic filter {filter:?}: {why}"),
        )
    };
    if filter.is_empty() {
        return Err(invalid("empty"));
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(invalid("'#' must be the whole last level, as in a/b/#"));
        }
        if level.contains('+') && level != "+" {
            return Err(invalid("'+' must be a whole level, as in a/+/c"));
        }
    }
    Ok(())
}

/// What a client's message attributes must be (MQTT 5, 3.3.2.3): a
/// payload format of 0 or 1, a response topic that is a topic name.
fn check_attributes(attributes: &Attributes, name: &str) -> Result<(), Refusal> {
    if let Some(f @ 2..) = attributes.payload_format {
        return Err(protocol_error(format!("{name}: payload format {f}")));
    }
    if let Some(topic) = &attributes.response_topic {
        topic_name(topic.as_bytes(), name, "response topic").map_err(|e| protocol_error(e.why))?;
    }
    Ok(())
}

/// CONNECT flags (MQTT 3.1.2.3).
const CLEAN_START: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_QOS: u8 = 0x18;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USER_NAME: u8 = 0x80;

/// The protocol name and level, read before anything else (trap 1).
fn protocol(body: &mut Body) -> Result<Version, Refusal> {
    let unsupported = |why: String| refuse(reason::UNSUPPORTED_PROTOCOL_VERSION, why);
    let name = body
        .take(6, "protocol name")
        .map_err(|_| unsupported("no protocol name".into()))?;
    if name[..] != *b"\x00\x04MQTT" {
        return Err(unsupported(
            "the protocol name is not MQTT (MQTT 3.1, \"MQIsdp\", is not supported)".into(),
        ));
    }
    match body.u8("protocol level")? {
        4 => Ok(Version::V311),
        5 => Ok(Version::V5),
        level => Err(unsupported(format!(
            "protocol level {level:#04x}: only 4 (MQTT 3.1.1) and 5 are supported"
        ))),
    }
}

/// The rest of a CONNECT, after its protocol level (trap 3).
fn connect(mut body: Body, version: Version) -> Result<Connect, Refusal> {
    let flags = body.u8("connect flags")?;
    connect_flags(flags, version)?;
    let keep_alive = body.u16("keep alive")?;
    let properties = match version {
        Version::V5 => body.properties(ConnectProperties::read)?,
        Version::V311 => None,
    };
    let client_id = body.text("client id")?;
    let will = match flags & WILL {
        0 => None,
        _ => Some(will(&mut body, flags, version)?),
    };
    let username = match flags & USER_NAME {
        0 => None,
        _ => Some(body.text("user name")?),
    };
    // Binary data, not text; the daemon takes no credentials.
    if flags & PASSWORD != 0 {
        body.binary("password")?;
    }
    body.end()?;
    let mut connect = Connect {
        version,
        client_id,
        clean_start: flags & CLEAN_START != 0,
        keep_alive,
        session_expiry: 0,
        receive_maximum: u16::MAX,
        max_packet: None,
        will,
        auth_method: None,
        username,
    };
    if let Some(p) = properties {
        connect_properties(&mut connect, p)?;
    }
    Ok(connect)
}

/// The connect flags rumqttc lets through (MQTT 3.1.2.3).
fn connect_flags(flags: u8, version: Version) -> Result<(), Refusal> {
    if flags & 0x01 != 0 {
        return Err(malformed("CONNECT: the reserved flag is set"));
    }
    if flags & WILL == 0 && flags & (WILL_QOS | WILL_RETAIN) != 0 {
        return Err(malformed("CONNECT: will QoS or retain without a will"));
    }
    if flags & WILL_QOS == WILL_QOS {
        return Err(malformed("CONNECT: will QoS 3"));
    }
    if version == Version::V311 && flags & PASSWORD != 0 && flags & USER_NAME == 0 {
        return Err(malformed("CONNECT: a password without a user name"));
    }
    Ok(())
}

/// The will of a CONNECT: (MQTT 5: properties,) topic, payload.
fn will(body: &mut Body, flags: u8, version: Version) -> Result<Will, Refusal> {
    let properties = match version {
        Version::V5 => body.properties(LastWillProperties::read)?,
        Version::V311 => None,
    };
    let topic = body.binary("will topic")?;
    let topic = topic_name(&topic, "CONNECT", "will topic")?;
    let payload = body.binary("will payload")?;
    let retain = flags & WILL_RETAIN != 0;
    let (attributes, delay) = match properties {
        None => (
            Attributes {
                retain,
                ..Attributes::default()
            },
            0,
        ),
        Some(p) => (
            Attributes {
                retain,
                payload_format: p.payload_format_indicator,
                message_expiry: p.message_expiry_interval,
                content_type: p.content_type,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                user_properties: p.user_properties,
            },
            p.delay_interval.unwrap_or(0),
        ),
    };
    check_attributes(&attributes, "CONNECT will")?;
    Ok(Will {
        topic,
        payload,
        qos: (flags & WILL_QOS) >> 3,
        attributes,
        delay,
    })
}

/// Takes the CONNECT properties the daemon uses, refusing the values MQTT 5
/// calls protocol errors (3.1.2.11).
fn connect_properties(connect: &mut Connect, p: ConnectProperties) -> Result<(), Refusal> {
    if p.receive_maximum == Some(0) {
        return Err(protocol_error("CONNECT: receive maximum 0"));
    }
    if p.max_packet_size == Some(0) {
        return Err(protocol_error("CONNECT: maximum packet size 0"));
    }
    if p.request_response_info > Some(1) || p.request_problem_info > Some(1) {
        return Err(protocol_error(
            "CONNECT: request response or problem information neither 0 nor 1",
        ));
    }
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(protocol_error(
            "CONNECT: authentication data without a method",
        ));
    }
    connect.session_expiry = p.session_expiry_interval.unwrap_or(0);
    connect.receive_maximum = p.receive_maximum.unwrap_or(u16::MAX);
    connect.max_packet = p.max_packet_size;
    connect.auth_method = p.authentication_method;
    Ok(())
}

/// PUBLISH (trap 5).
fn publish(byte1: u8, mut body: Body, version: Version) -> Result<Packet, Refusal> {
    let (dup, qos, retain) = (byte1 & 0x08 != 0, (byte1 >> 1) & 0x03, byte1 & 0x01 != 0);
    if qos == 3 {
        return Err(malformed("PUBLISH with QoS 3"));
    }
    if dup && qos == 0 {
        return Err(malformed("PUBLISH with DUP set at QoS 0"));
    }
    let topic = body.binary("topic")?;
    let pkid = if qos > 0 { body.pkid()? } else { 0 };
    let properties = match version {
        Version::V5 => body.properties(PublishProperties::read)?,
        Version::V311 => None,
    };
    if let Some(p) = &properties {
        // Before the topic: with an alias, an empty topic is the alias's.
        if let Some(alias) = p.topic_alias {
            return Err(refuse(
                reason::TOPIC_ALIAS_INVALID,
                format!("PUBLISH: topic alias {alias}, but the maximum is 0"),
            ));
        }
        if !p.subscription_identifiers.is_empty() {
            return Err(protocol_error(
                "PUBLISH: a subscription identifier, which only a server sends",
            ));
        }
    }
    let topic = topic_name(&topic, "PUBLISH", "topic")?;
    let attributes = Attributes::from_v5(retain, properties);
    check_attributes(&attributes, "PUBLISH")?;
    Ok(Packet::Publish(Publish {
        topic,
        payload: body.rest,
        qos,
        dup,
        pkid,
        attributes,
    }))
}

/// PUBACK: 3.1.1, the packet id only; MQTT 5, then maybe a reason, then
/// maybe properties (checked, then dropped).
fn puback(mut body: Body, version: Version) -> Result<Packet, Refusal> {
    let pkid = body.pkid()?;
    let mut code = reason::SUCCESS;
    if version == Version::V5 && !body.is_empty() {
        code = body.u8("reason code")?;
        if !body.is_empty() {
            body.properties(PubAckProperties::read)?;
        }
        // The codes MQTT 5 allows in a PUBACK (3.4.2.1).
        if !matches!(
            code,
            0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
        ) {
            return Err(protocol_error(format!("PUBACK: reason code {code:#04x}")));
        }
    }
    body.end()?;
    Ok(Packet::PubAck { pkid, reason: code })
}

/// SUBSCRIBE (trap 4).
fn subscribe(mut body: Body, version: Version) -> Result<Packet, Refusal> {
    let pkid = body.pkid()?;
    let mut id = None;
    if version == Version::V5 {
        id = body
            .properties(SubscribeProperties::read)?
            .and_then(|p| p.id);
    }
    let id = match id.map(u32::try_from) {
        None => None,
        Some(Ok(0)) => return Err(protocol_error("SUBSCRIBE: subscription identifier 0")),
        Some(Ok(id)) => Some(id),
        // Unreachable: a 4-byte variable integer fits.
        Some(Err(_)) => return Err(malformed("SUBSCRIBE: subscription identifier too large")),
    };
    let mut subscriptions = Vec::new();
    while !body.is_empty() {
        let filter = body.text("topic filter")?;
        let options = body.u8("subscription options")?;
        subscriptions.push(subscription(filter, options, version)?);
    }
    if subscriptions.is_empty() {
        return Err(protocol_error("SUBSCRIBE without a topic filter"));
    }
    Ok(Packet::Subscribe {
        pkid,
        subscriptions,
        id,
    })
}

/// One filter of a SUBSCRIBE and its options byte (MQTT 5, 3.8.3.1; 3.1.1
/// has only the QoS, and the other bits are reserved).
fn subscription(filter: String, options: u8, version: Version) -> Result<Subscription, Refusal> {
    let reserved = match version {
        Version::V5 => 0xC0,
        Version::V311 => 0xFC,
    };
    if options & reserved != 0 {
        return Err(malformed(format!(
            "SUBSCRIBE: reserved bits set in options {options:#04x}"
        )));
    }
    let (qos, retain_handling) = (options & 0x03, (options >> 4) & 0x03);
    if qos == 3 {
        return Err(malformed("SUBSCRIBE: QoS 3"));
    }
    if retain_handling == 3 {
        return Err(malformed("SUBSCRIBE: retain handling 3"));
    }
    topic_filter(&filter, "SUBSCRIBE")?;
    Ok(Subscription {
        filter,
        qos,
        no_local: options & 0x04 != 0,
        retain_as_published: options & 0x08 != 0,
        retain_handling,
    })
}

/// UNSUBSCRIBE (trap 4).
fn unsubscribe(mut body: Body, version: Version) -> Result<Packet, Refusal> {
    let pkid = body.pkid()?;
    if version == Version::V5 {
        body.properties(UnsubscribeProperties::read)?;
    }
    let mut filters = Vec::new();
    while !body.is_empty() {
        let filter = body.text("topic filter")?;
        topic_filter(&filter, "UNSUBSCRIBE")?;
        filters.push(filter);
    }
    if filters.is_empty() {
        return Err(protocol_error("UNSUBSCRIBE without a topic filter"));
    }
    Ok(Packet::Unsubscribe { pkid, filters })
}

/// DISCONNECT (trap 7): 3.1.1 has no body; MQTT 5 maybe a reason, then
/// properties, which the daemon has no use for.
fn disconnect(mut body: Body, version: Version) -> Result<Packet, Refusal> {
    let code = match version {
        Version::V311 => body.end().map(|()| reason::SUCCESS)?,
        Version::V5 if body.is_empty() => reason::SUCCESS,
        Version::V5 => body.u8("reason code")?,
    };
    Ok(Packet::Disconnect { reason: code })
}

/// Appends a packet: its first byte, its remaining length, `body`.
fn put_packet(out: &mut BytesMut, byte1: u8, body: &[u8]) {
    out.put_u8(byte1);
    put_varint(out, body.len());
    out.put_slice(body);
}

/// Appends a UTF-8 string field; longer than 65,535 bytes, it is cut, at
/// a character boundary so that it stays UTF-8.
fn put_str(out: &mut BytesMut, s: &str) {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}

/// CONNACK property identifiers (MQTT 5, 3.2.2.3).
const SESSION_EXPIRY: u8 = 0x11;
const ASSIGNED_CLIENT_ID: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const SUBSCRIPTION_IDS_AVAILABLE: u8 = 0x29;
const SHARED_SUBSCRIPTIONS_AVAILABLE: u8 = 0x2A;

/// Appends a CONNACK. `code` is an MQTT 5 reason code, mapped to the
/// nearest 3.1.1 return code for a 3.1.1 client; `properties` only when
/// accepting a 5 client.
pub fn encode_connack(
    out: &mut BytesMut,
    version: Version,
    code: u8,
    properties: Option<&ConnAckProperties>,
) {
    match version {
        // Session present is always 0: the daemon keeps no sessions.
        Version::V311 => out.put_slice(&[0x20, 0x02, 0x00, connack_v311(code)]),
        Version::V5 => {
            let mut props = BytesMut::new();
            if let Some(p) = properties {
                connack_properties(&mut props, p);
            }
            let mut body = BytesMut::with_capacity(props.len() + 6);
            body.put_slice(&[0x00, code]);
            put_varint(&mut body, props.len());
            body.put_slice(&props);
            put_packet(out, 0x20, &body);
        }
    }
}

/// The 3.1.1 return code (3.2.2.3) nearest an MQTT 5 reason code.
fn connack_v311(code: u8) -> u8 {
    match code {
        reason::SUCCESS => 0,
        reason::UNSUPPORTED_PROTOCOL_VERSION => 1,
        reason::CLIENT_ID_NOT_VALID => 2,
        // Bad user name or password; bad authentication method.
        0x86 | reason::BAD_AUTHENTICATION_METHOD => 4,
        reason::NOT_AUTHORIZED => 5,
        _ => 3,
    }
}

/// The CONNACK properties: the given ones, then what the daemon offers
/// every client (maximum QoS 1, retain, subscription identifiers, no shared
/// subscriptions; wildcards by omission, no topic aliases by omission).
fn connack_properties(out: &mut BytesMut, p: &ConnAckProperties) {
    if let Some(expiry) = p.session_expiry {
        out.put_u8(SESSION_EXPIRY);
        out.put_u32(expiry);
    }
    if let Some(id) = &p.assigned_client_id {
        out.put_u8(ASSIGNED_CLIENT_ID);
        put_str(out, id);
    }
    if let Some(keep_alive) = p.server_keep_alive {
        out.put_u8(SERVER_KEEP_ALIVE);
        out.put_u16(keep_alive);
    }
    if let Some(text) = &p.reason_string {
        out.put_u8(REASON_STRING);
        put_str(out, text);
    }
    out.put_u8(RECEIVE_MAXIMUM);
    out.put_u16(p.receive_maximum);
    out.put_slice(&[MAXIMUM_QOS, 1, RETAIN_AVAILABLE, 1]);
    out.put_u8(MAXIMUM_PACKET_SIZE);
    out.put_u32(p.max_packet);
    out.put_slice(&[
        SUBSCRIPTION_IDS_AVAILABLE,
        1,
        SHARED_SUBSCRIPTIONS_AVAILABLE,
        0,
    ]);
}

/// Appends a SUBACK, one MQTT 5 reason code per filter (3.1.1: any
/// refusal becomes 0x80).
pub fn encode_suback(out: &mut BytesMut, version: Version, pkid: u16, codes: &[u8]) {
    let mut body = BytesMut::with_capacity(codes.len() + 3);
    body.put_u16(pkid);
    match version {
        Version::V311 => body.extend(codes.iter().map(|&c| if c <= 2 { c } else { 0x80 })),
        Version::V5 => {
            body.put_u8(0); // no properties
            body.put_slice(codes);
        }
    }
    put_packet(out, 0x90, &body);
}

/// Appends an UNSUBACK (3.1.1: without codes).
pub fn encode_unsuback(out: &mut BytesMut, version: Version, pkid: u16, codes: &[u8]) {
    let mut body = BytesMut::with_capacity(codes.len() + 3);
    body.put_u16(pkid);
    if version == Version::V5 {
        body.put_u8(0); // no properties
        body.put_slice(codes);
    }
    put_packet(out, 0xB0, &body);
}

/// Appends a PUBACK (3.1.1: `reason` must be success).
pub fn encode_puback(out: &mut BytesMut, version: Version, pkid: u16, reason: u8) {
    let [hi, lo] = pkid.to_be_bytes();
    match (version, reason) {
        // Success needs no reason code in MQTT 5 either (3.4.2.1).
        (Version::V311, _) | (Version::V5, reason::SUCCESS) => {
            out.put_slice(&[0x40, 0x02, hi, lo]);
        }
        (Version::V5, code) => out.put_slice(&[0x40, 0x03, hi, lo, code]),
    }
}

pub fn encode_pingresp(out: &mut BytesMut) {
    out.put_slice(&[0xD0, 0x00]);
}

/// Appends a DISCONNECT with `reason` (MQTT 5 only: a 3.1.1 server just
/// closes, and nothing is appended).
pub fn encode_disconnect(out: &mut BytesMut, version: Version, reason: u8) {
    match (version, reason) {
        (Version::V311, _) => {}
        (Version::V5, reason::SUCCESS) => out.put_slice(&[0xE0, 0x00]),
        (Version::V5, code) => out.put_slice(&[0xE0, 0x01, code]),
    }
}

/// A PUBLISH to a local client, as rumqttc encodes it for its version.
enum Outgoing {
    V311(v4::Publish),
    V5(v5::Publish),
}

impl Outgoing {
    fn new(
        version: Version,
        topic: &str,
        payload: &Bytes,
        qos: QoS,
        pkid: u16,
        attributes: &Attributes,
        subscription_ids: &[u32],
    ) -> Outgoing {
        let pkid = if qos == QoS::AtMostOnce { 0 } else { pkid };
        match version {
            Version::V311 => Outgoing::V311(v4::Publish {
                dup: false,
                qos: match qos {
                    QoS::AtMostOnce => V4QoS::AtMostOnce,
                    QoS::AtLeastOnce => V4QoS::AtLeastOnce,
                    QoS::ExactlyOnce => V4QoS::ExactlyOnce,
                },
                retain: attributes.retain,
                topic: topic.to_owned(),
                pkid,
                payload: payload.clone(),
            }),
            Version::V5 => Outgoing::V5(v5::Publish {
                dup: false,
                qos,
                retain: attributes.retain,
                topic: Bytes::copy_from_slice(topic.as_bytes()),
                pkid,
                payload: payload.clone(),
                properties: attributes.to_v5(subscription_ids),
            }),
        }
    }

    fn size(&self) -> usize {
        match self {
            Outgoing::V311(p) => p.size(),
            Outgoing::V5(p) => p.size(),
        }
    }

    fn write(&self, out: &mut BytesMut) -> bool {
        match self {
            Outgoing::V311(p) => p.write(out).is_ok(),
            Outgoing::V5(p) => p.write(out).is_ok(),
        }
    }
}

/// The encoded size of a PUBLISH to a local client (for its Maximum
/// Packet Size).
pub fn publish_size(
    version: Version,
    topic: &str,
    payload: &Bytes,
    qos: QoS,
    attributes: &Attributes,
    subscription_ids: &[u32],
) -> usize {
    // Any packet id takes two bytes; 1 stands for the one to come.
    let publish = Outgoing::new(
        version,
        topic,
        payload,
        qos,
        1,
        attributes,
        subscription_ids,
    );
    publish.size()
}

/// Appends a PUBLISH to a local client. `pkid` is 0 for QoS 0 and never 0
/// for QoS 1. 3.1.1 carries only the retain flag of `attributes`.
///
/// A packet that cannot be encoded (QoS 1 with packet id 0, trap 9; a
/// topic over 65,535 bytes, which rumqttc would cut short unannounced) is
/// a bug of the caller: it fails a debug assertion, and in a release build
/// nothing is appended.
// The fixed interface: one argument per part of the packet.
#[allow(clippy::too_many_arguments)]
pub fn encode_publish(
    out: &mut BytesMut,
    version: Version,
    topic: &str,
    payload: &Bytes,
    qos: QoS,
    pkid: u16,
    attributes: &Attributes,
    subscription_ids: &[u32],
) {
    let encodable = (qos == QoS::AtMostOnce || pkid != 0) && topic.len() <= usize::from(u16::MAX);
    debug_assert!(
        encodable,
        "PUBLISH to a local client at {qos:?} with packet id {pkid}, topic of {} bytes",
        topic.len()
    );
    if !encodable {
        return;
    }
    let publish = Outgoing::new(
        version,
        topic,
        payload,
        qos,
        pkid,
        attributes,
        subscription_ids,
    );
    let before = out.len();
    out.reserve(publish.size());
    // The only error left is a packet over 256 MiB, which no client's
    // maximum packet size lets through (`publish_size` first).
    if !publish.write(out) {
        out.truncate(before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::codec::Inbound;

    const MAX: usize = 1 << 20;

    // Captured from real clients: mosquitto_pub/_sub (c1-c6), paho (c7,
    // c8) and mqtt.js (js1); each client's CONNECT, then what followed.
    const C1_CONNECT: &str =
        "102900044d51545404ce003c00067075623331310003772f740004676f6e65000475736572000470617373";
    const C1_PUBLISH: &str = "33090003612f6200016869";
    const C2_CONNECT: &str =
        "102900044d5154540506003c08110000003c21000a0004707562350518000000050003772f740003627965";
    const C2_PUBLISH: &str = "32320003612f620001282600016b00017603000a746578742f706c61696e080003722f7409000430313032020000001e01016869";
    const C3_CONNECT: &str = "101200044d5154540402003c0006737562333131";
    const C3_SUBSCRIBE: &str =
        "822500010003612f2302001a246177732f7468696e67732f782f736861646f772f6765742f2b02";
    const C4_CONNECT: &str = "101400044d5154540502003c03210014000473756235";
    const C4_SUBSCRIBE: &str = "82120001090b07260001610001620003612f2301";
    const C4_DISCONNECT: &str = "e00104";
    const C5_SUBSCRIBE: &str = "82090001000003782f7900";
    const C5_UNSUBSCRIBE: &str = "a2080002000003782f79";
    const C6_SUBSCRIBE: &str = "820800010003782f7900";
    const C6_UNSUBSCRIBE: &str = "a20700020003782f79";
    const C7_CONNECT: &str = "101b00044d515454040e001e00057061686f340003772f740003627965";
    const C7_PUBLISH: &str = "320c0003612f62000168656c6c6f";
    const C7_SUBSCRIBE: &str = "820e00020003612f23010003622f2b00";
    const C7_UNSUBSCRIBE: &str = "a20700030003612f23";
    const C8_CONNECT: &str = "101d00044d515454050e001e0000057061686f35000003772f740003627965";
    const C8_PUBLISH: &str =
        "32220003612f62000115080006726573702f7409000201022600016b00017668656c6c6f";
    const C8_SUBSCRIBE: &str = "82090002000003612f232e";
    const C8_UNSUBSCRIBE: &str = "a2080003000003612f23";
    const JS1_CONNECT: &str = "101900044d515454040e003c00036a73340003772f740003627965";
    const JS1_PUBLISH: &str = "32090003612f625e1b6869";
    const JS1_SUBSCRIBE: &str = "82085e1c0003612f2301";
    const DISCONNECT: &str = "e000";
    const PINGREQ: &str = "c000";

    const CONNECTS: [&str; 7] = [
        C1_CONNECT,
        C2_CONNECT,
        C3_CONNECT,
        C4_CONNECT,
        C7_CONNECT,
        C8_CONNECT,
        JS1_CONNECT,
    ];

    const PACKETS: [(Version, &str); 23] = [
        (Version::V311, C1_PUBLISH),
        (Version::V5, C2_PUBLISH),
        (Version::V311, C3_SUBSCRIBE),
        (Version::V5, C4_SUBSCRIBE),
        (Version::V5, C4_DISCONNECT),
        (Version::V5, C5_SUBSCRIBE),
        (Version::V5, C5_UNSUBSCRIBE),
        (Version::V311, C6_SUBSCRIBE),
        (Version::V311, C6_UNSUBSCRIBE),
        (Version::V311, C7_PUBLISH),
        (Version::V311, C7_SUBSCRIBE),
        (Version::V311, C7_UNSUBSCRIBE),
        (Version::V5, C8_PUBLISH),
        (Version::V5, C8_SUBSCRIBE),
        (Version::V5, C8_UNSUBSCRIBE),
        (Version::V311, JS1_PUBLISH),
        (Version::V311, JS1_SUBSCRIBE),
        (Version::V311, DISCONNECT),
        (Version::V5, DISCONNECT),
        (Version::V311, PINGREQ),
        (Version::V5, PINGREQ),
        (Version::V311, "40020001"),
        (Version::V5, "4004000110 00"),
    ];

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    /// A packet from its first byte and body (a remaining length under 128).
    fn with_len(byte1: u8, body: &[u8]) -> Vec<u8> {
        assert!(body.len() < 128);
        let mut packet = vec![byte1, body.len() as u8];
        packet.extend_from_slice(body);
        packet
    }

    fn connect_bytes(bytes: &[u8]) -> Result<Option<Connect>, Refusal> {
        let mut buf = BytesMut::from(bytes);
        let result = decode_connect(&mut buf, MAX);
        if let Ok(Some(_)) = result {
            assert!(buf.is_empty(), "the whole CONNECT taken");
        }
        result
    }

    fn connect_hex(h: &str) -> Connect {
        connect_bytes(&hex(h)).unwrap().unwrap()
    }

    fn one(version: Version, bytes: &[u8]) -> Result<Option<Packet>, Refusal> {
        let mut buf = BytesMut::from(bytes);
        let result = decode(&mut buf, version, MAX);
        if let Ok(Some(_)) = result {
            assert!(buf.is_empty(), "the whole packet taken");
        }
        result
    }

    fn packet(version: Version, h: &str) -> Packet {
        one(version, &hex(h)).unwrap().unwrap()
    }

    /// The reason code of a refusal.
    fn code<T: std::fmt::Debug>(result: Result<Option<T>, Refusal>) -> u8 {
        result.unwrap_err().code
    }

    fn sub(filter: &str, qos: u8) -> Subscription {
        Subscription {
            filter: filter.into(),
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        }
    }

    fn plain_publish(topic: &str, payload: &'static [u8], qos: u8, pkid: u16) -> Publish {
        Publish {
            topic: topic.into(),
            payload: Bytes::from_static(payload),
            qos,
            dup: false,
            pkid,
            attributes: Attributes::default(),
        }
    }

    fn will(topic: &str, payload: &'static [u8], qos: u8, delay: u32) -> Option<Will> {
        Some(Will {
            topic: topic.into(),
            payload: Bytes::from_static(payload),
            qos,
            attributes: Attributes::default(),
            delay,
        })
    }

    #[test]
    fn captured_connects_decode() {
        let c1 = connect_hex(C1_CONNECT);
        assert_eq!(
            c1,
            Connect {
                version: Version::V311,
                client_id: "pub311".into(),
                clean_start: true,
                keep_alive: 60,
                session_expiry: 0,
                receive_maximum: u16::MAX,
                max_packet: None,
                will: will("w/t", b"gone", 1, 0),
                auth_method: None,
                username: Some("user".into()),
            }
        );
        let c2 = connect_hex(C2_CONNECT);
        assert_eq!(
            c2,
            Connect {
                version: Version::V5,
                client_id: "pub5".into(),
                clean_start: true,
                keep_alive: 60,
                session_expiry: 60,
                receive_maximum: 10,
                max_packet: None,
                will: will("w/t", b"bye", 0, 5),
                auth_method: None,
                username: None,
            }
        );
        let c3 = connect_hex(C3_CONNECT);
        assert_eq!(
            (c3.version, c3.client_id.as_str()),
            (Version::V311, "sub311")
        );
        assert_eq!((c3.will, c3.username), (None, None));
        let c4 = connect_hex(C4_CONNECT);
        assert_eq!((c4.version, c4.client_id.as_str()), (Version::V5, "sub5"));
        assert_eq!((c4.receive_maximum, c4.session_expiry), (20, 0));
        let c7 = connect_hex(C7_CONNECT);
        assert_eq!(
            (c7.version, c7.client_id.as_str()),
            (Version::V311, "paho4")
        );
        assert_eq!((c7.keep_alive, c7.will), (30, will("w/t", b"bye", 1, 0)));
        let c8 = connect_hex(C8_CONNECT);
        assert_eq!((c8.version, c8.client_id.as_str()), (Version::V5, "paho5"));
        assert_eq!((c8.keep_alive, c8.will), (30, will("w/t", b"bye", 1, 0)));
        assert_eq!(c8.receive_maximum, u16::MAX);
        let js1 = connect_hex(JS1_CONNECT);
        assert_eq!(
            (js1.version, js1.client_id.as_str()),
            (Version::V311, "js4")
        );
        assert_eq!(js1.will, will("w/t", b"bye", 1, 0));
    }

    #[test]
    fn captured_publishes_decode() {
        let mut c1 = plain_publish("a/b", b"hi", 1, 1);
        c1.attributes.retain = true;
        assert_eq!(packet(Version::V311, C1_PUBLISH), Packet::Publish(c1));
        let mut c2 = plain_publish("a/b", b"hi", 1, 1);
        c2.attributes = Attributes {
            retain: false,
            payload_format: Some(1),
            message_expiry: Some(30),
            content_type: Some("text/plain".into()),
            response_topic: Some("r/t".into()),
            correlation_data: Some(Bytes::from_static(b"0102")),
            user_properties: vec![("k".into(), "v".into())],
        };
        assert_eq!(packet(Version::V5, C2_PUBLISH), Packet::Publish(c2));
        assert_eq!(
            packet(Version::V311, C7_PUBLISH),
            Packet::Publish(plain_publish("a/b", b"hello", 1, 1))
        );
        let mut c8 = plain_publish("a/b", b"hello", 1, 1);
        c8.attributes.response_topic = Some("resp/t".into());
        c8.attributes.correlation_data = Some(Bytes::from_static(&[1, 2]));
        c8.attributes.user_properties = vec![("k".into(), "v".into())];
        assert_eq!(packet(Version::V5, C8_PUBLISH), Packet::Publish(c8));
        assert_eq!(
            packet(Version::V311, JS1_PUBLISH),
            Packet::Publish(plain_publish("a/b", b"hi", 1, 0x5e1b))
        );
    }

    #[test]
    fn captured_subscribes_decode() {
        let subscribe = |pkid, subscriptions, id| Packet::Subscribe {
            pkid,
            subscriptions,
            id,
        };
        assert_eq!(
            packet(Version::V311, C3_SUBSCRIBE),
            subscribe(
                1,
                vec![sub("a/#", 2), sub("$aws/things/x/shadow/get/+", 2)],
                None
            )
        );
        assert_eq!(
            packet(Version::V5, C4_SUBSCRIBE),
            subscribe(1, vec![sub("a/#", 1)], Some(7))
        );
        assert_eq!(
            packet(Version::V5, C5_SUBSCRIBE),
            subscribe(1, vec![sub("x/y", 0)], None)
        );
        assert_eq!(
            packet(Version::V311, C6_SUBSCRIBE),
            subscribe(1, vec![sub("x/y", 0)], None)
        );
        assert_eq!(
            packet(Version::V311, C7_SUBSCRIBE),
            subscribe(2, vec![sub("a/#", 1), sub("b/+", 0)], None)
        );
        let options = Subscription {
            no_local: true,
            retain_as_published: true,
            retain_handling: 2,
            ..sub("a/#", 2)
        };
        assert_eq!(
            packet(Version::V5, C8_SUBSCRIBE),
            subscribe(2, vec![options], None)
        );
        assert_eq!(
            packet(Version::V311, JS1_SUBSCRIBE),
            subscribe(0x5e1c, vec![sub("a/#", 1)], None)
        );
    }

    #[test]
    fn captured_unsubscribes_and_the_rest_decode() {
        let unsubscribe = |pkid, filter: &str| Packet::Unsubscribe {
            pkid,
            filters: vec![filter.into()],
        };
        assert_eq!(packet(Version::V5, C5_UNSUBSCRIBE), unsubscribe(2, "x/y"));
        assert_eq!(packet(Version::V311, C6_UNSUBSCRIBE), unsubscribe(2, "x/y"));
        assert_eq!(packet(Version::V311, C7_UNSUBSCRIBE), unsubscribe(3, "a/#"));
        assert_eq!(packet(Version::V5, C8_UNSUBSCRIBE), unsubscribe(3, "a/#"));
        assert_eq!(
            packet(Version::V5, C4_DISCONNECT),
            Packet::Disconnect { reason: 0x04 }
        );
        for version in [Version::V311, Version::V5] {
            assert_eq!(
                packet(version, DISCONNECT),
                Packet::Disconnect { reason: 0 }
            );
            assert_eq!(packet(version, PINGREQ), Packet::PingReq);
            assert_eq!(
                packet(version, "40020007"),
                Packet::PubAck { pkid: 7, reason: 0 }
            );
        }
        // MQTT 5 PUBACK: reason only; reason and (empty) properties.
        assert_eq!(
            packet(Version::V5, "4003000710"),
            Packet::PubAck {
                pkid: 7,
                reason: 0x10
            }
        );
        assert_eq!(
            packet(Version::V5, "400400078700"),
            Packet::PubAck {
                pkid: 7,
                reason: 0x87
            }
        );
    }

    #[test]
    fn partial_input_waits_at_every_split_point() {
        for h in CONNECTS {
            let bytes = hex(h);
            for split in 0..bytes.len() {
                let mut buf = BytesMut::from(&bytes[..split]);
                assert_eq!(decode_connect(&mut buf, MAX), Ok(None), "{h} at {split}");
                assert_eq!(buf.len(), split, "nothing taken");
            }
        }
        for (version, h) in PACKETS {
            let bytes = hex(h);
            for split in 0..bytes.len() {
                let mut buf = BytesMut::from(&bytes[..split]);
                assert_eq!(decode(&mut buf, version, MAX), Ok(None), "{h} at {split}");
                assert_eq!(buf.len(), split, "nothing taken");
            }
            assert!(one(version, &bytes).unwrap().is_some(), "{h}");
        }
    }

    #[test]
    fn a_stream_decodes_packet_by_packet() {
        let mut buf = BytesMut::new();
        for h in [
            C7_CONNECT,
            C7_PUBLISH,
            C7_SUBSCRIBE,
            C7_UNSUBSCRIBE,
            DISCONNECT,
        ] {
            buf.extend_from_slice(&hex(h));
        }
        let connect = decode_connect(&mut buf, MAX).unwrap().unwrap();
        let mut kinds = Vec::new();
        while let Some(packet) = decode(&mut buf, connect.version, MAX).unwrap() {
            kinds.push(std::mem::discriminant(&packet));
        }
        assert_eq!(kinds.len(), 4);
        assert!(buf.is_empty());
    }

    #[test]
    fn trap1_protocol_name_and_level_are_read_first() {
        let unsupported = reason::UNSUPPORTED_PROTOCOL_VERSION;
        // MQTT 3.1: "MQIsdp", level 3.
        let v31 = with_len(0x10, b"\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x02id");
        assert_eq!(code(connect_bytes(&v31)), unsupported);
        // A mosquitto bridge: level 0x84; and an unknown level.
        for level in [0x84, 0x03, 0x06] {
            let mut c3 = hex(C3_CONNECT);
            c3[8] = level;
            assert_eq!(code(connect_bytes(&c3)), unsupported, "level {level}");
        }
        assert_eq!(code(connect_bytes(&[0x10, 0x03, 1, 2, 3])), unsupported);
        assert_eq!(code(connect_bytes(&[0x10, 0x00])), unsupported);
        // Level 5 is read as MQTT 5 (a 3.1.1 reader would take the property
        // bytes 03 21 00 14 for the client id's length and text).
        let c4 = connect_hex(C4_CONNECT);
        assert_eq!((c4.version, c4.client_id.as_str()), (Version::V5, "sub5"));
        // What to answer: the 3.1.1 CONNACK "unacceptable protocol version".
        let mut out = BytesMut::new();
        encode_connack(&mut out, Version::V311, unsupported, None);
        assert_eq!(&out[..], &[0x20, 0x02, 0x00, 0x01]);
    }

    #[test]
    fn trap2_header_flags_are_checked_per_type() {
        let malformed = reason::MALFORMED;
        let mut wrong = hex(C6_SUBSCRIBE);
        for byte1 in [0x80, 0x83, 0x8A] {
            wrong[0] = byte1;
            assert_eq!(code(one(Version::V311, &wrong)), malformed, "{byte1:#x}");
        }
        let mut wrong = hex(C5_UNSUBSCRIBE);
        wrong[0] = 0xA0;
        assert_eq!(code(one(Version::V5, &wrong)), malformed);
        for bytes in [&[0xC1, 0x00][..], &[0xE2, 0x00], &[0x41, 0x02, 0x00, 0x01]] {
            assert_eq!(code(one(Version::V5, bytes)), malformed, "{bytes:x?}");
        }
        let mut connect = hex(C3_CONNECT);
        connect[0] = 0x11;
        assert_eq!(code(connect_bytes(&connect)), malformed);
        // PUBLISH: QoS 3; DUP at QoS 0. DUP at QoS 1 is fine.
        let mut publish = hex(C7_PUBLISH);
        publish[0] = 0x36;
        assert_eq!(code(one(Version::V311, &publish)), malformed);
        let qos0 = hex("30050003612f62");
        assert!(one(Version::V311, &qos0).unwrap().is_some());
        let mut dup0 = qos0.clone();
        dup0[0] = 0x38;
        assert_eq!(code(one(Version::V311, &dup0)), malformed);
        publish[0] = 0x3B;
        let Packet::Publish(p) = one(Version::V311, &publish).unwrap().unwrap() else {
            panic!("not a PUBLISH");
        };
        assert!(p.dup && p.attributes.retain && p.qos == 1);
        // Types a client must not send.
        let protocol = reason::PROTOCOL_ERROR;
        for bytes in [
            &hex(C3_CONNECT)[..],
            &[0x20, 0x02, 0, 0],
            &[0x62, 0x02, 0, 1],
        ] {
            assert_eq!(code(one(Version::V5, bytes)), protocol, "{bytes:x?}");
        }
        assert_eq!(code(one(Version::V5, &[0xF0, 0x00])), protocol);
        assert_eq!(code(one(Version::V311, &[0xF0, 0x00])), malformed);
        assert_eq!(code(one(Version::V311, &[0x00, 0x00])), malformed);
    }

    #[test]
    fn trap3_connect_is_checked_and_its_password_is_binary() {
        let (malformed, protocol) = (reason::MALFORMED, reason::PROTOCOL_ERROR);
        // Connect flags are byte 9: reserved bit; will QoS or retain
        // without a will; will QoS 3.
        for (h, flags) in [
            (C3_CONNECT, 0x03),
            (C3_CONNECT, 0x0A),
            (C3_CONNECT, 0x22),
            (C7_CONNECT, 0x1E),
        ] {
            let mut bytes = hex(h);
            bytes[9] = flags;
            assert_eq!(code(connect_bytes(&bytes)), malformed, "{flags:#x}");
        }
        // A byte after the payload.
        let mut trailing = hex(C3_CONNECT);
        trailing[1] += 1;
        trailing.push(0);
        assert_eq!(code(connect_bytes(&trailing)), malformed);
        // The will topic: a wildcard; not UTF-8.
        let wildcard = C7_CONNECT.replace("772f74", "772f23");
        assert_eq!(
            code(connect_bytes(&hex(&wildcard))),
            reason::TOPIC_NAME_INVALID
        );
        let not_utf8 = C7_CONNECT.replace("772f74", "77ff74");
        assert_eq!(code(connect_bytes(&hex(&not_utf8))), malformed);
        let not_utf8 = C3_CONNECT.replace("737562333131", "7375ff333131");
        assert_eq!(code(connect_bytes(&hex(&not_utf8))), malformed);
        // A binary password, with a user name (3.1.1) and without (5).
        let v311 = with_len(
            0x10,
            b"\x00\x04MQTT\x04\xC2\x00\x3c\x00\x02id\x00\x01u\x00\x03\xff\x00\xfe",
        );
        let c = connect_bytes(&v311).unwrap().unwrap();
        assert_eq!((c.client_id.as_str(), c.username), ("id", Some("u".into())));
        let v5 = with_len(
            0x10,
            b"\x00\x04MQTT\x05\x42\x00\x3c\x00\x00\x02id\x00\x02\xff\xfe",
        );
        let c = connect_bytes(&v5).unwrap().unwrap();
        assert_eq!((c.version, c.username), (Version::V5, None));
        // 3.1.1 has no password without a user name.
        let mut v311 = v311.clone();
        v311[9] = 0x42;
        assert_eq!(code(connect_bytes(&v311)), malformed);
        // The first packet must be CONNECT: known from its first byte.
        assert_eq!(code(connect_bytes(&[0x82])), protocol);
        assert_eq!(code(connect_bytes(&hex(PINGREQ))), protocol);
        // MQTT 5 property values that are protocol errors.
        let zero = C4_CONNECT.replace("210014", "210000");
        assert_eq!(code(connect_bytes(&hex(&zero))), protocol);
        let mut zero = hex(&C4_CONNECT.replace("03210014", "052700000000"));
        zero[1] += 2;
        assert_eq!(code(connect_bytes(&zero)), protocol);
    }

    /// A SUBSCRIBE with one filter and its options byte.
    fn subscribe_bytes(version: Version, pkid: u16, filter: &[u8], options: u8) -> Vec<u8> {
        let mut body = pkid.to_be_bytes().to_vec();
        if version == Version::V5 {
            body.push(0);
        }
        body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
        body.extend_from_slice(filter);
        body.push(options);
        with_len(0x82, &body)
    }

    /// An UNSUBSCRIBE with one filter.
    fn unsubscribe_bytes(version: Version, pkid: u16, filter: &[u8]) -> Vec<u8> {
        let mut body = pkid.to_be_bytes().to_vec();
        if version == Version::V5 {
            body.push(0);
        }
        body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
        body.extend_from_slice(filter);
        with_len(0xA2, &body)
    }

    #[test]
    fn trap4_subscribe_and_unsubscribe_are_checked() {
        let (malformed, protocol) = (reason::MALFORMED, reason::PROTOCOL_ERROR);
        for v in [Version::V311, Version::V5] {
            assert!(one(v, &subscribe_bytes(v, 1, b"a/b", 1)).is_ok());
            // Packet id 0.
            assert_eq!(code(one(v, &subscribe_bytes(v, 0, b"a", 0))), malformed);
            assert_eq!(code(one(v, &unsubscribe_bytes(v, 0, b"a"))), malformed);
            // QoS 3; retain handling 3 (reserved in 3.1.1 anyway).
            assert_eq!(code(one(v, &subscribe_bytes(v, 1, b"a", 3))), malformed);
            assert_eq!(code(one(v, &subscribe_bytes(v, 1, b"a", 0x30))), malformed);
            // Reserved option bits.
            for options in [0x40, 0x80] {
                let bytes = subscribe_bytes(v, 1, b"a", options);
                assert_eq!(code(one(v, &bytes)), malformed);
            }
            for filter in ["", "a/#/b", "a#", "#/", "a/b+", "+a", "a/+b/c"] {
                let (s, u) = (
                    subscribe_bytes(v, 1, filter.as_bytes(), 0),
                    unsubscribe_bytes(v, 1, filter.as_bytes()),
                );
                assert_eq!(code(one(v, &s)), reason::TOPIC_FILTER_INVALID, "{filter}");
                assert_eq!(code(one(v, &u)), reason::TOPIC_FILTER_INVALID, "{filter}");
            }
            for filter in ["#", "+", "+/+/#", "/", "a//b", "$aws/things/+/shadow/#"] {
                let s = subscribe_bytes(v, 1, filter.as_bytes(), 0);
                assert!(one(v, &s).unwrap().is_some(), "{filter}");
                assert!(one(v, &unsubscribe_bytes(v, 1, filter.as_bytes())).is_ok());
            }
            for filter in [&b"a\0b"[..], b"a\xffb"] {
                let bytes = subscribe_bytes(v, 1, filter, 0);
                assert_eq!(code(one(v, &bytes)), malformed, "{filter:?}");
            }
        }
        // No-local etc.: MQTT 5 options, reserved bits in 3.1.1.
        let bytes = subscribe_bytes(Version::V311, 1, b"a", 0x04);
        assert_eq!(code(one(Version::V311, &bytes)), malformed);
        let bytes = subscribe_bytes(Version::V5, 1, b"a", 0x04);
        assert!(one(Version::V5, &bytes).is_ok());
        // No filter at all.
        assert_eq!(code(one(Version::V311, &[0x82, 0x02, 0, 1])), protocol);
        assert_eq!(code(one(Version::V5, &[0x82, 0x03, 0, 1, 0])), protocol);
        assert_eq!(code(one(Version::V311, &[0xA2, 0x02, 0, 1])), protocol);
        assert_eq!(code(one(Version::V5, &[0xA2, 0x03, 0, 1, 0])), protocol);
        // Subscription identifier 0.
        let id0 = C4_SUBSCRIBE.replace("090b07", "090b00");
        assert_eq!(code(one(Version::V5, &hex(&id0))), protocol);
    }

    /// A PUBLISH: topic, packet id (QoS > 0), MQTT 5 properties, payload.
    fn publish_bytes(version: Version, byte1: u8, topic: &[u8], props: &[u8]) -> Vec<u8> {
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(topic);
        if byte1 & 0x06 != 0 {
            body.extend_from_slice(&[0x00, 0x09]);
        }
        if version == Version::V5 {
            body.push(props.len() as u8);
            body.extend_from_slice(props);
        }
        body.extend_from_slice(b"hi");
        with_len(byte1, &body)
    }

    #[test]
    fn trap5_publish_topics_and_properties_are_checked() {
        let (malformed, protocol) = (reason::MALFORMED, reason::PROTOCOL_ERROR);
        let invalid = reason::TOPIC_NAME_INVALID;
        for v in [Version::V311, Version::V5] {
            assert!(one(v, &publish_bytes(v, 0x30, b"a/b", &[])).is_ok());
            for topic in ["", "a/+", "a/#", "#", "+"] {
                let bytes = publish_bytes(v, 0x32, topic.as_bytes(), &[]);
                assert_eq!(code(one(v, &bytes)), invalid, "{topic:?}");
            }
            for topic in [&b"a\xffb"[..], b"a\0b"] {
                let bytes = publish_bytes(v, 0x30, topic, &[]);
                assert_eq!(code(one(v, &bytes)), malformed, "{topic:?}");
            }
            // QoS 1 with packet id 0.
            let pkid0 = hex("32070003612f6200006869");
            assert_eq!(code(one(Version::V311, &pkid0)), malformed);
            // QoS 2 is decoded, for the caller to refuse.
            let Packet::Publish(p) = one(v, &publish_bytes(v, 0x34, b"a", &[])).unwrap().unwrap()
            else {
                panic!("not a PUBLISH");
            };
            assert_eq!((p.qos, p.pkid, &p.payload[..]), (2, 9, &b"hi"[..]));
        }
        let v5 = Version::V5;
        // A topic alias, with an empty topic or not: none was granted.
        for topic in [&b""[..], b"a/b"] {
            let bytes = publish_bytes(v5, 0x30, topic, &[0x23, 0x00, 0x01]);
            assert_eq!(code(one(v5, &bytes)), reason::TOPIC_ALIAS_INVALID);
        }
        // A subscription identifier, a payload format of 2, a response
        // topic with a wildcard.
        for props in [&[0x0B, 0x01][..], &[0x01, 0x02], b"\x08\x00\x03r/#"] {
            let bytes = publish_bytes(v5, 0x30, b"a", props);
            assert_eq!(code(one(v5, &bytes)), protocol, "{props:x?}");
        }
    }

    #[test]
    fn trap6_too_large_is_known_from_the_header() {
        // A PUBLISH announcing 2 MiB: refused before its body arrives.
        let header = [0x30, 0x80, 0x80, 0x80, 0x01];
        assert_eq!(code(one(Version::V311, &header)), reason::PACKET_TOO_LARGE);
        // The whole packet counts, not just the remaining length.
        let mut ping = BytesMut::from(&hex(PINGREQ)[..]);
        assert_eq!(
            code(decode(&mut ping.clone(), Version::V5, 1)),
            reason::PACKET_TOO_LARGE
        );
        assert_eq!(decode(&mut ping, Version::V5, 2), Ok(Some(Packet::PingReq)));
        let mut connect = BytesMut::from(&hex(C3_CONNECT)[..]);
        assert_eq!(
            code(decode_connect(&mut connect, 10)),
            reason::PACKET_TOO_LARGE
        );
        // A remaining length over 4 bytes.
        let five = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
        assert_eq!(code(one(Version::V5, &five)), reason::MALFORMED);
        assert_eq!(
            code(connect_bytes(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF])),
            reason::MALFORMED
        );
    }

    #[test]
    fn trap7_short_disconnects_decode() {
        let v5 = Version::V5;
        assert_eq!(packet(v5, "e000"), Packet::Disconnect { reason: 0 });
        assert_eq!(packet(v5, "e0018e"), Packet::Disconnect { reason: 0x8E });
        // With properties (session expiry 0), which are not kept.
        assert_eq!(
            packet(v5, "e00704051100000000"),
            Packet::Disconnect { reason: 0x04 }
        );
        assert_eq!(one(v5, &[0xE0, 0x01]), Ok(None));
        // 3.1.1 has no reason code.
        assert_eq!(
            packet(Version::V311, "e000"),
            Packet::Disconnect { reason: 0 }
        );
        assert_eq!(code(one(Version::V311, &hex("e00104"))), reason::MALFORMED);
    }

    #[test]
    fn trap8_errors_after_framing_are_malformed() {
        let (v5, malformed) = (Version::V5, reason::MALFORMED);
        // An unknown property.
        let unknown = publish_bytes(v5, 0x30, b"a", &[0x7F, 0x00]);
        assert_eq!(code(one(v5, &unknown)), malformed);
        // A property section shorter than its first property (rumqttc alone
        // would read on into the payload), and one longer than the packet.
        let mut short = publish_bytes(v5, 0x30, b"a", &[0x02, 0, 0, 0, 30]);
        short[5] = 1;
        assert_eq!(code(one(v5, &short)), malformed);
        let mut long = publish_bytes(v5, 0x30, b"a", &[0x01, 0x01]);
        long[5] = 40;
        assert_eq!(code(one(v5, &long)), malformed);
        // A topic length past the packet's end.
        assert_eq!(code(one(v5, &[0x30, 0x03, 0x00, 0x10, 0x61])), malformed);
        // A PUBACK too short for its packet id; one with a byte too many.
        assert_eq!(code(one(v5, &[0x40, 0x01, 0x00])), malformed);
        let long = hex("4003000100");
        assert_eq!(code(one(Version::V311, &long)), malformed);
        // A CONNECT cut inside its properties.
        let cut = C4_CONNECT.replace("03210014000473756235", "032100");
        let mut cut = hex(&cut);
        cut[1] = (cut.len() - 2) as u8;
        assert_eq!(code(connect_bytes(&cut)), malformed);
        // A PINGREQ with a body.
        assert_eq!(code(one(v5, &[0xC0, 0x01, 0x00])), malformed);
        // A PUBACK reason MQTT 5 does not have.
        assert_eq!(code(one(v5, &hex("4003000182"))), reason::PROTOCOL_ERROR);
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "packet id 0"))]
    fn trap9_qos1_publish_without_packet_id_writes_nothing() {
        let mut out = BytesMut::from(&b"xy"[..]);
        let payload = Bytes::from_static(b"hi");
        let plain = Attributes::default();
        for version in [Version::V311, Version::V5] {
            encode_publish(
                &mut out,
                version,
                "a/b",
                &payload,
                QoS::AtLeastOnce,
                0,
                &plain,
                &[],
            );
        }
        assert_eq!(&out[..], b"xy");
    }

    #[test]
    fn connack_encodings() {
        let mut out = BytesMut::new();
        let properties = ConnAckProperties::default();
        for (code, v311) in [
            (0x00, 0),
            (0x84, 1),
            (0x85, 2),
            (0x88, 3),
            (0x89, 3),
            (0x97, 3),
            (0x8B, 3),
            (0x80, 3),
            (0x81, 3),
            (0x86, 4),
            (0x8C, 4),
            (0x87, 5),
        ] {
            out.clear();
            encode_connack(&mut out, Version::V311, code, Some(&properties));
            assert_eq!(&out[..], &[0x20, 0x02, 0x00, v311], "{code:#x}");
        }
        out.clear();
        encode_connack(&mut out, Version::V5, reason::NOT_AUTHORIZED, None);
        assert_eq!(&out[..], &[0x20, 0x03, 0x00, 0x87, 0x00]);
        out.clear();
        let accept = ConnAckProperties {
            assigned_client_id: Some("auto-1".into()),
            session_expiry: Some(0),
            receive_maximum: 100,
            max_packet: 65536,
            server_keep_alive: None,
            reason_string: None,
        };
        encode_connack(&mut out, Version::V5, reason::SUCCESS, Some(&accept));
        let expected = hex(
            "2021 0000 1e 1100000000 120006 6175746f2d31 210064 2401 2501 2700010000 2901 2a00",
        );
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn a_long_connack_reads_back_with_every_property() {
        let accept = ConnAckProperties {
            assigned_client_id: Some("x".repeat(200)),
            session_expiry: Some(0),
            receive_maximum: 100,
            max_packet: 65536,
            server_keep_alive: Some(30),
            reason_string: Some("welcome".into()),
        };
        let mut out = BytesMut::new();
        encode_connack(&mut out, Version::V5, reason::SUCCESS, Some(&accept));
        assert_eq!(out[1] & 0x80, 0x80, "a two-byte remaining length");
        let Ok(Some(Inbound::ConnAck(ack))) = super::super::decode(&mut out, MAX) else {
            panic!("not a CONNACK");
        };
        assert!(out.is_empty());
        let p = ack.properties.unwrap();
        assert_eq!(p.assigned_client_identifier, accept.assigned_client_id);
        assert_eq!(p.session_expiry_interval, Some(0));
        assert_eq!((p.receive_max, p.max_packet_size), (Some(100), Some(65536)));
        assert_eq!(
            (p.server_keep_alive, p.reason_string),
            (Some(30), accept.reason_string)
        );
        assert_eq!((p.max_qos, p.retain_available), (Some(1), Some(1)));
        assert_eq!(p.subscription_identifiers_available, Some(1));
        assert_eq!(p.shared_subscription_available, Some(0));
        assert_eq!(
            (p.wildcard_subscription_available, p.topic_alias_max),
            (None, None)
        );
    }

    #[test]
    fn put_str_cuts_at_a_character_boundary() {
        let mut out = BytesMut::new();
        let long = "é".repeat(40_000); // 80,000 bytes
        put_str(&mut out, &long);
        let len = usize::from(u16::from_be_bytes([out[0], out[1]]));
        assert_eq!(len, 65_534);
        assert!(std::str::from_utf8(&out[2..]).is_ok());
    }

    #[test]
    fn ack_and_control_encodings() {
        let mut out = BytesMut::new();
        let codes = [0x00, 0x01, 0x02, 0x80, 0x87, 0x8F, 0x9E];
        encode_suback(&mut out, Version::V311, 0x1234, &codes);
        assert_eq!(&out[..], &hex("9009 1234 000102 80808080")[..]);
        out.clear();
        encode_suback(&mut out, Version::V5, 0x1234, &codes);
        assert_eq!(&out[..], &hex("900a 1234 00 000102 80878f9e")[..]);
        out.clear();
        encode_unsuback(&mut out, Version::V311, 7, &[0x00, 0x11]);
        assert_eq!(&out[..], &hex("b002 0007")[..]);
        out.clear();
        encode_unsuback(&mut out, Version::V5, 7, &[0x00, 0x11]);
        assert_eq!(&out[..], &hex("b005 0007 00 0011")[..]);
        out.clear();
        encode_puback(&mut out, Version::V311, 7, 0);
        encode_puback(&mut out, Version::V311, 7, 0x10);
        encode_puback(&mut out, Version::V5, 7, 0);
        encode_puback(&mut out, Version::V5, 7, 0x10);
        assert_eq!(&out[..], &hex("40020007 40020007 40020007 4003000710")[..]);
        out.clear();
        encode_pingresp(&mut out);
        encode_disconnect(&mut out, Version::V311, reason::SERVER_SHUTTING_DOWN);
        encode_disconnect(&mut out, Version::V5, reason::SUCCESS);
        encode_disconnect(&mut out, Version::V5, reason::SERVER_SHUTTING_DOWN);
        assert_eq!(&out[..], &hex("d000 e000 e0018b")[..]);
    }

    #[test]
    fn publish_encodings_match_the_captures() {
        let mut out = BytesMut::new();
        let hi = Bytes::from_static(b"hi");
        // 3.1.1: the retain flag, and no other attribute.
        let retained = Attributes {
            retain: true,
            content_type: Some("text/plain".into()),
            ..Attributes::default()
        };
        encode_publish(
            &mut out,
            Version::V311,
            "a/b",
            &hi,
            QoS::AtLeastOnce,
            1,
            &retained,
            &[7],
        );
        assert_eq!(&out[..], &hex(C1_PUBLISH)[..]);
        out.clear();
        let Packet::Publish(c8) = packet(Version::V5, C8_PUBLISH) else {
            panic!("not a PUBLISH");
        };
        encode_publish(
            &mut out,
            Version::V5,
            &c8.topic,
            &c8.payload,
            QoS::AtLeastOnce,
            1,
            &c8.attributes,
            &[],
        );
        assert_eq!(&out[..], &hex(C8_PUBLISH)[..]);
        out.clear();
        let plain = Attributes::default();
        encode_publish(
            &mut out,
            Version::V5,
            "a/b",
            &hi,
            QoS::AtMostOnce,
            9,
            &plain,
            &[],
        );
        assert_eq!(&out[..], &hex("3008 0003612f62 00 6869")[..]);
    }

    #[test]
    fn publish_round_trips_with_subscription_ids() {
        // c2's properties, in rumqttc's order, back through our decoder.
        let Packet::Publish(c2) = packet(Version::V5, C2_PUBLISH) else {
            panic!("not a PUBLISH");
        };
        let mut out = BytesMut::new();
        let qos = QoS::AtLeastOnce;
        encode_publish(
            &mut out,
            Version::V5,
            &c2.topic,
            &c2.payload,
            qos,
            1,
            &c2.attributes,
            &[],
        );
        assert_eq!(
            packet(Version::V5, &hex_of(&out)),
            Packet::Publish(c2.clone())
        );
        // With subscription identifiers, as a client decodes it.
        out.clear();
        let ids = [7, 300, 268_435_455];
        encode_publish(
            &mut out,
            Version::V5,
            &c2.topic,
            &c2.payload,
            qos,
            1,
            &c2.attributes,
            &ids,
        );
        let Ok(Some(Inbound::Publish(p))) = super::super::decode(&mut out, MAX) else {
            panic!("not a PUBLISH");
        };
        let p = p.properties.unwrap();
        assert_eq!(p.subscription_identifiers, vec![7, 300, 268_435_455]);
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    }

    fn hex_of(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn publish_size_is_what_encode_publish_appends() {
        let rich = Attributes {
            retain: true,
            payload_format: Some(1),
            message_expiry: Some(30),
            content_type: Some("text/plain".into()),
            response_topic: Some("r/t".into()),
            correlation_data: Some(Bytes::from_static(b"0102")),
            user_properties: vec![("k".into(), "v".repeat(300))],
        };
        let plain = Attributes::default();
        for version in [Version::V311, Version::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                for attributes in [&plain, &rich] {
                    for ids in [&[][..], &[1, 268_435_455]] {
                        for len in [0, 100, 200, 20_000, 3_000_000] {
                            let payload = Bytes::from(vec![b'x'; len]);
                            let mut out = BytesMut::from(&b"before"[..]);
                            let size = publish_size(version, "a/b", &payload, qos, attributes, ids);
                            encode_publish(
                                &mut out, version, "a/b", &payload, qos, 0x4242, attributes, ids,
                            );
                            assert_eq!(out.len() - 6, size, "{version:?} {qos:?} {len}");
                        }
                    }
                }
            }
        }
    }

    /// Mutated captures through every decoder: errors, never a panic.
    #[test]
    fn no_input_panics() {
        let mut inputs: Vec<Vec<u8>> = CONNECTS.iter().map(|h| hex(h)).collect();
        inputs.extend(PACKETS.iter().map(|(_, h)| hex(h)));
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..6000 {
            let mut bytes = inputs[round % inputs.len()].clone();
            for _ in 0..1 + next() % 4 {
                let at = next() as usize % bytes.len();
                match next() % 4 {
                    0 => bytes[at] = next() as u8,
                    1 => bytes[at] ^= 1 << (next() % 8),
                    2 => bytes.truncate(at.max(1)),
                    _ => bytes.insert(at, next() as u8),
                }
            }
            let _ = decode_connect(&mut BytesMut::from(&bytes[..]), MAX);
            for version in [Version::V311, Version::V5] {
                let mut buf = BytesMut::from(&bytes[..]);
                while let Ok(Some(_)) = decode(&mut buf, version, MAX) {}
            }
        }
    }
}
