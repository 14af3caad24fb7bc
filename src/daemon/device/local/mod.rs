//! The local MQTT endpoint: local programs speak MQTT 3.1.1 or 5 to the
//! daemon, over a UNIX socket or loopback TCP, and share its one broker
//! connection.

pub mod routes;
