//! `shadow`: this thing's device shadow (AWS IoT Device Shadow service),
//! through the daemon's local endpoint: no second AWS connection.
//!
//! ```text
//! iotbox shadow get                       # prints the shadow document
//! iotbox shadow update '{"state":{"reported":{"temp":21}}}'
//! iotbox shadow --name config delete      # a named shadow
//! iotbox shadow watch                     # each delta, one JSON line
//! ```
//!
//! get, update and delete publish to the service's request topic
//! (`$aws/things/THING/shadow[/name/NAME]/OP`) with a client token, and take
//! the answer on `OP/accepted` or `OP/rejected` that carries the same token,
//! so several requests at once each get their own. Accepted: the document
//! is printed as one line of JSON, exit 0. Rejected: its code and message on
//! stderr, exit 1. No answer within `--timeout`: exit 3.
//!
//! watch prints the delta pending now (from a get), then each message on
//! `update/delta` as it comes, until the daemon goes away (exit 1).

use super::mqtt::{self, Answer};
use super::status;
use crate::cli::{self, ShadowArgs};
use crate::daemon::{check_thing_name, is_aws_name};
use crate::error::{Error, runtime, usage};
use crate::json::{self, Value};
use crate::output::say;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// The largest update document read: AWS allows 8 KiB of state, the
/// request a little more.
const MAX_DOCUMENT: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Get,
    Update,
    Delete,
    Watch,
}

pub fn main(command: &str, args: &[&str]) -> Result<(), Error> {
    // argh takes a lone "-" for a flag: it goes last, as a positional.
    let mut args: Vec<&str> = args.to_vec();
    if let Some(at) = args.iter().position(|a| *a == "-") {
        if !args[..at].contains(&"--") {
            args.remove(at);
            args.extend(["--", "-"]);
        }
    }
    let Some(flags) = cli::parse_normalized::<ShadowArgs>(command, &args)? else {
        return Ok(());
    };
    crate::output::init_tool_logging();
    let action = match flags.action.as_str() {
        "get" => Action::Get,
        "update" => Action::Update,
        "delete" => Action::Delete,
        "watch" => Action::Watch,
        other => {
            return Err(usage!(
                "{command}: unknown action {other:?}: give get, update, delete or watch"
            ));
        }
    };
    if flags.timeout == 0 {
        return Err(usage!(
            "--timeout 0: give the seconds to wait for an answer"
        ));
    }
    if let Some(thing) = &flags.thing_name {
        check_thing_name(thing)?;
    }
    if let Some(name) = &flags.name {
        if !is_shadow_name(name) {
            return Err(usage!(
                "--name {name:?}: a shadow name is 1 to 64 of a-z A-Z 0-9 : _ -"
            ));
        }
    }
    let document = match (action, flags.document.as_deref()) {
        (Action::Update, None) => {
            return Err(usage!(
                "{command} update: give the document, such as '{{\"state\":{{\"reported\":{{\"on\":true}}}}}}', or - to read it from stdin"
            ));
        }
        (Action::Update, Some(text)) => Some(read_document(text)?),
        (_, None) => None,
        (_, Some(_)) => {
            return Err(usage!("{command} {}: takes no document", flags.action));
        }
    };

    let timeout = Duration::from_secs(flags.timeout);
    let deadline = Instant::now() + timeout;
    let mut client = mqtt::connect_local(&flags.socket, "shadow", deadline)?;
    let thing = match &flags.thing_name {
        Some(thing) => thing.clone(),
        None => status::thing_name(&mut client, deadline)?,
    };
    let prefix = match &flags.name {
        None => format!("$aws/things/{thing}/shadow"),
        Some(name) => format!("$aws/things/{thing}/shadow/name/{name}"),
    };
    let token = mqtt::client_token("shadow");
    let result = match action {
        Action::Get => request(&mut client, &prefix, "get", &token, None, deadline),
        Action::Update => request(&mut client, &prefix, "update", &token, document, deadline),
        Action::Delete => request(&mut client, &prefix, "delete", &token, None, deadline),
        Action::Watch => watch(&mut client, &prefix, &token, deadline),
    };
    client.disconnect();
    match result? {
        Answer::Accepted(document) => {
            say(&document.to_json());
            Ok(())
        }
        Answer::Rejected(error) => {
            Err(mqtt::rejection(&format!("shadow {}", flags.action), &error))
        }
    }
}

/// AWS's rule for shadow names.
fn is_shadow_name(name: &str) -> bool {
    is_aws_name(name, 64, b":_-")
}

/// The update document from the argument or stdin: a JSON object.
fn read_document(text: &str) -> Result<Value, Error> {
    let text = if text == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(MAX_DOCUMENT as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| runtime!("cannot read the document from stdin: {e}"))?;
        if buf.len() > MAX_DOCUMENT {
            return Err(usage!(
                "the document on stdin is larger than {MAX_DOCUMENT} bytes"
            ));
        }
        String::from_utf8(buf).map_err(|_| usage!("the document on stdin is not UTF-8"))?
    } else {
        text.to_owned()
    };
    match json::parse(&text) {
        Some(value @ Value::Object(_)) => Ok(value),
        Some(_) => Err(usage!(
            "the document is not a JSON object: a shadow update looks like {{\"state\":{{\"desired\":{{...}}}}}}"
        )),
        None => Err(usage!("the document is not valid JSON: {}", text.trim())),
    }
}

/// The request's payload: the document (or an empty object) with our client
/// token, unless it brings its own. Returns the payload and the token the
/// answer will carry.
fn with_token(document: Option<Value>, token: &str) -> (String, String) {
    let mut fields = match document {
        Some(Value::Object(fields)) => fields,
        _ => Vec::new(),
    };
    let token = match fields.iter().find(|(k, _)| k == "clientToken") {
        Some((_, Value::Str(theirs))) => theirs.clone(),
        _ => {
            fields.retain(|(k, _)| k != "clientToken");
            fields.push(("clientToken".into(), Value::Str(token.into())));
            token.to_owned()
        }
    };
    (Value::Object(fields).to_json(), token)
}

/// One request and its answer.
fn request(
    client: &mut mqtt::Client<UnixStream>,
    prefix: &str,
    op: &str,
    token: &str,
    document: Option<Value>,
    deadline: Instant,
) -> Result<Answer, Error> {
    let topic = format!("{prefix}/{op}");
    client.subscribe(
        &[format!("{topic}/accepted"), format!("{topic}/rejected")],
        deadline,
    )?;
    let (payload, token) = with_token(document, token);
    client.request(&topic, &payload, &token, deadline)
}

/// Prints the pending delta, then every delta as it comes; returns only
/// when the daemon goes away.
fn watch(
    client: &mut mqtt::Client<UnixStream>,
    prefix: &str,
    token: &str,
    deadline: Instant,
) -> Result<Answer, Error> {
    let delta = format!("{prefix}/update/delta");
    // Subscribed before the get, so no change falls between the two.
    client.subscribe(std::slice::from_ref(&delta), deadline)?;
    match request(client, prefix, "get", token, None, deadline)? {
        Answer::Accepted(document) => {
            if let Some(pending) = pending_delta(&document) {
                say(&pending.to_json());
            }
        }
        // No shadow yet (404): no delta either.
        Answer::Rejected(error) if error.get("code").and_then(Value::as_i64) == Some(404) => {}
        Answer::Rejected(error) => return Err(mqtt::rejection("shadow get", &error)),
    }
    loop {
        let Some(message) = client.next_message(None)? else {
            continue;
        };
        if message.topic != delta {
            continue;
        }
        let text = message.text()?;
        match json::parse(text) {
            Some(value) => say(&value.to_json()),
            None => log::warn!("a delta that is not JSON, skipped: {}", text.trim()),
        }
    }
}

/// The delta in a get's document, in the shape of an `update/delta` message:
/// `{"version":..,"timestamp":..,"state":{...}}`; `None` when in sync.
fn pending_delta(doc: &Value) -> Option<Value> {
    let delta = doc.get("state")?.get("delta")?.clone();
    let mut fields = Vec::new();
    for key in ["version", "timestamp"] {
        if let Some(v) = doc.get(key) {
            fields.push((key.to_owned(), v.clone()));
        }
    }
    fields.push(("state".to_owned(), delta));
    Some(Value::Object(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_added_unless_the_document_has_one() {
        let doc = json::parse(r#"{"state":{"reported":{"on":true}}}"#);
        let (payload, token) = with_token(doc, "t1");
        assert_eq!(
            payload,
            r#"{"state":{"reported":{"on":true}},"clientToken":"t1"}"#
        );
        assert_eq!(token, "t1");
        let doc = json::parse(r#"{"clientToken":"mine","state":{}}"#);
        let (payload, token) = with_token(doc, "t1");
        assert_eq!(payload, r#"{"clientToken":"mine","state":{}}"#);
        assert_eq!(token, "mine");
        // A token that is not a string is not one AWS would echo: replaced.
        let (payload, token) = with_token(json::parse(r#"{"clientToken":5}"#), "t2");
        assert_eq!(payload, r#"{"clientToken":"t2"}"#);
        assert_eq!(token, "t2");
        assert_eq!(with_token(None, "t3").0, r#"{"clientToken":"t3"}"#);
    }

    #[test]
    fn the_pending_delta_has_the_delta_messages_shape() {
        let get = r#"{"state":{"desired":{"c":"red"},"reported":{"c":"blue"},"delta":{"c":"red"}},"metadata":{},"version":4,"timestamp":1700000000}"#;
        assert_eq!(
            pending_delta(&json::parse(get).unwrap()).map(|d| d.to_json()),
            Some(r#"{"version":4,"timestamp":1700000000,"state":{"c":"red"}}"#.to_owned())
        );
        let in_sync = r#"{"state":{"desired":{"c":"red"},"reported":{"c":"red"}},"version":5}"#;
        assert_eq!(pending_delta(&json::parse(in_sync).unwrap()), None);
    }

    #[test]
    fn shadow_names_follow_aws() {
        assert!(is_shadow_name("config"));
        assert!(is_shadow_name("a:b_c-1"));
        for bad in ["", "a/b", "a+", "#", "a b", &"x".repeat(65)] {
            assert!(!is_shadow_name(bad), "{bad}");
        }
    }
}
