//! Views of image chains: one view per [`ViewKey`] (chain, mode, allowed
//! set), started on first use by a container, shared by the containers that
//! use it, stopped with the last one. Learn views journal the profile per
//! chain under `profiles/<chain>`; audit and enforce views journal misses
//! beside it, one file per view.
//!
//! The table of views is only locked for in-memory bookkeeping: starting and
//! stopping a view (a process, a mount, an unmount) and checking that it
//! still serves (reads of `/proc`) happen with the lock released. While a
//! start or stop runs, the view's entry says `Starting` or `Stopping`; others
//! that need that view wait on a condition variable, for a bounded time. A
//! liveness check remembers the entry's generation and acts on its answer
//! only if the entry is still the one it checked.

mod frozen;
mod key;
mod mounter;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pare_fs::id::{ChainId, profile_path};
use pare_fs::policy::{allowed_path, view_misses_path};

pub use key::ViewKey;
pub use mounter::{MountError, StopOutcome, ViewMounter, ViewSpec};

use crate::error::{Error, Result};
use crate::store::SnapshotId;

/// Why a container could not get or let go of its chain's view.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The view could not be started.
    #[error(transparent)]
    Start(#[from] MountError),
    /// Another caller's start or stop of the same view took too long.
    #[error("timed out after {0:?} waiting for the view to start or stop")]
    Busy(Duration),
    /// The view could not be stopped; it is kept, with its user.
    #[error("cannot stop the view: {0}")]
    Stop(#[source] MountError),
}

enum Slot<H> {
    Starting,
    Running(Arc<H>),
    Stopping,
}

struct Entry<H> {
    slot: Slot<H>,
    /// Tells this entry from a later one of the same view.
    generation: u64,
    users: BTreeSet<String>,
    pinned: Vec<SnapshotId>,
    /// Since when a running view has had no user (it lingers until
    /// [`Lingering::linger`] has passed).
    idle_since: Option<Instant>,
}

/// How long views stay mounted after their last container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lingering {
    /// How long a view without containers stays mounted (zero: none).
    pub linger: Duration,
    /// The most views lingering at once; past it the longest idle goes.
    pub max: usize,
}

impl Lingering {
    /// Views stop with their last container.
    pub const NONE: Lingering = Lingering {
        linger: Duration::ZERO,
        max: 0,
    };
}

struct Table<H> {
    entries: HashMap<ViewKey, Entry<H>>,
    generations: u64,
}

/// The views of this daemon.
pub struct Views<M: ViewMounter> {
    mounter: M,
    root: PathBuf,
    views_dir: PathBuf,
    table: Mutex<Table<M::Handle>>,
    changed: Condvar,
    /// Longest wait for another caller's start or stop of the same view.
    wait_limit: Duration,
    /// How long views stay after their last container.
    lingering: Lingering,
}

/// How a container's view is to be served.
pub struct Request<'a> {
    /// The container snapshot key.
    pub user: &'a str,
    /// The view: image chain, mode, allowed set.
    pub key: &'a ViewKey,
    /// The chain's layers, topmost first, with their snapshot ids.
    pub layers: &'a [(SnapshotId, PathBuf)],
    /// Audit and enforce: the bytes of the allowed set, read once when the
    /// view was chosen (none when restoring: the view's copy, or the image's
    /// set if it is still the same, is used).
    pub allowed: Option<Arc<[u8]>>,
}

impl<M: ViewMounter> Views<M> {
    /// Views of the snapshotter root `root`: mounted under `root/views`,
    /// profiles under `root/profiles`; callers wait at most `wait_limit` for
    /// a start or stop of the same view by another caller.
    pub fn new(mounter: M, root: PathBuf, wait_limit: Duration) -> Self {
        Views {
            mounter,
            views_dir: root.join("views"),
            root,
            table: Mutex::new(Table {
                entries: HashMap::new(),
                generations: 0,
            }),
            changed: Condvar::new(),
            wait_limit,
            lingering: Lingering::NONE,
        }
    }

    /// These views lingering by `lingering` after their last container
    /// (by default they stop with it).
    pub fn with_lingering(mut self, lingering: Lingering) -> Self {
        self.lingering = lingering;
        self
    }

    /// Mountpoint of the view `key`.
    pub fn mountpoint(&self, key: &ViewKey) -> PathBuf {
        self.views_dir.join(key.mount_name())
    }

    fn table(&self) -> MutexGuard<'_, Table<M::Handle>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a change of the table, until `deadline`.
    fn wait<'a>(
        &'a self,
        table: MutexGuard<'a, Table<M::Handle>>,
        deadline: Instant,
        key: &ViewKey,
    ) -> Result<MutexGuard<'a, Table<M::Handle>>> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::View {
                chain: key.chain.clone(),
                source: ViewError::Busy(self.wait_limit),
            });
        }
        Ok(self
            .changed
            .wait_timeout(table, left)
            .unwrap_or_else(|e| e.into_inner())
            .0)
    }

    fn spec(&self, req: &Request<'_>) -> ViewSpec {
        let key = req.key;
        let profile = profile_path(&self.root, &key.chain);
        ViewSpec {
            key: key.clone(),
            layers: req.layers.iter().map(|(_, d)| d.clone()).collect(),
            mountpoint: self.mountpoint(key),
            allowed: key
                .allowed
                .as_ref()
                .map(|_| frozen::copy_path(&self.mountpoint(key))),
            misses: key
                .allowed
                .as_ref()
                .map(|set| view_misses_path(&profile, key.mode, set)),
            profile: key.records_profile().then_some(profile),
        }
    }

    /// Registers `req.user` on its view, starting the view if needed.
    pub fn acquire(&self, req: &Request<'_>) -> Result<PathBuf> {
        self.acquire_with(req, false)
    }

    /// Like [`Views::acquire`], adopting a view left serving by an earlier run.
    pub fn restore(&self, req: &Request<'_>) -> Result<PathBuf> {
        self.acquire_with(req, true)
    }

    fn acquire_with(&self, req: &Request<'_>, adopt: bool) -> Result<PathBuf> {
        let spec = self.spec(req);
        let deadline = Instant::now() + self.wait_limit;
        let mut table = self.table();
        loop {
            let Some(entry) = table.entries.get_mut(req.key) else {
                table.generations += 1;
                let generation = table.generations;
                table.entries.insert(
                    req.key.clone(),
                    Entry {
                        slot: Slot::Starting,
                        generation,
                        users: BTreeSet::from([req.user.to_string()]),
                        pinned: req.layers.iter().map(|(id, _)| *id).collect(),
                        idle_since: None,
                    },
                );
                break;
            };
            let handle = match &entry.slot {
                Slot::Running(_) if adopt => {
                    entry.users.insert(req.user.to_string());
                    return Ok(spec.mountpoint);
                }
                Slot::Running(handle) => handle.clone(),
                Slot::Starting | Slot::Stopping => {
                    table = self.wait(table, deadline, req.key)?;
                    continue;
                }
            };
            let generation = entry.generation;
            drop(table);
            let serving = self.mounter.is_serving(&handle);
            table = self.table();
            let Some(entry) = table
                .entries
                .get_mut(req.key)
                .filter(|e| e.generation == generation && matches!(e.slot, Slot::Running(_)))
            else {
                // Stopped or replaced meanwhile: look again.
                continue;
            };
            if serving {
                entry.users.insert(req.user.to_string());
                if entry.idle_since.take().is_some() {
                    tracing::debug!(view = %req.key, "a lingering view serves a new container");
                }
                return Ok(spec.mountpoint);
            }
            // Its server died: the view is gone for everyone; a new one
            // serves new containers once the dead one is cleared away.
            tracing::error!(view = %req.key, "view server is gone; starting a new one");
            entry.slot = Slot::Stopping;
            drop(table);
            if let Err(e) = self.mounter.stop(&handle) {
                tracing::warn!(view = %req.key, error = %e, "cannot clear away the dead view");
            }
            table = self.table();
            if table
                .entries
                .get(req.key)
                .is_some_and(|e| e.generation == generation)
            {
                table.entries.remove(req.key);
            }
            self.changed.notify_all();
        }
        drop(table);
        let started = self.start(&spec, adopt, req.allowed.as_deref());
        let mut table = self.table();
        let result = match started {
            Ok(handle) => {
                let entry = table.entries.get_mut(req.key).expect("starting entry");
                entry.slot = Slot::Running(Arc::new(handle));
                Ok(spec.mountpoint)
            }
            Err(e) => {
                table.entries.remove(req.key);
                // Under the lock: a next start of the view makes it anew.
                let _ = std::fs::remove_dir(&spec.mountpoint);
                frozen::remove(&spec.mountpoint);
                Err(Error::View {
                    chain: req.key.chain.clone(),
                    source: e.into(),
                })
            }
        };
        self.changed.notify_all();
        result
    }

    fn start(
        &self,
        spec: &ViewSpec,
        adopt: bool,
        allowed: Option<&[u8]>,
    ) -> std::result::Result<M::Handle, MountError> {
        if adopt {
            match self.mounter.adopt(spec) {
                Ok(Some(handle)) => {
                    tracing::info!(view = %spec.key, "view adopted: its server kept serving");
                    return Ok(handle);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(view = %spec.key, error = %e, "cannot tell whether the view still serves; mounting it anew")
                }
            }
        }
        std::fs::create_dir_all(&spec.mountpoint).map_err(|source| MountError::Mountpoint {
            path: spec.mountpoint.clone(),
            source,
        })?;
        let current = allowed_path(&profile_path(&self.root, &spec.key.chain));
        frozen::ensure(spec, allowed, &current)?;
        let handle = self.mounter.mount(spec)?;
        tracing::info!(view = %spec.key, mountpoint = %spec.mountpoint.display(), layers = spec.layers.len(), profiled = spec.profile.is_some(), "view mounted");
        Ok(handle)
    }

    /// Drops `user` from the view `key`; stops the view when it was the last
    /// user, unless views linger (then [`Views::reap`] stops it later). True
    /// when the view was stopped (the layers it read may be free). A view
    /// that cannot be stopped is kept with `user` on it, so that a retry
    /// stops it, and its layers stay pinned.
    pub fn release(&self, user: &str, key: &ViewKey) -> Result<bool> {
        let mut table = self.table();
        let Some(entry) = table.entries.get_mut(key) else {
            return Ok(false);
        };
        entry.users.remove(user);
        if !entry.users.is_empty() || !matches!(entry.slot, Slot::Running(_)) {
            return Ok(false);
        }
        if !self.lingering.linger.is_zero() {
            entry.idle_since = Some(Instant::now());
            tracing::debug!(view = %key, linger = ?self.lingering.linger, "view lingers after its last container");
            drop(table);
            // Past the most lingering views, the longest idle goes now.
            return Ok(self.reap_where(|idle, rank, count| {
                idle >= self.lingering.linger || count - rank > self.lingering.max
            }) > 0);
        }
        let Slot::Running(handle) = std::mem::replace(&mut entry.slot, Slot::Stopping) else {
            unreachable!("matched above")
        };
        drop(table);
        self.stop_idle(key, &handle, Some(user))?;
        Ok(true)
    }

    /// Stops the views that lingered for their time (all lingering views
    /// when `all`, at shutdown); returns how many stopped.
    pub fn reap(&self, all: bool) -> usize {
        self.reap_where(|idle, _, _| all || idle >= self.lingering.linger)
    }

    /// Stops each lingering view for which `doomed(idle time, rank by idle
    /// time with the longest idle first, lingering count)` holds.
    fn reap_where(&self, doomed: impl Fn(Duration, usize, usize) -> bool) -> usize {
        let now = Instant::now();
        let mut picked = Vec::new();
        {
            let mut table = self.table();
            let mut idle: Vec<(ViewKey, Instant)> = table
                .entries
                .iter()
                .filter(|(_, e)| e.users.is_empty() && matches!(e.slot, Slot::Running(_)))
                .filter_map(|(k, e)| e.idle_since.map(|at| (k.clone(), at)))
                .collect();
            idle.sort_by_key(|(_, at)| *at);
            let count = idle.len();
            for (rank, (key, at)) in idle.into_iter().enumerate() {
                if !doomed(now.duration_since(at), rank, count) {
                    continue;
                }
                let entry = table.entries.get_mut(&key).expect("listed entry");
                let Slot::Running(handle) = std::mem::replace(&mut entry.slot, Slot::Stopping)
                else {
                    unreachable!("filtered above")
                };
                picked.push((key, handle));
            }
        }
        let mut stopped = 0;
        for (key, handle) in picked {
            match self.stop_idle(&key, &handle, None) {
                Ok(()) => stopped += 1,
                Err(e) => {
                    tracing::warn!(view = %key, error = %e, "cannot stop a lingering view; it lingers on")
                }
            }
        }
        stopped
    }

    /// Stops the view `key` (marked stopping, `handle` taken out of its
    /// slot). On failure it is running again, with `user` back on it (or
    /// lingering afresh when it had none).
    fn stop_idle(&self, key: &ViewKey, handle: &Arc<M::Handle>, user: Option<&str>) -> Result<()> {
        let stopped = self.mounter.stop(handle);
        if stopped.is_ok() {
            let _ = std::fs::remove_dir(self.mountpoint(key));
            frozen::remove(&self.mountpoint(key));
        }
        let mut table = self.table();
        let result = match stopped {
            Ok(outcome) => {
                table.entries.remove(key);
                Ok(outcome)
            }
            Err(e) => {
                let entry = table.entries.get_mut(key).expect("stopping entry");
                entry.slot = Slot::Running(handle.clone());
                match user {
                    Some(user) => {
                        entry.users.insert(user.to_string());
                    }
                    None => entry.idle_since = Some(Instant::now()),
                }
                Err(Error::View {
                    chain: key.chain.clone(),
                    source: ViewError::Stop(e),
                })
            }
        };
        self.changed.notify_all();
        drop(table);
        match result? {
            StopOutcome::Stopped => tracing::info!(view = %key, "view stopped"),
            StopOutcome::Detached => {
                tracing::info!(
                    view = %key,
                    "view detached; it serves its remaining users elsewhere"
                )
            }
            StopOutcome::Aborted => {
                tracing::error!(view = %key, "view server hung; connection aborted")
            }
        }
        Ok(())
    }

    /// Snapshot ids whose directories live views read.
    pub fn pinned(&self) -> HashSet<SnapshotId> {
        self.table()
            .entries
            .values()
            .flat_map(|e| e.pinned.iter().copied())
            .collect()
    }

    /// The chain of each view and the view's users (a chain appears once
    /// per view: once per mode and allowed set in use).
    pub fn status(&self) -> Vec<(ChainId, Vec<String>)> {
        let mut out: Vec<_> = self
            .keys()
            .into_iter()
            .map(|(k, users)| (k.chain, users))
            .collect();
        out.sort();
        out
    }

    /// Each view and its users, by mountpoint name.
    pub fn keys(&self) -> Vec<(ViewKey, Vec<String>)> {
        let mut out: Vec<_> = self
            .table()
            .entries
            .iter()
            .map(|(k, e)| (k.clone(), e.users.iter().cloned().collect()))
            .collect();
        out.sort_by_key(|(k, _)| k.mount_name());
        out
    }

    /// Mountpoints of the views this daemon knows.
    pub fn known_mountpoints(&self) -> HashSet<PathBuf> {
        self.table()
            .entries
            .keys()
            .map(|k| self.mountpoint(k))
            .collect()
    }

    /// The directory of view mountpoints.
    pub fn views_dir(&self) -> &Path {
        &self.views_dir
    }
}
