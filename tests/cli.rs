//! Command-line behaviour that needs no broker (README: the applet table,
//! "`send` and `recv`", and the checks of "`pubsub` flags" before any
//! network traffic):
//! dispatch, usage errors, validation before any connection, the `send`
//! status handling against a fake daemon, and `recv`'s output.

mod common;

use common::*;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// The applets every usage text must name.
const APPLETS: [&str; 3] = ["pubsub", "send", "recv"];

fn assert_lists_applets(text: &str, out: &Output) {
    for a in APPLETS {
        if !text.contains(a) {
            out.fail(&format!("usage does not mention `{a}`"));
        }
    }
}

// ---------------------------------------------------------------------------
// Dispatch

#[test]
fn version_prints_the_version() {
    let env = Env::new("c-version");
    let out = env.run_iotbox(&["--version"]);
    out.expect_code(0);
    if !out.stdout_text().contains(env!("CARGO_PKG_VERSION")) {
        out.fail(&format!(
            "stdout does not contain the version {}",
            env!("CARGO_PKG_VERSION")
        ));
    }
}

#[test]
fn help_lists_every_applet() {
    let env = Env::new("c-help");
    let out = env.run_iotbox(&["--help"]);
    out.expect_code(0);
    assert_lists_applets(&out.stdout_text(), &out);
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let env = Env::new("c-nosuch");
    let out = env.run_iotbox(&["nosuch"]);
    out.expect_code(2);
    assert_lists_applets(&out.stderr_text(), &out);
    if !out.stdout.is_empty() {
        out.fail("usage errors go to stderr, not stdout");
    }
}

#[test]
fn unknown_program_name_is_a_usage_error() {
    let env = Env::new("c-badname");
    let out = run("frobnicate", env.applet("frobnicate", &[]), None);
    out.expect_code(2);
    assert_lists_applets(&out.stderr_text(), &out);
}

#[test]
fn install_creates_working_symlinks() {
    let env = Env::new("c-install");
    let dir = env.path("installed");
    std::fs::create_dir(&dir).unwrap();
    env.run_iotbox(&[OsStr::new("--install"), dir.as_os_str()])
        .expect_code(0);

    for name in ["awsapp", "mqtt5_pubsub"] {
        let link = dir.join(name);
        let meta = std::fs::symlink_metadata(&link)
            .unwrap_or_else(|e| panic!("{} not created: {e}", link.display()));
        assert!(
            meta.file_type().is_symlink(),
            "{} is not a symlink",
            link.display()
        );
        assert_eq!(
            std::fs::canonicalize(&link).unwrap(),
            env.bin(),
            "{} does not lead to the binary",
            link.display()
        );
    }

    // They work: dispatch on the name, and each applet checks its arguments.
    let mut awsapp = command_for(&dir.join("awsapp"));
    awsapp.arg("send");
    run("installed awsapp send", awsapp, None).expect_code(2);
    let pubsub = command_for(&dir.join("mqtt5_pubsub"));
    run("installed mqtt5_pubsub", pubsub, None).expect_code(2);
}

#[test]
fn awsapp_without_arguments_is_a_usage_error() {
    let env = Env::new("c-awsapp");
    let out = run("awsapp send", env.awsapp(&["send"]), None);
    out.expect_code(2);
    let out = run("awsapp", env.awsapp::<&str>(&[]), None);
    out.expect_code(2);
}

// ---------------------------------------------------------------------------
// send: validation before connecting

/// Run `iotbox send SOCK FILE` with FILE holding `contents` and a listener
/// at SOCK; require exit 1, one stderr line, and no connection.
fn send_invalid(tag: &str, contents: &[u8]) -> String {
    let env = Env::new(tag);
    let sock = env.path("smsg");
    let tripwire = Tripwire::bind(&sock);
    let file = env.write("bad.txt", contents);
    let out = env.send(&sock, &file);
    out.expect_code(1);
    let line = out.expect_one_stderr_line();
    if tripwire.was_connected() {
        out.fail("send connected to the socket although the file is invalid");
    }
    line
}

#[test]
fn send_rejects_file_without_newline() {
    send_invalid("c-nonl", b"sdk/test/java");
}

#[test]
fn send_rejects_wildcard_topic() {
    send_invalid("c-plus", b"sdk/+/java\n{}");
    send_invalid("c-hash", b"sdk/#\n{}");
}

#[test]
fn send_rejects_empty_topic() {
    send_invalid("c-empty", b"\n{}");
}

#[test]
fn send_to_missing_socket_fails_clearly() {
    let env = Env::new("c-nosock");
    let file = env.write("message.txt", b"sdk/test/java\nhello");
    let sock = Path::new("/nonexistent/sock");
    let out = env.send(sock, &file);
    out.expect_code(1);
    let line = out.expect_one_stderr_line();
    assert!(
        line.contains("/nonexistent/sock"),
        "the error names the socket: {line:?}"
    );
}

#[test]
fn send_unreadable_file_fails_clearly() {
    let env = Env::new("c-nofile");
    let sock = env.path("smsg");
    let tripwire = Tripwire::bind(&sock);
    let missing = env.path("missing.txt");
    let out = env.send(&sock, &missing);
    out.expect_code(1);
    let line = out.expect_one_stderr_line();
    assert!(line.contains("missing.txt"), "names the file: {line:?}");
    assert!(!tripwire.was_connected());
}

// ---------------------------------------------------------------------------
// send: against a fake daemon (README, "`send` and `recv`": the status line
// and the exit codes)

/// A fake daemon on `sock`: accepts one connection, reads the message to
/// EOF, writes `reply` (if any) and closes. Returns the message it read.
fn fake_daemon(sock: &Path, reply: Option<&'static [u8]>) -> thread::JoinHandle<Vec<u8>> {
    let l = UnixListener::bind(sock).expect("bind fake daemon");
    thread::spawn(move || {
        let (mut c, _) = l.accept().expect("accept");
        c.set_read_timeout(Some(timeout())).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).expect("read message to EOF");
        if let Some(r) = reply {
            let _ = c.write_all(r);
        }
        got
    })
}

#[test]
fn send_ok_prints_the_howto_line() {
    let env = Env::new("c-ok");
    let sock = env.path("smsg");
    let daemon = fake_daemon(&sock, Some(b"OK\n"));
    let msg = b"sdk/test/java\n{\n  \"message\": \"Hello from Raspberry Pi\"\n}\n";
    let file = env.write("message.txt", msg);
    env.send(&sock, &file)
        .expect_code(0)
        .expect_stdout(&format!("send message to {}.\n", sock.display()));
    assert_eq!(daemon.join().unwrap(), msg);
}

#[test]
fn send_reads_stdin_for_dash() {
    let env = Env::new("c-stdin");
    let sock = env.path("smsg");
    let daemon = fake_daemon(&sock, Some(b"OK\n"));
    let msg = b"sdk/test/java\nfrom stdin\0with a NUL";
    let out = run(
        "iotbox send -",
        env.iotbox(&[OsStr::new("send"), sock.as_os_str(), OsStr::new("-")]),
        Some(msg),
    );
    out.expect_code(0)
        .expect_stdout(&format!("send message to {}.\n", sock.display()));
    assert_eq!(daemon.join().unwrap(), msg);
}

/// The original patched mqtt5_pubsub closes without a status: `send` takes
/// that as success, as `awsapp send` did.
#[test]
fn send_to_daemon_without_status_succeeds() {
    let env = Env::new("c-nostatus");
    let sock = env.path("smsg");
    let daemon = fake_daemon(&sock, None);
    let file = env.write("message.txt", b"sdk/test/java\nhello");
    env.send(&sock, &file)
        .expect_code(0)
        .expect_stdout(&format!("send message to {}.\n", sock.display()));
    assert_eq!(daemon.join().unwrap(), b"sdk/test/java\nhello");
}

#[test]
fn send_err_status_fails_with_reason() {
    let env = Env::new("c-err");
    let sock = env.path("smsg");
    let daemon = fake_daemon(&sock, Some(b"ERR payload too large\n"));
    let file = env.write("message.txt", b"sdk/test/java\nhello");
    let out = env.send(&sock, &file);
    out.expect_code(1);
    assert_eq!(
        out.expect_one_stderr_line(),
        "send failed: payload too large"
    );
    assert!(out.stdout.is_empty(), "{}", out.report);
    daemon.join().unwrap();
}

#[test]
fn send_queued_status_exits_3() {
    let env = Env::new("c-queued");
    let sock = env.path("smsg");
    let daemon = fake_daemon(&sock, Some(b"QUEUED\n"));
    let file = env.write("message.txt", b"sdk/test/java\nhello");
    let out = env.send(&sock, &file);
    out.expect_code(3);
    assert!(!out.stderr_lines().is_empty(), "says so on stderr");
    daemon.join().unwrap();
}

/// Accepted but never confirmed within `--timeout`: exit 3, with one line
/// on stderr that does not guess why (the daemon may be busy, or waiting
/// for the broker; `send` cannot know).
#[test]
fn send_unconfirmed_within_timeout_exits_3() {
    let env = Env::new("c-timeout");
    let sock = env.path("smsg");
    let l = UnixListener::bind(&sock).unwrap();
    // Reads the message, then holds the connection open without a status
    // until the test releases it.
    let (got_tx, got_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let daemon = thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
        let _ = got_tx.send(buf);
        let _ = release_rx.recv();
        drop(c);
    });
    let file = env.write("message.txt", b"sdk/test/java\nhello");
    let out = run(
        "iotbox send --timeout 1",
        env.iotbox(&[
            OsStr::new("send"),
            OsStr::new("--timeout"),
            OsStr::new("1"),
            sock.as_os_str(),
            file.as_os_str(),
        ]),
        None,
    );
    let _ = release_tx.send(());
    out.expect_code(3);
    // One line that says what is known (written, not confirmed) and does
    // not guess why.
    let line = out.expect_one_stderr_line();
    if line.contains("is the broker reachable") {
        out.fail("the timeout message guesses at the broker; it should say the message was written and not confirmed");
    }
    // The fake daemon got the whole message.
    let got = got_rx.recv_timeout(timeout()).expect("message read");
    assert_eq!(got, b"sdk/test/java\nhello");
    daemon.join().unwrap();
}

// ---------------------------------------------------------------------------
// recv (README, "`send` and `recv`")

#[test]
fn recv_prints_like_the_original_tool() {
    let env = Env::new("c-recv");
    let sock = env.path("rmsg");
    let mut recv = Proc::spawn(
        "iotbox recv",
        env.iotbox(&[OsStr::new("recv"), sock.as_os_str(), OsStr::new("2")]),
    );
    recv.expect_line("wait message...", deadline());
    raw_send_and_close(
        &sock,
        b"{\n  \"message\": \"Hello from AWS IoT console\"\n}",
    );
    recv.expect_line("Receive 45 Byte", deadline());
    recv.expect_line("{", deadline());
    recv.expect_line("  \"message\": \"Hello from AWS IoT console\"", deadline());
    recv.expect_line("}", deadline());
    recv.expect_line("wait message...", deadline());

    // Longer than the original's 1023-byte buffer: read to EOF.
    let long = "x".repeat(5000);
    raw_send_and_close(&sock, long.as_bytes());
    recv.expect_line("Receive 5000 Byte", deadline());
    assert_eq!(recv.next_line(deadline()), long);
    recv.expect_exit_code(0, deadline());
}

#[test]
fn recv_refuses_a_regular_file() {
    let env = Env::new("c-recvfile");
    let file = env.write("precious.txt", b"do not delete\n");
    let out = env.run_iotbox(&[OsStr::new("recv"), file.as_os_str(), OsStr::new("1")]);
    out.expect_code(1);
    assert_eq!(std::fs::read(&file).unwrap(), b"do not delete\n");
}

#[test]
fn recv_replaces_a_stale_socket() {
    let env = Env::new("c-stale");
    let sock = env.path("rmsg");
    // A socket file nobody listens on any more.
    drop(UnixListener::bind(&sock).unwrap());
    assert!(std::fs::symlink_metadata(&sock).is_ok());
    let mut recv = Proc::spawn(
        "iotbox recv",
        env.iotbox(&[OsStr::new("recv"), sock.as_os_str(), OsStr::new("1")]),
    );
    recv.expect_line("wait message...", deadline());
    raw_send_and_close(&sock, b"hi");
    recv.expect_line("Receive 2 Byte", deadline());
    recv.expect_line("hi", deadline());
    recv.expect_exit_code(0, deadline());
}

#[test]
fn recv_sigterm_removes_socket() {
    let env = Env::new("c-recvterm");
    let sock = env.path("rmsg");
    let mut recv = Proc::spawn(
        "iotbox recv",
        env.iotbox(&[OsStr::new("recv"), sock.as_os_str(), OsStr::new("0")]),
    );
    recv.expect_line("wait message...", deadline());
    recv.signal(Signal::TERM);
    recv.expect_exit_code(0, deadline());
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "socket still exists"
    );
}

/// A client that connects and sends nothing does not hold up the next one:
/// its message is printed at once, long before the silent client's 10 s read
/// deadline, while the silent client is still connected. Messages are
/// printed as they complete: the first client's comes second.
#[test]
fn recv_a_silent_client_does_not_delay_another() {
    let env = Env::new("c-recvsilent");
    let sock = env.path("rmsg");
    let mut recv = Proc::spawn(
        "iotbox recv",
        env.iotbox(&[OsStr::new("recv"), sock.as_os_str(), OsStr::new("2")]),
    );
    recv.expect_line("wait message...", deadline());
    // Connected first, so it is first in the backlog; silent for now.
    let mut slow = UnixStream::connect(&sock).expect("connect the silent client");
    raw_send_and_close(&sock, b"second");
    let soon = Instant::now() + Duration::from_secs(3);
    recv.expect_line("Receive 6 Byte", soon);
    recv.expect_line("second", soon);
    recv.expect_line("wait message...", soon);
    slow.write_all(b"first")
        .expect("write from the first client");
    drop(slow);
    recv.expect_line("Receive 5 Byte", deadline());
    recv.expect_line("first", deadline());
    recv.expect_exit_code(0, deadline());
}

/// SIGTERM acts at once even while a client that sends nothing is connected
/// (and accepted): exit 0 and the socket is removed.
#[test]
fn recv_sigterm_is_prompt_with_a_silent_client() {
    let env = Env::new("c-recvtermsilent");
    let sock = env.path("rmsg");
    let mut recv = Proc::spawn(
        "iotbox recv",
        env.iotbox(&[OsStr::new("recv"), sock.as_os_str(), OsStr::new("0")]),
    );
    recv.expect_line("wait message...", deadline());
    let before = open_sockets(&recv);
    let silent = UnixStream::connect(&sock).expect("connect the silent client");
    wait_open_sockets_above(&recv, before);
    let sent = Instant::now();
    recv.signal(Signal::TERM);
    recv.expect_exit_code(0, sent + Duration::from_secs(2));
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "socket still exists"
    );
    drop(silent);
}

/// How many sockets `proc` holds open (Linux: `/proc/PID/fd`). Under
/// qemu-user the PID is qemu's, whose descriptors include the guest's.
fn open_sockets(proc: &Proc) -> usize {
    let dir = format!("/proc/{}/fd", proc.pid());
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| proc.fail(&format!("{dir}: {e}")));
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Waits (with the deadline) until `proc` holds more than `count` sockets:
/// it has accepted a connection.
fn wait_open_sockets_above(proc: &Proc, count: usize) {
    let end = deadline();
    while open_sockets(proc) <= count {
        if Instant::now() >= end {
            proc.fail("never accepted the connection");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// pubsub: every flag and file checked before any network traffic (bad flag:
// exit 2; unusable file: exit 1, one line saying which and why)

#[test]
fn pubsub_without_endpoint_is_a_usage_error() {
    let env = Env::new("c-noendpoint");
    let out = run("mqtt5_pubsub", env.applet("mqtt5_pubsub", &[]), None);
    out.expect_code(2);
    assert!(!out.stderr_lines().is_empty(), "{}", out.report);
}

#[test]
fn pubsub_missing_cert_fails_before_any_traffic() {
    let env = Env::new("c-nocert");
    let pki = env.pki();
    let broker = TcpTripwire::bind();
    let smsg = env.smsg();
    let args = [
        OsStr::new("--endpoint"),
        OsStr::new("127.0.0.1"),
        OsStr::new("--port"),
        OsStr::new(&broker.port.to_string()),
        OsStr::new("--cert"),
        OsStr::new("/nonexistent/device.cert.pem"),
        OsStr::new("--key"),
        pki.client_key.as_os_str(),
        OsStr::new("--ca_file"),
        pki.ca.as_os_str(),
        OsStr::new("--pub_socket"),
        smsg.as_os_str(),
        OsStr::new("--sub_socket"),
        env.rmsg().as_os_str(),
    ]
    .map(OsStr::to_owned);
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let out = run("mqtt5_pubsub", env.applet("mqtt5_pubsub", &args), None);
    out.expect_code(1);
    let line = out.expect_one_stderr_line();
    assert!(
        line.contains("/nonexistent/device.cert.pem"),
        "names the file: {line:?}"
    );
    assert!(!broker.was_connected(), "connected to the broker anyway");
    assert!(
        std::fs::symlink_metadata(&smsg).is_err(),
        "bound the publish socket before validating"
    );
    assert!(
        !out.stdout_text().contains("attempting connection"),
        "{}",
        out.report
    );
}

#[test]
fn pubsub_refuses_regular_file_as_publish_socket() {
    let env = Env::new("c-pubfile");
    let pki = env.pki();
    let broker = TcpTripwire::bind();
    let precious = env.write("precious.txt", b"not a socket\n");
    let args = [
        OsStr::new("pubsub"),
        OsStr::new("--endpoint"),
        OsStr::new("127.0.0.1"),
        OsStr::new("--port"),
        OsStr::new(&broker.port.to_string()),
        OsStr::new("--cert"),
        pki.client_cert.as_os_str(),
        OsStr::new("--key"),
        pki.client_key.as_os_str(),
        OsStr::new("--ca_file"),
        pki.ca.as_os_str(),
        OsStr::new("--pub_socket"),
        precious.as_os_str(),
        OsStr::new("--sub_socket"),
        env.rmsg().as_os_str(),
    ]
    .map(OsStr::to_owned);
    let out = run("iotbox pubsub", env.iotbox(&args), None);
    out.expect_code(1);
    out.expect_one_stderr_line();
    assert_eq!(std::fs::read(&precious).unwrap(), b"not a socket\n");
    assert!(!broker.was_connected(), "connected to the broker anyway");
}

/// A publish socket that answers belongs to a running daemon: exit 1, and
/// the other daemon's socket stays.
#[test]
fn pubsub_refuses_a_live_publish_socket() {
    let env = Env::new("c-publive");
    let pki = env.pki();
    let broker = TcpTripwire::bind();
    let smsg = env.smsg();
    let _other = UnixListener::bind(&smsg).unwrap();
    let args = [
        OsStr::new("pubsub"),
        OsStr::new("--endpoint"),
        OsStr::new("127.0.0.1"),
        OsStr::new("--port"),
        OsStr::new(&broker.port.to_string()),
        OsStr::new("--cert"),
        pki.client_cert.as_os_str(),
        OsStr::new("--key"),
        pki.client_key.as_os_str(),
        OsStr::new("--ca_file"),
        pki.ca.as_os_str(),
        OsStr::new("--pub_socket"),
        smsg.as_os_str(),
        OsStr::new("--sub_socket"),
        env.rmsg().as_os_str(),
    ]
    .map(OsStr::to_owned);
    let out = run("iotbox pubsub", env.iotbox(&args), None);
    out.expect_code(1);
    out.expect_one_stderr_line();
    assert!(std::fs::symlink_metadata(&smsg).is_ok(), "socket removed");
    assert!(UnixStream::connect(&smsg).is_ok(), "socket replaced");
    assert!(!broker.was_connected(), "connected to the broker anyway");
}

/// Waits (with the deadline) until `recv` listens on `sock`.
fn wait_listening(sock: &Path) {
    let end = deadline();
    while UnixStream::connect(sock).is_err() {
        assert!(
            Instant::now() < end,
            "nothing listens on {}",
            sock.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `recv --topic` reads `pubsub --deliver_topic` framing (`topic\npayload`):
/// prints `Topic: <topic>`, and N counts the payload only.
#[test]
fn recv_topic_prints_the_topic_and_counts_the_payload() {
    let env = Env::new("c-recvtopic");
    let sock = env.path("rmsg");
    let mut recv = Proc::spawn(
        "iotbox recv --topic",
        env.iotbox(&[
            OsStr::new("recv"),
            OsStr::new("--topic"),
            sock.as_os_str(),
            OsStr::new("1"),
        ]),
    );
    recv.expect_line("wait message...", deadline());
    raw_send_and_close(&sock, b"sdk/test/python\nhello");
    recv.expect_line("Topic: sdk/test/python", deadline());
    recv.expect_line("Receive 5 Byte", deadline());
    recv.expect_line("hello", deadline());
    recv.expect_exit_code(0, deadline());
}

/// `recv --raw` prints the payloads only, byte for byte (for pipes).
#[test]
fn recv_raw_prints_payloads_only() {
    let env = Env::new("c-recvraw");
    let sock = env.path("rmsg");
    let mut recv = Proc::spawn(
        "iotbox recv --raw",
        env.iotbox(&[
            OsStr::new("recv"),
            OsStr::new("--raw"),
            sock.as_os_str(),
            OsStr::new("2"),
        ]),
    );
    // The probe connection of wait_listening counts as an (empty) message.
    wait_listening(&sock);
    raw_send_and_close(&sock, b"\0binary\xff");
    recv.expect_exit_code(0, deadline());
    assert_eq!(recv.stdout_bytes(), b"\0binary\xff");
}

/// `recv --exec` runs the command per message with the payload on stdin and
/// IOTBOX_TOPIC set (with --topic); a failing command is logged, and recv
/// goes on.
#[test]
fn recv_exec_runs_a_command_per_message() {
    let env = Env::new("c-recvexec");
    let sock = env.path("rmsg");
    let out_file = env.path("got");
    let cmd = format!(
        "{{ printf '%s|' \"$IOTBOX_TOPIC\"; cat; echo; }} >> '{}'; [ \"$IOTBOX_TOPIC\" != fail ]",
        out_file.display()
    );
    let mut recv = Proc::spawn(
        "iotbox recv --exec",
        env.iotbox(&[
            OsStr::new("recv"),
            OsStr::new("--topic"),
            OsStr::new("--exec"),
            OsStr::new(&cmd),
            sock.as_os_str(),
            OsStr::new("2"),
        ]),
    );
    recv.expect_line("wait message...", deadline());
    raw_send_and_close(&sock, b"fail\nfirst");
    recv.expect_line("Topic: fail", deadline());
    raw_send_and_close(&sock, b"a/b\nsecond");
    recv.expect_exit_code(0, deadline());
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        "fail|first\na/b|second\n"
    );
    if !recv.stderr_text().contains("exit status: 1") {
        recv.fail("the failing command's exit status was not logged");
    }
}
