//! The `topic\npayload` message: the one format shared by the publish
//! socket, `send`, `recv --topic` and the daemon's `--deliver_topic` framing.
//!
//! Pure functions only: no I/O. The first line is the topic, everything after
//! the first `\n` is the payload, byte for byte (binary, NUL bytes and an empty
//! payload are all fine).

use std::fmt;
use std::time::Duration;

/// A writer on either socket must finish its message (close, or shut down
/// its write side) within this long after connecting: the daemon's publish
/// socket and `recv` drop slower ones, so a silent client cannot hold a slot
/// forever. `send` gives its own write longer, so it never leaves a
/// truncated message behind.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest topic accepted, in bytes. AWS IoT Core allows 256 bytes of topic
/// (plus a few levels for `$aws/` reserved topics, which we do not count).
pub const MAX_TOPIC_LEN: usize = 256;

/// A message split into its two parts, borrowing from the input.
#[derive(Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
}

/// Why a message was rejected. The `Display` text is what the publish socket
/// sends after `ERR ` and what `send` prints, so it says what to fix.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    /// No `\n` at all: the topic line never ended.
    NoNewline,
    EmptyTopic,
    TopicTooLong(usize),
    TopicNotUtf8,
    /// A `\r` in the topic: usually a file saved with CRLF line endings.
    CarriageReturn,
    Nul,
    /// `+` or `#`: wildcards are for subscriptions, not for publishing.
    Wildcard(char),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::NoNewline => write!(
                f,
                "no topic line: the first line must be the topic, followed by a newline and the payload"
            ),
            Invalid::EmptyTopic => write!(f, "empty topic: the first line must be the topic"),
            Invalid::TopicTooLong(n) => {
                write!(f, "topic is {n} bytes; the limit is {MAX_TOPIC_LEN}")
            }
            Invalid::TopicNotUtf8 => write!(f, "topic is not valid UTF-8"),
            Invalid::CarriageReturn => write!(
                f,
                "topic ends in \\r: the file has CRLF line endings; save it with LF (dos2unix)"
            ),
            Invalid::Nul => write!(f, "topic contains a NUL byte"),
            Invalid::Wildcard(c) => write!(
                f,
                "topic contains the wildcard '{c}': wildcards are only allowed in subscriptions"
            ),
        }
    }
}

/// Splits and validates a message.
///
/// # Returns
/// The topic and payload, or why the message can never be published.
pub fn parse(bytes: &[u8]) -> Result<Message<'_>, Invalid> {
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(Invalid::NoNewline)?;
    let (topic, payload) = (&bytes[..newline], &bytes[newline + 1..]);
    let topic = validate_topic(topic)?;
    Ok(Message { topic, payload })
}

/// Checks a topic name for publishing (not a filter: no wildcards).
pub fn validate_topic(topic: &[u8]) -> Result<&str, Invalid> {
    if topic.is_empty() {
        return Err(Invalid::EmptyTopic);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(Invalid::TopicTooLong(topic.len()));
    }
    if topic.contains(&b'\r') {
        return Err(Invalid::CarriageReturn);
    }
    if topic.contains(&0) {
        return Err(Invalid::Nul);
    }
    let topic = std::str::from_utf8(topic).map_err(|_| Invalid::TopicNotUtf8)?;
    if let Some(c) = topic.chars().find(|&c| c == '+' || c == '#') {
        return Err(Invalid::Wildcard(c));
    }
    Ok(topic)
}

/// Why a subscription filter was rejected at start-up.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidFilter(pub String);

impl fmt::Display for InvalidFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a subscription filter: 1..=256 bytes, `#` only as the whole last
/// level, `+` only as a whole level.
pub fn validate_filter(filter: &str) -> Result<(), InvalidFilter> {
    let bad = |why: &str| Err(InvalidFilter(format!("topic filter {filter:?}: {why}")));
    if filter.is_empty() {
        return bad("empty");
    }
    if filter.len() > MAX_TOPIC_LEN {
        return bad("longer than 256 bytes");
    }
    if filter.contains('\0') {
        return bad("contains a NUL byte");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return bad("'#' must be the whole last level, as in a/b/#");
        }
        if level.contains('+') && *level != "+" {
            return bad("'+' must be a whole level, as in a/+/c");
        }
    }
    Ok(())
}

/// Encodes a message: `topic`, `\n`, `payload`.
pub fn encode(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(topic.len() + 1 + payload.len());
    out.extend_from_slice(topic.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn howto_message_file() {
        let file = b"sdk/test/java\n{\n  \"message\": \"Hello from Raspberry Pi\"\n}\n";
        let m = parse(file).unwrap();
        assert_eq!(m.topic, "sdk/test/java");
        assert_eq!(m.payload, &file[14..]);
    }

    #[test]
    fn payload_is_byte_exact_and_may_be_empty_or_binary() {
        assert_eq!(parse(b"a/b\n").unwrap().payload, b"");
        let m = parse(b"t\n\0\n\xff\r\n").unwrap();
        assert_eq!(m.payload, b"\0\n\xff\r\n");
    }

    #[test]
    fn rejects_bad_topics() {
        assert_eq!(parse(b"no newline"), Err(Invalid::NoNewline));
        assert_eq!(parse(b""), Err(Invalid::NoNewline));
        assert_eq!(parse(b"\npayload"), Err(Invalid::EmptyTopic));
        assert_eq!(parse(b"a/b\r\nx"), Err(Invalid::CarriageReturn));
        assert_eq!(parse(b"a\0b\nx"), Err(Invalid::Nul));
        assert_eq!(parse(b"a/+/b\nx"), Err(Invalid::Wildcard('+')));
        assert_eq!(parse(b"a/#\nx"), Err(Invalid::Wildcard('#')));
        assert_eq!(parse(b"\xc3\x28\nx"), Err(Invalid::TopicNotUtf8));
        let long = [b'a'; 257];
        assert_eq!(validate_topic(&long), Err(Invalid::TopicTooLong(257)));
        assert!(validate_topic(&long[..256]).is_ok());
    }

    #[test]
    fn filters() {
        for ok in [
            "a",
            "a/b",
            "+",
            "#",
            "a/+/c",
            "a/#",
            "+/+",
            "sdk/test/python",
        ] {
            assert!(validate_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+", "a/b+/c", "#/a"] {
            assert!(validate_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encode_round_trips() {
        let bytes = encode("x/y", b"\0\npay");
        let m = parse(&bytes).unwrap();
        assert_eq!((m.topic, m.payload), ("x/y", &b"\0\npay"[..]));
    }

    #[test]
    fn messages_say_what_to_do() {
        assert!(Invalid::CarriageReturn.to_string().contains("LF"));
        assert!(Invalid::Wildcard('+').to_string().contains("subscriptions"));
    }
}
