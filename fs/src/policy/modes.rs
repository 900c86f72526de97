//! The mode store: the [`Mode`] each image runs in on this node, one small
//! JSON file per image chain under `<root>/modes/<chain file name>`:
//! `{"version": 1, "image": "docker.io/library/python:3.12", "chain":
//! "sha256:…", "mode": "audit", "rules": {…}, "set_ns": 1700000000000000000}`.
//!
//! `pare mode` writes an entry (atomically); the snapshotter reads it at each
//! Prepare of a container rootfs, a plain read without any lock.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::wire::write_atomically;
use super::{Mode, PolicyError, Rules};
use crate::id::ChainId;

const VERSION: u32 = 1;
const WHAT: &str = "mode entry";

/// One image's mode on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeEntry {
    /// The image as it was named when the mode was set.
    pub image: String,
    /// The image's chain (its profile's key).
    pub chain: ChainId,
    /// The mode.
    pub mode: Mode,
    /// The options its allowed set was frozen with (audit, enforce).
    pub rules: Rules,
    /// When the mode was set, in ns since the Unix epoch.
    pub set_ns: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    #[serde(flatten)]
    entry: ModeEntry,
}

/// The directory of mode entries under a snapshotter root.
pub fn modes_dir(root: &Path) -> PathBuf {
    root.join("modes")
}

/// The mode entry file of `chain` under a snapshotter root.
pub fn mode_path(root: &Path, chain: &ChainId) -> PathBuf {
    modes_dir(root).join(chain.file_name())
}

impl ModeEntry {
    /// An entry for `image` (chain `chain`) set to `mode` now.
    pub fn now(image: &str, chain: ChainId, mode: Mode, rules: Rules) -> ModeEntry {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        ModeEntry {
            image: image.to_string(),
            chain,
            mode,
            rules,
            set_ns: u64::try_from(since.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// Writes the entry under `root` atomically (creating `modes/`).
    pub fn write(&self, root: &Path) -> Result<PathBuf, PolicyError> {
        let dir = modes_dir(root);
        std::fs::create_dir_all(&dir).map_err(|source| PolicyError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = mode_path(root, &self.chain);
        let on_disk = OnDisk {
            version: VERSION,
            entry: self.clone(),
        };
        let mut bytes = serde_json::to_vec(&on_disk).expect("a mode entry serializes");
        bytes.push(b'\n');
        write_atomically(&path, &bytes).map_err(|source| PolicyError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

/// Reads the entry file at `path`.
pub fn read_file(path: &Path) -> Result<ModeEntry, PolicyError> {
    let bytes = std::fs::read(path).map_err(|source| PolicyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let on_disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| PolicyError::Damaged {
        path: path.to_path_buf(),
        what: WHAT,
        reason: e.to_string(),
    })?;
    if on_disk.version != VERSION {
        return Err(PolicyError::Damaged {
            path: path.to_path_buf(),
            what: WHAT,
            reason: format!(
                "version {} (this pare reads version {VERSION})",
                on_disk.version
            ),
        });
    }
    Ok(on_disk.entry)
}

/// The mode entry of `chain` under `root`; `None` when none was set.
pub fn read(root: &Path, chain: &ChainId) -> Result<Option<ModeEntry>, PolicyError> {
    match read_file(&mode_path(root, chain)) {
        Ok(entry) => Ok(Some(entry)),
        Err(PolicyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Every mode entry under `root`, by image name; unreadable entries are
/// returned as errors beside them (temporaries of a write in flight are skipped).
pub fn list(root: &Path) -> Result<(Vec<ModeEntry>, Vec<PolicyError>), PolicyError> {
    let dir = modes_dir(root);
    let read_dir = match std::fs::read_dir(&dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(source) => return Err(PolicyError::Io { path: dir, source }),
    };
    let (mut entries, mut errors) = (Vec::new(), Vec::new());
    for item in read_dir {
        let item = item.map_err(|source| PolicyError::Io {
            path: dir.clone(),
            source,
        })?;
        if item.file_name().to_string_lossy().contains(".tmp-") {
            continue;
        }
        match read_file(&item.path()) {
            Ok(entry) => entries.push(entry),
            Err(e) => errors.push(e),
        }
    }
    entries.sort_by(|a, b| (&a.image, &a.chain).cmp(&(&b.image, &b.chain)));
    Ok((entries, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(image: &str, chain: &str, mode: Mode) -> ModeEntry {
        ModeEntry {
            image: image.into(),
            chain: ChainId::from_snapshot_name(chain),
            mode,
            rules: Rules {
                include: vec!["/etc/ssl/**".into()],
                ..Rules::default()
            },
            set_ns: 7,
        }
    }

    #[test]
    fn entries_round_trip_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let chain = ChainId::from_snapshot_name("sha256:ab");
        assert_eq!(read(root, &chain).unwrap(), None);
        let written = entry("app:1", "sha256:ab", Mode::Enforce);
        let path = written.write(root).unwrap();
        assert_eq!(path, root.join("modes/sha256:ab"));
        assert_eq!(read(root, &chain).unwrap(), Some(written.clone()));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["mode"], "enforce");
        assert_eq!(json["image"], "app:1");
        // Setting again replaces the entry.
        let again = entry("app:1", "sha256:ab", Mode::Learn);
        again.write(root).unwrap();
        assert_eq!(read(root, &chain).unwrap(), Some(again));
    }

    #[test]
    fn list_sorts_by_image_and_reports_damaged_entries_beside_the_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(list(root).unwrap().0.is_empty());
        entry("zed", "sha256:01", Mode::Audit).write(root).unwrap();
        entry("app", "sha256:02", Mode::Off).write(root).unwrap();
        std::fs::write(modes_dir(root).join("sha256:03"), b"{\"version\":1").unwrap();
        std::fs::write(modes_dir(root).join("sha256:04.tmp-9"), b"").unwrap();
        let (entries, errors) = list(root).unwrap();
        let images: Vec<&str> = entries.iter().map(|e| e.image.as_str()).collect();
        assert_eq!(images, ["app", "zed"]);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .to_string()
                .contains("sha256:03 is not a usable mode entry"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn an_entry_of_another_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = entry("a", "sha256:ab", Mode::Audit)
            .write(dir.path())
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"version\":1", "\"version\":2")).unwrap();
        let err = read_file(&path).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
    }
}
