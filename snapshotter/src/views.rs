//! Views of image chains: one FUSE view per chain, mounted on first use by a
//! container, shared by that chain's containers, unmounted with the last one.
//! Profiles are journaled per chain under `profiles/<chain>`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pare_fs::layers::LayerStack;
use pare_fs::profile::{Recorder, RecorderHandle};
use pare_fs::view::{self, MountedView, ReadMode, View, ViewOptions};

use crate::error::{Error, Result};
use crate::store::SnapshotId;

/// Mounts and unmounts views; the real one serves FUSE, tests use a fake.
pub trait ViewMounter: Send + Sync + 'static {
    /// What it takes to unmount later.
    type Handle: Send;
    /// Mounts the merged `layers` (topmost first) at `mountpoint`.
    fn mount(
        &self,
        layers: &[PathBuf],
        mountpoint: &Path,
        recorder: Option<RecorderHandle>,
    ) -> std::result::Result<Self::Handle, String>;
    /// Unmounts a view mounted by [`ViewMounter::mount`].
    fn unmount(&self, handle: Self::Handle) -> std::result::Result<(), String>;
}

/// The real mounter: pare's FUSE view, served by this process's threads.
pub struct FuseMounter {
    /// Options of every view.
    pub options: ViewOptions,
}

impl FuseMounter {
    /// A mounter with `threads` serving threads per view.
    pub fn new(threads: usize, passthrough: bool) -> FuseMounter {
        let mut options = ViewOptions {
            threads,
            ..ViewOptions::default()
        };
        if !passthrough {
            options.read_mode = ReadMode::Pread;
        }
        FuseMounter { options }
    }
}

impl ViewMounter for FuseMounter {
    type Handle = MountedView;

    fn mount(
        &self,
        layers: &[PathBuf],
        mountpoint: &Path,
        recorder: Option<RecorderHandle>,
    ) -> std::result::Result<MountedView, String> {
        let stack = LayerStack::open(layers.to_vec()).map_err(|e| e.to_string())?;
        view::mount(View::new(stack, recorder), mountpoint, &self.options)
            .map_err(|e| e.to_string())
    }

    fn unmount(&self, handle: MountedView) -> std::result::Result<(), String> {
        handle.unmount().map_err(|e| e.to_string())
    }
}

struct Active<H> {
    handle: H,
    mountpoint: PathBuf,
    users: BTreeSet<String>,
    pinned: Vec<SnapshotId>,
    recorder: Option<Recorder>,
}

/// The views of this daemon.
pub struct Views<M: ViewMounter> {
    mounter: M,
    views_dir: PathBuf,
    profiles_dir: PathBuf,
    flush: Duration,
    active: HashMap<String, Active<M::Handle>>,
}

/// File name of a chain's profile: the chain ID itself (`sha256:ab…`), with
/// anything unusual in a file name replaced.
pub fn chain_dir_name(chain: &str) -> String {
    chain
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == ':' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Directory name of a chain's view mountpoint: like [`chain_dir_name`] but
/// without `:`, which overlayfs would take as a `lowerdir=` separator
/// (`sha256-ab…`).
pub fn view_dir_name(chain: &str) -> String {
    chain_dir_name(chain).replace(':', "-")
}

impl<M: ViewMounter> Views<M> {
    /// Views mounted under `views_dir`, profiles under `profiles_dir`.
    pub fn new(mounter: M, views_dir: PathBuf, profiles_dir: PathBuf, flush: Duration) -> Self {
        Views {
            mounter,
            views_dir,
            profiles_dir,
            flush,
            active: HashMap::new(),
        }
    }

    /// Mountpoint of `chain`'s view.
    pub fn mountpoint(&self, chain: &str) -> PathBuf {
        self.views_dir.join(view_dir_name(chain))
    }

    /// Registers `user` (a container snapshot key) on `chain`'s view, mounting
    /// it over `layers` (topmost first, with their snapshot ids) if needed.
    pub fn acquire(
        &mut self,
        user: &str,
        chain: &str,
        layers: &[(SnapshotId, PathBuf)],
        profiled: bool,
    ) -> Result<PathBuf> {
        if let Some(active) = self.active.get_mut(chain) {
            active.users.insert(user.to_string());
            return Ok(active.mountpoint.clone());
        }
        let mountpoint = self.mountpoint(chain);
        std::fs::create_dir_all(&mountpoint).map_err(Error::io(&mountpoint))?;
        let recorder = if profiled {
            let path = self.profiles_dir.join(chain_dir_name(chain));
            Some(
                Recorder::open(&path, Some(chain.to_string()), self.flush).map_err(|e| {
                    Error::View {
                        chain: chain.into(),
                        why: e.to_string(),
                    }
                })?,
            )
        } else {
            None
        };
        let dirs: Vec<PathBuf> = layers.iter().map(|(_, d)| d.clone()).collect();
        let handle = self
            .mounter
            .mount(&dirs, &mountpoint, recorder.as_ref().map(Recorder::handle))
            .map_err(|why| Error::View {
                chain: chain.into(),
                why,
            })?;
        tracing::info!(chain, mountpoint = %mountpoint.display(), layers = dirs.len(), profiled, "view mounted");
        self.active.insert(
            chain.to_string(),
            Active {
                handle,
                mountpoint: mountpoint.clone(),
                users: BTreeSet::from([user.to_string()]),
                pinned: layers.iter().map(|(id, _)| *id).collect(),
                recorder,
            },
        );
        Ok(mountpoint)
    }

    /// Drops `user` from `chain`'s view; unmounts it (flushing its profile)
    /// when it was the last user. True when the view was stopped (the layers
    /// it read may then be free).
    pub fn release(&mut self, user: &str, chain: &str) -> Result<bool> {
        let Some(active) = self.active.get_mut(chain) else {
            return Ok(false);
        };
        active.users.remove(user);
        if !active.users.is_empty() {
            return Ok(false);
        }
        let active = self.active.remove(chain).expect("present");
        self.stop(chain, active).map(|()| true)
    }

    fn stop(&self, chain: &str, active: Active<M::Handle>) -> Result<()> {
        let unmounted = self.mounter.unmount(active.handle);
        if let Some(recorder) = active.recorder {
            match recorder.finish() {
                Ok(records) => tracing::info!(chain, records, "profile flushed"),
                Err(e) => tracing::error!(chain, error = %e, "profile flush failed"),
            }
        }
        unmounted.map_err(|why| Error::View {
            chain: chain.into(),
            why,
        })?;
        let _ = std::fs::remove_dir(&active.mountpoint);
        tracing::info!(chain, "view unmounted");
        Ok(())
    }

    /// Unmounts every view (graceful stop).
    pub fn stop_all(&mut self) {
        let chains: Vec<String> = self.active.keys().cloned().collect();
        for chain in chains {
            let active = self.active.remove(&chain).expect("present");
            if let Err(e) = self.stop(&chain, active) {
                tracing::error!(chain, error = %e, "stopping view failed");
            }
        }
    }

    /// Snapshot ids whose directories live views read.
    pub fn pinned(&self) -> HashSet<SnapshotId> {
        self.active
            .values()
            .flat_map(|a| a.pinned.iter().copied())
            .collect()
    }

    /// Chains with a mounted view and their users.
    pub fn status(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<_> = self
            .active
            .iter()
            .map(|(c, a)| (c.clone(), a.users.iter().cloned().collect()))
            .collect();
        out.sort();
        out
    }
}
