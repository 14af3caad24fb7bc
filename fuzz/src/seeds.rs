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

/// Every seed: (target, name, input).
pub fn all() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let targets = [
        ("codec_decode", codec_seeds()),
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
