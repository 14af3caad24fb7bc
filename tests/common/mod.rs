//! Test harness shared by the end-to-end (`tests/e2e.rs`) and CLI
//! (`tests/cli.rs`) tests, and checked on its own by `tests/harness.rs`.
//!
//! What it gives a test:
//!
//! - [`Env`]: a temporary directory of its own (removed on drop), symlinks
//!   `iotbox`, `awsapp` and `mqtt5_pubsub` to the binary under test (argv[0]
//!   dispatch is on the basename), a lazily generated PKI ([`Pki`]) and
//!   builders for every way of invoking the binary.
//! - [`Broker`]: a real mosquitto on 127.0.0.1 and a free port of its own,
//!   with mutual TLS (`require_certificate true`); [`ConsoleSub`] and
//!   [`Broker::console_pub`] play the AWS IoT console's MQTT test client with
//!   `mosquitto_sub` / `mosquitto_pub`.
//! - [`Proc`]: a spawned process whose stdout and stderr are collected by
//!   background threads, with waits that have deadlines and panic with
//!   everything seen so far. Killed by PID on drop.
//! - [`DeliveryListener`] and [`raw_send`]: the two socket protocols spoken
//!   directly, without the binary.
//! - [`Emulator`]: AWS IoT Core's Device Shadow, Jobs and fleet provisioning
//!   MQTT services, emulated on the test broker (tests/common/emulator.rs).
//!
//! Which binary: `IOTBOX_BIN` if set, else the one cargo built. `IOTBOX_RUNNER`
//! (for example `qemu-arm-static`) prefixes every invocation of it, so the
//! same tests run an ARM build. `IOTBOX_TEST_TIMEOUT` (seconds, default 20)
//! is the deadline of every wait; it is generous because of qemu.
//!
//! No sleeps as synchronisation: every wait is on a condition (a line, bytes,
//! an exit, a port that accepts) with a deadline. Where no event exists to wait
//! on (a child's exit, a port opening), the condition is polled every 10 ms.
//!
//! mosquitto is never skipped: if it is not installed the test fails and says
//! `apt-get install mosquitto mosquitto-clients`.

// Every test file includes this module and each uses only part of it.
#![allow(dead_code)]

pub mod emulator;
pub mod rogue;

// Not every test file that includes this module uses the emulator.
#[allow(unused_imports)]
pub use emulator::{Emulator, EmulatorOptions, json_str, json_string_field};

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub mod pki;

/// For [`Proc::signal`].
pub use rustix::process::Signal;

// ---------------------------------------------------------------------------
// Time

/// How long any single wait may take: `IOTBOX_TEST_TIMEOUT` seconds, default
/// 20 (an ARM build under qemu-user is slow to start and to do TLS).
pub fn timeout() -> Duration {
    let secs = std::env::var("IOTBOX_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

/// A deadline [`timeout`] from now.
pub fn deadline() -> Instant {
    Instant::now() + timeout()
}

/// Polling interval for conditions that have no event to wait on (a port
/// that starts accepting, a child that exits). Not a synchronisation sleep:
/// the condition is checked again after it, until the deadline.
pub const POLL: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------
// Temporary directory and ports

/// A directory under `std::env::temp_dir()` with a unique name
/// (`iotbox-TAG-` and random characters; tempfile makes it, mode 0700),
/// removed with everything in it on drop. Set `IOTBOX_TEST_KEEP=1` to keep
/// the directories of failed tests for inspection.
pub struct TempDir {
    dir: tempfile::TempDir,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        // Short: UNIX socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix(&format!("iotbox-{tag}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("create a temp dir for {tag}: {e}"));
        TempDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // The field's own drop removes the directory, unless told not to.
        if thread::panicking() && std::env::var_os("IOTBOX_TEST_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("[harness] kept {}", self.path().display());
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago: bind port 0, read the
/// port the kernel chose, close.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

// ---------------------------------------------------------------------------
// The binary under test

/// The binary under test: `IOTBOX_BIN` if set, else cargo's build of it.
pub fn iotbox_bin() -> PathBuf {
    let p = match std::env::var_os("IOTBOX_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_iotbox")),
    };
    // The symlinks in the test directory must point at an absolute path.
    fs::canonicalize(&p)
        .unwrap_or_else(|e| panic!("binary under test {}: {e} (IOTBOX_BIN?)", p.display()))
}

/// `IOTBOX_RUNNER` split on whitespace (e.g. `qemu-arm-static`), or empty.
pub fn runner() -> Vec<String> {
    std::env::var("IOTBOX_RUNNER")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A `Command` that runs `program` (the binary or one of its symlinks),
/// through `IOTBOX_RUNNER` when set. qemu-user passes the path it is given as
/// argv[0], so dispatch on the symlink's basename works the same.
pub fn command_for(program: &Path) -> Command {
    let r = runner();
    let mut cmd = match r.split_first() {
        None => Command::new(program),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
    };
    cmd.stdin(Stdio::null());
    cmd
}

/// Convert a list of string-ish values into `OsString`s for `Command::args`.
pub fn os_args<I, S>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    args.into_iter().map(|a| a.as_ref().to_owned()).collect()
}

// ---------------------------------------------------------------------------
// Captured output of a child

#[derive(Default)]
struct StreamState {
    data: Vec<u8>,
    eof: bool,
}

/// Bytes read from one pipe by a background thread; waiters use the condvar.
#[derive(Default)]
struct Stream {
    state: Mutex<StreamState>,
    cond: Condvar,
}

impl Stream {
    fn spawn_reader(name: String, mut pipe: impl Read + Send + 'static) -> Arc<Stream> {
        let s = Arc::new(Stream::default());
        let s2 = Arc::clone(&s);
        thread::Builder::new()
            .name(name)
            .spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let mut st = s2.state.lock().unwrap();
                            st.data.extend_from_slice(&buf[..n]);
                            s2.cond.notify_all();
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                }
                s2.state.lock().unwrap().eof = true;
                s2.cond.notify_all();
            })
            .expect("spawn reader thread");
        s
    }

    fn snapshot(&self) -> Vec<u8> {
        self.state.lock().unwrap().data.clone()
    }

    /// Call `f(all bytes so far, eof)` every time more bytes arrive until it
    /// returns `Some`, or until `deadline` (then `None`).
    fn wait_until<T>(
        &self,
        deadline: Instant,
        mut f: impl FnMut(&[u8], bool) -> Option<T>,
    ) -> Option<T> {
        let mut st = self.state.lock().unwrap();
        loop {
            if let Some(v) = f(&st.data, st.eof) {
                return Some(v);
            }
            if st.eof {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self.cond.wait_timeout(st, deadline - now).unwrap().0;
        }
    }
}

/// Text for failure messages: lossy UTF-8, with a marker if empty.
pub fn show(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "<nothing>".to_owned()
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// A spawned child with stdout and stderr captured by background threads.
///
/// stdout is read as lines through a cursor: [`Proc::next_line`] returns the
/// line after the previous one returned, [`Proc::wait_line`] skips to the
/// first line that matches. [`Proc::wait_stdout`] looks at all bytes instead
/// (for binary output and multi-line payloads). Every wait panics at its
/// deadline with the process's stdout, stderr and exit status.
///
/// Dropping a `Proc` kills the child by its PID (SIGKILL) and reaps it; if the
/// test is panicking the captured output is printed first.
pub struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Stream>,
    stderr: Arc<Stream>,
    /// Byte offset in stdout of the first line not yet returned.
    cursor: usize,
    status: Option<ExitStatus>,
    command_line: String,
}

impl Proc {
    /// Spawn `cmd` with stdout and stderr piped (stdin as set on `cmd`,
    /// `/dev/null` for commands from [`command_for`]).
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        Proc::spawn_configured(name, cmd)
    }

    /// Spawn `cmd` with a pipe on stdin; see [`Proc::write_stdin`] and
    /// [`Proc::close_stdin`].
    pub fn spawn_with_stdin(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::piped());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        Proc::spawn_configured(name, cmd)
    }

    fn spawn_configured(name: &str, mut cmd: Command) -> Proc {
        let command_line = format!("{cmd:?}");
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("[{name}] cannot start {command_line}: {e}");
        });
        let stdin = child.stdin.take();
        let stdout = Stream::spawn_reader(
            format!("{name}-stdout"),
            child.stdout.take().expect("stdout piped"),
        );
        let stderr = Stream::spawn_reader(
            format!("{name}-stderr"),
            child.stderr.take().expect("stderr piped"),
        );
        Proc {
            name: name.to_owned(),
            child,
            stdin,
            stdout,
            stderr,
            cursor: 0,
            status: None,
            command_line,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn write_stdin(&mut self, bytes: &[u8]) {
        let name = self.name.clone();
        self.stdin
            .as_mut()
            .unwrap_or_else(|| panic!("[{name}] stdin is not a pipe or already closed"))
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("[{name}] write to stdin: {e}"));
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Everything the child wrote to stdout so far.
    pub fn stdout_bytes(&self) -> Vec<u8> {
        self.stdout.snapshot()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout.snapshot()).into_owned()
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.snapshot()).into_owned()
    }

    /// Name, command line, exit status, stdout and stderr: for failure messages.
    pub fn report(&self) -> String {
        let status = match self.status {
            Some(s) => describe_status(s),
            None => "still running".to_owned(),
        };
        format!(
            "--- {} ({status}) ---\n$ {}\n--- {} stdout ---\n{}\n--- {} stderr ---\n{}\n---",
            self.name,
            self.command_line,
            self.name,
            show(&self.stdout.snapshot()),
            self.name,
            show(&self.stderr.snapshot()),
        )
    }

    /// The next complete stdout line after the last one returned (without
    /// its `\n`, lossy UTF-8). Panics at `deadline` or at EOF.
    pub fn next_line(&mut self, deadline: Instant) -> String {
        let cursor = self.cursor;
        let got = self.stdout.wait_until(deadline, |data, _| {
            let rest = &data[cursor..];
            rest.iter().position(|&b| b == b'\n').map(|i| {
                (
                    String::from_utf8_lossy(&rest[..i]).into_owned(),
                    cursor + i + 1,
                )
            })
        });
        match got {
            Some((line, next)) => {
                self.cursor = next;
                line
            }
            None => self.fail(&format!(
                "no further stdout line (after byte {cursor}) within the deadline"
            )),
        }
    }

    /// The next stdout line must be exactly `expected`.
    pub fn expect_line(&mut self, expected: &str, deadline: Instant) {
        let line = self.next_line(deadline);
        if line != expected {
            self.fail(&format!(
                "expected the next stdout line to be {expected:?}, got {line:?}"
            ));
        }
    }

    /// Skip stdout lines until one satisfies `pred`; return it. Panics at
    /// `deadline` or EOF, describing the wait with `what`.
    pub fn wait_line(
        &mut self,
        what: &str,
        pred: impl Fn(&str) -> bool,
        deadline: Instant,
    ) -> String {
        let mut cursor = self.cursor;
        let got = self.stdout.wait_until(deadline, |data, _| {
            while let Some(i) = data[cursor..].iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&data[cursor..cursor + i]).into_owned();
                cursor += i + 1;
                if pred(&line) {
                    return Some((line, cursor));
                }
            }
            None
        });
        match got {
            Some((line, next)) => {
                self.cursor = next;
                line
            }
            None => self.fail(&format!("no stdout line {what} within the deadline")),
        }
    }

    /// Skip stdout lines until one equals `exact`.
    pub fn wait_for_line(&mut self, exact: &str, deadline: Instant) {
        self.wait_line(&format!("equal to {exact:?}"), |l| l == exact, deadline);
    }

    /// Wait until all of stdout so far satisfies `pred` (bytes, not lines;
    /// does not move the line cursor).
    pub fn wait_stdout(&self, what: &str, pred: impl Fn(&[u8]) -> bool, deadline: Instant) {
        if self
            .stdout
            .wait_until(deadline, |data, _| pred(data).then_some(()))
            .is_none()
        {
            self.fail(&format!("stdout never became {what} within the deadline"));
        }
    }

    /// Wait until stdout contains `needle` anywhere.
    pub fn wait_stdout_contains(&self, needle: &[u8], deadline: Instant) {
        self.wait_stdout(
            &format!("containing {:?}", String::from_utf8_lossy(needle)),
            |d| contains(d, needle),
            deadline,
        );
    }

    /// Wait until a stderr line satisfies `pred` (searching from the start of
    /// stderr each time; no cursor). Returns the line.
    pub fn wait_stderr_line(
        &self,
        what: &str,
        pred: impl Fn(&str) -> bool,
        deadline: Instant,
    ) -> String {
        let mut scanned = 0;
        let got = self.stderr.wait_until(deadline, |data, _| {
            while let Some(i) = data[scanned..].iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&data[scanned..scanned + i]).into_owned();
                scanned += i + 1;
                if pred(&line) {
                    return Some(line);
                }
            }
            None
        });
        got.unwrap_or_else(|| self.fail(&format!("no stderr line {what} within the deadline")))
    }

    /// Wait for the child to exit, then for its pipes to close (briefly: a
    /// grandchild may hold them). Panics at the deadline with everything it
    /// printed.
    pub fn wait_exit(&mut self, deadline: Instant) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.status = Some(s);
                    // Let the reader threads reach EOF so reports are complete.
                    let drain = Instant::now() + Duration::from_secs(2);
                    let _ = self.stdout.wait_until(drain, |_, eof| eof.then_some(()));
                    let _ = self.stderr.wait_until(drain, |_, eof| eof.then_some(()));
                    return s;
                }
                Ok(None) => {}
                Err(e) => self.fail(&format!("waiting for exit: {e}")),
            }
            if Instant::now() >= deadline {
                self.fail("did not exit within the deadline");
            }
            thread::sleep(POLL);
        }
    }

    /// Wait for exit and require the exit code `code` (not a signal).
    pub fn expect_exit_code(&mut self, code: i32, deadline: Instant) {
        let status = self.wait_exit(deadline);
        if status.code() != Some(code) {
            self.fail(&format!(
                "expected exit code {code}, got {}",
                describe_status(status)
            ));
        }
    }

    /// Has the child exited? (Does not block.)
    pub fn has_exited(&mut self) -> bool {
        if self.status.is_some() {
            return true;
        }
        match self.child.try_wait() {
            Ok(Some(s)) => {
                self.status = Some(s);
                true
            }
            _ => false,
        }
    }

    /// Send `sig` to the child's PID (kill(2)). Under qemu-user the PID is
    /// qemu's, which forwards the signal.
    pub fn signal(&self, sig: Signal) {
        let pid = i32::try_from(self.pid())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .unwrap_or_else(|| self.fail(&format!("not a PID: {}", self.pid())));
        if let Err(e) = rustix::process::kill_process(pid, sig) {
            self.fail(&format!("kill({}, {sig:?}): {e}", self.pid()));
        }
    }

    /// Panic with `msg` and this process's report.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("[{}] {msg}\n{}", self.name, self.report());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            // By PID, only this child; errors mean it already exited.
            let _ = self.child.kill();
            if let Ok(s) = self.child.wait() {
                self.status = Some(s);
            }
        }
        if thread::panicking() {
            eprintln!("{}", self.report());
        }
    }
}

/// "exit code 1" or "killed by signal 9".
pub fn describe_status(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{s}"),
    }
}

/// Does `hay` contain `needle`?
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// A finished run: exit status and everything printed.
pub struct Output {
    pub name: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub report: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr_text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Require exit code `code`; panic with the whole report otherwise.
    pub fn expect_code(&self, code: i32) -> &Self {
        if self.code() != Some(code) {
            panic!(
                "[{}] expected exit code {code}, got {}\n{}",
                self.name,
                describe_status(self.status),
                self.report
            );
        }
        self
    }

    /// Require stdout to be exactly `expected`.
    pub fn expect_stdout(&self, expected: &str) -> &Self {
        if self.stdout != expected.as_bytes() {
            panic!(
                "[{}] expected stdout {expected:?}, got {:?}\n{}",
                self.name,
                self.stdout_text(),
                self.report
            );
        }
        self
    }

    /// Require exactly one non-empty line on stderr; return it.
    pub fn expect_one_stderr_line(&self) -> String {
        let lines = self.stderr_lines();
        if lines.len() != 1 {
            panic!(
                "[{}] expected exactly one line on stderr, got {}\n{}",
                self.name,
                lines.len(),
                self.report
            );
        }
        lines.into_iter().next().unwrap_or_default()
    }

    /// Panic with `msg` and the report.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("[{}] {msg}\n{}", self.name, self.report);
    }
}

/// Run `cmd` to completion (deadline: [`timeout`]) with `stdin` as its input
/// (or `/dev/null`).
pub fn run(name: &str, cmd: Command, stdin: Option<&[u8]>) -> Output {
    let mut p = match stdin {
        Some(input) => {
            let mut p = Proc::spawn_with_stdin(name, cmd);
            // Written from a thread, so a child that never reads stdin cannot
            // block the test past its deadline; a child that exits without
            // reading gives EPIPE, which is not our concern.
            if let Some(mut s) = p.stdin.take() {
                let input = input.to_vec();
                thread::spawn(move || {
                    let _ = s.write_all(&input);
                });
            }
            p
        }
        None => Proc::spawn(name, cmd),
    };
    let status = p.wait_exit(deadline());
    Output {
        name: name.to_owned(),
        status,
        stdout: p.stdout_bytes(),
        stderr: p.stderr.snapshot(),
        report: p.report(),
    }
}

// ---------------------------------------------------------------------------
// PKI

/// PEM files of a throw-away PKI, generated for each test by [`pki`] (the
/// generator the scripts use too), with ECDSA P-256 keys (quick to make):
///
/// - `ca`: the CA both sides trust, and `ca_key` its private key (0600),
///   with which the AWS IoT emulator signs the certificates it issues
///   (tests/common/emulator.rs), so they connect to the test broker;
/// - `server_cert`/`server_key`: mosquitto's, for `localhost` and IP
///   127.0.0.1, signed by `ca`;
/// - `client_cert`/`client_key`: the device's (CN `raspi2-test`), signed by
///   `ca`;
/// - `rogue_ca`, `rogue_cert`/`rogue_key`: an unrelated CA and a client
///   certificate it signed (CN `raspi2-rogue`), which the broker refuses.
pub struct Pki {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub rogue_ca: PathBuf,
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

fn write_file(path: &Path, contents: &[u8], mode: u32) {
    pki::write_file(path, contents, mode)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl Pki {
    /// Generate everything into `dir` (file names `ca.pem`, `server.crt`, ...).
    pub fn generate(dir: &Path) -> Pki {
        use pki::{Role, new_ca, new_leaf};
        let ca = new_ca("iotbox test CA").expect("CA");
        let (server_cert, server_key) =
            new_leaf(&ca, "localhost", &["localhost", "127.0.0.1"], Role::Server)
                .expect("server certificate");
        let (client_cert, client_key) =
            new_leaf(&ca, "raspi2-test", &[], Role::Client).expect("client certificate");
        let rogue = new_ca("unrelated CA").expect("rogue CA");
        let (rogue_cert, rogue_key) =
            new_leaf(&rogue, "raspi2-rogue", &[], Role::Client).expect("rogue certificate");

        let pki = Pki {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("raspi2-test.cert.pem"),
            client_key: dir.join("raspi2-test.private.key"),
            rogue_ca: dir.join("rogue-ca.pem"),
            rogue_cert: dir.join("rogue.cert.pem"),
            rogue_key: dir.join("rogue.private.key"),
        };
        write_file(&pki.ca, ca.cert_pem.as_bytes(), 0o644);
        write_file(&pki.ca_key, ca.key_pem.as_bytes(), 0o600);
        write_file(&pki.server_cert, server_cert.as_bytes(), 0o644);
        write_file(&pki.server_key, server_key.as_bytes(), 0o600);
        write_file(&pki.client_cert, client_cert.as_bytes(), 0o644);
        write_file(&pki.client_key, client_key.as_bytes(), 0o600);
        write_file(&pki.rogue_ca, rogue.cert_pem.as_bytes(), 0o644);
        write_file(&pki.rogue_cert, rogue_cert.as_bytes(), 0o644);
        write_file(&pki.rogue_key, rogue_key.as_bytes(), 0o600);
        pki
    }
}

// ---------------------------------------------------------------------------
// Test environment

/// One test's world: its temp dir, the symlinks to the binary, its PKI.
pub struct Env {
    pub dir: TempDir,
    bin: PathBuf,
    bin_dir: PathBuf,
    pki: OnceLock<Pki>,
}

/// How the daemon is invoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `iotbox pubsub ...`
    Iotbox,
    /// the `mqtt5_pubsub` symlink, as the how-to typed it
    Mqtt5Pubsub,
}

impl Env {
    /// A fresh temp dir named after `tag`, with `bin/iotbox`, `bin/awsapp`
    /// and `bin/mqtt5_pubsub` symlinked to the binary under test.
    pub fn new(tag: &str) -> Env {
        let dir = TempDir::new(tag);
        let bin = iotbox_bin();
        let bin_dir = dir.join("bin");
        fs::create_dir(&bin_dir).expect("mkdir bin");
        for name in ["iotbox", "awsapp", "mqtt5_pubsub"] {
            std::os::unix::fs::symlink(&bin, bin_dir.join(name))
                .unwrap_or_else(|e| panic!("symlink {name}: {e}"));
        }
        Env {
            dir,
            bin,
            bin_dir,
            pki: OnceLock::new(),
        }
    }

    /// `DIR/name`.
    pub fn path(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.join(name)
    }

    /// The real binary under test (absolute, symlinks resolved).
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The publish socket every daemon of this test uses: `DIR/smsg`.
    pub fn smsg(&self) -> PathBuf {
        self.path("smsg")
    }

    /// The delivery socket every daemon of this test uses: `DIR/rmsg`.
    pub fn rmsg(&self) -> PathBuf {
        self.path("rmsg")
    }

    /// The PKI of this test, generated into `DIR/pki` on first use.
    pub fn pki(&self) -> &Pki {
        self.pki.get_or_init(|| {
            let d = self.dir.join("pki");
            fs::create_dir_all(&d).expect("mkdir pki");
            Pki::generate(&d)
        })
    }

    /// Write `contents` to `DIR/name` and return the path.
    pub fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.path(name);
        write_file(&p, contents, 0o644);
        p
    }

    /// The spool every daemon of this test uses unless its flags name
    /// another: `DIR/spool`.
    pub fn spool(&self) -> PathBuf {
        self.path("spool")
    }

    /// The local MQTT endpoint every daemon of this test uses unless its
    /// flags name another: `DIR/mqtt` (never the machine's default
    /// `/tmp/iotbox_mqtt`).
    pub fn local_socket(&self) -> PathBuf {
        self.path("mqtt")
    }

    /// A command running the binary through the symlink `name` (`iotbox`,
    /// `awsapp`, `mqtt5_pubsub`, or any other name: a new symlink is made).
    ///
    /// The daemon (`mqtt5_pubsub ...`, `iotbox pubsub ...`) gets
    /// `--spool_dir DIR/spool` and `--local_socket DIR/mqtt` unless `args`
    /// give them: a test never uses (or creates) the machine's
    /// `/var/lib/iotbox` or `/tmp/iotbox_mqtt`, and tests running side by
    /// side never share them.
    pub fn applet(&self, name: &str, args: &[&OsStr]) -> Command {
        let link = self.bin_dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(&self.bin, &link)
                .unwrap_or_else(|e| panic!("symlink {name}: {e}"));
        }
        let mut cmd = command_for(&link);
        cmd.args(args);
        let daemon = name == "mqtt5_pubsub"
            || (name == "iotbox" && args.first() == Some(&OsStr::new("pubsub")));
        let names_spool = args.iter().any(|a| {
            a.to_str()
                .is_some_and(|a| a.starts_with("--spool_dir") || a.starts_with("--spool-dir"))
        });
        if daemon && !names_spool {
            cmd.arg("--spool_dir").arg(self.spool());
        }
        let names_local = args.iter().any(|a| {
            a.to_str()
                .is_some_and(|a| a.starts_with("--local_socket") || a.starts_with("--local-socket"))
        });
        if daemon && !names_local {
            cmd.arg("--local_socket").arg(self.local_socket());
        }
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// `iotbox ARGS...`
    pub fn iotbox<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        self.applet("iotbox", &args)
    }

    /// `awsapp ARGS...`
    pub fn awsapp<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        self.applet("awsapp", &args)
    }

    /// `iotbox ARGS...` run to completion.
    pub fn run_iotbox<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        run("iotbox", self.iotbox(args), None)
    }

    /// `iotbox send SOCKET FILE` run to completion.
    pub fn send(&self, socket: &Path, file: &Path) -> Output {
        run(
            "iotbox send",
            self.iotbox(&[OsStr::new("send"), socket.as_os_str(), file.as_os_str()]),
            None,
        )
    }

    /// Start a broker for this test (see [`Broker::start`]).
    pub fn broker(&self) -> Broker {
        Broker::start(&self.dir.join("broker"), self.pki(), "")
    }

    /// A broker with `extra` lines appended to its configuration (which
    /// override the defaults, e.g. `allow_anonymous false`).
    pub fn broker_with(&self, extra: &str) -> Broker {
        Broker::start(&self.dir.join("broker"), self.pki(), extra)
    }

    /// The daemon's flags for `broker` with the how-to's spelling, this test's
    /// client certificate and its sockets `DIR/smsg` and `DIR/rmsg`:
    /// `--endpoint localhost --port P --cert C --key K --ca_file CA
    /// --client_id ID --topic T... --pub_socket DIR/smsg --sub_socket DIR/rmsg`.
    pub fn pubsub_args(&self, broker: &Broker, client_id: &str, topics: &[&str]) -> Vec<OsString> {
        let pki = self.pki();
        self.pubsub_args_as(broker, client_id, topics, &pki.client_cert, &pki.client_key)
    }

    /// [`Env::pubsub_args`] with another device certificate and key.
    pub fn pubsub_args_as(
        &self,
        broker: &Broker,
        client_id: &str,
        topics: &[&str],
        cert: &Path,
        key: &Path,
    ) -> Vec<OsString> {
        let pki = self.pki();
        let mut a = os_args([
            OsStr::new("--endpoint"),
            OsStr::new("localhost"),
            OsStr::new("--port"),
            OsStr::new(&broker.port.to_string()),
            OsStr::new("--cert"),
            cert.as_os_str(),
            OsStr::new("--key"),
            key.as_os_str(),
            OsStr::new("--ca_file"),
            pki.ca.as_os_str(),
            OsStr::new("--client_id"),
            OsStr::new(client_id),
        ]);
        for t in topics {
            a.push("--topic".into());
            a.push((*t).into());
        }
        a.push("--pub_socket".into());
        a.push(self.smsg().into());
        a.push("--sub_socket".into());
        a.push(self.rmsg().into());
        a
    }

    /// Spawn the daemon with exactly `args` (no waiting).
    pub fn spawn_pubsub(&self, via: Via, args: &[OsString]) -> Proc {
        let (name, cmd) = match via {
            Via::Iotbox => {
                let mut full: Vec<&OsStr> = vec![OsStr::new("pubsub")];
                full.extend(args.iter().map(OsString::as_os_str));
                ("iotbox pubsub", self.applet("iotbox", &full))
            }
            Via::Mqtt5Pubsub => {
                let a: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
                ("mqtt5_pubsub", self.applet("mqtt5_pubsub", &a))
            }
        };
        Proc::spawn(name, cmd)
    }

    /// Start `iotbox pubsub` against `broker` with [`Env::pubsub_args`] and
    /// wait for `Subscription Success.` on its stdout.
    pub fn start_pubsub(&self, broker: &Broker, client_id: &str, topics: &[&str]) -> Proc {
        let args = self.pubsub_args(broker, client_id, topics);
        let mut p = self.spawn_pubsub(Via::Iotbox, &args);
        wait_subscribed(&mut p);
        p
    }
}

/// Wait for `Subscription Success.` on the daemon's stdout.
pub fn wait_subscribed(daemon: &mut Proc) {
    daemon.wait_for_line("Subscription Success.", deadline());
}

// ---------------------------------------------------------------------------
// Tools installed once per target directory (paho-mqtt here; tests/local.rs
// adds mqtt.js with the same helpers)

/// An executable on `PATH` (or `$env_var`); panics saying how to install
/// it, never skips.
pub fn need_tool(name: &str, env_var: &str, install: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found on PATH (or set {env_var}); the tests need it: {install} (scripts/deps.sh test does it)")
        })
}

/// `CARGO_TARGET_TMPDIR/name`, made by `build` the first time any test
/// (of this process or another) asks. A directory `name.lock` beside it is
/// the lock (mkdir is atomic); `name/.ready` says the build finished. A lock
/// left by a killed run is taken over after ten minutes.
pub fn cached_dir(name: &str, build: impl FnOnce(&Path)) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(root).expect("create CARGO_TARGET_TMPDIR");
    let dir = root.join(name);
    let ready = dir.join(".ready");
    let lock = root.join(format!("{name}.lock"));
    let give_up = Instant::now() + Duration::from_secs(600);
    let mut build = Some(build);
    loop {
        if ready.exists() {
            return dir;
        }
        match fs::create_dir(&lock) {
            Ok(()) => {
                let _ = fs::remove_dir_all(&dir);
                fs::create_dir_all(&dir).expect("create the cache dir");
                let f = build.take().expect("built once");
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&dir)));
                if result.is_ok() {
                    fs::write(&ready, b"").expect("mark the cache ready");
                }
                let _ = fs::remove_dir(&lock);
                if let Err(p) = result {
                    std::panic::resume_unwind(p);
                }
                return dir;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let stale = fs::metadata(&lock)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(600));
                if stale {
                    let _ = fs::remove_dir(&lock);
                    continue;
                }
                if Instant::now() >= give_up {
                    panic!(
                        "{} stayed locked: another test is building it, or a killed one left the lock (remove it)",
                        lock.display()
                    );
                }
                // Another test is building it; nothing to wait on but the
                // ready file appearing.
                thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("create {}: {e}", lock.display()),
        }
    }
}

/// Runs an install step with a long deadline (a download); panics with its
/// output unless it exits 0.
pub fn install_step(name: &str, cmd: Command) {
    let mut p = Proc::spawn(name, cmd);
    let status = p.wait_exit(Instant::now() + Duration::from_secs(300));
    if !status.success() {
        p.fail("the install step failed");
    }
}

/// The venv's python, with paho-mqtt installed.
pub fn paho_python() -> PathBuf {
    let dir = cached_dir("test-venv", |dir| {
        let python = need_tool("python3", "PYTHON3", "apt-get install python3 python3-venv");
        let mut venv = Command::new(python);
        venv.arg("-m").arg("venv").arg(dir.join("venv"));
        install_step("python3 -m venv", venv);
        let mut pip = Command::new(dir.join("venv/bin/pip"));
        pip.args(["install", "--quiet", "paho-mqtt>=2,<3"]);
        install_step("pip install paho-mqtt", pip);
    });
    dir.join("venv/bin/python")
}

// ---------------------------------------------------------------------------
// mosquitto

/// Find an executable: `$ENV_VAR`, then `PATH`, then the usual sbin dirs.
/// Panics (never skips) saying how to install it.
pub fn find_tool(name: &str, env_var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        return PathBuf::from(p);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if let Ok(m) = fs::metadata(&p) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return p;
            }
        }
    }
    panic!(
        "{name} not found (PATH, /usr/sbin, /usr/local/sbin; or set {env_var}). \
         The end-to-end tests need a real mosquitto 2.x broker and its clients: \
         apt-get install mosquitto mosquitto-clients"
    );
}

static CLIENT_IDS: AtomicUsize = AtomicUsize::new(0);

/// A mosquitto broker on 127.0.0.1 and a free port, mutual TLS required
/// (`require_certificate true`), logging everything (`log_type all`) to its
/// stderr, which the harness reads. Killed by PID on drop.
pub struct Broker {
    pub port: u16,
    proc: Proc,
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Broker {
    /// Write `dir/mosquitto.conf`, start `mosquitto -c` on a free port and
    /// wait until the port accepts TCP connections. A port lost to a race is
    /// retried with another.
    pub fn start(dir: &Path, pki: &Pki, extra: &str) -> Broker {
        let mosquitto = find_tool("mosquitto", "MOSQUITTO");
        // Fail early, and with the install hint, if the clients are missing.
        find_tool("mosquitto_sub", "MOSQUITTO_SUB");
        find_tool("mosquitto_pub", "MOSQUITTO_PUB");
        fs::create_dir_all(dir).expect("mkdir broker dir");
        let conf = dir.join("mosquitto.conf");
        let mut last_report = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let text = format!(
                "# written by tests/common/mod.rs\n\
                 # As root, mosquitto would switch to the user 'mosquitto', which\n\
                 # cannot read the test's files; 'root' keeps it (no effect otherwise).\n\
                 user root\n\
                 per_listener_settings false\n\
                 allow_anonymous true\n\
                 persistence false\n\
                 log_dest stderr\n\
                 log_type all\n\
                 log_timestamp true\n\
                 connection_messages true\n\
                 set_tcp_nodelay true\n\
                 listener {port} 127.0.0.1\n\
                 cafile {ca}\n\
                 certfile {cert}\n\
                 keyfile {key}\n\
                 require_certificate true\n\
                 use_identity_as_username false\n\
                 {extra}\n",
                ca = pki.ca.display(),
                cert = pki.server_cert.display(),
                key = pki.server_key.display(),
            );
            fs::write(&conf, text).expect("write mosquitto.conf");
            let mut cmd = Command::new(&mosquitto);
            cmd.arg("-c").arg(&conf).stdin(Stdio::null());
            let mut proc = Proc::spawn("mosquitto", cmd);
            let end = deadline();
            loop {
                if proc.has_exited() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Broker {
                        port,
                        proc,
                        dir: dir.to_owned(),
                        ca: pki.ca.clone(),
                        cert: pki.client_cert.clone(),
                        key: pki.client_key.clone(),
                    };
                }
                if Instant::now() >= end {
                    proc.fail(&format!("port {port} never accepted connections"));
                }
                thread::sleep(POLL);
            }
            let _ = proc.wait_exit(deadline());
            last_report = proc.report();
            let port_taken = proc.stderr_text().contains("Address already in use");
            if !port_taken {
                break;
            }
        }
        panic!("mosquitto did not start\n{last_report}");
    }

    /// Kills the broker (SIGKILL: a crash, no goodbye to its clients), runs
    /// `while_down`, then starts it again on the same port with the same
    /// configuration and waits until the port accepts connections.
    pub fn restart(&mut self, while_down: impl FnOnce()) {
        self.proc.signal(Signal::KILL);
        let _ = self.proc.wait_exit(deadline());
        while_down();
        let mosquitto = find_tool("mosquitto", "MOSQUITTO");
        let mut cmd = Command::new(&mosquitto);
        cmd.arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null());
        self.proc = Proc::spawn("mosquitto (restarted)", cmd);
        let end = deadline();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if self.proc.has_exited() || Instant::now() >= end {
                self.proc
                    .fail(&format!("did not come back on port {}", self.port));
            }
            thread::sleep(POLL);
        }
    }

    /// Everything the broker logged so far.
    pub fn log(&self) -> String {
        self.proc.stderr_text()
    }

    /// Wait for a broker log line satisfying `pred` (searched from the start
    /// of the log). Mosquitto lines look like `1700000000: Sending SUBACK to id`.
    pub fn wait_log(&self, what: &str, pred: impl Fn(&str) -> bool, deadline: Instant) -> String {
        self.proc.wait_stderr_line(what, pred, deadline)
    }

    /// Wait until the broker has sent SUBACK to `client_id`: from then on the
    /// subscription is in place and publishes reach it.
    pub fn wait_suback(&self, client_id: &str, deadline: Instant) {
        let suffix = format!(": Sending SUBACK to {client_id}");
        self.wait_log(
            &format!("ending with {suffix:?}"),
            |l| l.ends_with(&suffix),
            deadline,
        );
    }

    /// A fresh client id for a console client.
    fn next_client_id(kind: &str) -> String {
        format!(
            "console-{kind}-{}-{}",
            std::process::id(),
            CLIENT_IDS.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// `-h 127.0.0.1 -p PORT --cafile CA --cert CERT --key KEY -V mqttv5 -i ID`
    /// A mosquitto client's arguments for this broker: 127.0.0.1, its port,
    /// the test's CA and client certificate, MQTT 5, client id `id`.
    pub fn client_args(&self, cmd: &mut Command, id: &str) {
        cmd.arg("-h")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("--cafile")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.cert)
            .arg("--key")
            .arg(&self.key)
            .arg("-V")
            .arg("mqttv5")
            .arg("-i")
            .arg(id)
            .stdin(Stdio::null());
    }

    /// The AWS console's "subscribe to a topic": `mosquitto_sub` on `filter`
    /// (QoS 1), started and subscribed (the broker's `Sending SUBACK` log
    /// line) before this returns.
    pub fn console_sub(&self, filter: &str) -> ConsoleSub {
        let id = Broker::next_client_id("sub");
        let mut cmd = Command::new(find_tool("mosquitto_sub", "MOSQUITTO_SUB"));
        self.client_args(&mut cmd, &id);
        // One record per message: "<payload length> <topic>\n<payload>",
        // with no newline after the payload (-N), so binary payloads and
        // payloads containing newlines come through byte for byte.
        cmd.arg("-q")
            .arg("1")
            .arg("-t")
            .arg(filter)
            .arg("-N")
            .arg("-F")
            .arg("%l %t\\n%p");
        let proc = Proc::spawn(&format!("mosquitto_sub {filter}"), cmd);
        let end = deadline();
        let suffix = format!(": Sending SUBACK to {id}");
        let found = self.proc.stderr.wait_until(end, |data, _| {
            String::from_utf8_lossy(data)
                .lines()
                .any(|l| l.ends_with(&suffix))
                .then_some(())
        });
        if found.is_none() {
            panic!(
                "mosquitto_sub {id} was never subscribed (no {suffix:?} in the broker log)\n{}\n{}",
                proc.report(),
                self.proc.report()
            );
        }
        ConsoleSub {
            proc,
            cursor: 0,
            id,
        }
    }

    /// The AWS console's "publish to a topic": `mosquitto_pub -q 1 -f FILE`
    /// with `payload` written to a file first (byte for byte, binary safe).
    /// Panics unless mosquitto_pub exits 0.
    pub fn console_pub(&self, topic: &str, payload: &[u8]) {
        let id = Broker::next_client_id("pub");
        let file = self.dir.join(format!("{id}.payload"));
        write_file(&file, payload, 0o644);
        let mut cmd = Command::new(find_tool("mosquitto_pub", "MOSQUITTO_PUB"));
        self.client_args(&mut cmd, &id);
        cmd.arg("-q")
            .arg("1")
            .arg("-t")
            .arg(topic)
            .arg("-f")
            .arg(&file);
        let out = run(&format!("mosquitto_pub {topic}"), cmd, None);
        if out.code() != Some(0) {
            out.fail(&format!(
                "mosquitto_pub failed\n--- broker log ---\n{}",
                self.log()
            ));
        }
        let _ = fs::remove_file(&file);
    }

    /// Publishes every line of `lines` as one message to `topic` at QoS 1
    /// with one `mosquitto_pub -l` (one client, far faster than a process
    /// each). Panics unless it exits 0.
    pub fn console_pub_lines(&self, topic: &str, lines: &[u8]) {
        let id = Broker::next_client_id("lines");
        let mut cmd = Command::new(find_tool("mosquitto_pub", "MOSQUITTO_PUB"));
        self.client_args(&mut cmd, &id);
        cmd.args(["-q", "1", "-t", topic, "-l"]);
        run("mosquitto_pub -l", cmd, Some(lines)).expect_code(0);
    }

    /// Waits until the log shows `n` PUBACKs from `client_id`: the daemon
    /// read and acknowledged that many messages.
    pub fn wait_pubacks(&self, client_id: &str, n: usize, deadline: Instant) {
        let needle = format!(": Received PUBACK from {client_id} (");
        let seen = std::cell::Cell::new(0usize);
        self.wait_log(
            &format!("{n} PUBACKs from {client_id}"),
            |l| {
                if l.contains(&needle) {
                    seen.set(seen.get() + 1);
                }
                seen.get() >= n
            },
            deadline,
        );
    }

    /// Panic with `msg` and the broker log.
    pub fn fail(&self, msg: &str) -> ! {
        self.proc.fail(msg)
    }
}

/// `n` lines of `len` bytes each (no newline inside), numbered: `message
/// 0 xxx...`.
pub fn numbered_lines(n: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * (len + 1));
    for i in 0..n {
        let head = format!("message {i} ");
        out.extend_from_slice(head.as_bytes());
        out.extend(std::iter::repeat_n(b'x', len.saturating_sub(head.len())));
        out.push(b'\n');
    }
    out
}

/// A `mosquitto_sub` started by [`Broker::console_sub`]; messages are read in
/// order with [`ConsoleSub::next_message`].
pub struct ConsoleSub {
    proc: Proc,
    /// Offset in stdout of the next record.
    cursor: usize,
    pub id: String,
}

/// One message seen by a console subscriber.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl ConsoleSub {
    /// Parse the record at `at`: `"<len> <topic>\n"` then `len` bytes.
    /// `Ok(None)` if incomplete.
    fn parse(data: &[u8], at: usize) -> Result<Option<(Message, usize)>, String> {
        let rest = &data[at..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let header = std::str::from_utf8(&rest[..nl])
            .map_err(|_| format!("bad record header at byte {at}"))?;
        let (len, topic) = header
            .split_once(' ')
            .ok_or_else(|| format!("bad record header {header:?} at byte {at}"))?;
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad length in record header {header:?} at byte {at}"))?;
        let start = nl + 1;
        if rest.len() < start + len {
            return Ok(None);
        }
        Ok(Some((
            Message {
                topic: topic.to_owned(),
                payload: rest[start..start + len].to_vec(),
            },
            at + start + len,
        )))
    }

    /// The next message received, in order. Panics at `deadline`.
    pub fn next_message(&mut self, deadline: Instant) -> Message {
        let at = self.cursor;
        let mut bad = None;
        let got = self.proc.stdout.wait_until(deadline, |data, _| {
            match ConsoleSub::parse(data, at) {
                Ok(v) => v,
                Err(e) => {
                    bad = Some(e);
                    // Stop waiting: the output cannot be parsed.
                    Some((
                        Message {
                            topic: String::new(),
                            payload: Vec::new(),
                        },
                        at,
                    ))
                }
            }
        });
        if let Some(e) = bad {
            self.proc.fail(&e);
        }
        match got {
            Some((m, next)) => {
                self.cursor = next;
                m
            }
            None => self
                .proc
                .fail("no (further) message arrived at the console subscriber within the deadline"),
        }
    }

    /// The next message must be exactly `topic` / `payload`.
    pub fn expect_message(&mut self, topic: &str, payload: &[u8], deadline: Instant) {
        let m = self.next_message(deadline);
        if m.topic != topic || m.payload != payload {
            self.proc.fail(&format!(
                "expected a message on {topic:?} with {} bytes {:?}, got one on {:?} with {} bytes {:?}",
                payload.len(),
                preview(payload),
                m.topic,
                m.payload.len(),
                preview(&m.payload),
            ));
        }
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }
}

/// At most 200 bytes of `b`, lossy, for messages.
pub fn preview(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned();
    if b.len() > 200 { format!("{s}...") } else { s }
}

// ---------------------------------------------------------------------------
// The socket protocols, spoken directly

/// Connect to the publish socket `sock`, write `message`, shut down the write
/// side and read the status until the daemon closes. Returns what it wrote
/// back (`OK\n`, `ERR ...\n`). Panics on connect failure or timeout.
pub fn raw_send(sock: &Path, message: &[u8]) -> Vec<u8> {
    let mut s =
        UnixStream::connect(sock).unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
    s.set_read_timeout(Some(timeout())).expect("set timeout");
    s.set_write_timeout(Some(timeout())).expect("set timeout");
    s.write_all(message)
        .unwrap_or_else(|e| panic!("write to {}: {e}", sock.display()));
    s.shutdown(Shutdown::Write).expect("shutdown write");
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("reading the status from {}: {e}", sock.display()));
    reply
}

/// [`raw_send`] that does not panic: `None` when the connection fails or
/// breaks (no daemon, or one killed mid-exchange), else the status.
pub fn try_send(sock: &Path, message: &[u8]) -> Option<Vec<u8>> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(timeout())).ok()?;
    s.set_write_timeout(Some(timeout())).ok()?;
    s.write_all(message).ok()?;
    s.shutdown(Shutdown::Write).ok()?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).ok()?;
    Some(reply)
}

/// Connect to `sock`, write `message` and close at once without reading,
/// like the original C `awsapp send`.
pub fn raw_send_and_close(sock: &Path, message: &[u8]) {
    let mut s =
        UnixStream::connect(sock).unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
    s.set_write_timeout(Some(timeout())).expect("set timeout");
    s.write_all(message)
        .unwrap_or_else(|e| panic!("write to {}: {e}", sock.display()));
    drop(s);
}

/// A test-side reader on a delivery socket: accepts connections on a
/// background thread and reads each to EOF; every connection's bytes are
/// one delivered message, handed out in the order the connections came.
pub struct DeliveryListener {
    path: PathBuf,
    /// Each connection's bytes, in the order of the connections.
    rx: mpsc::Receiver<mpsc::Receiver<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    pending: VecDeque<Vec<u8>>,
}

impl DeliveryListener {
    pub fn bind(path: &Path) -> DeliveryListener {
        let listener =
            UnixListener::bind(path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        thread::Builder::new()
            .name("delivery-listener".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut conn) = conn else { continue };
                    // One thread per connection: a slow writer must not
                    // hide the others. Its bytes are handed out in the
                    // order the connections came (the daemon's order).
                    let (one_tx, one_rx) = mpsc::channel();
                    if tx.send(one_rx).is_err() {
                        break;
                    }
                    thread::spawn(move || {
                        let _ = conn.set_read_timeout(Some(timeout()));
                        let mut buf = Vec::new();
                        let _ = conn.read_to_end(&mut buf);
                        let _ = one_tx.send(buf);
                    });
                }
            })
            .expect("spawn listener thread");
        DeliveryListener {
            path: path.to_owned(),
            rx,
            stop,
            pending: VecDeque::new(),
        }
    }

    /// The next delivered message (one connection's bytes). Panics at
    /// `deadline`.
    pub fn next(&mut self, deadline: Instant) -> Vec<u8> {
        if let Some(m) = self.pending.pop_front() {
            return m;
        }
        let missing = || -> ! {
            panic!(
                "nothing delivered to {} within the deadline",
                self.path.display()
            )
        };
        let wait = || deadline.saturating_duration_since(Instant::now());
        let connection = self.rx.recv_timeout(wait()).unwrap_or_else(|_| missing());
        connection
            .recv_timeout(wait())
            .unwrap_or_else(|_| missing())
    }
}

impl Drop for DeliveryListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = UnixStream::connect(&self.path);
    }
}

/// A non-blocking listener on a UNIX socket path that only records whether
/// anyone connected: for "nothing connects" assertions.
pub struct Tripwire {
    listener: UnixListener,
    pub path: PathBuf,
}

impl Tripwire {
    pub fn bind(path: &Path) -> Tripwire {
        let listener =
            UnixListener::bind(path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        listener.set_nonblocking(true).expect("nonblocking");
        Tripwire {
            listener,
            path: path.to_owned(),
        }
    }

    /// Did any connection arrive (call after the client has exited)?
    pub fn was_connected(&self) -> bool {
        match self.listener.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept on {}: {e}", self.path.display()),
        }
    }
}

/// The same for TCP: a listener on 127.0.0.1 and a free port that records
/// whether anything connected ("before any network traffic").
pub struct TcpTripwire {
    listener: TcpListener,
    pub port: u16,
}

impl TcpTripwire {
    pub fn bind() -> TcpTripwire {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        TcpTripwire { listener, port }
    }

    pub fn was_connected(&self) -> bool {
        match self.listener.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// `n` bytes in which every byte value occurs, NULs included: first 0..=255
/// in order, then a fixed pseudo-random sequence.
pub fn binary_payload(n: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..=255u8).cycle().take(n.min(256)).collect();
    let mut x: u32 = 0x1234_5678;
    while v.len() < n {
        // xorshift32: deterministic, every byte value appears.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push((x >> 24) as u8);
    }
    v
}

/// Lines of a text, each with its `\n` (for exact output comparisons in
/// messages).
pub fn numbered(text: &str) -> String {
    let mut s = String::new();
    for (i, l) in text.lines().enumerate() {
        let _ = writeln!(s, "{:3} | {l}", i + 1);
    }
    s
}

// ---------------------------------------------------------------------------
// An HTTP CONNECT proxy

/// A minimal HTTP CONNECT proxy on 127.0.0.1 for `--proxy_host`: it tunnels
/// only to 127.0.0.1 (whatever name the request carries) and records each
/// request line. Its threads end with the test process.
pub struct ConnectProxy {
    pub port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let seen = seen.clone();
                thread::spawn(move || tunnel(client, &seen));
            }
        });
        ConnectProxy { port, requests }
    }

    /// The request lines received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("proxy log").clone()
    }
}

fn tunnel(mut client: std::net::TcpStream, seen: &Mutex<Vec<String>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or_default().to_owned();
    seen.lock().expect("proxy log").push(line.clone());
    let port = line
        .split_whitespace()
        .nth(1)
        .and_then(|authority| authority.rsplit(':').next())
        .and_then(|p| p.parse::<u16>().ok());
    let upstream = port.and_then(|p| std::net::TcpStream::connect(("127.0.0.1", p)).ok());
    let Some(upstream) = upstream else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    let (mut c2, mut u2) = match (client.try_clone(), upstream.try_clone()) {
        (Ok(c), Ok(u)) => (c, u),
        _ => return,
    };
    let (mut client, mut upstream) = (client, upstream);
    thread::spawn(move || {
        let _ = std::io::copy(&mut u2, &mut c2);
        let _ = c2.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut client, &mut upstream);
    let _ = upstream.shutdown(std::net::Shutdown::Write);
}
