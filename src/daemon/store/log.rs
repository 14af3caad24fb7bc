//! One direction of the spool: an append-only log of messages in segment
//! files, with what is done recorded in the log itself. No I/O of its own:
//! every call that touches files takes the [`Disk`].
//!
//! - [`Log::append`] encodes a message into a buffer and gives it the next
//!   sequence number; [`Log::commit`] writes the buffer and syncs it, once
//!   per loop turn for everything appended in that turn (group commit), and
//!   says which messages are now durable.
//! - [`Log::next`] reads the next durable message, in order; the consumer
//!   reports each one [`Log::done`] (sent, delivered, or never sendable),
//!   in any order. Every message before the first one not done is covered
//!   by a done record, appended at the next commit (not synced for its own
//!   sake: losing one only sends some messages again).
//! - A segment whose messages are all done is deleted, but never the last
//!   one synced (its name carries the numbering over a crash); the writer
//!   moves to a new segment past [`Limits::segment_bytes`].
//! - [`Log::open`] recovers the log from whatever the files hold: segments
//!   in the order of the first sequence number in their names, each one's
//!   records up to the next one's first number (a segment abandoned after a
//!   failed write or sync may hold a copy of what its successor holds), a
//!   damaged record skipped and counted, a torn last record cut off. It
//!   never fails: what cannot be read is reported, not fatal.
//!
//! After a failed write or sync, the segment is never appended to again and
//! nothing past its last good sync is trusted (the kernel may have dropped
//! those pages); the records not yet durable are still in the buffer and go
//! to a fresh segment at the next commit.

use super::disk::Disk;
use super::record::{self, MAGIC, Message, Parsed, Record};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::ops::Range;

/// Bytes read from a segment at a time.
const CHUNK: usize = 64 * 1024;

/// The numbers of messages stay below this (2^62 messages is more than
/// any device sends): a name, message or done record past it is damage,
/// and adding one to a number never overflows. Only damage near it can
/// make the log run out of numbers: then commits fail.
pub const MAX_SEQ: u64 = 1 << 62;

/// Fixed settings of a log.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A segment takes no more records once it is this long.
    pub segment_bytes: u64,
    /// The largest record body a reader accepts: a longer length field is
    /// damage.
    pub max_body: usize,
}

/// A segment file.
#[derive(Debug, Clone)]
struct Segment {
    name: String,
    /// From the name: the first sequence number it may hold.
    first_seq: u64,
    /// From the name: which of several segments with the same first number
    /// (after a failed sync) came last.
    generation: u32,
    /// Bytes appended to the file (for the size limit).
    len: u64,
    /// The end up to which records may be read: the last successful sync,
    /// or what recovery found good.
    readable: u64,
    /// A failed removal is not retried every turn.
    remove_failed: bool,
}

/// What recovery found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Messages waiting (not done).
    pub messages: u64,
    /// Bytes of the segment files.
    pub bytes: u64,
    pub segments: usize,
    /// The acceptance time of the oldest waiting message (Unix seconds).
    pub oldest: Option<u64>,
    /// Bytes skipped as damaged or torn, and segments without a valid
    /// header or that could not be read.
    pub damaged_bytes: u64,
    pub damaged_segments: u64,
}

/// A position in a segment and the bytes read ahead from there.
#[derive(Debug, Default)]
struct Reader {
    /// The segment (first_seq, generation); `None` before the first.
    at: Option<(u64, u32)>,
    offset: u64,
    chunk: Vec<u8>,
    /// File offset of `chunk[0]`.
    chunk_off: u64,
    /// Bytes skipped as damaged since the last report.
    damaged: u64,
}

pub struct Log {
    prefix: &'static str,
    limits: Limits,
    /// Oldest first.
    segments: VecDeque<Segment>,
    /// The last segment takes appends (false before the first commit, after
    /// a failure, and after [`Log::roll`]).
    writer_open: bool,
    /// The last segment name this log made or tried to make (first number,
    /// generation): the next one with the same first number comes after.
    last_name: Option<(u64, u32)>,
    /// Records appended and not yet written.
    buffer: Vec<u8>,
    /// The first message in `buffer`.
    buffer_first: Option<u64>,
    /// The first message written by a commit whose sync is under way.
    syncing_first: Option<u64>,
    next_seq: u64,
    /// Every message below is done; some above may be too.
    done_below: u64,
    /// The numbers done above `done_below`: ranges, start to end, apart
    /// (a gap in the numbers may be wide: a stray file's name).
    done_above: BTreeMap<u64, u64>,
    /// How many numbers `done_above` holds.
    done_above_count: u64,
    /// The `below` of the last done record appended.
    done_written: u64,
    reader: Reader,
    /// The next sequence number the reader expects: numbers it skips over
    /// (damaged records) are done.
    read_seq: u64,
    /// Bytes in the segment files plus the buffer.
    bytes: u64,
    /// This run: messages appended, syncs, bytes handed to the disk.
    stats: Stats,
}

/// What [`Log::start_commit`] did.
#[derive(Debug)]
pub enum Started {
    /// The commit is whole: these messages are durable.
    Done(Range<u64>),
    /// Written, not synced: [`Log::finish_commit`] says how the sync went.
    Syncing(PendingSync),
}

/// A commit written and waiting for its sync.
#[derive(Debug)]
pub struct PendingSync {
    /// The segment to sync.
    pub segment: String,
    /// Its length with these records.
    len: u64,
    /// The messages the sync makes durable.
    durable: Range<u64>,
    /// The records written, to write again if the sync fails.
    records: Vec<u8>,
}

/// What a log did this run, for the exit line and `make bench`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub appended: u64,
    pub syncs: u64,
    pub written: u64,
}

/// `{prefix}-{first_seq:016x}-{generation:08x}.seg`
fn segment_name(prefix: &str, first_seq: u64, generation: u32) -> String {
    format!("{prefix}-{first_seq:016x}-{generation:08x}.seg")
}

fn parse_name(prefix: &str, name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let rest = rest.strip_suffix(".seg")?;
    let (seq, generation) = rest.split_once('-')?;
    let parsed = (
        u64::from_str_radix(seq, 16).ok()?,
        u32::from_str_radix(generation, 16).ok()?,
    );
    // Only the names we write: from_str_radix also takes "+1" and "A",
    // and two names for one segment would make the reader go round.
    (segment_name(prefix, parsed.0, parsed.1) == name && parsed.0 < MAX_SEQ).then_some(parsed)
}

impl Log {
    /// Recovers the log named `prefix` from `disk`. Never fails: files that
    /// cannot be listed or read are reported as damaged, and the log starts
    /// from what could be read.
    pub fn open(disk: &mut dyn Disk, prefix: &'static str, limits: Limits) -> (Log, Recovered) {
        let mut report = Recovered::default();
        let names = disk.list().unwrap_or_else(|e| {
            log::warn!("spool: cannot list the directory: {e}");
            report.damaged_segments += 1;
            Vec::new()
        });
        let mut found: Vec<(u64, u32, String)> = names
            .into_iter()
            .filter_map(|n| parse_name(prefix, &n).map(|(s, g)| (s, g, n)))
            .collect();
        found.sort();
        let mut log = Log {
            prefix,
            limits,
            segments: VecDeque::new(),
            writer_open: false,
            last_name: None,
            buffer: Vec::new(),
            buffer_first: None,
            syncing_first: None,
            next_seq: 0,
            done_below: 0,
            done_above: BTreeMap::new(),
            done_above_count: 0,
            done_written: 0,
            reader: Reader::default(),
            read_seq: 0,
            bytes: 0,
            stats: Stats::default(),
        };
        for (first_seq, generation, name) in found {
            let len = disk.len(&name).unwrap_or_else(|e| {
                log::warn!("spool: cannot read {name}: {e}");
                0
            });
            log.bytes += len;
            log.segments.push_back(Segment {
                name,
                first_seq,
                generation,
                len,
                readable: len,
                remove_failed: false,
            });
        }
        // First pass: the done records, the last message, the damage. Each
        // segment's readable end becomes the end of its last good record.
        let mut watermark = log.segments.front().map_or(0, |s| s.first_seq);
        let mut last_message: Option<u64> = None;
        for i in 0..log.segments.len() {
            let mut scan = Reader::default();
            let (good_end, header_ok) = log.scan(disk, i, &mut scan, |record| match record {
                Record::Done { below } => watermark = watermark.max((*below).min(MAX_SEQ)),
                Record::Message(m) => last_message = Some(m.seq),
            });
            if !header_ok {
                report.damaged_segments += 1;
            }
            report.damaged_bytes += scan.damaged;
            log.segments[i].readable = good_end;
        }
        let highest_name = log.segments.back().map_or(0, |s| s.first_seq);
        log.next_seq = last_message
            .map_or(0, |s| s.saturating_add(1))
            .max(highest_name)
            .max(watermark);
        // A new segment sorts after every one found: its first number is
        // past theirs, so the generations of this run start again from 0
        // and never meet one found (which may be the last there is).
        if log
            .segments
            .back()
            .is_some_and(|s| s.first_seq == log.next_seq)
        {
            log.next_seq += 1;
        }
        log.done_below = watermark;
        log.done_written = watermark;
        log.read_seq = watermark;
        // Second pass, from the segment holding the watermark: what waits.
        // The numbers no message holds are done.
        let start = log
            .segments
            .iter()
            .rposition(|s| s.first_seq <= watermark)
            .unwrap_or(0);
        let mut gaps = Vec::new();
        let mut expected = watermark;
        for i in start..log.segments.len() {
            let mut scan = Reader::default();
            log.scan(disk, i, &mut scan, |record| {
                if let Record::Message(m) = record {
                    if m.seq >= watermark {
                        report.messages += 1;
                        report.oldest = Some(report.oldest.map_or(m.time, |t| t.min(m.time)));
                        // Only real gaps: one (empty) range per message
                        // held 8 MiB at the start on a full 64 MiB spool.
                        if m.seq > expected {
                            gaps.push(expected..m.seq);
                        }
                        expected = m.seq + 1;
                    }
                }
            });
        }
        gaps.push(expected..log.next_seq);
        for gap in gaps {
            log.done_range(gap);
        }
        // Recovery finds the same gaps again: no record needed.
        log.done_written = log.done_below;
        report.bytes = log.bytes;
        report.segments = log.segments.len();
        (log, report)
    }

    /// Calls `each` with the records of segment `i` that belong to it (a
    /// message numbered from the segment's first number up to the next
    /// segment's, each higher than the last). Returns the end of the last
    /// good record and whether the header was good.
    fn scan(
        &self,
        disk: &mut dyn Disk,
        i: usize,
        reader: &mut Reader,
        mut each: impl FnMut(&Record),
    ) -> (u64, bool) {
        let seg = &self.segments[i];
        let upper = self.upper(i);
        let mut header = [0; MAGIC.len()];
        let header_ok = matches!(disk.read_at(&seg.name, 0, &mut header), Ok(n) if n == MAGIC.len())
            && &header == MAGIC;
        if !header_ok {
            reader.damaged += seg.len;
            return (0, false);
        }
        reader.at = Some((seg.first_seq, seg.generation));
        reader.offset = MAGIC.len() as u64;
        let mut good_end = reader.offset;
        let mut last = None;
        while let Some(record) = reader.next(disk, seg, self.limits.max_body) {
            good_end = reader.offset;
            if let Record::Message(m) = &record {
                if m.seq < seg.first_seq || m.seq >= upper || last.is_some_and(|l| m.seq <= l) {
                    continue;
                }
                last = Some(m.seq);
            }
            each(&record);
        }
        (good_end, true)
    }

    /// The first sequence number segment `i` may not hold: the next
    /// segment's first.
    fn upper(&self, i: usize) -> u64 {
        self.segments.get(i + 1).map_or(MAX_SEQ, |s| s.first_seq)
    }

    // ----- writing -----

    /// Appends a message to the buffer (durable after the next successful
    /// [`Log::commit`]) and returns its sequence number.
    pub fn append(&mut self, time: u64, topic: &[u8], payload: &[u8]) -> u64 {
        self.append_with(time, topic, b"", payload)
    }

    /// [`Log::append`] with meta data kept beside the message.
    pub fn append_with(&mut self, time: u64, topic: &[u8], meta: &[u8], payload: &[u8]) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.appended += 1;
        let before = self.buffer.len();
        record::encode_message_with(&mut self.buffer, seq, time, topic, meta, payload);
        self.bytes += (self.buffer.len() - before) as u64;
        self.buffer_first.get_or_insert(seq);
        seq
    }

    /// Writes what was appended since the last commit, and the done mark,
    /// and syncs if that included messages (or a new segment).
    ///
    /// # Returns
    /// The sequence numbers made durable by this call (possibly empty). On
    /// an error nothing new is durable: the segment is abandoned and the
    /// next commit tries again on a fresh one.
    pub fn commit(&mut self, disk: &mut dyn Disk) -> io::Result<Range<u64>> {
        match self.start_commit(disk, false)? {
            Started::Done(durable) => Ok(durable),
            Started::Syncing(pending) => {
                let synced = disk.sync(&pending.segment);
                self.finish_commit(disk, pending, synced)
            }
        }
    }

    /// The first half of a commit whose sync may run elsewhere (another
    /// thread, while the event loop goes on): writes the records and, when
    /// they include messages, hands back what must be synced. Appends made
    /// meanwhile wait for the next commit, which must not start before
    /// [`Log::finish_commit`].
    ///
    /// With `defer` false, or when the records start a new segment (whose
    /// creation the directory's sync must cover too: rare), the whole
    /// commit happens here, as [`Log::commit`] does.
    pub fn start_commit(&mut self, disk: &mut dyn Disk, defer: bool) -> io::Result<Started> {
        if self.next_seq > MAX_SEQ {
            // Only after a damaged name or record near the top: it cannot
            // be read back, so it is not written.
            return Err(io::Error::other(
                "the message numbers are used up (a damaged file in the spool?)",
            ));
        }
        if self.done_below > self.done_written {
            let before = self.buffer.len();
            record::encode_done(&mut self.buffer, self.done_below);
            self.bytes += (self.buffer.len() - before) as u64;
            self.done_written = self.done_below;
        }
        let durable = match self.buffer_first {
            Some(first) => first..self.next_seq,
            None => self.next_seq..self.next_seq,
        };
        if self.buffer.is_empty() {
            return Ok(Started::Done(durable));
        }
        let sync = !durable.is_empty();
        let result = if defer && sync && !self.rolls() {
            self.write_records(disk)
        } else {
            self.write_buffer(disk, sync)
        };
        if result.is_err() {
            self.writer_open = false;
            // On a full disk, the room the next try needs: deleting a
            // segment before the done mark that covers it is durable is
            // safe (the next segment's first number says as much).
            self.remove_done_segments(disk);
            return result.map(|()| Started::Done(durable));
        }
        // Now in the file (counted there) and no longer in the buffer.
        self.bytes -= self.buffer.len() as u64;
        let records = std::mem::take(&mut self.buffer);
        self.buffer_first = None;
        let Some(seg) = self.segments.back().filter(|s| s.readable < s.len) else {
            // Synced here (or only a done mark, which needs no sync).
            self.buffer = records;
            self.buffer.clear();
            // The segments this commit's done mark finished.
            self.remove_done_segments(disk);
            return Ok(Started::Done(durable));
        };
        if !sync {
            self.buffer = records;
            self.buffer.clear();
            self.remove_done_segments(disk);
            return Ok(Started::Done(durable));
        }
        self.stats.syncs += u64::from(disk.is_durable());
        self.syncing_first = Some(durable.start);
        Ok(Started::Syncing(PendingSync {
            segment: seg.name.clone(),
            len: seg.len,
            durable,
            records,
        }))
    }

    /// The second half: `synced` is how the sync of `pending.segment`
    /// went. On success its messages are durable (and readable); on
    /// failure nothing new is, the segment is abandoned and its records go
    /// back to the front of the buffer, for the next commit to write again
    /// on a fresh segment.
    pub fn finish_commit(
        &mut self,
        disk: &mut dyn Disk,
        pending: PendingSync,
        synced: io::Result<()>,
    ) -> io::Result<Range<u64>> {
        let PendingSync {
            segment,
            len,
            durable,
            mut records,
        } = pending;
        self.syncing_first = None;
        if let Err(e) = synced {
            self.writer_open = false;
            self.bytes += records.len() as u64;
            records.extend_from_slice(&self.buffer);
            self.buffer = records;
            self.buffer_first = Some(durable.start);
            self.remove_done_segments(disk);
            return Err(e);
        }
        if let Some(seg) = self.segments.iter_mut().rev().find(|s| s.name == segment) {
            seg.readable = seg.readable.max(len);
        }
        // The buffer is kept for its capacity: no allocation next turn.
        if self.buffer.is_empty() {
            records.clear();
            self.buffer = records;
        }
        self.remove_done_segments(disk);
        Ok(durable)
    }

    /// Whether the next write starts a new segment.
    fn rolls(&self) -> bool {
        self.segments
            .back()
            .is_none_or(|s| !self.writer_open || s.len >= self.limits.segment_bytes)
    }

    /// Appends the buffer to the open writer, without a sync.
    fn write_records(&mut self, disk: &mut dyn Disk) -> io::Result<()> {
        let seg = self.segments.back_mut().ok_or_else(no_writer)?;
        // Counted even when the append fails: part of it may be in the file
        // (and, until a commit succeeds, in the buffer too).
        seg.len += self.buffer.len() as u64;
        self.bytes += self.buffer.len() as u64;
        self.stats.written += self.buffer.len() as u64;
        disk.append(&seg.name, &self.buffer)
    }

    fn write_buffer(&mut self, disk: &mut dyn Disk, sync: bool) -> io::Result<()> {
        let rolled = self.rolls();
        if rolled {
            let first = self.buffer_first.unwrap_or(self.next_seq);
            // After the segments with the same first number (written by
            // commits that failed): they are the last ones. A name is never
            // used twice, even one whose file could not be made.
            let after = self
                .segments
                .back()
                .map(|s| (s.first_seq, s.generation))
                .max(self.last_name);
            let generation = match after {
                Some((f, g)) if f == first => g
                    .checked_add(1)
                    .ok_or_else(|| io::Error::other("no generation left for a new segment"))?,
                _ => 0,
            };
            let name = segment_name(self.prefix, first, generation);
            self.last_name = Some((first, generation));
            disk.create(&name)?;
            self.segments.push_back(Segment {
                name,
                first_seq: first,
                generation,
                len: 0,
                readable: 0,
                remove_failed: false,
            });
            self.writer_open = true;
            let seg = self.segments.back_mut().ok_or_else(no_writer)?;
            let appended = disk.append(&seg.name, MAGIC);
            seg.len += MAGIC.len() as u64;
            self.stats.written += MAGIC.len() as u64;
            self.bytes += MAGIC.len() as u64;
            appended?;
        }
        let seg = self.segments.back_mut().ok_or_else(no_writer)?;
        // Counted even when the append fails: part of it may be in the file
        // (and, until a commit succeeds, in the buffer too).
        seg.len += self.buffer.len() as u64;
        self.bytes += self.buffer.len() as u64;
        self.stats.written += self.buffer.len() as u64;
        disk.append(&seg.name, &self.buffer)?;
        if sync || rolled {
            self.stats.syncs += u64::from(disk.is_durable());
            disk.sync(&seg.name)?;
        }
        if rolled {
            self.stats.syncs += u64::from(disk.is_durable());
            disk.sync_dir()?;
        }
        if sync || rolled {
            seg.readable = seg.len;
        }
        Ok(())
    }

    /// The writer takes no more records: the next commit starts a new
    /// segment (so that the current one can be dropped whole).
    pub fn roll(&mut self) {
        self.writer_open = false;
    }

    /// Deletes the segments whose messages are all done, but the writer.
    pub fn remove_done_segments(&mut self, disk: &mut dyn Disk) {
        loop {
            // Never the last durable one: its name keeps the numbering
            // going after a crash (a segment whose sync failed may vanish).
            if !self.segments.iter().skip(1).any(|s| s.readable > 0) {
                return;
            }
            let upper = self.upper(0);
            if upper > self.done_below {
                return;
            }
            let Some(seg) = self.segments.front_mut() else {
                return;
            };
            if seg.remove_failed {
                return;
            }
            if let Err(e) = disk.remove(&seg.name) {
                log::warn!("spool: cannot remove {}: {e}", seg.name);
                seg.remove_failed = true;
                return;
            }
            self.bytes = self.bytes.saturating_sub(seg.len);
            self.segments.pop_front();
        }
    }

    // ----- reading -----

    /// The next durable message not yet read, in order; `None` until more is
    /// durable. What cannot be read (damage, read errors) is skipped and
    /// counted ([`Log::take_damaged`]); its numbers count as done.
    pub fn next(&mut self, disk: &mut dyn Disk) -> Option<Message> {
        loop {
            let i = self.reader_segment()?;
            let last = i + 1 == self.segments.len();
            let seg = &self.segments[i];
            if self.reader.offset == 0 {
                if seg.readable < MAGIC.len() as u64 && last {
                    return None; // a new writer, nothing synced yet
                }
                let mut header = [0; MAGIC.len()];
                let ok = matches!(disk.read_at(&seg.name, 0, &mut header), Ok(n) if n == MAGIC.len())
                    && &header == MAGIC;
                self.reader.offset = if ok {
                    MAGIC.len() as u64
                } else {
                    self.reader.damaged += seg.readable;
                    seg.readable.max(1)
                };
            }
            let (lower, upper) = (self.read_seq.max(seg.first_seq), self.upper(i));
            match self.reader.next(disk, seg, self.limits.max_body) {
                Some(Record::Message(m)) if m.seq >= lower && m.seq < upper => {
                    self.done_range(self.read_seq..m.seq);
                    self.read_seq = m.seq + 1;
                    return Some(m);
                }
                Some(_) => {}
                None if last => return None,
                None => self.reader.enter(&self.segments[i + 1]),
            }
        }
    }

    /// The index of the segment the reader is in; enters the right one when
    /// it has none (at start, or after its segment was dropped).
    fn reader_segment(&mut self) -> Option<usize> {
        if let Some(at) = self.reader.at {
            if let Some(i) = self
                .segments
                .iter()
                .position(|s| (s.first_seq, s.generation) == at)
            {
                return Some(i);
            }
        }
        let i = self
            .segments
            .iter()
            .rposition(|s| s.first_seq <= self.read_seq)
            .unwrap_or(0);
        self.reader.enter(self.segments.get(i)?);
        Some(i)
    }

    /// Bytes skipped as damaged since the last call.
    pub fn take_damaged(&mut self) -> u64 {
        std::mem::take(&mut self.reader.damaged)
    }

    // ----- consuming -----

    /// The message `seq` needs nothing more: sent, delivered, dropped or
    /// never sendable. Any order; repeats and unknown numbers are ignored.
    pub fn done(&mut self, seq: u64) {
        self.done_range(seq..seq.saturating_add(1));
    }

    /// How many numbers of `range` are in `done_above`.
    fn done_within(&self, range: Range<u64>) -> u64 {
        // The range that starts before it may reach into it.
        let before = self.done_above.range(..range.start).next_back();
        before
            .into_iter()
            .chain(self.done_above.range(range.clone()))
            .map(|(&s, &e)| e.min(range.end).saturating_sub(s.max(range.start)))
            .sum()
    }

    /// The numbers of `range` are done (those given out).
    fn done_range(&mut self, range: Range<u64>) {
        let mut start = range.start.max(self.done_below);
        let mut end = range.end.min(self.next_seq);
        if start >= end {
            return;
        }
        // Joined with the ranges it overlaps or touches.
        if let Some((&s, &e)) = self.done_above.range(..start).next_back() {
            if e >= start {
                start = s;
            }
        }
        while let Some((&s, &e)) = self.done_above.range(start..=end).next() {
            self.done_above.remove(&s);
            self.done_above_count -= e - s;
            end = end.max(e);
        }
        if start == self.done_below {
            self.done_below = end;
        } else {
            self.done_above.insert(start, end);
            self.done_above_count += end - start;
        }
    }

    /// Drops the oldest segment (`--when_full drop_oldest`); rolls the
    /// writer first when it is the only one.
    ///
    /// # Returns
    /// How many messages were dropped (not done), or `None` when nothing
    /// could be dropped yet (only the writer, now rolled).
    pub fn drop_oldest(&mut self, disk: &mut dyn Disk) -> Option<u64> {
        if self.segments.len() < 2 {
            self.roll();
            return None;
        }
        let upper = self.upper(0);
        // Every message of it not done yet, read or not: its file is gone.
        // (It may hold no number: one after it may have the same first.)
        let from = self.done_below.max(self.segments[0].first_seq).min(upper);
        let dropped = (upper - from) - self.done_within(from..upper);
        self.done_range(self.done_below..upper);
        self.read_seq = self.read_seq.max(upper);
        let seg = self.segments.pop_front()?;
        self.bytes = self.bytes.saturating_sub(seg.len);
        if let Err(e) = disk.remove(&seg.name) {
            log::warn!("spool: cannot remove {}: {e}", seg.name);
        }
        Some(dropped)
    }

    // ----- getters -----

    /// Bytes on disk and in the buffer.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Messages not done (those lost to damage may count until read past).
    pub fn waiting(&self) -> u64 {
        (self.next_seq - self.done_below).saturating_sub(self.done_above_count)
    }

    /// Messages durable and not yet read.
    pub fn unread(&self) -> u64 {
        let durable_end = self
            .syncing_first
            .or(self.buffer_first)
            .unwrap_or(self.next_seq);
        durable_end.saturating_sub(self.read_seq)
    }

    /// Segment files (for `make bench`'s report).
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// What this log did this run.
    pub fn stats(&self) -> Stats {
        self.stats
    }
}

impl Reader {
    fn enter(&mut self, seg: &Segment) {
        self.at = Some((seg.first_seq, seg.generation));
        self.offset = 0;
        self.chunk.clear();
        self.chunk_off = 0;
    }

    /// The next record of `seg` from `offset` up to its readable end,
    /// skipping damage one byte at a time; `None` at the end.
    fn next(&mut self, disk: &mut dyn Disk, seg: &Segment, max_body: usize) -> Option<Record> {
        let mut damage_start: Option<u64> = None;
        let result = loop {
            if self.offset >= seg.readable {
                break None;
            }
            let start = (self.offset - self.chunk_off) as usize;
            let have = self
                .chunk
                .get(start..)
                .filter(|_| self.offset >= self.chunk_off)
                .unwrap_or(&[]);
            match record::parse(have, max_body) {
                Parsed::Record(record, n) => break Some((record, n)),
                Parsed::Short { need } if self.offset + need as u64 <= seg.readable => {
                    if let Err(e) = self.fill(disk, seg, need) {
                        log::warn!("spool: cannot read {}: {e}", seg.name);
                        damage_start.get_or_insert(self.offset);
                        self.offset = seg.readable;
                    }
                }
                // Beyond the readable end, or not a record: damage.
                Parsed::Short { .. } | Parsed::Corrupt => {
                    damage_start.get_or_insert(self.offset);
                    self.offset += 1;
                }
            }
        };
        // Up to the good record, or to the end.
        if let Some(from) = damage_start {
            self.damaged += self.offset.min(seg.readable) - from;
        }
        let (record, n) = result?;
        self.offset += n as u64;
        Some(record)
    }

    /// Reads at least `need` bytes from `offset` into the chunk (up to the
    /// readable end).
    fn fill(&mut self, disk: &mut dyn Disk, seg: &Segment, need: usize) -> io::Result<()> {
        let want = need.max(CHUNK).min((seg.readable - self.offset) as usize);
        self.chunk.resize(want, 0);
        let n = disk.read_at(&seg.name, self.offset, &mut self.chunk)?;
        self.chunk.truncate(n);
        self.chunk_off = self.offset;
        if n < need {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file is shorter than it was",
            ));
        }
        Ok(())
    }
}

fn no_writer() -> io::Error {
    io::Error::other("no segment to write to")
}

#[cfg(test)]
mod tests {
    use super::super::disk::MemDisk;
    use super::super::sim::{Faults, SimDisk};
    use super::*;
    use std::collections::BTreeSet;

    const PREFIX: &str = "out";

    fn limits(segment_bytes: u64) -> Limits {
        Limits {
            segment_bytes,
            max_body: 4096,
        }
    }

    fn drain(log: &mut Log, disk: &mut dyn Disk) -> Vec<Message> {
        std::iter::from_fn(|| log.next(disk)).collect()
    }

    fn seqs(messages: &[Message]) -> Vec<u64> {
        messages.iter().map(|m| m.seq).collect()
    }

    /// A log in memory holding `n` committed messages, one segment; and
    /// where each record ends.
    fn written(n: u64) -> (MemDisk, Vec<u64>) {
        let mut disk = MemDisk::default();
        let (mut log, _) = Log::open(&mut disk, PREFIX, limits(1 << 20));
        let mut ends = Vec::new();
        let mut end = MAGIC.len() as u64;
        for i in 0..n {
            let (topic, payload) = (format!("t/{i}"), vec![i as u8; i as usize * 3]);
            log.append(1000 + i, topic.as_bytes(), &payload);
            end += record::message_size(topic.len(), payload.len()) as u64;
            ends.push(end);
        }
        log.commit(&mut disk).unwrap();
        assert_eq!(disk.files.len(), 1);
        assert_eq!(disk.files.values().next().unwrap().len() as u64, end);
        (disk, ends)
    }

    fn only_file(disk: &mut MemDisk) -> &mut Vec<u8> {
        disk.files.values_mut().next().unwrap()
    }

    #[test]
    fn an_empty_directory_is_an_empty_log_that_works() {
        let mut disk = MemDisk::default();
        let (mut log, found) = Log::open(&mut disk, PREFIX, limits(1 << 20));
        assert_eq!(found, Recovered::default());
        assert_eq!(log.next(&mut disk), None);
        assert_eq!(log.commit(&mut disk).unwrap(), 0..0, "nothing to write");
        assert!(disk.files.is_empty(), "no file for nothing");
        assert_eq!(log.append(5, b"t", b""), 0);
        assert_eq!(log.commit(&mut disk).unwrap(), 0..1);
        let m = log.next(&mut disk).unwrap();
        assert_eq!(
            (m.seq, m.time, &m.topic[..], &m.payload[..]),
            (0, 5, &b"t"[..], &b""[..])
        );
        assert_eq!((log.waiting(), log.unread()), (1, 0));
        log.done(0);
        assert_eq!(log.waiting(), 0);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_counted() {
        let (disk, ends) = written(5);
        for cut in ends[3] + 1..ends[4] {
            let mut disk = disk.clone();
            only_file(&mut disk).truncate(cut as usize);
            let (mut log, found) = Log::open(&mut disk, PREFIX, limits(1 << 20));
            assert_eq!(found.messages, 4, "cut at {cut}");
            assert_eq!(found.damaged_bytes, cut - ends[3], "cut at {cut}");
            assert_eq!(found.damaged_segments, 0);
            assert_eq!(found.bytes, cut);
            assert_eq!(found.oldest, Some(1000));
            assert_eq!(seqs(&drain(&mut log, &mut disk)), [0, 1, 2, 3]);
            assert_eq!(log.take_damaged(), 0, "the torn tail is not read again");
            // The torn message never was durable: its number is given again,
            // in a new segment.
            assert_eq!(log.append(1, b"t", b"new"), 4);
            assert_eq!(log.commit(&mut disk).unwrap(), 4..5);
            let got = drain(&mut log, &mut disk);
            assert_eq!(payloads(&got), [(4, &b"new"[..])]);
            assert_eq!(disk.files.len(), 2);
        }
    }

    #[test]
    fn a_flipped_byte_loses_one_record_and_the_rest_is_read() {
        let (disk, ends) = written(5);
        for at in ends[1]..ends[2] {
            let mut disk = disk.clone();
            only_file(&mut disk)[at as usize] ^= 0x40;
            let (mut log, found) = Log::open(&mut disk, PREFIX, limits(1 << 20));
            assert_eq!(found.messages, 4, "byte {at}");
            assert_eq!(found.damaged_bytes, ends[2] - ends[1], "byte {at}");
            assert_eq!(found.damaged_segments, 0);
            let got = drain(&mut log, &mut disk);
            assert_eq!(seqs(&got), [0, 1, 3, 4], "byte {at}");
            assert_eq!(&got[2].payload[..], &[3; 9]);
            assert_eq!(log.take_damaged(), ends[2] - ends[1]);
            // The lost number counts as done: all done, nothing waits.
            for m in &got {
                log.done(m.seq);
            }
            assert_eq!(log.waiting(), 0, "byte {at}");
        }
    }

    /// A segment file written by hand: first seq, generation, header ok,
    /// messages as (seq, payload).
    type Segment<'a> = (u64, u32, bool, &'a [(u64, &'a [u8])]);

    fn segments(files: &[Segment]) -> MemDisk {
        let mut disk = MemDisk::default();
        for &(first, generation, header_ok, messages) in files {
            let mut bytes = if header_ok {
                MAGIC.to_vec()
            } else {
                b"IOTBOXS\x02".to_vec()
            };
            for &(seq, payload) in messages {
                record::encode_message(&mut bytes, seq, 7, b"t", payload);
            }
            disk.files
                .insert(segment_name(PREFIX, first, generation), bytes);
        }
        disk
    }

    fn payloads(messages: &[Message]) -> Vec<(u64, &[u8])> {
        messages.iter().map(|m| (m.seq, &m.payload[..])).collect()
    }

    #[test]
    fn a_segment_with_a_broken_header_is_skipped_and_counted() {
        let mut disk = segments(&[
            (0, 0, false, &[(0, b"a"), (1, b"b")]),
            (2, 1, true, &[(2, b"c")]),
            (3, 2, false, &[(3, b"d")]),
        ]);
        let broken: u64 = [0, 1]
            .iter()
            .map(|&i| disk.files.values().nth(i * 2).unwrap().len() as u64)
            .sum();
        let (mut log, found) = Log::open(&mut disk, PREFIX, limits(1 << 20));
        assert_eq!((found.messages, found.segments), (1, 3));
        assert_eq!((found.damaged_segments, found.damaged_bytes), (2, broken));
        let got = drain(&mut log, &mut disk);
        assert_eq!(payloads(&got), [(2, &b"c"[..])]);
        assert_eq!(log.append(0, b"t", b"e"), 4, "past the last name");
        log.commit(&mut disk).unwrap();
        assert_eq!(payloads(&drain(&mut log, &mut disk)), [(4, &b"e"[..])]);
        // Done with everything: the broken files go too, the writer stays.
        for seq in [2, 4] {
            log.done(seq);
        }
        log.commit(&mut disk).unwrap();
        assert_eq!(disk.files.len(), 1);
    }

    #[test]
    fn files_with_other_names_are_left_alone() {
        let mut disk = segments(&[(0, 0, true, &[(0, b"a")])]);
        let mut valid = MAGIC.to_vec();
        record::encode_message(&mut valid, 1, 7, b"t", b"not ours");
        for name in [
            "lock",
            "in-0000000000000001-00000000.seg",
            "out-0000000000000001-00000000.seg.tmp",
            "out-0000000000000001-00000000",
            "out-000000000000001-00000000.seg",
            "out-0000000000000001-0000000.seg",
            "out-000000000000000A-00000000.seg",
            "out-+000000000000001-00000000.seg",
            "out-0000000000000001-+0000000.seg",
            "out-0000000000000001_00000000.seg",
            "out--0000000000000001-00000000.seg",
        ] {
            disk.files.insert(name.into(), valid.clone());
        }
        let before = disk.files.clone();
        let (mut log, found) = Log::open(&mut disk, PREFIX, limits(1 << 20));
        assert_eq!(
            (found.messages, found.segments, found.damaged_segments),
            (1, 1, 0)
        );
        assert_eq!(payloads(&drain(&mut log, &mut disk)), [(0, &b"a"[..])]);
        log.done(0);
        log.append(0, b"t", b"b");
        log.commit(&mut disk).unwrap();
        for (name, bytes) in &before {
            if name.starts_with("out-0000000000000000") {
                continue;
            }
            assert_eq!(disk.files.get(name), Some(bytes), "{name}");
        }
    }

    #[test]
    fn dropping_the_oldest_segment_counts_what_was_not_done() {
        // The middle segment was abandoned after a failed sync: the next
        // one starts at the same number, so it holds no number of its own.
        let mut disk = segments(&[
            (0, 0, true, &[(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]),
            (4, 0, true, &[(4, b"stale")]),
            (4, 1, true, &[(4, b"e"), (5, b"f")]),
        ]);
        let (mut log, _) = Log::open(&mut disk, PREFIX, limits(1 << 20));
        let got = drain(&mut log, &mut disk);
        assert_eq!(seqs(&got), [0, 1, 2, 3, 4, 5]);
        for seq in [0, 2, 4, 5] {
            log.done(seq);
        }
        assert_eq!(log.drop_oldest(&mut disk), Some(2), "1 and 3 were not done");
        assert_eq!(log.drop_oldest(&mut disk), Some(0), "the abandoned one");
        assert_eq!(log.drop_oldest(&mut disk), None, "only the writer is left");
        assert_eq!(log.waiting(), 0);
        assert_eq!(disk.files.len(), 1);
    }

    #[test]
    fn done_in_any_order_and_in_ranges_counts_like_a_set() {
        let mut rng = super::super::sim::Rng::new(11);
        for _ in 0..200 {
            let mut disk = MemDisk::default();
            let (mut log, _) = Log::open(&mut disk, PREFIX, limits(1 << 20));
            for _ in 0..60 {
                log.append(0, b"", b"");
            }
            let mut done = BTreeSet::new();
            for _ in 0..40 {
                let start = rng.below(64);
                let width = if rng.one_in(4) { 12 } else { 2 };
                let end = start + rng.below(width);
                if end == start + 1 {
                    log.done(start);
                } else {
                    log.done_range(start..end);
                }
                done.extend((start..end).filter(|&s| s < 60));
                let below = (0..).find(|s| !done.contains(s)).unwrap();
                assert_eq!(log.done_below, below);
                assert_eq!(log.waiting(), 60 - done.len() as u64);
                let held: u64 = log.done_above.iter().map(|(s, e)| e - s).sum();
                assert_eq!(held, log.done_above_count);
                assert!(log.done_above.iter().all(|(&s, &e)| below < s && s < e));
                // Apart: no two ranges touch.
                let ranges: Vec<_> = log.done_above.iter().collect();
                assert!(ranges.windows(2).all(|w| w[0].1 < w[1].0));
                let a = rng.below(64);
                let q = a..a + rng.below(20);
                let within = done.range(q.clone()).filter(|&&s| s >= below).count();
                assert_eq!(log.done_within(q), within as u64);
            }
        }
    }

    #[test]
    fn a_message_outside_its_segments_numbers_is_not_read() {
        // Each segment holds the numbers from its first up to the next
        // one's: recovery counts only those, and the reader reads only
        // those.
        let mut disk = segments(&[
            (0, 0, true, &[(0, b"a"), (1, b"b"), (7, b"beyond")]),
            (5, 0, true, &[(3, b"before"), (5, b"c"), (9, b"beyond")]),
            (9, 0, true, &[(9, b"d")]),
        ]);
        let (mut log, found) = Log::open(&mut disk, PREFIX, limits(1 << 20));
        let got = drain(&mut log, &mut disk);
        let expected = [(0, &b"a"[..]), (1, b"b"), (5, b"c"), (9, b"d")];
        assert_eq!(payloads(&got), expected);
        assert_eq!(found.messages, 4);
    }

    #[test]
    fn a_gap_in_the_numbers_is_done_at_once_however_wide() {
        // Numbers nobody holds: those of a segment that is gone, or a stray
        // file's name far ahead. Counted done as a range, not one by one.
        let far = 1 << 60;
        let mut disk = segments(&[
            (0, 0, true, &[(0, b"a"), (1, b"b")]),
            (far, 1, true, &[(far + 1, b"c")]),
        ]);
        let (mut log, found) = Log::open(&mut disk, PREFIX, limits(1 << 20));
        assert_eq!(found.messages, 3);
        assert_eq!(log.waiting(), 3, "the numbers nobody holds are done");
        let first = log.next(&mut disk).unwrap();
        let got = drain(&mut log, &mut disk);
        assert_eq!(payloads(&got), [(1, &b"b"[..]), (far + 1, &b"c"[..])]);
        log.done(far + 1);
        log.done(1);
        assert_eq!(log.waiting(), 1);
        log.done(first.seq);
        assert_eq!(log.waiting(), 0);
        assert_eq!(log.append(0, b"t", b"d"), far + 2);
        log.commit(&mut disk).unwrap();
        assert_eq!(disk.files.len(), 1, "all done: only the writer is left");
        let (mut log, found) = Log::open(&mut disk, PREFIX, limits(1 << 20));
        assert_eq!((found.messages, log.waiting()), (1, 1));
        assert_eq!(
            payloads(&drain(&mut log, &mut disk)),
            [(far + 2, &b"d"[..])]
        );
    }

    #[test]
    fn a_new_segment_sorts_after_every_segment_found() {
        // The last segment found holds no message (a done record or only
        // its header): the next number is its first too. Whatever its
        // generation, the new segments must sort after it, the one written
        // after a failed sync included.
        for generation in [0, 7, u32::MAX - 1, u32::MAX] {
            let disk = segments(&[(0, 0, true, &[(0, b"a")]), (1, generation, true, &[])]);
            let mut disk = SimDisk::with_files(generation.into(), disk.files);
            let (mut log, found) = Log::open(&mut disk, PREFIX, limits(1 << 20));
            assert_eq!(found.messages, 1);
            let first = log.append(0, b"t", b"b");
            disk.set_faults(Faults {
                sync: 1,
                ..Faults::default()
            });
            assert!(log.commit(&mut disk).is_err());
            disk.set_faults(Faults::default());
            assert_eq!(log.commit(&mut disk).unwrap(), first..first + 1);
            let second = log.append(0, b"t", b"c");
            log.commit(&mut disk).unwrap();
            for _ in 0..2 {
                let (mut log, found) = Log::open(&mut disk, PREFIX, limits(1 << 20));
                assert_eq!(found.messages, 3, "generation {generation:x}");
                let got = drain(&mut log, &mut disk);
                let expected = [(0, &b"a"[..]), (first, b"b"), (second, b"c")];
                assert_eq!(payloads(&got), expected, "generation {generation:x}");
                // And after a restart that writes nothing.
                log.commit(&mut disk).unwrap();
            }
        }
    }

    #[test]
    fn numbers_near_the_top_never_overflow() {
        let top = |disk: &mut MemDisk, seq: u64, below: Option<u64>| {
            let file = disk.files.values_mut().next().unwrap();
            record::encode_message(file, seq, 7, b"t", b"top");
            if let Some(below) = below {
                record::encode_done(file, below);
            }
        };
        // A record's number, a done record, a stray name; then the messages
        // found, and whether the numbers are used up.
        for (seq, below, name, found_messages, used_up) in [
            (MAX_SEQ - 1, None, None, 2, true),
            (u64::MAX - 1, None, None, 1, false),
            (u64::MAX, None, None, 1, false),
            (1, Some(u64::MAX), None, 0, true),
            (1, None, Some(u64::MAX), 2, false),
            (1, None, Some(MAX_SEQ), 2, false),
        ] {
            let mut disk = segments(&[(0, 0, true, &[(0, b"a")])]);
            top(&mut disk, seq, below);
            if let Some(first) = name {
                let bytes = disk.files.values().next().unwrap().clone();
                disk.files.insert(segment_name(PREFIX, first, 0), bytes);
            }
            let case = format!("{seq:x} {below:?} {name:?}");
            let (mut log, found) = Log::open(&mut disk, PREFIX, limits(1 << 20));
            assert_eq!(found.messages, found_messages, "{case}");
            assert_eq!(found.segments, 1, "{case}");
            let got = drain(&mut log, &mut disk);
            let new = log.append(0, b"t", b"new");
            if used_up {
                assert_eq!(new, MAX_SEQ, "{case}");
                assert!(log.commit(&mut disk).is_err(), "{case}");
                assert_eq!(log.next(&mut disk), None);
                continue;
            }
            assert_eq!(log.commit(&mut disk).unwrap(), new..new + 1, "{case}");
            let more = drain(&mut log, &mut disk);
            assert_eq!(payloads(&more), [(new, &b"new"[..])], "{case}");
            for m in got.iter().chain(&more) {
                log.done(m.seq);
            }
            assert_eq!(log.waiting(), 0, "{case}");
            log.commit(&mut disk).unwrap();
        }
    }

    #[test]
    fn of_two_segments_with_the_same_first_number_the_later_generation_wins() {
        // After a failed sync, the same messages went to a new segment; the
        // old one may hold more (not synced) or less (torn).
        for (old, new) in [
            (
                &[(0, &b"old0"[..]), (1, b"old1"), (2, b"old2")][..],
                &[(0, &b"a"[..]), (1, b"b")][..],
            ),
            (&[(0, b"old0")], &[(0, b"a"), (1, b"b")]),
        ] {
            for generations in [(0, 1), (9, 0x10), (0xfffe, 0x1_0000)] {
                let mut disk =
                    segments(&[(0, generations.0, true, old), (0, generations.1, true, new)]);
                let (mut log, found) = Log::open(&mut disk, PREFIX, limits(1 << 20));
                assert_eq!(found.messages, 2);
                let got = drain(&mut log, &mut disk);
                assert_eq!(
                    payloads(&got),
                    [(0, &b"a"[..]), (1, &b"b"[..])],
                    "{generations:?}"
                );
            }
        }
        // And the older one's messages past the newer one's first are not
        // read either.
        let mut disk = segments(&[
            (0, 0, true, &[(0, b"a"), (1, b"stale"), (2, b"stale")]),
            (1, 1, true, &[(1, b"b")]),
        ]);
        let (mut log, _) = Log::open(&mut disk, PREFIX, limits(1 << 20));
        assert_eq!(
            payloads(&drain(&mut log, &mut disk)),
            [(0, &b"a"[..]), (1, &b"b"[..])]
        );
        assert_eq!(log.append(0, b"t", b"c"), 2);
    }
}

/// The log on the simulated disk: a seeded workload, power cuts at every
/// point of it, recovery, and what must hold after.
#[cfg(test)]
mod crash_tests {
    use super::super::sim::{Faults, Rng, SimDisk};
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    const PREFIX: &str = "out";
    const LIMITS: Limits = Limits {
        segment_bytes: 256,
        max_body: 4096,
    };

    type Content = (Vec<u8>, Vec<u8>);

    fn content(m: &Message) -> Content {
        (m.topic.to_vec(), m.payload.to_vec())
    }

    /// What the test knows, across crashes and restarts.
    #[derive(Default)]
    struct Model {
        /// Every message appended, by number (a number that was never made
        /// durable may be given again after a crash or a restart).
        appended: BTreeMap<u64, Vec<Content>>,
        /// Made durable: by a commit that said so, or found by recovery
        /// after a crash. Their numbers are never given again.
        durable: BTreeMap<u64, Content>,
        /// Done (or dropped): they may come back, or not.
        gone: BTreeSet<u64>,
        /// Appended since the last successful commit.
        pending: BTreeMap<u64, Content>,
        /// Written by a commit that failed: not to be read, but a restart
        /// may find them.
        failed: BTreeMap<u64, Content>,
        /// Found by a restart, not durable.
        maybe: BTreeMap<u64, Content>,
        /// Read and not done yet.
        in_flight: Vec<u64>,
        /// The last number read since the log was opened.
        last_read: Option<u64>,
        /// Segment names when a commit failed: the next successful one
        /// writes to a new file.
        failed_in: Option<BTreeSet<String>>,
        stats: Stats,
    }

    #[derive(Default, Debug, Clone, Copy)]
    struct Stats {
        crashes: u64,
        recovered: u64,
        commits_failed: u64,
        reopens: u64,
        drops: u64,
        /// Commits whose sync ran apart from the write and succeeded.
        split_commits: u64,
    }

    fn payload(rng: &mut Rng) -> Vec<u8> {
        let len = match rng.index(8) {
            0 => 0,
            1 => 300 + rng.index(400), // more than a segment
            2..=4 => 1 + rng.index(20),
            _ => 20 + rng.index(80),
        };
        rng.bytes(len)
    }

    fn topic(rng: &mut Rng) -> Vec<u8> {
        if rng.one_in(10) {
            Vec::new()
        } else {
            format!("t/{}", rng.index(100)).into_bytes()
        }
    }

    fn open(disk: &mut SimDisk, model: &mut Model) -> (Log, Recovered) {
        model.in_flight.clear();
        model.last_read = None;
        model.pending.clear();
        Log::open(disk, PREFIX, LIMITS)
    }

    /// Reads one message, if any, and checks it.
    fn read(log: &mut Log, disk: &mut SimDisk, model: &mut Model) -> Option<Message> {
        let m = log.next(disk)?;
        let c = content(&m);
        let known = model.durable.get(&m.seq).or(model.maybe.get(&m.seq));
        assert_eq!(known, Some(&c), "read {} that is not durable", m.seq);
        let from = model.last_read.map_or(0, |l| l + 1);
        assert!(m.seq >= from, "read {} after {:?}", m.seq, model.last_read);
        let mut skipped = model.durable.range(from..m.seq).map(|(&s, _)| s);
        if let Some(s) = skipped.find(|s| !model.gone.contains(s)) {
            panic!("read {} and skipped {s}, durable and not done", m.seq);
        }
        model.last_read = Some(m.seq);
        model.gone.remove(&m.seq);
        model.in_flight.push(m.seq);
        Some(m)
    }

    /// One turn of the daemon: appends, one commit, reads, some done in
    /// any order; now and then a drop or a restart. Returns false once the
    /// power is cut.
    fn turn(log: &mut Log, disk: &mut SimDisk, model: &mut Model, rng: &mut Rng) -> bool {
        append_some(log, model, rng);
        let names = |log: &Log| {
            log.segments
                .iter()
                .map(|s| s.name.clone())
                .collect::<BTreeSet<_>>()
        };
        let before = names(log);
        // Half the turns commit as the daemon does with its sync thread:
        // written, then more appended and messages done while the sync
        // runs, then finished.
        let committed = if rng.one_in(2) {
            log.commit(disk)
        } else {
            match log.start_commit(disk, true) {
                Ok(Started::Syncing(pending)) => {
                    let syncing = std::mem::take(&mut model.pending);
                    append_some(log, model, rng);
                    // Reading goes on, and never meets what is not synced.
                    for _ in 0..rng.index(3) {
                        if read(log, disk, model).is_none() {
                            break;
                        }
                    }
                    done_some(log, model, rng);
                    let synced = disk.sync(&pending.segment);
                    let result = log.finish_commit(disk, pending, synced);
                    // What the sync was for goes first: durable now, or
                    // written again by the next commit.
                    let newer = std::mem::replace(&mut model.pending, syncing);
                    if result.is_err() {
                        for (&seq, c) in &model.pending {
                            model.failed.insert(seq, c.clone());
                        }
                        assert!(!log.writer_open);
                        let mut failed_in = model.failed_in.take().unwrap_or_default();
                        failed_in.extend(before);
                        failed_in.extend(names(log));
                        model.failed_in = Some(failed_in);
                        model.pending.extend(newer);
                        if disk.is_cut() {
                            return false;
                        }
                        model.stats.commits_failed += 1;
                        check_bytes(log);
                        return !disk.is_cut();
                    }
                    if let Ok(r) = &result {
                        assert!(r.clone().eq(model.pending.keys().copied()), "{r:?}");
                        model.durable.append(&mut model.pending);
                        model.stats.split_commits += 1;
                        if let Some(failed_in) = model.failed_in.take() {
                            let writer = log.segments.back().map(|s| s.name.clone()).unwrap();
                            assert!(!failed_in.contains(&writer), "{writer} failed before");
                        }
                    }
                    model.pending = newer;
                    check_bytes(log);
                    return !disk.is_cut();
                }
                Ok(Started::Done(range)) => Ok(range),
                Err(e) => Err(e),
            }
        };
        match committed {
            Ok(range) => {
                let expected = model.pending.keys().copied();
                assert!(
                    range.clone().eq(expected),
                    "{range:?} vs {:?}",
                    model.pending
                );
                model.durable.append(&mut model.pending);
                if let Some(failed_in) = model.failed_in.take() {
                    let writer = log.segments.back().map(|s| s.name.clone()).unwrap();
                    assert!(!failed_in.contains(&writer), "{writer} failed before");
                }
            }
            Err(_) if disk.is_cut() => return false,
            Err(_) => {
                model.stats.commits_failed += 1;
                assert!(!log.writer_open);
                let mut failed_in = model.failed_in.take().unwrap_or_default();
                failed_in.extend(before);
                failed_in.extend(names(log));
                model.failed_in = Some(failed_in);
                for (&seq, c) in &model.pending {
                    model.failed.insert(seq, c.clone());
                }
            }
        }
        check_bytes(log);
        for _ in 0..rng.index(5) {
            if read(log, disk, model).is_none() {
                break;
            }
        }
        done_some(log, model, rng);
        if rng.one_in(25) && log.segments.len() >= 2 {
            let upper = log.upper(0);
            log.drop_oldest(disk);
            model.stats.drops += 1;
            let dropped: Vec<u64> = model.durable.range(..upper).map(|(&s, _)| s).collect();
            model.gone.extend(dropped);
            model.in_flight.retain(|&s| s >= upper);
            model.last_read = model.last_read.max(upper.checked_sub(1));
        }
        if disk.is_cut() {
            return false;
        }
        if rng.one_in(40) {
            // A restart: what the buffer held is lost, unless a failed
            // commit wrote it and the restart finds it.
            model.stats.reopens += 1;
            let failed = std::mem::take(&mut model.failed);
            let (reopened, _) = open(disk, model);
            model.maybe.extend(failed);
            *log = reopened;
            model.failed_in = None;
        }
        !disk.is_cut()
    }

    fn append_some(log: &mut Log, model: &mut Model, rng: &mut Rng) {
        for _ in 0..rng.index(4) {
            let (topic, payload) = (topic(rng), payload(rng));
            let seq = log.append(rng.below(1 << 40), &topic, &payload);
            assert!(
                !model.durable.contains_key(&seq),
                "number {seq} given twice"
            );
            let c = (topic, payload);
            model.appended.entry(seq).or_default().push(c.clone());
            model.pending.insert(seq, c);
        }
    }

    /// Marks some of the messages read as done, in any order.
    fn done_some(log: &mut Log, model: &mut Model, rng: &mut Rng) {
        rng.shuffle(&mut model.in_flight);
        let n = rng.index(model.in_flight.len() + 1);
        for seq in model.in_flight.drain(..n) {
            log.done(seq);
            model.gone.insert(seq);
        }
    }

    /// Bytes: the files as the log counts them plus the buffer.
    fn check_bytes(log: &Log) {
        let files: u64 = log.segments.iter().map(|s| s.len).sum();
        assert_eq!(log.bytes(), files + log.buffer.len() as u64);
    }

    /// After a power cut: recovers from what the disk kept and checks it
    /// against the model; the model then takes what was found as durable.
    fn recover(image: &mut SimDisk, model: &mut Model) -> Log {
        model.stats.crashes += 1;
        let files = image.files();
        let (mut log, found) = open(image, model);
        let mut got = Vec::new();
        while let Some(m) = log.next(image) {
            got.push(m);
        }
        // Only messages appended, in order, each once.
        assert!(
            got.windows(2).all(|w| w[0].seq < w[1].seq),
            "{:?}",
            seqs(&got)
        );
        for m in &got {
            let c = content(m);
            let ever = model.appended.get(&m.seq).map_or(&[][..], |v| &v[..]);
            assert!(
                ever.contains(&c),
                "recovered {} that was never appended",
                m.seq
            );
            if !model.gone.contains(&m.seq) {
                if let Some(d) = model.durable.get(&m.seq) {
                    assert_eq!(d, &c, "recovered {} with other content", m.seq);
                }
            }
        }
        // Every durable message not done is there.
        let found_seqs: BTreeSet<u64> = got.iter().map(|m| m.seq).collect();
        for &seq in model.durable.keys() {
            assert!(
                model.gone.contains(&seq) || found_seqs.contains(&seq),
                "lost {seq}, durable and not done (found {found_seqs:?})"
            );
        }
        // The report says what the reader then found.
        let ours: Vec<(&String, &Vec<u8>)> = files
            .iter()
            .filter(|(name, _)| parse_name(PREFIX, name).is_some())
            .collect();
        assert_eq!(found.messages, got.len() as u64);
        assert_eq!(found.segments, ours.len());
        assert_eq!(
            found.bytes,
            ours.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
        );
        assert_eq!(found.oldest, got.iter().map(|m| m.time).min());
        assert_eq!(log.waiting(), found.messages);
        model.stats.recovered += got.len() as u64;
        // What was found is on disk now: it must survive the next crash.
        model.maybe.clear();
        model.failed.clear();
        model.failed_in = None;
        for m in got {
            model.gone.remove(&m.seq);
            model.durable.insert(m.seq, content(&m));
            model.in_flight.push(m.seq);
            model.last_read = Some(m.seq);
        }
        log
    }

    fn seqs(messages: &[Message]) -> Vec<u64> {
        messages.iter().map(|m| m.seq).collect()
    }

    const TURNS: usize = 70;

    /// The workload of `seed` with the power cut after `cut` operations
    /// (or at the end), recovery, more turns on the recovered log, another
    /// cut, recovery again. Returns the operations the first run did.
    fn crash_at(seed: u64, faults: Faults, cut: Option<u64>, model: &mut Model) -> u64 {
        let mut disk = SimDisk::new(seed);
        disk.set_faults(faults);
        if let Some(k) = cut {
            disk.cut_after(k);
        }
        let mut rng = Rng::new(seed.wrapping_mul(31) ^ 0x5eed);
        let (mut log, _) = open(&mut disk, model);
        for _ in 0..TURNS {
            if !turn(&mut log, &mut disk, model, &mut rng) {
                break;
            }
        }
        let ops = disk.ops();
        let mut image = disk.crash();
        let mut log = recover(&mut image, model);
        // The recovered log keeps working, and survives another cut.
        image.set_faults(faults);
        image.cut_after(rng.below(40));
        for _ in 0..12 {
            if !turn(&mut log, &mut image, model, &mut rng) {
                break;
            }
        }
        recover(&mut image.crash(), model);
        ops
    }

    /// Cuts the power at every operation of the workloads of `seeds`.
    fn sweep(seeds: std::ops::Range<u64>, faults: Faults) -> (u64, Stats) {
        let mut points = 0;
        let mut total = Stats::default();
        for seed in seeds {
            let ops = crash_at(seed, faults, None, &mut Model::default());
            for k in 0..=ops {
                let mut model = Model::default();
                crash_at(seed, faults, Some(k), &mut model);
                points += 1;
                let s = model.stats;
                total.crashes += s.crashes;
                total.recovered += s.recovered;
                total.commits_failed += s.commits_failed;
                total.reopens += s.reopens;
                total.drops += s.drops;
                total.split_commits += s.split_commits;
            }
        }
        (points, total)
    }

    #[test]
    fn every_committed_message_survives_a_power_cut_anywhere() {
        let (points, stats) = sweep(0..8, Faults::default());
        println!("{points} crash points without faults: {stats:?}");
        assert!(points >= 1500, "{points}");
        assert!(stats.reopens > 0 && stats.drops > 0, "{stats:?}");
        assert!(stats.split_commits > 1000, "{stats:?}");
    }

    #[test]
    fn failed_writes_and_syncs_lose_nothing_committed() {
        let faults = Faults {
            create: 30,
            append: 25,
            sync: 12,
            sync_dir: 20,
            remove: 8,
            read: 0,
        };
        let (points, stats) = sweep(100..108, faults);
        println!("{points} crash points with faults: {stats:?}");
        assert!(points >= 1500, "{points}");
        assert!(stats.commits_failed > 100, "{stats:?}");
        assert!(stats.split_commits > 100, "{stats:?}");
    }

    /// Reads fail too (list, len, read_at): messages may then be skipped
    /// as damage, by design, but nothing panics or hangs, what is read is
    /// in order and was appended, and recovery reports what it reads.
    #[test]
    fn failing_reads_lose_messages_but_never_the_log() {
        let faults = Faults {
            create: 20,
            append: 20,
            sync: 10,
            sync_dir: 20,
            remove: 8,
            read: 15,
        };
        let mut failures = 0;
        for seed in 200..230 {
            let mut rng = Rng::new(seed);
            let mut disk = SimDisk::new(seed);
            disk.set_faults(faults);
            let mut appended: BTreeMap<u64, Vec<Content>> = BTreeMap::new();
            let (mut log, _) = Log::open(&mut disk, PREFIX, LIMITS);
            let mut last = None;
            for _ in 0..1500 {
                match rng.index(10) {
                    0..=2 => {
                        let c = (topic(&mut rng), payload(&mut rng));
                        let seq = log.append(0, &c.0, &c.1);
                        appended.entry(seq).or_default().push(c);
                    }
                    3 | 4 => _ = log.commit(&mut disk),
                    5..=7 => {
                        if let Some(m) = log.next(&mut disk) {
                            let ever = appended.get(&m.seq).map_or(&[][..], |v| &v[..]);
                            assert!(ever.contains(&content(&m)), "read {}", m.seq);
                            assert!(last < Some(m.seq), "read {} after {last:?}", m.seq);
                            last = Some(m.seq);
                            log.done(m.seq);
                        }
                    }
                    8 => _ = log.drop_oldest(&mut disk),
                    _ => {
                        let mut image = if rng.one_in(2) {
                            disk.crash()
                        } else {
                            disk.clone()
                        };
                        image.set_faults(faults);
                        (log, _) = Log::open(&mut image, PREFIX, LIMITS);
                        failures += disk.failures;
                        disk = image;
                        last = None;
                    }
                }
            }
            failures += disk.failures;
        }
        assert!(failures > 1000, "{failures}");
    }

    #[test]
    fn rolling_segments_are_read_in_order() {
        let mut disk = crate::daemon::store::disk::MemDisk::default();
        let limits = Limits {
            segment_bytes: 16 << 10,
            max_body: 1 << 20,
        };
        let (mut log, _) = Log::open(&mut disk, "in", limits);
        let payload = vec![b'x'; 4000];
        let mut read = Vec::new();
        for i in 0..20u64 {
            assert_eq!(log.append(1, b"t", &payload), i);
            log.commit(&mut disk).unwrap();
            while let Some(m) = log.next(&mut disk) {
                read.push(m.seq);
                log.done(m.seq);
            }
        }
        assert_eq!(read, (0..20).collect::<Vec<_>>());
    }
}
