//! Views by mode: a container gets the view of its image's mode and allowed
//! set when it starts, keeps it when the mode changes, and a restart adopts
//! each view by its key.

use pare_fs::id::Digest;
use pare_fs::policy::{AllowedSet, ModeEntry, Rules, allowed_path, set_id};
use pare_fs::profile::ImagePath;

use super::*;

/// Freezes an allowed set for chain `sha256:c2` and sets the image's mode;
/// returns the digest of the set's file.
fn set_mode(root: &Path, mode: Mode, paths: &[&str]) -> Digest {
    let chain = chain("sha256:c2");
    let file = allowed_path(&profile_path(root, &chain));
    let set = AllowedSet::from_paths(
        Digest::sha256(b"profile"),
        Rules::default(),
        paths
            .iter()
            .map(|p| ImagePath::new(p.as_bytes().to_vec()).unwrap()),
    );
    set.write(&file).unwrap();
    ModeEntry::now("app:1", chain, mode, Rules::default())
        .write(root)
        .unwrap();
    Digest::sha256(&std::fs::read(&file).unwrap())
}

#[test]
fn containers_of_one_image_in_different_modes_use_different_views() {
    let e = env();
    let top = unpack_image(&e.snaps, "default");
    e.snaps
        .create("default/10/learner", &top, no_labels(), false)
        .unwrap();
    let set = set_mode(&e.root, Mode::Enforce, &["/app/a"]);
    let enforced = e
        .snaps
        .create("default/11/enforced", &top, no_labels(), false)
        .unwrap();
    let name = format!("sha256-c2.enforce-{}", set_id(&set));
    let view = e.root.join("views").join(&name);
    assert_eq!(lower(&enforced), format!("lowerdir={}", view.display()));
    // The learner kept its view.
    let learner = e.snaps.mounts("default/10/learner").unwrap();
    assert_eq!(
        lower(&learner),
        format!("lowerdir={}", e.root.join("views/sha256-c2").display())
    );
    let keys: Vec<(String, Vec<String>)> = e
        .snaps
        .view_keys()
        .into_iter()
        .map(|(k, users)| (k.mount_name(), users))
        .collect();
    assert_eq!(
        keys,
        [
            (
                "sha256-c2".to_string(),
                vec!["default/10/learner".to_string()]
            ),
            (name.clone(), vec!["default/11/enforced".to_string()]),
        ]
    );
    let misses = format!("sha256:c2.enforce-{}.misses", set_id(&set));
    e.snaps.remove("default/10/learner").unwrap();
    assert_eq!(
        e.mounter.calls(),
        [
            "mount sha256-c2 [2,1] profiled=true".to_string(),
            format!("mount {name} [2,1] profiled=false allowed={name}.allowed misses={misses}"),
            "unmount sha256-c2".to_string(),
        ]
    );
    // A set frozen again is another view; the running one is kept.
    let again = set_mode(&e.root, Mode::Enforce, &["/app/a", "/app/b"]);
    assert_ne!(again, set);
    e.snaps
        .create("default/12/enforced-again", &top, no_labels(), false)
        .unwrap();
    let views: Vec<String> = e
        .snaps
        .view_keys()
        .into_iter()
        .map(|(k, _)| k.mount_name())
        .collect();
    assert_eq!(
        views,
        [name, format!("sha256-c2.enforce-{}", set_id(&again))]
    );
}

#[test]
fn without_a_usable_allowed_set_audit_runs_as_learn_and_off_has_no_view() {
    let e = env();
    let top = unpack_image(&e.snaps, "default");
    set_mode(&e.root, Mode::Audit, &["/app/a"]);
    let file = allowed_path(&profile_path(&e.root, &chain("sha256:c2")));
    std::fs::write(&file, b"{\"format\": \"pare-allowed-set\"").unwrap();
    let mounts = e
        .snaps
        .create("default/10/c1", &top, no_labels(), false)
        .unwrap();
    assert_eq!(
        lower(&mounts),
        format!("lowerdir={}", e.root.join("views/sha256-c2").display())
    );
    ModeEntry::now("app:1", chain("sha256:c2"), Mode::Off, Rules::default())
        .write(&e.root)
        .unwrap();
    let plain = e
        .snaps
        .create("default/11/c2", &top, no_labels(), false)
        .unwrap();
    assert_eq!(
        lower(&plain),
        format!(
            "lowerdir={}:{}",
            e.root.join("snapshots/2/fs").display(),
            e.root.join("snapshots/1/fs").display()
        )
    );
    assert_eq!(e.mounter.calls(), ["mount sha256-c2 [2,1] profiled=true"]);
}

#[test]
fn an_image_mode_overrides_the_namespace_and_a_restart_adopts_views_by_key() {
    let e = env();
    // The namespace is off, the image is set to audit.
    let top = unpack_image(&e.snaps, "quiet");
    let set = set_mode(&e.root, Mode::Audit, &["/app/a"]);
    e.snaps
        .create("quiet/10/c1", &top, no_labels(), false)
        .unwrap();
    let name = format!("sha256-c2.audit-{}", set_id(&set));
    // The mode changes while the daemon is down: the container keeps its view.
    drop(e.snaps);
    set_mode(&e.root, Mode::Enforce, &["/app/a", "/app/b"]);
    let snaps = open(&e.root, &e.mounter);
    let calls = e.mounter.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].starts_with(&format!("mount {name} ")), "{calls:?}");
    assert_eq!(calls[1], format!("adopt {name}"));
    let record = snaps.store.get("quiet/10/c1").unwrap().unwrap();
    assert_eq!(
        record.role.view_key(),
        Some(ViewKey::judged(chain("sha256:c2"), Mode::Audit, set))
    );
}
