//! The recorder: a cheap handle for the view's serving threads, and the
//! journal it owns (locked for its lifetime, written by the writer thread).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;

use super::journal::{self, Header};
use super::lock::try_lock;
use super::writer::{Counters, Limits, Opened, Writer};
use super::{Access, AccessKind, KindSet, ReadError, RecorderStats, set_aside};

/// Why a recorder could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    /// The journal file could not be created, read or written.
    #[error("profile {path}: {source}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// An existing journal is unreadable; it is left untouched.
    #[error("refusing to append to {0}")]
    Existing(#[source] ReadError),
    /// An existing journal belongs to another image.
    #[error("profile {path} belongs to image {found}, not {wanted}")]
    OtherImage {
        /// The journal file.
        path: PathBuf,
        /// The image in its header.
        found: String,
        /// The image being recorded.
        wanted: String,
    },
    /// Another recorder (a running view, maybe in another process) holds the journal.
    #[error("profile {path} is being recorded by another running view")]
    Busy {
        /// The journal file.
        path: PathBuf,
    },
    /// Records were lost (the journal would not take them): the profile
    /// misses accesses. Records that were written are in the journal.
    #[error(
        "profile {path} is incomplete: {lost} records were lost after {write_errors} write errors ({})",
        if *marked { "marked in its header" } else { "and the mark in its header could not be written" }
    )]
    Incomplete {
        /// The journal file.
        path: PathBuf,
        /// Records dropped.
        lost: u64,
        /// Failed writes.
        write_errors: u64,
        /// The journal's header says it is incomplete.
        marked: bool,
    },
    /// The writer thread panicked.
    #[error("profile writer thread for {0} panicked")]
    Panicked(PathBuf),
}

impl RecorderError {
    /// True when the existing journal cannot be appended to as this image's
    /// profile (what [`Recorder::open_or_set_aside`] sets aside).
    fn is_unusable_journal(&self) -> bool {
        matches!(
            self,
            RecorderError::Existing(_) | RecorderError::OtherImage { .. }
        )
    }
}

/// Sends access events to the writer; cheap to clone, one per serving thread.
#[derive(Clone, Debug)]
pub struct RecorderHandle {
    /// Shared by every handle; [`Recorder::close`] takes it out.
    tx: Arc<RwLock<Option<Sender<Access>>>>,
    start: Instant,
    base_ns: u64,
}

impl RecorderHandle {
    /// Reports that `rel` was accessed as `kind`, now. The caller filters repeats;
    /// the writer drops any that slip through.
    pub fn record(&self, rel: &Arc<Path>, kind: AccessKind) {
        let elapsed = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let ns = self.base_ns.saturating_add(elapsed);
        // After a close, accesses are no longer recorded.
        let tx = self.tx.read().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = tx.as_ref() {
            let _ = tx.send(Access {
                rel: rel.clone(),
                kind,
                ns,
            });
        }
    }
}

/// Owns the writer thread of one journal. The journal is locked
/// (`flock(LOCK_EX)`) until the writer is done with it.
#[derive(Debug)]
pub struct Recorder {
    handle: RecorderHandle,
    thread: JoinHandle<Result<u64, RecorderError>>,
    counters: Arc<Counters>,
    path: PathBuf,
}

/// What to do with an existing journal that cannot be appended to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unusable {
    Refuse,
    SetAside,
}

impl Recorder {
    /// Opens the journal at `path` for appending, creating it if missing.
    /// An existing journal must be readable and of the same image; its torn
    /// tail, if any, is cut off first. `flush` bounds how long an event stays
    /// in memory when the journal takes writes. Fails with
    /// [`RecorderError::Busy`] while another recorder holds the journal.
    pub fn open(
        path: &Path,
        image: Option<String>,
        flush: Duration,
    ) -> Result<Recorder, RecorderError> {
        Self::start(path, image, flush, Unusable::Refuse, Limits::default()).map(|(r, _)| r)
    }

    /// Like [`Recorder::open`], but an existing journal that is not readable
    /// as a profile of `image` (bad magic, unknown version, malformed header
    /// or record, read error, another image's profile) is set aside with
    /// [`set_aside`] (never deleted) and a fresh journal started. Returns
    /// where the old journal went, if it was set aside.
    pub fn open_or_set_aside(
        path: &Path,
        image: Option<String>,
        flush: Duration,
    ) -> Result<(Recorder, Option<PathBuf>), RecorderError> {
        Self::start(path, image, flush, Unusable::SetAside, Limits::default())
    }

    fn start(
        path: &Path,
        image: Option<String>,
        flush: Duration,
        unusable: Unusable,
        limits: Limits,
    ) -> Result<(Recorder, Option<PathBuf>), RecorderError> {
        let io_err = |source| RecorderError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut aside = None;
        let (file, loaded) = loop {
            let mut file = lock(path)?;
            match load(path, &mut file, &image) {
                Ok(loaded) => break (file, loaded),
                Err(e) if unusable == Unusable::SetAside && e.is_unusable_journal() => {
                    // `file` holds the lock: no recorder starts on it meanwhile.
                    let to = set_aside(path).map_err(io_err)?;
                    tracing::warn!(
                        profile = %path.display(),
                        set_aside = %to.display(),
                        error = %e,
                        "the profile cannot be appended to: set it aside, starting a new one"
                    );
                    aside = Some(to);
                }
                Err(e) => return Err(e),
            }
        };
        let opened = Opened {
            sink: file,
            path: path.to_path_buf(),
            len: loaded.len,
            flags: loaded.flags,
            seen: loaded.seen,
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let writer = Writer::new(opened, rx, flush, limits);
        let counters = writer.counters();
        let thread = std::thread::Builder::new()
            .name("pare-profile".into())
            .spawn(move || writer.run())
            .map_err(io_err)?;
        let recorder = Recorder {
            handle: RecorderHandle {
                tx: Arc::new(RwLock::new(Some(tx))),
                start: Instant::now(),
                base_ns: loaded.base_ns,
            },
            thread,
            counters,
            path: path.to_path_buf(),
        };
        Ok((recorder, aside))
    }

    /// A handle for serving threads.
    pub fn handle(&self) -> RecorderHandle {
        self.handle.clone()
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the writer has done so far (records written, pending, lost,
    /// write errors, whether the journal is marked incomplete).
    pub fn stats(&self) -> RecorderStats {
        self.counters.snapshot()
    }

    /// Waits until every handle is dropped, writes what is left (one more
    /// attempt after write errors), syncs the journal and returns the number
    /// of records this recorder wrote. When records were lost, returns
    /// [`RecorderError::Incomplete`] (the journal is then marked incomplete).
    pub fn finish(self) -> Result<u64, RecorderError> {
        let Recorder {
            handle,
            thread,
            path,
            ..
        } = self;
        drop(handle);
        join(thread, path)
    }

    /// Stops recording now, even while handles are still in use (a view that
    /// keeps serving users elsewhere after it was released): writes what was
    /// recorded so far, syncs and unlocks the journal. Later accesses through
    /// the remaining handles are not recorded.
    pub fn close(self) -> Result<u64, RecorderError> {
        let Recorder {
            handle,
            thread,
            path,
            ..
        } = self;
        handle.tx.write().unwrap_or_else(|e| e.into_inner()).take();
        join(thread, path)
    }
}

fn join(
    thread: JoinHandle<Result<u64, RecorderError>>,
    path: PathBuf,
) -> Result<u64, RecorderError> {
    thread.join().map_err(|_| RecorderError::Panicked(path))?
}

/// Opens (creating it if missing) and locks the journal at `path`, making
/// sure the lock is on the file the path names (a merge or a set-aside may
/// replace it between the open and the lock).
fn lock(path: &Path) -> Result<File, RecorderError> {
    let io_err = |source| RecorderError::Io {
        path: path.to_path_buf(),
        source,
    };
    for _ in 0..8 {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        if !try_lock(&file).map_err(io_err)? {
            return Err(RecorderError::Busy {
                path: path.to_path_buf(),
            });
        }
        let held = file.metadata().map_err(io_err)?;
        match std::fs::metadata(path) {
            Ok(now) if (now.dev(), now.ino()) == (held.dev(), held.ino()) => return Ok(file),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    Err(io_err(std::io::Error::other(
        "the file kept being replaced while it was opened",
    )))
}

/// What [`load`] found in a journal.
struct Loaded {
    /// End of the last good record.
    len: u64,
    /// The header's flags.
    flags: u16,
    /// Paths and kinds already journaled.
    seen: HashMap<Arc<Path>, KindSet>,
    /// This run's clock offset: ns from the journal's creation to now.
    base_ns: u64,
}

/// Reads the locked journal: ready to append when it is a profile of
/// `image` (a torn tail is cut off), started when it is empty.
fn load(path: &Path, file: &mut File, image: &Option<String>) -> Result<Loaded, RecorderError> {
    let io_err = |source| RecorderError::Io {
        path: path.to_path_buf(),
        source,
    };
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|source| {
        RecorderError::Existing(ReadError::Io {
            path: path.to_path_buf(),
            source,
        })
    })?;
    if bytes.is_empty() {
        let header = Header {
            image: image.clone(),
            created_unix_ns: now_ns,
            writer: format!("pare {}", env!("CARGO_PKG_VERSION")),
        };
        let encoded = journal::encode_header(&header, 0);
        file.write_all_at(&encoded, 0)
            .and_then(|()| file.sync_all())
            .map_err(io_err)?;
        return Ok(Loaded {
            len: encoded.len() as u64,
            flags: 0,
            seen: HashMap::new(),
            base_ns: 0,
        });
    }
    let profile = super::read_bytes(path, &bytes).map_err(RecorderError::Existing)?;
    if let (Some(found), Some(wanted)) = (&profile.header.image, image) {
        if found != wanted {
            return Err(RecorderError::OtherImage {
                path: path.to_path_buf(),
                found: found.clone(),
                wanted: wanted.clone(),
            });
        }
    }
    let mut seen: HashMap<Arc<Path>, KindSet> = HashMap::new();
    for entry in &profile.entries {
        let rel: Arc<Path> = Arc::from(entry.path.rel());
        let set = seen.entry(rel).or_default();
        for kind in &entry.accesses {
            set.insert(*kind);
        }
    }
    if profile.torn_tail_bytes > 0 {
        tracing::warn!(
            profile = %path.display(),
            bytes = profile.torn_tail_bytes,
            "cutting off the torn tail of the journal before appending"
        );
        file.set_len(profile.valid_len).map_err(io_err)?;
    }
    if profile.incomplete {
        tracing::warn!(
            profile = %path.display(),
            "appending to a profile marked incomplete: it stays incomplete"
        );
    }
    Ok(Loaded {
        len: profile.valid_len,
        flags: profile.flags,
        seen,
        base_ns: now_ns.saturating_sub(profile.header.created_unix_ns),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::profile::read;

    fn rel(s: &str) -> Arc<Path> {
        Arc::from(Path::new(s))
    }

    const FLUSH: Duration = Duration::from_millis(10);

    #[test]
    fn journals_each_path_and_kind_once_and_appends_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let rec = Recorder::open(&path, Some("sha256:x".into()), FLUSH).unwrap();
        let h = rec.handle();
        h.record(&rel(""), AccessKind::Readdir);
        h.record(&rel("bin/sh"), AccessKind::Lookup);
        h.record(&rel("bin/sh"), AccessKind::Lookup);
        h.record(&rel("bin/sh"), AccessKind::Exec);
        drop(h);
        assert_eq!(rec.finish().unwrap(), 3);

        let rec = Recorder::open(&path, Some("sha256:x".into()), FLUSH).unwrap();
        let h = rec.handle();
        h.record(&rel("bin/sh"), AccessKind::Exec);
        h.record(&rel("etc/passwd"), AccessKind::Read);
        drop(h);
        assert_eq!(rec.finish().unwrap(), 1);

        let profile = read(&path).unwrap();
        let got: Vec<_> = profile
            .entries
            .iter()
            .map(|e| (e.path.to_string(), e.accesses.clone()))
            .collect();
        use AccessKind::*;
        assert_eq!(
            got,
            vec![
                ("/".into(), vec![Readdir]),
                ("/bin/sh".into(), vec![Lookup, Exec]),
                ("/etc/passwd".into(), vec![Read]),
            ]
        );
        assert!(!profile.incomplete);
    }

    #[test]
    fn refuses_other_images_and_foreign_files_without_touching_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        Recorder::open(&path, Some("sha256:a".into()), FLUSH)
            .unwrap()
            .finish()
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = Recorder::open(&path, Some("sha256:b".into()), FLUSH).unwrap_err();
        assert!(matches!(err, RecorderError::OtherImage { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);

        let foreign = dir.path().join("notes.txt");
        std::fs::write(&foreign, b"hello").unwrap();
        let err = Recorder::open(&foreign, None, FLUSH).unwrap_err();
        assert!(err.to_string().contains("not a pare profile"), "{err:#}");
        assert_eq!(std::fs::read(&foreign).unwrap(), b"hello");
    }

    #[test]
    fn a_torn_tail_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let rec = Recorder::open(&path, None, FLUSH).unwrap();
        rec.handle().record(&rel("a"), AccessKind::Lookup);
        rec.finish().unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[7, 0, 0]).unwrap();
        drop(f);

        let rec = Recorder::open(&path, None, FLUSH).unwrap();
        rec.handle().record(&rel("b"), AccessKind::Lookup);
        rec.finish().unwrap();
        let profile = read(&path).unwrap();
        assert_eq!(profile.torn_tail_bytes, 0);
        assert_eq!(profile.entries.len(), 2);
    }

    #[test]
    fn a_second_recorder_on_a_live_journal_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let first = Recorder::open(&path, Some("sha256:x".into()), FLUSH).unwrap();
        for set_aside in [false, true] {
            let err = if set_aside {
                Recorder::open_or_set_aside(&path, Some("sha256:y".into()), FLUSH).unwrap_err()
            } else {
                Recorder::open(&path, Some("sha256:x".into()), FLUSH).unwrap_err()
            };
            assert!(matches!(err, RecorderError::Busy { .. }), "{err}");
            assert_eq!(
                err.to_string(),
                format!(
                    "profile {} is being recorded by another running view",
                    path.display()
                )
            );
        }
        first.handle().record(&rel("a"), AccessKind::Lookup);
        assert_eq!(first.finish().unwrap(), 1);
        let again = Recorder::open(&path, Some("sha256:x".into()), FLUSH).unwrap();
        assert_eq!(again.finish().unwrap(), 0);
        assert_eq!(read(&path).unwrap().entries.len(), 1);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "nothing was set aside");
    }

    /// A good journal of `image` with one entry.
    fn good(image: &str, flags: u16) -> Vec<u8> {
        let mut bytes = journal::encode_header(
            &Header {
                image: Some(image.into()),
                created_unix_ns: 1,
                writer: "t".into(),
            },
            flags,
        );
        journal::encode_record(&mut bytes, 1, AccessKind::Lookup as u8, b"/old");
        bytes
    }

    #[test]
    fn unusable_journals_are_set_aside_with_their_bytes_and_a_fresh_one_started() {
        let mut bad_version = good("sha256:x", 0);
        bad_version[8] = 7;
        let mut bad_json = good("sha256:x", 0);
        bad_json[16] = b'!';
        let mut bad_record = journal::encode_header(
            &Header {
                image: Some("sha256:x".into()),
                created_unix_ns: 1,
                writer: "t".into(),
            },
            0,
        );
        journal::encode_record(&mut bad_record, 1, 1, b"/a/../../etc");
        let cases: [(&str, Vec<u8>); 5] = [
            ("bad magic", b"#!/bin/sh\necho not a profile\n".to_vec()),
            ("unknown version", bad_version),
            ("malformed header", bad_json),
            ("hostile record", bad_record),
            ("another image", good("sha256:other", 0)),
        ];
        for (case, bytes) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("p");
            std::fs::write(&path, &bytes).unwrap();
            let (rec, aside) =
                Recorder::open_or_set_aside(&path, Some("sha256:x".into()), FLUSH).unwrap();
            let aside = aside.unwrap_or_else(|| panic!("{case}: not set aside"));
            assert_eq!(std::fs::read(&aside).unwrap(), bytes, "{case}");
            assert!(
                aside
                    .to_str()
                    .unwrap()
                    .starts_with(&format!("{}.corrupt-", path.display())),
                "{case}: {}",
                aside.display()
            );
            rec.handle().record(&rel("new"), AccessKind::Read);
            assert_eq!(rec.finish().unwrap(), 1, "{case}");
            let fresh = read(&path).unwrap();
            assert_eq!(fresh.header.image.as_deref(), Some("sha256:x"), "{case}");
            let paths: Vec<String> = fresh.entries.iter().map(|e| e.path.to_string()).collect();
            assert_eq!(paths, vec!["/new".to_string()], "{case}");
        }
    }

    #[test]
    fn a_good_journal_is_appended_to_not_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        std::fs::write(&path, good("sha256:x", 0)).unwrap();
        let (rec, aside) =
            Recorder::open_or_set_aside(&path, Some("sha256:x".into()), FLUSH).unwrap();
        assert_eq!(aside, None);
        rec.handle().record(&rel("new"), AccessKind::Read);
        rec.finish().unwrap();
        assert_eq!(read(&path).unwrap().entries.len(), 2);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_incomplete_journal_stays_incomplete_when_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        std::fs::write(&path, good("sha256:x", journal::FLAG_INCOMPLETE)).unwrap();
        let rec = Recorder::open(&path, Some("sha256:x".into()), FLUSH).unwrap();
        assert!(rec.stats().incomplete);
        rec.handle().record(&rel("new"), AccessKind::Read);
        assert_eq!(rec.finish().unwrap(), 1);
        let profile = read(&path).unwrap();
        assert!(profile.incomplete);
        assert_eq!(profile.entries.len(), 2);
    }

    #[test]
    fn stats_count_records_while_the_recorder_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let rec = Recorder::open(&path, None, Duration::from_millis(1)).unwrap();
        let h = rec.handle();
        for name in ["a", "b", "c"] {
            h.record(&rel(name), AccessKind::Lookup);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while rec.stats().records_written < 3 {
            assert!(Instant::now() < deadline, "{:?}", rec.stats());
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(
            rec.stats(),
            RecorderStats {
                records_written: 3,
                entries: 3,
                ..RecorderStats::default()
            }
        );
        drop(h);
        assert_eq!(rec.finish().unwrap(), 3);
    }

    #[test]
    fn a_hostile_clock_saturates_instead_of_overflowing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        // A header from the far future: this run's clock starts at 0.
        let mut bytes = journal::encode_header(
            &Header {
                image: None,
                created_unix_ns: u64::MAX,
                writer: "t".into(),
            },
            0,
        );
        journal::encode_record(&mut bytes, u64::MAX, 1, b"/late");
        std::fs::write(&path, bytes).unwrap();
        let rec = Recorder::open(&path, None, FLUSH).unwrap();
        rec.handle().record(&rel("new"), AccessKind::Lookup);
        rec.finish().unwrap();
        let profile = read(&path).unwrap();
        assert_eq!(profile.entries.len(), 2);

        let (tx, rx) = crossbeam_channel::unbounded();
        let handle = RecorderHandle {
            tx: Arc::new(RwLock::new(Some(tx))),
            start: Instant::now(),
            base_ns: u64::MAX,
        };
        handle.record(&rel("x"), AccessKind::Lookup);
        assert_eq!(rx.recv().unwrap().ns, u64::MAX);
    }

    #[test]
    fn close_stops_recording_while_handles_live_and_frees_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let rec = Recorder::open(&path, None, Duration::from_millis(1)).unwrap();
        let still_serving = rec.handle();
        still_serving.record(&rel("a"), AccessKind::Lookup);
        assert_eq!(rec.close().unwrap(), 1);
        still_serving.record(&rel("b"), AccessKind::Lookup);
        // The journal is unlocked: a new recorder (a new view) takes it.
        let next = Recorder::open(&path, None, Duration::from_millis(1)).unwrap();
        next.handle().record(&rel("c"), AccessKind::Lookup);
        assert_eq!(next.finish().unwrap(), 1);
        let paths: Vec<String> = read(&path)
            .unwrap()
            .entries
            .iter()
            .map(|e| e.path.to_string())
            .collect();
        assert_eq!(paths, ["/a", "/c"]);
        drop(still_serving);
    }
}
