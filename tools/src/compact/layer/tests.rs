//! The layer tar read back: entries, order, metadata, links, determinism.

use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};

use pare_fs::layers::LayerStack;

use super::*;
use crate::compact::closure::{Index, Selection};

fn p(s: &str) -> ImagePath {
    ImagePath::new(s.as_bytes().to_vec()).unwrap()
}

fn fixture() -> (tempfile::TempDir, ImageTree) {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    std::fs::create_dir_all(base.join("app/bin")).unwrap();
    std::fs::write(base.join("app/bin/tool"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        base.join("app/bin/tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::hard_link(base.join("app/bin/tool"), base.join("app/bin/tool2")).unwrap();
    symlink("bin/tool", base.join("app/link")).unwrap();
    let long = "d".repeat(120);
    std::fs::write(base.join(format!("app/{long}")), "long").unwrap();
    rustix::fs::lsetxattr(
        base.join("app/bin/tool"),
        "user.pare",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_700_000_000,
            tv_nsec: 5,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_700_000_000,
            tv_nsec: 123_456_789,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        base.join("app/bin/tool"),
        &t,
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    let stack = LayerStack::open(vec![base]).unwrap();
    (dir, ImageTree::new(stack))
}

/// The layer's tar, its metadata, and the compressed blob.
fn build(tree: &ImageTree, compression: Compression) -> (LayerOut, Vec<u8>) {
    let index = Index::build(tree).unwrap();
    let mut sel = Selection::new(tree, &index);
    let long = format!("/app/{}", "d".repeat(120));
    sel.keep_profiled([p("/app/link"), p(&long)].iter())
        .unwrap();
    let kept = sel.into_kept();
    let overrides = HashMap::new();
    write(tree, &kept, &overrides, compression, Vec::new(), &|_| {}).unwrap()
}

#[test]
fn entries_carry_metadata_links_and_xattrs_in_closure_order() {
    let (_d, tree) = fixture();
    let (out, blob) = build(&tree, Compression::Gzip);
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(blob.as_slice())
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(out.diff_id, pare_fs::id::Digest::sha256(&tar_bytes));
    assert_eq!(out.tar_size, tar_bytes.len() as u64);
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut got = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let kind = entry.header().entry_type();
        let link = entry.link_name().unwrap().map(|l| l.display().to_string());
        let mode = entry.header().mode().unwrap();
        let xattr: Vec<String> = entry
            .pax_extensions()
            .unwrap()
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().key().unwrap().to_string())
            .collect();
        got.push((path, kind, link, mode, xattr));
    }
    let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    let long = format!("app/{}", "d".repeat(120));
    assert_eq!(
        names,
        vec![
            "app/",
            "app/link",
            "app/bin/",
            "app/bin/tool",
            "app/bin/tool2",
            long.as_str()
        ]
    );
    let tool = &got[3];
    assert_eq!((tool.1, tool.3), (EntryType::Regular, 0o4755));
    assert!(
        tool.4.contains(&"mtime".to_string())
            && tool.4.contains(&"SCHILY.xattr.user.pare".to_string())
    );
    assert_eq!(
        (got[4].1, got[4].2.as_deref()),
        (EntryType::Link, Some("app/bin/tool"))
    );
    assert_eq!(
        (got[1].1, got[1].2.as_deref()),
        (EntryType::Symlink, Some("bin/tool"))
    );
}

#[test]
fn the_same_entries_give_the_same_blob() {
    let (_d, tree) = fixture();
    for compression in [Compression::Gzip, Compression::Zstd] {
        let (a, b) = (build(&tree, compression), build(&tree, compression));
        assert_eq!(a.1, b.1, "{compression:?}");
        assert_eq!(a.0.diff_id, b.0.diff_id);
    }
}

#[test]
fn a_hardlink_group_of_20000_names_is_one_file_and_hardlinks_to_its_first_name() {
    use crate::compact::closure::tests::{GROUP, hardlink_group};
    let (_d, tree, names) = hardlink_group(GROUP);
    let index = Index::build(&tree).unwrap();
    let mut sel = Selection::new(&tree, &index);
    sel.keep_profiled([names[12_345].clone()].iter()).unwrap();
    let kept = sel.into_kept();
    let (out, tar) = write(
        &tree,
        &kept,
        &HashMap::new(),
        Compression::Zstd,
        Vec::new(),
        &|_| {},
    )
    .unwrap();
    let tar = zstd::decode_all(tar.as_slice()).unwrap();
    assert_eq!(out.content_bytes, 4000, "one copy of the content");
    let first = names[12_345].to_string()[1..].to_string();
    let mut files = Vec::new();
    let mut links = std::collections::HashSet::new();
    for entry in tar::Archive::new(tar.as_slice()).entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        match entry.header().entry_type() {
            EntryType::Regular => files.push((path, entry.size())),
            EntryType::Link => {
                let target = entry.link_name().unwrap().unwrap().display().to_string();
                assert_eq!(target, first, "{path} links to the first name");
                assert!(links.insert(path));
            }
            _ => {}
        }
    }
    assert_eq!(files, vec![(first.clone(), 4000)]);
    assert_eq!(links.len(), GROUP - 1);
    assert!(names.iter().all(|n| {
        let rel = &n.to_string()[1..];
        rel == first || links.contains(rel)
    }));
}
