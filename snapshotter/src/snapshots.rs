//! The snapshot state machine: containerd's snapshot semantics over the
//! metadata store, the layer directories and the views.
//!
//! Directory lifecycle is crash-safe the way containerd's overlay snapshotter
//! does it: a new snapshot's directory is made under a temporary name and
//! renamed to `snapshots/<id>` inside the metadata transaction; a removed
//! snapshot's record goes first and its directory after. Whatever a crash
//! leaves behind (temporary dirs, dirs without a record, stale view mounts)
//! is cleaned at start-up.
//!
//! Here: the operations containerd calls. Beside it: [`keys`] (what a key
//! says), `info` (what containerd sees), `dirs` (snapshot directories) and
//! `recovery` (start-up cleanup).

mod dirs;
mod info;
pub mod keys;
mod recovery;
mod settle;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pare_fs::id::{ChainId, Digest, profile_path};
use pare_fs::policy::{AllowedSet, Mode, PolicyError, allowed_path, modes};

use crate::error::{Error, Result};
use crate::filter::{Fields, Filter};
use crate::mounts::{self, MountSpec};
use crate::store::{Kind, Record, Role, SnapshotId, Store, Usage};
use crate::usage;
use crate::views::{Request, ViewKey, ViewMounter, Views};

use dirs::{private_dir, remove_tree, restrict, tempdir_in};
pub use info::SnapshotInfo;
use info::{info, kind_name, now_ns};
pub use keys::{LABEL_SNAPSHOT_REF, is_container_rootfs, split_key};
pub use settle::Settling;

/// The mode of an image without a mode of its own, by containerd namespace.
pub type ModeRule = Box<dyn Fn(&str) -> Mode + Send + Sync>;

/// All snapshots of one root directory.
pub struct Snapshots<M: ViewMounter> {
    root: PathBuf,
    store: Store,
    views: Views<M>,
    modes: ModeRule,
    /// Held while a snapshot directory exists without a committed record (a
    /// Prepare in flight) and while unreferenced directories are collected,
    /// so that collection never takes a directory about to be named.
    dirs: Mutex<()>,
    /// When images settle.
    settling: Settling,
    /// The settle state of each image seen (see [`settle`]).
    settle: Mutex<std::collections::HashMap<ChainId, pare_fs::profile::settle::SettleState>>,
}

impl<M: ViewMounter> Snapshots<M> {
    /// Opens the snapshots under `root`, cleaning what a crash left behind and
    /// remounting the views of containers that still exist. Images without
    /// a mode of their own (`modes/`) run in the mode `modes` gives their namespace.
    pub fn open(root: &Path, views: Views<M>, modes: ModeRule) -> Result<Snapshots<M>> {
        private_dir(root)?;
        for dir in ["snapshots", "views", "profiles"] {
            private_dir(&root.join(dir))?;
        }
        let db = root.join("metadata.db");
        let store = Store::open(&db)?;
        restrict(&db, 0o600)?;
        let snapshots = Snapshots {
            root: root.to_path_buf(),
            store,
            views,
            modes,
            dirs: Mutex::new(()),
            settling: Settling::NEVER,
            settle: Mutex::new(Default::default()),
        };
        snapshots.recover()?;
        Ok(snapshots)
    }

    /// These snapshots with images settling by `settling` (by default they never do).
    pub fn with_settling(mut self, settling: Settling) -> Snapshots<M> {
        self.settling = settling;
        self
    }

    /// Committed layer directories of `parent` and its ancestors, topmost first.
    fn chain_layers(&self, parent: &str) -> Result<Vec<(SnapshotId, PathBuf)>> {
        let mut out = Vec::new();
        let mut key = parent.to_string();
        while !key.is_empty() {
            let record = self
                .store
                .get(&key)?
                .ok_or_else(|| Error::NotFound(key.clone()))?;
            out.push((record.id, self.snapshot_dir(record.id).join("fs")));
            key = record.parent;
        }
        Ok(out)
    }

    /// The view a new container of `chain` in `namespace` gets: the image's
    /// own mode, else the namespace's; none for `off`. For audit and
    /// enforce, also the bytes of the frozen allowed set, read once here
    /// (the view is keyed by their digest and judges by exactly them, even
    /// when `pare mode` freezes a new set meanwhile); without a readable
    /// allowed set the container falls back to learn, with a warning.
    /// Reads small files; called without any lock held.
    fn view_for(&self, namespace: &str, chain: &ChainId) -> Option<(ViewKey, Option<Arc<[u8]>>)> {
        let mode = match modes::read(&self.root, chain) {
            Ok(Some(entry)) => entry.mode,
            Ok(None) => (self.modes)(namespace),
            Err(e) => {
                let mode = (self.modes)(namespace);
                tracing::warn!(%chain, error = %e, %mode, "cannot read the image's mode; using the namespace's");
                mode
            }
        };
        match mode {
            Mode::Off => None,
            // A settled image's containers run on plain overlayfs, but for a sample.
            Mode::Learn => self
                .learns(chain)
                .then(|| (ViewKey::learn(chain.clone()), None)),
            Mode::Audit | Mode::Enforce => {
                let allowed = allowed_path(&profile_path(&self.root, chain));
                let read = std::fs::read(&allowed)
                    .map_err(|source| PolicyError::Io {
                        path: allowed.clone(),
                        source,
                    })
                    .and_then(|bytes| AllowedSet::check(&allowed, &bytes).map(|()| bytes));
                match read {
                    Ok(bytes) => {
                        let key = ViewKey::judged(chain.clone(), mode, Digest::sha256(&bytes));
                        Some((key, Some(Arc::from(bytes))))
                    }
                    Err(e) => {
                        tracing::warn!(%chain, %mode, allowed = %allowed.display(), error = %e, "no usable allowed set: the container runs in learn mode (freeze one with `pare mode`)");
                        Some((ViewKey::learn(chain.clone()), None))
                    }
                }
            }
        }
    }

    /// Creates an active snapshot (`readonly` false) or a view on `parent`.
    pub fn create(
        &self,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
        readonly: bool,
    ) -> Result<Vec<MountSpec>> {
        if key.is_empty() {
            return Err(Error::InvalidArgument("snapshot key is empty".into()));
        }
        // Containers of images in mode off get a plain kernel overlay of
        // the layers: no view, no FUSE cost.
        let chosen = (!readonly && is_container_rootfs(key, parent, &labels))
            .then(|| {
                let chain = ChainId::from_snapshot_name(split_key(parent).1);
                self.view_for(split_key(key).0, &chain)
            })
            .flatten();
        let role = match &chosen {
            Some((view, _)) => Role::container(parent, view),
            None => Role::Layer,
        };
        let dirs = self.dirs_lock();
        let tmp = tempdir_in(&self.root.join("snapshots"))?;
        let now = now_ns();
        let mut renamed = None;
        let created = self.store.write(|t| {
            if t.get(key)?.is_some() {
                return Err(Error::AlreadyExists(key.to_string()));
            }
            if !parent.is_empty() {
                let p = t
                    .get(parent)?
                    .ok_or_else(|| Error::NotFound(parent.to_string()))?;
                if p.kind != Kind::Committed {
                    return Err(Error::precondition(parent, "parent is not committed"));
                }
            }
            let record = Record {
                id: t.next_id()?,
                kind: if readonly { Kind::View } else { Kind::Active },
                parent: parent.to_string(),
                labels,
                created_ns: now,
                updated_ns: now,
                role: role.clone(),
                usage: None,
            };
            t.put(key, &record)?;
            let dir = self.snapshot_dir(record.id);
            std::fs::rename(&tmp, &dir).map_err(Error::io(&dir))?;
            renamed = Some(dir);
            // The rename must be durable before the record that names it.
            let parent = self.root.join("snapshots");
            std::fs::File::open(&parent)
                .and_then(|d| d.sync_all())
                .map_err(Error::io(&parent))?;
            Ok(record)
        });
        let record = match created {
            Ok(record) => record,
            Err(e) => {
                // The id was not committed and will be handed out again: its
                // directory must not stay behind.
                remove_tree(renamed.as_ref().unwrap_or(&tmp));
                return Err(e);
            }
        };
        drop(dirs);
        if let Some(view) = record.role.view_key() {
            let frozen = chosen.and_then(|(_, bytes)| bytes);
            let started = self.chain_layers(parent).and_then(|layers| {
                self.views.acquire(&Request {
                    user: key,
                    key: &view,
                    layers: &layers,
                    allowed: frozen.clone(),
                })
            });
            if let Err(e) = started {
                // This Prepare fails alone; the snapshot it made goes again.
                if let Err(cleanup) = self.remove(key) {
                    tracing::error!(key, error = %cleanup, "cannot remove the snapshot of a failed Prepare");
                }
                return Err(e);
            }
        }
        self.mounts_of(key, &record)
    }

    /// The mounts of an active snapshot or view.
    pub fn mounts(&self, key: &str) -> Result<Vec<MountSpec>> {
        let record = self
            .store
            .get(key)?
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        self.mounts_of(key, &record)
    }

    fn mounts_of(&self, key: &str, record: &Record) -> Result<Vec<MountSpec>> {
        let dir = self.snapshot_dir(record.id);
        let (fs, work) = (dir.join("fs"), dir.join("work"));
        let spec = match (&record.kind, &record.role) {
            (Kind::Committed, _) => {
                return Err(Error::precondition(
                    key,
                    "committed snapshots have no mounts",
                ));
            }
            (Kind::Active, role @ Role::Container { .. }) => {
                let view = role.view_key().expect("a container sits on a view");
                mounts::overlay(&fs, &work, &[self.views.mountpoint(&view)])
            }
            (Kind::Active, Role::Layer) if record.parent.is_empty() => mounts::bind(&fs, false),
            (Kind::Active, Role::Layer) => {
                let lowers: Vec<PathBuf> = self
                    .chain_layers(&record.parent)?
                    .into_iter()
                    .map(|(_, d)| d)
                    .collect();
                mounts::overlay(&fs, &work, &lowers)
            }
            (Kind::View, _) if record.parent.is_empty() => mounts::bind(&fs, true),
            (Kind::View, _) => {
                let lowers: Vec<PathBuf> = self
                    .chain_layers(&record.parent)?
                    .into_iter()
                    .map(|(_, d)| d)
                    .collect();
                mounts::readonly(&lowers)
            }
        };
        Ok(vec![spec])
    }

    /// Commits the active snapshot `key` as `name`.
    pub fn commit(&self, name: &str, key: &str, labels: BTreeMap<String, String>) -> Result<()> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("commit name is empty".into()));
        }
        let record = self
            .store
            .get(key)?
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        if record.kind != Kind::Active {
            return Err(Error::precondition(
                key,
                "only active snapshots can be committed",
            ));
        }
        let usage = usage::of_dir(&self.snapshot_dir(record.id).join("fs"))?;
        let now = now_ns();
        let committed = self.store.write(|t| {
            let current = t.must_get(key)?;
            if current.kind != Kind::Active {
                return Err(Error::precondition(
                    key,
                    "only active snapshots can be committed",
                ));
            }
            if t.get(name)?.is_some() {
                return Err(Error::AlreadyExists(name.to_string()));
            }
            t.delete(key)?;
            let committed = Record {
                kind: Kind::Committed,
                labels,
                updated_ns: now,
                created_ns: now,
                role: Role::Layer,
                usage: Some(usage),
                ..current.clone()
            };
            t.put(name, &committed)?;
            Ok(current)
        })?;
        if let Some(view) = committed.role.view_key() {
            let released = self.views.release(key, &view);
            if released.is_ok() && view.records_profile() {
                self.count_learn_container(&view.chain);
            }
            match released {
                Ok(true) => {
                    self.remove_orphans()?;
                }
                Ok(false) => {}
                // The commit stands; the view stays known (its layers
                // pinned) until a restart finds no container using it.
                Err(e) => {
                    tracing::error!(key, error = %e, "cannot stop the view of a committed container")
                }
            }
        }
        Ok(())
    }

    /// Removes `key` and its directory. Snapshots with children cannot be
    /// removed. A container's view is let go before its record: when the
    /// view cannot be stopped the Remove fails and the record stays, so a
    /// retry stops it.
    pub fn remove(&self, key: &str) -> Result<()> {
        let found = self
            .store
            .get(key)?
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        let mut view_stopped = false;
        if let Some(view) = found.role.view_key() {
            view_stopped = self.views.release(key, &view)?;
            if view.records_profile() {
                self.count_learn_container(&view.chain);
            }
        }
        let record = self.store.write(|t| {
            let record = t.must_get(key)?;
            if !t.children(key)?.is_empty() {
                return Err(Error::precondition(
                    key,
                    "cannot remove a snapshot that has children",
                ));
            }
            t.delete(key)?;
            Ok(record)
        })?;
        if !self.views.pinned().contains(&record.id) {
            let dir = self.snapshot_dir(record.id);
            let doomed = self
                .root
                .join("snapshots")
                .join(format!("removed-{}", record.id));
            match std::fs::rename(&dir, &doomed) {
                Ok(()) => remove_tree(&doomed),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove snapshot directory")
                }
            }
        }
        if view_stopped {
            // Layers the view held on to may be free now.
            self.remove_orphans()?;
        }
        Ok(())
    }

    /// Information about `key`.
    pub fn stat(&self, key: &str) -> Result<SnapshotInfo> {
        let record = self
            .store
            .get(key)?
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        Ok(info(key, record))
    }

    /// Updates labels. `fieldpaths` empty or `labels` replaces all labels;
    /// `labels.<key>` sets or deletes one.
    pub fn update(
        &self,
        key: &str,
        labels: BTreeMap<String, String>,
        fieldpaths: &[String],
    ) -> Result<SnapshotInfo> {
        let now = now_ns();
        let record = self.store.write(|t| {
            let mut record = t.must_get(key)?;
            if fieldpaths.is_empty() {
                record.labels = labels.clone();
            }
            for path in fieldpaths {
                if path == "labels" {
                    record.labels = labels.clone();
                } else if let Some(label) = path.strip_prefix("labels.") {
                    match labels.get(label) {
                        Some(v) => record.labels.insert(label.to_string(), v.clone()),
                        None => record.labels.remove(label),
                    };
                } else {
                    return Err(Error::InvalidArgument(format!(
                        "cannot update field {path:?} of snapshot {key}"
                    )));
                }
            }
            record.updated_ns = now;
            t.put(key, &record)?;
            Ok(record)
        })?;
        Ok(info(key, record))
    }

    /// Disk usage: measured now for active snapshots, at commit for committed
    /// ones; none for views.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let record = self
            .store
            .get(key)?
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        // As containerd's overlay snapshotter: an active snapshot is measured,
        // a committed one answers what was measured at commit, a view (whose
        // directory holds nothing of its own) uses nothing.
        match (record.usage, record.kind) {
            (Some(usage), _) => Ok(usage),
            (None, Kind::Active) => usage::of_dir(&self.snapshot_dir(record.id).join("fs")),
            (None, _) => Ok(Usage::default()),
        }
    }

    /// Snapshots matching containerd `filters`.
    pub fn list(&self, filters: &[String]) -> Result<Vec<SnapshotInfo>> {
        let filter = Filter::parse(filters)?;
        let mut out = Vec::new();
        for (key, record) in self.store.all()? {
            let fields = Fields {
                name: &key,
                parent: &record.parent,
                kind: kind_name(record.kind),
                labels: &record.labels,
            };
            if filter.matches(&fields) {
                out.push(info(&key, record));
            }
        }
        Ok(out)
    }

    /// Removes directories no snapshot references (containerd's Cleanup).
    pub fn cleanup(&self) -> Result<usize> {
        self.remove_orphans()
    }

    /// Graceful stop: views keep serving their containers (each in its own
    /// process); the next start adopts them.
    pub fn shutdown(&self) {
        // Lingering views have no container to keep serving: they go now.
        self.reap_lingering(true);
        let views = self.views.status();
        if !views.is_empty() {
            tracing::info!(views = views.len(), "views keep serving their containers");
        }
    }

    /// Stops the views that lingered long enough after their last container
    /// (every lingering view when `all`) and collects the layers they held.
    pub fn reap_lingering(&self, all: bool) {
        if self.views.reap(all) > 0 {
            if let Err(e) = self.remove_orphans() {
                tracing::warn!(error = %e, "cannot collect the layers of stopped views");
            }
        }
    }

    /// Views (by chain, one entry per view) and their container snapshots.
    pub fn view_status(&self) -> Vec<(ChainId, Vec<String>)> {
        self.views.status()
    }

    /// Views (chain, mode, allowed set) and their container snapshots.
    pub fn view_keys(&self) -> Vec<(ViewKey, Vec<String>)> {
        self.views.keys()
    }
}

#[cfg(test)]
mod tests;
