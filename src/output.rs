//! Everything iotbox prints: status lines on stdout, log lines on stderr or
//! `--log_file`, and the UTC date both use.
//!
//! The short-lived tools (`send`, `recv`) print with [`say`], a plain
//! blocking write: a tool whose reader stops reading may wait for it.
//!
//! The daemon must never wait for a reader. A stdout pipe nobody reads, a
//! terminal paused with Ctrl-S or a stuck log pipe would otherwise freeze
//! the event loop in `write(2)`: no publishing, no keep-alive, no signals.
//! So the daemon's lines go to a [`Sink`]: a bounded queue drained by a
//! small writer thread that alone may block. When the queue is full, lines
//! are dropped and counted, and the count is written as soon as the writer
//! catches up. A thread rather than `O_NONBLOCK` on descriptor 1: that flag
//! belongs to the open file description, which a terminal shares with the
//! shell that started the daemon (and with stderr), so it would leak out.

use log::LevelFilter;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// Prints one line on stdout and flushes it. A closed stdout (the reader of a
/// pipe went away) is not an error worth dying for. For the tools; the
/// daemon uses a [`Sink`].
pub fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Logging for the short-lived tools (`send`, `recv`): warnings and errors
/// on stderr, one plain line each; `RUST_LOG` overrides the level.
pub fn init_tool_logging() {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(LevelFilter::Warn);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.format(|out, record| writeln!(out, "{}", record.args()));
    let _ = builder.try_init();
}

/// `--verbosity` (the SDK sample's names) to a level.
pub fn parse_verbosity(text: &str) -> Option<LevelFilter> {
    Some(match text.to_ascii_lowercase().as_str() {
        "none" => LevelFilter::Off,
        "fatal" | "error" => LevelFilter::Error,
        "warn" | "warning" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    })
}

/// The daemon's logger: `2026-11-28 09:25:16 UTC WARN message` lines into
/// `sink` (stderr or `--log_file`). `RUST_LOG` overrides `level`.
pub fn init_daemon_logging(level: LevelFilter, sink: Sink) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.format(|out, record| {
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        writeln!(
            out,
            "{} {} {}",
            utc_date(secs),
            record.level(),
            record.args()
        )
    });
    builder.target(env_logger::Target::Pipe(Box::new(sink)));
    // Only fails if a logger is already set (never, in this process).
    let _ = builder.try_init();
}

/// Opens `--log_file` for appending.
pub fn open_log_file(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Bytes a [`Sink`] holds for a writer that does not keep up. A status line
/// is about 20 bytes and a log line about 100: this is thousands of lines,
/// and bounds the memory a stuck reader can cost.
pub const SINK_LIMIT: usize = 256 * 1024;

/// Capacity the writer keeps between batches; a larger one is freed.
const BATCH_KEEP: usize = 16 * 1024;

/// Stack of a writer thread: it only copies bytes into `write(2)`.
const WRITER_STACK: usize = 64 * 1024;

/// What a [`Sink`]'s writer thread shares with the senders.
#[derive(Default)]
struct Queue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes in `chunks` and in the chunk being written.
    queued: usize,
    /// Lines dropped since the writer last reported them.
    dropped: u64,
    /// The writer waits for work: only then does a sender wake it (a busy
    /// writer takes everything queued when it comes back).
    writer_idle: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a chunk is queued.
    ready: Condvar,
}

impl Shared {
    /// The queue, even if a writer panicked holding it (the bytes are
    /// still good).
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A bounded, never-blocking line writer: see the module documentation.
/// Clones write to the same destination, in order.
#[derive(Clone)]
pub struct Sink {
    shared: Arc<Shared>,
    limit: usize,
}

impl Sink {
    /// Starts a writer thread for `dest` holding at most `limit` bytes.
    ///
    /// # Errors
    /// When the thread cannot be started (out of memory or threads).
    pub fn spawn(dest: Box<dyn Write + Send>, limit: usize) -> io::Result<Sink> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        let theirs = shared.clone();
        std::thread::Builder::new()
            .name("output".into())
            .stack_size(WRITER_STACK)
            .spawn(move || write_all_of(&theirs, dest))?;
        Ok(Sink { shared, limit })
    }

    /// Queues `bytes` (whole lines) for the writer; never blocks for long
    /// (the lock is held only to move a chunk). When the writer is `limit`
    /// bytes behind, the lines are dropped and counted.
    ///
    /// # Returns
    /// Whether they were queued.
    pub fn send(&self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        let mut q = self.shared.lock();
        if q.queued + bytes.len() > self.limit {
            let lines = bytes.iter().filter(|&&b| b == b'\n').count().max(1);
            q.dropped += lines as u64;
            return false;
        }
        q.queued += bytes.len();
        q.chunks.push_back(bytes.to_vec());
        let wake = q.writer_idle;
        drop(q);
        if wake {
            self.shared.ready.notify_one();
        }
        true
    }

    /// Lines dropped and not yet reported by the writer.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().dropped
    }

    /// Waits up to `limit` for the writer to write what is queued (at exit:
    /// a reader that does not read is not waited for longer).
    ///
    /// # Returns
    /// Whether everything was written.
    pub fn drain(&self, limit: Duration) -> bool {
        let start = Instant::now();
        while self.shared.lock().queued > 0 {
            if start.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

/// `log`'s writer: each record is one `write` of whole lines.
impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Sink::send(self, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The writer thread: writes everything queued in one go, then reports
/// lines dropped while it was blocked. Runs until the process ends.
fn write_all_of(shared: &Shared, mut dest: Box<dyn Write + Send>) {
    let mut batch = Vec::new();
    loop {
        {
            let mut q = shared.lock();
            while q.chunks.is_empty() {
                q.writer_idle = true;
                q = shared.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
            q.writer_idle = false;
            for chunk in q.chunks.drain(..) {
                batch.extend_from_slice(&chunk);
            }
        }
        // Errors (a reader that left) are not worth stopping for: the
        // daemon keeps bridging, the bytes are gone either way.
        let _ = dest.write_all(&batch).and_then(|()| dest.flush());
        let dropped = {
            let mut q = shared.lock();
            q.queued -= batch.len();
            std::mem::take(&mut q.dropped)
        };
        batch.clear();
        if batch.capacity() > BATCH_KEEP {
            batch = Vec::new(); // after a burst: do not keep its memory
        }
        if dropped > 0 {
            let note = format!(
                "iotbox: {dropped} output line(s) dropped: the reader of this output did not keep up\n"
            );
            let _ = dest.write_all(note.as_bytes()).and_then(|()| dest.flush());
        }
    }
}

/// How often a repeated event may be logged: the first one at once, the
/// rest counted and reported at most once per interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Keeps a repeated event (a dropped message, a refused client) from
/// writing one log line each: a flood of 200,000 must not become 200,000
/// lines on an SD card. Pure: the owner passes the time.
///
/// Call [`Throttle::note`] for each event and log when it says so, with the
/// count of those it held back; put [`Throttle::deadline`] among the
/// owner's deadlines and call [`Throttle::flush`] then, so the last count
/// of a burst is reported too.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    /// Until then, events are only counted.
    quiet_until: Option<Instant>,
    held: u64,
}

impl Throttle {
    pub const fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            quiet_until: None,
            held: 0,
        }
    }

    /// One more event. `Some(held)`: log this one now, saying that `held`
    /// more happened since the last line; `None`: counted, stay quiet.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        if self.quiet_until.is_some_and(|t| now < t) {
            self.held += 1;
            return None;
        }
        self.quiet_until = Some(now + self.interval);
        Some(std::mem::take(&mut self.held))
    }

    /// When [`Throttle::flush`] has a count to report.
    pub fn deadline(&self) -> Option<Instant> {
        self.quiet_until.filter(|_| self.held > 0)
    }

    /// At the deadline: the events held back since the last line, if any.
    pub fn flush(&mut self, now: Instant) -> Option<u64> {
        match self.quiet_until {
            Some(t) if now >= t && self.held > 0 => {
                self.quiet_until = Some(now + self.interval);
                Some(std::mem::take(&mut self.held))
            }
            Some(t) if now >= t => {
                self.quiet_until = None;
                None
            }
            _ => None,
        }
    }
}

/// `YYYY-MM-DD hh:mm:ss UTC` for seconds since the epoch.
pub fn utc_date(secs: u64) -> String {
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The date of a day since 1970-01-01: (year, month, day) (Howard
/// Hinnant's civil_from_days).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn verbosity_names_of_the_sdk() {
        assert_eq!(parse_verbosity("None"), Some(LevelFilter::Off));
        assert_eq!(parse_verbosity("Fatal"), Some(LevelFilter::Error));
        assert_eq!(parse_verbosity("Info"), Some(LevelFilter::Info));
        assert_eq!(parse_verbosity("TRACE"), Some(LevelFilter::Trace));
        assert_eq!(parse_verbosity("loud"), None);
    }

    #[test]
    fn a_flood_is_one_line_then_one_count_per_interval() {
        let t0 = Instant::now();
        let mut t = Throttle::new(LOG_INTERVAL);
        assert_eq!(t.note(t0), Some(0), "the first is logged");
        let logged = (1..200_000u32)
            .filter(|i| t.note(t0 + Duration::from_micros(u64::from(*i))).is_some())
            .count();
        assert_eq!(logged, 0, "the rest of the burst is counted");
        assert_eq!(t.deadline(), Some(t0 + LOG_INTERVAL));
        assert_eq!(t.flush(t0 + LOG_INTERVAL), Some(199_999));
        assert_eq!(t.deadline(), None, "nothing more to report");
        // Quiet for an interval: the next event is logged at once.
        let t1 = t0 + 3 * LOG_INTERVAL;
        assert_eq!(t.flush(t1), None);
        assert_eq!(t.note(t1), Some(0));
    }

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_date(1_795_857_916), "2026-11-28 09:25:16 UTC");
    }

    /// A destination that blocks until the test opens the gate.
    struct Gate {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.got.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_reader_never_blocks_the_sender_and_drops_are_counted() {
        let open = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let got = Arc::new(Mutex::new(Vec::new()));
        let gate = Gate {
            open: open.clone(),
            got: got.clone(),
        };
        let sink = Sink::spawn(Box::new(gate), 1000).unwrap();
        let line = [b'x'; 99];
        let mut line = line.to_vec();
        line.push(b'\n');
        let start = std::time::Instant::now();
        let mut queued = 0;
        for _ in 0..10_000 {
            if sink.send(&line) {
                queued += 1;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "sending never waits"
        );
        assert!(queued <= 10, "bounded: {queued} lines queued");
        assert_eq!(sink.dropped(), 10_000 - queued);
        // The reader catches up: the queued lines, then the count.
        {
            let (lock, cv) = &*open;
            *lock.lock().unwrap() = true;
            cv.notify_all();
        }
        assert!(sink.drain(Duration::from_secs(10)));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = String::from_utf8_lossy(&got.lock().unwrap()).into_owned();
            if text.contains("output line(s) dropped") {
                assert!(text.contains(&format!("{} output line(s)", 10_000 - queued)));
                assert_eq!(text.matches(&"x".repeat(99)).count(), queued as usize);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{text}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
