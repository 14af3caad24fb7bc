//! `recv SOCKET COUNT`: listen on the delivery socket and print each message
//! exactly as the original `awsapp recv` did:
//!
//! ```text
//! wait message...
//! Receive <N> Byte
//! <payload>
//! ```
//!
//! Unlike the original (1023 bytes at most), each connection is read to EOF.
//! SIGINT and SIGTERM remove the socket and exit 0.
//!
//! Extensions: `--topic` for `pubsub --deliver_topic` framing (prints
//! `Topic: <topic>` before the payload; N counts the payload only), `--exec
//! CMD` (runs `/bin/sh -c CMD` per message, payload on stdin, `IOTBOX_TOPIC`
//! set when known, a failing exit status logged), `--raw` (payloads only).

use crate::cli::{self, RecvArgs};
use crate::error::{Error, runtime};
use crate::message;
use crate::unix_socket;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);

/// A sender that neither writes nor closes is dropped after this long.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest message kept; the rest is read and discarded. AWS IoT's limit is
/// 128 KiB, so this only guards against a runaway local writer.
const MAX_MESSAGE: u64 = 16 << 20;

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

fn run(flags: &RecvArgs) -> Result<(), Error> {
    let listener = unix_socket::bind(&flags.socket).map_err(|e| runtime!("recv: {e}"))?;
    let _socket_file = SocketFile(flags.socket.clone());
    let io_err = |e: io::Error| runtime!("recv: {e}");
    listener.set_nonblocking(true).map_err(io_err)?;

    let mut poll = Poll::new().map_err(io_err)?;
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(io_err)?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(io_err)?;
    poll.registry()
        .register(
            &mut SourceFd(&listener.as_raw_fd()),
            LISTENER,
            Interest::READABLE,
        )
        .map_err(io_err)?;

    let mut events = Events::with_capacity(8);
    let mut received = 0u64;
    if !flags.raw {
        crate::output::say("wait message...");
    }
    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other.map_err(io_err)?,
        }
        for event in &events {
            if event.token() == SIGNALS && signals.pending().next().is_some() {
                return Ok(());
            }
        }
        // Edge-triggered: accept until the backlog is empty.
        loop {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("recv: accept failed: {e}");
                    break;
                }
            };
            let data = read_message(stream, &flags.socket);
            let (topic, payload) = split_topic(&data, flags.topic);
            print_message(topic, payload, flags.raw);
            if let Some(cmd) = &flags.exec {
                run_command(cmd, topic, payload);
            }
            received += 1;
            if flags.count != 0 && received >= flags.count {
                return Ok(());
            }
            if !flags.raw {
                crate::output::say("wait message...");
            }
        }
    }
}

/// Reads one connection to EOF (or to the read timeout).
fn read_message(stream: UnixStream, socket: &Path) -> Vec<u8> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let mut payload = Vec::new();
    let mut limited = (&stream).take(MAX_MESSAGE);
    if let Err(e) = limited.read_to_end(&mut payload) {
        log::warn!(
            "recv: reading from {} stopped after {} bytes: {e}",
            socket.display(),
            payload.len()
        );
    }
    // Drain and drop anything beyond the limit so the writer is not stuck.
    if payload.len() as u64 == MAX_MESSAGE {
        let dropped = io::copy(&mut &stream, &mut io::sink()).unwrap_or(0);
        log::warn!("recv: message larger than {MAX_MESSAGE} bytes; {dropped} bytes dropped");
    }
    payload
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
