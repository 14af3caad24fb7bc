//! `send SOCKET FILE`: publish one message file through the daemon.
//!
//! The file is validated before anything connects, so an invalid file sends
//! nothing. After writing, the write side is shut down (the daemon reads to
//! EOF) and the daemon's one status line is awaited:
//!
//! | reply | prints | exit |
//! |-------|--------|------|
//! | `OK` | `send message to SOCKET.` | 0 |
//! | EOF, no status (the original daemon never answers) | the same | 0 |
//! | `ERR reason` | `send failed: reason` on stderr | 1 |
//! | `QUEUED`, or nothing within `--timeout` | a line on stderr | 3 |

use crate::cli::{self, SendArgs};
use crate::error::{Error, runtime};
use crate::message;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long writing the message may take. Longer than the daemon's read
/// timeout: a message this slow was already refused by the daemon, so
/// giving up cannot leave a truncated message to be published.
const WRITE_TIMEOUT: Duration = Duration::from_secs(message::READ_TIMEOUT.as_secs() + 5);

/// A status line is short; anything longer is not a status.
const MAX_STATUS_LEN: u64 = 4096;

pub fn main(command: &str, args: &[&str]) -> Result<(), Error> {
    let args = stdin_dash_as_positional(args);
    match cli::parse::<SendArgs>(command, &args)? {
        Some(flags) => {
            crate::output::init_tool_logging();
            run(&flags)
        }
        None => Ok(()),
    }
}

fn run(flags: &SendArgs) -> Result<(), Error> {
    let bytes = read_message_file(&flags.file)?;
    if let Err(why) = message::parse(&bytes) {
        return Err(runtime!(
            "invalid message in {}: {why}; nothing was sent",
            flags.file.display()
        ));
    }
    let timeout = (flags.timeout > 0).then(|| Duration::from_secs(flags.timeout));
    let status = exchange(&flags.socket, &bytes, timeout)?;
    let socket = flags.socket.display();
    match status {
        Status::Ok | Status::Closed => {
            crate::output::say(&format!("send message to {socket}."));
            Ok(())
        }
        Status::Err(reason) => Err(runtime!("send failed: {reason}")),
        Status::Queued => Err(Error::NotConfirmed(format!(
            "send: {socket} accepted the message and keeps it queued; the broker has not confirmed it yet"
        ))),
        Status::TimedOut => Err(Error::NotConfirmed(format!(
            "send: the message was written to {socket} but not confirmed within {} s; if the daemon took it, it keeps it queued (its log says why it waits)",
            flags.timeout
        ))),
        Status::Unknown(line) => Err(runtime!("send: unexpected reply from {socket}: {line:?}")),
    }
}

/// argh takes a lone `-` for an unknown flag; put positionals after `--`
/// so `send SOCKET -` reads stdin, as it always did.
fn stdin_dash_as_positional<'a>(args: &[&'a str]) -> Vec<&'a str> {
    if !args.contains(&"-") || args.contains(&"--") {
        return args.to_vec();
    }
    let (mut flags, mut positionals) = (Vec::new(), Vec::new());
    let mut iter = args.iter();
    while let Some(&arg) = iter.next() {
        if arg.starts_with("--") {
            flags.push(arg);
            if arg == "--timeout" {
                flags.extend(iter.next());
            }
        } else {
            positionals.push(arg);
        }
    }
    flags.push("--");
    flags.extend(positionals);
    flags
}

fn read_message_file(path: &Path) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    let result = if path == Path::new("-") {
        io::stdin().lock().read_to_end(&mut bytes).map(drop)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes).map(drop))
    };
    result.map_err(|e| runtime!("cannot read message file {}: {e}", path.display()))?;
    Ok(bytes)
}

/// What the daemon answered.
#[derive(Debug, PartialEq, Eq)]
enum Status {
    Ok,
    Err(String),
    Queued,
    /// EOF without a status line: the original daemon, which never answers.
    Closed,
    TimedOut,
    Unknown(String),
}

/// Connects, writes the message, shuts down the write side and reads the
/// status line.
fn exchange(socket: &Path, bytes: &[u8], timeout: Option<Duration>) -> Result<Status, Error> {
    let mut stream = UnixStream::connect(socket).map_err(|e| connect_error(socket, e))?;
    // A daemon that stops reading must not hang us forever either; --timeout
    // is for the broker's confirmation only.
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = stream.set_read_timeout(timeout);
    let written = stream
        .write_all(bytes)
        .and_then(|()| stream.shutdown(std::net::Shutdown::Write));
    let status = read_status(&mut stream);
    match (written, status) {
        (Ok(()), status) => Ok(status),
        // The daemon stopped reading but said why (e.g. too large).
        (Err(_), status @ (Status::Err(_) | Status::Queued | Status::Ok)) => Ok(status),
        (Err(e), _) if is_timeout(&e) => Err(runtime!(
            "send: the write to {} did not complete within {} s; the message was not sent",
            socket.display(),
            WRITE_TIMEOUT.as_secs()
        )),
        (Err(e), _) => Err(runtime!(
            "send: the write to {} did not complete: {e}; the message was not sent",
            socket.display()
        )),
    }
}

fn read_status(stream: &mut UnixStream) -> Status {
    let mut reply = Vec::new();
    match stream.take(MAX_STATUS_LEN).read_to_end(&mut reply) {
        Ok(_) => {}
        Err(e) if is_timeout(&e) && reply.is_empty() => return Status::TimedOut,
        Err(_) if reply.is_empty() => return Status::Closed,
        Err(_) => {}
    }
    parse_status(&reply)
}

fn parse_status(reply: &[u8]) -> Status {
    if reply.is_empty() {
        return Status::Closed;
    }
    let line = reply.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    match line.as_ref() {
        "OK" => Status::Ok,
        "QUEUED" => Status::Queued,
        other => match other.strip_prefix("ERR") {
            Some(reason) => Status::Err(reason.trim_start().to_owned()),
            None => Status::Unknown(other.to_owned()),
        },
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn connect_error(socket: &Path, e: io::Error) -> Error {
    let path = socket.display();
    match e.kind() {
        io::ErrorKind::NotFound => runtime!(
            "send: no socket at {path}: is mqtt5_pubsub running? (start it, or check its --pub_socket)"
        ),
        io::ErrorKind::ConnectionRefused => {
            runtime!("send: nothing is listening on {path} (a stale socket): start mqtt5_pubsub")
        }
        io::ErrorKind::PermissionDenied => runtime!(
            "send: permission denied on {path}: run as a user in the socket's group (see --socket_mode)"
        ),
        _ => runtime!("send: cannot connect to {path}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dash_means_stdin() {
        assert_eq!(
            stdin_dash_as_positional(&["--timeout", "3", "s", "-"]),
            ["--timeout", "3", "--", "s", "-"]
        );
        assert_eq!(stdin_dash_as_positional(&["s", "f"]), ["s", "f"]);
        let args = stdin_dash_as_positional(&["sock", "-"]);
        let flags = cli::parse::<SendArgs>("send", &args).unwrap().unwrap();
        assert_eq!(flags.file, std::path::PathBuf::from("-"));
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"OK\n"), Status::Ok);
        assert_eq!(parse_status(b"OK"), Status::Ok);
        assert_eq!(parse_status(b"QUEUED\n"), Status::Queued);
        assert_eq!(
            parse_status(b"ERR topic contains a NUL byte\n"),
            Status::Err("topic contains a NUL byte".into())
        );
        assert_eq!(parse_status(b""), Status::Closed);
        assert_eq!(parse_status(b"HELLO\n"), Status::Unknown("HELLO".into()));
    }
}
