//! The device side: the local programs' two UNIX sockets.
//!
//! [`publish_socket`] takes messages in (`topic\npayload`, answered
//! `OK`/`ERR`/`QUEUED`); [`delivery`] pushes received messages out, one
//! connection each.

pub mod delivery;
pub mod local;
pub mod publish_socket;
