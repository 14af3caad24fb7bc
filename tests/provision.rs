//! `iotbox provision` end to end: the real binary against the test
//! mosquitto (mutual TLS) with the AWS IoT emulator answering
//! CreateCertificateFromCsr (it signs the CSR with the test CA) and
//! RegisterThing. The test client certificate plays the claim certificate.
//!
//! What these tests hold the applet to: the three files with their modes
//! and nothing else beside them; an identity the daemon connects with, as
//! the thing; an existing identity refused before any connection and left
//! byte for byte; a rejected call is exit 1 with AWS's code and message and
//! writes nothing; no answer is exit 3.

mod common;

use common::*;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

const TEMPLATE: &str = "iotbox-fleet";

fn start_emulator(env: &Env, broker: &Broker) -> Emulator {
    Emulator::start_with(
        env,
        broker,
        EmulatorOptions {
            template: TEMPLATE.to_owned(),
            thing_name_param: "SerialNumber".to_owned(),
            thing_prefix: "pump-".to_owned(),
            required_params: vec!["SerialNumber".to_owned()],
            device_configuration: r#"{"site":"lab"}"#.to_owned(),
            ..EmulatorOptions::default()
        },
    )
}

/// `iotbox provision` against `port` on localhost with the test CA and the
/// test client certificate as the claim, into `out_dir`, plus `extra`.
fn provision(env: &Env, port: u16, out_dir: &Path, extra: &[&str]) -> Output {
    let pki = env.pki();
    let claim = Claim {
        ca: &pki.ca,
        cert: &pki.client_cert,
        key: &pki.client_key,
    };
    provision_with(env, port, out_dir, &claim, extra)
}

/// The trust anchors and the claim certificate and key.
struct Claim<'a> {
    ca: &'a Path,
    cert: &'a Path,
    key: &'a Path,
}

fn provision_with(env: &Env, port: u16, out_dir: &Path, claim: &Claim, extra: &[&str]) -> Output {
    let mut args: Vec<OsString> = vec![
        "provision".into(),
        "--endpoint".into(),
        "localhost".into(),
        "--port".into(),
        port.to_string().into(),
        "--ca_file".into(),
        claim.ca.into(),
        "--claim_cert".into(),
        claim.cert.into(),
        "--claim_key".into(),
        claim.key.into(),
        "--out_dir".into(),
        out_dir.into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    env.run_iotbox(&args)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn identity(dir: &Path) -> [Vec<u8>; 3] {
    ["device.cert.pem", "device.private.key", "thing_name"]
        .map(|name| fs::read(dir.join(name)).expect("read the identity"))
}

#[test]
fn a_device_provisioned_by_claim_connects_as_its_thing() {
    let env = Env::new("prov");
    let broker = env.broker();
    let emu = start_emulator(&env, &broker);
    let out_dir = env.path("etc/iotbox");

    let out = provision(
        &env,
        broker.port,
        &out_dir,
        &["--template", TEMPLATE, "--param", "SerialNumber=7"],
    );
    out.expect_code(0).expect_stdout("pump-7\n");
    assert_eq!(out.stderr_text(), "", "quiet on success");
    emu.wait_event(
        "provisioned pump-7",
        |l| {
            l.contains("\"event\":\"provisioned\"")
                && l.contains("\"thingName\":\"pump-7\"")
                && l.contains("\"SerialNumber\":\"7\"")
        },
        deadline(),
    );

    // The three files, their modes, nothing else (no temporary file left).
    assert_eq!(
        listing(&out_dir),
        ["device.cert.pem", "device.private.key", "thing_name"]
    );
    assert_eq!(mode(&out_dir), 0o755);
    assert_eq!(mode(&out_dir.join("device.private.key")), 0o600);
    assert_eq!(mode(&out_dir.join("device.cert.pem")), 0o644);
    assert_eq!(mode(&out_dir.join("thing_name")), 0o644);
    assert_eq!(
        fs::read_to_string(out_dir.join("thing_name")).unwrap(),
        "pump-7\n"
    );
    let key = fs::read_to_string(out_dir.join("device.private.key")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{key}");
    let cert = fs::read_to_string(out_dir.join("device.cert.pem")).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    // It is the certificate the emulator signed.
    let signed = emu.wait_event(
        "certificate_signed",
        |l| l.contains("\"event\":\"certificate_signed\""),
        deadline(),
    );
    assert_eq!(
        json_string_field(&signed, "certificatePem").as_deref(),
        Some(cert.as_str())
    );

    // The daemon, with the new identity and the thing name as client id,
    // connects to the broker, and a message goes each way.
    let thing = "pump-7";
    let mut delivered = DeliveryListener::bind(&env.rmsg());
    let args = env.pubsub_args_as(
        &broker,
        thing,
        &["prov/in"],
        &out_dir.join("device.cert.pem"),
        &out_dir.join("device.private.key"),
    );
    let mut daemon = env.spawn_pubsub(Via::Iotbox, &args);
    daemon.wait_for_line(
        &format!("Mqtt5 Client connection succeed, clientid: {thing}."),
        deadline(),
    );
    wait_subscribed(&mut daemon);
    let mut console = broker.console_sub("prov/out");
    let file = env.write("hello.msg", b"prov/out\nhello from pump-7");
    env.send(&env.smsg(), &file).expect_code(0);
    console.expect_message("prov/out", b"hello from pump-7", deadline());
    broker.console_pub("prov/in", b"hello pump-7");
    assert_eq!(delivered.next(deadline()), b"hello pump-7");
    drop(daemon);

    // Again without --force: refused before any connection (nothing
    // listens on this port: the error would otherwise be about that), and
    // the identity is left byte for byte.
    let before = identity(&out_dir);
    let out = provision(
        &env,
        free_port(),
        &out_dir,
        &["--template", TEMPLATE, "--param", "SerialNumber=8"],
    );
    out.expect_code(1);
    let line = out.expect_one_stderr_line();
    assert!(
        line.contains("device.cert.pem") && line.contains("--force"),
        "{line}"
    );
    assert_eq!(out.stdout_text(), "");
    assert!(identity(&out_dir) == before, "the identity changed");
    assert_eq!(
        listing(&out_dir),
        ["device.cert.pem", "device.private.key", "thing_name"]
    );

    // With --force: a new identity replaces it, same modes.
    let out = provision(
        &env,
        broker.port,
        &out_dir,
        &[
            "--template",
            TEMPLATE,
            "--param",
            "SerialNumber=8",
            "--force",
        ],
    );
    out.expect_code(0).expect_stdout("pump-8\n");
    let after = identity(&out_dir);
    assert!(after[0] != before[0] && after[1] != before[1]);
    assert_eq!(after[2], b"pump-8\n");
    assert_eq!(mode(&out_dir.join("device.private.key")), 0o600);
    assert_eq!(
        listing(&out_dir),
        ["device.cert.pem", "device.private.key", "thing_name"]
    );
}

#[test]
fn a_rejected_registration_is_exit_1_with_aws_words_and_writes_nothing() {
    let env = Env::new("provrej");
    let broker = env.broker();
    let _emu = start_emulator(&env, &broker);
    let out_dir = env.path("out");

    // A template the account does not have.
    let out = provision(
        &env,
        broker.port,
        &out_dir,
        &[
            "--template",
            "no-such-template",
            "--param",
            "SerialNumber=7",
        ],
    );
    out.expect_code(1);
    let line = out.expect_one_stderr_line();
    assert!(
        line.contains("RegisterThing")
            && line.contains("404")
            && line.contains("ResourceNotFound")
            && line.contains("Template no-such-template not found"),
        "{line}"
    );
    assert_eq!(out.stdout_text(), "");
    assert!(!out_dir.exists(), "the directory it made is gone");

    // A parameter the template needs is missing; the directory existed.
    fs::create_dir(&out_dir).unwrap();
    let out = provision(&env, broker.port, &out_dir, &["--template", TEMPLATE]);
    out.expect_code(1);
    let line = out.expect_one_stderr_line();
    assert!(
        line.contains("400")
            && line.contains("InvalidParameters")
            && line.contains("Missing required parameter: SerialNumber"),
        "{line}"
    );
    assert_eq!(listing(&out_dir), Vec::<String>::new(), "nothing written");
}

#[test]
fn no_answer_is_exit_3_and_writes_nothing() {
    // The broker, without the emulator: the requests go nowhere.
    let env = Env::new("provnone");
    let broker = env.broker();
    let out_dir = env.path("out");
    let started = Instant::now();
    let out = provision(
        &env,
        broker.port,
        &out_dir,
        &[
            "--template",
            TEMPLATE,
            "--param",
            "SerialNumber=7",
            "--timeout",
            "2",
        ],
    );
    out.expect_code(3);
    let line = out.expect_one_stderr_line();
    assert!(
        line.contains("no answer to CreateCertificateFromCsr") && line.contains("2 s"),
        "{line}"
    );
    assert!(
        started.elapsed() < timeout(),
        "took {:?}",
        started.elapsed()
    );
    assert!(!out_dir.exists());
}

#[test]
fn bad_claim_files_and_flags_fail_before_connecting() {
    let env = Env::new("provbad");
    let out_dir = env.path("out");
    let port = free_port();
    // No such claim certificate: exit 1, naming it.
    let pki = env.pki();
    let mut args: Vec<OsString> = vec![
        "provision".into(),
        "--endpoint".into(),
        "localhost".into(),
        "--port".into(),
        port.to_string().into(),
        "--claim_cert".into(),
        env.path("missing.pem").into(),
        "--claim_key".into(),
        pki.client_key.clone().into(),
        "--template".into(),
        TEMPLATE.into(),
        "--out_dir".into(),
        out_dir.clone().into(),
    ];
    let out = env.run_iotbox(&args);
    out.expect_code(1);
    assert!(out.expect_one_stderr_line().contains("missing.pem"));
    assert!(!out_dir.exists());
    // A bad --param: exit 2.
    args[6] = pki.client_cert.clone().into();
    args.extend(["--param".into(), "novalue".into()]);
    let out = env.run_iotbox(&args);
    out.expect_code(2);
    assert!(
        out.stderr_text().contains("KEY=VALUE"),
        "{}",
        out.stderr_text()
    );
}

/// Through an HTTP CONNECT proxy, as `pubsub` does; and TLS failures in
/// words: a broker certificate the CA file does not vouch for, a claim
/// certificate the broker refuses.
#[test]
fn through_a_proxy_and_tls_failures_explained() {
    let env = Env::new("provproxy");
    let broker = env.broker();
    let _emu = start_emulator(&env, &broker);
    let proxy = ConnectProxy::start();
    let out_dir = env.path("out");
    let port = proxy.port.to_string();
    let out = provision(
        &env,
        broker.port,
        &out_dir,
        &[
            "--template",
            TEMPLATE,
            "--param",
            "SerialNumber=9",
            "--proxy_host",
            "127.0.0.1",
            "--proxy_port",
            &port,
        ],
    );
    out.expect_code(0).expect_stdout("pump-9\n");
    assert_eq!(
        proxy.requests(),
        vec![format!("CONNECT localhost:{} HTTP/1.1", broker.port)]
    );

    let pki = env.pki();
    let wrong_ca = Claim {
        ca: &pki.rogue_ca,
        cert: &pki.client_cert,
        key: &pki.client_key,
    };
    let elsewhere = env.path("elsewhere");
    let out = provision_with(
        &env,
        broker.port,
        &elsewhere,
        &wrong_ca,
        &["--template", TEMPLATE],
    );
    out.expect_code(1);
    let line = out.expect_one_stderr_line();
    assert!(line.contains("not signed by a CA in"), "{line}");

    let rogue_claim = Claim {
        ca: &pki.ca,
        cert: &pki.rogue_cert,
        key: &pki.rogue_key,
    };
    let out = provision_with(
        &env,
        broker.port,
        &elsewhere,
        &rogue_claim,
        &["--template", TEMPLATE],
    );
    out.expect_code(1);
    let line = out.expect_one_stderr_line();
    assert!(line.contains("claim certificate"), "{line}");
    assert!(!elsewhere.exists());
}
