//! OCI image pieces written by `pare compact`: content-addressed blobs (in
//! memory, or spooled to a file for the layer), the one-layer image derived
//! from the source image, and the OCI image layout.

mod blob;
mod image;
mod layout;
mod spec;

use std::path::PathBuf;

pub use blob::{Blob, Content, FileBlob, Spool};
pub use image::{HISTORY_COMMENT, NewImage, build_image};
pub use layout::{write_layout, write_layout_tar};
pub use spec::{
    LAYOUT_VERSION, canonical_json, descriptor, diff_ids, digest_of, image_name_of, index_entry,
    index_json, is_index, is_manifest, layout_file, parse_json, platform_of, tag_of,
};

/// Annotation naming the source image's manifest digest.
pub const ANNOTATION_SOURCE_IMAGE: &str = "io.pare.source-image";
/// Annotation naming the digest of the profile the image was compacted with.
pub const ANNOTATION_PROFILE: &str = "io.pare.profile";
/// Index annotation with the image's full name, read by `ctr images import`.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// What went wrong building or writing an OCI image.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The image config is not a JSON object, or its `rootfs` or
    /// `history` is malformed.
    #[error("the source image config is not valid: {reason}")]
    BadConfig {
        /// Why it was rejected.
        reason: String,
    },
    /// JSON could not be written.
    #[error("cannot serialize {what}: {source}")]
    Json {
        /// The document being serialized.
        what: &'static str,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// A manifest, index or other OCI document cannot be read as one.
    #[error("the {what} is not valid: {source}")]
    Invalid {
        /// The document being read.
        what: &'static str,
        /// The parser's error.
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

#[cfg(test)]
mod tests;
