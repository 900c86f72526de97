//! The profile a compaction reads: the one recorded on this node for the
//! source image's layer chain (or the one given), read once it has settled,
//! and refused when it is incomplete or belongs to another image; and the
//! image's merged layers the closure is computed over.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pare_fs::id::{self, ChainId};
use pare_fs::layers::LayerStack;
use pare_fs::profile::{self, ImagePath, Profile};

use super::closure::Index;
use super::tree::ImageTree;
use crate::containerd::Client;

use super::run::CompactError;

/// A profile read for compaction, with the bytes it was read from (their
/// digest is the minimized image's profile annotation).
pub struct SourceProfile {
    /// Where it was read.
    pub path: PathBuf,
    /// The journal's bytes.
    pub bytes: Vec<u8>,
    /// The decoded journal.
    pub profile: Profile,
}

/// Where the profile of the image with top layer `chain` is recorded under
/// pare-snapshotter's state directory `root`, when it exists.
pub fn recorded_profile(
    root: &Path,
    image: &str,
    chain: &ChainId,
) -> Result<PathBuf, CompactError> {
    let path = id::profile_path(root, chain);
    if path.exists() {
        Ok(path)
    } else {
        Err(CompactError::NotRecorded {
            image: image.to_string(),
            chain: chain.clone(),
            dir: id::profiles_dir(root),
        })
    }
}

impl SourceProfile {
    /// The profiled paths, in first-access order.
    pub fn paths(&self) -> Vec<ImagePath> {
        self.profile
            .entries
            .iter()
            .map(|e| e.path.clone())
            .collect()
    }
}

/// The merged layers of an image unpacked by `snapshotter` at `chain`, and
/// their index: what the closure is computed over.
pub async fn open_tree(
    client: &Client,
    snapshotter: &str,
    chain: &ChainId,
) -> Result<(ImageTree, Index), CompactError> {
    let dirs = client.layer_dirs(snapshotter, chain).await?;
    let tree = ImageTree::new(LayerStack::open(dirs)?);
    let index = Index::build(&tree).map_err(CompactError::Index)?;
    Ok((tree, index))
}

/// Reads the profile of `image` (top layer `chain`): `given`, else the one
/// recorded under `root`; refuses an incomplete one unless `allow_incomplete`
/// and one recorded for another chain.
pub fn read(
    root: &Path,
    given: Option<&Path>,
    image: &str,
    chain: &ChainId,
    allow_incomplete: bool,
) -> Result<SourceProfile, CompactError> {
    let path = match given {
        Some(path) => path.to_path_buf(),
        None => id::profile_path(root, chain),
    };
    let bytes = read_settled(&path).map_err(|source| CompactError::NoProfile {
        image: image.to_string(),
        chain: chain.clone(),
        path: path.clone(),
        source,
    })?;
    let profile = profile::read_bytes(&path, &bytes)?;
    refuse_incomplete(&profile, &path, allow_incomplete)?;
    match &profile.header.image {
        Some(of) if of != chain.as_str() => {
            return Err(CompactError::ForeignProfile {
                path,
                profile_chain: of.clone(),
                image: image.to_string(),
                chain: chain.clone(),
            });
        }
        None => {
            tracing::warn!(profile = %path.display(), "the profile does not name its image; using it as given")
        }
        _ => {}
    }
    Ok(SourceProfile {
        path,
        bytes,
        profile,
    })
}

/// Refuses an incomplete profile (its image could miss files the workload
/// uses) unless `allow` (--allow-incomplete), which only warns.
fn refuse_incomplete(profile: &Profile, path: &Path, allow: bool) -> Result<(), CompactError> {
    if !profile.incomplete {
        return Ok(());
    }
    if !allow {
        return Err(CompactError::Incomplete {
            path: path.to_path_buf(),
        });
    }
    tracing::warn!(profile = %path.display(), "compacting an incomplete profile (--allow-incomplete): the image may miss files the workload uses");
    Ok(())
}

/// Reads a profile once it has stopped growing for a moment: a workload that
/// just ended may still have accesses on their way to the journal (the
/// snapshotter writes them within its flush interval, 10 ms by default).
fn read_settled(path: &Path) -> std::io::Result<Vec<u8>> {
    const QUIET: Duration = Duration::from_millis(200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut bytes = std::fs::read(path)?;
    loop {
        std::thread::sleep(QUIET);
        let again = std::fs::read(path)?;
        if again.len() == bytes.len() || Instant::now() > deadline {
            return Ok(again);
        }
        bytes = again;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pare_fs::profile::journal::{self, FLAG_INCOMPLETE, Header};

    fn journal(image: Option<&str>, flags: u16) -> Vec<u8> {
        journal::encode_header(
            &Header {
                image: image.map(String::from),
                created_unix_ns: 0,
                writer: "t".into(),
            },
            flags,
        )
    }

    #[test]
    fn an_incomplete_profile_is_refused_unless_allowed() {
        let path = Path::new("/var/lib/pare/profiles/sha256-x");
        let cases = [
            (0, false, None),
            (0, true, None),
            (
                FLAG_INCOMPLETE,
                false,
                Some(
                    "profile /var/lib/pare/profiles/sha256-x is incomplete (records were lost while it was written); pass --allow-incomplete to compact it anyway",
                ),
            ),
            (FLAG_INCOMPLETE, true, None),
        ];
        for (flags, allow, want) in cases {
            let profile = profile::read_bytes(Path::new("p"), &journal(None, flags)).unwrap();
            let got = refuse_incomplete(&profile, path, allow)
                .err()
                .map(|e| e.to_string());
            assert_eq!(got.as_deref(), want, "flags {flags}, allow {allow}");
        }
    }

    #[test]
    fn a_profile_is_found_under_its_chain_and_refused_for_another() {
        let dir = tempfile::tempdir().unwrap();
        let chain = ChainId::from_snapshot_name(format!("sha256:{}", "a".repeat(64)));
        let err = recorded_profile(dir.path(), "app:v1", &chain).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no profile for app:v1 (chain {chain}) in {}",
                dir.path().join("profiles").display()
            )
        );
        let recorded = dir.path().join("profiles").join(chain.as_str());
        std::fs::create_dir_all(recorded.parent().unwrap()).unwrap();
        std::fs::write(&recorded, journal(Some(chain.as_str()), 0)).unwrap();
        assert_eq!(
            recorded_profile(dir.path(), "app:v1", &chain).unwrap(),
            recorded
        );
        let read_back = read(dir.path(), None, "app:v1", &chain, false).unwrap();
        assert_eq!(read_back.path, recorded);

        let foreign = dir.path().join("foreign");
        std::fs::write(&foreign, journal(Some("sha256:0000"), 0)).unwrap();
        let err = read(dir.path(), Some(&foreign), "app:v1", &chain, false)
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is a profile of image chain sha256:0000, not of app:v1 ({chain})",
                foreign.display()
            )
        );
    }
}
