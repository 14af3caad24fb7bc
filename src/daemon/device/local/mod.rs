//! The local MQTT endpoint: local programs speak MQTT 3.1.1 or 5 to the
//! daemon, over a UNIX socket (`--local_socket`) or loopback TCP
//! (`--local_listen`), and share its one broker connection.
//!
//! [`client`] is the protocol of one connection (sans-IO), [`routes`] the
//! local subscriptions and the upstream filters that serve them (pure).
//! This file only moves bytes: it accepts, reads into each client's
//! machine, writes what the machine produced and closes what ended. The
//! event loop takes the machines' actions and decides.

pub mod client;
pub mod routes;

use crate::output::{LOG_INTERVAL, Throttle};
use crate::sys::{interrupted, out_of_descriptors, would_block};
use crate::unix_socket;
use client::{Action, Client};
use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the endpoint listens, from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `None`: `--local_socket none`.
    pub socket: Option<PathBuf>,
    /// The socket path is the default one: when another daemon holds it,
    /// this one runs without it (an explicit path is an error).
    pub socket_is_default: bool,
    /// Loopback only, checked at start.
    pub listen: Option<SocketAddr>,
    /// `--local_topics`: what local clients may publish and subscribe to.
    pub topics: Vec<String>,
    /// Clients at once.
    pub max_clients: usize,
}

/// The default `--local_socket`.
pub const DEFAULT_SOCKET: &str = "/tmp/iotbox_mqtt";

/// The default cap on local clients.
pub const MAX_CLIENTS: usize = 256;

/// After accept fails for want of descriptors, wait this long.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Tokens of client connections start here (below: the loop's fixed
/// tokens and the publish socket's clients).
const FIRST_CONNECTION: usize = 1 << (usize::BITS - 2);

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn Source {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
}

struct Connection {
    stream: Stream,
    machine: Client,
    /// The client id, once connected (for the log and take-overs).
    client_id: Option<String>,
    /// Reading stopped with input possibly left in the socket (edge
    /// triggered: no new event will say so).
    unread: bool,
    /// The socket failed: nothing more can be written.
    broken: bool,
}

pub struct LocalServer {
    unix: Option<(UnixListener, PathBuf)>,
    tcp: Option<TcpListener>,
    connections: BTreeMap<u64, Connection>,
    next_number: u64,
    max_clients: usize,
    max_inbound: usize,
    accept_paused_until: Option<Instant>,
    /// Accepting stopped at the cap with clients left in the backlog.
    capped: bool,
    /// Connections with actions to take, then output to write.
    dirty: Vec<u64>,
    to_write: Vec<u64>,
    /// "At the cap" notes: at most once a minute.
    refusals: Throttle,
}

impl LocalServer {
    /// Listens where `config` says. A default socket path held by another
    /// daemon is skipped with a log line; everything else that fails is
    /// an error for the caller to exit with.
    pub fn bind(
        config: &Config,
        mode: u32,
        max_inbound: usize,
        registry: &Registry,
        tokens: (Token, Token),
    ) -> Result<LocalServer, String> {
        let mut unix = None;
        if let Some(path) = &config.socket {
            match bind_unix(path, mode, registry, tokens.0) {
                Ok(listener) => unix = Some((listener, path.clone())),
                Err(unix_socket::BindError::InUse(_)) if config.socket_is_default => log::info!(
                    "local MQTT endpoint: {} is held by another daemon; this one runs without it (give it its own --local_socket)",
                    path.display()
                ),
                Err(e) => return Err(format!("local MQTT endpoint: {e}")),
            }
        }
        let mut tcp = None;
        if let Some(addr) = config.listen {
            let mut listener = TcpListener::bind(addr)
                .map_err(|e| format!("local MQTT endpoint: cannot listen on {addr}: {e}"))?;
            registry
                .register(&mut listener, tokens.1, Interest::READABLE)
                .map_err(|e| format!("local MQTT endpoint: {e}"))?;
            tcp = Some(listener);
        }
        Ok(LocalServer {
            unix,
            tcp,
            connections: BTreeMap::new(),
            next_number: 0,
            max_clients: config.max_clients,
            max_inbound,
            accept_paused_until: None,
            capped: false,
            dirty: Vec::new(),
            to_write: Vec::new(),
            refusals: Throttle::new(LOG_INTERVAL),
        })
    }

    /// Whether the endpoint listens at all.
    pub fn is_listening(&self) -> bool {
        self.unix.is_some() || self.tcp.is_some()
    }

    pub fn len(&self) -> usize {
        self.connections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// The connection a poll token belongs to, if it is one of ours.
    pub fn number_of(&self, token: Token) -> Option<u64> {
        let n = token.0.checked_sub(FIRST_CONNECTION)? as u64;
        self.connections.contains_key(&n).then_some(n)
    }

    pub fn client(&mut self, number: u64) -> Option<&mut Client> {
        self.connections.get_mut(&number).map(|c| &mut c.machine)
    }

    pub fn client_id(&self, number: u64) -> Option<&str> {
        self.connections.get(&number)?.client_id.as_deref()
    }

    /// The connected client using `client_id`, other than `number`.
    pub fn find_client_id(&self, client_id: &str, number: u64) -> Option<u64> {
        self.connections
            .iter()
            .find(|(n, c)| **n != number && c.client_id.as_deref() == Some(client_id))
            .map(|(n, _)| *n)
    }

    /// Marks `number` as having output or actions (after the loop handed
    /// its machine something).
    pub fn touch(&mut self, number: u64) {
        self.dirty.push(number);
    }

    /// Accepts until the backlog is empty or the cap is reached (then the
    /// kernel's backlog holds the rest).
    pub fn accept(&mut self, now: Instant, registry: &Registry) {
        if self.accept_paused_until.is_some_and(|t| now < t) {
            return;
        }
        self.accept_paused_until = None;
        self.capped = false;
        while self.connections.len() < self.max_clients {
            let accepted = match (&self.unix, &self.tcp) {
                (Some((l, _)), _) => match l.accept() {
                    Ok((s, _)) => Ok(Some(Stream::Unix(s))),
                    Err(e) if would_block(&e) => Ok(None),
                    Err(e) => Err(e),
                },
                _ => Ok(None),
            };
            let accepted = match accepted {
                Ok(None) => match &self.tcp {
                    Some(l) => match l.accept() {
                        Ok((s, _)) => {
                            let _ = s.set_nodelay(true);
                            Ok(Some(Stream::Tcp(s)))
                        }
                        Err(e) if would_block(&e) => Ok(None),
                        Err(e) => Err(e),
                    },
                    None => Ok(None),
                },
                other => other,
            };
            match accepted {
                Ok(Some(stream)) => self.admit(now, stream, registry),
                Ok(None) => return,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    if out_of_descriptors(&e) {
                        log::warn!("local MQTT endpoint: out of file descriptors; pausing accept");
                    } else {
                        log::warn!("local MQTT endpoint: accept failed: {e}");
                    }
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
            }
        }
        self.capped = true;
        if self.refusals.note(now).is_some() {
            log::warn!(
                "local MQTT endpoint: {} clients connected, the most allowed; new ones wait",
                self.max_clients
            );
        }
    }

    /// Whether accepting should be tried again (a pause ended or a client
    /// left while at the cap).
    pub fn wants_accept(&self, now: Instant) -> bool {
        self.is_listening()
            && self.connections.len() < self.max_clients
            && (self.capped || self.accept_paused_until.is_some_and(|t| t <= now))
    }

    fn admit(&mut self, now: Instant, mut stream: Stream, registry: &Registry) {
        let number = self.next_number;
        self.next_number += 1;
        let token = Token(FIRST_CONNECTION.wrapping_add(number as usize));
        if let Err(e) = registry.register(
            stream.source(),
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("local MQTT endpoint: cannot watch a client: {e}");
            return;
        }
        let machine = Client::new(now, self.max_inbound, number);
        self.connections.insert(
            number,
            Connection {
                stream,
                machine,
                client_id: None,
                unread: true,
                broken: false,
            },
        );
        self.dirty.push(number);
    }

    /// A connection's socket is ready: reads it (if `may_read`) and marks
    /// it for writing.
    pub fn on_ready(&mut self, now: Instant, number: u64, scratch: &mut [u8], may_read: bool) {
        if let Some(c) = self.connections.get_mut(&number) {
            c.unread = true;
            if may_read {
                read(now, c, scratch);
            }
            self.dirty.push(number);
        }
    }

    /// Reads the connections that stopped with input left, now that they
    /// may read again.
    pub fn read_unread(&mut self, now: Instant, scratch: &mut [u8]) {
        for (number, c) in &mut self.connections {
            if c.unread && c.machine.wants_input() {
                read(now, c, scratch);
                self.dirty.push(*number);
            }
        }
    }

    /// Whether some connection stopped reading with input left that its
    /// machine would take now.
    pub fn has_unread(&self) -> bool {
        self.connections
            .values()
            .any(|c| c.unread && c.machine.wants_input())
    }

    /// The next action of a connection that has one.
    pub fn poll_action(&mut self) -> Option<(u64, Action)> {
        while let Some(&number) = self.dirty.last() {
            let action = self
                .connections
                .get_mut(&number)
                .and_then(|c| c.machine.poll_action());
            match action {
                Some(action) => return Some((number, action)),
                None => {
                    self.dirty.pop();
                    self.to_write.push(number);
                }
            }
        }
        None
    }

    /// Writes what the machines produced, and closes the connections that
    /// ended, once the loop has taken their last action. A closed client's
    /// last words get one write: one that does not read them (a client cut
    /// off for being slow) is not waited for.
    pub fn flush(&mut self, registry: &Registry) {
        self.to_write.sort_unstable();
        self.to_write.dedup();
        for number in std::mem::take(&mut self.to_write) {
            let Some(c) = self.connections.get_mut(&number) else {
                continue;
            };
            write(c);
            if c.machine.has_actions() {
                // A write that failed just now ended it: the loop takes that.
                self.dirty.push(number);
            } else if c.machine.is_closed() {
                if let Some(mut c) = self.connections.remove(&number) {
                    let _ = registry.deregister(c.stream.source());
                }
            }
        }
    }

    /// Runs the machines' expired deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        for (number, c) in &mut self.connections {
            if c.machine.poll_timeout().is_some_and(|at| at <= now) {
                c.machine.handle_timeout(now);
                self.dirty.push(*number);
            }
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let accept = self
            .accept_paused_until
            .filter(|_| self.connections.len() < self.max_clients);
        self.connections
            .values()
            .filter_map(|c| c.machine.poll_timeout())
            .chain(accept)
            .chain(self.refusals.deadline())
            .min()
    }

    /// Records the client id a connection uses now.
    pub fn set_client_id(&mut self, number: u64, client_id: String) {
        if let Some(c) = self.connections.get_mut(&number) {
            c.client_id = Some(client_id);
        }
    }

    /// Ends every connection (the daemon stops): DISCONNECT 0x8B to 5
    /// clients; no wills (the clients did not vanish, the daemon did).
    pub fn close_all(&mut self, registry: &Registry) {
        for (number, c) in &mut self.connections {
            c.machine.close(
                crate::daemon::codec::server::reason::SERVER_SHUTTING_DOWN,
                "the daemon stops",
                false,
            );
            self.dirty.push(*number);
        }
        while self.poll_action().is_some() {}
        self.flush(registry);
        self.stop_listening(registry);
    }

    /// Closes the listeners (the UNIX socket's path is removed).
    pub fn stop_listening(&mut self, registry: &Registry) {
        if let Some((mut listener, path)) = self.unix.take() {
            let _ = registry.deregister(&mut listener);
            unix_socket::remove(&path);
        }
        if let Some(mut listener) = self.tcp.take() {
            let _ = registry.deregister(&mut listener);
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some((_, path)) = &self.unix {
            unix_socket::remove(path);
        }
    }
}

fn bind_unix(
    path: &Path,
    mode: u32,
    registry: &Registry,
    token: Token,
) -> Result<UnixListener, unix_socket::BindError> {
    let std_listener = unix_socket::bind(path)?;
    let setup = || -> io::Result<UnixListener> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        std_listener.set_nonblocking(true)?;
        let mut listener = UnixListener::from_std(std_listener);
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(listener)
    };
    setup().map_err(|e| {
        unix_socket::remove(path);
        unix_socket::BindError::Io(path.to_owned(), e)
    })
}

/// Reads until the socket would block, the machine wants no more, or the
/// client is gone.
fn read(now: Instant, c: &mut Connection, scratch: &mut [u8]) {
    while c.machine.wants_input() {
        match c.stream.read(scratch) {
            Ok(0) => {
                c.unread = false;
                c.machine.handle_eof("closed the connection");
                return;
            }
            Ok(n) => c.machine.handle_input(now, &scratch[..n]),
            Err(e) if would_block(&e) => {
                c.unread = false;
                return;
            }
            Err(e) if interrupted(&e) => {}
            Err(e) => {
                c.unread = false;
                c.broken = true;
                c.machine.handle_eof(&format!("connection failed: {e}"));
                return;
            }
        }
    }
}

/// Writes the machine's output until the socket would block.
fn write(c: &mut Connection) {
    while !c.broken && !c.machine.pending_output().is_empty() {
        match c.stream.write(c.machine.pending_output()) {
            Ok(0) => c.broken = true,
            Ok(n) => c.machine.advance_output(n),
            Err(e) if would_block(&e) => return,
            Err(e) if interrupted(&e) => {}
            Err(_) => {
                c.broken = true;
                c.machine
                    .handle_eof("connection failed while writing to it");
            }
        }
    }
}
