//! The spool end to end (README, "What survives"): the real binary against
//! mosquitto with mutual TLS on 127.0.0.1, the daemon killed with SIGKILL,
//! its files damaged, its spool filled. Each daemon's spool is the test's
//! own `DIR/spool`.
//!
//! What these tests hold the daemon to: a message answered `OK` or `QUEUED`
//! on the publish socket, and a message from the broker the daemon
//! acknowledged, reach their destination after any crash of the daemon,
//! in order; a full spool makes new clients wait instead of refusing them.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

const TOPIC: &str = "spool/test";

/// `TOPIC\npayload`
fn message(payload: &str) -> Vec<u8> {
    format!("{TOPIC}\n{payload}").into_bytes()
}

/// Waits for the daemon's line saying the broker connection is gone.
fn wait_lost(daemon: &mut Proc) {
    daemon.wait_line(
        "saying the connection was lost",
        |l| l.starts_with("Mqtt5 Client disconnection with reason: "),
        deadline(),
    );
}

/// The single segment file of `direction` (`out` or `in`) in `spool`.
fn segment(spool: &std::path::Path, direction: &str) -> std::path::PathBuf {
    let mut found: Vec<_> = fs::read_dir(spool)
        .expect("read the spool directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.starts_with(&format!("{direction}-")) && n.ends_with(".seg"))
        })
        .collect();
    assert_eq!(found.len(), 1, "segments of {direction}: {found:?}");
    found.remove(0)
}

/// With the broker down: 4 KB messages `NNN xxx...`, one client at a time,
/// each answered `QUEUED`, until the daemon's log says `stop` (fewer than
/// `max` of them). The client sent then is not answered yet: returns how
/// many were queued and where that client's reply will come.
fn queue_until(
    env: &Env,
    daemon: &Proc,
    stop: &str,
    max: usize,
) -> (usize, mpsc::Receiver<Option<Vec<u8>>>) {
    let filler = "x".repeat(4000);
    let mut queued = 0;
    loop {
        let (tx, rx) = mpsc::channel();
        let smsg = env.smsg();
        let body = message(&format!("{queued:03} {filler}"));
        thread::spawn(move || {
            let _ = tx.send(try_send(&smsg, &body));
        });
        let end = deadline();
        loop {
            if let Ok(reply) = rx.try_recv() {
                assert_eq!(reply.as_deref(), Some(&b"QUEUED\n"[..]), "message {queued}");
                queued += 1;
                break;
            }
            if daemon.stderr_text().contains(stop) {
                return (queued, rx);
            }
            assert!(
                Instant::now() < end,
                "neither an answer nor {stop:?} in the log"
            );
            thread::sleep(POLL);
        }
        assert!(queued < max, "{queued} messages of 4 KB before {stop:?}");
    }
}

/// A burst of write-and-close clients (the original `awsapp send` never
/// reads its status) is published, not refused: 20,000 of them, one after
/// the other, against a connected daemon, and every one reaches a
/// subscriber.
#[test]
fn a_burst_of_write_and_close_clients_all_arrive() {
    const N: usize = 20_000;
    let env = Env::new("s-burst");
    // Room at the broker for a subscriber that falls behind (mosquitto's
    // default keeps 1000 messages for it and drops the rest).
    let broker = env.broker_with("max_queued_messages 100000");
    let mut sub = broker.console_sub(TOPIC);
    let _daemon = env.start_pubsub(&broker, "spool-burst", &["spool/none"]);
    for i in 0..N {
        raw_send_and_close(&env.smsg(), &message(&format!("burst {i}")));
    }
    let mut seen = BTreeSet::new();
    for _ in 0..N {
        let m = sub.next_message(deadline());
        let text = String::from_utf8_lossy(&m.payload).into_owned();
        assert!(seen.insert(text.clone()), "{text:?} arrived twice");
    }
    for i in 0..N {
        assert!(
            seen.contains(&format!("burst {i}")),
            "burst {i} never arrived"
        );
    }
}

/// Messages accepted while the broker is down survive `kill -9` of the
/// daemon: 300 are answered `QUEUED`, the daemon is killed, `iotbox spool`
/// counts them, and a new daemon publishes all 300, in order.
#[test]
fn messages_queued_while_the_broker_is_down_survive_kill_9() {
    const N: usize = 300;
    let env = Env::new("s-kill-out");
    let mut broker = env.broker();
    let mut daemon = env.start_pubsub(&broker, "spool-kill-out", &["spool/none"]);
    broker.restart(|| {
        wait_lost(&mut daemon);
        for i in 0..N {
            let reply = raw_send(&env.smsg(), &message(&format!("queued {i}")));
            assert_eq!(
                String::from_utf8_lossy(&reply),
                "QUEUED\n",
                "message {i} while the broker is down"
            );
        }
        daemon.signal(Signal::KILL);
        daemon.wait_exit(deadline());
    });
    let spool = env.run_iotbox(&[OsStr::new("spool"), env.spool().as_os_str()]);
    spool.expect_code(0);
    let text = spool.stdout_text();
    assert!(
        text.contains(&format!("for the broker: {N} message(s)")),
        "iotbox spool says:\n{text}"
    );
    let mut sub = broker.console_sub(TOPIC);
    let _daemon = env.start_pubsub(&broker, "spool-kill-out", &["spool/none"]);
    for i in 0..N {
        sub.expect_message(TOPIC, format!("queued {i}").as_bytes(), deadline());
    }
}

/// QoS 1 messages from the broker are acknowledged only once they are safe:
/// 500 arrive while no reader listens, the broker has every PUBACK, the
/// daemon is killed, and a new daemon delivers all 500 to a reader, in
/// order.
#[test]
fn messages_received_while_no_reader_listens_survive_kill_9() {
    const N: usize = 500;
    let env = Env::new("s-kill-in");
    let broker = env.broker();
    let id = "spool-kill-in";
    let mut daemon = env.start_pubsub(&broker, id, &[TOPIC]);
    let lines = numbered_lines(N, 40);
    broker.console_pub_lines(TOPIC, &lines);
    broker.wait_pubacks(id, N, deadline());
    daemon.signal(Signal::KILL);
    daemon.wait_exit(deadline());

    let mut reader = DeliveryListener::bind(&env.rmsg());
    let _daemon = env.start_pubsub(&broker, id, &[TOPIC]);
    for (i, line) in lines.split(|b| *b == b'\n').take(N).enumerate() {
        let got = reader.next(deadline());
        assert_eq!(got, line, "delivery {i}");
    }
}

/// `kill -9` at random moments under a steady writer, many rounds, every
/// other one with the broker out of reach (a port where nothing listens:
/// answers are `QUEUED`, from the spool): every message answered `OK` or
/// `QUEUED` reaches the subscriber (at least once).
#[test]
fn kill_9_at_random_moments_loses_nothing_answered() {
    const ROUNDS: usize = 8;
    let env = Env::new("s-rounds");
    // Room at the broker for a subscriber that falls behind (mosquitto's
    // default keeps 1000 messages for it and drops the rest).
    let broker = env.broker_with("max_queued_messages 100000");
    let mut sub = broker.console_sub(TOPIC);
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (accepted, stop, smsg) = (accepted.clone(), stop.clone(), env.smsg());
        thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let payload = format!("round message {i}");
                i += 1;
                match try_send(&smsg, &message(&payload)).as_deref() {
                    Some(b"OK\n" | b"QUEUED\n") => accepted.lock().unwrap().push(payload),
                    // No daemon right now, or killed before it answered.
                    _ => thread::sleep(POLL),
                }
            }
        })
    };
    let args = env.pubsub_args(&broker, "spool-rounds", &["spool/none"]);
    let unreachable: Vec<_> = {
        let port = broker.port.to_string();
        let dead = free_port().to_string();
        args.iter()
            .map(|a| {
                if *a == *port {
                    dead.clone().into()
                } else {
                    a.clone()
                }
            })
            .collect()
    };
    // A fixed seed: the same moments every run.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut moment = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        Duration::from_millis(100 + seed % 600)
    };
    let round = |args: &[std::ffi::OsString], moment: Duration| {
        let mut daemon = env.spawn_pubsub(Via::Iotbox, args);
        daemon.expect_line("Mqtt5 Client attempting connection...", deadline());
        thread::sleep(moment);
        daemon.signal(Signal::KILL);
        daemon.wait_exit(deadline());
    };
    for n in 0..ROUNDS {
        let before = accepted.lock().unwrap().len();
        let at = moment();
        round(if n % 2 == 1 { &unreachable } else { &args }, at);
        let answered = accepted.lock().unwrap().len() - before;
        eprintln!("round {n}: killed after {at:?}, {answered} answered");
    }
    let _daemon = env.start_pubsub(&broker, "spool-rounds", &["spool/none"]);
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() > 100, "only {} accepted", accepted.len());
    let mut missing: BTreeSet<String> = accepted.iter().cloned().collect();
    let mut received = 0;
    while !missing.is_empty() {
        let m = sub.next_message(deadline());
        missing.remove(&String::from_utf8_lossy(&m.payload).into_owned());
        received += 1;
    }
    eprintln!(
        "{} accepted, {received} received until the last accepted one arrived",
        accepted.len()
    );
}

/// A spool with a flipped byte and a cut tail still starts and delivers
/// the rest: of 20 queued messages, the one with the flipped byte and the
/// one cut short are skipped (and the log says so), the other 18 arrive in
/// order, and nothing else.
#[test]
fn a_damaged_spool_still_starts_and_delivers_the_rest() {
    let env = Env::new("s-damage");
    let mut broker = env.broker();
    let mut daemon = env.start_pubsub(&broker, "spool-damage", &["spool/none"]);
    broker.restart(|| {
        wait_lost(&mut daemon);
        for i in 0..20 {
            let reply = raw_send(&env.smsg(), &message(&format!("payload {i:02}")));
            assert_eq!(reply, b"QUEUED\n");
        }
        daemon.signal(Signal::KILL);
        daemon.wait_exit(deadline());
        let file = segment(&env.spool(), "out");
        let mut bytes = fs::read(&file).expect("read the segment");
        let at = bytes
            .windows(10)
            .position(|w| w == b"payload 10")
            .expect("message 10 in the segment");
        bytes[at + 4] ^= 0x20;
        bytes.truncate(bytes.len() - 3);
        fs::write(&file, &bytes).expect("write the damaged segment");
    });
    let mut sub = broker.console_sub(TOPIC);
    let daemon = env.start_pubsub(&broker, "spool-damage", &["spool/none"]);
    for i in (0..19).filter(|i| *i != 10) {
        sub.expect_message(TOPIC, format!("payload {i:02}").as_bytes(), deadline());
    }
    assert_eq!(raw_send(&env.smsg(), &message("after")), b"OK\n");
    sub.expect_message(TOPIC, b"after", deadline());
    daemon.wait_stderr_line(
        "saying it skipped damaged bytes",
        |l| l.contains("damaged"),
        deadline(),
    );
}

/// A full spool under `--when_full block` (the default) stops taking new
/// clients instead of refusing them: with the broker down and a 64 KiB
/// spool, 4 KiB messages are answered `QUEUED` until the log says the
/// spool is full; the next client is not answered; when the broker is back
/// the spool drains, that client gets its answer, and every message arrives.
#[test]
fn a_full_spool_blocks_new_clients_until_there_is_room() {
    let env = Env::new("s-block");
    let mut broker = env.broker();
    let mut args = env.pubsub_args(&broker, "spool-block", &[TOPIC]);
    args.extend(os_args(["--spool_size", "65536"]));
    let mut daemon = env.spawn_pubsub(Via::Iotbox, &args);
    wait_subscribed(&mut daemon);
    let mut reader = DeliveryListener::bind(&env.rmsg());
    let mut stopped = None;
    broker.restart(|| {
        wait_lost(&mut daemon);
        stopped = Some(queue_until(&env, &daemon, "the spool is full", 100));
    });
    let (queued, blocked) = stopped.expect("a client waits");
    assert!(
        queued >= 10,
        "only {queued} messages before the spool was full"
    );
    let reply = blocked
        .recv_timeout(timeout())
        .expect("the waiting client was never answered");
    assert!(
        matches!(reply.as_deref(), Some(b"OK\n" | b"QUEUED\n")),
        "{reply:?}"
    );
    for i in 0..=queued {
        let got = reader.next(deadline());
        assert!(
            got.starts_with(format!("{i:03} ").as_bytes()),
            "delivery {i}: {:?}",
            preview(&got)
        );
    }
}

/// `--when_full drop_oldest` keeps the newest: with the broker down and a
/// 64 KiB spool, 40 messages of 4 KB are all answered `QUEUED`; the oldest
/// are dropped and the log counts them; after a restart the rest arrive,
/// the newest among them, and the count plus what arrived is 40.
#[test]
fn drop_oldest_keeps_the_newest_and_counts_what_it_dropped() {
    const N: usize = 40;
    let env = Env::new("s-drop");
    let mut broker = env.broker();
    let mut args = env.pubsub_args(&broker, "spool-drop", &["spool/none"]);
    args.extend(os_args([
        "--spool_size",
        "65536",
        "--when_full",
        "drop_oldest",
    ]));
    let mut daemon = env.spawn_pubsub(Via::Iotbox, &args);
    wait_subscribed(&mut daemon);
    let filler = "x".repeat(4000);
    broker.restart(|| {
        wait_lost(&mut daemon);
        for i in 0..N {
            let reply = raw_send(&env.smsg(), &message(&format!("{i:03} {filler}")));
            assert_eq!(reply, b"QUEUED\n", "message {i}");
        }
        daemon.signal(Signal::TERM);
        daemon.expect_exit_code(0, deadline());
    });
    let log = daemon.stderr_text();
    let dropped: usize = log
        .lines()
        .find_map(|l| {
            let rest = l.split_once("spool: this run: ")?.1;
            let (n, what) = rest.split_once(' ')?;
            what.starts_with("message(s) dropped to make room")
                .then(|| n.parse().ok())?
        })
        .unwrap_or_else(|| daemon.fail("no \"spool: this run: N message(s) dropped\" line"));
    assert!(dropped > 0 && dropped < N, "dropped {dropped} of {N}");
    let mut sub = broker.console_sub(TOPIC);
    let _daemon = env.spawn_pubsub(Via::Iotbox, &args);
    for i in dropped..N {
        let m = sub.next_message(deadline());
        assert!(
            m.payload.starts_with(format!("{i:03} ").as_bytes()),
            "expected message {i}, got {:?}",
            preview(&m.payload)
        );
    }
}

/// One daemon per spool directory: a second one on the same directory
/// exits 1 naming the pid that holds it, and leaves the first one working.
#[test]
fn a_second_daemon_on_the_same_spool_exits_1_naming_the_first() {
    let env = Env::new("s-lock");
    let broker = env.broker();
    let first = env.start_pubsub(&broker, "spool-lock-1", &["spool/none"]);
    let mut args = env.pubsub_args(&broker, "spool-lock-2", &["spool/none"]);
    let other_socket = env.path("smsg2");
    for (i, a) in args.clone().iter().enumerate() {
        if a == "--pub_socket" {
            args[i + 1] = other_socket.clone().into();
        }
    }
    let out = run(
        "second iotbox pubsub",
        env.iotbox(&{
            let mut full = vec![OsStr::new("pubsub")];
            full.extend(args.iter().map(|a| a.as_os_str()));
            full
        }),
        None,
    );
    out.expect_code(1);
    let line = out.expect_one_stderr_line();
    assert!(
        line.contains("in use") && line.contains(&format!("pid {}", first.pid())),
        "{line:?}"
    );
    assert!(
        fs::symlink_metadata(&other_socket).is_err(),
        "the second daemon bound its socket anyway"
    );
    assert_eq!(raw_send(&env.smsg(), &message("still here")), b"OK\n");
}

/// A spool directory that cannot be used is said in one line, and the
/// daemon runs with messages in memory.
#[test]
fn an_unusable_spool_directory_falls_back_to_memory() {
    let env = Env::new("s-fallback");
    let broker = env.broker();
    let not_a_dir = env.write("a-file", b"");
    let mut args = env.pubsub_args(&broker, "spool-fallback", &["spool/none"]);
    args.extend(os_args([OsStr::new("--spool_dir"), not_a_dir.as_os_str()]));
    let mut daemon = env.spawn_pubsub(Via::Iotbox, &args);
    wait_subscribed(&mut daemon);
    let mut sub = broker.console_sub(TOPIC);
    assert_eq!(raw_send(&env.smsg(), &message("in memory")), b"OK\n");
    sub.expect_message(TOPIC, b"in memory", deadline());
    let warnings: Vec<String> = daemon
        .stderr_text()
        .lines()
        .filter(|l| l.contains("spool"))
        .map(str::to_owned)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&not_a_dir.display().to_string()) && warnings[0].contains("memory"),
        "{warnings:?}"
    );
}

/// A disk that fills up is never answered as durable: the spool is on a
/// 512 KiB tmpfs (mounted in a mount namespace of the daemon's own), the
/// broker is down, and 4 KB messages are answered `QUEUED` until a write
/// fails; the log says so, and that client gets no answer. When the broker
/// is back the messages go out, their files are deleted, the write works
/// again on a new file, the client gets its answer, and every message
/// arrives.
#[test]
fn a_full_disk_answers_nothing_until_a_write_works_again() {
    let env = Env::new("s-enospc");
    let mut broker = env.broker();
    let spool = env.path("tmpfs");
    fs::create_dir(&spool).expect("mkdir tmpfs");
    let mut args = env.pubsub_args(&broker, "spool-enospc", &[TOPIC]);
    // Segments of 64 KiB (a sixteenth of the limit), so that sent ones free
    // room on the small disk; the disk fills before the limit.
    args.extend(os_args([
        OsStr::new("--spool_dir"),
        spool.as_os_str(),
        OsStr::new("--spool_size"),
        OsStr::new("1048576"),
    ]));
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=512k,mode=0700 tmpfs "$1" || exit 99; shift; exec "$@""#)
        .arg("sh")
        .arg(&spool)
        .arg(env.bin())
        .arg("pubsub")
        .args(&args)
        .current_dir(env.path(""));
    let mut daemon = Proc::spawn("iotbox pubsub (spool on a small tmpfs)", cmd);
    wait_subscribed(&mut daemon);
    let mut reader = DeliveryListener::bind(&env.rmsg());
    let mut stopped = None;
    broker.restart(|| {
        wait_lost(&mut daemon);
        let (queued, waiting) = queue_until(&env, &daemon, "spool: cannot write to", 200);
        // Not answered while the disk is full (the daemon retries after
        // 1 s, then 2 s: give it two tries).
        daemon.wait_stderr_line(
            "a second failed try, still unanswered",
            |l| l.contains("spool: cannot write to"),
            deadline(),
        );
        let until = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < until {
            if let Ok(reply) = waiting.try_recv() {
                panic!("answered while the disk is full: {reply:?}");
            }
            thread::sleep(POLL);
        }
        stopped = Some((queued, waiting));
    });
    let (queued, waiting) = stopped.expect("a client waits");
    let reply = waiting
        .recv_timeout(timeout())
        .expect("the waiting client was never answered");
    if !matches!(reply.as_deref(), Some(b"OK\n" | b"QUEUED\n")) {
        daemon.fail(&format!("the waiting client got {reply:?}"));
    }
    daemon.wait_stderr_line(
        "saying writing works again",
        |l| l.contains("spool: writing works again"),
        deadline(),
    );
    for i in 0..=queued {
        let got = reader.next(deadline());
        assert!(
            got.starts_with(format!("{i:03} ").as_bytes()),
            "delivery {i}: {:?}",
            preview(&got)
        );
    }
}
