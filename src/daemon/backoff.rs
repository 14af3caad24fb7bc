//! Retry delays: exponential backoff with full jitter.
//!
//! The ceiling starts at `first` and doubles up to `max`; each delay is drawn
//! uniformly from zero to the ceiling ("full jitter"), so a fleet of devices
//! that lost the broker together does not come back in lock-step. The owner
//! resets it when an attempt worked: for the broker, once a connection has
//! stayed up for [`STABLE_AFTER`] (a link that flaps keeps backing off, one
//! that worked starts fresh); for the delivery socket, when a reader answers.

use std::time::Duration;

/// The broker: 1 s doubling to 120 s (`--reconnect_max` changes the top).
pub const RECONNECT_FIRST: Duration = Duration::from_secs(1);
pub const RECONNECT_MAX: Duration = Duration::from_secs(120);

/// A connection that lasted this long resets the backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// Delays from `first` doubling to `max`. `seed` makes the jitter
    /// reproducible in tests; the daemon seeds it from the system's random
    /// source.
    pub fn new(seed: u64, first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max: max.max(first),
            attempt: 0,
            // xorshift must not start at 0.
            rng: seed | 1,
        }
    }

    /// The ceiling for the next delay: first, 2 first, 4 first ... max.
    pub fn ceiling(&self) -> Duration {
        self.first
            .checked_mul(1u32 << self.attempt.min(20))
            .map_or(self.max, |d| d.min(self.max))
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
        let mut b = Backoff::new(7, RECONNECT_FIRST, RECONNECT_MAX);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_secs());
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(*ceilings.last().unwrap()));
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 120, 120, 120]);
        b.reset();
        assert_eq!(b.ceiling(), RECONNECT_FIRST);
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut b = Backoff::new(12345, RECONNECT_FIRST, RECONNECT_MAX);
        for _ in 0..7 {
            b.next_delay();
        }
        let delays: Vec<_> = (0..20).map(|_| b.next_delay()).collect();
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 15, "{delays:?}");
    }

    #[test]
    fn a_lower_maximum_caps_the_ladder() {
        let mut b = Backoff::new(1, RECONNECT_FIRST, Duration::from_secs(5));
        let ceilings: Vec<_> = (0..6)
            .map(|_| {
                let c = b.ceiling().as_secs();
                b.next_delay();
                c
            })
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 5, 5, 5]);
        // Never below the first step.
        let b = Backoff::new(1, Duration::from_millis(250), Duration::ZERO);
        assert_eq!(b.ceiling(), Duration::from_millis(250));
    }
}
