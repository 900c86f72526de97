//! Scratch directories of a bench on the real disk (`/var/tmp`, so cold runs
//! read from the disk, not from tmpfs), removed on drop, but never while
//! something is mounted beneath them and never across a file system boundary.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use pare_tests::containerd::mounts_under;

/// A directory removed with everything in it on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// Creates `/var/tmp/pare-bench-<name>-<pid>` (it must not exist yet).
    pub fn create(name: &str) -> anyhow::Result<Scratch> {
        let dir = PathBuf::from(format!("/var/tmp/pare-bench-{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.0) {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Removes `dir` and everything beneath it (`rm -rf --one-file-system`);
/// refuses when something is still mounted beneath it.
pub fn remove_tree(dir: &Path) -> anyhow::Result<()> {
    let mounts = mounts_under(dir);
    anyhow::ensure!(
        mounts.is_empty(),
        "{} kept, mounts remain beneath it: {mounts:?}",
        dir.display()
    );
    let status = Command::new("rm")
        .arg("-rf")
        .arg("--one-file-system")
        .arg(dir)
        .status()
        .context("cannot run rm")?;
    anyhow::ensure!(status.success(), "cannot remove {}", dir.display());
    Ok(())
}
