//! `pare report`: compares two images in containerd (typically an image and
//! the one `pare compact` made from it) from their layer blobs: files, bytes,
//! layers and packages before and after, and what was removed, by directory
//! and by package, the hardening, and the misses recorded for each image
//! beside what was removed; as text, JSON or a self-contained HTML page.

mod compare;
pub mod hardening;
mod html;
pub mod merge;
pub mod misses;
pub mod packages;
mod text;

#[cfg(test)]
mod testing;

pub use compare::{
    DirectoryRow, ImageSummary, ImageView, PackageRow, Ratios, Removed, Report, TOP, compare, group,
};
pub use hardening::Hardening;
pub use html::html;
pub use misses::Misses;
pub use text::{human_bytes, text};

use crate::oci::digest_of;

use crate::containerd::{Client, ContainerdError};
use merge::{Compression, MergeError, Merged};

/// Why an image could not be read for the report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// containerd could not give the image or a blob.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    /// A layer descriptor lacks its digest or media type.
    #[error("image {image}: layer {index} has no {field} in the manifest")]
    Descriptor {
        /// The image.
        image: String,
        /// 0-based, bottom first.
        index: usize,
        /// The missing field.
        field: &'static str,
    },
    /// A layer could not be read.
    #[error("image {image}: layer {digest}: {source}")]
    Layer {
        /// The image.
        image: String,
        /// The layer blob's digest.
        digest: String,
        /// What went wrong.
        source: MergeError,
    },
}

/// Reads image `name` from containerd: its layers, applied bottom to top,
/// and its dpkg database.
pub async fn load(client: &Client, name: &str) -> Result<ImageView, ReportError> {
    let image = client.image(name).await?;
    let mut tree = Merged::new(&[packages::STATUS]);
    let (mut compressed, mut uncompressed) = (0u64, 0u64);
    for (index, layer) in image.layers.iter().enumerate() {
        let digest = digest_of(layer).map_err(|_| ReportError::Descriptor {
            image: name.to_string(),
            index,
            field: "digest",
        })?;
        let media_type = layer.media_type();
        let layer_error = |source| ReportError::Layer {
            image: name.to_string(),
            digest: digest.to_string(),
            source,
        };
        let compression = Compression::of_media_type(media_type).map_err(layer_error)?;
        let blob = client.read_blob(&digest).await?;
        compressed += blob.len() as u64;
        uncompressed += tree.apply_blob(&blob, compression).map_err(layer_error)?;
        tracing::debug!(image = name, layer = %digest, "layer read");
    }
    let packages = tree
        .content(packages::STATUS)
        .map(packages::installed)
        .unwrap_or_default();
    Ok(ImageView {
        summary: ImageSummary {
            name: name.to_string(),
            manifest_digest: image.manifest_digest.to_string(),
            layers: image.layers.len() as u64,
            compressed_bytes: compressed,
            uncompressed_bytes: uncompressed,
            files: tree.files(),
            bytes: tree.bytes(),
            packages: packages.len() as u64,
        },
        tree,
        packages,
    })
}
