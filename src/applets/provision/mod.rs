//! `provision`: fleet provisioning by claim (AWS IoT's "device provisioning
//! MQTT API"), over a short connection of its own made with the claim
//! certificate.
//!
//! 1. Refuse an `--out_dir` that already holds an identity (no `--force`),
//!    make a new key and its certificate request ([`csr`]), stage the key
//!    there ([`identity`]): all before connecting.
//! 2. Connect (TCP, the HTTP proxy's tunnel if any, TLS with the claim
//!    certificate), subscribe to the answers of both calls.
//! 3. `CreateCertificateFromCsr`: the request, for a certificate and its
//!    ownership token.
//! 4. `RegisterThing` with the template, the token and the `--param`s, for
//!    the thing's name.
//! 5. Check the new certificate and key load as the daemon loads them,
//!    rename the files into place, print the thing's name.
//!
//! Exit 1 when the broker rejects a call (its status, code and message are
//! shown) or anything fails, 2 for bad flags, 3 when an answer does not come
//! within `--timeout` (each answer gets that long).

mod csr;
mod identity;

use super::mqtt::{self, Client};
use crate::cli::{self, ProvisionArgs};
use crate::daemon::broker::{crypto, proxy, tls};
use crate::daemon::{DEFAULT_PROXY_PORT, MAX_CLIENT_ID, is_aws_name, is_thing_name};
use crate::error::{Error, runtime, usage};
use crate::json::{self, Value};
use crate::output::say;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const CREATE_FROM_CSR: &str = "$aws/certificates/create-from-csr/json";

/// AWS's keep-alive range starts at 30 s; the connection lasts seconds.
const KEEP_ALIVE: u16 = 60;

/// What the flags ask for, checked.
#[derive(Debug)]
struct Plan {
    endpoint: String,
    port: u16,
    proxy: Option<(String, u16)>,
    files: tls::Files,
    client_id: String,
    template: String,
    params: Vec<(String, String)>,
    out_dir: PathBuf,
    force: bool,
    timeout: Duration,
}

pub fn main(command: &str, args: &[&str]) -> Result<(), Error> {
    let Some(flags) = cli::parse_normalized::<ProvisionArgs>(command, args)? else {
        return Ok(());
    };
    crate::output::init_tool_logging();
    let plan = Plan::from_flags(flags)?;
    let thing_name = provision(&plan)?;
    say(&thing_name);
    Ok(())
}

impl Plan {
    fn from_flags(flags: ProvisionArgs) -> Result<Plan, Error> {
        let endpoint = flags
            .endpoint
            .filter(|e| !e.is_empty())
            .ok_or_else(|| usage!("missing --endpoint HOST (for AWS IoT: the device data endpoint, xxxx-ats.iot.REGION.amazonaws.com)"))?;
        ServerName::try_from(endpoint.clone())
            .map_err(|_| usage!("--endpoint {endpoint:?} is not a valid host name"))?;
        let (Some(cert), Some(key)) = (flags.claim_cert, flags.claim_key) else {
            return Err(usage!(
                "--claim_cert and --claim_key are required (the claim certificate and key made with the provisioning template)"
            ));
        };
        let template = flags
            .template
            .ok_or_else(|| usage!("missing --template NAME (the provisioning template)"))?;
        // AWS's pattern for template names; it also keeps the topic clean.
        if !is_aws_name(&template, 36, b"_-") {
            return Err(usage!(
                "--template {template:?}: 1 to 36 letters, digits, _ or -"
            ));
        }
        let mut params: Vec<(String, String)> = Vec::new();
        for text in &flags.param {
            let Some((k, v)) = text.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                return Err(usage!("--param {text:?}: expected KEY=VALUE"));
            };
            if params.iter().any(|(have, _)| have == k) {
                return Err(usage!("--param {k} is given twice"));
            }
            params.push((k.to_owned(), v.to_owned()));
        }
        let proxy = match (flags.proxy_host, flags.proxy_port) {
            (Some(host), port) if !host.is_empty() => {
                Some((host, port.unwrap_or(DEFAULT_PROXY_PORT)))
            }
            (None, None) => None,
            _ => return Err(usage!("--proxy_port needs --proxy_host HOST")),
        };
        let client_id = match flags.client_id {
            Some(id) if id.is_empty() || id.len() > MAX_CLIENT_ID => {
                return Err(usage!("--client_id must be 1 to {MAX_CLIENT_ID} bytes"));
            }
            Some(id) => id,
            None => format!("provision-{:016x}", random_u64()),
        };
        if flags.timeout == 0 {
            return Err(usage!(
                "--timeout 0: give the seconds to wait for each answer"
            ));
        }
        let port = flags.port.unwrap_or(443);
        Ok(Plan {
            files: tls::Files {
                cert,
                key,
                ca: tls::CaSource::choose(flags.ca_file),
                alpn: port == 443,
            },
            endpoint,
            port,
            proxy,
            client_id,
            template,
            params,
            out_dir: flags.out_dir,
            force: flags.force,
            timeout: Duration::from_secs(flags.timeout),
        })
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// "the broker at HOST:PORT", for messages.
    fn peer(&self) -> String {
        format!("the broker at {}:{}", self.endpoint, self.port)
    }
}

/// Steps 1 to 5 of the module's list; the thing's name.
fn provision(plan: &Plan) -> Result<String, Error> {
    identity::check_free(&plan.out_dir, plan.force)?;
    let config = plan.files.load().map_err(|e| runtime!("{e}"))?;
    let cn = plan
        .params
        .iter()
        .find(|(k, _)| k == "ThingName")
        .map_or(plan.client_id.as_str(), |(_, v)| v.as_str());
    let request = csr::generate(cn).map_err(|e| runtime!("{e}"))?;
    let mut staged = identity::Staged::begin(&plan.out_dir, &request.key_pem)?;

    let stream = connect(plan, config)?;
    let mut client = Client::handshake(
        stream,
        plan.peer(),
        &plan.client_id,
        KEEP_ALIVE,
        plan.deadline(),
    )?;
    let register = format!(
        "$aws/provisioning-templates/{}/provision/json",
        plan.template
    );
    let answers: Vec<String> = [CREATE_FROM_CSR, register.as_str()]
        .iter()
        .flat_map(|t| [format!("{t}/accepted"), format!("{t}/rejected")])
        .collect();
    client.subscribe(&answers, plan.deadline())?;

    let body = json::Object::default()
        .string("certificateSigningRequest", &request.csr_pem)
        .finish();
    let created = call(
        &mut client,
        plan,
        CREATE_FROM_CSR,
        &body,
        "CreateCertificateFromCsr",
    )?;
    let field = |name: &str| {
        created.get(name).and_then(Value::as_str).ok_or_else(|| {
            runtime!(
                "CreateCertificateFromCsr's answer has no {name}: {}",
                created.to_json()
            )
        })
    };
    let cert_pem = field("certificatePem")?;
    let token = field("certificateOwnershipToken")?;
    log::info!(
        "certificate {}",
        created
            .get("certificateId")
            .and_then(Value::as_str)
            .unwrap_or("(no id)")
    );
    staged.add_cert(cert_pem)?;

    let params = plan
        .params
        .iter()
        .map(|(k, v)| (k.clone(), Value::Str(v.clone())))
        .collect();
    let body = Value::Object(vec![
        (
            "certificateOwnershipToken".into(),
            Value::Str(token.to_owned()),
        ),
        ("parameters".into(), Value::Object(params)),
    ])
    .to_json();
    let what = format!("RegisterThing (template {})", plan.template);
    let registered = call(&mut client, plan, &register, &body, &what)?;
    client.disconnect();
    let thing_name = registered
        .get("thingName")
        .and_then(Value::as_str)
        .filter(|n| is_thing_name(n))
        .ok_or_else(|| {
            runtime!(
                "{what}'s answer has no valid thingName: {}",
                registered.to_json()
            )
        })?
        .to_owned();
    staged.add_thing_name(&thing_name)?;

    // The daemon must be able to use what it is given: the same loading,
    // which also checks the certificate is the key's.
    let check = tls::Files {
        cert: staged
            .staged(identity::CERT_FILE)
            .unwrap_or(&plan.out_dir)
            .into(),
        key: staged
            .staged(identity::KEY_FILE)
            .unwrap_or(&plan.out_dir)
            .into(),
        ..plan.files.clone()
    };
    check
        .load()
        .map_err(|e| runtime!("the new certificate cannot be used: {e}"))?;
    staged.commit(plan.force)?;
    Ok(thing_name)
}

/// Publishes `body` to `topic` and waits for `topic/accepted` (its JSON
/// object) or `topic/rejected` (an error naming AWS's status, code and
/// message).
fn call<S: mqtt::Stream>(
    client: &mut Client<S>,
    plan: &Plan,
    topic: &str,
    body: &str,
    what: &str,
) -> Result<Value, Error> {
    let deadline = plan.deadline();
    client.publish(topic, body.as_bytes(), deadline)?;
    let accepted = format!("{topic}/accepted");
    let rejected = format!("{topic}/rejected");
    while let Some(message) = client.next_message(Some(deadline))? {
        if message.topic != accepted && message.topic != rejected {
            continue;
        }
        let text = message.text()?;
        let value = json::parse(text)
            .filter(|v| matches!(v, Value::Object(_)))
            .ok_or_else(|| {
                runtime!(
                    "{what}: the answer on {} is not a JSON object: {text}",
                    message.topic
                )
            })?;
        if message.topic == accepted {
            return Ok(value);
        }
        return Err(rejection(what, &value));
    }
    Err(Error::NotConfirmed(format!(
        "no answer to {what} from {} within {} s",
        plan.peer(),
        plan.timeout.as_secs()
    )))
}

/// AWS's error answer: `{"statusCode": 400, "errorCode": "...",
/// "errorMessage": "..."}`, in one line.
fn rejection(what: &str, answer: &Value) -> Error {
    let part = |name: &str| answer.get(name).map(Value::to_string);
    match (part("statusCode"), part("errorCode"), part("errorMessage")) {
        (None, None, None) => runtime!("{what} was rejected: {}", answer.to_json()),
        (status, code, message) => runtime!(
            "{what} was rejected: {} {}: {}",
            status.unwrap_or_default(),
            code.unwrap_or_default(),
            message.unwrap_or_default()
        ),
    }
}

// --- the connection -------------------------------------------------------

/// TLS over blocking TCP, for [`mqtt::Client`]. Errors of the TLS layer
/// (an alert after the handshake: TLS 1.3 brokers refuse a client
/// certificate then) come out explained.
struct Tls {
    stream: StreamOwned<ClientConnection, TcpStream>,
}

impl Read for Tls {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf).map_err(explain_io)
    }
}

impl Write for Tls {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf).map_err(explain_io)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush().map_err(explain_io)
    }
}

impl mqtt::Stream for Tls {
    fn set_read_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        self.stream.sock.set_read_timeout(limit)
    }
}

/// The rustls error inside an I/O error, if that is what it is.
fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

fn explain_io(e: io::Error) -> io::Error {
    match tls_error(&e) {
        Some(tls) => io::Error::other(explain(tls, "", None)),
        None => e,
    }
}

/// A TLS error in words; a refused certificate is the claim's.
fn explain(e: &rustls::Error, endpoint: &str, files: Option<&tls::Files>) -> String {
    match e {
        rustls::Error::AlertReceived(alert) if tls::is_certificate_error(e) => format!(
            "the broker refused the claim certificate (TLS alert: {alert:?}): check --claim_cert and --claim_key, and that the claim certificate is active, with a policy that allows provisioning"
        ),
        _ => tls::explain(e, endpoint, files, SystemTime::now()),
    }
}

/// TCP to the broker (or through the proxy's tunnel), then the TLS
/// handshake, each within the timeout.
fn connect(plan: &Plan, config: Arc<rustls::ClientConfig>) -> Result<Tls, Error> {
    let deadline = plan.deadline();
    let (host, port) = match &plan.proxy {
        Some((host, port)) => (host.as_str(), *port),
        None => (plan.endpoint.as_str(), plan.port),
    };
    let mut tcp = tcp_connect(host, port, deadline)?;
    tcp.set_write_timeout(Some(plan.timeout))
        .map_err(|e| runtime!("cannot set up the connection to {host}:{port}: {e}"))?;
    if plan.proxy.is_some() {
        tunnel(&mut tcp, plan, host, port, deadline)?;
    }
    let name = ServerName::try_from(plan.endpoint.clone())
        .map_err(|_| usage!("--endpoint {:?} is not a valid host name", plan.endpoint))?;
    let mut conn = ClientConnection::new(config, name).map_err(|e| runtime!("TLS setup: {e}"))?;
    while conn.is_handshaking() {
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::NotConfirmed(format!(
                "no answer from {} to the TLS handshake within {} s",
                plan.peer(),
                plan.timeout.as_secs()
            )));
        }
        let _ = tcp.set_read_timeout(Some(deadline - now));
        match conn.complete_io(&mut tcp) {
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                return Err(match tls_error(&e) {
                    Some(tls) => runtime!(
                        "{}: {}",
                        plan.peer(),
                        explain(tls, &plan.endpoint, Some(&plan.files))
                    ),
                    None if e.kind() == io::ErrorKind::UnexpectedEof => runtime!(
                        "{} closed the connection during the TLS handshake (is it a TLS port? was the claim certificate refused?)",
                        plan.peer()
                    ),
                    None => runtime!("TLS handshake with {}: {e}", plan.peer()),
                });
            }
        }
    }
    Ok(Tls {
        stream: StreamOwned::new(conn, tcp),
    })
}

fn is_timeout(e: &io::Error) -> bool {
    crate::sys::would_block(e) || e.kind() == io::ErrorKind::TimedOut || crate::sys::interrupted(e)
}

/// Tries each address of `host` in turn until one answers.
fn tcp_connect(host: &str, port: u16, deadline: Instant) -> Result<TcpStream, Error> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| runtime!("cannot resolve {host}: {e}"))?;
    let mut last = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => runtime!("cannot connect to {host}:{port}: {e}"),
        None => runtime!("cannot connect to {host}:{port}: no address"),
    })
}

/// HTTP CONNECT through the proxy `tcp` is connected to.
fn tunnel(
    tcp: &mut TcpStream,
    plan: &Plan,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<(), Error> {
    let proxy_name = format!("the proxy {host}:{port}");
    tcp.write_all(&proxy::connect_request(&plan.endpoint, plan.port))
        .map_err(|e| runtime!("cannot write to {proxy_name}: {e}"))?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match proxy::parse_reply(&reply) {
            // The broker does not speak before the client's hello.
            proxy::Reply::Established { header_len } if header_len == reply.len() => {
                return Ok(());
            }
            proxy::Reply::Established { .. } => {
                return Err(runtime!(
                    "{proxy_name} sent bytes of the tunnel before the TLS handshake began"
                ));
            }
            proxy::Reply::Refused(why) => return Err(runtime!("{proxy_name}: {why}")),
            proxy::Reply::Incomplete => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::NotConfirmed(format!(
                "no answer from {proxy_name} to CONNECT within {} s",
                plan.timeout.as_secs()
            )));
        }
        let _ = tcp.set_read_timeout(Some(deadline - now));
        // One byte past the header would be the broker's: read only up to
        // what the header still needs is not knowable, so read what comes.
        match tcp.read(&mut chunk) {
            Ok(0) => return Err(runtime!("{proxy_name} closed the connection")),
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(runtime!("cannot read from {proxy_name}: {e}")),
        }
    }
}

/// Random bits from the system, through *ring*; the clock without it.
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if crypto::fill_random(&mut bytes).is_err() {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return nanos ^ u64::from(std::process::id()) << 32;
    }
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Result<Plan, Error> {
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let normalized = cli::normalize(&owned);
        let refs: Vec<&str> = normalized.iter().map(String::as_str).collect();
        let parsed = cli::parse::<ProvisionArgs>("iotbox provision", &refs)?.unwrap();
        Plan::from_flags(parsed)
    }

    const BASE: &[&str] = &[
        "--endpoint",
        "a-ats.iot.eu-west-1.amazonaws.com",
        "--claim_cert",
        "c.pem",
        "--claim_key",
        "c.key",
        "--template",
        "Fleet_1",
    ];

    fn with(extra: &[&str]) -> Result<Plan, Error> {
        flags(&[BASE, extra].concat())
    }

    #[test]
    fn defaults_and_spellings() {
        let plan = with(&["--param", "ThingName=pump-7", "--param=Serial=a=b"]).unwrap();
        assert_eq!(plan.port, 443);
        assert!(plan.files.alpn);
        assert_eq!(plan.out_dir, PathBuf::from("/etc/iotbox"));
        assert_eq!(plan.timeout, Duration::from_secs(10));
        assert!(plan.client_id.starts_with("provision-") && plan.client_id.len() == 26);
        assert_eq!(
            plan.params,
            [
                ("ThingName".to_owned(), "pump-7".to_owned()),
                ("Serial".to_owned(), "a=b".to_owned())
            ]
        );
        let plan = with(&[
            "--port_override=8883",
            "--client_id",
            "claim-1",
            "--out_dir",
            "/tmp/x",
            "--proxy_host",
            "proxy",
            "--force",
        ])
        .unwrap();
        assert_eq!((plan.port, plan.files.alpn), (8883, false));
        assert_eq!(plan.client_id, "claim-1");
        assert_eq!(plan.out_dir, PathBuf::from("/tmp/x"));
        assert_eq!(plan.proxy, Some(("proxy".to_owned(), 8080)));
        assert!(plan.force);
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for (extra, says) in [
            (&["--param", "novalue"][..], "KEY=VALUE"),
            (&["--param", "=v"], "KEY=VALUE"),
            (&["--param", "a=1", "--param", "a=2"], "twice"),
            (&["--proxy_port", "3128"], "--proxy_host"),
            (&["--timeout", "0"], "--timeout"),
            (&["--client_id", ""], "--client_id"),
        ] {
            let err = with(extra).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{extra:?}");
            assert!(err.to_string().contains(says), "{extra:?}: {err}");
        }
        for template in ["a/b", "#", "", &"t".repeat(37)] {
            let mut args = BASE.to_vec();
            args[7] = template;
            assert_eq!(flags(&args).unwrap_err().exit_code(), 2, "{template:?}");
        }
        let err = flags(&BASE[..6]).unwrap_err();
        assert!(err.to_string().contains("--template"), "{err}");
        let err = flags(&BASE[2..]).unwrap_err();
        assert!(err.to_string().contains("--endpoint"), "{err}");
        let err = flags(&[&BASE[..2], &BASE[4..]].concat()).unwrap_err();
        assert!(err.to_string().contains("--claim_cert"), "{err}");
    }

    #[test]
    fn rejections_name_status_code_and_message() {
        let answer = json::parse(
            r#"{"statusCode":400,"errorCode":"InvalidParameters","errorMessage":"Missing parameter ThingName"}"#,
        )
        .unwrap();
        let err = rejection("RegisterThing (template t)", &answer);
        assert_eq!(err.exit_code(), 1);
        assert_eq!(
            err.to_string(),
            "RegisterThing (template t) was rejected: 400 InvalidParameters: Missing parameter ThingName"
        );
        let odd = json::parse(r#"{"why":"x"}"#).unwrap();
        assert_eq!(
            rejection("X", &odd).to_string(),
            r#"X was rejected: {"why":"x"}"#
        );
    }

    #[test]
    fn thing_names_follow_aws_pattern() {
        assert!(is_thing_name("pump-7:a_b"));
        assert!(!is_thing_name(""));
        assert!(!is_thing_name("a b"));
        assert!(!is_thing_name("a\nb"));
        assert!(!is_thing_name(&"x".repeat(129)));
    }

    #[test]
    fn an_existing_identity_is_refused_before_any_connection() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(identity::CERT_FILE), "old").unwrap();
        // Port 1 on loopback: were it tried, the error would say "cannot
        // connect" instead.
        let out_dir = dir.path().to_str().unwrap();
        let plan = flags(&[
            "--endpoint",
            "127.0.0.1",
            "--port",
            "1",
            "--claim_cert",
            "/nonexistent/c.pem",
            "--claim_key",
            "/nonexistent/c.key",
            "--template",
            "t",
            "--out_dir",
            out_dir,
        ])
        .unwrap();
        let err = provision(&plan).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
