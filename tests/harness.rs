//! Checks of the test harness itself (`tests/common`), without iotbox: the
//! PKI is accepted by mosquitto, the broker requires a client certificate
//! from our CA, the console clients move payloads byte for byte, and the
//! process and socket helpers behave. If these fail, the e2e failures mean
//! nothing.

mod common;

use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::thread;

#[test]
fn pki_files_are_pem() {
    let env = Env::new("h-pki");
    let pki = env.pki();
    for (path, kind) in [
        (&pki.ca, "CERTIFICATE"),
        (&pki.server_cert, "CERTIFICATE"),
        (&pki.client_cert, "CERTIFICATE"),
        (&pki.rogue_ca, "CERTIFICATE"),
        (&pki.rogue_cert, "CERTIFICATE"),
        (&pki.server_key, "PRIVATE KEY"),
        (&pki.client_key, "PRIVATE KEY"),
        (&pki.rogue_key, "PRIVATE KEY"),
    ] {
        let text = std::fs::read_to_string(path).expect("read pem");
        assert!(
            text.starts_with(&format!("-----BEGIN {kind}-----")),
            "{}: {text}",
            path.display()
        );
    }
}

#[test]
fn symlinks_point_at_the_binary() {
    let env = Env::new("h-links");
    for name in ["iotbox", "awsapp", "mqtt5_pubsub"] {
        let link = env.path("bin").join(name);
        let meta = std::fs::symlink_metadata(&link).expect("link exists");
        assert!(meta.file_type().is_symlink(), "{}", link.display());
        assert_eq!(std::fs::canonicalize(&link).unwrap(), env.bin());
    }
}

#[test]
fn broker_relays_between_console_clients_over_mtls() {
    let env = Env::new("h-broker");
    let broker = env.broker();
    let mut sub = broker.console_sub("harness/#");

    // Text with newlines, empty, and binary with every byte value.
    let json = b"{\n  \"message\": \"Hello from AWS IoT console\"\n}";
    assert_eq!(json.len(), 45, "the how-to says 45 bytes");
    broker.console_pub("harness/json", json);
    sub.expect_message("harness/json", json, deadline());

    broker.console_pub("harness/empty", b"");
    sub.expect_message("harness/empty", b"", deadline());

    let bin = binary_payload(100 * 1024);
    assert!(bin.contains(&0));
    for b in 0..=255u8 {
        assert!(bin.contains(&b), "byte {b} missing");
    }
    broker.console_pub("harness/bin", &bin);
    sub.expect_message("harness/bin", &bin, deadline());

    // The broker saw a TLS client with our client certificate.
    broker.wait_log(
        "showing a client connection",
        |l| l.contains("New client connected from 127.0.0.1"),
        deadline(),
    );
}

/// A client whose certificate comes from an unrelated CA cannot get in; the
/// broker's log says why. (This is what `pubsub` meets in the refused
/// certificate e2e test.)
#[test]
fn broker_refuses_certificate_from_unrelated_ca() {
    let env = Env::new("h-rogue");
    let broker = env.broker();
    let pki = env.pki();
    let mut cmd = Command::new(find_tool("mosquitto_pub", "MOSQUITTO_PUB"));
    cmd.arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(broker.port.to_string())
        .arg("--cafile")
        .arg(&pki.ca)
        .arg("--cert")
        .arg(&pki.rogue_cert)
        .arg("--key")
        .arg(&pki.rogue_key)
        .arg("-V")
        .arg("mqttv5")
        .arg("-t")
        .arg("x")
        .arg("-m")
        .arg("y");
    let out = run("mosquitto_pub (rogue cert)", cmd, None);
    assert_ne!(out.code(), Some(0), "{}", out.report);
    let line = broker.wait_log(
        "about the refused certificate",
        |l| l.contains("OpenSSL Error") || l.contains("certificate"),
        deadline(),
    );
    println!(
        "broker log: {line}\nmosquitto_pub stderr: {}",
        out.stderr_text()
    );

    // And without any client certificate.
    let mut cmd = Command::new(find_tool("mosquitto_pub", "MOSQUITTO_PUB"));
    cmd.arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(broker.port.to_string())
        .arg("--cafile")
        .arg(&pki.ca)
        .arg("-V")
        .arg("mqttv5")
        .arg("-t")
        .arg("x")
        .arg("-m")
        .arg("y");
    let out = run("mosquitto_pub (no cert)", cmd, None);
    assert_ne!(out.code(), Some(0), "{}", out.report);
    println!("mosquitto_pub stderr: {}", out.stderr_text());
    println!("--- broker log ---\n{}", broker.log());
}

#[test]
fn two_brokers_get_two_ports() {
    let env = Env::new("h-ports");
    let a = env.broker();
    let other = Env::new("h-ports2");
    let b = other.broker();
    assert_ne!(a.port, b.port);
}

#[test]
fn proc_lines_exit_and_stderr() {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("echo one; echo two; echo oops >&2; printf 'no newline'; exit 3");
    let mut p = Proc::spawn("sh", cmd);
    p.expect_line("one", deadline());
    p.expect_line("two", deadline());
    p.wait_stderr_line("oops", |l| l == "oops", deadline());
    p.expect_exit_code(3, deadline());
    assert_eq!(p.stdout_bytes(), b"one\ntwo\nno newline");

    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("echo a; echo wanted; echo c");
    let mut p = Proc::spawn("sh", cmd);
    p.wait_for_line("wanted", deadline());
    assert_eq!(p.next_line(deadline()), "c");

    let out = run("cat", Command::new("cat"), Some(b"stdin\0bytes"));
    out.expect_code(0);
    assert_eq!(out.stdout, b"stdin\0bytes");
}

#[test]
fn proc_signal_by_pid() {
    let mut cmd = Command::new("sh");
    // exec: the PID is sleep's, the signal reaches it directly.
    cmd.arg("-c").arg("exec sleep 600");
    let mut p = Proc::spawn("sleep", cmd);
    p.signal(Signal::TERM);
    let st = p.wait_exit(deadline());
    assert_eq!(describe_status(st), "killed by signal 15");
}

#[test]
#[should_panic(expected = "did not exit within the deadline")]
fn proc_wait_has_a_deadline() {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("exec sleep 600");
    let mut p = Proc::spawn("sleep", cmd);
    p.wait_exit(std::time::Instant::now() + std::time::Duration::from_millis(50));
}

#[test]
fn socket_helpers() {
    let env = Env::new("h-sock");

    // raw_send against a fake daemon that answers OK.
    let path = env.path("fake-smsg");
    let l = UnixListener::bind(&path).unwrap();
    let t = thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        c.write_all(b"OK\n").unwrap();
        got
    });
    assert_eq!(raw_send(&path, b"t/x\npayload"), b"OK\n");
    assert_eq!(t.join().unwrap(), b"t/x\npayload");

    // DeliveryListener gets each connection's bytes as one message.
    let rmsg = env.rmsg();
    let mut d = DeliveryListener::bind(&rmsg);
    raw_send_and_close(&rmsg, b"first");
    assert_eq!(d.next(deadline()), b"first");
    raw_send_and_close(&rmsg, &binary_payload(70_000));
    assert_eq!(d.next(deadline()), binary_payload(70_000));

    // Tripwires see connections, and their absence.
    let tw = Tripwire::bind(&env.path("tw"));
    assert!(!tw.was_connected());
    let _c = std::os::unix::net::UnixStream::connect(&tw.path).unwrap();
    assert!(tw.was_connected());
    let tcp = TcpTripwire::bind();
    assert!(!tcp.was_connected());
    let _c = std::net::TcpStream::connect(("127.0.0.1", tcp.port)).unwrap();
    assert!(tcp.was_connected());
}

/// Without mosquitto the e2e tests fail (never skip) and say how to install it.
#[test]
#[should_panic(expected = "apt-get install mosquitto mosquitto-clients")]
fn missing_tool_fails_with_install_hint() {
    find_tool(
        "mosquitto-not-installed-here",
        "IOTBOX_TEST_NO_SUCH_VARIABLE",
    );
}
