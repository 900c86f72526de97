//! The one-layer image: the source image's config carried over onto a new
//! layer, and its manifest. No timestamps are added, so the same inputs give
//! the same bytes and digests.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{
    Descriptor, HistoryBuilder, ImageManifestBuilder, MediaType, Platform, RootFs,
};
use pare_fs::id::Digest;
use serde_json::Value;

use super::{Blob, Content, OciError, canonical_json, platform_of};

/// Comment of the history entry that `pare compact` adds.
pub const HISTORY_COMMENT: &str = "pare compact: one layer holding what the workload uses";

/// A built image: its three blobs. The layer is any [`Content`]: a
/// [`super::FileBlob`] for `pare compact`'s layer (never held in memory), a
/// [`Blob`] for small ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewImage<L = Blob> {
    /// The image config (JSON).
    pub config: Blob,
    /// The single layer.
    pub layer: L,
    /// The image manifest (JSON) pointing at `config` and `layer`.
    pub manifest: Blob,
}

impl<L: Content> NewImage<L> {
    /// The manifest's descriptor, as an index or image record points at it.
    pub fn descriptor(&self) -> Descriptor {
        self.manifest.descriptor()
    }

    /// The platform of the config, as an index entry carries it.
    pub fn platform(&self) -> Option<Platform> {
        platform_of(&self.config.bytes)
    }
}

/// A one-layer image derived from `original_config`, the raw config JSON of
/// the source image.
///
/// The config is not parsed into a model and written back: its JSON carries
/// over as it is, every field known or not (`config.Entrypoint`, `Cmd`,
/// `Env`, `WorkingDir`, `User`, `ExposedPorts`, `Volumes`, `Labels`,
/// `StopSignal`, Docker's `Healthcheck`, `Shell`, `OnBuild`, `ArgsEscaped`,
/// `architecture`, `os`, `variant`, ...), except `rootfs`, which becomes
/// `{"type": "layers", "diff_ids": [diff_id]}` (`diff_id` is the digest of
/// the uncompressed `layer`), and `history`: the original entries, each
/// marked `"empty_layer": true`, then `{"created_by": history_text,
/// "comment": HISTORY_COMMENT}`. The manifest lists the config and `layer`
/// and carries `annotations` (for example [`super::ANNOTATION_SOURCE_IMAGE`]
/// and [`super::ANNOTATION_PROFILE`]; left out when empty). JSON keys are
/// sorted: the same inputs give the same bytes and digests.
pub fn build_image<L: Content>(
    original_config: &[u8],
    layer: L,
    diff_id: &Digest,
    annotations: &BTreeMap<String, String>,
    history_text: &str,
) -> Result<NewImage<L>, OciError> {
    let config = derive_config(original_config, diff_id, history_text)?;
    let config = Blob::new(
        MediaType::ImageConfig,
        canonical_json(&config, "the image config")?,
    );
    let mut manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.descriptor())
        .layers(vec![layer.descriptor()])
        .build()
        .expect("the manifest has its required fields");
    if !annotations.is_empty() {
        let annotations: HashMap<String, String> = annotations.clone().into_iter().collect();
        manifest.set_annotations(Some(annotations));
    }
    let manifest = Blob::new(
        MediaType::ImageManifest,
        canonical_json(&manifest, "the image manifest")?,
    );
    Ok(NewImage {
        config,
        layer,
        manifest,
    })
}

/// `original` with the rootfs and history of the one-layer image; every
/// other field untouched.
fn derive_config(original: &[u8], diff_id: &Digest, history_text: &str) -> Result<Value, OciError> {
    let bad = |reason: String| OciError::BadConfig { reason };
    let json = |what| move |source| OciError::Json { what, source };
    let value: Value =
        serde_json::from_slice(original).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Value::Object(mut config) = value else {
        return Err(bad("not a JSON object".into()));
    };
    let mut history = match config.remove("history") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(bad("`history` is not an array".into())),
    };
    for entry in &mut history {
        let Value::Object(entry) = entry else {
            return Err(bad("a `history` entry is not an object".into()));
        };
        entry.insert("empty_layer".into(), Value::Bool(true));
    }
    let added = HistoryBuilder::default()
        .created_by(history_text)
        .comment(HISTORY_COMMENT)
        .build()
        .expect("a history entry has no required fields");
    history.push(serde_json::to_value(added).map_err(json("a history entry"))?);
    config.insert("history".into(), Value::Array(history));
    let mut rootfs = RootFs::default();
    rootfs.set_diff_ids(vec![diff_id.to_string()]);
    config.insert(
        "rootfs".into(),
        serde_json::to_value(rootfs).map_err(json("the rootfs"))?,
    );
    Ok(Value::Object(config))
}
