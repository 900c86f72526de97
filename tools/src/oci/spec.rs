//! The OCI documents as `oci-spec` types, and what `oci-spec` does not give
//! by itself: bytes that depend on the content only ([`canonical_json`]),
//! pare's [`Digest`] in descriptors, Docker media types next to OCI ones, and
//! the spec's names of the platform's `os.version` and `os.features`.

use std::collections::HashMap;
use std::str::FromStr;

use oci_spec::image::{
    ANNOTATION_REF_NAME, Descriptor, ImageIndexBuilder, MediaType, OciLayoutBuilder, Platform,
    RootFs, ToDockerV2S2,
};
use pare_fs::id::{Digest, DigestError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ANNOTATION_IMAGE_NAME, OciError};

/// The OCI image layout version written into `oci-layout`.
pub const LAYOUT_VERSION: &str = "1.0.0";

/// Serializes `value` with every object's keys sorted, compactly: the same
/// value always gives the same bytes, whatever the order of the hash maps
/// (`oci-spec` keeps annotations and labels in `HashMap`s).
pub fn canonical_json<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, OciError> {
    let value = serde_json::to_value(value).map_err(|source| OciError::Json { what, source })?;
    sorted_json(value, what)
}

/// `value` serialized with every object's keys sorted.
fn sorted_json(mut value: Value, what: &'static str) -> Result<Vec<u8>, OciError> {
    value.sort_all_objects();
    serde_json::to_vec(&value).map_err(|source| OciError::Json { what, source })
}

/// An image index of `manifests`, as [`canonical_json`] writes it, with the
/// spec's names of a platform's `os.version` and `os.features`.
pub fn index_json(manifests: Vec<Descriptor>) -> Result<Vec<u8>, OciError> {
    let what = "the image index";
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .expect("the index has its required fields");
    let mut value =
        serde_json::to_value(&index).map_err(|source| OciError::Json { what, source })?;
    rename_platform_keys(&mut value, SPEC_NAMES.map(|(spec, ours)| (ours, spec)));
    sorted_json(value, what)
}

/// Parses `bytes` as an OCI document (a platform's `os.version` and
/// `os.features` read as `oci-spec` names them); `what` names it in the error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, OciError> {
    let invalid = |source| OciError::Invalid { what, source };
    let mut value: Value = serde_json::from_slice(bytes).map_err(invalid)?;
    rename_platform_keys(&mut value, SPEC_NAMES);
    serde_json::from_value(value).map_err(invalid)
}

/// The platform keys the OCI spec names with a dot and `oci-spec` 0.10's
/// `Platform` with an underscore: (spec, oci-spec).
const SPEC_NAMES: [(&str, &str); 2] =
    [("os.version", "os_version"), ("os.features", "os_features")];

/// Renames keys `from` to `to` in the `platform` objects of `value` (a
/// descriptor, or the descriptors of an index's `manifests`).
fn rename_platform_keys(value: &mut Value, renames: [(&str, &str); 2]) {
    let Value::Object(document) = value else {
        return;
    };
    let mut platforms: Vec<&mut Value> = Vec::new();
    for (key, value) in document.iter_mut() {
        match (key.as_str(), value) {
            ("platform", platform) => platforms.push(platform),
            ("manifests", Value::Array(manifests)) => {
                platforms.extend(manifests.iter_mut().filter_map(|m| m.get_mut("platform")))
            }
            _ => {}
        }
    }
    for platform in platforms {
        let Value::Object(platform) = platform else {
            continue;
        };
        for (from, to) in renames {
            if let Some(v) = platform.remove(from) {
                platform.insert(to.to_string(), v);
            }
        }
    }
}

/// The descriptor of `size` bytes of `media_type` with digest `digest`.
pub fn descriptor(media_type: MediaType, digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(media_type, size, oci_digest(digest))
}

/// `digest` as `oci-spec` spells it.
fn oci_digest(digest: &Digest) -> oci_spec::image::Digest {
    oci_spec::image::Digest::from_str(digest.as_str())
        .expect("a sha256 digest is a valid OCI digest")
}

/// The digest a descriptor points at, when it is a sha256 digest (the only
/// kind pare reads and names files by).
pub fn digest_of(descriptor: &Descriptor) -> Result<Digest, DigestError> {
    Digest::parse(descriptor.digest().as_ref())
}

/// True for an OCI image manifest or a Docker schema 2 manifest.
pub fn is_manifest(media_type: &MediaType) -> bool {
    is_or_docker(media_type, MediaType::ImageManifest)
}

/// True for an OCI image index or a Docker manifest list.
pub fn is_index(media_type: &MediaType) -> bool {
    is_or_docker(media_type, MediaType::ImageIndex)
}

/// True when `media_type` is `oci` or its Docker schema 2 equivalent.
fn is_or_docker(media_type: &MediaType, oci: MediaType) -> bool {
    match media_type {
        MediaType::Other(other) => oci.to_docker_v2s2().is_ok_and(|docker| docker == other),
        known => *known == oci,
    }
}

/// The config's `rootfs.diff_ids`, bottom first, each a sha256 digest. The
/// config is read for that only (it is never re-serialized from a parsed
/// form: see [`super::build_image`]).
pub fn diff_ids(config: &[u8]) -> Result<Vec<Digest>, OciError> {
    let bad = |reason: String| OciError::BadConfig { reason };
    let config: Value =
        serde_json::from_slice(config).map_err(|e| bad(format!("not JSON: {e}")))?;
    let rootfs = config
        .get("rootfs")
        .ok_or_else(|| bad("no rootfs".into()))?;
    let rootfs: RootFs = serde_json::from_value(rootfs.clone())
        .map_err(|e| bad(format!("rootfs is not valid: {e}")))?;
    rootfs
        .diff_ids()
        .iter()
        .map(|id| Digest::parse(id).map_err(|e| bad(format!("a diff ID: {e}"))))
        .collect()
}

/// The platform of an image config (`architecture`, `os`, `variant` and
/// `os.version` when set), as an index entry carries it; `None` when the
/// config names no architecture or no OS.
pub fn platform_of(config: &[u8]) -> Option<Platform> {
    let mut config: Value = serde_json::from_slice(config).ok()?;
    let config = config.as_object_mut()?;
    let mut platform = serde_json::Map::new();
    for (key, name) in [
        ("architecture", "architecture"),
        ("os", "os"),
        ("variant", "variant"),
        ("os.version", "os_version"),
    ] {
        if let Some(value) = config.remove(key).filter(Value::is_string) {
            platform.insert(name.to_string(), value);
        }
    }
    serde_json::from_value(Value::Object(platform)).ok()
}

/// The content of the `oci-layout` file.
pub fn layout_file() -> Result<Vec<u8>, OciError> {
    let layout = OciLayoutBuilder::default()
        .image_layout_version(LAYOUT_VERSION)
        .build()
        .expect("the layout has its one field");
    canonical_json(&layout, "oci-layout")
}

/// The tag of a reference (`latest` when it has none); a digest reference
/// (`name@sha256:...`) is kept whole.
pub fn tag_of(ref_name: &str) -> &str {
    if ref_name.contains('@') {
        return ref_name;
    }
    ref_name
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or("latest", |(_, tag)| tag)
}

/// The index entry of image `manifest` named `ref_name`: its descriptor with
/// `ref_name` as [`ANNOTATION_IMAGE_NAME`] (what `ctr images import` names
/// the image by), its tag as `org.opencontainers.image.ref.name` (what the
/// OCI layout spec and `skopeo copy oci:DIR:TAG` use) and `platform`.
pub fn index_entry(
    mut manifest: Descriptor,
    ref_name: &str,
    platform: Option<Platform>,
) -> Descriptor {
    manifest.set_annotations(Some(HashMap::from([
        (ANNOTATION_IMAGE_NAME.to_string(), ref_name.to_string()),
        (
            ANNOTATION_REF_NAME.to_string(),
            tag_of(ref_name).to_string(),
        ),
    ])));
    manifest.set_platform(platform);
    manifest
}

/// The image name an index entry carries ([`ANNOTATION_IMAGE_NAME`]).
pub fn image_name_of(entry: &Descriptor) -> Option<&str> {
    entry
        .annotations()
        .as_ref()?
        .get(ANNOTATION_IMAGE_NAME)
        .map(String::as_str)
}

#[cfg(test)]
mod tests;
