//! Unit tests of the containerd client's pure parts: view mounts, platform
//! selection and lease expiry times.

use std::path::PathBuf;

use containerd_client::types::Mount;
use serde_json::json;

use super::image::select_manifest;
use super::lease::rfc3339;
use super::snapshots::layer_dirs_of;

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
    let entry = |digest: &str, arch: &str, variant: Option<&str>| {
        let mut platform = json!({"os": "linux", "architecture": arch});
        if let Some(variant) = variant {
            platform["variant"] = json!(variant);
        }
        json!({"mediaType": crate::oci::MEDIA_MANIFEST, "digest": digest, "size": 1, "platform": platform})
    };
    let index = json!({"manifests": [
        entry("sha256:arm7", "arm", Some("v7")),
        entry("sha256:arm64v9", "arm64", Some("v9")),
        entry("sha256:arm64v8", "arm64", Some("v8")),
        entry("sha256:amd64", "amd64", None),
        {"mediaType": crate::oci::MEDIA_MANIFEST, "digest": "sha256:attest", "size": 1,
         "platform": {"os": "unknown", "architecture": "unknown"}},
    ]});
    assert_eq!(
        select_manifest(&index, "linux", "amd64"),
        Some("sha256:amd64")
    );
    assert_eq!(
        select_manifest(&index, "linux", "arm64"),
        Some("sha256:arm64v8")
    );
    assert_eq!(select_manifest(&index, "linux", "arm"), Some("sha256:arm7"));
    assert_eq!(select_manifest(&index, "linux", "s390x"), None);
    assert_eq!(select_manifest(&json!({}), "linux", "amd64"), None);
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
