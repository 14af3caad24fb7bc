//! The one `mio::Poll` of the daemon: the only place that waits and the only
//! place that reads the clock.
//!
//! The shape of mio's `tcp_server` and quinn's driver: fixed tokens for the
//! listener, the broker, the signals, the waker and the delivery connection,
//! one range of tokens for publish socket clients. Each turn: wait until an
//! event or the earliest deadline of the state machines, read the clock
//! once, dispatch the events by token, run the expired timers, then
//! `Daemon::process` until quiet: hand the session's output to the
//! transport, act on the session's events and the link's actions. While
//! idle and connected the only deadline is the keep-alive ping.
//!
//! The decisions are the state machines': [`Session`] (MQTT), [`Link`]
//! (when to connect, retry, give up, stop), the publish socket's and the
//! delivery's client tables. This file only moves bytes and events between
//! them and the sockets.

use super::Config;
use super::broker::link::{Action, Link};
use super::broker::resolve::{self, Lookup};
use super::broker::session::{Event, Session};
use super::broker::tls;
use super::broker::transport::{Failure, Transport};
use super::device::delivery::Delivery;
use super::device::publish_socket::{ClientId, PublishSocket, Status, Submission};
use crate::error::{Error, runtime};
use crate::output::{LOG_INTERVAL, Sink, Throttle};
use mio::event::Event as MioEvent;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::io;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

const PUBLISH_LISTENER: Token = Token(0);
const BROKER: Token = Token(1);
const SIGNALS: Token = Token(2);
const WAKER: Token = Token(3);
const DELIVERY: Token = Token(4);

/// Plaintext read at a time from the broker or a client.
const SCRATCH: usize = 16 * 1024;

/// Bytes read from the broker before the loop acts on what they brought: a
/// broker that floods cannot keep the loop reading (and queueing events)
/// forever; the rest is read on the next turn.
const BROKER_READ_BUDGET: usize = 256 * 1024;

struct Daemon {
    poll: Poll,
    config: Config,
    session: Session,
    link: Link,
    /// The broker connection, from [`Action::Connect`] to
    /// [`Action::Disconnect`].
    transport: Option<Transport>,
    /// The lookup under way, from [`Action::Resolve`] to its answer.
    lookup: Option<Lookup>,
    /// The broker may have sent more than was read: reading stopped at the
    /// budget or because the session's output was full. Edge-triggered
    /// readiness will not say so again, so the loop reads on its own.
    broker_unread: bool,
    /// The broker was read during this turn's events.
    broker_read_this_turn: bool,
    publish: PublishSocket,
    delivery: Delivery,
    signals: Signals,
    waker: Arc<Waker>,
    exit: Option<Result<(), Error>>,
    scratch: Vec<u8>,
    /// Messages read by the last accept, reused between calls.
    submissions: Vec<Submission>,
    /// Status lines for stdout, handed to `stdout` once per loop turn: a
    /// burst of publishes costs one write(2), not one per `Publish Succeed.`.
    console: Vec<u8>,
    /// Where status lines go; never blocks.
    stdout: Sink,
    /// Publishes the session refused: logged at most once a minute.
    refusals: Throttle,
    refused_total: u64,
}

/// Runs the daemon until SIGTERM/SIGINT (`Ok`) or a fatal error.
pub fn run(config: Config, stdout: Sink) -> Result<(), Error> {
    let mut daemon = Daemon::new(config, stdout)?;
    daemon.run()
}

fn io_error(what: &str) -> impl Fn(io::Error) -> Error + '_ {
    move |e| runtime!("{what}: {e}")
}

impl Daemon {
    fn new(config: Config, stdout: Sink) -> Result<Daemon, Error> {
        let poll = Poll::new().map_err(io_error("cannot create the event loop"))?;
        let mut signals =
            Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(io_error("cannot watch signals"))?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(io_error("cannot watch signals"))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER).map_err(io_error("cannot create the waker"))?,
        );
        let publish = PublishSocket::bind(
            &config.pub_socket,
            config.socket_mode,
            config.session.max_payload,
            poll.registry(),
            PUBLISH_LISTENER,
        )
        .map_err(|e| runtime!("{e}"))?;
        let delivery = Delivery::new(
            config.sub_socket.clone(),
            config.deliver_topic,
            DELIVERY,
            config.link.seed.rotate_left(32),
        );
        Ok(Daemon {
            poll,
            session: Session::new(config.session.clone()),
            link: Link::new(config.link.clone()),
            transport: None,
            lookup: None,
            broker_unread: false,
            broker_read_this_turn: false,
            publish,
            delivery,
            signals,
            waker,
            exit: None,
            scratch: vec![0; SCRATCH],
            submissions: Vec::new(),
            console: Vec::new(),
            stdout,
            refusals: Throttle::new(LOG_INTERVAL),
            refused_total: 0,
            config,
        })
    }

    fn run(&mut self) -> Result<(), Error> {
        self.say("Mqtt5 Client attempting connection...");
        self.link.start();
        self.process(Instant::now());
        let mut events = Events::with_capacity(256);
        loop {
            self.flush_console();
            if let Some(result) = self.exit.take() {
                return result;
            }
            let timeout = if self.broker_unread && self.session.wants_input() {
                Some(std::time::Duration::ZERO)
            } else {
                self.next_deadline()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if crate::sys::interrupted(&e) {
                    continue;
                }
                return Err(runtime!("event loop failed: {e}"));
            }
            let now = Instant::now();
            for event in events.iter() {
                self.dispatch(now, event);
            }
            self.tick(now);
        }
    }

    fn dispatch(&mut self, now: Instant, event: &MioEvent) {
        match event.token() {
            PUBLISH_LISTENER => self.accept_clients(now),
            BROKER => self.on_broker(now, event),
            SIGNALS => self.on_signals(now),
            WAKER => self.on_resolved(now),
            DELIVERY => self.delivery.on_writable(now, self.poll.registry()),
            token if ClientId::from_token(token).is_some() => self.on_client(now, token),
            _ => {} // sporadic events happen
        }
    }

    /// Timers, then everything they and the events set in motion.
    fn tick(&mut self, now: Instant) {
        // What the broker sent beyond the last read's budget, unless this
        // turn's events read already: one budget per turn, then `process`.
        if self.broker_unread && !self.broker_read_this_turn {
            self.read_broker(now);
        }
        self.broker_read_this_turn = false;
        self.session.handle_timeout(now);
        self.link.handle_timeout(now);
        self.publish.handle_timeout(now, self.poll.registry());
        if self.publish.wants_accept(now) {
            self.accept_clients(now);
        }
        self.delivery.handle_timeout(now, self.poll.registry());
        if let Some(n) = self.refusals.flush(now) {
            log::warn!(
                "{n} more publish(es) refused in the last {} s ({} so far)",
                LOG_INTERVAL.as_secs(),
                self.refused_total
            );
        }
        self.process(now);
        if self.link.is_shutting_down() && self.session.is_settled() && self.delivery.is_idle() {
            self.link.handle_settled();
            self.process(now);
        }
    }

    /// Until quiet: the session's output to the transport, the session's
    /// events, the link's actions. Each can cause the others (a PUBACK frees
    /// a slot for the next publish; a lost connection closes the transport).
    fn process(&mut self, now: Instant) {
        loop {
            self.flush_broker(now);
            let mut busy = false;
            while let Some(event) = self.session.poll_event() {
                self.on_session_event(now, event);
                busy = true;
            }
            while let Some(action) = self.link.poll_action() {
                self.on_link_action(now, action);
                busy = true;
            }
            if !busy {
                return;
            }
        }
    }

    /// Queues one status line for stdout (see [`Daemon::flush_console`]).
    fn say(&mut self, line: &str) {
        self.console.extend_from_slice(line.as_bytes());
        self.console.push(b'\n');
    }

    /// Hands the queued status lines to the writer. Scripts and init logs
    /// read them live, so this runs once every loop turn.
    fn flush_console(&mut self) {
        if !self.console.is_empty() {
            self.stdout.send(&self.console);
            self.console.clear();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.session.poll_timeout(),
            self.link.poll_timeout(),
            self.publish.next_deadline(),
            self.delivery.next_deadline(),
            self.refusals.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- the link's actions -----

    fn on_link_action(&mut self, now: Instant, action: Action) {
        match action {
            Action::Resolve => self.start_resolve(),
            Action::Connect(addr) => self.connect(now, addr),
            Action::Disconnect => {
                self.broker_unread = false;
                if let Some(mut transport) = self.transport.take() {
                    // A DISCONNECT saying why, if the session left one.
                    if let Ok(n) = transport.write(self.session.pending_output()) {
                        self.session.advance_output(now, n);
                    }
                    transport.close(self.poll.registry());
                }
            }
            Action::StopAccepting => self.publish.stop_accepting(self.poll.registry()),
            Action::CloseSession => self.close_session(now),
            Action::Exit(result) => {
                if result.is_ok() {
                    self.say("Mqtt5 Client stopped.");
                }
                self.exit = Some(result);
            }
        }
    }

    /// Resolves the broker, or the proxy when there is one (the proxy
    /// resolves the broker's name itself).
    fn start_resolve(&mut self) {
        let (host, port) = match &self.config.proxy {
            Some((host, port)) => (host.as_str(), *port),
            None => (self.config.endpoint.as_str(), self.config.port),
        };
        self.lookup = Some(resolve::start(host, port, self.waker.clone()));
    }

    fn on_resolved(&mut self, now: Instant) {
        let Some(answer) = self.lookup.as_ref().and_then(Lookup::poll) else {
            return;
        };
        self.lookup = None;
        let answer = answer.map_err(|e| {
            let (name, flag) = match &self.config.proxy {
                Some((host, _)) => (host.as_str(), "--proxy_host"),
                None => (self.config.endpoint.as_str(), "--endpoint"),
            };
            format!("cannot resolve {name}: {e} (check {flag} and the network)")
        });
        self.link.handle_resolved(now, answer);
    }

    /// Starts a non-blocking TCP connect (and the TLS client over it).
    fn connect(&mut self, now: Instant, addr: std::net::SocketAddr) {
        let tls = match &self.config.tls {
            Some(t) => {
                let name = self.config.server_name.clone();
                match rustls::ClientConnection::new(t.client.clone(), name) {
                    Ok(conn) => Some(conn),
                    Err(e) => return self.link.handle_connect_failed(now, format!("TLS: {e}")),
                }
            }
            None => None,
        };
        let via_proxy = self
            .config
            .proxy
            .as_ref()
            .map(|_| (self.config.endpoint.as_str(), self.config.port));
        match Transport::connect(addr, via_proxy, tls, self.poll.registry(), BROKER) {
            Ok(transport) => {
                log::debug!("connecting to {addr}");
                self.transport = Some(transport);
            }
            Err(e) => self.link.handle_connect_failed(now, e.to_string()),
        }
    }

    // ----- the broker connection -----

    fn on_broker(&mut self, now: Instant, event: &MioEvent) {
        let Some(transport) = &mut self.transport else {
            return;
        };
        if !transport.is_established() {
            match transport.finish_connect() {
                Ok(true) => {
                    self.link.handle_tcp_up(now);
                    // CONNECT is queued now; TLS sends it after the handshake.
                    self.session.handle_connected(now);
                    self.read_broker(now);
                }
                Ok(false) => {}
                Err(failure) => self.link.handle_connect_failed(now, failure.to_string()),
            }
            return;
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read_broker(now);
        }
        // Writable: `process` flushes after every event.
    }

    /// Reads what the broker sent into the session, up to the budget, and
    /// not while the session's output is full (the broker must read first).
    fn read_broker(&mut self, now: Instant) {
        let Some(transport) = &mut self.transport else {
            return;
        };
        if !self.session.wants_input() {
            self.broker_unread = true;
            return;
        }
        self.broker_read_this_turn = true;
        let session = &mut self.session;
        let result = transport.read(&mut self.scratch, BROKER_READ_BUDGET, |bytes| {
            session.handle_input(now, bytes)
        });
        self.broker_unread = matches!(result, Ok(true));
        if let Err(failure) = result {
            // After the session ended the connection itself (a DISCONNECT,
            // say, followed by the close), its ConnectionLost is the news.
            if self.session.is_active() {
                self.transport_failed(now, failure);
            } else {
                log::debug!("after the session ended: {failure}");
            }
        }
    }

    /// Hands the session's output to the transport until one of them has
    /// nothing more or the socket would block. Taking output lets the
    /// session move more of its queue into it, so one write is not enough:
    /// without the loop, those bytes would wait for an unrelated event.
    fn flush_broker(&mut self, now: Instant) {
        let Some(transport) = &mut self.transport else {
            return;
        };
        // `write` flushes what the transport holds first (TLS handshake
        // records too), so it runs even when the session has nothing.
        let mut result = Ok(());
        loop {
            match transport.write(self.session.pending_output()) {
                Ok(0) => break,
                Ok(n) => {
                    self.session.advance_output(now, n);
                    if self.session.pending_output().is_empty() {
                        break;
                    }
                }
                Err(failure) => {
                    result = Err(failure);
                    break;
                }
            }
        }
        let result = result.and_then(|()| {
            transport
                .update_interest(self.poll.registry(), BROKER)
                .map_err(Failure::Io)
        });
        if let Err(failure) = result {
            self.transport_failed(now, failure);
        }
    }

    /// The transport broke (socket error, TLS error, EOF). A refused
    /// certificate goes to the link, which decides whether it is fatal; a
    /// clock error is not a refusal: NTP may set the clock after boot.
    fn transport_failed(&mut self, now: Instant, failure: Failure) {
        let wall_clock = SystemTime::now();
        let files = self.config.tls.as_ref().map(|t| &t.files);
        let endpoint = &self.config.endpoint;
        let (reason, refused) = match &failure {
            Failure::Tls(e) => (
                tls::explain(e, endpoint, files, wall_clock),
                tls::is_certificate_error(e) && !tls::is_clock_error(e, wall_clock),
            ),
            Failure::Closed if !self.session.is_connected() => (
                "the broker closed the connection before CONNACK (on AWS IoT: the certificate may be inactive, or its policy may not allow iot:Connect for this client id)".into(),
                false,
            ),
            other => (other.to_string(), false),
        };
        if refused {
            self.link.handle_refused(now, reason.clone());
        }
        self.session.handle_transport_lost(reason);
    }

    // ----- the session's events -----

    fn on_session_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Connected { client_id, .. } => self.say(&format!(
                "Mqtt5 Client connection succeed, clientid: {client_id}."
            )),
            Event::Subscribed => {
                self.link.handle_subscribed();
                self.say("Subscription Success.");
            }
            Event::ConnectRefused { reason } => {
                let hint = if reason.starts_with("not authorized") {
                    " (on AWS IoT: the certificate must be active and its policy must allow iot:Connect for this client id)"
                } else {
                    ""
                };
                self.link.handle_refused(
                    now,
                    format!("the broker refused the connection: {reason}{hint}"),
                );
            }
            Event::SubscribeRefused { filter, reason } => self.link.handle_subscribe_refused(
                format!("the broker refused the subscription to {filter}: {reason}"),
            ),
            Event::Published(id) => {
                self.publish
                    .reply(ClientId::from_u64(id), Status::Ok, self.poll.registry());
                self.say("Publish Succeed.");
                self.link.handle_published(now);
            }
            Event::PublishFailed(id, reason) => {
                log::warn!("publish failed: {reason}");
                self.publish.reply(
                    ClientId::from_u64(id),
                    Status::Err(&reason),
                    self.poll.registry(),
                );
            }
            Event::Unconfirmed(id) => {
                self.publish
                    .reply(ClientId::from_u64(id), Status::Queued, self.poll.registry());
            }
            Event::Message { topic, payload } => {
                self.say(&format!(
                    "Publish received on topic {}:{}",
                    String::from_utf8_lossy(&topic),
                    String::from_utf8_lossy(&payload)
                ));
                self.delivery
                    .push(now, &topic, payload, self.poll.registry());
            }
            Event::ConnectionLost {
                reason,
                taken_over,
                was_connected,
            } => {
                if was_connected {
                    self.say(&format!(
                        "Mqtt5 Client disconnection with reason: {reason}."
                    ));
                }
                self.link.handle_lost(now, &reason, taken_over);
            }
        }
    }

    // ----- publish socket clients -----

    fn accept_clients(&mut self, now: Instant) {
        let mut done = std::mem::take(&mut self.submissions);
        let max = self.session.max_payload();
        self.publish
            .accept(now, self.poll.registry(), max, &mut self.scratch, &mut done);
        for sub in done.drain(..) {
            self.submit(now, sub);
        }
        self.submissions = done;
    }

    fn on_client(&mut self, now: Instant, token: Token) {
        let max = self.session.max_payload();
        let registry = self.poll.registry();
        if let Some(sub) = self
            .publish
            .on_readable(now, token, max, &mut self.scratch, registry)
        {
            self.submit(now, sub);
        }
    }

    /// Hands a complete message to the session; a refusal is answered now.
    fn submit(&mut self, now: Instant, sub: Submission) {
        let id = sub.id.as_u64();
        if let Err(rejected) = self.session.publish(now, id, sub.topic, sub.payload) {
            self.refused_total += 1;
            if self.refusals.note(now).is_some() {
                log::warn!(
                    "publish refused: {rejected} ({} refused so far)",
                    self.refused_total
                );
            }
            self.publish.reply(
                sub.id,
                Status::Err(&rejected.to_string()),
                self.poll.registry(),
            );
        }
    }

    // ----- signals and shutdown -----

    fn on_signals(&mut self, now: Instant) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for signal in pending {
            if signal == SIGHUP {
                self.reload_tls();
                self.link.handle_reload(now);
            } else {
                self.link.handle_terminate(now);
            }
        }
    }

    /// SIGHUP: certificate rotation. The next connection uses the new files;
    /// if they are broken, the old configuration stays.
    fn reload_tls(&mut self) {
        let Some(tls) = &mut self.config.tls else {
            return;
        };
        match tls.files.load() {
            Ok(client) => {
                tls.client = client;
                log::info!(
                    "SIGHUP: reloaded certificate, key and CA; the next connection uses them"
                );
            }
            Err(e) => log::error!("SIGHUP: reload failed, keeping the current files: {e}"),
        }
    }

    /// Ends the session for good: stops accepting, sends DISCONNECT if
    /// connected, and gives every client still waiting its answer: `ERR`
    /// for what was never sent, `QUEUED` for what the broker may have.
    /// Says how many messages were left, and that they are gone.
    fn close_session(&mut self, now: Instant) {
        self.publish.stop_accepting(self.poll.registry());
        self.session.close();
        let (mut unsent, mut unconfirmed) = (0u64, 0u64);
        while let Some(event) = self.session.poll_event() {
            let (id, status) = match &event {
                Event::PublishFailed(id, reason) => {
                    unsent += 1;
                    (*id, Status::Err(reason))
                }
                Event::Unconfirmed(id) => {
                    unconfirmed += 1;
                    (*id, Status::Queued)
                }
                _ => continue,
            };
            self.publish
                .reply(ClientId::from_u64(id), status, self.poll.registry());
        }
        if unsent > 0 {
            log::warn!(
                "stopping with {unsent} message(s) never sent to the broker: they are dropped (their senders got ERR)"
            );
        }
        if unconfirmed > 0 {
            log::warn!(
                "stopping with {unconfirmed} message(s) sent but not confirmed by the broker: it may or may not have them (their senders got QUEUED)"
            );
        }
        let undelivered = self.delivery.queued();
        if undelivered > 0 {
            log::warn!(
                "stopping with {undelivered} received message(s) not delivered to {}: they are dropped",
                self.config.sub_socket.display()
            );
        }
        self.flush_broker(now);
    }
}
