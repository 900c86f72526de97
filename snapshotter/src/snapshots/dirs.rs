//! Snapshot directories: `snapshots/<id>` made under a temporary `new-*`
//! name, removed by renaming to `removed-*` first, and collected when no
//! record names them and no view reads them; and the private state root.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Snapshots;
use crate::error::{Error, Result};
use crate::store::SnapshotId;
use crate::views::ViewMounter;

impl<M: ViewMounter> Snapshots<M> {
    pub(super) fn snapshot_dir(&self, id: SnapshotId) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    pub(super) fn dirs_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes snapshot directories that no record names and no view reads.
    pub(super) fn remove_orphans(&self) -> Result<usize> {
        let dirs = self.dirs_lock();
        let known: HashSet<SnapshotId> = self.store.all()?.into_iter().map(|(_, r)| r.id).collect();
        let pinned = self.views.pinned();
        let mut doomed = Vec::new();
        let dir = self.root.join("snapshots");
        let mut removed = 0;
        for entry in std::fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let entry = entry.map_err(Error::io(&dir))?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse().ok())
                .map(SnapshotId)
            else {
                continue;
            };
            if !known.contains(&id) && !pinned.contains(&id) {
                tracing::info!(id = id.0, "removing an unreferenced snapshot directory");
                // Renamed under the lock, deleted after it: a big tree never
                // holds up a Prepare.
                let to = dir.join(format!("removed-{id}"));
                match std::fs::rename(entry.path(), &to) {
                    Ok(()) => doomed.push(to),
                    Err(e) => tracing::warn!(id = id.0, error = %e, "cannot remove directory"),
                }
                removed += 1;
            }
        }
        drop(dirs);
        for path in doomed {
            remove_tree(&path);
        }
        Ok(removed)
    }
}

/// A fresh `new-*` directory with `fs/` and `work/` inside.
pub(super) fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    for attempt in 0..100u32 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = dir.join(format!("new-{}-{nanos}-{attempt}", std::process::id()));
        match std::fs::create_dir(&path) {
            Ok(()) => {
                for sub in ["fs", "work"] {
                    let p = path.join(sub);
                    std::fs::create_dir(&p).map_err(Error::io(&p))?;
                }
                // Like containerd: layer roots are 0755.
                use std::os::unix::fs::PermissionsExt;
                let fs = path.join("fs");
                std::fs::set_permissions(&fs, std::fs::Permissions::from_mode(0o755))
                    .map_err(Error::io(&fs))?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(path)(e)),
        }
    }
    Err(Error::NoTempName(dir.to_path_buf()))
}

pub(super) fn remove_tree(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %path.display(), error = %e, "cannot remove directory");
        }
    }
}

/// Creates `dir` if needed and makes it private to root (0700).
pub(super) fn private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    restrict(dir, 0o700)
}

pub(super) fn restrict(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(Error::io(path))
}
