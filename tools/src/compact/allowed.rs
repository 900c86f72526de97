//! The allowed set of an image: the closure `pare compact` keeps (the same
//! [`plan`](super::plan::plan), not a second implementation), frozen beside
//! the image's profile for audit and enforce views.

use std::path::{Path, PathBuf};

use pare_fs::id::{ChainId, Digest};
use pare_fs::policy::{AllowedSet, allowed_path};
use pare_fs::profile::ImagePath;

use super::closure::Index;
use super::plan::{self, PlanError, Rules};
use super::run::CompactError;
use super::source;
use super::tree::ImageTree;
use crate::containerd::Client;

/// An allowed set frozen for an image and written beside its profile.
#[derive(Debug)]
pub struct Frozen {
    /// The image's chain.
    pub chain: ChainId,
    /// The allowed-set file written.
    pub path: PathBuf,
    /// The set.
    pub set: AllowedSet,
}

/// The allowed set of `tree` for the profile read from `profile_bytes`
/// (whose first-access paths are `paths`) under `rules`: exactly the paths
/// a compaction with the same profile and rules keeps.
pub fn allowed_set(
    tree: &ImageTree,
    index: &Index,
    profile_bytes: &[u8],
    paths: &[ImagePath],
    rules: &Rules,
) -> Result<AllowedSet, PlanError> {
    let plan = plan::plan(tree, index, paths, rules)?;
    Ok(AllowedSet::from_paths(
        Digest::sha256(profile_bytes),
        rules.clone(),
        plan.kept.into_iter().map(|k| k.path),
    ))
}

/// Freezes the allowed set of `image` now, from the profile recorded under
/// pare-snapshotter's `root` and `rules`, reading the layers of
/// `snapshotter`; writes it to `<profile>.allowed`.
pub async fn freeze(
    client: &Client,
    root: &Path,
    image: &str,
    snapshotter: &str,
    rules: &Rules,
    allow_incomplete: bool,
) -> Result<Frozen, CompactError> {
    let source = client.image(image).await?;
    let chain = source.top_chain_id.clone();
    let profile = source::read(root, None, image, &chain, allow_incomplete)?;
    let (tree, index) = source::open_tree(client, snapshotter, &chain).await?;
    let set = allowed_set(&tree, &index, &profile.bytes, &profile.paths(), rules)?;
    let path = allowed_path(&profile.path);
    set.write(&path)?;
    Ok(Frozen { chain, path, set })
}
