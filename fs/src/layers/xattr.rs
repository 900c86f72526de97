//! Extended attributes of layer entries, read without following symlinks.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// Prefix of the xattrs overlayfs keeps for itself; hidden from the merged view.
pub const OVERLAY_PRIVATE_PREFIX: &[u8] = b"trusted.overlay.";

/// The xattr that marks a directory opaque (value `y`).
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// True when `name` is one of overlayfs' own xattrs.
pub fn is_overlay_private(name: &OsStr) -> bool {
    name.as_bytes().starts_with(OVERLAY_PRIVATE_PREFIX)
}

fn not_supported(e: &rustix::io::Errno) -> bool {
    *e == rustix::io::Errno::NOTSUP || *e == rustix::io::Errno::OPNOTSUPP
}

/// Value of xattr `name` on `path` (not following a final symlink); `None` when absent.
pub fn get(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) if not_supported(&e) => return Ok(None),
            Err(rustix::io::Errno::RANGE) => {
                let size: usize = rustix::fs::lgetxattr(path, name, &mut [0u8; 0][..])?;
                buf.resize(size.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Names of all xattrs on `path` (not following a final symlink).
pub fn list(path: &Path) -> io::Result<Vec<OsString>> {
    let mut buf = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => break n,
            Err(e) if not_supported(&e) => return Ok(Vec::new()),
            Err(rustix::io::Errno::RANGE) => {
                let size: usize = rustix::fs::llistxattr(path, &mut [0u8; 0][..])?;
                buf.resize(size.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e.into()),
        }
    };
    Ok(buf[..n]
        .split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| OsString::from_vec(name.to_vec()))
        .collect())
}

/// All xattrs of `path` except overlayfs' private ones, sorted by name.
pub fn visible(path: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in list(path)? {
        if is_overlay_private(&name) {
            continue;
        }
        let Some(key) = name.to_str() else {
            continue;
        };
        if let Some(value) = get(path, key)? {
            out.push((name, value));
        }
    }
    out.sort();
    Ok(out)
}

/// True when `path` is a directory marked opaque by `trusted.overlay.opaque=y`.
pub fn is_opaque(path: &Path) -> io::Result<bool> {
    Ok(get(path, OPAQUE_XATTR)?.as_deref() == Some(b"y"))
}
