//! Whether an image still has something to teach: its settle state, kept
//! beside its profile (`<profile>.settle`, small JSON written atomically).
//!
//! The snapshotter counts the learn containers of an image as they are
//! removed: a container whose accesses grew the profile (a new path, or a
//! new kind of access of a path; absent names do not count) starts the count
//! again; after `settle_after` containers in a row without growth the image is
//! *settled* and its new containers run on plain overlayfs, except a
//! deterministic sample (every n-th) that still learns. A sampled container
//! that grows the profile unsettles the image.
//!
//! `{"version": 1, "containers": 12, "since_growth": 5, "records": 734,
//! "settled_unix_ns": 1700000000000000000, "started_settled": 3}`

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Profile;

const VERSION: u32 = 1;

/// The settle state of one image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleState {
    /// Learn containers counted (removed) so far.
    pub containers: u64,
    /// Of those, the last ones in a row that did not grow the profile.
    pub since_growth: u64,
    /// Access records (absent names aside) in the profile when last counted.
    pub records: u64,
    /// When the image settled, in ns since the Unix epoch; none while it learns.
    pub settled_unix_ns: Option<u64>,
    /// Containers started since it settled (the sample is every n-th of them).
    pub started_settled: u64,
}

/// What counting a removed container did to the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// The profile grew; the image learns (again, if it was settled).
    Grew {
        /// It was settled before.
        unsettled: bool,
    },
    /// No growth; the image keeps learning.
    Quiet,
    /// No growth, and this was the `settle_after`-th container in a row.
    Settled,
    /// No growth; the image was settled already.
    StillSettled,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    #[serde(flatten)]
    state: SettleState,
}

/// Why a settle state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The file could not be read or written.
    #[error("settle state {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a settle state of this version.
    #[error("settle state {path} is not usable: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Where the settle state of the profile at `profile` lives: `<profile>.settle`.
pub fn settle_path(profile: &Path) -> PathBuf {
    let mut name = profile.as_os_str().to_owned();
    name.push(".settle");
    PathBuf::from(name)
}

/// The access records of `profile` that count as growth: one per path and
/// kind, absent names aside.
pub fn growth_records(profile: &Profile) -> u64 {
    profile
        .entries
        .iter()
        .map(|e| e.accesses.len() as u64)
        .sum()
}

impl SettleState {
    /// True when the image is settled.
    pub fn is_settled(&self) -> bool {
        self.settled_unix_ns.is_some()
    }

    /// Counts a removed learn container, the profile now holding `records`
    /// growth records; the image settles after `settle_after` quiet
    /// containers in a row (never when 0).
    pub fn count(&mut self, records: u64, settle_after: u64, now_unix_ns: u64) -> Counted {
        self.containers += 1;
        if records > self.records {
            self.records = records;
            self.since_growth = 0;
            let unsettled = self.settled_unix_ns.take().is_some();
            self.started_settled = 0;
            return Counted::Grew { unsettled };
        }
        self.since_growth += 1;
        if self.is_settled() {
            return Counted::StillSettled;
        }
        if settle_after > 0 && self.since_growth >= settle_after {
            self.settled_unix_ns = Some(now_unix_ns);
            self.started_settled = 0;
            return Counted::Settled;
        }
        Counted::Quiet
    }

    /// For a container starting while the image is settled: true when it is
    /// in the sample that still learns (every `every`-th, the first one
    /// included; never when `every` is none). Counts the start.
    pub fn sample(&mut self, every: Option<u64>) -> bool {
        let n = self.started_settled;
        self.started_settled += 1;
        every.is_some_and(|every| every > 0 && n % every == 0)
    }

    /// Reads the state at `path`; none when there is no file.
    pub fn read(path: &Path) -> Result<Option<SettleState>, SettleError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SettleError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let damaged = |reason: String| SettleError::Damaged {
            path: path.to_path_buf(),
            reason,
        };
        let on_disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
        if on_disk.version != VERSION {
            return Err(damaged(format!(
                "version {} (this pare reads version {VERSION})",
                on_disk.version
            )));
        }
        Ok(Some(on_disk.state))
    }

    /// Writes the state to `path` atomically (a temporary file beside it, renamed).
    pub fn write(&self, path: &Path) -> Result<(), SettleError> {
        let io = |source| SettleError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = serde_json::to_vec(&OnDisk {
            version: VERSION,
            state: self.clone(),
        })
        .map_err(|e| io(std::io::Error::other(e)))?;
        crate::atomic::write_atomically(path, &bytes).map_err(io)
    }

    /// Sample rate (a fraction of a settled image's containers) as "every
    /// n-th": 0.05 is every 20th, 1.0 every one, 0 none.
    pub fn every_of_rate(rate: f64) -> Option<u64> {
        (rate > 0.0).then(|| (1.0 / rate.min(1.0)).round().max(1.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settles_after_quiet_containers_and_a_grown_one_unsettles() {
        let mut s = SettleState::default();
        assert_eq!(s.count(10, 3, 1), Counted::Grew { unsettled: false });
        assert_eq!(s.count(10, 3, 2), Counted::Quiet);
        assert_eq!(s.count(12, 3, 3), Counted::Grew { unsettled: false });
        assert_eq!(s.count(12, 3, 4), Counted::Quiet);
        assert_eq!(s.count(12, 3, 5), Counted::Quiet);
        assert_eq!(s.count(12, 3, 6), Counted::Settled);
        assert_eq!(s.settled_unix_ns, Some(6));
        assert_eq!(s.count(12, 3, 7), Counted::StillSettled);
        assert_eq!(s.containers, 7);
        assert_eq!(s.count(13, 3, 8), Counted::Grew { unsettled: true });
        assert!(!s.is_settled());
        // 0: never settles.
        let mut never = SettleState::default();
        for i in 0..10 {
            assert_ne!(never.count(1, 0, i), Counted::Settled);
        }
    }

    #[test]
    fn the_sample_is_every_nth_start_deterministically() {
        let mut s = SettleState::default();
        let picks: Vec<bool> = (0..6).map(|_| s.sample(Some(3))).collect();
        assert_eq!(picks, [true, false, false, true, false, false]);
        let mut all = SettleState::default();
        assert!((0..4).all(|_| all.sample(Some(1))));
        let mut none = SettleState::default();
        assert!((0..4).all(|_| !none.sample(None)));
        assert_eq!(SettleState::every_of_rate(0.05), Some(20));
        assert_eq!(SettleState::every_of_rate(1.0), Some(1));
        assert_eq!(SettleState::every_of_rate(0.0), None);
        assert_eq!(SettleState::every_of_rate(0.3), Some(3));
    }

    #[test]
    fn the_file_round_trips_and_a_damaged_one_is_one_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = settle_path(&dir.path().join("sha256-abc"));
        assert_eq!(SettleState::read(&path).unwrap(), None);
        let mut s = SettleState::default();
        s.count(3, 1, 1);
        s.count(3, 1, 2);
        s.write(&path).unwrap();
        assert_eq!(SettleState::read(&path).unwrap(), Some(s));
        std::fs::write(&path, b"{\"version\": 9}").unwrap();
        let err = SettleState::read(&path).unwrap_err();
        assert!(matches!(err, SettleError::Damaged { .. }), "{err}");
    }
}
