//! What the daemon says about itself: the local-only topic
//! `$iotbox/status`, one JSON object to each local client that subscribes
//! to it (what `iotbox status` prints), never sent to the broker.

use super::Daemon;
use crate::daemon::store::{Direction, wall_clock};
use crate::json::Object;
use std::time::Instant;

/// The daemon's own topics: local only, answered by the daemon.
pub(super) const LOCAL_ONLY: &str = "$iotbox/";

/// The status topic.
pub(super) const STATUS_TOPIC: &str = "$iotbox/status";

/// What the state of the link is called in the status.
fn state_word(connected: bool, stopping: bool) -> &'static str {
    match (stopping, connected) {
        (true, _) => "stopping",
        (false, true) => "connected",
        (false, false) => "connecting",
    }
}

impl Daemon {
    /// Warns from 30 days before the device certificate expires (at start,
    /// after SIGHUP, then daily).
    pub(super) fn check_certificate(&self) {
        let Some(at) = self.config.tls.as_ref().and_then(|t| t.not_after) else {
            return;
        };
        if let Some(line) = crate::daemon::broker::validity::expiry_warning(at, wall_clock()) {
            log::warn!("{line}");
        }
    }

    /// The status as one flat JSON object.
    pub(super) fn status_json(&self, now: Instant) -> String {
        let connected = self.session.is_connected();
        let last_puback = self
            .last_confirmed
            .map(|at| now.saturating_duration_since(at).as_secs() as i64);
        let days_left = self
            .config
            .tls
            .as_ref()
            .and_then(|t| t.not_after)
            .map(|at| crate::daemon::broker::validity::days_left(at, wall_clock()));
        let spool = |d: Direction| (self.spool.waiting(d) as i64, self.spool.bytes(d) as i64);
        let (out_messages, out_bytes) = spool(Direction::Out);
        let (in_messages, in_bytes) = spool(Direction::In);
        let dropped = self.spool.dropped_total() + self.dropped_qos0 + self.local_dropped;
        Object::default()
            .string("state", state_word(connected, self.link.is_shutting_down()))
            .number("since", self.state_since as i64)
            .string("client_id", &self.config.session.client_id)
            .string("thing_name", &self.config.thing_name)
            .string("endpoint", &self.config.endpoint)
            .number("last_puback_age", last_puback)
            .number("reconnects", self.reconnects as i64)
            .number("spool_out_messages", out_messages)
            .number("spool_out_bytes", out_bytes)
            .number("spool_in_messages", in_messages)
            .number("spool_in_bytes", in_bytes)
            .number("dropped", dropped as i64)
            .number("local_clients", self.local.len() as i64)
            .number("certificate_days_left", days_left)
            .finish()
    }
}
