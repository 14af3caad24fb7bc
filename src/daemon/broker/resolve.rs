//! DNS without blocking the event loop.
//!
//! `getaddrinfo` blocks, sometimes for many seconds when the network is down.
//! It runs on a short-lived thread that hands back the result and wakes the
//! loop through its one `mio::Waker`; meanwhile the publish socket keeps
//! serving clients. An IP address literal skips the thread.

use mio::Waker;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, TryRecvError};

pub type Answer = io::Result<Vec<SocketAddr>>;

/// A lookup in progress.
pub struct Lookup {
    rx: Receiver<Answer>,
}

/// Starts resolving `host:port`.
pub fn start(host: &str, port: u16, waker: Arc<Waker>) -> Lookup {
    let (tx, rx) = mpsc::channel();
    if let Ok(ip) = host.parse::<IpAddr>() {
        let _ = tx.send(Ok(vec![SocketAddr::new(ip, port)]));
        let _ = waker.wake();
        return Lookup { rx };
    }
    let host = host.to_owned();
    let failure_waker = waker.clone();
    let spawned = std::thread::Builder::new()
        .name("resolve".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let answer = (host.as_str(), port)
                .to_socket_addrs()
                .map(|addrs| addrs.collect::<Vec<_>>());
            // The loop may have gone (shutdown): nothing to do then.
            if tx.send(answer).is_ok() {
                let _ = waker.wake();
            }
        });
    if let Err(e) = spawned {
        // No thread (out of processes or memory): report it like a failed
        // lookup; the loop retries with backoff.
        let (tx, rx) = mpsc::channel();
        let _ = tx.send(Err(e));
        let _ = failure_waker.wake();
        return Lookup { rx };
    }
    Lookup { rx }
}

impl Lookup {
    /// The answer, once there is one.
    pub fn poll(&self) -> Option<Answer> {
        match self.rx.try_recv() {
            Ok(answer) => Some(answer),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(io::Error::other("resolver thread died"))),
        }
    }
}
