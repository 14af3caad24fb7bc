//! A simulated disk for the spool's tests: deterministic, seeded, and as
//! unkind as POSIX allows (in the style of the FoundationDB and TigerBeetle
//! simulators).
//!
//! Each file has its durable bytes (as of its last successful sync) and its
//! current bytes (what reads see); the directory has its durable entries (as
//! of the last successful `sync_dir`) and its current ones. A seeded
//! generator decides everything left open:
//!
//! - [`SimDisk::crash`]: the disk after a power cut. Each file keeps its
//!   durable bytes and a prefix of what was appended since (whole writes,
//!   then maybe part of one); the last write kept may be torn (its final
//!   bytes garbage). A file created since the last `sync_dir` may be gone; a
//!   file removed since may be back, with its durable bytes.
//! - [`SimDisk::cut_after`]: the power goes after `k` operations (writes,
//!   syncs, creations, removals): the next one may have happened in part,
//!   and every call after it fails. [`SimDisk::crash`] then gives what a
//!   restart finds.
//! - [`Faults`]: a call fails with EIO at seeded points. An append that
//!   fails may have written part of its bytes; a sync that fails may have
//!   dropped the file's unsynced bytes for good (Linux marks the pages clean:
//!   "fsyncgate"), so they never become durable, not even by a later sync
//!   that succeeds.

use super::disk::Disk;
use std::collections::{BTreeMap, BTreeSet};
use std::io;

/// splitmix64: small, fast, good enough to decide faults, and the same on
/// every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// An index in `0..n` (0 when `n` is 0).
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// True once in `n` times; never when `n` is 0.
    pub fn one_in(&mut self, n: u32) -> bool {
        n != 0 && self.below(u64::from(n)) == 0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.index(i + 1));
        }
    }
}

/// How often each kind of call fails, as "once in n calls" (0: never).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    pub create: u32,
    pub append: u32,
    pub sync: u32,
    pub sync_dir: u32,
    pub remove: u32,
    /// `list`, `read_at` and `len`.
    pub read: u32,
}

#[derive(Debug, Clone, Default)]
struct File {
    /// As of the last successful sync.
    durable: Vec<u8>,
    /// What reads see.
    current: Vec<u8>,
    /// Where each write since the last successful sync starts in `current`.
    writes: Vec<usize>,
    /// A failed sync dropped `current[durable.len()..dropped_until]`: those
    /// bytes never become durable.
    dropped_until: usize,
}

impl File {
    fn new(content: Vec<u8>) -> File {
        File {
            durable: content.clone(),
            current: content,
            writes: Vec::new(),
            dropped_until: 0,
        }
    }

    fn append(&mut self, data: &[u8]) {
        if !data.is_empty() {
            self.writes.push(self.current.len());
            self.current.extend_from_slice(data);
        }
    }

    fn sync(&mut self) {
        let mut durable = self.current.clone();
        if self.dropped_until > self.durable.len() {
            durable[self.durable.len()..self.dropped_until].fill(0); // dropped pages stay lost
        }
        self.durable = durable;
        self.writes.clear();
        self.dropped_until = 0;
    }

    /// The bytes a restart finds after a power cut.
    fn after_crash(&self, rng: &mut Rng) -> Vec<u8> {
        let mut out = self.durable.clone();
        if self.dropped_until > self.durable.len() {
            return out;
        }
        let Some(w) = (!self.writes.is_empty()).then(|| rng.index(self.writes.len() + 1)) else {
            return out;
        };
        // Writes before `w` are kept whole, `w` (if any) in part.
        let end = |i: usize| {
            self.writes
                .get(i + 1)
                .copied()
                .unwrap_or(self.current.len())
        };
        let (last_start, keep) = if w == self.writes.len() {
            (self.writes[w - 1], self.current.len())
        } else {
            let start = self.writes[w];
            (start, start + rng.index(end(w) - start + 1))
        };
        let keep = keep.max(self.durable.len());
        out.extend_from_slice(&self.current[self.durable.len()..keep]);
        // The last write kept may be torn: its last bytes are garbage.
        let torn_room = keep.saturating_sub(last_start.max(self.durable.len()));
        if torn_room > 0 && rng.one_in(2) {
            let n = 1 + rng.index(torn_room.min(16));
            let garbage = rng.bytes(n);
            let len = out.len();
            out[len - n..].copy_from_slice(&garbage);
        }
        out
    }
}

/// A directory of files in memory that forgets what was not synced when
/// the power is cut. Reads see everything written, like a page cache.
#[derive(Debug, Clone)]
pub struct SimDisk {
    rng: Rng,
    faults: Faults,
    /// Every file ever created, removed ones too (they may come back).
    files: Vec<File>,
    names: BTreeMap<String, usize>,
    durable_names: BTreeMap<String, usize>,
    /// Writes, syncs, creations and removals so far.
    ops: u64,
    cut_after: Option<u64>,
    /// Calls that failed by fault injection.
    pub failures: u64,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated EIO ({what})"))
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
}

/// What an operation may do: go ahead, fail, or be the one the power went
/// during.
enum Gate {
    Go,
    Fault,
    Cut,
}

impl SimDisk {
    pub fn new(seed: u64) -> SimDisk {
        SimDisk {
            rng: Rng::new(seed),
            faults: Faults::default(),
            files: Vec::new(),
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            ops: 0,
            cut_after: None,
            failures: 0,
        }
    }

    /// A disk holding `files`, all durable.
    pub fn with_files(seed: u64, files: BTreeMap<String, Vec<u8>>) -> SimDisk {
        let mut disk = SimDisk::new(seed);
        for (name, content) in files {
            disk.files.push(File::new(content));
            disk.names.insert(name.clone(), disk.files.len() - 1);
            disk.durable_names.insert(name, disk.files.len() - 1);
        }
        disk
    }

    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// The power goes after `k` more operations (writes, syncs, creations,
    /// removals) than done so far: the next one may happen in part, and
    /// every call after it fails.
    pub fn cut_after(&mut self, k: u64) {
        self.cut_after = Some(self.ops + k);
    }

    /// Writes, syncs, creations and removals so far.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// The power is off: every call fails.
    pub fn is_cut(&self) -> bool {
        self.cut_after.is_some_and(|k| self.ops > k)
    }

    /// What reads see now, by name.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.names
            .iter()
            .map(|(name, &id)| (name.clone(), self.files[id].current.clone()))
            .collect()
    }

    /// The disk a restart finds after a power cut now (or at the cut, if
    /// the power already went): durable bytes, a seeded prefix of the rest,
    /// maybe torn; entries as of the last `sync_dir`, or not. The new disk
    /// holds all of it durably, with no faults and no cut.
    pub fn crash(&mut self) -> SimDisk {
        let all: BTreeSet<&String> = self.names.keys().chain(self.durable_names.keys()).collect();
        let mut image = BTreeMap::new();
        for name in all {
            let now = self.names.get(name).copied();
            let before = self.durable_names.get(name).copied();
            let content = match (now, before) {
                (Some(c), Some(d)) if c == d => Some(self.files[c].after_crash(&mut self.rng)),
                // Removed and created again: either one.
                (Some(c), Some(d)) => Some(if self.rng.one_in(2) {
                    self.files[c].after_crash(&mut self.rng)
                } else {
                    self.files[d].durable.clone()
                }),
                // Created: there, or not.
                (Some(c), None) => {
                    (!self.rng.one_in(2)).then(|| self.files[c].after_crash(&mut self.rng))
                }
                // Removed: gone, or back as it was.
                (None, Some(d)) => self.rng.one_in(2).then(|| self.files[d].durable.clone()),
                (None, None) => None,
            };
            if let Some(content) = content {
                image.insert(name.clone(), content);
            }
        }
        SimDisk::with_files(self.rng.next_u64(), image)
    }

    /// Counts an operation that changes something; says whether it happens.
    fn gate(&mut self, fault: u32) -> Gate {
        if self.is_cut() {
            return Gate::Fault;
        }
        self.ops += 1;
        if self.is_cut() {
            return Gate::Cut;
        }
        if self.rng.one_in(fault) {
            self.failures += 1;
            return Gate::Fault;
        }
        Gate::Go
    }

    /// A read: fails after the cut and by fault injection.
    fn read_gate(&mut self) -> io::Result<()> {
        if self.is_cut() {
            return Err(eio("power cut"));
        }
        if self.rng.one_in(self.faults.read) {
            self.failures += 1;
            return Err(eio("read"));
        }
        Ok(())
    }

    fn id(&self, name: &str) -> io::Result<usize> {
        self.names.get(name).copied().ok_or_else(|| not_found(name))
    }
}

impl Disk for SimDisk {
    fn list(&mut self) -> io::Result<Vec<String>> {
        self.read_gate()?;
        Ok(self.names.keys().cloned().collect())
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        if self.names.contains_key(name) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, name));
        }
        let gate = self.gate(self.faults.create);
        if matches!(gate, Gate::Fault) {
            return Err(eio("create"));
        }
        self.files.push(File::default());
        self.names.insert(name.to_owned(), self.files.len() - 1);
        match gate {
            Gate::Cut => Err(eio("power cut")),
            _ => Ok(()),
        }
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let id = self.id(name)?;
        match self.gate(self.faults.append) {
            Gate::Go => {
                self.files[id].append(data);
                Ok(())
            }
            Gate::Cut => {
                // Whatever of it reaches the disk is up to crash().
                self.files[id].append(data);
                Err(eio("power cut"))
            }
            Gate::Fault if self.is_cut() => Err(eio("power cut")),
            Gate::Fault => {
                let part = self.rng.index(data.len() + 1);
                self.files[id].append(&data[..part]);
                Err(eio("append"))
            }
        }
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        let id = self.id(name)?;
        match self.gate(self.faults.sync) {
            Gate::Go => {
                self.files[id].sync();
                Ok(())
            }
            Gate::Cut => Err(eio("power cut")),
            Gate::Fault if self.is_cut() => Err(eio("power cut")),
            Gate::Fault => {
                if self.rng.one_in(2) {
                    let file = &mut self.files[id];
                    file.dropped_until = file.current.len();
                }
                Err(eio("sync"))
            }
        }
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        match self.gate(self.faults.sync_dir) {
            Gate::Go => {
                self.durable_names = self.names.clone();
                Ok(())
            }
            Gate::Cut => Err(eio("power cut")),
            Gate::Fault => Err(eio("sync_dir")),
        }
    }

    fn read_at(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.read_gate()?;
        let file = &self.files[self.id(name)?].current;
        Ok(super::disk::read_bytes_at(file, offset, buf))
    }

    fn len(&mut self, name: &str) -> io::Result<u64> {
        self.read_gate()?;
        Ok(self.files[self.id(name)?].current.len() as u64)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.id(name)?;
        let gate = self.gate(self.faults.remove);
        if matches!(gate, Gate::Fault) {
            return Err(eio("remove"));
        }
        self.names.remove(name);
        match gate {
            Gate::Cut => Err(eio("power cut")),
            _ => Ok(()),
        }
    }

    fn is_durable(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(disk: &mut SimDisk, name: &str) -> Vec<u8> {
        let mut buf = vec![0; disk.len(name).unwrap() as usize];
        assert_eq!(disk.read_at(name, 0, &mut buf).unwrap(), buf.len());
        buf
    }

    /// Crashes with many seeds; returns every distinct content of `name`
    /// (`None`: the file was gone).
    fn outcomes(disk: &SimDisk, name: &str) -> BTreeSet<Option<Vec<u8>>> {
        (0..400)
            .map(|seed| {
                let mut d = disk.clone();
                d.rng = Rng::new(seed);
                d.crash().files().get(name).cloned()
            })
            .collect()
    }

    #[test]
    fn the_generator_is_deterministic_and_spread() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let mut r = Rng::new(7);
        assert!(a.iter().all(|&x| x == r.next_u64()));
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            counts[r.index(4)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        let mut v: Vec<u32> = (0..20).collect();
        r.shuffle(&mut v);
        assert_ne!(v, (0..20).collect::<Vec<_>>());
        v.sort();
        assert_eq!(v, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn it_is_a_disk_like_the_others() {
        let mut disk = SimDisk::new(1);
        disk.create("a").unwrap();
        assert!(disk.create("a").is_err(), "create is exclusive");
        disk.append("a", b"hello ").unwrap();
        disk.append("a", b"world").unwrap();
        assert_eq!(disk.len("a").unwrap(), 11);
        let mut buf = [0; 8];
        assert_eq!(disk.read_at("a", 6, &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"world");
        assert_eq!(disk.read_at("a", 99, &mut buf).unwrap(), 0);
        disk.create("b").unwrap();
        assert_eq!(disk.list().unwrap(), ["a", "b"]);
        disk.remove("b").unwrap();
        assert!(disk.len("b").is_err());
        assert!(disk.append("b", b"x").is_err());
        assert!(disk.sync("b").is_err());
        assert!(disk.is_durable());
        assert_eq!(disk.ops(), 5, "creations, appends and removals count");
    }

    #[test]
    fn synced_bytes_and_synced_entries_survive_every_crash() {
        let mut disk = SimDisk::new(2);
        disk.create("a").unwrap();
        disk.append("a", b"durable").unwrap();
        disk.sync("a").unwrap();
        disk.sync_dir().unwrap();
        for seed in 0..100 {
            let mut d = disk.clone();
            d.rng = Rng::new(seed);
            let mut after = d.crash();
            assert_eq!(read_all(&mut after, "a"), b"durable");
            // And the image is durable in turn.
            assert_eq!(read_all(&mut after.crash(), "a"), b"durable");
        }
    }

    #[test]
    fn a_crash_keeps_a_prefix_of_the_unsynced_writes_maybe_torn() {
        let mut disk = SimDisk::new(3);
        disk.create("a").unwrap();
        disk.append("a", b"base").unwrap();
        disk.sync("a").unwrap();
        disk.sync_dir().unwrap();
        disk.append("a", b"-first").unwrap();
        disk.append("a", b"-second").unwrap();
        let full = b"base-first-second";
        let seen = outcomes(&disk, "a");
        let (mut prefixes, mut torn, mut whole) = (0, 0, false);
        for content in &seen {
            let content = content.as_ref().expect("a synced entry stays");
            assert!(content.starts_with(b"base") && content.len() <= full.len());
            whole |= content == full;
            if full.starts_with(content) {
                prefixes += 1;
            } else {
                // Torn: a prefix of the writes whose last bytes differ.
                let differ = (0..content.len()).filter(|&i| content[i] != full[i]).min();
                let differ = differ.expect("differs somewhere");
                assert!(differ >= 4, "durable bytes changed: {content:?}");
                assert!(
                    content.len() - differ <= 16,
                    "more than the tail is garbage"
                );
                torn += 1;
            }
        }
        assert!(prefixes >= 8, "{seen:?}");
        assert!(torn >= 8, "{seen:?}");
        assert!(whole, "everything written may also survive");
    }

    #[test]
    fn entries_not_synced_may_vanish_or_come_back() {
        let mut disk = SimDisk::new(4);
        disk.create("old").unwrap();
        disk.append("old", b"old bytes").unwrap();
        disk.sync("old").unwrap();
        disk.sync_dir().unwrap();
        disk.create("new").unwrap();
        disk.append("new", b"new bytes").unwrap();
        disk.sync("new").unwrap();
        disk.remove("old").unwrap();
        let old = outcomes(&disk, "old");
        assert_eq!(old, [None, Some(b"old bytes".to_vec())].into());
        let new = outcomes(&disk, "new");
        assert_eq!(new, [None, Some(b"new bytes".to_vec())].into());
        // A remove and a create under one name: the old file or the new one.
        disk.create("old").unwrap();
        disk.append("old", b"again").unwrap();
        disk.sync("old").unwrap();
        let old = outcomes(&disk, "old");
        assert_eq!(
            old,
            [Some(b"again".to_vec()), Some(b"old bytes".to_vec())].into()
        );
        disk.sync_dir().unwrap();
        assert_eq!(outcomes(&disk, "old"), [Some(b"again".to_vec())].into());
        assert_eq!(outcomes(&disk, "new"), [Some(b"new bytes".to_vec())].into());
    }

    #[test]
    fn after_the_cut_every_call_fails_and_the_crash_is_as_of_the_cut() {
        let mut disk = SimDisk::new(5);
        disk.create("a").unwrap();
        disk.append("a", b"one").unwrap();
        disk.sync("a").unwrap();
        disk.sync_dir().unwrap();
        disk.cut_after(2);
        disk.append("a", b"two").unwrap();
        assert!(!disk.is_cut());
        assert!(disk.sync("a").is_ok());
        assert!(disk.append("a", b"three").is_err(), "the power went here");
        assert!(disk.is_cut());
        assert!(disk.sync("a").is_err());
        assert!(disk.create("b").is_err());
        assert!(disk.sync_dir().is_err());
        assert!(disk.list().is_err());
        assert!(disk.len("a").is_err());
        assert!(disk.remove("a").is_err());
        let seen = outcomes(&disk, "a");
        for content in &seen {
            let content = content.as_ref().expect("synced entry");
            assert!(content.starts_with(b"onetwo"), "{content:?}");
            assert!(content.len() <= b"onetwothree".len(), "{content:?}");
        }
        assert!(seen.contains(&Some(b"onetwo".to_vec())));
        assert!(
            seen.contains(&Some(b"onetwothree".to_vec())),
            "the write the power went during may have made it"
        );
    }

    #[test]
    fn a_failed_sync_never_makes_its_bytes_durable() {
        let mut dropped = 0;
        for seed in 0..60 {
            let mut disk = SimDisk::new(seed);
            disk.create("a").unwrap();
            disk.append("a", b"good").unwrap();
            disk.sync("a").unwrap();
            disk.sync_dir().unwrap();
            disk.append("a", b"doomed").unwrap();
            disk.set_faults(Faults {
                sync: 1,
                ..Faults::default()
            });
            assert!(disk.sync("a").is_err());
            assert_eq!(disk.failures, 1);
            disk.set_faults(Faults::default());
            assert_eq!(
                read_all(&mut disk, "a"),
                b"gooddoomed",
                "reads still see it"
            );
            if disk.files[0].dropped_until == 0 {
                continue; // not dropped: like any write not yet synced
            }
            dropped += 1;
            for content in outcomes(&disk, "a") {
                assert_eq!(content.unwrap(), b"good");
            }
            // A later sync "succeeds", and the dropped bytes are still lost.
            disk.append("a", b"later").unwrap();
            disk.sync("a").unwrap();
            for content in outcomes(&disk, "a") {
                assert_eq!(content.unwrap(), b"good\0\0\0\0\0\0later");
            }
        }
        assert!((10..50).contains(&dropped), "{dropped}");
    }

    #[test]
    fn a_failed_append_may_leave_part_of_its_bytes() {
        let mut lengths = BTreeSet::new();
        for seed in 0..100 {
            let mut disk = SimDisk::new(seed);
            disk.create("a").unwrap();
            disk.set_faults(Faults {
                append: 1,
                ..Faults::default()
            });
            assert!(disk.append("a", b"0123456789").is_err());
            let content = read_all(&mut disk, "a");
            assert!(b"0123456789".starts_with(&content));
            lengths.insert(content.len());
        }
        assert!(lengths.len() > 5, "{lengths:?}");
    }

    #[test]
    fn faults_fail_each_kind_of_call_and_change_nothing() {
        let all = Faults {
            create: 1,
            append: 0,
            sync: 0,
            sync_dir: 1,
            remove: 1,
            read: 1,
        };
        let mut disk = SimDisk::new(6);
        disk.create("a").unwrap();
        disk.sync_dir().unwrap();
        disk.set_faults(all);
        assert!(disk.create("b").is_err());
        assert!(disk.sync_dir().is_err());
        assert!(disk.remove("a").is_err());
        assert!(disk.list().is_err());
        assert!(disk.len("a").is_err());
        assert!(disk.read_at("a", 0, &mut [0; 4]).is_err());
        assert_eq!(disk.failures, 6);
        disk.set_faults(Faults::default());
        assert_eq!(disk.list().unwrap(), ["a"]);
    }

    #[test]
    fn the_same_seed_makes_the_same_crash() {
        let build = || {
            let mut disk = SimDisk::new(9);
            for i in 0..20u8 {
                let name = format!("f{}", i % 4);
                if disk.len(&name).is_err() {
                    disk.create(&name).unwrap();
                }
                disk.append(&name, &[i; 7]).unwrap();
                if i % 3 == 0 {
                    disk.sync(&name).unwrap();
                }
                if i % 7 == 0 {
                    disk.sync_dir().unwrap();
                }
            }
            disk.crash().files()
        };
        assert_eq!(build(), build());
    }
}
