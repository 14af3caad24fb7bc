//! The `pubsub` applet (`mqtt5_pubsub`): flags become a validated [`Config`]
//! before any network traffic, logging is set up, and the event loop runs.

pub mod backoff;
pub mod broker;
pub mod codec;
pub mod device;
pub mod event_loop;
pub mod notify;
pub mod store;

use broker::{crypto, link, session, tls};

use crate::cli::{self, PubsubArgs};
use crate::error::{Error, runtime, usage};
use crate::message;
use crate::output::{self, Sink};
use log::LevelFilter;
use rustls::client::ClientConfig;
use rustls::pki_types::ServerName;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// AWS IoT Core's limit on client id length.
pub(crate) const MAX_CLIENT_ID: usize = 128;

/// No MQTT packet is larger than 256 MiB, so no payload either.
const MAX_MQTT_PAYLOAD: usize = 268_435_455;

/// The SDK sample's default proxy port.
pub(crate) const DEFAULT_PROXY_PORT: u16 = 8080;

/// AWS IoT Core's publish rate limit per connection, the default of
/// `--max_rate` for `*.amazonaws.com` endpoints.
const AWS_MAX_RATE: u32 = 100;

/// AWS IoT Core's limit on subscriptions per connection.
const MAX_FILTERS: usize = 50;

/// Publishes read ahead from the spool into the MQTT session's queue, to
/// keep the link busy; the rest wait in the spool.
pub const QUEUE_MESSAGES: usize = 1000;
/// ... and their payload bytes (one larger message is always taken).
pub const QUEUE_BYTES: usize = 256 << 10;

/// Everything the daemon needs, checked, built once at start.
#[derive(Debug)]
pub struct Config {
    pub endpoint: String,
    pub port: u16,
    /// The name the broker's certificate must carry (SNI), from `endpoint`.
    pub server_name: ServerName<'static>,
    /// HTTP CONNECT proxy (host, port), if any.
    pub proxy: Option<(String, u16)>,
    /// `None` with `--plaintext`.
    pub tls: Option<Tls>,
    pub session: session::Config,
    pub link: link::Config,
    pub pub_socket: PathBuf,
    pub sub_socket: PathBuf,
    pub socket_mode: u32,
    pub deliver_topic: bool,
    pub spool: store::Config,
    pub local: device::local::Config,
    /// `--thing_name`, or the client id.
    pub thing_name: String,
}

/// The TLS files and the rustls configuration built from them. SIGHUP
/// builds a new `client` from the same files.
#[derive(Debug)]
pub struct Tls {
    pub files: tls::Files,
    pub client: Arc<ClientConfig>,
    /// The device certificate's notAfter (Unix seconds), read with
    /// `client`; `None` if it could not be read. After a reload, refresh it
    /// with `files.leaf_not_after()`.
    pub not_after: Option<u64>,
}

pub fn main(command: &str, args: &[&str]) -> Result<(), Error> {
    let Some(flags) = cli::parse_normalized::<PubsubArgs>(command, args)? else {
        return Ok(());
    };
    let log = start_logging(&flags)?;
    let console = Sink::spawn(Box::new(std::io::stdout()), output::SINK_LIMIT)
        .map_err(|e| runtime!("cannot start the output writer: {e}"))?;
    let result = Config::from_flags(flags).and_then(|config| {
        raise_fd_limit();
        event_loop::run(config, console.clone())
    });
    // What is still queued gets a moment to reach its reader.
    console.drain(EXIT_DRAIN);
    log.drain(EXIT_DRAIN);
    result
}

/// At exit, how long queued output may take to be written: a reader that
/// does not read is not waited for longer.
const EXIT_DRAIN: Duration = Duration::from_secs(1);

/// Raises the soft limit on open descriptors to the hard limit: every
/// publish socket client waiting for its PUBACK holds one.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => log::debug!(
            "open file limit raised from {:?} to {:?}",
            limit.current,
            limit.maximum
        ),
        Err(e) => log::debug!("cannot raise the open file limit: {e}"),
    }
}

impl Config {
    /// Checks every flag and reads every file.
    ///
    /// # Returns
    /// A usage error (exit 2) for a bad flag, a runtime error (exit 1) for a
    /// file that cannot be used.
    pub fn from_flags(flags: PubsubArgs) -> Result<Config, Error> {
        let endpoint = flags.endpoint.clone().ok_or_else(|| {
            usage!(
                "missing --endpoint HOST (for AWS IoT: the device data endpoint, xxxx-ats.iot.REGION.amazonaws.com, shown in the IoT console under Settings)"
            )
        })?;
        if endpoint.is_empty() {
            return Err(usage!("--endpoint is empty"));
        }
        let proxy = match (&flags.proxy_host, flags.proxy_port) {
            (Some(host), port) if !host.is_empty() => {
                Some((host.clone(), port.unwrap_or(DEFAULT_PROXY_PORT)))
            }
            (None, None) => None,
            _ => return Err(usage!("--proxy_port needs --proxy_host HOST")),
        };
        if let Some(text) = &flags.message {
            log::debug!("--message {text:?} is accepted for compatibility and ignored");
        }
        let qos = match flags.qos {
            0 => codec::QoS::AtMostOnce,
            1 => codec::QoS::AtLeastOnce,
            n => {
                return Err(usage!(
                    "--qos {n}: only 0 and 1 are supported (AWS IoT Core has no QoS 2)"
                ));
            }
        };
        if !(1..=MAX_MQTT_PAYLOAD).contains(&flags.max_payload) {
            return Err(usage!(
                "--max_payload {}: must be 1 to {MAX_MQTT_PAYLOAD} (the MQTT limit; AWS IoT takes 131072)",
                flags.max_payload
            ));
        }
        let socket_mode = match &flags.socket_mode {
            None => 0o660,
            Some(text) => u32::from_str_radix(text.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    usage!("--socket_mode {text:?}: expected octal permissions such as 0660")
                })?,
        };
        let client_id = match flags.client_id.clone() {
            Some(id) if id.is_empty() || id.len() > MAX_CLIENT_ID => {
                return Err(usage!("--client_id must be 1 to {MAX_CLIENT_ID} bytes"));
            }
            Some(id) => id,
            None => format!("test-{:016x}", random_u64()),
        };
        let filters = if flags.topic.is_empty() {
            vec!["test/topic".to_owned()]
        } else {
            flags.topic.clone()
        };
        if filters.len() > MAX_FILTERS {
            return Err(usage!(
                "{} topics: AWS IoT Core allows {MAX_FILTERS} subscriptions per connection",
                filters.len()
            ));
        }
        for filter in &filters {
            message::validate_filter(filter).map_err(|e| usage!("--topic: {e}"))?;
        }
        let port = flags.port.unwrap_or(443);
        // AWS IoT Core allows 100 publishes per second per connection.
        let max_rate = flags
            .max_rate
            .unwrap_or(if endpoint.ends_with(".amazonaws.com") {
                AWS_MAX_RATE
            } else {
                0
            });
        if endpoint.ends_with(".amazonaws.com") && !(30..=1200).contains(&flags.keep_alive) {
            log::warn!(
                "--keep_alive {}: AWS IoT Core accepts 30..1200 seconds",
                flags.keep_alive
            );
        }

        let tls = if flags.plaintext {
            log::warn!("--plaintext: no TLS; use this only with a local test broker");
            None
        } else {
            let (Some(cert), Some(key)) = (flags.cert.clone(), flags.key.clone()) else {
                return Err(usage!(
                    "--cert and --key are required (the device certificate and private key from the AWS IoT console); --plaintext only for a local test broker"
                ));
            };
            let files = tls::Files {
                cert,
                key,
                ca: tls::CaSource::choose(flags.ca_file.clone()),
                alpn: port == 443,
            };
            // Read now, so a bad file fails before any traffic.
            let client = files.load().map_err(|e| runtime!("{e}"))?;
            log::debug!("trust anchors: {}", files.ca_description());
            let not_after = files.leaf_not_after();
            Some(Tls {
                files,
                client,
                not_after,
            })
        };
        let server_name = ServerName::try_from(endpoint.clone())
            .map_err(|_| usage!("--endpoint {endpoint:?} is not a valid host name"))?;
        if flags.reconnect_max == 0 {
            return Err(usage!(
                "--reconnect_max 0: give the longest wait between reconnect attempts in seconds (default 120)"
            ));
        }
        if flags.reconnect_min == 0 || flags.reconnect_min > flags.reconnect_max {
            return Err(usage!(
                "--reconnect_min {}: give 1 to --reconnect_max ({}) seconds, the ceiling of the first wait (default 1)",
                flags.reconnect_min,
                flags.reconnect_max
            ));
        }

        let spool = spool_config(&flags)?;
        let thing_name = match flags.thing_name.clone() {
            Some(name) => {
                check_thing_name(&name)?;
                name
            }
            None => client_id.clone(),
        };
        let local = local_config(&flags, &thing_name)?;
        Ok(Config {
            thing_name,
            spool,
            local,
            link: link::Config {
                target: format!("{endpoint}:{port}"),
                count: flags.count,
                reconnect_min: Duration::from_secs(flags.reconnect_min),
                reconnect_max: Duration::from_secs(flags.reconnect_max),
                seed: random_u64(),
            },
            endpoint,
            port,
            server_name,
            proxy,
            tls,
            session: session::Config {
                client_id,
                keep_alive: flags.keep_alive,
                session_expiry: flags.session_expiry,
                filters,
                qos,
                max_payload: flags.max_payload,
                queue_messages: QUEUE_MESSAGES,
                queue_bytes: QUEUE_BYTES,
                max_rate,
            },
            pub_socket: flags.pub_socket,
            sub_socket: flags.sub_socket,
            socket_mode,
            deliver_topic: flags.deliver_topic,
        })
    }
}

/// `--thing_name NAME` (the daemon's, and the device applets'): a usage
/// error unless it is a thing name.
pub(crate) fn check_thing_name(name: &str) -> Result<(), Error> {
    if is_thing_name(name) {
        return Ok(());
    }
    Err(usage!(
        "--thing_name {name:?}: an AWS IoT thing name is 1 to 128 of a-z A-Z 0-9 : _ -"
    ))
}

/// Whether `name` can be an AWS IoT thing's name: 1 to 128 of
/// `[a-zA-Z0-9:_-]` (so also a topic level, a line in a file and a client
/// id).
pub(crate) fn is_thing_name(name: &str) -> bool {
    is_aws_name(name, 128, b":_-")
}

/// AWS IoT's names (things, shadows, job ids, templates): 1 to `max` ASCII
/// letters, digits and the bytes in `also`. None of them can be a `/`,
/// `+` or `#`, so such a name is safe as a topic level.
pub(crate) fn is_aws_name(name: &str, max: usize, also: &[u8]) -> bool {
    (1..=max).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || also.contains(&b))
}

/// `--local_socket`, `--local_listen`, `--local_topics`. By default local
/// clients may use every topic but `$`-topics, and this thing's own shadow
/// and jobs topics, which the device applets (`iotbox shadow`, `iotbox
/// jobs`) need.
fn local_config(flags: &PubsubArgs, thing_name: &str) -> Result<device::local::Config, Error> {
    use device::local::{Config, DEFAULT_SOCKET, MAX_CLIENTS};
    let socket = match flags.local_socket.as_deref() {
        None => Some(PathBuf::from(DEFAULT_SOCKET)),
        Some("none") => None,
        Some("") => return Err(usage!("--local_socket is empty (give a path, or none)")),
        Some(path) => Some(PathBuf::from(path)),
    };
    let listen = match flags.local_listen.as_deref() {
        None => None,
        Some(text) => {
            let addr: std::net::SocketAddr = text.parse().map_err(|_| {
                usage!("--local_listen {text:?}: expected a loopback ADDR:PORT such as 127.0.0.1:1883 or [::1]:1883")
            })?;
            if !addr.ip().is_loopback() {
                return Err(usage!(
                    "--local_listen {addr}: only loopback addresses (127.0.0.1, ::1): the endpoint has no authentication, so whoever reaches it publishes as this device"
                ));
            }
            Some(addr)
        }
    };
    let topics = if flags.local_topics.is_empty() {
        let mut topics = vec!["#".to_owned()];
        // A client id that is no thing name has no thing topics to allow.
        if is_thing_name(thing_name) {
            topics.push(format!("$aws/things/{thing_name}/shadow/#"));
            topics.push(format!("$aws/things/{thing_name}/jobs/#"));
        }
        topics
    } else {
        flags.local_topics.clone()
    };
    for filter in &topics {
        message::validate_filter(filter).map_err(|e| usage!("--local_topics: {e}"))?;
    }
    Ok(Config {
        socket,
        socket_is_default: flags.local_socket.is_none(),
        listen,
        topics,
        max_clients: MAX_CLIENTS,
    })
}

/// `--spool_dir`, `--spool_size`, `--spool_max_age`, `--when_full`.
fn spool_config(flags: &PubsubArgs) -> Result<store::Config, Error> {
    let dir = match flags.spool_dir.as_deref() {
        None => Some(PathBuf::from(store::DEFAULT_DIR)),
        Some("none") => None,
        Some("") => return Err(usage!("--spool_dir is empty (give a directory, or none)")),
        Some(dir) => Some(PathBuf::from(dir)),
    };
    let size = flags.spool_size.unwrap_or(store::DEFAULT_SIZE);
    if size < store::MIN_SIZE {
        return Err(usage!(
            "--spool_size {size}: at least {} bytes (default {})",
            store::MIN_SIZE,
            store::DEFAULT_SIZE
        ));
    }
    let when_full = match flags.when_full.as_deref() {
        None | Some("block") => store::WhenFull::Block,
        Some("drop_oldest") | Some("drop-oldest") => store::WhenFull::DropOldest,
        Some(other) => {
            return Err(usage!(
                "--when_full {other:?}: expected block (stop taking messages) or drop_oldest (keep the newest)"
            ));
        }
    };
    Ok(store::Config {
        dir,
        size,
        max_age: flags.spool_max_age.unwrap_or(store::DEFAULT_MAX_AGE),
        when_full,
        // Records hold messages of either direction: from the publish
        // socket, and from the broker (up to the packet size we allow it).
        max_payload: flags.max_payload.max(session::MAX_INBOUND_PACKET),
    })
}

/// Random bits from the system (through ring, already linked for TLS).
pub(crate) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if crypto::fill_random(&mut bytes).is_err() {
        // No entropy source: fall back to the clock, good enough for an id
        // suffix and jitter.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return nanos ^ u64::from(std::process::id()) << 32;
    }
    u64::from_le_bytes(bytes)
}

/// Log lines go to stderr or `--log_file` (appended), never to stdout,
/// through a [`Sink`] so that a stuck reader never stops the loop.
fn start_logging(flags: &PubsubArgs) -> Result<Sink, Error> {
    let level = match &flags.verbosity {
        None => LevelFilter::Info,
        Some(text) => output::parse_verbosity(text).ok_or_else(|| {
            usage!("--verbosity {text:?}: expected None, Fatal, Error, Warn, Info, Debug or Trace")
        })?,
    };
    let dest: Box<dyn Write + Send> = match &flags.log_file {
        Some(path) => Box::new(
            output::open_log_file(path)
                .map_err(|e| runtime!("cannot open --log_file {}: {e}", path.display()))?,
        ),
        None => Box::new(std::io::stderr()),
    };
    let sink = Sink::spawn(dest, output::SINK_LIMIT)
        .map_err(|e| runtime!("cannot start the log writer: {e}"))?;
    output::init_daemon_logging(level, sink.clone());
    Ok(sink)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argh::FromArgs;

    fn flags(args: &[&str]) -> PubsubArgs {
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let normalized = cli::normalize(&owned);
        let refs: Vec<&str> = normalized.iter().map(String::as_str).collect();
        PubsubArgs::from_args(&["pubsub"], &refs).unwrap()
    }

    #[test]
    fn usage_errors_before_any_file_is_read() {
        let err = Config::from_flags(flags(&[])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--endpoint"));
        let err = Config::from_flags(flags(&["--endpoint", "h"])).unwrap_err();
        assert!(err.to_string().contains("--cert"), "{err}");
        let err = Config::from_flags(flags(&["--endpoint", "h", "--plaintext", "--qos", "2"]))
            .unwrap_err();
        assert!(err.to_string().contains("QoS 2"), "{err}");
        let err = Config::from_flags(flags(&[
            "--endpoint",
            "h",
            "--plaintext",
            "--topic",
            "a/#/b",
        ]))
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Config::from_flags(flags(&[
            "--endpoint",
            "h",
            "--plaintext",
            "--socket_mode",
            "999",
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("octal"), "{err}");
    }

    #[test]
    fn missing_certificate_is_a_runtime_error_naming_the_file() {
        let err = Config::from_flags(flags(&[
            "--endpoint",
            "h",
            "--cert",
            "/nonexistent/c.pem",
            "--key",
            "/nonexistent/k",
        ]))
        .unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
    }

    #[test]
    fn aws_endpoints_are_rate_limited_by_default() {
        let aws = "a1b2c3-ats.iot.ap-northeast-1.amazonaws.com";
        let c = Config::from_flags(flags(&["--endpoint", aws, "--plaintext"])).unwrap();
        assert_eq!(c.session.max_rate, 100);
        let c = Config::from_flags(flags(&[
            "--endpoint",
            aws,
            "--plaintext",
            "--max_rate",
            "0",
        ]))
        .unwrap();
        assert_eq!(c.session.max_rate, 0);
        let c = Config::from_flags(flags(&["--endpoint", "localhost", "--plaintext"])).unwrap();
        assert_eq!(c.session.max_rate, 0);
    }

    #[test]
    fn defaults_follow_the_sdk_sample() {
        let c = Config::from_flags(flags(&["--endpoint", "h", "--plaintext"])).unwrap();
        assert_eq!(c.port, 443);
        assert_eq!(c.session.filters, vec!["test/topic"]);
        assert!(c.session.client_id.starts_with("test-"));
        assert_eq!(c.session.client_id.len(), 5 + 16);
        assert_eq!(c.socket_mode, 0o660);
    }

    #[test]
    fn the_first_reconnect_window_is_one_second_unless_widened() {
        let with = |extra: &[&str]| {
            let mut args = vec!["--endpoint", "h", "--plaintext"];
            args.extend_from_slice(extra);
            Config::from_flags(flags(&args))
        };
        assert_eq!(
            with(&[]).unwrap().link.reconnect_min,
            Duration::from_secs(1)
        );
        let c = with(&["--reconnect_min", "10"]).unwrap();
        assert_eq!(c.link.reconnect_min, Duration::from_secs(10));
        for bad in [&["--reconnect_min", "0"][..], &["--reconnect_min", "200"]] {
            let err = with(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
            assert!(err.to_string().contains("--reconnect_min"), "{err}");
        }
    }

    #[test]
    fn the_local_endpoint_listens_on_loopback_only_and_checks_its_filters() {
        let base = ["--endpoint", "h", "--plaintext"];
        let with = |extra: &[&str]| {
            let mut args = base.to_vec();
            args.extend_from_slice(extra);
            Config::from_flags(flags(&args))
        };
        let c = with(&["--client_id", "raspi2"]).unwrap();
        assert_eq!(c.local.socket, Some(PathBuf::from("/tmp/iotbox_mqtt")));
        assert!(c.local.socket_is_default);
        assert_eq!(c.local.listen, None);
        assert_eq!(
            c.local.topics,
            [
                "#",
                "$aws/things/raspi2/shadow/#",
                "$aws/things/raspi2/jobs/#"
            ]
        );
        let c = with(&["--client_id", "a/b"]).unwrap();
        assert_eq!(c.thing_name, "a/b");
        assert_eq!(c.local.topics, ["#"]);
        let c = with(&["--client_id", "a/b", "--thing_name", "pi-7"]).unwrap();
        assert_eq!(c.local.topics[1], "$aws/things/pi-7/shadow/#");
        let c = with(&["--local_socket", "none", "--local_listen", "[::1]:1883"]).unwrap();
        assert_eq!(c.local.socket, None);
        assert_eq!(c.local.listen, Some("[::1]:1883".parse().unwrap()));
        let c = with(&["--local-socket", "/run/m", "--local_topics", "a/#"]).unwrap();
        assert!(!c.local.socket_is_default);
        assert_eq!(c.local.topics, ["a/#"]);
        for (args, words) in [
            (&["--local_listen", "0.0.0.0:1883"][..], "loopback"),
            (&["--local_listen", "192.168.1.2:1883"][..], "loopback"),
            (&["--local_listen", "1883"][..], "ADDR:PORT"),
            (&["--local_topics", "a/#/b"][..], "--local_topics"),
            (&["--local_socket", ""][..], "empty"),
            (&["--thing_name", "a/b"][..], "thing name"),
            (&["--thing_name", ""][..], "thing name"),
        ] {
            let err = with(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert!(err.to_string().contains(words), "{args:?}: {err}");
        }
    }
}
