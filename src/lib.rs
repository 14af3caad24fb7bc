//! iotbox: one small static binary that lets a Raspberry Pi (or any embedded
//! Linux box) talk to AWS IoT Core over MQTT 5 with its X.509 device
//! certificate, through two UNIX sockets and a local MQTT endpoint.
//!
//! It replaces, drop-in, the AWS SDK's `mqtt5_pubsub` sample patched to serve
//! sockets plus the small C tool `awsapp`: the same command lines, socket paths,
//! message files and output lines keep working.
//!
//! # Layout
//!
//! The tree follows the data path: device side (local programs) → store (the
//! spool) → broker side (AWS IoT), and back.
//!
//! ```text
//! main.rs                the executable: argv -> applets::dispatch -> exit code
//! lib.rs                 this map
//! applets/               what a user runs
//!   mod.rs               BusyBox-style dispatch on argv[0] / first argument,
//!                        usage, --version, --install
//!   send.rs              send: validate a message file, write it, wait for
//!                        OK/ERR/QUEUED
//!   recv.rs              recv: listen on the delivery socket, print messages
//!   spool.rs             spool: what waits in a spool directory
//!   provision/           provision: fleet provisioning by claim over a TLS
//!                        connection of its own (mod.rs), the new key and its
//!                        PKCS#10 request (csr.rs), the identity's files
//!                        written atomically, key first (identity.rs)
//!   status.rs            status: the running daemon's state, asked over its
//!                        local MQTT endpoint ($iotbox/status); the thing name
//!                        the device applets use
//!   mqtt.rs              the applets' blocking MQTT 5 client: deadlines,
//!                        requests answered by client token, keep-alive
//!   shadow.rs            shadow: get, update, delete, watch the thing's
//!                        device shadow (classic or named)
//!   jobs.rs              jobs: the AWS IoT Jobs runner (start-next, the
//!                        handler in its own process group, the report)
//! cli.rs                 every applet's flags (argh), SDK spellings normalized
//! error.rs               the applets' error type and the exit code scheme
//! json.rs                JSON: flat objects written (the status), any
//!                        document read and written back compact
//! output.rs              stdout and log lines: say, the loggers, the daemon's
//!                        never-blocking Sink, the log Throttle, the UTC date
//! message.rs             the `topic\npayload` format: parse, validate, encode;
//!                        the 10 s read deadline of both sockets
//! sys.rs                 which system call errors mean "not now"
//! topic.rs               topic filters: matches, covers (the `$` rule
//!                        included), pure; for routing among local clients
//! unix_socket.rs         binding a listening socket safely (stale vs. live
//!                        vs. not a socket)
//! daemon/                the pubsub applet
//!   mod.rs               flags -> Config (validated, TLS loaded, once)
//!   event_loop.rs        the one mio::Poll: waits, reads the clock, dispatches
//!                        tokens, executes what the state machines ask for
//!   event_loop/local.rs  its decisions for the local MQTT endpoint: local
//!                        publishes into the spool, subscriptions through
//!                        the routing table, messages out to local clients
//!   event_loop/status.rs the daemon's own topic $iotbox/status, and the
//!                        certificate's expiry warning
//!   notify.rs            systemd's sd_notify: READY, STATUS, STOPPING,
//!                        the watchdog pinged from the loop
//!   codec/               the only user of rumqttc's codec
//!     mod.rs             the client side (to the broker); works around its
//!                        known bugs (each has a regression test); the
//!                        attributes (retain, properties) that pass through
//!     server.rs          the server side (local clients, 3.1.1 and 5),
//!                        strict: what a server must refuse, refused
//!   backoff.rs           retry delays with full jitter (broker and delivery)
//!   device/              the local side
//!     publish_socket.rs  publish socket clients: Table (pure: ids, limits,
//!                        deadlines) and the I/O that reads and answers them
//!     delivery.rs        received messages to the delivery socket: Outbox
//!                        (pure: window, retries, write deadline) and the I/O
//!     local/             the local MQTT endpoint
//!       mod.rs           listeners (UNIX, loopback TCP) and the byte pump
//!       client.rs        one local client's protocol, sans-IO: CONNECT,
//!                        keep-alive, will, receive maximum, bounded output
//!       routes.rs        local subscriptions and the fewest upstream
//!                        filters that cover them, pure; fan-out
//!   store/               the spool: every accepted message, both directions,
//!                        on disk until done
//!     mod.rs             Spool: size and age limits, --when_full, the lock,
//!                        a failed sync, the fallback to memory
//!     log.rs             one direction: append-only segments, group commit,
//!                        done marks, recovery that never fails (sans-IO)
//!     record.rs          the bytes of a record (crc32, length, body), pure
//!     disk.rs            the file operations behind a trait: a directory,
//!                        memory (and a simulated disk in the tests)
//!     syncer.rs          the sync thread: fdatasync away from the loop,
//!                        one commit at a time, wakes the loop when done
//!   broker/              the AWS side
//!     link.rs            the connection's life cycle, sans-IO: resolve,
//!                        connect, backoff, first-connection rules, shutdown
//!     session.rs         the MQTT 5 session, sans-IO: bytes and commands in,
//!                        bytes, deadlines and events out
//!     transport.rs       non-blocking TCP (+ HTTP CONNECT tunnel) + rustls pump
//!     proxy.rs           the HTTP CONNECT request and reply, pure
//!     tls.rs             rustls ClientConfig, PEM loading, CA defaults, TLS
//!                        errors in words (the 1970 clock, a refused cert)
//!     validity.rs        the device certificate's notAfter (a minimal DER
//!                        walker), days left, the expiry warning, pure
//!     crypto.rs          the *ring* provider, trimmed to AES-GCM suites (size)
//!     resolve.rs         DNS on a short-lived thread that wakes the loop
//!     rate.rs            --max_rate: publishes per second (GCRA), pure
//! ```
//!
//! # Design
//!
//! One thread runs one `mio::Poll` over the publish socket's clients, the
//! local MQTT clients, the delivery connection, the broker connection,
//! signals and a waker. Protocol
//! and policy are state machines that never touch a socket or read the clock
//! (in the style of quinn-proto): the MQTT session, the link's life cycle,
//! the publish socket's client table, each local MQTT client, the routing
//! table, the spool's logs (whose files sit
//! behind a trait). The event loop feeds them input and the time, then
//! drains their output, their next deadline and their events; at the end of
//! each turn one commit writes everything accepted in it, and once its
//! fdatasync (on the spool's sync thread, while the loop goes on) is done,
//! the clients are answered and the messages acknowledged to the broker.
//! That keeps the logic testable in virtual time and the daemon idle between
//! keep-alive pings. rustls is driven the same way (sans-IO). Two other
//! threads only block so the loop need not: one writes the daemon's
//! output, so a reader that stops reading never stops the loop (see
//! [`output`]), one syncs the spool (DNS lookups get a short-lived one).
//!
//! The documents in `docs/` describe what users can rely on (the socket
//! protocol, operation) and how the code is built (`docs/architecture.md`).

#![forbid(unsafe_code)]

pub mod applets;
pub mod cli;
pub mod daemon;
pub mod error;
pub mod json;
pub mod message;
pub mod output;
pub mod sys;
pub mod topic;
pub mod unix_socket;
