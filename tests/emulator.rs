//! The AWS IoT emulator (tests/emulator/aws_iot.py, driven through
//! tests/common/emulator.rs) checked on its own, with mosquitto_pub and
//! mosquitto_sub (MQTT 5) as the device: a shadow that does not exist yet,
//! an update and a get with their client tokens echoed, a console update
//! that reaches the device as a delta, and a certificate made from a CSR
//! that verifies against the test CA.

mod common;

use common::*;
use std::fs;
use std::process::Command;

/// `mosquitto_pub -q 1 -t TOPIC`, with `payload` or, for `None`, an empty
/// message (`-n`).
fn publish(broker: &Broker, topic: &str, payload: Option<&str>) {
    let mut cmd = Command::new(find_tool("mosquitto_pub", "MOSQUITTO_PUB"));
    broker.client_args(&mut cmd, &format!("emu-test-pub-{}", std::process::id()));
    cmd.args(["-q", "1", "-t", topic]);
    match payload {
        Some(p) => cmd.args(["-m", p]),
        None => cmd.arg("-n"),
    };
    run(&format!("mosquitto_pub {topic}"), cmd, None).expect_code(0);
}

/// The next message must be on `topic`, and its payload contain each of
/// `parts`; returns the payload.
fn expect(sub: &mut ConsoleSub, emu: &Emulator, topic: &str, parts: &[&str]) -> String {
    let m = sub.next_message(deadline());
    let payload = String::from_utf8_lossy(&m.payload).into_owned();
    if m.topic != topic || !parts.iter().all(|p| payload.contains(p)) {
        emu.fail(&format!(
            "expected a message on {topic} containing {parts:?}, got {:?}: {payload}",
            m.topic
        ));
    }
    payload
}

#[test]
fn shadow_round_trip_and_a_certificate_from_a_csr() {
    let env = Env::new("emu");
    let broker = env.broker();
    let emu = Emulator::start(&env, &broker, "iotbox-fleet");

    // Device Shadow: the responses only (two levels below shadow/).
    let mut shadow = broker.console_sub("$aws/things/emu-1/shadow/+/+");
    publish(&broker, "$aws/things/emu-1/shadow/get", None);
    expect(
        &mut shadow,
        &emu,
        "$aws/things/emu-1/shadow/get/rejected",
        &[
            "\"code\":404",
            "\"message\":\"No shadow exists with name: 'emu-1'\"",
        ],
    );
    publish(
        &broker,
        "$aws/things/emu-1/shadow/update",
        Some(r#"{"state":{"reported":{"temp":21,"mode":"eco"}},"clientToken":"tok-1"}"#),
    );
    expect(
        &mut shadow,
        &emu,
        "$aws/things/emu-1/shadow/update/accepted",
        &[
            "\"state\":{\"reported\":{\"temp\":21,\"mode\":\"eco\"}}",
            "\"version\":1",
            "\"clientToken\":\"tok-1\"",
        ],
    );
    expect(
        &mut shadow,
        &emu,
        "$aws/things/emu-1/shadow/update/documents",
        &["\"previous\":", "\"current\":", "\"clientToken\":\"tok-1\""],
    );
    publish(
        &broker,
        "$aws/things/emu-1/shadow/get",
        Some(r#"{"clientToken":"tok-2"}"#),
    );
    expect(
        &mut shadow,
        &emu,
        "$aws/things/emu-1/shadow/get/accepted",
        &[
            "\"reported\":{\"temp\":21,\"mode\":\"eco\"}",
            "\"metadata\":{\"reported\":{\"temp\":{\"timestamp\":",
            "\"version\":1",
            "\"clientToken\":\"tok-2\"",
        ],
    );
    // The console wants 25: the device gets only what differs.
    emu.cloud_update(
        "emu-1",
        None,
        r#"{"state":{"desired":{"temp":25,"mode":"eco"}}}"#,
    );
    expect(
        &mut shadow,
        &emu,
        "$aws/things/emu-1/shadow/update/delta",
        &["\"state\":{\"temp\":25}", "\"version\":2"],
    );

    // Fleet provisioning: a CSR made by openssl, signed by the test CA.
    let openssl = need_tool("openssl", "OPENSSL", "apt-get install openssl");
    let (key, csr) = (env.path("device.key"), env.path("device.csr"));
    let mut req = Command::new(&openssl);
    req.args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=x"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr);
    run("openssl req", req, None).expect_code(0);
    let pem = fs::read_to_string(&csr).expect("read the CSR");
    let mut certs = broker.console_sub("$aws/certificates/create-from-csr/json/+");
    publish(
        &broker,
        "$aws/certificates/create-from-csr/json",
        Some(&format!(
            "{{\"certificateSigningRequest\":{}}}",
            json_str(&pem)
        )),
    );
    let accepted = expect(
        &mut certs,
        &emu,
        "$aws/certificates/create-from-csr/json/accepted",
        &["\"certificateId\":", "\"certificateOwnershipToken\":"],
    );
    let cert_pem =
        json_string_field(&accepted, "certificatePem").expect("certificatePem in the answer");
    let cert = env.write("device.pem", cert_pem.as_bytes());
    let mut verify = Command::new(&openssl);
    verify
        .arg("verify")
        .arg("-CAfile")
        .arg(&env.pki().ca)
        .arg(&cert);
    run("openssl verify", verify, None).expect_code(0);
    let id = json_string_field(&accepted, "certificateId").expect("certificateId");
    assert_eq!(id.len(), 64, "a SHA-256 in hex: {id}");
    emu.wait_event(
        "certificate_signed",
        |l| l.contains("\"event\":\"certificate_signed\"") && l.contains(&id),
        deadline(),
    );

    // RegisterThing with the certificate's token: the thing is named after
    // a parameter; the token is good once.
    let token = json_string_field(&accepted, "certificateOwnershipToken").expect("token");
    let mut things =
        broker.console_sub("$aws/provisioning-templates/iotbox-fleet/provision/json/+");
    let register = format!(
        "{{\"certificateOwnershipToken\":{},\"parameters\":{{\"SerialNumber\":\"42\"}}}}",
        json_str(&token)
    );
    let topic = "$aws/provisioning-templates/iotbox-fleet/provision/json";
    publish(&broker, topic, Some(&register));
    expect(
        &mut things,
        &emu,
        &format!("{topic}/accepted"),
        &["\"deviceConfiguration\":{}", "\"thingName\":\"42\""],
    );
    publish(&broker, topic, Some(&register));
    expect(
        &mut things,
        &emu,
        &format!("{topic}/rejected"),
        &[
            "\"statusCode\":400",
            "\"errorCode\":\"InvalidCertificateOwnershipToken\"",
        ],
    );
    // The new certificate is one the broker takes.
    let mut with_new_cert = Command::new(find_tool("mosquitto_pub", "MOSQUITTO_PUB"));
    broker.client_args(&mut with_new_cert, "emu-test-provisioned");
    with_new_cert
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["-q", "1", "-t", "provisioned/hello", "-m", "hi"]);
    run(
        "mosquitto_pub with the new certificate",
        with_new_cert,
        None,
    )
    .expect_code(0);

    // A CSR that is not one.
    publish(
        &broker,
        "$aws/certificates/create-from-csr/json",
        Some(
            r#"{"certificateSigningRequest":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}"#,
        ),
    );
    expect(
        &mut certs,
        &emu,
        "$aws/certificates/create-from-csr/json/rejected",
        &["\"statusCode\":400", "\"errorCode\":", "\"errorMessage\":"],
    );
}
