//! Unit tests of the containerd client's pure parts: view mounts, platform
//! selection and lease expiry times.

use std::path::PathBuf;

use containerd_client::types::Mount;
use oci_spec::image::ImageIndex;
use pare_fs::id::Digest;
use serde_json::json;

use super::image::select_manifest;
use super::lease::rfc3339;
use super::snapshots::layer_dirs_of;
use crate::oci::digest_of;

fn mount(kind: &str, source: &str, options: &[&str]) -> Mount {
    Mount {
        r#type: kind.into(),
        source: source.into(),
        target: String::new(),
        options: options.iter().map(|o| o.to_string()).collect(),
    }
}

fn paths(dirs: &[&str]) -> Vec<PathBuf> {
    dirs.iter().map(PathBuf::from).collect()
}

#[test]
fn overlay_view_gives_its_lowerdirs_topmost_first() {
    let mounts = [mount(
        "overlay",
        "overlay",
        &["index=off", "lowerdir=/s/3/fs:/s/2/fs:/s/1/fs"],
    )];
    assert_eq!(
        layer_dirs_of(&mounts),
        Ok(paths(&["/s/3/fs", "/s/2/fs", "/s/1/fs"]))
    );
}

#[test]
fn bind_view_gives_its_source() {
    for kind in ["bind", "rbind"] {
        let mounts = [mount(kind, "/s/1/fs", &["ro", "rbind"])];
        assert_eq!(layer_dirs_of(&mounts), Ok(paths(&["/s/1/fs"])), "{kind}");
    }
    let mounts = [mount("none", "/s/1/fs", &["ro", "rbind"])];
    assert_eq!(layer_dirs_of(&mounts), Ok(paths(&["/s/1/fs"])));
}

#[test]
fn other_views_are_refused() {
    let cases: Vec<Vec<Mount>> = vec![
        vec![],
        vec![mount("bind", "/a", &["ro"]), mount("bind", "/b", &["ro"])],
        vec![mount("overlay", "overlay", &["index=off"])],
        vec![mount(
            "overlay",
            "overlay",
            &["upperdir=/u", "workdir=/w", "lowerdir=/l"],
        )],
        vec![mount("overlay", "overlay", &["lowerdir=/a::/b"])],
        vec![mount("overlay", "overlay", &["lowerdir=a:/b"])],
        vec![mount("erofs", "/dev/loop0", &["ro"])],
        vec![mount("bind", "", &["ro", "rbind"])],
    ];
    for mounts in cases {
        assert!(layer_dirs_of(&mounts).is_err(), "{mounts:?}");
    }
}

#[test]
fn select_manifest_picks_the_platform() {
    let digest = |name: &str| Digest::sha256(name.as_bytes());
    let entry = |name: &str, media_type: &str, os: &str, arch: &str, variant: Option<&str>| {
        let mut platform = json!({"os": os, "architecture": arch});
        if let Some(variant) = variant {
            platform["variant"] = json!(variant);
        }
        json!({"mediaType": media_type, "digest": digest(name), "size": 1, "platform": platform})
    };
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let docker = "application/vnd.docker.distribution.manifest.v2+json";
    let index: ImageIndex = serde_json::from_value(json!({"schemaVersion": 2, "manifests": [
        entry("arm7", oci, "linux", "arm", Some("v7")),
        entry("arm64v9", oci, "linux", "arm64", Some("v9")),
        entry("arm64v8", oci, "linux", "arm64", Some("v8")),
        entry("amd64-nested-index", "application/vnd.oci.image.index.v1+json", "linux", "amd64", None),
        entry("amd64", docker, "linux", "amd64", None),
        entry("attest", oci, "unknown", "unknown", None),
        entry("s390x-windows", oci, "windows", "s390x", None),
    ]}))
    .unwrap();
    let selected = |os, arch| select_manifest(&index, os, arch).map(|m| digest_of(m).unwrap());
    assert_eq!(selected("linux", "amd64"), Some(digest("amd64")));
    assert_eq!(selected("linux", "arm64"), Some(digest("arm64v8")));
    assert_eq!(selected("linux", "arm"), Some(digest("arm7")));
    assert_eq!(selected("linux", "s390x"), None);
    let empty: ImageIndex =
        serde_json::from_value(json!({"schemaVersion": 2, "manifests": []})).unwrap();
    assert_eq!(select_manifest(&empty, "linux", "amd64"), None);
}

#[test]
fn rfc3339_formats_utc_times() {
    for (secs, text) in [
        (0, "1970-01-01T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (1_704_164_645, "2024-01-02T03:04:05Z"),
        (4_102_444_799, "2099-12-31T23:59:59Z"),
    ] {
        assert_eq!(rfc3339(secs), text, "{secs}");
    }
}
