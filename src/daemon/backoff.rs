//! Reconnect delays: exponential backoff with full jitter.
//!
//! The ceiling starts at 1 s and doubles up to 120 s; each delay is drawn
//! uniformly from zero to the ceiling ("full jitter"), so a fleet of devices
//! that lost the broker together does not come back in lock-step. The ceiling
//! resets once a connection has stayed up for 30 s: a link that flaps keeps
//! backing off, one that worked starts fresh.

use std::time::Duration;

const FIRST: Duration = Duration::from_secs(1);
const CEILING: Duration = Duration::from_secs(120);

/// A connection that lasted this long resets the backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// `seed` makes the jitter reproducible in tests; the daemon seeds it
    /// from the system's random source.
    pub fn new(seed: u64) -> Backoff {
        Backoff {
            attempt: 0,
            // xorshift must not start at 0.
            rng: seed | 1,
        }
    }

    /// The ceiling for the next delay: 1 s, 2 s, 4 s ... 120 s.
    pub fn ceiling(&self) -> Duration {
        FIRST
            .checked_mul(1u32 << self.attempt.min(7))
            .map_or(CEILING, |d| d.min(CEILING))
    }

    /// The next delay, and one more step up the ladder.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(self.random() % (millis + 1))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// xorshift64: plenty for jitter.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_to_two_minutes_and_resets() {
        let mut b = Backoff::new(7);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_secs());
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(*ceilings.last().unwrap()));
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 120, 120, 120]);
        b.reset();
        assert_eq!(b.ceiling(), FIRST);
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut b = Backoff::new(12345);
        for _ in 0..7 {
            b.next_delay();
        }
        let delays: Vec<_> = (0..20).map(|_| b.next_delay()).collect();
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 15, "{delays:?}");
    }
}
