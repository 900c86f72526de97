//! The benchmark image: a cached Debian rootfs split into two layer directories
//! on the real disk, cached beside it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::ensure;
use sha2::{Digest, Sha256};

use crate::run;

/// Bump when the split below changes, so the cache key changes with it.
const SPLIT_VERSION: &str = "v1: top = usr/lib/python3*, base = the rest";

/// Two overlay-style layer directories of one image.
#[derive(Debug, Clone)]
pub struct Layers {
    /// The top layer: the Python standard library (`/usr/lib/python3*`).
    pub top: PathBuf,
    /// The base layer: everything else.
    pub base: PathBuf,
}

impl Layers {
    /// The layers in `lowerdir=` order, topmost first.
    pub fn lowerdirs(&self) -> String {
        format!("{}:{}", self.top.display(), self.base.display())
    }
}

/// The Debian rootfs (bookworm minbase + python3) from `scripts/debian-rootfs.sh`.
pub fn debian_rootfs() -> anyhow::Result<PathBuf> {
    pare_tests::debian::rootfs()
}

/// Splits `rootfs` into layers under `/var/cache/pare-tests/bench-layers-<hash>`,
/// once: built in a temporary directory and renamed into place when complete.
pub fn split(rootfs: &Path) -> anyhow::Result<Layers> {
    let cache = rootfs
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/var/cache/pare-tests"));
    let key = Sha256::digest(format!("{}\n{SPLIT_VERSION}", rootfs.display()));
    let hex: String = key.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let dir = cache.join(format!("bench-layers-{hex}"));
    let layers = Layers {
        top: dir.join("top"),
        base: dir.join("base"),
    };
    if dir.exists() {
        return Ok(layers);
    }

    eprintln!(
        "splitting {} into layers in {}",
        rootfs.display(),
        dir.display()
    );
    let tmp = cache.join(format!(".tmp-bench-layers-{hex}-{}", std::process::id()));
    if let Err(e) = build(rootfs, &tmp) {
        remove_tree(&tmp);
        return Err(e.context(format!("cannot split {} into layers", rootfs.display())));
    }
    rustix::fs::sync();
    if let Err(e) = fs::rename(&tmp, &dir) {
        remove_tree(&tmp);
        // Another run may have renamed its copy first; then use that one.
        ensure!(
            dir.exists(),
            "cannot rename {} to {}: {e}",
            tmp.display(),
            dir.display()
        );
    }
    Ok(layers)
}

fn remove_tree(dir: &Path) {
    let _ = Command::new("rm")
        .arg("-rf")
        .arg("--one-file-system")
        .arg(dir)
        .status();
}

fn build(rootfs: &Path, tmp: &Path) -> anyhow::Result<()> {
    let (top, base) = (tmp.join("top"), tmp.join("base"));
    fs::create_dir_all(top.join("usr/lib"))?;
    run(Command::new("cp").arg("-a").arg(rootfs).arg(&base))?;
    let names: Vec<_> = fs::read_dir(base.join("usr/lib"))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    for name in names
        .iter()
        .filter(|n| n.to_string_lossy().starts_with("python3"))
    {
        fs::rename(
            base.join("usr/lib").join(name),
            top.join("usr/lib").join(name),
        )?;
    }
    // The top layer's usr and usr/lib take the original metadata; the base's
    // usr/lib gets its mtime back after the moves.
    for rel in ["usr", "usr/lib"] {
        let reference = rootfs.join(rel);
        let target = top.join(rel);
        run(Command::new("chown")
            .arg("--reference")
            .arg(&reference)
            .arg(&target))?;
        run(Command::new("chmod")
            .arg("--reference")
            .arg(&reference)
            .arg(&target))?;
        run(Command::new("touch").arg("-r").arg(&reference).arg(&target))?;
    }
    run(Command::new("touch")
        .arg("-r")
        .arg(rootfs.join("usr/lib"))
        .arg(base.join("usr/lib")))
}
