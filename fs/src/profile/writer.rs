//! The writer thread of a recorder: batches access events into the journal
//! and keeps them through write errors.
//!
//! Records go to the journal with positioned writes at the end of the last
//! good record. A write that fails is cut back off the file (no torn record
//! ever sits before a good one), its batch stays in memory and is retried at
//! most every [`Limits::retry_every`]. Past [`Limits::max_pending`] bytes in
//! memory, new records are dropped, counted as lost, and the journal's header
//! is marked [`FLAG_INCOMPLETE`] in place (two bytes that need no new block,
//! so the mark lands even on a full disk).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::journal::{self, FLAG_INCOMPLETE, FLAGS_OFFSET};
use super::{ABSENT_PER_DIRECTORY, Access, AccessKind, KindSet, RecorderError};

/// Where the writer puts journal bytes: the journal file, or a fake in tests.
pub(crate) trait Sink: Send + 'static {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()>;
    /// Truncates (or extends) to `len` bytes.
    fn set_len(&mut self, len: u64) -> std::io::Result<()>;
    /// Makes what was written durable.
    fn sync(&mut self) -> std::io::Result<()>;
}

impl Sink for File {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        File::set_len(self, len)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_all()
    }
}

/// How much the writer keeps in memory and how often it retries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Largest batch of encoded records kept while writes fail.
    pub max_pending: usize,
    /// Least time between two attempts while writes fail.
    pub retry_every: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending: 8 << 20,
            retry_every: Duration::from_secs(1),
        }
    }
}

/// While writes keep failing, one error line per this many failures.
const LOG_EVERY: u64 = 60;

/// What a recorder has done so far: [`super::Recorder::stats`] reads it
/// while the recorder runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Records this recorder wrote to the journal.
    pub records_written: u64,
    /// Records kept in memory until the journal takes them (after write errors).
    pub records_pending: u64,
    /// Failed writes to the journal (records, or the incomplete mark).
    pub write_errors: u64,
    /// Records dropped: they will never be in the journal.
    pub records_lost: u64,
    /// The journal is marked incomplete on disk (by this recorder, or it
    /// already was when the recorder opened it).
    pub incomplete: bool,
    /// Distinct paths the profile holds as entries (touched in a way other
    /// than `absent`), those already in the journal when it was opened
    /// included; a record dropped as lost is not in it.
    pub entries: u64,
}

/// The shared atomics behind [`RecorderStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    written: AtomicU64,
    pending: AtomicU64,
    errors: AtomicU64,
    lost: AtomicU64,
    incomplete: AtomicBool,
    entries: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> RecorderStats {
        RecorderStats {
            records_written: self.written.load(Ordering::Relaxed),
            records_pending: self.pending.load(Ordering::Relaxed),
            write_errors: self.errors.load(Ordering::Relaxed),
            records_lost: self.lost.load(Ordering::Relaxed),
            incomplete: self.incomplete.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
        }
    }
}

/// True when `kinds` makes a profile entry: any kind but `absent`.
fn is_entry(kinds: KindSet) -> bool {
    kinds.0 & !AccessKind::Absent.bit() != 0
}

/// The journal as the recorder found or created it.
pub(crate) struct Opened<S> {
    /// Where the bytes go.
    pub sink: S,
    /// The journal's path, for messages.
    pub path: PathBuf,
    /// End of the last good record.
    pub len: u64,
    /// The header's flags.
    pub flags: u16,
    /// Paths and kinds already journaled.
    pub seen: HashMap<Arc<Path>, KindSet>,
}

/// The writer thread's state.
pub(crate) struct Writer<S> {
    rx: Receiver<Access>,
    sink: S,
    path: PathBuf,
    seen: HashMap<Arc<Path>, KindSet>,
    /// Absent names journaled per directory (at most [`ABSENT_PER_DIRECTORY`]).
    absent_in: HashMap<Arc<Path>, usize>,
    flush: Duration,
    limits: Limits,
    counters: Arc<Counters>,
    /// End of the last record known to be in the journal.
    len: u64,
    /// The header's flags as on disk.
    flags: u16,
    /// Encoded records not yet in the journal.
    pending: Vec<u8>,
    pending_records: u64,
    /// While writes fail: no attempt before this.
    retry_at: Option<Instant>,
    /// While the incomplete mark fails: no attempt before this.
    mark_retry_at: Option<Instant>,
    failures_in_row: u64,
    dropping_logged: bool,
}

impl<S: Sink> Writer<S> {
    pub(crate) fn new(
        opened: Opened<S>,
        rx: Receiver<Access>,
        flush: Duration,
        limits: Limits,
    ) -> Writer<S> {
        let counters = Arc::new(Counters::default());
        counters
            .incomplete
            .store(opened.flags & FLAG_INCOMPLETE != 0, Ordering::Relaxed);
        let mut absent_in: HashMap<Arc<Path>, usize> = HashMap::new();
        let mut entries = 0;
        for (rel, kinds) in &opened.seen {
            if let (true, Some(dir)) = (kinds.contains(AccessKind::Absent), rel.parent()) {
                *absent_in.entry(Arc::from(dir)).or_default() += 1;
            }
            entries += u64::from(is_entry(*kinds));
        }
        counters.entries.store(entries, Ordering::Relaxed);
        Writer {
            rx,
            sink: opened.sink,
            path: opened.path,
            seen: opened.seen,
            absent_in,
            flush,
            limits,
            counters,
            len: opened.len,
            flags: opened.flags,
            pending: Vec::with_capacity(64 * 1024),
            pending_records: 0,
            retry_at: None,
            mark_retry_at: None,
            failures_in_row: 0,
            dropping_logged: false,
        }
    }

    /// The counters this writer updates.
    pub(crate) fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Blocks for the first event of a burst, then sleeps out the flush
    /// interval and drains the channel: senders never have to wake the writer
    /// more than once per interval. While records wait for a retry, it also
    /// wakes up for the retry. Returns the number of records written, or
    /// [`RecorderError::Incomplete`] when records were lost.
    pub(crate) fn run(mut self) -> Result<u64, RecorderError> {
        let rx = self.rx.clone();
        loop {
            let first = match self.wake_at() {
                None => match rx.recv() {
                    Ok(access) => Some(access),
                    Err(_) => break,
                },
                Some(at) => match rx.recv_deadline(at) {
                    Ok(access) => Some(access),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            if let Some(first) = first {
                self.push(first);
                std::thread::sleep(self.flush);
                for access in rx.try_iter() {
                    self.push(access);
                }
            }
            self.flush(Instant::now());
        }
        self.finish()
    }

    /// When the writer must wake up without a new event: a retry is due.
    fn wake_at(&self) -> Option<Instant> {
        let now = Instant::now();
        let data = (!self.pending.is_empty()).then(|| self.retry_at.unwrap_or(now));
        let mark = self.mark_due().then(|| self.mark_retry_at.unwrap_or(now));
        data.into_iter().chain(mark).min()
    }

    fn marked(&self) -> bool {
        self.flags & FLAG_INCOMPLETE != 0
    }

    fn mark_due(&self) -> bool {
        !self.marked() && self.counters.lost.load(Ordering::Relaxed) > 0
    }

    /// Queues a record for `access` unless it is a repeat; drops it (lost)
    /// when the pending batch is full and cannot be written.
    fn push(&mut self, access: Access) {
        if access.kind == AccessKind::Absent && !self.admit_absent(&access.rel) {
            return;
        }
        let set = self.seen.entry(access.rel.clone()).or_default();
        let was_entry = is_entry(*set);
        if !set.insert(access.kind) {
            return;
        }
        let new_entry = !was_entry && is_entry(*set);
        let rel = access.rel.as_os_str().as_bytes();
        let mut path = Vec::with_capacity(rel.len() + 1);
        path.push(b'/');
        path.extend_from_slice(rel);
        let size = journal::RECORD_PREFIX_LEN + journal::PAYLOAD_FIXED_LEN + path.len();
        if self.pending.len() + size > self.limits.max_pending {
            self.flush(Instant::now());
            if self.pending.len() + size > self.limits.max_pending {
                self.lose(1);
                return;
            }
        }
        if new_entry {
            self.counters.entries.fetch_add(1, Ordering::Relaxed);
        }
        journal::encode_record(&mut self.pending, access.ns, access.kind as u8, &path);
        self.pending_records += 1;
        self.counters
            .pending
            .store(self.pending_records, Ordering::Relaxed);
    }

    /// True when the absent name `rel` is a repeat (dropped as one by
    /// [`Self::push`]) or its directory has room for one more absent name.
    fn admit_absent(&mut self, rel: &Arc<Path>) -> bool {
        if self
            .seen
            .get(rel)
            .is_some_and(|kinds| kinds.contains(AccessKind::Absent))
        {
            return true;
        }
        let Some(dir) = rel.parent() else {
            return false;
        };
        let count = self.absent_in.entry(Arc::from(dir)).or_default();
        if *count >= ABSENT_PER_DIRECTORY {
            return false;
        }
        *count += 1;
        if *count == ABSENT_PER_DIRECTORY {
            tracing::debug!(
                profile = %self.path.display(),
                dir = %dir.display(),
                limit = ABSENT_PER_DIRECTORY,
                "absent names of this directory reach the limit: further ones are not journaled"
            );
        }
        true
    }

    /// Counts `n` records as lost and marks the journal incomplete.
    fn lose(&mut self, n: u64) {
        let lost = self.counters.lost.fetch_add(n, Ordering::Relaxed) + n;
        if !self.dropping_logged {
            self.dropping_logged = true;
            tracing::error!(
                profile = %self.path.display(),
                records_pending = self.pending_records,
                records_lost = lost,
                max_pending_bytes = self.limits.max_pending,
                "the profile journal is not taking records and the memory for them is full: dropping records, the profile will be marked incomplete"
            );
        }
        self.mark(Instant::now());
    }

    /// Writes the pending batch, unless a retry is not yet due.
    fn flush(&mut self, now: Instant) {
        self.mark(now);
        if self.pending.is_empty() || self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        self.write_pending(now);
    }

    fn write_pending(&mut self, now: Instant) {
        match self.sink.write_all_at(&self.pending, self.len) {
            Ok(()) => {
                self.len += self.pending.len() as u64;
                self.counters
                    .written
                    .fetch_add(self.pending_records, Ordering::Relaxed);
                if self.failures_in_row > 0 {
                    tracing::warn!(
                        profile = %self.path.display(),
                        failed_attempts = self.failures_in_row,
                        records = self.pending_records,
                        "profile journal writes work again: the records kept in memory are written"
                    );
                }
                self.pending.clear();
                self.pending_records = 0;
                self.counters.pending.store(0, Ordering::Relaxed);
                self.failures_in_row = 0;
                self.retry_at = None;
            }
            Err(error) => {
                let errors = self.counters.errors.fetch_add(1, Ordering::Relaxed) + 1;
                self.failures_in_row += 1;
                self.retry_at = Some(now + self.limits.retry_every);
                // A partial write must not stay: cut the file back to its
                // last good record (the next attempt rewrites from there anyway).
                let cut = self.sink.set_len(self.len);
                if self.failures_in_row == 1 || self.failures_in_row % LOG_EVERY == 0 {
                    let stats = self.counters.snapshot();
                    tracing::error!(
                        profile = %self.path.display(),
                        %error,
                        write_errors = errors,
                        records_written = stats.records_written,
                        records_pending = stats.records_pending,
                        records_lost = stats.records_lost,
                        retry_in_ms = self.limits.retry_every.as_millis() as u64,
                        "cannot write to the profile journal: keeping the records in memory and retrying"
                    );
                }
                if let Err(error) = cut {
                    tracing::error!(
                        profile = %self.path.display(),
                        %error,
                        len = self.len,
                        "cannot cut a failed write off the profile journal; the next write starts at the last good record"
                    );
                }
            }
        }
    }

    /// Sets [`FLAG_INCOMPLETE`] in the header in place, once records were
    /// lost, unless it is set or a retry is not yet due.
    fn mark(&mut self, now: Instant) {
        if !self.mark_due() || self.mark_retry_at.is_some_and(|at| now < at) {
            return;
        }
        let flags = self.flags | FLAG_INCOMPLETE;
        let written = self
            .sink
            .write_all_at(&flags.to_le_bytes(), FLAGS_OFFSET)
            .and_then(|()| self.sink.sync());
        match written {
            Ok(()) => {
                self.flags = flags;
                self.mark_retry_at = None;
                self.counters.incomplete.store(true, Ordering::Relaxed);
                tracing::error!(
                    profile = %self.path.display(),
                    records_lost = self.counters.lost.load(Ordering::Relaxed),
                    "records were lost: the profile is marked incomplete"
                );
            }
            Err(error) => {
                let errors = self.counters.errors.fetch_add(1, Ordering::Relaxed) + 1;
                self.mark_retry_at = Some(now + self.limits.retry_every);
                tracing::error!(
                    profile = %self.path.display(),
                    %error,
                    write_errors = errors,
                    "cannot mark the profile incomplete; retrying"
                );
            }
        }
    }

    /// After the last event: one more attempt whatever the back-off says;
    /// what still cannot be written is lost and the journal marked.
    fn finish(mut self) -> Result<u64, RecorderError> {
        let now = Instant::now();
        if !self.pending.is_empty() {
            self.write_pending(now);
        }
        if !self.pending.is_empty() {
            let n = self.pending_records;
            self.pending.clear();
            self.pending_records = 0;
            self.counters.pending.store(0, Ordering::Relaxed);
            self.counters.lost.fetch_add(n, Ordering::Relaxed);
        }
        self.mark_retry_at = None;
        self.mark(now);
        let synced = self.sink.sync();
        let stats = self.counters.snapshot();
        if stats.records_lost > 0 {
            return Err(RecorderError::Incomplete {
                path: self.path.clone(),
                lost: stats.records_lost,
                write_errors: stats.write_errors,
                marked: self.marked(),
            });
        }
        synced.map_err(|source| RecorderError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(stats.records_written)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::profile::journal::Header;
    use crate::profile::{AccessKind, read_bytes};

    /// A journal in memory that fails on demand, like a full disk: a failing
    /// write leaves part of its bytes behind.
    #[derive(Clone, Default)]
    struct FakeSink(Arc<Mutex<Fake>>);

    #[derive(Default)]
    struct Fake {
        data: Vec<u8>,
        /// Fail this many record writes (u64::MAX: all).
        fail_writes: u64,
        /// Fail this many writes of the flags.
        fail_marks: u64,
        write_attempts: u64,
        syncs: u64,
    }

    impl FakeSink {
        fn new() -> FakeSink {
            let header = journal::encode_header(
                &Header {
                    image: None,
                    created_unix_ns: 0,
                    writer: "test".into(),
                },
                0,
            );
            let sink = FakeSink::default();
            sink.0.lock().unwrap().data = header;
            sink
        }

        fn with<T>(&self, f: impl FnOnce(&mut Fake) -> T) -> T {
            f(&mut self.0.lock().unwrap())
        }

        fn bytes(&self) -> Vec<u8> {
            self.with(|f| f.data.clone())
        }
    }

    impl Sink for FakeSink {
        fn write_all_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
            let mut f = self.0.lock().unwrap();
            let offset = offset as usize;
            let is_mark = offset == FLAGS_OFFSET as usize && buf.len() == 2;
            let failing = if is_mark {
                &mut f.fail_marks
            } else {
                &mut f.fail_writes
            };
            let fail = *failing > 0;
            if fail && *failing != u64::MAX {
                *failing -= 1;
            }
            if !is_mark {
                f.write_attempts += 1;
            }
            // A failing write lands half of its bytes.
            let n = if fail { buf.len() / 2 } else { buf.len() };
            if f.data.len() < offset + n {
                f.data.resize(offset + n, 0);
            }
            f.data[offset..offset + n].copy_from_slice(&buf[..n]);
            if fail {
                Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
            } else {
                Ok(())
            }
        }

        fn set_len(&mut self, len: u64) -> std::io::Result<()> {
            self.0.lock().unwrap().data.resize(len as usize, 0);
            Ok(())
        }

        fn sync(&mut self) -> std::io::Result<()> {
            self.0.lock().unwrap().syncs += 1;
            Ok(())
        }
    }

    const RETRY: Duration = Duration::from_secs(1);

    fn writer(
        sink: &FakeSink,
        max_pending: usize,
    ) -> (Writer<FakeSink>, crossbeam_channel::Sender<Access>) {
        writer_retrying(sink, max_pending, RETRY)
    }

    fn writer_retrying(
        sink: &FakeSink,
        max_pending: usize,
        retry_every: Duration,
    ) -> (Writer<FakeSink>, crossbeam_channel::Sender<Access>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let len = sink.bytes().len() as u64;
        let opened = Opened {
            sink: sink.clone(),
            path: "fake".into(),
            len,
            flags: 0,
            seen: HashMap::new(),
        };
        let limits = Limits {
            max_pending,
            retry_every,
        };
        (Writer::new(opened, rx, Duration::ZERO, limits), tx)
    }

    /// A writer appending to what `sink` holds, whose journal had `seen`.
    fn reopened(sink: &FakeSink, seen: HashMap<Arc<Path>, KindSet>) -> Writer<FakeSink> {
        let (_tx, rx) = crossbeam_channel::unbounded();
        let opened = Opened {
            sink: sink.clone(),
            path: "fake".into(),
            len: sink.bytes().len() as u64,
            flags: 0,
            seen,
        };
        Writer::new(opened, rx, Duration::ZERO, Limits::default())
    }

    fn access(i: usize) -> Access {
        Access {
            rel: Arc::from(Path::new(&format!("f{i:03}"))),
            kind: AccessKind::Lookup,
            ns: i as u64,
        }
    }

    /// Size of the record of `access(i)`.
    const RECORD: usize = journal::RECORD_PREFIX_LEN + journal::PAYLOAD_FIXED_LEN + 5;

    fn paths(bytes: &[u8]) -> (Vec<String>, bool) {
        let p = read_bytes(Path::new("fake"), bytes).unwrap();
        assert_eq!(p.torn_tail_bytes, 0, "no torn record is left behind");
        let paths = p.entries.iter().map(|e| e.path.to_string()).collect();
        (paths, p.incomplete)
    }

    fn want(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("/f{i:03}")).collect()
    }

    #[test]
    fn a_failed_write_is_cut_back_kept_and_retried_without_marking() {
        let sink = FakeSink::new();
        let header_len = sink.bytes().len();
        let (mut w, _tx) = writer(&sink, 1 << 20);
        sink.with(|f| f.fail_writes = 1);
        let t0 = Instant::now();
        for i in 0..3 {
            w.push(access(i));
        }
        w.flush(t0);
        assert_eq!(
            sink.bytes().len(),
            header_len,
            "the partial write is cut off"
        );
        let stats = w.counters.snapshot();
        assert_eq!(
            (
                stats.records_written,
                stats.records_pending,
                stats.write_errors
            ),
            (0, 3, 1)
        );

        w.push(access(3));
        w.flush(t0 + RETRY / 2);
        assert_eq!(
            sink.with(|f| f.write_attempts),
            1,
            "no retry before the back-off"
        );

        w.flush(t0 + RETRY);
        assert_eq!(sink.with(|f| f.write_attempts), 2);
        assert_eq!(paths(&sink.bytes()), (want(0..4), false));
        assert_eq!(
            w.counters.snapshot(),
            RecorderStats {
                records_written: 4,
                records_pending: 0,
                write_errors: 1,
                records_lost: 0,
                incomplete: false,
                entries: 4,
            }
        );
        assert_eq!(w.finish().unwrap(), 4);
    }

    #[test]
    fn beyond_the_pending_limit_records_are_lost_and_the_journal_marked_incomplete() {
        let sink = FakeSink::new();
        // Room for three records in memory.
        let (mut w, _tx) = writer(&sink, 3 * RECORD);
        sink.with(|f| f.fail_writes = u64::MAX);
        let t0 = Instant::now();
        for i in 0..5 {
            w.push(access(i));
        }
        let stats = w.counters.snapshot();
        assert_eq!((stats.records_pending, stats.records_lost), (3, 2));
        assert!(stats.incomplete);
        assert_eq!(paths(&sink.bytes()), (vec![], true), "marked in place");
        assert!(sink.with(|f| f.syncs) >= 1, "the mark is synced");

        // The disk frees up: what was kept lands, the mark stays.
        sink.with(|f| f.fail_writes = 0);
        w.flush(t0 + RETRY * 2);
        assert_eq!(paths(&sink.bytes()), (want(0..3), true));
        let err = w.finish().unwrap_err();
        assert!(
            matches!(
                err,
                RecorderError::Incomplete {
                    lost: 2,
                    marked: true,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_mark_that_fails_is_retried() {
        let sink = FakeSink::new();
        let (mut w, _tx) = writer(&sink, RECORD);
        sink.with(|f| {
            f.fail_writes = u64::MAX;
            f.fail_marks = 1;
        });
        let t0 = Instant::now();
        w.push(access(0));
        w.push(access(1)); // lost; the mark fails once
        assert!(!w.counters.snapshot().incomplete);
        w.mark(t0 + RETRY * 2);
        assert!(w.counters.snapshot().incomplete);
        assert!(paths(&sink.bytes()).1);
        assert_eq!(w.counters.snapshot().write_errors, 2);
    }

    #[test]
    fn finish_tries_once_more_then_reports_what_was_lost() {
        let sink = FakeSink::new();
        let (w, tx) = writer(&sink, 1 << 20);
        sink.with(|f| f.fail_writes = u64::MAX);
        for i in 0..4 {
            tx.send(access(i)).unwrap();
        }
        drop(tx);
        let err = w.run().unwrap_err();
        assert!(
            matches!(
                err,
                RecorderError::Incomplete {
                    lost: 4,
                    write_errors: 2,
                    marked: true,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "profile fake is incomplete: 4 records were lost after 2 write errors (marked in its header)"
        );
        assert_eq!(paths(&sink.bytes()), (vec![], true));
    }

    #[test]
    fn finish_lands_records_a_failed_write_kept() {
        let sink = FakeSink::new();
        let (w, tx) = writer(&sink, 1 << 20);
        sink.with(|f| f.fail_writes = 1);
        for i in 0..4 {
            tx.send(access(i)).unwrap();
        }
        drop(tx);
        assert_eq!(w.run().unwrap(), 4);
        assert_eq!(paths(&sink.bytes()), (want(0..4), false));
    }

    #[test]
    fn kept_records_are_retried_without_new_accesses() {
        let sink = FakeSink::new();
        let (w, tx) = writer_retrying(&sink, 1 << 20, Duration::from_millis(20));
        let counters = w.counters();
        sink.with(|f| f.fail_writes = 3);
        let thread = std::thread::spawn(move || w.run());
        for i in 0..2 {
            tx.send(access(i)).unwrap();
        }
        // The channel stays open and quiet: the retries alone land the records.
        let deadline = Instant::now() + Duration::from_secs(10);
        while counters.snapshot().records_written < 2 {
            assert!(Instant::now() < deadline, "{:?}", counters.snapshot());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(counters.snapshot().write_errors, 3);
        drop(tx);
        assert_eq!(thread.join().unwrap().unwrap(), 2);
        assert_eq!(paths(&sink.bytes()), (want(0..2), false));
    }

    #[test]
    fn repeats_are_dropped_not_counted_as_lost() {
        let sink = FakeSink::new();
        let (mut w, _tx) = writer(&sink, 1 << 20);
        w.push(access(0));
        w.push(access(0));
        w.flush(Instant::now());
        assert_eq!(w.counters.snapshot().records_written, 1);
        assert_eq!(w.counters.snapshot().records_lost, 0);
    }

    #[test]
    fn entries_count_paths_touched_other_than_absent_including_those_reopened() {
        let sink = FakeSink::new();
        let (mut w, _tx) = writer(&sink, 1 << 20);
        let touch = |rel: &str, kind: AccessKind| Access {
            rel: Arc::from(Path::new(rel)),
            kind,
            ns: 0,
        };
        w.push(touch("a", AccessKind::Lookup));
        w.push(touch("a", AccessKind::Read));
        w.push(absent("missing", 1));
        w.push(touch("b", AccessKind::Readlink));
        w.flush(Instant::now());
        assert_eq!(w.counters.snapshot().entries, 2);
        let p = read_bytes(Path::new("fake"), &sink.bytes()).unwrap();
        assert_eq!(p.entries.len(), 2);

        // Reopened: the journal's entries are counted, its absent names not.
        let mut seen: HashMap<Arc<Path>, KindSet> = HashMap::new();
        for (rel, kind) in [
            ("a", AccessKind::Lookup),
            ("a", AccessKind::Read),
            ("missing", AccessKind::Absent),
            ("b", AccessKind::Readlink),
        ] {
            seen.entry(Arc::from(Path::new(rel)))
                .or_default()
                .insert(kind);
        }
        let mut w = reopened(&sink, seen);
        assert_eq!(w.counters.snapshot().entries, 2);
        w.push(absent("other", 2));
        w.push(touch("b", AccessKind::Exec));
        assert_eq!(w.counters.snapshot().entries, 2);
        // A name first seen absent becomes an entry when it is touched otherwise.
        w.push(touch("missing", AccessKind::Lookup));
        w.push(touch("c", AccessKind::Readdir));
        w.flush(Instant::now());
        assert_eq!(w.counters.snapshot().entries, 4);
        let p = read_bytes(Path::new("fake"), &sink.bytes()).unwrap();
        assert_eq!(p.entries.len(), 4);
    }

    fn absent(rel: &str, ns: u64) -> Access {
        Access {
            rel: Arc::from(Path::new(rel)),
            kind: AccessKind::Absent,
            ns,
        }
    }

    #[test]
    fn absent_names_are_bounded_per_directory_not_lost() {
        let sink = FakeSink::new();
        let (mut w, _tx) = writer(&sink, 1 << 20);
        for i in 0..ABSENT_PER_DIRECTORY + 10 {
            w.push(absent(&format!("tmp/n{i}"), i as u64));
        }
        // Other directories and other kinds are not affected by a full one.
        w.push(absent("usr/bin/python3.12", 500));
        w.push(absent("tmp/n0", 501));
        w.push(Access {
            rel: Arc::from(Path::new("tmp/n999")),
            kind: AccessKind::Lookup,
            ns: 502,
        });
        w.flush(Instant::now());
        let stats = w.counters.snapshot();
        assert_eq!(stats.records_lost, 0);
        assert!(!stats.incomplete);
        let p = read_bytes(Path::new("fake"), &sink.bytes()).unwrap();
        let names: Vec<String> = p.absent.iter().map(|e| e.path.to_string()).collect();
        let mut want: Vec<String> = (0..ABSENT_PER_DIRECTORY)
            .map(|i| format!("/tmp/n{i}"))
            .collect();
        want.push("/usr/bin/python3.12".into());
        assert_eq!(names, want);
        let touched: Vec<String> = p.entries.iter().map(|e| e.path.to_string()).collect();
        assert_eq!(touched, ["/tmp/n999"]);

        // A writer that reopens the journal knows the directory is full.
        let mut seen: HashMap<Arc<Path>, KindSet> = HashMap::new();
        for e in &p.absent {
            let mut kinds = KindSet::default();
            kinds.insert(AccessKind::Absent);
            seen.insert(Arc::from(e.path.rel()), kinds);
        }
        let mut w = reopened(&sink, seen);
        w.push(absent("tmp/later", 600));
        w.push(absent("usr/bin/python3.13", 601));
        w.flush(Instant::now());
        let p = read_bytes(Path::new("fake"), &sink.bytes()).unwrap();
        assert_eq!(p.absent.len(), ABSENT_PER_DIRECTORY + 2);
        assert_eq!(
            p.absent.last().unwrap().path.to_string(),
            "/usr/bin/python3.13"
        );
    }
}
