//! `jobs`: the device's job runner (AWS IoT Jobs), a client of the daemon's
//! local endpoint.
//!
//! ```text
//! iotbox jobs --exec /usr/libexec/iotbox/job-handler --timeout 600
//! ```
//!
//! It works through the thing's jobs one at a time, the Jobs MQTT API's way:
//!
//! 1. At start, `jobs/get`: an execution already IN_PROGRESS was started by
//!    an earlier run that did not finish it (a reboot, a crash, kill -9). It
//!    is reported FAILED with that reason: its handler cannot be resumed,
//!    and it must not stay IN_PROGRESS forever.
//! 2. `jobs/start-next` takes the next queued execution and puts it
//!    IN_PROGRESS (with a step timeout of `--timeout` plus a minute, so AWS
//!    times it out by itself if this device goes silent).
//! 3. The handler runs as `/bin/sh -c HANDLER` in a process group of its
//!    own, the job document (JSON) on its stdin, `IOTBOX_JOB_ID` and
//!    `IOTBOX_THING_NAME` set. Its output lines are printed, prefixed with
//!    the job id, and the last ones kept.
//! 4. `jobs/JOBID/update`: SUCCEEDED when it exits 0, else FAILED; the
//!    statusDetails say the exit status (or the signal, or the timeout) and
//!    the handler's last output lines, flattened to what AWS accepts.
//!    Past `--timeout` the whole process group is killed and the job FAILED.
//!    Should AWS refuse the details (a character its pattern excludes), the
//!    status goes again without the output.
//! 5. Back to 2; with nothing queued, wait for `jobs/notify-next`.
//!
//! SIGTERM or SIGINT between jobs: exit 0 at once. While a handler runs: its
//! process group gets SIGTERM (SIGKILL after 5 s), the job is reported
//! FAILED ("stopped"), then exit 0.
//!
//! The runner is a service: when the daemon goes away or an answer does not
//! come within 10 s, it connects again (1 s, doubling to 30 s) and goes on,
//! a report not yet delivered first. Only what cannot get better by waiting
//! ends it (exit 1: a subscription refused, say). One runner per thing.

use super::mqtt::{self, Answer};
use super::status;
use crate::cli::{self, JobsArgs};
use crate::daemon::{check_thing_name, is_aws_name};
use crate::error::{Error, runtime, usage};
use crate::json::{self, Value};
use crate::output::say;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// How long an answer from AWS (through the daemon) may take.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// How many of the handler's last output lines go into statusDetails.
const TAIL_LINES: usize = 10;

/// AWS's limit on a statusDetails value, in characters.
const MAX_DETAIL: usize = 1024;

/// How long the handler's output may take to reach its end after the
/// handler exited.
const READ_REST: Duration = Duration::from_secs(1);

/// The longest wait between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

type Client = mqtt::Client<UnixStream>;

pub fn main(command: &str, args: &[&str]) -> Result<(), Error> {
    let Some(flags) = cli::parse_normalized::<JobsArgs>(command, args)? else {
        return Ok(());
    };
    crate::output::init_tool_logging();
    if flags.exec.trim().is_empty() {
        return Err(usage!("--exec is empty: give the handler's command line"));
    }
    if let Some(thing) = &flags.thing_name {
        check_thing_name(thing)?;
    }
    let stop = Stop::watch().map_err(|e| runtime!("cannot watch SIGTERM and SIGINT: {e}"))?;
    let mut runner = Runner {
        flags,
        thing: None,
        recovered: false,
        unsent: None,
        stop,
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut client = None;
        let error = match runner.session(&mut client) {
            // Stopped by a signal once the job at hand was reported.
            Ok(()) => {
                if let Some(client) = client {
                    client.disconnect();
                }
                return Ok(());
            }
            Err(e) => e,
        };
        if runner.stop.requested() {
            // Stopping, and this connection failed: what was not reported is
            // reported FAILED ("interrupted") by the next start.
            log::warn!("{error}; stopping as asked");
            return Ok(());
        }
        let again = match (&error, &client) {
            // The daemon is not there (yet), or went away.
            (_, None) => true,
            (_, Some(c)) if c.is_broken() => true,
            (Error::NotConfirmed(_), _) => true,
            _ => false,
        };
        if !again {
            return Err(error);
        }
        if let Some(client) = client.take() {
            // It was connected: the next try starts from a short wait.
            backoff = Duration::from_secs(1);
            if !client.is_broken() {
                client.disconnect();
            }
        }
        log::warn!("{error}; connecting again in {} s", backoff.as_secs());
        thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// SIGTERM and SIGINT. Between jobs the runner exits at once (0). While a
/// job is at hand (its handler runs, or its report is on its way) the
/// signal goes to the job: the handler's process group gets SIGTERM
/// (SIGKILL after [`STOP_GRACE`]), the job is reported FAILED, then the
/// runner exits 0. So a stop never leaves a handler behind, and its job is
/// reported at once rather than at the next start.
struct Stop {
    /// The job at hand, if any: where the signal goes.
    job: Mutex<Option<mpsc::Sender<Event>>>,
    requested: AtomicBool,
}

/// How long a stopped handler's group has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Stop {
    fn watch() -> std::io::Result<Arc<Stop>> {
        let stop = Arc::new(Stop {
            job: Mutex::new(None),
            requested: AtomicBool::new(false),
        });
        let mut signals = Signals::new([SIGTERM, SIGINT])?;
        let shared = Arc::clone(&stop);
        thread::spawn(move || {
            for signal in signals.forever() {
                let job = shared.job.lock().unwrap_or_else(PoisonError::into_inner);
                shared.requested.store(true, Ordering::SeqCst);
                match &*job {
                    // Nothing at hand; the lock keeps a job from starting
                    // meanwhile.
                    None => std::process::exit(0),
                    Some(to) => {
                        let _ = to.send(Event::Stop(signal));
                    }
                }
            }
        });
        Ok(stop)
    }

    /// A job is at hand until the returned guard goes: a signal then waits
    /// for it, on the channel `to`. Guards nest: the inner one's channel
    /// takes the signal while it lasts, the outer one's again after.
    fn hold(&self, to: mpsc::Sender<Event>) -> Holding<'_> {
        let mut job = self.job.lock().unwrap_or_else(PoisonError::into_inner);
        let outer = job.replace(to);
        Holding { stop: self, outer }
    }

    fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

struct Holding<'a> {
    stop: &'a Stop,
    outer: Option<mpsc::Sender<Event>>,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        *self.stop.job.lock().unwrap_or_else(PoisonError::into_inner) = self.outer.take();
    }
}

/// What the runner waits for while a handler runs.
enum Event {
    Exited(std::io::Result<ExitStatus>),
    Stop(i32),
}

struct Runner {
    flags: JobsArgs,
    /// The thing, once known.
    thing: Option<String>,
    /// Whether the executions left IN_PROGRESS by an earlier run were
    /// reported (once per process).
    recovered: bool,
    /// A finished job's update not yet answered.
    unsent: Option<Report>,
    stop: Arc<Stop>,
}

impl Runner {
    /// One connection's work, until a signal stops the runner (`Ok`) or
    /// something fails. `client` is left for the caller to judge the error
    /// by.
    fn session(&mut self, client: &mut Option<Client>) -> Result<(), Error> {
        let deadline = Instant::now() + ANSWER_WAIT;
        let c = client.insert(mqtt::connect_local(&self.flags.socket, "jobs", deadline)?);
        let thing = match (&self.flags.thing_name, &self.thing) {
            (Some(thing), _) | (None, Some(thing)) => thing.clone(),
            (None, None) => status::thing_name(c, deadline)?,
        };
        self.thing = Some(thing.clone());
        let prefix = format!("$aws/things/{thing}/jobs");
        let filters: Vec<String> = [
            "notify-next",
            "get/accepted",
            "get/rejected",
            "start-next/accepted",
            "start-next/rejected",
            "+/update/accepted",
            "+/update/rejected",
        ]
        .iter()
        .map(|t| format!("{prefix}/{t}"))
        .collect();
        c.subscribe(&filters, deadline)?;
        self.deliver(c, &prefix)?;
        if self.stop.requested() {
            return Ok(());
        }
        if !self.recovered {
            self.fail_interrupted(c, &prefix)?;
            self.recovered = true;
        }
        loop {
            match start_next(c, &prefix, self.flags.timeout)? {
                Some(execution) => self.run(c, &prefix, &thing, &execution)?,
                None => wait_for_notify(c, &prefix)?,
            }
            if self.stop.requested() {
                return Ok(());
            }
        }
    }

    /// Reports FAILED every execution an earlier run left IN_PROGRESS.
    fn fail_interrupted(&mut self, c: &mut Client, prefix: &str) -> Result<(), Error> {
        let token = mqtt::client_token("jobs");
        let payload = Value::Object(vec![("clientToken".into(), Value::Str(token.clone()))]);
        let topic = format!("{prefix}/get");
        let in_progress = match c.request(&topic, &payload.to_json(), &token, deadline())? {
            Answer::Accepted(answer) => match answer.get("inProgressJobs") {
                Some(Value::Array(jobs)) => jobs.clone(),
                _ => Vec::new(),
            },
            Answer::Rejected(error) => return Err(mqtt::rejection("jobs get", &error)),
        };
        for summary in in_progress {
            let Some(job) = summary.get("jobId").and_then(Value::as_str) else {
                continue;
            };
            if !is_job_id(job) {
                log::warn!("skipping a job id AWS would not give: {job:?}");
                continue;
            }
            self.unsent = Some(Report {
                job: job.to_owned(),
                status: "FAILED",
                details: vec![(
                    "reason".to_owned(),
                    "interrupted: the device or iotbox jobs restarted while the handler ran"
                        .to_owned(),
                )],
            });
            self.deliver(c, prefix)?;
            say(&format!(
                "job {job}: FAILED (interrupted before it finished)"
            ));
        }
        Ok(())
    }

    /// Runs one execution's handler and reports how it ended.
    fn run(
        &mut self,
        c: &mut Client,
        prefix: &str,
        thing: &str,
        execution: &Value,
    ) -> Result<(), Error> {
        let Some(job) = execution.get("jobId").and_then(Value::as_str) else {
            return Err(runtime!(
                "start-next gave an execution without a jobId: {}",
                execution.to_json()
            ));
        };
        if !is_job_id(job) {
            return Err(runtime!(
                "start-next gave a job id AWS would not give: {job:?}"
            ));
        }
        let document = match execution.get("jobDocument") {
            Some(Value::Str(text)) => text.clone(),
            Some(doc) => doc.to_json(),
            None => "{}".to_owned(),
        };
        say(&format!("job {job}: started"));
        let (to, events) = mpsc::channel();
        let stop = Arc::clone(&self.stop);
        let _holding = stop.hold(to.clone());
        let outcome = self.execute(c, job, thing, &document, to, &events);
        let status = if outcome.succeeded() {
            "SUCCEEDED"
        } else {
            "FAILED"
        };
        self.unsent = Some(Report {
            job: job.to_owned(),
            status,
            details: outcome.details(),
        });
        // The handler took its time: the connection may have gone meanwhile
        // (the report then goes first on the next one).
        self.deliver(c, prefix)?;
        say(&format!("job {job}: {status} ({})", outcome.words()));
        Ok(())
    }

    /// Runs the handler to its end, keeping the connection alive meanwhile.
    /// `to` and `events`: the channel its exit, and a stop, come on.
    fn execute(
        &self,
        c: &mut Client,
        job: &str,
        thing: &str,
        document: &str,
        to: mpsc::Sender<Event>,
        events: &mpsc::Receiver<Event>,
    ) -> Outcome {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&self.flags.exec)
            .env("IOTBOX_JOB_ID", job)
            .env("IOTBOX_THING_NAME", thing)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so a timeout ends whatever it started too.
            .process_group(0);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return Outcome::NotStarted(format!("cannot run /bin/sh: {e}")),
        };
        let tail = Arc::new(Mutex::new(Tail::default()));
        if let Some(mut stdin) = child.stdin.take() {
            let document = document.as_bytes().to_vec();
            // A thread: a handler that does not read its stdin must not
            // block us on a full pipe.
            thread::spawn(move || {
                let _ = stdin.write_all(&document);
            });
        }
        let (eof, ended) = mpsc::channel();
        let mut streams = 0;
        if let Some(out) = child.stdout.take() {
            collect(out, job, Arc::clone(&tail), eof.clone());
            streams += 1;
        }
        if let Some(err) = child.stderr.take() {
            collect(err, job, Arc::clone(&tail), eof);
            streams += 1;
        }
        let pid = child.id();
        thread::spawn(move || {
            let _ = to.send(Event::Exited(child.wait()));
        });
        let limit = (self.flags.timeout > 0)
            .then(|| Instant::now() + Duration::from_secs(self.flags.timeout));
        let ping = c.ping_every().unwrap_or(Duration::from_secs(30));
        let mut timed_out = false;
        // A signal: when the group gets SIGKILL if still there.
        let mut stopped: Option<(i32, Instant)> = None;
        let status = loop {
            let mut wait = ping;
            if let (Some(limit), false) = (limit, timed_out) {
                wait = wait.min(limit.saturating_duration_since(Instant::now()));
            }
            if let Some((_, kill_at)) = stopped {
                wait = wait.min(kill_at.saturating_duration_since(Instant::now()));
            }
            match events.recv_timeout(wait) {
                Ok(Event::Exited(status)) => break status,
                Ok(Event::Stop(signal)) => {
                    if stopped.is_none() {
                        signal_group(pid, rustix::process::Signal::TERM);
                        stopped = Some((signal, Instant::now() + STOP_GRACE));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    if limit.is_some_and(|l| now >= l) && !timed_out && stopped.is_none() {
                        timed_out = true;
                        signal_group(pid, rustix::process::Signal::KILL);
                    }
                    if stopped.is_some_and(|(_, kill_at)| now >= kill_at) {
                        signal_group(pid, rustix::process::Signal::KILL);
                    }
                    // A broken connection is found again at the report.
                    let _ = c.keep_alive();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    break Err(std::io::Error::other("the handler's waiter went away"));
                }
            }
        };
        // The readers' last lines: each stream to its end, but a background
        // process the handler left holding the pipes holds up the report
        // for a second at most.
        let give_up = Instant::now() + READ_REST;
        for _ in 0..streams {
            let left = give_up.saturating_duration_since(Instant::now());
            if ended.recv_timeout(left).is_err() {
                break;
            }
        }
        let lines = tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lines
            .clone();
        match status {
            _ if stopped.is_some() => Outcome::Stopped(stopped.map_or(0, |(s, _)| s), lines),
            _ if timed_out => Outcome::TimedOut(self.flags.timeout, lines),
            Ok(status) => Outcome::Exited(status, lines),
            Err(e) => Outcome::NotStarted(format!("cannot wait for the handler: {e}")),
        }
    }
}

/// How a handler ended.
enum Outcome {
    Exited(ExitStatus, VecDeque<String>),
    TimedOut(u64, VecDeque<String>),
    /// The runner got this signal while the handler ran.
    Stopped(i32, VecDeque<String>),
    NotStarted(String),
}

impl Outcome {
    fn succeeded(&self) -> bool {
        matches!(self, Outcome::Exited(status, _) if status.success())
    }

    fn words(&self) -> String {
        match self {
            Outcome::Exited(status, _) => match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                (None, None) => "ended".into(),
            },
            Outcome::TimedOut(secs, _) => {
                format!("timed out after {secs} s: its process group was killed")
            }
            Outcome::Stopped(signal, _) => {
                format!("stopped: iotbox jobs got signal {signal} while the handler ran")
            }
            Outcome::NotStarted(why) => why.clone(),
        }
    }

    /// statusDetails: what ended it, and the last output lines.
    fn details(&self) -> Vec<(String, String)> {
        let mut details = Vec::new();
        let lines = match self {
            Outcome::Exited(status, lines) => {
                if let Some(code) = status.code() {
                    details.push(("exitCode".to_owned(), code.to_string()));
                } else if let Some(signal) = status.signal() {
                    details.push(("signal".to_owned(), signal.to_string()));
                }
                Some(lines)
            }
            Outcome::TimedOut(_, lines) | Outcome::Stopped(_, lines) => {
                details.push(("reason".to_owned(), self.words()));
                Some(lines)
            }
            Outcome::NotStarted(why) => {
                details.push(("reason".to_owned(), why.clone()));
                None
            }
        };
        if let Some(lines) = lines {
            let joined = lines.iter().map(String::as_str).collect::<Vec<_>>();
            details.push(("output".to_owned(), joined.join(" | ")));
        }
        // Each value flattened to what AWS accepts, once; an empty one
        // (no output) is left out.
        details
            .into_iter()
            .map(|(k, v)| (k, flatten(&v, MAX_DETAIL)))
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }
}

/// The handler's last output lines, both streams interleaved as read.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
}

/// Reads a handler's stream line by line: prints each line with the job id
/// and keeps the last ones; says on `eof` when the stream ended.
fn collect(
    stream: impl Read + Send + 'static,
    job: &str,
    tail: Arc<Mutex<Tail>>,
    eof: mpsc::Sender<()>,
) {
    let job = job.to_owned();
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        // Lines are cut at 4 KiB, so one endless line cannot grow memory.
        while let Ok(n) = reader.by_ref().take(4096).read_until(b'\n', &mut line) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            line.clear();
            say(&format!("job {job}: {text}"));
            let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
            if tail.lines.len() == TAIL_LINES {
                tail.lines.pop_front();
            }
            tail.lines.push_back(text);
        }
        let _ = eof.send(());
    });
}

/// Signals the handler's whole process group (it leads it).
fn signal_group(pid: u32, signal: rustix::process::Signal) {
    use rustix::process::{Pid, kill_process_group};
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process_group(pid, signal);
    }
}

/// A statusDetails value AWS accepts: at most `max` characters, none of
/// them a control or format character (AWS's pattern is `[^\p{C}]+`).
/// Runs of whitespace and such characters become one space; when too long,
/// the end is kept (the last lines say most) behind a leading "...".
pub fn flatten(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() || is_other(c) {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    let count = out.chars().count();
    if count <= max {
        return out;
    }
    let keep = max.saturating_sub(3);
    let tail: String = out.chars().skip(count - keep).collect();
    format!("...{tail}")
}

/// Unicode's "other" characters (category C) without a table: controls,
/// the format characters in use, surrogates (never in a `char`), private
/// use, and noncharacters. Unassigned code points are let through: telling
/// them needs the whole table.
fn is_other(c: char) -> bool {
    let n = u32::from(c);
    c.is_control()
        || matches!(
            n,
            0xAD | 0x600..=0x605
                | 0x61C
                | 0x6DD
                | 0x70F
                | 0x890..=0x891
                | 0x8E2
                | 0x180E
                | 0x200B..=0x200F
                | 0x202A..=0x202E
                | 0x2060..=0x2064
                | 0x2066..=0x206F
                | 0xFEFF
                | 0xFFF9..=0xFFFB
                | 0x110BD
                | 0x110CD
                | 0x13430..=0x1343F
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0001
                | 0xE0020..=0xE007F
                | 0xE000..=0xF8FF
                | 0xF0000..=0x10FFFF
                | 0xFDD0..=0xFDEF
        )
        || n & 0xFFFE == 0xFFFE
}

/// AWS's rule for job ids: they become a topic level.
fn is_job_id(id: &str) -> bool {
    is_aws_name(id, 64, b"_-")
}

fn deadline() -> Instant {
    Instant::now() + ANSWER_WAIT
}

/// An UpdateJobExecution request: its payload and client token.
fn update_payload(status: &str, details: &[(String, String)]) -> (String, String) {
    let token = mqtt::client_token("jobs");
    let details = details
        .iter()
        .map(|(k, v)| (k.clone(), Value::Str(v.clone())))
        .collect();
    let payload = Value::Object(vec![
        ("status".into(), Value::Str(status.into())),
        ("statusDetails".into(), Value::Object(details)),
        ("clientToken".into(), Value::Str(token.clone())),
    ]);
    (payload.to_json(), token)
}

/// A job's final update.
#[derive(Debug, Clone)]
struct Report {
    job: String,
    status: &'static str,
    details: Vec<(String, String)>,
}

impl Runner {
    /// Sends the report waiting in `unsent`, if any; it stays there until
    /// answered (no answer, a broken connection: the next session sends it
    /// again). A rejection is logged: sending the same again would not
    /// change it. But when AWS refuses the details (InvalidRequest: the
    /// handler's output holds a character it does not take), the status
    /// goes again without the output, so the job does not stay IN_PROGRESS.
    fn deliver(&mut self, c: &mut Client, prefix: &str) -> Result<(), Error> {
        let Some(report) = self.unsent.clone() else {
            return Ok(());
        };
        // A signal now waits until the report is answered.
        let (to, _ignored) = mpsc::channel();
        let stop = Arc::clone(&self.stop);
        let _holding = stop.hold(to);
        let topic = format!("{prefix}/{}/update", report.job);
        let mut details = report.details.clone();
        loop {
            let (payload, token) = update_payload(report.status, &details);
            match c.request(&topic, &payload, &token, deadline())? {
                Answer::Accepted(_) => break,
                Answer::Rejected(error) => {
                    log::warn!(
                        "{}",
                        mqtt::rejection(&format!("job {}: update", report.job), &error)
                    );
                    let invalid =
                        error.get("code").and_then(Value::as_str) == Some("InvalidRequest");
                    if invalid && details.iter().any(|(k, _)| k == "output") {
                        details.retain(|(k, _)| k != "output");
                        continue;
                    }
                    break;
                }
            }
        }
        self.unsent = None;
        Ok(())
    }
}

/// StartNextPendingJobExecution: the execution started, or `None` when
/// nothing is queued.
fn start_next(c: &mut Client, prefix: &str, timeout: u64) -> Result<Option<Value>, Error> {
    let token = mqtt::client_token("jobs");
    let mut fields = vec![("clientToken".to_owned(), Value::Str(token.clone()))];
    if timeout > 0 {
        // AWS times the execution out itself if no report comes: the
        // handler's limit and a minute for the report, within AWS's
        // 1..10080 minutes.
        let minutes = (timeout.div_ceil(60) + 1).min(10080);
        fields.push((
            "stepTimeoutInMinutes".into(),
            Value::Num(minutes.to_string()),
        ));
    }
    let topic = format!("{prefix}/start-next");
    match c.request(&topic, &Value::Object(fields).to_json(), &token, deadline())? {
        Answer::Accepted(answer) => Ok(answer.get("execution").cloned()),
        Answer::Rejected(error) => Err(mqtt::rejection("jobs start-next", &error)),
    }
}

/// Waits for a notify-next that names an execution.
fn wait_for_notify(c: &mut Client, prefix: &str) -> Result<(), Error> {
    let topic = format!("{prefix}/notify-next");
    loop {
        let Some(message) = c.next_message(None)? else {
            continue;
        };
        if message.topic != topic {
            continue;
        }
        let next = message.text().ok().and_then(json::parse);
        if next.is_some_and(|n| n.get("execution").is_some()) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_flat_printable_and_cut_from_the_front() {
        assert_eq!(flatten("a\nb\r\n\tc  d", 100), "a b c d");
        assert_eq!(flatten("\n\n  lead and trail \n", 100), "lead and trail");
        assert_eq!(
            flatten("温度\u{1b}[31m赤\u{200b}ok\u{feff}", 100),
            "温度 [31m赤 ok"
        );
        assert_eq!(flatten("", 10), "");
        assert_eq!(flatten("\n\u{7}\n", 10), "");
        let long = (0..500)
            .map(|i| format!("line{i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let cut = flatten(&long, MAX_DETAIL);
        assert_eq!(cut.chars().count(), MAX_DETAIL);
        assert!(cut.starts_with("..."), "{cut}");
        assert!(cut.ends_with("line498 line499"), "{cut}");
        // Characters, not bytes: a multi-byte tail is not split.
        let wide = "あ".repeat(2000);
        let cut = flatten(&wide, MAX_DETAIL);
        assert_eq!(cut.chars().count(), MAX_DETAIL);
        assert!(cut.chars().skip(3).all(|c| c == 'あ'));
        for c in [
            '\u{0}',
            '\u{7f}',
            '\u{85}',
            '\u{ad}',
            '\u{2028}',
            '\u{e000}',
            '\u{fffe}',
            '\u{10ffff}',
        ] {
            let s = flatten(&format!("a{c}b"), 10);
            assert!(s == "a b", "{c:?} gave {s:?}");
        }
    }

    #[test]
    fn outcomes_become_status_details() {
        let lines: VecDeque<String> = ["copying", "done\tok"].map(String::from).into();
        let ok = Outcome::Exited(ExitStatus::from_raw(0), lines.clone());
        assert!(ok.succeeded());
        assert_eq!(
            ok.details(),
            [
                ("exitCode".to_owned(), "0".to_owned()),
                ("output".to_owned(), "copying | done ok".to_owned())
            ]
        );
        let failed = Outcome::Exited(ExitStatus::from_raw(3 << 8), VecDeque::new());
        assert!(!failed.succeeded());
        assert_eq!(failed.details(), [("exitCode".to_owned(), "3".to_owned())]);
        assert_eq!(failed.words(), "exit status 3");
        let killed = Outcome::Exited(ExitStatus::from_raw(9), VecDeque::new());
        assert_eq!(killed.details(), [("signal".to_owned(), "9".to_owned())]);
        let late = Outcome::TimedOut(5, lines);
        assert!(!late.succeeded());
        let details = late.details();
        assert_eq!(details[0].0, "reason");
        assert!(details[0].1.contains("timed out after 5 s"), "{details:?}");
        assert_eq!(details[1].1, "copying | done ok");
    }

    #[test]
    fn the_update_payload_has_only_documented_fields() {
        let (payload, token) = update_payload("FAILED", &[("exitCode".to_owned(), "1".to_owned())]);
        let v = json::parse(&payload).unwrap();
        assert_eq!(v.get("status").and_then(Value::as_str), Some("FAILED"));
        assert_eq!(
            v.get("clientToken").and_then(Value::as_str),
            Some(token.as_str())
        );
        assert_eq!(
            v.get("statusDetails").map(Value::to_json).as_deref(),
            Some(r#"{"exitCode":"1"}"#)
        );
        let Value::Object(fields) = v else { panic!() };
        assert_eq!(fields.len(), 3);
    }

    #[test]
    fn job_ids_follow_aws() {
        assert!(is_job_id("update-42_a"));
        for bad in ["", "a/b", "a+b", "#", "a:b", &"j".repeat(65)] {
            assert!(!is_job_id(bad), "{bad}");
        }
    }
}
