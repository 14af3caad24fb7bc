// Seed inputs for each fuzz target: real packets, the how-to's message
// file, a proxy's reply, and session runs that reach a connected,
// subscribed, publishing state. Written into the corpora by
// `cargo run --example seeds` (scripts/fuzz.sh, when a corpus is empty), and
// replayed by tests/fuzz_corpus.rs whatever the corpora hold.
//
// Plain `//` comments only: this file is also a module of another crate.

use crate::checks::{
    Op, SPOOL_BIG_FIRST, SPOOL_BIG_GENERATION, SPOOL_CUT, SPOOL_DONE, SPOOL_FLIP, SPOOL_GARBAGE,
    SPOOL_MESSAGE_AT, SPOOL_MESSAGE_NEXT, SPOOL_NO_HEADER, SPOOL_OTHER_LOG, SPOOL_RAW,
    SPOOL_SEGMENT, SPOOL_STRAY, SPOOL_UPPER_CASE, Setup, Writer,
};
use bytes::BytesMut;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnAckProperties, ConnectReturnCode, Packet, PubAck, Publish, SubAck,
    SubscribeReasonCode,
};

fn bytes_of(packet: Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet.write(&mut out, None).expect("encodes");
    out.to_vec()
}

fn connack_props() -> ConnAckProperties {
    ConnAckProperties {
        session_expiry_interval: None,
        receive_max: Some(100),
        max_qos: Some(1),
        retain_available: Some(0),
        max_packet_size: Some(149_504),
        assigned_client_identifier: None,
        topic_alias_max: Some(8),
        reason_string: None,
        user_properties: vec![],
        wildcard_subscription_available: None,
        subscription_identifiers_available: None,
        shared_subscription_available: None,
        server_keep_alive: Some(60),
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    }
}

fn codec_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let connack = bytes_of(Packet::ConnAck(ConnAck {
        session_present: false,
        code: ConnectReturnCode::Success,
        properties: Some(connack_props()),
    }));
    let suback = bytes_of(Packet::SubAck(SubAck {
        pkid: 1,
        return_codes: vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)],
        properties: None,
    }));
    let mut publish = Publish::new(
        "sdk/test/python",
        QoS::AtLeastOnce,
        &b"{\"message\":\"hi\"}"[..],
        None,
    );
    publish.pkid = 7;
    let publish = bytes_of(Packet::Publish(publish));
    let puback = bytes_of(Packet::PubAck(PubAck::new(2, None)));
    let session: Vec<u8> = [
        &connack[..],
        &suback,
        &publish,
        &puback,
        &[0x40, 0x02, 0x00, 0x03],
        &[0xD0, 0x00],
        &[0xE0, 0x01, 0x8E],
    ]
    .concat();
    // 2 bytes split point, 1 byte maximum packet size choice, the stream.
    let with = |split: u16, max: u8, stream: &[u8]| {
        let mut v = split.to_le_bytes().to_vec();
        v.push(max);
        v.extend_from_slice(stream);
        v
    };
    vec![
        ("seed-session-at-once", with(0, 0, &session)),
        ("seed-session-split", with(9, 0, &session)),
        ("seed-connack", with(3, 0, &connack)),
        ("seed-publish-small-max", with(4, 1, &publish)),
        ("seed-disconnect-reason-string", {
            let d = [
                0xE0, 0x09, 0x98, 0x05, 0x1F, 0x00, 0x02, b'h', b'i', 0xD0, 0x00,
            ];
            with(1, 0, &d)
        }),
        ("seed-unknown-property", {
            with(2, 0, &[0x20, 0x05, 0x00, 0x00, 0x02, 0x7F, 0x00])
        }),
        (
            "seed-too-large",
            with(2, 2, &[0x30, 0x80, 0x80, 0x80, 0x01]),
        ),
    ]
}

fn message_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "seed-howto",
            b"sdk/test/python\n{\"message\":\"hi\"}".to_vec(),
        ),
        (
            "seed-howto-file",
            b"sdk/test/java\n{\n  \"message\": \"Hello from Raspberry Pi\"\n}\n".to_vec(),
        ),
        ("seed-empty-payload", b"a/b\n".to_vec()),
        ("seed-binary", b"t\n\0\n\xff\r\n".to_vec()),
        ("seed-crlf", b"a/b\r\nx".to_vec()),
        ("seed-wildcard", b"a/+/b\nx".to_vec()),
    ]
}

fn proxy_seeds() -> Vec<(&'static str, Vec<u8>)> {
    // 2 bytes prefix length, then the reply.
    let with = |cut: u16, reply: &[u8]| {
        let mut v = cut.to_le_bytes().to_vec();
        v.extend_from_slice(reply);
        v
    };
    vec![
        (
            "seed-established",
            with(20, b"HTTP/1.1 200 Connection established\r\n\r\n"),
        ),
        (
            "seed-established-early-bytes",
            with(
                45,
                b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\n\x16\x03\x03",
            ),
        ),
        ("seed-http10", with(0, b"HTTP/1.0 200 OK\r\n\r\n")),
        (
            "seed-auth",
            with(30, b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"),
        ),
        ("seed-ssh", with(5, b"SSH-2.0-OpenSSH\r\n\r\n")),
    ]
}

fn run(setup: Setup, ops: &[Op]) -> Vec<u8> {
    let mut w = Writer::default();
    setup.write(&mut w);
    for op in ops {
        op.write(&mut w);
    }
    w.0
}

fn session_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let qos1 = Setup {
        keep_alive: 5, // 60 s
        session_expiry: false,
        filters: 1,
        qos1: true,
        max_payload: 3, // 131072
        queue: 3 | 3 << 2,
        max_rate: 0,
    };
    let connack = |receive_max: Option<u16>, session_present: bool| Op::ConnAck {
        session_present,
        code: 0,
        receive_max,
        max_packet: None,
        max_qos: None,
        server_keep_alive: None,
        assigned_id: false,
    };
    let all = Op::Take { all: true, n: 0 };
    let send = |len: u16| Op::Send { topic: 1, len };
    let suback = Op::SubAck {
        pick: 1,
        pkid: 1,
        codes: vec![1],
        reason_string: false,
    };
    let puback = Op::PubAck {
        pick: 1,
        pkid: 1,
        reason: 0,
        form: 0,
    };
    vec![
        (
            "seed-publish-ack",
            run(
                qos1,
                &[
                    Op::Connected,
                    all.clone(),
                    connack(None, false),
                    all.clone(),
                    suback.clone(),
                    send(10),
                    send(200),
                    all.clone(),
                    puback.clone(),
                    puback.clone(),
                    Op::Publish {
                        qos1: true,
                        pkid: 9,
                        payload: b"{\"message\":\"hi\"}".to_vec(),
                    },
                    all.clone(),
                    Op::NextDeadline,
                    all.clone(),
                    Op::PingResp,
                    Op::Close,
                    all.clone(),
                ],
            ),
        ),
        (
            "seed-receive-maximum",
            run(
                qos1,
                &[
                    Op::Connected,
                    connack(Some(2), false),
                    suback.clone(),
                    send(1),
                    send(2),
                    send(3),
                    send(4),
                    all.clone(),
                    Op::PubAck {
                        pick: 2,
                        pkid: 0,
                        reason: 2,
                        form: 1,
                    },
                    all.clone(),
                    puback.clone(),
                    Op::TransportLost,
                ],
            ),
        ),
        (
            "seed-resume",
            run(
                Setup {
                    session_expiry: true,
                    filters: 10,
                    ..qos1
                },
                &[
                    Op::Connected,
                    connack(None, false),
                    all.clone(),
                    suback.clone(),
                    send(5),
                    send(6),
                    all.clone(),
                    Op::TransportLost,
                    send(7),
                    Op::Connected,
                    connack(Some(1), true),
                    all.clone(),
                    puback.clone(),
                    all.clone(),
                    Op::Disconnect {
                        reason: 0x8E,
                        form: 1,
                    },
                ],
            ),
        ),
        (
            "seed-qos0-partial-output",
            run(
                Setup {
                    qos1: false,
                    max_rate: 2,
                    ..qos1
                },
                &[
                    Op::Connected,
                    connack(None, false),
                    all.clone(),
                    send(100),
                    send(0xFF00),
                    send(3),
                    Op::Take {
                        all: false,
                        n: 1000,
                    },
                    Op::Sleep {
                        amount: 150,
                        unit: 0,
                    },
                    Op::Timeout,
                    Op::Take {
                        all: false,
                        n: 30000,
                    },
                    Op::Close,
                ],
            ),
        ),
        (
            // Under session_wrap, the packet ids wrap around past the
            // unacknowledged SUBSCRIBE and the publishes still in flight.
            "seed-ids-in-use",
            run(
                Setup {
                    filters: 10,
                    ..qos1
                },
                &[
                    Op::Connected,
                    connack(None, false),
                    all.clone(),
                    // Ten filters: two SUBSCRIBEs (8 + 2), one reason code
                    // per filter each. `pick: 1` answers the second first.
                    Op::SubAck {
                        pick: 1,
                        pkid: 1,
                        codes: vec![1; 2],
                        reason_string: false,
                    },
                    Op::SubAck {
                        pick: 1,
                        pkid: 1,
                        codes: vec![1; 8],
                        reason_string: false,
                    },
                    send(1),
                    send(2),
                    send(3),
                    all.clone(),
                    Op::PubAck {
                        pick: 1,
                        pkid: 0,
                        reason: 0,
                        form: 0,
                    },
                ]
                .into_iter()
                .chain((0..45).flat_map(|_| [send(4), all.clone(), puback.clone()]))
                .collect::<Vec<_>>(),
            ),
        ),
        (
            "seed-dead-link",
            run(
                Setup {
                    keep_alive: 1,
                    ..qos1
                },
                &[
                    Op::Connected,
                    connack(None, false),
                    all.clone(),
                    Op::NextDeadline,
                    all.clone(),
                    Op::NextDeadline,
                    Op::Connected,
                    Op::Sleep {
                        amount: 30,
                        unit: 1,
                    },
                    Op::Timeout,
                    Op::Raw(vec![0x20, 0x03, 0x00, 0x00, 0x00, 0xF0, 0x00]),
                ],
            ),
        ),
    ]
}

// A directory for spool_recovery: a segment size choice, then the files.
fn spool(segment_choice: u8, files: &[Vec<u8>]) -> Vec<u8> {
    let mut input = vec![segment_choice, files.len() as u8 - 1];
    for file in files {
        input.extend(file);
    }
    input
}

// One file of a spool_recovery directory: its kind and flags, the name's
// numbers, then its ops (or, with SPOOL_RAW, its bytes as one op).
fn spool_file(kind: u8, first: u64, generation: u32, ops: &[&[u8]]) -> Vec<u8> {
    let mut file = vec![kind];
    if kind & SPOOL_BIG_FIRST != 0 {
        file.extend(first.to_le_bytes());
    } else {
        file.push(first as u8);
    }
    if kind & SPOOL_BIG_GENERATION != 0 {
        file.extend(generation.to_le_bytes());
    } else {
        file.push(generation as u8);
    }
    if kind & SPOOL_RAW != 0 {
        file.push(ops[0].len() as u8);
        file.extend(ops[0]);
    } else {
        file.push(ops.len() as u8);
        for op in ops {
            file.extend(*op);
        }
    }
    file
}

fn spool_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let at = |arg: u8, payload_len: u8| vec![SPOOL_MESSAGE_AT, arg, payload_len];
    let next = |payload_len: u8| vec![SPOOL_MESSAGE_NEXT, 1, payload_len];
    let done = |arg: u8| vec![SPOOL_DONE, arg];
    let segment = |first: u64, generation: u32, ops: &[Vec<u8>]| {
        let ops: Vec<&[u8]> = ops.iter().map(|op| &op[..]).collect();
        spool_file(SPOOL_SEGMENT, first, generation, &ops)
    };
    let three = [at(0, 5), next(0), next(40)];
    vec![
        ("seed-three-messages", spool(4, &[segment(0, 0, &three)])),
        (
            "seed-done-and-two-segments",
            spool(
                4,
                &[
                    segment(0, 0, &[at(0, 3), next(3), next(3), done(2)]),
                    segment(3, 1, &[at(0, 8), next(8), done(1)]),
                ],
            ),
        ),
        (
            "seed-same-first-number",
            spool(
                2,
                &[
                    segment(0, 0, &[at(0, 1), next(1), next(1)]),
                    segment(0, 1, &[at(0, 2), next(2)]),
                ],
            ),
        ),
        (
            "seed-torn-and-flipped",
            spool(
                8,
                &[segment(
                    0,
                    0,
                    &[
                        at(0, 9),
                        next(9),
                        next(9),
                        next(9),
                        vec![SPOOL_FLIP, 60, 4],
                        vec![SPOOL_CUT, 5],
                    ],
                )],
            ),
        ),
        (
            "seed-strays",
            spool(
                4,
                &[
                    segment(0, 0, &three),
                    spool_file(SPOOL_OTHER_LOG, 1, 0, &[&at(1, 2)]),
                    spool_file(SPOOL_UPPER_CASE | SPOOL_BIG_FIRST, 10, 0, &[&at(0, 2)]),
                    spool_file(
                        SPOOL_STRAY | SPOOL_RAW | SPOOL_NO_HEADER,
                        2,
                        0,
                        &[b"not a segment"],
                    ),
                ],
            ),
        ),
        (
            "seed-no-header-and-garbage",
            spool(
                4,
                &[
                    spool_file(SPOOL_SEGMENT | SPOOL_NO_HEADER, 0, 0, &[&at(0, 4)]),
                    segment(
                        1,
                        0,
                        &[
                            vec![SPOOL_GARBAGE, 1],
                            at(0, 4),
                            vec![SPOOL_GARBAGE, 2],
                            next(4),
                        ],
                    ),
                ],
            ),
        ),
        (
            "seed-far-names",
            spool(
                4,
                &[
                    segment(0, 0, &three),
                    spool_file(SPOOL_SEGMENT | SPOOL_BIG_FIRST, 1 << 60, 0, &[&at(1, 2)]),
                    spool_file(SPOOL_SEGMENT | SPOOL_BIG_FIRST, u64::MAX, 0, &[&at(0, 2)]),
                    spool_file(
                        SPOOL_SEGMENT | SPOOL_BIG_FIRST | SPOOL_BIG_GENERATION,
                        1 << 61,
                        u32::MAX,
                        &[],
                    ),
                ],
            ),
        ),
        ("seed-drop-oldest", {
            let mut input = spool(
                0,
                &[
                    segment(0, 0, &[at(0, 3), next(3)]),
                    segment(2, 0, &[at(0, 3), next(3)]),
                    segment(4, 0, &[at(0, 3)]),
                ],
            );
            input[1] |= 0x80; // drop the oldest segments after reading
            input
        }),
        (
            "seed-near-the-top",
            spool(
                4,
                &[spool_file(
                    SPOOL_SEGMENT | SPOOL_BIG_FIRST,
                    (1 << 62) - 1,
                    0,
                    &[&at(0, 1), &done(255)],
                )],
            ),
        ),
    ]
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

// Captured from real clients (mosquitto_pub/_sub), as in the server codec's
// tests: 3.1.1 CONNECT with a will and a login, QoS 1 retained PUBLISH;
// MQTT 5 CONNECT (session expiry, receive maximum 10, a will), PUBLISH with
// properties, SUBSCRIBE with an identifier, DISCONNECT with the will.
const V311_CONNECT_WILL_LOGIN: &str =
    "102900044d51545404ce003c00067075623331310003772f740004676f6e65000475736572000470617373";
const V311_CONNECT: &str = "101200044d5154540402003c0006737562333131";
const V311_PUBLISH_QOS1: &str = "33090003612f6200016869";
const V311_SUBSCRIBE: &str =
    "822500010003612f2302001a246177732f7468696e67732f782f736861646f772f6765742f2b02";
const V311_UNSUBSCRIBE: &str = "a20700020003782f79";
const V5_CONNECT_WILL: &str =
    "102900044d5154540506003c08110000003c21000a0004707562350518000000050003772f740003627965";
const V5_CONNECT: &str = "101400044d5154540502003c03210014000473756235";
const V5_PUBLISH_PROPERTIES: &str = "32320003612f620001282600016b00017603000a746578742f706c61696e080003722f7409000430313032020000001e01016869";
const V5_SUBSCRIBE: &str = "82120001090b07260001610001620003612f2301";
const V5_UNSUBSCRIBE: &str = "a2080002000003782f79";
const V5_DISCONNECT_WITH_WILL: &str = "e00104";
const PINGREQ: &str = "c000";
const DISCONNECT: &str = "e000";

/// A `local_client` input: maximum packet size choice (0: the daemon's),
/// the schedule (two bytes a step: chunk size and time, then deliveries,
/// output taken, answers held, close), the stream of packets in hex.
fn local(max: u8, schedule: &[u8], packets: &[&str]) -> Vec<u8> {
    assert!(schedule.len() < 64 && max < 4);
    let mut input = vec![(schedule.len() as u8) << 2 | max];
    input.extend_from_slice(schedule);
    for p in packets {
        input.extend(hex(p));
    }
    input
}

fn local_client_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let v311 = [
        V311_CONNECT_WILL_LOGIN,
        V311_PUBLISH_QOS1,
        PINGREQ,
        V311_SUBSCRIBE,
        V311_UNSUBSCRIBE,
        "30050001616869", // QoS 0 to "a"
        DISCONNECT,
    ];
    let v5 = [
        V5_CONNECT_WILL,
        V5_PUBLISH_PROPERTIES,
        V5_SUBSCRIBE,
        V5_UNSUBSCRIBE,
        PINGREQ,
        V5_DISCONNECT_WITH_WILL,
    ];
    // Steps: 1-byte chunks; 7-byte chunks with a QoS 0 and a QoS 1
    // delivery, half the output taken; 3-byte chunks, answers held, all
    // output taken.
    let bytewise = [0x00, 0x00];
    let deliveries = [0x06, 0x09, 0x26, 0x2E];
    let held = [0x02, 0x1C, 0x32, 0x1E];
    vec![
        ("seed-v311-at-once", local(0, &[], &v311)),
        ("seed-v311-bytewise", local(0, &bytewise, &v311)),
        ("seed-v311-deliveries", local(0, &deliveries, &v311)),
        ("seed-v5-at-once", local(0, &[], &v5)),
        ("seed-v5-bytewise", local(0, &bytewise, &v5)),
        ("seed-v5-deliveries", local(0, &deliveries, &v5)),
        ("seed-v5-held-answers", local(0, &held, &v5)),
        // Subscribed, then QoS 1 deliveries (packet ids 1 and 2), their
        // PUBACKs. Chunks of 32 and 16 bytes: CONNECT, SUBSCRIBE, PINGREQs.
        (
            "seed-v5-puback",
            local(
                0,
                &[0x0A, 0x00, 0x09, 0x02, 0x03, 0x0E, 0x0F, 0x0C],
                &[
                    V5_CONNECT,
                    V5_SUBSCRIBE,
                    PINGREQ,
                    PINGREQ,
                    PINGREQ,
                    "40020001",
                    "4003000200",
                    DISCONNECT,
                ],
            ),
        ),
        // Keep-alive 60 s, then 100 s of silence: 3.1.1 just closes, 5
        // hears 0x8D first.
        (
            "seed-v311-keep-alive",
            local(0, &[0x6F, 0x00], &[V311_CONNECT, PINGREQ]),
        ),
        (
            "seed-v5-keep-alive",
            local(0, &[0x6F, 0x00], &[V5_CONNECT, PINGREQ]),
        ),
        // No CONNECT within 10 s.
        ("seed-connect-timeout", local(0, &[0x50, 0x00], &["1029"])),
        // Large QoS 1 deliveries nobody reads: past the output limit.
        (
            "seed-v5-output-limit",
            local(0, &[0x00, 0x83], &[V5_CONNECT, &PINGREQ.repeat(20)]),
        ),
        // The client's maximum packet size (0x27: 30 bytes) and ours.
        (
            "seed-v5-client-max-packet",
            local(
                1,
                &[0x0F, 0x03, 0x0F, 0x02],
                &["101500044d5154540502003c08270000001e2100140000"],
            ),
        ),
        // MQTT 3.1 ("MQIsdp"): the 3.1.1 refusal.
        (
            "seed-mqtt31",
            local(0, &[], &["100f00064d51497364700302003c00017a"]),
        ),
        // 3.1.1, empty client id without a clean session: refused (0x85).
        (
            "seed-v311-empty-id-kept-session",
            local(0, &[], &["100c00044d5154540400003c0000"]),
        ),
        // 130 QoS 1 publishes, one a step, their PUBACKs held: the machine
        // stops reading at its receive maximum (128) until answered.
        ("seed-v5-receive-maximum", {
            let publishes: Vec<String> = (1..=130u16)
                .map(|pkid| format!("3206000161{pkid:04x}00"))
                .collect();
            let mut packets = vec![V5_CONNECT];
            packets.extend(publishes.iter().map(String::as_str));
            local(0, &[0x07, 0x10], &packets)
        }),
        // Taken over by another connection (will sent).
        (
            "seed-v5-taken-over",
            local(0, &[0x0F, 0xF1], &[V5_CONNECT_WILL, V5_SUBSCRIBE, PINGREQ]),
        ),
    ]
}

/// Every seed: (target, name, input).
pub fn all() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let targets = [
        ("codec_decode", codec_seeds()),
        ("local_client", local_client_seeds()),
        ("message_parse", message_seeds()),
        ("proxy_reply", proxy_seeds()),
        ("session", session_seeds()),
        ("session_wrap", session_seeds()),
        ("spool_recovery", spool_seeds()),
    ];
    targets
        .into_iter()
        .flat_map(|(target, seeds)| {
            seeds
                .into_iter()
                .map(move |(name, input)| (target, name, input))
        })
        .collect()
}
