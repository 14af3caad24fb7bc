//! Which errors of a non-blocking system call mean "not now" rather than
//! "failed": named once instead of in every match arm.

use rustix::io::Errno;
use std::io;

/// The call would have blocked: wait for readiness and try again.
pub fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// A signal interrupted the call: try again at once.
pub fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// The process (EMFILE) or the system (ENFILE) ran out of descriptors.
pub fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(Errno::from_io_error(e), Some(Errno::MFILE | Errno::NFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert!(would_block(&io::ErrorKind::WouldBlock.into()));
        assert!(interrupted(&io::Error::from_raw_os_error(
            Errno::INTR.raw_os_error()
        )));
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(
            Errno::MFILE.raw_os_error()
        )));
        assert!(!out_of_descriptors(&io::ErrorKind::WouldBlock.into()));
    }
}
