//! Binding a listening UNIX socket without ever destroying someone else's
//! file: a path that is not a socket is left alone, a socket that answers a
//! connect belongs to a live process, and only a stale socket is replaced.

use std::fmt;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum BindError {
    /// The path exists and is not a socket: never removed.
    NotASocket(PathBuf),
    /// A process is listening there: a connect succeeded.
    InUse(PathBuf),
    Io(PathBuf, io::Error),
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::NotASocket(p) => write!(
                f,
                "{} exists and is not a socket; it was left alone: remove it or choose another path",
                p.display()
            ),
            BindError::InUse(p) => write!(
                f,
                "{} is in use: another process is listening on it; stop that one first or choose another path",
                p.display()
            ),
            BindError::Io(p, e) => write!(f, "cannot listen on {}: {e}", p.display()),
        }
    }
}

/// Binds `path`, replacing a stale socket left by a process that died.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(BindError::NotASocket(path.to_owned()));
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                log::info!("replacing stale socket {}", path.display());
                std::fs::remove_file(path).map_err(|e| BindError::Io(path.to_owned(), e))?;
            }
            // Gone in between, or not ours to judge: let bind() decide.
            Err(_) => {}
        },
        Err(_) => {}
    }
    UnixListener::bind(path).map_err(|e| BindError::Io(path.to_owned(), e))
}

/// Removes the socket at `path` if it is still a socket (never a file that
/// replaced it in the meantime).
pub fn remove(path: &Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory (removed when dropped) and a socket path in it.
    fn temp_path() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("iotbox-us-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("sock");
        (dir, path)
    }

    #[test]
    fn regular_file_is_left_alone() {
        let (_dir, path) = temp_path();
        std::fs::write(&path, b"precious").unwrap();
        assert!(matches!(bind(&path), Err(BindError::NotASocket(_))));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        remove(&path);
        assert!(path.exists());
    }

    #[test]
    fn live_socket_is_in_use_and_stale_one_is_replaced() {
        let (_dir, path) = temp_path();
        let live = bind(&path).unwrap();
        assert!(matches!(bind(&path), Err(BindError::InUse(_))));
        drop(live); // the file stays: now it is stale
        assert!(path.exists());
        let again = bind(&path).unwrap();
        drop(again);
        remove(&path);
        assert!(!path.exists());
    }
}
