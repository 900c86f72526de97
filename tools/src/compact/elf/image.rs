//! Reading the image for the exec closure: files, their first bytes, and
//! paths given as bytes resolved with every symlink followed inside the image.

use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;

use pare_fs::layers::{Kind, Resolved};
use pare_fs::profile::ImagePath;

use super::ElfError;
use crate::compact::tree::{Followed, ImageTree};

pub(super) fn io_err(path: impl fmt::Display) -> impl FnOnce(io::Error) -> ElfError {
    move |source| ElfError::Io {
        path: path.to_string(),
        source,
    }
}

pub(super) fn malformed(path: &ImagePath, reason: impl fmt::Display) -> ElfError {
    ElfError::Malformed {
        path: path.clone(),
        reason: reason.to_string(),
    }
}

pub(super) fn entry(tree: &ImageTree, path: &ImagePath) -> Result<Option<Resolved>, ElfError> {
    tree.entry(path).map_err(io_err(path))
}

pub(super) fn read(tree: &ImageTree, path: &ImagePath) -> Result<Vec<u8>, ElfError> {
    tree.read(path).map_err(io_err(path))
}

/// The first `len` bytes (fewer for a shorter file).
pub(super) fn head(tree: &ImageTree, path: &ImagePath, len: u64) -> Result<Vec<u8>, ElfError> {
    let mut out = Vec::new();
    tree.open(path)
        .and_then(|f| f.take(len).read_to_end(&mut out))
        .map_err(io_err(path))?;
    Ok(out)
}

/// Resolves `path` (absolute, or relative to the resolved directory `base`;
/// `.`, `..` and repeated `/` allowed) with every symlink followed inside the
/// image. `None` when it leads nowhere.
pub(super) fn follow_str(
    tree: &ImageTree,
    base: &ImagePath,
    path: &[u8],
) -> Result<Option<Followed>, ElfError> {
    let shown = || String::from_utf8_lossy(path).into_owned();
    let mut at = if path.starts_with(b"/") {
        ImagePath::root()
    } else {
        base.clone()
    };
    let mut links = Vec::new();
    for comp in path.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => at = at.parent().unwrap_or_else(ImagePath::root),
            name => {
                let Ok(next) = at.join(OsStr::from_bytes(name)) else {
                    return Ok(None);
                };
                match tree.follow(&next).map_err(io_err(shown()))? {
                    None => return Ok(None),
                    Some(f) => {
                        links.extend(f.links);
                        at = f.path;
                    }
                }
            }
        }
    }
    Ok(Some(Followed { path: at, links }))
}

/// `path` resolved from the image root, when it ends at a regular file.
pub(super) fn regular_file(tree: &ImageTree, path: &[u8]) -> Result<Option<Followed>, ElfError> {
    let Some(f) = follow_str(tree, &ImagePath::root(), path)? else {
        return Ok(None);
    };
    Ok(match entry(tree, &f.path)? {
        Some(r) if r.meta().kind == Kind::File => Some(f),
        _ => None,
    })
}

pub(super) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    [dir, b"/", name].concat()
}

/// Everything before the last `/` (`/` itself for a top-level path).
pub(super) fn parent_bytes(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(0) => b"/",
        Some(i) => &path[..i],
        None => b".",
    }
}

pub(super) fn trim(s: &[u8], blank: impl Fn(&u8) -> bool) -> &[u8] {
    let start = s.iter().position(|b| !blank(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !blank(b)).map_or(start, |e| e + 1);
    &s[start..end]
}
