//! The whole compaction behind one call: the image read from containerd with
//! its profile and layer directories, the plan, the layer, and the one-layer
//! image stored in containerd or written as an OCI image layout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use pare_fs::id::{ChainId, Digest};
use pare_fs::profile::ImagePath;

use super::dpkg;
use super::layer::{self, Compression, LayerError};
use super::plan::{self, PlanError, Rules};
use super::source;
use super::summary::{CompactSummary, KeptOf};
use crate::containerd::{Client, ContainerdError};
use crate::oci::{self, ANNOTATION_PROFILE, ANNOTATION_SOURCE_IMAGE, Content, OciError, Spool};

/// What to compact and where to put the result (the options of `pare compact`).
#[derive(Clone, Debug)]
pub struct CompactRequest {
    /// containerd's socket.
    pub address: PathBuf,
    /// containerd namespace.
    pub namespace: String,
    /// pare-snapshotter's state directory (where `profiles/` is).
    pub root: PathBuf,
    /// The profile journal to use instead of the one recorded for the image.
    pub profile: Option<PathBuf>,
    /// The image to minimize.
    pub image: String,
    /// Name of the new image (default: [`default_tag`] of `image`).
    pub tag: Option<String>,
    /// Write an OCI image layout to this directory instead of into containerd.
    pub oci_layout: Option<PathBuf>,
    /// What to add to and drop from the profile's closure.
    pub rules: Rules,
    /// Layer compression.
    pub compression: Compression,
    /// The snapshotter the image is unpacked with (its layer dirs are read).
    pub snapshotter: String,
    /// Compact even when the profile is incomplete.
    pub allow_incomplete: bool,
}

/// Progress of a compaction, for a progress bar (every method defaults to
/// nothing; `()` reports nothing).
pub trait Progress {
    /// Writing the layer starts: `total` bytes of file content to write.
    fn layer_started(&self, total: u64) {
        let _ = total;
    }
    /// `done` bytes of file content are written.
    fn layer_progress(&self, done: u64) {
        let _ = done;
    }
    /// The layer is written.
    fn layer_finished(&self) {}
}

impl Progress for () {}

/// Why a compaction failed.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// No `--tag` and the image is named by digest.
    #[error("{image} is a digest reference; give the new image a name with --tag")]
    DigestReference {
        /// The image reference.
        image: String,
    },
    /// Talking to containerd failed.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    /// The image's source-image annotation is not a digest.
    #[error(
        "{image}: the annotation {} is not a manifest digest: {reason}",
        crate::oci::ANNOTATION_SOURCE_IMAGE
    )]
    BadSourceAnnotation {
        /// The image.
        image: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The profile cannot be read.
    #[error(
        "no profile for {image} (chain {chain}) at {}: run the image under pare-snapshotter first, or pass --profile",
        path.display()
    )]
    NoProfile {
        /// The image.
        image: String,
        /// Its top layer's chain.
        chain: ChainId,
        /// Where the profile was looked for.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// No profile is recorded for the image on this node.
    #[error("no profile for {image} (chain {chain}) in {}", dir.display())]
    NotRecorded {
        /// The image.
        image: String,
        /// Its top layer's chain.
        chain: ChainId,
        /// The profiles directory.
        dir: PathBuf,
    },
    /// The profile is not a valid journal.
    #[error(transparent)]
    Profile(#[from] pare_fs::profile::ReadError),
    /// The profile lost records and `--allow-incomplete` was not given.
    #[error(
        "profile {} is incomplete (records were lost while it was written); pass --allow-incomplete to compact it anyway",
        path.display()
    )]
    Incomplete {
        /// The profile.
        path: PathBuf,
    },
    /// The profile was recorded for another image.
    #[error("{} is a profile of image chain {profile_chain}, not of {image} ({chain})", path.display())]
    ForeignProfile {
        /// The profile.
        path: PathBuf,
        /// The chain it names.
        profile_chain: String,
        /// The image being compacted.
        image: String,
        /// Its top layer's chain.
        chain: ChainId,
    },
    /// The layer directories cannot be opened as a stack.
    #[error(transparent)]
    Layers(#[from] pare_fs::layers::LayerError),
    /// Walking the image's layers failed.
    #[error("cannot read the image's layers")]
    Index(#[source] std::io::Error),
    /// The plan could not be made.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The layer's temporary file cannot be created.
    #[error("cannot create a temporary file in {}", dir.display())]
    Spool {
        /// Where.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The layer could not be written.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// The layer's temporary file could not be flushed.
    #[error("cannot write the layer in {}", dir.display())]
    FinishLayer {
        /// Where.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The image could not be built or its layout written.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// The allowed set could not be written.
    #[error(transparent)]
    Allowed(#[from] pare_fs::policy::PolicyError),
}

/// The default name of the minimized image: IMAGE's tag with `-pare`.
pub fn default_tag(image: &str) -> Result<String, CompactError> {
    if image.contains('@') {
        return Err(CompactError::DigestReference {
            image: image.to_string(),
        });
    }
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    Ok(if image[name_start..].contains(':') {
        format!("{image}-pare")
    } else {
        format!("{image}:latest-pare")
    })
}

/// Where the profile of `image` is recorded on this node (its top layer's
/// chain looked up through `client`, under pare-snapshotter's `root`).
pub async fn profile_of(
    client: &Client,
    root: &Path,
    image: &str,
) -> Result<PathBuf, CompactError> {
    let source = client.image(image).await?;
    let chain = source.top_chain_id.clone();
    source::recorded_profile(root, image, &chain)
}

/// Compacts `request.image` into a one-layer image holding what its profile
/// used (with the request's rules), stored in containerd or as an OCI image
/// layout. Reports the layer's progress to `progress`.
pub async fn compact(
    request: &CompactRequest,
    progress: &dyn Progress,
) -> Result<CompactSummary, CompactError> {
    let started = Instant::now();
    let tag = match &request.tag {
        Some(tag) => tag.clone(),
        None => default_tag(&request.image)?,
    };
    let client = Client::connect(&request.address, &request.namespace).await?;
    let source = client.image(&request.image).await?;
    let chain = source.top_chain_id.clone();
    let profile = source::read(
        &request.root,
        request.profile.as_deref(),
        &request.image,
        &chain,
        request.allow_incomplete,
    )?;

    let (tree, index) = source::open_tree(&client, &request.snapshotter, &chain).await?;
    let plan = plan::plan(&tree, &index, &profile.paths(), &request.rules)?;
    if !plan.missing.is_empty() {
        tracing::warn!(count = plan.missing.len(), first = %plan.missing[0], "profiled paths not in the image");
    }
    for name in &plan.unresolved {
        tracing::warn!(library = %name, "an --include-exec dependency is not in the image");
    }

    progress.layer_started(plan.after.bytes);
    let spool_dir = spool_dir(request.oci_layout.as_deref());
    let spool = Spool::new_in(&spool_dir).map_err(|source| CompactError::Spool {
        dir: spool_dir.clone(),
        source,
    })?;
    let (out, spool) = layer::write(
        &tree,
        &plan.kept,
        &plan.contents,
        request.compression,
        spool,
        &|done| progress.layer_progress(done),
    )?;
    progress.layer_finished();
    let layer_blob = spool
        .finish(request.compression.media_type())
        .map_err(|source| CompactError::FinishLayer {
            dir: spool_dir.clone(),
            source,
        })?;
    let annotations = BTreeMap::from([
        (
            ANNOTATION_SOURCE_IMAGE.to_string(),
            source.manifest_digest.to_string(),
        ),
        (
            ANNOTATION_PROFILE.to_string(),
            Digest::sha256(&profile.bytes).to_string(),
        ),
    ]);
    let image = oci::build_image(
        &source.config,
        layer_blob,
        &out.diff_id,
        &annotations,
        &format!("pare compact {} (profile {chain})", request.image),
    )?;
    match &request.oci_layout {
        Some(dir) => oci::write_layout(dir, &image, &tag)?,
        None => client.store_image(&tag, &image).await?,
    }

    let status = ImagePath::new(dpkg::STATUS.as_bytes().to_vec()).expect("valid constant");
    let (before, after) = (plan.before, plan.after);
    Ok(CompactSummary {
        source: request.image.clone(),
        image: tag,
        oci_layout: request.oci_layout.clone(),
        profile: profile.path,
        manifest_digest: image.manifest.digest.clone(),
        config_digest: image.config.digest.clone(),
        layer_digest: image.layer.digest().clone(),
        layer_diff_id: out.diff_id.clone(),
        layer_media_type: image.layer.media_type().to_string(),
        layer_compressed_bytes: image.layer.size(),
        layer_uncompressed_bytes: out.tar_size,
        files: KeptOf {
            kept: after.files,
            total: before.files,
        },
        file_bytes: KeptOf {
            kept: after.bytes,
            total: before.bytes,
        },
        // The plan replaces the dpkg status exactly when the image has one.
        packages: plan.contents.contains_key(&status).then_some(KeptOf {
            kept: after.packages,
            total: before.packages,
        }),
        duration_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Where the layer is spooled while it is written: beside the OCI layout
/// (so that it is linked into `blobs/`, not copied), else `$TMPDIR`.
fn spool_dir(oci_layout: Option<&Path>) -> PathBuf {
    oci_layout
        .and_then(Path::parent)
        .map(|parent| {
            if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            }
        })
        .filter(|parent| parent.is_dir())
        .map_or_else(std::env::temp_dir, Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tags_add_a_suffix() {
        let cases = [
            (
                "docker.io/library/python:3.11",
                "docker.io/library/python:3.11-pare",
            ),
            ("localhost:5000/app", "localhost:5000/app:latest-pare"),
            ("app", "app:latest-pare"),
        ];
        for (image, want) in cases {
            assert_eq!(default_tag(image).unwrap(), want);
        }
        assert_eq!(
            default_tag("app@sha256:00").unwrap_err().to_string(),
            "app@sha256:00 is a digest reference; give the new image a name with --tag"
        );
    }

    #[test]
    fn the_layer_spools_beside_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (None, std::env::temp_dir()),
            (Some(dir.path().join("layout")), dir.path().to_path_buf()),
            (Some(dir.path().join("absent/layout")), std::env::temp_dir()),
        ];
        for (layout, want) in cases {
            assert_eq!(spool_dir(layout.as_deref()), want, "{layout:?}");
        }
    }
}
