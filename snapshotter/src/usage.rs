//! Disk usage of a snapshot directory, as `du` counts it: allocated blocks,
//! each inode once (hardlinks counted once).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::store::Usage;

/// Usage of everything under `dir` (the directory itself included).
pub fn of_dir(dir: &Path) -> Result<Usage> {
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(Error::io(&path))?;
        if seen.insert((meta.dev(), meta.ino())) {
            usage.inodes += 1;
            usage.size += (meta.blocks() * 512) as i64;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(Error::io(&path))? {
                stack.push(entry.map_err(Error::io(&path))?.path());
            }
        }
    }
    Ok(usage)
}
