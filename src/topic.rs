//! MQTT topic filters, pure: whether a filter matches a topic, and whether
//! one filter covers another (every topic the narrow one matches, the wide
//! one matches too), for routing messages among local subscribers and
//! keeping the upstream subscriptions few.
//!
//! The rules are MQTT's (3.1.1 and 5, section 4.7): levels are split by
//! `/`, and an empty level is a level; `+` is exactly one level; `#`, only
//! last, is the rest, zero levels or more (`a/#` matches `a`); a filter
//! whose first level is a wildcard never matches a topic that starts with
//! `$` (`$aws/things/...`, `$SYS/...`): those need their first level
//! spelled out. (rumqttc's matcher refuses every `$` topic, even for a
//! filter that names it exactly: not usable for AWS IoT's reserved topics.)
//!
//! Filters are taken as valid ([`crate::message::validate_filter`]); for an
//! invalid one the answers are unspecified but never a panic.

/// Whether `filter` matches `topic`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && starts_with_wildcard(filter) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic `narrow` matches, `wide` matches too.
pub fn covers(wide: &str, narrow: &str) -> bool {
    // A wildcard first level misses the `$` topics a literal one may name.
    if starts_with_wildcard(wide) && !starts_with_wildcard(narrow) && narrow.starts_with('$') {
        return false;
    }
    let mut w = wide.split('/');
    let mut n = narrow.split('/');
    // The topic made of the narrow levels passed so far is empty, so not a
    // topic at all: a narrow `#` here cannot stop short.
    let mut parent_empty = true;
    loop {
        let (wl, nl) = (w.next(), n.next());
        match (wl, nl) {
            (Some("#"), _) => return true,
            // Narrow goes on to any depth from here (and, unless the topic
            // so far is empty, stops here too): only `#`, or `+/#` when it
            // cannot stop, covers that.
            (_, Some("#")) => {
                return parent_empty
                    && wl == Some("+")
                    && w.next() == Some("#")
                    && w.next().is_none();
            }
            (Some("+"), Some(l)) => parent_empty &= l.is_empty(),
            (Some(wl), Some(nl)) if wl == nl && nl != "+" => parent_empty &= nl.is_empty(),
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn starts_with_wildcard(filter: &str) -> bool {
    matches!(filter.split('/').next(), Some("+" | "#"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::validate_filter;

    #[test]
    fn the_examples_of_the_mqtt_specification() {
        // 4.7.1.2
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(matches("sport/#", "sport"));
        // 4.7.1.3
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        // 4.7.2
        assert!(!matches("#", "$SYS/broker/load"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    }

    #[test]
    fn aws_reserved_topics_match_when_spelled_out() {
        let shadow = "$aws/things/pi-1/shadow/update/accepted";
        assert!(matches(shadow, shadow));
        assert!(matches("$aws/things/+/shadow/update/#", shadow));
        assert!(!matches("#", shadow));
        assert!(!matches("+/things/pi-1/shadow/update/accepted", shadow));
        assert!(covers("$aws/things/pi-1/#", shadow));
        assert!(!covers("#", "$aws/things/pi-1/#"));
    }

    #[test]
    fn covers_in_words() {
        assert!(covers("#", "a/b"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/+", "a/b"));
        assert!(covers("a/+", "a/+"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/+", "a"));
        assert!(!covers("a/b/#", "a/#"));
        assert!(covers("+/#", "a"));
        assert!(!covers("+/#", "$aws/x"));
    }

    /// Every filter of up to three levels from a small alphabet, and every
    /// topic of up to four levels (one more than any filter): `covers(w, n)`
    /// is exactly "every topic `n` matches, `w` matches".
    #[test]
    fn covers_agrees_with_matches_on_every_small_case() {
        let filter_levels = ["a", "b", "$s", "", "+", "#"];
        let topic_levels = ["a", "b", "$s", ""];
        let mut filters = Vec::new();
        let mut topics: Vec<String> = Vec::new();
        let grow = |levels: &[&str], max: usize, out: &mut Vec<String>| {
            let mut layer: Vec<String> = levels.iter().map(|l| l.to_string()).collect();
            out.extend(layer.clone());
            for _ in 1..max {
                layer = layer
                    .iter()
                    .flat_map(|p| levels.iter().map(move |l| format!("{p}/{l}")))
                    .collect();
                out.extend(layer.clone());
            }
        };
        grow(&filter_levels, 3, &mut filters);
        grow(&topic_levels, 4, &mut topics);
        filters.retain(|f| validate_filter(f).is_ok());
        topics.retain(|t| !t.is_empty());
        let mut checked = 0;
        for w in &filters {
            for n in &filters {
                let by_topics = topics.iter().all(|t| !matches(n, t) || matches(w, t));
                assert_eq!(covers(w, n), by_topics, "covers({w:?}, {n:?})");
                checked += 1;
            }
        }
        assert!(checked > 10_000, "{checked}");
    }
}
