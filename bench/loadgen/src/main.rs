//! Load generator and measuring tool for `make bench` (scripts/bench.sh).
//!
//! A crate of its own, with its own lock file, outside iotbox's dependency
//! tree; it uses the iotbox library for what the publish socket reads
//! (`iotbox::message::encode`). System calls go through crates that own
//! their raw parts: getrusage(2) through nix,
//! kill(2) through rustix, the helpers' parent-death signal through
//! util-linux's `setpriv`. It builds with iotbox's MSRV:
//!
//! ```text
//! cargo build --release --manifest-path bench/loadgen/Cargo.toml
//! ```
//!
//! Every mode prints its results as `key=value` lines on stdout (times in
//! nanoseconds, wall-clock instants as nanoseconds since the UNIX epoch so
//! they compare with `mosquitto_sub -F %U`), diagnostics on stderr, and exits
//! 1 with one clear line when something does not happen within its deadline
//! (`--timeout SECS`, default 60, for every single wait).
//!
//! Modes:
//!
//! - `freeport`: a TCP port on 127.0.0.1 that was free a moment ago.
//! - `pub`: COUNT messages of SIZE bytes through iotbox's publish socket,
//!   one connection per message (connect, write `topic\npayload`, shut down
//!   the write side, read the status to EOF), CONC connections in flight.
//! - `pipe`: the same COUNT lines on the stdin of a command (`mosquitto_pub
//!   -l`), written once the broker log shows the command connected; its CPU
//!   from then to its exit.
//! - `latency`: COUNT messages one at a time, each carrying its send time,
//!   through the publish socket or a `mosquitto_pub -l` stdin, received by a
//!   subscriber command (`mosquitto_sub -F %U,%p`) whose receive time
//!   (%U) gives the latency. Each message is sent only after the previous
//!   one arrived.
//! - `spool-fill`: a spool directory filled to a size with messages of SIZE
//!   bytes for the broker, through the iotbox library's own log (the
//!   records and segments the daemon writes), for timing its recovery.
//! - `ready`: exec of a command → the first stdout line containing TEXT; the
//!   CPU it used until then; then SIGTERM (SIGKILL after 5 s).
//! - `run`: exec of a command → its exit; wall time and CPU (rusage).
//! - `proc`: a running process's CPU time (schedstat), VmRSS and VmHWM,
//!   voluntary and involuntary context switches, threads, and its write
//!   counters from /proc/PID/io (wchar, write_bytes) when readable.
//! - `stats`: `median UNIT (min–max, n=N)` of the values after `--`, divided
//!   by `--div`, with `--dec` decimals: the figures of the progress lines.
//! - `table`: the Markdown table of target/bench.md from the samples file
//!   scripts/bench.sh wrote (see report.rs).

#![forbid(unsafe_code)]

mod report;

use iotbox::daemon::store::disk::DirDisk;
use iotbox::daemon::store::log::{Limits, Log};
use iotbox::message;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------
// System calls, through safe wrappers

use nix::sys::resource::{UsageWho, getrusage};
use rustix::process::{Pid, Signal};

/// (user, system) CPU in nanoseconds of `who`: loadgen itself, or its
/// children that have been waited for. (rustix has no getrusage(2); nix's is
/// safe.)
fn rusage(who: UsageWho) -> (u64, u64) {
    let r = getrusage(who).unwrap_or_else(|e| die(&format!("getrusage: {e}")));
    let ns =
        |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000_000 + t.tv_usec() as u64 * 1000;
    (ns(r.user_time()), ns(r.system_time()))
}

/// kill(2) by PID: only our own child, not yet reaped. An error means it
/// has exited already.
fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

// ---------------------------------------------------------------------------
// Small helpers

fn die(msg: &str) -> ! {
    eprintln!("loadgen: {msg}");
    std::process::exit(1);
}

/// Nanoseconds since the UNIX epoch (CLOCK_REALTIME, as mosquitto_sub's %U).
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn out(key: &str, value: impl std::fmt::Display) {
    println!("{key}={value}");
}

/// CPU time of a process in nanoseconds: the sum over its threads of the
/// first field of /proc/PID/task/TID/schedstat (time on CPU, ns precise);
/// falls back to utime+stime of /proc/PID/stat (clock ticks).
fn proc_cpu_ns(pid: u32) -> Option<u64> {
    let mut sum = 0u64;
    let mut any = false;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for e in dir.flatten() {
            let p = e.path().join("schedstat");
            if let Ok(s) = std::fs::read_to_string(&p) {
                if let Some(v) = s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    sum += v;
                    any = true;
                }
            }
        }
    }
    if any {
        return Some(sum);
    }
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the ")" that ends the command name: state is field 3,
    // utime 14, stime 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Some((ut + st) * (1_000_000_000 / hz))
}

/// `VmRSS` and `VmHWM` of a process, in kB.
fn proc_rss_kb(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

/// A field of /proc/PID/io (`wchar`: bytes handed to write(2) and the like;
/// `write_bytes`: bytes this process caused to be sent to the block layer,
/// counted a page at a time as pages are dirtied). `None` when the file
/// cannot be read (another user's process, or no task I/O accounting).
fn proc_io(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Percentile (nearest rank) of sorted values.
fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A payload of exactly `size` bytes starting with `seq send_ns `, padded
/// with `x`. Never contains a newline.
fn payload(seq: usize, send_ns: u64, size: usize) -> Vec<u8> {
    let mut p = format!("{seq} {send_ns} ").into_bytes();
    p.resize(size.max(p.len()), b'x');
    p
}

// ---------------------------------------------------------------------------
// Arguments

struct Args {
    opts: HashMap<String, String>,
    /// Everything after `--`.
    command: Vec<String>,
}

impl Args {
    fn parse(args: &[String], known: &[&str]) -> Args {
        let mut opts = HashMap::new();
        let mut command = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            if a == "--" {
                command = args[i + 1..].to_vec();
                break;
            }
            let Some(name) = a.strip_prefix("--") else {
                die(&format!("unexpected argument {a:?}"));
            };
            if !known.contains(&name) {
                die(&format!(
                    "unknown option --{name} (known: {})",
                    known.join(", ")
                ));
            }
            let Some(v) = args.get(i + 1) else {
                die(&format!("--{name} needs a value"));
            };
            opts.insert(name.to_owned(), v.clone());
            i += 2;
        }
        Args { opts, command }
    }

    fn str(&self, name: &str) -> Option<&str> {
        self.opts.get(name).map(String::as_str)
    }

    fn req(&self, name: &str) -> &str {
        self.str(name)
            .unwrap_or_else(|| die(&format!("missing --{name}")))
    }

    fn num(&self, name: &str, default: u64) -> u64 {
        match self.str(name) {
            None => default,
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| die(&format!("--{name}: not a number: {v:?}"))),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.num("timeout", 60))
    }

    /// The command after `--`, or die.
    fn command(&self) -> &[String] {
        if self.command.is_empty() {
            die("missing the command after --");
        }
        &self.command
    }
}

/// A command line given as one option value, split on whitespace (the bench
/// script's paths contain no spaces).
fn split_cmd(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// A command for `argv`, started the quickest way (posix_spawn): for the
/// modes that time the start of a program.
fn command(argv: &[String]) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c
}

/// A command for a helper that runs alongside a measurement (a subscriber,
/// a publisher fed through stdin): killed (SIGKILL) when loadgen dies, so an
/// interrupted bench run leaves no client behind. util-linux's `setpriv
/// --pdeathsig` sets that and execs the command (the same process): std
/// can set it only through `pre_exec`, which this crate forbids. Not for timed
/// starts: they would time setpriv's exec too.
fn helper(argv: &[String]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--pdeathsig", "KILL", "--"]).args(argv);
    c
}

// ---------------------------------------------------------------------------
// Children

/// Collects a child's pipe on a thread: everything it wrote, for errors.
fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = Arc::clone(&buf);
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => b.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    buf
}

fn text(b: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&b.lock().unwrap())
        .trim_end()
        .to_owned()
}

/// Waits for `child` to exit within `limit`; SIGKILLs it otherwise (and
/// returns `None`). The wait runs on a thread so the deadline holds.
fn wait_child(child: Child, limit: Duration) -> (Option<ExitStatus>, Instant) {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let mut child = child;
    thread::spawn(move || {
        let st = child.wait();
        let _ = tx.send((st, Instant::now()));
    });
    match rx.recv_timeout(limit) {
        Ok((Ok(st), at)) => (Some(st), at),
        Ok((Err(e), _)) => die(&format!("waiting for pid {pid}: {e}")),
        Err(_) => {
            signal(pid, Signal::KILL);
            let _ = rx.recv_timeout(Duration::from_secs(5));
            (None, Instant::now())
        }
    }
}

/// SIGTERM, then SIGKILL if it has not exited within 5 s; reaps it.
fn stop_child(child: Child) -> Option<ExitStatus> {
    signal(child.id(), Signal::TERM);
    wait_child(child, Duration::from_secs(5)).0
}

/// Polls `log` (every millisecond) until it has a line containing `pattern`.
fn wait_log(log: &str, pattern: &str, limit: Duration, what: &str) {
    let end = Instant::now() + limit;
    loop {
        if let Ok(s) = std::fs::read_to_string(log) {
            if s.lines().any(|l| l.contains(pattern)) {
                return;
            }
        }
        if Instant::now() >= end {
            die(&format!(
                "{what}: no line containing {pattern:?} in {log} within {} s",
                limit.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------
// freeport

fn freeport() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| die(&format!("bind: {e}")));
    let port = l
        .local_addr()
        .unwrap_or_else(|e| die(&format!("addr: {e}")))
        .port();
    println!("{port}");
}

// ---------------------------------------------------------------------------
// pub: through the publish socket

#[derive(Debug, PartialEq)]
enum Status {
    Ok,
    Queued,
    Err(String),
}

/// One message through the publish socket: returns the status line.
fn send_one(sock: &str, msg: &[u8], limit: Duration) -> io::Result<Status> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(limit))?;
    s.set_write_timeout(Some(limit))?;
    s.write_all(msg)?;
    s.shutdown(Shutdown::Write)?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    Ok(match reply.as_slice() {
        b"OK\n" => Status::Ok,
        b"QUEUED\n" => Status::Queued,
        other => Status::Err(String::from_utf8_lossy(other).trim_end().to_owned()),
    })
}

fn mode_pub(a: &Args) {
    let sock = a.req("socket").to_owned();
    let topic = a.req("topic").to_owned();
    let count = a.num("count", 20_000) as usize;
    let size = a.num("size", 100) as usize;
    let conc = a.num("conc", 4).max(1) as usize;
    let limit = a.timeout();

    let next = Arc::new(AtomicUsize::new(0));
    let first_send = Arc::new(AtomicU64::new(u64::MAX));
    let last_done = Arc::new(AtomicU64::new(0));
    let cpu0 = rusage(UsageWho::RUSAGE_SELF);
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..conc {
        let (sock, topic) = (sock.clone(), topic.clone());
        let (next, first_send, last_done) = (
            Arc::clone(&next),
            Arc::clone(&first_send),
            Arc::clone(&last_done),
        );
        handles.push(thread::spawn(move || {
            let mut lat = Vec::new();
            let (mut ok, mut queued, mut errs) = (0u64, 0u64, Vec::new());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let t = now_ns();
                first_send.fetch_min(t, Ordering::Relaxed);
                let msg = message::encode(&topic, &payload(i, t, size));
                let st = send_one(&sock, &msg, limit);
                let done = now_ns();
                last_done.fetch_max(done, Ordering::Relaxed);
                match st {
                    Ok(Status::Ok) => {
                        ok += 1;
                        lat.push(done - t);
                    }
                    Ok(Status::Queued) => queued += 1,
                    Ok(Status::Err(e)) => errs.push(format!("ERR {e}")),
                    Err(e) => errs.push(e.to_string()),
                }
            }
            (ok, queued, errs, lat)
        }));
    }
    let (mut ok, mut queued, mut errs, mut lat) = (0, 0, Vec::new(), Vec::new());
    for h in handles {
        let (o, q, e, l) = h.join().unwrap_or_else(|_| die("a sender thread panicked"));
        ok += o;
        queued += q;
        errs.extend(e);
        lat.extend(l);
    }
    let wall = t0.elapsed();
    let cpu1 = rusage(UsageWho::RUSAGE_SELF);
    lat.sort_unstable();
    out("count", count);
    out("ok", ok);
    out("queued", queued);
    out("errors", errs.len());
    out("first_send_ns", first_send.load(Ordering::Relaxed));
    out("last_status_ns", last_done.load(Ordering::Relaxed));
    out("wall_ns", wall.as_nanos());
    out("ok_p50_ns", pct(&lat, 50.0));
    out("ok_p99_ns", pct(&lat, 99.0));
    out(
        "client_cpu_ns",
        (cpu1.0 + cpu1.1).saturating_sub(cpu0.0 + cpu0.1),
    );
    if !errs.is_empty() {
        die(&format!(
            "{} of {count} messages failed; first: {}",
            errs.len(),
            errs[0]
        ));
    }
}

// ---------------------------------------------------------------------------
// pipe: lines on a command's stdin (mosquitto_pub -l)

fn mode_pipe(a: &Args) {
    let count = a.num("count", 20_000) as usize;
    let size = a.num("size", 100) as usize;
    let log = a.req("log").to_owned();
    let ready = a.req("ready").to_owned();
    let limit = a.timeout();
    let argv = a.command().to_vec();

    // All lines, prepared before the clock starts. The timestamp in them is
    // the start of the run (they are not used for latency here).
    let mut lines = Vec::with_capacity(count * (size + 1));
    for i in 0..count {
        lines.extend_from_slice(&payload(i, 0, size));
        lines.push(b'\n');
    }

    let base = rusage(UsageWho::RUSAGE_CHILDREN);
    let mut cmd = helper(&argv);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t_spawn = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| die(&format!("cannot start {}: {e}", argv[0])));
    let pid = child.id();
    let err = collect(child.stderr.take().expect("piped"));
    let mut stdin = child.stdin.take().expect("piped");
    wait_log(&log, &ready, limit, &format!("{} connecting", argv[0]));
    let ready_ns = t_spawn.elapsed().as_nanos();
    let cpu_ready = proc_cpu_ns(pid).unwrap_or(0);
    let first_send = now_ns();
    let t_first = Instant::now();
    // A writer thread, so a stuck child cannot hold us past the deadline.
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let r = stdin.write_all(&lines);
        let at = Instant::now();
        let (rss, hwm) = proc_rss_kb(pid);
        drop(stdin);
        let _ = tx.send((r, at, rss, hwm));
    });
    let (rss, hwm, written) = match rx.recv_timeout(limit) {
        Ok((Ok(()), at, rss, hwm)) => (rss, hwm, at),
        Ok((Err(e), _, _, _)) => die(&format!(
            "writing to {}'s stdin: {e}; its stderr: {}",
            argv[0],
            text(&err)
        )),
        Err(_) => {
            signal(pid, Signal::KILL);
            die(&format!(
                "{} did not read its input within {} s",
                argv[0],
                limit.as_secs()
            ))
        }
    };
    let (st, exited) = wait_child(child, limit);
    let Some(st) = st else {
        die(&format!(
            "{} did not exit within {} s after its input ended",
            argv[0],
            limit.as_secs()
        ));
    };
    if !st.success() {
        die(&format!("{} failed ({st}): {}", argv[0], text(&err)));
    }
    let total = rusage(UsageWho::RUSAGE_CHILDREN);
    let cpu_total = (total.0 + total.1).saturating_sub(base.0 + base.1);
    out("count", count);
    out("ready_ns", ready_ns);
    out("first_send_ns", first_send);
    out("written_ns", (written - t_first).as_nanos());
    out("exit_ns", (exited - t_first).as_nanos());
    out("cpu_ready_ns", cpu_ready);
    out("cpu_total_ns", cpu_total);
    out("cpu_run_ns", cpu_total.saturating_sub(cpu_ready));
    out("rss_kb", rss);
    out("hwm_kb", hwm);
}

// ---------------------------------------------------------------------------
// latency: one message at a time, send time → subscriber's receive time

/// An arrival at the subscriber: the sequence number in the payload and the
/// subscriber's receive time (ns since the epoch).
struct Arrival {
    seq: usize,
    recv_ns: u64,
}

/// Parses `SECS.NANOS,SEQ SEND_NS xxx...` (mosquitto_sub -F '%U,%p': no
/// space in the format, so the command fits in one whitespace-split option).
fn parse_arrival(line: &str) -> Option<Arrival> {
    let (ts, p) = line.split_once(',')?;
    let seq = p.split_whitespace().next()?.parse().ok()?;
    let (s, frac) = ts.split_once('.')?;
    let s: u64 = s.parse().ok()?;
    // %U has 9 decimals; tolerate fewer.
    let mut f = frac.to_owned();
    f.truncate(9);
    while f.len() < 9 {
        f.push('0');
    }
    let ns: u64 = f.parse().ok()?;
    Some(Arrival {
        seq,
        recv_ns: s * 1_000_000_000 + ns,
    })
}

enum Sender {
    Socket { sock: String, topic: String },
    Pipe { stdin: ChildStdin },
}

fn mode_latency(a: &Args) {
    let count = a.num("count", 1000) as usize;
    let warmup = a.num("warmup", 20) as usize;
    let size = a.num("size", 100) as usize;
    let limit = a.timeout();
    let sub_argv = split_cmd(a.req("sub"));
    if sub_argv.is_empty() {
        die("--sub: empty command");
    }

    // The subscriber: its stdout lines become arrivals on a channel.
    let mut sub = helper(&sub_argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| die(&format!("cannot start {}: {e}", sub_argv[0])));
    let sub_err = collect(sub.stderr.take().expect("piped"));
    let (tx, rx) = mpsc::channel::<Arrival>();
    let sub_out = sub.stdout.take().expect("piped");
    thread::spawn(move || {
        for line in BufReader::new(sub_out).lines() {
            let Ok(line) = line else { break };
            if std::env::var_os("LOADGEN_DEBUG").is_some() {
                eprintln!("loadgen: subscriber: {line}");
            }
            if let Some(a) = parse_arrival(&line) {
                if tx.send(a).is_err() {
                    break;
                }
            }
        }
    });

    let mut publisher: Option<Child> = None;
    let mut pub_err = None;
    let mut sender = match (a.str("socket"), a.str("pub")) {
        (Some(sock), None) => Sender::Socket {
            sock: sock.to_owned(),
            topic: a.req("topic").to_owned(),
        },
        (None, Some(p)) => {
            let argv = split_cmd(p);
            if argv.is_empty() {
                die("--pub: empty command");
            }
            let mut c = helper(&argv)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| die(&format!("cannot start {}: {e}", argv[0])));
            pub_err = Some(collect(c.stderr.take().expect("piped")));
            let stdin = c.stdin.take().expect("piped");
            publisher = Some(c);
            Sender::Pipe { stdin }
        }
        _ => die("give exactly one of --socket (with --topic) and --pub"),
    };

    let sub_pid = sub.id();
    let pub_pid = publisher.as_ref().map(Child::id);
    let fail = |msg: String| -> ! {
        let pe = pub_err.as_ref().map(text).unwrap_or_default();
        signal(sub_pid, Signal::KILL);
        if let Some(p) = pub_pid {
            signal(p, Signal::KILL);
        }
        die(&format!(
            "{msg}\n  subscriber stderr: {}\n  publisher stderr: {pe}",
            text(&sub_err)
        ))
    };

    // Sends message `seq` (stamped now); returns its send time and, through
    // the socket, the time its status came back.
    let send = |sender: &mut Sender, seq: usize| -> Result<(u64, u64), String> {
        let t = now_ns();
        match sender {
            Sender::Socket { sock, topic } => {
                let msg = message::encode(topic, &payload(seq, t, size));
                match send_one(sock, &msg, limit) {
                    Ok(Status::Ok) => Ok((t, now_ns())),
                    Ok(other) => Err(format!("message {seq}: status {other:?}")),
                    Err(e) => Err(format!("message {seq}: {e}")),
                }
            }
            Sender::Pipe { stdin } => {
                let mut line = payload(seq, t, size);
                line.push(b'\n');
                stdin
                    .write_all(&line)
                    .and_then(|()| stdin.flush())
                    .map(|()| (t, 0))
                    .map_err(|e| format!("message {seq}: writing to the publisher: {e}"))
            }
        }
    };
    // Waits until message `seq` arrived (older ones are skipped).
    let wait_for = |seq: usize, within: Duration| -> Option<u64> {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(a) if a.seq == seq => return Some(a.recv_ns),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    };

    // Probe until a message gets through: the subscriber is subscribed and
    // the publisher connected. Then `warmup` messages, then the measured ones.
    let mut seq = 0;
    let probe_end = Instant::now() + limit;
    loop {
        if let Err(e) = send(&mut sender, seq) {
            fail(e);
        }
        if wait_for(seq, Duration::from_millis(250)).is_some() {
            break;
        }
        seq += 1;
        if Instant::now() >= probe_end {
            fail(format!(
                "no probe message reached the subscriber within {} s",
                limit.as_secs()
            ));
        }
    }
    let probes = seq + 1;
    let mut lat = Vec::with_capacity(count);
    let mut status_lat = Vec::new();
    for n in 0..warmup + count {
        seq += 1;
        let (t, st) = match send(&mut sender, seq) {
            Ok(v) => v,
            Err(e) => fail(e),
        };
        let Some(recv) = wait_for(seq, limit) else {
            fail(format!(
                "message {seq} did not reach the subscriber within {} s",
                limit.as_secs()
            ));
        };
        if n >= warmup {
            lat.push(recv.saturating_sub(t));
            if st > 0 {
                status_lat.push(st - t);
            }
        }
    }
    drop(sender);
    if let Some(p) = publisher {
        if wait_child(p, limit).0.is_none() {
            eprintln!("loadgen: the publisher did not exit after its input ended; killed");
        }
    }
    let _ = stop_child(sub);

    lat.sort_unstable();
    status_lat.sort_unstable();
    out("count", count);
    out("probes", probes);
    out("p50_ns", pct(&lat, 50.0));
    out("p90_ns", pct(&lat, 90.0));
    out("p99_ns", pct(&lat, 99.0));
    out("max_ns", lat.last().copied().unwrap_or(0));
    out("mean_ns", lat.iter().sum::<u64>() / lat.len().max(1) as u64);
    if !status_lat.is_empty() {
        out("status_p50_ns", pct(&status_lat, 50.0));
        out("status_p99_ns", pct(&status_lat, 99.0));
    }
}

// ---------------------------------------------------------------------------
// spool-fill: a full spool, written through the library's log

/// The daemon's segment size for a spool of `limit` bytes (as
/// `Spool::with_disk` computes it).
fn segment_bytes(limit: u64) -> u64 {
    (limit / 16).clamp(16 << 10, 1 << 20)
}

fn mode_spool_fill(a: &Args) {
    let dir = std::path::PathBuf::from(a.req("dir"));
    let limit = a.num("bytes", 64 << 20);
    let size = a.num("size", 100) as usize;
    let topic = a.req("topic").to_owned();
    // Messages per commit (write + fdatasync): the daemon's group commit
    // takes what one loop turn read; a segment is rolled at a commit, so
    // this also keeps the segments near the daemon's size.
    let batch = a.num("batch", 100).max(1);
    let limit_time = a.timeout();
    if dir.exists() {
        die(&format!(
            "{}: exists; spool-fill makes a new spool",
            dir.display()
        ));
    }
    let mut disk = DirDisk::new(&dir).unwrap_or_else(|e| die(&format!("{}: {e}", dir.display())));
    let limits = Limits {
        segment_bytes: segment_bytes(limit),
        // The daemon's default --max_payload (131072) plus its margin.
        max_body: (128 << 10) + 1024,
    };
    let (mut log, found) = Log::open(&mut disk, "out", limits);
    if found.messages > 0 || found.segments > 0 {
        die(&format!("{}: not an empty spool", dir.display()));
    }
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let t0 = Instant::now();
    let mut n = 0u64;
    // Full as the daemon sees it: no room once its bytes reach the limit.
    while log.bytes() < limit {
        log.append(time, topic.as_bytes(), &payload(n as usize, 0, size));
        n += 1;
        if n % batch == 0 {
            log.commit(&mut disk)
                .unwrap_or_else(|e| die(&format!("writing to {}: {e}", dir.display())));
            if t0.elapsed() > limit_time {
                die(&format!(
                    "{} not filled within {} s ({n} messages, {} bytes)",
                    dir.display(),
                    limit_time.as_secs(),
                    log.bytes()
                ));
            }
        }
    }
    log.commit(&mut disk)
        .unwrap_or_else(|e| die(&format!("writing to {}: {e}", dir.display())));
    let stats = log.stats();
    out("messages", n);
    out("bytes", log.bytes());
    out("segments", log.segments());
    out("segment_bytes", limits.segment_bytes);
    out("syncs", stats.syncs);
    out("wall_ns", t0.elapsed().as_nanos());
}

// ---------------------------------------------------------------------------
// ready: exec → a line on stdout

fn mode_ready(a: &Args) {
    let want = a.req("line").to_owned();
    let limit = a.timeout();
    let argv = a.command().to_vec();
    let mut cmd = command(&argv);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| die(&format!("cannot start {}: {e}", argv[0])));
    let pid = child.id();
    let err = collect(child.stderr.take().expect("piped"));
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains(&want) {
                // The time first: the CPU read must not delay it.
                let at = Instant::now();
                let cpu = proc_cpu_ns(pid);
                let _ = tx.send(Ok((at, cpu)));
                return;
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        let _ = tx.send(Err(seen));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok((at, cpu))) => {
            let _ = stop_child(child);
            out("ready_ns", (at - t0).as_nanos());
            out("cpu_ready_ns", cpu.unwrap_or(0));
        }
        Ok(Err(seen)) => {
            let st = wait_child(child, Duration::from_secs(5)).0;
            die(&format!(
                "{} ended its output ({}) without a line containing {:?}\n  stdout: {}\n  stderr: {}",
                argv[0],
                st.map(|s| s.to_string())
                    .unwrap_or_else(|| "still running".into()),
                a.req("line"),
                seen.trim_end(),
                text(&err)
            ));
        }
        Err(_) => {
            let _ = stop_child(child);
            die(&format!(
                "{}: no line containing {:?} within {} s\n  stderr: {}",
                argv[0],
                a.req("line"),
                limit.as_secs(),
                text(&err)
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// run: exec → exit

fn mode_run(a: &Args) {
    let expect = a.str("expect").map(str::to_owned);
    let limit = a.timeout();
    let argv = a.command().to_vec();
    let mut cmd = command(&argv);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let base = rusage(UsageWho::RUSAGE_CHILDREN);
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| die(&format!("cannot start {}: {e}", argv[0])));
    let so = collect(child.stdout.take().expect("piped"));
    let se = collect(child.stderr.take().expect("piped"));
    let (st, at) = wait_child(child, limit);
    let Some(st) = st else {
        die(&format!(
            "{} did not exit within {} s",
            argv[0],
            limit.as_secs()
        ));
    };
    let wall = at - t0;
    let r = rusage(UsageWho::RUSAGE_CHILDREN);
    // The pipes close at exit; give the reader threads a moment for the text.
    let end = Instant::now() + Duration::from_millis(500);
    while expect
        .as_ref()
        .is_some_and(|e| !text(&so).contains(e.as_str()))
        && Instant::now() < end
    {
        thread::sleep(Duration::from_millis(1));
    }
    if !st.success() {
        die(&format!(
            "{} failed ({st})\n  stdout: {}\n  stderr: {}",
            argv[0],
            text(&so),
            text(&se)
        ));
    }
    if let Some(e) = &expect {
        if !text(&so).contains(e.as_str()) {
            die(&format!(
                "{}: stdout lacks {e:?}\n  stdout: {}\n  stderr: {}",
                argv[0],
                text(&so),
                text(&se)
            ));
        }
    }
    let (u, s) = (r.0.saturating_sub(base.0), r.1.saturating_sub(base.1));
    out("wall_ns", wall.as_nanos());
    out("cpu_ns", u + s);
    out("user_ns", u);
    out("sys_ns", s);
}

// ---------------------------------------------------------------------------
// proc: a running process's CPU, memory and context switches

/// The sum over a process's threads of a `name: N` line of their
/// /proc/PID/task/TID/status.
fn proc_task_sum(pid: u32, name: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

fn mode_proc(a: &Args) {
    let pid = a.num("pid", 0) as u32;
    let Some(cpu) = proc_cpu_ns(pid) else {
        die(&format!("no process {pid} (/proc/{pid})"));
    };
    let (rss, hwm) = proc_rss_kb(pid);
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0);
    out("cpu_ns", cpu);
    out("rss_kb", rss);
    out("hwm_kb", hwm);
    out("vcsw", proc_task_sum(pid, "voluntary_ctxt_switches"));
    out("nvcsw", proc_task_sum(pid, "nonvoluntary_ctxt_switches"));
    out("threads", threads);
    for field in ["wchar", "write_bytes", "cancelled_write_bytes"] {
        if let Some(v) = proc_io(pid, field) {
            out(field, v);
        }
    }
}

// ---------------------------------------------------------------------------
// stats and table: the numbers as text (report.rs)

fn mode_stats(a: &Args) {
    let div: f64 = a
        .str("div")
        .unwrap_or("1")
        .parse()
        .unwrap_or_else(|_| die("--div: not a number"));
    let dec = a.num("dec", 0) as usize;
    let unit = a.str("unit").unwrap_or("");
    let values: Vec<f64> = a
        .command
        .iter()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| die(&format!("not a number: {v:?}")))
        })
        .collect();
    println!("{}", report::show(&values, div, dec, unit));
}

fn mode_table(a: &Args) {
    let path = a.req("samples");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| die(&format!("{path}: {e}")));
    let table = report::Samples::parse(&text)
        .and_then(|s| report::table(&s))
        .unwrap_or_else(|e| die(&format!("{path}: {e}")));
    print!("{table}");
}

// ---------------------------------------------------------------------------

const USAGE: &str = "usage: loadgen MODE [--option value]... [-- COMMAND ARGS...]
  freeport
  pub      --socket PATH --topic T [--count N] [--size B] [--conc K]
  pipe     --log FILE --ready TEXT [--count N] [--size B] -- COMMAND...
  latency  --sub 'COMMAND...' (--socket PATH --topic T | --pub 'COMMAND...')
           [--count N] [--warmup W] [--size B]
  spool-fill --dir DIR --topic T [--bytes N] [--size B] [--batch K]
  ready    --line TEXT -- COMMAND...
  run      [--expect TEXT] -- COMMAND...
  proc     --pid PID
  stats    [--div D] [--dec N] [--unit U] -- VALUES...
  table    --samples FILE
every mode: [--timeout SECS] (default 60, for each wait)";

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = argv.first() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let rest = &argv[1..];
    match mode.as_str() {
        "freeport" => freeport(),
        "pub" => mode_pub(&Args::parse(
            rest,
            &["socket", "topic", "count", "size", "conc", "timeout"],
        )),
        "pipe" => mode_pipe(&Args::parse(
            rest,
            &["log", "ready", "count", "size", "timeout"],
        )),
        "latency" => mode_latency(&Args::parse(
            rest,
            &[
                "sub", "socket", "topic", "pub", "count", "warmup", "size", "timeout",
            ],
        )),
        "spool-fill" => mode_spool_fill(&Args::parse(
            rest,
            &["dir", "topic", "bytes", "size", "batch", "timeout"],
        )),
        "ready" => mode_ready(&Args::parse(rest, &["line", "timeout"])),
        "run" => mode_run(&Args::parse(rest, &["expect", "timeout"])),
        "proc" => mode_proc(&Args::parse(rest, &["pid"])),
        "stats" => mode_stats(&Args::parse(rest, &["div", "dec", "unit"])),
        "table" => mode_table(&Args::parse(rest, &["samples"])),
        "-h" | "--help" | "help" => println!("{USAGE}"),
        other => {
            eprintln!("loadgen: unknown mode {other:?}\n{USAGE}");
            std::process::exit(2);
        }
    }
}
