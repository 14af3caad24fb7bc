//! iotbox: one small static binary that lets a Raspberry Pi (or any embedded
//! Linux box) talk to AWS IoT Core over MQTT 5 with its X.509 device
//! certificate, through two UNIX sockets.
//!
//! It replaces, drop-in, the AWS SDK's `mqtt5_pubsub` sample patched to serve
//! sockets plus the small C tool `awsapp`: the same command lines, socket paths,
//! message files and output lines keep working.
//!
//! # Layout
//!
//! ```text
//! main.rs              argv[0] / first-argument dispatch (BusyBox style),
//!                      error -> exit code; this map
//! cli.rs               every applet's flags (argh), SDK spellings normalized
//! error.rs             the applets' error type and the exit code scheme
//! message.rs           the `topic\npayload` format: parse, validate, encode
//! unix_socket.rs       binding a listening socket safely (stale vs. live vs.
//!                      not a socket); shared by recv and the daemon
//! send.rs              the send applet: validate, write, wait for OK/ERR
//! recv.rs              the recv applet: listen, print each message
//! daemon/              the pubsub applet
//!   mod.rs             flags -> Config (validated before any traffic), logging
//!   event_loop.rs      the one mio::Poll: tokens, timers, signals; the only
//!                      place that waits or reads the clock
//!   session.rs         MQTT 5 session, sans-IO: bytes and commands in,
//!                      bytes, deadlines and events out
//!   codec.rs           the only user of rumqttc's codec; works around its
//!                      known bugs (each has a regression test)
//!   transport.rs       non-blocking TCP connect (+ HTTP CONNECT tunnel) +
//!                      rustls byte pump
//!   proxy.rs           the HTTP CONNECT request and reply, pure
//!   tls.rs             rustls ClientConfig, PEM loading, CA defaults, error
//!                      messages (the 1970 clock, a refused certificate)
//!   crypto.rs          the *ring* provider, trimmed to AES-GCM suites (size)
//!   resolve.rs         DNS on a short-lived thread that wakes the loop
//!   publish_socket.rs  publish socket clients: read to EOF with limits,
//!                      reply OK/ERR
//!   delivery.rs        bounded queue of received messages, pushed to the
//!                      delivery socket one connection each
//!   backoff.rs         reconnect delays: full jitter, 1 s doubling to 120 s
//!   rate.rs            --max_rate: publishes per second (GCRA), pure
//! ```
//!
//! # Design
//!
//! One thread runs one `mio::Poll` over the publish socket's clients, the
//! delivery connection, the broker connection, signals and a waker. The MQTT
//! session is a state machine that never touches a socket or the clock (in
//! the style of quinn-proto): the event loop feeds it bytes and the time, then
//! drains its output, its next deadline and its events. That keeps the
//! protocol logic testable in virtual time and the daemon idle between
//! keep-alive pings. rustls is driven the same way (sans-IO).
//!
//! # Changes from the starting design (ARCHITECTURE.md), and why
//!
//! - argh rejects `_` in flag names, so flags are declared with dashes and
//!   `cli::normalize` accepts the SDK sample's spellings; usage shows those.
//! - `codec.rs` frames packets itself and calls only the decoders a client
//!   needs: "need more bytes" is then never confused with a bad packet, and
//!   the broker-side decoders are not linked (size).
//! - `crypto.rs`: a provider without ChaCha20 and rustls without `logging`,
//!   and non-PIE static musl builds (`.cargo/config.toml`), to stay under
//!   the 1.5 MiB budget (SPEC §8).
//! - `proxy.rs` and `rate.rs` are pure helpers for `--proxy_host` and
//!   `--max_rate`; the transport and the session only drive them.
//! - The publish socket reads a client right after `accept`: most clients
//!   have written everything by then, which saves a poll registration and a
//!   wake-up per message. Status lines go to stdout once per loop turn.

#![forbid(unsafe_code)]

mod cli;
mod daemon;
mod error;
mod message;
mod recv;
mod send;
mod unix_socket;

use argh::FromArgs;
use error::{Error, usage};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The version printed by `--version`.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Names that take the applet from the next argument.
const MULTICALL_NAMES: &[&str] = &["iotbox", "awsapp"];

/// The symlinks `--install` creates.
const SYMLINKS: &[&str] = &["awsapp", "mqtt5_pubsub"];

/// One applet: its names and its entry point. `run` gets the name it was
/// called by (for argh's usage text) and the arguments after it.
struct Applet {
    name: &'static str,
    aliases: &'static [&'static str],
    run: fn(&str, &[&str]) -> Result<(), Error>,
    help: fn(&str) -> String,
}

const APPLETS: &[Applet] = &[
    Applet {
        name: "pubsub",
        aliases: &["mqtt5_pubsub"],
        run: daemon::main,
        help: help_of::<cli::PubsubArgs>,
    },
    Applet {
        name: "send",
        aliases: &[],
        run: send::main,
        help: help_of::<cli::SendArgs>,
    },
    Applet {
        name: "recv",
        aliases: &[],
        run: recv::main,
        help: help_of::<cli::RecvArgs>,
    },
];

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    match dispatch(&argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Picks the applet from `argv[0]`'s basename, or from the first argument when
/// called by a multicall name, and runs it.
fn dispatch(argv: &[OsString]) -> Result<(), Error> {
    let name = argv.first().and_then(|a| program_name(a)).unwrap_or("");
    let args: Vec<&str> = argv
        .iter()
        .skip(1)
        .map(|a| {
            a.to_str()
                .ok_or_else(|| usage!("argument {a:?} is not valid UTF-8"))
        })
        .collect::<Result<_, _>>()?;

    if let Some(applet) = find_applet(name) {
        return (applet.run)(name, &args);
    }
    if !MULTICALL_NAMES.contains(&name) {
        return Err(Error::Usage(format!(
            "iotbox: unknown program name {name:?}\n{}",
            usage_all()
        )));
    }
    match args.first().copied() {
        Some("--help" | "-h" | "help") => {
            say(&usage_all());
            Ok(())
        }
        Some("--version" | "-V") => {
            say(&format!("iotbox {VERSION}"));
            Ok(())
        }
        Some("--install") => install_symlinks(args.get(1).map(PathBuf::from)),
        Some(sub) => match find_applet(sub) {
            Some(applet) => (applet.run)(&format!("{name} {}", applet.name), &args[1..]),
            None => Err(Error::Usage(format!(
                "{name}: unknown applet {sub:?}\n{}",
                usage_all()
            ))),
        },
        None => Err(Error::Usage(usage_all())),
    }
}

/// The file name of `argv[0]`, if it is valid UTF-8.
fn program_name(argv0: &OsString) -> Option<&str> {
    Path::new(argv0).file_name()?.to_str()
}

fn find_applet(name: &str) -> Option<&'static Applet> {
    APPLETS
        .iter()
        .find(|a| a.name == name || a.aliases.contains(&name))
}

/// argh's generated usage text for one applet.
fn help_of<T: FromArgs>(command: &str) -> String {
    match T::from_args(&[command], &["--help"]) {
        Err(early) => cli::sample_spelling(&early.output),
        Ok(_) => String::new(),
    }
}

/// The usage of every applet, for `--help` and for unknown names.
fn usage_all() -> String {
    let mut text = format!(
        "iotbox {VERSION}: MQTT 5 to AWS IoT Core over UNIX sockets\n\n\
         Usage: iotbox APPLET [ARGS]   (or call it as mqtt5_pubsub / awsapp)\n\
         \x20      iotbox --install [DIR]   create the awsapp and mqtt5_pubsub symlinks\n\
         \x20      iotbox --help | --version\n"
    );
    for applet in APPLETS {
        text.push('\n');
        text.push_str(&(applet.help)(&format!("iotbox {}", applet.name)));
    }
    text
}

/// Logging for the short-lived tools (`send`, `recv`): warnings and errors
/// on stderr, one plain line each; `RUST_LOG` overrides the level.
pub(crate) fn init_tool_logging() {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Warn);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.format(|out, record| writeln!(out, "{}", record.args()));
    let _ = builder.try_init();
}

/// Prints one line on stdout and flushes it. A closed stdout (the reader of a
/// pipe went away) is not an error worth dying for.
pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `iotbox --install [DIR]`: symlinks `awsapp` and `mqtt5_pubsub` to this
/// binary in DIR (default: the directory the binary is in).
fn install_symlinks(dir: Option<PathBuf>) -> Result<(), Error> {
    let exe = std::env::current_exe()
        .map_err(|e| error::runtime!("cannot find this program's own path: {e}"))?;
    let exe_dir = exe.parent().unwrap_or(Path::new("/")).to_path_buf();
    let dir = dir.unwrap_or_else(|| exe_dir.clone());
    // A relative link survives moving the directory (DESTDIR installs).
    let same_dir = dir
        .canonicalize()
        .ok()
        .is_some_and(|d| exe_dir.canonicalize().ok() == Some(d));
    let target = match exe.file_name() {
        Some(file) if same_dir => PathBuf::from(file),
        _ => exe.clone(),
    };
    for name in SYMLINKS {
        let link = dir.join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(meta) if meta.file_type().is_symlink() => std::fs::remove_file(&link)
                .map_err(|e| error::runtime!("cannot replace {}: {e}", link.display()))?,
            Ok(_) => {
                return Err(error::runtime!(
                    "{} exists and is not a symlink; remove it first (nothing was changed there)",
                    link.display()
                ));
            }
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&target, &link)
            .map_err(|e| error::runtime!("cannot create {}: {e}", link.display()))?;
        say(&format!("{} -> {}", link.display(), target.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn names_come_from_the_basename() {
        assert_eq!(
            program_name(&OsString::from("/usr/bin/awsapp")),
            Some("awsapp")
        );
        assert_eq!(program_name(&OsString::from("iotbox")), Some("iotbox"));
        assert_eq!(program_name(&OsString::from("")), None);
        assert_eq!(program_name(&OsString::from_vec(vec![0xff, 0xfe])), None);
    }

    #[test]
    fn aliases_resolve() {
        assert_eq!(find_applet("mqtt5_pubsub").map(|a| a.name), Some("pubsub"));
        assert_eq!(find_applet("send").map(|a| a.name), Some("send"));
        assert!(find_applet("awsapp").is_none());
    }

    #[test]
    fn unknown_names_are_usage_errors() {
        let argv = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let err = dispatch(&argv(&["/bin/nosuch"])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = dispatch(&argv(&["iotbox", "frobnicate"])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("pubsub"));
        let err = dispatch(&[OsString::from_vec(vec![0xff])]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn usage_lists_every_applet() {
        let text = usage_all();
        for a in APPLETS {
            assert!(text.contains(&format!("iotbox {}", a.name)), "{text}");
        }
        assert!(text.contains("--client_id"));
    }
}
