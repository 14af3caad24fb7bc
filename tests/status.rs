//! `iotbox status` and the daemon's local-only topic `$iotbox/status`: the
//! real binary against mosquitto with mutual TLS. What these tests hold the
//! daemon to: one JSON object to each local subscriber of `$iotbox/status`,
//! never anything on that topic upstream; `iotbox status` exits 0 while
//! connected, 1 when not (or no daemon), 3 when no answer comes in time.

mod common;

use common::*;
use std::ffi::OsString;
use std::os::unix::net::UnixListener;
use std::process::Command;

fn status(env: &Env, extra: &[&str]) -> Output {
    let socket = env.local_socket();
    let mut args: Vec<OsString> = vec!["status".into(), "--socket".into(), socket.into()];
    args.extend(extra.iter().map(OsString::from));
    env.run_iotbox(&args)
}

#[test]
fn status_while_connected_and_while_the_broker_is_down() {
    let env = Env::new("status");
    let mut broker = env.broker();
    let mut args = env.pubsub_args(&broker, "dev-status", &["status/t"]);
    args.extend(["--thing_name".into(), "pump-7".into()]);
    let mut daemon = env.spawn_pubsub(Via::Iotbox, &args);
    wait_subscribed(&mut daemon);

    let out = status(&env, &[]);
    out.expect_code(0);
    let text = out.stdout_text();
    for line in [
        "state: connected",
        "client id: dev-status",
        "thing name: pump-7",
        "reconnects: 0",
        "local clients: 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("since: ") && l.ends_with(" s ago)")),
        "{text}"
    );
    // The test certificates are valid for two days: the status counts what
    // is left, and the log warns (from 30 days before).
    assert!(
        text.lines()
            .any(|l| l == "certificate days left: 1" || l == "certificate days left: 2"),
        "{text}"
    );
    daemon.wait_stderr_line(
        "warning that the certificate expires",
        |l| l.contains("WARN the device certificate expires in "),
        deadline(),
    );
    let json = status(&env, &["--json"]);
    json.expect_code(0);
    let json = json.stdout_text();
    assert!(
        json.starts_with("{\"state\":\"connected\",") && json.trim_end().ends_with('}'),
        "{json}"
    );

    broker.restart(|| {
        daemon.wait_line(
            "saying the connection was lost",
            |l| l.starts_with("Mqtt5 Client disconnection with reason: "),
            deadline(),
        );
        let out = status(&env, &[]);
        out.expect_code(1);
        assert!(
            out.stdout_text().lines().any(|l| l == "state: connecting"),
            "{}",
            out.stdout_text()
        );
        assert!(
            out.stderr_text().contains("not connected"),
            "{}",
            out.stderr_text()
        );
    });
    // Back: connected again, and it counts the reconnect.
    daemon.wait_for_line("Subscription Success.", deadline());
    let out = status(&env, &[]);
    out.expect_code(0);
    assert!(
        out.stdout_text().lines().any(|l| l == "reconnects: 1"),
        "{}",
        out.stdout_text()
    );
    // The daemon's own topic never went to the broker.
    assert!(!broker.log().contains("$iotbox"), "{}", broker.log());
}

#[test]
fn any_mqtt_client_reads_the_status_and_none_may_publish_to_it() {
    let env = Env::new("statussub");
    let broker = env.broker();
    let _daemon = env.start_pubsub(&broker, "dev-statussub", &["status/t"]);
    let socket = env.local_socket();
    let mut sub = Command::new(find_tool("mosquitto_sub", "MOSQUITTO_SUB"));
    sub.arg("--unix")
        .arg(&socket)
        .args(["-V", "5", "-t", "$iotbox/status", "-C", "1", "-W", "10"]);
    let out = run("mosquitto_sub $iotbox/status", sub, None);
    out.expect_code(0);
    assert!(
        out.stdout_text().starts_with("{\"state\":\"connected\","),
        "{}",
        out.stdout_text()
    );
    // A publish to it is refused (MQTT 5: PUBACK 0x87, which mosquitto_pub
    // reports), and nothing reaches the broker.
    let mut publish = Command::new(find_tool("mosquitto_pub", "MOSQUITTO_PUB"));
    publish.arg("--unix").arg(&socket).args([
        "-V",
        "5",
        "-q",
        "1",
        "-t",
        "$iotbox/status",
        "-m",
        "forged",
        "-d",
    ]);
    let out = run("mosquitto_pub $iotbox/status", publish, None);
    let said = format!("{}{}", out.stdout_text(), out.stderr_text());
    assert!(said.contains("RC:135"), "PUBACK 0x87 expected: {said}");
    assert!(!broker.log().contains("$iotbox"), "{}", broker.log());
}

#[test]
fn no_daemon_is_exit_1_and_no_answer_is_exit_3() {
    let env = Env::new("statusnone");
    let out = status(&env, &[]);
    out.expect_code(1);
    let line = out.expect_one_stderr_line();
    assert!(line.contains("cannot connect to"), "{line}");
    // Something listens there and never answers.
    let _listener = UnixListener::bind(env.local_socket()).expect("bind");
    let out = status(&env, &["--timeout", "1"]);
    out.expect_code(3);
    let line = out.expect_one_stderr_line();
    assert!(
        line.contains("no answer from the daemon at") && line.contains("(CONNACK)"),
        "{line}"
    );
}
