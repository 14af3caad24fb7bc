//! The server side of the codec: packets from local MQTT clients (3.1.1 and
//! 5) and the replies to them. The daemon's local endpoint is the only user.
//!
//! (Interface fixed; bodies to be written.)

use super::{Attributes, QoS};
use bytes::{Bytes, BytesMut};

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
pub fn decode_connect(buf: &mut BytesMut, max_packet: usize) -> Result<Option<Connect>, Refusal> {
    let _ = (buf, max_packet);
    todo!()
}

/// Takes one packet after CONNECT off the front of `buf`, validated as a
/// server must (MQTT 3.1.1 / 5: flags, packet ids, topic names and filters,
/// properties). `Ok(None)`: more bytes needed.
pub fn decode(
    buf: &mut BytesMut,
    version: Version,
    max_packet: usize,
) -> Result<Option<Packet>, Refusal> {
    let _ = (buf, version, max_packet);
    todo!()
}

/// Appends a CONNACK. `code` is an MQTT 5 reason code, mapped to the
/// nearest 3.1.1 return code for a 3.1.1 client; `properties` only when
/// accepting a 5 client.
pub fn encode_connack(
    out: &mut BytesMut,
    version: Version,
    code: u8,
    properties: Option<&ConnAckProperties>,
) {
    let _ = (out, version, code, properties);
    todo!()
}

/// Appends a SUBACK, one MQTT 5 reason code per filter (3.1.1: any
/// refusal becomes 0x80).
pub fn encode_suback(out: &mut BytesMut, version: Version, pkid: u16, codes: &[u8]) {
    let _ = (out, version, pkid, codes);
    todo!()
}

/// Appends an UNSUBACK (3.1.1: without codes).
pub fn encode_unsuback(out: &mut BytesMut, version: Version, pkid: u16, codes: &[u8]) {
    let _ = (out, version, pkid, codes);
    todo!()
}

/// Appends a PUBACK (3.1.1: `reason` must be success).
pub fn encode_puback(out: &mut BytesMut, version: Version, pkid: u16, reason: u8) {
    let _ = (out, version, pkid, reason);
    todo!()
}

pub fn encode_pingresp(out: &mut BytesMut) {
    let _ = out;
    todo!()
}

/// Appends a DISCONNECT with `reason` (MQTT 5 only: a 3.1.1 server just
/// closes, and nothing is appended).
pub fn encode_disconnect(out: &mut BytesMut, version: Version, reason: u8) {
    let _ = (out, version, reason);
    todo!()
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
    let _ = (version, topic, payload, qos, attributes, subscription_ids);
    todo!()
}

/// Appends a PUBLISH to a local client. `pkid` is 0 for QoS 0 and never 0
/// for QoS 1. 3.1.1 carries only the retain flag of `attributes`.
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
    let _ = (out, version, topic, payload, qos, pkid, attributes, subscription_ids);
    todo!()
}
