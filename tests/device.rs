//! `iotbox shadow` and `iotbox jobs` end to end: the real binary, the daemon
//! connected to mosquitto with mutual TLS, and the AWS IoT emulator
//! (tests/emulator/aws_iot.py) answering the Device Shadow and Jobs MQTT
//! APIs on that broker. The applets are clients of the daemon's local
//! endpoint, as on a device; the thing is the daemon's `--thing_name`.

mod common;

use common::*;
use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::time::Duration;

const THING: &str = "pump-7";

/// A broker, the emulator, and a daemon that is `THING`.
fn world(tag: &str) -> (Env, Broker, Emulator, Proc) {
    let env = Env::new(tag);
    let broker = env.broker();
    let emulator = Emulator::start(&env, &broker, "iotbox-fleet");
    let daemon = start_daemon(&env, &broker, tag);
    (env, broker, emulator, daemon)
}

fn start_daemon(env: &Env, broker: &Broker, tag: &str) -> Proc {
    let mut args = env.pubsub_args(broker, &format!("dev-{tag}"), &["device/t"]);
    args.extend(["--thing_name".into(), THING.into()]);
    let mut daemon = env.spawn_pubsub(Via::Iotbox, &args);
    wait_subscribed(&mut daemon);
    daemon
}

/// `iotbox shadow ARGS...` against the test daemon, run to its end.
fn shadow(env: &Env, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut full: Vec<OsString> = vec![
        "shadow".into(),
        "--socket".into(),
        env.local_socket().into(),
    ];
    full.extend(args.iter().map(OsString::from));
    run("iotbox shadow", env.iotbox(&full), stdin)
}

fn field<'a>(text: &'a str, needle: &str) -> &'a str {
    assert!(text.contains(needle), "{needle} in {text}");
    text
}

#[test]
fn shadow_get_update_delete_classic_and_named() {
    let (env, _broker, emulator, _daemon) = world("shadow");

    // No shadow yet: AWS's 404, exit 1, one line.
    let out = shadow(&env, &["get"], None);
    out.expect_code(1);
    let line = out.expect_one_stderr_line();
    assert_eq!(
        line,
        format!("shadow get rejected: 404 No shadow exists with name: '{THING}'"),
        "{}",
        emulator.report()
    );

    let out = shadow(
        &env,
        &["update", r#"{"state":{"reported":{"temp":21}}}"#],
        None,
    );
    out.expect_code(0);
    let text = out.stdout_text();
    field(&text, r#""reported":{"temp":21}"#);
    field(&text, r#""version":1"#);
    assert_eq!(text.lines().count(), 1, "one line of JSON: {text}");
    // The request went to AWS's topic with a client token of ours.
    let request = emulator.wait_request(&format!("$aws/things/{THING}/shadow/update"));
    assert!(request.contains("clientToken"), "{request}");

    let out = shadow(&env, &["get"], None);
    out.expect_code(0);
    field(&out.stdout_text(), r#""temp":21"#);

    // A named shadow, its document on stdin; the classic one is untouched.
    let out = shadow(
        &env,
        &["--name", "config", "update", "-"],
        Some(br#"{"state":{"desired":{"interval":30}}}"#),
    );
    out.expect_code(0);
    emulator.wait_request(&format!("$aws/things/{THING}/shadow/name/config/update"));
    let out = shadow(&env, &["--name", "config", "get"], None);
    out.expect_code(0);
    let text = out.stdout_text();
    field(&text, r#""desired":{"interval":30}"#);
    field(&text, r#""delta":{"interval":30}"#);
    let classic = shadow(&env, &["get"], None);
    assert!(
        !classic.stdout_text().contains("interval"),
        "{}",
        classic.stdout_text()
    );

    // A version that is not the shadow's: AWS's 409.
    let out = shadow(
        &env,
        &[
            "--name",
            "config",
            "update",
            r#"{"state":{"reported":{"interval":30}},"version":99}"#,
        ],
        None,
    );
    out.expect_code(1);
    let line = out.expect_one_stderr_line();
    assert!(line.starts_with("shadow update rejected: 409 "), "{line}");

    let out = shadow(&env, &["--name", "config", "delete"], None);
    out.expect_code(0);
    field(&out.stdout_text(), r#""version":"#);
    let out = shadow(&env, &["--name", "config", "get"], None);
    out.expect_code(1);
    let line = out.expect_one_stderr_line();
    assert!(
        line.contains("404 No shadow exists with name: 'config'"),
        "{line}"
    );

    // What the user got wrong: exit 2, nothing sent.
    for (args, words) in [
        (&["update", "{not json"][..], "not valid JSON"),
        (&["update", "[1]"][..], "not a JSON object"),
        (&["update"][..], "give the document"),
        (&["get", "{}"][..], "takes no document"),
        (&["frobnicate"][..], "unknown action"),
        (&["--name", "a/b", "get"][..], "shadow name"),
        (&["--thing_name", "a/#", "get"][..], "thing name"),
        (&["--timeout", "0", "get"][..], "--timeout 0"),
    ] {
        let out = shadow(&env, args, None);
        out.expect_code(2);
        let line = out.expect_one_stderr_line();
        assert!(line.contains(words), "{args:?}: {line}");
    }
}

#[test]
fn concurrent_shadow_requests_each_get_their_own_answer() {
    let (env, _broker, emulator, _daemon) = world("shadowmany");
    let mut procs: Vec<Proc> = (0..8)
        .map(|i| {
            let doc = format!(r#"{{"state":{{"reported":{{"n":{i}}}}}}}"#);
            let args: Vec<OsString> = vec![
                "shadow".into(),
                "--socket".into(),
                env.local_socket().into(),
                "update".into(),
                doc.into(),
            ];
            Proc::spawn(&format!("shadow update {i}"), env.iotbox(&args))
        })
        .collect();
    for (i, p) in procs.iter_mut().enumerate() {
        p.expect_exit_code(0, deadline());
        let text = p.stdout_text();
        // Every process saw all eight answers on update/accepted; each
        // printed the one with its own token, so its own value.
        assert!(
            text.contains(&format!(r#""reported":{{"n":{i}}}"#)),
            "process {i} printed {text}\n{}",
            emulator.report()
        );
    }
}

#[test]
fn shadow_watch_prints_the_pending_delta_then_each_new_one() {
    let (env, _broker, emulator, _daemon) = world("watch");
    emulator.cloud_update(THING, None, r#"{"state":{"desired":{"color":"red"}}}"#);
    let args: Vec<OsString> = vec![
        "shadow".into(),
        "--socket".into(),
        env.local_socket().into(),
        "watch".into(),
    ];
    let mut watch = Proc::spawn("shadow watch", env.iotbox(&args));
    let first = watch.next_line(deadline());
    assert!(first.contains(r#""state":{"color":"red"}"#), "{first}");
    // The subscription is in place once the get was answered: a change from
    // the console now arrives as update/delta.
    emulator.cloud_update(
        THING,
        None,
        r#"{"state":{"desired":{"color":"green","speed":3}}}"#,
    );
    let second = watch.next_line(deadline());
    assert!(second.contains(r#""color":"green""#), "{second}");
    assert!(second.contains(r#""speed":3"#), "{second}");
    assert!(second.starts_with('{') && second.ends_with('}'), "{second}");
    // Reporting the desired state ends the delta: nothing more is printed
    // for it, and the watch keeps running.
    let out = shadow(
        &env,
        &[
            "update",
            r#"{"state":{"reported":{"color":"green","speed":3}}}"#,
        ],
        None,
    );
    out.expect_code(0);
    emulator.cloud_update(THING, None, r#"{"state":{"desired":{"speed":4}}}"#);
    let third = watch.next_line(deadline());
    assert!(third.contains(r#""state":{"speed":4}"#), "{third}");
    assert!(!watch.has_exited(), "{}", watch.report());
}

#[test]
fn shadow_without_an_answer_is_exit_3() {
    let env = Env::new("shadow3");
    let broker = env.broker();
    let _daemon = start_daemon(&env, &broker, "shadow3");
    // No emulator: the request goes upstream and nobody answers.
    let out = shadow(&env, &["--timeout", "2", "get"], None);
    out.expect_code(3);
    let line = out.expect_one_stderr_line();
    assert!(line.contains("no answer"), "{line}");
    assert!(
        line.contains(&format!("$aws/things/{THING}/shadow/get")),
        "{line}"
    );
}

/// The handler the job tests run: what it does depends on the job id.
/// - `ok-*`: prints its document and succeeds;
/// - `bad-*`: prints lines with a tab and an escape sequence, exits 7;
/// - `odd-*`: prints U+0378, a code point Unicode has not assigned, which
///   AWS refuses in statusDetails (category Cn) and the runner lets
///   through; succeeds;
/// - `slow-*`: starts a background sleep in its group (its PID in
///   `DIR/slow.pid`) and waits;
/// - `long-*`: like slow, but the sleep is the handler (`DIR/long.pid`);
///   when `DIR/release` exists, it ends 0.
fn handler(dir: &Path) -> String {
    let script = dir.join("handler.sh");
    fs::write(
        &script,
        format!(
            r#"#!/bin/sh
doc=$(cat)
echo "job $IOTBOX_JOB_ID on $IOTBOX_THING_NAME: $doc"
case "$IOTBOX_JOB_ID" in
ok-*) echo "all fine"; exit 0 ;;
bad-*) printf 'first line\nsecond\tline\033[31m red\n' >&2; exit 7 ;;
slow-*) sleep 300 & echo $! > {dir}/slow.pid; wait; exit 0 ;;
odd-*) printf 'unassigned \315\270 here\n'; exit 0 ;;
long-*) echo $$ > {dir}/long.pid
        while [ ! -e {dir}/release ]; do sleep 0.1; done
        echo "released"; exit 0 ;;
esac
exit 99
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    format!("sh {}", script.display())
}

fn spawn_jobs(env: &Env, exec: &str, extra: &[&str]) -> Proc {
    let mut args: Vec<OsString> = vec![
        "jobs".into(),
        "--socket".into(),
        env.local_socket().into(),
        "--exec".into(),
        exec.into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    Proc::spawn("iotbox jobs", env.iotbox(&args))
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// The process group of `pid`: field 5 of /proc/PID/stat.
fn process_group_of(pid: i32) -> i32 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("the handler's stat");
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
    after_name
        .split(' ')
        .nth(2)
        .and_then(|f| f.parse().ok())
        .expect("a process group in stat")
}

/// Waits until process `pid` is gone (or a zombie); fails the test with
/// `what` at the deadline. Nothing to wait on but /proc: polled.
fn wait_gone(pid: i32, what: &str) {
    let until = deadline();
    while pid_alive(pid) {
        assert!(std::time::Instant::now() < until, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_pid(path: &Path) -> i32 {
    let until = deadline();
    loop {
        if let Ok(text) = fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        assert!(
            std::time::Instant::now() < until,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn jobs_succeed_fail_time_out_and_come_by_notification() {
    let (env, _broker, emulator, _daemon) = world("jobs");
    let exec = handler(env.dir.path());
    emulator.create_job(THING, "ok-1", r#"{"operation":"greet","to":"world"}"#);
    emulator.create_job(THING, "bad-2", r#"{"operation":"fail"}"#);
    emulator.create_job(THING, "slow-3", r#"{"operation":"hang"}"#);
    let mut runner = spawn_jobs(&env, &exec, &["--timeout", "2"]);

    let ok = emulator.wait_job_status(THING, "ok-1", "SUCCEEDED");
    assert!(ok.contains(r#""exitCode":"0""#), "{ok}");
    // The document reached the handler's stdin, its output the details.
    assert!(
        ok.contains(r#"job ok-1 on pump-7: {\"operation\":\"greet\",\"to\":\"world\"} | all fine"#),
        "{ok}"
    );

    let bad = emulator.wait_job_status(THING, "bad-2", "FAILED");
    assert!(bad.contains(r#""exitCode":"7""#), "{bad}");
    // Flattened: no tab, no escape, no newline (AWS refuses control
    // characters; the emulator checks as AWS does). The handler's stdout
    // line may come between its two stderr lines: the two streams are
    // read side by side, each in its own order.
    let stderr_lines = ["first line", "second line [31m red"];
    let at: Vec<usize> = stderr_lines
        .iter()
        .map(|l| bad.find(l).unwrap_or_else(|| panic!("{l:?} in {bad}")))
        .collect();
    assert!(at[0] < at[1], "{bad}");

    let slow = emulator.wait_job_status(THING, "slow-3", "FAILED");
    assert!(slow.contains("timed out after 2 s"), "{slow}");
    // The whole process group went, the background sleep too.
    let sleeper = read_pid(&env.dir.path().join("slow.pid"));
    wait_gone(sleeper, &format!("the handler's child {sleeper} survived"));

    // Idle now: a new job comes by notify-next.
    runner.wait_line(
        "reporting slow-3",
        |l| l.starts_with("job slow-3: FAILED"),
        deadline(),
    );
    emulator.create_job(THING, "ok-4", r#"{"operation":"late"}"#);
    emulator.wait_job_status(THING, "ok-4", "SUCCEEDED");
    runner.wait_line(
        "reporting ok-4",
        |l| l == "job ok-4: SUCCEEDED (exit status 0)",
        deadline(),
    );

    // Output AWS refuses: the status still goes, without the output.
    emulator.create_job(THING, "odd-5", r#"{"operation":"odd"}"#);
    let odd = emulator.wait_job_status(THING, "odd-5", "SUCCEEDED");
    assert!(odd.contains(r#""statusDetails":{"exitCode":"0"}"#), "{odd}");
    assert!(!runner.has_exited(), "{}", runner.report());
}

#[test]
fn a_job_outlives_a_daemon_restart_and_an_interrupted_one_fails_on_the_next_start() {
    let (env, broker, emulator, mut daemon) = world("jobsrestart");
    let dir = env.dir.path().to_owned();
    let exec = handler(&dir);

    // The daemon restarts while a handler runs: the runner connects again
    // and the job's result still reaches AWS.
    emulator.create_job(THING, "long-1", r#"{"operation":"wait"}"#);
    let mut runner = spawn_jobs(&env, &exec, &[]);
    emulator.wait_job_status(THING, "long-1", "IN_PROGRESS");
    read_pid(&dir.join("long.pid"));
    daemon.signal(Signal::KILL);
    daemon.wait_exit(deadline());
    let _daemon = start_daemon(&env, &broker, "jobsrestart");
    fs::write(dir.join("release"), b"").unwrap();
    let done = emulator.wait_job_status(THING, "long-1", "SUCCEEDED");
    assert!(done.contains("released"), "{done}");

    // A reboot mid-job: runner and handler die. The next runner reports the
    // execution FAILED, with the reason, instead of leaving it IN_PROGRESS.
    fs::remove_file(dir.join("release")).unwrap();
    fs::remove_file(dir.join("long.pid")).unwrap();
    emulator.create_job(THING, "long-2", r#"{"operation":"wait"}"#);
    emulator.wait_job_status(THING, "long-2", "IN_PROGRESS");
    let handler_pid = read_pid(&dir.join("long.pid"));
    runner.signal(Signal::KILL);
    runner.wait_exit(deadline());
    // The handler is in a process group of its own (the runner's `sh -c`
    // leads it), which we started through the runner: end it as a reboot
    // would, and make sure nothing of it is left.
    let group = process_group_of(handler_pid);
    let pgid = rustix::process::Pid::from_raw(group).expect("a process group id");
    rustix::process::kill_process_group(pgid, Signal::KILL).expect("kill the handler's group");
    wait_gone(handler_pid, &format!("the handler {handler_pid} survived"));
    let mut next = spawn_jobs(&env, &exec, &[]);
    let failed = emulator.wait_job_status(THING, "long-2", "FAILED");
    assert!(failed.contains("interrupted"), "{failed}");
    next.wait_line(
        "saying so",
        |l| l == "job long-2: FAILED (interrupted before it finished)",
        deadline(),
    );
    assert!(!next.has_exited(), "{}", next.report());
}

#[test]
fn a_stopped_runner_fails_its_job_at_once_and_leaves_no_handler() {
    let (env, _broker, emulator, _daemon) = world("jobsstop");
    let dir = env.dir.path().to_owned();
    let exec = handler(&dir);

    // SIGTERM while a handler runs: the handler's group is ended, the job
    // reported FAILED saying so, and the runner exits 0.
    emulator.create_job(THING, "long-1", r#"{"operation":"wait"}"#);
    let mut runner = spawn_jobs(&env, &exec, &[]);
    emulator.wait_job_status(THING, "long-1", "IN_PROGRESS");
    let handler_pid = read_pid(&dir.join("long.pid"));
    runner.signal(Signal::TERM);
    let failed = emulator.wait_job_status(THING, "long-1", "FAILED");
    assert!(
        failed.contains("stopped: iotbox jobs got signal 15 while the handler ran"),
        "{failed}"
    );
    runner.expect_exit_code(0, deadline());
    wait_gone(
        handler_pid,
        &format!("the handler {handler_pid} survived the stop"),
    );

    // SIGTERM between jobs: exit 0 at once.
    let mark = emulator.mark();
    let mut idle = spawn_jobs(&env, &exec, &[]);
    let start_next = format!(
        "\"topic\":{},",
        json_str(&format!("$aws/things/{THING}/jobs/start-next"))
    );
    emulator.wait_event_since(
        mark,
        "the second runner's start-next",
        |l| l.starts_with("{\"event\":\"request\"") && l.contains(&start_next),
        deadline(),
    );
    idle.signal(Signal::TERM);
    idle.expect_exit_code(0, deadline());
}
