//! Publish rate limit: `--max_rate N` publishes per second.
//!
//! AWS IoT Core allows 100 publishes per second per connection and throttles
//! beyond that; the SDK limits itself likewise. This is the generic cell rate
//! algorithm: on average one publish per `1/N` s, with bursts of up to `N`
//! (one second's worth) after a quiet spell. Pure: time comes in as `now`.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimit {
    /// Time one publish "costs".
    interval: Duration,
    /// How far ahead of `now` the budget may be spent: a burst of N.
    tolerance: Duration,
    /// The theoretical arrival time of the next publish.
    tat: Option<Instant>,
}

impl RateLimit {
    /// `None` for 0: no limit.
    pub fn new(per_second: u32) -> Option<RateLimit> {
        if per_second == 0 {
            return None;
        }
        let interval = Duration::from_secs(1) / per_second;
        Some(RateLimit {
            interval,
            tolerance: interval * (per_second - 1),
            tat: None,
        })
    }

    /// Takes one publish from the budget, or says when the next one fits.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Instant> {
        let tat = self.tat.map_or(now, |t| t.max(now));
        if tat > now + self.tolerance {
            return Err(tat - self.tolerance);
        }
        self.tat = Some(tat + self.interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_unlimited() {
        assert!(RateLimit::new(0).is_none());
    }

    #[test]
    fn bursts_one_second_then_paces() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10).unwrap();
        for _ in 0..10 {
            assert_eq!(r.try_take(t0), Ok(()));
        }
        let next = r.try_take(t0).unwrap_err();
        assert_eq!(next, t0 + Duration::from_millis(100));
        assert_eq!(r.try_take(next), Ok(()));
        assert!(r.try_take(next).is_err());
        // Over a long run the average is the rate: 100 more take 10 s.
        let mut now = next;
        let mut taken = 0;
        while taken < 100 {
            match r.try_take(now) {
                Ok(()) => taken += 1,
                Err(at) => now = at,
            }
        }
        assert_eq!(now - next, Duration::from_secs(10));
    }

    #[test]
    fn quiet_spells_refill_the_burst_but_no_more() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(5).unwrap();
        for _ in 0..5 {
            r.try_take(t0).unwrap();
        }
        let later = t0 + Duration::from_secs(60);
        let burst = (0..20).take_while(|_| r.try_take(later).is_ok()).count();
        assert_eq!(burst, 5);
    }
}
