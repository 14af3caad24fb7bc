//! The MQTT 5 session as a sans-IO state machine.
//!
//! [`Session`] never touches a socket and never reads the clock. The event
//! loop drives it with four kinds of calls, in the style of quinn-proto's
//! `Connection`:
//!
//! - getters on `&self` ([`Session::is_active`], [`Session::is_settled`], ...);
//! - `handle_*` for input: the transport came up ([`Session::handle_connected`]),
//!   bytes arrived ([`Session::handle_input`]), it went down
//!   ([`Session::handle_transport_lost`]), or a deadline passed
//!   ([`Session::handle_timeout`]);
//! - commands: [`Session::publish`], [`Session::close`];
//! - `poll_*` for output, drained after every input or command:
//!   [`Session::pending_output`] / [`Session::advance_output`] (bytes for the
//!   transport), [`Session::poll_timeout`] (when to call `handle_timeout`
//!   next) and [`Session::poll_event`] (until `None`).
//!
//! Every `now` must be monotonic. A lost connection is an
//! [`Event::ConnectionLost`], never an `Err`; after it the session is idle
//! until the event loop reports a new transport with `handle_connected`.
//! When the broker broke the protocol, the output then holds only a
//! DISCONNECT with the reason code: the caller sends it, best effort,
//! before closing. The caller reads from the broker only while
//! [`Session::wants_input`]: the output is bounded, and so is what the
//! broker can make the session hold ([`RECEIVE_MAXIMUM`],
//! [`MAX_INBOUND_PACKET`]).
//!
//! What survives a lost connection: QoS 1 publishes not yet acknowledged
//! (sent again with DUP when the broker resumed the session, as new
//! otherwise) and publishes waiting for a connection, in order.

use super::rate::RateLimit;
use crate::daemon::codec::{self, Attributes, Inbound, QoS};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Opaque id the caller gives each publish, returned in its outcome event.
pub type RequestId = u64;

/// The CONNACK must arrive this long after the transport came up. It covers
/// the TLS handshake too: CONNECT is queued before the handshake ends.
pub const CONNACK_TIMEOUT: Duration = Duration::from_secs(20);

/// Largest packet we accept from the broker (told in CONNECT). AWS IoT's
/// messages are at most 128 KiB; this leaves room for other brokers while
/// bounding what one packet can make us buffer.
pub const MAX_INBOUND_PACKET: usize = 1 << 20;

/// QoS 1 messages the broker may send before it has our PUBACKs (told in
/// CONNECT). A message is acknowledged once the caller has it safe
/// ([`Session::acknowledge`]); the caller bounds what waits for that (it
/// pauses reading while a turn's messages wait for their sync, and calls
/// [`Session::exceeded_receive_maximum`] when a broker sends far more than
/// this while none can be kept). PUBACKs the broker did not read yet are
/// the other half: see [`FLOOD_THRESHOLD`].
pub const RECEIVE_MAXIMUM: u16 = 100;

/// Our PUBACKs still in our output (the broker does not read them) at which
/// the broker's flood is a protocol error (0x93): twice
/// [`RECEIVE_MAXIMUM`]. Real brokers overshoot by one now and then
/// (mosquitto 2.0 does); one that floods without reading overshoots without
/// bound. The margin tells the two apart without dropping the connection of
/// the first.
pub const FLOOD_THRESHOLD: usize = 2 * RECEIVE_MAXIMUM as usize;

/// Past this much output waiting for the transport, the caller stops
/// reading from the broker ([`Session::wants_input`]) until it drains:
/// nothing the broker sends can make the output grow without bound.
pub const OUTPUT_LIMIT: usize = 4 * OUTPUT_HIGH_WATER;

/// AWS IoT Core takes at most 8 filters per SUBSCRIBE.
pub const FILTERS_PER_SUBSCRIBE: usize = 8;

/// Publishes move from the queue into the output only while it holds less
/// than this: a slow link backs up into the bounded queue (and `ERR queue
/// full`), not into unbounded output.
pub const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// Settings that do not change for the life of the daemon.
#[derive(Debug, Clone)]
pub struct Config {
    pub client_id: String,
    /// Seconds; 0 turns keep-alive off.
    pub keep_alive: u16,
    /// Seconds the broker keeps the session after a disconnect; 0 = none.
    pub session_expiry: u32,
    pub filters: Vec<String>,
    /// QoS of subscriptions and of publishes.
    pub qos: QoS,
    /// Largest payload accepted by [`Session::publish`].
    pub max_payload: usize,
    /// Publishes that may wait for a connection (count, total payload bytes).
    pub queue_messages: usize,
    pub queue_bytes: usize,
    /// Publishes per second to the broker; 0 = no limit.
    pub max_rate: u32,
}

/// What happened, for the event loop to act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// CONNACK accepted; `client_id` is the broker-assigned one if any.
    Connected {
        client_id: String,
        session_present: bool,
    },
    /// Every filter is subscribed (or the resumed session still has them).
    Subscribed,
    /// The broker refused the connection in its CONNACK.
    ConnectRefused { reason: String },
    /// The broker refused a subscription in its SUBACK.
    SubscribeRefused { filter: String, reason: String },
    /// The broker has the publish (PUBACK, or written for QoS 0).
    Published(RequestId),
    /// The publish will never be sent; `reason` is for the `ERR` reply.
    PublishFailed(RequestId, String),
    /// The session closed with this publish sent but not acknowledged: the
    /// broker may or may not have it.
    Unconfirmed(RequestId),
    /// The session closed before this publish was sent.
    Unsent(RequestId),
    /// A message arrived on a subscription. A QoS 1 one carries the
    /// acknowledgement to give ([`Session::acknowledge`]) once it is safe.
    Message {
        topic: Bytes,
        payload: Bytes,
        /// Retain and properties, when the message has any.
        attributes: Option<Box<Attributes>>,
        ack: Option<InboundAck>,
    },
    /// The broker's answer for a filter of [`Session::subscribe`]: `Ok`
    /// with the granted QoS, or the refusal's reason code and words.
    SubscribeResult {
        filter: String,
        result: Result<(), (u8, String)>,
    },
    /// The connection is gone; drop the transport and reconnect later.
    ConnectionLost {
        reason: String,
        /// The broker said another client connected with our client id.
        taken_over: bool,
        /// A CONNACK had been accepted on this connection.
        was_connected: bool,
    },
}

/// The PUBACK owed for a QoS 1 message from the broker: valid only on the
/// connection that brought it (after a reconnect, the broker sends it again
/// if it kept the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundAck {
    connection: u64,
    pkid: u16,
}

/// Why [`Session::publish`] refused a message at once.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    TooLarge { size: usize, max: usize },
    QueueFull { messages: usize },
    Closed,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::TooLarge { size, max } => {
                write!(f, "payload is {size} bytes; the limit is {max}")
            }
            Rejected::QueueFull { messages } => write!(
                f,
                "queue full: {messages} messages wait for the broker; try again later"
            ),
            Rejected::Closed => write!(f, "the daemon is shutting down"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No transport.
    Idle,
    /// CONNECT queued, waiting for CONNACK.
    Connecting,
    /// CONNACK accepted.
    Connected,
    /// DISCONNECT queued by [`Session::close`]; nothing more is produced.
    Closed,
}

/// The deadlines the session keeps; the earliest is `poll_timeout`.
#[derive(Debug, Clone, Copy)]
enum Timer {
    ConnAck = 0,
    PingResp = 1,
    KeepAlive = 2,
    /// The rate limit lets the next publish go.
    Rate = 3,
    /// Part of a packet arrived and then nothing more.
    Partial = 4,
}

/// Expired timers run in this order: a missing PINGRESP is judged before a
/// keep-alive due at the same instant could push it back.
const TIMERS: [Timer; 5] = [
    Timer::ConnAck,
    Timer::PingResp,
    Timer::Partial,
    Timer::KeepAlive,
    Timer::Rate,
];

/// A publish on its way: waiting, or sent and not yet acknowledged.
#[derive(Debug)]
struct Outgoing {
    id: RequestId,
    topic: Bytes,
    payload: Bytes,
    /// Retain and properties, for a message from a local MQTT client.
    attributes: Option<Box<Attributes>>,
    /// 0 until sent at QoS 1.
    pkid: u16,
}

/// A SUBSCRIBE waiting for its SUBACK.
#[derive(Debug)]
struct Subscribing {
    pkid: u16,
    filters: Vec<String>,
    /// `config.filters` (their outcome is `Subscribed`/`SubscribeRefused`)
    /// or local ones (`SubscribeResult`).
    fixed: bool,
}

/// Limits the broker set in its CONNACK.
#[derive(Debug, Clone, Copy)]
struct Limits {
    receive_maximum: usize,
    max_packet: usize,
    max_qos: QoS,
    keep_alive: u16,
}

/// See the module documentation for the calling contract.
#[derive(Debug)]
pub struct Session {
    config: Config,
    state: State,
    limits: Limits,
    out: BytesMut,
    inbuf: BytesMut,
    timers: [Option<Instant>; 5],
    events: VecDeque<Event>,
    /// `--max_rate`; `None` for no limit.
    rate: Option<RateLimit>,
    /// Waiting to be sent, in order.
    pending: VecDeque<Outgoing>,
    pending_bytes: usize,
    /// Sent at QoS 1, waiting for PUBACK, in send order. The first
    /// `on_wire` were sent on this connection; the rest, from an earlier
    /// one, wait for the receive maximum to let them go again (with DUP).
    inflight: VecDeque<Outgoing>,
    on_wire: usize,
    /// QoS 0 publishes in `out`, with the output offset where each ends:
    /// confirmed once the transport has taken them, queued again if the
    /// connection is lost first.
    qos0_in_output: VecDeque<(u64, Outgoing)>,
    /// Bytes the transport took from `out` on this connection.
    consumed: u64,
    /// PUBACKs for the broker still in `out`: the output offset where each
    /// ends (see [`RECEIVE_MAXIMUM`]).
    acks_in_output: VecDeque<u64>,
    /// QoS 1 messages from the broker handed out and not yet acknowledged.
    unacknowledged: usize,
    /// Counts transports, so that an acknowledgement never reaches another
    /// connection than the one its message came on.
    connection: u64,
    /// When something was last sent and received (the keep-alive watches
    /// both: silence from the broker is how a dead link shows).
    last_sent: Option<Instant>,
    last_received: Option<Instant>,
    /// SUBSCRIBE packet ids and their filters, waiting for SUBACK.
    subscribing: Vec<Subscribing>,
    /// Filters subscribed for local clients (the event loop's routing
    /// decides which), beyond `config.filters`: subscribed again on every
    /// new session.
    local_filters: Vec<String>,
    /// Local filters given up while a kept session could not hear it: sent
    /// as UNSUBSCRIBE on the next connection.
    unsubscribe_later: Vec<String>,
    /// `local_filters` changed while not connected: a kept session does not
    /// have the new ones.
    local_changed: bool,
    /// UNSUBSCRIBE packet ids waiting for UNSUBACK (their ids stay busy).
    unsubscribing: Vec<u16>,
    /// A filter was refused since the last subscribe: no `Subscribed`.
    subscribe_refused: bool,
    /// Every SUBSCRIBE of the last round was acknowledged: a resumed
    /// session has them all.
    subscriptions_confirmed: bool,
    next_pkid: u16,
    /// A CONNACK was accepted at least once (later connects resume).
    ever_connected: bool,
}

impl Session {
    pub fn new(config: Config) -> Session {
        let limits = Limits::unknown(&config);
        let rate = RateLimit::new(config.max_rate);
        Session {
            config,
            state: State::Idle,
            limits,
            out: BytesMut::new(),
            inbuf: BytesMut::new(),
            timers: [None; 5],
            events: VecDeque::new(),
            rate,
            pending: VecDeque::new(),
            pending_bytes: 0,
            inflight: VecDeque::new(),
            on_wire: 0,
            qos0_in_output: VecDeque::new(),
            consumed: 0,
            acks_in_output: VecDeque::new(),
            unacknowledged: 0,
            connection: 0,
            last_sent: None,
            last_received: None,
            subscribing: Vec::new(),
            local_filters: Vec::new(),
            unsubscribe_later: Vec::new(),
            local_changed: false,
            unsubscribing: Vec::new(),
            subscribe_refused: false,
            subscriptions_confirmed: false,
            next_pkid: 0,
            ever_connected: false,
        }
    }

    // ----- getters -----

    /// CONNACK accepted and the connection still up.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// A transport is attached (CONNECT sent or CONNACK accepted).
    pub fn is_active(&self) -> bool {
        matches!(self.state, State::Connecting | State::Connected)
    }

    /// Nothing waits to be sent or acknowledged.
    pub fn is_settled(&self) -> bool {
        self.pending.is_empty() && self.on_the_way_settled()
    }

    /// Nothing sent (or being sent) waits for its acknowledgement; what was
    /// never sent may still wait.
    pub fn on_the_way_settled(&self) -> bool {
        self.inflight.is_empty() && self.qos0_in_output.is_empty()
    }

    /// Whether [`Session::publish`] takes a payload of `len` bytes now: the
    /// queue of publishes waiting to be sent is bounded (`queue_messages`,
    /// `queue_bytes`); the caller holds the rest.
    pub fn has_room(&self, len: usize) -> bool {
        self.pending.len() < self.config.queue_messages
            && (self.pending.is_empty() || self.pending_bytes + len <= self.config.queue_bytes)
    }

    /// The largest payload accepted now: the flag, lowered by the broker's
    /// maximum packet size once known.
    pub fn max_payload(&self) -> usize {
        self.config.max_payload.min(self.limits.max_packet)
    }

    // ----- input -----

    /// The transport is up (TCP connected; TLS may still be handshaking):
    /// queues CONNECT and starts the CONNACK deadline.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        self.reset_connection();
        self.state = State::Connecting;
        let clean_start = !self.ever_connected || self.config.session_expiry == 0;
        codec::encode_connect(
            &mut self.out,
            &self.config.client_id,
            self.config.keep_alive,
            clean_start,
            self.config.session_expiry,
            MAX_INBOUND_PACKET as u32,
            RECEIVE_MAXIMUM,
        );
        self.set(Timer::ConnAck, Some(now + CONNACK_TIMEOUT));
    }

    /// Bytes from the broker (plaintext, after TLS). Call only while
    /// [`Session::wants_input`].
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        if matches!(self.state, State::Idle | State::Closed) {
            return;
        }
        self.inbuf.extend_from_slice(bytes);
        while matches!(self.state, State::Connecting | State::Connected) {
            match codec::decode(&mut self.inbuf, MAX_INBOUND_PACKET) {
                Ok(Some(packet)) => {
                    self.received(now);
                    self.handle_packet(now, packet);
                }
                Ok(None) => break,
                Err(e) => {
                    let code = e.reason_code();
                    self.lose_with(code, e.to_string());
                    return;
                }
            }
        }
        // Part of a packet waits for the rest: it must keep coming. Each
        // arrival of bytes restarts the wait, so a slow link is fine; a
        // broker that stopped mid-packet is a dead link, found in
        // keep-alive/2 instead of after the next ping.
        let waiting =
            !self.inbuf.is_empty() && matches!(self.state, State::Connecting | State::Connected);
        let at = (waiting && self.limits.keep_alive > 0 && !bytes.is_empty())
            .then(|| now + self.half_keep_alive());
        if !waiting || at.is_some() {
            self.set(Timer::Partial, at);
        }
    }

    /// Whether the caller may read more from the broker now: not while the
    /// output is past [`OUTPUT_LIMIT`] (see there).
    pub fn wants_input(&self) -> bool {
        self.out.len() < OUTPUT_LIMIT
    }

    /// The transport failed or closed. Emits `ConnectionLost` unless the
    /// session already ended the connection itself.
    pub fn handle_transport_lost(&mut self, reason: String) {
        match self.state {
            State::Connecting | State::Connected => self.lose(reason, false),
            State::Idle | State::Closed => {}
        }
    }

    /// Runs the expired deadlines. Extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in TIMERS {
            if self.timers[timer as usize].is_some_and(|at| at <= now) {
                self.timers[timer as usize] = None;
                self.on_timer(now, timer);
            }
        }
    }

    // ----- commands -----

    /// Queues a publish of `payload` to `topic` (validated by the caller).
    /// Its outcome comes later as `Published(id)` or `PublishFailed(id, _)`.
    pub fn publish(
        &mut self,
        now: Instant,
        id: RequestId,
        topic: Bytes,
        payload: Bytes,
        attributes: Option<Box<Attributes>>,
    ) -> Result<(), Rejected> {
        if self.state == State::Closed {
            return Err(Rejected::Closed);
        }
        let max = self.max_payload();
        if payload.len() > max {
            return Err(Rejected::TooLarge {
                size: payload.len(),
                max,
            });
        }
        if !self.has_room(payload.len()) {
            return Err(Rejected::QueueFull {
                messages: self.pending.len(),
            });
        }
        self.pending_bytes += payload.len();
        self.pending.push_back(Outgoing {
            id,
            topic,
            payload,
            attributes,
            pkid: 0,
        });
        self.check_pending_bytes();
        self.send_pending(now);
        Ok(())
    }

    /// Ends the session: queues DISCONNECT when connected, and reports every
    /// publish not yet acknowledged (`Unconfirmed` or `Unsent`). Nothing is
    /// produced afterwards.
    pub fn close(&mut self) {
        if self.state == State::Closed {
            return; // once is enough: a second call must not drop the DISCONNECT
        }
        let connected = self.state == State::Connected;
        if connected {
            // After whatever is still in the output: those go out first.
            codec::encode_disconnect(&mut self.out);
        } else {
            self.out.clear();
        }
        // Sent, or in the output ahead of the DISCONNECT: the broker may
        // have them.
        let mut maybe_sent: Vec<_> = self.inflight.drain(..).collect();
        if connected {
            maybe_sent.extend(self.qos0_in_output.drain(..).map(|(_, o)| o));
        }
        for o in maybe_sent {
            self.events.push_back(Event::Unconfirmed(o.id));
        }
        let never_sent: Vec<_> = self
            .qos0_in_output
            .drain(..)
            .map(|(_, o)| o)
            .chain(self.pending.drain(..))
            .collect();
        for o in never_sent {
            self.events.push_back(Event::Unsent(o.id));
        }
        self.pending_bytes = 0;
        self.on_wire = 0;
        self.timers = [None; 5];
        self.state = State::Closed;
    }

    /// The message that came with `ack` is safe (durable, or delivered):
    /// queues its PUBACK. One from an earlier connection is dropped (the
    /// broker sends that message again if it kept the session).
    pub fn acknowledge(&mut self, now: Instant, ack: InboundAck) {
        if ack.connection != self.connection || !self.is_active() || self.unacknowledged == 0 {
            return;
        }
        self.unacknowledged -= 1;
        codec::encode_puback(&mut self.out, ack.pkid);
        self.acks_in_output
            .push_back(self.consumed + self.out.len() as u64);
        self.sent(now);
    }

    /// The caller holds [`FLOOD_THRESHOLD`] messages it could not keep, so
    /// could not acknowledge: the broker sent far past our receive maximum.
    /// The connection is lost with DISCONNECT 0x93 (as for a broker that
    /// does not read our PUBACKs).
    pub fn exceeded_receive_maximum(&mut self) {
        if self.is_active() {
            self.lose_with(
                codec::DISCONNECT_RECEIVE_MAXIMUM,
                format!(
                    "the broker exceeded our receive maximum ({RECEIVE_MAXIMUM}): {FLOOD_THRESHOLD} QoS 1 messages unacknowledged while the spool could take none"
                ),
            );
        }
    }

    /// Subscribes to `filters` for local clients, now if connected and on
    /// every new session; the outcome of each comes as `SubscribeResult`
    /// (again after each new session).
    pub fn subscribe(&mut self, now: Instant, filters: &[String]) {
        let new: Vec<String> = filters
            .iter()
            .filter(|f| !self.local_filters.contains(f))
            .cloned()
            .collect();
        self.unsubscribe_later.retain(|f| !new.contains(f));
        self.local_filters.extend(new.iter().cloned());
        if self.state == State::Connected {
            self.send_subscribe(&new, false);
            self.sent(now);
        } else {
            self.local_changed = true;
        }
    }

    /// Gives up local filters of [`Session::subscribe`].
    pub fn unsubscribe(&mut self, now: Instant, filters: &[String]) {
        let gone: Vec<String> = filters
            .iter()
            .filter(|f| self.local_filters.contains(f))
            .cloned()
            .collect();
        self.local_filters.retain(|f| !gone.contains(f));
        if self.state == State::Connected {
            self.send_unsubscribe(&gone);
            self.sent(now);
        } else if self.config.session_expiry > 0 {
            // A kept session still has them: say so when back.
            self.unsubscribe_later.extend(gone);
        }
    }

    /// A kept session came back: it has the local filters of before the
    /// connection was lost, not those changed since.
    fn catch_up_local(&mut self, now: Instant) {
        if std::mem::take(&mut self.local_changed) {
            let local = self.local_filters.clone();
            self.send_subscribe(&local, false);
        }
        let gone = std::mem::take(&mut self.unsubscribe_later);
        self.send_unsubscribe(&gone);
        self.sent(now);
    }

    // ----- output -----

    /// Bytes to hand to the transport, oldest first. Call
    /// [`Session::advance_output`] with how many were taken.
    pub fn pending_output(&self) -> &[u8] {
        &self.out
    }

    ///
    /// QoS 0 publishes whose bytes were all taken are confirmed now, and
    /// more of the queue may move into the output.
    pub fn advance_output(&mut self, now: Instant, n: usize) {
        let n = n.min(self.out.len());
        let _ = self.out.split_to(n);
        self.consumed += n as u64;
        while self
            .acks_in_output
            .front()
            .is_some_and(|end| *end <= self.consumed)
        {
            self.acks_in_output.pop_front();
        }
        while self
            .qos0_in_output
            .front()
            .is_some_and(|(end, _)| *end <= self.consumed)
        {
            if let Some((_, o)) = self.qos0_in_output.pop_front() {
                self.events.push_back(Event::Published(o.id));
            }
        }
        if n > 0 {
            self.send_pending(now);
        }
    }

    /// When [`Session::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.iter().flatten().min().copied()
    }

    /// The next event; call until `None`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- internals -----

    fn set(&mut self, timer: Timer, at: Option<Instant>) {
        self.timers[timer as usize] = at;
    }

    /// Forgets everything tied to one connection.
    fn reset_connection(&mut self) {
        self.out.clear();
        self.consumed = 0;
        self.acks_in_output.clear();
        self.unacknowledged = 0;
        self.connection += 1;
        self.inbuf.clear();
        self.timers = [None; 5];
        // A kept session may lack a local filter whose SUBACK never came.
        self.local_changed |= self.subscribing.iter().any(|s| !s.fixed);
        self.subscribing.clear();
        self.unsubscribing.clear();
        self.limits = Limits::unknown(&self.config);
        self.on_wire = 0;
        self.last_sent = None;
        self.last_received = None;
        // QoS 0 publishes that never left: first in line again.
        while let Some((_, o)) = self.qos0_in_output.pop_back() {
            self.pending_bytes += o.payload.len();
            self.pending.push_front(o);
        }
    }

    fn lose(&mut self, reason: String, taken_over: bool) {
        let was_connected = self.state == State::Connected;
        self.reset_connection();
        self.state = State::Idle;
        self.events.push_back(Event::ConnectionLost {
            reason,
            taken_over,
            was_connected,
        });
    }

    /// The broker broke the protocol: the connection is lost, and the
    /// output holds only a DISCONNECT with `code` saying why, for the
    /// caller to send (best effort) before closing.
    fn lose_with(&mut self, code: u8, reason: String) {
        self.lose(reason, false);
        codec::encode_disconnect_with(&mut self.out, code);
    }

    fn half_keep_alive(&self) -> Duration {
        Duration::from_secs(u64::from(self.limits.keep_alive / 2).max(1))
    }

    /// Something was queued for the broker.
    fn sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
        self.rearm_keep_alive();
    }

    /// A packet arrived: the link is alive, whatever PINGREQ is pending.
    fn received(&mut self, now: Instant) {
        self.last_received = Some(now);
        self.set(Timer::PingResp, None);
        self.rearm_keep_alive();
    }

    /// A PINGREQ is due one keep-alive after the older of the last packet
    /// sent and the last received: the broker hears from us in time (MQTT's
    /// rule), and a broker that went silent is probed even while we keep
    /// publishing. Not armed while a PINGRESP is awaited.
    fn rearm_keep_alive(&mut self) {
        let keep_alive = self.limits.keep_alive;
        let waiting = self.timers[Timer::PingResp as usize].is_some();
        let base = match (self.last_sent, self.last_received) {
            (Some(s), Some(r)) => Some(s.min(r)),
            (one, other) => one.or(other),
        };
        let at = match base {
            Some(base) if keep_alive > 0 && self.state == State::Connected && !waiting => {
                Some(base + Duration::from_secs(keep_alive.into()))
            }
            _ => None,
        };
        self.set(Timer::KeepAlive, at);
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match (timer, self.state) {
            (Timer::ConnAck, State::Connecting) => self.lose(
                format!(
                    "no CONNACK within {} s of connecting",
                    CONNACK_TIMEOUT.as_secs()
                ),
                false,
            ),
            (Timer::KeepAlive, State::Connected) => {
                codec::encode_pingreq(&mut self.out);
                self.set(Timer::PingResp, Some(now + self.half_keep_alive()));
                self.sent(now);
            }
            (Timer::Rate, State::Connected) => self.send_pending(now),
            (Timer::PingResp, State::Connected) => self.lose(
                format!(
                    "no PINGRESP within {} s: the link is dead",
                    self.half_keep_alive().as_secs()
                ),
                false,
            ),
            // Paused by us (our output is full): no bytes is not the
            // broker's fault; wait again.
            (Timer::Partial, _) if !self.wants_input() => {
                self.set(Timer::Partial, Some(now + self.half_keep_alive()))
            }
            (Timer::Partial, State::Connecting | State::Connected) => self.lose(
                format!(
                    "the broker sent part of a packet ({} bytes) and then nothing for {} s: the link is dead",
                    self.inbuf.len(),
                    self.half_keep_alive().as_secs()
                ),
                false,
            ),
            _ => {}
        }
    }

    fn handle_packet(&mut self, now: Instant, packet: Inbound) {
        match (packet, self.state) {
            (Inbound::ConnAck(ack), State::Connecting) => self.on_connack(now, ack),
            (Inbound::Disconnect { reason, text }, _) => {
                let mut words = format!("{} (0x{reason:02X})", codec::reason_words(reason));
                if let Some(text) = text {
                    words = format!("{words}: {text}");
                }
                let taken_over = reason == 0x8E;
                if taken_over {
                    words = format!("{words}: another client connected with the same client id");
                }
                self.lose(words, taken_over);
            }
            (_, State::Connecting) => self.lose_with(
                codec::DISCONNECT_PROTOCOL_ERROR,
                "protocol error: the broker sent a packet before CONNACK".into(),
            ),
            (Inbound::ConnAck(_), _) => self.lose_with(
                codec::DISCONNECT_PROTOCOL_ERROR,
                "protocol error: the broker sent a second CONNACK".into(),
            ),
            (Inbound::Publish(p), _) => {
                let mut ack = None;
                if p.qos == QoS::AtLeastOnce {
                    if self.acks_in_output.len() >= FLOOD_THRESHOLD {
                        self.lose_with(
                            codec::DISCONNECT_RECEIVE_MAXIMUM,
                            format!(
                                "the broker exceeded our receive maximum ({RECEIVE_MAXIMUM}): {FLOOD_THRESHOLD} QoS 1 messages and more without reading our acknowledgements"
                            ),
                        );
                        return;
                    }
                    self.unacknowledged += 1;
                    ack = Some(InboundAck {
                        connection: self.connection,
                        pkid: p.pkid,
                    });
                }
                let attributes = Attributes::from_v5(p.retain, p.properties);
                self.events.push_back(Event::Message {
                    topic: p.topic,
                    payload: p.payload,
                    attributes: (!attributes.is_plain()).then(|| Box::new(attributes)),
                    ack,
                });
            }
            (Inbound::PubAck { pkid, reason }, _) => {
                let found = self.inflight.iter().position(|o| o.pkid == pkid);
                if let Some((i, done)) = found.and_then(|i| Some((i, self.inflight.remove(i)?))) {
                    if i < self.on_wire {
                        self.on_wire -= 1;
                    }
                    self.events.push_back(if codec::puback_ok(&reason) {
                        Event::Published(done.id)
                    } else {
                        Event::PublishFailed(done.id, codec::puback_words(&reason).into())
                    });
                    self.send_pending(now);
                } else {
                    log::debug!("PUBACK for unknown packet id {pkid}");
                }
            }
            (Inbound::UnsubAck { pkid }, _) => {
                self.unsubscribing.retain(|id| *id != pkid);
                self.send_pending(now);
            }
            (Inbound::SubAck(ack), _) => {
                self.on_suback(ack);
                // Its packet id is free again: a publish may wait for one.
                self.send_pending(now);
            }
            // `received` already cleared the PINGRESP wait.
            (Inbound::PingResp, _) => {}
        }
    }

    fn on_connack(&mut self, now: Instant, ack: rumqttc::v5::mqttbytes::v5::ConnAck) {
        self.set(Timer::ConnAck, None);
        if ack.code != codec::ConnectReturnCode::Success {
            let mut reason = codec::connack_words(&ack.code).to_owned();
            if let Some(text) = ack
                .properties
                .as_ref()
                .and_then(|p| p.reason_string.clone())
            {
                reason = format!("{reason}: {text}");
            }
            self.reset_connection();
            self.state = State::Idle;
            self.events.push_back(Event::ConnectRefused { reason });
            return;
        }
        let props = ack.properties.as_ref();
        self.limits = Limits {
            receive_maximum: props
                .and_then(|p| p.receive_max)
                .map_or(65_535, usize::from)
                .max(1),
            max_packet: props
                .and_then(|p| p.max_packet_size)
                .map_or(usize::MAX, |m| m as usize),
            max_qos: match props.and_then(|p| p.max_qos) {
                Some(0) => QoS::AtMostOnce,
                _ => QoS::AtLeastOnce,
            },
            keep_alive: props
                .and_then(|p| p.server_keep_alive)
                .unwrap_or(self.config.keep_alive),
        };
        if let Some(id) = props.and_then(|p| p.assigned_client_identifier.clone()) {
            self.config.client_id = id;
        }
        let resumed = ack.session_present && self.ever_connected;
        self.ever_connected = true;
        self.state = State::Connected;
        self.events.push_back(Event::Connected {
            client_id: self.config.client_id.clone(),
            session_present: ack.session_present,
        });
        self.sent(now);

        if resumed && self.subscriptions_confirmed {
            // The broker kept our subscriptions and knows these packet ids:
            // send_pending sends them again, with DUP, in their order, as
            // far as the (new) receive maximum allows.
            self.events.push_back(Event::Subscribed);
            self.catch_up_local(now);
        } else if resumed {
            // The session is kept, but a SUBACK never came: the broker may
            // not have that SUBSCRIBE. Subscribing again is harmless.
            self.subscribe_all(now);
        } else {
            // A new session: unacknowledged publishes go again as new,
            // ahead of those that never went out.
            while let Some(mut o) = self.inflight.pop_back() {
                o.pkid = 0;
                self.pending_bytes += o.payload.len();
                self.pending.push_front(o);
            }
            self.subscribe_all(now);
        }
        self.send_pending(now);
    }

    fn subscribe_all(&mut self, now: Instant) {
        self.subscribe_refused = false;
        self.subscriptions_confirmed = false;
        let fixed = self.config.filters.clone();
        self.send_subscribe(&fixed, true);
        let local = self.local_filters.clone();
        self.send_subscribe(&local, false);
        self.local_changed = false;
        self.unsubscribe_later.clear();
        self.sent(now);
        if !self.subscribing.iter().any(|s| s.fixed) {
            self.subscriptions_confirmed = true;
            self.events.push_back(Event::Subscribed);
        }
    }

    /// Queues SUBSCRIBEs for `filters`, at most
    /// [`FILTERS_PER_SUBSCRIBE`] a packet.
    fn send_subscribe(&mut self, filters: &[String], fixed: bool) {
        // A local client asks for QoS 1 (or 0); the daemon takes what it
        // can and each local subscription gets its own granted QoS.
        let qos = if fixed {
            self.effective_qos()
        } else {
            self.limits.max_qos
        };
        for chunk in filters.chunks(FILTERS_PER_SUBSCRIBE) {
            let pkid = self.next_packet_id();
            match codec::encode_subscribe(&mut self.out, pkid, chunk, qos) {
                Ok(()) => self.subscribing.push(Subscribing {
                    pkid,
                    filters: chunk.to_vec(),
                    fixed,
                }),
                Err(e) => log::warn!("cannot subscribe to {chunk:?}: {}", e.0),
            }
        }
    }

    /// Queues UNSUBSCRIBEs for `filters`.
    fn send_unsubscribe(&mut self, filters: &[String]) {
        for chunk in filters.chunks(FILTERS_PER_SUBSCRIBE) {
            let pkid = self.next_packet_id();
            match codec::encode_unsubscribe(&mut self.out, pkid, chunk) {
                Ok(()) => self.unsubscribing.push(pkid),
                Err(e) => log::warn!("cannot unsubscribe from {chunk:?}: {}", e.0),
            }
        }
    }

    /// One reason code per filter, in order (MQTT 5 3.9.3). Every refused
    /// filter is reported by name, every time; `Subscribed` comes only when
    /// the last SUBACK is in and nothing was refused.
    fn on_suback(&mut self, ack: rumqttc::v5::mqttbytes::v5::SubAck) {
        let Some(i) = self.subscribing.iter().position(|s| s.pkid == ack.pkid) else {
            log::debug!("SUBACK for unknown packet id {}", ack.pkid);
            return;
        };
        let Subscribing { filters, fixed, .. } = self.subscribing.swap_remove(i);
        if ack.return_codes.len() != filters.len() {
            self.lose_with(
                codec::DISCONNECT_PROTOCOL_ERROR,
                format!(
                    "protocol error: the broker's SUBACK has {} reason code(s) for {} filter(s)",
                    ack.return_codes.len(),
                    filters.len()
                ),
            );
            return;
        }
        let text = ack.properties.and_then(|p| p.reason_string);
        for (filter, code) in filters.into_iter().zip(&ack.return_codes) {
            let refusal = codec::suback_refusal(code).map(|reason| match &text {
                Some(text) => format!("{reason}: {text}"),
                None => reason.to_owned(),
            });
            if !fixed {
                let result = match refusal {
                    Some(reason) => Err((codec::suback_code(code), reason)),
                    None => Ok(()),
                };
                self.events
                    .push_back(Event::SubscribeResult { filter, result });
            } else if let Some(reason) = refusal {
                self.subscribe_refused = true;
                self.events
                    .push_back(Event::SubscribeRefused { filter, reason });
            }
        }
        if fixed && !self.subscribing.iter().any(|s| s.fixed) {
            self.subscriptions_confirmed = true;
            if !self.subscribe_refused {
                self.events.push_back(Event::Subscribed);
            }
        }
    }

    fn effective_qos(&self) -> QoS {
        if self.limits.max_qos == QoS::AtMostOnce {
            QoS::AtMostOnce
        } else {
            self.config.qos
        }
    }

    /// `pending_bytes` is the payload bytes in `pending`: checked in debug
    /// builds wherever either changes.
    fn check_pending_bytes(&self) {
        debug_assert_eq!(
            self.pending_bytes,
            self.pending.iter().map(|o| o.payload.len()).sum::<usize>(),
            "pending_bytes out of step with the queue"
        );
    }

    /// Sends what waits, oldest first: publishes of an earlier connection
    /// (with DUP), then the queue; as far as the broker's receive maximum
    /// and [`OUTPUT_HIGH_WATER`] allow.
    fn send_pending(&mut self, now: Instant) {
        if self.state != State::Connected {
            return;
        }
        let qos = self.effective_qos();
        let window = self.limits.receive_maximum;
        let mut wrote = false;
        while self.on_wire < self.inflight.len()
            && self.on_wire < window
            && self.out.len() < OUTPUT_HIGH_WATER
            && self.rate_allows(now)
        {
            let o = &self.inflight[self.on_wire];
            let encoded = codec::encode_publish(
                &mut self.out,
                &o.topic,
                &o.payload,
                QoS::AtLeastOnce,
                o.pkid,
                true,
                o.attributes.as_deref(),
            );
            if let Err(e) = encoded {
                log::warn!("cannot resend publish: {}", e.0);
            }
            self.on_wire += 1;
            wrote = true;
        }
        loop {
            // What can never be sent fails first, without using up the rate.
            self.fail_oversized_front(qos);
            let room = self.out.len() < OUTPUT_HIGH_WATER
                && (qos == QoS::AtMostOnce
                    || (self.on_wire < window
                        // A packet id is free: with all 65535 in use,
                        // next_packet_id would search forever.
                        && self.inflight.len() + self.subscribing.len() + self.unsubscribing.len()
                            < usize::from(u16::MAX)));
            if !room || self.pending.is_empty() || !self.rate_allows(now) {
                break;
            }
            let Some(mut o) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes -= o.payload.len();
            if qos == QoS::AtLeastOnce {
                o.pkid = self.next_packet_id();
            }
            let encoded = codec::encode_publish(
                &mut self.out,
                &o.topic,
                &o.payload,
                qos,
                o.pkid,
                false,
                o.attributes.as_deref(),
            );
            match encoded {
                Ok(()) if qos == QoS::AtLeastOnce => {
                    self.inflight.push_back(o);
                    self.on_wire = self.inflight.len();
                }
                Ok(()) => {
                    let end = self.consumed + self.out.len() as u64;
                    self.qos0_in_output.push_back((end, o));
                }
                Err(e) => self.events.push_back(Event::PublishFailed(o.id, e.0)),
            }
            wrote = true;
        }
        if wrote {
            self.sent(now);
        }
        self.check_pending_bytes();
    }

    /// Fails the publishes at the front of the queue that exceed the
    /// broker's maximum packet size: they can never be sent.
    fn fail_oversized_front(&mut self, qos: QoS) {
        while let Some(o) = self.pending.front() {
            let size = codec::publish_size(&o.topic, &o.payload, qos, o.attributes.as_deref());
            if size <= self.limits.max_packet {
                return;
            }
            let Some(o) = self.pending.pop_front() else {
                return;
            };
            self.pending_bytes -= o.payload.len();
            self.events.push_back(Event::PublishFailed(
                o.id,
                format!(
                    "packet of {size} bytes exceeds the broker's maximum packet size of {}",
                    self.limits.max_packet
                ),
            ));
        }
    }

    /// Takes one publish from the `--max_rate` budget; when it is spent,
    /// arms the timer for the next one and says no.
    fn rate_allows(&mut self, now: Instant) -> bool {
        let Some(rate) = &mut self.rate else {
            return true;
        };
        match rate.try_take(now) {
            Ok(()) => true,
            Err(at) => {
                self.set(Timer::Rate, Some(at));
                false
            }
        }
    }

    /// The next packet id not in use: never 0 (codec trap 2).
    fn next_packet_id(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            let id = self.next_pkid;
            let busy = self.inflight.iter().any(|o| o.pkid == id)
                || self.subscribing.iter().any(|s| s.pkid == id)
                || self.unsubscribing.contains(&id);
            if !busy {
                return id;
            }
        }
    }
}

impl Limits {
    /// Before CONNACK: nothing is sent, so only the keep-alive matters.
    fn unknown(config: &Config) -> Limits {
        Limits {
            receive_maximum: 65_535,
            max_packet: usize::MAX,
            max_qos: QoS::AtLeastOnce,
            keep_alive: config.keep_alive,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Tests in virtual time against a fake broker that speaks bytes.
    use super::*;
    use bytes::BufMut;
    use rumqttc::v5::mqttbytes::v5::{
        ConnAck, ConnAckProperties, ConnectReturnCode, Disconnect, DisconnectReasonCode, Packet,
        PubAck, Publish, SubAck, SubscribeReasonCode,
    };

    fn config(filters: &[&str]) -> Config {
        Config {
            client_id: "basicPubSub".into(),
            keep_alive: 60,
            session_expiry: 0,
            filters: filters.iter().map(|f| f.to_string()).collect(),
            qos: QoS::AtLeastOnce,
            max_payload: 131_072,
            queue_messages: 1000,
            queue_bytes: 1 << 20,
            max_rate: 0,
        }
    }

    /// The broker's side: decodes what the session sent.
    /// The transport takes everything, at the session's latest moment.
    fn sent_packets(s: &mut Session) -> Vec<Packet> {
        let now = s
            .last_sent
            .max(s.last_received)
            .unwrap_or_else(Instant::now);
        let mut buf = BytesMut::from(s.pending_output());
        s.advance_output(now, buf.len());
        let mut packets = Vec::new();
        while !buf.is_empty() {
            // rumqttc cannot decode the short DISCONNECT (codec trap 4).
            if buf[..] == [0xE0, 0x00] {
                let _ = buf.split_to(2);
                packets.push(Packet::Disconnect(Disconnect::new(
                    DisconnectReasonCode::NormalDisconnection,
                )));
                continue;
            }
            packets.push(Packet::read(&mut buf, None).expect("session sent a valid packet"));
        }
        packets
    }

    fn events(s: &mut Session) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn bytes_of(packet: Packet) -> Vec<u8> {
        let mut out = BytesMut::new();
        packet.write(&mut out, None).unwrap();
        out.to_vec()
    }

    fn connack(session_present: bool, props: Option<ConnAckProperties>) -> Vec<u8> {
        bytes_of(Packet::ConnAck(ConnAck {
            session_present,
            code: ConnectReturnCode::Success,
            properties: props,
        }))
    }

    fn props() -> ConnAckProperties {
        ConnAckProperties {
            session_expiry_interval: None,
            receive_max: None,
            max_qos: None,
            retain_available: None,
            max_packet_size: None,
            assigned_client_identifier: None,
            topic_alias_max: None,
            reason_string: None,
            user_properties: vec![],
            wildcard_subscription_available: None,
            subscription_identifiers_available: None,
            shared_subscription_available: None,
            server_keep_alive: None,
            response_information: None,
            server_reference: None,
            authentication_method: None,
            authentication_data: None,
        }
    }

    fn suback(pkid: u16, n: usize) -> Vec<u8> {
        bytes_of(Packet::SubAck(SubAck {
            pkid,
            return_codes: vec![SubscribeReasonCode::Success(QoS::AtLeastOnce); n],
            properties: None,
        }))
    }

    fn puback(pkid: u16) -> Vec<u8> {
        bytes_of(Packet::PubAck(PubAck::new(pkid, None)))
    }

    /// A new session whose CONNECT went out and was answered with a
    /// CONNACK carrying `props`; its SUBSCRIBEs wait in the output.
    fn acked(cfg: Config, props: Option<ConnAckProperties>) -> (Session, Instant) {
        let t0 = Instant::now();
        let mut s = Session::new(cfg);
        s.handle_connected(t0);
        let packets = sent_packets(&mut s);
        assert!(matches!(packets[..], [Packet::Connect(..)]));
        s.handle_input(t0, &connack(false, props));
        (s, t0)
    }

    /// Connects and subscribes; returns the session and the start time.
    fn connected(cfg: Config) -> (Session, Instant) {
        connected_with(cfg, None)
    }

    /// [`connected`] with CONNACK properties.
    fn connected_with(cfg: Config, props: Option<ConnAckProperties>) -> (Session, Instant) {
        let (mut s, t0) = acked(cfg, props);
        for p in sent_packets(&mut s) {
            if let Packet::Subscribe(sub) = p {
                s.handle_input(t0, &suback(sub.pkid, sub.filters.len()));
            }
        }
        let ev = events(&mut s);
        assert!(ev.contains(&Event::Subscribed), "{ev:?}");
        (s, t0)
    }

    fn publish(s: &mut Session, now: Instant, id: u64) {
        s.publish(
            now,
            id,
            Bytes::from_static(b"sdk/test/java"),
            Bytes::from(vec![b'x'; 10]),
            None,
        )
        .unwrap();
    }

    #[test]
    fn connect_subscribe_publish_ack() {
        let (mut s, t0) = connected(config(&["sdk/test/python"]));
        publish(&mut s, t0, 42);
        let packets = sent_packets(&mut s);
        let Packet::Publish(p) = &packets[0] else {
            panic!("{packets:?}")
        };
        assert_eq!(p.qos, QoS::AtLeastOnce);
        assert_ne!(p.pkid, 0);
        assert!(events(&mut s).is_empty(), "not published before PUBACK");
        s.handle_input(t0, &puback(p.pkid));
        assert_eq!(events(&mut s), vec![Event::Published(42)]);
        assert!(s.is_settled());
    }

    #[test]
    fn more_than_eight_filters_go_in_several_subscribes() {
        let filters: Vec<String> = (0..19).map(|i| format!("t/{i}")).collect();
        let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
        let (mut s, t0) = acked(config(&refs), None);
        let subs: Vec<_> = sent_packets(&mut s)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Subscribe(s) => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(
            subs.iter().map(|s| s.filters.len()).collect::<Vec<_>>(),
            vec![8, 8, 3]
        );
        // Subscribed only after the last SUBACK.
        s.handle_input(t0, &suback(subs[0].pkid, 8));
        s.handle_input(t0, &suback(subs[2].pkid, 3));
        assert!(!events(&mut s).contains(&Event::Subscribed));
        s.handle_input(t0, &suback(subs[1].pkid, 8));
        assert!(events(&mut s).contains(&Event::Subscribed));
    }

    #[test]
    fn refused_subscription_is_reported() {
        let (mut s, t0) = acked(config(&["a/b"]), None);
        let Packet::Subscribe(sub) = sent_packets(&mut s).remove(0) else {
            panic!()
        };
        s.handle_input(
            t0,
            &bytes_of(Packet::SubAck(SubAck {
                pkid: sub.pkid,
                return_codes: vec![SubscribeReasonCode::NotAuthorized],
                properties: None,
            })),
        );
        let ev = events(&mut s);
        assert!(
            matches!(&ev[1], Event::SubscribeRefused { filter, reason } if filter == "a/b" && reason.contains("not authorized")),
            "{ev:?}"
        );
    }

    /// The SUBSCRIBE / UNSUBSCRIBE packets the session sent, as
    /// `(pkid, filters, is_subscribe)`.
    fn subscriptions_sent(s: &mut Session) -> Vec<(u16, Vec<String>, bool)> {
        sent_packets(s)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Subscribe(sub) => Some((
                    sub.pkid,
                    sub.filters.into_iter().map(|f| f.path).collect(),
                    true,
                )),
                Packet::Unsubscribe(u) => Some((u.pkid, u.filters, false)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn local_filters_are_subscribed_reported_and_unsubscribed_apart_from_the_fixed_ones() {
        let (mut s, t0) = connected(config(&["fixed/t"]));
        s.subscribe(t0, &["a/#".to_owned(), "b".to_owned()]);
        let sent = subscriptions_sent(&mut s);
        assert_eq!(sent.len(), 1);
        let (pkid, filters, true) = sent[0].clone() else {
            panic!("{sent:?}")
        };
        assert_eq!(filters, ["a/#", "b"]);
        s.handle_input(
            t0,
            &bytes_of(Packet::SubAck(SubAck {
                pkid,
                return_codes: vec![
                    SubscribeReasonCode::Success(QoS::AtLeastOnce),
                    SubscribeReasonCode::QuotaExceeded,
                ],
                properties: None,
            })),
        );
        let ev = events(&mut s);
        assert_eq!(
            ev,
            [
                Event::SubscribeResult {
                    filter: "a/#".into(),
                    result: Ok(())
                },
                Event::SubscribeResult {
                    filter: "b".into(),
                    result: Err((0x97, "quota exceeded".into()))
                }
            ],
            "a local refusal is not the fixed filters' business"
        );
        s.unsubscribe(t0, &["a/#".to_owned(), "never".to_owned()]);
        let sent = subscriptions_sent(&mut s);
        assert_eq!(sent.len(), 1);
        assert_eq!((&sent[0].1, sent[0].2), (&vec!["a/#".to_owned()], false));
        // The UNSUBACK frees its packet id; nothing else happens.
        let [hi, lo] = sent[0].0.to_be_bytes();
        s.handle_input(t0, &[0xB0, 0x04, hi, lo, 0, 0]);
        assert!(events(&mut s).is_empty());
        assert!(s.unsubscribing.is_empty());
    }

    #[test]
    fn a_new_session_subscribes_the_local_filters_again_and_a_kept_one_catches_up() {
        let (mut s, t0) = connected(config(&["fixed/t"]));
        s.subscribe(t0, &["a/#".to_owned()]);
        subscriptions_sent(&mut s);
        s.handle_transport_lost("reset".into());
        events(&mut s);
        // While down: one more local filter.
        s.subscribe(t0, &["c".to_owned()]);
        s.handle_connected(t0);
        sent_packets(&mut s);
        s.handle_input(t0, &connack(false, None));
        let sent = subscriptions_sent(&mut s);
        let all: Vec<&String> = sent.iter().flat_map(|(_, f, _)| f).collect();
        assert_eq!(all, ["fixed/t", "a/#", "c"]);
        // The fixed filters' Subscribed does not wait for the local ones.
        let fixed_pkid = sent[0].0;
        s.handle_input(t0, &suback(fixed_pkid, 1));
        assert!(events(&mut s).contains(&Event::Subscribed));
    }

    #[test]
    fn retain_and_properties_go_out_and_come_in() {
        let (mut s, t0) = connected(config(&["fixed/t"]));
        let attributes = Attributes {
            retain: true,
            content_type: Some("text/plain".into()),
            correlation_data: Some(Bytes::from_static(b"\x01\x02")),
            response_topic: Some("r/t".into()),
            user_properties: vec![("k".into(), "v".into())],
            message_expiry: Some(30),
            payload_format: Some(1),
        };
        s.publish(
            t0,
            1,
            Bytes::from_static(b"a/b"),
            Bytes::from_static(b"hi"),
            Some(Box::new(attributes.clone())),
        )
        .unwrap();
        let packets = sent_packets(&mut s);
        let Packet::Publish(p) = &packets[0] else {
            panic!("{packets:?}")
        };
        assert!(p.retain);
        assert_eq!(
            Attributes::from_v5(p.retain, p.properties.clone()),
            attributes
        );
        // And back: the broker's PUBLISH with the same carries them.
        s.handle_input(t0, &bytes_of(Packet::Publish(p.clone())));
        let ev = events(&mut s);
        assert!(
            matches!(&ev[..], [Event::Message { attributes: Some(a), .. }] if **a == attributes),
            "{ev:?}"
        );
    }

    /// Subscribes to `filters` on a fresh connection and answers with
    /// `codes`; returns what the session reported.
    fn suback_with(s: &mut Session, t0: Instant, codes: Vec<SubscribeReasonCode>) -> Vec<Event> {
        s.handle_connected(t0);
        sent_packets(s);
        s.handle_input(t0, &connack(false, None));
        let Packet::Subscribe(sub) = sent_packets(s).remove(0) else {
            panic!()
        };
        s.handle_input(
            t0,
            &bytes_of(Packet::SubAck(SubAck {
                pkid: sub.pkid,
                return_codes: codes,
                properties: None,
            })),
        );
        events(s)
    }

    #[test]
    fn every_refused_filter_is_named_and_never_followed_by_success() {
        let t0 = Instant::now();
        let mut s = Session::new(config(&["a", "b", "c"]));
        let ok = SubscribeReasonCode::Success(QoS::AtLeastOnce);
        let no = SubscribeReasonCode::NotAuthorized;
        let refused = |ev: &[Event]| -> Vec<String> {
            ev.iter()
                .filter_map(|e| match e {
                    Event::SubscribeRefused { filter, .. } => Some(filter.clone()),
                    _ => None,
                })
                .collect()
        };
        let ev = suback_with(&mut s, t0, vec![no, ok, no]);
        assert_eq!(refused(&ev), ["a", "c"], "{ev:?}");
        assert!(!ev.contains(&Event::Subscribed), "{ev:?}");
        // The same on a reconnect: refused again, named again, no success.
        s.handle_transport_lost("reset".into());
        events(&mut s);
        let ev = suback_with(&mut s, t0, vec![ok, no, ok]);
        assert_eq!(refused(&ev), ["b"], "{ev:?}");
        assert!(!ev.contains(&Event::Subscribed), "{ev:?}");
        // And when all are granted at last, it says so.
        s.handle_transport_lost("reset".into());
        events(&mut s);
        let ev = suback_with(&mut s, t0, vec![ok, ok, ok]);
        assert!(ev.contains(&Event::Subscribed), "{ev:?}");
    }

    #[test]
    fn fewer_reason_codes_than_filters_is_a_protocol_error() {
        let t0 = Instant::now();
        let mut s = Session::new(config(&["a", "b"]));
        let ev = suback_with(
            &mut s,
            t0,
            vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)],
        );
        assert!(
            matches!(&ev[..], [Event::Connected { .. }, Event::ConnectionLost { reason, .. }]
                if reason.contains("1 reason code(s) for 2 filter(s)")),
            "{ev:?}"
        );
        assert!(!s.is_active());
    }

    #[test]
    fn refused_connect_is_reported() {
        let t0 = Instant::now();
        let mut s = Session::new(config(&["a"]));
        s.handle_connected(t0);
        sent_packets(&mut s);
        s.handle_input(
            t0,
            &bytes_of(Packet::ConnAck(ConnAck {
                session_present: false,
                code: ConnectReturnCode::NotAuthorized,
                properties: None,
            })),
        );
        assert_eq!(
            events(&mut s),
            vec![Event::ConnectRefused {
                reason: "not authorized".into()
            }]
        );
        assert!(!s.is_connected());
    }

    #[test]
    fn keep_alive_pings_once_per_interval_and_detects_a_dead_link() {
        let (mut s, t0) = connected(config(&["a"]));
        let ka = Duration::from_secs(60);
        assert_eq!(
            s.poll_timeout(),
            Some(t0 + ka),
            "the only deadline while idle"
        );
        s.handle_timeout(t0 + ka);
        assert!(matches!(sent_packets(&mut s)[..], [Packet::PingReq(_)]));
        // PINGRESP clears the wait; the next ping is one interval later.
        s.handle_input(t0 + ka, &[0xD0, 0x00]);
        assert_eq!(s.poll_timeout(), Some(t0 + 2 * ka));
        s.handle_timeout(t0 + 2 * ka);
        sent_packets(&mut s);
        // No PINGRESP within keep-alive / 2: the link is dead.
        let deadline = t0 + 2 * ka + ka / 2;
        assert_eq!(s.poll_timeout(), Some(deadline));
        s.handle_timeout(deadline);
        let ev = events(&mut s);
        assert!(
            matches!(&ev[..], [Event::ConnectionLost { reason, taken_over: false, was_connected: true }] if reason.contains("PINGRESP")),
            "{ev:?}"
        );
        assert_eq!(s.poll_timeout(), None, "no timers once idle");
    }

    #[test]
    fn no_connack_in_time_is_a_lost_connection() {
        let t0 = Instant::now();
        let mut s = Session::new(config(&["a"]));
        s.handle_connected(t0);
        assert_eq!(s.poll_timeout(), Some(t0 + CONNACK_TIMEOUT));
        s.handle_timeout(t0 + CONNACK_TIMEOUT);
        assert!(matches!(
            &events(&mut s)[..],
            [Event::ConnectionLost { .. }]
        ));
    }

    #[test]
    fn server_keep_alive_and_receive_maximum_are_honoured() {
        let mut p = props();
        p.receive_max = Some(2);
        p.server_keep_alive = Some(30);
        let (mut s, t0) = acked(config(&["a"]), Some(p));
        sent_packets(&mut s);
        for id in 0..5 {
            publish(&mut s, t0, id);
        }
        let sent: Vec<_> = sent_packets(&mut s)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p.pkid),
                _ => None,
            })
            .collect();
        assert_eq!(sent.len(), 2, "receive maximum 2");
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(30)));
        s.handle_input(t0, &puback(sent[0]));
        assert_eq!(sent_packets(&mut s).len(), 1, "one more once a slot frees");
    }

    #[test]
    fn broker_maximum_packet_size_lowers_the_payload_limit() {
        let t0 = Instant::now();
        let mut s = Session::new(config(&["a"]));
        s.handle_connected(t0);
        let mut p = props();
        p.max_packet_size = Some(1000);
        s.handle_input(t0, &connack(false, Some(p)));
        assert_eq!(s.max_payload(), 1000);
        assert!(matches!(
            s.publish(
                t0,
                1,
                Bytes::from_static(b"t"),
                Bytes::from(vec![0; 1001]),
                None
            ),
            Err(Rejected::TooLarge {
                size: 1001,
                max: 1000
            })
        ));
        // Fits the payload limit but not the packet: fails, is not sent.
        s.publish(
            t0,
            2,
            Bytes::from_static(b"t"),
            Bytes::from(vec![0; 999]),
            None,
        )
        .unwrap();
        let ev = events(&mut s);
        assert!(
            ev.iter().any(|e| matches!(e, Event::PublishFailed(2, why)
                if why.ends_with("exceeds the broker's maximum packet size of 1000"))),
            "{ev:?}"
        );
    }

    #[test]
    fn unacked_publishes_are_resent_with_dup_when_the_session_resumes() {
        let mut cfg = config(&["a"]);
        cfg.session_expiry = 3600;
        let (mut s, t0) = connected(cfg);
        publish(&mut s, t0, 1);
        publish(&mut s, t0, 2);
        let first: Vec<u16> = sent_packets(&mut s)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p.pkid),
                _ => None,
            })
            .collect();
        s.handle_transport_lost("reset".into());
        // While disconnected, new publishes wait.
        publish(&mut s, t0, 3);
        assert!(s.pending_output().is_empty());
        s.handle_connected(t0);
        let packets = sent_packets(&mut s);
        let Packet::Connect(c, ..) = &packets[0] else {
            panic!()
        };
        assert!(!c.clean_start, "asks to resume");
        s.handle_input(t0, &connack(true, None));
        let again: Vec<(u16, bool)> = sent_packets(&mut s)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some((p.pkid, p.dup)),
                Packet::Subscribe(_) => panic!("resumed session keeps subscriptions"),
                _ => None,
            })
            .collect();
        assert_eq!(again[..2], [(first[0], true), (first[1], true)]);
        assert!(!again[2].1, "the new one is not a duplicate");
    }

    #[test]
    fn without_a_session_unacked_publishes_go_again_as_new_and_resubscribe() {
        let (mut s, t0) = connected(config(&["a"]));
        publish(&mut s, t0, 1);
        sent_packets(&mut s);
        s.handle_transport_lost("reset".into());
        events(&mut s);
        s.handle_connected(t0);
        sent_packets(&mut s);
        s.handle_input(t0, &connack(false, None));
        let packets = sent_packets(&mut s);
        assert!(packets.iter().any(|p| matches!(p, Packet::Subscribe(_))));
        assert!(
            packets
                .iter()
                .any(|p| matches!(p, Packet::Publish(p) if !p.dup && p.pkid != 0))
        );
    }

    #[test]
    fn takeover_disconnect_is_reported_in_words() {
        let (mut s, t0) = connected(config(&["a"]));
        s.handle_input(t0, &[0xE0, 0x01, 0x8E]);
        let ev = events(&mut s);
        assert!(
            matches!(&ev[..], [Event::ConnectionLost { reason, taken_over: true, was_connected: true }]
                if reason.contains("session taken over") && reason.contains("same client id")),
            "{ev:?}"
        );
    }

    #[test]
    fn inbound_qos1_is_acknowledged_and_delivered() {
        let (mut s, t0) = connected(config(&["sdk/test/python"]));
        let mut publish = Publish::new("sdk/test/python", QoS::AtLeastOnce, b"{}".to_vec(), None);
        publish.pkid = 9;
        s.handle_input(t0, &bytes_of(Packet::Publish(publish)));
        assert!(
            sent_packets(&mut s).is_empty(),
            "not acknowledged before it is safe"
        );
        let ack = InboundAck {
            connection: s.connection,
            pkid: 9,
        };
        assert_eq!(
            events(&mut s),
            vec![Event::Message {
                topic: Bytes::from_static(b"sdk/test/python"),
                payload: Bytes::from_static(b"{}"),
                attributes: None,
                ack: Some(ack),
            }]
        );
        s.acknowledge(t0, ack);
        assert!(matches!(
            sent_packets(&mut s)[..],
            [Packet::PubAck(PubAck { pkid: 9, .. })]
        ));
        s.acknowledge(t0, ack);
        assert!(sent_packets(&mut s).is_empty(), "once");
    }

    #[test]
    fn an_acknowledgement_from_an_earlier_connection_is_not_sent() {
        let (mut s, t0) = connected(config(&["a"]));
        s.handle_input(t0, &inbound_qos1(5));
        let Some(Event::Message { ack: Some(ack), .. }) = s.poll_event() else {
            panic!("no message");
        };
        s.handle_transport_lost("reset".into());
        events(&mut s);
        s.handle_connected(t0);
        sent_packets(&mut s);
        s.acknowledge(t0, ack);
        assert!(
            sent_packets(&mut s).is_empty(),
            "pkid 5 may name another message on this connection"
        );
    }

    #[test]
    fn garbage_from_the_broker_loses_the_connection_once() {
        let (mut s, t0) = connected(config(&["a"]));
        let mut junk = BytesMut::new();
        junk.put_slice(&[0xF0, 0x00, 0x01, 0x02]);
        s.handle_input(t0, &junk);
        assert!(matches!(
            &events(&mut s)[..],
            [Event::ConnectionLost { .. }]
        ));
        // Sticky: nothing more happens until a new transport.
        s.handle_input(t0, &[0xD0, 0x00]);
        s.handle_transport_lost("eof".into());
        assert!(events(&mut s).is_empty());
    }

    #[test]
    fn queue_is_bounded_while_disconnected() {
        let mut cfg = config(&["a"]);
        cfg.queue_messages = 2;
        let mut s = Session::new(cfg);
        let t0 = Instant::now();
        publish(&mut s, t0, 1);
        publish(&mut s, t0, 2);
        assert_eq!(
            s.publish(t0, 3, Bytes::from_static(b"t"), Bytes::new(), None),
            Err(Rejected::QueueFull { messages: 2 })
        );
    }

    #[test]
    fn close_sends_disconnect_and_answers_what_is_left() {
        let mut cfg = config(&["a"]);
        cfg.qos = QoS::AtLeastOnce;
        let mut p = props();
        p.receive_max = Some(1);
        let (mut s, t0) = acked(cfg, Some(p));
        sent_packets(&mut s);
        events(&mut s);
        publish(&mut s, t0, 7); // sent, not acknowledged
        publish(&mut s, t0, 8); // held back by the receive maximum
        sent_packets(&mut s);
        s.close();
        assert!(matches!(sent_packets(&mut s)[..], [Packet::Disconnect(_)]));
        let ev = events(&mut s);
        assert_eq!(ev, [Event::Unconfirmed(7), Event::Unsent(8)]);
        assert_eq!(
            s.publish(t0, 9, Bytes::from_static(b"t"), Bytes::new(), None),
            Err(Rejected::Closed)
        );
    }

    #[test]
    fn close_with_qos0_in_the_output_is_unconfirmed_not_failed() {
        let mut cfg = config(&["a"]);
        cfg.qos = QoS::AtMostOnce;
        let (mut s, t0) = connected(cfg);
        publish(&mut s, t0, 3); // in the output, ahead of the DISCONNECT
        s.close();
        assert_eq!(events(&mut s), vec![Event::Unconfirmed(3)]);
        let packets = sent_packets(&mut s);
        assert!(matches!(
            packets[..],
            [Packet::Publish(_), Packet::Disconnect(_)]
        ));
        // Not connected: nothing will go out.
        let mut s = Session::new(config(&["a"]));
        publish(&mut s, t0, 4);
        s.close();
        assert_eq!(events(&mut s), [Event::Unsent(4)]);
    }

    #[test]
    fn output_is_bounded_and_qos0_is_confirmed_when_the_transport_takes_it() {
        let mut cfg = config(&["a"]);
        cfg.qos = QoS::AtMostOnce;
        cfg.queue_messages = 10;
        cfg.queue_bytes = 1000;
        let (mut s, t0) = connected(cfg);
        let payload = Bytes::from(vec![b'x'; 1000]);
        let mut accepted = 0;
        for id in 0..5000 {
            if s.publish(t0, id, Bytes::from_static(b"t"), payload.clone(), None)
                .is_ok()
            {
                accepted += 1;
            }
        }
        // A stalled transport: the output stops near the high-water mark
        // and the bounded queue refuses the rest.
        assert!(s.pending_output().len() < OUTPUT_HIGH_WATER + 1100);
        assert!(accepted < 100, "{accepted} accepted");
        assert!(
            !events(&mut s)
                .iter()
                .any(|e| matches!(e, Event::Published(_))),
            "no OK before the bytes leave"
        );
        // The transport takes half: those publishes are confirmed, more
        // move from the queue into the output.
        let half = s.pending_output().len() / 2;
        s.advance_output(t0, half);
        let confirmed = events(&mut s)
            .iter()
            .filter(|e| matches!(e, Event::Published(_)))
            .count();
        assert!(confirmed > 20, "{confirmed}");
        // The link breaks: what is still in the output goes out again later.
        let waiting = s.pending.len() + s.qos0_in_output.len();
        s.handle_transport_lost("reset".into());
        assert_eq!(s.pending.len(), waiting);
        assert!(
            !events(&mut s)
                .iter()
                .any(|e| matches!(e, Event::Published(_))),
            "nothing confirmed by a lost connection"
        );
    }

    #[test]
    fn a_silent_broker_is_detected_while_publishing() {
        let (mut s, t0) = connected(config(&["a"]));
        // Publish every 50 s (under the 60 s keep-alive); the broker never
        // answers again.
        let mut now = t0;
        let mut lost = None;
        for i in 0..10 {
            now += Duration::from_secs(50);
            if let Some(at) = s.poll_timeout().filter(|at| *at <= now) {
                s.handle_timeout(at);
            }
            s.handle_timeout(now);
            publish(&mut s, now, i);
            sent_packets(&mut s);
            if let Some(e) = events(&mut s)
                .into_iter()
                .find(|e| matches!(e, Event::ConnectionLost { .. }))
            {
                lost = Some((now, e));
                break;
            }
        }
        let (at, _) = lost.expect("a dead link is noticed");
        assert!(at <= t0 + Duration::from_secs(150), "{:?}", at - t0);
    }

    #[test]
    fn one_second_keep_alive_still_detects_a_dead_link() {
        let mut cfg = config(&["a"]);
        cfg.keep_alive = 1;
        let (mut s, t0) = connected(cfg);
        for ms in (100..10_000).step_by(100) {
            s.handle_timeout(t0 + Duration::from_millis(ms));
            sent_packets(&mut s);
            if events(&mut s)
                .iter()
                .any(|e| matches!(e, Event::ConnectionLost { .. }))
            {
                return;
            }
        }
        panic!("no ConnectionLost within 10 s");
    }

    #[test]
    fn max_rate_paces_publishes() {
        let mut cfg = config(&["a"]);
        cfg.max_rate = 10;
        let (mut s, t0) = connected(cfg);
        let publishes = |s: &mut Session| {
            sent_packets(s)
                .iter()
                .filter(|p| matches!(p, Packet::Publish(_)))
                .count()
        };
        for id in 0..25 {
            publish(&mut s, t0, id);
        }
        assert_eq!(publishes(&mut s), 10, "a burst of one second's worth");
        let next = t0 + Duration::from_millis(100);
        assert_eq!(s.poll_timeout(), Some(next));
        s.handle_timeout(next);
        assert_eq!(publishes(&mut s), 1, "then one per 1/10 s");
        // Unlimited by default (0).
        let (mut s, t0) = connected(config(&["a"]));
        for id in 0..25 {
            publish(&mut s, t0, id);
        }
        assert_eq!(publishes(&mut s), 25);
    }

    #[test]
    fn resumed_session_respects_a_lower_receive_maximum() {
        let mut cfg = config(&["a"]);
        cfg.session_expiry = 3600;
        let (mut s, t0) = connected(cfg);
        for id in 0..10 {
            publish(&mut s, t0, id);
        }
        sent_packets(&mut s);
        s.handle_transport_lost("reset".into());
        s.handle_connected(t0);
        sent_packets(&mut s);
        let mut p = props();
        p.receive_max = Some(2);
        s.handle_input(t0, &connack(true, Some(p)));
        let resent: Vec<u16> = sent_packets(&mut s)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) if p.dup => Some(p.pkid),
                _ => None,
            })
            .collect();
        assert_eq!(resent.len(), 2, "{resent:?}");
        // A PUBACK frees a slot: the next one goes, still with DUP.
        s.handle_input(t0, &puback(resent[0]));
        let next: Vec<bool> = sent_packets(&mut s)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p.dup),
                _ => None,
            })
            .collect();
        assert_eq!(next, vec![true]);
    }

    /// A QoS 1 PUBLISH from the broker with packet id `pkid`.
    fn inbound_qos1(pkid: u16) -> Vec<u8> {
        let mut p = Publish::new("a", QoS::AtLeastOnce, b"x".to_vec(), None);
        p.pkid = pkid;
        bytes_of(Packet::Publish(p))
    }

    #[test]
    fn connect_states_our_receive_maximum() {
        let mut s = Session::new(config(&["a"]));
        s.handle_connected(Instant::now());
        let Packet::Connect(c, ..) = sent_packets(&mut s).remove(0) else {
            panic!()
        };
        let props = c.properties.expect("properties");
        assert_eq!(props.receive_maximum, Some(RECEIVE_MAXIMUM));
    }

    #[test]
    fn a_broker_that_floods_without_reading_breaks_our_receive_maximum() {
        let (mut s, t0) = connected(config(&["a"]));
        // Acknowledgements the transport takes do not count.
        for pkid in 1..=500 {
            s.handle_input(t0, &inbound_qos1(pkid));
            acknowledge_all(&mut s, t0);
            sent_packets(&mut s);
        }
        assert!(s.is_connected());
        // The broker stops reading: our PUBACKs stay in the output. A few
        // over the maximum are tolerated (brokers overshoot by one).
        for pkid in 1..=FLOOD_THRESHOLD as u16 {
            s.handle_input(t0, &inbound_qos1(pkid));
            acknowledge_all(&mut s, t0);
        }
        assert!(s.is_connected(), "up to twice the maximum is tolerated");
        s.handle_input(t0, &inbound_qos1(1000));
        let ev = events(&mut s);
        assert!(
            matches!(ev.last(), Some(Event::ConnectionLost { reason, .. }) if reason.contains("receive maximum")),
            "{ev:?}"
        );
        assert_eq!(
            s.pending_output(),
            [0xE0, 0x01, 0x93],
            "DISCONNECT 0x93 only"
        );
    }

    /// What the daemon does once each message is safe.
    fn acknowledge_all(s: &mut Session, now: Instant) {
        while let Some(event) = s.poll_event() {
            if let Event::Message { ack: Some(ack), .. } = event {
                s.acknowledge(now, ack);
            }
        }
    }

    #[test]
    fn unacknowledged_messages_wait_for_the_caller_and_a_flood_of_them_is_0x93() {
        let (mut s, t0) = connected(config(&["a"]));
        for pkid in 1..=RECEIVE_MAXIMUM {
            s.handle_input(t0, &inbound_qos1(pkid));
        }
        assert!(s.wants_input(), "the caller decides how long they wait");
        assert!(sent_packets(&mut s).is_empty(), "nothing acknowledged yet");
        acknowledge_all(&mut s, t0);
        assert_eq!(sent_packets(&mut s).len(), usize::from(RECEIVE_MAXIMUM));
        s.exceeded_receive_maximum();
        let ev = events(&mut s);
        assert!(
            matches!(ev.last(), Some(Event::ConnectionLost { reason, .. }) if reason.contains("receive maximum")),
            "{ev:?}"
        );
        assert_eq!(s.pending_output(), [0xE0, 0x01, 0x93]);
    }

    #[test]
    fn protocol_errors_leave_a_disconnect_with_the_reason_code() {
        let (mut s, t0) = connected(config(&["a"]));
        s.handle_input(t0, &connack(false, None));
        assert!(matches!(events(&mut s)[..], [Event::ConnectionLost { .. }]));
        assert_eq!(s.pending_output(), [0xE0, 0x01, 0x82]);
        // A malformed packet: 0x81.
        let (mut s, t0) = connected(config(&["a"]));
        s.handle_input(t0, &[0x30, 0x07, 0x00, 0x03, b'a', 0xFF, b'b', 0x00, b'x']);
        let ev = events(&mut s);
        assert!(
            matches!(&ev[..], [Event::ConnectionLost { reason, .. }] if reason.contains("not valid UTF-8")),
            "{ev:?}"
        );
        assert_eq!(s.pending_output(), [0xE0, 0x01, 0x81]);
    }

    #[test]
    fn part_of_a_packet_and_then_silence_is_a_dead_link_in_half_the_keep_alive() {
        let (mut s, t0) = connected(config(&["a"]));
        let half = Duration::from_secs(30);
        s.handle_input(t0, &[0x30, 0x7F, 0x00]);
        assert_eq!(s.poll_timeout(), Some(t0 + half));
        // More bytes of it arrive: the wait starts again.
        let t1 = t0 + Duration::from_secs(20);
        s.handle_input(t1, &[0x01]);
        assert_eq!(s.poll_timeout(), Some(t1 + half));
        s.handle_timeout(t1 + half);
        let ev = events(&mut s);
        assert!(
            matches!(&ev[..], [Event::ConnectionLost { reason, .. }] if reason.contains("part of a packet")),
            "{ev:?}"
        );
        // A whole packet clears it.
        let (mut s, t0) = connected(config(&["a"]));
        s.handle_input(t0, &[0xD0]);
        s.handle_input(t0, &[0x00]);
        assert_eq!(
            s.poll_timeout(),
            Some(t0 + Duration::from_secs(60)),
            "keep-alive only"
        );
    }

    #[test]
    fn input_pauses_while_the_output_is_full() {
        let mut cfg = config(&["a"]);
        cfg.qos = QoS::AtMostOnce;
        cfg.max_payload = OUTPUT_LIMIT;
        let (mut s, t0) = connected(cfg);
        assert!(s.wants_input());
        // Publishes stop at the high-water mark; only a large one passes it.
        s.publish(
            t0,
            1,
            Bytes::from_static(b"t"),
            Bytes::from(vec![0; OUTPUT_LIMIT]),
            None,
        )
        .unwrap();
        assert!(!s.wants_input());
        s.advance_output(t0, s.pending_output().len());
        assert!(s.wants_input());
    }

    #[test]
    fn publishes_wait_while_every_packet_id_is_in_use() {
        // Found by fuzzing (fuzz/, target session): no receive maximum from
        // the broker, a SUBSCRIBE unacknowledged and 65533 publishes in
        // flight left no packet id free, and next_packet_id looped forever.
        let filters: Vec<String> = (0..9).map(|i| format!("t/{i}")).collect();
        let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
        let (mut s, t0) = acked(config(&refs), None);
        let subscribes = sent_packets(&mut s);
        assert_eq!(
            subscribes.len(),
            2,
            "packet ids 1 and 2, never acknowledged"
        );
        // Sent and never acknowledged: every other packet id.
        for pkid in 3..=u16::MAX {
            s.inflight.push_back(Outgoing {
                id: u64::from(pkid),
                topic: Bytes::from_static(b"t"),
                payload: Bytes::new(),
                attributes: None,
                pkid,
            });
        }
        s.on_wire = s.inflight.len();
        publish(&mut s, t0, 1);
        assert!(
            sent_packets(&mut s).is_empty(),
            "no packet id to send it with"
        );
        // A PUBACK frees one: the publish goes with it.
        s.handle_input(t0, &puback(7));
        let packets = sent_packets(&mut s);
        assert!(
            matches!(&packets[..], [Packet::Publish(p)] if p.pkid == 7),
            "{packets:?}"
        );
    }

    #[test]
    fn a_resumed_session_subscribes_again_when_a_suback_never_came() {
        let mut cfg = config(&["a"]);
        cfg.session_expiry = 3600;
        let (mut s, t0) = connected(cfg.clone());
        // Confirmed on the first connection: a resumed session keeps them.
        s.handle_transport_lost("reset".into());
        events(&mut s);
        s.handle_connected(t0);
        sent_packets(&mut s);
        s.handle_input(t0, &connack(true, None));
        assert!(events(&mut s).contains(&Event::Subscribed));
        assert!(
            !sent_packets(&mut s)
                .iter()
                .any(|p| matches!(p, Packet::Subscribe(_)))
        );
        // Lost before the SUBACK: the broker may not have the SUBSCRIBE.
        let (mut s, t0) = acked(cfg, None);
        sent_packets(&mut s);
        s.handle_transport_lost("reset".into());
        events(&mut s);
        s.handle_connected(t0);
        sent_packets(&mut s);
        s.handle_input(t0, &connack(true, None));
        let ev = events(&mut s);
        assert!(!ev.contains(&Event::Subscribed), "{ev:?}");
        assert!(
            sent_packets(&mut s)
                .iter()
                .any(|p| matches!(p, Packet::Subscribe(_))),
            "subscribes again"
        );
    }

    #[test]
    fn a_publish_that_can_never_be_sent_uses_no_rate_token() {
        let mut cfg = config(&["a"]);
        cfg.max_rate = 1;
        let mut p = props();
        p.max_packet_size = Some(1000);
        let (mut s, t0) = connected_with(cfg, Some(p));
        // Fits the payload limit, not the packet: fails at once.
        s.publish(
            t0,
            1,
            Bytes::from_static(b"t"),
            Bytes::from(vec![0; 999]),
            None,
        )
        .unwrap();
        publish(&mut s, t0, 2);
        assert!(matches!(&events(&mut s)[..], [Event::PublishFailed(1, _)]));
        let sent = sent_packets(&mut s);
        assert!(
            matches!(&sent[..], [Packet::Publish(_)]),
            "the one token of the second went to the publish that fits: {sent:?}"
        );
    }

    #[test]
    fn a_second_close_keeps_the_disconnect_and_answers_once() {
        let mut cfg = config(&["a"]);
        cfg.qos = QoS::AtMostOnce;
        let (mut s, t0) = connected(cfg);
        publish(&mut s, t0, 3);
        s.close();
        s.close();
        assert_eq!(events(&mut s), vec![Event::Unconfirmed(3)]);
        assert!(matches!(
            sent_packets(&mut s)[..],
            [Packet::Publish(_), Packet::Disconnect(_)]
        ));
    }

    #[test]
    fn packet_ids_skip_zero_and_those_in_use() {
        let (mut s, _) = connected(config(&["a"]));
        s.next_pkid = u16::MAX - 1;
        assert_eq!(s.next_packet_id(), u16::MAX);
        assert_eq!(s.next_packet_id(), 1);
    }
}
