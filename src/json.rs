//! The little JSON iotbox speaks without a JSON crate: writing flat objects
//! (`$iotbox/status`, [`Object`]), and reading any document ([`parse`]) for
//! the device applets, which look into AWS's answers (a shadow's version, a
//! job's document) and write some back ([`Value::to_json`]).
//!
//! Numbers are kept as the text they were written in: nothing here does
//! arithmetic on them, and a shadow's numbers must come back unchanged.

use std::fmt::Write as _;

/// How deep arrays and objects may nest: the parser recurses, and no
/// document AWS sends comes near this (a shadow allows 8 levels of state).
const MAX_DEPTH: usize = 64;

/// A JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    /// Kept as written.
    Num(String),
    Bool(bool),
    Null,
    Array(Vec<Value>),
    /// Fields in the order written.
    Object(Vec<(String, Value)>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The field `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A number's value as an integer, if it is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Num(n) => n.parse().ok(),
            _ => None,
        }
    }

    /// Compact JSON text, one line.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Value::Str(s) => quote(out, s),
            Value::Num(n) => out.push_str(n),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Null => out.push_str("null"),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Value::Object(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    quote(out, key);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// A value in words: strings without quotes, null as "unknown", the rest as
/// JSON.
impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Str(s) | Value::Num(s) => f.write_str(s),
            Value::Null => f.write_str("unknown"),
            other => f.write_str(&other.to_json()),
        }
    }
}

/// Builds a flat object, fields in the order added.
#[derive(Default)]
pub struct Object(String);

impl Object {
    pub fn string(mut self, key: &str, value: &str) -> Object {
        self.key(key);
        quote(&mut self.0, value);
        self
    }

    pub fn number(mut self, key: &str, value: impl Into<Option<i64>>) -> Object {
        self.key(key);
        match value.into() {
            Some(n) => {
                let _ = write!(self.0, "{n}");
            }
            None => self.0.push_str("null"),
        }
        self
    }

    pub fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }

    fn key(&mut self, key: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        quote(&mut self.0, key);
        self.0.push(':');
    }
}

/// Appends `s` as a JSON string.
pub fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Reads one JSON document (RFC 8259), or `None` if it is not one.
pub fn parse(text: &str) -> Option<Value> {
    let mut p = Parser {
        s: text.as_bytes(),
        at: 0,
    };
    p.ws();
    let value = p.value(0)?;
    p.end().map(|()| value)
}

/// Reads a flat object: its fields in order, or `None` if it is not one.
pub fn parse_flat(text: &str) -> Option<Vec<(String, Value)>> {
    match parse(text)? {
        Value::Object(fields)
            if fields
                .iter()
                .all(|(_, v)| !matches!(v, Value::Object(_) | Value::Array(_))) =>
        {
            Some(fields)
        }
        _ => None,
    }
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.s.get(self.at) == Some(&b)).then(|| self.at += 1)
    }

    fn end(&mut self) -> Option<()> {
        self.ws();
        (self.at == self.s.len()).then_some(())
    }

    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(self.at)?;
            self.at += 1;
            match b {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = *self.s.get(self.at)?;
                    self.at += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let mut code = self.hex4()?;
                            if (0xD800..0xDC00).contains(&code) {
                                // A high surrogate: a low one must follow.
                                self.word(b"\\u")?;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return None;
                                }
                                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                            }
                            let c = char::from_u32(code)?;
                            let mut buf = [0; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return None,
                    }
                }
                b if b < 0x20 => return None,
                b => out.push(b),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let hex = self.s.get(self.at..self.at + 4)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        self.at += 4;
        u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        match *self.s.get(self.at)? {
            b'{' | b'[' if depth >= MAX_DEPTH => None,
            b'{' => self.object(depth + 1).map(Value::Object),
            b'[' => self.array(depth + 1).map(Value::Array),
            b'"' => self.string().map(Value::Str),
            b't' => self.word(b"true").map(|()| Value::Bool(true)),
            b'f' => self.word(b"false").map(|()| Value::Bool(false)),
            b'n' => self.word(b"null").map(|()| Value::Null),
            b'-' | b'0'..=b'9' => {
                let start = self.at;
                while self.s.get(self.at).is_some_and(|b| {
                    b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')
                }) {
                    self.at += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.at]).ok()?;
                text.parse::<f64>().ok()?;
                Some(Value::Num(text.to_owned()))
            }
            _ => None,
        }
    }

    fn object(&mut self, depth: usize) -> Option<Vec<(String, Value)>> {
        self.eat(b'{')?;
        let mut fields = Vec::new();
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(fields);
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            fields.push((key, self.value(depth)?));
            self.ws();
            if self.eat(b',').is_none() {
                self.eat(b'}')?;
                return Some(fields);
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<Vec<Value>> {
        self.eat(b'[')?;
        let mut items = Vec::new();
        self.ws();
        if self.eat(b']').is_some() {
            return Some(items);
        }
        loop {
            self.ws();
            items.push(self.value(depth)?);
            self.ws();
            if self.eat(b',').is_none() {
                self.eat(b']')?;
                return Some(items);
            }
        }
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        (self.s.get(self.at..self.at + w.len()) == Some(w)).then(|| self.at += w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::store::sim::Rng;

    #[test]
    fn a_flat_object_round_trips() {
        let text = Object::default()
            .string("state", "connected")
            .number("since", 1_796_489_826)
            .number("days", None)
            .string("odd", "a\"b\\c\nd\u{1}é")
            .finish();
        assert_eq!(
            text,
            r#"{"state":"connected","since":1796489826,"days":null,"odd":"a\"b\\c\nd\u0001é"}"#
        );
        let fields = parse_flat(&text).unwrap();
        assert_eq!(fields[0], ("state".into(), Value::Str("connected".into())));
        assert_eq!(fields[1].1, Value::Num("1796489826".into()));
        assert_eq!(fields[2].1, Value::Null);
        assert_eq!(fields[3].1, Value::Str("a\"b\\c\nd\u{1}é".into()));
        assert_eq!(Object::default().finish(), "{}");
        assert_eq!(parse_flat(" { } "), Some(vec![]));
    }

    #[test]
    fn what_is_not_a_flat_object_is_none() {
        for bad in [
            "",
            "[]",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":{\"b\":1}}",
            "{\"a\":1} x",
            "{\"a\":tru}",
            "{\"a\":\"\\q\"}",
            "{\"a\":--}",
            "{a:1}",
            "{\"a\":[1]}",
        ] {
            assert_eq!(parse_flat(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn documents_round_trip_compact() {
        let text = r#" { "state" : { "desired" : { "color" : "red", "n" : [1, 2.5e3, -0, true, null, {}, []] } },
            "version" : 7, "clientToken" : "t\u00e9\ud83d\ude00" } "#;
        let v = parse(text).unwrap();
        assert_eq!(v.get("version").and_then(Value::as_i64), Some(7));
        assert_eq!(v.get("clientToken").and_then(Value::as_str), Some("té😀"));
        assert_eq!(
            v.get("state")
                .and_then(|s| s.get("desired"))
                .and_then(|d| d.get("color")),
            Some(&Value::Str("red".into()))
        );
        let compact = v.to_json();
        assert_eq!(
            compact,
            r#"{"state":{"desired":{"color":"red","n":[1,2.5e3,-0,true,null,{},[]]}},"version":7,"clientToken":"té😀"}"#
        );
        assert_eq!(parse(&compact), Some(v));
        assert_eq!(parse("\"x\""), Some(Value::Str("x".into())));
    }

    #[test]
    fn what_is_not_json_is_none() {
        for bad in [
            "",
            "[",
            "]",
            "[1,]",
            "[1 2]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "\"\\ud800\"",
            "\"\\ud800\\u0041\"",
            "\"\\u12\"",
            "\"\\u+123\"",
            "1 2",
            "nul",
            "{}}",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        // Nesting is bounded: no stack overflow on hostile input.
        let deep = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&deep).is_some());
        let deeper = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(&deeper), None);
        assert_eq!(parse(&"[".repeat(100_000)), None);
    }

    /// A random value, nested up to `depth`.
    fn random_value(rng: &mut Rng, depth: usize) -> Value {
        const TEXTS: [&str; 6] = ["", "a", "temp", "é\"\\/\n\u{1}", "😀 x", "\u{7f}\t"];
        const NUMBERS: [&str; 6] = ["0", "-1", "21.5", "1e9", "-0.25E-3", "12345678901234567890"];
        match rng.below(if depth == 0 { 4 } else { 6 }) {
            0 => Value::Str(TEXTS[rng.index(TEXTS.len())].to_owned()),
            1 => Value::Num(NUMBERS[rng.index(NUMBERS.len())].to_owned()),
            2 => Value::Bool(rng.one_in(2)),
            3 => Value::Null,
            4 => Value::Array(
                (0..rng.below(4))
                    .map(|_| random_value(rng, depth - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.below(4))
                    .map(|i| (format!("k{i}"), random_value(rng, depth - 1)))
                    .collect(),
            ),
        }
    }

    #[test]
    fn random_documents_round_trip_and_mutations_never_panic() {
        let mut rng = Rng::new(10);
        for _ in 0..3000 {
            let value = random_value(&mut rng, 5);
            let text = value.to_json();
            assert_eq!(parse(&text).as_ref(), Some(&value), "{text}");
            // Damage it: a parse that succeeds must give a document that
            // writes and reads back the same.
            let mut bytes = text.into_bytes();
            for _ in 0..1 + rng.below(3) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.index(bytes.len());
                match rng.below(3) {
                    0 => bytes[at] = rng.next_u64() as u8,
                    1 => {
                        bytes.remove(at);
                    }
                    _ => {
                        let syntax = b"{}[],:\"\\-0e";
                        bytes.insert(at, syntax[rng.index(syntax.len())]);
                    }
                }
            }
            if let Ok(damaged) = std::str::from_utf8(&bytes) {
                if let Some(v) = parse(damaged) {
                    assert_eq!(parse(&v.to_json()), Some(v), "{damaged}");
                }
            }
        }
    }
}
