//! Settled images: an image whose profile stopped growing runs its new
//! containers on plain kernel overlayfs, but for a sample that still learns
//! ([`pare_fs::profile::settle`] has the rules and the state file).
//!
//! The state file is read and written under [`Snapshots::settle`] (a small
//! local file, never a mount, a process or a peer); the profile is read
//! before, without it.

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
        let path = settle_path(&profile_path(&self.root, chain));
        let _held = self.settle.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = match SettleState::read(&path) {
            Ok(Some(state)) if state.is_settled() => state,
            Ok(_) => return true,
            Err(e) => {
                tracing::warn!(%chain, error = %e, "cannot read the image's settle state; it learns");
                return true;
            }
        };
        let sampled = state.sample(self.settling.every);
        if let Err(e) = state.write(&path) {
            tracing::warn!(%chain, error = %e, "cannot keep the image's settle state");
        }
        tracing::debug!(%chain, sampled, "container of a settled image");
        sampled
    }

    /// Counts a learn container of `chain` that is gone: its accesses are in
    /// the profile now. A profile that cannot be read counts nothing.
    pub(super) fn count_learn_container(&self, chain: &ChainId) {
        if self.settling.after == 0 {
            return;
        }
        let profile_file = profile_path(&self.root, chain);
        let records = match profile::read(&profile_file) {
            Ok(p) => growth_records(&p),
            Err(ReadError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return;
            }
            Err(e) => {
                tracing::warn!(%chain, error = %e, "cannot read the profile to count the container");
                return;
            }
        };
        let path = settle_path(&profile_file);
        let (counted, state) = {
            let _held = self.settle.lock().unwrap_or_else(|e| e.into_inner());
            let mut state = match SettleState::read(&path) {
                Ok(state) => state.unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(%chain, error = %e, "the image's settle state is unusable; counting afresh");
                    SettleState::default()
                }
            };
            let now = u64::try_from(now_ns()).unwrap_or(0);
            let counted = state.count(records, self.settling.after, now);
            if let Err(e) = state.write(&path) {
                tracing::warn!(%chain, error = %e, "cannot keep the image's settle state");
            }
            (counted, state)
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
}
