//! The recorder: a cheap handle for the view's serving threads and a writer
//! thread that batches access events into the journal.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

use super::journal::{self, Header};
use super::{Access, AccessKind, KindSet, ReadError};

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
    /// The writer thread panicked.
    #[error("profile writer thread for {0} panicked")]
    Panicked(PathBuf),
}

/// Sends access events to the writer; cheap to clone, one per serving thread.
#[derive(Clone, Debug)]
pub struct RecorderHandle {
    tx: Sender<Access>,
    start: Instant,
    base_ns: u64,
}

impl RecorderHandle {
    /// Reports that `rel` was accessed as `kind`, now. The caller filters repeats;
    /// the writer drops any that slip through.
    pub fn record(&self, rel: &Arc<Path>, kind: AccessKind) {
        let ns = self.base_ns + self.start.elapsed().as_nanos() as u64;
        // The writer only goes away after every handle is dropped.
        let _ = self.tx.send(Access {
            rel: rel.clone(),
            kind,
            ns,
        });
    }
}

/// Owns the writer thread of one journal.
#[derive(Debug)]
pub struct Recorder {
    handle: RecorderHandle,
    thread: JoinHandle<Result<u64, RecorderError>>,
    path: PathBuf,
}

impl Recorder {
    /// Opens the journal at `path` for appending, creating it if missing.
    /// An existing journal must be readable and of the same image; its torn
    /// tail, if any, is cut off first. `flush` bounds how long an event stays
    /// in memory.
    pub fn open(
        path: &Path,
        image: Option<String>,
        flush: Duration,
    ) -> Result<Recorder, RecorderError> {
        let io_err = |source| RecorderError::Io {
            path: path.to_path_buf(),
            source,
        };
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let existing = match std::fs::read(path) {
            Ok(bytes) if !bytes.is_empty() => Some(bytes),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(e)),
        };
        let mut seen: HashMap<Arc<Path>, KindSet> = HashMap::new();
        let (file, base_ns) = match existing {
            Some(bytes) => {
                let profile = super::read_bytes(path, &bytes).map_err(RecorderError::Existing)?;
                if let (Some(found), Some(wanted)) = (&profile.header.image, &image) {
                    if found != wanted {
                        return Err(RecorderError::OtherImage {
                            path: path.to_path_buf(),
                            found: found.clone(),
                            wanted: wanted.clone(),
                        });
                    }
                }
                for entry in &profile.entries {
                    let rel: Arc<Path> = Arc::from(entry.path.rel());
                    let set = seen.entry(rel).or_default();
                    for kind in &entry.accesses {
                        set.insert(*kind);
                    }
                }
                let file = OpenOptions::new().write(true).open(path).map_err(io_err)?;
                if profile.torn_tail_bytes > 0 {
                    tracing::warn!(
                        profile = %path.display(),
                        bytes = profile.torn_tail_bytes,
                        "cutting off the torn tail of the journal before appending"
                    );
                    file.set_len(profile.valid_len).map_err(io_err)?;
                }
                drop(file);
                let file = OpenOptions::new().append(true).open(path).map_err(io_err)?;
                (file, now_ns.saturating_sub(profile.header.created_unix_ns))
            }
            None => {
                let header = Header {
                    image,
                    created_unix_ns: now_ns,
                    writer: format!("pare {}", env!("CARGO_PKG_VERSION")),
                };
                let mut file = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(path)
                    .map_err(io_err)?;
                file.write_all(&journal::encode_header(&header))
                    .and_then(|()| file.sync_all())
                    .map_err(io_err)?;
                (file, 0)
            }
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let writer = Writer {
            rx,
            file,
            seen,
            flush,
            path: path.to_path_buf(),
        };
        let thread = std::thread::Builder::new()
            .name("pare-profile".into())
            .spawn(move || writer.run())
            .map_err(io_err)?;
        Ok(Recorder {
            handle: RecorderHandle {
                tx,
                start: Instant::now(),
                base_ns,
            },
            thread,
            path: path.to_path_buf(),
        })
    }

    /// A handle for serving threads.
    pub fn handle(&self) -> RecorderHandle {
        self.handle.clone()
    }

    /// Waits until every handle is dropped, writes what is left, syncs the
    /// journal and returns the number of records appended.
    pub fn finish(self) -> Result<u64, RecorderError> {
        drop(self.handle);
        self.thread
            .join()
            .map_err(|_| RecorderError::Panicked(self.path.clone()))?
    }
}

struct Writer {
    rx: Receiver<Access>,
    file: File,
    seen: HashMap<Arc<Path>, KindSet>,
    flush: Duration,
    path: PathBuf,
}

impl Writer {
    /// Blocks for the first event of a burst, then sleeps out the flush
    /// interval and drains the channel: senders never have to wake the writer
    /// more than once per interval.
    fn run(mut self) -> Result<u64, RecorderError> {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut written = 0u64;
        let rx = self.rx.clone();
        while let Ok(first) = rx.recv() {
            written += u64::from(self.push(&mut buf, first));
            std::thread::sleep(self.flush);
            for access in rx.try_iter() {
                written += u64::from(self.push(&mut buf, access));
            }
            self.write(&mut buf)?;
        }
        self.write(&mut buf)?;
        self.file.sync_all().map_err(|e| self.io_err(e))?;
        Ok(written)
    }

    fn push(&mut self, buf: &mut Vec<u8>, access: Access) -> bool {
        let set = self.seen.entry(access.rel.clone()).or_default();
        if !set.insert(access.kind) {
            return false;
        }
        let rel = access.rel.as_os_str().as_bytes();
        let mut path = Vec::with_capacity(rel.len() + 1);
        path.push(b'/');
        path.extend_from_slice(rel);
        journal::encode_record(buf, access.ns, access.kind as u8, &path);
        true
    }

    fn write(&mut self, buf: &mut Vec<u8>) -> Result<(), RecorderError> {
        if !buf.is_empty() {
            self.file.write_all(buf).map_err(|e| self.io_err(e))?;
            buf.clear();
        }
        Ok(())
    }

    fn io_err(&self, source: std::io::Error) -> RecorderError {
        RecorderError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> Arc<Path> {
        Arc::from(Path::new(s))
    }

    #[test]
    fn journals_each_path_and_kind_once_and_appends_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let rec =
            Recorder::open(&path, Some("sha256:x".into()), Duration::from_millis(10)).unwrap();
        let h = rec.handle();
        h.record(&rel(""), AccessKind::Readdir);
        h.record(&rel("bin/sh"), AccessKind::Lookup);
        h.record(&rel("bin/sh"), AccessKind::Lookup);
        h.record(&rel("bin/sh"), AccessKind::Exec);
        drop(h);
        assert_eq!(rec.finish().unwrap(), 3);

        let rec =
            Recorder::open(&path, Some("sha256:x".into()), Duration::from_millis(10)).unwrap();
        let h = rec.handle();
        h.record(&rel("bin/sh"), AccessKind::Exec);
        h.record(&rel("etc/passwd"), AccessKind::Read);
        drop(h);
        assert_eq!(rec.finish().unwrap(), 1);

        let profile = super::super::read(&path).unwrap();
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
    }

    #[test]
    fn refuses_other_images_and_foreign_files_without_touching_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        Recorder::open(&path, Some("sha256:a".into()), Duration::from_millis(10))
            .unwrap()
            .finish()
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        let err =
            Recorder::open(&path, Some("sha256:b".into()), Duration::from_millis(10)).unwrap_err();
        assert!(matches!(err, RecorderError::OtherImage { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);

        let foreign = dir.path().join("notes.txt");
        std::fs::write(&foreign, b"hello").unwrap();
        let err = Recorder::open(&foreign, None, Duration::from_millis(10)).unwrap_err();
        assert!(err.to_string().contains("not a pare profile"), "{err:#}");
        assert_eq!(std::fs::read(&foreign).unwrap(), b"hello");
    }

    #[test]
    fn a_torn_tail_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let rec = Recorder::open(&path, None, Duration::from_millis(10)).unwrap();
        rec.handle().record(&rel("a"), AccessKind::Lookup);
        rec.finish().unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[7, 0, 0]).unwrap();
        drop(f);

        let rec = Recorder::open(&path, None, Duration::from_millis(10)).unwrap();
        rec.handle().record(&rel("b"), AccessKind::Lookup);
        rec.finish().unwrap();
        let profile = super::super::read(&path).unwrap();
        assert_eq!(profile.torn_tail_bytes, 0);
        assert_eq!(profile.entries.len(), 2);
    }
}
