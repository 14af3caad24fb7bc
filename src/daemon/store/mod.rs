//! The spool: what the daemon accepted, kept until it is done, in both
//! directions: messages from the publish socket for the broker
//! (`out-*.seg`) and messages from the broker for the delivery socket
//! (`in-*.seg`), each an append-only [`Log`] in `--spool_dir`.
//!
//! [`Spool`] adds the policy on top of the two logs: the size limit
//! (`--spool_size`, for each direction: messages nobody reads never stop
//! the device's own from being taken) and what happens when it is reached
//! (`--when_full`), the age limit (`--spool_max_age`), the lock that
//! keeps a second daemon out of the directory, the fallback to memory when
//! the directory cannot be used, and what to do after a failed write or
//! sync (stop accepting, retry on a fresh segment).
//!
//! Durable means synced: the event loop appends during a turn and calls
//! [`Spool::start_commit`] once at its end; only once that commit is
//! durable are clients answered and the broker's messages acknowledged.
//! On a directory the sync runs on a thread of its own
//! ([`Spool::start_sync_thread`]) while the loop goes on; the loop hears
//! of it through its waker and [`Spool::finish_commit`].

pub mod disk;
pub mod log;
pub mod record;
#[cfg(test)]
pub(crate) mod sim;
mod syncer;

use self::disk::{DirDisk, Disk, MemDisk};
use self::log::{Limits, Log, Recovered, Started};
pub use self::record::Message;
use self::syncer::Syncer;
use crate::output::{LOG_INTERVAL, Throttle};
use mio::Waker;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The default `--spool_dir`.
pub const DEFAULT_DIR: &str = "/var/lib/iotbox";
/// The default `--spool_size`.
pub const DEFAULT_SIZE: u64 = 64 << 20;
/// The smallest `--spool_size`: a few segments.
pub const MIN_SIZE: u64 = 64 << 10;
/// The default `--spool_max_age`: a week.
pub const DEFAULT_MAX_AGE: u64 = 7 * 24 * 3600;

/// Without a usable directory, the messages wait in memory, up to this
/// many bytes (or `--spool_size`, when smaller).
pub const MEMORY_BYTES: u64 = 4 << 20;

/// Before this time (2024-01-01) the wall clock is taken to be unset (a
/// Pi without a battery-backed clock boots in 1970 until NTP answers): no
/// message is expired by a clock like that, or for a time stamp like that.
const PLAUSIBLE_TIME: u64 = 1_704_067_200;

/// After a failed write or sync, how long until the next try: doubling
/// to [`RETRY_MAX`] while it keeps failing (each try on a full disk may
/// leave a file behind until the spool drains).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What the messages are for, in log lines and file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the publish socket to the broker.
    Out,
    /// From the broker to the delivery socket.
    In,
}

impl Direction {
    fn prefix(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Direction::Out => "for the broker",
            Direction::In => "for the delivery socket",
        }
    }
}

/// `--when_full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Stop accepting until there is room.
    Block,
    /// Drop the oldest messages to make room, and count them.
    DropOldest,
}

/// The spool's flags, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// `None`: memory only (`--spool_dir none`).
    pub dir: Option<PathBuf>,
    pub size: u64,
    /// Seconds; 0 for no limit.
    pub max_age: u64,
    pub when_full: WhenFull,
    /// The largest payload a record may hold, in either direction (reading
    /// takes a longer length field for damage).
    pub max_payload: usize,
}

/// Unix seconds now, from the wall clock.
pub fn wall_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A directory holding a spool cannot be opened by a second daemon.
#[derive(Debug)]
pub struct Locked {
    pub dir: PathBuf,
    pub pid: Option<u32>,
}

pub struct Spool {
    disk: Box<dyn Disk>,
    /// Where, for log lines; `None` in memory.
    dir: Option<PathBuf>,
    out: Log,
    inbound: Log,
    limit: u64,
    max_age: u64,
    when_full: WhenFull,
    /// The lock on the directory, held while the daemon runs.
    _lock: Option<File>,
    /// After a failed commit: when to try again.
    retry_at: Option<Instant>,
    retry_delay: Duration,
    failing: bool,
    dropped: Tally,
    expired: Tally,
    damaged: Tally,
    /// The sync thread, once started (directories only).
    syncer: Option<Syncer>,
    /// The commit whose sync runs on that thread.
    in_flight: Option<InFlight>,
}

/// A commit written, its sync on the thread: each direction's half.
struct InFlight {
    out: Started,
    inbound: Started,
}

/// What [`Spool::start_commit`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Commit {
    /// Everything appended before it is durable: these numbers, per
    /// direction.
    Durable(Range<u64>, Range<u64>),
    /// Written; the sync runs on the thread ([`Spool::finish_commit`]).
    Syncing,
    /// Nothing new is durable: a write or sync failed (logged), or the
    /// retry after one is not due. Appended messages stay for the next.
    Waiting,
}

/// Counts of one kind of loss, logged at most once a minute.
struct Tally {
    what: &'static str,
    total: u64,
    throttle: Throttle,
}

impl Tally {
    fn new(what: &'static str) -> Tally {
        Tally {
            what,
            total: 0,
            throttle: Throttle::new(LOG_INTERVAL),
        }
    }

    fn add(&mut self, now: Instant, n: u64) {
        if n == 0 {
            return;
        }
        self.total += n;
        if self.throttle.note(now).is_some() {
            ::log::warn!("spool: {} {} so far", self.total, self.what);
        }
    }

    fn flush(&mut self, now: Instant) {
        if self.throttle.flush(now).is_some() {
            ::log::warn!("spool: {} {} so far", self.total, self.what);
        }
    }
}

impl Spool {
    /// Opens the spool in `config.dir`, or in memory when that is `None` or
    /// cannot be used (said in one line). Recovery never fails; a directory
    /// locked by another daemon does.
    pub fn open(config: &Config) -> Result<Spool, Locked> {
        let max_body = config.max_payload.saturating_add(1024);
        if let Some(dir) = &config.dir {
            match Self::open_dir(dir) {
                Ok((disk, lock)) => {
                    return Ok(Self::with_disk(
                        Box::new(disk),
                        Some(dir.clone()),
                        Some(lock),
                        config.size,
                        config,
                        max_body,
                    ));
                }
                Err(OpenError::Locked(locked)) => return Err(locked),
                Err(OpenError::Io(e)) => ::log::warn!(
                    "spool: cannot use {}: {e}; messages wait in memory only (up to {} bytes) and are lost when the daemon stops",
                    dir.display(),
                    MEMORY_BYTES.min(config.size)
                ),
            }
        }
        Ok(Self::with_disk(
            Box::new(MemDisk::default()),
            None,
            None,
            MEMORY_BYTES.min(config.size),
            config,
            max_body,
        ))
    }

    fn open_dir(dir: &Path) -> Result<(DirDisk, File), OpenError> {
        let mut disk = DirDisk::new(dir).map_err(OpenError::Io)?;
        // A directory that cannot be listed would look empty, and new files
        // could meet old ones: memory is the honest fallback.
        disk.list().map_err(OpenError::Io)?;
        let lock = lock(dir)?;
        Ok((disk, lock))
    }

    /// A spool over any disk (the simulation's in tests).
    pub fn with_disk(
        mut disk: Box<dyn Disk>,
        dir: Option<PathBuf>,
        lock: Option<File>,
        limit: u64,
        config: &Config,
        max_body: usize,
    ) -> Spool {
        let limits = Limits {
            segment_bytes: (limit / 16).clamp(16 << 10, 1 << 20),
            max_body,
        };
        let started = Instant::now();
        let (out, out_found) = Log::open(disk.as_mut(), Direction::Out.prefix(), limits);
        let (inbound, in_found) = Log::open(disk.as_mut(), Direction::In.prefix(), limits);
        if let Some(dir) = &dir {
            let took = started.elapsed();
            report(dir, Direction::Out, &out_found, took);
            report(dir, Direction::In, &in_found, took);
        }
        Spool {
            disk,
            dir,
            out,
            inbound,
            limit,
            max_age: config.max_age,
            when_full: config.when_full,
            _lock: lock,
            retry_at: None,
            retry_delay: RETRY_AFTER_FAILURE,
            failing: false,
            dropped: Tally::new("message(s) dropped to make room (--when_full drop_oldest)"),
            expired: Tally::new("message(s) dropped as older than --spool_max_age"),
            damaged: Tally::new("byte(s) of damaged records skipped"),
            syncer: None,
            in_flight: None,
        }
    }

    /// From now on the sync of a commit runs on a thread of its own, which
    /// wakes the loop with `waker` when it is done. Only for a directory
    /// (memory needs no sync); if the thread cannot be made, commits stay
    /// whole (logged).
    pub fn start_sync_thread(&mut self, waker: Arc<Waker>) {
        if !self.is_durable() || self.syncer.is_some() {
            return;
        }
        match Syncer::start(waker) {
            Ok(syncer) => self.syncer = Some(syncer),
            Err(e) => {
                ::log::warn!("spool: cannot start the sync thread ({e}); syncing in the event loop")
            }
        }
    }

    /// A commit's sync is under way: the next starts once it is finished.
    pub fn is_syncing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The messages survive the process (false in memory).
    pub fn is_durable(&self) -> bool {
        self.disk.is_durable()
    }

    fn log(&mut self, direction: Direction) -> &mut Log {
        match direction {
            Direction::Out => &mut self.out,
            Direction::In => &mut self.inbound,
        }
    }

    fn log_ref(&self, direction: Direction) -> &Log {
        match direction {
            Direction::Out => &self.out,
            Direction::In => &self.inbound,
        }
    }

    /// Bytes a direction holds.
    pub fn bytes(&self, direction: Direction) -> u64 {
        self.log_ref(direction).bytes()
    }

    /// New messages may be taken in `direction`: not full (under `block`)
    /// and not after a failed write. The limit is checked before taking a
    /// message, so the last one taken may pass it.
    pub fn has_room(&self, direction: Direction) -> bool {
        !self.failing
            && (self.when_full == WhenFull::DropOldest || self.bytes(direction) < self.limit)
    }

    /// Deletes the files whose messages are all done, so that their room
    /// counts at once (commit does it too).
    pub fn release_done(&mut self) {
        self.out.remove_done_segments(self.disk.as_mut());
        self.inbound.remove_done_segments(self.disk.as_mut());
    }

    /// Appends a message; durable after the next [`Spool::commit`].
    pub fn append(&mut self, direction: Direction, topic: &[u8], payload: &[u8]) -> u64 {
        self.append_with(direction, topic, b"", payload)
    }

    /// [`Spool::append`] with meta data kept beside the message (at most
    /// 65,535 bytes).
    pub fn append_with(
        &mut self,
        direction: Direction,
        topic: &[u8],
        meta: &[u8],
        payload: &[u8],
    ) -> u64 {
        let time = wall_clock();
        self.log(direction).append_with(time, topic, meta, payload)
    }

    /// Writes and syncs what both directions appended (group commit), then
    /// drops the oldest segments when over the limit under `drop_oldest`.
    ///
    /// # Returns
    /// The messages now durable, per direction; `None` when a write or
    /// sync failed (logged): the failing direction made nothing new
    /// durable (the other may have: it reports them at the next successful
    /// commit, as an empty range, so callers treat everything appended
    /// since the last `Some` as durable only then), the spool stops taking
    /// new messages ([`Spool::has_room`]) and tries again on a fresh
    /// segment after `RETRY_AFTER_FAILURE`, doubling to `RETRY_MAX`.
    ///
    /// Whole, here: a sync under way on the thread is waited for first.
    /// For the ends of the daemon's life (stopping, exiting); each turn
    /// uses [`Spool::start_commit`].
    pub fn commit(&mut self, now: Instant) -> Option<(Range<u64>, Range<u64>)> {
        if let Some(syncer) = &self.syncer {
            if self.in_flight.is_some() {
                let results = syncer.wait();
                self.complete(now, results);
            }
        }
        if self.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        self.retry_at = None;
        let disk = self.disk.as_mut();
        let result = self
            .out
            .commit(disk)
            .and_then(|out| Ok((out, self.inbound.commit(disk)?)));
        match result {
            Ok(ranges) => {
                self.succeeded(now);
                Some(ranges)
            }
            Err(e) => {
                self.failed(now, &e);
                None
            }
        }
    }

    /// Commits what both directions appended (group commit): the records
    /// are written now, and with a sync thread the sync runs there
    /// ([`Commit::Syncing`]; [`Spool::finish_commit`] tells the end).
    /// Without one it is [`Spool::commit`]. Not while a sync is under way.
    pub fn start_commit(&mut self, now: Instant) -> Commit {
        if self.syncer.is_none() {
            return match self.commit(now) {
                Some((out, inbound)) => Commit::Durable(out, inbound),
                None => Commit::Waiting,
            };
        }
        if self.in_flight.is_some() {
            return Commit::Syncing;
        }
        if self.retry_at.is_some_and(|at| now < at) {
            return Commit::Waiting;
        }
        self.retry_at = None;
        let disk = self.disk.as_mut();
        let out = match self.out.start_commit(disk, true) {
            Ok(started) => started,
            Err(e) => {
                self.failed(now, &e);
                return Commit::Waiting;
            }
        };
        let inbound = match self.inbound.start_commit(disk, true) {
            Ok(started) => started,
            Err(e) => {
                // The other half is written: its sync, here, keeps the log
                // in step (what it makes durable is reported with the next
                // commit that succeeds, as after any failure).
                if let Started::Syncing(pending) = out {
                    let synced = disk.sync(&pending.segment);
                    let _ = self.out.finish_commit(disk, pending, synced);
                }
                self.failed(now, &e);
                return Commit::Waiting;
            }
        };
        // Descriptors for the thread, in order. A disk without them
        // (memory, the simulation) syncs here; a descriptor that cannot be
        // had is a failed sync, and then the others are synced here too.
        let mut handles = Vec::new();
        for half in [&out, &inbound] {
            if let Started::Syncing(pending) = half {
                handles.push(match disk.sync_handle(&pending.segment) {
                    Some(Ok(file)) => Ok(file),
                    Some(Err(e)) => Err(Err(e)),
                    None => Err(disk.sync(&pending.segment)),
                });
            }
        }
        self.in_flight = Some(InFlight { out, inbound });
        if handles.is_empty() || handles.iter().any(Result::is_err) {
            let results = handles
                .into_iter()
                .map(|h| match h {
                    Ok(file) => file.sync_data(),
                    Err(result) => result,
                })
                .collect();
            return self.complete(now, results);
        }
        let files: Vec<File> = handles.into_iter().flatten().collect();
        let submitted = match &self.syncer {
            Some(syncer) => syncer.submit(files),
            None => Err(io::Error::other("no sync thread")),
        };
        if let Err(e) = submitted {
            return self.complete(now, vec![Err(e)]);
        }
        Commit::Syncing
    }

    /// The end of the commit under way, if its sync is done: `Durable` or
    /// `Waiting` (failed, logged); `None` while it runs (or none does).
    pub fn finish_commit(&mut self, now: Instant) -> Option<Commit> {
        self.in_flight.as_ref()?;
        let results = self.syncer.as_ref()?.try_finish()?;
        Some(self.complete(now, results))
    }

    /// Finishes both halves of the commit in flight with the sync results
    /// (one per half that was syncing, in order; missing ones failed).
    fn complete(&mut self, now: Instant, results: Vec<io::Result<()>>) -> Commit {
        let Some(InFlight { out, inbound }) = self.in_flight.take() else {
            return Commit::Waiting;
        };
        let mut results = results.into_iter();
        let disk = self.disk.as_mut();
        let mut finish = |log: &mut Log, half: Started| match half {
            Started::Done(range) => Ok(range),
            Started::Syncing(pending) => {
                let synced = results
                    .next()
                    .unwrap_or_else(|| Err(io::Error::other("no result from the sync thread")));
                log.finish_commit(disk, pending, synced)
            }
        };
        let out = finish(&mut self.out, out);
        let inbound = finish(&mut self.inbound, inbound);
        match (out, inbound) {
            (Ok(out), Ok(inbound)) => {
                self.succeeded(now);
                Commit::Durable(out, inbound)
            }
            (Err(e), _) | (_, Err(e)) => {
                self.failed(now, &e);
                Commit::Waiting
            }
        }
    }

    fn succeeded(&mut self, now: Instant) {
        if self.failing {
            ::log::info!("spool: writing works again");
            self.failing = false;
        }
        self.retry_delay = RETRY_AFTER_FAILURE;
        self.make_room(now);
    }

    fn failed(&mut self, now: Instant, e: &io::Error) {
        if !self.failing {
            ::log::error!(
                "spool: cannot write to {}: {e}; not taking new messages until a write succeeds (retrying on a new file in {} s, then less often, at least every {} s)",
                self.where_(),
                RETRY_AFTER_FAILURE.as_secs(),
                RETRY_MAX.as_secs()
            );
        }
        self.failing = true;
        self.retry_at = Some(now + self.retry_delay);
        self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
    }

    fn where_(&self) -> String {
        self.dir
            .as_ref()
            .map_or_else(|| "memory".into(), |d| d.display().to_string())
    }

    /// Under `drop_oldest`: drops the oldest segments of a direction over
    /// the limit.
    fn make_room(&mut self, now: Instant) {
        if self.when_full != WhenFull::DropOldest {
            return;
        }
        for log in [&mut self.out, &mut self.inbound] {
            while log.bytes() > self.limit {
                match log.drop_oldest(self.disk.as_mut()) {
                    Some(n) => self.dropped.add(now, n),
                    None => break, // the writer was rolled: next commit
                }
            }
        }
    }

    /// The next durable message not yet read in `direction`, in order;
    /// messages older than `--spool_max_age` are skipped (done, counted).
    pub fn next(&mut self, now: Instant, direction: Direction) -> Option<Message> {
        // The common case, on every pass of the loop: nothing new.
        if self.log_ref(direction).unread() == 0 {
            return None;
        }
        let wall = wall_clock();
        let max_age = self.max_age;
        loop {
            let disk = self.disk.as_mut();
            let log = match direction {
                Direction::Out => &mut self.out,
                Direction::In => &mut self.inbound,
            };
            let message = log.next(disk);
            let damaged = log.take_damaged();
            self.damaged.add(now, damaged);
            let message = message?;
            if too_old(message.time, wall, max_age) {
                self.log(direction).done(message.seq);
                self.expired.add(now, 1);
                continue;
            }
            return Some(message);
        }
    }

    /// The message `seq` is done: sent, delivered or never sendable.
    pub fn done(&mut self, direction: Direction, seq: u64) {
        self.log(direction).done(seq);
    }

    /// Durable messages not yet read.
    pub fn unread(&self, direction: Direction) -> u64 {
        self.log_ref(direction).unread()
    }

    /// Messages not done.
    pub fn waiting(&self, direction: Direction) -> u64 {
        self.log_ref(direction).waiting()
    }

    /// When to call [`Spool::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.retry_at,
            self.dropped.throttle.deadline(),
            self.expired.throttle.deadline(),
            self.damaged.throttle.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Logs the counts held back; a retry after a failure is due when
    /// [`Spool::commit`] is next called.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.dropped.flush(now);
        self.expired.flush(now);
        self.damaged.flush(now);
    }

    /// Messages dropped this run: to make room, or as too old.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.total + self.expired.total
    }

    /// Logs what this run wrote, dropped, expired and skipped (at exit).
    pub fn log_totals(&self) {
        let (out, inbound) = (self.out.stats(), self.inbound.stats());
        if out.appended + inbound.appended > 0 {
            ::log::info!(
                "spool: this run: {} message(s) taken, {} sync(s), {} bytes written",
                out.appended + inbound.appended,
                out.syncs + inbound.syncs,
                out.written + inbound.written
            );
        }
        for tally in [&self.dropped, &self.expired, &self.damaged] {
            if tally.total > 0 {
                ::log::warn!("spool: this run: {} {}", tally.total, tally.what);
            }
        }
    }

    /// Whether [`Spool::commit`] would try now: not before the retry after
    /// a failure.
    pub fn may_commit(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| at <= now)
    }
}

/// Too old to be sent: only by a clock that looks set, and a time stamp
/// made by one.
fn too_old(time: u64, wall: u64, max_age: u64) -> bool {
    max_age > 0
        && time >= PLAUSIBLE_TIME
        && wall >= PLAUSIBLE_TIME
        && wall.saturating_sub(time) > max_age
}

fn report(dir: &Path, direction: Direction, found: &Recovered, took: Duration) {
    if found.messages > 0 {
        ::log::info!(
            "spool: {} message(s) {} waiting in {} ({} bytes; both directions read in {} ms)",
            found.messages,
            direction.words(),
            dir.display(),
            found.bytes,
            took.as_millis()
        );
    }
    if found.damaged_bytes > 0 || found.damaged_segments > 0 {
        ::log::warn!(
            "spool: skipped {} damaged byte(s) and {} unreadable file(s) {} in {} (a power cut cuts the last write short; more is damage)",
            found.damaged_bytes,
            found.damaged_segments,
            direction.words(),
            dir.display()
        );
    }
}

enum OpenError {
    Io(io::Error),
    Locked(Locked),
}

/// The name of the lock file in the spool directory.
pub const LOCK_FILE: &str = "lock";

/// Takes the directory's lock (`flock`, released by the kernel when the
/// process ends, however it ends) and writes our pid into it.
fn lock(dir: &Path) -> Result<File, OpenError> {
    use rustix::fs::{FlockOperation, flock};
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(OpenError::Io)?;
    if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
        if e == rustix::io::Errno::WOULDBLOCK {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(OpenError::Locked(Locked {
                dir: dir.to_owned(),
                pid: text.trim().parse().ok(),
            }));
        }
        return Err(OpenError::Io(e.into()));
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    written.map_err(OpenError::Io)?;
    Ok(file)
}

/// What `iotbox spool DIR` shows: the recovery of each direction, read
/// without a daemon (and without taking the lock: reading is harmless).
pub fn inspect(dir: &Path, max_payload: usize) -> io::Result<[(Direction, Recovered); 2]> {
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let mut disk = DirDisk::new(dir)?;
    disk.list()?; // an unreadable directory is an error here, not "empty"
    let limits = Limits {
        segment_bytes: 1 << 20,
        max_body: max_payload.saturating_add(1024),
    };
    let (_, out) = Log::open(&mut disk, Direction::Out.prefix(), limits);
    let (_, inbound) = Log::open(&mut disk, Direction::In.prefix(), limits);
    Ok([(Direction::Out, out), (Direction::In, inbound)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use mio::{Events, Poll, Token};

    fn config(dir: &Path) -> Config {
        Config {
            dir: Some(dir.to_owned()),
            size: DEFAULT_SIZE,
            max_age: 0,
            when_full: WhenFull::Block,
            max_payload: 1024,
        }
    }

    /// A fresh directory under the system's temp dir, removed at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "iotbox-spool-{tag}-{}-{:?}",
                std::process::id(),
                Instant::now()
            ));
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Waits for the sync thread's wake-up, then finishes the commit.
    fn wait_synced(poll: &mut Poll, spool: &mut Spool) -> Commit {
        let mut events = Events::with_capacity(4);
        for _ in 0..100 {
            if let Some(done) = spool.finish_commit(Instant::now()) {
                return done;
            }
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .expect("poll");
        }
        panic!("the sync thread never finished");
    }

    #[test]
    fn a_commit_synced_on_the_thread_is_durable_only_when_it_is_done() {
        let dir = Scratch::new("thread");
        let mut poll = Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
        let mut spool = Spool::open(&config(&dir.0)).expect("spool");
        spool.start_sync_thread(waker);
        let now = Instant::now();
        // A commit that starts a segment is whole (the directory's sync
        // must cover the new file): durable at once.
        let zero = spool.append(Direction::Out, b"t", b"zero");
        assert_eq!(
            spool.start_commit(now),
            Commit::Durable(zero..zero + 1, 0..0)
        );
        let first = spool.append(Direction::Out, b"t", b"one");
        assert_eq!(spool.start_commit(now), Commit::Syncing);
        assert!(spool.is_syncing());
        assert_eq!(
            spool.unread(Direction::Out),
            1,
            "not readable before the sync"
        );
        // Appended while the sync runs: the next commit's.
        let second = spool.append(Direction::Out, b"t", b"two");
        assert_eq!(spool.start_commit(now), Commit::Syncing, "one at a time");
        assert_eq!(
            wait_synced(&mut poll, &mut spool),
            Commit::Durable(first..first + 1, 0..0)
        );
        assert!(!spool.is_syncing());
        assert_eq!(spool.unread(Direction::Out), 2);
        assert_eq!(spool.start_commit(now), Commit::Syncing);
        assert_eq!(
            wait_synced(&mut poll, &mut spool),
            Commit::Durable(second..second + 1, 0..0)
        );
        // Nothing new: durable at once, no sync.
        assert!(matches!(spool.start_commit(now), Commit::Durable(..)));
        drop(spool);
        let mut reopened = Spool::open(&config(&dir.0)).expect("reopen");
        let read: Vec<Bytes> = std::iter::from_fn(|| reopened.next(now, Direction::Out))
            .map(|m| m.payload)
            .collect();
        assert_eq!(read, ["zero", "one", "two"]);
    }

    /// The split commit's bookkeeping when syncs fail: on the simulated
    /// disk (which syncs in place, having no descriptors to hand out),
    /// one sync in three fails; every message still becomes durable once,
    /// in order, and is never readable before.
    #[test]
    fn failed_syncs_of_split_commits_lose_and_repeat_nothing() {
        use super::sim::{Faults, SimDisk};
        let mut disk = SimDisk::new(7);
        disk.set_faults(Faults {
            sync: 3,
            ..Faults::default()
        });
        let poll = Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
        let config = config(Path::new("/sim"));
        let mut spool = Spool::with_disk(Box::new(disk), None, None, DEFAULT_SIZE, &config, 4096);
        spool.start_sync_thread(waker);
        let mut now = Instant::now();
        let (mut appended, mut durable, mut read) = (Vec::new(), Vec::new(), Vec::new());
        let mut failures = 0;
        for round in 0u64..300 {
            for i in 0..round % 4 {
                appended.push(spool.append(Direction::Out, b"t", &[i as u8; 40]));
            }
            match spool.start_commit(now) {
                Commit::Durable(out, _) => durable.extend(out),
                Commit::Waiting => {
                    failures += 1;
                    // The retry after a failure.
                    now += RETRY_MAX;
                }
                Commit::Syncing => panic!("the simulated disk syncs in place"),
            }
            while let Some(m) = spool.next(now, Direction::Out) {
                assert!(durable.contains(&m.seq), "{} read before durable", m.seq);
                read.push(m.seq);
                spool.done(Direction::Out, m.seq);
            }
        }
        // Until a commit succeeds with nothing left to write again.
        for _ in 0..100 {
            match spool.start_commit(now) {
                Commit::Durable(out, _) if out.is_empty() => break,
                Commit::Durable(out, _) => durable.extend(out),
                _ => now += RETRY_MAX,
            }
        }
        while let Some(m) = spool.next(now, Direction::Out) {
            read.push(m.seq);
        }
        assert!(failures > 10, "{failures} failed syncs");
        assert_eq!(read, appended, "each message once, in order");
    }

    #[test]
    fn a_whole_commit_waits_for_the_sync_under_way() {
        let dir = Scratch::new("whole");
        let poll = Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
        let mut spool = Spool::open(&config(&dir.0)).expect("spool");
        spool.start_sync_thread(waker);
        let now = Instant::now();
        spool.append(Direction::Out, b"t", b"zero");
        assert!(matches!(spool.start_commit(now), Commit::Durable(..)));
        spool.append(Direction::Out, b"t", b"one");
        assert_eq!(spool.start_commit(now), Commit::Syncing);
        spool.append(Direction::In, b"t", b"two");
        assert!(spool.commit(now).is_some());
        assert!(!spool.is_syncing());
        assert_eq!(
            (spool.unread(Direction::Out), spool.unread(Direction::In)),
            (2, 1)
        );
    }
}
