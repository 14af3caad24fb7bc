//! The little JSON the daemon speaks without a JSON crate: writing flat
//! objects (`$iotbox/status`) and reading them back (`iotbox status`).
//! Flat means one object whose values are strings, numbers, booleans or
//! null: no nesting, which is all the status needs.

use std::fmt::Write as _;

/// A flat JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    /// Kept as written: the reader only shows numbers.
    Num(String),
    Bool(bool),
    Null,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Str(s) | Value::Num(s) => f.write_str(s),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Null => f.write_str("unknown"),
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

/// Reads a flat object: its fields in order, or `None` if it is not one.
pub fn parse_flat(text: &str) -> Option<Vec<(String, Value)>> {
    let mut p = Parser {
        s: text.as_bytes(),
        at: 0,
    };
    p.ws();
    p.eat(b'{')?;
    let mut fields = Vec::new();
    p.ws();
    if p.eat(b'}').is_some() {
        return p.end().map(|()| fields);
    }
    loop {
        p.ws();
        let key = p.string()?;
        p.ws();
        p.eat(b':')?;
        p.ws();
        let value = p.value()?;
        fields.push((key, value));
        p.ws();
        if p.eat(b',').is_some() {
            continue;
        }
        p.eat(b'}')?;
        return p.end().map(|()| fields);
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
                            let hex = self.s.get(self.at..self.at + 4)?;
                            self.at += 4;
                            let code =
                                u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                            // Surrogates are not needed here: shown as U+FFFD.
                            let c = char::from_u32(code).unwrap_or('\u{FFFD}');
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

    fn value(&mut self) -> Option<Value> {
        match *self.s.get(self.at)? {
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

    fn word(&mut self, w: &[u8]) -> Option<()> {
        (self.s.get(self.at..self.at + w.len()) == Some(w)).then(|| self.at += w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            assert_eq!(parse_flat(bad), None, "{bad:?}");
        }
    }
}
