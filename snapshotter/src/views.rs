//! Views of image chains: one view per chain, started on first use by a
//! container, shared by that chain's containers, stopped with the last one.
//! Profiles are journaled per chain under `profiles/<chain>`.
//!
//! The table of views is only locked for in-memory bookkeeping: starting and
//! stopping a view (a process, a mount, an unmount) happen with the lock
//! released, while the chain's entry says `Starting` or `Stopping`; others
//! that need that chain wait on a condition variable, for a bounded time.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::store::SnapshotId;

/// What a view serves and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewSpec {
    /// The image chain (its profile's key).
    pub chain: String,
    /// Layer directories, topmost first.
    pub layers: Vec<PathBuf>,
    /// The mountpoint.
    pub mountpoint: PathBuf,
    /// The profile journal, when accesses are recorded.
    pub profile: Option<PathBuf>,
}

/// Why a view could not be started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    /// The server process could not be started or talked to.
    #[error("cannot start the view server: {0}")]
    Spawn(String),
    /// The server did not report ready in time (it was killed).
    #[error("the view server did not report ready within {0:?}")]
    Timeout(Duration),
    /// The server refused: it could not read the layers, open the profile or mount.
    #[error("{0}")]
    Refused(String),
}

/// How a view was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Unmounted, profile flushed, server gone.
    Stopped,
    /// Still used outside this mount namespace: detached here, its server
    /// serves those users until they go.
    Detached,
    /// The server hung: its connection was aborted and it was killed.
    Aborted,
}

/// Starts and stops views; the real one runs a server process per view,
/// tests use fakes.
pub trait ViewMounter: Send + Sync + 'static {
    /// What it takes to stop the view later.
    type Handle: Send;
    /// Mounts `spec`, within a bounded time.
    fn mount(&self, spec: &ViewSpec) -> std::result::Result<Self::Handle, MountError>;
    /// A view of `spec` left serving by an earlier run of the daemon.
    fn adopt(&self, spec: &ViewSpec) -> Option<Self::Handle>;
    /// True while the view serves.
    fn is_serving(&self, handle: &Self::Handle) -> bool;
    /// Stops a view, within a bounded time.
    fn stop(&self, handle: Self::Handle) -> StopOutcome;
}

enum Slot<H> {
    Starting,
    Running(H),
    Stopping,
}

struct Entry<H> {
    slot: Slot<H>,
    users: BTreeSet<String>,
    pinned: Vec<SnapshotId>,
}

/// The views of this daemon.
pub struct Views<M: ViewMounter> {
    mounter: M,
    views_dir: PathBuf,
    profiles_dir: PathBuf,
    table: Mutex<HashMap<String, Entry<M::Handle>>>,
    changed: Condvar,
    /// Longest wait for another caller's start or stop of the same chain.
    wait_limit: Duration,
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

/// How a container's view is to be served.
pub struct Request<'a> {
    /// The container snapshot key.
    pub user: &'a str,
    /// The image chain.
    pub chain: &'a str,
    /// The chain's layers, topmost first, with their snapshot ids.
    pub layers: &'a [(SnapshotId, PathBuf)],
    /// Whether accesses are recorded.
    pub profiled: bool,
}

impl<M: ViewMounter> Views<M> {
    /// Views mounted under `views_dir`, profiles under `profiles_dir`;
    /// callers wait at most `wait_limit` for a start or stop of the same
    /// chain by another caller.
    pub fn new(
        mounter: M,
        views_dir: PathBuf,
        profiles_dir: PathBuf,
        wait_limit: Duration,
    ) -> Self {
        Views {
            mounter,
            views_dir,
            profiles_dir,
            table: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            wait_limit,
        }
    }

    /// Mountpoint of `chain`'s view.
    pub fn mountpoint(&self, chain: &str) -> PathBuf {
        self.views_dir.join(view_dir_name(chain))
    }

    /// Profile journal of `chain`.
    pub fn profile_path(&self, chain: &str) -> PathBuf {
        self.profiles_dir.join(chain_dir_name(chain))
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Entry<M::Handle>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spec(&self, req: &Request<'_>) -> ViewSpec {
        ViewSpec {
            chain: req.chain.to_string(),
            layers: req.layers.iter().map(|(_, d)| d.clone()).collect(),
            mountpoint: self.mountpoint(req.chain),
            profile: req.profiled.then(|| self.profile_path(req.chain)),
        }
    }

    /// Registers `req.user` on its chain's view, starting the view if needed
    /// (or, with `adopt`, taking over one an earlier daemon left serving).
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
            match table.get_mut(req.chain) {
                Some(entry) => {
                    if let Slot::Running(handle) = &entry.slot {
                        if self.mounter.is_serving(handle) || adopt {
                            entry.users.insert(req.user.to_string());
                            return Ok(spec.mountpoint);
                        }
                    }
                    if matches!(entry.slot, Slot::Running(_)) {
                        // Its server died: the view is gone for everyone; a
                        // new one serves new containers.
                        tracing::error!(
                            chain = req.chain,
                            "view server is gone; starting a new one"
                        );
                        let Some(Entry {
                            slot: Slot::Running(handle),
                            ..
                        }) = table.remove(req.chain)
                        else {
                            unreachable!("matched above")
                        };
                        drop(table);
                        self.mounter.stop(handle);
                        table = self.table();
                        continue;
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::View {
                            chain: req.chain.into(),
                            why: format!(
                                "timed out after {:?} waiting for the view to start or stop",
                                self.wait_limit
                            ),
                        });
                    }
                    table = self
                        .changed
                        .wait_timeout(table, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None => {
                    table.insert(
                        req.chain.to_string(),
                        Entry {
                            slot: Slot::Starting,
                            users: BTreeSet::from([req.user.to_string()]),
                            pinned: req.layers.iter().map(|(id, _)| *id).collect(),
                        },
                    );
                    break;
                }
            }
        }
        drop(table);
        let started = self.start(&spec, adopt);
        let mut table = self.table();
        let result = match started {
            Ok(handle) => {
                let entry = table.get_mut(req.chain).expect("starting entry");
                entry.slot = Slot::Running(handle);
                Ok(spec.mountpoint)
            }
            Err(why) => {
                table.remove(req.chain);
                let _ = std::fs::remove_dir(&spec.mountpoint);
                Err(Error::View {
                    chain: req.chain.into(),
                    why: why.to_string(),
                })
            }
        };
        self.changed.notify_all();
        result
    }

    fn start(&self, spec: &ViewSpec, adopt: bool) -> std::result::Result<M::Handle, MountError> {
        if adopt {
            if let Some(handle) = self.mounter.adopt(spec) {
                tracing::info!(chain = spec.chain, "view adopted: its server kept serving");
                return Ok(handle);
            }
        }
        std::fs::create_dir_all(&spec.mountpoint)
            .map_err(|e| MountError::Spawn(format!("{}: {e}", spec.mountpoint.display())))?;
        let handle = self.mounter.mount(spec)?;
        tracing::info!(chain = spec.chain, mountpoint = %spec.mountpoint.display(), layers = spec.layers.len(), profiled = spec.profile.is_some(), "view mounted");
        Ok(handle)
    }

    /// Drops `user` from `chain`'s view; stops the view when it was the last
    /// user. True when the view was stopped (the layers it read may be free).
    pub fn release(&self, user: &str, chain: &str) -> Result<bool> {
        let mut table = self.table();
        let Some(entry) = table.get_mut(chain) else {
            return Ok(false);
        };
        entry.users.remove(user);
        if !entry.users.is_empty() || !matches!(entry.slot, Slot::Running(_)) {
            return Ok(false);
        }
        let Slot::Running(handle) = std::mem::replace(&mut entry.slot, Slot::Stopping) else {
            unreachable!("matched above")
        };
        drop(table);
        let outcome = self.mounter.stop(handle);
        let mountpoint = self.mountpoint(chain);
        let _ = std::fs::remove_dir(&mountpoint);
        let mut table = self.table();
        table.remove(chain);
        self.changed.notify_all();
        drop(table);
        match outcome {
            StopOutcome::Stopped => tracing::info!(chain, "view stopped"),
            StopOutcome::Detached => {
                tracing::info!(
                    chain,
                    "view detached; it serves its remaining users elsewhere"
                )
            }
            StopOutcome::Aborted => {
                tracing::error!(chain, "view server hung; connection aborted")
            }
        }
        Ok(true)
    }

    /// Snapshot ids whose directories live views read.
    pub fn pinned(&self) -> HashSet<SnapshotId> {
        self.table()
            .values()
            .flat_map(|e| e.pinned.iter().copied())
            .collect()
    }

    /// Chains with a view and their users.
    pub fn status(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<_> = self
            .table()
            .iter()
            .map(|(c, e)| (c.clone(), e.users.iter().cloned().collect()))
            .collect();
        out.sort();
        out
    }

    /// Mountpoints of the views this daemon knows.
    pub fn known_mountpoints(&self) -> HashSet<PathBuf> {
        self.table().keys().map(|c| self.mountpoint(c)).collect()
    }

    /// The directory of view mountpoints.
    pub fn views_dir(&self) -> &Path {
        &self.views_dir
    }
}
