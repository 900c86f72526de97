//! Reading an image: its record, manifest (this machine's platform when the
//! image is an index), config, layers and blobs from the content store.

use containerd_client::services::v1::{GetImageRequest, ReadContentRequest};
use containerd_client::tonic::Code;
use serde_json::Value;

use super::{Client, ContainerdError};
use crate::oci::{
    MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_MANIFEST_LIST, MEDIA_INDEX, MEDIA_MANIFEST, chain_id,
    check_digest, sha256_digest,
};

/// An image as stored in containerd: what compaction reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceImage {
    /// The image name (`docker.io/library/app:v1`).
    pub name: String,
    /// Digest of the image manifest (of this platform's manifest, when the
    /// image record points at an index).
    pub manifest_digest: String,
    /// The raw manifest JSON.
    pub manifest: Vec<u8>,
    /// The raw config JSON.
    pub config: Vec<u8>,
    /// Digest of `config`.
    pub config_digest: String,
    /// The manifest's layer descriptors, bottom first.
    pub layers: Vec<Value>,
    /// The config's `rootfs.diff_ids`, bottom first.
    pub diff_ids: Vec<String>,
    /// Chain ID of the top layer: the committed snapshot of the unpacked
    /// image, and the key of its profile.
    pub top_chain_id: String,
}

impl Client {
    /// The image `name`: its manifest (when the image is an index, the one for
    /// this machine's platform, `linux/<arch>`), config, layer descriptors,
    /// diff IDs and top chain ID.
    pub async fn image(&self, name: &str) -> Result<SourceImage, ContainerdError> {
        let request = self.request(
            GetImageRequest {
                name: name.to_string(),
            },
            None,
        );
        let record = match self.images().get(request).await {
            Ok(response) => response.into_inner().image,
            Err(status) if status.code() == Code::NotFound => None,
            Err(status) => return Err(self.grpc(format!("get image {name}"), status)),
        };
        let bad = |reason: String| ContainerdError::BadImage {
            name: name.to_string(),
            reason,
        };
        let Some(record) = record else {
            return Err(ContainerdError::ImageNotFound {
                name: name.to_string(),
                namespace: self.namespace.clone(),
            });
        };
        let target = record
            .target
            .ok_or_else(|| bad("the image record has no target".into()))?;
        let manifest_digest = match target.media_type.as_str() {
            MEDIA_MANIFEST | MEDIA_DOCKER_MANIFEST => target.digest,
            MEDIA_INDEX | MEDIA_DOCKER_MANIFEST_LIST => {
                let index = parse(&self.read_blob(&target.digest).await?, "index").map_err(bad)?;
                let (os, arch) = host_platform();
                select_manifest(&index, os, arch)
                    .ok_or_else(|| ContainerdError::NoPlatform {
                        name: name.to_string(),
                        platform: format!("{os}/{arch}"),
                    })?
                    .to_string()
            }
            other => return Err(bad(format!("unsupported target media type {other:?}"))),
        };
        let manifest = self.read_blob(&manifest_digest).await?;
        let parsed = parse(&manifest, "manifest").map_err(bad)?;
        let config_digest = parsed
            .pointer("/config/digest")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("the manifest has no config digest".into()))?
            .to_string();
        let layers = match parsed.get("layers") {
            Some(Value::Array(layers)) => layers.clone(),
            _ => return Err(bad("the manifest has no layers array".into())),
        };
        let config = self.read_blob(&config_digest).await?;
        let diff_ids = diff_ids(&parse(&config, "config").map_err(bad)?).map_err(bad)?;
        if diff_ids.len() != layers.len() {
            return Err(bad(format!(
                "the manifest lists {} layers but the config {} diff IDs",
                layers.len(),
                diff_ids.len()
            )));
        }
        Ok(SourceImage {
            name: name.to_string(),
            top_chain_id: chain_id(&diff_ids),
            manifest_digest,
            manifest,
            config,
            config_digest,
            layers,
            diff_ids,
        })
    }

    /// The whole blob `digest` from the content store, checked against its digest.
    pub async fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ContainerdError> {
        check_digest(digest).map_err(|_| ContainerdError::BadDigest {
            digest: digest.to_string(),
        })?;
        let not_found = || ContainerdError::BlobNotFound {
            digest: digest.to_string(),
            namespace: self.namespace.clone(),
        };
        let op = || format!("read blob {digest}");
        let request = self.request(
            ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            },
            None,
        );
        let mut stream = match self.content().read(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == Code::NotFound => return Err(not_found()),
            Err(status) => return Err(self.grpc(op(), status)),
        };
        let mut bytes = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => bytes.extend_from_slice(&chunk.data),
                Ok(None) => break,
                Err(status) if status.code() == Code::NotFound => return Err(not_found()),
                Err(status) => return Err(self.grpc(op(), status)),
            }
        }
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(ContainerdError::DigestMismatch {
                digest: digest.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }
}

fn parse(bytes: &[u8], what: &str) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("the {what} is not valid JSON: {e}"))
}

/// The config's `rootfs.diff_ids`, each checked to be a sha256 digest.
fn diff_ids(config: &Value) -> Result<Vec<String>, String> {
    let Some(Value::Array(ids)) = config.pointer("/rootfs/diff_ids") else {
        return Err("the config has no rootfs.diff_ids array".into());
    };
    ids.iter()
        .map(|id| match id.as_str() {
            Some(id) if check_digest(id).is_ok() => Ok(id.to_string()),
            _ => Err(format!("the config has a malformed diff ID {id}")),
        })
        .collect()
}

/// This machine's OCI platform: `linux` and the Go name of its architecture.
pub(super) fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    };
    ("linux", arch)
}

/// The digest of the manifest of `index` for `os`/`arch` (an arm64 manifest
/// without variant or with `v8` preferred over other variants).
pub(super) fn select_manifest<'a>(index: &'a Value, os: &str, arch: &str) -> Option<&'a str> {
    let manifests = index.get("manifests")?.as_array()?;
    let candidates: Vec<&Value> = manifests
        .iter()
        .filter(|m| {
            matches!(
                m.get("mediaType").and_then(Value::as_str),
                Some(MEDIA_MANIFEST | MEDIA_DOCKER_MANIFEST)
            ) && m.pointer("/platform/os").and_then(Value::as_str) == Some(os)
                && m.pointer("/platform/architecture").and_then(Value::as_str) == Some(arch)
        })
        .collect();
    let preferred = candidates.iter().find(|m| {
        matches!(
            m.pointer("/platform/variant").and_then(Value::as_str),
            None | Some("v8")
        )
    });
    preferred
        .or(candidates.first())
        .and_then(|m| m.get("digest")?.as_str())
}
