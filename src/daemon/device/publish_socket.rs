//! The publish socket: local programs connect, write `topic\npayload`, close
//! or shut down their write side, and get one status line back (`OK`,
//! `ERR reason`, or `QUEUED`).
//!
//! The policy is [`Table`], pure and tested in virtual time; [`PublishSocket`]
//! only accepts, reads and writes. Every client that has something to read
//! is read; nobody waits for a reading slot, so a crowd of silent
//! connections cannot delay a good client. What bounds them instead:
//!
//! - a client must finish its message within [`READ_TIMEOUT`] of connecting,
//!   or it is answered `ERR` and closed;
//! - at most [`MAX_INCOMPLETE`] clients may be connected without having
//!   finished, and their partial messages may hold at most
//!   [`BUFFER_BUDGET`] bytes: past either, the oldest of them is answered
//!   `ERR` and closed to make room;
//! - a message larger than the payload limit is answered `ERR` at once.
//!
//! A client whose message is complete only waits for its status: it keeps
//! its descriptor, not its buffer, so a burst of write-and-close clients is
//! published, not refused. Clients may hold all descriptors but a reserve
//! (the spool, the broker and the delivery need theirs): at that cap, and
//! when descriptors run out anyway, the oldest waiting clients whose
//! message is durable in the spool are answered `QUEUED` early (their
//! message is kept) to make room; with none of those yet, accepting waits.

use crate::message::{self, READ_TIMEOUT};
use crate::output::{LOG_INTERVAL, Throttle};
use crate::sys::{interrupted, out_of_descriptors, would_block};
use crate::unix_socket;
use bytes::Bytes;
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Clients connected that have not finished their message. Each costs a
/// descriptor and a table entry; beyond this the oldest is closed.
pub const MAX_INCOMPLETE: usize = 1024;

/// Bytes of unfinished messages held at once (raised to two whole messages
/// when `--max_payload` is larger): bounds what slow writers cost.
pub const BUFFER_BUDGET: usize = 4 << 20;

/// After running out of descriptors with nobody to answer early, accepting
/// pauses this long instead of spinning.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// How many waiting clients to answer `QUEUED` when descriptors run out.
const EVICT_BATCH: usize = 16;

/// Token values from here up belong to clients.
const FIRST_CLIENT: usize = 1 << 16;

/// A publish socket client. Ids count up and are never reused, so a late
/// outcome can never reach a newer client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(u64);

impl ClientId {
    /// The poll token of this client.
    pub fn token(self) -> Token {
        // Wraps only after 2^32 clients on a 32-bit target; a stale token
        // then finds no client, or the table skips ids still in use.
        Token(FIRST_CLIENT.wrapping_add(self.0 as usize))
    }

    /// The client a poll token belongs to, if it is a client's.
    pub fn from_token(token: Token) -> Option<ClientId> {
        token
            .0
            .checked_sub(FIRST_CLIENT)
            .map(|n| ClientId(n as u64))
    }
}

/// The status line a client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<'a> {
    /// The broker has it.
    Ok,
    /// Accepted, not confirmed by the broker (`send` exits 3).
    Queued,
    /// Not published, and never will be.
    Err(&'a str),
}

/// A complete, valid message read from a client.
pub struct Submission {
    pub id: ClientId,
    pub topic: Bytes,
    pub payload: Bytes,
}

#[derive(Debug)]
enum Phase {
    Reading {
        buf: Vec<u8>,
    },
    /// Message handed to the session; waiting for its outcome.
    Waiting,
}

#[derive(Debug)]
struct Client<S> {
    stream: S,
    phase: Phase,
    since: Instant,
    /// Watched by the poll (only when its message did not arrive at once).
    registered: bool,
}

/// Why a client is closed without its message being taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It did not finish within [`READ_TIMEOUT`].
    TimedOut,
    /// Closed to make room for newer clients.
    Evicted,
    /// The message is larger than the payload limit allows.
    TooLarge { cap: usize },
}

impl Refusal {
    fn line(&self) -> String {
        match self {
            Refusal::TimedOut => format!(
                "ERR no end of message within {} s: close the connection or shut down its write side after writing\n",
                READ_TIMEOUT.as_secs()
            ),
            Refusal::Evicted => "ERR too many unfinished connections: this oldest one was closed; finish a message before opening more\n".into(),
            Refusal::TooLarge { cap } => format!("ERR message larger than {cap} bytes\n"),
        }
    }
}

/// A client closed by the table to make room: its connection, whether the
/// poll watches it, and why.
pub type Closed<S> = (ClientId, S, bool, Refusal);

/// The client table and its limits, without I/O. `S` is the connection
/// (a socket in the daemon, `()` in tests).
#[derive(Debug)]
pub struct Table<S> {
    clients: HashMap<ClientId, Client<S>>,
    next_id: u64,
    /// Unfinished clients. Ids count up, so the first is the oldest: the
    /// next deadline, and the first to go when room is needed.
    incomplete: BTreeSet<ClientId>,
    /// Clients whose message is durable, waiting for their outcome; the
    /// oldest are answered `QUEUED` first when descriptors run out.
    waiting: BTreeSet<ClientId>,
    buffered: usize,
    budget: usize,
}

impl<S> Table<S> {
    pub fn new(max_payload: usize) -> Table<S> {
        Table {
            clients: HashMap::new(),
            next_id: 0,
            incomplete: BTreeSet::new(),
            waiting: BTreeSet::new(),
            buffered: 0,
            budget: BUFFER_BUDGET.max(max_payload.saturating_mul(2)),
        }
    }

    /// Takes a new client. Returns its id and the clients closed to make
    /// room (the oldest unfinished ones), for the caller to answer.
    pub fn admit(&mut self, now: Instant, stream: S) -> (ClientId, Vec<Closed<S>>) {
        let id = loop {
            let id = ClientId(self.next_id);
            self.next_id = self.next_id.wrapping_add(1);
            if !self.clients.contains_key(&id) {
                break id;
            }
        };
        self.clients.insert(
            id,
            Client {
                stream,
                phase: Phase::Reading { buf: Vec::new() },
                since: now,
                registered: false,
            },
        );
        self.incomplete.insert(id);
        let mut evict = Vec::new();
        while self.incomplete.len() > MAX_INCOMPLETE {
            match self.oldest_incomplete() {
                Some(old) if old != id => {
                    if let Some((stream, watched)) = self.remove(old) {
                        evict.push((old, stream, watched, Refusal::Evicted));
                    }
                }
                _ => break,
            }
        }
        (id, evict)
    }

    /// Bytes read from a client. Returns the clients closed: this one if
    /// the message is too large, or the oldest unfinished ones when the
    /// buffer budget is spent.
    pub fn append(&mut self, id: ClientId, bytes: &[u8], max_payload: usize) -> Vec<Closed<S>> {
        let cap = max_payload.saturating_add(message::MAX_TOPIC_LEN + 1);
        let Some(Client {
            phase: Phase::Reading { buf },
            ..
        }) = self.clients.get_mut(&id)
        else {
            return Vec::new();
        };
        if buf.len() + bytes.len() > cap {
            return self
                .remove(id)
                .map(|(stream, watched)| (id, stream, watched, Refusal::TooLarge { cap }))
                .into_iter()
                .collect();
        }
        buf.extend_from_slice(bytes);
        self.buffered += bytes.len();
        let mut closed = Vec::new();
        while self.buffered > self.budget {
            let Some(old) = self.oldest_incomplete() else {
                break;
            };
            if let Some((stream, watched)) = self.remove(old) {
                closed.push((old, stream, watched, Refusal::Evicted));
            }
        }
        closed
    }

    /// The client closed its write side: its message is complete, unless
    /// it took too long (a writer that gives up closes its end, and that
    /// EOF must not publish a truncated message).
    pub fn complete(&mut self, now: Instant, id: ClientId) -> Result<Bytes, Refusal> {
        let client = self.clients.get_mut(&id).ok_or(Refusal::Evicted)?;
        if now > client.since + READ_TIMEOUT {
            return Err(Refusal::TimedOut);
        }
        let Phase::Reading { buf } = std::mem::replace(&mut client.phase, Phase::Waiting) else {
            return Err(Refusal::Evicted);
        };
        self.buffered -= buf.len();
        self.incomplete.remove(&id);
        Ok(Bytes::from(buf))
    }

    /// The client's message is durable: it may be answered `QUEUED` early.
    pub fn mark_durable(&mut self, id: ClientId) {
        if self.clients.contains_key(&id) {
            self.waiting.insert(id);
        }
    }

    /// Forgets a client, returning its connection.
    /// Clients connected, in any phase.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    pub fn remove(&mut self, id: ClientId) -> Option<(S, bool)> {
        self.incomplete.remove(&id);
        self.waiting.remove(&id);
        let client = self.clients.remove(&id)?;
        if let Phase::Reading { buf } = &client.phase {
            self.buffered -= buf.len();
        }
        Some((client.stream, client.registered))
    }

    /// Unfinished clients past their deadline, oldest first.
    pub fn expired(&self, now: Instant) -> Vec<ClientId> {
        self.incomplete
            .iter()
            .take_while(|id| {
                self.clients
                    .get(id)
                    .is_some_and(|c| c.since + READ_TIMEOUT <= now)
            })
            .copied()
            .collect()
    }

    /// The earliest read deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        let oldest = self.incomplete.first()?;
        self.clients.get(oldest).map(|c| c.since + READ_TIMEOUT)
    }

    /// The oldest client waiting for its outcome, to answer early.
    pub fn oldest_waiting(&self) -> Option<ClientId> {
        self.waiting.first().copied()
    }

    /// The oldest client still unfinished.
    fn oldest_incomplete(&self) -> Option<ClientId> {
        self.incomplete.first().copied()
    }

    /// Clients still being read.
    pub fn reading(&self) -> Vec<ClientId> {
        self.clients
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Reading { .. }))
            .map(|(id, _)| *id)
            .collect()
    }

    fn get_mut(&mut self, id: ClientId) -> Option<&mut Client<S>> {
        self.clients.get_mut(&id)
    }
}

pub struct PublishSocket {
    listener: Option<UnixListener>,
    path: PathBuf,
    table: Table<UnixStream>,
    accept_paused_until: Option<Instant>,
    /// Clients at most: the descriptors not held in reserve.
    max_clients: usize,
    /// Accepting stopped at `max_clients` with nobody to answer early.
    capped: bool,
    /// Refusals (bad messages, timeouts, evictions): logged at most once a
    /// minute with a count.
    refusals: Throttle,
    refused_total: u64,
}

impl PublishSocket {
    /// Binds the socket (see [`unix_socket::bind`]) with permissions `mode`.
    pub fn bind(
        path: &Path,
        mode: u32,
        max_payload: usize,
        max_clients: usize,
        registry: &Registry,
        token: Token,
    ) -> Result<PublishSocket, String> {
        let std_listener = unix_socket::bind(path).map_err(|e| e.to_string())?;
        let cleanup = |e: io::Error| {
            unix_socket::remove(path);
            format!("cannot set up {}: {e}", path.display())
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(cleanup)?;
        std_listener.set_nonblocking(true).map_err(cleanup)?;
        let mut listener = UnixListener::from_std(std_listener);
        registry
            .register(&mut listener, token, Interest::READABLE)
            .map_err(cleanup)?;
        Ok(PublishSocket {
            listener: Some(listener),
            path: path.to_owned(),
            table: Table::new(max_payload),
            accept_paused_until: None,
            max_clients,
            capped: false,
            refusals: Throttle::new(LOG_INTERVAL),
            refused_total: 0,
        })
    }

    /// Accepts until the backlog is empty.
    ///
    /// Each new client is read at once: a client that writes and shuts down
    /// (as `send` and the original `awsapp` do) has usually sent everything
    /// by now, and then costs no poll registration and no extra wake-up.
    /// Complete messages are appended to `done`.
    pub fn accept(
        &mut self,
        now: Instant,
        registry: &Registry,
        max_payload: usize,
        scratch: &mut [u8],
        done: &mut Vec<Submission>,
    ) {
        if self.accept_paused_until.is_some_and(|t| now < t) {
            return;
        }
        self.accept_paused_until = None;
        self.capped = false;
        loop {
            if self.table.len() >= self.max_clients && self.answer_waiting_early(registry) == 0 {
                // Until a message is durable (end of this turn) or a
                // client is answered.
                self.capped = true;
                return;
            }
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => {
                    let (id, closed) = self.table.admit(now, stream);
                    self.answer_closed(now, closed, registry);
                    if let Some(sub) = self.read(now, id, max_payload, scratch, registry) {
                        done.push(sub);
                    } else if let Some(client) = self.table.get_mut(id) {
                        // Not complete yet: watch it.
                        if let Err(e) =
                            registry.register(&mut client.stream, id.token(), Interest::READABLE)
                        {
                            log::warn!("publish socket: cannot watch a client: {e}");
                            self.close(id, b"", registry);
                            continue;
                        }
                        client.registered = true;
                    }
                }
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(e) if out_of_descriptors(&e) => {
                    if self.answer_waiting_early(registry) == 0 {
                        log::warn!("publish socket: out of file descriptors; pausing accept");
                        self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                        return;
                    }
                }
                Err(e) => {
                    log::warn!("publish socket: accept failed: {e}");
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
            }
        }
    }

    /// Whether accepting should resume now: a pause ended, or the cap on
    /// clients has room again (or someone to answer early).
    pub fn wants_accept(&self, now: Instant) -> bool {
        let uncapped = self.capped
            && (self.table.len() < self.max_clients || self.table.oldest_waiting().is_some());
        self.listener.is_some() && (uncapped || self.accept_paused_until.is_some_and(|t| t <= now))
    }

    /// Answers the oldest waiting clients `QUEUED` and closes them.
    fn answer_waiting_early(&mut self, registry: &Registry) -> usize {
        let mut answered = 0;
        while answered < EVICT_BATCH {
            let Some(id) = self.table.oldest_waiting() else {
                break;
            };
            // Its outcome will find no client: ids are never reused.
            self.close(id, b"QUEUED\n", registry);
            answered += 1;
        }
        answered
    }

    /// A watched client is readable: reads it until it would block or ends;
    /// returns its message once complete and valid.
    pub fn on_readable(
        &mut self,
        now: Instant,
        token: Token,
        max_payload: usize,
        scratch: &mut [u8],
        registry: &Registry,
    ) -> Option<Submission> {
        let id = ClientId::from_token(token)?;
        self.read(now, id, max_payload, scratch, registry)
    }

    /// Reads what a client sent, until it would block or ends. Returns its
    /// message once it is complete and valid; an invalid, late or oversized
    /// one is answered `ERR` here.
    fn read(
        &mut self,
        now: Instant,
        id: ClientId,
        max_payload: usize,
        scratch: &mut [u8],
        registry: &Registry,
    ) -> Option<Submission> {
        loop {
            let client = self.table.get_mut(id)?;
            if !matches!(client.phase, Phase::Reading { .. }) {
                // A waiting client wrote more or hung up: nothing to read
                // for us; its status goes out when the outcome is known.
                return None;
            }
            match client.stream.read(scratch) {
                Ok(0) => break,
                Ok(n) => {
                    let closed = self.table.append(id, &scratch[..n], max_payload);
                    self.answer_closed(now, closed, registry);
                }
                Err(e) if would_block(&e) => return None,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    log::debug!("publish socket: client read failed: {e}");
                    self.close(id, b"", registry);
                    return None;
                }
            }
        }
        let bytes = match self.table.complete(now, id) {
            Ok(bytes) => bytes,
            Err(why) => {
                self.refuse(now, id, why, registry);
                return None;
            }
        };
        // Stop watching: its status is written when the outcome is known.
        if let Some(client) = self.table.get_mut(id) {
            if client.registered {
                let _ = registry.deregister(&mut client.stream);
                client.registered = false;
            }
        }
        match message::parse(&bytes).map(|m| m.topic.len()) {
            Ok(topic_len) => Some(Submission {
                id,
                topic: bytes.slice(..topic_len),
                payload: bytes.slice(topic_len + 1..),
            }),
            Err(why) => {
                self.note_refusal(now, &format!("rejected a message: {why}"));
                self.close(id, format!("ERR {why}\n").as_bytes(), registry);
                None
            }
        }
    }

    /// Answers the clients the table closed, each with its refusal.
    fn answer_closed(
        &mut self,
        now: Instant,
        closed: Vec<Closed<UnixStream>>,
        registry: &Registry,
    ) {
        for (_, mut stream, watched, why) in closed {
            let line = why.line();
            self.note_refusal(now, line.trim_end());
            if watched {
                let _ = registry.deregister(&mut stream);
            }
            let _ = stream.write_all(line.as_bytes());
        }
    }

    /// Closes a client with its refusal, logged (at most once a minute).
    fn refuse(&mut self, now: Instant, id: ClientId, why: Refusal, registry: &Registry) {
        let line = why.line();
        self.note_refusal(now, line.trim_end());
        self.close(id, line.as_bytes(), registry);
    }

    fn note_refusal(&mut self, now: Instant, what: &str) {
        self.refused_total += 1;
        if self.refusals.note(now).is_some() {
            log::warn!(
                "publish socket: {what} ({} refused so far)",
                self.refused_total
            );
        }
    }

    /// The client's message is durable (see [`Table::mark_durable`]).
    pub fn mark_durable(&mut self, id: ClientId) {
        self.table.mark_durable(id);
    }

    /// Sends the outcome of a submitted message and closes the client.
    /// A client that already left is fine (the original `awsapp` never
    /// reads).
    pub fn reply(&mut self, id: ClientId, status: Status<'_>, registry: &Registry) {
        match status {
            Status::Ok => self.close(id, b"OK\n", registry),
            Status::Queued => self.close(id, b"QUEUED\n", registry),
            Status::Err(reason) => self.close(id, format!("ERR {reason}\n").as_bytes(), registry),
        }
    }

    /// Writes `status` (best effort, non-blocking: a status line always fits
    /// in an empty socket buffer) and drops the client.
    fn close(&mut self, id: ClientId, status: &[u8], registry: &Registry) {
        let Some((mut stream, registered)) = self.table.remove(id) else {
            return;
        };
        if registered {
            let _ = registry.deregister(&mut stream);
        }
        if !status.is_empty() {
            if let Err(e) = stream.write_all(status) {
                log::debug!("publish socket: client left before its status: {e}");
            }
        }
    }

    /// The earliest read deadline, when accepting resumes, or when a count
    /// of refusals is due in the log.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.table.next_deadline(),
            self.accept_paused_until,
            self.refusals.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Answers clients past their read deadline.
    pub fn handle_timeout(&mut self, now: Instant, registry: &Registry) {
        for id in self.table.expired(now) {
            self.refuse(now, id, Refusal::TimedOut, registry);
        }
        if let Some(n) = self.refusals.flush(now) {
            log::warn!(
                "publish socket: {n} more client(s) refused in the last {} s ({} so far)",
                LOG_INTERVAL.as_secs(),
                self.refused_total
            );
        }
    }

    /// Stops accepting and removes the socket file. Clients still being read
    /// are answered `ERR`; waiting ones keep waiting for their outcome.
    pub fn stop_accepting(&mut self, registry: &Registry) {
        if let Some(mut listener) = self.listener.take() {
            let _ = registry.deregister(&mut listener);
            unix_socket::remove(&self.path);
        }
        for id in self.table.reading() {
            self.close(id, b"ERR the daemon is shutting down\n", registry);
        }
    }
}

impl Drop for PublishSocket {
    fn drop(&mut self) {
        if self.listener.is_some() {
            unix_socket::remove(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_ids_map_both_ways_above_the_fixed_tokens() {
        let id = ClientId(7);
        assert_eq!(ClientId::from_token(id.token()), Some(id));
        assert_eq!(ClientId::from_token(Token(4)), None);
    }

    #[test]
    fn silent_clients_cost_no_slot_and_the_oldest_go_past_the_cap() {
        let t0 = Instant::now();
        let mut t: Table<()> = Table::new(131_072);
        let ids = |closed: Vec<Closed<()>>| -> Vec<ClientId> {
            closed.into_iter().map(|(id, ..)| id).collect()
        };
        let mut evicted = Vec::new();
        for _ in 0..MAX_INCOMPLETE + 3 {
            let (_, e) = t.admit(t0, ());
            evicted.extend(ids(e));
        }
        assert_eq!(evicted, [ClientId(0), ClientId(1), ClientId(2)]);
        // A good client still gets in and completes at once.
        let (good, e) = t.admit(t0, ());
        assert_eq!(ids(e), [ClientId(3)]);
        assert!(t.append(good, b"t\nhello", 131_072).is_empty());
        assert_eq!(
            t.complete(t0, good).unwrap(),
            Bytes::from_static(b"t\nhello")
        );
    }

    #[test]
    fn read_deadlines_expire_oldest_first() {
        let t0 = Instant::now();
        let mut t: Table<()> = Table::new(100);
        let (a, _) = t.admit(t0, ());
        let (b, _) = t.admit(t0 + Duration::from_secs(3), ());
        let (c, _) = t.admit(t0 + Duration::from_secs(4), ());
        t.append(b, b"x\ny", 100);
        t.complete(t0 + Duration::from_secs(5), b).unwrap();
        assert_eq!(t.next_deadline(), Some(t0 + READ_TIMEOUT));
        assert_eq!(t.expired(t0 + READ_TIMEOUT), [a]);
        t.remove(a);
        assert_eq!(
            t.next_deadline(),
            Some(t0 + Duration::from_secs(4) + READ_TIMEOUT),
            "the finished one has no deadline"
        );
        assert_eq!(t.expired(t0 + Duration::from_secs(60)), [c]);
    }

    #[test]
    fn a_late_eof_is_refused_not_published_truncated() {
        let t0 = Instant::now();
        let mut t: Table<()> = Table::new(100);
        let (a, _) = t.admit(t0, ());
        t.append(a, b"x\npart", 100);
        assert_eq!(
            t.complete(t0 + READ_TIMEOUT + Duration::from_millis(1), a),
            Err(Refusal::TimedOut)
        );
    }

    #[test]
    fn size_cap_and_buffer_budget() {
        let t0 = Instant::now();
        let mut t: Table<()> = Table::new(10);
        let (a, _) = t.admit(t0, ());
        let cap = 10 + message::MAX_TOPIC_LEN + 1;
        assert_eq!(
            t.append(a, &vec![b'x'; cap + 1], 10),
            [(a, (), false, Refusal::TooLarge { cap })]
        );
        // Slow writers share the budget; the oldest goes first.
        let mut t: Table<()> = Table::new(100_000);
        let chunk = vec![b'x'; 100_000];
        let ids: Vec<_> = (0..60).map(|_| t.admit(t0, ()).0).collect();
        let mut refused = Vec::new();
        for id in &ids {
            refused.extend(t.append(*id, &chunk, 100_000));
        }
        assert!(t.buffered <= BUFFER_BUDGET);
        assert_eq!(
            refused.first(),
            Some(&(ids[0], (), false, Refusal::Evicted))
        );
        assert!(refused.iter().all(|(.., r)| *r == Refusal::Evicted));
    }

    #[test]
    fn waiting_clients_are_answered_early_oldest_first() {
        let t0 = Instant::now();
        let mut t: Table<()> = Table::new(100);
        let ids: Vec<_> = (0..3).map(|_| t.admit(t0, ()).0).collect();
        for id in ids.iter().rev() {
            t.append(*id, b"t\n", 100);
            t.complete(t0, *id).unwrap();
        }
        assert_eq!(t.oldest_waiting(), None, "nothing durable yet");
        for id in ids.iter().rev() {
            t.mark_durable(*id);
        }
        assert_eq!(t.oldest_waiting(), Some(ids[0]), "the oldest connection");
        t.remove(ids[0]);
        assert_eq!(t.oldest_waiting(), Some(ids[1]));
        t.remove(ids[1]);
        t.remove(ids[2]);
        assert_eq!(t.oldest_waiting(), None);
    }
}
