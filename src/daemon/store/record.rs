//! The bytes of a spool segment, pure: encoding and decoding records.
//!
//! A segment is a header, then records, appended and never rewritten:
//!
//! ```text
//! header   "IOTBOXS" 0x01                                  8 bytes
//! record   crc32 (u32 LE) of the next two fields, then
//!          length of body (u32 LE), then
//!          body:
//!            1 (u8) seq (u64 LE) time (u64 LE, Unix seconds)
//!              topic length (u16 LE) topic payload           a message
//!            2 (u8) below (u64 LE)                           every message
//!                                                            before `below`
//!                                                            is done
//!            3 (u8) seq time topic length                    a message with
//!              meta length (u16 LE) topic meta payload       meta data (for
//!                                                            MQTT: retain
//!                                                            and properties)
//! ```
//!
//! A record whose checksum fails (a torn last write, a flipped bit) is
//! skipped: [`parse`] says so and the reader looks for the next record that
//! checks out, one byte further each time ([`Parsed::Corrupt`]).

use bytes::Bytes;

/// The first bytes of every segment: a name and a format version.
pub const MAGIC: &[u8; 8] = b"IOTBOXS\x01";

/// crc32 and length.
pub const FRAME: usize = 8;

const MESSAGE: u8 = 1;
const DONE: u8 = 2;
const MESSAGE_META: u8 = 3;

/// Body bytes before a message's topic: kind, seq, time, topic length.
const MESSAGE_HEAD: usize = 1 + 8 + 8 + 2;
/// ... and of a message with meta data: the same, then the meta length.
const MESSAGE_META_HEAD: usize = MESSAGE_HEAD + 2;
/// A done record's body: kind, below.
const DONE_BODY: usize = 1 + 8;

/// Bytes of a message record on disk, frame included.
pub fn message_size(topic_len: usize, payload_len: usize) -> usize {
    FRAME + MESSAGE_HEAD + topic_len + payload_len
}

/// Bytes of a message record with `meta_len` bytes of meta data (none: the
/// plain form).
pub fn message_size_with(topic_len: usize, meta_len: usize, payload_len: usize) -> usize {
    match meta_len {
        0 => message_size(topic_len, payload_len),
        _ => FRAME + MESSAGE_META_HEAD + topic_len + meta_len + payload_len,
    }
}

/// Bytes of a done record on disk.
pub const DONE_SIZE: usize = FRAME + DONE_BODY;

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub seq: u64,
    /// When it was accepted, Unix seconds (the wall clock then, which may
    /// have been wrong: see `Log`'s age rule).
    pub time: u64,
    pub topic: Bytes,
    /// Opaque to the spool (the daemon keeps MQTT's retain flag and
    /// properties here); empty for most messages.
    pub meta: Bytes,
    pub payload: Bytes,
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Message(Message),
    /// Every message with a smaller seq is done (sent, delivered, given up).
    Done {
        below: u64,
    },
}

/// What [`parse`] found at a position.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A record, and the bytes it took.
    Record(Record, usize),
    /// The bytes end inside a record: more are needed (or, at the end of a
    /// segment, the last write was torn).
    Short { need: usize },
    /// Not a record: a torn or damaged one, or garbage.
    Corrupt,
}

/// Appends a message record to `out`.
///
/// The caller keeps the topic within `u16` (topics are at most 256 bytes)
/// and the record within `u32` (payloads are checked against the broker's
/// limit, at most 256 MiB).
pub fn encode_message(out: &mut Vec<u8>, seq: u64, time: u64, topic: &[u8], payload: &[u8]) {
    let body_len = MESSAGE_HEAD + topic.len() + payload.len();
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.push(MESSAGE);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&time.to_le_bytes());
    out.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    out.extend_from_slice(topic);
    out.extend_from_slice(payload);
    seal(out, start);
}

/// Appends a message record with meta data to `out` (the plain form when
/// `meta` is empty). `meta` is at most 65,535 bytes, like the topic.
pub fn encode_message_with(
    out: &mut Vec<u8>,
    seq: u64,
    time: u64,
    topic: &[u8],
    meta: &[u8],
    payload: &[u8],
) {
    if meta.is_empty() {
        return encode_message(out, seq, time, topic, payload);
    }
    let body_len = MESSAGE_META_HEAD + topic.len() + meta.len() + payload.len();
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.push(MESSAGE_META);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&time.to_le_bytes());
    out.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    out.extend_from_slice(&(meta.len() as u16).to_le_bytes());
    out.extend_from_slice(topic);
    out.extend_from_slice(meta);
    out.extend_from_slice(payload);
    seal(out, start);
}

/// Appends a done record to `out`.
pub fn encode_done(out: &mut Vec<u8>, below: u64) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(DONE_BODY as u32).to_le_bytes());
    out.push(DONE);
    out.extend_from_slice(&below.to_le_bytes());
    seal(out, start);
}

/// Writes the checksum of the record starting at `start`.
fn seal(out: &mut [u8], start: usize) {
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the record at the start of `bytes`. `max_body` bounds the
/// length field, so that a damaged one cannot make the reader wait for
/// gigabytes that will never come.
pub fn parse(bytes: &[u8], max_body: usize) -> Parsed {
    let Some(frame) = bytes.get(..FRAME) else {
        return Parsed::Short { need: FRAME };
    };
    let len = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]) as usize;
    // Cheap checks first: while looking for the next good record after
    // damage, most positions fail here without a checksum.
    let plausible = match bytes.get(FRAME) {
        Some(&MESSAGE) => (MESSAGE_HEAD..=max_body).contains(&len),
        Some(&DONE) => len == DONE_BODY,
        Some(&MESSAGE_META) => (MESSAGE_META_HEAD..=max_body).contains(&len),
        Some(_) => false,
        None => len <= max_body,
    };
    if !plausible {
        return Parsed::Corrupt;
    }
    let total = FRAME + len;
    let Some(record) = bytes.get(..total) else {
        return Parsed::Short { need: total };
    };
    let crc = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
    if crc32fast::hash(&record[4..]) != crc {
        return Parsed::Corrupt;
    }
    let body = &record[FRAME..];
    let u64_at = |at: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&body[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let parsed = if body[0] == DONE {
        Record::Done { below: u64_at(1) }
    } else {
        let topic_len = usize::from(u16::from_le_bytes([body[17], body[18]]));
        let (head, meta_len) = match body[0] {
            MESSAGE_META => (
                MESSAGE_META_HEAD,
                usize::from(u16::from_le_bytes([body[19], body[20]])),
            ),
            _ => (MESSAGE_HEAD, 0),
        };
        if head + topic_len + meta_len > body.len() {
            return Parsed::Corrupt;
        }
        let rest = &body[head..];
        let (topic, rest) = rest.split_at(topic_len);
        let (meta, payload) = rest.split_at(meta_len);
        Record::Message(Message {
            seq: u64_at(1),
            time: u64_at(9),
            topic: Bytes::copy_from_slice(topic),
            meta: Bytes::copy_from_slice(meta),
            payload: Bytes::copy_from_slice(payload),
        })
    };
    Parsed::Record(parsed, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, topic: &str, payload: &[u8]) -> Record {
        Record::Message(Message {
            seq,
            time: 1_700_000_000 + seq,
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            meta: Bytes::new(),
            payload: Bytes::copy_from_slice(payload),
        })
    }

    #[test]
    fn a_message_with_meta_data_round_trips_and_its_size_is_exact() {
        let mut out = Vec::new();
        encode_message_with(&mut out, 9, 10, b"a/b", b"\x01\x02", b"hi");
        assert_eq!(out.len(), message_size_with(3, 2, 2));
        let Parsed::Record(Record::Message(m), n) = parse(&out, 1 << 20) else {
            panic!("not a message");
        };
        assert_eq!(n, out.len());
        assert_eq!(
            (m.seq, m.time, &m.topic[..], &m.meta[..], &m.payload[..]),
            (9, 10, &b"a/b"[..], &b"\x01\x02"[..], &b"hi"[..])
        );
        // Without meta data: the plain form, as before.
        let mut plain = Vec::new();
        encode_message_with(&mut plain, 9, 10, b"a/b", b"", b"hi");
        assert_eq!(plain.len(), message_size(3, 2));
        // A meta length beyond the body is damage, even with a good checksum.
        out[FRAME + 19..FRAME + 21].copy_from_slice(&500u16.to_le_bytes());
        seal(&mut out, 0);
        assert_eq!(parse(&out, 1 << 20), Parsed::Corrupt);
    }

    #[test]
    fn records_round_trip_and_sizes_are_exact() {
        let mut out = Vec::new();
        encode_message(&mut out, 7, 1_700_000_007, b"a/b", b"hello\0\n");
        assert_eq!(out.len(), message_size(3, 7));
        encode_done(&mut out, 7);
        assert_eq!(out.len(), message_size(3, 7) + DONE_SIZE);
        let Parsed::Record(first, n) = parse(&out, 1 << 20) else {
            panic!("not a record");
        };
        assert_eq!(first, message(7, "a/b", b"hello\0\n"));
        assert_eq!(
            parse(&out[n..], 1 << 20),
            Parsed::Record(Record::Done { below: 7 }, DONE_SIZE)
        );
    }

    #[test]
    fn every_cut_is_short_and_every_flipped_byte_is_corrupt() {
        let mut out = Vec::new();
        encode_message(&mut out, 1, 2, b"t", b"payload");
        for cut in 0..out.len() {
            assert!(
                matches!(
                    parse(&out[..cut], 1 << 20),
                    Parsed::Short { .. } | Parsed::Corrupt
                ),
                "cut at {cut}"
            );
        }
        for at in 0..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[at] ^= 1 << bit;
                assert!(
                    !matches!(parse(&bad, 1 << 20), Parsed::Record(..)),
                    "byte {at} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn an_implausible_length_is_corrupt_without_waiting_for_it() {
        let mut out = Vec::new();
        encode_message(&mut out, 1, 2, b"t", &[0; 100]);
        assert_eq!(parse(&out, 50), Parsed::Corrupt);
        out[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&out, 1 << 20), Parsed::Corrupt);
    }

    #[test]
    fn a_topic_length_beyond_the_body_is_corrupt_even_with_a_good_checksum() {
        let mut out = Vec::new();
        encode_message(&mut out, 1, 2, b"t", b"");
        out[FRAME + 17..FRAME + 19].copy_from_slice(&500u16.to_le_bytes());
        seal(&mut out, 0);
        assert_eq!(parse(&out, 1 << 20), Parsed::Corrupt);
    }
}
