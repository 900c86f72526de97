//! The lock that marks a journal as live: a recorder holds
//! `flock(LOCK_EX)` on its journal for as long as it can write to it.
//!
//! The lock belongs to the open file, so it ends when the writer's file is
//! closed, however the process ends (a SIGKILLed view leaves no stale lock).

use std::fs::File;
use std::path::Path;

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

/// Takes the exclusive lock on `file` without waiting. False when another
/// open file holds it.
pub(crate) fn try_lock(file: &File) -> std::io::Result<bool> {
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Opens the journal at `path` (if it exists) and locks it: `Ok(None)` when
/// there is no file, `Ok(Some(file))` holding the lock until dropped, and
/// `Err` with [`std::io::ErrorKind::WouldBlock`] while a recorder holds it.
pub(crate) fn lock_existing(path: &Path) -> std::io::Result<Option<File>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if try_lock(&file)? {
        Ok(Some(file))
    } else {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

/// True while a recorder holds the journal at `path` (a missing file is not
/// being recorded).
pub fn is_recording(path: &Path) -> std::io::Result<bool> {
    match lock_existing(path) {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_file_cannot_take_a_held_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        assert!(!is_recording(&path).unwrap(), "a missing file is not live");
        std::fs::write(&path, b"x").unwrap();
        let holder = File::open(&path).unwrap();
        assert!(try_lock(&holder).unwrap());
        assert!(is_recording(&path).unwrap());
        assert!(!try_lock(&File::open(&path).unwrap()).unwrap());
        drop(holder);
        assert!(!is_recording(&path).unwrap());
    }
}
