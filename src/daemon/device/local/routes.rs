//! Local subscriptions and the upstream filters that serve them, pure.
//!
//! Local programs share the daemon's one broker connection, so a local
//! SUBSCRIBE becomes an upstream one only when no upstream filter already
//! covers it, and every inbound message is routed here to the local
//! subscribers it matches. The upstream set is worked out from the local
//! table rather than counted up and down by hand, so it cannot drift:
//!
//! - The *target* is the widest local filters that no `--topic` (fixed)
//!   filter covers, each once: no upstream filter covers a dynamic one, so
//!   the broker does not send one message twice for that reason.
//! - It is recomputed after every change of the local table, and [`sync`]
//!   reports the difference with what was last sent.
//! - AWS IoT refuses a connection's 51st subscription, so the dynamic
//!   filters are held to `budget - fixed`: a SUBSCRIBE that would grow the
//!   target past that is refused before anything goes upstream. When an
//!   UNSUBSCRIBE would uncover more narrow filters than fit (the last
//!   subscriber of `a/#` leaves the subscribers of 60 `a/...` behind), the
//!   wide filter stays upstream, serving them, until they fit again:
//!   dropping subscriptions already granted is worse than receiving a few
//!   messages nobody asked for.
//!
//! [`sync`]: Routes::sync

use crate::topic::{covers, matches};

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

/// One local subscription.
#[derive(Debug)]
struct Entry {
    client: ClientKey,
    filter: String,
    options: Options,
}

#[derive(Debug)]
pub struct Routes {
    fixed: Vec<String>,
    budget: usize,
    /// Sorted by client, then filter, one entry per pair: a lookup is a
    /// binary search, and [`Routes::route`] meets each client's matches
    /// side by side.
    entries: Vec<Entry>,
    /// The dynamic upstream filters the local table needs now, sorted.
    target: Vec<String>,
    /// The dynamic upstream filters as of the last [`Routes::sync`] (less
    /// any the broker refused since), sorted.
    current: Vec<String>,
}

impl Routes {
    /// `fixed`: the daemon's own `--topic` filters, always subscribed
    /// upstream and never unsubscribed; `budget`: upstream filters at most,
    /// the fixed ones included (AWS IoT: 50 a connection).
    pub fn new(fixed: Vec<String>, budget: usize) -> Routes {
        Routes {
            fixed,
            budget,
            entries: Vec::new(),
            target: Vec::new(),
            current: Vec::new(),
        }
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
        let at = match self.find(client, filter) {
            // Same filters as before: only the options change (MQTT 5
            // 3.8.4), and the upstream set cannot grow.
            Ok(i) => {
                self.entries[i].options = options;
                return Ok(());
            }
            Err(at) => at,
        };
        self.entries.insert(
            at,
            Entry {
                client,
                filter: filter.to_owned(),
                options,
            },
        );
        let plan = self.plan();
        // Only growth past the budget is refused: a wide filter replacing
        // narrow ones shrinks the set, and after a refusal left the set
        // over budget, a filter already covered does not make it worse.
        if plan.len() > self.dynamic_budget() && plan.len() > self.target.len() {
            self.entries.remove(at);
            return Err(OverBudget {
                budget: self.budget,
            });
        }
        self.target = plan;
        Ok(())
    }

    /// Removes `client`'s subscription to `filter`; whether it had one.
    pub fn unsubscribe(&mut self, client: ClientKey, filter: &str) -> bool {
        let Ok(i) = self.find(client, filter) else {
            return false;
        };
        self.entries.remove(i);
        self.target = self.plan();
        true
    }

    /// Removes every subscription of `client`.
    pub fn remove_client(&mut self, client: ClientKey) {
        let before = self.entries.len();
        self.entries.retain(|e| e.client != client);
        if self.entries.len() != before {
            self.target = self.plan();
        }
    }

    /// The broker refused the upstream filter `filter`: it leaves the
    /// upstream set, and so does every local subscription to exactly that
    /// filter (returned, to answer those clients).
    ///
    /// The filter cannot come back by itself, so a refusal does not turn
    /// into a SUBSCRIBE loop: it is dropped from the target before that is
    /// recomputed, and with its subscribers gone no local filter names it.
    /// The narrower local filters it served get filters of their own at the
    /// next [`Routes::sync`], perhaps more than the budget; the broker's
    /// refusals of those come back here and end with the local filters.
    /// A fixed filter stays fixed: the session subscribes those on every
    /// connection and reports their refusals itself.
    pub fn refused(&mut self, filter: &str) -> Vec<ClientKey> {
        remove_sorted(&mut self.current, filter);
        remove_sorted(&mut self.target, filter);
        let mut clients = Vec::new();
        self.entries.retain(|e| {
            let keep = e.filter != filter;
            if !keep {
                // Sorted by client, one entry per client and filter: each
                // client once, in order.
                clients.push(e.client);
            }
            keep
        });
        self.target = self.plan();
        clients
    }

    /// Brings the upstream set in line with the local subscriptions and
    /// says what to send. The upstream set is the fewest filters that
    /// cover every local one: a local filter that a fixed or wider filter
    /// covers needs no upstream filter of its own.
    pub fn sync(&mut self) -> Change {
        let change = Change {
            subscribe: difference(&self.target, &self.current),
            unsubscribe: difference(&self.current, &self.target),
        };
        self.current.clone_from(&self.target);
        change
    }

    /// Whether `filter` is in the upstream set now (fixed ones included).
    pub fn is_upstream(&self, filter: &str) -> bool {
        self.fixed.iter().any(|f| f == filter) || contains_sorted(&self.current, filter)
    }

    /// The upstream filters other than the fixed ones, to subscribe again
    /// on a new connection.
    pub fn upstream(&self) -> Vec<String> {
        self.current.clone()
    }

    /// The local clients a message on `topic` goes to, each once.
    ///
    /// One pass over every subscription, in (client, filter) order, so a
    /// client's matches are adjacent and fold into one [`Route`]: no
    /// allocation but `out` and the identifiers.
    pub fn route(&self, topic: &str, out: &mut Vec<Route>) {
        out.clear();
        for e in self.entries.iter().filter(|e| matches(&e.filter, topic)) {
            let o = &e.options;
            match out.last_mut() {
                Some(r) if r.client == e.client => {
                    r.qos = r.qos.max(o.qos);
                    r.retain_as_published |= o.retain_as_published;
                    r.ids.extend(o.id);
                }
                _ => out.push(Route {
                    client: e.client,
                    qos: o.qos,
                    retain_as_published: o.retain_as_published,
                    ids: o.id.into_iter().collect(),
                }),
            }
        }
    }

    /// Whether `topic` matches a fixed filter (it goes to the delivery
    /// socket too).
    pub fn is_fixed_match(&self, topic: &str) -> bool {
        self.fixed.iter().any(|f| matches(f, topic))
    }

    fn dynamic_budget(&self) -> usize {
        self.budget.saturating_sub(self.fixed.len())
    }

    fn find(&self, client: ClientKey, filter: &str) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|e| (e.client, e.filter.as_str()).cmp(&(client, filter)))
    }

    /// The dynamic filters the local table needs: its widest filters when
    /// they fit the budget; otherwise the present target's filters are
    /// kept where they still serve a local one, which never takes more
    /// filters than the target has when it covered every local filter (a
    /// removal), so an UNSUBSCRIBE never pushes the set past the budget.
    fn plan(&self) -> Vec<String> {
        let mut needed: Vec<&str> = self
            .entries
            .iter()
            .map(|e| e.filter.as_str())
            .filter(|f| !self.fixed.iter().any(|fixed| covers(fixed, f)))
            .collect();
        needed.sort_unstable();
        needed.dedup();
        let exact = widest(needed.clone());
        if exact.len() <= self.dynamic_budget() {
            return exact;
        }
        let serving: Vec<&str> = self
            .target
            .iter()
            .map(String::as_str)
            .filter(|t| needed.iter().any(|f| covers(t, f)))
            .collect();
        needed.extend(serving);
        let kept = widest(needed);
        if kept.len() < exact.len() { kept } else { exact }
    }
}

/// The maximal filters of `filters` under [`covers`], each once, sorted:
/// every filter is covered by one of them, and none covers another.
fn widest(mut filters: Vec<&str>) -> Vec<String> {
    filters.sort_unstable();
    filters.dedup();
    filters
        .iter()
        .filter(|f| !filters.iter().any(|w| wider(w, f)))
        .map(|f| (*f).to_owned())
        .collect()
}

/// Whether `w` makes `f` unnecessary upstream. Two different filters can
/// match the same topics (`#` and `+/#`): the one that sorts first stays.
fn wider(w: &str, f: &str) -> bool {
    w != f && covers(w, f) && (!covers(f, w) || w < f)
}

/// The filters of sorted `a` not in sorted `b`, sorted.
fn difference(a: &[String], b: &[String]) -> Vec<String> {
    a.iter()
        .filter(|f| !contains_sorted(b, f))
        .cloned()
        .collect()
}

fn contains_sorted(set: &[String], filter: &str) -> bool {
    set.binary_search_by(|f| f.as_str().cmp(filter)).is_ok()
}

fn remove_sorted(set: &mut Vec<String>, filter: &str) {
    if let Ok(i) = set.binary_search_by(|f| f.as_str().cmp(filter)) {
        set.remove(i);
    }
}
