//! systemd's notification protocol (sd_notify(3)) in a few lines: datagrams
//! of `KEY=value` lines to the socket named by `$NOTIFY_SOCKET`. No crate:
//! the protocol is one `sendto` per message.
//!
//! Under `Type=notify` the daemon says `READY=1` after its first SUBACK
//! (the unit's dependents start once AWS is reachable), `STATUS=...` as
//! the link comes and goes, `STOPPING=1` when asked to stop, and, with
//! `WatchdogSec=`, `WATCHDOG=1` every half period from the event loop
//! itself: a loop that is stuck stops the pings, and systemd restarts it.
//! Without `$NOTIFY_SOCKET` (not under systemd) nothing here runs.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// Where and how often, from the environment systemd sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// A path, or an abstract name (`@name` in the variable).
    pub socket: Target,
    /// Half of `$WATCHDOG_USEC`: how often to ping.
    pub ping_every: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Path(std::path::PathBuf),
    Abstract(Vec<u8>),
}

/// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` (values
/// given, for tests); `pid` is ours. `None`: not asked to notify.
pub fn setup(
    notify_socket: Option<&OsStr>,
    watchdog_usec: Option<&str>,
    watchdog_pid: Option<&str>,
    pid: u32,
) -> Option<Setup> {
    use std::os::unix::ffi::OsStrExt;
    let raw = notify_socket?.as_bytes();
    let socket = match raw {
        [] => return None,
        [b'@', name @ ..] => Target::Abstract(name.to_vec()),
        [b'/', ..] => Target::Path(std::path::PathBuf::from(OsStr::from_bytes(raw))),
        // vsock and other forms: not for a device daemon.
        _ => return None,
    };
    // The watchdog is for the process systemd named, if it named one.
    let ours = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>() == Ok(pid));
    let ping_every = watchdog_usec
        .and_then(|u| u.trim().parse::<u64>().ok())
        .filter(|&u| u > 0 && ours)
        .map(|u| Duration::from_micros(u / 2).max(Duration::from_millis(1)));
    Some(Setup { socket, ping_every })
}

pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    ping_every: Option<Duration>,
    next_ping: Option<Instant>,
    ready: bool,
    /// A send failed: said once in the log.
    failed: bool,
}

impl Notifier {
    /// From the process's environment; `None` when not under systemd's
    /// notification (or the socket cannot be made: logged).
    pub fn from_env(now: Instant) -> Option<Notifier> {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        let setup = setup(
            socket.as_deref(),
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
        )?;
        match Notifier::new(&setup, now) {
            Ok(n) => Some(n),
            Err(e) => {
                log::warn!("systemd notification: cannot use $NOTIFY_SOCKET: {e}");
                None
            }
        }
    }

    pub fn new(setup: &Setup, now: Instant) -> io::Result<Notifier> {
        let addr = match &setup.socket {
            Target::Path(p) => SocketAddr::from_pathname(p)?,
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Notifier {
            socket,
            addr,
            ping_every: setup.ping_every,
            next_ping: setup.ping_every.map(|_| now),
            ready: false,
            failed: false,
        })
    }

    /// `READY=1` the first time, with a status line; the status line alone
    /// afterwards (connected again).
    pub fn ready(&mut self, status: &str) {
        if std::mem::replace(&mut self.ready, true) {
            self.status(status);
        } else {
            self.send(&format!("READY=1\nSTATUS={status}"));
        }
    }

    /// A line for `systemctl status`.
    pub fn status(&mut self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    pub fn stopping(&mut self) {
        self.send("STOPPING=1");
    }

    /// When the next watchdog ping is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_ping
    }

    /// Pings the watchdog when due: the loop turned, so it is alive.
    pub fn handle_timeout(&mut self, now: Instant) {
        let (Some(at), Some(every)) = (self.next_ping, self.ping_every) else {
            return;
        };
        if at <= now {
            self.send("WATCHDOG=1");
            self.next_ping = Some(now + every);
        }
    }

    fn send(&mut self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            if !std::mem::replace(&mut self.failed, true) {
                log::warn!("systemd notification: cannot send to $NOTIFY_SOCKET: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_says_where_and_how_often() {
        let path = Some(OsStr::new("/run/systemd/notify"));
        assert_eq!(
            setup(path, Some("30000000"), None, 7),
            Some(Setup {
                socket: Target::Path("/run/systemd/notify".into()),
                ping_every: Some(Duration::from_secs(15)),
            })
        );
        let abstract_name = setup(Some(OsStr::new("@/org/x")), None, None, 7).unwrap();
        assert_eq!(abstract_name.socket, Target::Abstract(b"/org/x".to_vec()));
        assert_eq!(abstract_name.ping_every, None);
        // The watchdog named another process: not ours to ping.
        assert_eq!(
            setup(path, Some("30000000"), Some("8"), 7)
                .unwrap()
                .ping_every,
            None
        );
        assert!(
            setup(path, Some("30000000"), Some("7"), 7)
                .unwrap()
                .ping_every
                .is_some()
        );
        assert_eq!(setup(None, Some("1"), None, 7), None);
        assert_eq!(setup(Some(OsStr::new("")), None, None, 7), None);
        assert_eq!(setup(Some(OsStr::new("vsock:2:9")), None, None, 7), None);
        assert_eq!(setup(path, Some("junk"), None, 7).unwrap().ping_every, None);
    }

    #[test]
    fn messages_arrive_as_datagrams_and_the_watchdog_pings_every_half_period() {
        let dir = std::env::temp_dir().join(format!("iotbox-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).expect("bind");
        let t0 = Instant::now();
        let setup = Setup {
            socket: Target::Path(path.clone()),
            ping_every: Some(Duration::from_secs(5)),
        };
        let mut n = Notifier::new(&setup, t0).expect("notifier");
        let mut got = Vec::new();
        let mut recv = |expect: &str| {
            let mut buf = [0u8; 256];
            let len = listener.recv(&mut buf).expect("recv");
            got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
            assert_eq!(got.last().map(String::as_str), Some(expect));
        };
        assert_eq!(n.poll_timeout(), Some(t0), "a first ping at once");
        n.handle_timeout(t0);
        recv("WATCHDOG=1");
        assert_eq!(n.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        n.handle_timeout(t0 + Duration::from_secs(4));
        n.ready("connected");
        recv("READY=1\nSTATUS=connected");
        n.ready("again");
        recv("STATUS=again");
        n.stopping();
        recv("STOPPING=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
