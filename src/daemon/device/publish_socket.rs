//! The publish socket: local programs connect, write `topic\npayload`, close
//! or shut down their write side, and get one status line back.
//!
//! Each client is read to EOF without blocking anyone else, within limits:
//! a message size cap, a read deadline, and a cap on clients being read at
//! once (more wait in the kernel's backlog). A client whose message is
//! complete only waits for its status: it keeps its descriptor, not its
//! buffer, so a burst of write-and-close clients is published, not refused.
//! When descriptors run out, the oldest waiting clients are answered
//! `QUEUED` early (their message is kept) to make room.

use crate::message::{self, READ_TIMEOUT};
use crate::unix_socket;
use bytes::Bytes;
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Clients read at the same time. Each may hold up to one message in
/// memory, so this bounds memory; others wait in the listen backlog.
const MAX_READING: usize = 64;

/// After running out of descriptors with nobody to answer early, accepting
/// pauses this long instead of spinning.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// How many waiting clients to answer `QUEUED` when descriptors run out.
const EVICT_BATCH: usize = 16;

/// Token values from here up belong to clients; they are never reused, so a
/// late outcome can never reach a newer client.
const FIRST_CLIENT: usize = 1 << 16;

enum State {
    Reading {
        buf: Vec<u8>,
        deadline: Instant,
    },
    /// Message handed to the session; waiting for its outcome.
    Waiting,
}

struct Client {
    stream: UnixStream,
    state: State,
    /// Watched by the poll (only when its message did not arrive at once).
    registered: bool,
}

/// The status line a client gets (SPEC §3).
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
    pub token: Token,
    pub topic: Bytes,
    pub payload: Bytes,
}

pub struct PublishSocket {
    listener: Option<UnixListener>,
    path: PathBuf,
    clients: HashMap<Token, Client>,
    next_token: usize,
    reading: usize,
    /// Read deadlines in arrival order (so the front is the earliest);
    /// entries of clients no longer reading are skipped lazily.
    deadlines: VecDeque<(Instant, Token)>,
    /// Waiting clients, oldest first, for `QUEUED` eviction.
    waiting: VecDeque<Token>,
    accept_paused_until: Option<Instant>,
    /// Accepting stopped at the reading cap; resume when a slot frees.
    at_cap: bool,
}

impl PublishSocket {
    /// Binds the socket (see [`unix_socket::bind`]) with permissions `mode`.
    pub fn bind(
        path: &Path,
        mode: u32,
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
            clients: HashMap::new(),
            next_token: FIRST_CLIENT,
            reading: 0,
            deadlines: VecDeque::new(),
            waiting: VecDeque::new(),
            accept_paused_until: None,
            at_cap: false,
        })
    }

    pub fn is_client(token: Token) -> bool {
        token.0 >= FIRST_CLIENT
    }

    /// Accepts until the backlog is empty or the reading cap is reached.
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
        self.at_cap = false;
        loop {
            if self.reading >= MAX_READING {
                self.at_cap = true;
                return;
            }
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => {
                    let token = self.new_token();
                    let deadline = now + READ_TIMEOUT;
                    let state = State::Reading {
                        buf: Vec::new(),
                        deadline,
                    };
                    let client = Client {
                        stream,
                        state,
                        registered: false,
                    };
                    self.clients.insert(token, client);
                    self.reading += 1;
                    if let Some(sub) = self.read(now, token, max_payload, scratch, registry) {
                        done.push(sub);
                    } else if let Some(client) = self.clients.get_mut(&token) {
                        // Not complete yet: watch it, with a deadline.
                        if let Err(e) =
                            registry.register(&mut client.stream, token, Interest::READABLE)
                        {
                            log::warn!("publish socket: cannot watch a client: {e}");
                            self.finish(token, b"", registry);
                            continue;
                        }
                        client.registered = true;
                        self.deadlines.push_back((deadline, token));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_out_of_descriptors(&e) => {
                    if self.evict_waiting(registry) == 0 {
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

    /// Whether accepting should resume: a pause ended, or a reading slot
    /// freed up after the cap was reached.
    pub fn wants_accept(&self, now: Instant) -> bool {
        self.listener.is_some()
            && (self.accept_paused_until.is_some_and(|t| t <= now)
                || (self.at_cap && self.reading < MAX_READING))
    }

    /// A token for a new client. Tokens count up and are not reused while
    /// anything may still refer to them; on a 32-bit target they wrap after
    /// 2^32 clients, skipping those still connected.
    fn new_token(&mut self) -> Token {
        loop {
            let token = Token(self.next_token);
            self.next_token = self.next_token.checked_add(1).unwrap_or(FIRST_CLIENT);
            if !self.clients.contains_key(&token) {
                return token;
            }
        }
    }

    /// Answers the oldest waiting clients `QUEUED` and closes them.
    fn evict_waiting(&mut self, registry: &Registry) -> usize {
        let mut evicted = 0;
        while evicted < EVICT_BATCH {
            let Some(token) = self.waiting.pop_front() else {
                break;
            };
            if self.clients.contains_key(&token) {
                self.finish(token, b"QUEUED\n", registry);
                // Its outcome will find no client: the token is never reused.
                evicted += 1;
            }
        }
        evicted
    }

    /// A watched client is readable: see [`PublishSocket::read`].
    pub fn on_readable(
        &mut self,
        now: Instant,
        token: Token,
        max_payload: usize,
        scratch: &mut [u8],
        registry: &Registry,
    ) -> Option<Submission> {
        self.read(now, token, max_payload, scratch, registry)
    }

    /// Reads what a client sent, until it would block or ends. Returns its
    /// message once it is complete and valid; an invalid or oversized one
    /// is answered `ERR` here.
    fn read(
        &mut self,
        now: Instant,
        token: Token,
        max_payload: usize,
        scratch: &mut [u8],
        registry: &Registry,
    ) -> Option<Submission> {
        let client = self.clients.get_mut(&token)?;
        let State::Reading { buf, deadline } = &mut client.state else {
            // A waiting client wrote more or hung up: nothing to read for
            // us; its status goes out when the outcome is known.
            return None;
        };
        let cap = max_payload.saturating_add(message::MAX_TOPIC_LEN + 1);
        loop {
            match client.stream.read(scratch) {
                Ok(0) => break,
                Ok(n) => {
                    if buf.len() + n > cap {
                        let reply = format!(
                            "ERR message larger than {cap} bytes (payload limit {max_payload})\n"
                        );
                        self.finish(token, reply.as_bytes(), registry);
                        return None;
                    }
                    buf.extend_from_slice(&scratch[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("publish socket: client read failed: {e}");
                    self.finish(token, b"", registry);
                    return None;
                }
            }
        }
        // EOF: the message is complete, unless it took too long. A writer
        // that gives up (send's write timeout is longer than ours) closes
        // its end, and that EOF must not publish a truncated message.
        if now > *deadline {
            let reply = format!(
                "ERR no end of message within {} s\n",
                READ_TIMEOUT.as_secs()
            );
            self.finish(token, reply.as_bytes(), registry);
            return None;
        }
        let bytes = Bytes::from(std::mem::take(buf));
        client.state = State::Waiting;
        self.reading -= 1;
        // Stop watching: its status is written when the outcome is known.
        if client.registered {
            let _ = registry.deregister(&mut client.stream);
            client.registered = false;
        }
        match message::parse(&bytes).map(|m| m.topic.len()) {
            Ok(topic_len) => {
                self.waiting.push_back(token);
                Some(Submission {
                    token,
                    topic: bytes.slice(..topic_len),
                    payload: bytes.slice(topic_len + 1..),
                })
            }
            Err(why) => {
                log::warn!("publish socket: rejected a message: {why}");
                self.finish(token, format!("ERR {why}\n").as_bytes(), registry);
                None
            }
        }
    }

    /// Sends the outcome of a submitted message and closes the client.
    /// A client that already left is fine (the original `awsapp` never
    /// reads).
    pub fn reply(&mut self, token: Token, status: Status<'_>, registry: &Registry) {
        match status {
            Status::Ok => self.finish(token, b"OK\n", registry),
            Status::Queued => self.finish(token, b"QUEUED\n", registry),
            Status::Err(reason) => {
                self.finish(token, format!("ERR {reason}\n").as_bytes(), registry)
            }
        }
        // Outcomes mostly come in order: forget answered clients at the front.
        while self
            .waiting
            .front()
            .is_some_and(|t| !self.clients.contains_key(t))
        {
            self.waiting.pop_front();
        }
    }

    /// Writes `status` (best effort, non-blocking: a status line always fits
    /// in an empty socket buffer) and drops the client.
    fn finish(&mut self, token: Token, status: &[u8], registry: &Registry) {
        let Some(mut client) = self.clients.remove(&token) else {
            return;
        };
        if let State::Reading { .. } = client.state {
            self.reading -= 1;
        }
        if client.registered {
            let _ = registry.deregister(&mut client.stream);
        }
        if !status.is_empty() {
            if let Err(e) = client.stream.write_all(status) {
                log::debug!("publish socket: client left before its status: {e}");
            }
        }
    }

    /// The earliest read deadline, and when accepting resumes.
    pub fn next_deadline(&self) -> Option<Instant> {
        let read = self.deadlines.front().map(|(t, _)| *t);
        [read, self.accept_paused_until].into_iter().flatten().min()
    }

    /// Answers clients past their read deadline.
    pub fn handle_timeout(&mut self, now: Instant, registry: &Registry) {
        while let Some(&(deadline, token)) = self.deadlines.front() {
            let still_reading = matches!(
                self.clients.get(&token).map(|c| &c.state),
                Some(State::Reading { deadline: d, .. }) if *d == deadline
            );
            if still_reading && deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if still_reading {
                log::warn!(
                    "publish socket: a client sent no EOF within {} s",
                    READ_TIMEOUT.as_secs()
                );
                let reply = format!(
                    "ERR no end of message within {} s: close the connection or shut down its write side after writing\n",
                    READ_TIMEOUT.as_secs()
                );
                self.finish(token, reply.as_bytes(), registry);
            }
        }
    }

    /// Stops accepting and removes the socket file. Clients still being read
    /// are answered `ERR`; waiting ones keep waiting for their outcome.
    pub fn stop_accepting(&mut self, registry: &Registry) {
        if let Some(mut listener) = self.listener.take() {
            let _ = registry.deregister(&mut listener);
            unix_socket::remove(&self.path);
        }
        let reading: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Reading { .. }))
            .map(|(t, _)| *t)
            .collect();
        for token in reading {
            self.finish(token, b"ERR the daemon is shutting down\n", registry);
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

fn is_out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (24) and ENFILE (23).
    matches!(e.raw_os_error(), Some(23 | 24))
}
