//! OCI image pieces written by `pare compact`: content-addressed blobs (in
//! memory, or spooled to a file for the layer), the one-layer image derived
//! from the source image, and the OCI image layout.

mod blob;
mod image;
mod layout;

use serde_json::Value;
use std::path::PathBuf;

pub use blob::{Blob, Content, FileBlob, Spool, sha256_digest};
pub use image::{NewImage, build_image};
pub use layout::{write_layout, write_layout_tar};

/// Media type of an OCI image manifest.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image config.
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an uncompressed OCI layer.
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of a gzip-compressed OCI layer.
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of a zstd-compressed OCI layer.
pub const MEDIA_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Media type of a Docker schema 2 manifest (read, never written).
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of a Docker manifest list (read, never written).
pub const MEDIA_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

/// Annotation naming the source image's manifest digest.
pub const ANNOTATION_SOURCE_IMAGE: &str = "io.pare.source-image";
/// Annotation naming the digest of the profile the image was compacted with.
pub const ANNOTATION_PROFILE: &str = "io.pare.profile";
/// Index annotation with the image's full name, read by `ctr images import`.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// Index annotation with the image's reference (its tag), per the OCI layout spec.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What went wrong building or writing an OCI image.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The source image config is not a JSON object.
    #[error("the source image config is not valid: {reason}")]
    BadConfig {
        /// Why it was rejected.
        reason: String,
    },
    /// A digest is not `sha256:` followed by 64 lowercase hex digits.
    #[error("{digest:?} is not a sha256 digest")]
    BadDigest {
        /// The rejected digest.
        digest: String,
    },
    /// JSON could not be written.
    #[error("cannot serialize {what}: {source}")]
    Json {
        /// The document being serialized.
        what: &'static str,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// The layout directory holds files but no `oci-layout`.
    #[error("{} is not empty and not an OCI image layout; refusing to write into it", dir.display())]
    NotALayout {
        /// The directory.
        dir: PathBuf,
    },
    /// The existing layout's `index.json` cannot be read as an index.
    #[error("{} is not a valid OCI index: {reason}", path.display())]
    BadIndex {
        /// The index file.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was attempted (`create`, `write`, `rename`, ...).
        op: &'static str,
        /// The path it was attempted on.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Checks that `digest` is `sha256:` and 64 lowercase hex digits (so that it
/// is safe as a file name and comparable as a string).
pub fn check_digest(digest: &str) -> Result<(), OciError> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(OciError::BadDigest {
            digest: digest.to_string(),
        })
    }
}

/// Chain ID of the top layer of a stack given its diff IDs bottom first (OCI
/// rule: `ChainID(L0) = DiffID(L0)`, `ChainID(Ln) = sha256(ChainID(Ln-1) + " "
/// + DiffID(Ln))`). containerd names committed layer snapshots by it. Empty
/// when `diff_ids` is.
pub fn chain_id(diff_ids: &[String]) -> String {
    let mut ids = diff_ids.iter();
    let Some(first) = ids.next() else {
        return String::new();
    };
    ids.fold(first.clone(), |chain, diff_id| {
        sha256_digest(format!("{chain} {diff_id}").as_bytes())
    })
}

/// Serializes `value` with every object's keys sorted, compactly: the same
/// value always gives the same bytes.
fn canonical_json(mut value: Value, what: &'static str) -> Result<Vec<u8>, OciError> {
    value.sort_all_objects();
    serde_json::to_vec(&value).map_err(|source| OciError::Json { what, source })
}

#[cfg(test)]
mod tests;
