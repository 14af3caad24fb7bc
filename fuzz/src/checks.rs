// The checks behind the fuzz targets, one function per target.
//
// Shared, file for file, by the libFuzzer targets (fuzz/fuzz_targets/) and by
// the stable replay of the committed corpora (tests/fuzz_corpus.rs, through
// `#[path]`), so a corpus file checks the same invariants under both. Each
// function takes the raw fuzz input and panics when an invariant breaks.
//
// Plain `//` comments only: this file is also a module of another crate.

use bytes::BytesMut;
use iotbox::daemon::broker::proxy::{self, Reply};
use iotbox::daemon::broker::session::{self, Event, Session};
use iotbox::daemon::codec::{self, DecodeError, Inbound, QoS};
use iotbox::message;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnAckProperties, ConnectReturnCode, Disconnect, DisconnectReasonCode, Packet,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

// ----- codec_decode ---------------------------------------------------------

/// Input: 2 bytes split point, 1 byte maximum packet size choice, then the
/// bytes from the broker. Decoded as a stream at once and in two parts: the
/// results must be the same ("need more bytes" is never a wrong answer that
/// more bytes change into an error, or the reverse).
pub fn check_codec_decode(data: &[u8]) {
    let [s0, s1, m, input @ ..] = data else {
        return;
    };
    let max = match m % 4 {
        0 => session::MAX_INBOUND_PACKET,
        1 => usize::from(*m),
        2 => 2 + usize::from(*m) * 64,
        _ => usize::MAX,
    };
    let split = usize::from(u16::from_le_bytes([*s0, *s1])) % (input.len() + 1);
    let whole = decode_stream(&[input], max);
    let parts = decode_stream(&[&input[..split], &input[split..]], max);
    assert_eq!(
        whole, parts,
        "fed at once vs in two parts at {split} (max {max})"
    );
}

/// What a stream of chunks decodes to: the packets, then the error (final)
/// or the bytes left waiting for more.
#[derive(Debug, PartialEq)]
struct Decoded {
    packets: Vec<Inbound>,
    end: Result<Vec<u8>, DecodeError>,
}

fn decode_stream(chunks: &[&[u8]], max: usize) -> Decoded {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match codec::decode(&mut buf, max) {
                Ok(Some(packet)) => {
                    let taken = before - buf.len();
                    assert!(taken >= 2, "a packet took {taken} bytes");
                    assert!(taken <= max, "a {taken}-byte packet over the maximum {max}");
                    check_inbound(&packet);
                    packets.push(packet);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) consumed input");
                    break;
                }
                Err(e) => {
                    return Decoded {
                        packets,
                        end: Err(e),
                    };
                }
            }
        }
    }
    Decoded {
        packets,
        end: Ok(buf.to_vec()),
    }
}

/// What the session may rely on in a decoded packet.
fn check_inbound(packet: &Inbound) {
    if let Inbound::Publish(p) = packet {
        assert_ne!(p.qos, QoS::ExactlyOnce, "QoS 2 PUBLISH let through");
        if p.qos == QoS::AtLeastOnce {
            assert_ne!(p.pkid, 0, "QoS 1 PUBLISH with packet id 0");
        }
    }
}

// ----- message_parse --------------------------------------------------------

/// A message that parses re-encodes to the same bytes, and its topic is one
/// that may be published.
pub fn check_message_parse(data: &[u8]) {
    let newline = data.iter().position(|&b| b == b'\n');
    match message::parse(data) {
        Ok(m) => {
            assert_eq!(message::encode(m.topic, m.payload), data, "round trip");
            let topic = m.topic.as_bytes();
            assert_eq!(Some(topic.len()), newline, "topic is the first line");
            assert!((1..=message::MAX_TOPIC_LEN).contains(&topic.len()));
            assert!(!topic.iter().any(|b| b"\r\0+#".contains(b)), "{topic:?}");
        }
        Err(message::Invalid::NoNewline) => assert_eq!(newline, None),
        Err(e) => {
            assert!(newline.is_some(), "{e:?} without a newline");
            assert!(message::validate_topic(&data[..newline.unwrap_or(0)]).is_err());
            assert!(!e.to_string().is_empty());
        }
    }
}

// ----- proxy_reply ----------------------------------------------------------

/// Input: 2 bytes prefix length, then the proxy's reply. Established never
/// points past the input, and once a prefix is decided (a complete header)
/// more bytes do not change the answer.
pub fn check_proxy_reply(data: &[u8]) {
    let [p0, p1, input @ ..] = data else {
        return;
    };
    let whole = proxy::parse_reply(input);
    check_reply(input, &whole);
    let cut = usize::from(u16::from_le_bytes([*p0, *p1])) % (input.len() + 1);
    let prefix = &input[..cut];
    let early = proxy::parse_reply(prefix);
    check_reply(prefix, &early);
    let header_complete = prefix.windows(4).any(|w| w == b"\r\n\r\n");
    if header_complete {
        assert_eq!(early, whole, "prefix of {cut} bytes decided otherwise");
    }
    if early == Reply::Incomplete {
        assert!(!header_complete);
    }
}

fn check_reply(input: &[u8], reply: &Reply) {
    match reply {
        Reply::Established { header_len } => {
            assert!(*header_len <= input.len(), "{header_len} > {}", input.len());
            assert!(*header_len >= 4);
            assert_eq!(&input[header_len - 4..*header_len], b"\r\n\r\n");
        }
        Reply::Refused(why) => assert!(!why.is_empty()),
        Reply::Incomplete => {}
    }
}

// ----- session: the operations ---------------------------------------------

/// Reads the fuzz input; every read past the end is `None`, which ends the
/// run (the input is used up).
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
    fn bool(&mut self) -> Option<bool> {
        Some(self.u8()? & 1 == 1)
    }
    /// A flag byte, then the value when the flag is set.
    fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.bool()? {
            Some(Some(read(self)?))
        } else {
            Some(None)
        }
    }
    /// A length byte, then up to that many bytes (fewer at the end).
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = usize::from(self.u8()?).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(b.to_vec())
    }
}

/// Builds fuzz input (for seeds): the inverse of [`Reader`].
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn opt<T: Copy>(&mut self, v: Option<T>, write: impl FnOnce(&mut Self, T)) {
        self.u8(v.is_some().into());
        if let Some(v) = v {
            write(self, v);
        }
    }
    fn bytes(&mut self, b: &[u8]) {
        let b = &b[..b.len().min(255)];
        self.u8(b.len() as u8);
        self.0.extend_from_slice(b);
    }
}

/// The session's configuration, from the first bytes of the input.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub keep_alive: u8,
    pub session_expiry: bool,
    pub filters: u8,
    pub qos1: bool,
    pub max_payload: u8,
    pub queue: u8,
    pub max_rate: u8,
}

const KEEP_ALIVES: [u16; 8] = [0, 1, 2, 5, 30, 60, 1200, 65535];
const MAX_PAYLOADS: [usize; 4] = [4, 64, 2048, 131_072];
const QUEUE_MESSAGES: [usize; 4] = [1, 3, 20, 1000];
const QUEUE_BYTES: [usize; 4] = [64, 4096, 100_000, 1 << 20];
const MAX_RATES: [u32; 4] = [0, 1, 10, 100];

impl Setup {
    fn read(r: &mut Reader) -> Option<Setup> {
        Some(Setup {
            keep_alive: r.u8()?,
            session_expiry: r.bool()?,
            filters: r.u8()?,
            qos1: r.bool()?,
            max_payload: r.u8()?,
            queue: r.u8()?,
            max_rate: r.u8()?,
        })
    }
    pub fn write(&self, w: &mut Writer) {
        w.u8(self.keep_alive);
        w.u8(self.session_expiry.into());
        w.u8(self.filters);
        w.u8(self.qos1.into());
        w.u8(self.max_payload);
        w.u8(self.queue);
        w.u8(self.max_rate);
    }
    fn config(&self) -> session::Config {
        let pick = |n: u8, len: usize| usize::from(n) % len;
        session::Config {
            client_id: "fuzz".into(),
            keep_alive: KEEP_ALIVES[pick(self.keep_alive, KEEP_ALIVES.len())],
            session_expiry: if self.session_expiry { 3600 } else { 0 },
            // 0 to 20: none, one SUBSCRIBE, and several (8 per packet).
            filters: (0..self.filters % 21).map(|i| format!("t/{i}")).collect(),
            qos: if self.qos1 {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            },
            max_payload: MAX_PAYLOADS[pick(self.max_payload, MAX_PAYLOADS.len())],
            queue_messages: QUEUE_MESSAGES[pick(self.queue, QUEUE_MESSAGES.len())],
            queue_bytes: QUEUE_BYTES[pick(self.queue >> 2, QUEUE_BYTES.len())],
            max_rate: MAX_RATES[pick(self.max_rate, MAX_RATES.len())],
        }
    }
}

/// One step of a run. `pick` fields choose a packet id the session has in
/// use (when it has one and `pick` is not 0) instead of the literal one.
#[derive(Debug, Clone)]
pub enum Op {
    /// The transport came up.
    Connected,
    /// Arbitrary bytes from the broker.
    Raw(Vec<u8>),
    /// A well-formed CONNACK.
    ConnAck {
        session_present: bool,
        code: u8,
        receive_max: Option<u16>,
        max_packet: Option<u32>,
        max_qos: Option<u8>,
        server_keep_alive: Option<u16>,
        assigned_id: bool,
    },
    /// PUBACK: `form` 0 is the short one (success implied), else with
    /// `reason` (one of [`PUBACK_REASONS`]).
    PubAck {
        pick: u8,
        pkid: u16,
        reason: u8,
        form: u8,
    },
    /// SUBACK with these reason codes (raw bytes, valid or not).
    SubAck {
        pick: u8,
        pkid: u16,
        codes: Vec<u8>,
        reason_string: bool,
    },
    /// A message from the broker on some topic.
    Publish {
        qos1: bool,
        pkid: u16,
        payload: Vec<u8>,
    },
    PingResp,
    /// `form` 0: `E0 00`; 1: `E0 01 rc`; else with a reason string.
    Disconnect {
        reason: u8,
        form: u8,
    },
    TransportLost,
    /// Time passes (`unit` 0: ms, 1: s, else minutes); no timeout handled.
    Sleep {
        amount: u16,
        unit: u8,
    },
    /// `handle_timeout(now)`.
    Timeout,
    /// Time jumps to the session's next deadline, which is handled.
    NextDeadline,
    /// `publish`: payload of 8 id bytes plus `len` filler bytes (70000 and
    /// more from 0xFF00 on, over the output high-water mark).
    Send {
        topic: u8,
        len: u16,
    },
    /// The transport takes bytes: `all`, or `n`.
    Take {
        all: bool,
        n: u16,
    },
    Close,
}

pub const PUBACK_REASONS: [u8; 10] = [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99, 0x42];
const CONNACK_CODES: [ConnectReturnCode; 6] = [
    ConnectReturnCode::Success,
    ConnectReturnCode::NotAuthorized,
    ConnectReturnCode::ServerBusy,
    ConnectReturnCode::ClientIdentifierNotValid,
    ConnectReturnCode::QuotaExceeded,
    ConnectReturnCode::UnsupportedProtocolVersion,
];
const TOPICS: [&str; 3] = [
    "t",
    "sdk/test/python",
    "a/very/long/topic/name/for/the/size",
];

impl Op {
    fn read(r: &mut Reader) -> Option<Op> {
        Some(match r.u8()? % 15 {
            0 => Op::Connected,
            1 => Op::Raw(r.bytes()?),
            2 => Op::ConnAck {
                session_present: r.bool()?,
                code: r.u8()?,
                receive_max: r.opt(Reader::u16)?,
                max_packet: r.opt(Reader::u32)?,
                max_qos: r.opt(Reader::u8)?,
                server_keep_alive: r.opt(Reader::u16)?,
                assigned_id: r.bool()?,
            },
            3 => Op::PubAck {
                pick: r.u8()?,
                pkid: r.u16()?,
                reason: r.u8()?,
                form: r.u8()?,
            },
            4 => Op::SubAck {
                pick: r.u8()?,
                pkid: r.u16()?,
                codes: r.bytes()?,
                reason_string: r.bool()?,
            },
            5 => Op::Publish {
                qos1: r.bool()?,
                pkid: r.u16()?,
                payload: r.bytes()?,
            },
            6 => Op::PingResp,
            7 => Op::Disconnect {
                reason: r.u8()?,
                form: r.u8()?,
            },
            8 => Op::TransportLost,
            9 => Op::Sleep {
                amount: r.u16()?,
                unit: r.u8()?,
            },
            10 => Op::Timeout,
            11 => Op::NextDeadline,
            12 => Op::Send {
                topic: r.u8()?,
                len: r.u16()?,
            },
            13 => Op::Take {
                all: r.bool()?,
                n: r.u16()?,
            },
            _ => Op::Close,
        })
    }

    pub fn write(&self, w: &mut Writer) {
        match self {
            Op::Connected => w.u8(0),
            Op::Raw(b) => {
                w.u8(1);
                w.bytes(b);
            }
            Op::ConnAck {
                session_present,
                code,
                receive_max,
                max_packet,
                max_qos,
                server_keep_alive,
                assigned_id,
            } => {
                w.u8(2);
                w.u8((*session_present).into());
                w.u8(*code);
                w.opt(*receive_max, Writer::u16);
                w.opt(*max_packet, Writer::u32);
                w.opt(*max_qos, Writer::u8);
                w.opt(*server_keep_alive, Writer::u16);
                w.u8((*assigned_id).into());
            }
            Op::PubAck {
                pick,
                pkid,
                reason,
                form,
            } => {
                w.u8(3);
                w.u8(*pick);
                w.u16(*pkid);
                w.u8(*reason);
                w.u8(*form);
            }
            Op::SubAck {
                pick,
                pkid,
                codes,
                reason_string,
            } => {
                w.u8(4);
                w.u8(*pick);
                w.u16(*pkid);
                w.bytes(codes);
                w.u8((*reason_string).into());
            }
            Op::Publish {
                qos1,
                pkid,
                payload,
            } => {
                w.u8(5);
                w.u8((*qos1).into());
                w.u16(*pkid);
                w.bytes(payload);
            }
            Op::PingResp => w.u8(6),
            Op::Disconnect { reason, form } => {
                w.u8(7);
                w.u8(*reason);
                w.u8(*form);
            }
            Op::TransportLost => w.u8(8),
            Op::Sleep { amount, unit } => {
                w.u8(9);
                w.u16(*amount);
                w.u8(*unit);
            }
            Op::Timeout => w.u8(10),
            Op::NextDeadline => w.u8(11),
            Op::Send { topic, len } => {
                w.u8(12);
                w.u8(*topic);
                w.u16(*len);
            }
            Op::Take { all, n } => {
                w.u8(13);
                w.u8((*all).into());
                w.u16(*n);
            }
            Op::Close => w.u8(14),
        }
    }
}

// ----- session: broker packets ----------------------------------------------

/// Fixed header byte, remaining length, body.
fn packet(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![byte1];
    codec::put_varint(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// Property 0x1F (reason string) as a property block.
fn reason_string_property(text: &str) -> Vec<u8> {
    let mut props = vec![0x1F];
    props.extend_from_slice(&(text.len() as u16).to_be_bytes());
    props.extend_from_slice(text.as_bytes());
    let mut block = Vec::new();
    codec::put_varint(&mut block, props.len());
    block.extend_from_slice(&props);
    block
}

fn connack_bytes(op: &Op) -> Vec<u8> {
    let Op::ConnAck {
        session_present,
        code,
        receive_max,
        max_packet,
        max_qos,
        server_keep_alive,
        assigned_id,
    } = op
    else {
        unreachable!()
    };
    // Mostly success: a refusal ends the connection at once.
    let code = match code % 8 {
        0..=2 => ConnectReturnCode::Success,
        n => CONNACK_CODES[usize::from(n) % CONNACK_CODES.len()],
    };
    let any = receive_max.is_some()
        || max_packet.is_some()
        || max_qos.is_some()
        || server_keep_alive.is_some()
        || *assigned_id;
    let properties = any.then(|| ConnAckProperties {
        session_expiry_interval: None,
        receive_max: *receive_max,
        max_qos: max_qos.map(|q| q % 2),
        retain_available: None,
        max_packet_size: *max_packet,
        assigned_client_identifier: assigned_id.then(|| "assigned-by-broker".into()),
        topic_alias_max: None,
        reason_string: (code != ConnectReturnCode::Success).then(|| "go away".into()),
        user_properties: vec![],
        wildcard_subscription_available: None,
        subscription_identifiers_available: None,
        shared_subscription_available: None,
        server_keep_alive: *server_keep_alive,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    });
    let mut out = BytesMut::new();
    Packet::ConnAck(ConnAck {
        session_present: *session_present,
        code,
        properties,
    })
    .write(&mut out, None)
    .expect("CONNACK encodes");
    out.to_vec()
}

fn inbound_publish_bytes(qos1: bool, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let topic = b"t/0";
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic);
    if qos1 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.push(0); // no properties
    body.extend_from_slice(payload);
    packet(if qos1 { 0x32 } else { 0x30 }, &body)
}

// ----- session: the model ---------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Idle,
    Connecting,
    Connected,
    Closed,
}

/// What the broker side knows from the bytes exchanged and the events: the
/// session is checked against it after every call.
struct Model {
    now: Instant,
    link: Link,
    ever_connected: bool,
    /// Mirror of the bytes the session holds that do not make a packet yet.
    inbuf: BytesMut,
    /// Length of `pending_output` already parsed.
    out_seen: usize,
    /// Output bytes taken by the transport on this connection.
    consumed: u64,
    /// Output bytes written on this connection.
    written: u64,
    /// The CONNACK's receive maximum (65535 when it sent none).
    receive_max: usize,
    /// QoS 1 PUBLISH packet ids written on this connection, not PUBACKed.
    on_wire: BTreeSet<u16>,
    /// QoS 1 publishes written and not acknowledged, on any connection that
    /// the broker's session still remembers: packet id to request id.
    inflight: BTreeMap<u16, u64>,
    /// The same, request id to packet id.
    inflight_ids: BTreeMap<u64, u16>,
    /// SUBSCRIBE packet ids waiting for SUBACK (this connection).
    subscribing: BTreeSet<u16>,
    /// QoS 0 publishes written on this connection: request id to the output
    /// offset where its packet ends.
    qos0: BTreeMap<u64, u64>,
    /// Request ids the broker acknowledged (PUBACK).
    acked: BTreeSet<u64>,
    /// Request ids accepted by `publish`, and those with a final outcome.
    accepted: BTreeSet<u64>,
    finished: BTreeSet<u64>,
    next_id: u64,
    /// The packet id most recently handed out (new PUBLISH or SUBSCRIBE).
    last_pkid: u16,
    /// Print each step (IOTBOX_FUZZ_TRACE set), to read a crash's story.
    trace: bool,
    stats: Stats,
}

/// How far a run got: for tests that the seeds reach what they are for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub connected: usize,
    pub lost: usize,
    pub subscribes: usize,
    pub publishes: usize,
    pub published: usize,
    pub failed: usize,
    pub unconfirmed: usize,
    pub messages: usize,
    pub pings: usize,
    /// Most QoS 1 publishes unacknowledged at once on one connection.
    pub max_on_wire: usize,
    /// Times a new packet id was lower than the one before.
    pub wraps: usize,
}

impl Model {
    fn new(now: Instant) -> Model {
        Model {
            now,
            link: Link::Idle,
            ever_connected: false,
            inbuf: BytesMut::new(),
            out_seen: 0,
            consumed: 0,
            written: 0,
            receive_max: 65_535,
            on_wire: BTreeSet::new(),
            inflight: BTreeMap::new(),
            inflight_ids: BTreeMap::new(),
            subscribing: BTreeSet::new(),
            qos0: BTreeMap::new(),
            acked: BTreeSet::new(),
            accepted: BTreeSet::new(),
            finished: BTreeSet::new(),
            next_id: 1,
            last_pkid: 0,
            trace: std::env::var_os("IOTBOX_FUZZ_TRACE").is_some(),
            stats: Stats::default(),
        }
    }

    /// The session dropped its connection state (and its output).
    fn reset_connection(&mut self) {
        self.inbuf.clear();
        self.out_seen = 0;
        self.consumed = 0;
        self.written = 0;
        self.receive_max = 65_535;
        self.on_wire.clear();
        self.subscribing.clear();
        self.qos0.clear();
    }

    fn active(&self) -> bool {
        matches!(self.link, Link::Connecting | Link::Connected)
    }

    /// A packet id the session has in use, chosen by `pick`, else `pkid`.
    fn pick(&self, pick: u8, pkid: u16, subscribe: bool) -> u16 {
        let (len, mut ids): (usize, Box<dyn Iterator<Item = &u16>>) = if subscribe {
            (self.subscribing.len(), Box::new(self.subscribing.iter()))
        } else {
            (self.inflight.len(), Box::new(self.inflight.keys()))
        };
        if pick == 0 || len == 0 {
            pkid
        } else {
            ids.nth(usize::from(pick) % len).copied().unwrap_or(pkid)
        }
    }

    fn new_packet_id(&mut self, pkid: u16) {
        if pkid < self.last_pkid {
            self.stats.wraps += 1;
        }
        self.last_pkid = pkid;
    }

    fn in_flight(&self, id: u64) -> bool {
        self.inflight_ids.contains_key(&id)
    }

    fn insert_in_flight(&mut self, pkid: u16, id: u64) {
        self.inflight.insert(pkid, id);
        self.inflight_ids.insert(id, pkid);
    }

    fn remove_in_flight(&mut self, pkid: u16) -> Option<u64> {
        let id = self.inflight.remove(&pkid)?;
        self.inflight_ids.remove(&id);
        Some(id)
    }

    fn clear_in_flight(&mut self) {
        self.inflight.clear();
        self.inflight_ids.clear();
    }
}

/// The request id a publish payload starts with.
fn request_id(payload: &[u8]) -> u64 {
    let bytes: [u8; 8] = payload
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .unwrap_or_else(|| panic!("PUBLISH payload without its request id: {payload:?}"));
    u64::from_le_bytes(bytes)
}

/// What one call to the session did, as the broker and the event loop see it.
#[derive(Default)]
struct Effects {
    packets: Vec<Packet>,
    events: Vec<Event>,
}

/// Collects what the session did since the last look (events, then the
/// output it wrote) and checks it against the model. `connack` is the
/// packet the session was just fed, if it was one.
fn take_effects(s: &mut Session, m: &mut Model, connack: Option<&ConnAck>) -> Effects {
    let mut fx = Effects::default();
    while let Some(e) = s.poll_event() {
        fx.events.push(e);
    }
    // As the daemon does once a message is in the spool.
    for e in &fx.events {
        if let Event::Message { ack: Some(ack), .. } = e {
            s.acknowledge(m.now, *ack);
        }
    }
    transitions(m, &fx.events, connack);
    let lost = fx.events.iter().any(|e| {
        matches!(
            e,
            Event::ConnectionLost { .. } | Event::ConnectRefused { .. }
        )
    });
    if lost {
        assert!(
            m.active(),
            "connection lost while {:?}: {:?}",
            m.link,
            fx.events
        );
        // Nothing is left but, after a protocol error by the broker, one
        // DISCONNECT saying why, for the caller to send before closing.
        let out = s.pending_output();
        assert!(
            out.is_empty() || matches!(out, [0xE0, 0x01, 0x81 | 0x82 | 0x93 | 0x95]),
            "output left after the connection was lost: {out:02X?}"
        );
        m.reset_connection();
        m.out_seen = out.len();
        m.link = Link::Idle;
    }
    let out = s.pending_output();
    assert!(
        out.len() >= m.out_seen,
        "output shrank from {} to {} without the transport taking it",
        m.out_seen,
        out.len()
    );
    let mut fresh = BytesMut::from(&out[m.out_seen..]);
    m.out_seen = out.len();
    while !fresh.is_empty() {
        let before = fresh.len();
        // rumqttc cannot read the short DISCONNECT.
        let packet = if fresh.starts_with(&[0xE0, 0x00]) {
            let _ = fresh.split_to(2);
            Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection))
        } else {
            Packet::read(&mut fresh, None)
                .unwrap_or_else(|e| panic!("the session wrote a bad packet ({e:?}): {fresh:?}"))
        };
        m.written += (before - fresh.len()) as u64;
        written_packet(m, &packet);
        fx.packets.push(packet);
    }
    outcomes(m, &fx.events);
    for e in &fx.events {
        let st = &mut m.stats;
        match e {
            Event::Connected { .. } => st.connected += 1,
            Event::ConnectionLost { .. } => st.lost += 1,
            Event::Published(_) => st.published += 1,
            Event::PublishFailed(..) => st.failed += 1,
            Event::Unconfirmed(_) | Event::Unsent(_) => st.unconfirmed += 1,
            Event::Message { .. } => st.messages += 1,
            _ => {}
        }
    }
    for p in &fx.packets {
        let st = &mut m.stats;
        match p {
            Packet::Subscribe(_) => st.subscribes += 1,
            Packet::Publish(_) => st.publishes += 1,
            Packet::PingReq(_) => st.pings += 1,
            _ => {}
        }
    }
    m.stats.max_on_wire = m.stats.max_on_wire.max(m.on_wire.len());
    if m.trace {
        for e in &fx.events {
            eprintln!("    event {}", short(e));
        }
        for p in &fx.packets {
            eprintln!("    wrote {}", short(p));
        }
    }
    fx
}

/// Checks one packet the session wrote, and notes what it means.
fn written_packet(m: &mut Model, packet: &Packet) {
    match packet {
        Packet::Connect(..) => {
            assert_eq!(m.link, Link::Connecting, "CONNECT while {:?}", m.link);
            assert_eq!(m.written as usize, packet.size(), "CONNECT comes first");
        }
        Packet::Publish(p) => {
            assert_eq!(m.link, Link::Connected, "PUBLISH while {:?}", m.link);
            let id = request_id(&p.payload);
            assert!(m.accepted.contains(&id), "PUBLISH of unknown request {id}");
            assert!(
                !m.finished.contains(&id),
                "PUBLISH of finished request {id}"
            );
            assert!(!p.retain);
            match p.qos {
                QoS::AtMostOnce => {
                    assert!(!p.dup);
                    assert!(!m.in_flight(id), "{id} in flight too");
                    m.qos0.insert(id, m.written);
                }
                QoS::AtLeastOnce => {
                    assert_ne!(p.pkid, 0, "QoS 1 PUBLISH with packet id 0");
                    if p.dup {
                        assert_eq!(
                            m.inflight.get(&p.pkid),
                            Some(&id),
                            "DUP PUBLISH {} is not the one sent with that id",
                            p.pkid
                        );
                    } else {
                        assert!(
                            !m.inflight.contains_key(&p.pkid),
                            "packet id {} reused while in flight",
                            p.pkid
                        );
                        assert!(
                            !m.subscribing.contains(&p.pkid),
                            "packet id {} reused while subscribing",
                            p.pkid
                        );
                        assert!(!m.in_flight(id), "request {id} in flight twice");
                        m.insert_in_flight(p.pkid, id);
                        m.new_packet_id(p.pkid);
                    }
                    assert!(
                        m.on_wire.insert(p.pkid),
                        "packet id {} sent twice on one connection",
                        p.pkid
                    );
                    assert!(
                        m.on_wire.len() <= m.receive_max,
                        "{} QoS 1 publishes unacknowledged, receive maximum {}",
                        m.on_wire.len(),
                        m.receive_max
                    );
                }
                QoS::ExactlyOnce => panic!("QoS 2 PUBLISH"),
            }
        }
        Packet::Subscribe(sub) => {
            assert_eq!(m.link, Link::Connected, "SUBSCRIBE while {:?}", m.link);
            assert_ne!(sub.pkid, 0, "SUBSCRIBE with packet id 0");
            assert!(!sub.filters.is_empty() && sub.filters.len() <= 8);
            assert!(
                !m.inflight.contains_key(&sub.pkid),
                "SUBSCRIBE packet id {} in use by a PUBLISH",
                sub.pkid
            );
            assert!(
                m.subscribing.insert(sub.pkid),
                "SUBSCRIBE packet id {} in use",
                sub.pkid
            );
            m.new_packet_id(sub.pkid);
        }
        Packet::PubAck(_) | Packet::PingReq(_) => {
            assert_eq!(m.link, Link::Connected, "{packet:?} while {:?}", m.link)
        }
        Packet::Disconnect(_) => {
            assert_eq!(m.link, Link::Closed, "DISCONNECT while {:?}", m.link)
        }
        other => panic!("the session sent {other:?}"),
    }
}

/// Checks the final outcomes among `events`.
fn outcomes(m: &mut Model, events: &[Event]) {
    for e in events {
        let (id, what) = match e {
            Event::Published(id) => (*id, "Published"),
            Event::PublishFailed(id, why) => {
                assert!(!why.is_empty());
                (*id, "PublishFailed")
            }
            Event::Unconfirmed(id) => (*id, "Unconfirmed"),
            Event::Unsent(id) => (*id, "Unsent"),
            _ => continue,
        };
        assert!(m.accepted.contains(&id), "{what} for unknown request {id}");
        assert!(m.finished.insert(id), "a second outcome for {id}: {what}");
        if let Event::Published(_) = e {
            let qos0_taken = m.qos0.get(&id).is_some_and(|&end| end <= m.consumed);
            assert!(
                m.acked.contains(&id) || qos0_taken,
                "Published({id}) before a PUBACK or before its bytes left"
            );
        }
        // Answered: no longer in flight (a PUBACK or close took it out).
        if let Some(pkid) = m.inflight_ids.get(&id).copied() {
            m.remove_in_flight(pkid);
        }
    }
}

/// The state changes the events announce.
fn transitions(m: &mut Model, events: &[Event], connack: Option<&ConnAck>) {
    for e in events {
        match e {
            Event::Connected {
                session_present, ..
            } => {
                let ack = connack.expect("Connected without a CONNACK");
                assert!(ack.code == ConnectReturnCode::Success);
                assert_eq!(*session_present, ack.session_present);
                let props = ack.properties.as_ref();
                m.receive_max = props
                    .and_then(|p| p.receive_max)
                    .map_or(65_535, usize::from)
                    .max(1);
                // Without a session on the broker's side the packet ids of
                // the publishes in flight are free again: they go as new.
                if !(ack.session_present && m.ever_connected) {
                    m.clear_in_flight();
                }
                m.ever_connected = true;
                m.link = Link::Connected;
            }
            Event::Message { .. } | Event::Subscribed | Event::SubscribeRefused { .. } => {
                assert_eq!(m.link, Link::Connected, "{e:?} while {:?}", m.link);
            }
            _ => {}
        }
    }
}

/// Debug text cut to a line's worth.
fn short(what: &impl std::fmt::Debug) -> String {
    let mut text = format!("{what:?}");
    if text.len() > 200 {
        let mut cut = 200;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

fn check_timeout(s: &Session, now: Instant) {
    if let Some(at) = s.poll_timeout() {
        assert!(at > now, "deadline {at:?} not after the handled {now:?}");
    }
}

/// Feeds bytes from the broker one packet at a time, so that the effects of
/// each packet are checked against it.
fn feed(s: &mut Session, m: &mut Model, bytes: &[u8]) {
    if !m.active() {
        s.handle_input(m.now, bytes);
        let fx = take_effects(s, m, None);
        assert!(
            fx.events.is_empty() && fx.packets.is_empty(),
            "input while idle"
        );
        return;
    }
    let mut rest = bytes;
    while m.active() && !rest.is_empty() {
        let mut probe = m.inbuf.clone();
        probe.extend_from_slice(rest);
        let before = probe.len();
        let decoded = codec::decode(&mut probe, session::MAX_INBOUND_PACKET);
        let take = match &decoded {
            Ok(Some(_)) => before - probe.len() - m.inbuf.len(),
            _ => rest.len(),
        };
        let (now_fed, later) = rest.split_at(take);
        rest = later;
        let link = m.link;
        // What the broker's packet does to the model before the session acts.
        let mut settled = None;
        match &decoded {
            Ok(Some(Inbound::PubAck { pkid, reason })) if link == Link::Connected => {
                m.on_wire.remove(pkid);
                if let Some(id) = m.remove_in_flight(*pkid) {
                    if codec::puback_ok(reason) {
                        m.acked.insert(id);
                    }
                    settled = Some(id);
                }
            }
            Ok(Some(Inbound::SubAck(ack))) if link == Link::Connected => {
                m.subscribing.remove(&ack.pkid);
            }
            _ => {}
        }
        s.handle_input(m.now, now_fed);
        let connack = match &decoded {
            Ok(Some(Inbound::ConnAck(ack))) => Some(ack),
            _ => None,
        };
        let fx = take_effects(s, m, connack);
        let lost = !m.active();
        match decoded {
            Ok(None) => {
                assert!(
                    fx.events.is_empty() && fx.packets.is_empty(),
                    "half a packet acted on"
                );
                m.inbuf.extend_from_slice(now_fed);
            }
            Err(e) => assert!(lost, "{e:?} did not end the connection"),
            Ok(Some(packet)) => {
                m.inbuf.clear();
                if let Some(id) = settled {
                    assert!(
                        m.finished.contains(&id),
                        "PUBACK for request {id} without outcome"
                    );
                }
                match packet {
                    Inbound::ConnAck(ack) if link == Link::Connecting => {
                        let ok = ack.code == ConnectReturnCode::Success;
                        assert_eq!(m.link == Link::Connected, ok, "CONNACK {:?}", ack.code);
                    }
                    Inbound::Publish(p) if link == Link::Connected => {
                        assert!(fx.events.iter().any(|e| matches!(
                            e,
                            Event::Message { topic, payload, .. }
                                if *topic == p.topic && *payload == p.payload
                        )));
                        if p.qos == QoS::AtLeastOnce {
                            assert!(
                                fx.packets
                                    .iter()
                                    .any(|a| matches!(a, Packet::PubAck(a) if a.pkid == p.pkid)),
                                "QoS 1 message {} not acknowledged",
                                p.pkid
                            );
                        }
                    }
                    Inbound::Disconnect { .. } => assert!(lost, "DISCONNECT kept the connection"),
                    Inbound::ConnAck(_) => assert!(lost, "second CONNACK kept the connection"),
                    _ if link == Link::Connecting => assert!(lost, "a packet before CONNACK"),
                    _ => {}
                }
            }
        }
    }
    if !rest.is_empty() {
        // After the connection ended: ignored.
        feed(s, m, rest);
    }
}

/// Runs the operations of `data` on a session checked against the model.
pub fn check_session(data: &[u8]) {
    run_session(data, false);
}

/// [`check_session`] on a session whose packet ids are about to wrap
/// around (see [`use_up_packet_ids`]), so that the ids the operations get
/// soon meet those still in use. Packet ids are handed out in order: without
/// this, some 65000 publishes in one run would be needed.
pub fn check_session_wrap(data: &[u8]) {
    run_session(data, true);
}

/// [`check_session`] or [`check_session_wrap`], saying how far the run got.
pub fn run_session(data: &[u8], wrap: bool) -> Stats {
    let mut r = Reader(data);
    let Some(setup) = Setup::read(&mut r) else {
        return Stats::default();
    };
    let mut config = setup.config();
    if wrap {
        // QoS 1 (packet ids), and publishes as fast as they come.
        config.qos = QoS::AtLeastOnce;
        config.max_rate = 0;
        config.max_payload = config.max_payload.max(64);
    }
    let mut s = Session::new(config.clone());
    let mut m = Model::new(Instant::now());
    if wrap {
        use_up_packet_ids(&mut s, &mut m);
    }
    // Bounded by the input: every op takes at least one byte.
    while let Some(op) = Op::read(&mut r) {
        step(&mut s, &mut m, &config, op);
    }
    // The end of the daemon: every publish it accepted gets its answer.
    if m.link != Link::Closed {
        step(&mut s, &mut m, &config, Op::Close);
    }
    let unanswered: Vec<_> = m.accepted.difference(&m.finished).collect();
    assert!(
        unanswered.is_empty(),
        "no outcome after close for {unanswered:?}"
    );
    m.stats
}

/// Packet ids left before the wrap-around when the checked run starts.
const IDS_LEFT: u16 = 40;

/// Leaves the session with its packet ids near the end of their range and
/// nothing in flight: on a connection of its own, publishes acknowledged one
/// by one, then the transport lost (some 30 ms). Not checked against the
/// model: the checked run starts afterwards, on a session that has been
/// connected once.
fn use_up_packet_ids(s: &mut Session, m: &mut Model) {
    let connack = Op::ConnAck {
        session_present: false,
        code: 0,
        receive_max: None,
        max_packet: None,
        max_qos: None,
        server_keep_alive: None,
        assigned_id: false,
    };
    s.handle_connected(m.now);
    s.handle_input(m.now, &connack_bytes(&connack));
    let mut pkid = 0;
    while pkid < u16::MAX - IDS_LEFT {
        s.advance_output(m.now, s.pending_output().len());
        while s.poll_event().is_some() {}
        let id = m.next_id;
        m.next_id += 1;
        let payload = id.to_le_bytes().to_vec();
        s.publish(m.now, id, "t".into(), payload.into(), None)
            .expect("publish while connected");
        // 0x32, remaining length, topic length, "t", the packet id.
        let out = s.pending_output();
        assert_eq!(out[..5], [0x32, 14, 0, 1, b't'], "{out:?}");
        pkid = u16::from_be_bytes([out[5], out[6]]);
        s.handle_input(m.now, &packet(0x40, &pkid.to_be_bytes()));
    }
    s.handle_transport_lost("the checked run starts".into());
    while s.poll_event().is_some() {}
    m.ever_connected = true;
}

fn step(s: &mut Session, m: &mut Model, config: &session::Config, op: Op) {
    if m.trace {
        eprintln!("{:?} {}", m.link, short(&op));
    }
    match op {
        Op::Connected => {
            s.handle_connected(m.now);
            if m.link != Link::Closed {
                // Whatever the previous transport had is gone.
                m.reset_connection();
                m.link = Link::Connecting;
            }
            let fx = take_effects(s, m, None);
            assert!(fx.events.is_empty(), "{:?}", fx.events);
            if m.link == Link::Connecting {
                assert!(
                    matches!(fx.packets[..], [Packet::Connect(..)]),
                    "{:?}",
                    fx.packets
                );
                assert!(s.poll_timeout().is_some(), "no CONNACK deadline");
            }
        }
        Op::Raw(bytes) => feed(s, m, &bytes),
        op @ Op::ConnAck { .. } => feed(s, m, &connack_bytes(&op)),
        Op::PubAck {
            pick,
            pkid,
            reason,
            form,
        } => {
            let pkid = m.pick(pick, pkid, false).to_be_bytes();
            let reason = PUBACK_REASONS[usize::from(reason) % PUBACK_REASONS.len()];
            let bytes = match form % 4 {
                0 => packet(0x40, &pkid),
                1 => packet(0x40, &[pkid[0], pkid[1], reason]),
                2 => packet(0x40, &[pkid[0], pkid[1], reason, 0]),
                _ => {
                    let mut body = vec![pkid[0], pkid[1], reason];
                    body.extend_from_slice(&reason_string_property("because"));
                    packet(0x40, &body)
                }
            };
            feed(s, m, &bytes);
        }
        Op::SubAck {
            pick,
            pkid,
            codes,
            reason_string,
        } => {
            let pkid = m.pick(pick, pkid, true);
            let mut body = pkid.to_be_bytes().to_vec();
            if reason_string {
                body.extend_from_slice(&reason_string_property("policy"));
            } else {
                body.push(0);
            }
            body.extend_from_slice(&codes);
            feed(s, m, &packet(0x90, &body));
        }
        Op::Publish {
            qos1,
            pkid,
            payload,
        } => feed(s, m, &inbound_publish_bytes(qos1, pkid.max(1), &payload)),
        Op::PingResp => feed(s, m, &[0xD0, 0x00]),
        Op::Disconnect { reason, form } => {
            let bytes = match form % 3 {
                0 => vec![0xE0, 0x00],
                1 => vec![0xE0, 0x01, reason],
                _ => {
                    let mut body = vec![reason];
                    body.extend_from_slice(&reason_string_property("bye"));
                    packet(0xE0, &body)
                }
            };
            feed(s, m, &bytes);
        }
        Op::TransportLost => {
            let was_active = m.active();
            s.handle_transport_lost("reset by peer".into());
            let fx = take_effects(s, m, None);
            let lost = fx
                .events
                .iter()
                .filter(|e| matches!(e, Event::ConnectionLost { .. }))
                .count();
            assert_eq!(lost, usize::from(was_active), "{:?}", fx.events);
        }
        Op::Sleep { amount, unit } => {
            let ms = match unit % 3 {
                0 => u64::from(amount),
                1 => u64::from(amount) * 1000,
                _ => u64::from(amount) * 60_000,
            };
            m.now += Duration::from_millis(ms);
        }
        Op::Timeout => timeout(s, m),
        Op::NextDeadline => {
            if let Some(at) = s.poll_timeout() {
                m.now = m.now.max(at);
            }
            timeout(s, m);
        }
        Op::Send { topic, len } => {
            let id = m.next_id;
            m.next_id += 1;
            let filler = if len >= 0xFF00 {
                70_000 + usize::from(len & 0xFF)
            } else {
                usize::from(len)
            };
            let mut payload = id.to_le_bytes().to_vec();
            payload.resize(8 + filler, b'x');
            let size = payload.len();
            let topic = TOPICS[usize::from(topic) % TOPICS.len()];
            let max = s.max_payload();
            let result = s.publish(m.now, id, topic.into(), payload.into(), None);
            match &result {
                Ok(()) => {
                    assert!(m.link != Link::Closed);
                    assert!(size <= max && size <= config.max_payload);
                    m.accepted.insert(id);
                }
                Err(session::Rejected::Closed) => assert_eq!(m.link, Link::Closed),
                Err(session::Rejected::TooLarge { size: s, max: x }) => {
                    assert_eq!((*s, *x), (size, max));
                    assert!(size > max);
                }
                Err(session::Rejected::QueueFull { .. }) => {}
            }
            let fx = take_effects(s, m, None);
            assert!(
                !fx.events
                    .iter()
                    .any(|e| matches!(e, Event::ConnectionLost { .. })),
                "{:?}",
                fx.events
            );
        }
        Op::Take { all, n } => {
            let len = s.pending_output().len();
            let n = if all { len } else { usize::from(n) };
            let taken = n.min(len);
            s.advance_output(m.now, n);
            m.out_seen -= taken;
            m.consumed += taken as u64;
            take_effects(s, m, None);
        }
        Op::Close => {
            let link = m.link;
            s.close();
            if link != Link::Connected && link != Link::Closed {
                // Not connected: the output is dropped, CONNECT and all. A
                // second close changes nothing: what the first left in the
                // output (a DISCONNECT after the rest of a packet) stays.
                m.reset_connection();
            }
            m.link = Link::Closed;
            let fx = take_effects(s, m, None);
            if link == Link::Closed {
                assert!(fx.events.is_empty() && fx.packets.is_empty());
            }
            if link == Link::Connected {
                assert!(matches!(fx.packets.last(), Some(Packet::Disconnect(_))));
            }
            assert_eq!(s.poll_timeout(), None, "a deadline after close");
            assert!(!s.is_active());
        }
    }
    // Idle or closed: no deadline to wake up for.
    if !m.active() {
        assert_eq!(s.poll_timeout(), None, "a deadline while {:?}", m.link);
    }
    assert_eq!(s.is_active(), m.active(), "is_active while {:?}", m.link);
}

fn timeout(s: &mut Session, m: &mut Model) {
    s.handle_timeout(m.now);
    take_effects(s, m, None);
    check_timeout(s, m.now);
}

// ----- spool_recovery -------------------------------------------------------

/// The segment directory's log, as the daemon names its outbound one.
const SPOOL_PREFIX: &str = "out";

/// Reads the fuzz input a field at a time; past its end every field is 0,
/// so that every input is a directory.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u8(&mut self) -> u8 {
        let (&first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        first
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }

    fn u32(&mut self) -> u32 {
        let mut b = [0; 4];
        b.iter_mut().for_each(|x| *x = self.u8());
        u32::from_le_bytes(b)
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0; 8];
        b.iter_mut().for_each(|x| *x = self.u8());
        u64::from_le_bytes(b)
    }
}

/// File kinds (the low three bits of a file's first byte).
pub const SPOOL_SEGMENT: u8 = 0; // 0..=4: a segment of the log
pub const SPOOL_OTHER_LOG: u8 = 5; // a segment of the other direction
pub const SPOOL_UPPER_CASE: u8 = 6; // a name that is not the log's own spelling
pub const SPOOL_STRAY: u8 = 7; // another file
/// Flags of a file's first byte.
pub const SPOOL_BIG_FIRST: u8 = 0x10; // first number: 8 bytes (else 1, below 32)
pub const SPOOL_BIG_GENERATION: u8 = 0x20; // generation: 4 bytes (else 1, below 4)
pub const SPOOL_NO_HEADER: u8 = 0x40; // no "IOTBOXS\x01" in front
pub const SPOOL_RAW: u8 = 0x80; // the contents are raw bytes (else ops)
/// Ops on a segment's contents (an op byte mod 6, then one argument byte).
pub const SPOOL_MESSAGE_AT: u8 = 0; // a message numbered first + arg as i8
pub const SPOOL_MESSAGE_NEXT: u8 = 1; // a message numbered one past the last
pub const SPOOL_DONE: u8 = 2; // a done record below first + arg (255: u64::MAX)
pub const SPOOL_GARBAGE: u8 = 3; // the byte arg
pub const SPOOL_FLIP: u8 = 4; // flips a byte (arg: where), a third byte: how
pub const SPOOL_CUT: u8 = 5; // cuts arg % 16 bytes off the end

/// The directory an input describes.
///
/// Input: a byte (segment size choice), a byte (1 + n % 4 files; the high
/// bit: drop the oldest segments after reading), then per file: a byte
/// (kind and flags, above), the first number and generation of its name, a
/// length byte, then that many raw bytes or ops.
pub fn spool_directory(data: &[u8]) -> (u64, bool, iotbox::daemon::store::disk::MemDisk) {
    use iotbox::daemon::store::record;
    let mut f = Fields(data);
    let segment_bytes = 32 + u64::from(f.u8()) * 8;
    let mut disk = iotbox::daemon::store::disk::MemDisk::default();
    let files = f.u8();
    for _ in 0..1 + files % 4 {
        let kind = f.u8();
        let first = if kind & SPOOL_BIG_FIRST != 0 {
            f.u64()
        } else {
            u64::from(f.u8() % 32)
        };
        let generation = if kind & SPOOL_BIG_GENERATION != 0 {
            f.u32()
        } else {
            u32::from(f.u8() % 4)
        };
        let name = match kind & 7 {
            SPOOL_OTHER_LOG => format!("in-{first:016x}-{generation:08x}.seg"),
            SPOOL_UPPER_CASE => format!("{SPOOL_PREFIX}-{first:016X}-{generation:08X}.seg"),
            SPOOL_STRAY => format!("{SPOOL_PREFIX}-{first:016x}-{generation:08x}.seg.tmp"),
            _ => format!("{SPOOL_PREFIX}-{first:016x}-{generation:08x}.seg"),
        };
        let mut bytes = if kind & SPOOL_NO_HEADER == 0 {
            record::MAGIC.to_vec()
        } else {
            Vec::new()
        };
        let len = usize::from(f.u8());
        if kind & SPOOL_RAW != 0 {
            bytes.extend(f.bytes(len));
        } else {
            let mut last = first;
            for _ in 0..len {
                let (op, arg) = (f.u8() % 6, f.u8());
                match op {
                    SPOOL_MESSAGE_AT | SPOOL_MESSAGE_NEXT => {
                        let seq = if op == SPOOL_MESSAGE_AT {
                            first.wrapping_add_signed(i64::from(arg as i8))
                        } else {
                            last.wrapping_add(1)
                        };
                        last = seq;
                        let topic = format!("t/{}", arg % 4);
                        let payload = vec![arg; usize::from(f.u8() % 48)];
                        record::encode_message(
                            &mut bytes,
                            seq,
                            u64::from(arg),
                            topic.as_bytes(),
                            &payload,
                        );
                    }
                    SPOOL_DONE => {
                        let below = if arg == 255 {
                            u64::MAX
                        } else {
                            first.wrapping_add(u64::from(arg))
                        };
                        record::encode_done(&mut bytes, below);
                    }
                    SPOOL_GARBAGE => bytes.push(arg),
                    SPOOL_FLIP => {
                        let how = f.u8() | 1;
                        if !bytes.is_empty() {
                            let at = usize::from(arg) % bytes.len();
                            bytes[at] ^= how;
                        }
                    }
                    _ => bytes.truncate(bytes.len().saturating_sub(usize::from(arg % 16))),
                }
            }
        }
        disk.files.insert(name, bytes);
    }
    (segment_bytes, files & 0x80 != 0, disk)
}

/// What recovery reports for the directory an input describes.
pub fn spool_recovered(data: &[u8]) -> iotbox::daemon::store::log::Recovered {
    use iotbox::daemon::store::log::{Limits, Log};
    let (segment_bytes, _, mut disk) = spool_directory(data);
    let limits = Limits {
        segment_bytes,
        max_body: 4096,
    };
    Log::open(&mut disk, SPOOL_PREFIX, limits).1
}

/// Whether the log takes `name` for one of its segments.
fn is_segment(name: &str) -> bool {
    use iotbox::daemon::store::log::MAX_SEQ;
    let Some(rest) = name
        .strip_prefix("out-")
        .and_then(|r| r.strip_suffix(".seg"))
    else {
        return false;
    };
    let Some((first, generation)) = rest.split_once('-') else {
        return false;
    };
    match (
        u64::from_str_radix(first, 16),
        u32::from_str_radix(generation, 16),
    ) {
        (Ok(s), Ok(g)) => name == format!("out-{s:016x}-{g:08x}.seg") && s < MAX_SEQ,
        _ => false,
    }
}

/// Recovery from whatever a directory holds never panics or hangs, and
/// what it reports is what the reader then reads: in order, as many, the
/// bytes of the files. Then the log works: every message done, a new one
/// committed, read back, and found alone by the next recovery; files that
/// are not the log's are left as they were.
pub fn check_spool_recovery(data: &[u8]) {
    use iotbox::daemon::store::log::{Limits, Log, MAX_SEQ};
    let (segment_bytes, drop, mut disk) = spool_directory(data);
    let before = disk.files.clone();
    let limits = Limits {
        segment_bytes,
        max_body: 4096,
    };
    let total: u64 = before.values().map(|b| b.len() as u64).sum();
    let (mut log, found) = Log::open(&mut disk, SPOOL_PREFIX, limits);
    let ours: Vec<_> = before.iter().filter(|(n, _)| is_segment(n)).collect();
    assert_eq!(found.segments, ours.len(), "segments");
    assert_eq!(
        found.bytes,
        ours.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );
    assert!(found.damaged_bytes <= total);
    assert_eq!(log.waiting(), found.messages, "waiting after recovery");
    // Read everything: at most one message per 27 bytes (an empty one).
    let mut read = Vec::new();
    while let Some(m) = log.next(&mut disk) {
        assert!(
            read.len() as u64 <= total / 27,
            "more messages than bytes allow"
        );
        if let Some(last) = read.last() {
            assert!(m.seq > *last, "{} after {last}", m.seq);
        }
        read.push(m.seq);
    }
    assert_eq!(read.len() as u64, found.messages, "read vs recovered");
    assert!(log.take_damaged() <= total);
    let again = Log::open(&mut disk.clone(), SPOOL_PREFIX, limits).1;
    assert_eq!(again, found, "a second recovery of the same files");
    if drop {
        // Until only the writer is left (rolled): at most one per segment.
        let mut dropped = 0;
        while log.drop_oldest(&mut disk).is_some() {
            dropped += 1;
            assert!(
                dropped < found.segments,
                "dropped more segments than there are"
            );
        }
    }
    // Done in an order of the input's choosing: odd positions, then even.
    let order = read.iter().skip(1).step_by(2).chain(read.iter().step_by(2));
    for &seq in order {
        log.done(seq);
    }
    assert_eq!(log.waiting(), 0, "all done (or dropped)");
    let seq = log.append(7, b"t/new", b"payload");
    let committed = log.commit(&mut disk);
    if seq >= MAX_SEQ {
        // Damage just under the bound used the numbers up.
        assert!(committed.is_err(), "a number past the bound was committed");
        return;
    }
    assert_eq!(committed.expect("a commit in memory"), seq..seq + 1);
    let check_new = |log: &mut Log, disk: &mut iotbox::daemon::store::disk::MemDisk| {
        let m = log.next(disk).expect("the new message");
        assert_eq!(
            (m.seq, &m.topic[..], &m.payload[..]),
            (seq, &b"t/new"[..], &b"payload"[..])
        );
        assert_eq!(log.next(disk), None, "only the new message");
    };
    check_new(&mut log, &mut disk);
    assert_eq!(log.waiting(), 1);
    log.commit(&mut disk).expect("a commit in memory");
    for (name, bytes) in before.iter().filter(|(n, _)| !is_segment(n)) {
        assert_eq!(disk.files.get(name), Some(bytes), "{name} changed");
    }
    let (mut log, found) = Log::open(&mut disk, SPOOL_PREFIX, limits);
    assert_eq!((found.messages, log.waiting()), (1, 1), "after a restart");
    check_new(&mut log, &mut disk);
}

// ----- local_client ---------------------------------------------------------
//
// The local MQTT endpoint: the server side of the codec
// (`codec::server::decode_connect`, `decode`, `encode_publish`) and the
// per-client machine (`device::local::client::Client`), on what a local
// client may send.

/// What a `local_client` input says besides the bytes from the client:
/// byte 0 chooses the maximum packet size (bits 0-1) and how many schedule
/// bytes follow (bits 2-7); the schedule bytes, read in turn and over again,
/// say how the bytes arrive and what happens between the chunks; the rest
/// is the stream from the client.
struct LocalInput<'a> {
    max: usize,
    schedule: &'a [u8],
    stream: &'a [u8],
}

/// The maximum packet sizes tried: the daemon's, a few that cut real
/// packets, none at all.
const LOCAL_MAX: [usize; 4] = [session::MAX_INBOUND_PACKET, 40, 300, usize::MAX];

/// Chunk sizes, by the low 4 bits of a schedule byte (the last: the rest).
const LOCAL_CHUNKS: [usize; 16] = [
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    11,
    16,
    32,
    64,
    128,
    512,
    4096,
    usize::MAX,
];

impl LocalInput<'_> {
    fn read(data: &[u8]) -> Option<LocalInput<'_>> {
        let (&config, rest) = data.split_first()?;
        let n = usize::from(config >> 2).min(rest.len());
        let (schedule, stream) = rest.split_at(n);
        Some(LocalInput {
            max: LOCAL_MAX[usize::from(config & 3)],
            schedule,
            stream,
        })
    }

    /// The schedule byte of step `i` (0 when there is no schedule).
    fn at(&self, i: usize) -> u8 {
        match self.schedule.len() {
            0 => 0,
            n => self.schedule[i % n],
        }
    }

    /// The stream in chunks, their sizes from the schedule (every second
    /// byte, as the machine's steps read them); one chunk without a
    /// schedule.
    fn chunks(&self) -> Vec<&[u8]> {
        if self.schedule.is_empty() {
            return vec![self.stream];
        }
        let mut chunks = Vec::new();
        let mut rest = self.stream;
        let mut i = 0;
        while !rest.is_empty() {
            let n = LOCAL_CHUNKS[usize::from(self.at(2 * i) & 0x0F)].min(rest.len());
            let (chunk, after) = rest.split_at(n);
            chunks.push(chunk);
            rest = after;
            i += 1;
        }
        chunks
    }
}

/// Input: see [`LocalInput`]. The server codec decodes the stream the same
/// whether fed at once or in chunks, and what it decodes is what a server
/// may act on; the client machine, fed the stream with timeouts,
/// deliveries and the loop's answers in between, keeps its promises.
pub fn check_local_client(data: &[u8]) {
    let Some(input) = LocalInput::read(data) else {
        return;
    };
    let chunks = input.chunks();
    for first in [
        LocalFirst::Connect,
        LocalFirst::Packets(LocalVersion::V311),
        LocalFirst::Packets(LocalVersion::V5),
    ] {
        let whole = local_decode_stream(&[input.stream], first, input.max);
        let parts = local_decode_stream(&chunks, first, input.max);
        assert_eq!(
            whole,
            parts,
            "{first:?}: fed at once vs in {} chunks (max {})",
            chunks.len(),
            input.max
        );
    }
    local_client_machine(&input);
}

use iotbox::daemon::codec::server::{
    self as local_codec, Connect as LocalConnect, Packet as LocalPacket, Refusal,
    Version as LocalVersion,
};
use iotbox::daemon::device::local::client::{self as local, Action, Client, Delivered};

/// Where a stream starts: with a CONNECT (`decode_connect`, then `decode`
/// at its version), or after it, at a version.
#[derive(Debug, Clone, Copy)]
enum LocalFirst {
    Connect,
    Packets(LocalVersion),
}

#[derive(Debug, PartialEq)]
enum LocalDecoded {
    Connect(Box<LocalConnect>),
    Packet(LocalPacket),
}

/// What a stream of chunks decodes to: the packets, then the refusal
/// (final) or the bytes left waiting for more.
#[derive(Debug, PartialEq)]
struct LocalStream {
    packets: Vec<LocalDecoded>,
    end: Result<Vec<u8>, Refusal>,
}

/// The length of the whole packet at the start of `bytes`, from its fixed
/// header, if the header is whole and valid.
fn packet_length(bytes: &[u8]) -> Option<usize> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let byte = *bytes.get(1 + i)?;
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(2 + i + remaining);
        }
    }
    None
}

fn local_decode_stream(chunks: &[&[u8]], first: LocalFirst, max: usize) -> LocalStream {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    // The stream so far, and how much of it was taken off as packets.
    let mut fed = Vec::new();
    let mut taken_total = 0;
    let mut version = match first {
        LocalFirst::Connect => None,
        LocalFirst::Packets(v) => Some(v),
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        fed.extend_from_slice(chunk);
        loop {
            let before = buf.to_vec();
            let decoded = match version {
                None => local_codec::decode_connect(&mut buf, max)
                    .map(|c| c.map(|c| LocalDecoded::Connect(Box::new(c)))),
                Some(v) => {
                    local_codec::decode(&mut buf, v, max).map(|p| p.map(LocalDecoded::Packet))
                }
            };
            match decoded {
                Ok(Some(packet)) => {
                    let taken = before.len() - buf.len();
                    assert_eq!(
                        packet_length(&before),
                        Some(taken),
                        "{packet:?}: took {taken} bytes, not one whole packet"
                    );
                    assert!(taken <= max, "a {taken}-byte packet over the maximum {max}");
                    assert_eq!(buf[..], before[taken..], "the bytes after the packet");
                    assert_eq!(
                        before[..],
                        fed[taken_total..],
                        "the buffer is not the stream"
                    );
                    taken_total += taken;
                    match &packet {
                        LocalDecoded::Connect(c) => {
                            check_local_connect(c);
                            version = Some(c.version);
                        }
                        LocalDecoded::Packet(p) => {
                            check_local_packet(p, version.unwrap_or(LocalVersion::V5));
                        }
                    }
                    packets.push(packet);
                }
                Ok(None) => {
                    assert_eq!(buf[..], before[..], "Ok(None) changed the input");
                    break;
                }
                Err(refusal) => {
                    assert!(!refusal.why.is_empty(), "{refusal:?} without words");
                    // Final: nothing more is fed.
                    return LocalStream {
                        packets,
                        end: Err(refusal),
                    };
                }
            }
        }
    }
    LocalStream {
        packets,
        end: Ok(buf.to_vec()),
    }
}

/// A topic name a server may publish to (MQTT 4.7.3).
fn assert_topic_name(topic: &str, what: &str) {
    assert!(
        !topic.is_empty() && !topic.contains(['+', '#', '\0']),
        "{what} {topic:?} let through"
    );
}

/// A topic filter a server may subscribe to (MQTT 4.7.1).
fn assert_topic_filter(filter: &str) {
    assert!(
        !filter.is_empty() && !filter.contains('\0'),
        "filter {filter:?} let through"
    );
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') {
            assert!(*level == "#" && i + 1 == levels.len(), "filter {filter:?}");
        }
        if level.contains('+') {
            assert_eq!(*level, "+", "filter {filter:?}");
        }
    }
}

fn check_local_connect(c: &LocalConnect) {
    assert!(!c.client_id.contains('\0'), "{c:?}");
    assert!(c.receive_maximum >= 1, "{c:?}");
    assert_ne!(c.max_packet, Some(0), "{c:?}");
    if let Some(w) = &c.will {
        assert_topic_name(&w.topic, "will topic");
        assert!(w.qos <= 2, "{c:?}");
        assert!(w.attributes.payload_format.unwrap_or(0) <= 1, "{c:?}");
    }
    if c.version == LocalVersion::V311 {
        assert_eq!(
            (
                c.session_expiry,
                c.receive_maximum,
                c.max_packet,
                &c.auth_method
            ),
            (0, u16::MAX, None, &None),
            "3.1.1 has no properties"
        );
    }
}

fn check_local_packet(packet: &LocalPacket, version: LocalVersion) {
    match packet {
        LocalPacket::Publish(p) => {
            assert_topic_name(&p.topic, "PUBLISH topic");
            assert!(p.qos <= 2, "{p:?}");
            assert_eq!(p.pkid == 0, p.qos == 0, "packet id at QoS {}: {p:?}", p.qos);
            assert!(!p.dup || p.qos > 0, "DUP at QoS 0");
            if let Some(t) = &p.attributes.response_topic {
                assert_topic_name(t, "response topic");
            }
            assert!(p.attributes.payload_format.unwrap_or(0) <= 1, "{p:?}");
            if p.qos <= 1 {
                local_publish_round_trip(p, version);
            }
        }
        LocalPacket::PubAck { pkid, .. } => assert_ne!(*pkid, 0),
        LocalPacket::Subscribe {
            pkid,
            subscriptions,
            id,
        } => {
            assert_ne!(*pkid, 0, "SUBSCRIBE with packet id 0");
            assert!(!subscriptions.is_empty(), "SUBSCRIBE without a filter");
            assert_ne!(*id, Some(0), "subscription identifier 0");
            for s in subscriptions {
                assert_topic_filter(&s.filter);
                assert!(s.qos <= 2 && s.retain_handling <= 2, "{s:?}");
            }
        }
        LocalPacket::Unsubscribe { pkid, filters } => {
            assert_ne!(*pkid, 0, "UNSUBSCRIBE with packet id 0");
            assert!(!filters.is_empty(), "UNSUBSCRIBE without a filter");
            filters.iter().for_each(|f| assert_topic_filter(f));
        }
        LocalPacket::PingReq => {}
        LocalPacket::Disconnect { reason } => {
            if version == LocalVersion::V311 {
                assert_eq!(*reason, 0, "a 3.1.1 DISCONNECT has no reason");
            }
        }
    }
}

/// A PUBLISH as a local client sent it, encoded to a client the daemon
/// delivers to, decodes as the same message; `publish_size` says how long
/// it is.
fn local_publish_round_trip(p: &local_codec::Publish, version: LocalVersion) {
    let qos = if p.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let size = local_codec::publish_size(version, &p.topic, &p.payload, qos, &p.attributes, &[]);
    let mut out = BytesMut::new();
    local_codec::encode_publish(
        &mut out,
        version,
        &p.topic,
        &p.payload,
        qos,
        p.pkid,
        &p.attributes,
        &[],
    );
    assert_eq!(out.len(), size, "publish_size vs encode_publish: {p:?}");
    let encoded = out.to_vec();
    match local_codec::decode(&mut out, version, usize::MAX) {
        Ok(Some(LocalPacket::Publish(q))) => {
            assert!(out.is_empty(), "bytes after the re-encoded PUBLISH");
            assert_eq!(
                (&q.topic, &q.payload, q.qos, q.pkid, &q.attributes, q.dup),
                (&p.topic, &p.payload, p.qos, p.pkid, &p.attributes, false),
                "round trip ({version:?}) through {encoded:02x?}"
            );
        }
        other => panic!("re-encoded {p:?} ({version:?}) decodes as {other:?}: {encoded:02x?}"),
    }
}

/// Virtual time between steps, by bits 4-6 of a step's first schedule
/// byte: none, a little, past a short keep-alive, past the CONNECT
/// timeout, past any keep-alive (65,535 s × 1.5).
const LOCAL_TICKS: [Duration; 8] = [
    Duration::ZERO,
    Duration::ZERO,
    Duration::from_millis(10),
    Duration::from_millis(700),
    Duration::from_secs(2),
    Duration::from_secs(11),
    Duration::from_secs(100),
    Duration::from_secs(100_000),
];

/// An answer the loop owes the machine.
#[derive(Debug)]
enum LocalAnswer {
    Published(u16),
    SubAck(u16, Vec<u8>),
    UnsubAck(u16, Vec<u8>),
}

/// Walks the machine's output packet by packet as it appears (nothing is
/// kept but the fixed header and the first body bytes of the packet at
/// hand): whole packets, of the types a server sends, CONNACK first and
/// once, nothing after a refusing CONNACK or a DISCONNECT.
#[derive(Debug, Default)]
struct OutputWalk {
    /// The fixed header so far, then up to 2 body bytes.
    head: Vec<u8>,
    /// The length of the fixed header in `head`, once whole.
    header: usize,
    /// Body bytes of the current packet still to come.
    left: Option<usize>,
    packets: usize,
    connack: Option<u8>,
    last: bool,
}

impl OutputWalk {
    fn feed(&mut self, mut bytes: &[u8]) {
        while let Some((&b, rest)) = bytes.split_first() {
            match self.left {
                None => {
                    self.head.push(b);
                    bytes = rest;
                    if let Some(len) = packet_length(&self.head) {
                        self.header = self.head.len();
                        self.left = Some(len - self.header);
                        self.start();
                    } else {
                        assert!(self.head.len() < 5, "a remaining length over 4 bytes");
                    }
                }
                Some(left) => {
                    let n = left.min(bytes.len());
                    let keep = n.min((self.header + 2).saturating_sub(self.head.len()));
                    self.head.extend_from_slice(&bytes[..keep]);
                    bytes = &bytes[n..];
                    self.left = Some(left - n);
                }
            }
            if self.left == Some(0) {
                self.finish();
            }
        }
    }

    /// A packet's fixed header is whole.
    fn start(&mut self) {
        let byte1 = self.head[0];
        assert!(!self.last, "{byte1:#04x} after the last packet");
        if self.packets == 0 {
            assert_eq!(byte1, 0x20, "the first packet out is not a CONNACK");
        } else {
            assert!(
                matches!(byte1, 0x30..=0x33 | 0x40 | 0x90 | 0xB0 | 0xD0 | 0xE0),
                "{byte1:#04x}: not a packet a server sends after CONNACK (or DUP, or QoS 2)"
            );
        }
        self.packets += 1;
    }

    fn finish(&mut self) {
        let byte1 = self.head[0];
        let body = &self.head[self.header..];
        match byte1 {
            0x20 => {
                assert!(body.len() >= 2, "a CONNACK of {} bytes", body.len());
                let code = body[1];
                self.connack = Some(code);
                self.last = code != 0;
            }
            0xE0 => self.last = true,
            _ => {}
        }
        self.head.clear();
        self.left = None;
    }

    fn whole(&self) -> bool {
        self.head.is_empty() && self.left.is_none()
    }
}

/// What the checks know of one machine, from its actions and output.
struct LocalWatch {
    now: Instant,
    connected: bool,
    closed: bool,
    /// Output bytes already walked (still in `pending_output`).
    seen: usize,
    walk: OutputWalk,
    /// Bytes fed so far: the output allowed grows with them.
    input: usize,
    answers: VecDeque<LocalAnswer>,
    trace: bool,
    stats: LocalStats,
}

/// How far a `local_client` run got (for the seeds' test).
#[derive(Debug, Default, Clone)]
pub struct LocalStats {
    pub connected: bool,
    pub publishes: usize,
    pub subscribes: usize,
    pub unsubscribes: usize,
    /// Deliveries by outcome: taken, dropped, too large, gone.
    pub delivered: [usize; 4],
    /// Why the machine closed, whether it was normal, whether a will went.
    pub closed: Option<(String, bool, bool)>,
    /// The CONNACK's code, if any, and the packets written.
    pub connack: Option<u8>,
    pub packets_out: usize,
    /// Steps the machine did not want input at.
    pub held_input: usize,
    /// Packets left undecoded at the end (see `local_liveness`).
    pub stalled: bool,
}

impl LocalWatch {
    /// After every call on the machine: its actions and its new output.
    fn after(&mut self, c: &mut Client, what: &str) {
        let closed_before = self.closed;
        while let Some(action) = c.poll_action() {
            if self.trace {
                eprintln!("{what}: {}", short(&action));
            }
            assert!(!self.closed, "{action:?} after Closed ({what})");
            match action {
                Action::Connected { client_id } => {
                    assert!(!self.connected, "a second Connected ({what})");
                    assert!(!client_id.is_empty() && !client_id.contains('\0'));
                    self.connected = true;
                    self.stats.connected = true;
                }
                Action::Publish {
                    topic, qos, pkid, ..
                } => {
                    assert!(self.connected, "Publish before Connected ({what})");
                    assert_topic_name(&topic, "Publish topic");
                    self.stats.publishes += 1;
                    match qos {
                        QoS::AtMostOnce => assert_eq!(pkid, 0),
                        QoS::AtLeastOnce => {
                            assert_ne!(pkid, 0);
                            self.answers.push_back(LocalAnswer::Published(pkid));
                        }
                        QoS::ExactlyOnce => panic!("a QoS 2 Publish ({what})"),
                    }
                }
                Action::Subscribe {
                    pkid,
                    subscriptions,
                    ..
                } => {
                    assert!(self.connected, "Subscribe before Connected ({what})");
                    assert!(pkid != 0 && !subscriptions.is_empty());
                    self.stats.subscribes += 1;
                    // The daemon grants up to QoS 1 and no shared
                    // subscriptions.
                    let codes = subscriptions
                        .iter()
                        .map(|s| match s.filter.starts_with("$share/") {
                            true => local_codec::reason::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
                            false => s.qos.min(1),
                        })
                        .collect();
                    self.answers.push_back(LocalAnswer::SubAck(pkid, codes));
                }
                Action::Unsubscribe { pkid, filters } => {
                    assert!(self.connected, "Unsubscribe before Connected ({what})");
                    assert!(pkid != 0 && !filters.is_empty());
                    self.stats.unsubscribes += 1;
                    let codes = filters
                        .iter()
                        .map(|f| match f.len() % 2 {
                            0 => local_codec::reason::SUCCESS,
                            _ => local_codec::reason::NO_SUBSCRIPTION_EXISTED,
                        })
                        .collect();
                    self.answers.push_back(LocalAnswer::UnsubAck(pkid, codes));
                }
                Action::Closed { will, why, normal } => {
                    assert!(!why.is_empty());
                    assert!(
                        will.is_none() || self.connected,
                        "a will from a client never connected"
                    );
                    if let Some(w) = &will {
                        assert_topic_name(&w.topic, "will topic");
                        assert!(w.qos <= 1, "a QoS {} will", w.qos);
                    }
                    self.stats.closed = Some((why, normal, will.is_some()));
                    self.closed = true;
                }
            }
        }
        assert_eq!(c.is_closed(), self.closed, "is_closed vs Closed ({what})");
        if self.closed {
            assert!(!c.wants_input(), "wants input after Closed ({what})");
            assert_eq!(c.poll_timeout(), None, "a deadline after Closed ({what})");
        }
        let out = c.pending_output();
        assert!(out.len() >= self.seen, "output shrank by itself ({what})");
        let new = &out[self.seen..];
        assert!(
            !closed_before || new.is_empty(),
            "{} bytes of output after Closed ({what})",
            new.len()
        );
        self.walk.feed(new);
        assert!(
            self.walk.whole(),
            "output ends in a partial packet ({what})"
        );
        self.seen = out.len();
        self.stats.connack = self.walk.connack;
        self.stats.packets_out = self.walk.packets;
        let bound = 2 * local::OUTPUT_LIMIT + 4 * self.input;
        assert!(
            out.len() <= bound,
            "{} bytes of output waiting, over {bound} ({what})",
            out.len()
        );
        assert_eq!(
            self.walk.connack == Some(0),
            self.connected,
            "a CONNACK of success iff Connected ({what})"
        );
    }

    /// Answers what the loop owes, as the daemon does (newest first when
    /// `reverse`: the loop's answers need not come in order).
    fn answer(&mut self, c: &mut Client, reverse: bool) {
        while let Some(a) = match reverse {
            true => self.answers.pop_back(),
            false => self.answers.pop_front(),
        } {
            match &a {
                LocalAnswer::Published(pkid) => {
                    c.published(*pkid, 0);
                    // As the daemon does: what waited for the receive
                    // maximum is decoded now.
                    c.resume(self.now);
                }
                LocalAnswer::SubAck(pkid, codes) => c.suback(*pkid, codes),
                LocalAnswer::UnsubAck(pkid, codes) => c.unsuback(*pkid, codes),
            }
            self.after(c, &format!("{a:?}"));
        }
    }

    fn advance(&mut self, c: &mut Client, n: usize) {
        c.advance_output(n);
        self.seen -= n.min(self.seen);
        self.after(c, "advance_output");
    }
}

static LOCAL_BIG: [u8; 40_000] = [0x5A; 40_000];

/// Deliveries: a small payload, a large one (a few fill the output limit).
fn local_delivery(c: &mut Client, w: &mut LocalWatch, s: u8) {
    let kind = s & 3;
    if kind == 0 {
        return;
    }
    let topic = bytes::Bytes::from_static(b"a/b");
    let payload = match kind {
        3 => bytes::Bytes::from_static(&LOCAL_BIG),
        _ => bytes::Bytes::from_static(b"hi"),
    };
    let qos = match kind {
        1 => QoS::AtMostOnce,
        2 => QoS::AtLeastOnce,
        _ if s & 0x80 != 0 => QoS::AtLeastOnce,
        _ => QoS::AtMostOnce,
    };
    let variant = (s >> 5) & 3;
    let attributes = iotbox::daemon::codec::Attributes {
        retain: variant & 1 != 0,
        content_type: (variant & 1 != 0).then(|| "text/plain".into()),
        user_properties: match variant & 1 {
            0 => vec![],
            _ => vec![("k".into(), "v".into())],
        },
        ..Default::default()
    };
    let ids: &[u32] = match variant & 2 {
        0 => &[],
        _ => &[1, 300],
    };
    let was_connected = w.connected && !w.closed;
    let got = c.deliver(&topic, &payload, qos, Some(&attributes), ids);
    w.after(
        c,
        &format!("deliver {qos:?} of {} bytes: {got:?}", payload.len()),
    );
    w.stats.delivered[got as usize] += 1;
    match got {
        Delivered::Taken => assert!(was_connected && !w.closed),
        Delivered::Dropped => assert!(was_connected && qos == QoS::AtMostOnce && !w.closed),
        Delivered::TooLarge => assert!(was_connected && !w.closed),
        Delivered::Gone => assert!(!was_connected || w.closed, "Gone, yet connected"),
    }
}

/// Once the loop has answered everything and the client sends nothing
/// more, the machine must not be sitting on packets it could decode: the
/// loop reads again only when the socket has bytes (`read_unread`), so
/// those packets would wait for the client's next one, forever if it waits
/// for their answers. Probed with an empty `handle_input`, which the loop
/// never makes.
fn local_liveness(c: &mut Client, w: &mut LocalWatch) {
    if w.closed || !c.wants_input() {
        return;
    }
    let output = c.pending_output().len();
    c.handle_input(w.now, &[]);
    let woke = c.has_actions() || c.pending_output().len() != output;
    w.after(c, "input of no bytes (probe)");
    if woke {
        w.stats.stalled = true;
        panic!(
            "whole packets left undecoded once every answer was given: the loop reads no more, the client waits"
        );
    }
}

/// [`check_local_client`]'s run of the client machine, saying how far it
/// got (all zero for an input too short to say anything).
pub fn run_local_client(data: &[u8]) -> LocalStats {
    match LocalInput::read(data) {
        Some(input) => local_client_machine(&input),
        None => LocalStats::default(),
    }
}

fn local_client_machine(input: &LocalInput) -> LocalStats {
    let start = Instant::now();
    let mut c = Client::new(start, input.max, 7);
    let mut w = LocalWatch {
        now: start,
        connected: false,
        closed: false,
        seen: 0,
        walk: OutputWalk::default(),
        input: 0,
        answers: VecDeque::new(),
        trace: std::env::var_os("IOTBOX_FUZZ_TRACE").is_some(),
        stats: LocalStats::default(),
    };
    let mut rest = input.stream;
    let mut tail = input.schedule.len() / 2;
    // Bounded: every step takes a byte of the stream or of the tail.
    for step in 0.. {
        let (s1, s2) = (input.at(2 * step), input.at(2 * step + 1));
        if rest.is_empty() || w.closed {
            if tail == 0 {
                break;
            }
            tail -= 1;
        }
        if !rest.is_empty() {
            if w.closed {
                // The daemon reads no more; what does come is ignored.
                c.handle_input(w.now, rest);
                w.after(&mut c, "input after Closed");
                rest = &[];
            } else if !c.wants_input() {
                // At its receive maximum: the loop reads no more until it
                // has answered.
                w.stats.held_input += 1;
                w.answer(&mut c, s1 & 0x80 != 0);
                // (What the answers let it decode may have ended it.)
                assert!(
                    c.wants_input() || w.closed,
                    "every answer given, yet no input wanted"
                );
            } else {
                let n = match input.schedule.len() {
                    0 => usize::MAX,
                    _ => LOCAL_CHUNKS[usize::from(s1 & 0x0F)],
                };
                let (chunk, after) = rest.split_at(n.min(rest.len()));
                w.input += chunk.len();
                c.handle_input(w.now, chunk);
                w.after(&mut c, &format!("input of {} bytes", chunk.len()));
                rest = after;
            }
        }
        w.now += LOCAL_TICKS[usize::from((s1 >> 4) & 7)];
        c.handle_timeout(w.now);
        w.after(&mut c, "timeout");
        // Answers held make the machine stop reading at its receive
        // maximum (above).
        if s2 & 0x10 == 0 {
            w.answer(&mut c, s1 & 0x80 != 0);
            assert_eq!(
                c.wants_input(),
                !w.closed,
                "every answer given, yet no input wanted"
            );
        }
        local_delivery(&mut c, &mut w, s2);
        let pending = c.pending_output().len();
        match (s2 >> 2) & 3 {
            0 => {}
            1 => w.advance(&mut c, 1 + usize::from(s1 % 7)),
            2 => w.advance(&mut c, pending / 2),
            _ => w.advance(&mut c, pending),
        }
        if s2 >= 0xF0 {
            c.close(
                local_codec::reason::SESSION_TAKEN_OVER,
                "another connection took its client id",
                s1 & 1 != 0,
            );
            w.after(&mut c, "close");
        }
    }
    // The end: the loop answers, writes, and the socket ends.
    w.answer(&mut c, false);
    local_liveness(&mut c, &mut w);
    c.handle_eof("end of the input");
    w.after(&mut c, "eof");
    assert!(w.closed, "not closed at the end");
    assert_eq!(
        c.deliver(
            &bytes::Bytes::from_static(b"a/b"),
            &bytes::Bytes::new(),
            QoS::AtMostOnce,
            None,
            &[],
        ),
        Delivered::Gone
    );
    w.after(&mut c, "deliver after the end");
    let left = c.pending_output().len();
    w.advance(&mut c, left);
    assert!(c.pending_output().is_empty());
    w.stats
}
