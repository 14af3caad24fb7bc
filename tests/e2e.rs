//! End-to-end tests: the real binary against a real mosquitto 2 with mutual
//! TLS on 127.0.0.1: the daemon, the two sockets, `send` and `recv` as the
//! README describes them, and the how-to's session. Each test has its own
//! broker, port and temp dir; `mosquitto_sub`/`mosquitto_pub` play the AWS
//! IoT console.

mod common;

use common::*;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

/// The payload the how-to publishes from the AWS IoT console's MQTT test
/// client; `awsapp recv` printed `Receive 45 Byte` for it.
const CONSOLE_JSON: &[u8] = b"{\n  \"message\": \"Hello from AWS IoT console\"\n}";

/// Runs `f` on every item at the same time, one thread each; the results
/// in the items' order.
fn at_once<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|item| s.spawn(|| f(item))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a thread of at_once"))
            .collect()
    })
}

/// The how-to's `message.txt`: topic line, then the JSON payload (as `cat`
/// shows it, so with a final newline, which is part of the payload).
const MESSAGE_TXT: &[u8] = b"sdk/test/java\n{\n  \"message\": \"Hello from Raspberry Pi\"\n}\n";
const MESSAGE_TXT_PAYLOAD: &[u8] = b"{\n  \"message\": \"Hello from Raspberry Pi\"\n}\n";

/// The whole how-to (README, "Using it with AWS IoT Core"), through the
/// symlink names it used:
/// `awsapp recv`, `mqtt5_pubsub`, the console publishing to sdk/test/python,
/// `awsapp send ./message.txt` to sdk/test/java.
#[test]
fn howto_flow_through_symlink_names() {
    assert_eq!(CONSOLE_JSON.len(), 45, "the how-to shows `Receive 45 Byte`");
    let env = Env::new("howto");
    let broker = env.broker();
    let smsg = env.smsg();
    let rmsg = env.rmsg();

    // Terminal 2: awsapp recv /tmp/aws_socket_rmsg N (here: 2 messages).
    let mut recv = Proc::spawn(
        "awsapp recv",
        env.awsapp(&[OsStr::new("recv"), rmsg.as_os_str(), OsStr::new("2")]),
    );
    recv.expect_line("wait message...", deadline());

    // Terminal 1: mqtt5_pubsub with the how-to's flags (plus the test's
    // broker, CA and socket paths).
    let args = env.pubsub_args(&broker, "basicPubSub", &["sdk/test/python"]);
    let mut daemon = env.spawn_pubsub(Via::Mqtt5Pubsub, &args);
    daemon.expect_line("Mqtt5 Client attempting connection...", deadline());
    daemon.expect_line(
        "Mqtt5 Client connection succeed, clientid: basicPubSub.",
        deadline(),
    );
    daemon.expect_line("Subscription Success.", deadline());

    // The AWS console subscribes to sdk/test/java (for the send part below).
    let mut console = broker.console_sub("sdk/test/java");

    // The AWS console publishes to sdk/test/python.
    broker.console_pub("sdk/test/python", CONSOLE_JSON);

    // Terminal 2 shows it exactly as the how-to does.
    recv.expect_line("Receive 45 Byte", deadline());
    recv.expect_line("{", deadline());
    recv.expect_line("  \"message\": \"Hello from AWS IoT console\"", deadline());
    recv.expect_line("}", deadline());
    recv.expect_line("wait message...", deadline());

    // The daemon's stdout, as the SDK sample printed it: topic, colon,
    // payload, newline.
    let mut expected = b"Publish received on topic sdk/test/python:".to_vec();
    expected.extend_from_slice(CONSOLE_JSON);
    expected.push(b'\n');
    daemon.wait_stdout_contains(&expected, deadline());

    // Terminal 3: ./awsapp send /tmp/aws_socket_smsg ./message.txt
    env.write("message.txt", MESSAGE_TXT);
    let out = run(
        "awsapp send",
        env.awsapp(&[
            OsStr::new("send"),
            smsg.as_os_str(),
            OsStr::new("./message.txt"),
        ]),
        None,
    );
    out.expect_code(0)
        .expect_stdout(&format!("send message to {}.\n", smsg.display()));

    // The AWS console receives exactly the payload, on the file's topic.
    console.expect_message("sdk/test/java", MESSAGE_TXT_PAYLOAD, deadline());
    daemon.wait_for_line("Publish Succeed.", deadline());

    // A second console message ends `awsapp recv ... 2`, which then exits
    // 0 having printed exactly what the original C tool printed.
    broker.console_pub("sdk/test/python", b"second");
    recv.expect_exit_code(0, deadline());
    let expected_recv = "wait message...\n\
                         Receive 45 Byte\n\
                         {\n  \"message\": \"Hello from AWS IoT console\"\n}\n\
                         wait message...\n\
                         Receive 6 Byte\n\
                         second\n";
    if recv.stdout_text() != expected_recv {
        recv.fail(&format!(
            "stdout differs from the original tool's; expected:\n{}",
            numbered(expected_recv)
        ));
    }
}

/// The original C `awsapp send` writes `topic\npayload` and closes at once,
/// never reading a status (a client that closes without reading is fine):
/// the message is still published, and the daemon survives the broken pipe.
#[test]
fn raw_client_that_closes_without_reading_is_published() {
    let env = Env::new("rawclose");
    let broker = env.broker();
    let mut daemon = env.start_pubsub(&broker, "raw-close", &["sdk/test/python"]);
    let mut console = broker.console_sub("raw/#");

    raw_send_and_close(&env.smsg(), b"raw/fire-and-forget\nhello from C");
    console.expect_message("raw/fire-and-forget", b"hello from C", deadline());

    // Several more in a row: the daemon ignored the broken pipes.
    for i in 0..5 {
        raw_send_and_close(&env.smsg(), format!("raw/n\nmessage {i}").as_bytes());
        console.expect_message("raw/n", format!("message {i}").as_bytes(), deadline());
    }
    // And a client that waits still gets its status.
    assert_eq!(raw_send(&env.smsg(), b"raw/last\nlast"), b"OK\n");
    console.expect_message("raw/last", b"last", deadline());
    assert!(!daemon.has_exited(), "{}", daemon.report());
}

/// A client that shuts down its write side and reads gets exactly `OK\n`;
/// invalid messages get one `ERR <reason>\n` line and are not published
/// (README, "The message file and the sockets").
#[test]
fn publish_socket_status_lines() {
    let env = Env::new("status");
    let broker = env.broker();
    let _daemon = env.start_pubsub(&broker, "status", &["sdk/test/python"]);
    // Everything anyone publishes.
    let mut console = broker.console_sub("#");

    assert_eq!(
        show(&raw_send(&env.smsg(), b"status/ok\npayload")),
        "OK\n",
        "status of a valid message"
    );
    console.expect_message("status/ok", b"payload", deadline());

    // Empty payload is allowed.
    assert_eq!(show(&raw_send(&env.smsg(), b"status/empty\n")), "OK\n");
    console.expect_message("status/empty", b"", deadline());

    for (what, message) in [
        ("a '+' wildcard in the topic", &b"sdk/+/python\npayload"[..]),
        ("a '#' wildcard in the topic", &b"sdk/test/#\npayload"[..]),
        ("an empty topic line", &b"\npayload"[..]),
        ("a NUL in the topic", &b"sdk/te\0st\npayload"[..]),
        ("a CR at the end of the topic", &b"sdk/test\r\npayload"[..]),
        ("a topic that is not UTF-8", &b"sdk/\xff\xfe\npayload"[..]),
        ("a topic longer than 256 bytes", &long_topic_message()[..]),
    ] {
        let reply = raw_send(&env.smsg(), message);
        let text = String::from_utf8_lossy(&reply).into_owned();
        assert!(
            text.starts_with("ERR ") && text.len() > 4 && text.ends_with('\n'),
            "{what}: expected `ERR <reason>\\n`, got {text:?}"
        );
        assert_eq!(
            text.matches('\n').count(),
            1,
            "{what}: one status line, got {text:?}"
        );
    }

    // Nothing of the invalid ones reached the broker: the next message the
    // console sees is this one.
    assert_eq!(
        show(&raw_send(&env.smsg(), b"status/after\nsentinel")),
        "OK\n"
    );
    console.expect_message("status/after", b"sentinel", deadline());
}

fn long_topic_message() -> Vec<u8> {
    let mut m = vec![b'a'; 257];
    m.extend_from_slice(b"\npayload");
    m
}

/// 100 KiB with NULs and every byte value, byte for byte both ways:
/// `iotbox send` → daemon → broker → console, and console (`mosquitto_pub
/// -f`) → broker → daemon → delivery socket (a payload is any bytes).
#[test]
fn binary_payload_100k_both_directions() {
    let env = Env::new("binary");
    let broker = env.broker();
    let payload = binary_payload(100 * 1024);

    let mut delivered = DeliveryListener::bind(&env.rmsg());
    let _daemon = env.start_pubsub(&broker, "binary", &["bin/in"]);
    let mut console = broker.console_sub("bin/out");

    // Out: a message file whose payload is binary.
    let mut message = b"bin/out\n".to_vec();
    message.extend_from_slice(&payload);
    let file = env.write("binary.msg", &message);
    env.send(&env.smsg(), &file)
        .expect_code(0)
        .expect_stdout(&format!("send message to {}.\n", env.smsg().display()));
    console.expect_message("bin/out", &payload, deadline());

    // In: the console publishes the same bytes; the delivery socket gets the
    // payload only (no --deliver_topic), in one connection.
    broker.console_pub("bin/in", &payload);
    let got = delivered.next(deadline());
    assert!(
        got == payload,
        "delivered {} bytes, expected {} (first difference at {:?})",
        got.len(),
        payload.len(),
        got.iter().zip(&payload).position(|(a, b)| a != b)
    );
}

/// Twenty `iotbox send` at once: all exit 0 with the how-to's line, all
/// twenty payloads reach the console (many clients may write at once).
#[test]
fn twenty_concurrent_senders() {
    let env = Env::new("twenty");
    let broker = env.broker();
    let _daemon = env.start_pubsub(&broker, "twenty", &["sdk/test/python"]);
    let mut console = broker.console_sub("load/#");
    let smsg = env.smsg();

    let files: Vec<_> = (0..20)
        .map(|i| {
            env.write(
                &format!("m{i}.txt"),
                format!("load/{i}\npayload {i}").as_bytes(),
            )
        })
        .collect();
    let outputs = at_once(&files, |f| env.send(&smsg, f));
    for out in &outputs {
        out.expect_code(0)
            .expect_stdout(&format!("send message to {}.\n", smsg.display()));
    }

    let mut got: Vec<(String, Vec<u8>)> = (0..20)
        .map(|_| {
            let m = console.next_message(deadline());
            (m.topic, m.payload)
        })
        .collect();
    got.sort();
    let mut expected: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("load/{i}"), format!("payload {i}").into_bytes()))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
}

/// Ten `iotbox send` at once with 100 KiB payloads under `--qos 0` (just
/// under the 1 MiB the daemon queues): the session refills its output while
/// the transport takes it, and those bytes must go out at once, not wait for
/// an unrelated event such as the keep-alive. Every send exits 0 long before
/// its timeout.
#[test]
fn large_qos0_sends_all_flow_without_stalling() {
    const N: u8 = 10;
    let env = Env::new("stall");
    let broker = env.broker();
    let mut args = env.pubsub_args(&broker, "stall", &["sdk/test/python"]);
    args.extend(os_args(["--qos", "0"]));
    let mut daemon = env.spawn_pubsub(Via::Iotbox, &args);
    wait_subscribed(&mut daemon);
    let mut console = broker.console_sub("big/#");
    let smsg = env.smsg();
    let files: Vec<_> = (0..N)
        .map(|i| {
            let mut m = format!("big/{i}\n").into_bytes();
            m.extend(std::iter::repeat_n(b'a' + (i % 26), 100 * 1024));
            env.write(&format!("big{i}.txt"), &m)
        })
        .collect();
    let started = Instant::now();
    let outputs = at_once(&files, |f| {
        run(
            "iotbox send --timeout 8",
            env.iotbox(&[
                OsStr::new("send"),
                OsStr::new("--timeout"),
                OsStr::new("8"),
                smsg.as_os_str(),
                f.as_os_str(),
            ]),
            None,
        )
    });
    for out in &outputs {
        out.expect_code(0);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "{N} sends took {took:?}: output waited for something else"
    );
    let mut topics: Vec<String> = (0..N)
        .map(|_| {
            let m = console.next_message(deadline());
            assert_eq!(m.payload.len(), 100 * 1024, "{}", m.topic);
            m.topic
        })
        .collect();
    topics.sort();
    let mut expected: Vec<String> = (0..N).map(|i| format!("big/{i}")).collect();
    expected.sort();
    assert_eq!(topics, expected);
}

/// A broker that refuses the client certificate (signed by an unrelated CA)
/// is fatal at the first connection: exit 1, a line about the certificate,
/// never `Subscription Success.` (README, "`pubsub` flags", life cycle).
#[test]
fn refused_client_certificate_is_fatal() {
    let env = Env::new("refused");
    let broker = env.broker();
    let pki = env.pki();
    let args = env.pubsub_args_as(
        &broker,
        "refused",
        &["sdk/test/python"],
        &pki.rogue_cert,
        &pki.rogue_key,
    );
    let mut daemon = env.spawn_pubsub(Via::Iotbox, &args);
    daemon.expect_exit_code(1, deadline());

    let stdout = daemon.stdout_text();
    if stdout.contains("Subscription Success.") {
        daemon.fail("printed `Subscription Success.` with a refused certificate");
    }
    if !daemon
        .stderr_text()
        .lines()
        .any(|l| l.to_lowercase().contains("certificate"))
    {
        daemon.fail("no line on stderr mentions the certificate");
    }
    // The broker did refuse it (and logged why).
    broker.wait_log(
        "refusing the certificate",
        |l| l.contains("certificate verify failed"),
        deadline(),
    );
}

/// SIGTERM: DISCONNECT sent, publish socket removed, `Mqtt5 Client
/// stopped.` last on stdout, exit 0 (README, "`pubsub` flags", life cycle).
#[test]
fn sigterm_stops_cleanly() {
    let env = Env::new("sigterm");
    let broker = env.broker();
    let mut daemon = env.start_pubsub(&broker, "sigterm", &["sdk/test/python"]);
    assert!(
        std::fs::symlink_metadata(env.smsg()).is_ok(),
        "publish socket exists while running"
    );

    daemon.signal(Signal::TERM);
    daemon.expect_exit_code(0, deadline());

    let stdout = daemon.stdout_text();
    if stdout.lines().last() != Some("Mqtt5 Client stopped.") || !stdout.ends_with('\n') {
        daemon.fail("stdout does not end with `Mqtt5 Client stopped.`");
    }
    assert!(
        std::fs::symlink_metadata(env.smsg()).is_err(),
        "publish socket {} still exists after SIGTERM",
        env.smsg().display()
    );
    // A clean MQTT DISCONNECT, not a dropped connection.
    broker.wait_log(
        "showing the client's DISCONNECT",
        |l| l.ends_with(": Received DISCONNECT from sigterm"),
        deadline(),
    );
}

/// A broker that refuses the CONNECT (here: no anonymous clients) at the
/// first connection, where that is fatal: exit 1 with the reason in words,
/// before `Subscription Success.`, and the publish socket is gone.
#[test]
fn refused_connect_is_fatal_at_the_first_connection() {
    let env = Env::new("connack");
    let broker = env.broker_with("allow_anonymous false");
    let args = env.pubsub_args(&broker, "refused-connect", &["sdk/test/python"]);
    let mut daemon = env.spawn_pubsub(Via::Iotbox, &args);
    daemon.expect_exit_code(1, deadline());
    if daemon.stdout_text().contains("Subscription Success.") {
        daemon.fail("printed `Subscription Success.` although the CONNECT was refused");
    }
    if !daemon
        .stderr_text()
        .lines()
        .any(|l| l.contains("refused the connection") && l.contains("not authorized"))
    {
        daemon.fail("stderr does not say the broker refused the connection and why");
    }
    if env.smsg().exists() {
        daemon.fail("the publish socket was left behind");
    }
}

/// `--max_rate 2`: a burst of 6 goes out as 2 at once, then one per half
/// second, every one confirmed; none is dropped (the limit delays, it never
/// drops). Only a lower bound on the time is checked: the limit must hold on
/// any machine.
#[test]
fn max_rate_paces_a_burst() {
    let env = Env::new("rate");
    let broker = env.broker();
    let mut args = env.pubsub_args(&broker, "rate", &["sdk/test/python"]);
    args.extend(["--max_rate".into(), "2".into()]);
    let mut daemon = env.spawn_pubsub(Via::Iotbox, &args);
    wait_subscribed(&mut daemon);
    let mut console = broker.console_sub("rate/#");
    let smsg = env.smsg();
    let start = std::time::Instant::now();
    let outputs = at_once(&[0, 1, 2, 3, 4, 5], |i| {
        let file = env.write(&format!("r{i}.txt"), format!("rate/{i}\n{i}").as_bytes());
        env.send(&smsg, &file)
    });
    for out in &outputs {
        out.expect_code(0);
    }
    let elapsed = start.elapsed();
    for _ in 0..6 {
        console.next_message(deadline());
    }
    assert!(
        elapsed >= std::time::Duration::from_millis(1500),
        "6 publishes at 2/s were all confirmed after {elapsed:?}"
    );
}

/// `pubsub --deliver_topic` with `recv --topic`: the topic of each message
/// arrives with it (`topic\npayload` on the delivery socket, printed as
/// `Topic: <topic>` before the payload).
#[test]
fn deliver_topic_reaches_recv_topic() {
    let env = Env::new("delivertopic");
    let broker = env.broker();
    let rmsg = env.rmsg();
    let mut recv = Proc::spawn(
        "awsapp recv --topic",
        env.awsapp(&[
            OsStr::new("recv"),
            OsStr::new("--topic"),
            rmsg.as_os_str(),
            OsStr::new("1"),
        ]),
    );
    recv.expect_line("wait message...", deadline());
    let mut args = env.pubsub_args(&broker, "delivertopic", &["sensors/#"]);
    args.push("--deliver_topic".into());
    let mut daemon = env.spawn_pubsub(Via::Iotbox, &args);
    wait_subscribed(&mut daemon);
    broker.console_pub("sensors/room1", b"21.5");
    recv.expect_line("Topic: sensors/room1", deadline());
    recv.expect_line("Receive 4 Byte", deadline());
    recv.expect_line("21.5", deadline());
    recv.expect_exit_code(0, deadline());
}

/// `--proxy_host`/`--proxy_port`: the connection goes through an HTTP
/// CONNECT tunnel, which is asked for the broker by name (the proxy
/// resolves the endpoint).
#[test]
fn through_an_http_connect_proxy() {
    let env = Env::new("proxy");
    let broker = env.broker();
    let proxy = ConnectProxy::start();
    let mut args = env.pubsub_args(&broker, "proxied", &["sdk/test/python"]);
    args.extend([
        "--proxy_host".into(),
        "127.0.0.1".into(),
        "--proxy_port".into(),
        proxy.port.to_string().into(),
    ]);
    let mut daemon = env.spawn_pubsub(Via::Mqtt5Pubsub, &args);
    wait_subscribed(&mut daemon);
    let mut console = broker.console_sub("via/proxy");
    let file = env.write("m.txt", b"via/proxy\nthrough the tunnel");
    env.send(&env.smsg(), &file).expect_code(0);
    console.expect_message("via/proxy", b"through the tunnel", deadline());
    assert_eq!(
        proxy.requests(),
        vec![format!("CONNECT localhost:{} HTTP/1.1", broker.port)]
    );
}

/// Messages that arrive while no reader listens on the delivery socket wait,
/// and reach the reader that appears later, in order (README, "The message
/// file and the sockets").
#[test]
fn messages_wait_for_a_reader() {
    let env = Env::new("noreader");
    let broker = env.broker();
    let daemon = env.start_pubsub(&broker, "noreader", &["sdk/test/python"]);
    for m in ["m1", "m2", "m3"] {
        broker.console_pub("sdk/test/python", m.as_bytes());
    }
    daemon.wait_stderr_line(
        "saying no reader listens",
        |l| l.contains("no reader on"),
        deadline(),
    );
    let mut recv = Proc::spawn(
        "awsapp recv",
        env.awsapp(&[OsStr::new("recv"), env.rmsg().as_os_str(), OsStr::new("3")]),
    );
    for m in ["m1", "m2", "m3"] {
        recv.expect_line("wait message...", deadline());
        recv.expect_line("Receive 2 Byte", deadline());
        recv.expect_line(m, deadline());
    }
    recv.expect_exit_code(0, deadline());
}

/// `--count N` (the SDK sample's flag): stop cleanly after N publishes.
#[test]
fn count_stops_after_n_publishes() {
    let env = Env::new("count");
    let broker = env.broker();
    let mut args = env.pubsub_args(&broker, "count", &["sdk/test/python"]);
    args.extend(["--count".into(), "2".into()]);
    let mut daemon = env.spawn_pubsub(Via::Iotbox, &args);
    wait_subscribed(&mut daemon);
    for i in 0..2 {
        let file = env.write(&format!("c{i}.txt"), format!("count/{i}\n{i}").as_bytes());
        env.send(&env.smsg(), &file).expect_code(0);
    }
    daemon.expect_exit_code(0, deadline());
    let stdout = daemon.stdout_text();
    assert_eq!(stdout.matches("Publish Succeed.").count(), 2, "{stdout}");
    assert!(stdout.ends_with("Mqtt5 Client stopped.\n"), "{stdout}");
}

/// SIGHUP reloads certificate, key and CA; a broken file is refused and the
/// daemon goes on with what it had (the next connection uses what was
/// loaded last).
#[test]
fn sighup_reloads_and_keeps_working_on_a_broken_file() {
    let env = Env::new("sighup");
    let broker = env.broker();
    let pki = env.pki();
    // The daemon's own copies, so the test can break one.
    let cert = env.write("device.pem", &std::fs::read(&pki.client_cert).unwrap());
    let key = env.write("device.key", &std::fs::read(&pki.client_key).unwrap());
    let args = env.pubsub_args_as(&broker, "sighup", &[], &cert, &key);
    let mut daemon = env.spawn_pubsub(Via::Iotbox, &args);
    wait_subscribed(&mut daemon);
    daemon.signal(Signal::HUP);
    daemon.wait_stderr_line(
        "saying it reloaded",
        |l| l.contains("SIGHUP: reloaded"),
        deadline(),
    );
    std::fs::write(&key, b"not a key").unwrap();
    daemon.signal(Signal::HUP);
    daemon.wait_stderr_line(
        "saying the reload failed",
        |l| l.contains("reload failed") && l.contains("device.key"),
        deadline(),
    );
    let mut console = broker.console_sub("after/hup");
    let file = env.write("m.txt", b"after/hup\nstill working");
    env.send(&env.smsg(), &file).expect_code(0);
    console.expect_message("after/hup", b"still working", deadline());
}

/// The broker crashes and comes back: the daemon says it lost the
/// connection, keeps a message written meanwhile (answered `QUEUED` at once:
/// in the spool, sent later), reconnects with backoff, subscribes again and
/// publishes it; the message comes back to it through its own subscription
/// (README, "`pubsub` flags", life cycle: reconnect with backoff,
/// subscriptions restored, messages kept while the broker is unreachable).
#[test]
fn survives_a_broker_restart() {
    let env = Env::new("restart");
    let mut broker = env.broker();
    let mut delivered = DeliveryListener::bind(&env.rmsg());
    let mut daemon = env.start_pubsub(&broker, "restart", &["fault/#"]);
    let mut client = None;
    broker.restart(|| {
        daemon.wait_line(
            "saying the connection was lost",
            |l| l.starts_with("Mqtt5 Client disconnection with reason: "),
            deadline(),
        );
        // Written while the broker is away: the daemon must keep it.
        let mut c = UnixStream::connect(env.smsg()).expect("connect publish socket");
        c.write_all(b"fault/x\nqueued while the broker was down")
            .expect("write message");
        c.shutdown(std::net::Shutdown::Write).expect("shutdown");
        client = Some(c);
    });
    daemon.wait_for_line("Subscription Success.", deadline());
    let mut client = client.expect("message written");
    client.set_read_timeout(Some(timeout())).unwrap();
    let mut status = String::new();
    client.read_to_string(&mut status).expect("status line");
    assert_eq!(status, "QUEUED\n", "the link is down: kept, not confirmed");
    assert_eq!(
        delivered.next(deadline()),
        b"queued while the broker was down"
    );
}
