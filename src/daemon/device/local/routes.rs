//! Local subscriptions and the upstream filters that serve them, pure.
//!
//! (Interface fixed; bodies to be written.)

/// A local client, as the event loop numbers them (never reused).
pub type ClientKey = u64;

/// A local subscription's options, as granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Granted maximum QoS: 0 or 1.
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// MQTT 5 Subscription Identifier.
    pub id: Option<u32>,
}

/// The upstream subscription set would exceed its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    pub budget: usize,
}

/// What the upstream subscriptions must change, in this order on the wire:
/// SUBSCRIBE the new filters first, then UNSUBSCRIBE the ones no longer
/// needed (make before break: nothing matched in between is missed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub subscribe: Vec<String>,
    pub unsubscribe: Vec<String>,
}

/// One local client a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub client: ClientKey,
    /// The highest granted QoS among its matching subscriptions.
    pub qos: u8,
    /// Whether any matching subscription keeps the retain flag.
    pub retain_as_published: bool,
    /// Every matching subscription's identifier.
    pub ids: Vec<u32>,
}

#[derive(Debug)]
pub struct Routes {}

impl Routes {
    /// `fixed`: the daemon's own `--topic` filters, always subscribed
    /// upstream and never unsubscribed; `budget`: upstream filters at most,
    /// the fixed ones included (AWS IoT: 50 a connection).
    pub fn new(fixed: Vec<String>, budget: usize) -> Routes {
        let _ = (fixed, budget);
        todo!()
    }

    /// Adds (or replaces) `client`'s subscription to `filter`. Refused,
    /// with nothing changed, when serving it would take the upstream set
    /// past the budget.
    pub fn subscribe(
        &mut self,
        client: ClientKey,
        filter: &str,
        options: Options,
    ) -> Result<(), OverBudget> {
        let _ = (client, filter, options);
        todo!()
    }

    /// Removes `client`'s subscription to `filter`; whether it had one.
    pub fn unsubscribe(&mut self, client: ClientKey, filter: &str) -> bool {
        let _ = (client, filter);
        todo!()
    }

    /// Removes every subscription of `client`.
    pub fn remove_client(&mut self, client: ClientKey) {
        let _ = client;
        todo!()
    }

    /// The broker refused the upstream filter `filter`: it leaves the
    /// upstream set, and so does every local subscription to exactly that
    /// filter (returned, to answer those clients).
    pub fn refused(&mut self, filter: &str) -> Vec<ClientKey> {
        let _ = filter;
        todo!()
    }

    /// Brings the upstream set in line with the local subscriptions and
    /// says what to send. The upstream set is the fewest filters that
    /// cover every local one: a local filter that a fixed or wider filter
    /// covers needs no upstream filter of its own.
    pub fn sync(&mut self) -> Change {
        todo!()
    }

    /// Whether `filter` is in the upstream set now (fixed ones included).
    pub fn is_upstream(&self, filter: &str) -> bool {
        let _ = filter;
        todo!()
    }

    /// The upstream filters other than the fixed ones, to subscribe again
    /// on a new connection.
    pub fn upstream(&self) -> Vec<String> {
        todo!()
    }

    /// The local clients a message on `topic` goes to, each once.
    pub fn route(&self, topic: &str, out: &mut Vec<Route>) {
        let _ = (topic, out);
        todo!()
    }

    /// Whether `topic` matches a fixed filter (it goes to the delivery
    /// socket too).
    pub fn is_fixed_match(&self, topic: &str) -> bool {
        let _ = topic;
        todo!()
    }
}
