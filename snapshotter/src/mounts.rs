//! Mount specifications returned to containerd, as its overlay snapshotter
//! builds them: bind mounts without parents, overlays with them.

use std::path::{Path, PathBuf};

/// One mount for containerd to perform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// File system type (`bind`, `overlay`).
    pub kind: String,
    /// Source.
    pub source: String,
    /// Options, as `mount(8)` takes them.
    pub options: Vec<String>,
}

fn index_off() -> Option<String> {
    // As containerd does: turn the index feature off where the kernel has it,
    // so that lower layers can be shared between overlays.
    Path::new("/sys/module/overlay/parameters/index")
        .exists()
        .then(|| "index=off".to_string())
}

/// A writable snapshot without parent: its own directory, bind-mounted.
pub fn bind(dir: &Path, readonly: bool) -> MountSpec {
    MountSpec {
        kind: "bind".into(),
        source: dir.display().to_string(),
        options: vec![if readonly { "ro" } else { "rw" }.into(), "rbind".into()],
    }
}

/// A writable overlay of `upper` (with `work`) over `lowers` (topmost first).
pub fn overlay(upper: &Path, work: &Path, lowers: &[PathBuf]) -> MountSpec {
    let mut options: Vec<String> = index_off().into_iter().collect();
    options.push(format!("workdir={}", work.display()));
    options.push(format!("upperdir={}", upper.display()));
    options.push(format!("lowerdir={}", join(lowers)));
    MountSpec {
        kind: "overlay".into(),
        source: "overlay".into(),
        options,
    }
}

/// A read-only view of `lowers` (topmost first).
pub fn readonly(lowers: &[PathBuf]) -> MountSpec {
    if lowers.len() == 1 {
        return bind(&lowers[0], true);
    }
    let mut options: Vec<String> = index_off().into_iter().collect();
    options.push(format!("lowerdir={}", join(lowers)));
    MountSpec {
        kind: "overlay".into(),
        source: "overlay".into(),
        options,
    }
}

fn join(dirs: &[PathBuf]) -> String {
    let parts: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    parts.join(":")
}
