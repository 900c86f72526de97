//! Tests of the merged view on small tars: whiteouts, opaque directories,
//! hardlinks, replaced files and compressed blobs.

use std::io::Write;

use tar::{EntryType, Header};

use super::*;
use crate::report::testing::Tar;

fn merge(layers: Vec<Vec<u8>>) -> Merged {
    let mut merged = Merged::new(&["/var/lib/dpkg/status"]);
    for layer in layers {
        let size = merged.apply_tar(layer.as_slice()).unwrap();
        assert_eq!(size, layer.len() as u64, "the whole tar is counted");
    }
    merged
}

fn paths(merged: &Merged) -> Vec<String> {
    merged.entries().map(|(p, _)| p).collect()
}

#[test]
fn a_whiteout_deletes_a_lower_file_and_a_lower_subtree() {
    let merged = merge(vec![
        Tar::new()
            .dir("etc")
            .file("etc/a", b"aaaa")
            .file("etc/b", b"bb")
            .dir("opt/app")
            .file("opt/app/x", b"x")
            .bytes(),
        Tar::new()
            .file("etc/.wh.a", b"")
            .file("opt/.wh.app", b"")
            .bytes(),
    ]);
    assert_eq!(paths(&merged), ["/etc", "/etc/b", "/opt"]);
    assert_eq!((merged.files(), merged.bytes()), (1, 2));
}

#[test]
fn an_opaque_directory_hides_lower_content_but_not_its_own_layer() {
    let merged = merge(vec![
        Tar::new()
            .dir("data")
            .file("data/old", b"old")
            .dir("data/sub")
            .file("data/sub/deep", b"deep")
            .file("keep", b"k")
            .bytes(),
        // The marker after the layer's own entry: it must survive.
        Tar::new()
            .dir("data")
            .file("data/new", b"new!")
            .file("data/.wh..wh..opq", b"")
            .bytes(),
    ]);
    assert_eq!(paths(&merged), ["/data", "/data/new", "/keep"]);
    assert_eq!(merged.bytes(), 5);
}

#[test]
fn a_whiteout_does_not_hide_an_entry_of_its_own_layer() {
    let merged = merge(vec![
        Tar::new().file("f", b"lower").bytes(),
        Tar::new().file("f", b"upper!").file(".wh.f", b"").bytes(),
    ]);
    let upper = Node::File {
        inode: 2,
        size: 6,
        mode: 0o644,
        capability: false,
    };
    assert_eq!(merged.get("/f"), Some(&upper));
}

#[test]
fn hardlinks_count_their_bytes_once() {
    let merged = merge(vec![
        Tar::new()
            .dir("bin")
            .file("bin/tool", b"0123456789")
            .hardlink("bin/alias", "bin/tool")
            .hardlink("bin/again", "./bin/tool")
            .symlink("bin/sym", "tool")
            .bytes(),
    ]);
    assert_eq!((merged.files(), merged.bytes()), (4, 10));
    // Deleting one name keeps the content counted by the others.
    let merged = merge(vec![
        Tar::new()
            .file("tool", b"0123456789")
            .hardlink("alias", "tool")
            .bytes(),
        Tar::new().file(".wh.tool", b"").bytes(),
    ]);
    assert_eq!((merged.files(), merged.bytes()), (1, 10));
}

#[test]
fn a_replaced_file_counts_its_new_size_and_a_file_over_a_dir_hides_it() {
    let merged = merge(vec![
        Tar::new()
            .file("etc/conf", b"long content")
            .dir("var/cache")
            .file("var/cache/blob", b"blob")
            .bytes(),
        Tar::new()
            .file("etc/conf", b"short")
            .file("var/cache", b"now a file")
            .bytes(),
    ]);
    assert_eq!(paths(&merged), ["/etc", "/etc/conf", "/var", "/var/cache"]);
    assert_eq!((merged.files(), merged.bytes()), (2, 15));
}

#[test]
fn the_captured_file_is_the_topmost_version() {
    let merged = merge(vec![
        Tar::new().file("var/lib/dpkg/status", b"one").bytes(),
        Tar::new().file("var/lib/dpkg/status", b"two").bytes(),
    ]);
    assert_eq!(merged.content("/var/lib/dpkg/status"), Some(&b"two"[..]));
    let deleted = merge(vec![
        Tar::new().file("var/lib/dpkg/status", b"one").bytes(),
        Tar::new().file("var/lib/dpkg/.wh.status", b"").bytes(),
    ]);
    assert_eq!(deleted.content("/var/lib/dpkg/status"), None);
}

#[test]
fn bad_entries_are_errors() {
    let mut merged = Merged::new(&[]);
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_size(0);
    // `append_data` refuses `..`; write the name directly.
    header.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &b""[..]).unwrap();
    let tar = builder.into_inner().unwrap();
    assert!(matches!(
        merged.apply_tar(tar.as_slice()),
        Err(MergeError::BadPath { .. })
    ));
    let dangling = Tar::new().hardlink("a", "missing").bytes();
    assert!(matches!(
        merged.apply_tar(dangling.as_slice()),
        Err(MergeError::Hardlink { .. })
    ));
    assert!(
        Merged::new(&[])
            .apply_blob(b"not gzip at all", Compression::Gzip)
            .is_err()
    );
}

#[test]
fn blobs_are_decompressed_by_media_type() {
    let tar = Tar::new().file("a", b"hello").bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(tar.as_slice(), 1).unwrap();
    let cases = [
        (MediaType::ImageLayer, &tar),
        (MediaType::ImageLayerGzip, &gz),
        (
            MediaType::from("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            &gz,
        ),
        (MediaType::ImageLayerZstd, &zst),
        (
            MediaType::from("application/vnd.oci.image.layer.v1.tar+zstd; x=y"),
            &zst,
        ),
    ];
    for (media_type, blob) in cases {
        let mut merged = Merged::new(&[]);
        let compression = Compression::of_media_type(&media_type).unwrap();
        assert_eq!(
            merged.apply_blob(blob, compression).unwrap(),
            tar.len() as u64,
            "{media_type}"
        );
        assert_eq!(merged.bytes(), 5, "{media_type}");
    }
    for unsupported in [
        MediaType::from("application/octet-stream"),
        MediaType::ImageConfig,
    ] {
        assert!(
            Compression::of_media_type(&unsupported).is_err(),
            "{unsupported}"
        );
    }
}

#[test]
fn modes_capabilities_and_link_targets_are_kept_and_hardlinks_share_them() {
    let merged = merge(vec![
        Tar::new()
            .file_mode("usr/bin/su", b"su", 0o4755)
            .hardlink("usr/bin/su2", "usr/bin/su")
            .capability("usr/bin/ping", b"ping")
            .symlink("usr/bin/sh", "dash")
            .bytes(),
    ]);
    let su = Node::File {
        inode: 1,
        size: 2,
        mode: 0o4755,
        capability: false,
    };
    let ping = Node::File {
        inode: 2,
        size: 4,
        mode: 0o755,
        capability: true,
    };
    let sh = Node::Symlink {
        target: "dash".into(),
    };
    assert_eq!(merged.get("/usr/bin/su"), Some(&su));
    assert_eq!(merged.get("/usr/bin/su2"), Some(&su));
    assert_eq!(merged.get("/usr/bin/ping"), Some(&ping));
    assert_eq!(merged.get("/usr/bin/sh"), Some(&sh));
}

#[test]
fn paths_resolve_through_symlinks_inside_the_image() {
    let merged = merge(vec![
        Tar::new()
            .dir("usr/bin")
            .symlink("bin", "usr/bin")
            .file_mode("usr/bin/dash", b"dash", 0o755)
            .symlink("usr/bin/sh", "dash")
            .symlink("etc/alternatives/sh", "/bin/sh")
            .symlink("usr/local/bin/sh", "../../bin/./sh")
            .symlink("up", "../../../usr/bin/dash")
            .symlink("loop/a", "b")
            .symlink("loop/b", "a")
            .symlink("dangling", "usr/bin/bash")
            .symlink("through-a-file", "usr/bin/dash/x")
            .bytes(),
    ]);
    let dash = |path: &str| {
        merged
            .resolve(path)
            .map(|(at, node)| (at, matches!(node, Node::File { .. })))
    };
    for path in [
        "/usr/bin/dash",
        "/bin/dash",
        "/bin/sh",
        "/etc/alternatives/sh",
        "/usr/local/bin/sh",
        "up",
        "/usr/../bin/sh",
    ] {
        assert_eq!(dash(path), Some(("/usr/bin/dash".into(), true)), "{path}");
    }
    assert_eq!(
        merged.resolve("/bin"),
        Some(("/usr/bin".into(), &Node::Dir))
    );
    assert_eq!(merged.resolve("/"), Some(("/".into(), &Node::Dir)));
    for path in [
        "/loop/a",
        "/dangling",
        "/through-a-file",
        "/usr/bin/dash/",
        "/nothing",
    ] {
        assert_eq!(merged.resolve(path), None, "{path}");
    }
}
