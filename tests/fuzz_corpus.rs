//! The fuzz corpora as regression tests, on stable: every file under
//! fuzz/corpus/<target>/ goes through the same checks as under libFuzzer
//! (fuzz/src/checks.rs, compiled here as a module), and so does every seed
//! (fuzz/src/seeds.rs), whatever minimizing the corpora kept of them. A crash
//! the fuzzer found stays fixed once its input is in the corpus.

#[allow(dead_code)]
#[path = "../fuzz/src/checks.rs"]
mod checks;
#[allow(dead_code)]
#[path = "../fuzz/src/seeds.rs"]
mod seeds;

use std::path::{Path, PathBuf};

/// The corpus files of one target, sorted; at least one (an empty or missing
/// corpus would make the test pass without checking anything).
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no corpus files", dir.display());
    files
}

/// Runs `check` on every corpus file and seed of `target`, naming the input
/// that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let mut inputs: Vec<(String, Vec<u8>)> = corpus(target)
        .into_iter()
        .map(|path| {
            let data = std::fs::read(&path).expect("corpus file");
            (path.display().to_string(), data)
        })
        .collect();
    for (t, name, data) in seeds::all() {
        if t == target {
            inputs.push((format!("seed {name}"), data));
        }
    }
    for (name, data) in inputs {
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!(
                "{name} fails the {target} checks (IOTBOX_FUZZ_TRACE=1 tells the session's story)"
            );
        }
    }
}

#[test]
fn codec_decode_corpus() {
    replay("codec_decode", checks::check_codec_decode);
}

#[test]
fn local_client_corpus() {
    replay("local_client", checks::check_local_client);
}

#[test]
fn message_parse_corpus() {
    replay("message_parse", checks::check_message_parse);
}

#[test]
fn proxy_reply_corpus() {
    replay("proxy_reply", checks::check_proxy_reply);
}

#[test]
fn session_corpus() {
    replay("session", checks::check_session);
}

#[test]
fn session_wrap_corpus() {
    replay("session_wrap", checks::check_session_wrap);
}

#[test]
fn spool_recovery_corpus() {
    replay("spool_recovery", checks::check_spool_recovery);
}

/// The session seeds get where they are meant to: connected, publishing,
/// acknowledged. Otherwise the fuzzer would start from nothing.
#[test]
fn session_seeds_reach_their_states() {
    let run = |name: &str, wrap: bool| {
        let (_, _, data) = seeds::all()
            .into_iter()
            .find(|(t, n, _)| *t == "session" && *n == name)
            .unwrap_or_else(|| panic!("no seed {name}"));
        checks::run_session(&data, wrap)
    };
    let seed = |name: &str| run(name, false);
    let s = seed("seed-publish-ack");
    assert_eq!(
        (s.connected, s.subscribes, s.published, s.messages),
        (1, 1, 2, 1),
        "{s:?}"
    );
    assert!(s.pings >= 1, "{s:?}");
    let s = seed("seed-receive-maximum");
    assert_eq!(s.max_on_wire, 2, "{s:?}");
    assert!(s.failed >= 1 && s.published >= 1, "{s:?}");
    let s = seed("seed-resume");
    assert_eq!(s.connected, 2, "{s:?}");
    assert!(s.published >= 1 && s.lost == 2, "{s:?}");
    let s = seed("seed-qos0-partial-output");
    assert!(s.published >= 1 && s.failed + s.unconfirmed >= 1, "{s:?}");
    let s = seed("seed-dead-link");
    assert!(s.pings >= 1 && s.lost >= 2, "{s:?}");
    // Under session_wrap the packet ids wrap around while some are in use.
    let s = run("seed-ids-in-use", true);
    assert!(s.wraps >= 1 && s.published >= 40, "{s:?}");
    let s = run("seed-ids-in-use", false);
    assert_eq!(s.wraps, 0, "{s:?}");
}

/// The spool seeds hold what their names say: messages, damage, strays.
#[test]
fn spool_seeds_hold_what_they_say() {
    let found = |name: &str| {
        let (_, _, data) = seeds::all()
            .into_iter()
            .find(|(t, n, _)| *t == "spool_recovery" && *n == name)
            .unwrap_or_else(|| panic!("no seed {name}"));
        let r = checks::spool_recovered(&data);
        (
            r.messages,
            r.segments,
            r.damaged_segments,
            r.damaged_bytes > 0,
        )
    };
    assert_eq!(found("seed-three-messages"), (3, 1, 0, false));
    assert_eq!(found("seed-done-and-two-segments"), (1, 2, 0, false));
    assert_eq!(found("seed-same-first-number"), (2, 2, 0, false));
    assert_eq!(found("seed-torn-and-flipped"), (2, 1, 0, true));
    assert_eq!(found("seed-strays"), (3, 1, 0, false));
    assert_eq!(found("seed-no-header-and-garbage"), (2, 2, 1, true));
    assert_eq!(found("seed-far-names"), (4, 3, 0, false));
    assert_eq!(found("seed-drop-oldest"), (5, 3, 0, false));
    assert_eq!(found("seed-near-the-top"), (0, 1, 0, false));
}

/// The local client seeds get where they are meant to: connected or
/// refused, publishing, subscribed, delivered to, closed for their reason.
#[test]
fn local_client_seeds_reach_their_states() {
    let run = |name: &str| {
        let (_, _, data) = seeds::all()
            .into_iter()
            .find(|(t, n, _)| *t == "local_client" && *n == name)
            .unwrap_or_else(|| panic!("no seed {name}"));
        checks::run_local_client(&data)
    };
    let why = |s: &checks::LocalStats| s.closed.clone().expect("closed").0;
    for name in [
        "seed-v311-at-once",
        "seed-v311-bytewise",
        "seed-v311-deliveries",
    ] {
        let s = run(name);
        assert_eq!(
            (s.publishes, s.subscribes, s.unsubscribes),
            (2, 1, 1),
            "{name}: {s:?}"
        );
        assert_eq!(
            s.closed,
            Some(("disconnected (0x00)".into(), true, false)),
            "{name}"
        );
    }
    for name in [
        "seed-v5-at-once",
        "seed-v5-bytewise",
        "seed-v5-deliveries",
        "seed-v5-held-answers",
    ] {
        let s = run(name);
        assert_eq!(
            (s.publishes, s.subscribes, s.unsubscribes),
            (1, 1, 1),
            "{name}: {s:?}"
        );
        // DISCONNECT 0x04: normal, and the will goes.
        assert_eq!(
            s.closed,
            Some(("disconnected (0x04)".into(), true, true)),
            "{name}"
        );
    }
    assert!(run("seed-v5-deliveries").delivered[0] >= 2);
    let s = run("seed-v5-puback");
    assert!(s.delivered[0] == 2 && s.packets_out >= 7, "{s:?}");
    let s = run("seed-v5-keep-alive");
    assert!(why(&s).starts_with("silent"), "{s:?}");
    assert_eq!(s.packets_out, 3, "CONNACK, PINGRESP, DISCONNECT 0x8D");
    assert!(why(&run("seed-v311-keep-alive")).starts_with("silent"));
    let s = run("seed-connect-timeout");
    assert!(!s.connected && why(&s).starts_with("no CONNECT"), "{s:?}");
    let s = run("seed-v5-output-limit");
    assert!(why(&s).starts_with("does not take its messages"), "{s:?}");
    let s = run("seed-v5-client-max-packet");
    assert!(s.delivered[0] >= 1 && s.delivered[2] >= 1, "{s:?}");
    assert_eq!(
        run("seed-mqtt31").connack,
        Some(1),
        "3.1.1 refusal: version"
    );
    assert_eq!(run("seed-v311-empty-id-kept-session").connack, Some(2));
    let s = run("seed-v5-receive-maximum");
    assert!(
        s.publishes == 130 && s.held_input >= 1 && !s.stalled,
        "{s:?}"
    );
    let s = run("seed-v5-taken-over");
    assert_eq!(
        s.closed,
        Some(("another connection took its client id".into(), false, true))
    );
}
