//! A view server's state file (`<mountpoint>.server`): which process serves
//! the mount, over which FUSE connection, for which view (chain, mode,
//! allowed set). A restarted snapshotter adopts the server it names if that
//! server still serves the same view.

use std::path::{Path, PathBuf};

use pare_fs::id::{ChainId, Digest};
use pare_fs::policy::Mode;
use serde::{Deserialize, Serialize};

use super::ProcessId;

/// What a running server writes beside its mountpoint (`<mountpoint>.server`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerState {
    /// The serving process.
    pub process: ProcessId,
    /// FUSE connection number of its mount.
    pub connection: u32,
    /// The image chain it serves.
    pub chain: ChainId,
    /// The mountpoint.
    pub mountpoint: PathBuf,
    /// The view's mode (learn in state files written before modes).
    #[serde(default)]
    pub mode: Mode,
    /// The digest of the allowed-set file judged by (audit, enforce).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Digest>,
}

/// Why a state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The file could not be read.
    #[error("cannot read the view server state {path}: {source}")]
    Read {
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no server state.
    #[error("{path} is not a view server state: {source}")]
    Parse {
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The state could not be encoded (a mountpoint that is not UTF-8).
    #[error("cannot encode the view server state for {path}: {source}")]
    Encode {
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The file could not be written.
    #[error("cannot write the view server state {path}: {source}")]
    Write {
        /// The file written (a temporary name beside the state file).
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The state file of the view mounted at `mountpoint`.
pub fn state_path(mountpoint: &Path) -> PathBuf {
    let mut name = mountpoint.as_os_str().to_owned();
    name.push(".server");
    PathBuf::from(name)
}

impl ServerState {
    /// The view this server serves.
    pub fn key(&self) -> crate::views::ViewKey {
        crate::views::ViewKey {
            chain: self.chain.clone(),
            mode: self.mode,
            allowed: self.allowed.clone(),
        }
    }

    /// Reads the state file of `mountpoint`; `None` when there is none.
    pub fn load(mountpoint: &Path) -> Result<Option<ServerState>, StateFileError> {
        let path = state_path(mountpoint);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateFileError::Read { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StateFileError::Parse { path, source })
    }

    /// Reads the state file of `mountpoint`; `None` when there is none or it
    /// cannot be read.
    pub fn read(mountpoint: &Path) -> Option<ServerState> {
        ServerState::load(mountpoint).ok().flatten()
    }

    /// Writes the state file atomically.
    pub fn write(&self) -> Result<(), StateFileError> {
        let path = state_path(&self.mountpoint);
        let bytes = serde_json::to_vec(self).map_err(|source| StateFileError::Encode {
            path: path.clone(),
            source,
        })?;
        let tmp = path.with_extension(format!("server.tmp-{}", self.process.pid));
        std::fs::write(&tmp, bytes).map_err(|source| StateFileError::Write {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| StateFileError::Write { path, source })
    }

    /// Removes the state file if it is still this server's.
    pub fn remove_if_mine(&self) {
        if ServerState::read(&self.mountpoint).is_some_and(|s| s.process == self.process) {
            let _ = std::fs::remove_file(state_path(&self.mountpoint));
        }
    }

    /// True while the server runs and its mount is the one mounted here. An
    /// unreadable mount table counts as mounted: a healthy view must never
    /// be replaced because of a failed read.
    pub fn is_serving(&self) -> bool {
        self.process.is_alive()
            && match pare_fs::mountinfo::read() {
                Ok(mounts) => mounts
                    .iter()
                    .rev()
                    .find(|m| m.mount_point == self.mountpoint)
                    .is_some_and(|m| m.major == 0 && m.minor == self.connection),
                Err(_) => true,
            }
    }

    /// True when this server's connection is what is mounted at the mountpoint.
    pub fn mounted_here(&self) -> bool {
        pare_fs::mountinfo::mount_at(&self.mountpoint)
            .is_some_and(|m| m.major == 0 && m.minor == self.connection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(mountpoint: PathBuf) -> ServerState {
        ServerState {
            process: ProcessId::current().unwrap(),
            connection: 42,
            chain: ChainId::from_snapshot_name("sha256:c2"),
            mountpoint,
            mode: Mode::Enforce,
            allowed: Some(Digest::sha256(b"set")),
        }
    }

    #[test]
    fn a_state_file_of_before_modes_names_a_learn_view() {
        let old = r#"{"process":{"pid":7,"start_ticks":9},"connection":42,"chain":"sha256:c2","mountpoint":"/v/sha256-c2"}"#;
        let state: ServerState = serde_json::from_str(old).unwrap();
        assert_eq!(
            state.key(),
            crate::views::ViewKey::learn(ChainId::from_snapshot_name("sha256:c2"))
        );
    }

    #[test]
    fn a_state_file_round_trips_and_a_missing_or_garbled_one_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let mountpoint = dir.path().join("sha256-c2");
        assert!(matches!(ServerState::load(&mountpoint), Ok(None)));
        let written = state(mountpoint.clone());
        written.write().unwrap();
        assert_eq!(ServerState::load(&mountpoint).unwrap(), Some(written));
        std::fs::write(state_path(&mountpoint), b"{not json").unwrap();
        let err = ServerState::load(&mountpoint).unwrap_err();
        assert!(
            matches!(&err, StateFileError::Parse { path, .. } if *path == state_path(&mountpoint)),
            "{err:?}"
        );
        assert_eq!(ServerState::read(&mountpoint), None);
    }

    #[test]
    fn a_state_file_that_cannot_be_written_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = state(dir.path().join("missing").join("view"))
            .write()
            .unwrap_err();
        assert!(
            matches!(&err, StateFileError::Write { path, source } if path.starts_with(dir.path().join("missing")) && source.kind() == std::io::ErrorKind::NotFound),
            "{err:?}"
        );
    }
}
