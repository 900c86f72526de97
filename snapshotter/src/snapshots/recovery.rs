//! Start-up recovery: what a crash or a restart left behind. Half-made
//! directories go, views of containers that still exist are adopted (or
//! started anew), and view servers and mounts no container needs are stopped
//! or detached.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Snapshots;
use super::dirs::remove_tree;
use crate::error::{Error, Result};
use crate::store::Kind;
use crate::views::{Request, ViewMounter};

impl<M: ViewMounter> Snapshots<M> {
    pub(super) fn recover(&self) -> Result<()> {
        let snapshots_dir = self.root.join("snapshots");
        for entry in std::fs::read_dir(&snapshots_dir).map_err(Error::io(&snapshots_dir))? {
            let entry = entry.map_err(Error::io(&snapshots_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("new-") || name.starts_with("removed-") {
                tracing::info!(dir = %entry.path().display(), "removing a half-made snapshot directory");
                remove_tree(&entry.path());
            }
        }
        // Views of containers that still exist: adopt the servers that kept
        // serving them (their containers never noticed the restart), start
        // the others anew.
        for (key, record) in self.store.all()? {
            if let (Kind::Active, Some(view)) = (record.kind, record.role.view_key()) {
                let layers = self.chain_layers(&record.parent)?;
                let req = Request {
                    user: &key,
                    key: &view,
                    layers: &layers,
                    allowed: None,
                };
                if let Err(e) = self.views.restore(&req) {
                    tracing::error!(key, error = %e, "cannot restore the view of a container snapshot");
                }
            }
        }
        stop_unknown_views(self.views.views_dir(), &self.views.known_mountpoints());
        self.remove_orphans()?;
        Ok(())
    }
}

/// Stops view servers and mounts under `views_dir` that no container needs
/// (their containers went while no daemon ran), and detaches mounts whose
/// server is gone.
fn stop_unknown_views(views_dir: &Path, known: &HashSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(views_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "server") {
            let mountpoint = path.with_extension("");
            if known.contains(&mountpoint) {
                continue;
            }
            match crate::viewproc::ServerState::read(&mountpoint) {
                Some(state) if state.process.is_alive() => {
                    tracing::info!(view = %state.key(), "stopping a view no container uses");
                    if let Err(e) = crate::viewproc::stop_server(&state, Duration::from_secs(5)) {
                        tracing::warn!(view = %state.key(), error = %e, "cannot stop a view no container uses");
                    }
                }
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
    for mount in pare_fs::mountinfo::mounts_under(views_dir) {
        if mount.mount_point != views_dir && !known.contains(&mount.mount_point) {
            tracing::warn!(mountpoint = %mount.mount_point.display(), "detaching a stale view mount");
            if mount.major == 0 {
                crate::viewproc::abort_connection(mount.minor);
            }
            if let Err(e) = crate::viewproc::detach_if_mounted(&mount.mount_point) {
                tracing::warn!(error = %e, "cannot detach a stale view mount");
            }
        }
    }
    for entry in std::fs::read_dir(views_dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && !known.contains(&path) {
            let _ = std::fs::remove_dir(&path);
        }
    }
}
