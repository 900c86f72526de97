//! The size of an image in a containerd's content store, from its manifest:
//! compressed (the layer blobs a pull downloads) and uncompressed (the layer
//! tars an unpack applies).

use anyhow::{Context, bail, ensure};
use pare_tests::containerd::Ctr;
use serde_json::Value;

/// What a pull of an image moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSize {
    /// Layers in the manifest.
    pub layers: usize,
    /// Sum of the layer blob sizes, bytes.
    pub compressed: u64,
    /// Sum of the layer tar sizes, bytes.
    pub uncompressed: u64,
}

/// Reads `image`'s manifest (the linux/amd64 one of an index) and layers
/// through `ctr content get`.
pub fn image_size(ctr: &Ctr, image: &str) -> anyhow::Result<ImageSize> {
    let listing = ctr.ctr(&["images", "ls"])?.stdout;
    let listing = String::from_utf8_lossy(&listing);
    let target = listing
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&image))
        .and_then(|cols| cols.get(2).map(|d| d.to_string()))
        .with_context(|| format!("{image} is not in containerd"))?;
    let mut manifest = content_json(ctr, &target)?;
    if let Some(manifests) = manifest.get("manifests").and_then(Value::as_array) {
        let chosen = manifests
            .iter()
            .find(|m| {
                m["platform"]["architecture"] == std::env::consts::ARCH.replace("x86_64", "amd64")
            })
            .or_else(|| manifests.first())
            .with_context(|| format!("the index of {image} lists no manifest"))?;
        let digest = chosen["digest"].as_str().context("manifest digest")?;
        manifest = content_json(ctr, digest)?;
    }
    let layers = manifest["layers"]
        .as_array()
        .with_context(|| format!("the manifest of {image} has no layers"))?;
    let mut size = ImageSize {
        layers: layers.len(),
        compressed: 0,
        uncompressed: 0,
    };
    for layer in layers {
        let digest = layer["digest"].as_str().context("layer digest")?;
        let media = layer["mediaType"].as_str().context("layer media type")?;
        let blob = ctr.ctr(&["content", "get", digest])?.stdout;
        ensure!(
            Some(blob.len() as u64) == layer["size"].as_u64(),
            "layer {digest} of {image} is not the size its manifest says"
        );
        size.compressed += blob.len() as u64;
        size.uncompressed += tar_size(media, &blob).with_context(|| format!("layer {digest}"))?;
    }
    Ok(size)
}

fn content_json(ctr: &Ctr, digest: &str) -> anyhow::Result<Value> {
    let bytes = ctr.ctr(&["content", "get", digest])?.stdout;
    serde_json::from_slice(&bytes).with_context(|| format!("{digest} is not JSON"))
}

/// The size of the tar inside a layer blob of media type `media`.
fn tar_size(media: &str, blob: &[u8]) -> anyhow::Result<u64> {
    if media.ends_with("gzip") {
        let mut tar = flate2::read::GzDecoder::new(blob);
        std::io::copy(&mut tar, &mut std::io::sink()).context("cannot gunzip")
    } else if media.ends_with("tar") {
        Ok(blob.len() as u64)
    } else {
        bail!("layer media type {media} is not read here (gzip or plain tar only)")
    }
}
