//! The file operations the spool uses, behind one small trait, so that the
//! same log runs on a real directory ([`DirDisk`]), in memory ([`MemDisk`],
//! the `--spool_dir none` queue) and, in tests, on a simulated disk that
//! loses what was not synced when the power is cut.
//!
//! Files are named, flat, in one directory. The promises a caller may rely
//! on are the POSIX ones the simulation enforces: bytes appended are durable
//! only after [`Disk::sync`] of that file returned `Ok`; a file's existence
//! (created or removed) only after [`Disk::sync_dir`]; after a failed sync,
//! nothing unsynced in that file can be trusted.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub trait Disk {
    /// The names of the files in the directory, in any order.
    fn list(&mut self) -> io::Result<Vec<String>>;
    /// Creates an empty file; an existing one is an error.
    fn create(&mut self, name: &str) -> io::Result<()>;
    /// Appends all of `data`. After an error, part of it may be there.
    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Makes what was appended to the file durable (fdatasync).
    fn sync(&mut self, name: &str) -> io::Result<()>;
    /// Makes the creations and removals of files durable (fsync of the
    /// directory).
    fn sync_dir(&mut self) -> io::Result<()>;
    /// Reads from `offset`; fewer bytes than `buf` holds only at the end.
    fn read_at(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// The file's length.
    fn len(&mut self, name: &str) -> io::Result<u64>;
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Whether what [`Disk::sync`] makes durable survives the process: false
    /// for memory.
    fn is_durable(&self) -> bool;
    /// A descriptor of the file of its own, for another thread to sync
    /// (`None`: this disk syncs only through [`Disk::sync`]).
    fn sync_handle(&mut self, name: &str) -> Option<io::Result<File>> {
        let _ = name;
        None
    }
}

/// Files in a directory of the real file system.
///
/// Keeps the directory and the last four files it touched open (in each
/// direction, the one being appended to and the one being read): a steady
/// stream costs no `open(2)`, and, a file being closed before another is
/// opened, the spool never needs more than five descriptors (seven while
/// the sync thread holds its duplicates of the two being appended to).
#[derive(Debug)]
pub struct DirDisk {
    dir: PathBuf,
    handle: File,
    open: Vec<(String, File)>,
}

/// Files kept open at once.
const OPEN_FILES: usize = 4;

impl DirDisk {
    /// Uses `dir`, creating it (mode 0700) when missing.
    pub fn new(dir: &Path) -> io::Result<DirDisk> {
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(e),
        }
        Ok(DirDisk {
            dir: dir.to_owned(),
            handle: File::open(dir)?,
            open: Vec::new(),
        })
    }

    fn file(&mut self, name: &str) -> io::Result<&File> {
        if let Some(i) = self.open.iter().position(|(n, _)| n == name) {
            let entry = self.open.remove(i);
            self.open.push(entry);
        } else {
            if self.open.len() == OPEN_FILES {
                self.open.remove(0);
            }
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(self.dir.join(name))?;
            self.open.push((name.to_owned(), file));
        }
        match self.open.last() {
            Some((_, file)) => Ok(file),
            None => Err(io::Error::other("no open file")),
        }
    }

    fn forget(&mut self, name: &str) {
        self.open.retain(|(n, _)| n != name);
    }
}

impl Disk for DirDisk {
    fn sync_handle(&mut self, name: &str) -> Option<io::Result<File>> {
        Some(self.file(name).and_then(File::try_clone))
    }

    fn list(&mut self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        self.forget(name);
        if self.open.len() == OPEN_FILES {
            self.open.remove(0);
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(self.dir.join(name))?;
        self.open.push((name.to_owned(), file));
        Ok(())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut file = self.file(name)?;
        file.write_all(data)
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.file(name)?.sync_data()
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        self.handle.sync_all()
    }

    fn read_at(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let file = self.file(name)?;
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn len(&mut self, name: &str) -> io::Result<u64> {
        Ok(self.file(name)?.metadata()?.len())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.forget(name);
        fs::remove_file(self.dir.join(name))
    }

    fn is_durable(&self) -> bool {
        true
    }
}

/// Files in memory: the `--spool_dir none` queue, and arbitrary segments
/// for the fuzzer. Gone when the process ends.
#[derive(Debug, Default, Clone)]
pub struct MemDisk {
    pub files: BTreeMap<String, Vec<u8>>,
}

/// `read_at` on a file held as bytes: what there is from `offset`, as much
/// as `buf` takes.
pub(super) fn read_bytes_at(file: &[u8], offset: u64, buf: &mut [u8]) -> usize {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(file.len());
    let n = buf.len().min(file.len() - start);
    buf[..n].copy_from_slice(&file[start..start + n]);
    n
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
}

impl Disk for MemDisk {
    fn list(&mut self) -> io::Result<Vec<String>> {
        Ok(self.files.keys().cloned().collect())
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        if self.files.contains_key(name) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, name));
        }
        self.files.insert(name.to_owned(), Vec::new());
        Ok(())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let file = self.files.get_mut(name).ok_or_else(|| not_found(name))?;
        file.extend_from_slice(data);
        Ok(())
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.files
            .get(name)
            .map(|_| ())
            .ok_or_else(|| not_found(name))
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn read_at(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let file = self.files.get(name).ok_or_else(|| not_found(name))?;
        Ok(read_bytes_at(file, offset, buf))
    }

    fn len(&mut self, name: &str) -> io::Result<u64> {
        let file = self.files.get(name).ok_or_else(|| not_found(name))?;
        Ok(file.len() as u64)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.files
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found(name))
    }

    fn is_durable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(disk: &mut dyn Disk) {
        disk.create("a").unwrap();
        assert!(disk.create("a").is_err(), "create is exclusive");
        disk.append("a", b"hello ").unwrap();
        disk.append("a", b"world").unwrap();
        disk.sync("a").unwrap();
        disk.sync_dir().unwrap();
        assert_eq!(disk.len("a").unwrap(), 11);
        let mut buf = [0; 8];
        assert_eq!(disk.read_at("a", 6, &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"world");
        for name in ["b", "c", "d", "e", "f"] {
            disk.create(name).unwrap(); // more files than are kept open
        }
        disk.append("a", b"!").unwrap();
        assert_eq!(disk.len("a").unwrap(), 12);
        let mut names = disk.list().unwrap();
        names.sort();
        assert_eq!(names, ["a", "b", "c", "d", "e", "f"]);
        disk.remove("b").unwrap();
        assert!(disk.len("b").is_err());
        assert!(disk.append("b", b"x").is_err());
    }

    #[test]
    fn the_real_directory_and_memory_behave_alike() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let mut real = DirDisk::new(&path).unwrap();
        exercise(&mut real);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        exercise(&mut MemDisk::default());
    }
}
