//! The one `mio::Poll` of the daemon: the only place that waits and the only
//! place that reads the clock.
//!
//! Each turn: wait until an event or the earliest deadline (the session's,
//! the reconnect timer, a client's read deadline, a delivery retry, the
//! shutdown limit), read the clock once, handle the events, run the expired
//! timers, act on the session's events, then hand the session's output to
//! the transport. While idle and connected the only deadline is the
//! keep-alive ping.

use super::Config;
use super::backoff::{self, Backoff};
use super::broker::resolve::{self, Lookup};
use super::broker::session::{Event, Session};
use super::broker::tls;
use super::broker::transport::{Failure, Transport};
use super::device::delivery::Delivery;
use super::device::publish_socket::{PublishSocket, Status, Submission};
use crate::error::{Error, runtime, usage};
use crate::output::Sink;
use mio::event::Event as MioEvent;
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::client::ClientConfig;
use rustls::pki_types::ServerName;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const PUBLISH_LISTENER: Token = Token(0);
const BROKER: Token = Token(1);
const SIGNALS: Token = Token(2);
const WAKER: Token = Token(3);
const DELIVERY: Token = Token(4);

/// A TCP connect that has not completed by then is given up.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// SIGTERM/SIGINT: in-flight publishes and deliveries get this long.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Plaintext read at a time from the broker or a client.
const SCRATCH: usize = 16 * 1024;

/// The broker connection's life cycle.
enum Link {
    /// Waiting to reconnect.
    Down { retry_at: Instant },
    /// Resolving the endpoint on a helper thread.
    Resolving(Lookup),
    /// TCP connect in progress; `rest` are the addresses left to try.
    Connecting {
        transport: Transport,
        rest: Vec<SocketAddr>,
        deadline: Instant,
    },
    /// TCP is up; TLS and MQTT run over it (the session knows how far).
    Up {
        transport: Transport,
        since: Instant,
    },
    /// Stopped for good.
    Closed,
}

struct Daemon {
    poll: Poll,
    config: Config,
    tls_config: Option<Arc<ClientConfig>>,
    server_name: ServerName<'static>,
    session: Session,
    link: Link,
    backoff: Backoff,
    publish: PublishSocket,
    delivery: Delivery,
    signals: Signals,
    waker: Arc<Waker>,
    /// MQTT is connected (CONNACK accepted) on the current link.
    mqtt_connected: bool,
    /// Subscribed at least once: from then on, refusals are not fatal.
    subscribed_once: bool,
    /// Publishes confirmed, for `--count`.
    published: u64,
    shutdown_deadline: Option<Instant>,
    exit: Option<Result<(), Error>>,
    scratch: Vec<u8>,
    /// Messages read by the last accept, reused between calls.
    submissions: Vec<Submission>,
    /// Status lines for stdout, written once per loop turn: a burst of
    /// publishes costs one write(2), not one per `Publish Succeed.`.
    console: Vec<u8>,
    /// Where status lines go; never blocks.
    stdout: Sink,
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
        let server_name = ServerName::try_from(config.endpoint.clone())
            .map_err(|_| usage!("--endpoint {:?} is not a valid host name", config.endpoint))?;
        let tls_config = match &config.tls {
            Some(files) => Some(files.load().map_err(|e| runtime!("{e}"))?),
            None => None,
        };
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
            poll.registry(),
            PUBLISH_LISTENER,
        )
        .map_err(|e| runtime!("{e}"))?;
        let delivery = Delivery::new(config.sub_socket.clone(), config.deliver_topic, DELIVERY);
        let session = Session::new(config.session.clone());
        let backoff = Backoff::new(config.seed);
        Ok(Daemon {
            poll,
            tls_config,
            server_name,
            session,
            link: Link::Closed,
            backoff,
            publish,
            delivery,
            signals,
            waker,
            mqtt_connected: false,
            subscribed_once: false,
            published: 0,
            shutdown_deadline: None,
            exit: None,
            scratch: vec![0; SCRATCH],
            submissions: Vec::new(),
            console: Vec::new(),
            stdout,
            config,
        })
    }

    fn run(&mut self) -> Result<(), Error> {
        self.say("Mqtt5 Client attempting connection...");
        self.flush_console();
        self.start_resolve();
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self
                .next_deadline()
                .map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(runtime!("event loop failed: {e}"));
            }
            let now = Instant::now();
            for event in events.iter() {
                self.dispatch(now, event);
            }
            self.tick(now);
            if let Some(result) = self.exit.take() {
                if result.is_err() {
                    // A fatal error: no client may take the closing socket
                    // for a success (EOF without status means OK to send).
                    self.close_session(now);
                }
                self.drop_link(now);
                self.flush_console();
                return result;
            }
        }
    }

    fn dispatch(&mut self, now: Instant, event: &MioEvent) {
        match event.token() {
            PUBLISH_LISTENER => self.accept_clients(now),
            BROKER => self.on_broker(now, event),
            SIGNALS => self.on_signals(now),
            WAKER => self.on_resolved(now),
            DELIVERY => self.delivery.on_writable(now, self.poll.registry()),
            token if PublishSocket::is_client(token) => self.on_client(now, token),
            _ => {} // sporadic events happen
        }
    }

    /// Timers, then the session's events, then output to the broker.
    fn tick(&mut self, now: Instant) {
        self.session.handle_timeout(now);
        self.publish.handle_timeout(now, self.poll.registry());
        if self.publish.wants_accept(now) {
            self.accept_clients(now);
        }
        self.delivery.handle_timeout(now, self.poll.registry());
        self.link_timeouts(now);
        self.drain_session(now);
        self.flush_broker(now);
        self.drain_session(now);
        if let Some(deadline) = self.shutdown_deadline {
            let done = self.session.is_settled() && self.delivery.is_idle();
            if done || now >= deadline {
                self.finish_shutdown(now);
            }
        }
        self.flush_console();
    }

    /// Queues one status line for stdout (see [`Daemon::flush_console`]).
    fn say(&mut self, line: &str) {
        self.console.extend_from_slice(line.as_bytes());
        self.console.push(b'\n');
    }

    /// Writes the queued status lines. Scripts and init logs read them live,
    /// so this runs at the end of every loop turn. A closed stdout is not a
    /// reason to stop bridging messages.
    fn flush_console(&mut self) {
        if self.console.is_empty() {
            return;
        }
        self.stdout.send(&self.console);
        self.console.clear();
    }

    fn next_deadline(&self) -> Option<Instant> {
        let link = match &self.link {
            Link::Down { retry_at } => Some(*retry_at),
            Link::Connecting { deadline, .. } => Some(*deadline),
            _ => None,
        };
        [
            self.session.poll_timeout(),
            self.publish.next_deadline(),
            self.delivery.next_deadline(),
            link,
            self.shutdown_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- the broker link -----

    /// Resolves the broker, or the proxy when there is one (the proxy
    /// resolves the broker's name itself).
    fn start_resolve(&mut self) {
        let (host, port) = match &self.config.proxy {
            Some((host, port)) => (host.as_str(), *port),
            None => (self.config.endpoint.as_str(), self.config.port),
        };
        let lookup = resolve::start(host, port, self.waker.clone());
        self.link = Link::Resolving(lookup);
    }

    fn on_resolved(&mut self, now: Instant) {
        let Link::Resolving(lookup) = &self.link else {
            return;
        };
        match lookup.poll() {
            None => {}
            Some(Ok(addrs)) if !addrs.is_empty() => self.connect_next(now, addrs, None),
            Some(Ok(_)) => self.link_failed(now, "the name resolved to no address".into()),
            Some(Err(e)) => {
                let (name, flag) = match &self.config.proxy {
                    Some((host, _)) => (host.clone(), "--proxy_host"),
                    None => (self.config.endpoint.clone(), "--endpoint"),
                };
                let why = format!("cannot resolve {name}: {e} (check {flag} and the network)");
                self.link_failed(now, why);
            }
        }
    }

    /// Starts a TCP connect to the first address of `addrs` that accepts one;
    /// when none is left, the connection failed with `last_error`.
    fn connect_next(
        &mut self,
        now: Instant,
        mut addrs: Vec<SocketAddr>,
        mut last_error: Option<String>,
    ) {
        while !addrs.is_empty() {
            let addr = addrs.remove(0);
            let tls = match &self.tls_config {
                Some(config) => {
                    match rustls::ClientConnection::new(config.clone(), self.server_name.clone()) {
                        Ok(conn) => Some(conn),
                        Err(e) => {
                            last_error = Some(format!("TLS: {e}"));
                            break;
                        }
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
                    self.link = Link::Connecting {
                        transport,
                        rest: addrs,
                        deadline: now + TCP_CONNECT_TIMEOUT,
                    };
                    return;
                }
                Err(e) => last_error = Some(format!("{addr}: {e}")),
            }
        }
        let reason = last_error.unwrap_or_else(|| "no address to connect to".into());
        self.link_failed(now, reason);
    }

    fn on_broker(&mut self, now: Instant, event: &MioEvent) {
        match std::mem::replace(&mut self.link, Link::Closed) {
            Link::Connecting {
                mut transport,
                rest,
                deadline,
            } => match transport.finish_connect() {
                Ok(true) => {
                    log::debug!("TCP connected to {}", transport.addr);
                    self.link = Link::Up {
                        transport,
                        since: now,
                    };
                    // CONNECT is queued now; TLS sends it after the handshake.
                    self.session.handle_connected(now);
                    self.read_broker(now);
                }
                Ok(false) => {
                    self.link = Link::Connecting {
                        transport,
                        rest,
                        deadline,
                    }
                }
                Err(failure) => {
                    let why = format!("{}: {failure}", transport.addr);
                    log::debug!("{why}");
                    transport.close(self.poll.registry());
                    self.connect_next(now, rest, Some(why));
                }
            },
            link @ Link::Up { .. } => {
                self.link = link;
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.read_broker(now);
                }
            }
            other => self.link = other,
        }
    }

    /// Reads what the broker sent into the session.
    fn read_broker(&mut self, now: Instant) {
        let Link::Up { transport, .. } = &mut self.link else {
            return;
        };
        let session = &mut self.session;
        let result = transport.read(&mut self.scratch, |bytes| session.handle_input(now, bytes));
        match result {
            Ok(()) => {}
            // The session ended the connection itself (a DISCONNECT, say,
            // followed by the close): its ConnectionLost is handled once.
            Err(failure) if !self.session.is_active() => {
                log::debug!("after the session ended: {failure}");
            }
            Err(failure) => self.transport_failed(now, failure),
        }
    }

    /// Hands the session's output to the transport.
    fn flush_broker(&mut self, now: Instant) {
        let Link::Up { transport, .. } = &mut self.link else {
            return;
        };
        let result = transport
            .write(self.session.pending_output())
            .and_then(|n| {
                self.session.advance_output(now, n);
                transport
                    .update_interest(self.poll.registry(), BROKER)
                    .map_err(Failure::Io)
            });
        if let Err(failure) = result {
            self.transport_failed(now, failure);
        }
    }

    /// The transport broke (socket error, TLS error, EOF).
    fn transport_failed(&mut self, now: Instant, failure: Failure) {
        let wall_clock = SystemTime::now();
        let (reason, certificate) = match &failure {
            // A clock error is retried: NTP may set the clock after boot.
            Failure::Tls(e) => (
                tls::explain(e, &self.config.endpoint, self.config.tls.as_ref(), wall_clock),
                tls::is_certificate_error(e) && !tls::is_clock_error(e, wall_clock),
            ),
            Failure::Closed if !self.mqtt_connected => (
                "the broker closed the connection before CONNACK (on AWS IoT: the certificate may be inactive, or its policy may not allow iot:Connect for this client id)".into(),
                false,
            ),
            other => (other.to_string(), false),
        };
        if certificate && !self.subscribed_once {
            // Retrying cannot help: the files or the broker must change.
            self.drop_link(now);
            self.exit = Some(Err(runtime!("{reason}")));
            return;
        }
        if self.session.is_active() {
            // The session reports ConnectionLost; its handler reconnects.
            self.session.handle_transport_lost(reason);
        } else {
            self.link_failed(now, reason);
        }
    }

    /// A connection attempt failed before MQTT started: try again later.
    fn link_failed(&mut self, now: Instant, reason: String) {
        log::warn!(
            "cannot connect to {}:{}: {reason}",
            self.config.endpoint,
            self.config.port
        );
        self.drop_link(now);
        self.schedule_reconnect(now);
    }

    fn link_timeouts(&mut self, now: Instant) {
        match &self.link {
            Link::Down { retry_at } if *retry_at <= now => {
                log::info!(
                    "reconnecting to {}:{}",
                    self.config.endpoint,
                    self.config.port
                );
                self.start_resolve();
            }
            Link::Connecting { deadline, .. } if *deadline <= now => {
                if let Link::Connecting {
                    transport, rest, ..
                } = std::mem::replace(&mut self.link, Link::Closed)
                {
                    let why = format!(
                        "{}: no answer within {} s",
                        transport.addr,
                        TCP_CONNECT_TIMEOUT.as_secs()
                    );
                    log::debug!("{why}");
                    transport.close(self.poll.registry());
                    self.connect_next(now, rest, Some(why));
                }
            }
            _ => {}
        }
    }

    /// Closes the transport, if any. A connection that lasted resets the
    /// backoff.
    fn drop_link(&mut self, now: Instant) {
        match std::mem::replace(&mut self.link, Link::Closed) {
            Link::Up { transport, since } => {
                if now.duration_since(since) >= backoff::STABLE_AFTER {
                    self.backoff.reset();
                }
                transport.close(self.poll.registry());
            }
            Link::Connecting { transport, .. } => transport.close(self.poll.registry()),
            _ => {}
        }
        self.mqtt_connected = false;
    }

    fn schedule_reconnect(&mut self, now: Instant) {
        if self.shutdown_deadline.is_some() {
            self.link = Link::Closed;
            return;
        }
        let delay = self.backoff.next_delay();
        // Integer formatting: float formatting alone costs ~20 KB of binary.
        log::info!(
            "next connection attempt in {}.{} s",
            delay.as_secs(),
            delay.subsec_millis() / 100
        );
        self.link = Link::Down {
            retry_at: now + delay,
        };
    }

    // ----- the session's events -----

    fn drain_session(&mut self, now: Instant) {
        while let Some(event) = self.session.poll_event() {
            self.on_session_event(now, event);
        }
    }

    fn on_session_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Connected { client_id, .. } => {
                self.mqtt_connected = true;
                self.say(&format!(
                    "Mqtt5 Client connection succeed, clientid: {client_id}."
                ));
            }
            Event::Subscribed => {
                self.subscribed_once = true;
                self.say("Subscription Success.");
            }
            Event::ConnectRefused { reason } => {
                let text = format!(
                    "the broker refused the connection: {reason}{}",
                    if reason.starts_with("not authorized") {
                        " (on AWS IoT: the certificate must be active and its policy must allow iot:Connect for this client id)"
                    } else {
                        ""
                    }
                );
                self.drop_link(now);
                if self.subscribed_once {
                    log::error!("{text}");
                    self.schedule_reconnect(now);
                } else {
                    self.exit = Some(Err(Error::Runtime(text)));
                }
            }
            Event::SubscribeRefused { filter, reason } => {
                let text = format!("the broker refused the subscription to {filter}: {reason}");
                if self.subscribed_once {
                    log::error!("{text}");
                } else {
                    self.exit = Some(Err(Error::Runtime(text)));
                }
            }
            Event::Published(id) => {
                self.publish
                    .reply(Token(id as usize), Status::Ok, self.poll.registry());
                self.say("Publish Succeed.");
                self.published += 1;
                if self.config.count > 0 && self.published >= self.config.count {
                    log::info!("{} publishes done (--count): stopping", self.published);
                    self.begin_shutdown(now);
                }
            }
            Event::PublishFailed(id, reason) => {
                log::warn!("publish failed: {reason}");
                self.publish.reply(
                    Token(id as usize),
                    Status::Err(&reason),
                    self.poll.registry(),
                );
            }
            Event::Unconfirmed(id) => {
                self.publish
                    .reply(Token(id as usize), Status::Queued, self.poll.registry());
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
            Event::ConnectionLost { reason, taken_over } => {
                if self.mqtt_connected {
                    self.say(&format!(
                        "Mqtt5 Client disconnection with reason: {reason}."
                    ));
                }
                log::warn!("connection lost: {reason}");
                if taken_over {
                    log::warn!(
                        "another client uses client id {:?}: waiting the backoff before reconnecting, so the two do not take turns in a tight loop",
                        self.config.session.client_id
                    );
                }
                self.drop_link(now);
                self.schedule_reconnect(now);
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
        let id = sub.token.0 as u64;
        if let Err(rejected) = self.session.publish(now, id, sub.topic, sub.payload) {
            log::warn!("publish refused: {rejected}");
            self.publish.reply(
                sub.token,
                Status::Err(&rejected.to_string()),
                self.poll.registry(),
            );
        }
    }

    // ----- signals and shutdown -----

    fn on_signals(&mut self, now: Instant) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for signal in pending {
            match signal {
                SIGHUP => self.reload_tls(),
                _ if self.shutdown_deadline.is_some() => {
                    log::info!("second signal: stopping now");
                    self.finish_shutdown(now);
                }
                _ => self.begin_shutdown(now),
            }
        }
    }

    /// SIGHUP: certificate rotation. The next connection uses the new files;
    /// if they are broken, the old configuration stays.
    fn reload_tls(&mut self) {
        let Some(files) = &self.config.tls else {
            return;
        };
        match files.load() {
            Ok(config) => {
                self.tls_config = Some(config);
                log::info!(
                    "SIGHUP: reloaded certificate, key and CA; the next connection uses them"
                );
            }
            Err(e) => log::error!("SIGHUP: reload failed, keeping the current files: {e}"),
        }
    }

    /// Stops taking messages; in-flight ones get [`SHUTDOWN_GRACE`].
    fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.publish.stop_accepting(self.poll.registry());
        self.shutdown_deadline = Some(now + SHUTDOWN_GRACE);
        // No new connection attempts; one under way may still finish.
        if let Link::Down { .. } = self.link {
            self.link = Link::Closed;
        }
    }

    /// DISCONNECT, answer what is left, close, done.
    fn finish_shutdown(&mut self, now: Instant) {
        if self.exit.is_some() {
            return;
        }
        self.close_session(now);
        self.drop_link(now);
        self.say("Mqtt5 Client stopped.");
        self.exit = Some(Ok(()));
    }

    /// Ends the session for good: stops accepting, sends DISCONNECT if
    /// connected, and gives every client still waiting its answer: `ERR`
    /// for what was never sent, `QUEUED` for what the broker may have.
    fn close_session(&mut self, now: Instant) {
        self.publish.stop_accepting(self.poll.registry());
        self.session.close();
        while let Some(event) = self.session.poll_event() {
            let (id, status) = match &event {
                Event::PublishFailed(id, reason) => (*id, Status::Err(reason)),
                Event::Unconfirmed(id) => (*id, Status::Queued),
                _ => continue,
            };
            self.publish
                .reply(Token(id as usize), status, self.poll.registry());
        }
        self.flush_broker(now);
    }
}
