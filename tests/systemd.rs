//! Under systemd's `Type=notify` (the unit in recipe/): the daemon's
//! datagrams on `$NOTIFY_SOCKET`, read here from a socket of the test's own
//! (this machine's systemd is not asked to run anything). What these tests
//! hold the daemon to: `READY=1` only once its first SUBACK came,
//! `WATCHDOG=1` from the event loop at half the period systemd asked for,
//! `STOPPING=1` when told to stop, and nothing at all without the variable.

mod common;

use common::*;
use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// The datagrams that arrive until `until` says stop (or the deadline).
fn read_until(socket: &UnixDatagram, end: Instant, until: impl Fn(&str) -> bool) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < end {
        let wait = end.saturating_duration_since(Instant::now()).max(POLL);
        socket.set_read_timeout(Some(wait)).expect("timeout");
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = until(&message);
        got.push(message);
        if done {
            break;
        }
    }
    got
}

fn notified_daemon(env: &Env, args: &[OsString], socket: &std::path::Path) -> Proc {
    let mut cmd = env.iotbox(args);
    cmd.env("NOTIFY_SOCKET", socket)
        .env("WATCHDOG_USEC", "200000");
    Proc::spawn("iotbox pubsub (notify)", cmd)
}

#[test]
fn ready_comes_after_the_first_suback_and_the_watchdog_is_pinged_meanwhile() {
    let env = Env::new("notify");
    let mut broker = env.broker();
    let path = env.path("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the test's notify socket");
    let mut args: Vec<OsString> = vec!["pubsub".into()];
    args.extend(env.pubsub_args(&broker, "dev-notify", &["notify/t"]));
    args.extend(["--reconnect_max".into(), "2".into()]);
    let mut daemon = None;
    // The broker is down when the daemon starts: it pings, it is not ready.
    broker.restart(|| {
        daemon = Some(notified_daemon(&env, &args, &path));
        let got = read_until(
            &socket,
            Instant::now() + Duration::from_millis(1500),
            |_| false,
        );
        let pings = got.iter().filter(|m| *m == "WATCHDOG=1").count();
        assert!(
            pings >= 3,
            "watchdog pings every 100 ms while down: {got:?}"
        );
        assert!(
            !got.iter().any(|m| m.contains("READY=1")),
            "READY=1 before any SUBACK: {got:?}"
        );
    });
    let mut daemon = daemon.expect("daemon started");
    let got = read_until(&socket, deadline(), |m| m.contains("READY=1"));
    let ready = got.last().cloned().unwrap_or_default();
    assert_eq!(
        ready, "READY=1\nSTATUS=connected to localhost",
        "READY=1 once subscribed: {got:?}"
    );
    wait_subscribed(&mut daemon);
    daemon.signal(Signal::TERM);
    let got = read_until(&socket, deadline(), |m| m == "STOPPING=1");
    assert_eq!(
        got.last().map(String::as_str),
        Some("STOPPING=1"),
        "{got:?}"
    );
    daemon.expect_exit_code(0, deadline());
}

#[test]
fn a_watchdog_meant_for_another_process_is_not_pinged() {
    let env = Env::new("notifypid");
    let broker = env.broker();
    let path = env.path("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the test's notify socket");
    let mut args: Vec<OsString> = vec!["pubsub".into()];
    args.extend(env.pubsub_args(&broker, "dev-notify-pid", &["notify/t"]));
    let mut cmd = env.iotbox(&args);
    // WATCHDOG_PID names systemd's main process of the unit: here, not us.
    cmd.env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "100000")
        .env("WATCHDOG_PID", "1");
    let mut daemon = Proc::spawn("iotbox pubsub (another's watchdog)", cmd);
    let got = read_until(&socket, deadline(), |m| m.contains("READY=1"));
    assert!(
        got.last().is_some_and(|m| m.starts_with("READY=1")),
        "{got:?}"
    );
    assert!(!got.iter().any(|m| m == "WATCHDOG=1"), "{got:?}");
    daemon.signal(Signal::TERM);
    daemon.expect_exit_code(0, deadline());
}
