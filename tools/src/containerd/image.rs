//! Reading an image: its record, manifest (this machine's platform when the
//! image is an index), config, layers and blobs from the content store.

use containerd_client::services::v1::{GetImageRequest, ReadContentRequest};
use containerd_client::tonic::Code;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use pare_fs::id::{ChainId, Digest};

use super::{Client, ContainerdError};
use crate::oci::{diff_ids, digest_of, is_index, is_manifest, parse_json};

/// An image as stored in containerd: what compaction reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceImage {
    /// The image name (`docker.io/library/app:v1`).
    pub name: String,
    /// Digest of the image manifest (of this platform's manifest, when the
    /// image record points at an index).
    pub manifest_digest: Digest,
    /// The raw manifest JSON.
    pub manifest: Vec<u8>,
    /// The raw config JSON.
    pub config: Vec<u8>,
    /// Digest of `config`.
    pub config_digest: Digest,
    /// The manifest's layer descriptors, bottom first; each digest is a
    /// sha256 digest.
    pub layers: Vec<Descriptor>,
    /// The config's `rootfs.diff_ids`, bottom first.
    pub diff_ids: Vec<Digest>,
    /// Chain ID of the top layer: the committed snapshot of the unpacked
    /// image, and the key of its profile.
    pub top_chain_id: ChainId,
}

impl SourceImage {
    /// The manifest annotation `key`, if the manifest has it.
    pub fn annotation(&self, key: &str) -> Option<String> {
        let parsed: ImageManifest = parse_json(&self.manifest, "manifest").ok()?;
        parsed.annotations().as_ref()?.get(key).cloned()
    }
}

impl Client {
    /// The image `name`: its manifest (when the image is an index, the one for
    /// this machine's platform, `linux/<arch>`), config, layer descriptors,
    /// diff IDs and top chain ID. An image without layers is refused.
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
        let target_digest = Digest::parse(&target.digest)
            .map_err(|e| bad(format!("the image record's target: {e}")))?;
        let media_type = MediaType::from(target.media_type.as_str());
        let manifest_digest = if is_manifest(&media_type) {
            target_digest
        } else if is_index(&media_type) {
            let index: ImageIndex = parse_json(&self.read_blob(&target_digest).await?, "index")
                .map_err(|e| bad(e.to_string()))?;
            let (os, arch) = host_platform();
            let entry =
                select_manifest(&index, os, arch).ok_or_else(|| ContainerdError::NoPlatform {
                    name: name.to_string(),
                    platform: format!("{os}/{arch}"),
                })?;
            digest_of(entry).map_err(|e| bad(format!("the index's manifest: {e}")))?
        } else {
            return Err(bad(format!(
                "unsupported target media type {:?}",
                target.media_type
            )));
        };
        self.image_of_manifest(name, manifest_digest).await
    }

    /// The image whose manifest is `manifest_digest` (in the content store
    /// whether or not an image record names it); `name` names it in errors
    /// and in the result.
    pub async fn image_of_manifest(
        &self,
        name: &str,
        manifest_digest: Digest,
    ) -> Result<SourceImage, ContainerdError> {
        let bad = |reason: String| ContainerdError::BadImage {
            name: name.to_string(),
            reason,
        };
        let manifest = self.read_blob(&manifest_digest).await?;
        let parsed: ImageManifest =
            parse_json(&manifest, "manifest").map_err(|e| bad(e.to_string()))?;
        let config_digest =
            digest_of(parsed.config()).map_err(|e| bad(format!("the manifest's config: {e}")))?;
        let layers = parsed.layers().clone();
        for layer in &layers {
            digest_of(layer).map_err(|e| bad(format!("the manifest's layer: {e}")))?;
        }
        let config = self.read_blob(&config_digest).await?;
        let diff_ids = diff_ids(&config).map_err(|e| bad(e.to_string()))?;
        if diff_ids.len() != layers.len() {
            return Err(bad(format!(
                "the manifest lists {} layers but the config {} diff IDs",
                layers.len(),
                diff_ids.len()
            )));
        }
        let top_chain_id =
            ChainId::of(&diff_ids).ok_or_else(|| bad("the image has no layers".into()))?;
        Ok(SourceImage {
            name: name.to_string(),
            top_chain_id,
            manifest_digest,
            manifest,
            config,
            config_digest,
            layers,
            diff_ids,
        })
    }

    /// The whole blob `digest` from the content store, checked against its digest.
    pub async fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, ContainerdError> {
        let not_found = || ContainerdError::BlobNotFound {
            digest: digest.clone(),
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
        let actual = Digest::sha256(&bytes);
        if &actual != digest {
            return Err(ContainerdError::DigestMismatch {
                digest: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }
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

/// The entry of `index` for the image manifest of `os`/`arch` (an arm64
/// manifest without variant or with `v8` preferred over other variants).
pub(super) fn select_manifest<'a>(
    index: &'a ImageIndex,
    os: &str,
    arch: &str,
) -> Option<&'a Descriptor> {
    let candidates: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|m| {
            is_manifest(m.media_type())
                && m.platform().as_ref().is_some_and(|p| {
                    p.os().to_string() == os && p.architecture().to_string() == arch
                })
        })
        .collect();
    let preferred = candidates.iter().find(|m| {
        m.platform()
            .as_ref()
            .is_none_or(|p| matches!(p.variant().as_deref(), None | Some("v8")))
    });
    preferred.or(candidates.first()).copied()
}
