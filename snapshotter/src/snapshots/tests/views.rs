//! Views shared by containers: one per chain, started with the first
//! container, stopped with the last, kept across a restart of the daemon,
//! and never waited on under the view table's lock.

use std::sync::Arc;

use super::fake::Op;
use super::*;

#[test]
fn containers_share_one_view_per_chain_until_the_last_is_removed() {
    let e = env();
    let top = unpack_image(&e.snaps, "default");
    let m1 = e
        .snaps
        .create("default/10/c1", &top, no_labels(), false)
        .unwrap();
    let m2 = e
        .snaps
        .create("default/11/c2", &top, no_labels(), false)
        .unwrap();
    let view = e.root.join("views").join("sha256-c2");
    let lower = format!("lowerdir={}", view.display());
    for m in [&m1, &m2] {
        assert_eq!(m[0].kind, "overlay");
        assert!(m[0].options.contains(&lower), "{:?}", m[0].options);
    }
    assert_eq!(e.snaps.mounts("default/11/c2").unwrap(), m2);
    e.snaps.remove("default/10/c1").unwrap();
    e.snaps.remove("default/11/c2").unwrap();
    let calls = e.mounter.calls();
    // The view reads the chain's layers topmost first: snapshot dirs 2 then 1.
    assert_eq!(
        calls,
        vec!["mount sha256-c2 [2,1] profiled=true", "unmount sha256-c2"]
    );
}

#[test]
fn unprofiled_namespaces_run_on_plain_overlay_without_a_view() {
    let e = env();
    let top = unpack_image(&e.snaps, "quiet");
    let mounts = e
        .snaps
        .create("quiet/10/c1", &top, no_labels(), false)
        .unwrap();
    assert!(e.mounter.calls().is_empty(), "no view mounted");
    let lower = mounts[0]
        .options
        .iter()
        .find(|o| o.starts_with("lowerdir="))
        .unwrap();
    let layers = format!(
        "lowerdir={}:{}",
        e.root.join("snapshots/2/fs").display(),
        e.root.join("snapshots/1/fs").display()
    );
    assert_eq!(lower, &layers);
}

#[test]
fn reopening_cleans_half_made_dirs_and_remounts_container_views() {
    let e = env();
    let top = unpack_image(&e.snaps, "default");
    e.snaps
        .create("default/10/c1", &top, no_labels(), false)
        .unwrap();
    let snapshots = e.root.join("snapshots");
    std::fs::create_dir(snapshots.join("new-crash")).unwrap();
    std::fs::create_dir(snapshots.join("999")).unwrap();
    drop(e.snaps); // a crash: nothing unmounted, nothing cleaned
    // The view's server died with the daemon: a new one is mounted.
    let mounter = FakeMounter::default();
    let snaps = open(&e.root, &mounter);
    assert!(!snapshots.join("new-crash").exists());
    assert!(!snapshots.join("999").exists());
    assert_eq!(snaps.stat(&top).unwrap().kind, Kind::Committed);
    assert_eq!(mounter.calls(), vec!["mount sha256-c2 [2,1] profiled=true"]);
    assert_eq!(
        snaps.view_status(),
        vec![(chain("sha256:c2"), vec!["default/10/c1".to_string()])]
    );
    assert_eq!(snaps.cleanup().unwrap(), 0);
}

#[test]
fn a_restart_adopts_views_whose_servers_kept_serving() {
    let e = env();
    let top = unpack_image(&e.snaps, "default");
    e.snaps
        .create("default/10/c1", &top, no_labels(), false)
        .unwrap();
    drop(e.snaps); // SIGKILL: the view's server lives on
    let before = e.mounter.calls().len();
    let snaps = open(&e.root, &e.mounter);
    assert_eq!(e.mounter.calls()[before..], ["adopt sha256-c2"]);
    // New containers share the adopted view; the last one stops it.
    snaps
        .create("default/11/c2", &top, no_labels(), false)
        .unwrap();
    snaps.remove("default/10/c1").unwrap();
    snaps.remove("default/11/c2").unwrap();
    assert_eq!(
        e.mounter.calls()[before..],
        ["adopt sha256-c2", "unmount sha256-c2"]
    );
}

#[test]
fn a_slow_view_mount_holds_up_no_other_rpc() {
    let e = env();
    let top = unpack_image(&e.snaps, "default");
    let quiet = unpack_image(&e.snaps, "quiet");
    e.mounter.hold(Op::Mount, true);
    let snaps = Arc::new(e.snaps);
    let slow = {
        let snaps = snaps.clone();
        let top = top.clone();
        std::thread::spawn(move || snaps.create("default/10/c1", &top, no_labels(), false))
    };
    // While that Prepare waits for its view, everything else is answered.
    e.mounter.wait_for_held(Op::Mount);
    assert_eq!(snaps.stat(&top).unwrap().kind, Kind::Committed);
    snaps
        .create("quiet/11/c2", &quiet, no_labels(), false)
        .unwrap();
    snaps.remove("quiet/11/c2").unwrap();
    assert!(!slow.is_finished());
    e.mounter.hold(Op::Mount, false);
    slow.join().unwrap().unwrap();
    assert_eq!(e.mounter.calls(), ["mount sha256-c2 [2,1] profiled=true"]);
}

#[test]
fn a_liveness_check_holds_up_no_other_caller_of_the_view_table() {
    let e = env();
    let top = unpack_image(&e.snaps, "default");
    let quiet = unpack_image(&e.snaps, "quiet");
    e.snaps
        .create("default/10/c1", &top, no_labels(), false)
        .unwrap();
    let snaps = Arc::new(e.snaps);
    // The second container of the chain checks that the view still serves,
    // and that check hangs (a slow /proc).
    e.mounter.hold(Op::IsServing, true);
    let checking = {
        let snaps = snaps.clone();
        let top = top.clone();
        std::thread::spawn(move || snaps.create("default/11/c2", &top, no_labels(), false))
    };
    e.mounter.wait_for_held(Op::IsServing);
    let status = returns_soon("the view status", {
        let snaps = snaps.clone();
        move || snaps.view_status()
    });
    assert_eq!(
        status,
        vec![(chain("sha256:c2"), vec!["default/10/c1".to_string()])]
    );
    returns_soon("a Prepare on another chain", {
        let snaps = snaps.clone();
        move || {
            snaps
                .create("quiet/12/c3", &quiet, no_labels(), false)
                .map(|_| ())
        }
    })
    .unwrap();
    e.mounter.hold(Op::IsServing, false);
    checking.join().unwrap().unwrap();
    assert_eq!(
        snaps.view_status(),
        vec![(
            chain("sha256:c2"),
            vec!["default/10/c1".to_string(), "default/11/c2".to_string()]
        )]
    );
    assert_eq!(e.mounter.calls(), ["mount sha256-c2 [2,1] profiled=true"]);
}

#[test]
fn a_view_stopped_during_a_liveness_check_is_started_anew_not_joined() {
    let e = env();
    let top = unpack_image(&e.snaps, "default");
    e.snaps
        .create("default/10/c1", &top, no_labels(), false)
        .unwrap();
    let snaps = Arc::new(e.snaps);
    e.mounter.hold(Op::IsServing, true);
    let checking = {
        let snaps = snaps.clone();
        let top = top.clone();
        std::thread::spawn(move || snaps.create("default/11/c2", &top, no_labels(), false))
    };
    e.mounter.wait_for_held(Op::IsServing);
    // The view's last user goes while the check runs: the view stops.
    returns_soon("a Remove", {
        let snaps = snaps.clone();
        move || snaps.remove("default/10/c1")
    })
    .unwrap();
    e.mounter.hold(Op::IsServing, false);
    checking.join().unwrap().unwrap();
    assert_eq!(
        e.mounter.calls(),
        [
            "mount sha256-c2 [2,1] profiled=true",
            "unmount sha256-c2",
            "mount sha256-c2 [2,1] profiled=true"
        ]
    );
    assert_eq!(
        snaps.view_status(),
        vec![(chain("sha256:c2"), vec!["default/11/c2".to_string()])]
    );
}

#[test]
fn a_liveness_check_acts_only_on_the_view_it_checked() {
    let e = env();
    let top = unpack_image(&e.snaps, "default");
    e.snaps
        .create("default/10/c1", &top, no_labels(), false)
        .unwrap();
    let snaps = Arc::new(e.snaps);
    let prepare = |key: &'static str| {
        let snaps = snaps.clone();
        let top = top.clone();
        std::thread::spawn(move || snaps.create(key, &top, no_labels(), false))
    };
    // The check will answer that the view is gone.
    e.mounter.fail(&[Op::IsServing]);
    e.mounter.hold(Op::IsServing, true);
    let checking = prepare("default/11/c2");
    e.mounter.wait_for_held(Op::IsServing);
    e.mounter.fail(&[]);
    // While the check runs, the view stops and a new one starts.
    returns_soon("a Remove", {
        let snaps = snaps.clone();
        move || snaps.remove("default/10/c1")
    })
    .unwrap();
    e.mounter.hold(Op::Mount, true);
    let starting = prepare("default/12/c3");
    e.mounter.wait_for_held(Op::Mount);
    // The old view's answer (gone) says nothing about the new one: it is
    // neither stopped nor joined before it is checked.
    e.mounter.hold(Op::IsServing, false);
    e.mounter.hold(Op::Mount, false);
    starting.join().unwrap().unwrap();
    checking.join().unwrap().unwrap();
    assert_eq!(
        e.mounter.calls(),
        [
            "mount sha256-c2 [2,1] profiled=true",
            "unmount sha256-c2",
            "mount sha256-c2 [2,1] profiled=true"
        ]
    );
    assert_eq!(
        snaps.view_status(),
        vec![(
            chain("sha256:c2"),
            vec!["default/11/c2".to_string(), "default/12/c3".to_string()]
        )]
    );
}
