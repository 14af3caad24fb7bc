//! One local MQTT client, sans-IO: bytes in, packets and actions out.
//!
//! The machine speaks the server's half of MQTT 3.1.1 and 5 for one
//! connection: it waits for CONNECT (within [`CONNECT_TIMEOUT`]), answers
//! it, watches the keep-alive, turns PUBLISH, SUBSCRIBE and UNSUBSCRIBE
//! into [`Action`]s for the event loop, and writes what the loop hands back:
//! acknowledgements once the loop has decided, and deliveries. The loop
//! owns the decisions that span clients (routing, the spool, the broker);
//! this file owns the protocol of one.
//!
//! Flow control, both ways, without unbounded memory:
//! - in: at most [`RECEIVE_MAXIMUM`] QoS 1 publishes wait for their PUBACK
//!   (told to a 5 client in CONNACK); past that the machine stops wanting
//!   input ([`Client::wants_input`]) and the kernel holds the rest, which is
//!   also how a 3.1.1 client, which has no receive maximum, is paced;
//! - out: QoS 1 deliveries beyond the client's own receive maximum wait in
//!   a queue; output and queue together are bounded by [`OUTPUT_LIMIT`].
//!   Past it a QoS 0 delivery is dropped for this client only, and a QoS 1
//!   delivery ends the connection: a client that does not take its
//!   messages never slows the others or the broker link.

use crate::daemon::codec::server::{
    self, ConnAckProperties, Connect, Packet, Publish, Refusal, Subscription, Version, Will, reason,
};
use crate::daemon::codec::{Attributes, QoS};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A connection must send CONNECT within this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// QoS 1 publishes from one client waiting for their PUBACK (for the
/// spool's sync): the receive maximum told to a 5 client.
pub const RECEIVE_MAXIMUM: u16 = 128;

/// Bytes of deliveries one client may have waiting (written but not taken
/// by the socket, or queued for its receive maximum).
pub const OUTPUT_LIMIT: usize = 512 * 1024;

/// What the event loop must act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// CONNECT accepted (CONNACK queued): `client_id` as used, assigned
    /// when the client sent none.
    Connected { client_id: String },
    /// A message to publish upstream. QoS 1 (`pkid` not 0) waits for
    /// [`Client::published`]; QoS 0 needs no answer.
    Publish {
        topic: String,
        payload: Bytes,
        qos: QoS,
        pkid: u16,
        attributes: Attributes,
    },
    /// Answer with [`Client::suback`], one code per subscription.
    Subscribe {
        pkid: u16,
        subscriptions: Vec<Subscription>,
        id: Option<u32>,
    },
    /// Answer with [`Client::unsuback`], one code per filter.
    Unsubscribe { pkid: u16, filters: Vec<String> },
    /// The connection is over (the machine wants no more input; its last
    /// output, if any, is a DISCONNECT saying why). `will`: to publish
    /// upstream, the client vanished without a normal DISCONNECT.
    /// `normal`: the client said goodbye with DISCONNECT (nothing to log).
    Closed {
        will: Option<Will>,
        why: String,
        normal: bool,
    },
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Written or queued for the client.
    Taken,
    /// QoS 0, no room: dropped for this client.
    Dropped,
    /// Larger than the client's maximum packet size: not sent (MQTT 5
    /// 3.1.2.11: the server discards it).
    TooLarge,
    /// The connection is over (or was ended now, the client being too slow).
    Gone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Connected,
    Closed,
}

/// A QoS 1 delivery waiting for room in the client's receive maximum.
#[derive(Debug)]
struct Queued {
    topic: Bytes,
    payload: Bytes,
    attributes: Option<Box<Attributes>>,
    ids: Vec<u32>,
}

impl Queued {
    fn size(&self) -> usize {
        self.topic.len() + self.payload.len() + 16
    }
}

#[derive(Debug)]
pub struct Client {
    number: u64,
    state: State,
    /// A CONNECT was decoded: its version is known.
    connect_read: bool,
    /// The client ended with DISCONNECT.
    said_goodbye: bool,
    version: Version,
    /// Largest packet taken from the client (told to a 5 client).
    max_inbound: usize,
    /// The client's own maximum packet size.
    max_outbound: usize,
    inbuf: BytesMut,
    out: BytesMut,
    actions: VecDeque<Action>,
    will: Option<Will>,
    /// Seconds; 0: none.
    keep_alive: u16,
    /// The CONNECT deadline, then the keep-alive's.
    deadline: Option<Instant>,
    /// QoS 1 publishes from the client waiting for [`Client::published`].
    unacknowledged: usize,
    /// The client's receive maximum, and our QoS 1 deliveries it has not
    /// acknowledged yet (packet ids).
    window: usize,
    inflight: VecDeque<u16>,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    next_pkid: u16,
}

impl Client {
    /// A new connection; `max_inbound` bounds the packets it may send;
    /// `number` (unique in this run) names it if it sends no client id.
    pub fn new(now: Instant, max_inbound: usize, number: u64) -> Client {
        Client {
            number,
            state: State::Connecting,
            connect_read: false,
            said_goodbye: false,
            version: Version::V5,
            max_inbound,
            max_outbound: usize::MAX,
            inbuf: BytesMut::new(),
            out: BytesMut::new(),
            actions: VecDeque::new(),
            will: None,
            keep_alive: 0,
            deadline: Some(now + CONNECT_TIMEOUT),
            unacknowledged: 0,
            window: usize::from(u16::MAX),
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            next_pkid: 0,
        }
    }

    // ----- getters -----

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether to read more from the client: not while a receive maximum
    /// of its publishes waits for their PUBACKs, nor once closed.
    pub fn wants_input(&self) -> bool {
        self.state != State::Closed && self.unacknowledged < usize::from(RECEIVE_MAXIMUM)
    }

    pub fn pending_output(&self) -> &[u8] {
        &self.out
    }

    pub fn advance_output(&mut self, n: usize) {
        let _ = self.out.split_to(n.min(self.out.len()));
    }

    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline.filter(|_| self.state != State::Closed)
    }

    // ----- input -----

    /// Bytes from the client.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        self.inbuf.extend_from_slice(bytes);
        while self.state != State::Closed && self.wants_input() {
            let decoded = match self.state {
                State::Connecting => {
                    server::decode_connect(&mut self.inbuf, self.max_inbound).map(|c| c.map(Err))
                }
                _ => server::decode(&mut self.inbuf, self.version, self.max_inbound)
                    .map(|p| p.map(Ok)),
            };
            match decoded {
                Ok(None) => break,
                Ok(Some(Err(connect))) => self.on_connect(now, connect),
                Ok(Some(Ok(packet))) => {
                    self.rearm_keep_alive(now);
                    self.on_packet(packet);
                }
                Err(refusal) => self.refuse(refusal),
            }
        }
    }

    /// Decodes what is buffered, once the machine wants input again (after
    /// [`Client::published`]): a client that sent all it had before the
    /// receive maximum stopped the decoding sends nothing more to wake it.
    pub fn resume(&mut self, now: Instant) {
        if self.wants_input() && !self.inbuf.is_empty() {
            self.handle_input(now, &[]);
        }
    }

    /// The client's socket reached its end (or failed).
    pub fn handle_eof(&mut self, why: &str) {
        self.end(why.to_owned(), true);
    }

    /// Runs an expired deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_none_or(|at| at > now) {
            return;
        }
        self.deadline = None;
        match self.state {
            State::Connecting => self.end(
                format!(
                    "no CONNECT within {} s of connecting",
                    CONNECT_TIMEOUT.as_secs()
                ),
                false,
            ),
            State::Connected => {
                server::encode_disconnect(&mut self.out, self.version, reason::KEEP_ALIVE_TIMEOUT);
                self.end(
                    format!(
                        "silent for 1.5 times its keep-alive of {} s",
                        self.keep_alive
                    ),
                    true,
                );
            }
            State::Closed => {}
        }
    }

    // ----- answers from the loop -----

    /// The client's QoS 1 publish `pkid` is durable (`code` 0) or refused.
    pub fn published(&mut self, pkid: u16, code: u8) {
        if self.state != State::Connected || self.unacknowledged == 0 {
            return;
        }
        self.unacknowledged -= 1;
        server::encode_puback(&mut self.out, self.version, pkid, code);
    }

    pub fn suback(&mut self, pkid: u16, codes: &[u8]) {
        if self.state == State::Connected {
            server::encode_suback(&mut self.out, self.version, pkid, codes);
        }
    }

    pub fn unsuback(&mut self, pkid: u16, codes: &[u8]) {
        if self.state == State::Connected {
            server::encode_unsuback(&mut self.out, self.version, pkid, codes);
        }
    }

    /// A message for this client at `qos` (already the lower of the
    /// message's and the subscription's).
    pub fn deliver(
        &mut self,
        topic: &Bytes,
        payload: &Bytes,
        qos: QoS,
        attributes: Option<&Attributes>,
        ids: &[u32],
    ) -> Delivered {
        if self.state != State::Connected {
            return Delivered::Gone;
        }
        let Ok(name) = std::str::from_utf8(topic) else {
            return Delivered::Dropped; // the broker side checked it: cannot happen
        };
        let plain = Attributes::default();
        let attrs = attributes.unwrap_or(&plain);
        let size = server::publish_size(self.version, name, payload, qos, attrs, ids);
        if size > self.max_outbound {
            return Delivered::TooLarge;
        }
        if self.out.len() + self.queued_bytes + size > OUTPUT_LIMIT {
            if qos == QoS::AtMostOnce {
                return Delivered::Dropped;
            }
            server::encode_disconnect(&mut self.out, self.version, reason::QUOTA_EXCEEDED);
            self.end(
                format!(
                    "does not take its messages: {} bytes wait for it",
                    self.out.len() + self.queued_bytes
                ),
                true,
            );
            return Delivered::Gone;
        }
        if qos == QoS::AtMostOnce {
            server::encode_publish(
                &mut self.out,
                self.version,
                name,
                payload,
                qos,
                0,
                attrs,
                ids,
            );
            return Delivered::Taken;
        }
        let queued = Queued {
            topic: topic.clone(),
            payload: payload.clone(),
            attributes: attributes.map(|a| Box::new(a.clone())),
            ids: ids.to_vec(),
        };
        self.queued_bytes += queued.size();
        self.queue.push_back(queued);
        self.send_queued();
        Delivered::Taken
    }

    /// Ends the connection from the daemon's side (shutting down, or
    /// another connection took the client id): DISCONNECT with `code` to a
    /// 5 client. `will`: whether the will still goes (MQTT does send it on
    /// a take-over).
    pub fn close(&mut self, code: u8, why: &str, will: bool) {
        if self.state == State::Connected {
            server::encode_disconnect(&mut self.out, self.version, code);
        }
        self.end(why.to_owned(), will);
    }

    // ----- internals -----

    fn on_connect(&mut self, now: Instant, connect: Connect) {
        self.version = connect.version;
        self.connect_read = true;
        if connect.auth_method.is_some() {
            return self.refuse(Refusal {
                code: reason::BAD_AUTHENTICATION_METHOD,
                why: "asked for enhanced authentication, which this endpoint does not do".into(),
            });
        }
        if let Some(will) = &connect.will {
            if will.qos > 1 {
                return self.refuse(Refusal {
                    code: reason::QOS_NOT_SUPPORTED,
                    why: "a will of QoS 2 (the maximum is 1)".into(),
                });
            }
        }
        let mut client_id = connect.client_id;
        let assigned = client_id.is_empty();
        if assigned {
            if connect.version == Version::V311 && !connect.clean_start {
                return self.refuse(Refusal {
                    code: reason::CLIENT_ID_NOT_VALID,
                    why: "an empty client id with a persistent session".into(),
                });
            }
            client_id = format!("iotbox-assigned-{}", self.number);
        }
        self.will = connect.will;
        self.keep_alive = connect.keep_alive;
        self.window = usize::from(connect.receive_maximum.max(1));
        self.max_outbound = connect.max_packet.map_or(usize::MAX, |m| m as usize);
        let properties = ConnAckProperties {
            assigned_client_id: assigned.then(|| client_id.clone()),
            // Clean sessions only: a client that asked for one to be kept
            // hears that it is not.
            session_expiry: (connect.session_expiry > 0).then_some(0),
            receive_maximum: RECEIVE_MAXIMUM,
            max_packet: u32::try_from(self.max_inbound).unwrap_or(u32::MAX),
            server_keep_alive: None,
            reason_string: None,
        };
        let v5 = connect.version == Version::V5;
        server::encode_connack(
            &mut self.out,
            connect.version,
            reason::SUCCESS,
            v5.then_some(&properties),
        );
        self.state = State::Connected;
        self.rearm_keep_alive(now);
        self.actions.push_back(Action::Connected { client_id });
    }

    fn on_packet(&mut self, packet: Packet) {
        match packet {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck { pkid, .. } => {
                if let Some(i) = self.inflight.iter().position(|id| *id == pkid) {
                    self.inflight.remove(i);
                    self.send_queued();
                }
            }
            Packet::Subscribe {
                pkid,
                subscriptions,
                id,
            } => self.actions.push_back(Action::Subscribe {
                pkid,
                subscriptions,
                id,
            }),
            Packet::Unsubscribe { pkid, filters } => self
                .actions
                .push_back(Action::Unsubscribe { pkid, filters }),
            Packet::PingReq => server::encode_pingresp(&mut self.out),
            Packet::Disconnect { reason } => {
                // 0x04: "disconnect with will message".
                let will = reason == 0x04;
                self.said_goodbye = true;
                self.end(format!("disconnected (0x{reason:02X})"), will);
            }
        }
    }

    fn on_publish(&mut self, p: Publish) {
        let qos = match p.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => {
                server::encode_disconnect(&mut self.out, self.version, reason::QOS_NOT_SUPPORTED);
                return self.end(
                    "sent a QoS 2 PUBLISH (AWS IoT has no QoS 2; the maximum is 1)".into(),
                    true,
                );
            }
        };
        if qos == QoS::AtLeastOnce {
            self.unacknowledged += 1;
        }
        self.actions.push_back(Action::Publish {
            topic: p.topic,
            payload: p.payload,
            qos,
            pkid: p.pkid,
            attributes: p.attributes,
        });
    }

    /// Input that cannot be taken: CONNACK with the code before CONNECT was
    /// accepted (3.1.1: only for the codes it has), else DISCONNECT (5).
    fn refuse(&mut self, refusal: Refusal) {
        match self.state {
            // A protocol we do not speak: the 3.1.1 form, which every
            // version reads (MQTT 5 3.1.2.2).
            State::Connecting if refusal.code == reason::UNSUPPORTED_PROTOCOL_VERSION => {
                server::encode_connack(&mut self.out, Version::V311, refusal.code, None);
            }
            // A CONNECT that could not be decoded: its version is not
            // known, so no CONNACK (MQTT allows closing).
            State::Connecting if !self.connect_read => {}
            State::Connecting => {
                server::encode_connack(&mut self.out, self.version, refusal.code, None);
            }
            State::Connected => {
                server::encode_disconnect(&mut self.out, self.version, refusal.code);
            }
            State::Closed => return,
        }
        let will = self.state == State::Connected;
        self.end(refusal.why, will);
    }

    /// The connection is over: `Closed`, with the will unless `will` is
    /// false. No more input is taken.
    fn end(&mut self, why: String, will: bool) {
        if self.state == State::Closed {
            return;
        }
        let was_connected = self.state == State::Connected;
        self.state = State::Closed;
        self.deadline = None;
        self.queue.clear();
        self.queued_bytes = 0;
        let will = self.will.take().filter(|_| will && was_connected);
        let normal = std::mem::take(&mut self.said_goodbye);
        self.actions.push_back(Action::Closed { will, why, normal });
    }

    /// MQTT: the server ends a connection silent for one and a half times
    /// the keep-alive.
    fn rearm_keep_alive(&mut self, now: Instant) {
        self.deadline = (self.keep_alive > 0)
            .then(|| now + Duration::from_millis(u64::from(self.keep_alive) * 1500));
    }

    /// QoS 1 deliveries move from the queue to the output while the
    /// client's receive maximum has room.
    fn send_queued(&mut self) {
        while self.inflight.len() < self.window {
            let Some(q) = self.queue.pop_front() else {
                return;
            };
            self.queued_bytes -= q.size();
            let pkid = self.next_packet_id();
            let plain = Attributes::default();
            let name = std::str::from_utf8(&q.topic).unwrap_or_default();
            server::encode_publish(
                &mut self.out,
                self.version,
                name,
                &q.payload,
                QoS::AtLeastOnce,
                pkid,
                q.attributes.as_deref().unwrap_or(&plain),
                &q.ids,
            );
            self.inflight.push_back(pkid);
        }
    }

    /// A packet id not in flight, never 0.
    fn next_packet_id(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::codec::put_varint;

    fn packet(byte1: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![byte1];
        put_varint(&mut out, body.len());
        out.extend_from_slice(body);
        out
    }

    fn string(s: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    }

    /// CONNECT, clean start; `props` only for 5; a will on `w/t` if asked.
    fn connect(version: Version, id: &str, keep_alive: u16, props: &[u8], will: bool) -> Vec<u8> {
        let mut body = Vec::new();
        string(b"MQTT", &mut body);
        body.push(if version == Version::V5 { 5 } else { 4 });
        body.push(0x02 | if will { 0x04 | 0x08 } else { 0 }); // will QoS 1
        body.extend_from_slice(&keep_alive.to_be_bytes());
        if version == Version::V5 {
            put_varint(&mut body, props.len());
            body.extend_from_slice(props);
        }
        string(id.as_bytes(), &mut body);
        if will {
            if version == Version::V5 {
                body.push(0);
            }
            string(b"w/t", &mut body);
            string(b"gone", &mut body);
        }
        packet(0x10, &body)
    }

    fn publish(version: Version, topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        string(topic.as_bytes(), &mut body);
        if qos > 0 {
            body.extend_from_slice(&pkid.to_be_bytes());
        }
        if version == Version::V5 {
            body.push(0);
        }
        body.extend_from_slice(payload);
        packet(0x30 | (qos << 1), &body)
    }

    fn connected(version: Version, props: &[u8], will: bool) -> (Client, Instant) {
        let t0 = Instant::now();
        let mut c = Client::new(t0, 1 << 20, 7);
        c.handle_input(t0, &connect(version, "dev", 60, props, will));
        assert!(matches!(c.poll_action(), Some(Action::Connected { .. })));
        assert_eq!(c.pending_output()[0], 0x20, "CONNACK first");
        let n = c.pending_output().len();
        c.advance_output(n);
        (c, t0)
    }

    fn closed(c: &mut Client) -> (Option<Will>, String) {
        match c.poll_action() {
            Some(Action::Closed { will, why, .. }) => (will, why),
            other => panic!("expected Closed, got {other:?}"),
        }
    }

    #[test]
    fn a_connection_that_never_sends_connect_is_closed_at_the_deadline() {
        let t0 = Instant::now();
        let mut c = Client::new(t0, 1 << 20, 1);
        assert_eq!(c.poll_timeout(), Some(t0 + CONNECT_TIMEOUT));
        c.handle_timeout(t0 + CONNECT_TIMEOUT - Duration::from_millis(1));
        assert!(c.poll_action().is_none());
        c.handle_timeout(t0 + CONNECT_TIMEOUT);
        let (will, why) = closed(&mut c);
        assert!(will.is_none());
        assert!(why.contains("no CONNECT"), "{why}");
        assert!(c.pending_output().is_empty());
        assert!(c.is_closed() && !c.wants_input());
    }

    #[test]
    fn both_versions_connect_and_an_empty_client_id_is_assigned() {
        for version in [Version::V311, Version::V5] {
            let t0 = Instant::now();
            let mut c = Client::new(t0, 1 << 20, 42);
            c.handle_input(t0, &connect(version, "", 30, &[], false));
            assert_eq!(
                c.poll_action(),
                Some(Action::Connected {
                    client_id: "iotbox-assigned-42".into()
                })
            );
            assert_eq!(c.version(), version);
            let out = c.pending_output();
            assert_eq!(out[0], 0x20);
            if version == Version::V311 {
                assert_eq!(out, [0x20, 0x02, 0x00, 0x00]);
            } else {
                // The assigned id travels in the CONNACK's properties.
                let text = String::from_utf8_lossy(out);
                assert!(text.contains("iotbox-assigned-42"), "{out:?}");
            }
            // Keep-alive 30 s: closed after 45 s of silence.
            assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(45)));
        }
    }

    #[test]
    fn a_3_1_1_client_with_an_empty_id_and_a_kept_session_is_refused() {
        let t0 = Instant::now();
        let mut c = Client::new(t0, 1 << 20, 1);
        let mut bytes = connect(Version::V311, "", 30, &[], false);
        bytes[9] = 0x00; // clean session 0
        c.handle_input(t0, &bytes);
        assert_eq!(c.pending_output(), [0x20, 0x02, 0x00, 0x02]);
        assert!(matches!(
            c.poll_action(),
            Some(Action::Closed { will: None, .. })
        ));
    }

    #[test]
    fn silence_past_one_and_a_half_keep_alives_ends_it_with_the_will() {
        let (mut c, t0) = connected(Version::V5, &[], true);
        c.handle_input(t0 + Duration::from_secs(80), &[0xC0, 0x00]);
        assert_eq!(c.pending_output(), [0xD0, 0x00], "PINGRESP");
        c.handle_timeout(t0 + Duration::from_secs(80 + 89));
        assert!(c.poll_action().is_none());
        c.handle_timeout(t0 + Duration::from_secs(80 + 90));
        let (will, why) = closed(&mut c);
        assert_eq!(will.map(|w| w.topic), Some("w/t".to_owned()));
        assert!(why.contains("keep-alive"), "{why}");
        assert!(
            c.pending_output()
                .ends_with(&[0xE0, 0x01, reason::KEEP_ALIVE_TIMEOUT])
        );
    }

    #[test]
    fn publishes_are_actions_and_a_receive_maximum_of_them_stops_the_reading() {
        let (mut c, t0) = connected(Version::V5, &[], false);
        let mut bytes = Vec::new();
        for i in 1..=RECEIVE_MAXIMUM + 5 {
            bytes.extend(publish(Version::V5, "a/b", 1, i, b"x"));
        }
        c.handle_input(t0, &bytes);
        let mut pkids = Vec::new();
        while let Some(Action::Publish { pkid, qos, .. }) = c.poll_action() {
            assert_eq!(qos, QoS::AtLeastOnce);
            pkids.push(pkid);
        }
        assert_eq!(pkids.len(), usize::from(RECEIVE_MAXIMUM));
        assert!(!c.wants_input(), "reading stops at the receive maximum");
        c.published(1, reason::SUCCESS);
        assert_eq!(c.pending_output(), [0x40, 0x02, 0x00, 0x01]);
        assert!(c.wants_input());
        // The rest was kept, and is decoded once the receive maximum has
        // room, with no more input (the client may have sent everything).
        c.resume(t0);
        assert!(matches!(
            c.poll_action(),
            Some(Action::Publish { pkid: 129, .. })
        ));
    }

    #[test]
    fn qos_2_publishes_are_refused_by_version() {
        let (mut c, t0) = connected(Version::V5, &[], true);
        c.handle_input(t0, &publish(Version::V5, "a", 2, 1, b"x"));
        let (will, why) = closed(&mut c);
        assert!(will.is_some(), "a refused client's will still goes");
        assert!(why.contains("QoS 2"), "{why}");
        assert_eq!(c.pending_output(), [0xE0, 0x01, reason::QOS_NOT_SUPPORTED]);

        let (mut c, t0) = connected(Version::V311, &[], false);
        c.handle_input(t0, &publish(Version::V311, "a", 2, 1, b"x"));
        closed(&mut c);
        assert!(
            c.pending_output().is_empty(),
            "3.1.1: closed without a word"
        );
    }

    #[test]
    fn disconnect_normal_drops_the_will_and_with_will_or_eof_sends_it() {
        let (mut c, t0) = connected(Version::V5, &[], true);
        c.handle_input(t0, &[0xE0, 0x00]);
        assert!(closed(&mut c).0.is_none());
        let (mut c, t0) = connected(Version::V5, &[], true);
        c.handle_input(t0, &[0xE0, 0x01, 0x04]);
        assert!(closed(&mut c).0.is_some());
        let (mut c, _) = connected(Version::V311, &[], true);
        c.handle_eof("closed the connection");
        assert!(closed(&mut c).0.is_some());
        // Taken over: the will goes (MQTT), with DISCONNECT 0x8E to a 5 client.
        let (mut c, _) = connected(Version::V5, &[], true);
        c.close(reason::SESSION_TAKEN_OVER, "taken over", true);
        assert!(closed(&mut c).0.is_some());
        assert_eq!(c.pending_output(), [0xE0, 0x01, 0x8E]);
    }

    #[test]
    fn qos_1_deliveries_wait_for_the_clients_receive_maximum() {
        // Receive Maximum 2 (property 0x21).
        let (mut c, t0) = connected(Version::V5, &[0x21, 0x00, 0x02], false);
        let topic = Bytes::from_static(b"a/b");
        let payload = Bytes::from_static(b"x");
        for _ in 0..3 {
            assert_eq!(
                c.deliver(&topic, &payload, QoS::AtLeastOnce, None, &[]),
                Delivered::Taken
            );
        }
        let publishes = |c: &Client| c.pending_output().iter().filter(|b| **b == 0x32).count();
        let sent = c.pending_output().len();
        assert_eq!(publishes(&c), 2, "two in flight");
        c.advance_output(sent);
        c.handle_input(t0, &[0x40, 0x02, 0x00, 0x01]);
        assert_eq!(
            c.pending_output()[0],
            0x32,
            "the third goes once one is acknowledged"
        );
        // Packet id 3, the one not in flight.
        assert_eq!(&c.pending_output()[7..9], &[0x00, 0x03]);
    }

    #[test]
    fn a_client_that_does_not_read_loses_qos_0_and_then_its_connection() {
        let (mut c, _) = connected(Version::V311, &[], true);
        let topic = Bytes::from_static(b"a/b");
        let payload = Bytes::from(vec![0u8; 64 * 1024]);
        let mut taken = 0;
        while c.deliver(&topic, &payload, QoS::AtMostOnce, None, &[]) == Delivered::Taken {
            taken += 1;
        }
        assert_eq!(taken, OUTPUT_LIMIT / (64 * 1024) - 1);
        assert!(
            c.poll_action().is_none(),
            "QoS 0 is dropped, the client stays"
        );
        assert_eq!(
            c.deliver(&topic, &payload, QoS::AtLeastOnce, None, &[]),
            Delivered::Gone
        );
        let (will, why) = closed(&mut c);
        assert!(will.is_some());
        assert!(why.contains("does not take its messages"), "{why}");
        assert_eq!(
            c.deliver(&topic, &payload, QoS::AtMostOnce, None, &[]),
            Delivered::Gone
        );
    }

    #[test]
    fn a_delivery_larger_than_the_clients_maximum_packet_is_not_sent() {
        // Maximum Packet Size 100 (property 0x27).
        let (mut c, _) = connected(Version::V5, &[0x27, 0, 0, 0, 100], false);
        let topic = Bytes::from_static(b"a/b");
        let big = Bytes::from(vec![0u8; 200]);
        assert_eq!(
            c.deliver(&topic, &big, QoS::AtMostOnce, None, &[]),
            Delivered::TooLarge
        );
        assert!(c.pending_output().is_empty());
        let small = Bytes::from_static(b"ok");
        assert_eq!(
            c.deliver(&topic, &small, QoS::AtMostOnce, None, &[]),
            Delivered::Taken
        );
    }

    #[test]
    fn subscribe_and_unsubscribe_become_actions_and_their_answers_go_out() {
        let (mut c, t0) = connected(Version::V311, &[], false);
        // c7's SUBSCRIBE: a/# QoS 1, b/+ QoS 0.
        let sub = [
            0x82, 0x0e, 0x00, 0x02, 0x00, 0x03, b'a', b'/', b'#', 0x01, 0x00, 0x03, b'b', b'/',
            b'+', 0x00,
        ];
        c.handle_input(t0, &sub);
        let Some(Action::Subscribe {
            pkid,
            subscriptions,
            ..
        }) = c.poll_action()
        else {
            panic!("no Subscribe");
        };
        assert_eq!(pkid, 2);
        assert_eq!(subscriptions.len(), 2);
        c.suback(pkid, &[0x01, 0x97]);
        assert_eq!(c.pending_output(), [0x90, 0x04, 0x00, 0x02, 0x01, 0x80]);
        let n = c.pending_output().len();
        c.advance_output(n);
        c.handle_input(t0, &[0xA2, 0x07, 0x00, 0x03, 0x00, 0x03, b'a', b'/', b'#']);
        assert_eq!(
            c.poll_action(),
            Some(Action::Unsubscribe {
                pkid: 3,
                filters: vec!["a/#".into()]
            })
        );
        c.unsuback(3, &[0x00]);
        assert_eq!(c.pending_output(), [0xB0, 0x02, 0x00, 0x03]);
    }

    #[test]
    fn garbage_ends_the_connection_without_a_panic() {
        let t0 = Instant::now();
        let mut c = Client::new(t0, 1 << 20, 1);
        c.handle_input(t0, b"GET / HTTP/1.1\r\n\r\n");
        closed(&mut c);
        assert!(
            c.pending_output().is_empty(),
            "no CONNACK for what is not MQTT"
        );
        // MQTT 3.1 (MQIsdp, level 3): "unacceptable protocol version" in
        // the form every version reads.
        let mut c = Client::new(t0, 1 << 20, 1);
        let mut body = Vec::new();
        string(b"MQIsdp", &mut body);
        body.extend_from_slice(&[3, 0x02, 0, 60]);
        string(b"old", &mut body);
        c.handle_input(t0, &packet(0x10, &body));
        closed(&mut c);
        assert_eq!(c.pending_output(), [0x20, 0x02, 0x00, 0x01]);
        let (mut c, t0) = connected(Version::V5, &[], true);
        c.handle_input(t0, &[0x10, 0x00]); // a second CONNECT
        let (will, _) = closed(&mut c);
        assert!(will.is_some());
        assert!(c.pending_output().starts_with(&[0xE0]));
    }
}
