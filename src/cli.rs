//! Every applet's flags, in one place.
//!
//! The daemon's flags keep the AWS IoT SDK sample's names (`--client_id`,
//! `--ca_file`, `--port_override`, ...) so that existing command lines work
//! unchanged. argh allows neither underscores in flag names nor aliases nor
//! `--flag=value`, so its flags are declared with dashes, [`normalize`]
//! rewrites the sample's spellings before argh sees them (both spellings
//! work), and [`sample_spelling`] turns the usage text back.

use crate::error::Error;
use argh::FromArgs;
use std::path::PathBuf;

/// `iotbox pubsub` / `mqtt5_pubsub`: keep one MQTT 5 connection to the broker
/// and bridge it to two UNIX sockets.
#[derive(FromArgs, Debug, Default)]
pub struct PubsubArgs {
    /// broker host name (AWS: xxxx-ats.iot.REGION.amazonaws.com)
    #[argh(option)]
    pub endpoint: Option<String>,
    /// device certificate, PEM (a chain is allowed)
    #[argh(option)]
    pub cert: Option<PathBuf>,
    /// private key, PEM (PKCS#8, PKCS#1 RSA or SEC1 EC)
    #[argh(option)]
    pub key: Option<PathBuf>,
    /// trust anchors, PEM (default: /etc/ssl/certs/ca-certificates.crt if it
    /// exists, else the built-in Amazon Root CA 1 and 3)
    #[argh(option, long = "ca-file")]
    pub ca_file: Option<PathBuf>,
    /// MQTT client id (default: test- and 16 random hex digits)
    #[argh(option, long = "client-id")]
    pub client_id: Option<String>,
    /// topic filter to subscribe to; repeatable, + and # allowed
    /// (default: test/topic)
    #[argh(option)]
    pub topic: Vec<String>,
    /// broker port (alias --port_override; default 443, with ALPN
    /// x-amzn-mqtt-ca; 8883 is classic MQTT over TLS)
    #[argh(option)]
    pub port: Option<u16>,
    /// stop after N publishes from the socket (default 0: run forever)
    #[argh(option, default = "0")]
    pub count: u64,
    /// accepted for compatibility with the SDK sample; ignored
    #[argh(option)]
    pub message: Option<String>,
    /// HTTP CONNECT proxy to connect through
    #[argh(option, long = "proxy-host")]
    pub proxy_host: Option<String>,
    /// port of the HTTP CONNECT proxy (default 8080)
    #[argh(option, long = "proxy-port")]
    pub proxy_port: Option<u16>,
    /// one of None, Fatal, Error, Warn, Info (default), Debug, Trace;
    /// RUST_LOG overrides
    #[argh(option)]
    pub verbosity: Option<String>,
    /// append log lines to this file instead of stderr
    #[argh(option, long = "log-file")]
    pub log_file: Option<PathBuf>,
    /// publish socket to listen on (default /tmp/aws_socket_smsg)
    #[argh(
        option,
        long = "pub-socket",
        default = "PathBuf::from(\"/tmp/aws_socket_smsg\")"
    )]
    pub pub_socket: PathBuf,
    /// delivery socket to push received messages to (default
    /// /tmp/aws_socket_rmsg)
    #[argh(
        option,
        long = "sub-socket",
        default = "PathBuf::from(\"/tmp/aws_socket_rmsg\")"
    )]
    pub sub_socket: PathBuf,
    /// permissions of the publish socket, octal (default 0660)
    #[argh(option, long = "socket-mode")]
    pub socket_mode: Option<String>,
    /// quality of service of subscriptions and publishes: 0 or 1
    /// (default 1)
    #[argh(option, default = "1")]
    pub qos: u8,
    /// MQTT keep-alive in seconds (default 60; AWS accepts 30..1200)
    #[argh(option, long = "keep-alive", default = "60")]
    pub keep_alive: u16,
    /// seconds the broker keeps the session after a disconnect (default 0)
    #[argh(option, long = "session-expiry", default = "0")]
    pub session_expiry: u32,
    /// publishes per second to the broker, 0 for no limit (default 100 for
    /// *.amazonaws.com, AWS IoT's limit per connection; else 0)
    #[argh(option, long = "max-rate")]
    pub max_rate: Option<u32>,
    /// longest wait in seconds between reconnect attempts (default 120);
    /// each wait is random up to a ceiling that doubles from
    /// --reconnect_min to this
    #[argh(option, long = "reconnect-max", default = "120")]
    pub reconnect_max: u64,
    /// the ceiling in seconds of the first wait after the connection is
    /// lost (default 1); a large fleet spreads its reconnects over a longer
    /// first window with a larger one
    #[argh(option, long = "reconnect-min", default = "1")]
    pub reconnect_min: u64,
    /// largest payload accepted from the publish socket (default 131072)
    #[argh(option, long = "max-payload", default = "131072")]
    pub max_payload: usize,
    /// where accepted messages are kept until done, both directions
    /// (default /var/lib/iotbox; none: in memory only)
    #[argh(option, long = "spool-dir")]
    pub spool_dir: Option<String>,
    /// largest size of the spool in bytes (default 67108864, 64 MiB)
    #[argh(option, long = "spool-size")]
    pub spool_size: Option<u64>,
    /// seconds a message may wait in the spool, 0 for no limit (default
    /// 604800, a week)
    #[argh(option, long = "spool-max-age")]
    pub spool_max_age: Option<u64>,
    /// when the spool is full: block (stop taking new messages; the
    /// default) or drop_oldest (keep the newest, count what is dropped)
    #[argh(option, long = "when-full")]
    pub when_full: Option<String>,
    /// the AWS IoT thing this device is, for `iotbox status` and the
    /// device applets (default: the client id)
    #[argh(option, long = "thing-name")]
    pub thing_name: Option<String>,
    /// MQTT endpoint for local programs, a UNIX socket (default
    /// /tmp/iotbox_mqtt; none: off)
    #[argh(option, long = "local-socket")]
    pub local_socket: Option<String>,
    /// MQTT endpoint for local programs over TCP, a loopback ADDR:PORT
    /// such as 127.0.0.1:1883 (default: off)
    #[argh(option, long = "local-listen")]
    pub local_listen: Option<String>,
    /// topic filter local MQTT clients may publish and subscribe to;
    /// repeatable (default: #, every topic but $-topics, and this thing's
    /// $aws/things/THING/shadow/# and $aws/things/THING/jobs/#)
    #[argh(option, long = "local-topics")]
    pub local_topics: Vec<String>,
    /// write topic\npayload to the delivery socket instead of the payload only
    #[argh(switch, long = "deliver-topic")]
    pub deliver_topic: bool,
    /// plain TCP without TLS, for local test brokers only
    #[argh(switch)]
    pub plaintext: bool,
}

/// `iotbox send SOCKET FILE`: publish one message file through the daemon.
#[derive(FromArgs, Debug)]
pub struct SendArgs {
    /// seconds to wait for the broker's confirmation (default 10)
    #[argh(option, default = "10")]
    pub timeout: u64,
    /// the daemon's publish socket, e.g. /tmp/aws_socket_smsg
    #[argh(positional)]
    pub socket: PathBuf,
    /// message file: topic on the first line, payload after it; - for stdin
    #[argh(positional)]
    pub file: PathBuf,
}

/// `iotbox spool DIR`: what waits in a spool directory (no daemon needed).
#[derive(FromArgs, Debug)]
pub struct SpoolArgs {
    /// the daemon's --spool_dir (default /var/lib/iotbox)
    #[argh(positional, default = "PathBuf::from(\"/var/lib/iotbox\")")]
    pub dir: PathBuf,
}

/// `iotbox status`: the running daemon's state, from its local endpoint.
#[derive(FromArgs, Debug)]
pub struct StatusArgs {
    /// the daemon's --local_socket (default /tmp/iotbox_mqtt)
    #[argh(option, default = "PathBuf::from(\"/tmp/iotbox_mqtt\")")]
    pub socket: PathBuf,
    /// seconds to wait for the answer (default 10; exit 3 without one)
    #[argh(option, default = "10")]
    pub timeout: u64,
    /// print the daemon's JSON object as it is
    #[argh(switch)]
    pub json: bool,
}

/// `iotbox shadow get|update|delete|watch`: this thing's device shadow,
/// through the daemon.
#[derive(FromArgs, Debug)]
pub struct ShadowArgs {
    /// a named shadow (default: the classic, unnamed one)
    #[argh(option)]
    pub name: Option<String>,
    /// the thing (default: the daemon's --thing_name, asked over the socket)
    #[argh(option, long = "thing-name")]
    pub thing_name: Option<String>,
    /// the daemon's --local_socket (default /tmp/iotbox_mqtt)
    #[argh(option, default = "PathBuf::from(\"/tmp/iotbox_mqtt\")")]
    pub socket: PathBuf,
    /// seconds to wait for the answer, from connecting on (default 10;
    /// exit 3 without one)
    #[argh(option, default = "10")]
    pub timeout: u64,
    /// get, update, delete or watch
    #[argh(positional)]
    pub action: String,
    /// update: the JSON document, or - to read it from stdin
    #[argh(positional)]
    pub document: Option<String>,
}

/// `iotbox jobs --exec HANDLER`: run this thing's AWS IoT jobs, one at a
/// time, through the daemon.
#[derive(FromArgs, Debug)]
pub struct JobsArgs {
    /// the handler, run by /bin/sh -c with the job document on stdin and
    /// IOTBOX_JOB_ID, IOTBOX_THING_NAME set; exit 0 means SUCCEEDED
    #[argh(option)]
    pub exec: String,
    /// seconds a handler may run before its process group is killed and
    /// the job FAILED, 0 for no limit (default 3600)
    #[argh(option, default = "3600")]
    pub timeout: u64,
    /// the thing (default: the daemon's --thing_name, asked over the socket)
    #[argh(option, long = "thing-name")]
    pub thing_name: Option<String>,
    /// the daemon's --local_socket (default /tmp/iotbox_mqtt)
    #[argh(option, default = "PathBuf::from(\"/tmp/iotbox_mqtt\")")]
    pub socket: PathBuf,
}

/// `iotbox recv SOCKET COUNT`: listen on SOCKET and print COUNT messages.
#[derive(FromArgs, Debug)]
pub struct RecvArgs {
    /// messages carry their topic (pubsub --deliver_topic): print
    /// "Topic: TOPIC" before the payload
    #[argh(switch)]
    pub topic: bool,
    /// run /bin/sh -c CMD for each message, payload on its stdin,
    /// IOTBOX_TOPIC set when known
    #[argh(option)]
    pub exec: Option<String>,
    /// print the payloads only, nothing else (for pipes)
    #[argh(switch)]
    pub raw: bool,
    /// the delivery socket to listen on, e.g. /tmp/aws_socket_rmsg
    #[argh(positional)]
    pub socket: PathBuf,
    /// how many messages to print, 0 for no limit
    #[argh(positional)]
    pub count: u64,
}

/// Rewrites the SDK sample's spellings that argh cannot express:
/// `--client_id` becomes `--client-id`, `--flag=value` becomes
/// `--flag value`, `--port_override` becomes `--port`, and `--is_ci` (with
/// or without a value) is dropped.
pub fn normalize(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
            _ => (arg.as_str(), None),
        };
        match flag {
            "--is_ci" | "--is-ci" => {
                log::debug!("--is_ci is accepted for compatibility and ignored");
                if inline.is_none() && iter.peek().is_some_and(|next| !next.starts_with("--")) {
                    iter.next();
                }
                continue;
            }
            "--port_override" | "--port-override" => out.push("--port".to_owned()),
            _ if flag.starts_with("--") => out.push(flag.replace('_', "-")),
            _ => out.push(flag.to_owned()),
        }
        if let Some(value) = inline {
            out.push(value.to_owned());
        }
    }
    out
}

/// argh's usage text with the SDK sample's underscore spellings, the ones
/// users type: `--client-id` is shown as `--client_id`.
pub fn sample_spelling(usage: &str) -> String {
    usage
        .split_inclusive(char::is_whitespace)
        .map(|word| {
            // The usage line brackets its flags: "[--client-id <client-id>]".
            let open = word.len() - word.trim_start_matches('[').len();
            match word[open..].strip_prefix("--") {
                Some(rest) => format!("{}--{}", &word[..open], rest.replace('-', "_")),
                None => word.to_owned(),
            }
        })
        .collect()
}

/// [`parse`] after [`normalize`]: for the applets whose flags have
/// underscores in their names (`--client_id`, `--thing_name`).
pub fn parse_normalized<T: FromArgs>(command: &str, args: &[&str]) -> Result<Option<T>, Error> {
    let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let normalized = normalize(&owned);
    let refs: Vec<&str> = normalized.iter().map(String::as_str).collect();
    parse(command, &refs)
}

/// Parses an applet's arguments with argh.
///
/// # Returns
/// `Ok(None)` when `--help` was asked for (the usage is already printed),
/// the flags otherwise, or a usage error (exit 2) with argh's message.
pub fn parse<T: FromArgs>(command: &str, args: &[&str]) -> Result<Option<T>, Error> {
    match T::from_args(&[command], args) {
        Ok(flags) => Ok(Some(flags)),
        Err(early) if early.status.is_ok() => {
            crate::output::say(sample_spelling(&early.output).trim_end());
            Ok(None)
        }
        Err(early) => Err(Error::Usage(format!(
            "{}
Run '{command} --help' for the flags.",
            early.output.trim_end()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sample_spellings_are_normalized() {
        let got = normalize(&strings(&[
            "--port_override=8883",
            "--is_ci",
            "true",
            "--client_id",
            "x",
            "--is_ci",
            "--topic=a/b",
        ]));
        assert_eq!(
            got,
            strings(&["--port", "8883", "--client-id", "x", "--topic", "a/b"])
        );
    }

    #[test]
    fn usage_shows_underscores() {
        assert_eq!(
            sample_spelling("  --client-id   MQTT id\n  --ca-file x"),
            "  --client_id   MQTT id\n  --ca_file x"
        );
        assert_eq!(
            sample_spelling("Usage: p [--ca-file <ca-file>] [--deliver-topic] <socket-path>"),
            "Usage: p [--ca_file <ca-file>] [--deliver_topic] <socket-path>"
        );
    }

    #[test]
    fn howto_command_line_parses() {
        let args = normalize(&strings(&[
            "--endpoint",
            "aqxxxx-ats.iot.ap-northeast-1.amazonaws.com",
            "--cert",
            "raspi2-test.cert.pem",
            "--key",
            "raspi2-test.private.key",
            "--client_id",
            "basicPubSub",
            "--topic",
            "sdk/test/python",
        ]));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let parsed = PubsubArgs::from_args(&["mqtt5_pubsub"], &refs).unwrap();
        assert_eq!(parsed.client_id.as_deref(), Some("basicPubSub"));
        assert_eq!(parsed.topic, vec!["sdk/test/python"]);
        assert_eq!(parsed.qos, 1);
        assert_eq!(parsed.pub_socket, PathBuf::from("/tmp/aws_socket_smsg"));
        assert_eq!(parsed.sub_socket, PathBuf::from("/tmp/aws_socket_rmsg"));
    }
}

/// `iotbox provision`: fleet provisioning by claim. A new key and CSR made
/// here, a certificate and a thing from AWS IoT, written to --out_dir.
#[derive(FromArgs, Debug)]
pub struct ProvisionArgs {
    /// broker host name (AWS: xxxx-ats.iot.REGION.amazonaws.com)
    #[argh(option)]
    pub endpoint: Option<String>,
    /// the claim certificate, PEM (from the provisioning template's setup)
    #[argh(option, long = "claim-cert")]
    pub claim_cert: Option<PathBuf>,
    /// the claim certificate's private key, PEM
    #[argh(option, long = "claim-key")]
    pub claim_key: Option<PathBuf>,
    /// the provisioning template's name
    #[argh(option)]
    pub template: Option<String>,
    /// a template parameter, KEY=VALUE; repeatable (ThingName=... also
    /// names the certificate request)
    #[argh(option)]
    pub param: Vec<String>,
    /// where the new identity goes: device.cert.pem, device.private.key,
    /// thing_name (default /etc/iotbox)
    #[argh(option, long = "out-dir", default = "PathBuf::from(\"/etc/iotbox\")")]
    pub out_dir: PathBuf,
    /// replace an identity already in --out_dir
    #[argh(switch)]
    pub force: bool,
    /// trust anchors, PEM (default: /etc/ssl/certs/ca-certificates.crt if it
    /// exists, else the built-in Amazon Root CA 1 and 3)
    #[argh(option, long = "ca-file")]
    pub ca_file: Option<PathBuf>,
    /// MQTT client id for the claim's connection (default: provision- and
    /// 16 random hex digits)
    #[argh(option, long = "client-id")]
    pub client_id: Option<String>,
    /// broker port (alias --port_override; default 443, with ALPN
    /// x-amzn-mqtt-ca; 8883 is classic MQTT over TLS)
    #[argh(option)]
    pub port: Option<u16>,
    /// HTTP CONNECT proxy to connect through
    #[argh(option, long = "proxy-host")]
    pub proxy_host: Option<String>,
    /// port of the HTTP CONNECT proxy (default 8080)
    #[argh(option, long = "proxy-port")]
    pub proxy_port: Option<u16>,
    /// seconds to wait for each answer (default 10; exit 3 without one)
    #[argh(option, default = "10")]
    pub timeout: u64,
}
