//! Settled images: an image whose profile stopped growing runs its new
//! containers on plain kernel overlayfs, but for a sample that still learns
//! ([`pare_fs::profile::settle`] has the rules and the state file).
//!
//! The states live in memory under [`Snapshots::settle`], read from their
//! files the first time; no file is read or written with the lock held.

use std::collections::HashMap;
use std::sync::MutexGuard;

use pare_fs::id::{ChainId, profile_path};
use pare_fs::profile::settle::{Counted, SettleState, growth_records, settle_path};
use pare_fs::profile::{self, ReadError};

use super::Snapshots;
use super::info::now_ns;
use crate::views::ViewMounter;

/// When images settle and how many of a settled image's containers still learn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settling {
    /// Learn containers in a row without profile growth before an image
    /// settles; 0: never.
    pub after: u64,
    /// Every n-th container of a settled image still learns; none: none.
    pub every: Option<u64>,
}

impl Settling {
    /// Images never settle: every learn container gets a view.
    pub const NEVER: Settling = Settling {
        after: 0,
        every: None,
    };
}

impl<M: ViewMounter> Snapshots<M> {
    /// Whether a new learn container of `chain` gets a view: always while
    /// the image learns; once it settled, only the sampled ones.
    pub(super) fn learns(&self, chain: &ChainId) -> bool {
        if self.settling.after == 0 {
            return true;
        }
        let every = self.settling.every;
        let sampled = self.update_settle(chain, |state| {
            state.is_settled().then(|| state.sample(every))
        });
        match sampled {
            Some(sampled) => {
                tracing::debug!(%chain, sampled, "container of a settled image");
                sampled
            }
            None => true,
        }
    }

    /// Counts a learn container of `chain` that is gone: its accesses are in
    /// the profile now. A profile that cannot be read counts nothing.
    pub(super) fn count_learn_container(&self, chain: &ChainId) {
        if self.settling.after == 0 {
            return;
        }
        let records = match profile::read(&profile_path(&self.root, chain)) {
            Ok(p) => growth_records(&p),
            Err(ReadError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return;
            }
            Err(e) => {
                tracing::warn!(%chain, error = %e, "cannot read the profile to count the container");
                return;
            }
        };
        let after = self.settling.after;
        let now = u64::try_from(now_ns()).unwrap_or(0);
        let Some((counted, state)) = self.update_settle(chain, |state| {
            Some((state.count(records, after, now), state.clone()))
        }) else {
            return;
        };
        match counted {
            Counted::Settled => tracing::info!(
                %chain,
                containers = state.containers,
                quiet = state.since_growth,
                "image settled: its profile stopped growing; new containers run on plain overlayfs (a sample still learns)"
            ),
            Counted::Grew { unsettled: true } => tracing::info!(
                %chain,
                records,
                "image unsettled: a sampled container grew its profile; new containers learn again"
            ),
            _ => {}
        }
    }

    /// Applies `change` to the settle state of `chain` (read from its file
    /// the first time) under [`Snapshots::settle`], which guards memory only;
    /// when `change` gives a result, the state as it left it is written to
    /// the file after the lock is released. Two updates racing may land in
    /// the file out of order: it can lag the memory by one container, which
    /// only a restart reads.
    fn update_settle<T>(
        &self,
        chain: &ChainId,
        change: impl FnOnce(&mut SettleState) -> Option<T>,
    ) -> Option<T> {
        let path = settle_path(&profile_path(&self.root, chain));
        let cached = self.settle_states().contains_key(chain);
        let loaded = (!cached).then(|| {
            SettleState::read(&path)
                .unwrap_or_else(|e| {
                    tracing::warn!(%chain, error = %e, "the image's settle state is unusable; counting afresh");
                    None
                })
                .unwrap_or_default()
        });
        let (result, snapshot) = {
            let mut states = self.settle_states();
            let state = states
                .entry(chain.clone())
                .or_insert_with(|| loaded.unwrap_or_default());
            let result = change(state)?;
            (result, state.clone())
        };
        if let Err(e) = snapshot.write(&path) {
            tracing::warn!(%chain, error = %e, "cannot keep the image's settle state");
        }
        Some(result)
    }

    fn settle_states(&self) -> MutexGuard<'_, HashMap<ChainId, SettleState>> {
        self.settle.lock().unwrap_or_else(|e| e.into_inner())
    }
}
