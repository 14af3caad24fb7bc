//! The one `mio::Poll` of the daemon: the only place that waits and the only
//! place that reads the monotonic clock (the spool reads the wall clock for
//! its time stamps).
//!
//! The shape of mio's `tcp_server` and quinn's driver: fixed tokens for the
//! listener, the broker, the signals, the waker and the delivery connection,
//! one range of tokens for publish socket clients. Each turn: wait until an
//! event or the earliest deadline of the state machines, read the clock
//! once, dispatch the events by token, run the expired timers, then
//! `Daemon::process` until quiet: hand the session's output to the
//! transport, act on the session's events and the link's actions, move
//! durable messages from the spool to the session and the delivery. Last,
//! `Daemon::commit`: one write for everything the turn appended to the
//! spool, its sync on the spool's thread while the loop goes on, and once
//! that is done (the waker; `Daemon::on_synced`) the status lines and
//! PUBACKs that waited for it.
//! While idle and connected the only deadline is the keep-alive ping.
//!
//! The decisions are the state machines': [`Session`] (MQTT), [`Link`]
//! (when to connect, retry, give up, stop), the publish socket's and the
//! delivery's client tables, the [`Spool`]. This file only moves bytes,
//! messages and events between them and the sockets.

mod local;
mod status;

use super::Config;
use super::broker::link::{Action, Link};
use super::broker::resolve::{self, Lookup};
use super::broker::session::{
    Event, FLOOD_THRESHOLD, InboundAck, RECEIVE_MAXIMUM, Rejected, Session,
};
use super::broker::tls;
use super::broker::transport::{Failure, Transport};
use super::device::delivery::Delivery;
use super::device::local::LocalServer;
use super::device::local::routes::{Route, Routes};
use super::device::publish_socket::{ClientId, PublishSocket, Status, Submission};
use super::notify::Notifier;
use super::store::{Commit, Direction, Message, Spool};
use crate::error::{Error, runtime};
use crate::output::{LOG_INTERVAL, Sink, Throttle};
use bytes::Bytes;
use mio::event::Event as MioEvent;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const PUBLISH_LISTENER: Token = Token(0);
const BROKER: Token = Token(1);
const SIGNALS: Token = Token(2);
const WAKER: Token = Token(3);
const DELIVERY: Token = Token(4);
const LOCAL_UNIX: Token = Token(5);
const LOCAL_TCP: Token = Token(6);

/// AWS IoT Core's limit on subscriptions per connection: the `--topic`
/// filters and those of local clients together.
const UPSTREAM_FILTERS: usize = 50;

/// Room for MQTT headers and properties in a local client's packet
/// beside the largest payload.
const LOCAL_PACKET_HEADROOM: usize = 16 * 1024;

/// Plaintext read at a time from the broker or a client.
const SCRATCH: usize = 16 * 1024;

/// Bytes read from the broker before the loop acts on what they brought: a
/// broker that floods cannot keep the loop reading (and queueing events)
/// forever; the rest is read on the next turn.
const BROKER_READ_BUDGET: usize = 256 * 1024;

/// How often the certificate's expiry is looked at (a warning from 30 days
/// before; a daemon runs for months).
const CERT_CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Bytes of held messages from the broker that go into the spool per turn.
const HELD_PER_TURN: usize = 64 * 1024;

/// How long a publish socket client whose message is durable waits for the
/// broker's PUBACK before it is answered `QUEUED` (kept, will be sent):
/// well within `send`'s default `--timeout` of 10 s.
const CONFIRM_WAIT: Duration = Duration::from_secs(5);

/// What waits for one commit to be durable.
#[derive(Default)]
struct Batch {
    /// Publish socket clients: (seq, client).
    accepted: Vec<(u64, ClientId)>,
    /// The broker's QoS 1 messages.
    owed_acks: Vec<InboundAck>,
    /// Local MQTT clients' QoS 1 publishes: (seq, client, packet id).
    local: Vec<(u64, u64, u16)>,
}

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
    /// Both directions' messages until they are done.
    spool: Spool,
    /// Clients of messages appended this turn, durable at its end.
    accepted: Vec<(u64, ClientId)>,
    /// Clients of durable messages waiting for the broker's PUBACK, by
    /// sequence number (so oldest first), and when they get `QUEUED`.
    awaiting: BTreeMap<u64, (ClientId, Instant)>,
    /// The next message for the broker, read from the spool, waiting for
    /// room in the session's queue.
    next_out: Option<Message>,
    /// PUBACKs owed for messages from the broker appended this turn.
    owed_acks: Vec<InboundAck>,
    /// The batch whose sync runs on the spool's thread.
    syncing: Option<Batch>,
    /// A sync just finished and its clients were answered: the next commit
    /// waits one more turn, so that those who write again at once (a
    /// closed loop of clients) join it rather than the one after.
    linger: bool,
    /// Messages from the broker that found the spool full or failing:
    /// held, unacknowledged (so the broker's receive maximum bounds them),
    /// until there is room.
    held: VecDeque<(Bytes, Bytes, Option<InboundAck>)>,
    /// New publish socket clients wait in the listen backlog: the spool is
    /// full (`--when_full block`) or cannot write.
    accept_blocked: bool,
    blocked_notes: Throttle,
    /// Messages from the broker held or dropped: logged at most once a
    /// minute.
    inbound_notes: Throttle,
    /// QoS 0 messages from the broker dropped while the spool was full.
    dropped_qos0: u64,
    /// The local MQTT endpoint.
    local: LocalServer,
    routes: Routes,
    route_scratch: Vec<Route>,
    /// Local QoS 1 publishes appended this turn: (seq, client, packet id),
    /// acknowledged once durable.
    local_accepted: Vec<(u64, u64, u16)>,
    pending_subacks: Vec<local::PendingSubAck>,
    /// Local refusals and drops: logged at most once a minute.
    local_notes: Throttle,
    local_dropped: u64,
    /// systemd's notification socket, under `Type=notify`.
    notify: Option<Notifier>,
    /// For the status: when the link last came up or went down (Unix
    /// seconds), connections after the first, the last confirmed publish.
    state_since: u64,
    /// When to look at the certificate's expiry again (daily).
    cert_check_at: Instant,
    ever_connected: bool,
    reconnects: u64,
    last_confirmed: Option<Instant>,
}

/// Runs the daemon until SIGTERM/SIGINT (`Ok`) or a fatal error.
pub fn run(config: Config, stdout: Sink) -> Result<(), Error> {
    let mut daemon = Daemon::new(config, stdout)?;
    daemon.run()
}

/// Descriptors publish socket clients may not take: the spool's files and
/// directory, the broker, the delivery, the signal pipe, the log.
const RESERVED_FDS: u64 = 64;

/// Publish socket clients at once: the open file limit less the reserve
/// and the local MQTT endpoint's clients (`local`).
fn max_clients(local: usize) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::from(u32::MAX));
    let reserved = RESERVED_FDS.saturating_add(local as u64);
    usize::try_from(limit.saturating_sub(reserved).max(16)).unwrap_or(usize::MAX)
}

fn io_error(what: &str) -> impl Fn(io::Error) -> Error + '_ {
    move |e| runtime!("{what}: {e}")
}

impl Daemon {
    fn new(config: Config, stdout: Sink) -> Result<Daemon, Error> {
        // First: a second daemon on the same spool stops here, before it
        // touches the sockets.
        let mut spool = Spool::open(&config.spool).map_err(|locked| {
            let holder = locked
                .pid
                .map_or_else(|| "another process".to_owned(), |pid| format!("pid {pid}"));
            runtime!(
                "spool directory {} is in use by another iotbox ({holder}); give each daemon its own --spool_dir",
                locked.dir.display()
            )
        })?;
        let poll = Poll::new().map_err(io_error("cannot create the event loop"))?;
        let mut signals =
            Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(io_error("cannot watch signals"))?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(io_error("cannot watch signals"))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER).map_err(io_error("cannot create the waker"))?,
        );
        // The spool's syncs leave the loop: it wakes us when one is done.
        spool.start_sync_thread(waker.clone());
        let publish = PublishSocket::bind(
            &config.pub_socket,
            config.socket_mode,
            config.session.max_payload,
            max_clients(config.local.max_clients),
            poll.registry(),
            PUBLISH_LISTENER,
        )
        .map_err(|e| runtime!("{e}"))?;
        let local = LocalServer::bind(
            &config.local,
            config.socket_mode,
            config.session.max_payload + LOCAL_PACKET_HEADROOM,
            poll.registry(),
            (LOCAL_UNIX, LOCAL_TCP),
        )
        .map_err(|e| runtime!("{e}"))?;
        let routes = Routes::new(config.session.filters.clone(), UPSTREAM_FILTERS);
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
            spool,
            accepted: Vec::new(),
            awaiting: BTreeMap::new(),
            next_out: None,
            owed_acks: Vec::new(),
            syncing: None,
            linger: false,
            held: VecDeque::new(),
            accept_blocked: false,
            blocked_notes: Throttle::new(LOG_INTERVAL),
            inbound_notes: Throttle::new(LOG_INTERVAL),
            dropped_qos0: 0,
            local,
            routes,
            route_scratch: Vec::new(),
            local_accepted: Vec::new(),
            pending_subacks: Vec::new(),
            local_notes: Throttle::new(LOG_INTERVAL),
            local_dropped: 0,
            notify: Notifier::from_env(Instant::now()),
            state_since: super::store::wall_clock(),
            cert_check_at: Instant::now(),
            ever_connected: false,
            reconnects: 0,
            last_confirmed: None,
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
            // What this turn appended is made durable at the end of the
            // next one, and accepting may resume: it must come at once.
            let now = Instant::now();
            let commit_due = ((!self.accepted.is_empty()
                || !self.owed_acks.is_empty()
                || !self.local_accepted.is_empty())
                && self.spool.may_commit(now)
                && !self.spool.is_syncing())
                || self.publish.wants_accept(now)
                || self.local.wants_accept(now)
                || (self.local.has_unread() && self.may_read_local())
                || (self.accept_blocked && self.spool.has_room(Direction::Out));
            let timeout = if commit_due || (self.broker_unread && self.may_read_broker()) {
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
            WAKER => {
                self.on_resolved(now);
                self.on_synced(now);
            }
            DELIVERY => self.delivery.on_writable(now, self.poll.registry()),
            LOCAL_UNIX | LOCAL_TCP => self.accept_local(now),
            token if self.local.number_of(token).is_some() => {
                if let Some(number) = self.local.number_of(token) {
                    let may_read = self.may_read_local();
                    self.local
                        .on_ready(now, number, &mut self.scratch, may_read);
                }
            }
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
        if self.publish.wants_accept(now)
            || (self.accept_blocked && self.spool.has_room(Direction::Out))
        {
            self.accept_clients(now);
        }
        self.spool.handle_timeout(now);
        self.local.handle_timeout(now);
        if self.local.wants_accept(now) {
            self.accept_local(now);
        }
        if self.may_read_local() {
            self.local.read_unread(now, &mut self.scratch);
        }
        self.expire_subacks(now, false);
        if self.cert_check_at <= now {
            self.check_certificate();
            self.cert_check_at = now + CERT_CHECK_EVERY;
        }
        // The loop turned: systemd's watchdog hears it is alive.
        if let Some(n) = &mut self.notify {
            n.handle_timeout(now);
        }
        self.answer_unconfirmed(now);
        self.delivery.handle_timeout(now, self.poll.registry());
        if let Some(n) = self.refusals.flush(now) {
            log::warn!(
                "{n} more publish(es) refused in the last {} s ({} so far)",
                LOG_INTERVAL.as_secs(),
                self.refused_total
            );
        }
        self.process(now);
        self.on_synced(now);
        self.commit(now);
        if self.link.is_shutting_down() && self.is_settled() {
            self.link.handle_settled();
            self.process(now);
        }
    }

    /// Ready to stop: nothing on its way to the broker or to a reader.
    /// With a spool on disk, what was not sent yet waits there for the next
    /// start, and so does what was sent unconfirmed once the link is down
    /// (no PUBACK can come); in memory, it is sent first (within the link's
    /// grace).
    fn is_settled(&self) -> bool {
        if self.spool.is_durable() {
            (self.session.on_the_way_settled() || !self.session.is_connected())
                && self.delivery.is_between_messages()
        } else {
            self.session.is_settled()
                && self.delivery.is_idle()
                && self.spool.unread(Direction::Out) == 0
        }
    }

    /// The end of a turn: one commit for everything appended in it (group
    /// commit), and the answers and acknowledgements that wait for it once
    /// it is durable. On a directory the sync runs on the spool's thread
    /// while the loop goes on ([`Daemon::on_synced`] takes it from there);
    /// one at a time, so what comes meanwhile makes the next group.
    /// After a failed sync nothing is answered: the clients keep waiting,
    /// the broker's messages stay unacknowledged, and the spool tries again.
    fn commit(&mut self, now: Instant) {
        self.take_held();
        if self.spool.is_syncing() || std::mem::take(&mut self.linger) {
            return;
        }
        match self.spool.start_commit(now) {
            Commit::Durable(..) => {
                let batch = self.take_batch();
                self.durable(now, batch);
            }
            Commit::Syncing => self.syncing = Some(self.take_batch()),
            Commit::Waiting => {}
        }
    }

    /// The spool's sync thread finished: what waited for it is answered
    /// (or, if it failed, waits for the next commit), and what came
    /// meanwhile is committed at the end of the next turn (see `linger`).
    fn on_synced(&mut self, now: Instant) {
        let Some(result) = self.spool.finish_commit(now) else {
            return;
        };
        let batch = self.syncing.take().unwrap_or_default();
        match result {
            Commit::Durable(..) => self.durable(now, batch),
            Commit::Syncing | Commit::Waiting => self.restore_batch(batch),
        }
        self.linger = true;
    }

    /// What this turn appended: the clients and acknowledgements that
    /// wait for it to be durable.
    fn take_batch(&mut self) -> Batch {
        Batch {
            accepted: std::mem::take(&mut self.accepted),
            owed_acks: std::mem::take(&mut self.owed_acks),
            local: std::mem::take(&mut self.local_accepted),
        }
    }

    /// A batch whose sync failed goes back in front of what came since:
    /// its messages are written again by the next commit.
    fn restore_batch(&mut self, mut batch: Batch) {
        batch.accepted.append(&mut self.accepted);
        batch.owed_acks.append(&mut self.owed_acks);
        batch.local.append(&mut self.local_accepted);
        self.accepted = batch.accepted;
        self.owed_acks = batch.owed_acks;
        self.local_accepted = batch.local;
    }

    /// `batch` is durable: its publish socket clients get their answer
    /// (`QUEUED` while the link is down; else they wait for the PUBACK, 5 s
    /// at most), the broker its PUBACKs, the local clients theirs.
    fn durable(&mut self, now: Instant, batch: Batch) {
        let connected = self.session.is_connected() && !self.link.is_shutting_down();
        let registry = self.poll.registry();
        for (seq, client) in batch.accepted {
            self.publish.mark_durable(client);
            if connected {
                self.awaiting.insert(seq, (client, now + CONFIRM_WAIT));
            } else {
                self.publish.reply(client, Status::Queued, registry);
            }
        }
        for ack in batch.owed_acks {
            self.session.acknowledge(now, ack);
        }
        self.acknowledge_local(now, batch.local);
        self.process(now);
    }

    /// Messages from the broker held while the spool was full go in as far
    /// as there is room now (acknowledged at the next commit), at most
    /// [`HELD_PER_TURN`] bytes a turn: on a disk that was full, a small
    /// commit that succeeds beats a large one that fails again.
    fn take_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        self.spool.release_done();
        let mut taken = 0;
        while taken < HELD_PER_TURN && self.spool.has_room(Direction::In) {
            let Some((topic, payload, ack)) = self.held.pop_front() else {
                break;
            };
            taken += payload.len();
            self.spool.append(Direction::In, &topic, &payload);
            self.owed_acks.extend(ack);
        }
    }

    /// Clients that waited [`CONFIRM_WAIT`] for the broker: `QUEUED`.
    fn answer_unconfirmed(&mut self, now: Instant) {
        while let Some(entry) = self.awaiting.first_entry() {
            if entry.get().1 > now {
                return;
            }
            let (client, _) = entry.remove();
            self.publish
                .reply(client, Status::Queued, self.poll.registry());
        }
    }

    /// Every client waiting for the broker: `QUEUED` (the link is down, or
    /// the daemon stops; their messages are kept).
    fn answer_all_queued(&mut self) {
        for (_, (client, _)) in std::mem::take(&mut self.awaiting) {
            self.publish
                .reply(client, Status::Queued, self.poll.registry());
        }
    }

    /// Moves durable messages from the spool to where they go: the
    /// session's queue while connected (unless stopping with a spool on
    /// disk, where they wait for the next start) and the delivery's window.
    /// `true` if any moved.
    fn feed(&mut self, now: Instant) -> bool {
        let mut moved = false;
        let hold_back = !self.session.is_connected()
            || (self.link.is_shutting_down() && self.spool.is_durable());
        while !hold_back && self.feed_session(now) {
            moved = true;
        }
        while self.delivery.has_room() {
            let Some(m) = self.spool.next(now, Direction::In) else {
                break;
            };
            moved = true;
            self.delivery
                .push(now, m.seq, &m.topic, m.payload, self.poll.registry());
        }
        let delivered = self.delivery.take_delivered();
        for seq in &delivered {
            self.spool.done(Direction::In, *seq);
        }
        if !delivered.is_empty() {
            // Room for what the broker sent while the spool was full.
            self.take_held();
        }
        moved
    }

    /// Hands the next message for the broker to the session, if it has room.
    fn feed_session(&mut self, now: Instant) -> bool {
        if self.next_out.is_none() {
            self.next_out = self.spool.next(now, Direction::Out);
        }
        let Some(m) = self
            .next_out
            .take_if(|m| self.session.has_room(m.payload.len()))
        else {
            return false;
        };
        let seq = m.seq;
        let Some(attributes) = Daemon::outbound_attributes(&m.meta, m.time) else {
            log::info!("a local client's message expired in the spool; not sent");
            self.spool.done(Direction::Out, seq);
            return true;
        };
        // A local client's message (it has meta data) has no status line.
        let id = if m.meta.is_empty() {
            seq
        } else {
            seq | local::LOCAL_ORIGIN
        };
        match self
            .session
            .publish(now, id, m.topic, m.payload, attributes)
        {
            Ok(()) => true,
            // Stopping: it stays in the spool.
            Err(Rejected::Closed) => false,
            Err(rejected) => {
                self.publish_failed(seq, &rejected.to_string());
                true
            }
        }
    }

    /// Message `seq` will never be published: it leaves the spool, and its
    /// client, if still waiting, hears why.
    fn publish_failed(&mut self, seq: u64, reason: &str) {
        self.spool.done(Direction::Out, seq);
        self.refused_total += 1;
        log::warn!(
            "publish failed: {reason} ({} refused so far)",
            self.refused_total
        );
        if let Some((client, _)) = self.awaiting.remove(&seq) {
            self.publish
                .reply(client, Status::Err(reason), self.poll.registry());
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
            busy |= self.feed(now);
            busy |= self.process_local(now);
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
            self.spool.poll_timeout(),
            self.awaiting.first_key_value().map(|(_, (_, at))| *at),
            self.local.next_deadline(),
            self.subacks_deadline(),
            self.notify.as_ref().and_then(Notifier::poll_timeout),
            Some(self.cert_check_at),
            self.blocked_notes.deadline(),
            self.inbound_notes.deadline(),
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
            Action::StopAccepting => {
                if let Some(n) = &mut self.notify {
                    n.stopping();
                }
                self.publish.stop_accepting(self.poll.registry());
                self.local.stop_listening(self.poll.registry());
            }
            Action::CloseSession => self.close_session(now),
            Action::Exit(result) => {
                // The last done marks: fewer messages sent twice after the
                // next start.
                self.spool.commit(now);
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

    /// Whether the broker may be read now: not while the session's output
    /// is full (the broker must read first), nor while a receive maximum of
    /// its messages waits for this turn's sync (the next turn acknowledges
    /// them). Messages held because the spool is full do not count: the
    /// broker's PUBACKs and pings must still come through.
    fn may_read_broker(&self) -> bool {
        let syncing = self.syncing.as_ref().map_or(0, |b| b.owed_acks.len());
        self.session.wants_input() && self.owed_acks.len() + syncing < usize::from(RECEIVE_MAXIMUM)
    }

    /// Whether local MQTT clients may be read now: what they send goes into
    /// the spool (so not while it is full or failing), and their
    /// SUBSCRIBEs into the session's output (so not while that is past its
    /// limit: a client churning subscriptions cannot grow it).
    fn may_read_local(&self) -> bool {
        self.spool.has_room(Direction::Out) && self.session.wants_input()
    }

    /// Reads what the broker sent into the session, up to the budget, and
    /// not while [`Daemon::may_read_broker`] says no.
    fn read_broker(&mut self, now: Instant) {
        if !self.may_read_broker() {
            if self.transport.is_some() {
                self.broker_unread = true;
            }
            return;
        }
        let Some(transport) = &mut self.transport else {
            return;
        };
        self.broker_read_this_turn = true;
        let session = &mut self.session;
        let result = transport.read(&mut self.scratch, BROKER_READ_BUDGET, |bytes| {
            session.handle_input(now, bytes);
            session.wants_input()
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
            Event::Connected { client_id, .. } => {
                if std::mem::replace(&mut self.ever_connected, true) {
                    self.reconnects += 1;
                }
                self.state_since = super::store::wall_clock();
                self.say(&format!(
                    "Mqtt5 Client connection succeed, clientid: {client_id}."
                ))
            }
            Event::Subscribed => {
                self.link.handle_subscribed();
                self.say("Subscription Success.");
                if let Some(n) = &mut self.notify {
                    n.ready(&format!("connected to {}", self.config.endpoint));
                }
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
            Event::Published(id) if id & local::LOCAL_ORIGIN != 0 => {
                self.last_confirmed = Some(now);
                self.spool.done(Direction::Out, id & !local::LOCAL_ORIGIN);
                self.link.handle_published(now);
            }
            Event::Published(seq) => {
                self.last_confirmed = Some(now);
                self.spool.done(Direction::Out, seq);
                if let Some((client, _)) = self.awaiting.remove(&seq) {
                    self.publish.reply(client, Status::Ok, self.poll.registry());
                }
                self.say("Publish Succeed.");
                self.link.handle_published(now);
            }
            Event::PublishFailed(id, reason) => {
                self.publish_failed(id & !local::LOCAL_ORIGIN, &reason)
            }
            Event::SubscribeResult { filter, result } => {
                self.on_subscribe_result(now, filter, result)
            }
            // Only from `close_session`, which answers them itself.
            Event::Unconfirmed(_) | Event::Unsent(_) => {}
            Event::Message {
                topic,
                payload,
                attributes,
                ack,
            } => {
                if !self.route_inbound(now, &topic, &payload, attributes.as_deref(), ack) {
                    return;
                }
                self.say(&format!(
                    "Publish received on topic {}:{}",
                    String::from_utf8_lossy(&topic),
                    String::from_utf8_lossy(&payload)
                ));
                self.receive(now, topic, payload, ack);
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
                if let Some(n) = &mut self.notify {
                    n.status(&format!("reconnecting: {reason}"));
                }
                if was_connected {
                    self.state_since = super::store::wall_clock();
                }
                // Kept in the spool; sent after the reconnect.
                self.answer_all_queued();
                self.expire_subacks(now, true);
                self.link.handle_lost(now, &reason, taken_over);
            }
        }
    }

    /// A message from the broker goes to the spool, acknowledged once
    /// durable; with the spool full or failing it is held unacknowledged,
    /// or, at QoS 0 (no promise made), dropped and counted.
    fn receive(&mut self, now: Instant, topic: Bytes, payload: Bytes, ack: Option<InboundAck>) {
        if self.held.is_empty() && self.spool.has_room(Direction::In) {
            self.spool.append(Direction::In, &topic, &payload);
            self.owed_acks.extend(ack);
        } else if ack.is_some() {
            if self.held.is_empty() && self.inbound_notes.note(now).is_some() {
                log::warn!(
                    "spool full or not writing ({} bytes for {}): messages from the broker wait unacknowledged until there is room (the broker keeps them)",
                    self.spool.bytes(Direction::In),
                    self.config.sub_socket.display()
                );
            }
            self.held.push_back((topic, payload, ack));
            if self.held.len() >= FLOOD_THRESHOLD {
                // A broker within our receive maximum stops at 100.
                self.session.exceeded_receive_maximum();
            }
        } else {
            self.dropped_qos0 += 1;
            if self.inbound_notes.note(now).is_some() {
                log::warn!(
                    "spool full or not writing: QoS 0 message from the broker dropped ({} so far)",
                    self.dropped_qos0
                );
            }
        }
    }

    // ----- publish socket clients -----

    fn accept_clients(&mut self, now: Instant) {
        if !self.spool.has_room(Direction::Out) {
            if !self.accept_blocked && self.blocked_notes.note(now).is_some() {
                log::warn!(
                    "publish socket: the spool is full or cannot write ({} bytes for the broker); new clients wait until messages are sent",
                    self.spool.bytes(Direction::Out)
                );
            }
            self.accept_blocked = true;
            return;
        }
        if self.accept_blocked {
            log::info!("publish socket: taking new clients again");
            self.accept_blocked = false;
        }
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

    /// Appends a complete message to the spool (durable at the end of the
    /// turn); one that can never be published is answered `ERR` now.
    fn submit(&mut self, now: Instant, sub: Submission) {
        let max = self.session.max_payload();
        if sub.payload.len() > max {
            let rejected = Rejected::TooLarge {
                size: sub.payload.len(),
                max,
            };
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
            return;
        }
        let seq = self.spool.append(Direction::Out, &sub.topic, &sub.payload);
        self.accepted.push((seq, sub.id));
    }

    // ----- signals and shutdown -----

    fn on_signals(&mut self, now: Instant) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for signal in pending {
            if signal == SIGHUP {
                self.reload_tls();
                self.check_certificate();
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
                tls.not_after = tls.files.leaf_not_after();
                log::info!(
                    "SIGHUP: reloaded certificate, key and CA; the next connection uses them"
                );
            }
            Err(e) => log::error!("SIGHUP: reload failed, keeping the current files: {e}"),
        }
    }

    /// Ends the session for good: stops accepting, sends DISCONNECT if
    /// connected, and gives every client still waiting its answer. With a
    /// spool on disk every message not done stays there for the next start
    /// (`QUEUED`); in memory, what was never sent is lost (`ERR`), and the
    /// log says how many of each.
    fn close_session(&mut self, now: Instant) {
        self.publish.stop_accepting(self.poll.registry());
        self.session.close();
        // What this turn accepted becomes durable first (after the sync
        // under way, if any: its batch goes in front).
        if let Some(batch) = self.syncing.take() {
            self.restore_batch(batch);
        }
        let committed = self.spool.commit(now).is_some();
        let durable = self.spool.is_durable() && committed;
        let registry = self.poll.registry();
        for (seq, client) in self.accepted.drain(..) {
            if committed {
                self.awaiting.insert(seq, (client, now));
            } else {
                self.publish.reply(
                    client,
                    Status::Err("the spool cannot write; not kept"),
                    registry,
                );
            }
        }
        while let Some(event) = self.session.poll_event() {
            let (Event::Unsent(seq) | Event::Unconfirmed(seq)) = event else {
                continue;
            };
            let never_sent = matches!(event, Event::Unsent(_));
            let Some((client, _)) = self.awaiting.remove(&seq) else {
                continue;
            };
            let status = if never_sent && !durable {
                Status::Err("the daemon stopped before sending it")
            } else {
                Status::Queued
            };
            self.publish.reply(client, status, registry);
        }
        // Not handed to the session yet: in the spool.
        let status = if durable {
            Status::Queued
        } else {
            Status::Err("the daemon stopped before sending it")
        };
        for (_, (client, _)) in std::mem::take(&mut self.awaiting) {
            self.publish.reply(client, status, registry);
        }
        let local = std::mem::take(&mut self.local_accepted);
        if committed {
            self.acknowledge_local(now, local);
        }
        self.local.close_all(self.poll.registry());
        self.spool.log_totals();
        let out = self.spool.waiting(Direction::Out);
        let inbound = self.spool.waiting(Direction::In);
        if durable && out + inbound > 0 {
            log::info!(
                "stopping: {out} message(s) for the broker and {inbound} for {} stay in the spool until the next start",
                self.config.sub_socket.display()
            );
        } else if !durable && (out > 0 || inbound > 0) {
            log::warn!(
                "stopping with {out} message(s) for the broker and {inbound} for {} in memory: they are dropped (--spool_dir none, or the spool could not write)",
                self.config.sub_socket.display()
            );
        }
        self.flush_broker(now);
    }
}
