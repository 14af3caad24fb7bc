//! Received messages go to the delivery socket, one connection each, in
//! order: connect, write the payload (or `topic\npayload` with
//! `--deliver_topic`), close. That is what the original `awsapp recv` reads.
//!
//! The policy is [`Outbox`], pure and tested in virtual time; [`Delivery`]
//! only connects and writes:
//!
//! - Messages wait in the spool; the outbox holds the next few
//!   ([`WINDOW_MESSAGES`] / [`WINDOW_BYTES`]) and reports each one delivered
//!   ([`Delivery::take_delivered`]) so that the spool can forget it.
//! - No reader listening: connecting is retried with a [`Backoff`] from
//!   250 ms to 5 s; a reader whose backlog is full is retried in 10 ms.
//! - A reader that accepts and stops reading: a message not taken within
//!   [`WRITE_TIMEOUT`] is given up on that connection, logged, and retried
//!   whole after the backoff; the rest wait behind it, in order.
//! - A reader that closes early took what it wanted (the original reads at
//!   most 1023 bytes): the message counts as delivered.

use crate::daemon::backoff::Backoff;
use crate::message;
use crate::output::{LOG_INTERVAL, Throttle};
use crate::sys::{interrupted, would_block};
use bytes::Bytes;
use mio::net::UnixStream;
use mio::{Interest, Registry, Token};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Retrying a missing reader: 250 ms doubling to 5 s (with jitter).
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The reader listens but its backlog is full: try again soon, quietly.
const BACKLOG_RETRY: Duration = Duration::from_millis(10);

/// A reader must take a whole message within this long of the connect.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages taken from the spool ahead of the one being written, and their
/// bytes: enough that the next connection never waits for the disk.
pub const WINDOW_MESSAGES: usize = 16;
pub const WINDOW_BYTES: usize = 256 * 1024;

/// The message on its way to the reader.
#[derive(Debug)]
struct InFlight {
    seq: u64,
    data: Bytes,
    written: usize,
    deadline: Instant,
}

/// What the delivery does next, decided without I/O. The owner connects
/// when [`Outbox::wants_connect`] says so, reports how that went, and
/// writes [`Outbox::unwritten`].
#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<(u64, Bytes)>,
    queued_bytes: usize,
    /// Delivered (or taken by a reader that closed early), for the spool.
    delivered: Vec<u64>,
    current: Option<InFlight>,
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// The reader was missing at the last attempt (said once per outage).
    reader_missing: bool,
    /// Deliveries that timed out, logged at most once per interval.
    stalls: Throttle,
}

impl Outbox {
    pub fn new(seed: u64) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            queued_bytes: 0,
            delivered: Vec::new(),
            current: None,
            retry_at: None,
            backoff: Backoff::new(seed, FIRST_RETRY, MAX_RETRY),
            reader_missing: false,
            stalls: Throttle::new(LOG_INTERVAL),
        }
    }

    /// Messages waiting or being written.
    pub fn len(&self) -> usize {
        self.queue.len() + usize::from(self.current.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the window takes another message from the spool.
    pub fn has_room(&self) -> bool {
        self.queue.len() < WINDOW_MESSAGES && self.queued_bytes < WINDOW_BYTES
    }

    /// Queues message `seq` (taken from the spool) behind the others.
    pub fn push(&mut self, seq: u64, data: Bytes) {
        self.queued_bytes += data.len();
        self.queue.push_back((seq, data));
    }

    /// The messages delivered since the last call.
    pub fn take_delivered(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.delivered)
    }

    /// A connection should be opened now for the next message.
    pub fn wants_connect(&self, now: Instant) -> bool {
        self.current.is_none() && !self.queue.is_empty() && self.retry_at.is_none_or(|t| t <= now)
    }

    /// A connection is open: the next message is on its way.
    pub fn connected(&mut self, now: Instant) {
        self.retry_at = None;
        if self.reader_missing {
            log::info!("delivery: a reader is listening again");
            self.reader_missing = false;
        }
        self.backoff.reset();
        if let Some((seq, data)) = self.queue.pop_front() {
            self.queued_bytes -= data.len();
            self.current = Some(InFlight {
                seq,
                data,
                written: 0,
                deadline: now + WRITE_TIMEOUT,
            });
        }
    }

    /// Nobody listens (or the connect failed otherwise): retry later.
    pub fn reader_absent(&mut self, now: Instant, why: &io::Error, path: &str) {
        if !self.reader_missing {
            log::warn!(
                "no reader on {path} ({why}); {} message(s) wait, retrying (start one: awsapp recv {path} 0)",
                self.queue.len()
            );
            self.reader_missing = true;
        }
        self.retry_at = Some(now + self.backoff.next_delay());
    }

    /// The reader listens but cannot accept yet: retry soon.
    pub fn reader_busy(&mut self, now: Instant) {
        self.retry_at = Some(now + BACKLOG_RETRY);
    }

    /// The bytes of the current message not yet written.
    pub fn unwritten(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |c| &c.data[c.written..])
    }

    /// `n` more bytes were written. `true` when the message is complete.
    pub fn wrote(&mut self, n: usize) -> bool {
        let Some(c) = &mut self.current else {
            return false;
        };
        c.written = (c.written + n).min(c.data.len());
        if c.written == c.data.len() {
            self.delivered.push(c.seq);
            self.current = None;
            return true;
        }
        false
    }

    /// The reader closed before taking everything: it took what it wanted.
    pub fn reader_closed(&mut self, why: &io::Error, path: &str) {
        if let Some(c) = self.current.take() {
            self.delivered.push(c.seq);
            log::warn!(
                "delivery to {path}: the reader closed after {} of {} bytes: {why}",
                c.written,
                c.data.len()
            );
        }
    }

    /// Checks the write deadline. `true` when the current message timed
    /// out: it goes back to the front, whole, to be retried after the
    /// backoff; the caller closes the connection.
    pub fn check_deadline(&mut self, now: Instant, path: &str) -> bool {
        let Some(c) = self.current.take_if(|c| c.deadline <= now) else {
            return false;
        };
        if self.stalls.note(now).is_some() {
            log::warn!(
                "delivery to {path}: the reader did not take the message within {} s ({} of {} bytes); retrying later",
                WRITE_TIMEOUT.as_secs(),
                c.written,
                c.data.len(),
            );
        }
        self.queued_bytes += c.data.len();
        self.queue.push_front((c.seq, c.data));
        self.retry_at = Some(now + self.backoff.next_delay());
        true
    }

    /// The earliest of: the retry, the write deadline, a log count due.
    pub fn next_deadline(&self) -> Option<Instant> {
        let retry = self.retry_at.filter(|_| !self.queue.is_empty());
        let write = self.current.as_ref().map(|c| c.deadline);
        [retry, write, self.stalls.deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Reports counts held back by the log throttles.
    pub fn flush_logs(&mut self, now: Instant, path: &str) {
        if let Some(n) = self.stalls.flush(now) {
            log::warn!(
                "delivery to {path}: {n} more delivery attempt(s) timed out in the last {} s",
                LOG_INTERVAL.as_secs()
            );
        }
    }
}

/// The delivery socket's I/O around an [`Outbox`].
pub struct Delivery {
    path: PathBuf,
    with_topic: bool,
    token: Token,
    outbox: Outbox,
    stream: Option<UnixStream>,
}

impl Delivery {
    pub fn new(path: PathBuf, with_topic: bool, token: Token, seed: u64) -> Delivery {
        Delivery {
            path,
            with_topic,
            token,
            outbox: Outbox::new(seed),
            stream: None,
        }
    }

    /// Nothing queued or being written.
    pub fn is_idle(&self) -> bool {
        self.outbox.is_empty()
    }

    /// Whether another message may be queued now (see [`Outbox::has_room`]).
    pub fn has_room(&self) -> bool {
        self.outbox.has_room()
    }

    /// Queues received message `seq` and starts delivering.
    pub fn push(
        &mut self,
        now: Instant,
        seq: u64,
        topic: &Bytes,
        payload: Bytes,
        registry: &Registry,
    ) {
        let data = if self.with_topic {
            Bytes::from(message::encode(&String::from_utf8_lossy(topic), &payload))
        } else {
            payload
        };
        self.outbox.push(seq, data);
        self.pump(now, registry);
    }

    /// The messages delivered since the last call, for the spool.
    pub fn take_delivered(&mut self) -> Vec<u64> {
        self.outbox.take_delivered()
    }

    /// No message is half written (the others can wait in the spool).
    pub fn is_between_messages(&self) -> bool {
        self.outbox.current.is_none()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.outbox.next_deadline()
    }

    pub fn handle_timeout(&mut self, now: Instant, registry: &Registry) {
        let path = self.path.display().to_string();
        self.outbox.flush_logs(now, &path);
        if self.outbox.check_deadline(now, &path) {
            self.close(registry);
        }
        self.pump(now, registry);
    }

    /// The delivery connection became writable.
    pub fn on_writable(&mut self, now: Instant, registry: &Registry) {
        self.pump(now, registry);
    }

    /// Writes the current message and starts the next ones, until the
    /// socket would block, the queue is empty or the reader is missing.
    fn pump(&mut self, now: Instant, registry: &Registry) {
        let path = self.path.display().to_string();
        loop {
            if self.stream.is_none() {
                if !self.outbox.wants_connect(now) {
                    return;
                }
                match self.open(registry) {
                    Ok(stream) => {
                        self.stream = Some(stream);
                        self.outbox.connected(now);
                    }
                    Err(e) if would_block(&e) => return self.outbox.reader_busy(now),
                    Err(e) => return self.outbox.reader_absent(now, &e, &path),
                }
            }
            let Some(stream) = &mut self.stream else {
                return;
            };
            match write_some(stream, &mut self.outbox) {
                Ok(true) => self.close(registry),
                Ok(false) => return, // WRITABLE calls again
                Err(e) => {
                    self.outbox.reader_closed(&e, &path);
                    self.close(registry);
                }
            }
        }
    }

    fn open(&mut self, registry: &Registry) -> io::Result<UnixStream> {
        let mut stream = UnixStream::connect(&self.path)?;
        registry.register(&mut stream, self.token, Interest::WRITABLE)?;
        Ok(stream)
    }

    fn close(&mut self, registry: &Registry) {
        if let Some(mut stream) = self.stream.take() {
            let _ = registry.deregister(&mut stream);
        }
    }
}

/// Writes what the outbox has. `Ok(true)` when the message is complete,
/// `Ok(false)` when the socket is full.
fn write_some(stream: &mut UnixStream, outbox: &mut Outbox) -> io::Result<bool> {
    loop {
        let rest = outbox.unwritten();
        if rest.is_empty() {
            return Ok(true);
        }
        match stream.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                if outbox.wrote(n) {
                    return Ok(true);
                }
            }
            Err(e) if would_block(&e) => return Ok(false),
            Err(e) if interrupted(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn the_window_is_bounded_and_deliveries_are_reported_in_order() {
        let t0 = Instant::now();
        let mut o = Outbox::new(1);
        let mut seq = 0;
        while o.has_room() {
            o.push(seq, Bytes::from(seq.to_string()));
            seq += 1;
        }
        assert_eq!(seq as usize, WINDOW_MESSAGES);
        o.connected(t0);
        assert_eq!(o.unwritten(), b"0", "the oldest goes first");
        assert!(o.wrote(1));
        o.connected(t0);
        o.wrote(1);
        assert_eq!(o.take_delivered(), [0, 1]);
        assert!(o.take_delivered().is_empty());
        let mut o = Outbox::new(1);
        o.push(0, msg(WINDOW_BYTES));
        assert!(!o.has_room(), "one large message fills it");
    }

    #[test]
    fn a_reader_that_never_reads_times_out_and_the_message_is_retried_whole() {
        let t0 = Instant::now();
        let mut o = Outbox::new(1);
        o.push(0, msg(1000));
        o.push(1, msg(10));
        assert!(o.wants_connect(t0));
        o.connected(t0);
        assert!(!o.wrote(300), "partly written");
        assert_eq!(o.next_deadline(), Some(t0 + WRITE_TIMEOUT));
        assert!(!o.check_deadline(t0 + WRITE_TIMEOUT / 2, "r"));
        let t1 = t0 + WRITE_TIMEOUT;
        assert!(o.check_deadline(t1, "r"), "given up on this connection");
        assert_eq!(o.len(), 2, "nothing lost");
        let retry = o.next_deadline().unwrap();
        assert!(retry <= t1 + FIRST_RETRY, "after the backoff");
        o.connected(retry);
        assert_eq!(o.unwritten().len(), 1000, "whole, and first");
        assert!(o.wrote(1000));
        o.connected(retry);
        assert_eq!(o.unwritten().len(), 10, "then the next");
        assert_eq!(o.take_delivered(), [0], "delivered once, after the retry");
    }

    #[test]
    fn a_missing_reader_is_retried_with_backoff_and_said_once() {
        let t0 = Instant::now();
        let mut o = Outbox::new(7);
        o.push(0, msg(1));
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let mut now = t0;
        let mut gaps = Vec::new();
        for _ in 0..8 {
            assert!(o.wants_connect(now));
            o.reader_absent(now, &refused, "r");
            let at = o.next_deadline().unwrap();
            gaps.push(at - now);
            assert!(!o.wants_connect(now) || at == now);
            now = at;
        }
        assert!(gaps.iter().all(|g| *g <= MAX_RETRY), "{gaps:?}");
        // The reader is back: the ladder starts again.
        o.connected(now);
        assert_eq!(o.backoff.ceiling(), FIRST_RETRY);
    }

    #[test]
    fn a_reader_that_closes_early_took_its_message() {
        let t0 = Instant::now();
        let mut o = Outbox::new(1);
        o.push(4, msg(5000));
        o.connected(t0);
        o.wrote(1023);
        o.reader_closed(&io::ErrorKind::BrokenPipe.into(), "r");
        assert!(o.is_empty());
        assert_eq!(o.take_delivered(), [4]);
        assert_eq!(o.next_deadline(), None);
    }
}
