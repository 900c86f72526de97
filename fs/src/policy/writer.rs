//! The misses writer: a background thread that rewrites the misses file at
//! most once per flush interval when something changed, and once more on
//! stop. Never in a FUSE request, never with the misses locked while writing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};

use super::{Misses, PolicyError};

/// How often misses reach their file unless told otherwise.
pub const DEFAULT_FLUSH: Duration = Duration::from_secs(1);

/// Persists one view's [`Misses`] to a file until stopped.
#[derive(Debug)]
pub struct MissesWriter {
    stop: Sender<()>,
    thread: JoinHandle<Result<(), PolicyError>>,
    path: PathBuf,
}

impl MissesWriter {
    /// Starts writing `misses` to `path` every `flush` while they change.
    pub fn start(
        misses: Arc<Misses>,
        path: &Path,
        flush: Duration,
    ) -> Result<MissesWriter, PolicyError> {
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
        let writer = MissesWriter::start(misses.clone(), &file, Duration::from_secs(3600)).unwrap();
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
        let writer = MissesWriter::start(misses, &file, Duration::from_millis(1)).unwrap();
        writer.stop().unwrap();
        assert!(!file.exists());
    }

    #[test]
    fn changes_reach_the_file_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.misses");
        let misses = Arc::new(Misses::new(None, Mode::Audit));
        let writer = MissesWriter::start(misses.clone(), &file, Duration::from_millis(5)).unwrap();
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
        let file = dir.path().join("missing-dir/p.misses");
        let misses = Arc::new(Misses::new(None, Mode::Audit));
        let writer = MissesWriter::start(misses.clone(), &file, Duration::from_secs(3600)).unwrap();
        misses.record(Path::new("bin/ls"), AccessKind::Exec, 0);
        let err = writer.stop().unwrap_err();
        assert!(
            matches!(&err, PolicyError::Io { path, .. } if path == &file),
            "{err}"
        );
    }
}
