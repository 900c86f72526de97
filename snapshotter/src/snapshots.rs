//! The snapshot state machine: containerd's snapshot semantics over the
//! metadata store, the layer directories and the views.
//!
//! Directory lifecycle is crash-safe the way containerd's overlay snapshotter
//! does it: a new snapshot's directory is made under a temporary name and
//! renamed to `snapshots/<id>` inside the metadata transaction; a removed
//! snapshot's record goes first and its directory after. Whatever a crash
//! leaves behind (temporary dirs, dirs without a record, stale view mounts)
//! is cleaned at start-up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::filter::{Fields, Filter};
use crate::mounts::{self, MountSpec};
use crate::store::{Kind, Record, Role, SnapshotId, Store, Usage};
use crate::usage;
use crate::views::{Request, ViewMounter, Views};

/// The label containerd's unpacker puts on the snapshot a layer is unpacked into.
pub const LABEL_SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";

/// Which containers get profiled.
pub type ProfileRule = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// What a snapshot looks like to containerd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Key.
    pub name: String,
    /// Parent key, empty for none.
    pub parent: String,
    /// Kind.
    pub kind: Kind,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Created.
    pub created: SystemTime,
    /// Updated.
    pub updated: SystemTime,
}

/// All snapshots of one root directory.
pub struct Snapshots<M: ViewMounter> {
    root: PathBuf,
    store: Store,
    views: Views<M>,
    profiled: ProfileRule,
    /// Held while a snapshot directory exists without a committed record (a
    /// Prepare in flight) and while unreferenced directories are collected,
    /// so that collection never takes a directory about to be named.
    dirs: Mutex<()>,
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn time_of(ns: i128) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
}

/// containerd's metadata layer names backend snapshots `<namespace>/<n>/<key>`.
/// Returns the namespace and the key as the client gave it.
pub fn split_key(key: &str) -> (&str, &str) {
    let mut parts = key.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(ns), Some(n), Some(rest)) if n.chars().all(|c| c.is_ascii_digit()) => (ns, rest),
        _ => ("", key),
    }
}

/// True when a Prepare is for a container's rootfs rather than a layer unpack.
pub fn is_container_rootfs(key: &str, parent: &str, labels: &BTreeMap<String, String>) -> bool {
    !parent.is_empty()
        && !labels.contains_key(LABEL_SNAPSHOT_REF)
        && !split_key(key).1.starts_with("extract-")
}

impl<M: ViewMounter> Snapshots<M> {
    /// Opens the snapshots under `root`, cleaning what a crash left behind and
    /// remounting the views of containers that still exist.
    pub fn open(root: &Path, views: Views<M>, profiled: ProfileRule) -> Result<Snapshots<M>> {
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
            profiled,
            dirs: Mutex::new(()),
        };
        snapshots.recover()?;
        Ok(snapshots)
    }

    fn snapshot_dir(&self, id: SnapshotId) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    fn dirs_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn recover(&self) -> Result<()> {
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
            if let (
                Kind::Active,
                Role::Container {
                    chain, profiled, ..
                },
            ) = (record.kind, &record.role)
            {
                let layers = self.chain_layers(&record.parent)?;
                let req = Request {
                    user: &key,
                    chain,
                    layers: &layers,
                    profiled: *profiled,
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

    /// Removes snapshot directories that no record names and no view reads.
    fn remove_orphans(&self) -> Result<usize> {
        let dirs = self.dirs_lock();
        let known: std::collections::HashSet<SnapshotId> =
            self.store.all()?.into_iter().map(|(_, r)| r.id).collect();
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
        // Containers of namespaces that are not profiled get a plain kernel
        // overlay of the layers: no view, no FUSE cost.
        let container = !readonly
            && is_container_rootfs(key, parent, &labels)
            && (self.profiled)(split_key(key).0);
        let role = if container {
            Role::Container {
                parent: parent.to_string(),
                chain: split_key(parent).1.to_string(),
                profiled: true,
            }
        } else {
            Role::Layer
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
        if let Role::Container {
            chain, profiled, ..
        } = &record.role
        {
            let started = self.chain_layers(parent).and_then(|layers| {
                self.views.acquire(&Request {
                    user: key,
                    chain,
                    layers: &layers,
                    profiled: *profiled,
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
            (Kind::Active, Role::Container { chain, .. }) => {
                let view = self.views.mountpoint(chain);
                mounts::overlay(&fs, &work, &[view])
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
        if let Role::Container { chain, .. } = &committed.role {
            if self.views.release(key, chain)? {
                self.remove_orphans()?;
            }
        }
        Ok(())
    }

    /// Removes `key` and its directory. Snapshots with children cannot be removed.
    pub fn remove(&self, key: &str) -> Result<()> {
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
        let mut view_stopped = false;
        if let Role::Container { chain, .. } = &record.role {
            match self.views.release(key, chain) {
                Ok(stopped) => view_stopped = stopped,
                Err(e) => tracing::error!(key, error = %e, "releasing the view failed"),
            }
        }
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

    /// Disk usage: measured now for active snapshots, at commit for committed ones.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let record = self
            .store
            .get(key)?
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        match record.usage {
            Some(usage) => Ok(usage),
            None => usage::of_dir(&self.snapshot_dir(record.id).join("fs")),
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
        let views = self.views.status();
        if !views.is_empty() {
            tracing::info!(views = views.len(), "views keep serving their containers");
        }
    }

    /// Views and their container snapshots.
    pub fn view_status(&self) -> Vec<(String, Vec<String>)> {
        self.views.status()
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Active => "active",
        Kind::View => "view",
        Kind::Committed => "committed",
    }
}

fn info(key: &str, record: Record) -> SnapshotInfo {
    SnapshotInfo {
        name: key.to_string(),
        parent: record.parent,
        kind: record.kind,
        labels: record.labels,
        created: time_of(record.created_ns),
        updated: time_of(record.updated_ns),
    }
}

/// A fresh `new-*` directory with `fs/` and `work/` inside.
fn tempdir_in(dir: &Path) -> Result<PathBuf> {
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
    Err(Error::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other("cannot pick a temporary directory name"),
    })
}

fn remove_tree(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %path.display(), error = %e, "cannot remove directory");
        }
    }
}

/// Stops view servers and mounts under `views_dir` that no container needs
/// (their containers went while no daemon ran), and detaches mounts whose
/// server is gone.
fn stop_unknown_views(views_dir: &Path, known: &std::collections::HashSet<PathBuf>) {
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
                    tracing::info!(chain = state.chain, "stopping a view no container uses");
                    crate::viewproc::stop_server(&state, Duration::from_secs(5));
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
            crate::viewproc::detach_if_mounted(&mount.mount_point);
        }
    }
    for entry in std::fs::read_dir(views_dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && !known.contains(&path) {
            let _ = std::fs::remove_dir(&path);
        }
    }
}

/// Creates `dir` if needed and makes it private to root (0700).
fn private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    restrict(dir, 0o700)
}

fn restrict(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(Error::io(path))
}

#[cfg(test)]
mod tests;
