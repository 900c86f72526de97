//! Setting a corrupt journal aside: renamed next to where it was, never deleted.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{CWD, RenameFlags, renameat_with};
use rustix::io::Errno;

/// Renames `path` to `<path>.corrupt-<unix seconds>` (with `.1`, `.2`, ...
/// appended when that name is taken) and returns the new path. Never
/// replaces an existing file.
pub fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = format!("{}.corrupt-{secs}", path.display());
    for n in 0u32.. {
        let target = PathBuf::from(if n == 0 {
            base.clone()
        } else {
            format!("{base}.{n}")
        });
        match rename_no_replace(path, &target) {
            Ok(()) => return Ok(target),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("u32 names run out before the file system does")
}

/// `rename` that fails with `AlreadyExists` instead of replacing `to`.
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // File systems without RENAME_NOREPLACE: check, then rename.
        Err(Errno::INVAL | Errno::NOSYS) => {
            if to.symlink_metadata().is_ok() {
                return Err(std::io::ErrorKind::AlreadyExists.into());
            }
            std::fs::rename(from, to)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_aside_keeps_the_bytes_under_a_unique_corrupt_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sha256-abc");
        let mut names = Vec::new();
        for content in ["one", "two", "three"] {
            std::fs::write(&path, content).unwrap();
            let aside = set_aside(&path).unwrap();
            assert!(!path.exists());
            assert_eq!(std::fs::read_to_string(&aside).unwrap(), content);
            let name = aside.file_name().unwrap().to_str().unwrap().to_string();
            assert!(name.starts_with("sha256-abc.corrupt-"), "{name}");
            names.push(name);
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 3, "every set-aside file has its own name");
    }

    #[test]
    fn set_aside_of_a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = set_aside(&dir.path().join("missing")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
