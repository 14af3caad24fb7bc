//! Received messages go to the delivery socket, one connection each, in
//! order: connect, write the payload (or `topic\npayload` with
//! `--deliver_topic`), close. That is what the original `awsapp recv` reads.
//!
//! When no reader listens, messages wait in a bounded queue and connecting
//! is retried with a growing delay (250 ms doubling to 5 s); what overflows
//! the queue is dropped oldest first and counted in the log.

use crate::daemon::{QUEUE_BYTES, QUEUE_MESSAGES};
use crate::message;
use bytes::Bytes;
use mio::net::UnixStream;
use mio::{Interest, Registry, Token};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The reader listens but its backlog is full: try again soon, quietly.
const BACKLOG_RETRY: Duration = Duration::from_millis(10);

struct Current {
    stream: UnixStream,
    data: Bytes,
    written: usize,
}

pub struct Delivery {
    path: PathBuf,
    with_topic: bool,
    token: Token,
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    current: Option<Current>,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    /// Dropped since the last report.
    dropped: u64,
    /// The reader was missing at the last attempt (log once per outage).
    reader_missing: bool,
}

impl Delivery {
    pub fn new(path: PathBuf, with_topic: bool, token: Token) -> Delivery {
        Delivery {
            path,
            with_topic,
            token,
            queue: VecDeque::new(),
            queued_bytes: 0,
            current: None,
            retry_at: None,
            retry_delay: FIRST_RETRY,
            dropped: 0,
            reader_missing: false,
        }
    }

    /// Nothing queued or being written.
    pub fn is_idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty()
    }

    /// Messages waiting or being written.
    pub fn queued(&self) -> usize {
        self.queue.len() + usize::from(self.current.is_some())
    }

    /// Queues a received message and starts delivering.
    pub fn push(&mut self, now: Instant, topic: &Bytes, payload: Bytes, registry: &Registry) {
        let data = if self.with_topic {
            Bytes::from(message::encode(&String::from_utf8_lossy(topic), &payload))
        } else {
            payload
        };
        self.queued_bytes += data.len();
        self.queue.push_back(data);
        while self.queue.len() > QUEUE_MESSAGES
            || (self.queued_bytes > QUEUE_BYTES && self.queue.len() > 1)
        {
            if let Some(old) = self.queue.pop_front() {
                self.queued_bytes -= old.len();
                self.dropped += 1;
            }
        }
        if self.dropped > 0 {
            log::warn!(
                "delivery queue full ({} messages waiting for a reader on {}): dropped {} oldest",
                self.queue.len(),
                self.path.display(),
                self.dropped
            );
            self.dropped = 0;
        }
        self.pump(now, registry);
    }

    /// When to retry connecting to a missing reader.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.retry_at
    }

    pub fn handle_timeout(&mut self, now: Instant, registry: &Registry) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            self.pump(now, registry);
        }
    }

    /// The delivery connection became writable.
    pub fn on_writable(&mut self, now: Instant, registry: &Registry) {
        self.pump(now, registry);
    }

    /// Writes the current message and starts the next ones, until the socket
    /// would block, the queue is empty or the reader is missing.
    fn pump(&mut self, now: Instant, registry: &Registry) {
        loop {
            if self.current.is_none() {
                if self.retry_at.is_some() {
                    return;
                }
                let Some(data) = self.queue.front().cloned() else {
                    return;
                };
                match self.open(registry) {
                    Ok(stream) => {
                        self.queue.pop_front();
                        self.queued_bytes -= data.len();
                        self.current = Some(Current {
                            stream,
                            data,
                            written: 0,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // A reader is there, busy with earlier messages.
                        self.retry_at = Some(now + BACKLOG_RETRY);
                        return;
                    }
                    Err(e) => {
                        self.reader_absent(now, e);
                        return;
                    }
                }
            }
            let Some(cur) = self.current.as_mut() else {
                return;
            };
            match write_some(cur) {
                Ok(true) => self.close_current(registry),
                Ok(false) => return, // WRITABLE will call again
                Err(e) => {
                    // The reader closed early (the original reads at most
                    // 1023 bytes): it took what it wanted.
                    log::warn!(
                        "delivery to {}: reader closed after {} of {} bytes: {e}",
                        self.path.display(),
                        cur.written,
                        cur.data.len()
                    );
                    self.close_current(registry);
                }
            }
        }
    }

    fn open(&mut self, registry: &Registry) -> io::Result<UnixStream> {
        let mut stream = UnixStream::connect(&self.path)?;
        registry.register(&mut stream, self.token, Interest::WRITABLE)?;
        if self.reader_missing {
            log::info!(
                "delivery: a reader is listening on {} again",
                self.path.display()
            );
            self.reader_missing = false;
        }
        self.retry_delay = FIRST_RETRY;
        Ok(stream)
    }

    fn reader_absent(&mut self, now: Instant, e: io::Error) {
        if !self.reader_missing {
            log::warn!(
                "no reader on {} ({e}); {} message(s) wait, retrying (start: awsapp recv {} 0)",
                self.path.display(),
                self.queue.len(),
                self.path.display()
            );
            self.reader_missing = true;
        }
        self.retry_at = Some(now + self.retry_delay);
        self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY);
    }

    fn close_current(&mut self, registry: &Registry) {
        if let Some(mut cur) = self.current.take() {
            let _ = registry.deregister(&mut cur.stream);
        }
    }
}

/// `Ok(true)` when all is written, `Ok(false)` when the socket is full.
fn write_some(cur: &mut Current) -> io::Result<bool> {
    while cur.written < cur.data.len() {
        match cur.stream.write(&cur.data[cur.written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => cur.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
