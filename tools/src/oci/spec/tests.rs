//! Unit tests of the oci-spec glue: byte-stable JSON whatever the hash map
//! order, platform key names, Docker media types, diff IDs and index entries.

use std::collections::HashMap;

use oci_spec::image::{ImageIndex, ImageManifest, ImageManifestBuilder, MediaType};
use pare_fs::id::Digest;
use serde_json::{Value, json};

use super::*;

fn manifest_with(annotations: HashMap<String, String>) -> ImageManifest {
    let config = descriptor(MediaType::ImageConfig, &Digest::sha256(b"config"), 6);
    let layer = descriptor(MediaType::ImageLayerGzip, &Digest::sha256(b"layer"), 5);
    let mut manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(vec![layer])
        .build()
        .unwrap();
    manifest.set_annotations(Some(annotations));
    manifest
}

#[test]
fn the_same_manifest_gives_the_same_bytes_whatever_the_annotation_order() {
    let pairs: Vec<(String, String)> = (0..64)
        .map(|i| (format!("org.example.key-{i:02}"), format!("value {i}")))
        .collect();
    let forward: HashMap<String, String> = pairs.iter().cloned().collect();
    let backward: HashMap<String, String> = pairs.iter().rev().cloned().collect();
    let (forward, backward) = (manifest_with(forward), manifest_with(backward));
    // Each HashMap has its own random seed: serialized as they are, the
    // two orders differ (64 keys in the same order by chance: 1 in 64!).
    assert_ne!(
        serde_json::to_vec(&forward).unwrap(),
        serde_json::to_vec(&backward).unwrap(),
        "the hash maps iterate in the same order: this test shows nothing"
    );
    let bytes = canonical_json(&forward, "manifest").unwrap();
    assert_eq!(bytes, canonical_json(&backward, "manifest").unwrap());
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.starts_with(r#"{"annotations":{"org.example.key-00":"value 0","org.example.key-01":"#),
        "{text}"
    );
}

#[test]
fn platforms_carry_the_spec_names_of_os_version_and_os_features() {
    let config = br#"{"architecture":"amd64","os":"windows","os.version":"10.0.17763.1",
                      "variant":"v3","config":{}}"#;
    let platform = platform_of(config).expect("platform");
    let entry = index_entry(
        descriptor(MediaType::ImageManifest, &Digest::sha256(b"m"), 1),
        "docker.io/x/app:v1",
        Some(platform),
    );
    let index_bytes = index_json(vec![entry.clone()]).unwrap();
    let value: Value = serde_json::from_slice(&index_bytes).unwrap();
    assert_eq!(
        value["manifests"][0]["platform"],
        json!({"architecture": "amd64", "os": "windows", "os.version": "10.0.17763.1", "variant": "v3"})
    );
    // Read back (as an existing index is), the names map to oci-spec's again.
    let read: ImageIndex = parse_json(&index_bytes, "index").unwrap();
    assert_eq!(read.manifests(), &vec![entry]);
    assert_eq!(index_json(read.manifests().clone()).unwrap(), index_bytes);
}

#[test]
fn a_config_without_architecture_or_os_has_no_platform() {
    assert!(platform_of(br#"{"os":"linux"}"#).is_none());
    assert!(platform_of(br#"{"architecture":"amd64"}"#).is_none());
    assert!(platform_of(b"not json").is_none());
}

#[test]
fn docker_manifests_and_lists_count_as_manifests_and_indexes() {
    for (media_type, manifest, index) in [
        ("application/vnd.oci.image.manifest.v1+json", true, false),
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            true,
            false,
        ),
        ("application/vnd.oci.image.index.v1+json", false, true),
        (
            "application/vnd.docker.distribution.manifest.list.v2+json",
            false,
            true,
        ),
        ("application/vnd.oci.image.config.v1+json", false, false),
        (
            "application/vnd.docker.distribution.manifest.v1+json",
            false,
            false,
        ),
    ] {
        let media_type = MediaType::from(media_type);
        assert_eq!(is_manifest(&media_type), manifest, "{media_type}");
        assert_eq!(is_index(&media_type), index, "{media_type}");
    }
}

#[test]
fn diff_ids_are_read_from_the_rootfs_and_must_be_sha256_digests() {
    let (a, b) = (Digest::sha256(b"a"), Digest::sha256(b"b"));
    let config = json!({"os": "linux", "rootfs": {"type": "layers", "diff_ids": [a, b]}});
    assert_eq!(
        diff_ids(&serde_json::to_vec(&config).unwrap()).unwrap(),
        vec![a, b]
    );
    for bad in [
        &br#"{"os":"linux"}"#[..],
        br#"{"rootfs":{"type":"layers","diff_ids":["sha256:short"]}}"#,
        br#"{"rootfs":{"type":"layers","diff_ids":"sha256:x"}}"#,
        b"[]",
    ] {
        let err = diff_ids(bad).expect_err("refused");
        assert!(
            matches!(err, OciError::BadConfig { .. }),
            "{}: {err}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn the_layout_file_names_its_version() {
    assert_eq!(layout_file().unwrap(), br#"{"imageLayoutVersion":"1.0.0"}"#);
}

#[test]
fn tags_of_references() {
    for (reference, tag) in [
        ("docker.io/library/app:slim", "slim"),
        ("localhost:5000/app", "latest"),
        ("localhost:5000/app:v2", "v2"),
        ("app", "latest"),
        ("app@sha256:abc", "app@sha256:abc"),
    ] {
        assert_eq!(tag_of(reference), tag, "{reference}");
    }
}
