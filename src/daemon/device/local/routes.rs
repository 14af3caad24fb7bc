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
//! Covering is not the only overlap: `a/+` and `+/b`, or a local `a/#`
//! under a `--topic` `a/b`, both go upstream, and a broker may send a
//! message matching both once for each.
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
    /// says what to send. A local filter that a fixed or wider filter
    /// covers needs no upstream filter of its own, so the upstream set is
    /// the widest local filters (or, past the budget, the wide filters kept
    /// for them: see the module documentation).
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

    /// The upstream filters other than the fixed ones, as of the last
    /// [`Routes::sync`]. (The session keeps what it subscribed itself, and
    /// subscribes it again on a new connection.)
    pub fn upstream(&self) -> &[String] {
        &self.current
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

    /// Local subscriptions, all clients together.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
        if kept.len() < exact.len() {
            kept
        } else {
            exact
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::validate_filter;
    use std::collections::BTreeMap;

    fn qos(qos: u8) -> Options {
        Options {
            qos,
            no_local: false,
            retain_as_published: false,
            id: None,
        }
    }

    fn strings(filters: &[&str]) -> Vec<String> {
        filters.iter().map(|f| f.to_string()).collect()
    }

    fn change(subscribe: &[&str], unsubscribe: &[&str]) -> Change {
        Change {
            subscribe: strings(subscribe),
            unsubscribe: strings(unsubscribe),
        }
    }

    fn clients(routes: &Routes, topic: &str) -> Vec<ClientKey> {
        let mut out = Vec::new();
        routes.route(topic, &mut out);
        out.iter().map(|r| r.client).collect()
    }

    /// One client per filter, numbered in order, everything synced.
    fn one_client_each(fixed: &[&str], filters: &[&str]) -> Routes {
        let mut routes = Routes::new(strings(fixed), 50);
        for (client, filter) in (0..).zip(filters) {
            routes.subscribe(client, filter, qos(0)).unwrap();
        }
        routes.sync();
        routes
    }

    #[test]
    fn the_matching_examples_of_the_mqtt_specification() {
        let routes = one_client_each(
            &[],
            &[
                "sport/tennis/player1/#",
                "sport/+",
                "+",
                "+/+",
                "/+",
                "#",
                "+/monitor/Clients",
                "$SYS/#",
            ],
        );
        // 4.7.1.2
        assert_eq!(clients(&routes, "sport/tennis/player1"), [0, 5]);
        assert_eq!(clients(&routes, "sport/tennis/player1/ranking"), [0, 5]);
        assert_eq!(
            clients(&routes, "sport/tennis/player1/score/wimbledon"),
            [0, 5]
        );
        // 4.7.1.3
        assert_eq!(clients(&routes, "sport/"), [1, 3, 5]);
        assert_eq!(clients(&routes, "/finance"), [3, 4, 5]);
        // 4.7.2
        assert_eq!(clients(&routes, "$SYS/monitor/Clients"), [7]);
        assert_eq!(clients(&routes, "a/monitor/Clients"), [5, 6]);
    }

    #[test]
    fn an_upstream_filter_lasts_as_long_as_its_last_local_subscriber() {
        let mut routes = Routes::new(Vec::new(), 50);
        routes.subscribe(1, "a/b", qos(0)).unwrap();
        routes.subscribe(2, "a/b", qos(1)).unwrap();
        assert_eq!(routes.sync(), change(&["a/b"], &[]));
        assert!(routes.is_upstream("a/b"));

        assert!(routes.unsubscribe(1, "a/b"));
        assert!(!routes.unsubscribe(1, "a/b"));
        assert_eq!(routes.sync(), Change::default());
        assert_eq!(clients(&routes, "a/b"), [2]);

        assert!(routes.unsubscribe(2, "a/b"));
        assert_eq!(routes.sync(), change(&[], &["a/b"]));
        assert!(!routes.is_upstream("a/b"));
        assert!(routes.upstream().is_empty());
    }

    #[test]
    fn a_wide_filter_replaces_the_narrow_ones_and_back() {
        let mut routes = Routes::new(Vec::new(), 50);
        routes.subscribe(1, "a/b", qos(0)).unwrap();
        assert_eq!(routes.sync(), change(&["a/b"], &[]));
        routes.subscribe(2, "a/#", qos(0)).unwrap();
        assert_eq!(routes.sync(), change(&["a/#"], &["a/b"]));
        assert_eq!(routes.upstream(), ["a/#"]);
        routes.unsubscribe(2, "a/#");
        assert_eq!(routes.sync(), change(&["a/b"], &["a/#"]));
        assert_eq!(routes.upstream(), ["a/b"]);
    }

    #[test]
    fn fixed_filters_stay_and_serve_the_local_ones_they_cover() {
        let mut routes = Routes::new(strings(&["a/#", "c"]), 50);
        routes.subscribe(1, "a/b", qos(0)).unwrap();
        routes.subscribe(1, "a/#", qos(0)).unwrap();
        routes.subscribe(2, "c", qos(0)).unwrap();
        assert_eq!(routes.sync(), Change::default());
        routes.subscribe(2, "b", qos(0)).unwrap();
        assert_eq!(routes.sync(), change(&["b"], &[]));
        routes.remove_client(1);
        routes.remove_client(2);
        assert_eq!(routes.sync(), change(&[], &["b"]));
        assert!(routes.is_upstream("a/#") && routes.is_upstream("c"));
        assert!(routes.upstream().is_empty());
        assert!(routes.is_fixed_match("a/x/y"));
        assert!(!routes.is_fixed_match("b"));
    }

    #[test]
    fn reserved_topics_need_their_own_filter_even_under_a_fixed_hash() {
        let mut routes = Routes::new(strings(&["#"]), 50);
        routes.subscribe(1, "a/b", qos(0)).unwrap();
        routes
            .subscribe(1, "$aws/things/x/shadow/#", qos(0))
            .unwrap();
        assert_eq!(routes.sync(), change(&["$aws/things/x/shadow/#"], &[]));
        assert!(!routes.is_fixed_match("$aws/things/x/shadow/get"));
        assert_eq!(clients(&routes, "$aws/things/x/shadow/get"), [1]);
    }

    #[test]
    fn filters_that_match_the_same_topics_go_upstream_once() {
        let mut routes = Routes::new(Vec::new(), 50);
        routes.subscribe(1, "+/#", qos(0)).unwrap();
        routes.subscribe(2, "#", qos(0)).unwrap();
        routes.subscribe(3, "a", qos(0)).unwrap();
        assert_eq!(routes.sync(), change(&["#"], &[]));
        routes.unsubscribe(2, "#");
        assert_eq!(routes.sync(), change(&["+/#"], &["#"]));
    }

    #[test]
    fn the_budget_refuses_growth_but_not_a_wide_filter() {
        let mut routes = Routes::new(strings(&["fixed/1", "fixed/2"]), 50);
        let filters: Vec<String> = (0..60).map(|i| format!("t/{i}")).collect();
        let refused: Vec<&String> = filters
            .iter()
            .filter(|f| routes.subscribe(1, f, qos(0)).is_err())
            .collect();
        assert_eq!(refused, filters[48..].iter().collect::<Vec<_>>());
        assert_eq!(
            routes.subscribe(2, "t/59", qos(0)),
            Err(OverBudget { budget: 50 })
        );
        assert_eq!(routes.sync().subscribe.len(), 48);
        assert_eq!(clients(&routes, "t/59"), [] as [ClientKey; 0]);

        // At the budget, one filter that covers the 48 makes room.
        routes.subscribe(2, "t/#", qos(0)).unwrap();
        assert_eq!(
            routes.sync(),
            Change {
                subscribe: strings(&["t/#"]),
                unsubscribe: {
                    let mut narrow = filters[..48].to_vec();
                    narrow.sort();
                    narrow
                },
            }
        );
        for f in &filters[48..] {
            routes.subscribe(1, f, qos(0)).unwrap();
        }
        assert_eq!(routes.sync(), Change::default());
    }

    #[test]
    fn a_wide_filter_outlives_its_subscribers_while_the_narrow_ones_do_not_fit() {
        let mut routes = Routes::new(strings(&["fixed/1", "fixed/2"]), 50);
        routes.subscribe(1, "a/#", qos(0)).unwrap();
        for i in 0..60 {
            routes.subscribe(2, &format!("a/{i}"), qos(0)).unwrap();
        }
        assert_eq!(routes.sync(), change(&["a/#"], &[]));

        assert!(routes.unsubscribe(1, "a/#"));
        assert_eq!(routes.sync(), Change::default());
        assert_eq!(routes.upstream(), ["a/#"]);
        // Covered by it, so no growth.
        routes.subscribe(3, "a/b", qos(0)).unwrap();
        routes.unsubscribe(3, "a/b");

        for i in 0..12 {
            routes.unsubscribe(2, &format!("a/{i}"));
        }
        let sync = routes.sync();
        assert_eq!(sync.subscribe.len(), 48);
        assert_eq!(sync.unsubscribe, ["a/#"]);
    }

    #[test]
    fn a_refused_filter_takes_its_subscribers_with_it_and_stays_away() {
        let mut routes = Routes::new(Vec::new(), 50);
        routes.subscribe(2, "a/#", qos(0)).unwrap();
        routes.subscribe(1, "a/#", qos(1)).unwrap();
        routes.subscribe(1, "a/b", qos(0)).unwrap();
        routes.subscribe(3, "a/b", qos(0)).unwrap();
        assert_eq!(routes.sync(), change(&["a/#"], &[]));

        assert_eq!(routes.refused("a/#"), [1, 2]);
        assert!(!routes.is_upstream("a/#"));
        // The broker does not have it: nothing to unsubscribe.
        assert_eq!(routes.sync(), change(&["a/b"], &[]));
        assert_eq!(routes.sync(), Change::default());
        assert_eq!(clients(&routes, "a/b"), [1, 3]);
        assert_eq!(clients(&routes, "a/c"), [] as [ClientKey; 0]);

        // Only a new subscriber asks for it again.
        routes.subscribe(4, "a/#", qos(0)).unwrap();
        assert_eq!(routes.sync(), change(&["a/#"], &["a/b"]));
        assert_eq!(routes.refused("nothing/here"), [] as [ClientKey; 0]);
    }

    #[test]
    fn a_client_that_goes_takes_only_its_own_subscriptions() {
        let mut routes = Routes::new(Vec::new(), 50);
        routes.subscribe(1, "a/b", qos(0)).unwrap();
        routes.subscribe(1, "c/d", qos(0)).unwrap();
        routes.subscribe(2, "c/d", qos(0)).unwrap();
        routes.sync();
        routes.remove_client(1);
        routes.remove_client(7);
        assert_eq!(routes.sync(), change(&[], &["a/b"]));
        assert_eq!(clients(&routes, "c/d"), [2]);
        assert_eq!(clients(&routes, "a/b"), [] as [ClientKey; 0]);
    }

    #[test]
    fn overlapping_subscriptions_of_one_client_make_one_route() {
        let mut routes = Routes::new(Vec::new(), 50);
        let with = |qos, retain_as_published, id| Options {
            qos,
            no_local: false,
            retain_as_published,
            id,
        };
        routes.subscribe(1, "a/+", with(0, false, Some(1))).unwrap();
        routes.subscribe(1, "a/#", with(1, true, Some(2))).unwrap();
        routes.subscribe(1, "a/b", with(0, false, None)).unwrap();
        routes.subscribe(2, "a/b", with(0, false, Some(9))).unwrap();
        routes.subscribe(3, "x", with(1, false, None)).unwrap();
        let mut out = vec![Route {
            client: 99,
            qos: 0,
            retain_as_published: false,
            ids: Vec::new(),
        }];
        routes.route("a/b", &mut out);
        assert_eq!(
            out,
            [
                Route {
                    client: 1,
                    qos: 1,
                    retain_as_published: true,
                    ids: vec![2, 1],
                },
                Route {
                    client: 2,
                    qos: 0,
                    retain_as_published: false,
                    ids: vec![9],
                },
            ]
        );
        // Subscribing again replaces the options.
        routes.subscribe(1, "a/#", with(0, false, None)).unwrap();
        routes.route("a/b/c", &mut out);
        assert_eq!(
            out,
            [Route {
                client: 1,
                qos: 0,
                retain_as_published: false,
                ids: Vec::new(),
            }]
        );
    }

    /// Marsaglia's xorshift64: enough to shuffle operations, reproducibly.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
            &from[self.below(from.len())]
        }
    }

    /// Every path of up to three levels from `levels`.
    fn paths(levels: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = levels.iter().map(|l| l.to_string()).collect();
        let mut layer = all.clone();
        for _ in 1..3 {
            layer = layer
                .iter()
                .flat_map(|p| levels.iter().map(move |l| format!("{p}/{l}")))
                .collect();
            all.extend(layer.iter().cloned());
        }
        all
    }

    /// What `route` must say, from a plain map of the subscriptions.
    fn expected_routes(model: &BTreeMap<(ClientKey, String), Options>, topic: &str) -> Vec<Route> {
        let mut out: Vec<Route> = Vec::new();
        for ((client, filter), o) in model {
            if !matches(filter, topic) {
                continue;
            }
            if out.last().is_none_or(|r| r.client != *client) {
                out.push(Route {
                    client: *client,
                    qos: 0,
                    retain_as_published: false,
                    ids: Vec::new(),
                });
            }
            if let Some(r) = out.last_mut() {
                r.qos = r.qos.max(o.qos);
                r.retain_as_published |= o.retain_as_published;
                r.ids.extend(o.id);
            }
        }
        out
    }

    /// After a sync: every local filter is served, no dynamic filter is
    /// served twice, and the budget holds.
    fn check_upstream(routes: &Routes, model: &BTreeMap<(ClientKey, String), Options>) {
        let dynamic = routes.upstream();
        let all: Vec<&String> = routes.fixed.iter().chain(dynamic).collect();
        for (_, filter) in model.keys() {
            assert!(
                all.iter().any(|u| covers(u, filter)),
                "{filter:?} not covered by {all:?}"
            );
        }
        for d in dynamic {
            assert!(!routes.fixed.contains(d), "fixed {d:?} is dynamic too");
            for u in &all {
                assert!(*u == d || !covers(u, d), "{u:?} covers {d:?}");
            }
        }
        assert!(dynamic.len() <= routes.dynamic_budget(), "{dynamic:?}");
    }

    /// Random operations against a plain map of the subscriptions, on
    /// small filters where everything overlaps, with a small budget; the
    /// broker refuses what goes past its limit, as AWS does.
    #[test]
    fn random_operations_keep_the_upstream_set_sound() {
        let filters: Vec<String> = paths(&["a", "b", "$s", "+", "#"])
            .into_iter()
            .filter(|f| validate_filter(f).is_ok())
            .collect();
        let topics = paths(&["a", "b", "$s", ""]);
        let mut out = Vec::new();
        for seed in 1..=200u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let fixed: Vec<String> = (0..rng.below(3))
                .map(|_| rng.pick(&filters).clone())
                .collect();
            let budget = fixed.len() + 1 + rng.below(5);
            let mut routes = Routes::new(fixed.clone(), budget);
            let mut model: BTreeMap<(ClientKey, String), Options> = BTreeMap::new();
            let mut refused: Vec<String> = Vec::new();
            for _ in 0..300 {
                let client = rng.below(6) as ClientKey;
                match rng.below(10) {
                    0..=3 => {
                        let filter = rng.pick(&filters).clone();
                        let options = Options {
                            qos: rng.below(2) as u8,
                            no_local: false,
                            retain_as_published: rng.below(2) == 0,
                            id: [None, Some(rng.below(4) as u32 + 1)][rng.below(2)],
                        };
                        let before = routes.target.clone();
                        match routes.subscribe(client, &filter, options) {
                            Ok(()) => {
                                model.insert((client, filter), options);
                            }
                            Err(e) => {
                                assert_eq!(e, OverBudget { budget });
                                assert_eq!(routes.target, before);
                            }
                        }
                    }
                    4 => {
                        let filter = rng.pick(&filters).clone();
                        let had = model.remove(&(client, filter.clone())).is_some();
                        assert_eq!(routes.unsubscribe(client, &filter), had);
                    }
                    5 => {
                        model.retain(|(c, _), _| *c != client);
                        routes.remove_client(client);
                    }
                    6 => {
                        let upstream = routes.upstream();
                        let filter = match upstream.is_empty() || rng.below(4) == 0 {
                            true => rng.pick(&filters).clone(),
                            false => rng.pick(upstream).clone(),
                        };
                        let expected: Vec<ClientKey> = model
                            .keys()
                            .filter(|(_, f)| *f == filter)
                            .map(|(c, _)| *c)
                            .collect();
                        model.retain(|(_, f), _| *f != filter);
                        assert_eq!(routes.refused(&filter), expected);
                        refused.push(filter);
                    }
                    7 | 8 => {
                        let sync = routes.sync();
                        let mut unsubscribed = sync.unsubscribe;
                        let mut fresh = sync.subscribe;
                        // The broker refuses the newest filters past its limit.
                        while routes.upstream().len() > routes.dynamic_budget() {
                            assert!(!refused.is_empty(), "over budget with no refusal");
                            let filter = fresh.pop().expect("a new filter is over the limit");
                            if !routes.is_upstream(&filter) {
                                continue;
                            }
                            model.retain(|(_, f), _| *f != filter);
                            routes.refused(&filter);
                            let sync = routes.sync();
                            fresh.extend(sync.subscribe);
                            unsubscribed.extend(sync.unsubscribe);
                        }
                        for f in &unsubscribed {
                            assert!(!fixed.contains(f), "fixed {f:?} unsubscribed");
                        }
                        for f in refused.drain(..) {
                            let wanted = model.keys().any(|(_, m)| *m == f);
                            assert!(wanted || fixed.contains(&f) || !routes.is_upstream(&f));
                        }
                        check_upstream(&routes, &model);
                        assert_eq!(routes.sync(), Change::default());
                    }
                    _ => {
                        let topic = rng.pick(&topics);
                        routes.route(topic, &mut out);
                        assert_eq!(out, expected_routes(&model, topic), "{topic:?}");
                    }
                }
            }
        }
    }
}
