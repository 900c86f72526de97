//! What tells one view from another: the image chain, the mode, and (in
//! audit and enforce) the allowed set it judges by. Containers of one image
//! in different modes, or under sets frozen at different times, use
//! different views; a container keeps the view it started with.

use std::fmt;

use pare_fs::id::{ChainId, Digest};
use pare_fs::policy::{Mode, set_id};

/// The identity of a view.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ViewKey {
    /// The image chain served.
    pub chain: ChainId,
    /// Learn, audit or enforce (never off: off has no view).
    pub mode: Mode,
    /// In audit and enforce: the digest of the allowed-set file the view
    /// judges by. None in learn mode.
    pub allowed: Option<Digest>,
}

impl ViewKey {
    /// The learn view of `chain`: the profile grows.
    pub fn learn(chain: ChainId) -> ViewKey {
        ViewKey {
            chain,
            mode: Mode::Learn,
            allowed: None,
        }
    }

    /// The view of `chain` in `mode` (audit or enforce) judging by the
    /// allowed-set file with digest `allowed`.
    pub fn judged(chain: ChainId, mode: Mode, allowed: Digest) -> ViewKey {
        debug_assert!(mode.has_policy(), "{mode} judges nothing");
        ViewKey {
            chain,
            mode,
            allowed: Some(allowed),
        }
    }

    /// True when the view records the image's profile (learn views only:
    /// one recorder per profile).
    pub fn records_profile(&self) -> bool {
        self.mode == Mode::Learn
    }

    /// The mountpoint name: `sha256-<hex>` for learn (as before modes, so
    /// views of an earlier version are adopted), else
    /// `sha256-<hex>.<mode>-<first 12 hex digits of the allowed file's digest>`.
    pub fn mount_name(&self) -> String {
        match &self.allowed {
            Some(set) => format!("{}.{}-{}", self.chain.mount_name(), self.mode, set_id(set)),
            None => self.chain.mount_name(),
        }
    }
}

impl fmt::Display for ViewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.allowed {
            Some(set) => write!(f, "{} ({} {})", self.chain, self.mode, set_id(set)),
            None => write!(f, "{} ({})", self.chain, self.mode),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learn_views_keep_their_mountpoint_names_and_others_add_mode_and_set() {
        let chain = ChainId::from_snapshot_name("sha256:c2");
        let set = Digest::sha256(b"allowed");
        let cases = [
            (ViewKey::learn(chain.clone()), "sha256-c2".to_string()),
            (
                ViewKey::judged(chain.clone(), Mode::Audit, set.clone()),
                format!("sha256-c2.audit-{}", &set.hex()[..12]),
            ),
            (
                ViewKey::judged(chain.clone(), Mode::Enforce, set.clone()),
                format!("sha256-c2.enforce-{}", &set.hex()[..12]),
            ),
        ];
        for (key, name) in cases {
            assert_eq!(key.mount_name(), name, "{key}");
            assert_eq!(key.records_profile(), key.mode == Mode::Learn);
        }
    }
}
