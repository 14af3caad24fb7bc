//! The broker side: everything between the daemon and AWS IoT Core.
//!
//! [`session`] speaks MQTT 5 and [`link`] decides when to connect, retry or
//! give up; both are sans-IO. [`transport`] moves their bytes through TCP,
//! an optional proxy tunnel and rustls.

pub mod crypto;
pub mod link;
pub mod proxy;
pub mod rate;
pub mod resolve;
pub mod session;
pub mod tls;
pub mod transport;
pub mod validity;
