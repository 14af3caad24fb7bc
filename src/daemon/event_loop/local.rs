//! The event loop's side of the local MQTT endpoint: the decisions that
//! span clients. A local PUBLISH goes into the spool like a publish socket
//! message and is acknowledged once durable; a SUBSCRIBE goes through the
//! routing table, which says what to subscribe upstream; a message from the
//! broker goes to every matching local client, and to the delivery socket
//! only when it matches a `--topic`.

use super::{Daemon, UPSTREAM_FILTERS, status};
use crate::daemon::broker::session::InboundAck;
use crate::daemon::codec::server::{Subscription, Version, Will, reason};
use crate::daemon::codec::{Attributes, QoS};
use crate::daemon::device::local::client::{Action, Delivered};
use crate::daemon::device::local::routes::{self, Options};
use crate::daemon::store::{Direction, wall_clock};
use crate::{message, topic};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Set in the session's request id of a message from a local client: its
/// outcome is nobody's status line (spool sequence numbers stay below
/// 2^62).
pub(super) const LOCAL_ORIGIN: u64 = 1 << 63;

/// Local subscriptions at most, all clients together: a client that
/// floods SUBSCRIBEs (each covered upstream, so within AWS's budget)
/// cannot grow the routing table without bound. Past it: 0x97.
const MAX_LOCAL_SUBSCRIPTIONS: usize = 4096;

/// How long a local SUBSCRIBE that needs a new upstream filter waits for
/// the broker's SUBACK before it is granted anyway (subscribed upstream
/// when the broker answers, or after the reconnect).
const SUBACK_WAIT: Duration = Duration::from_secs(5);

/// A local SUBACK waiting for the broker's answers.
#[derive(Debug)]
pub(super) struct PendingSubAck {
    number: u64,
    pkid: u16,
    codes: Vec<u8>,
    /// Indexes into `codes` and their filters, waiting for the broker.
    waiting: Vec<(usize, String)>,
    deadline: Instant,
}

impl Daemon {
    pub(super) fn accept_local(&mut self, now: Instant) {
        self.local.accept(now, self.poll.registry());
    }

    /// Takes the local clients' actions until none is left, then writes
    /// their output. `true` if there were any.
    pub(super) fn process_local(&mut self, now: Instant) -> bool {
        let mut busy = false;
        while let Some((number, action)) = self.local.poll_action() {
            busy = true;
            self.on_local_action(now, number, action);
        }
        self.local.flush(self.poll.registry());
        busy
    }

    fn on_local_action(&mut self, now: Instant, number: u64, action: Action) {
        match action {
            Action::Connected { client_id } => {
                if let Some(old) = self.local.find_client_id(&client_id, number) {
                    if let Some(c) = self.local.client(old) {
                        c.close(
                            reason::SESSION_TAKEN_OVER,
                            "another connection took its client id",
                            true,
                        );
                    }
                    self.local.touch(old);
                }
                log::debug!("local client {client_id} connected");
                self.local.set_client_id(number, client_id);
            }
            Action::Publish {
                topic,
                payload,
                qos,
                pkid,
                attributes,
            } => self.local_publish(now, number, topic, payload, qos, pkid, attributes),
            Action::Subscribe {
                pkid,
                subscriptions,
                id,
            } => self.local_subscribe(now, number, pkid, subscriptions, id),
            Action::Unsubscribe { pkid, filters } => {
                let codes: Vec<u8> = filters
                    .iter()
                    .map(|f| {
                        if self.routes.unsubscribe(number, f) {
                            reason::SUCCESS
                        } else {
                            reason::NO_SUBSCRIPTION_EXISTED
                        }
                    })
                    .collect();
                self.sync_upstream(now);
                if let Some(c) = self.local.client(number) {
                    c.unsuback(pkid, &codes);
                }
                self.local.touch(number);
            }
            Action::Closed { will, why, normal } => {
                let id = self
                    .local
                    .client_id(number)
                    .unwrap_or("(before CONNECT)")
                    .to_owned();
                if normal {
                    log::debug!("local client {id}: {why}");
                } else {
                    log::info!("local client {id}: {why}");
                }
                self.routes.remove_client(number);
                self.sync_upstream(now);
                self.pending_subacks.retain(|p| p.number != number);
                if let Some(will) = will {
                    self.publish_will(&id, will);
                }
            }
        }
    }

    /// Why a local client may not publish to `topic`, if it may not.
    fn publish_refusal(&self, topic: &str, len: usize) -> Option<(u8, String)> {
        if let Err(e) = message::validate_topic(topic.as_bytes()) {
            return Some((reason::TOPIC_NAME_INVALID, e.to_string()));
        }
        if topic.starts_with(status::LOCAL_ONLY) {
            return Some((
                reason::NOT_AUTHORIZED,
                format!("{topic} is the daemon's own topic"),
            ));
        }
        if !self
            .config
            .local
            .topics
            .iter()
            .any(|f| topic::matches(f, topic))
        {
            return Some((
                reason::NOT_AUTHORIZED,
                format!("{topic} is outside --local_topics"),
            ));
        }
        let max = self.session.max_payload();
        if len > max {
            return Some((
                reason::IMPLEMENTATION_SPECIFIC,
                format!("payload is {len} bytes; the limit is {max}"),
            ));
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn local_publish(
        &mut self,
        now: Instant,
        number: u64,
        topic: String,
        payload: Bytes,
        qos: QoS,
        pkid: u16,
        attributes: Attributes,
    ) {
        if let Some((code, why)) = self.publish_refusal(&topic, payload.len()) {
            let id = self.local.client_id(number).unwrap_or_default().to_owned();
            if self.local_notes.note(now).is_some() {
                log::warn!("local client {id}: publish refused: {why} (0x{code:02X})");
            }
            let Some(c) = self.local.client(number) else {
                return;
            };
            // MQTT 3.1.1 has no way to refuse a PUBLISH but to close.
            if c.version() == Version::V311 {
                c.close(code, &format!("publish refused: {why}"), true);
            } else if qos == QoS::AtLeastOnce {
                c.published(pkid, code);
            }
            self.local.touch(number);
            return;
        }
        let mut meta = Vec::new();
        attributes.encode(&mut meta);
        let seq = self
            .spool
            .append_with(Direction::Out, topic.as_bytes(), &meta, &payload);
        if qos == QoS::AtLeastOnce {
            self.local_accepted.push((seq, number, pkid));
        }
    }

    /// A will goes upstream like a QoS 1 publish, if the client could have
    /// published it.
    fn publish_will(&mut self, id: &str, will: Will) {
        if let Some((_, why)) = self.publish_refusal(&will.topic, will.payload.len()) {
            log::warn!("local client {id}: will not sent: {why}");
            return;
        }
        if !self.spool.has_room(Direction::Out) {
            log::warn!("local client {id}: will not sent: the spool is full");
            return;
        }
        let mut meta = Vec::new();
        will.attributes.encode(&mut meta);
        self.spool
            .append_with(Direction::Out, will.topic.as_bytes(), &meta, &will.payload);
    }

    fn local_subscribe(
        &mut self,
        now: Instant,
        number: u64,
        pkid: u16,
        subscriptions: Vec<Subscription>,
        id: Option<u32>,
    ) {
        let mut codes = Vec::with_capacity(subscriptions.len());
        for s in &subscriptions {
            let code = self.subscription_code(number, s, id);
            if code >= 0x80 {
                let client = self.local.client_id(number).unwrap_or_default();
                log::warn!(
                    "local client {client}: subscription to {} refused (0x{code:02X})",
                    s.filter
                );
            }
            codes.push(code);
        }
        let change = self.routes.sync();
        let wants_status = subscriptions
            .iter()
            .zip(&codes)
            .any(|(s, &code)| s.filter == status::STATUS_TOPIC && code < 0x80);
        let connected = self.session.is_connected();
        let waiting: Vec<(usize, String)> = subscriptions
            .iter()
            .enumerate()
            .filter(|(i, s)| codes[*i] < 0x80 && connected && change.subscribe.contains(&s.filter))
            .map(|(i, s)| (i, s.filter.clone()))
            .collect();
        self.apply_upstream(now, change);
        if waiting.is_empty() {
            if let Some(c) = self.local.client(number) {
                c.suback(pkid, &codes);
            }
            self.local.touch(number);
        }
        if wants_status {
            // One message to this subscriber (MQTT lets it come before the
            // SUBACK when that waits for the broker).
            let status = Bytes::from(self.status_json(now));
            let topic = Bytes::from_static(status::STATUS_TOPIC.as_bytes());
            if let Some(c) = self.local.client(number) {
                c.deliver(&topic, &status, QoS::AtMostOnce, None, &[]);
            }
            self.local.touch(number);
        }
        if !waiting.is_empty() {
            self.pending_subacks.push(PendingSubAck {
                number,
                pkid,
                codes,
                waiting,
                deadline: now + SUBACK_WAIT,
            });
        }
    }

    /// The SUBACK code for one filter, the subscription made if granted.
    fn subscription_code(&mut self, number: u64, s: &Subscription, id: Option<u32>) -> u8 {
        if message::validate_filter(&s.filter).is_err() {
            return reason::TOPIC_FILTER_INVALID;
        }
        if s.filter.starts_with(status::LOCAL_ONLY) {
            // The daemon's own: answered here, never subscribed upstream.
            return if s.filter == status::STATUS_TOPIC {
                0
            } else {
                reason::TOPIC_FILTER_INVALID
            };
        }
        if s.filter.starts_with("$share/") {
            return reason::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED;
        }
        if !self
            .config
            .local
            .topics
            .iter()
            .any(|f| topic::covers(f, &s.filter))
        {
            return reason::NOT_AUTHORIZED;
        }
        if self.routes.len() >= MAX_LOCAL_SUBSCRIPTIONS {
            return reason::QUOTA_EXCEEDED;
        }
        let granted = s.qos.min(1);
        let options = Options {
            qos: granted,
            no_local: s.no_local,
            retain_as_published: s.retain_as_published,
            id,
        };
        match self.routes.subscribe(number, &s.filter, options) {
            Ok(()) => granted,
            Err(routes::OverBudget { .. }) => reason::QUOTA_EXCEEDED,
        }
    }

    /// Brings the upstream subscriptions in line with the routing table.
    pub(super) fn sync_upstream(&mut self, now: Instant) {
        let change = self.routes.sync();
        self.apply_upstream(now, change);
    }

    fn apply_upstream(&mut self, now: Instant, change: routes::Change) {
        // SUBSCRIBE before UNSUBSCRIBE, on one ordered connection: a
        // narrow filter is dropped only after the wide one is in place.
        // Unless the broker would hold more than AWS's 50 in between (a
        // wide filter replacing narrow ones at the budget): then the
        // other way round, and a message may be missed in that moment
        // rather than the wide filter refused.
        // The routing table holds the set after the change, which
        // includes every filter to subscribe.
        let after = self.routes.upstream().len();
        let before = after.saturating_sub(change.subscribe.len()) + change.unsubscribe.len();
        let peak = self.config.session.filters.len() + before + change.subscribe.len();
        let unsubscribe_first = peak > UPSTREAM_FILTERS;
        if unsubscribe_first {
            self.unsubscribe_upstream(now, &change.unsubscribe);
        }
        if !change.subscribe.is_empty() {
            log::info!(
                "subscribing upstream for local clients: {}",
                change.subscribe.join(" ")
            );
            self.session.subscribe(now, &change.subscribe);
        }
        if !unsubscribe_first {
            self.unsubscribe_upstream(now, &change.unsubscribe);
        }
    }

    fn unsubscribe_upstream(&mut self, now: Instant, filters: &[String]) {
        if !filters.is_empty() {
            log::info!(
                "unsubscribing upstream, no local client needs: {}",
                filters.join(" ")
            );
            self.session.unsubscribe(now, filters);
        }
    }

    /// The broker's answer for a filter subscribed for local clients.
    pub(super) fn on_subscribe_result(
        &mut self,
        now: Instant,
        filter: String,
        result: Result<(), (u8, String)>,
    ) {
        let code = match &result {
            Ok(()) => None,
            Err((code, words)) => {
                log::warn!(
                    "the broker refused the subscription to {filter} for local clients: {words} (0x{code:02X})"
                );
                self.routes.refused(&filter);
                self.sync_upstream(now);
                Some(*code)
            }
        };
        for p in &mut self.pending_subacks {
            p.waiting.retain(|(i, f)| {
                if *f != filter {
                    return true;
                }
                if let Some(code) = code {
                    p.codes[*i] = code;
                }
                false
            });
        }
        self.answer_subacks(|p| p.waiting.is_empty());
    }

    /// Local SUBACKs that waited long enough, or all of them (the link is
    /// down: granted, subscribed upstream after the reconnect).
    pub(super) fn expire_subacks(&mut self, now: Instant, all: bool) {
        self.answer_subacks(|p| all || p.deadline <= now);
    }

    fn answer_subacks(&mut self, ready: impl Fn(&PendingSubAck) -> bool) {
        let mut i = 0;
        while i < self.pending_subacks.len() {
            if !ready(&self.pending_subacks[i]) {
                i += 1;
                continue;
            }
            let p = self.pending_subacks.swap_remove(i);
            if let Some(c) = self.local.client(p.number) {
                c.suback(p.pkid, &p.codes);
            }
            self.local.touch(p.number);
        }
    }

    pub(super) fn subacks_deadline(&self) -> Option<Instant> {
        self.pending_subacks.iter().map(|p| p.deadline).min()
    }

    /// A message from the broker: to every matching local client now
    /// (clean sessions: nothing durable is promised to them), and to the
    /// delivery socket through the spool when it matches a `--topic`.
    /// `false` when it was for local clients only: acknowledged here.
    pub(super) fn route_inbound(
        &mut self,
        now: Instant,
        topic_bytes: &Bytes,
        payload: &Bytes,
        attributes: Option<&Attributes>,
        ack: Option<InboundAck>,
    ) -> bool {
        let Ok(name) = std::str::from_utf8(topic_bytes) else {
            return true;
        };
        let mut routes = std::mem::take(&mut self.route_scratch);
        self.routes.route(name, &mut routes);
        let qos = if ack.is_some() {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        for r in &routes {
            let qos = if r.qos == 0 { QoS::AtMostOnce } else { qos };
            let Some(c) = self.local.client(r.client) else {
                continue;
            };
            match c.deliver(topic_bytes, payload, qos, attributes, &r.ids) {
                Delivered::Taken | Delivered::Gone => {}
                Delivered::Dropped => {
                    self.local_dropped += 1;
                    if self.local_notes.note(now).is_some() {
                        log::warn!(
                            "local client {}: too slow, QoS 0 messages dropped for it ({} so far)",
                            self.local.client_id(r.client).unwrap_or_default(),
                            self.local_dropped
                        );
                    }
                }
                Delivered::TooLarge => log::debug!(
                    "local client {}: a message on {name} exceeds its maximum packet size; not sent",
                    self.local.client_id(r.client).unwrap_or_default()
                ),
            }
            self.local.touch(r.client);
        }
        self.route_scratch = routes;
        if self.routes.is_fixed_match(name) {
            return true;
        }
        if let Some(ack) = ack {
            self.session.acknowledge(now, ack);
        }
        false
    }

    /// After a commit: the local QoS 1 publishes it made durable get their
    /// PUBACK, and their clients may be read again.
    pub(super) fn acknowledge_local(&mut self, now: Instant, durable: Vec<(u64, u64, u16)>) {
        for (_, number, pkid) in durable {
            if let Some(c) = self.local.client(number) {
                c.published(pkid, reason::SUCCESS);
                // Packets it sent past its receive maximum may be waiting.
                c.resume(now);
                self.local.touch(number);
            }
        }
    }

    /// The attributes of a spooled local message as they go upstream now:
    /// a message expiry counts down the time spent in the spool; `None`
    /// when it expired there.
    pub(super) fn outbound_attributes(meta: &[u8], time: u64) -> Option<Option<Box<Attributes>>> {
        if meta.is_empty() {
            return Some(None);
        }
        let Some(mut a) = Attributes::decode(meta) else {
            log::warn!("spool: a message's MQTT properties are damaged; sent without them");
            return Some(None);
        };
        if let Some(expiry) = a.message_expiry {
            let waited = wall_clock().saturating_sub(time);
            let left = u64::from(expiry).checked_sub(waited).filter(|l| *l > 0)?;
            a.message_expiry = Some(left as u32);
        }
        Some((!a.is_plain()).then(|| Box::new(a)))
    }
}
