//! The only user of rumqttc's MQTT 5 codec (`rumqttc::v5::mqttbytes::v5`).
//!
//! rumqttc 0.25's codec has bugs a daemon meets; this adapter is where each is
//! worked around, with a regression test below:
//!
//! 1. `Connect::write` into a non-empty buffer writes its flags byte at an
//!    offset counted from the buffer's start: CONNECT is encoded into a fresh
//!    buffer.
//! 2. A QoS 1 PUBLISH with packet id 0 fails after writing 7 bytes, and
//!    `size()` is 2 bytes short then: packet ids are always assigned by the
//!    session (never 0), checked here, and the buffer is truncated on error.
//! 3. The maximum packet size is checked on the remaining length, and on error
//!    the input is left as is (a read loop spins): framing is done here, on the
//!    whole packet, and "too large" is an error that ends the connection.
//! 4. The short DISCONNECT forms (`E0 00`, `E0 01 rc`) do not decode, or
//!    report "insufficient bytes" after consuming them: decoded here.
//! 5. An unknown property consumes the packet and returns an error: any error
//!    after framing is a malformed packet, never "need more bytes".
//! 6. `Filter::new` leaves no-local off: the daemon receives its own publishes
//!    on overlapping topics, as the SDK sample does. Kept on purpose.

use bytes::{BufMut, Bytes, BytesMut};
pub use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Connect, ConnectProperties, Disconnect, Filter, FixedHeader, PubAck, PubAckReason,
    Publish, PublishProperties, SubAck, Subscribe,
};
pub use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, SubscribeReasonCode};
use std::fmt;

pub mod server;

/// What a PUBLISH carries besides its topic, payload and QoS that passes
/// through the daemon unchanged, both ways: the retain flag and the
/// application's properties (MQTT 5, 3.3.2.3). Topic aliases and
/// subscription identifiers belong to one connection and never pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub retain: bool,
    pub payload_format: Option<u8>,
    /// Seconds the message stays valid (counted down while it waits).
    pub message_expiry: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(String, String)>,
}

/// Property identifiers (MQTT 5, 2.2.2.2) of the attributes.
const PAYLOAD_FORMAT: u8 = 0x01;
const MESSAGE_EXPIRY: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const USER_PROPERTY: u8 = 0x26;

impl Attributes {
    /// Nothing set: the message is plain topic and payload.
    pub fn is_plain(&self) -> bool {
        *self == Attributes::default()
    }

    /// Appends the attributes in the spool's form: a flags byte (bit 0:
    /// retain), then each property as MQTT 5 writes it (identifier, value).
    /// Strings longer than 65,535 bytes cannot come from MQTT; they are cut.
    pub fn encode(&self, out: &mut Vec<u8>) {
        fn string(out: &mut Vec<u8>, id: u8, s: &[u8]) {
            let s = &s[..s.len().min(usize::from(u16::MAX))];
            out.push(id);
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s);
        }
        out.push(u8::from(self.retain));
        if let Some(f) = self.payload_format {
            out.extend_from_slice(&[PAYLOAD_FORMAT, f]);
        }
        if let Some(e) = self.message_expiry {
            out.push(MESSAGE_EXPIRY);
            out.extend_from_slice(&e.to_be_bytes());
        }
        if let Some(c) = &self.content_type {
            string(out, CONTENT_TYPE, c.as_bytes());
        }
        if let Some(r) = &self.response_topic {
            string(out, RESPONSE_TOPIC, r.as_bytes());
        }
        if let Some(d) = &self.correlation_data {
            string(out, CORRELATION_DATA, d);
        }
        for (k, v) in &self.user_properties {
            string(out, USER_PROPERTY, k.as_bytes());
            let v = &v.as_bytes()[..v.len().min(usize::from(u16::MAX))];
            out.extend_from_slice(&(v.len() as u16).to_be_bytes());
            out.extend_from_slice(v);
        }
    }

    /// Reads what [`Attributes::encode`] wrote; `None` if it is damaged.
    pub fn decode(bytes: &[u8]) -> Option<Attributes> {
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
            *rest = tail;
            Some(head)
        }
        fn text(rest: &mut &[u8]) -> Option<String> {
            let len = take(rest, 2)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            String::from_utf8(take(rest, len)?.to_vec()).ok()
        }
        let (&flags, mut rest) = bytes.split_first()?;
        let mut a = Attributes {
            retain: flags & 1 != 0,
            ..Attributes::default()
        };
        while let Some((&id, tail)) = rest.split_first() {
            rest = tail;
            match id {
                PAYLOAD_FORMAT => a.payload_format = Some(take(&mut rest, 1)?[0]),
                MESSAGE_EXPIRY => {
                    let b = take(&mut rest, 4)?;
                    a.message_expiry = Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                }
                CONTENT_TYPE => a.content_type = Some(text(&mut rest)?),
                RESPONSE_TOPIC => a.response_topic = Some(text(&mut rest)?),
                CORRELATION_DATA => {
                    let len = take(&mut rest, 2)?;
                    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                    a.correlation_data = Some(Bytes::copy_from_slice(take(&mut rest, len)?));
                }
                USER_PROPERTY => {
                    let k = text(&mut rest)?;
                    let v = text(&mut rest)?;
                    a.user_properties.push((k, v));
                }
                _ => return None,
            }
        }
        Some(a)
    }

    /// From a PUBLISH as rumqttc decodes it (MQTT 5).
    pub fn from_v5(retain: bool, properties: Option<PublishProperties>) -> Attributes {
        let p = properties.unwrap_or_default();
        Attributes {
            retain,
            payload_format: p.payload_format_indicator,
            message_expiry: p.message_expiry_interval,
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
        }
    }

    /// The properties for rumqttc's PUBLISH encoder (MQTT 5), with the
    /// subscription identifiers a local delivery carries; `None` when
    /// there are none (no property section at all).
    pub fn to_v5(&self, subscription_ids: &[u32]) -> Option<PublishProperties> {
        let props = PublishProperties {
            payload_format_indicator: self.payload_format,
            message_expiry_interval: self.message_expiry,
            topic_alias: None,
            response_topic: self.response_topic.clone(),
            correlation_data: self.correlation_data.clone(),
            user_properties: self.user_properties.clone(),
            subscription_identifiers: subscription_ids.iter().map(|&i| i as usize).collect(),
            content_type: self.content_type.clone(),
        };
        (props != PublishProperties::default()).then_some(props)
    }
}

/// A packet from the broker, reduced to what the session acts on.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck {
        pkid: u16,
        reason: PubAckReason,
    },
    SubAck(SubAck),
    /// The reason codes only matter to the log: a filter that was not
    /// subscribed is not subscribed afterwards either.
    UnsubAck {
        pkid: u16,
    },
    PingResp,
    Disconnect {
        reason: u8,
        text: Option<String>,
    },
}

/// Why the input cannot be decoded. Every variant ends the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Larger than the maximum packet size we told the broker.
    TooLarge { size: usize, max: usize },
    /// Framed, but not a valid packet.
    Malformed(String),
    /// A valid packet a broker must not send to a client (or QoS 2, which we
    /// never ask for).
    Unexpected(&'static str),
}

impl DecodeError {
    /// The DISCONNECT reason code that tells the broker what was wrong.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::TooLarge { .. } => DISCONNECT_PACKET_TOO_LARGE,
            DecodeError::Malformed(_) => DISCONNECT_MALFORMED,
            DecodeError::Unexpected(_) => DISCONNECT_PROTOCOL_ERROR,
        }
    }
}

/// DISCONNECT reason codes the client sends (MQTT 5, 3.14.2.1): the same
/// table as the server side's.
pub const DISCONNECT_MALFORMED: u8 = server::reason::MALFORMED;
pub const DISCONNECT_PROTOCOL_ERROR: u8 = server::reason::PROTOCOL_ERROR;
pub const DISCONNECT_RECEIVE_MAXIMUM: u8 = server::reason::RECEIVE_MAXIMUM_EXCEEDED;
pub const DISCONNECT_PACKET_TOO_LARGE: u8 = server::reason::PACKET_TOO_LARGE;

/// What rumqttc's decoder found wrong, in words a user understands
/// (its own texts, such as "Promised boundary crossed", are not).
fn words(e: &rumqttc::v5::mqttbytes::Error) -> String {
    use rumqttc::v5::mqttbytes::Error as E;
    match e {
        E::BoundaryCrossed(_) | E::PayloadSizeIncorrect | E::InsufficientBytes(_) => {
            "a length inside the packet runs past its end".into()
        }
        E::MalformedRemainingLength | E::InvalidRemainingLength(_) => {
            "the packet's length field is invalid".into()
        }
        E::TopicNotUtf8 | E::PayloadNotUtf8(_) => "a text field is not valid UTF-8".into(),
        E::InvalidPropertyType(id) => format!("unknown property 0x{id:02X}"),
        E::InvalidQoS(q) => format!("invalid QoS {q}"),
        E::InvalidReason(code)
        | E::InvalidConnectReturnCode(code)
        | E::InvalidSubscribeReasonCode(code) => format!("unknown reason code 0x{code:02X}"),
        E::PacketIdZero => "packet id 0 where one is required".into(),
        E::PayloadRequired | E::IncorrectPacketFormat | E::MalformedPacket => {
            "the packet's fields do not fit its type".into()
        }
        other => format!("cannot decode it ({other})"),
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { size, max } => write!(
                f,
                "the broker sent a {size}-byte packet, larger than our maximum of {max}"
            ),
            DecodeError::Malformed(why) => write!(f, "malformed packet from the broker: {why}"),
            DecodeError::Unexpected(what) => write!(f, "unexpected {what} packet from the broker"),
        }
    }
}

/// Reads the fixed header: `(header length, remaining length)`, or `None`
/// when more bytes are needed to know.
fn frame(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((2 + i, remaining)));
        }
    }
    Err(DecodeError::Malformed(
        "remaining length longer than 4 bytes".into(),
    ))
}

/// Takes one packet off the front of `buf`.
///
/// # Returns
/// `Ok(None)` when `buf` does not hold a whole packet yet (call again with
/// more bytes); the packet otherwise. An error is final for the connection:
/// what is left of the input (the bad packet may or may not have been taken
/// off) must not be decoded further.
pub fn decode(buf: &mut BytesMut, max_packet: usize) -> Result<Option<Inbound>, DecodeError> {
    let Some((header, remaining)) = frame(buf)? else {
        return Ok(None);
    };
    let size = header + remaining;
    if size > max_packet {
        return Err(DecodeError::TooLarge {
            size,
            max: max_packet,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let packet = buf.split_to(size).freeze();
    let byte1 = packet[0];
    let (kind, flags) = (byte1 >> 4, byte1 & 0x0F);
    // Only PUBLISH carries flags; for every other type they are reserved 0.
    if kind != 3 && flags != 0 {
        return Err(DecodeError::Malformed(format!(
            "packet type {kind} with flags {flags:#x}"
        )));
    }
    // Dispatch on the type byte and call only the readers a client needs,
    // not `Packet::read`, which would also link every client-to-broker
    // decoder (about 20 KB) just to reject what they decode.
    let fixed = FixedHeader::new(byte1, header - 1, remaining);
    let malformed = |e: rumqttc::v5::mqttbytes::Error| DecodeError::Malformed(words(&e));
    match kind {
        2 => ConnAck::read(fixed, packet)
            .map(|ack| Some(Inbound::ConnAck(ack)))
            .map_err(malformed),
        3 => match Publish::read(fixed, packet).map_err(malformed)? {
            p if p.qos == QoS::ExactlyOnce => Err(DecodeError::Unexpected("QoS 2 PUBLISH")),
            // MQTT: a topic that is not UTF-8 is a malformed packet; it
            // must not reach a reader as if it were a topic.
            p if std::str::from_utf8(&p.topic).is_err() => Err(DecodeError::Malformed(
                "PUBLISH topic is not valid UTF-8".into(),
            )),
            p => Ok(Some(Inbound::Publish(p))),
        },
        4 => PubAck::read(fixed, packet)
            .map(|ack| {
                Some(Inbound::PubAck {
                    pkid: ack.pkid,
                    reason: ack.reason,
                })
            })
            .map_err(malformed),
        9 => SubAck::read(fixed, packet)
            .map(|ack| Some(Inbound::SubAck(ack)))
            .map_err(malformed),
        13 if remaining == 0 => Ok(Some(Inbound::PingResp)),
        13 => Err(DecodeError::Malformed("PINGRESP with a body".into())),
        14 => decode_disconnect(fixed, packet, header, remaining).map(Some),
        5..=7 => Err(DecodeError::Unexpected("QoS 2 acknowledgement")),
        // Packet id, then properties and codes the session does not need.
        11 if remaining >= 2 => Ok(Some(Inbound::UnsubAck {
            pkid: u16::from_be_bytes([packet[header], packet[header + 1]]),
        })),
        11 => Err(DecodeError::Malformed("UNSUBACK without packet id".into())),
        15 => Err(DecodeError::Unexpected("AUTH")),
        1 | 8 | 10 | 12 => Err(DecodeError::Unexpected("client-to-broker")),
        _ => Err(DecodeError::Malformed(format!("packet type {kind}"))),
    }
}

/// DISCONNECT, all three forms: `E0 00`, `E0 01 rc`, and with properties
/// (from which only the reason string is kept, if rumqttc can read it).
fn decode_disconnect(
    fixed: FixedHeader,
    packet: Bytes,
    header: usize,
    remaining: usize,
) -> Result<Inbound, DecodeError> {
    let reason = if remaining == 0 { 0 } else { packet[header] };
    let text = if remaining >= 2 {
        Disconnect::read(fixed, packet)
            .ok()
            .and_then(|d| d.properties)
            .and_then(|p| p.reason_string)
    } else {
        None
    };
    Ok(Inbound::Disconnect { reason, text })
}

/// Appends CONNECT. Encoded into a fresh buffer first (trap 1).
pub fn encode_connect(
    out: &mut BytesMut,
    client_id: &str,
    keep_alive: u16,
    clean_start: bool,
    session_expiry: u32,
    max_packet: u32,
    receive_maximum: u16,
) {
    let connect = Connect {
        keep_alive,
        client_id: client_id.to_owned(),
        clean_start,
        properties: Some(ConnectProperties {
            session_expiry_interval: (session_expiry > 0).then_some(session_expiry),
            max_packet_size: Some(max_packet),
            receive_maximum: Some(receive_maximum),
            ..ConnectProperties::new()
        }),
    };
    let mut fresh = BytesMut::with_capacity(connect.size(&None, &None));
    // Cannot fail: the only error is a remaining length over 256 MiB, and the
    // client id is bounded (128 bytes, checked at start-up).
    if connect.write(&None, &None, &mut fresh).is_ok() {
        out.extend_from_slice(&fresh);
    }
}

/// The error for a packet we refuse to encode.
#[derive(Debug, PartialEq, Eq)]
pub struct EncodeError(pub String);

/// The encoded size of a PUBLISH, for the broker's maximum packet size.
pub fn publish_size(
    topic: &Bytes,
    payload: &Bytes,
    qos: QoS,
    attributes: Option<&Attributes>,
) -> usize {
    outbound_publish(topic, payload, qos, 1, false, attributes).size()
}

/// The PUBLISH rumqttc encodes for us.
fn outbound_publish(
    topic: &Bytes,
    payload: &Bytes,
    qos: QoS,
    pkid: u16,
    dup: bool,
    attributes: Option<&Attributes>,
) -> Publish {
    Publish {
        dup,
        qos,
        retain: attributes.is_some_and(|a| a.retain),
        topic: topic.clone(),
        pkid: if qos == QoS::AtMostOnce { 0 } else { pkid },
        payload: payload.clone(),
        properties: attributes.and_then(|a| a.to_v5(&[])),
    }
}

/// Appends a PUBLISH. A QoS 1 publish needs a packet id from the session
/// (never 0, trap 2); on any error `out` is left as it was.
pub fn encode_publish(
    out: &mut BytesMut,
    topic: &Bytes,
    payload: &Bytes,
    qos: QoS,
    pkid: u16,
    dup: bool,
    attributes: Option<&Attributes>,
) -> Result<(), EncodeError> {
    if qos != QoS::AtMostOnce && pkid == 0 {
        return Err(EncodeError("QoS 1 PUBLISH without a packet id".into()));
    }
    let publish = outbound_publish(topic, payload, qos, pkid, dup, attributes);
    let before = out.len();
    out.reserve(publish.size());
    publish.write(out).map(drop).map_err(|e| {
        out.truncate(before);
        EncodeError(e.to_string())
    })
}

/// Appends a SUBSCRIBE for `filters` (at most 8, AWS's limit per packet).
pub fn encode_subscribe(
    out: &mut BytesMut,
    pkid: u16,
    filters: &[String],
    qos: QoS,
) -> Result<(), EncodeError> {
    if pkid == 0 || filters.is_empty() {
        return Err(EncodeError("SUBSCRIBE without packet id or filters".into()));
    }
    let subscribe = Subscribe {
        pkid,
        // No-local stays off (trap 6): like the SDK sample, the daemon also
        // receives what it publishes to a topic it subscribes to.
        filters: filters
            .iter()
            .map(|f| Filter::new(f.as_str(), qos))
            .collect(),
        properties: None,
    };
    let before = out.len();
    subscribe.write(out).map(drop).map_err(|e| {
        out.truncate(before);
        EncodeError(e.to_string())
    })
}

/// Appends an UNSUBSCRIBE for `filters` (at most 8; by hand: a few bytes,
/// and one rumqttc encoder less in the binary).
pub fn encode_unsubscribe(
    out: &mut BytesMut,
    pkid: u16,
    filters: &[String],
) -> Result<(), EncodeError> {
    if pkid == 0 || filters.is_empty() || filters.iter().any(|f| f.len() > usize::from(u16::MAX)) {
        return Err(EncodeError(
            "UNSUBSCRIBE without packet id or filters".into(),
        ));
    }
    // Packet id, property length 0, then each filter with its length.
    let remaining = 3 + filters.iter().map(|f| 2 + f.len()).sum::<usize>();
    out.put_u8(0xA2);
    put_varint(out, remaining);
    out.put_u16(pkid);
    out.put_u8(0);
    for f in filters {
        out.put_u16(f.len() as u16);
        out.put_slice(f.as_bytes());
    }
    Ok(())
}

/// Appends a variable byte integer (MQTT 1.5.5), such as a remaining
/// length; every one written here is far below its limit of 268,435,455.
/// Public for the tests and fuzz checks that build packets by hand.
pub fn put_varint(out: &mut impl BufMut, mut n: usize) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

/// Appends PUBACK (success) for an inbound QoS 1 publish.
pub fn encode_puback(out: &mut BytesMut, pkid: u16) {
    out.put_slice(&[0x40, 0x02]);
    out.put_u16(pkid);
}

/// Appends PINGREQ.
pub fn encode_pingreq(out: &mut BytesMut) {
    out.put_slice(&[0xC0, 0x00]);
}

/// Appends DISCONNECT with reason "normal disconnection" (the short form).
pub fn encode_disconnect(out: &mut BytesMut) {
    out.put_slice(&[0xE0, 0x00]);
}

/// Appends a DISCONNECT with a reason code (the short form, no properties).
pub fn encode_disconnect_with(out: &mut BytesMut, reason: u8) {
    out.put_slice(&[0xE0, 0x01, reason]);
}

/// MQTT 5 reason codes in words, for logs and `ERR` replies.
pub fn reason_words(code: u8) -> &'static str {
    match code {
        0x00 => "normal disconnection",
        0x04 => "disconnect with will message",
        0x10 => "no matching subscribers",
        0x80 => "unspecified error",
        0x81 => "malformed packet",
        0x82 => "protocol error",
        0x83 => "implementation specific error",
        0x84 => "unsupported protocol version",
        0x85 => "client identifier not valid",
        0x86 => "bad user name or password",
        0x87 => "not authorized",
        0x88 => "server unavailable",
        0x89 => "server busy",
        0x8A => "banned",
        0x8B => "server shutting down",
        0x8C => "bad authentication method",
        0x8D => "keep alive timeout",
        0x8E => "session taken over",
        0x8F => "topic filter invalid",
        0x90 => "topic name invalid",
        0x91 => "packet identifier in use",
        0x93 => "receive maximum exceeded",
        0x94 => "topic alias invalid",
        0x95 => "packet too large",
        0x96 => "message rate too high",
        0x97 => "quota exceeded",
        0x98 => "administrative action",
        0x99 => "payload format invalid",
        0x9A => "retain not supported",
        0x9B => "QoS not supported",
        0x9C => "use another server",
        0x9D => "server moved",
        0x9E => "shared subscriptions not supported",
        0x9F => "connection rate exceeded",
        0xA0 => "maximum connect time",
        0xA1 => "subscription identifiers not supported",
        0xA2 => "wildcard subscriptions not supported",
        _ => "unknown reason code",
    }
}

/// CONNACK refusals in words.
pub fn connack_words(code: &ConnectReturnCode) -> &'static str {
    use ConnectReturnCode::*;
    match code {
        Success => "success",
        RefusedProtocolVersion | UnsupportedProtocolVersion => "unsupported protocol version",
        BadClientId | ClientIdentifierNotValid => "client identifier not valid",
        ServiceUnavailable | ServerUnavailable => "server unavailable",
        UnspecifiedError => "unspecified error",
        MalformedPacket => "malformed packet",
        ProtocolError => "protocol error",
        ImplementationSpecificError => "implementation specific error",
        BadUserNamePassword => "bad user name or password",
        NotAuthorized => "not authorized",
        ServerBusy => "server busy",
        Banned => "banned",
        BadAuthenticationMethod => "bad authentication method",
        TopicNameInvalid => "topic name invalid",
        PacketTooLarge => "packet too large",
        QuotaExceeded => "quota exceeded",
        PayloadFormatInvalid => "payload format invalid",
        RetainNotSupported => "retain not supported",
        QoSNotSupported => "QoS not supported",
        UseAnotherServer => "use another server",
        ServerMoved => "server moved",
        ConnectionRateExceeded => "connection rate exceeded",
    }
}

/// SUBACK refusals in words; `None` for a granted subscription.
pub fn suback_refusal(code: &SubscribeReasonCode) -> Option<&'static str> {
    use SubscribeReasonCode::*;
    Some(match code {
        Success(_) => return None,
        Failure | Unspecified => "unspecified error",
        ImplementationSpecific => "implementation specific error",
        NotAuthorized => {
            "not authorized (on AWS IoT: the policy does not allow iot:Subscribe on this filter)"
        }
        TopicFilterInvalid => "topic filter invalid",
        PkidInUse => "packet identifier in use",
        QuotaExceeded => "quota exceeded",
        SharedSubscriptionsNotSupported => "shared subscriptions not supported",
        SubscriptionIdNotSupported => "subscription identifiers not supported",
        WildcardSubscriptionsNotSupported => "wildcard subscriptions not supported",
    })
}

/// The reason code of a refusal in a SUBACK, to pass on to a local client
/// (rumqttc's enum has lost the byte).
pub fn suback_code(code: &SubscribeReasonCode) -> u8 {
    use SubscribeReasonCode::*;
    use server::reason;
    match code {
        Success(QoS::AtMostOnce) => reason::SUCCESS,
        Success(QoS::AtLeastOnce) => reason::GRANTED_QOS_1,
        Success(QoS::ExactlyOnce) => reason::GRANTED_QOS_2,
        Failure | Unspecified => reason::UNSPECIFIED,
        ImplementationSpecific => reason::IMPLEMENTATION_SPECIFIC,
        NotAuthorized => reason::NOT_AUTHORIZED,
        TopicFilterInvalid => reason::TOPIC_FILTER_INVALID,
        PkidInUse => reason::PACKET_ID_IN_USE,
        QuotaExceeded => reason::QUOTA_EXCEEDED,
        SharedSubscriptionsNotSupported => reason::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
        SubscriptionIdNotSupported => reason::SUBSCRIPTION_IDS_NOT_SUPPORTED,
        WildcardSubscriptionsNotSupported => reason::WILDCARDS_NOT_SUPPORTED,
    }
}

/// Whether a PUBACK reason means the broker took the message.
pub fn puback_ok(reason: &PubAckReason) -> bool {
    matches!(
        reason,
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers
    )
}

/// PUBACK refusals in words.
pub fn puback_words(reason: &PubAckReason) -> &'static str {
    match reason {
        PubAckReason::Success => "success",
        PubAckReason::NoMatchingSubscribers => "no matching subscribers",
        PubAckReason::UnspecifiedError => "unspecified error",
        PubAckReason::ImplementationSpecificError => "implementation specific error",
        PubAckReason::NotAuthorized => {
            "not authorized (on AWS IoT: the policy does not allow iot:Publish on this topic)"
        }
        PubAckReason::TopicNameInvalid => "topic name invalid",
        PubAckReason::PacketIdentifierInUse => "packet identifier in use",
        PubAckReason::QuotaExceeded => "quota exceeded",
        PubAckReason::PayloadFormatInvalid => "payload format invalid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::Packet;

    const MAX: usize = 1 << 20;

    fn one(bytes: &[u8]) -> Result<Option<Inbound>, DecodeError> {
        decode(&mut BytesMut::from(bytes), MAX)
    }

    #[test]
    fn trap1_connect_after_other_bytes_is_intact() {
        let mut out = BytesMut::new();
        encode_pingreq(&mut out);
        encode_connect(&mut out, "basicPubSub", 60, true, 0, 4096, 100);
        assert_eq!(&out[..2], &[0xC0, 0x00], "earlier bytes untouched");
        let mut rest = out.split_off(2);
        match Packet::read(&mut rest, None).unwrap() {
            Packet::Connect(c, None, None) => {
                assert_eq!(c.client_id, "basicPubSub");
                assert!(c.clean_start, "flags byte at the right offset");
                assert_eq!(c.keep_alive, 60);
            }
            other => panic!("{other:?}"),
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn trap2_publish_without_packet_id_leaves_buffer_unchanged() {
        let mut out = BytesMut::from(&b"xy"[..]);
        let (t, p) = (Bytes::from_static(b"a/b"), Bytes::from_static(b"hi"));
        assert!(encode_publish(&mut out, &t, &p, QoS::AtLeastOnce, 0, false, None).is_err());
        assert_eq!(&out[..], b"xy");
        encode_publish(&mut out, &t, &p, QoS::AtLeastOnce, 7, false, None).unwrap();
        assert_eq!(out.len() - 2, publish_size(&t, &p, QoS::AtLeastOnce, None));
        let mut subscribe = BytesMut::new();
        assert!(encode_subscribe(&mut subscribe, 0, &["a".into()], QoS::AtLeastOnce).is_err());
        assert!(subscribe.is_empty());
    }

    #[test]
    fn trap3_oversized_packet_is_an_error_not_a_wait() {
        // A PUBLISH header announcing 2 MiB: refused before the body arrives.
        let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x01][..]);
        assert!(matches!(
            decode(&mut buf, MAX),
            Err(DecodeError::TooLarge { .. })
        ));
        // The whole packet counts, not just the remaining length.
        let mut small = BytesMut::from(&[0xD0, 0x00][..]);
        assert!(matches!(
            decode(&mut small, 1),
            Err(DecodeError::TooLarge { size: 2, max: 1 })
        ));
    }

    #[test]
    fn trap4_short_disconnects_decode() {
        assert_eq!(
            one(&[0xE0, 0x00]),
            Ok(Some(Inbound::Disconnect {
                reason: 0,
                text: None
            }))
        );
        assert_eq!(
            one(&[0xE0, 0x01, 0x8E]),
            Ok(Some(Inbound::Disconnect {
                reason: 0x8E,
                text: None
            }))
        );
        // Incomplete is a wait, not a loss.
        assert_eq!(one(&[0xE0, 0x01]), Ok(None));
        // With a reason string property (0x1F).
        let mut long = vec![0xE0, 0x00, 0x98, 0x00, 0x1F, 0x00, 0x02, b'h', b'i'];
        long[1] = (long.len() - 2) as u8;
        long[3] = 5;
        assert_eq!(
            one(&long),
            Ok(Some(Inbound::Disconnect {
                reason: 0x98,
                text: Some("hi".into())
            }))
        );
    }

    #[test]
    fn trap5_unknown_property_is_malformed_not_incomplete() {
        // CONNACK, session present 0, success, properties: id 0x7F (unknown).
        let bytes = [0x20, 0x05, 0x00, 0x00, 0x02, 0x7F, 0x00];
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(matches!(
            decode(&mut buf, MAX),
            Err(DecodeError::Malformed(_))
        ));
        // Truncated inside the packet (length says 3, body too short for
        // properties) is malformed too, not "need more bytes".
        let mut buf = BytesMut::from(&[0x20, 0x03, 0x00, 0x00, 0x05][..]);
        assert!(matches!(
            decode(&mut buf, MAX),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn trap6_subscribe_keeps_no_local_off() {
        let mut out = BytesMut::new();
        encode_subscribe(&mut out, 1, &["sdk/test/python".into()], QoS::AtLeastOnce).unwrap();
        // Last byte is the subscription options: QoS 1, no-local bit (0x04) clear.
        assert_eq!(*out.last().unwrap(), 0x01);
    }

    #[test]
    fn partial_input_waits_and_whole_packets_decode_in_order() {
        let mut buf = BytesMut::from(&[0xD0][..]);
        assert_eq!(decode(&mut buf, MAX), Ok(None));
        buf.extend_from_slice(&[0x00, 0x40, 0x03, 0x00, 0x05, 0x00]);
        assert_eq!(decode(&mut buf, MAX), Ok(Some(Inbound::PingResp)));
        assert_eq!(
            decode(&mut buf, MAX),
            Ok(Some(Inbound::PubAck {
                pkid: 5,
                reason: PubAckReason::Success
            }))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn short_puback_and_reserved_flags() {
        // mosquitto's PUBACK: packet id only, success implied.
        assert_eq!(
            one(&[0x40, 0x02, 0x00, 0x07]),
            Ok(Some(Inbound::PubAck {
                pkid: 7,
                reason: PubAckReason::Success
            }))
        );
        assert!(matches!(
            one(&[0x42, 0x02, 0x00, 0x07]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            one(&[0x60, 0x02, 0x00, 0x07]),
            Err(DecodeError::Unexpected(_))
        ));
        assert!(matches!(
            one(&[0xD0, 0x01, 0x00]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn a_topic_that_is_not_utf8_is_malformed() {
        // PUBLISH QoS 0, topic "a\xffb", no properties, payload "x".
        let e = one(&[0x30, 0x07, 0x00, 0x03, b'a', 0xFF, b'b', 0x00, b'x']).unwrap_err();
        assert!(e.to_string().contains("not valid UTF-8"), "{e}");
        assert_eq!(e.reason_code(), DISCONNECT_MALFORMED);
    }

    #[test]
    fn errors_are_in_words_not_the_codec_library_s() {
        // PUBLISH whose topic length (16) runs past the packet's end.
        let e = one(&[0x30, 0x03, 0x00, 0x10, 0x61]).unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("Promised boundary"), "{text}");
        assert!(text.contains("malformed packet"), "{text}");
        assert!(text.contains("runs past its end"), "{text}");
        assert_eq!(
            DecodeError::Unexpected("AUTH").reason_code(),
            DISCONNECT_PROTOCOL_ERROR
        );
        assert_eq!(
            DecodeError::TooLarge { size: 2, max: 1 }.reason_code(),
            DISCONNECT_PACKET_TOO_LARGE
        );
    }

    #[test]
    fn five_byte_remaining_length_is_malformed() {
        assert!(matches!(
            one(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn puback_and_ping_encodings() {
        let mut out = BytesMut::new();
        encode_puback(&mut out, 0x1234);
        encode_pingreq(&mut out);
        encode_disconnect(&mut out);
        assert_eq!(&out[..], &[0x40, 0x02, 0x12, 0x34, 0xC0, 0x00, 0xE0, 0x00]);
    }
}
