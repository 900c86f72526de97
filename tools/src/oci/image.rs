//! The one-layer image: the source image's config carried over onto a new
//! layer, and its manifest. No timestamps are added, so the same inputs give
//! the same bytes and digests.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{Blob, Content, MEDIA_CONFIG, MEDIA_MANIFEST, OciError, canonical_json, check_digest};

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
    pub fn descriptor(&self) -> Value {
        self.manifest.descriptor()
    }

    /// The platform of the config (`architecture`, `os`, `variant` when set),
    /// as an index entry carries it.
    pub fn platform(&self) -> Value {
        let config: Value = serde_json::from_slice(&self.config.bytes).unwrap_or(Value::Null);
        let mut platform = Map::new();
        for key in ["architecture", "os", "variant", "os.version"] {
            if let Some(value) = config.get(key).filter(|v| v.is_string()) {
                platform.insert(key.to_string(), value.clone());
            }
        }
        Value::Object(platform)
    }
}

/// A one-layer image derived from `original_config`, the raw config JSON of
/// the source image.
///
/// Everything in the config carries over (`config.Entrypoint`, `Cmd`, `Env`,
/// `WorkingDir`, `User`, `ExposedPorts`, `Volumes`, `Labels`, `StopSignal`,
/// `architecture`, `os`, `variant`, ...) except `rootfs.diff_ids`, which
/// becomes `[diff_id]` (the sha256 of the uncompressed `layer`), and
/// `history`: the original entries, each marked `"empty_layer": true`, then
/// `{"created_by": history_text, "comment": HISTORY_COMMENT}`. The manifest
/// lists the config and `layer` and carries `annotations` (for example
/// [`super::ANNOTATION_SOURCE_IMAGE`] and [`super::ANNOTATION_PROFILE`]; left
/// out when empty). JSON keys are sorted: the same inputs give the same digests.
pub fn build_image<L: Content>(
    original_config: &[u8],
    layer: L,
    diff_id: &str,
    annotations: &BTreeMap<String, String>,
    history_text: &str,
) -> Result<NewImage<L>, OciError> {
    check_digest(diff_id)?;
    let config = derive_config(original_config, diff_id, history_text)?;
    let config = Blob::new(MEDIA_CONFIG, canonical_json(config, "the image config")?);
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    });
    if !annotations.is_empty() {
        manifest["annotations"] = json!(annotations);
    }
    let manifest = Blob::new(
        MEDIA_MANIFEST,
        canonical_json(manifest, "the image manifest")?,
    );
    Ok(NewImage {
        config,
        layer,
        manifest,
    })
}

fn derive_config(original: &[u8], diff_id: &str, history_text: &str) -> Result<Value, OciError> {
    let bad = |reason: String| OciError::BadConfig { reason };
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
    history.push(json!({"created_by": history_text, "comment": HISTORY_COMMENT}));
    config.insert("history".into(), Value::Array(history));
    config.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": [diff_id]}),
    );
    Ok(Value::Object(config))
}
