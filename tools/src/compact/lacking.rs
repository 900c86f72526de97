//! What a minimized image lacks: the names its workload looked up while it
//! ran under pare (the `absent` names of its profile) that its source image
//! has. The minimized image's manifest names its source
//! ([`crate::oci::ANNOTATION_SOURCE_IMAGE`]).

use pare_fs::id::Digest;
use pare_fs::layers::LayerStack;
use pare_fs::policy::Miss;
use pare_fs::profile::{AccessKind, Profile};

use super::CompactError;
use super::tree::ImageTree;
use crate::containerd::{Client, SourceImage};
use crate::oci::ANNOTATION_SOURCE_IMAGE;

/// The names a minimized image lacks, found in its source image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lacking {
    /// The source image's manifest digest.
    pub source: Digest,
    /// One `absent` miss per name, in first-seen order. A profile journals a
    /// name once, so `count` is 1 and no processes are known.
    pub misses: Vec<Miss>,
}

/// The manifest digest of the image `image` was compacted from, when pare
/// compacted it.
pub fn source_of(image: &SourceImage) -> Result<Option<Digest>, CompactError> {
    let Some(value) = image.annotation(ANNOTATION_SOURCE_IMAGE) else {
        return Ok(None);
    };
    Digest::parse(&value)
        .map(Some)
        .map_err(|e| CompactError::BadSourceAnnotation {
            image: image.name.clone(),
            reason: e.to_string(),
        })
}

/// The absent names of `profile` (the minimized image's) that exist in the
/// source image `source`, unpacked by `snapshotter`.
pub async fn lacking(
    client: &Client,
    snapshotter: &str,
    source: Digest,
    profile: &Profile,
) -> Result<Lacking, CompactError> {
    let image = client
        .image_of_manifest(source.as_ref(), source.clone())
        .await?;
    let dirs = client.layer_dirs(snapshotter, &image.top_chain_id).await?;
    let tree = ImageTree::new(LayerStack::open(dirs)?);
    let created = profile.header.created_unix_ns;
    let mut misses = Vec::new();
    for entry in &profile.absent {
        let found = tree
            .entry(&entry.path)
            .map_err(CompactError::Index)?
            .is_some();
        if found {
            misses.push(Miss {
                path: entry.path.clone(),
                kind: AccessKind::Absent,
                first_seen_ns: created.saturating_add(entry.first_access_ns),
                count: 1,
                processes: Vec::new(),
            });
        }
    }
    Ok(Lacking { source, misses })
}
