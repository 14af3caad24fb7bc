//! The broker connection: a non-blocking TCP socket, optionally an HTTP
//! CONNECT tunnel through a proxy, and, unless `--plaintext`, a rustls client
//! connection pumped over it.
//!
//! rustls is sans-IO: `read_tls` only buffers, `process_new_packets` does the
//! work, `reader()` hands out plaintext, `writer()` takes plaintext and
//! `write_tls` produces records. mio is edge-triggered, so every read drains
//! the socket until `WouldBlock`, and WRITABLE is registered only while there
//! is something to write.

use super::proxy::{self, Reply};
use crate::sys::{interrupted, would_block};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ClientConnection;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

/// Most plaintext queued in rustls before we stop feeding it; the session
/// keeps the rest. Also caps the TLS records waiting for the socket.
const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// Why the connection is gone.
#[derive(Debug)]
pub enum Failure {
    /// The socket failed (refused, reset, unreachable ...).
    Io(io::Error),
    /// TLS failed: a certificate, an alert, a protocol error.
    Tls(rustls::Error),
    /// The broker closed the connection.
    Closed,
    /// The proxy refused or broke the tunnel.
    Proxy(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io(e) => write!(f, "{e}"),
            Failure::Tls(e) => write!(f, "TLS: {e}"),
            Failure::Closed => write!(f, "the broker closed the connection"),
            Failure::Proxy(why) => write!(f, "proxy: {why}"),
        }
    }
}

enum Link {
    Tls(Box<ClientConnection>),
    /// `--plaintext`: bytes wait here until the socket takes them.
    Plain(Vec<u8>),
}

/// An HTTP CONNECT tunnel being set up.
struct Tunnel {
    request: Vec<u8>,
    sent: usize,
    reply: Vec<u8>,
}

pub struct Transport {
    socket: TcpStream,
    link: Link,
    /// Until the proxy says 200, nothing else is written or read.
    tunnel: Option<Tunnel>,
    /// The non-blocking connect has completed.
    established: bool,
    interest: Interest,
    pub addr: SocketAddr,
}

impl Transport {
    /// Starts a non-blocking connect to `addr` and registers it.
    /// With `via_proxy`, `addr` is the proxy's and the tunnel goes to that
    /// `(host, port)`.
    pub fn connect(
        addr: SocketAddr,
        via_proxy: Option<(&str, u16)>,
        tls: Option<ClientConnection>,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Transport> {
        let mut socket = TcpStream::connect(addr)?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        registry.register(&mut socket, token, interest)?;
        let link = match tls {
            Some(mut conn) => {
                conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
                Link::Tls(Box::new(conn))
            }
            None => Link::Plain(Vec::new()),
        };
        let tunnel = via_proxy.map(|(host, port)| Tunnel {
            request: proxy::connect_request(host, port),
            sent: 0,
            reply: Vec::new(),
        });
        Ok(Transport {
            socket,
            link,
            tunnel,
            established: false,
            interest,
            addr,
        })
    }

    /// The TCP connect completed (see [`Transport::finish_connect`]).
    pub fn is_established(&self) -> bool {
        self.established
    }

    /// After a WRITABLE event during connect: `Ok(true)` once the TCP
    /// connection is up (mio's documented steps: `take_error`, then
    /// `peer_addr`), `Ok(false)` if the event was spurious.
    pub fn finish_connect(&mut self) -> Result<bool, Failure> {
        if self.established {
            return Ok(true);
        }
        if let Some(e) = self.socket.take_error().map_err(Failure::Io)? {
            return Err(Failure::Io(e));
        }
        match self.socket.peer_addr() {
            Ok(_) => {
                self.established = true;
                // Nagle against delayed ACK stalls the handshake's last
                // flight and small publishes by ~40 ms.
                let _ = self.socket.set_nodelay(true);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) if would_block(&e) => Ok(false),
            Err(e) => Err(Failure::Io(e)),
        }
    }

    /// Reads what the socket has, up to about `budget` bytes, and passes the
    /// plaintext to `sink`, which says whether it wants more (reading stops
    /// after what was already read or decrypted). `scratch` is a reusable
    /// buffer.
    ///
    /// # Returns
    /// `Ok(true)` when it stopped at the budget or because `sink` wanted no
    /// more (more may be waiting: call again; mio will not say so again),
    /// `Ok(false)` when the socket would block.
    pub fn read(
        &mut self,
        scratch: &mut [u8],
        budget: usize,
        mut sink: impl FnMut(&[u8]) -> bool,
    ) -> Result<bool, Failure> {
        if !self.established {
            return Ok(false);
        }
        if self.tunnel.is_some() {
            let early = self.read_proxy_reply(scratch)?;
            if self.tunnel.is_some() {
                return Ok(false);
            }
            // Bytes after the proxy's header are the broker's.
            match &mut self.link {
                Link::Plain(_) => {
                    sink(&early);
                }
                Link::Tls(conn) if !early.is_empty() => {
                    conn.read_tls(&mut &early[..]).map_err(Failure::Io)?;
                    conn.process_new_packets().map_err(Failure::Tls)?;
                    if !drain_plaintext(conn, scratch, &mut sink)? {
                        return Ok(true);
                    }
                }
                Link::Tls(_) => {}
            }
        }
        let mut taken = 0;
        match &mut self.link {
            Link::Plain(_) => loop {
                if taken >= budget {
                    return Ok(true);
                }
                match self.socket.read(scratch) {
                    Ok(0) => return Err(Failure::Closed),
                    Ok(n) => {
                        taken += n;
                        if !sink(&scratch[..n]) {
                            return Ok(true);
                        }
                    }
                    Err(e) if would_block(&e) => return Ok(false),
                    Err(e) if interrupted(&e) => {}
                    Err(e) => return Err(Failure::Io(e)),
                }
            },
            Link::Tls(conn) => loop {
                if taken >= budget {
                    return Ok(true);
                }
                match conn.read_tls(&mut self.socket) {
                    Ok(0) => {
                        // Hand over what was decrypted before the close.
                        drain_plaintext(conn, scratch, &mut sink)?;
                        return Err(Failure::Closed);
                    }
                    Ok(n) => taken += n,
                    Err(e) if would_block(&e) => return Ok(false),
                    Err(e) if interrupted(&e) => continue,
                    Err(e) => return Err(Failure::Io(e)),
                }
                if let Err(e) = conn.process_new_packets() {
                    // Send the alert that explains it, if the socket takes it.
                    let _ = conn.write_tls(&mut self.socket);
                    return Err(Failure::Tls(e));
                }
                if !drain_plaintext(conn, scratch, &mut sink)? {
                    return Ok(true);
                }
            },
        }
    }

    /// Moves `out` (plaintext) into the connection as far as it takes it,
    /// then writes to the socket until it would block.
    ///
    /// # Returns
    /// How many bytes of `out` were taken.
    pub fn write(&mut self, out: &[u8]) -> Result<usize, Failure> {
        if !self.established {
            return Ok(0);
        }
        if self.tunnel.is_some() {
            self.send_proxy_request()?;
            return Ok(0);
        }
        let mut taken = 0;
        loop {
            // Flush first: what is buffered must leave before more fits, and
            // a full buffer on entry must not look like "takes no more".
            if !self.flush()? || taken == out.len() {
                return Ok(taken);
            }
            let n = self.buffer(&out[taken..])?;
            if n == 0 {
                // Only during the TLS handshake: rustls holds plaintext
                // until it has keys.
                return Ok(taken);
            }
            taken += n;
        }
    }

    /// Hands plaintext to rustls (or the plain buffer), up to its limit.
    fn buffer(&mut self, bytes: &[u8]) -> Result<usize, Failure> {
        match &mut self.link {
            Link::Tls(conn) => conn.writer().write(bytes).map_err(Failure::Io),
            Link::Plain(buf) => {
                let n = TLS_BUFFER_LIMIT.saturating_sub(buf.len()).min(bytes.len());
                buf.extend_from_slice(&bytes[..n]);
                Ok(n)
            }
        }
    }

    /// Writes buffered bytes until the socket would block.
    /// `Ok(false)` when it would block with bytes left.
    fn flush(&mut self) -> Result<bool, Failure> {
        loop {
            let result = match &mut self.link {
                Link::Tls(conn) if conn.wants_write() => conn.write_tls(&mut self.socket),
                Link::Plain(buf) if !buf.is_empty() => self.socket.write(buf).inspect(|&n| {
                    buf.drain(..n);
                }),
                _ => return Ok(true),
            };
            match result {
                Ok(0) => return Err(Failure::Closed),
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(Failure::Io(e)),
            }
        }
    }

    fn wants_write(&self) -> bool {
        if let Some(t) = &self.tunnel {
            return t.sent < t.request.len();
        }
        match &self.link {
            Link::Tls(conn) => conn.wants_write(),
            Link::Plain(buf) => !buf.is_empty(),
        }
    }

    /// Registers WRITABLE only while connecting or while bytes wait.
    pub fn update_interest(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let wanted = if !self.established || self.wants_write() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if wanted != self.interest {
            registry.reregister(&mut self.socket, token, wanted)?;
            self.interest = wanted;
        }
        Ok(())
    }

    /// Writes what is left of the CONNECT request.
    fn send_proxy_request(&mut self) -> Result<(), Failure> {
        let Some(t) = &mut self.tunnel else {
            return Ok(());
        };
        while t.sent < t.request.len() {
            match self.socket.write(&t.request[t.sent..]) {
                Ok(0) => return Err(Failure::Proxy("the proxy closed the connection".into())),
                Ok(n) => t.sent += n,
                Err(e) if would_block(&e) => return Ok(()),
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(Failure::Io(e)),
            }
        }
        Ok(())
    }

    /// Reads the proxy's reply; on 2xx ends the tunnel setup and returns the
    /// bytes that came after the header.
    fn read_proxy_reply(&mut self, scratch: &mut [u8]) -> Result<Vec<u8>, Failure> {
        let Some(t) = &mut self.tunnel else {
            return Ok(Vec::new());
        };
        loop {
            match self.socket.read(scratch) {
                Ok(0) => {
                    return Err(Failure::Proxy(
                        "the proxy closed the connection before answering".into(),
                    ));
                }
                Ok(n) => t.reply.extend_from_slice(&scratch[..n]),
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(Failure::Io(e)),
            }
        }
        match proxy::parse_reply(&t.reply) {
            Reply::Incomplete => Ok(Vec::new()),
            Reply::Refused(why) => Err(Failure::Proxy(why)),
            Reply::Established { header_len } => {
                let early = t.reply.split_off(header_len);
                self.tunnel = None;
                Ok(early)
            }
        }
    }

    /// Best-effort goodbye: TLS close_notify, flush what the socket takes
    /// now, deregister. The socket closes when `self` drops.
    pub fn close(mut self, registry: &Registry) {
        if self.established {
            if let Link::Tls(conn) = &mut self.link {
                conn.send_close_notify();
            }
            let _ = self.flush();
            let _ = self.socket.shutdown(std::net::Shutdown::Write);
        }
        let _ = registry.deregister(&mut self.socket);
    }
}

/// Hands all decrypted plaintext to `sink` (bounded by one TLS read); `true`
/// if `sink` wants more.
fn drain_plaintext(
    conn: &mut ClientConnection,
    scratch: &mut [u8],
    sink: &mut impl FnMut(&[u8]) -> bool,
) -> Result<bool, Failure> {
    let mut more = true;
    loop {
        match conn.reader().read(scratch) {
            Ok(0) => return Err(Failure::Closed), // close_notify
            Ok(n) => more &= sink(&scratch[..n]),
            Err(e) if would_block(&e) => return Ok(more),
            // TCP closed without close_notify: still the broker hanging up.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(Failure::Closed),
            Err(e) => return Err(Failure::Io(e)),
        }
    }
}
