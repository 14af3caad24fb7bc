//! The broker connection's life cycle, sans-IO: when to resolve, which
//! address to connect to, how long to wait after a failure, when a failure
//! is fatal, and how the daemon stops.
//!
//! [`Link`] never touches a socket and never reads the clock; it is driven
//! like the [session](super::session) (quinn-proto's pattern):
//!
//! - `handle_*` for input, each taking `now`: the lookup answered
//!   ([`Link::handle_resolved`]), a TCP connect failed or completed, the
//!   connection was lost or refused, the session subscribed or published, a
//!   signal came, the work left at shutdown is done, a deadline passed
//!   ([`Link::handle_timeout`]);
//! - `poll_*` for output, drained after every input: [`Link::poll_action`]
//!   until `None` (what the event loop must do, in order) and
//!   [`Link::poll_timeout`] (when to call `handle_timeout` next).
//!
//! The rules it keeps:
//!
//! - Every address the name resolves to is tried in turn, each for
//!   [`TCP_CONNECT_TIMEOUT`]; when none works, the attempt failed.
//! - A failed attempt or a lost connection waits a [`Backoff`] delay (full
//!   jitter, `--reconnect_min` doubling to `--reconnect_max`); a connection that stayed up
//!   for [`STABLE_AFTER`] resets it. SIGHUP cuts a pending wait short: it is
//!   what a user sends after fixing a certificate.
//! - Until the first subscription succeeded, a refusal (the certificate, the
//!   CONNACK, a SUBACK) is fatal: retrying cannot help, the user must act.
//!   Afterwards the same refusals are logged and retried: a device in the
//!   field keeps trying.
//! - Shutdown (SIGTERM/SIGINT, or `--count` publishes done) stops accepting
//!   at once, lets what is in flight finish for [`SHUTDOWN_GRACE`], then
//!   closes; a second signal closes at once.

use crate::daemon::backoff::{Backoff, STABLE_AFTER};
use crate::error::Error;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A TCP connect that has not completed by then is given up.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// SIGTERM/SIGINT: in-flight publishes and deliveries get this long.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Settings for the life of the daemon.
#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port` of the broker, for log lines.
    pub target: String,
    /// Stop after this many confirmed publishes; 0 = never.
    pub count: u64,
    /// The bottom of the backoff ladder (`--reconnect_min`): the ceiling of
    /// the first wait after a connection is lost.
    pub reconnect_min: Duration,
    /// The top of the backoff ladder (`--reconnect_max`).
    pub reconnect_max: Duration,
    /// Random bits for the backoff jitter.
    pub seed: u64,
}

/// What the event loop must do, in the order given.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Look up the broker's address (or the proxy's); answer with
    /// [`Link::handle_resolved`].
    Resolve,
    /// Start a TCP connect to this address; answer with
    /// [`Link::handle_tcp_up`] or [`Link::handle_connect_failed`].
    Connect(SocketAddr),
    /// Close the transport, if there is one.
    Disconnect,
    /// Stop taking new messages from local clients.
    StopAccepting,
    /// End the MQTT session for good: DISCONNECT if connected, and answer
    /// every client still waiting.
    CloseSession,
    /// The daemon is done: `Ok` after a shutdown, `Err` when fatal.
    Exit(Result<(), Error>),
}

#[derive(Debug)]
enum State {
    /// Not started.
    New,
    /// Waiting to try again.
    Waiting { retry_at: Instant },
    /// A lookup is under way.
    Resolving,
    /// A TCP connect to `addr` is under way; `rest` are the addresses left.
    Connecting {
        addr: SocketAddr,
        rest: Vec<SocketAddr>,
        deadline: Instant,
    },
    /// TCP is up; TLS and MQTT run over it (the session knows how far).
    Up { since: Instant },
    /// No more connection attempts: shutting down, or done.
    Stopped,
}

/// See the module documentation for the calling contract.
#[derive(Debug)]
pub struct Link {
    config: Config,
    state: State,
    backoff: Backoff,
    /// Subscribed at least once: from then on, refusals are not fatal.
    subscribed_once: bool,
    /// Publishes confirmed, for `--count`.
    published: u64,
    /// Set when shutdown began: when the grace period ends.
    shutdown_deadline: Option<Instant>,
    /// `Exit` was queued; nothing happens afterwards.
    done: bool,
    /// When the last transport came up (and so the last CONNECT went).
    last_connect: Option<Instant>,
    actions: VecDeque<Action>,
}

/// AWS IoT Core takes at most one CONNECT a second per client id: the next
/// attempt never comes sooner after the last one, whatever the backoff's
/// draw (full jitter may draw near zero) or a SIGHUP says.
pub const CONNECT_GAP: Duration = Duration::from_secs(1);

impl Link {
    pub fn new(config: Config) -> Link {
        let backoff = Backoff::new(config.seed, config.reconnect_min, config.reconnect_max);
        Link {
            config,
            state: State::New,
            backoff,
            subscribed_once: false,
            published: 0,
            shutdown_deadline: None,
            done: false,
            last_connect: None,
            actions: VecDeque::new(),
        }
    }

    // ----- getters -----

    /// Shutdown began: nothing new is accepted.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown_deadline.is_some()
    }

    // ----- input -----

    /// The first connection attempt.
    pub fn start(&mut self) {
        if matches!(self.state, State::New) {
            self.resolve();
        }
    }

    /// The lookup answered: the addresses, or why there are none.
    pub fn handle_resolved(&mut self, now: Instant, answer: Result<Vec<SocketAddr>, String>) {
        if !matches!(self.state, State::Resolving) {
            return; // shutdown began meanwhile
        }
        match answer {
            Ok(addrs) if addrs.is_empty() => {
                self.attempt_failed(now, "the name resolved to no address".into())
            }
            Ok(addrs) => self.connect_next(now, addrs, None),
            Err(why) => self.attempt_failed(now, why),
        }
    }

    /// The TCP connect started by [`Action::Connect`] failed (at once or
    /// later): the next address is tried.
    pub fn handle_connect_failed(&mut self, now: Instant, why: String) {
        if let State::Connecting { addr, rest, .. } = std::mem::replace(&mut self.state, State::New)
        {
            log::debug!("{addr}: {why}");
            self.actions.push_back(Action::Disconnect);
            self.connect_next(now, rest, Some(format!("{addr}: {why}")));
        }
    }

    /// The TCP connect completed; the session starts now.
    pub fn handle_tcp_up(&mut self, now: Instant) {
        if let State::Connecting { addr, .. } = self.state {
            log::debug!("TCP connected to {addr}");
            self.state = State::Up { since: now };
            self.last_connect = Some(now);
        }
    }

    /// The connection is gone (the session's `ConnectionLost`): reconnect
    /// after the backoff. `taken_over`: another client connected with our
    /// client id, said in words so that two devices sharing one see why.
    /// Ignored unless connected (a refusal already decided what happens).
    pub fn handle_lost(&mut self, now: Instant, reason: &str, taken_over: bool) {
        if !matches!(self.state, State::Up { .. }) {
            return;
        }
        log::warn!("connection lost: {reason}");
        if taken_over {
            log::warn!(
                "another client uses this client id: waiting the backoff before reconnecting, so the two do not take turns in a tight loop"
            );
        }
        self.down(now);
        self.schedule(now);
    }

    /// The broker refused us: the certificate (TLS), or the CONNACK. Fatal
    /// until the first subscription succeeded, retried afterwards.
    pub fn handle_refused(&mut self, now: Instant, reason: String) {
        if self.done {
            return;
        }
        if !self.subscribed_once {
            self.fatal(reason);
            return;
        }
        log::error!("{reason}");
        self.down(now);
        self.schedule(now);
    }

    /// Every filter is subscribed.
    pub fn handle_subscribed(&mut self) {
        self.subscribed_once = true;
    }

    /// The broker refused a subscription: fatal at the first connection
    /// (the policy must change), logged afterwards.
    pub fn handle_subscribe_refused(&mut self, reason: String) {
        if self.done {
            return;
        }
        if self.subscribed_once {
            log::error!("{reason}");
        } else {
            self.fatal(reason);
        }
    }

    /// A publish from a local client was confirmed; `--count` may be done.
    pub fn handle_published(&mut self, now: Instant) {
        self.published += 1;
        if self.config.count > 0 && self.published == self.config.count {
            log::info!("{} publishes done (--count): stopping", self.published);
            self.begin_shutdown(now);
        }
    }

    /// SIGTERM or SIGINT: shut down; a second one stops at once.
    pub fn handle_terminate(&mut self, now: Instant) {
        if self.is_shutting_down() {
            log::info!("second signal: stopping now");
            self.finish();
        } else {
            self.begin_shutdown(now);
        }
    }

    /// SIGHUP: the files were reloaded; a pending wait is cut short so the
    /// new ones are tried now.
    pub fn handle_reload(&mut self, now: Instant) {
        let soonest = self.soonest(now);
        if let State::Waiting { retry_at } = &mut self.state {
            if *retry_at > soonest {
                log::info!("SIGHUP: reconnecting now instead of waiting the backoff");
                *retry_at = soonest;
            }
        }
    }

    /// During shutdown: everything in flight is answered and delivered.
    pub fn handle_settled(&mut self) {
        if self.is_shutting_down() {
            self.finish();
        }
    }

    /// Runs the expired deadlines. Extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.shutdown_deadline.is_some_and(|at| at <= now) {
            self.finish();
            return;
        }
        match self.state {
            State::Waiting { retry_at } if retry_at <= now => {
                log::info!("reconnecting to {}", self.config.target);
                self.resolve();
            }
            State::Connecting { deadline, .. } if deadline <= now => self.handle_connect_failed(
                now,
                format!("no answer within {} s", TCP_CONNECT_TIMEOUT.as_secs()),
            ),
            _ => {}
        }
    }

    // ----- output -----

    /// The next thing to do; call until `None`.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Link::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let state = match self.state {
            State::Waiting { retry_at } => Some(retry_at),
            State::Connecting { deadline, .. } => Some(deadline),
            _ => None,
        };
        [state, self.shutdown_deadline].into_iter().flatten().min()
    }

    // ----- internals -----

    fn resolve(&mut self) {
        self.state = State::Resolving;
        self.actions.push_back(Action::Resolve);
    }

    /// Connects to the first of `addrs`; when none is left, the attempt
    /// failed with `last_error`.
    fn connect_next(&mut self, now: Instant, mut addrs: Vec<SocketAddr>, last: Option<String>) {
        if addrs.is_empty() {
            let why = last.unwrap_or_else(|| "no address to connect to".into());
            self.attempt_failed(now, why);
            return;
        }
        let addr = addrs.remove(0);
        self.state = State::Connecting {
            addr,
            rest: addrs,
            deadline: now + TCP_CONNECT_TIMEOUT,
        };
        self.actions.push_back(Action::Connect(addr));
    }

    /// An attempt failed before MQTT started: try again later.
    fn attempt_failed(&mut self, now: Instant, why: String) {
        log::warn!("cannot connect to {}: {why}", self.config.target);
        self.down(now);
        self.schedule(now);
    }

    /// The transport is gone. A connection that lasted resets the backoff.
    fn down(&mut self, now: Instant) {
        match self.state {
            State::Up { since } => {
                if now.duration_since(since) >= STABLE_AFTER {
                    self.backoff.reset();
                }
                self.actions.push_back(Action::Disconnect);
            }
            State::Connecting { .. } => self.actions.push_back(Action::Disconnect),
            _ => {}
        }
        self.state = State::Stopped;
    }

    fn schedule(&mut self, now: Instant) {
        if self.is_shutting_down() {
            self.state = State::Stopped;
            return;
        }
        let retry_at = (now + self.backoff.next_delay()).max(self.soonest(now));
        let delay = retry_at - now;
        // Integer formatting: float formatting alone costs ~20 KB of binary.
        log::info!(
            "next connection attempt in {}.{} s",
            delay.as_secs(),
            delay.subsec_millis() / 100
        );
        self.state = State::Waiting { retry_at };
    }

    /// The soonest the next attempt may start: [`CONNECT_GAP`] after the
    /// last CONNECT.
    fn soonest(&self, now: Instant) -> Instant {
        self.last_connect
            .map_or(now, |at| now.max(at + CONNECT_GAP))
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.is_shutting_down() || self.done {
            return;
        }
        self.shutdown_deadline = Some(now + SHUTDOWN_GRACE);
        self.actions.push_back(Action::StopAccepting);
        // No new attempts; a connect under way may still finish and carry
        // what is in flight.
        if matches!(
            self.state,
            State::New | State::Waiting { .. } | State::Resolving
        ) {
            self.state = State::Stopped;
        }
    }

    fn finish(&mut self) {
        self.end(Ok(()));
    }

    fn fatal(&mut self, reason: String) {
        self.end(Err(Error::Runtime(reason)));
    }

    fn end(&mut self, result: Result<(), Error>) {
        if self.done {
            return;
        }
        self.done = true;
        self.state = State::Stopped;
        self.actions.push_back(Action::CloseSession);
        self.actions.push_back(Action::Disconnect);
        self.actions.push_back(Action::Exit(result));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::backoff::{RECONNECT_FIRST, RECONNECT_MAX};

    const SEED: u64 = 99;

    fn link(count: u64) -> Link {
        Link::new(Config {
            target: "broker:8883".into(),
            count,
            reconnect_min: RECONNECT_FIRST,
            reconnect_max: RECONNECT_MAX,
            seed: SEED,
        })
    }

    fn actions(l: &mut Link) -> Vec<Action> {
        std::iter::from_fn(|| l.poll_action()).collect()
    }

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 8883))
    }

    /// Started with `--count count`, resolved, TCP up: the first connection,
    /// not subscribed yet.
    fn first_connection(count: u64, now: Instant) -> Link {
        let mut l = link(count);
        l.start();
        l.handle_resolved(now, Ok(vec![addr(1)]));
        l.handle_tcp_up(now);
        actions(&mut l);
        l
    }

    /// The first connection, subscribed.
    fn up(now: Instant) -> Link {
        let mut l = first_connection(0, now);
        l.handle_subscribed();
        l
    }

    /// The actions that end the daemon with `result`.
    fn the_end(result: Result<(), Error>) -> [Action; 3] {
        [
            Action::CloseSession,
            Action::Disconnect,
            Action::Exit(result),
        ]
    }

    /// Loses the connection `times` times, each right after it came back:
    /// the backoff ladder climbs. Returns the time of the last reconnect.
    fn flap(l: &mut Link, mut now: Instant, times: usize) -> Instant {
        for _ in 0..times {
            l.handle_lost(now, "reset", false);
            now = l.poll_timeout().unwrap();
            l.handle_timeout(now);
            l.handle_resolved(now, Ok(vec![addr(1)]));
            l.handle_tcp_up(now);
        }
        actions(l);
        now
    }

    /// The delays a fresh backoff with the test seed gives.
    fn expected_delays(n: usize) -> Vec<Duration> {
        let mut b = Backoff::new(SEED, RECONNECT_FIRST, RECONNECT_MAX);
        (0..n).map(|_| b.next_delay()).collect()
    }

    #[test]
    fn start_resolves_then_tries_each_address() {
        let t0 = Instant::now();
        let mut l = link(0);
        l.start();
        assert_eq!(actions(&mut l), [Action::Resolve]);
        l.handle_resolved(t0, Ok(vec![addr(1), addr(2)]));
        assert_eq!(actions(&mut l), [Action::Connect(addr(1))]);
        assert_eq!(l.poll_timeout(), Some(t0 + TCP_CONNECT_TIMEOUT));
        l.handle_connect_failed(t0, "connection refused".into());
        assert_eq!(
            actions(&mut l),
            [Action::Disconnect, Action::Connect(addr(2))]
        );
        // The second one never answers: the attempt failed, wait.
        let t1 = t0 + TCP_CONNECT_TIMEOUT;
        l.handle_timeout(t1);
        assert_eq!(actions(&mut l), [Action::Disconnect]);
        assert_eq!(l.poll_timeout(), Some(t1 + expected_delays(1)[0]));
    }

    #[test]
    fn first_connection_refused_is_fatal() {
        let t0 = Instant::now();
        let mut l = first_connection(0, t0);
        l.handle_refused(t0, "not authorized".into());
        assert_eq!(
            actions(&mut l),
            the_end(Err(Error::Runtime("not authorized".into())))
        );
        assert_eq!(l.poll_timeout(), None);
        // Whatever comes after is ignored.
        l.handle_lost(t0, "eof", false);
        l.handle_timeout(t0 + Duration::from_secs(600));
        assert!(actions(&mut l).is_empty());
    }

    #[test]
    fn first_subscription_refused_is_fatal_later_ones_are_logged() {
        let t0 = Instant::now();
        let mut l = first_connection(0, t0);
        l.handle_subscribe_refused("a/b: not authorized".into());
        assert!(matches!(actions(&mut l).last(), Some(Action::Exit(Err(_)))));

        let mut l = up(t0);
        l.handle_subscribe_refused("a/b: not authorized".into());
        assert!(actions(&mut l).is_empty(), "logged, still running");
    }

    #[test]
    fn later_losses_and_refusals_back_off_and_retry() {
        let t0 = Instant::now();
        let mut l = up(t0);
        let delays = expected_delays(3);
        l.handle_lost(t0, "connection reset", false);
        assert_eq!(actions(&mut l), [Action::Disconnect]);
        // The connection came up at t0: a second at least (CONNECT_GAP).
        let t1 = t0 + delays[0].max(CONNECT_GAP);
        assert_eq!(l.poll_timeout(), Some(t1));
        l.handle_timeout(t1);
        assert_eq!(actions(&mut l), [Action::Resolve]);
        l.handle_resolved(t1, Ok(vec![addr(1)]));
        l.handle_tcp_up(t1);
        actions(&mut l);
        // A refused certificate after the first success: retried.
        l.handle_refused(t1, "certificate revoked".into());
        assert_eq!(actions(&mut l), [Action::Disconnect]);
        assert_eq!(l.poll_timeout(), Some(t1 + delays[1].max(CONNECT_GAP)));
    }

    #[test]
    fn takeover_waits_the_backoff_like_any_loss() {
        let t0 = Instant::now();
        let mut l = up(t0);
        l.handle_lost(t0, "session taken over", true);
        assert_eq!(actions(&mut l), [Action::Disconnect]);
        assert_eq!(
            l.poll_timeout(),
            Some(t0 + expected_delays(1)[0].max(CONNECT_GAP))
        );
        // Nothing happens before then.
        l.handle_timeout(t0);
        assert!(actions(&mut l).is_empty());
    }

    #[test]
    fn a_connection_that_lasted_resets_the_backoff() {
        let t0 = Instant::now();
        let mut l = up(t0);
        let now = flap(&mut l, t0, 5);
        assert_eq!(l.backoff.ceiling(), Duration::from_secs(32));
        // This one lasts: the ladder starts again.
        l.handle_lost(now + STABLE_AFTER, "reset", false);
        assert_eq!(
            l.backoff.ceiling(),
            Duration::from_secs(2),
            "reset, then one step"
        );
    }

    #[test]
    fn reload_cuts_a_pending_wait_short() {
        let t0 = Instant::now();
        let mut l = up(t0);
        let now = flap(&mut l, t0, 8);
        l.handle_lost(now, "reset", false);
        actions(&mut l);
        let later = now + Duration::from_secs(5);
        assert!(l.poll_timeout().unwrap() > later, "a wait is pending");
        l.handle_reload(later);
        assert_eq!(l.poll_timeout(), Some(later));
        l.handle_timeout(later);
        assert_eq!(actions(&mut l), [Action::Resolve]);
    }

    #[test]
    fn never_two_connects_within_a_second_whatever_the_draw_or_sighup() {
        let t0 = Instant::now();
        for seed in 0..200 {
            let mut l = Link::new(Config {
                target: "broker:8883".into(),
                count: 0,
                reconnect_min: RECONNECT_FIRST,
                reconnect_max: RECONNECT_MAX,
                seed,
            });
            l.start();
            l.handle_resolved(t0, Ok(vec![addr(1)]));
            l.handle_tcp_up(t0);
            l.handle_subscribed();
            // Lost at once; SIGHUP at once: still a second after the last.
            l.handle_lost(t0, "reset", false);
            l.handle_reload(t0);
            let next = l.poll_timeout().unwrap();
            assert!(next >= t0 + CONNECT_GAP, "seed {seed}: {:?}", next - t0);
            l.handle_timeout(next);
            l.handle_resolved(next, Ok(vec![addr(1)]));
            // A failure before TCP came up sent no CONNECT: that attempt
            // does not count; the gap is to the last one that did.
            l.handle_connect_failed(next, "refused".into());
            let after = l.poll_timeout().unwrap();
            assert!(after >= t0 + CONNECT_GAP);
        }
    }

    #[test]
    fn sigterm_during_connect_stops_after_the_grace_period() {
        let t0 = Instant::now();
        let mut l = link(0);
        l.start();
        l.handle_resolved(t0, Ok(vec![addr(1)]));
        actions(&mut l);
        l.handle_terminate(t0);
        assert_eq!(actions(&mut l), [Action::StopAccepting]);
        assert!(l.is_shutting_down());
        // The connect under way never answers: the grace period ends it.
        assert_eq!(
            l.poll_timeout(),
            Some(t0 + TCP_CONNECT_TIMEOUT.min(SHUTDOWN_GRACE))
        );
        l.handle_timeout(t0 + SHUTDOWN_GRACE);
        assert_eq!(actions(&mut l), the_end(Ok(())));
    }

    #[test]
    fn sigterm_while_waiting_never_reconnects_and_settles_at_once() {
        let t0 = Instant::now();
        let mut l = up(t0);
        l.handle_lost(t0, "reset", false);
        actions(&mut l);
        l.handle_terminate(t0);
        assert_eq!(actions(&mut l), [Action::StopAccepting]);
        assert_eq!(l.poll_timeout(), Some(t0 + SHUTDOWN_GRACE), "no retry");
        l.handle_settled();
        assert_eq!(actions(&mut l), the_end(Ok(())));
    }

    #[test]
    fn a_second_signal_stops_at_once() {
        let t0 = Instant::now();
        let mut l = up(t0);
        l.handle_terminate(t0);
        l.handle_terminate(t0);
        assert_eq!(
            actions(&mut l),
            [
                Action::StopAccepting,
                Action::CloseSession,
                Action::Disconnect,
                Action::Exit(Ok(()))
            ]
        );
    }

    #[test]
    fn count_stops_after_n_confirmed_publishes() {
        let t0 = Instant::now();
        let mut l = first_connection(2, t0);
        l.handle_published(t0);
        assert!(!l.is_shutting_down());
        l.handle_published(t0);
        assert_eq!(actions(&mut l), [Action::StopAccepting]);
        l.handle_published(t0);
        assert!(actions(&mut l).is_empty(), "once");
    }

    #[test]
    fn resolve_failure_and_late_answers() {
        let t0 = Instant::now();
        let mut l = link(0);
        l.start();
        actions(&mut l);
        l.handle_resolved(t0, Err("no such host".into()));
        assert!(actions(&mut l).is_empty());
        assert!(l.poll_timeout().is_some());
        // An answer nobody waits for is ignored.
        l.handle_resolved(t0, Ok(vec![addr(1)]));
        assert!(actions(&mut l).is_empty());
    }
}
