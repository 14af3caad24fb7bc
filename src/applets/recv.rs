//! `recv SOCKET COUNT`: listen on the delivery socket and print each message
//! exactly as the original `awsapp recv` did:
//!
//! ```text
//! wait message...
//! Receive <N> Byte
//! <payload>
//! ```
//!
//! A message is one connection's bytes: the sender connects, writes, closes.
//! Unlike the original (1023 bytes at most, one sender at a time), every
//! connection is read to EOF without blocking, all of them on one `mio`
//! poll together with the listener and the signals: a sender that connects
//! and writes nothing delays no other message, and each message is printed
//! when its sender closes (so in order of completion). COUNT messages are
//! printed, then recv exits 0 (COUNT 0: no limit).
//!
//! Each sender has limits: it must close within 10 s of being accepted
//! (`READ_DEADLINE`, the socket protocol's read timeout), or it is dropped (not printed) with a warning; beyond
//! 16 MiB (`MAX_MESSAGE`) the rest is read and discarded, and what was kept
//! is printed with a warning. At most 64 senders (`MAX_READING`) are read
//! at once; more wait in the kernel's listen backlog until one finishes.
//!
//! SIGINT and SIGTERM remove the socket and exit 0 at once, whoever is
//! connected.
//!
//! Extensions: `--topic` for `pubsub --deliver_topic` framing (prints
//! `Topic: <topic>` before the payload; N counts the payload only), `--exec
//! CMD` (runs `/bin/sh -c CMD` per message after printing it, one at a time,
//! payload on stdin, `IOTBOX_TOPIC` set when known, a failing exit status
//! logged), `--raw` (payloads only).

use crate::cli::{self, RecvArgs};
use crate::error::{Error, runtime};
use crate::message;
use crate::sys::{interrupted, would_block};
use crate::unix_socket;
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
/// Client tokens count up from here and are not reused while in use.
const FIRST_CLIENT: usize = 2;

/// A sender must close its connection within this long of being accepted.
const READ_DEADLINE: Duration = message::READ_TIMEOUT;

/// Largest message kept; the rest is read and discarded. AWS IoT's limit is
/// 128 KiB, so this only guards against a runaway local writer.
const MAX_MESSAGE: usize = 16 << 20;

/// Senders read at once, as for the daemon's publish socket; others wait in
/// the listen backlog, nothing is lost.
const MAX_READING: usize = 64;

/// After a failed accept (out of descriptors, say), accepting is tried again
/// this much later rather than at once in a loop.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);

/// Bytes read per `read(2)`.
const READ_CHUNK: usize = 64 * 1024;

pub fn main(command: &str, args: &[&str]) -> Result<(), Error> {
    match cli::parse::<RecvArgs>(command, args)? {
        Some(flags) => {
            crate::output::init_tool_logging();
            run(&flags)
        }
        None => Ok(()),
    }
}

/// Removes the socket when recv ends, however it ends.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        unix_socket::remove(&self.0);
    }
}

/// One message as it arrives: the first [`MAX_MESSAGE`] bytes kept, the
/// rest only counted.
#[derive(Debug, Default)]
struct Message {
    kept: Vec<u8>,
    discarded: u64,
}

impl Message {
    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_MESSAGE.saturating_sub(self.kept.len());
        let (keep, rest) = bytes.split_at(bytes.len().min(room));
        self.kept.extend_from_slice(keep);
        self.discarded += rest.len() as u64;
    }

    /// Bytes received so far, kept or not.
    fn received(&self) -> u64 {
        self.kept.len() as u64 + self.discarded
    }

    /// The bytes to print, with a warning if some were discarded.
    fn finish(self) -> Vec<u8> {
        if self.discarded > 0 {
            log::warn!(
                "recv: message larger than {MAX_MESSAGE} bytes; {} bytes dropped",
                self.discarded
            );
        }
        self.kept
    }
}

/// How far reading a sender got.
#[derive(Debug)]
enum Progress {
    /// Everything available was read; more may come.
    Pending,
    /// The sender closed: the message is complete.
    Complete,
    Failed(io::Error),
}

/// Reads `source` into `message` until it would block or ends.
fn read_available(source: &mut impl Read, message: &mut Message, scratch: &mut [u8]) -> Progress {
    loop {
        match source.read(scratch) {
            Ok(0) => return Progress::Complete,
            Ok(n) => message.push(&scratch[..n]),
            Err(e) if would_block(&e) => return Progress::Pending,
            Err(e) if interrupted(&e) => {}
            Err(e) => return Progress::Failed(e),
        }
    }
}

/// A sender being read.
struct Sender<S> {
    stream: S,
    message: Message,
    /// Dropped if not complete by then.
    deadline: Instant,
}

/// The senders being read, and when to give up on each: the policy, apart
/// from the I/O (`S` is the connection; tests use `()`).
struct Senders<S> {
    reading: HashMap<Token, Sender<S>>,
    next_token: usize,
}

impl<S> Senders<S> {
    fn new() -> Senders<S> {
        Senders {
            reading: HashMap::new(),
            next_token: FIRST_CLIENT,
        }
    }

    /// Whether another sender may be accepted now.
    fn has_room(&self) -> bool {
        self.reading.len() < MAX_READING
    }

    /// Starts reading a sender accepted at `now`; returns its token and
    /// the sender (to watch its stream under that token).
    fn add(&mut self, stream: S, now: Instant) -> (Token, &mut Sender<S>) {
        let token = loop {
            let token = Token(self.next_token);
            self.next_token = self.next_token.checked_add(1).unwrap_or(FIRST_CLIENT);
            if !self.reading.contains_key(&token) {
                break token;
            }
        };
        let sender = Sender {
            stream,
            message: Message::default(),
            deadline: now + READ_DEADLINE,
        };
        (token, self.reading.entry(token).or_insert(sender))
    }

    fn get_mut(&mut self, token: Token) -> Option<&mut Sender<S>> {
        self.reading.get_mut(&token)
    }

    fn remove(&mut self, token: Token) -> Option<Sender<S>> {
        self.reading.remove(&token)
    }

    /// The earliest deadline, if anyone is being read.
    fn next_deadline(&self) -> Option<Instant> {
        self.reading.values().map(|s| s.deadline).min()
    }

    /// Removes and returns the senders whose deadline has passed at `now`.
    fn expire(&mut self, now: Instant) -> Vec<Sender<S>> {
        let late: Vec<Token> = self
            .reading
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(&t, _)| t)
            .collect();
        late.into_iter()
            .filter_map(|t| self.reading.remove(&t))
            .collect()
    }
}

/// How long the poll may wait at `now`: until the earliest of `wakes`, or
/// forever if there is none.
fn poll_timeout(
    now: Instant,
    wakes: impl IntoIterator<Item = Option<Instant>>,
) -> Option<Duration> {
    wakes
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(now))
}

/// Whether recv goes on after a message.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    More,
    Done,
}

struct Recv<'a> {
    flags: &'a RecvArgs,
    poll: Poll,
    listener: UnixListener,
    signals: Signals,
    senders: Senders<UnixStream>,
    /// The listen backlog may hold connections not yet accepted (the
    /// listener is edge-triggered: no new event says so).
    backlog: bool,
    /// No accepting before this, after a failed accept.
    accept_retry: Option<Instant>,
    scratch: Vec<u8>,
    printed: u64,
}

fn run(flags: &RecvArgs) -> Result<(), Error> {
    let listener = unix_socket::bind(&flags.socket).map_err(|e| runtime!("recv: {e}"))?;
    let _socket_file = SocketFile(flags.socket.clone());
    let io_err = |e: io::Error| runtime!("recv: {e}");
    listener.set_nonblocking(true).map_err(io_err)?;
    let mut listener = UnixListener::from_std(listener);

    let poll = Poll::new().map_err(io_err)?;
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(io_err)?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(io_err)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(io_err)?;

    let mut recv = Recv {
        flags,
        poll,
        listener,
        signals,
        senders: Senders::new(),
        backlog: true,
        accept_retry: None,
        scratch: vec![0; READ_CHUNK],
        printed: 0,
    };
    let mut events = Events::with_capacity(64);
    if !flags.raw {
        crate::output::say("wait message...");
    }
    loop {
        let timeout = poll_timeout(
            Instant::now(),
            [recv.senders.next_deadline(), recv.accept_retry],
        );
        match recv.poll.poll(&mut events, timeout) {
            Err(e) if interrupted(&e) => continue,
            other => other.map_err(io_err)?,
        }
        if events.iter().any(|e| e.token() == SIGNALS) && recv.signalled() {
            return Ok(());
        }
        for event in &events {
            let flow = match event.token() {
                LISTENER => {
                    recv.backlog = true;
                    Flow::More
                }
                SIGNALS => Flow::More,
                token => recv.read(token),
            };
            if flow == Flow::Done {
                return Ok(());
            }
        }
        recv.expire(Instant::now());
        if recv.accept() == Flow::Done {
            return Ok(());
        }
    }
}

impl Recv<'_> {
    /// Accepts while the backlog may hold connections and there is room,
    /// reading each new sender at once (one that wrote and closed is
    /// complete already).
    fn accept(&mut self) -> Flow {
        if self.accept_retry.is_some_and(|t| Instant::now() < t) {
            return Flow::More;
        }
        self.accept_retry = None;
        while self.backlog && self.senders.has_room() {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if would_block(&e) => {
                    self.backlog = false;
                    break;
                }
                Err(e) if interrupted(&e) => continue,
                Err(e) => {
                    log::warn!(
                        "recv: cannot accept a connection ({e}); trying again in {} s",
                        ACCEPT_RETRY.as_secs()
                    );
                    self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                    break;
                }
            };
            let (token, sender) = self.senders.add(stream, Instant::now());
            let watched =
                self.poll
                    .registry()
                    .register(&mut sender.stream, token, Interest::READABLE);
            if let Err(e) = watched {
                log::warn!("recv: cannot watch a connection ({e}); it was closed unread");
                self.senders.remove(token);
                continue;
            }
            if self.read(token) == Flow::Done {
                return Flow::Done;
            }
        }
        Flow::More
    }

    /// SIGINT or SIGTERM arrived.
    fn signalled(&mut self) -> bool {
        self.signals.pending().next().is_some()
    }

    /// Reads a sender that may have something; prints its message if it is
    /// complete.
    fn read(&mut self, token: Token) -> Flow {
        let Some(sender) = self.senders.get_mut(token) else {
            // Finished or dropped earlier in this round.
            return Flow::More;
        };
        match read_available(&mut sender.stream, &mut sender.message, &mut self.scratch) {
            Progress::Pending => Flow::More,
            Progress::Complete => match self.senders.remove(token) {
                Some(sender) => self.deliver(&sender.message.finish()),
                None => Flow::More,
            },
            Progress::Failed(e) => {
                if let Some(sender) = self.senders.remove(token) {
                    log::warn!(
                        "recv: reading a message failed after {} bytes ({e}); it was dropped",
                        sender.message.received()
                    );
                }
                Flow::More
            }
        }
    }

    /// Drops the senders that missed their deadline, one warning each.
    fn expire(&mut self, now: Instant) {
        for sender in self.senders.expire(now) {
            log::warn!(
                "recv: a sender did not close its connection within {} s ({} bytes read); \
                 its message was dropped: a sender must write the message and close",
                READ_DEADLINE.as_secs(),
                sender.message.received()
            );
        }
    }

    /// Prints a complete message (and runs `--exec`); counts it.
    fn deliver(&mut self, data: &[u8]) -> Flow {
        let flags = self.flags;
        let (topic, payload) = split_topic(data, flags.topic);
        print_message(topic, payload, flags.raw);
        if let Some(cmd) = &flags.exec {
            run_command(cmd, topic, payload);
        }
        self.printed += 1;
        // A burst of complete messages (or a slow --exec) must not hold off
        // a signal until the backlog is empty.
        if (flags.count != 0 && self.printed >= flags.count) || self.signalled() {
            return Flow::Done;
        }
        if !flags.raw {
            crate::output::say("wait message...");
        }
        Flow::More
    }
}

/// With `--topic`, splits `topic\npayload`; a message without that framing
/// is all payload (and said so).
fn split_topic(data: &[u8], framed: bool) -> (Option<&str>, &[u8]) {
    if !framed {
        return (None, data);
    }
    match message::parse(data) {
        Ok(m) => (Some(m.topic), m.payload),
        Err(why) => {
            log::warn!("recv --topic: a message without a topic line ({why}); printed whole");
            (None, data)
        }
    }
}

fn print_message(topic: Option<&str>, payload: &[u8], raw: bool) {
    let mut out = io::stdout().lock();
    if raw {
        let _ = out.write_all(payload);
    } else {
        if let Some(topic) = topic {
            let _ = writeln!(out, "Topic: {topic}");
        }
        let _ = writeln!(out, "Receive {} Byte", payload.len());
        let _ = out.write_all(payload);
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

/// `--exec`: `/bin/sh -c CMD` with the payload on stdin, one at a time.
fn run_command(cmd: &str, topic: Option<&str>, payload: &[u8]) {
    let mut command = Command::new("/bin/sh");
    command.arg("-c").arg(cmd).stdin(Stdio::piped());
    if let Some(topic) = topic {
        command.env("IOTBOX_TOPIC", topic);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            log::warn!("recv --exec: cannot run /bin/sh: {e}");
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin is fine.
        let _ = stdin.write_all(payload);
    }
    match child.wait() {
        Ok(status) if status.success() => {}
        Ok(status) => log::warn!("recv --exec: {cmd:?} {status}"),
        Err(e) => log::warn!("recv --exec: {cmd:?}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A connection that yields these results in turn, then would block.
    struct Script(VecDeque<io::Result<Vec<u8>>>);

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.pop_front() {
                Some(Ok(bytes)) => {
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    Ok(bytes.len())
                }
                Some(Err(e)) => Err(e),
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    fn script(steps: Vec<io::Result<&[u8]>>) -> Script {
        Script(steps.into_iter().map(|r| r.map(<[u8]>::to_vec)).collect())
    }

    #[test]
    fn reading_stops_at_would_block_and_completes_at_eof() {
        let mut scratch = [0u8; 16];
        let mut message = Message::default();
        let mut conn = script(vec![
            Ok(b"hel"),
            Err(io::ErrorKind::Interrupted.into()),
            Ok(b"lo"),
        ]);
        let progress = read_available(&mut conn, &mut message, &mut scratch);
        assert!(matches!(progress, Progress::Pending), "{progress:?}");
        assert_eq!(message.kept, b"hello");

        let mut conn = script(vec![Ok(b"!"), Ok(b"")]);
        let progress = read_available(&mut conn, &mut message, &mut scratch);
        assert!(matches!(progress, Progress::Complete), "{progress:?}");
        assert_eq!(message.finish(), b"hello!");
    }

    #[test]
    fn a_read_error_is_reported() {
        let mut message = Message::default();
        let mut conn = script(vec![Ok(b"x"), Err(io::ErrorKind::ConnectionReset.into())]);
        let progress = read_available(&mut conn, &mut message, &mut [0u8; 4]);
        assert!(matches!(progress, Progress::Failed(_)), "{progress:?}");
        assert_eq!(message.received(), 1);
    }

    #[test]
    fn a_message_beyond_the_cap_is_cut_and_counted() {
        let mut message = Message::default();
        message.push(&vec![b'a'; MAX_MESSAGE - 1]);
        message.push(b"bcd");
        message.push(b"ef");
        assert_eq!(message.kept.len(), MAX_MESSAGE);
        assert_eq!(message.kept.last(), Some(&b'b'));
        assert_eq!(message.discarded, 4);
        assert_eq!(message.received(), MAX_MESSAGE as u64 + 4);
    }

    #[test]
    fn each_sender_expires_at_its_own_deadline() {
        let t0 = Instant::now();
        let mut senders = Senders::new();
        let (first, _) = senders.add((), t0);
        let (second, _) = senders.add((), t0 + Duration::from_secs(3));
        assert_eq!(senders.next_deadline(), Some(t0 + READ_DEADLINE));

        let just_before = t0 + READ_DEADLINE - Duration::from_millis(1);
        assert!(senders.expire(just_before).is_empty());
        let late = senders.expire(t0 + READ_DEADLINE);
        assert_eq!(late.len(), 1);
        assert!(senders.get_mut(first).is_none());
        assert!(senders.get_mut(second).is_some());
        assert_eq!(
            senders.next_deadline(),
            Some(t0 + Duration::from_secs(3) + READ_DEADLINE)
        );

        // A sender that completes before its deadline is never expired.
        assert!(senders.remove(second).is_some());
        assert_eq!(senders.next_deadline(), None);
        assert!(senders.expire(t0 + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn accepting_stops_at_the_cap_until_a_sender_finishes() {
        let now = Instant::now();
        let mut senders = Senders::new();
        let mut tokens = Vec::new();
        for _ in 0..MAX_READING {
            assert!(senders.has_room());
            tokens.push(senders.add((), now).0);
        }
        assert!(!senders.has_room());
        assert!(senders.remove(tokens[7]).is_some());
        assert!(senders.has_room());
    }

    #[test]
    fn tokens_are_distinct_and_not_the_listeners_or_the_signals() {
        let now = Instant::now();
        let mut senders = Senders::new();
        let a = senders.add((), now).0;
        let b = senders.add((), now).0;
        senders.remove(a);
        let c = senders.add((), now).0;
        for t in [a, b, c] {
            assert!(t != LISTENER && t != SIGNALS, "{t:?}");
        }
        assert!(a != b && b != c && a != c);
    }

    #[test]
    fn the_poll_waits_until_the_earliest_wake_or_forever() {
        let now = Instant::now();
        let in_2s = Some(now + Duration::from_secs(2));
        let in_5s = Some(now + Duration::from_secs(5));
        assert_eq!(poll_timeout(now, [None, None]), None);
        assert_eq!(
            poll_timeout(now, [in_5s, in_2s]),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            poll_timeout(now, [None, in_5s]),
            Some(Duration::from_secs(5))
        );
        // A deadline already past: do not wait at all.
        assert_eq!(
            poll_timeout(now + Duration::from_secs(9), [in_2s]),
            Some(Duration::ZERO)
        );
    }
}
