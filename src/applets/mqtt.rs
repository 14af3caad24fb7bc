//! A small blocking MQTT 5 client for the applets that talk to the daemon's
//! local endpoint (`status`, `shadow`, `jobs`) or, for `provision`, to the
//! broker itself over TLS.
//!
//! One request at a time, each with a deadline: connect, subscribe, publish
//! at QoS 1 and wait for the acknowledgement, take the next message. The
//! packets are the daemon's own codec's (client side); messages that arrive
//! while waiting for an acknowledgement are queued, not lost. Running out of
//! time is [`Error::NotConfirmed`] (exit 3), the applets' "no answer".

use crate::daemon::codec::{self, Inbound, QoS};
use crate::error::{Error, runtime};
use crate::json::{self, Value};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The largest packet taken: a shadow document is at most 8 KiB, a job
/// document 32 KiB, a certificate a few KiB; this leaves room.
pub const MAX_PACKET: usize = 256 * 1024;

/// How many QoS 1 messages the peer may have unacknowledged towards us.
const RECEIVE_MAXIMUM: u16 = 16;

/// A byte stream whose reads can be given a time limit.
pub trait Stream: Read + Write {
    fn set_read_timeout(&self, limit: Option<Duration>) -> io::Result<()>;
}

impl Stream for UnixStream {
    fn set_read_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, limit)
    }
}

/// A message that arrived on a subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
}

impl Message {
    /// The payload as text (AWS's answers are JSON, so UTF-8).
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.payload)
            .map_err(|_| runtime!("the message on {} is not UTF-8", self.topic))
    }
}

/// A service's answer to [`Client::request`].
#[derive(Debug)]
pub enum Answer {
    Accepted(Value),
    /// The error document, such as `{"code":404,"message":"..."}`.
    Rejected(Value),
}

/// The error document of AWS's Device Shadow and Jobs services,
/// `{"code":404,"message":"..."}`, as one line: "WHAT rejected: CODE
/// MESSAGE".
pub fn rejection(what: &str, answer: &Value) -> Error {
    let code = answer.get("code").map(Value::to_string);
    let message = answer.get("message").map(Value::to_string);
    runtime!(
        "{what} rejected: {} {}",
        code.as_deref().unwrap_or("(no code)"),
        message.as_deref().unwrap_or("(no message)")
    )
}

/// A client token unique to one request of `applet`: its name, the
/// process and random bits (AWS allows 64 bytes).
pub fn client_token(applet: &str) -> String {
    format!(
        "iotbox-{applet}-{}-{:08x}",
        std::process::id(),
        crate::daemon::random_u64() as u32
    )
}

pub struct Client<S: Stream> {
    stream: S,
    /// Who we talk to, for messages: "the daemon at /tmp/iotbox_mqtt".
    peer: String,
    inbuf: BytesMut,
    queue: VecDeque<Message>,
    next_pkid: u16,
    /// PINGREQ when nothing was sent for this long (half the keep-alive).
    ping_every: Option<Duration>,
    last_sent: Instant,
    /// The connection failed or was closed: nothing more will come.
    broken: bool,
}

/// Connects to the daemon's local endpoint at `socket`.
pub fn connect_local(
    socket: &Path,
    applet: &str,
    deadline: Instant,
) -> Result<Client<UnixStream>, Error> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        runtime!(
            "cannot connect to {}: {e} (is iotbox pubsub running, with its --local_socket there?)",
            socket.display()
        )
    })?;
    let id = format!("iotbox-{applet}-{}", std::process::id());
    let peer = format!("the daemon at {}", socket.display());
    // A keep-alive, so the daemon notices a client that vanished; the pings
    // keep a long `watch` or `jobs` connected.
    Client::handshake(stream, peer, &id, 60, deadline)
}

impl<S: Stream> Client<S> {
    /// Sends CONNECT (clean start, no session kept) and waits for CONNACK.
    pub fn handshake(
        stream: S,
        peer: String,
        client_id: &str,
        keep_alive: u16,
        deadline: Instant,
    ) -> Result<Client<S>, Error> {
        let mut client = Client {
            stream,
            peer,
            inbuf: BytesMut::new(),
            queue: VecDeque::new(),
            next_pkid: 0,
            ping_every: (keep_alive > 0).then(|| Duration::from_secs(u64::from(keep_alive)) / 2),
            last_sent: Instant::now(),
            broken: false,
        };
        let mut out = BytesMut::new();
        codec::encode_connect(
            &mut out,
            client_id,
            keep_alive,
            true,
            0,
            MAX_PACKET as u32,
            RECEIVE_MAXIMUM,
        );
        client.send(&out)?;
        loop {
            match client.next_packet(deadline)? {
                Some(Inbound::ConnAck(ack)) if ack.code == codec::ConnectReturnCode::Success => {
                    return Ok(client);
                }
                Some(Inbound::ConnAck(ack)) => {
                    return Err(runtime!(
                        "{} refused the connection: {}",
                        client.peer,
                        codec::connack_words(&ack.code)
                    ));
                }
                Some(_) => {}
                None => return Err(client.no_answer("the connection (CONNACK)")),
            }
        }
    }

    /// Subscribes to `filters` at QoS 1 and waits until each is granted.
    pub fn subscribe(&mut self, filters: &[String], deadline: Instant) -> Result<(), Error> {
        // AWS takes at most 8 filters in one SUBSCRIBE.
        for chunk in filters.chunks(8) {
            let pkid = self.pkid();
            let mut out = BytesMut::new();
            codec::encode_subscribe(&mut out, pkid, chunk, QoS::AtLeastOnce)
                .map_err(|e| runtime!("cannot subscribe to {}: {}", chunk.join(", "), e.0))?;
            self.send(&out)?;
            loop {
                match self.next_packet(deadline)? {
                    Some(Inbound::SubAck(ack)) if ack.pkid == pkid => {
                        for (filter, code) in chunk.iter().zip(&ack.return_codes) {
                            if let Some(why) = codec::suback_refusal(code) {
                                return Err(runtime!(
                                    "{} refused the subscription to {filter}: {why} (0x{:02X})",
                                    self.peer,
                                    codec::suback_code(code)
                                ));
                            }
                        }
                        break;
                    }
                    Some(_) => {}
                    None => {
                        return Err(
                            self.no_answer(&format!("the subscription to {}", chunk.join(", ")))
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Publishes at QoS 1 and waits for the PUBACK.
    pub fn publish(&mut self, topic: &str, payload: &[u8], deadline: Instant) -> Result<(), Error> {
        let pkid = self.pkid();
        let mut out = BytesMut::new();
        codec::encode_publish(
            &mut out,
            &Bytes::copy_from_slice(topic.as_bytes()),
            &Bytes::copy_from_slice(payload),
            QoS::AtLeastOnce,
            pkid,
            false,
            None,
        )
        .map_err(|e| runtime!("cannot publish to {topic}: {}", e.0))?;
        self.send(&out)?;
        loop {
            match self.next_packet(deadline)? {
                Some(Inbound::PubAck { pkid: id, reason }) if id == pkid => {
                    if codec::puback_ok(&reason) {
                        return Ok(());
                    }
                    return Err(runtime!(
                        "{} refused the publish to {topic}: {}",
                        self.peer,
                        codec::puback_words(&reason)
                    ));
                }
                Some(_) => {}
                None => {
                    return Err(self.no_answer(&format!("the publish to {topic} (PUBACK)")));
                }
            }
        }
    }

    /// The next message from a subscription, or `None` when `deadline`
    /// passed first (never, with no deadline).
    pub fn next_message(&mut self, deadline: Option<Instant>) -> Result<Option<Message>, Error> {
        loop {
            if let Some(message) = self.queue.pop_front() {
                return Ok(Some(message));
            }
            let far = Instant::now() + Duration::from_secs(3600);
            match self.next_packet(deadline.unwrap_or(far))? {
                Some(_) => {}
                None if deadline.is_some() => return Ok(None),
                None => {}
            }
        }
    }

    /// Whether the connection is gone (closed, or a read or write failed):
    /// a caller that keeps running connects again.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Sends PINGREQ if the keep-alive asks for one now, without reading:
    /// for a caller busy elsewhere (a job's handler running). What arrives
    /// meanwhile waits in the socket.
    pub fn keep_alive(&mut self) -> Result<(), Error> {
        if self
            .ping_every
            .is_some_and(|every| self.last_sent.elapsed() >= every)
        {
            let mut out = BytesMut::new();
            codec::encode_pingreq(&mut out);
            self.send(&out)?;
        }
        Ok(())
    }

    /// The longest a caller busy elsewhere may wait between calls to
    /// [`Client::keep_alive`].
    pub fn ping_every(&self) -> Option<Duration> {
        self.ping_every
    }

    /// One request to an AWS service's MQTT API: publishes `payload` (which
    /// carries `"clientToken": token`) to `topic` and waits for the answer
    /// on `topic/accepted` or `topic/rejected` with the same token. The
    /// caller subscribed to those first. Other messages that arrive
    /// meanwhile stay queued for [`Client::next_message`]; answers to other
    /// requests (the topics are shared) are skipped.
    pub fn request(
        &mut self,
        topic: &str,
        payload: &str,
        token: &str,
        deadline: Instant,
    ) -> Result<Answer, Error> {
        let accepted = format!("{topic}/accepted");
        let rejected = format!("{topic}/rejected");
        self.publish(topic, payload.as_bytes(), deadline)?;
        let mut others = Vec::new();
        let answer = loop {
            let Some(message) = self.next_message(Some(deadline))? else {
                break None;
            };
            if message.topic != accepted && message.topic != rejected {
                others.push(message);
                continue;
            }
            let Some(value) = message.text().ok().and_then(json::parse) else {
                continue;
            };
            if value.get("clientToken").and_then(Value::as_str) != Some(token) {
                continue;
            }
            break Some(if message.topic == accepted {
                Answer::Accepted(value)
            } else {
                Answer::Rejected(value)
            });
        };
        for message in others.into_iter().rev() {
            self.queue.push_front(message);
        }
        answer.ok_or_else(|| self.no_answer(&format!("{topic} (on {accepted} or {rejected})")))
    }

    /// Says goodbye (DISCONNECT, normal: no will, nothing kept).
    pub fn disconnect(mut self) {
        let mut out = BytesMut::new();
        codec::encode_disconnect(&mut out);
        let _ = self.send(&out);
    }

    /// "no answer" with what was waited for: exit 3.
    pub fn no_answer(&self, what: &str) -> Error {
        Error::NotConfirmed(format!("no answer from {} to {what} in time", self.peer))
    }

    fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        self.next_pkid
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if let Err(e) = self
            .stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
        {
            self.broken = true;
            return Err(runtime!("cannot write to {}: {e}", self.peer));
        }
        self.last_sent = Instant::now();
        Ok(())
    }

    /// The connection ended: `why` for the message.
    fn gone(&mut self, why: String) -> Error {
        self.broken = true;
        runtime!("{why}")
    }

    /// Reads until one packet is decoded (a PUBLISH is queued and
    /// acknowledged, and also returned) or `deadline` passes (`None`).
    /// Sends PINGREQ when the keep-alive asks for it.
    fn next_packet(&mut self, deadline: Instant) -> Result<Option<Inbound>, Error> {
        let mut chunk = [0u8; 8192];
        loop {
            let packet = match codec::decode(&mut self.inbuf, MAX_PACKET) {
                Ok(packet) => packet,
                Err(e) => return Err(self.gone(format!("{}: {e}", self.peer))),
            };
            match packet {
                Some(Inbound::Publish(p)) => {
                    if p.qos == QoS::AtLeastOnce {
                        let mut out = BytesMut::new();
                        codec::encode_puback(&mut out, p.pkid);
                        self.send(&out)?;
                    }
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    self.queue.push_back(Message {
                        topic,
                        payload: p.payload.clone(),
                    });
                    return Ok(Some(Inbound::Publish(p)));
                }
                Some(Inbound::Disconnect { reason, text }) => {
                    let why = format!(
                        "{} closed the connection: {} (0x{reason:02X}){}",
                        self.peer,
                        codec::reason_words(reason),
                        text.map(|t| format!(": {t}")).unwrap_or_default()
                    );
                    return Err(self.gone(why));
                }
                Some(packet) => return Ok(Some(packet)),
                None => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let mut wait = deadline - now;
            if let Some(every) = self.ping_every {
                let due = self.last_sent + every;
                if now >= due {
                    let mut out = BytesMut::new();
                    codec::encode_pingreq(&mut out);
                    self.send(&out)?;
                    continue;
                }
                wait = wait.min(due - now);
            }
            let _ = self
                .stream
                .set_read_timeout(Some(wait.max(Duration::from_millis(1))));
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    let why = format!("{} closed the connection", self.peer);
                    return Err(self.gone(why));
                }
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if crate::sys::would_block(&e)
                        || e.kind() == io::ErrorKind::TimedOut
                        || crate::sys::interrupted(&e) => {}
                Err(e) => {
                    let why = format!("cannot read from {}: {e}", self.peer);
                    return Err(self.gone(why));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_read_as_one_line() {
        let answer = json::parse(
            r#"{"code":404,"message":"No shadow exists with name: 'pi'","clientToken":"t"}"#,
        )
        .unwrap();
        assert_eq!(
            rejection("shadow get", &answer).to_string(),
            "shadow get rejected: 404 No shadow exists with name: 'pi'"
        );
        assert_eq!(
            rejection("shadow get", &Value::Object(vec![])).to_string(),
            "shadow get rejected: (no code) (no message)"
        );
    }

    #[test]
    fn client_tokens_name_the_applet_and_differ() {
        let a = client_token("shadow");
        assert!(
            a.starts_with(&format!("iotbox-shadow-{}-", std::process::id())),
            "{a}"
        );
        assert!(a.len() <= 64, "{a}");
        assert_ne!(a, client_token("shadow"));
    }
}
