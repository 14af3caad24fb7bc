//! `status`: what the running daemon says about itself, asked over its local
//! MQTT endpoint (the daemon's own topic `$iotbox/status`; no second AWS
//! connection).
//!
//! ```text
//! state: connected
//! since: 2026-12-05 17:50:12 UTC (195 s ago)
//! client id: basicPubSub
//! ...
//! ```
//!
//! `--json` prints the daemon's JSON object as it came. Exit 0 when the
//! daemon is connected to the broker, 1 when it is not (or cannot be
//! reached), 3 when it did not answer within `--timeout`.

use super::mqtt;
use crate::cli::{self, StatusArgs};
use crate::error::{Error, runtime};
use crate::json::{Value, parse_flat};
use crate::output::{say, utc_date};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const TOPIC: &str = "$iotbox/status";

pub fn main(command: &str, args: &[&str]) -> Result<(), Error> {
    let Some(flags) = cli::parse::<StatusArgs>(command, args)? else {
        return Ok(());
    };
    crate::output::init_tool_logging();
    let json = ask(&flags)?;
    if flags.json {
        say(&json);
    }
    let Some(fields) = parse_flat(&json) else {
        return Err(runtime!(
            "the daemon's status is not the JSON object expected: {json}"
        ));
    };
    if !flags.json {
        let now = crate::daemon::store::wall_clock();
        for (key, value) in &fields {
            say(&format!(
                "{}: {}",
                key.replace('_', " "),
                show(key, value, now)
            ));
        }
    }
    match fields
        .iter()
        .find(|(k, _)| k == "state")
        .and_then(|(_, v)| v.as_str())
    {
        Some("connected") => Ok(()),
        Some(state) => Err(runtime!(
            "the daemon is not connected to the broker ({state})"
        )),
        None => Err(runtime!("the daemon's status has no state")),
    }
}

/// A value in words: times as dates and ages.
fn show(key: &str, value: &Value, now: u64) -> String {
    match (key, value) {
        ("since", Value::Num(n)) => match n.parse::<u64>() {
            Ok(t) => format!("{} ({} s ago)", utc_date(t), now.saturating_sub(t)),
            Err(_) => n.clone(),
        },
        ("last_puback_age", Value::Num(n)) => format!("{n} s ago"),
        ("last_puback_age", Value::Null) => "none yet".into(),
        _ => value.to_string(),
    }
}

/// Connects, subscribes to the status topic, returns the message.
fn ask(flags: &StatusArgs) -> Result<String, Error> {
    let deadline = Instant::now() + Duration::from_secs(flags.timeout);
    let mut client = mqtt::connect_local(&flags.socket, "status", deadline)?;
    let text = status_of(&mut client, deadline)?;
    client.disconnect();
    Ok(text)
}

/// The daemon's status, asked on a connection to its local endpoint.
fn status_of(client: &mut mqtt::Client<UnixStream>, deadline: Instant) -> Result<String, Error> {
    client.subscribe(&[TOPIC.to_owned()], deadline)?;
    while let Some(message) = client.next_message(Some(deadline))? {
        if message.topic == TOPIC {
            return Ok(message.text()?.to_owned());
        }
    }
    Err(client.no_answer(TOPIC))
}

/// The thing the daemon is (its `--thing_name`), for the device applets.
pub fn thing_name(
    client: &mut mqtt::Client<UnixStream>,
    deadline: Instant,
) -> Result<String, Error> {
    let text = status_of(client, deadline)?;
    parse_flat(&text)
        .and_then(|fields| {
            fields
                .into_iter()
                .find(|(k, _)| k == "thing_name")
                .and_then(|(_, v)| v.as_str().map(str::to_owned))
        })
        .ok_or_else(|| runtime!("the daemon's status names no thing: {text} (give --thing_name)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_ages_are_shown_in_words() {
        assert_eq!(utc_date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_date(1_709_164_800), "2024-02-29 00:00:00 UTC");
        assert_eq!(utc_date(1_796_489_826), "2026-12-05 16:57:06 UTC");
        assert_eq!(
            show("since", &Value::Num("100".into()), 160),
            "1970-01-01 00:01:40 UTC (60 s ago)"
        );
        assert_eq!(show("last_puback_age", &Value::Null, 0), "none yet");
        assert_eq!(show("reconnects", &Value::Num("2".into()), 0), "2");
    }
}
