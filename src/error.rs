//! The error every applet returns, and the exit code scheme.
//!
//! Applets never call `process::exit`: they return `Err(Error)`, and `main`
//! prints its message as one line on stderr and exits with its code:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | runtime failure: a file, socket, certificate or the broker said no |
//! | 2 | usage: a flag or argument is wrong; nothing was attempted |
//! | 3 | `send`: the daemon accepted the message but the broker has not confirmed it yet; `status`, `provision`: no answer in time |

use std::fmt;

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// Bad command line: exit 2.
    Usage(String),
    /// Something at run time failed: exit 1.
    Runtime(String),
    /// Accepted and kept, not (yet) confirmed by the broker: exit 3.
    NotConfirmed(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Runtime(_) => 1,
            Error::Usage(_) => 2,
            Error::NotConfirmed(_) => 3,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Runtime(m) | Error::NotConfirmed(m) => f.write_str(m),
        }
    }
}

/// Shorthand for a runtime error built with `format!`.
macro_rules! runtime {
    ($($arg:tt)*) => { $crate::error::Error::Runtime(format!($($arg)*)) };
}

/// Shorthand for a usage error built with `format!`.
macro_rules! usage {
    ($($arg:tt)*) => { $crate::error::Error::Usage(format!($($arg)*)) };
}

pub(crate) use {runtime, usage};
