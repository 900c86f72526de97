//! An image's misses on this node, gathered in one place for `pare misses`
//! and `pare report`: every misses file beside its profile (audit and
//! enforce views), merged into one first-seen list, and, for an image `pare
//! compact` made, the names it lacks that its source image has.

use std::path::{Path, PathBuf};

use pare_fs::id::{self, ChainId, Digest};
use pare_fs::policy::{self, Miss, MissesFile, Mode, PolicyError};
use pare_fs::profile::{self, Profile};

use crate::compact::{CompactError, lacking};
use crate::containerd::{Client, ContainerdError};

/// Why an image's misses could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum MissesError {
    /// containerd could not give the image.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    /// A misses file (or the directory of the profile) could not be read.
    #[error("cannot read the misses of profile {}: {source}", profile.display())]
    Misses {
        /// The profile the misses belong to.
        profile: PathBuf,
        /// What went wrong, naming the file.
        source: PolicyError,
    },
    /// The image's profile is not a valid journal.
    #[error(transparent)]
    Profile(#[from] profile::ReadError),
    /// The names a minimized image lacks could not be found.
    #[error("cannot find what {image} lacks: {source}")]
    Lacking {
        /// The minimized image.
        image: String,
        /// What went wrong.
        source: CompactError,
    },
}

/// The misses of one image on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageMisses {
    /// The image's top chain.
    pub chain: ChainId,
    /// Its mode on this node: the one set with `pare mode`, else that of its
    /// last misses file, else learn.
    pub mode: Mode,
    /// How many misses files were read.
    pub files: usize,
    /// For an image pare compacted: its source image's manifest digest.
    pub source_image: Option<Digest>,
    /// For an image pare compacted: how many names it lacks that its source
    /// has (they are among [`ImageMisses::misses`], kind `absent`).
    pub lacking: usize,
    /// Every miss, one per path and kind, in first-seen order.
    pub misses: Vec<Miss>,
}

impl ImageMisses {
    /// Whether anything was recorded: a misses file, or a source image
    /// whose names were looked up.
    pub fn recorded(&self) -> bool {
        self.files > 0 || !self.misses.is_empty()
    }
}

/// The misses of image `name` recorded under the pare root `root`; the
/// source image of a minimized image is searched in its layers as unpacked
/// by `snapshotter`.
pub async fn gather(
    client: &Client,
    root: &Path,
    snapshotter: &str,
    name: &str,
) -> Result<ImageMisses, MissesError> {
    let image = client.image(name).await?;
    let profile_path = id::profile_path(root, &image.top_chain_id);
    let lacking_error = |source| MissesError::Lacking {
        image: name.to_string(),
        source,
    };
    let lacking = match lacking::source_of(&image).map_err(lacking_error)? {
        None => None,
        Some(source) => Some(match read_profile(&profile_path)? {
            Some(recorded) => lacking::lacking(client, snapshotter, source, &recorded)
                .await
                .map_err(lacking_error)?,
            None => lacking::Lacking {
                source,
                misses: Vec::new(),
            },
        }),
    };
    let mut files = read_all(&profile_path)?;
    let count = files.len();
    let mode = policy::modes::read(root, &image.top_chain_id)
        .ok()
        .flatten()
        .map(|e| e.mode)
        .or_else(|| files.last().map(|f| f.mode))
        .unwrap_or(Mode::Learn);
    let source_image = lacking.as_ref().map(|l| l.source.clone());
    let lacks = lacking.as_ref().map_or(0, |l| l.misses.len());
    if let Some(lacking) = lacking {
        files.push(MissesFile {
            image: None,
            mode,
            misses: lacking.misses,
        });
    }
    Ok(ImageMisses {
        chain: image.top_chain_id,
        mode,
        files: count,
        source_image,
        lacking: lacks,
        misses: merged(files),
    })
}

/// The profile at `path`, or `None` when none was recorded.
fn read_profile(path: &Path) -> Result<Option<Profile>, MissesError> {
    match profile::read(path) {
        Ok(p) => Ok(Some(p)),
        Err(profile::ReadError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Every misses file of the profile at `profile`.
pub fn read_all(profile: &Path) -> Result<Vec<MissesFile>, MissesError> {
    let error = |source| MissesError::Misses {
        profile: profile.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for file in policy::misses_files(profile).map_err(error)? {
        out.push(policy::read_misses(&file).map_err(error)?);
    }
    Ok(out)
}

/// The misses of several files as one list in first-seen order: one entry
/// per path and kind, counts added, processes joined.
pub fn merged(files: Vec<MissesFile>) -> Vec<Miss> {
    let mut out: Vec<Miss> = Vec::new();
    for miss in files.into_iter().flat_map(|f| f.misses) {
        match out
            .iter_mut()
            .find(|m| m.path == miss.path && m.kind == miss.kind)
        {
            Some(m) => {
                m.count += miss.count;
                m.first_seen_ns = m.first_seen_ns.min(miss.first_seen_ns);
                for p in miss.processes {
                    if m.processes.len() < policy::MAX_PROCESSES
                        && !m.processes.iter().any(|q| q.pid == p.pid)
                    {
                        m.processes.push(p);
                    }
                }
            }
            None => out.push(miss),
        }
    }
    out.sort_by_key(|m| m.first_seen_ns);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pare_fs::policy::MissProcess;
    use pare_fs::profile::{AccessKind, ImagePath};

    fn miss(path: &str, kind: AccessKind, first: u64, pid: u32) -> Miss {
        Miss {
            path: ImagePath::new(path.as_bytes().to_vec()).unwrap(),
            kind,
            first_seen_ns: first,
            count: 1,
            processes: vec![MissProcess {
                pid,
                command: "sh".into(),
                container: Some(format!("c{pid}")),
            }],
        }
    }

    #[test]
    fn misses_of_several_views_merge_in_first_seen_order() {
        let file = |mode, misses| MissesFile {
            image: None,
            mode,
            misses,
        };
        let merged = merged(vec![
            file(
                Mode::Audit,
                vec![
                    miss("/app/b", AccessKind::Read, 5, 1),
                    miss("/app/c", AccessKind::Lookup, 9, 1),
                ],
            ),
            file(
                Mode::Enforce,
                vec![
                    miss("/app/a", AccessKind::Lookup, 3, 2),
                    miss("/app/b", AccessKind::Read, 7, 2),
                ],
            ),
        ]);
        let shown: Vec<(String, u64, u64, usize)> = merged
            .iter()
            .map(|m| {
                (
                    m.path.to_string(),
                    m.first_seen_ns,
                    m.count,
                    m.processes.len(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("/app/a".to_string(), 3, 1, 1),
                ("/app/b".to_string(), 5, 2, 2),
                ("/app/c".to_string(), 9, 1, 1),
            ]
        );
    }

    #[test]
    fn a_profile_without_misses_files_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profiles").join("sha256-00");
        assert!(read_all(&profile).unwrap().is_empty());
        std::fs::create_dir_all(profile.parent().unwrap()).unwrap();
        assert!(read_all(&profile).unwrap().is_empty());
    }
}
