//! The misses writer: a background thread that rewrites the misses file at
//! most once per flush interval when something changed, and once more on
//! stop. Never in a FUSE request, never with the misses locked while writing.
//!
//! One writer per file: a writer claims its file first ([`claim`]), holding
//! `flock(LOCK_EX)` on `<file>.lock` for its life. A second view of the same
//! image, mode and set while the first still serves (one detached but in
//! use by a running container) gets a file of its own
//! (`<stem>.2.misses`, ...), so neither overwrites the other's misses.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};

use super::{Misses, PolicyError};
use crate::profile::try_lock;

/// How often misses reach their file unless told otherwise.
pub const DEFAULT_FLUSH: Duration = Duration::from_secs(1);

/// The most files one set of misses may spread over while views of it overlap.
const MAX_CLAIMS: usize = 64;

/// A misses file claimed for one writer; the claim ends when it is dropped.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
    _lock: File,
}

impl Claim {
    /// The misses file this writer owns.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Claims `path` for one writer, or, while another live writer holds it, the
/// first free `<stem>.<n>.misses` (n = 2, 3, ...). A claim of a writer that
/// died (even SIGKILLed) ends with its process.
pub fn claim(path: &Path) -> Result<Claim, PolicyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PolicyError::Io { path, source }
    };
    for n in 1..=MAX_CLAIMS {
        let candidate = if n == 1 {
            path.to_path_buf()
        } else {
            numbered(path, n)
        };
        let mut lock_name = candidate.as_os_str().to_owned();
        lock_name.push(".lock");
        let lock_path = PathBuf::from(lock_name);
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        if try_lock(&lock).map_err(io(&lock_path))? {
            return Ok(Claim {
                path: candidate,
                _lock: lock,
            });
        }
    }
    Err(PolicyError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(format!(
            "{MAX_CLAIMS} views of these misses are writing already"
        )),
    })
}

/// `<stem>.<n>.misses` for `<stem>.misses`.
fn numbered(path: &Path, n: usize) -> PathBuf {
    let name = path.as_os_str().to_string_lossy();
    let stem = name.strip_suffix(".misses").unwrap_or(&name);
    PathBuf::from(format!("{stem}.{n}.misses"))
}

/// Persists one view's [`Misses`] to a file until stopped.
#[derive(Debug)]
pub struct MissesWriter {
    stop: Sender<()>,
    thread: JoinHandle<Result<(), PolicyError>>,
    path: PathBuf,
    /// Held until the writer is stopped.
    _claim: Claim,
}

impl MissesWriter {
    /// Starts writing `misses` to the claimed file every `flush` while they change.
    pub fn start(
        misses: Arc<Misses>,
        claim: Claim,
        flush: Duration,
    ) -> Result<MissesWriter, PolicyError> {
        let path = claim.path.clone();
        let path = path.as_path();
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let file = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("pare-misses".into())
            .spawn(move || {
                let mut written = 0;
                loop {
                    let last = match stopped.recv_timeout(flush) {
                        Err(RecvTimeoutError::Timeout) => false,
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
                    };
                    match write_if_changed(&misses, &file, &mut written) {
                        Err(e) if last => return Err(e),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot write misses; retrying")
                        }
                        Ok(()) => {}
                    }
                    if last {
                        return Ok(());
                    }
                }
            })
            .map_err(|source| PolicyError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(MissesWriter {
            stop,
            thread,
            path: path.to_path_buf(),
            _claim: claim,
        })
    }

    /// The misses file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes what changed since the last write and stops.
    pub fn stop(self) -> Result<(), PolicyError> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| PolicyError::Panicked(self.path.clone()))?
    }
}

/// Writes a snapshot of `misses` when it changed since `written` changes.
fn write_if_changed(misses: &Misses, path: &Path, written: &mut u64) -> Result<(), PolicyError> {
    let changes = misses.changes();
    if changes == *written {
        return Ok(());
    }
    // The snapshot is taken under the lock; the write happens without it.
    misses.snapshot().write(path)?;
    *written = changes;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Mode, read_misses};
    use super::*;
    use crate::profile::AccessKind;

    #[test]
    fn stopping_writes_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.misses");
        let misses = Arc::new(Misses::new(None, Mode::Enforce));
        let writer = MissesWriter::start(
            misses.clone(),
            claim(&file).unwrap(),
            Duration::from_secs(3600),
        )
        .unwrap();
        misses.record(Path::new("etc/shadow"), AccessKind::Lookup, 0);
        writer.stop().unwrap();
        let read = read_misses(&file).unwrap();
        assert_eq!(read.mode, Mode::Enforce);
        assert_eq!(read.misses.len(), 1);
        assert_eq!(read.misses[0].count, 1);
    }

    #[test]
    fn nothing_changed_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.misses");
        let misses = Arc::new(Misses::new(None, Mode::Audit));
        let writer =
            MissesWriter::start(misses, claim(&file).unwrap(), Duration::from_millis(1)).unwrap();
        writer.stop().unwrap();
        assert!(!file.exists());
    }

    #[test]
    fn changes_reach_the_file_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.misses");
        let misses = Arc::new(Misses::new(None, Mode::Audit));
        let writer = MissesWriter::start(
            misses.clone(),
            claim(&file).unwrap(),
            Duration::from_millis(5),
        )
        .unwrap();
        misses.record(Path::new("bin/ls"), AccessKind::Exec, 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while read_misses(&file).map_or(true, |f| f.misses.is_empty()) {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        writer.stop().unwrap();
    }

    #[test]
    fn a_failed_final_write_is_returned() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        std::fs::create_dir(&gone).unwrap();
        let file = gone.join("p.misses");
        let misses = Arc::new(Misses::new(None, Mode::Audit));
        let writer = MissesWriter::start(
            misses.clone(),
            claim(&file).unwrap(),
            Duration::from_secs(3600),
        )
        .unwrap();
        std::fs::remove_dir_all(&gone).unwrap();
        misses.record(Path::new("bin/ls"), AccessKind::Exec, 0);
        let err = writer.stop().unwrap_err();
        assert!(
            matches!(&err, PolicyError::Io { path, .. } if path == &file),
            "{err}"
        );
    }

    #[test]
    fn a_second_writer_of_one_file_gets_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.enforce-abc.misses");
        let first = claim(&file).unwrap();
        assert_eq!(first.path(), file);
        let second = claim(&file).unwrap();
        assert_eq!(second.path(), dir.path().join("p.enforce-abc.2.misses"));
        let third = claim(&file).unwrap();
        assert_eq!(third.path(), dir.path().join("p.enforce-abc.3.misses"));
        drop(second);
        assert_eq!(
            claim(&file).unwrap().path(),
            dir.path().join("p.enforce-abc.2.misses"),
            "a claim ends with its writer"
        );
        // Both files are the profile's misses files; the locks are not.
        std::fs::write(first.path(), b"{}").unwrap();
        std::fs::write(third.path(), b"{}").unwrap();
        let listed = super::super::misses_files(&dir.path().join("p")).unwrap();
        assert_eq!(
            listed,
            [dir.path().join("p.enforce-abc.3.misses"), file.clone()]
        );
    }
}
