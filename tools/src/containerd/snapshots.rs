//! Layer directories of an unpacked image, from the mounts of a short-lived
//! read-only view snapshot of its top layer.

use std::collections::HashMap;
use std::path::PathBuf;

use containerd_client::services::v1::snapshots::{RemoveSnapshotRequest, ViewSnapshotRequest};
use containerd_client::tonic::Code;
use containerd_client::types::Mount;

use pare_fs::id::ChainId;

use super::lease::Lease;
use super::{Client, ContainerdError, unique_name};

impl Client {
    /// The layer directories of the image whose top layer has chain ID
    /// `top_chain_id`, topmost first, as unpacked by `snapshotter`.
    ///
    /// Creates a view snapshot (key `pare-compact-<pid>-<nanos>`, under a
    /// lease) whose parent is the image's committed top snapshot, reads its
    /// mounts (overlay `lowerdir=a:b:c` gives `[a, b, c]`; a single bind
    /// mount gives its source) and removes the view. The directories belong
    /// to the committed layer snapshots and stay valid while the image stays
    /// unpacked; each is checked to exist after the view is gone (a
    /// snapshotter that copies views, like `native`, is refused).
    pub async fn layer_dirs(
        &self,
        snapshotter: &str,
        top_chain_id: &ChainId,
    ) -> Result<Vec<PathBuf>, ContainerdError> {
        let lease = self.create_lease().await?;
        let result = self.view_dirs(snapshotter, top_chain_id, &lease).await;
        self.delete_lease(lease).await;
        let dirs = result?;
        if let Some(missing) = dirs.iter().find(|dir| !dir.is_dir()) {
            return Err(ContainerdError::UnsupportedMounts {
                snapshotter: snapshotter.to_string(),
                reason: format!(
                    "layer directory {} is not a directory here (a copied view, or \
                     another mount namespace)",
                    missing.display()
                ),
            });
        }
        Ok(dirs)
    }

    async fn view_dirs(
        &self,
        snapshotter: &str,
        top_chain_id: &ChainId,
        lease: &Lease,
    ) -> Result<Vec<PathBuf>, ContainerdError> {
        let key = unique_name("pare-compact-view");
        let request = self.request(
            ViewSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: key.clone(),
                parent: top_chain_id.to_string(),
                labels: HashMap::new(),
            },
            Some(lease),
        );
        let mounts = match self.snapshots().view(request).await {
            Ok(response) => response.into_inner().mounts,
            Err(status) if status.code() == Code::NotFound => {
                return Err(ContainerdError::NotUnpacked {
                    chain_id: top_chain_id.clone(),
                    snapshotter: snapshotter.to_string(),
                    namespace: self.namespace.clone(),
                });
            }
            Err(status) => {
                let op = format!("view {top_chain_id} with snapshotter {snapshotter}");
                return Err(self.grpc(op, status));
            }
        };
        let request = self.request(
            RemoveSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: key.clone(),
            },
            Some(lease),
        );
        let removed = self.snapshots().remove(request).await;
        let dirs = layer_dirs_of(&mounts).map_err(|reason| ContainerdError::UnsupportedMounts {
            snapshotter: snapshotter.to_string(),
            reason,
        })?;
        if let Err(status) = removed {
            // The lease still holds the view; deleting the lease frees it.
            tracing::warn!(%key, %status, "cannot remove the view snapshot");
        }
        Ok(dirs)
    }
}

/// The layer directories named by a read-only view's mounts, topmost first:
/// the `lowerdir=` of one overlay mount, or the source of one bind mount.
pub(super) fn layer_dirs_of(mounts: &[Mount]) -> Result<Vec<PathBuf>, String> {
    let [mount] = mounts else {
        return Err(format!(
            "{} mounts instead of one: {mounts:?}",
            mounts.len()
        ));
    };
    let is_bind = mount.r#type == "bind"
        || mount.r#type == "rbind"
        || mount.options.iter().any(|o| o == "bind" || o == "rbind");
    if mount.r#type == "overlay" {
        if let Some(upper) = mount.options.iter().find(|o| o.starts_with("upperdir=")) {
            return Err(format!("the view is writable ({upper})"));
        }
        let lower = mount
            .options
            .iter()
            .find_map(|o| o.strip_prefix("lowerdir="))
            .ok_or_else(|| format!("an overlay mount without lowerdir: {mount:?}"))?;
        absolute(lower.split(':'))
    } else if is_bind {
        absolute([mount.source.as_str()].into_iter())
    } else {
        Err(format!("a {} mount: {mount:?}", mount.r#type))
    }
}

fn absolute<'a>(dirs: impl Iterator<Item = &'a str>) -> Result<Vec<PathBuf>, String> {
    dirs.map(|dir| {
        if dir.starts_with('/') {
            Ok(PathBuf::from(dir))
        } else {
            Err(format!("layer directory {dir:?} is not an absolute path"))
        }
    })
    .collect()
}
