//! Snapshot semantics as containerd expects them: keys, kinds, mounts,
//! commits, labels, filters, usage, error codes and private directories.

use super::*;

#[test]
fn keys_are_split_like_containerds_metadata_layer() {
    assert_eq!(
        split_key("default/12/sha256:abc"),
        ("default", "sha256:abc")
    );
    assert_eq!(
        split_key("k8s.io/3/extract-1 sha256:x"),
        ("k8s.io", "extract-1 sha256:x")
    );
    assert_eq!(split_key("plain-key"), ("", "plain-key"));
    assert!(is_container_rootfs(
        "default/9/ctr1",
        "default/3/sha256:c2",
        &no_labels()
    ));
    assert!(!is_container_rootfs("default/9/ctr1", "", &no_labels()));
    assert!(!is_container_rootfs(
        "default/9/x",
        "p",
        &unpack_labels("sha256:c")
    ));
    assert!(!is_container_rootfs(
        "default/9/extract-9 sha256:c",
        "p",
        &no_labels()
    ));
}

#[test]
fn layers_unpack_as_bind_then_overlay_and_commit() {
    let e = env();
    let top = unpack_image(&e.snaps, "default");
    let info = e.snaps.stat(&top).unwrap();
    assert_eq!(
        (info.kind, info.parent.as_str()),
        (Kind::Committed, "default/1/sha256:c1")
    );
    assert_eq!(code(e.snaps.mounts(&top)), tonic::Code::FailedPrecondition);
    assert!(e.mounter.calls().is_empty(), "unpacking mounts no view");
}

#[test]
fn errors_carry_containerds_codes() {
    let e = env();
    let top = unpack_image(&e.snaps, "default");
    use tonic::Code::*;
    assert_eq!(
        code(e.snaps.create(&top, "", no_labels(), false)),
        AlreadyExists
    );
    assert_eq!(
        code(
            e.snaps
                .create("default/20/x", "missing", no_labels(), false)
        ),
        NotFound
    );
    e.snaps
        .create("default/21/active", "", no_labels(), false)
        .unwrap();
    assert_eq!(
        code(
            e.snaps
                .create("default/22/y", "default/21/active", no_labels(), false)
        ),
        FailedPrecondition
    );
    assert_eq!(
        code(e.snaps.remove("default/1/sha256:c1")),
        FailedPrecondition,
        "has children"
    );
    assert_eq!(
        code(e.snaps.commit(&top, "default/21/active", no_labels())),
        AlreadyExists
    );
    assert_eq!(
        code(e.snaps.commit("n", &top, no_labels())),
        FailedPrecondition
    );
    assert_eq!(code(e.snaps.commit("n", "nope", no_labels())), NotFound);
    assert_eq!(code(e.snaps.stat("nope")), NotFound);
    assert_eq!(
        code(e.snaps.create("", "", no_labels(), false)),
        InvalidArgument
    );
    assert_eq!(
        code(e.snaps.update(&top, no_labels(), &["parent".to_string()])),
        InvalidArgument
    );
}

#[test]
fn views_of_parents_are_bind_or_readonly_overlays() {
    let e = env();
    let top = unpack_image(&e.snaps, "default");
    let single = e
        .snaps
        .create("default/30/v1", "default/1/sha256:c1", no_labels(), true)
        .unwrap();
    assert_eq!(
        (single[0].kind.as_str(), single[0].options[0].as_str()),
        ("bind", "ro")
    );
    let multi = e
        .snaps
        .create("default/31/v2", &top, no_labels(), true)
        .unwrap();
    assert_eq!(multi[0].kind, "overlay");
    assert!(!multi[0].options.iter().any(|o| o.starts_with("upperdir=")));
    assert_eq!(e.snaps.stat("default/31/v2").unwrap().kind, Kind::View);
    assert_eq!(
        code(e.snaps.commit("x", "default/31/v2", no_labels())),
        tonic::Code::FailedPrecondition
    );
}

#[test]
fn labels_update_by_field_path_and_list_filters() {
    let e = env();
    let top = unpack_image(&e.snaps, "default");
    let labels = BTreeMap::from([
        ("a".to_string(), "1".to_string()),
        ("b".to_string(), "2".to_string()),
    ]);
    e.snaps.update(&top, labels, &[]).unwrap();
    let one = BTreeMap::from([("b".to_string(), "3".to_string())]);
    let info = e
        .snaps
        .update(&top, one, &["labels.b".into(), "labels.a".into()])
        .unwrap();
    assert_eq!(
        info.labels,
        BTreeMap::from([("b".to_string(), "3".to_string())])
    );
    let names = |f: &str| -> Vec<String> {
        let mut n: Vec<String> = e
            .snaps
            .list(&[f.to_string()])
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        n.sort();
        n
    };
    assert_eq!(names("labels.b==3"), vec![top.clone()]);
    assert_eq!(names("kind==committed").len(), 2);
    assert_eq!(names("parent==default/1/sha256:c1"), vec![top]);
}

#[test]
fn usage_counts_blocks_and_inodes_of_the_snapshot_dir() {
    let e = env();
    e.snaps
        .create("default/40/a", "", no_labels(), false)
        .unwrap();
    let record = e.snaps.store.get("default/40/a").unwrap().unwrap();
    let fs = e
        .root
        .join("snapshots")
        .join(record.id.to_string())
        .join("fs");
    std::fs::write(fs.join("f"), vec![7u8; 64 * 1024]).unwrap();
    std::fs::hard_link(fs.join("f"), fs.join("g")).unwrap();
    let usage = e.snaps.usage("default/40/a").unwrap();
    assert_eq!(
        usage.inodes, 2,
        "the dir and one inode for the hardlinked pair"
    );
    assert!(usage.size >= 64 * 1024, "{usage:?}");
    e.snaps
        .commit("default/41/c", "default/40/a", no_labels())
        .unwrap();
    assert_eq!(
        e.snaps.usage("default/41/c").unwrap(),
        usage,
        "committed usage is kept"
    );
}

#[test]
fn the_state_root_and_its_directories_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let e = env();
    for path in ["", "snapshots", "views", "profiles", "metadata.db"] {
        let mode = std::fs::metadata(e.root.join(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        let want = if path == "metadata.db" { 0o600 } else { 0o700 };
        assert_eq!(mode, want, "{path:?}");
    }
}
