//! The local MQTT endpoint end to end: the real binary against a real
//! mosquitto with mutual TLS on 127.0.0.1, and real local clients talking
//! to the daemon over its UNIX socket (`--local_socket`, the harness's
//! `DIR/mqtt`) and over loopback TCP (`--local_listen 127.0.0.1:PORT`):
//! `mosquitto_sub`/`mosquitto_pub` with MQTT 3.1.1 and 5, paho-mqtt
//! (Python), mqtt.js (Node.js), and raw clients written here byte by byte
//! where a library would hide what is checked (SUBACK codes, a PUBACK's
//! reason code, a client that never reads).
//!
//! What these tests hold the daemon to: local clients publish and
//! subscribe through its one broker connection, with every MQTT 5 property
//! passed through both ways; it subscribes upstream only on demand, keeps
//! its upstream filters free of overlap, lets go of them when the last
//! local subscriber leaves (never of a `--topic`), and keeps to its budget
//! of 50; every matching client gets exactly one copy of a message; one
//! slow or hostile client costs nobody else anything; QoS 2 is granted as 1
//! or refused; wills go upstream when a client vanishes, not when it says
//! goodbye; and the clients stay connected while the broker restarts.
//!
//! Each test has its own broker, daemon, ports and temp dir. paho-mqtt and
//! mqtt.js are installed once per target directory (pip into a venv, npm
//! into a folder, under `CARGO_TARGET_TMPDIR`) and shared by later runs.

mod common;

use common::*;
use iotbox::daemon::codec::put_varint;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// The daemon with its local endpoint

/// How a local client reaches the daemon.
#[derive(Clone, Debug)]
enum Link {
    /// The UNIX socket (`--local_socket`).
    Unix(PathBuf),
    /// Loopback TCP (`--local_listen 127.0.0.1:PORT`).
    Tcp(u16),
}

impl Link {
    /// `--unix PATH` or `-h 127.0.0.1 -p PORT` for mosquitto_sub/pub.
    fn mosquitto_args(&self, cmd: &mut Command) {
        match self {
            Link::Unix(p) => cmd.arg("--unix").arg(p),
            Link::Tcp(port) => cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]),
        };
    }

    /// What paho_client.py takes: a path, or HOST:PORT.
    fn address(&self) -> String {
        match self {
            Link::Unix(p) => p.display().to_string(),
            Link::Tcp(port) => format!("127.0.0.1:{port}"),
        }
    }
}

/// The MQTT version a mosquitto client speaks.
#[derive(Clone, Copy, Debug)]
enum Ver {
    V311,
    V5,
}

impl Ver {
    fn flag(self) -> &'static str {
        match self {
            Ver::V311 => "mqttv311",
            Ver::V5 => "mqttv5",
        }
    }
}

/// `iotbox pubsub` with both local endpoints.
struct Daemon {
    proc: Proc,
    /// Its client id upstream (what the broker log calls it).
    id: String,
    socket: PathBuf,
    port: u16,
}

impl Daemon {
    /// Starts the daemon against `broker` with `--topic`s `topics`, the
    /// harness's local socket, `--local_listen 127.0.0.1:FREE` and `extra`
    /// flags; waits for `Subscription Success.`.
    fn start(env: &Env, broker: &Broker, id: &str, topics: &[&str], extra: &[&str]) -> Daemon {
        let port = free_port();
        let mut args = env.pubsub_args(broker, id, topics);
        args.push("--local_listen".into());
        args.push(format!("127.0.0.1:{port}").into());
        args.extend(extra.iter().map(OsString::from));
        let mut proc = env.spawn_pubsub(Via::Iotbox, &args);
        wait_subscribed(&mut proc);
        Daemon {
            proc,
            id: id.to_owned(),
            socket: env.local_socket(),
            port,
        }
    }

    fn unix(&self) -> Link {
        Link::Unix(self.socket.clone())
    }

    fn tcp(&self) -> Link {
        Link::Tcp(self.port)
    }

    /// Waits for a log line (stderr) containing `needle`; returns it.
    fn wait_log(&self, needle: &str) -> String {
        self.proc.wait_stderr_line(
            &format!("containing {needle:?}"),
            |l| l.contains(needle),
            deadline(),
        )
    }

    /// Log lines (stderr) so far that contain `needle`.
    fn log_lines(&self, needle: &str) -> Vec<String> {
        self.proc
            .stderr_text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// Panics unless the daemon kept its broker connection all along.
    fn expect_never_disconnected(&self) {
        if self
            .proc
            .stdout_text()
            .contains("Mqtt5 Client disconnection")
        {
            self.proc
                .fail("lost its broker connection, which the test did nothing to cause");
        }
    }
}

// ---------------------------------------------------------------------------
// The broker log: what the daemon subscribed and unsubscribed upstream

/// The part of a mosquitto log line after its `1700000000: ` timestamp.
fn log_body(line: &str) -> &str {
    line.split_once(": ").map_or(line, |(_, rest)| rest)
}

/// mosquitto logs every filter of a SUBSCRIBE as `ID QOS FILTER`.
fn is_subscribe_line(line: &str, id: &str, filter: &str) -> bool {
    let body = log_body(line);
    ["0", "1", "2"]
        .iter()
        .any(|q| body == format!("{id} {q} {filter}"))
}

/// ... and every filter of an UNSUBSCRIBE as `ID FILTER`.
fn is_unsubscribe_line(line: &str, id: &str, filter: &str) -> bool {
    log_body(line) == format!("{id} {filter}")
}

fn subscribed_upstream(broker: &Broker, id: &str, filter: &str) -> bool {
    broker
        .log()
        .lines()
        .any(|l| is_subscribe_line(l, id, filter))
}

fn unsubscribed_upstream(broker: &Broker, id: &str, filter: &str) -> bool {
    broker
        .log()
        .lines()
        .any(|l| is_unsubscribe_line(l, id, filter))
}

fn wait_subscribed_upstream(broker: &Broker, id: &str, filter: &str) {
    broker.wait_log(
        &format!("saying {id} subscribed to {filter}"),
        |l| is_subscribe_line(l, id, filter),
        deadline(),
    );
}

fn wait_unsubscribed_upstream(broker: &Broker, id: &str, filter: &str) {
    broker.wait_log(
        &format!("saying {id} unsubscribed from {filter}"),
        |l| is_unsubscribe_line(l, id, filter),
        deadline(),
    );
}

// ---------------------------------------------------------------------------
// mosquitto_sub / mosquitto_pub as local clients, and as upstream ones

/// A local `mosquitto_sub -d`: subscribed (its SUBACK seen) when made.
/// Every message is one stdout line `MSG ...` in the format given.
struct LocalSub {
    proc: Proc,
    /// The granted QoS / reason codes as mosquitto_sub prints them (`1`,
    /// `1, 1`).
    granted: String,
}

impl LocalSub {
    /// `mosquitto_sub -d -V VER -i ID -q QOS -t F... -F 'MSG FORMAT' EXTRA`
    /// over `link`.
    fn start(
        link: &Link,
        ver: Ver,
        id: &str,
        filters: &[&str],
        qos: u8,
        format: &str,
        extra: &[&str],
    ) -> LocalSub {
        // Line-buffered: mosquitto_sub does not flush its -d lines into a
        // pipe.
        let mut cmd = Command::new(need_tool("stdbuf", "STDBUF", "apt-get install coreutils"));
        cmd.arg("-oL")
            .arg(find_tool("mosquitto_sub", "MOSQUITTO_SUB"));
        link.mosquitto_args(&mut cmd);
        cmd.args(["-d", "-V", ver.flag(), "-i", id, "-q", &qos.to_string()]);
        for f in filters {
            cmd.args(["-t", f]);
        }
        cmd.arg("-F").arg(format!("MSG {format}"));
        cmd.args(extra);
        let mut proc = Proc::spawn(&format!("local mosquitto_sub {id}"), cmd);
        let line = proc.wait_line(
            "saying it is subscribed",
            |l| l.starts_with("Subscribed (mid: "),
            deadline(),
        );
        let granted = line
            .split_once("): ")
            .map(|(_, g)| g.to_owned())
            .unwrap_or_default();
        LocalSub { proc, granted }
    }

    /// A plain subscriber at QoS 1 printing `MSG TOPIC PAYLOAD`.
    fn plain(link: &Link, ver: Ver, id: &str, filters: &[&str]) -> LocalSub {
        LocalSub::start(link, ver, id, filters, 1, "%t %p", &[])
    }

    /// Waits for the message line `MSG expected`.
    fn wait_message(&mut self, expected: &str) {
        let want = format!("MSG {expected}");
        self.proc
            .wait_line(&format!("equal to {want:?}"), |l| l == want, deadline());
    }

    /// The message lines so far, without `MSG `.
    fn messages(&self) -> Vec<String> {
        self.proc
            .stdout_text()
            .lines()
            .filter_map(|l| l.strip_prefix("MSG ").map(str::to_owned))
            .collect()
    }

    /// Panics unless the messages so far are exactly `expected`.
    fn expect_messages(&self, expected: &[&str]) {
        let got = self.messages();
        if got != expected {
            self.proc.fail(&format!(
                "expected exactly the messages {expected:?}, got {got:?}"
            ));
        }
    }
}

/// Publishes `PREFIX/marker` through the daemon and expects it to be the
/// next message `console` sees: nothing the test did before reached the
/// broker in between.
fn marker_comes_next(daemon: &Daemon, console: &mut ConsoleSub, prefix: &str) {
    let topic = format!("{prefix}/marker");
    let id = format!("{prefix}-marker");
    local_pub(
        &daemon.unix(),
        Ver::V5,
        &id,
        &["-q", "1", "-t", &topic, "-m", "marker"],
    )
    .expect_code(0);
    console.expect_message(&topic, b"marker", deadline());
}

/// `mosquitto_pub -d -V VER -i ID ARGS` over `link`, run to completion.
fn local_pub(link: &Link, ver: Ver, id: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(find_tool("mosquitto_pub", "MOSQUITTO_PUB"));
    link.mosquitto_args(&mut cmd);
    cmd.args(["-d", "-V", ver.flag(), "-i", id]);
    cmd.args(args);
    run(&format!("local mosquitto_pub {id}"), cmd, None)
}

/// `mosquitto_sub`/`mosquitto_pub` (`tool`) talking to the broker itself
/// with the test's client certificate, MQTT 5 and client id `id`.
fn upstream_client(broker: &Broker, tool: &str, id: &str) -> Command {
    let var = tool.to_ascii_uppercase();
    let mut cmd = Command::new(find_tool(tool, &var));
    broker.client_args(&mut cmd, id);
    cmd
}

/// An upstream `mosquitto_sub -q 1 -t FILTER -F FORMAT EXTRA`, subscribed
/// (the broker's SUBACK) when returned.
fn upstream_sub(broker: &Broker, id: &str, filter: &str, format: &str) -> Proc {
    let mut cmd = upstream_client(broker, "mosquitto_sub", id);
    cmd.args(["-q", "1", "-t", filter, "-F", format]);
    let p = Proc::spawn(&format!("upstream mosquitto_sub {id}"), cmd);
    broker.wait_suback(id, deadline());
    p
}

// ---------------------------------------------------------------------------
// A raw MQTT client, byte by byte

/// Reads a variable byte integer at `*at`, moving past it.
fn read_varint(b: &[u8], at: &mut usize) -> usize {
    let (mut n, mut shift) = (0usize, 0);
    loop {
        let byte = b[*at];
        *at += 1;
        n |= usize::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return n;
        }
        shift += 7;
    }
}

fn mqtt_str(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A packet: first byte, remaining length, body.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    put_varint(&mut p, body.len());
    p.extend_from_slice(body);
    p
}

/// CONNECT, clean session, keep-alive 60 s, no will.
fn connect_packet(v5: bool, id: &str) -> Vec<u8> {
    let mut b = Vec::new();
    mqtt_str("MQTT", &mut b);
    b.push(if v5 { 5 } else { 4 });
    b.push(0x02);
    b.extend_from_slice(&60u16.to_be_bytes());
    if v5 {
        b.push(0); // no properties
    }
    mqtt_str(id, &mut b);
    frame(0x10, &b)
}

fn subscribe_packet(v5: bool, pkid: u16, filters: &[String], qos: u8) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    if v5 {
        b.push(0);
    }
    for f in filters {
        mqtt_str(f, &mut b);
        b.push(qos);
    }
    frame(0x82, &b)
}

fn publish_packet(v5: bool, topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    mqtt_str(topic, &mut b);
    if qos > 0 {
        b.extend_from_slice(&pkid.to_be_bytes());
    }
    if v5 {
        b.push(0);
    }
    b.extend_from_slice(payload);
    frame(0x30 | (qos << 1), &b)
}

/// The reason codes of a SUBACK's body.
fn suback_codes(v5: bool, body: &[u8]) -> Vec<u8> {
    let mut at = 2;
    if v5 {
        let props = read_varint(body, &mut at);
        at += props;
    }
    body[at..].to_vec()
}

/// One packet: its first byte and body.
type Packet = (u8, Vec<u8>);

/// A client on the daemon's UNIX socket that sends and reads packets by
/// hand. Reads time out after [`timeout`].
struct RawClient {
    name: String,
    s: UnixStream,
}

impl RawClient {
    fn connect(sock: &Path, name: &str) -> RawClient {
        let s = UnixStream::connect(sock)
            .unwrap_or_else(|e| panic!("[{name}] connect {}: {e}", sock.display()));
        s.set_read_timeout(Some(timeout())).expect("read timeout");
        s.set_write_timeout(Some(timeout())).expect("write timeout");
        RawClient {
            name: name.to_owned(),
            s,
        }
    }

    /// CONNECT as `id`, and the CONNACK must accept it.
    fn handshake(sock: &Path, v5: bool, id: &str) -> RawClient {
        let mut c = RawClient::connect(sock, id);
        c.send(&connect_packet(v5, id));
        let (first, body) = c.expect_packet("CONNACK");
        if first != 0x20 || body.len() < 2 || body[1] != 0 {
            panic!(
                "[{id}] expected a CONNACK accepting the connection, got {first:02X} {body:02X?}"
            );
        }
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("[{}] write: {e}", self.name));
    }

    /// The next packet; `Ok(None)` when the daemon closed the connection.
    fn read_packet(&mut self) -> io::Result<Option<Packet>> {
        let mut first = [0u8; 1];
        match self.s.read(&mut first) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let mut b = [0u8; 1];
            self.s.read_exact(&mut b)?;
            len |= usize::from(b[0] & 0x7F) << shift;
            if b[0] & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let mut body = vec![0u8; len];
        self.s.read_exact(&mut body)?;
        Ok(Some((first[0], body)))
    }

    fn expect_packet(&mut self, what: &str) -> Packet {
        match self.read_packet() {
            Ok(Some(p)) => p,
            Ok(None) => panic!(
                "[{}] expected {what}, the daemon closed the connection",
                self.name
            ),
            Err(e) => panic!("[{}] expected {what}, got {e}", self.name),
        }
    }

    /// Reads until the daemon closes the connection; the packets it sent
    /// before. Panics if it does not close within the deadline.
    fn expect_closed(&mut self) -> Vec<Packet> {
        let mut seen = Vec::new();
        loop {
            match self.read_packet() {
                Ok(Some(p)) => seen.push(p),
                Ok(None) => return seen,
                Err(e) => panic!(
                    "[{}] expected the daemon to close the connection, got {e} after {} packets: {:02X?}",
                    self.name,
                    seen.len(),
                    seen.iter().map(|p| p.0).collect::<Vec<_>>()
                ),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// mqtt.js, installed once per target directory (paho-mqtt: common::paho_python)

/// `node_modules` with mqtt.js 5.
fn mqttjs_modules() -> PathBuf {
    let dir = cached_dir("test-node", |dir| {
        let npm = need_tool("npm", "NPM", "apt-get install nodejs npm");
        let mut cmd = Command::new(npm);
        cmd.args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(dir)
            .arg("mqtt@5");
        install_step("npm install mqtt@5", cmd);
    });
    dir.join("node_modules")
}

/// `tests/clients/NAME`.
fn client_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

// ---------------------------------------------------------------------------
// The tests

/// `mosquitto_pub -q 1`, MQTT 3.1.1 and 5, over the UNIX socket and over
/// TCP: every message reaches the broker on its topic, and every
/// mosquitto_pub exits 0 having received its PUBACK (given once the
/// message is in the spool).
#[test]
fn publish_over_both_transports_and_versions_reaches_the_broker() {
    let env = Env::new("lpub");
    let broker = env.broker();
    let daemon = Daemon::start(&env, &broker, "dev-pub", &["dev/in"], &[]);
    let mut console = broker.console_sub("pub/#");

    let cases = [
        (daemon.unix(), Ver::V311, "unix311"),
        (daemon.unix(), Ver::V5, "unix5"),
        (daemon.tcp(), Ver::V311, "tcp311"),
        (daemon.tcp(), Ver::V5, "tcp5"),
    ];
    for (link, ver, name) in &cases {
        let topic = format!("pub/{name}");
        let payload = format!("hello over {name}");
        let out = local_pub(
            link,
            *ver,
            &format!("pub-{name}"),
            &["-q", "1", "-t", &topic, "-m", &payload],
        );
        out.expect_code(0);
        if !out.stdout_text().contains("received PUBACK") {
            out.fail("mosquitto_pub -d never showed the PUBACK");
        }
        console.expect_message(&topic, payload.as_bytes(), deadline());
    }
    daemon.expect_never_disconnected();
}

/// Local subscribers over both transports and both versions receive what
/// the console publishes; the daemon subscribes each filter upstream only
/// once a local client asked for it (the broker log has no SUBSCRIBE of it
/// before, and has one after), and says so in its log.
#[test]
fn subscribes_upstream_on_demand_and_delivers_to_local_subscribers() {
    let env = Env::new("lsub");
    let broker = env.broker();
    let daemon = Daemon::start(&env, &broker, "dev-sub", &["dev/in"], &[]);

    let cases = [
        (daemon.unix(), Ver::V311, "unix311"),
        (daemon.unix(), Ver::V5, "unix5"),
        (daemon.tcp(), Ver::V311, "tcp311"),
        (daemon.tcp(), Ver::V5, "tcp5"),
    ];
    let mut subs = Vec::new();
    for (link, ver, name) in &cases {
        let filter = format!("od/{name}/#");
        if subscribed_upstream(&broker, &daemon.id, &filter) {
            broker.fail(&format!(
                "the daemon subscribed {filter} upstream before any local client asked"
            ));
        }
        let sub = LocalSub::plain(link, *ver, &format!("sub-{name}"), &[&filter]);
        assert_eq!(sub.granted, "1", "granted QoS for {filter}");
        wait_subscribed_upstream(&broker, &daemon.id, &filter);
        daemon.wait_log(&format!("subscribing upstream for local clients: {filter}"));
        subs.push((sub, name));
    }
    for (sub, name) in &mut subs {
        broker.console_pub(&format!("od/{name}/x"), format!("to {name}").as_bytes());
        sub.wait_message(&format!("od/{name}/x to {name}"));
    }
    // Each got only its own.
    for (sub, name) in &subs {
        sub.expect_messages(&[&format!("od/{name}/x to {name}")]);
    }
    daemon.expect_never_disconnected();
}

/// Overlapping filters: subscribers of `a/b`, then `a/#`, then `a/+`
/// (mixed versions and transports) each get exactly one copy of every
/// message on `a/b`, a subscriber of `x/#` none. Upstream the set stays
/// free of overlap: `a/b` is subscribed, replaced by `a/#` (subscribed
/// first, then `a/b` unsubscribed), and `a/+` is never subscribed.
#[test]
fn overlapping_filters_get_one_copy_each_and_upstream_stays_overlap_free() {
    let env = Env::new("lfan");
    let broker = env.broker();
    let daemon = Daemon::start(&env, &broker, "dev-fan", &["dev/in"], &[]);
    let id = daemon.id.clone();

    let s_ab = LocalSub::plain(&daemon.unix(), Ver::V311, "fan-ab", &["a/b"]);
    wait_subscribed_upstream(&broker, &id, "a/b");

    let s_all = LocalSub::plain(&daemon.tcp(), Ver::V5, "fan-all", &["a/#"]);
    wait_subscribed_upstream(&broker, &id, "a/#");
    wait_unsubscribed_upstream(&broker, &id, "a/b");
    daemon.wait_log("subscribing upstream for local clients: a/#");
    daemon.wait_log("unsubscribing upstream, no local client needs: a/b");
    broker.wait_log(
        "saying the UNSUBSCRIBE of a/b was answered",
        |l| l.ends_with(&format!(": Sending UNSUBACK to {id}")),
        deadline(),
    );

    let s_plus = LocalSub::plain(&daemon.unix(), Ver::V5, "fan-plus", &["a/+"]);
    let s_x = LocalSub::plain(&daemon.tcp(), Ver::V311, "fan-x", &["x/#"]);
    wait_subscribed_upstream(&broker, &id, "x/#");
    daemon.wait_log("subscribing upstream for local clients: x/#");

    broker.console_pub("a/b", b"one");
    broker.console_pub("a/b", b"two");
    broker.console_pub("x/end", b"end");
    let mut subs = [s_ab, s_all, s_plus];
    for s in &mut subs {
        s.wait_message("a/b two");
    }
    let mut s_x = s_x;
    s_x.wait_message("x/end end");
    // A second copy of "one" would have come before "two".
    for s in &subs {
        s.expect_messages(&["a/b one", "a/b two"]);
    }
    s_x.expect_messages(&["x/end end"]);

    // a/+ and a/b were never subscribed while a/# was in place.
    let log = broker.log();
    if log.lines().any(|l| is_subscribe_line(l, &id, "a/+")) {
        broker.fail("the daemon subscribed a/+ upstream though a/# covers it");
    }
    let ab_subscribes = log
        .lines()
        .filter(|l| is_subscribe_line(l, &id, "a/b"))
        .count();
    assert_eq!(ab_subscribes, 1, "upstream SUBSCRIBEs of a/b");
    let upstream_lines = daemon.log_lines("subscribing upstream for local clients:");
    assert_eq!(
        upstream_lines.len(),
        3,
        "the daemon's upstream subscriptions (a/b, a/#, x/#): {upstream_lines:#?}"
    );
    daemon.expect_never_disconnected();
}

/// When the last local subscriber of a filter leaves, the daemon
/// unsubscribes it upstream (and not while another still needs it); a
/// `--topic` filter stays subscribed even when a local client subscribed to
/// the same filter and left.
#[test]
fn last_subscriber_leaving_unsubscribes_upstream_but_never_a_topic_flag() {
    let env = Env::new("lunsub");
    let broker = env.broker();
    let mut daemon = Daemon::start(&env, &broker, "dev-unsub", &["dev/in"], &[]);
    let id = daemon.id.clone();

    // Two subscribers of u/t; the first vanishes (SIGKILL).
    let first = LocalSub::plain(&daemon.unix(), Ver::V5, "unsub-first", &["u/t"]);
    wait_subscribed_upstream(&broker, &id, "u/t");
    let mut second = LocalSub::start(
        &daemon.tcp(),
        Ver::V311,
        "unsub-second",
        &["u/t"],
        1,
        "%t %p",
        &["-C", "1"],
    );
    drop(first);
    daemon.wait_log("local client unsub-first: ");
    // Still subscribed upstream: the second one gets a message...
    broker.console_pub("u/t", b"still here");
    second.wait_message("u/t still here");
    // ... and leaves with DISCONNECT (-C 1): now u/t goes upstream.
    second.proc.expect_exit_code(0, deadline());
    wait_unsubscribed_upstream(&broker, &id, "u/t");
    daemon.wait_log("unsubscribing upstream, no local client needs: u/t");
    broker.wait_log(
        &format!("saying it received an UNSUBSCRIBE from {id}"),
        |l| l.ends_with(&format!(": Received UNSUBSCRIBE from {id}")),
        deadline(),
    );

    // A local client subscribes to the --topic filter and leaves.
    let same = LocalSub::plain(&daemon.unix(), Ver::V5, "unsub-topic", &["dev/in"]);
    drop(same);
    daemon.wait_log("local client unsub-topic: ");
    // An unsubscribe that must follow any of dev/in on the one connection.
    let later = LocalSub::plain(&daemon.unix(), Ver::V5, "unsub-later", &["z/z"]);
    wait_subscribed_upstream(&broker, &id, "z/z");
    drop(later);
    wait_unsubscribed_upstream(&broker, &id, "z/z");
    if unsubscribed_upstream(&broker, &id, "dev/in") {
        broker.fail("the daemon unsubscribed its --topic dev/in upstream");
    }
    // And dev/in still arrives.
    broker.console_pub("dev/in", b"for the delivery socket");
    daemon.proc.wait_line(
        "showing the --topic message",
        |l| l.starts_with("Publish received on topic dev/in"),
        deadline(),
    );
    daemon.expect_never_disconnected();
}

/// MQTT 5 properties and the retain flag pass through both ways: user
/// property, content type, response topic, correlation data, message
/// expiry (counted down, never up) and payload format indicator, from a
/// local mosquitto_pub to an upstream mosquitto_sub and from an upstream
/// mosquitto_pub to a local mosquitto_sub; a retained local publish is kept
/// by the broker, and a retained message upstream reaches a new local
/// subscriber flagged as retained.
#[test]
fn properties_and_retain_pass_through_both_ways() {
    let env = Env::new("lprops");
    let broker = env.broker();
    let daemon = Daemon::start(&env, &broker, "dev-props", &["dev/in"], &[]);
    const FORMAT: &str = "%t|%p|%P|%C|%R|%D|%E|%F";
    // Every property mosquitto_pub can set on a PUBLISH, and QoS 1.
    let props: &[&str] = &[
        "-q",
        "1",
        "-D",
        "publish",
        "user-property",
        "k",
        "v",
        "-D",
        "publish",
        "content-type",
        "text/plain",
        "-D",
        "publish",
        "response-topic",
        "r/t",
        "-D",
        "publish",
        "correlation-data",
        "0102",
        "-D",
        "publish",
        "message-expiry-interval",
        "30",
        "-D",
        "publish",
        "payload-format-indicator",
        "1",
    ];
    let check = |line: &str, topic: &str, payload: &str, who: &Proc| {
        let fields: Vec<&str> = line.split('|').collect();
        let expiry = fields.get(6).and_then(|e| e.parse::<u32>().ok());
        let ok = fields.len() == 8
            && fields[..6] == [topic, payload, "k:v", "text/plain", "r/t", "0102"]
            && expiry.is_some_and(|e| (1..=30).contains(&e))
            && fields[7] == "1";
        if !ok {
            who.fail(&format!(
                "expected {topic}|{payload}|k:v|text/plain|r/t|0102|<1..=30>|1, got {line:?}"
            ));
        }
    };

    // Local to upstream.
    let mut up = upstream_sub(&broker, "up-props", "props/up", FORMAT);
    let mut args: Vec<&str> = props.to_vec();
    args.extend(["-t", "props/up", "-m", "hello up"]);
    local_pub(&daemon.unix(), Ver::V5, "props-pub", &args).expect_code(0);
    let line = up.next_line(deadline());
    check(&line, "props/up", "hello up", &up);

    // Upstream to local.
    let mut down = LocalSub::start(
        &daemon.unix(),
        Ver::V5,
        "props-sub",
        &["props/down"],
        1,
        FORMAT,
        &[],
    );
    let mut cmd = upstream_client(&broker, "mosquitto_pub", "up-props-pub");
    cmd.args(props)
        .args(["-t", "props/down", "-m", "hello down"]);
    run("upstream mosquitto_pub", cmd, None).expect_code(0);
    let line = down
        .proc
        .wait_line("with a message", |l| l.starts_with("MSG "), deadline());
    check(
        &line["MSG ".len()..],
        "props/down",
        "hello down",
        &down.proc,
    );

    // Retain, local to upstream: the broker keeps it for a new subscriber.
    local_pub(
        &daemon.tcp(),
        Ver::V311,
        "retain-pub",
        &["-q", "1", "-r", "-t", "props/kept", "-m", "kept"],
    )
    .expect_code(0);
    let mut cmd = upstream_client(&broker, "mosquitto_sub", "up-retained");
    cmd.args(["-q", "1", "-t", "props/kept", "-F", "%t|%p|%r", "-C", "1"]);
    let out = run("upstream mosquitto_sub (retained)", cmd, None);
    out.expect_code(0).expect_stdout("props/kept|kept|1\n");

    // Retain, upstream to local: a new local subscriber gets the broker's
    // retained message, flagged.
    let mut cmd = upstream_client(&broker, "mosquitto_pub", "up-retain-pub");
    cmd.args(["-q", "1", "-r", "-t", "props/old", "-m", "old news"]);
    run("upstream mosquitto_pub -r", cmd, None).expect_code(0);
    let mut late = LocalSub::start(
        &daemon.tcp(),
        Ver::V5,
        "retain-sub",
        &["props/old"],
        1,
        "%t|%p|%r",
        &[],
    );
    late.wait_message("props/old|old news|1");
    daemon.expect_never_disconnected();
}

/// paho-mqtt (Python), MQTT 5 request/response across the broker: a
/// responder on TCP subscribes to requests; a requester on the UNIX socket
/// subscribes to its response topic and sends a request carrying the
/// response topic and correlation data; the answer comes back with the same
/// correlation data. Then paho with MQTT 3.1.1: subscribe, publish, get it
/// back.
#[test]
fn paho_request_response_and_v311_round_trip() {
    let python = paho_python();
    let script = client_script("paho_client.py");
    let env = Env::new("lpaho");
    let broker = env.broker();
    let daemon = Daemon::start(&env, &broker, "dev-paho", &["dev/in"], &[]);

    let mut responder = Command::new(&python);
    responder
        .arg(&script)
        .args(["respond", &daemon.tcp().address(), "svc/req"]);
    let mut responder = Proc::spawn("paho responder", responder);
    responder.wait_for_line("ready", deadline());

    let mut requester = Command::new(&python);
    requester.arg(&script).args([
        "request",
        &daemon.unix().address(),
        "svc/req",
        "svc/resp/1",
        "c0ffee01",
    ]);
    let out = run("paho requester", requester, None);
    out.expect_code(0)
        .expect_stdout("response pong:ping correlation c0ffee01\n");
    responder.wait_for_line("answered c0ffee01", deadline());

    let mut v311 = Command::new(&python);
    v311.arg(&script).args([
        "pubsub311",
        &daemon.unix().address(),
        "paho/311",
        "hello 3.1.1",
    ]);
    run("paho 3.1.1", v311, None)
        .expect_code(0)
        .expect_stdout("got paho/311 hello 3.1.1\n");
    daemon.expect_never_disconnected();
}

/// mqtt.js 5 (Node.js), MQTT 5 over TCP (`mqtt://127.0.0.1:PORT`) and
/// MQTT 3.1.1 over the UNIX socket (`mqtt+unix://PATH`): subscribe, publish,
/// the message comes back through the broker.
#[test]
fn mqttjs_round_trip_over_tcp_and_unix() {
    let modules = mqttjs_modules();
    let node = need_tool("node", "NODE", "apt-get install nodejs npm");
    let script = client_script("mqttjs_roundtrip.js");
    let env = Env::new("lmqttjs");
    let broker = env.broker();
    let daemon = Daemon::start(&env, &broker, "dev-mqttjs", &["dev/in"], &[]);

    let cases = [
        (format!("mqtt://127.0.0.1:{}", daemon.port), "5", "js/tcp5"),
        (
            format!("mqtt+unix://{}", daemon.socket.display()),
            "4",
            "js/unix311",
        ),
    ];
    for (url, version, topic) in &cases {
        let mut cmd = Command::new(&node);
        cmd.env("NODE_PATH", &modules).arg(&script).args([
            url.as_str(),
            version,
            topic,
            "hello from node",
        ]);
        run(&format!("mqtt.js {url}"), cmd, None)
            .expect_code(0)
            .expect_stdout(&format!("granted 1\ngot {topic} hello from node\n"));
    }
    daemon.expect_never_disconnected();
}

/// 3,000 QoS 1 messages of 1 KiB, numbered `message N xxx...`, in batches
/// of `BATCH` lines (each line 1,025 bytes with its newline).
const FLOOD: usize = 3000;
const BATCH: usize = 250;

/// The message numbers a `MSG %p` subscriber received, sorted, checked to
/// be `0..n` once each.
fn expect_all_numbered(sub: &LocalSub, n: usize) {
    let mut got: Vec<usize> = sub
        .messages()
        .iter()
        .map(|m| {
            m.strip_prefix("message ")
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| sub.proc.fail(&format!("unexpected payload {m:.40}")))
        })
        .collect();
    got.sort_unstable();
    if got != (0..n).collect::<Vec<_>>() {
        sub.proc.fail(&format!(
            "expected messages 0..{n} once each, got {} messages",
            got.len()
        ));
    }
}

/// A client that subscribes and then never reads, beside a fast one on the
/// same filter: 3,000 QoS 1 messages of 1 KiB pass the slow one's 512 KiB
/// bound; it is disconnected (the log says it "does not take its
/// messages") while the fast one gets every message, and the daemon keeps
/// its broker connection. The console publishes in batches of 250 KiB and
/// waits for the fast one to have each batch: the fast one never lags by
/// more than its bound, the slow one falls behind by all of it. (In one
/// unpaced burst of 3 MiB, whether a reading client keeps within 512 KiB
/// depends on how busy the machine is: not a property to test.)
#[test]
fn slow_subscriber_is_cut_off_and_the_fast_one_gets_everything() {
    let env = Env::new("lslow");
    // The broker must not drop QoS 1 messages queued for the daemon
    // (mosquitto's default keeps 1000): every one must reach it.
    let broker = env.broker_with("max_queued_messages 100000");
    let daemon = Daemon::start(&env, &broker, "dev-slow", &["dev/in"], &[]);

    let mut slow = RawClient::handshake(&daemon.socket, false, "slow");
    slow.send(&subscribe_packet(false, 1, &["flood/#".to_owned()], 1));
    let (first, body) = slow.expect_packet("SUBACK");
    assert_eq!(
        (first, suback_codes(false, &body)),
        (0x90, vec![1]),
        "SUBACK of the slow client"
    );

    let mut fast = LocalSub::start(
        &daemon.unix(),
        Ver::V5,
        "fast",
        &["flood/#"],
        1,
        "%p",
        &["-C", &FLOOD.to_string()],
    );
    assert_eq!(fast.granted, "1");

    let all = numbered_lines(FLOOD, 1024);
    let line = all.len() / FLOOD;
    for (k, batch) in all.chunks(BATCH * line).enumerate() {
        broker.console_pub_lines("flood/t", batch);
        let last = format!("MSG message {} ", (k + 1) * BATCH - 1);
        fast.proc.wait_line(
            &format!("starting with {last:?}"),
            |l| l.starts_with(&last),
            deadline(),
        );
    }
    fast.proc.expect_exit_code(0, deadline());
    expect_all_numbered(&fast, FLOOD);

    daemon.wait_log("local client slow: does not take its messages");
    if !daemon.log_lines("local client fast:").is_empty() {
        daemon.proc.fail("the fast client was cut off too");
    }
    // What the daemon wrote before cutting it off is still readable; then
    // the end of the connection.
    let before = slow.expect_closed();
    assert!(
        before.iter().all(|(first, _)| first & 0xF0 == 0x30),
        "the slow client got only PUBLISHes before the close"
    );
    daemon.expect_never_disconnected();
}

/// The upstream budget of 50 filters, the daemon's one `--topic` included:
/// a client subscribing 60 distinct filters in one SUBSCRIBE gets 49
/// granted and 11 refused with 0x97 (quota exceeded), each refusal logged,
/// and exactly 49 of them are subscribed upstream.
#[test]
fn sixty_filters_against_the_budget_of_fifty() {
    let env = Env::new("lbudget");
    let broker = env.broker();
    let daemon = Daemon::start(&env, &broker, "dev-budget", &["dev/in"], &[]);

    let filters: Vec<String> = (0..60).map(|i| format!("bud/{i}")).collect();
    let mut c = RawClient::handshake(&daemon.socket, true, "budget");
    c.send(&subscribe_packet(true, 7, &filters, 1));
    let (first, body) = c.expect_packet("SUBACK");
    assert_eq!(first, 0x90, "SUBACK expected, got {first:02X} {body:02X?}");
    assert_eq!(&body[..2], &[0, 7], "SUBACK packet id");
    let codes = suback_codes(true, &body);
    assert_eq!(codes.len(), 60, "one code per filter: {codes:02X?}");
    let granted = codes.iter().filter(|&&c| c == 1).count();
    let quota = codes.iter().filter(|&&c| c == 0x97).count();
    assert_eq!(
        (granted, quota),
        (49, 11),
        "granted and 0x97 codes: {codes:02X?}"
    );

    for (f, code) in filters.iter().zip(&codes) {
        if *code == 0x97 {
            daemon.wait_log(&format!(
                "local client budget: subscription to {f} refused (0x97)"
            ));
        }
    }
    // A publish after the SUBSCRIBEs on the one connection: once the broker
    // logged it, it logged every filter the daemon subscribed.
    local_pub(
        &daemon.unix(),
        Ver::V5,
        "budget-marker",
        &["-q", "1", "-t", "bud-marker", "-m", "after"],
    )
    .expect_code(0);
    broker.wait_log(
        "saying the daemon published the marker",
        |l| {
            l.contains(&format!(": Received PUBLISH from {} ", daemon.id))
                && l.contains("'bud-marker'")
        },
        deadline(),
    );
    let upstream = broker
        .log()
        .lines()
        .filter(|l| filters.iter().any(|f| is_subscribe_line(l, &daemon.id, f)))
        .count();
    assert_eq!(upstream, 49, "filters subscribed upstream");

    // At the budget, a wide filter that replaces the 49 is granted, and the
    // daemon gives up the narrow ones before subscribing it: the broker
    // never holds 51 (AWS would refuse the 51st).
    c.send(&subscribe_packet(true, 8, &["bud/#".to_owned()], 1));
    let (first, body) = c.expect_packet("SUBACK");
    assert_eq!(first, 0x90, "SUBACK expected, got {first:02X} {body:02X?}");
    assert_eq!(suback_codes(true, &body), [1], "bud/# granted");
    broker.wait_log(
        "saying the daemon subscribed bud/#",
        |l| is_subscribe_line(l, &daemon.id, "bud/#"),
        deadline(),
    );
    let log = broker.log();
    let lines: Vec<&str> = log.lines().collect();
    let wide = lines
        .iter()
        .position(|l| is_subscribe_line(l, &daemon.id, "bud/#"))
        .expect("bud/# subscribed");
    let narrow_gone = lines
        .iter()
        .filter(|l| {
            filters
                .iter()
                .any(|f| is_unsubscribe_line(l, &daemon.id, f))
        })
        .count();
    let gone_before = lines[..wide]
        .iter()
        .filter(|l| {
            filters
                .iter()
                .any(|f| is_unsubscribe_line(l, &daemon.id, f))
        })
        .count();
    assert_eq!(
        (narrow_gone, gone_before),
        (49, 49),
        "the 49 narrow filters unsubscribed, all before bud/# was subscribed"
    );
    daemon.expect_never_disconnected();
}

/// QoS 2: a QoS 2 subscription is granted 1 and works; a QoS 2 PUBLISH
/// from an MQTT 5 client gets DISCONNECT 0x9B (QoS not supported), one from
/// a 3.1.1 client a closed connection; both are logged and neither reaches
/// the broker. mosquitto_pub -q 2 fails, with either version.
#[test]
fn qos2_subscription_is_granted_1_and_qos2_publish_is_refused() {
    let env = Env::new("lqos2");
    let broker = env.broker();
    let daemon = Daemon::start(&env, &broker, "dev-qos2", &["dev/in"], &[]);
    let mut console = broker.console_sub("q2/#");

    for (link, ver, name) in [
        (daemon.unix(), Ver::V5, "q2sub5"),
        (daemon.tcp(), Ver::V311, "q2sub311"),
    ] {
        let mut sub = LocalSub::start(
            &link,
            ver,
            name,
            &[&format!("down/{name}")],
            2,
            "%t %p",
            &[],
        );
        assert_eq!(
            sub.granted, "1",
            "QoS granted to a QoS 2 subscription ({name})"
        );
        broker.console_pub(&format!("down/{name}"), b"works");
        sub.wait_message(&format!("down/{name} works"));
    }

    // Raw MQTT 5: DISCONNECT 0x9B, then the end.
    let mut v5 = RawClient::handshake(&daemon.socket, true, "raw-q2-5");
    v5.send(&publish_packet(true, "q2/raw5", 2, 1, b"exactly once?"));
    let packets = v5.expect_closed();
    let disconnect = packets.iter().find(|(first, _)| *first == 0xE0);
    match disconnect {
        Some((_, body)) if body.first() == Some(&0x9B) => {}
        _ => panic!("expected DISCONNECT 0x9B before the close, got {packets:02X?}"),
    }
    daemon.wait_log("local client raw-q2-5: sent a QoS 2 PUBLISH");

    // Raw MQTT 3.1.1: the connection is closed, nothing sent.
    let mut v311 = RawClient::handshake(&daemon.socket, false, "raw-q2-311");
    v311.send(&publish_packet(false, "q2/raw311", 2, 1, b"exactly once?"));
    let packets = v311.expect_closed();
    assert!(
        packets.is_empty(),
        "3.1.1: nothing before the close, got {packets:02X?}"
    );
    daemon.wait_log("local client raw-q2-311: sent a QoS 2 PUBLISH");

    // mosquitto_pub -q 2, MQTT 5: refused. (libmosquitto refuses it itself
    // when the CONNACK says maximum QoS 1; else the daemon does.)
    let mut cmd = Command::new(find_tool("mosquitto_pub", "MOSQUITTO_PUB"));
    daemon.unix().mosquitto_args(&mut cmd);
    cmd.args([
        "-d", "-V", "mqttv5", "-i", "pub-q2-5", "-q", "2", "-t", "q2/pub5", "-m", "no",
    ]);
    let mut p5 = Proc::spawn("mosquitto_pub -V 5 -q 2", cmd);
    // mosquitto_pub 2.0.11 exits 0 even when libmosquitto refuses, saying
    // so on stderr.
    let status = p5.wait_exit(deadline());
    if status.success() && !p5.stderr_text().contains("QoS not supported") {
        p5.fail("mosquitto_pub -q 2 succeeded");
    }
    if p5.stdout_text().contains("sending PUBLISH (d0, q2") {
        daemon.wait_log("local client pub-q2-5: sent a QoS 2 PUBLISH");
    }

    // mosquitto_pub -q 2, MQTT 3.1.1: the daemon closes the connection
    // (mosquitto_pub may reconnect and retry: it is killed at the end).
    let mut cmd = Command::new(find_tool("mosquitto_pub", "MOSQUITTO_PUB"));
    daemon.unix().mosquitto_args(&mut cmd);
    cmd.args([
        "-d",
        "-V",
        "mqttv311",
        "-i",
        "pub-q2-311",
        "-q",
        "2",
        "-t",
        "q2/pub311",
        "-m",
        "no",
    ]);
    let p311 = Proc::spawn("mosquitto_pub -V 311 -q 2", cmd);
    daemon.wait_log("local client pub-q2-311: sent a QoS 2 PUBLISH");
    drop(p311);

    // None of them reached the broker: the next message there is this one.
    marker_comes_next(&daemon, &mut console, "q2");
    daemon.expect_never_disconnected();
}

/// The broker restarts (killed, then back on the same port) while local
/// clients are connected: they stay connected (same processes, one CONNACK
/// each), the daemon subscribes their filters upstream again, and a message
/// published after the restart reaches them.
#[test]
fn local_clients_stay_connected_through_a_broker_restart() {
    let env = Env::new("lrestart");
    let mut broker = env.broker();
    let mut daemon = Daemon::start(&env, &broker, "dev-restart", &["dev/in"], &[]);
    let id = daemon.id.clone();
    let mut unix = LocalSub::plain(&daemon.unix(), Ver::V5, "stay-unix", &["r/#"]);
    let mut tcp = LocalSub::plain(&daemon.tcp(), Ver::V311, "stay-tcp", &["r/+/x"]);
    wait_subscribed_upstream(&broker, &id, "r/#");

    broker.restart(|| {
        daemon.proc.wait_line(
            "saying the connection was lost",
            |l| l.starts_with("Mqtt5 Client disconnection with reason: "),
            deadline(),
        );
    });
    // The restarted broker's log: the daemon subscribed r/# again (and
    // r/+/x is covered by it).
    wait_subscribed_upstream(&broker, &id, "r/#");
    broker.console_pub("r/a/x", b"after the restart");
    unix.wait_message("r/a/x after the restart");
    tcp.wait_message("r/a/x after the restart");
    for s in [&mut unix, &mut tcp] {
        if s.proc.has_exited() {
            s.proc.fail("the local client's connection ended");
        }
        let connacks = s.proc.stdout_text().matches("received CONNACK").count();
        if connacks != 1 {
            s.proc.fail(&format!(
                "expected one connection (one CONNACK), saw {connacks}"
            ));
        }
    }
}

/// A local client's will goes upstream when the client vanishes (SIGKILL),
/// not when it disconnects normally (DISCONNECT 0x00).
#[test]
fn will_goes_upstream_when_a_client_vanishes_not_on_disconnect() {
    let env = Env::new("lwill");
    let broker = env.broker();
    // A normal disconnect is logged at debug level only.
    let daemon = Daemon::start(
        &env,
        &broker,
        "dev-will",
        &["dev/in"],
        &["--verbosity", "debug"],
    );
    let mut console = broker.console_sub("w/#");

    let vanishing = LocalSub::start(
        &daemon.unix(),
        Ver::V5,
        "will-kill",
        &["keep/alive"],
        1,
        "%t %p",
        &["--will-topic", "w/t", "--will-payload", "gone"],
    );
    vanishing.proc.signal(Signal::KILL);
    console.expect_message("w/t", b"gone", deadline());
    daemon.wait_log("local client will-kill: ");

    let mut polite = LocalSub::start(
        &daemon.tcp(),
        Ver::V311,
        "will-polite",
        &["quit/now"],
        1,
        "%t %p",
        &[
            "-C",
            "1",
            "--will-topic",
            "w/polite",
            "--will-payload",
            "never",
        ],
    );
    broker.console_pub("quit/now", b"bye");
    polite.wait_message("quit/now bye");
    polite.proc.expect_exit_code(0, deadline());
    daemon.wait_log("local client will-polite: disconnected (0x00)");
    // A will would have been queued before this message.
    marker_comes_next(&daemon, &mut console, "w");
    daemon.expect_never_disconnected();
}

/// Hostile and careless clients cost the others nothing: garbage bytes get
/// the connection closed; a connection that never sends CONNECT is closed
/// after 10 s with a log line; a PUBLISH to a `$aws/...` topic (outside the
/// default `--local_topics`, `#` does not match `$` topics) gets PUBACK 0x87
/// from MQTT 5 and a closed connection from 3.1.1, and reaches nothing;
/// meanwhile regular clients and the original publish socket work.
#[test]
fn hostile_clients_cost_the_others_nothing() {
    let env = Env::new("lhostile");
    let broker = env.broker();
    let daemon = Daemon::start(&env, &broker, "dev-hostile", &["dev/in"], &[]);
    let mut console = broker.console_sub("#");

    // Silent: connects, never sends CONNECT. Timed on a thread meanwhile.
    let sock = daemon.socket.clone();
    let silent = thread::spawn(move || {
        let mut s = UnixStream::connect(&sock).expect("connect the silent client");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let r = s.read(&mut buf);
        (start.elapsed(), r.map_err(|e| e.to_string()))
    });

    // Garbage.
    let mut garbage = RawClient::connect(&daemon.socket, "garbage");
    garbage.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let packets = garbage.expect_closed();
    assert!(
        packets.iter().all(|(first, _)| *first == 0x20),
        "garbage: at most a CONNACK refusing it before the close, got {packets:02X?}"
    );
    daemon.wait_log("local client (before CONNECT): ");

    // $aws/... from MQTT 5: PUBACK 0x87.
    let shadow = "$aws/things/x/shadow/update";
    let mut v5 = RawClient::handshake(&daemon.socket, true, "shadow5");
    v5.send(&publish_packet(true, shadow, 1, 9, b"{}"));
    let (first, body) = v5.expect_packet("PUBACK");
    assert_eq!(first, 0x40, "PUBACK expected, got {first:02X} {body:02X?}");
    assert_eq!(
        &body[..3],
        &[0, 9, 0x87],
        "PUBACK 9 with reason 0x87: {body:02X?}"
    );
    daemon.wait_log("local client shadow5: publish refused: ");
    // The connection is still usable.
    v5.send(&publish_packet(
        true,
        "ok/after",
        1,
        10,
        b"after the refusal",
    ));
    let (first, body) = v5.expect_packet("PUBACK");
    assert_eq!(
        (first, &body[..2]),
        (0x40, &[0u8, 10][..]),
        "PUBACK 10: {body:02X?}"
    );
    if body.len() > 2 {
        assert_eq!(body[2], 0, "PUBACK 10 reason code");
    }
    console.expect_message("ok/after", b"after the refusal", deadline());

    // $aws/... from MQTT 3.1.1: the connection is closed.
    let mut v311 = RawClient::handshake(&daemon.socket, false, "shadow311");
    v311.send(&publish_packet(false, shadow, 1, 3, b"{}"));
    let packets = v311.expect_closed();
    assert!(
        packets.is_empty(),
        "3.1.1: nothing before the close, got {packets:02X?}"
    );
    daemon.wait_log("local client shadow311: publish refused: ");

    // The original publish socket, beside the endpoint.
    assert_eq!(
        show(&raw_send(&env.smsg(), b"orig/socket\nstill works")),
        "OK\n"
    );
    console.expect_message("orig/socket", b"still works", deadline());
    // And a regular local client.
    local_pub(
        &daemon.tcp(),
        Ver::V311,
        "regular",
        &["-q", "1", "-t", "ok/regular", "-m", "fine"],
    )
    .expect_code(0);
    console.expect_message("ok/regular", b"fine", deadline());

    let (elapsed, read) = silent.join().expect("the silent client's thread");
    match read {
        Ok(0) => {}
        other => panic!(
            "the silent client: expected the daemon to close, got {other:?} after {elapsed:?}"
        ),
    }
    assert!(
        elapsed >= Duration::from_secs(9) && elapsed <= Duration::from_secs(15),
        "the silent client was closed after {elapsed:?}, expected about 10 s"
    );
    daemon.wait_log("no CONNECT within 10 s");
    daemon.expect_never_disconnected();
}
