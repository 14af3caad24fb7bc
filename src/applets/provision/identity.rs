//! The device's identity on disk: `DIR/device.private.key` (0600),
//! `DIR/device.cert.pem` (0644) and `DIR/thing_name` (0644, one line),
//! written so that no interruption leaves a certificate beside a key that
//! is not its own.
//!
//! Each file is written to a temporary file in the same directory (the key
//! created 0600, never readable by others even for a moment), synced, and
//! renamed over its name; the directory is synced after each rename, so the
//! renames reach the disk in their order. The key goes first: the key
//! exists nowhere else, the certificate is public (AWS keeps it, under its
//! certificate id). What a crash leaves:
//!
//! | crash | left in DIR |
//! |---|---|
//! | before the key's rename | the old identity, whole (or none), and `.tmp-` files |
//! | after the key's rename, before the certificate's | the new key beside the old certificate (or none): not a pair, the daemon says the key does not belong to the certificate; the new certificate in its `.tmp-` file; a new run needs `--force` |
//! | after the certificate's rename, before thing_name's | the new pair, whole; the old thing name (or none) |
//! | after thing_name's | the new identity |
//!
//! A new certificate is never beside the old key. Temporary files are
//! removed on every error this process sees (not after a crash: then they
//! are the only copy of what was being written).

use crate::error::{Error, runtime};
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const KEY_FILE: &str = "device.private.key";
pub const CERT_FILE: &str = "device.cert.pem";
pub const THING_FILE: &str = "thing_name";

/// Refuses when `dir` already holds a certificate or key, unless `force`.
/// Called before connecting: nothing is asked of the broker for a device
/// that will not take the answer.
pub fn check_free(dir: &Path, force: bool) -> Result<(), Error> {
    if force {
        return Ok(());
    }
    for name in [CERT_FILE, KEY_FILE] {
        let path = dir.join(name);
        // A dangling symlink is there too.
        if fs::symlink_metadata(&path).is_ok() {
            return Err(runtime!(
                "{} already exists: this device has an identity; pass --force to replace it (nothing was changed)",
                path.display()
            ));
        }
    }
    Ok(())
}

/// The new identity's files, written beside their final names and not yet
/// in place. Dropped without [`Staged::commit`], it removes what it wrote
/// (and `DIR`, if it made it and it is empty).
pub struct Staged {
    dir: PathBuf,
    made_dir: bool,
    /// (temporary file, final name), in the order they are renamed.
    files: Vec<(PathBuf, &'static str)>,
}

impl Staged {
    /// Makes `dir` (0755, whatever the umask) when missing and writes the key's temporary file,
    /// so that a directory that cannot be written fails before the broker
    /// is asked for anything.
    pub fn begin(dir: &Path, key_pem: &str) -> Result<Staged, Error> {
        let made_dir = !dir.exists();
        if made_dir {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .and_then(|()| fs::set_permissions(dir, Permissions::from_mode(0o755)))
                .map_err(|e| runtime!("cannot make {}: {e}", dir.display()))?;
        }
        let mut staged = Staged {
            dir: dir.to_path_buf(),
            made_dir,
            files: Vec::new(),
        };
        staged.add(KEY_FILE, key_pem.as_bytes(), 0o600)?;
        Ok(staged)
    }

    pub fn add_cert(&mut self, pem: &str) -> Result<(), Error> {
        self.add(CERT_FILE, pem.as_bytes(), 0o644)
    }

    pub fn add_thing_name(&mut self, name: &str) -> Result<(), Error> {
        self.add(THING_FILE, format!("{name}\n").as_bytes(), 0o644)
    }

    /// Where the staged file for `name` is, to check it before commit.
    pub fn staged(&self, name: &str) -> Option<&Path> {
        self.files
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(tmp, _)| tmp.as_path())
    }

    fn add(&mut self, name: &'static str, contents: &[u8], mode: u32) -> Result<(), Error> {
        let tmp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| runtime!("cannot create {}: {e}", tmp.display()))?;
        // Recorded at once, so an error below removes it.
        self.files.push((tmp.clone(), name));
        // The umask may have taken bits the certificate needs (0644).
        file.set_permissions(Permissions::from_mode(mode))
            .and_then(|()| file.write_all(contents))
            .and_then(|()| file.sync_all())
            .map_err(|e| runtime!("cannot write {}: {e}", tmp.display()))
    }

    /// Renames every file into place, key first (see the module's table),
    /// syncing the directory after each. Without `force`, refuses if an
    /// identity appeared meanwhile.
    pub fn commit(mut self, force: bool) -> Result<(), Error> {
        check_free(&self.dir, force)?;
        let dir = File::open(&self.dir)
            .map_err(|e| runtime!("cannot open {}: {e}", self.dir.display()))?;
        let order = [KEY_FILE, CERT_FILE, THING_FILE];
        self.files
            .sort_by_key(|(_, name)| order.iter().position(|n| n == name));
        while !self.files.is_empty() {
            let (tmp, name) = &self.files[0];
            let path = self.dir.join(name);
            fs::rename(tmp, &path).map_err(|e| {
                runtime!("cannot rename {} to {}: {e}", tmp.display(), path.display())
            })?;
            self.files.remove(0);
            self.made_dir = false;
            dir.sync_all()
                .map_err(|e| runtime!("cannot sync {}: {e}", self.dir.display()))?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (tmp, _) in &self.files {
            let _ = fs::remove_file(tmp);
        }
        if self.made_dir {
            // Only if empty: whatever else is there is someone's.
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn write_all(dir: &Path, key: &str, cert: &str, thing: &str, force: bool) -> Result<(), Error> {
        let mut staged = Staged::begin(dir, key)?;
        staged.add_cert(cert)?;
        staged.add_thing_name(thing)?;
        staged.commit(force)
    }

    #[test]
    fn files_modes_and_a_made_directory() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("etc/iotbox");
        check_free(&dir, false).unwrap();
        write_all(&dir, "KEY", "CERT", "pump-7", false).unwrap();
        assert_eq!(names(&dir), [CERT_FILE, KEY_FILE, THING_FILE]);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join(CERT_FILE)), 0o644);
        assert_eq!(mode(&dir.join(THING_FILE)), 0o644);
        assert_eq!(mode(&dir), 0o755);
        assert_eq!(
            fs::read_to_string(dir.join(THING_FILE)).unwrap(),
            "pump-7\n"
        );
        assert_eq!(fs::read_to_string(dir.join(KEY_FILE)).unwrap(), "KEY");
    }

    #[test]
    fn an_identity_is_kept_without_force_and_replaced_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        write_all(dir, "KEY1", "CERT1", "one", false).unwrap();
        for name in [CERT_FILE, KEY_FILE] {
            let err = check_free(dir, false).unwrap_err();
            assert_eq!(err.exit_code(), 1);
            assert!(err.to_string().contains("--force"), "{err}");
            // Either file alone is an identity.
            let other = if name == CERT_FILE {
                KEY_FILE
            } else {
                CERT_FILE
            };
            let aside = dir.join("aside");
            fs::rename(dir.join(other), &aside).unwrap();
            let err = check_free(dir, false).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
            fs::rename(&aside, dir.join(other)).unwrap();
        }
        // Refused at commit too, and nothing changed or left behind.
        let err = write_all(dir, "KEY2", "CERT2", "two", false).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(fs::read_to_string(dir.join(KEY_FILE)).unwrap(), "KEY1");
        assert_eq!(names(dir), [CERT_FILE, KEY_FILE, THING_FILE]);
        // With force: replaced, same modes.
        check_free(dir, true).unwrap();
        write_all(dir, "KEY2", "CERT2", "two", true).unwrap();
        assert_eq!(fs::read_to_string(dir.join(KEY_FILE)).unwrap(), "KEY2");
        assert_eq!(fs::read_to_string(dir.join(CERT_FILE)).unwrap(), "CERT2");
        assert_eq!(fs::read_to_string(dir.join(THING_FILE)).unwrap(), "two\n");
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        assert_eq!(names(dir), [CERT_FILE, KEY_FILE, THING_FILE]);
    }

    #[test]
    fn an_abandoned_identity_leaves_nothing() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("new");
        let mut staged = Staged::begin(&dir, "KEY").unwrap();
        let tmp = staged.staged(KEY_FILE).unwrap().to_path_buf();
        assert_eq!(mode(&tmp), 0o600);
        staged.add_cert("CERT").unwrap();
        drop(staged);
        assert!(!tmp.exists());
        assert!(!dir.exists(), "the directory it made goes too");

        // In a directory that was there: it stays, with what else it held.
        let dir = top.path().join("old");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("other"), "x").unwrap();
        drop(Staged::begin(&dir, "KEY").unwrap());
        assert_eq!(names(&dir), ["other"]);
    }

    #[test]
    fn an_unwritable_place_fails_before_anything_is_asked() {
        let top = tempfile::tempdir().unwrap();
        let file = top.path().join("plain");
        fs::write(&file, "x").unwrap();
        let err = Staged::begin(&file, "KEY").err().unwrap();
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().contains("plain"), "{err}");
        let err = Staged::begin(&file.join("below"), "KEY").err().unwrap();
        assert!(err.to_string().starts_with("cannot make"), "{err}");
    }
}
