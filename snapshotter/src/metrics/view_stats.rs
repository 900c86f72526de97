//! A view server's stats file (`<mountpoint>.stats`): its FUSE request
//! counts, its profile recorder's counters (learn) or its misses (audit,
//! enforce), rewritten atomically every second while it serves, read by the
//! snapshotter when it is scraped. Fields added later default when absent,
//! so files of an earlier version stay readable.

use std::path::{Path, PathBuf};

use pare_fs::policy::MissesFile;
use pare_fs::profile::RecorderStats;
use pare_fs::view::RequestCounts;
use serde::{Deserialize, Serialize};

/// How often a serving view rewrites its stats file.
pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What a view server reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ViewStats {
    /// The server's pid.
    pub pid: i32,
    /// FUSE requests served so far.
    pub requests: RequestCounts,
    /// The profile recorder's counters; none when accesses are not recorded.
    pub profile: Option<ProfileStats>,
    /// The misses of an audit or enforce view; none in learn mode.
    #[serde(default)]
    pub misses: Option<MissesStats>,
}

/// The misses of a view, as [`MissesFile`] holds them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissesStats {
    /// Distinct misses: a path and a kind of access.
    pub misses: u64,
    /// Accesses counted over all misses.
    pub accesses: u64,
}

impl MissesStats {
    /// The counts of `file`.
    pub fn new(file: &MissesFile) -> MissesStats {
        MissesStats {
            misses: file.misses.len() as u64,
            accesses: file.misses.iter().map(|m| m.count).sum(),
        }
    }
}

/// A view's profile recorder, as [`RecorderStats`] counts it, and its journal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileStats {
    /// Size of the journal file in bytes.
    pub journal_bytes: u64,
    /// Records this server wrote.
    pub records_written: u64,
    /// Records waiting for the journal to take them.
    pub records_pending: u64,
    /// Failed journal writes.
    pub write_errors: u64,
    /// Records dropped for good.
    pub records_lost: u64,
    /// The journal is marked incomplete.
    pub incomplete: bool,
    /// Distinct paths the profile holds as entries.
    #[serde(default)]
    pub entries: u64,
}

impl ProfileStats {
    /// The counters of `stats` for the journal at `journal`.
    pub fn new(stats: RecorderStats, journal: &Path) -> ProfileStats {
        ProfileStats {
            journal_bytes: std::fs::metadata(journal).map_or(0, |m| m.len()),
            records_written: stats.records_written,
            records_pending: stats.records_pending,
            write_errors: stats.write_errors,
            records_lost: stats.records_lost,
            incomplete: stats.incomplete,
            entries: stats.entries,
        }
    }
}

/// The stats file of the view mounted at `mountpoint`.
pub fn stats_path(mountpoint: &Path) -> PathBuf {
    let mut name = mountpoint.as_os_str().to_owned();
    name.push(".stats");
    PathBuf::from(name)
}

impl ViewStats {
    /// Writes the stats file of `mountpoint` atomically (a temporary file
    /// renamed over it).
    pub fn write(&self, mountpoint: &Path) -> std::io::Result<()> {
        let path = stats_path(mountpoint);
        let tmp = path.with_extension(format!("stats.tmp-{}", self.pid));
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(&tmp, &path)
    }

    /// The stats of the view at `mountpoint`; `None` when it has written
    /// none (yet) or the file is unreadable.
    pub fn read(mountpoint: &Path) -> Option<ViewStats> {
        let bytes = std::fs::read(stats_path(mountpoint)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Removes the stats file of `mountpoint` if this server wrote it last.
    pub fn remove_if_mine(mountpoint: &Path, pid: i32) {
        if ViewStats::read(mountpoint).is_some_and(|s| s.pid == pid) {
            let _ = std::fs::remove_file(stats_path(mountpoint));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_round_trip_through_their_file_and_only_their_writer_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let mountpoint = dir.path().join("sha256-c1");
        assert_eq!(ViewStats::read(&mountpoint), None);
        let stats = ViewStats {
            pid: 7,
            requests: pare_fs::view::RequestStats::default().snapshot(),
            profile: Some(ProfileStats {
                journal_bytes: 10,
                records_written: 2,
                ..ProfileStats::default()
            }),
            misses: Some(MissesStats {
                misses: 2,
                accesses: 5,
            }),
        };
        stats.write(&mountpoint).unwrap();
        assert_eq!(ViewStats::read(&mountpoint), Some(stats));
        ViewStats::remove_if_mine(&mountpoint, 8);
        assert!(stats_path(&mountpoint).exists());
        ViewStats::remove_if_mine(&mountpoint, 7);
        assert!(!stats_path(&mountpoint).exists());
    }

    #[test]
    fn a_stats_file_of_an_earlier_version_reads_without_misses_or_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mountpoint = dir.path().join("sha256-c1");
        let mut old = serde_json::to_value(ViewStats {
            pid: 7,
            requests: pare_fs::view::RequestStats::default().snapshot(),
            profile: Some(ProfileStats {
                records_written: 2,
                ..ProfileStats::default()
            }),
            misses: None,
        })
        .unwrap();
        old.as_object_mut().unwrap().remove("misses");
        old["profile"].as_object_mut().unwrap().remove("entries");
        std::fs::write(stats_path(&mountpoint), old.to_string()).unwrap();
        let read = ViewStats::read(&mountpoint).unwrap();
        assert_eq!(read.misses, None);
        assert_eq!(read.profile.unwrap().records_written, 2);
    }

    #[test]
    fn misses_are_counted_by_path_and_kind_and_by_access() {
        let misses = pare_fs::policy::Misses::new(None, pare_fs::policy::Mode::Audit);
        for _ in 0..3 {
            misses.record(
                Path::new("etc/shadow"),
                pare_fs::profile::AccessKind::Read,
                0,
            );
        }
        misses.record(
            Path::new("etc/shadow"),
            pare_fs::profile::AccessKind::Lookup,
            0,
        );
        misses.record(Path::new("bin/sh"), pare_fs::profile::AccessKind::Exec, 0);
        assert_eq!(
            MissesStats::new(&misses.snapshot()),
            MissesStats {
                misses: 3,
                accesses: 5
            }
        );
    }
}
