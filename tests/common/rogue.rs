//! A small misbehaving MQTT 5 broker for the hostile-peer tests
//! (`tests/hostile.rs`): plain TCP on 127.0.0.1 and a port of its own, one
//! std thread per connection, blocking sockets with timeouts. The daemon
//! talks to it with `--plaintext`.
//!
//! [`Rogue::start`] takes a script, run on a thread of its own for every
//! connection accepted. A script usually calls [`Conn::handshake`] (read
//! CONNECT, answer `CONNACK` success, read SUBSCRIBE, answer a SUBACK granting
//! QoS 1), then misbehaves with [`Conn::send`], then [`Conn::drain`]s what the
//! daemon says until it closes.
//!
//! Everything the daemon sent is recorded per connection, decoded, with the
//! time it arrived, and so are the times of the accept and of the close:
//! [`Rogue::connections`], [`Rogue::wait`]. rumqttc's decoder reads most
//! packets; DISCONNECT is decoded by hand (rumqttc cannot decode the short
//! forms `E0 00` and `E0 01 rc`), and PUBACKs are kept as their packet ids
//! only, so a flood of them costs two bytes each.

use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5::Packet as Mqtt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// CONNACK: success, no session present, no properties.
pub const CONNACK_OK: [u8; 5] = [0x20, 0x03, 0x00, 0x00, 0x00];

/// One packet the daemon sent.
#[derive(Debug, Clone)]
pub enum Packet {
    /// Decoded by rumqttc (boxed: it is large).
    Mqtt(Box<Mqtt>),
    /// DISCONNECT, decoded by hand: its reason code (0 for `E0 00`).
    Disconnect { reason: u8 },
    /// A frame rumqttc could not decode.
    Undecodable { bytes: Vec<u8>, error: String },
}

impl Packet {
    /// `CONNECT`, `SUBSCRIBE sdk/a`, `DISCONNECT 0x81`, ...: for messages.
    pub fn describe(&self) -> String {
        match self {
            Packet::Mqtt(mqtt) => match &**mqtt {
                Mqtt::Connect(c, ..) => format!("CONNECT {}", c.client_id),
                Mqtt::Subscribe(s) => {
                    let filters: Vec<&str> = s.filters.iter().map(|f| f.path.as_str()).collect();
                    format!("SUBSCRIBE {}", filters.join(" "))
                }
                Mqtt::Publish(p) => format!(
                    "PUBLISH {} ({} bytes)",
                    String::from_utf8_lossy(&p.topic),
                    p.payload.len()
                ),
                Mqtt::PingReq(_) => "PINGREQ".into(),
                other => format!("{other:?}"),
            },
            Packet::Disconnect { reason } => format!("DISCONNECT 0x{reason:02X}"),
            Packet::Undecodable { bytes, error } => {
                let head = &bytes[..bytes.len().min(16)];
                format!("undecodable {head:02X?}: {error}")
            }
        }
    }

    /// The DISCONNECT's reason code, if this is one.
    pub fn disconnect_reason(&self) -> Option<u8> {
        match self {
            Packet::Disconnect { reason } => Some(*reason),
            _ => None,
        }
    }

    pub fn is_connect(&self) -> bool {
        matches!(self.mqtt(), Some(Mqtt::Connect(..)))
    }

    /// The packet as rumqttc decoded it, if it did.
    pub fn mqtt(&self) -> Option<&Mqtt> {
        match self {
            Packet::Mqtt(m) => Some(m),
            _ => None,
        }
    }
}

/// When the `n`-th connection that opened with a CONNECT sent it (`n` from 1).
pub fn nth_connect(conns: &[ConnRecord], n: usize) -> Option<Instant> {
    conns
        .iter()
        .filter_map(|r| r.packets.first().filter(|(_, p)| p.is_connect()))
        .nth(n.checked_sub(1)?)
        .map(|(t, _)| *t)
}

/// What the rogue saw of one connection.
#[derive(Debug, Clone)]
pub struct ConnRecord {
    pub accepted: Instant,
    /// Everything the daemon sent but PUBACKs, in order, with arrival times.
    pub packets: Vec<(Instant, Packet)>,
    /// The packet ids of the PUBACKs the daemon sent, in order.
    pub pubacks: Vec<u16>,
    /// When and how the daemon's side ended (EOF, a reset, a write error).
    pub closed: Option<(Instant, String)>,
    /// What the script noted (e.g. how a flood ended).
    pub notes: Vec<String>,
}

impl ConnRecord {
    /// Did the daemon open this connection with a CONNECT?
    pub fn has_connect(&self) -> bool {
        self.packets.first().is_some_and(|(_, p)| p.is_connect())
    }

    /// The reason codes of the DISCONNECTs the daemon sent here.
    pub fn disconnects(&self) -> Vec<u8> {
        self.packets
            .iter()
            .filter_map(|(_, p)| p.disconnect_reason())
            .collect()
    }
}

#[derive(Default)]
struct Shared {
    conns: Mutex<Vec<ConnRecord>>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<ConnRecord>> {
        // A panicking test thread must not hide what was recorded.
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut ConnRecord)) {
        f(&mut self.lock()[index]);
        self.changed.notify_all();
    }
}

/// The broker: see the module documentation. Stops accepting on drop;
/// connections end when the daemon goes.
pub struct Rogue {
    pub port: u16,
    started: Instant,
    shared: Arc<Shared>,
}

impl Rogue {
    /// Listens on 127.0.0.1 and a free port; runs `script` on its own thread
    /// for every connection accepted.
    pub fn start(script: impl Fn(&mut Conn) + Send + Sync + 'static) -> Rogue {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the rogue broker");
        let port = listener.local_addr().expect("rogue address").port();
        let shared = Arc::new(Shared::default());
        let script = Arc::new(script);
        let theirs = shared.clone();
        thread::Builder::new()
            .name("rogue-accept".into())
            .spawn(move || accept_loop(&listener, &theirs, script))
            .expect("spawn the rogue broker");
        Rogue {
            port,
            started: Instant::now(),
            shared,
        }
    }

    /// A copy of everything recorded so far, one entry per connection.
    pub fn connections(&self) -> Vec<ConnRecord> {
        self.shared.lock().clone()
    }

    /// The packets the daemon sent on connection `index` (PUBACKs aside).
    pub fn packets(&self, index: usize) -> Vec<Packet> {
        self.shared.lock()[index]
            .packets
            .iter()
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Waits until `f` returns `Some` for the connections recorded, or until
    /// `deadline` (then `None`).
    pub fn wait_until<T>(
        &self,
        deadline: Instant,
        mut f: impl FnMut(&[ConnRecord]) -> Option<T>,
    ) -> Option<T> {
        let mut conns = self.shared.lock();
        loop {
            if let Some(v) = f(&conns) {
                return Some(v);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            conns = self
                .shared
                .changed
                .wait_timeout(conns, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// [`Rogue::wait_until`], panicking at `deadline` with `what` was
    /// awaited and everything seen.
    pub fn wait<T>(
        &self,
        what: &str,
        deadline: Instant,
        f: impl FnMut(&[ConnRecord]) -> Option<T>,
    ) -> T {
        self.wait_until(deadline, f).unwrap_or_else(|| {
            panic!(
                "rogue broker: {what}: not within the deadline\n{}",
                self.report()
            )
        })
    }

    /// Waits until `n` connections were accepted; returns when the last was.
    pub fn wait_accepted(&self, n: usize, deadline: Instant) -> Instant {
        self.wait(&format!("{n} connection(s) accepted"), deadline, |c| {
            c.get(n - 1).map(|r| r.accepted)
        })
    }

    /// Waits until `n` connections opened with a CONNECT (a reconnect is the
    /// second); returns when the `n`-th CONNECT arrived.
    pub fn wait_connects(&self, n: usize, deadline: Instant) -> Instant {
        self.wait(
            &format!("{n} connection(s) with a CONNECT"),
            deadline,
            |c| nth_connect(c, n),
        )
    }

    /// Waits until the daemon's side of connection `index` ended; returns when.
    pub fn wait_closed(&self, index: usize, deadline: Instant) -> Instant {
        self.wait(
            &format!("connection {index} closed by the daemon"),
            deadline,
            |c| {
                c.get(index)
                    .and_then(|r| r.closed.as_ref())
                    .map(|(t, _)| *t)
            },
        )
    }

    /// Everything seen, for failure messages; times relative to the start.
    pub fn describe(&self, conns: &[ConnRecord]) -> String {
        let at = |t: Instant| format!("{:.3}s", t.duration_since(self.started).as_secs_f64());
        let mut s = format!("--- rogue broker on port {} ---\n", self.port);
        for (i, c) in conns.iter().enumerate() {
            s += &format!("connection {i}: accepted at {}\n", at(c.accepted));
            for (t, p) in c.packets.iter().take(50) {
                s += &format!("  {} {}\n", at(*t), p.describe());
            }
            if c.packets.len() > 50 {
                s += &format!("  ... {} more packets\n", c.packets.len() - 50);
            }
            if !c.pubacks.is_empty() {
                s += &format!("  and {} PUBACKs\n", c.pubacks.len());
            }
            for n in &c.notes {
                s += &format!("  note: {n}\n");
            }
            match &c.closed {
                Some((t, why)) => s += &format!("  closed at {}: {why}\n", at(*t)),
                None => s += "  still open\n",
            }
        }
        s + "---"
    }

    /// [`Rogue::describe`] of everything recorded so far.
    pub fn report(&self) -> String {
        let conns = self.connections();
        self.describe(&conns)
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the listener closes.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    script: Arc<dyn Fn(&mut Conn) + Send + Sync>,
) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let accepted = Instant::now();
        let index = {
            let mut conns = shared.lock();
            conns.push(ConnRecord {
                accepted,
                packets: Vec::new(),
                pubacks: Vec::new(),
                closed: None,
                notes: Vec::new(),
            });
            conns.len() - 1
        };
        shared.changed.notify_all();
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            index,
            inbuf: BytesMut::new(),
            shared: shared.clone(),
        };
        let script = script.clone();
        thread::Builder::new()
            .name(format!("rogue-conn-{index}"))
            .spawn(move || script(&mut conn))
            .expect("spawn a rogue connection");
    }
}

/// Why [`Conn::read_packet`] returned no packet.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The daemon closed the connection (EOF) or it failed.
    Closed,
    /// Nothing complete arrived by the deadline.
    TimedOut,
}

/// One accepted connection, as a script sees it.
pub struct Conn {
    stream: TcpStream,
    index: usize,
    inbuf: BytesMut,
    shared: Arc<Shared>,
}

impl Conn {
    /// 0 for the first connection accepted, 1 for the next ...
    pub fn index(&self) -> usize {
        self.index
    }

    /// The socket, for options (`set_write_timeout`) a script needs.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Adds a note to this connection's record (shown in failure messages).
    pub fn note(&self, text: impl Into<String>) {
        let text = text.into();
        self.shared.update(self.index, |r| r.notes.push(text));
    }

    fn closed(&self, why: String) {
        self.shared.update(self.index, |r| {
            if r.closed.is_none() {
                r.closed = Some((Instant::now(), why));
            }
        });
    }

    /// Reads until `inbuf` holds `need` bytes.
    fn fill(&mut self, need: usize, deadline: Instant) -> Result<(), End> {
        let mut chunk = [0u8; 64 * 1024];
        while self.inbuf.len() < need {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(End::TimedOut);
            }
            let _ = self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed("EOF".into());
                    return Err(End::Closed);
                }
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.closed(format!("read failed: {e}"));
                    return Err(End::Closed);
                }
            }
        }
        Ok(())
    }

    /// Reads the next whole packet the daemon sends (recorded before it is
    /// returned).
    pub fn read_packet(&mut self, deadline: Instant) -> Result<Packet, End> {
        // Fixed header: type byte, then 1 to 4 bytes of remaining length.
        let (header, remaining) = loop {
            if let Some(framed) = frame(&self.inbuf) {
                break framed;
            }
            let need = self.inbuf.len() + 1;
            self.fill(need, deadline)?;
        };
        self.fill(header + remaining, deadline)?;
        let mut bytes = self.inbuf.split_to(header + remaining);
        let packet = if bytes[0] >> 4 == 14 {
            Packet::Disconnect {
                reason: if remaining == 0 { 0 } else { bytes[header] },
            }
        } else {
            let copy = bytes.to_vec();
            match Mqtt::read(&mut bytes, None) {
                Ok(p) => Packet::Mqtt(Box::new(p)),
                Err(e) => Packet::Undecodable {
                    bytes: copy,
                    error: e.to_string(),
                },
            }
        };
        let now = Instant::now();
        self.shared.update(self.index, |r| match packet.mqtt() {
            Some(Mqtt::PubAck(ack)) => r.pubacks.push(ack.pkid),
            _ => r.packets.push((now, packet.clone())),
        });
        Ok(packet)
    }

    /// Writes `bytes` (blocking, within the socket's write timeout). A
    /// failure other than a timeout means the daemon's side is gone, and is
    /// recorded as the close.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let result = self.stream.write_all(bytes);
        if let Err(e) = &result {
            if !is_timeout(e) {
                self.closed(format!("write failed: {e}"));
            }
        }
        result
    }

    /// Writes what the socket takes of `bytes` now (one `write`); a failure
    /// other than a timeout is recorded as the close, like [`Conn::send`].
    pub fn send_some(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let result = self.stream.write(bytes);
        if let Err(e) = &result {
            if !is_timeout(e) && e.kind() != io::ErrorKind::Interrupted {
                self.closed(format!("write failed: {e}"));
            }
        }
        result
    }

    /// The usual start: reads CONNECT and answers [`CONNACK_OK`], reads
    /// SUBSCRIBE and answers a SUBACK granting QoS 1 to every filter.
    /// Returns the first filter; `None` (noted) if the daemon did otherwise.
    pub fn handshake(&mut self, deadline: Instant) -> Option<String> {
        match self.read_packet(deadline) {
            Ok(p) if p.is_connect() => {}
            other => {
                self.note(format!("handshake: expected CONNECT, got {other:?}"));
                return None;
            }
        }
        self.send(&CONNACK_OK).ok()?;
        let packet = self.read_packet(deadline);
        let subscribe = match packet.as_ref().ok().and_then(Packet::mqtt) {
            Some(Mqtt::Subscribe(s)) => s.clone(),
            _ => {
                self.note(format!("handshake: expected SUBSCRIBE, got {packet:?}"));
                return None;
            }
        };
        self.send(&suback(subscribe.pkid, subscribe.filters.len()))
            .ok()?;
        subscribe.filters.first().map(|f| f.path.clone())
    }

    /// Reads and records everything until the daemon closes or `deadline`.
    /// Never answers anything (not even PINGREQ).
    pub fn drain(&mut self, deadline: Instant) {
        while self.read_packet(deadline).is_ok() {}
    }

    /// Closes the connection at once (both directions).
    pub fn close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// `(header length, remaining length)` once the fixed header is complete.
fn frame(buf: &[u8]) -> Option<(usize, usize)> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let byte = *buf.get(1 + i)?;
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((2 + i, remaining));
        }
    }
    // Longer than MQTT allows: take it as the largest length, so the
    // connection waits until the deadline and the test reports it.
    Some((5, usize::MAX / 2))
}

/// MQTT's variable byte integer.
pub fn varint(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    iotbox::daemon::codec::put_varint(&mut out, n);
    out
}

/// SUBACK for packet id `pkid` granting QoS 1 to `n` filters, no properties.
pub fn suback(pkid: u16, n: usize) -> Vec<u8> {
    let mut out = vec![0x90];
    out.extend(varint(2 + 1 + n));
    out.extend(pkid.to_be_bytes());
    out.push(0); // properties length
    out.extend(std::iter::repeat_n(0x01, n));
    out
}

/// PUBLISH of `payload` to `topic` (any bytes, valid UTF-8 or not), QoS 1
/// with packet id `pkid` when given, QoS 0 otherwise; no properties.
pub fn publish(topic: &[u8], payload: &[u8], pkid: Option<u16>) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 5);
    body.extend((topic.len() as u16).to_be_bytes());
    body.extend(topic);
    if let Some(id) = pkid {
        body.extend(id.to_be_bytes());
    }
    body.push(0); // properties length
    body.extend(payload);
    let mut out = vec![if pkid.is_some() { 0x32 } else { 0x30 }];
    out.extend(varint(body.len()));
    out.extend(body);
    out
}
