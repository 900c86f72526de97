//! Every failure of the view mounter, and what is left after it: the call
//! that hit it fails (or succeeds without the view) with containerd's code,
//! no record or directory leaks, no view is forgotten while it is mounted,
//! and once the failure is gone the same daemon serves containers again.

use tonic::Code;

use super::fake::Op;
use super::*;
use crate::views::{MountError, ViewError};

const C1: &str = "default/10/c1";
const C2: &str = "default/11/c2";
const C3: &str = "default/12/c3";
const MOUNT: &str = "mount sha256-c2 [2,1] profiled=true";
const UNMOUNT: &str = "unmount sha256-c2";

/// What is done while the mounter fails.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Prepare of the chain's first container, C1.
    PrepareFirst,
    /// Prepare of C2 while C1 has the view.
    PrepareSecond,
    /// Remove of C1, the view's only user.
    Remove,
    /// Commit of C1.
    Commit,
    /// The daemon restarts while C1's view keeps serving.
    Restart,
}

struct Case {
    step: Step,
    failing: &'static [Op],
    /// The step's gRPC code and a part of its message; `None`: it succeeds.
    error: Option<(Code, &'static str)>,
    /// What the mounter was asked during the step.
    calls: &'static [&'static str],
    /// Active snapshots after the step.
    active: &'static [&'static str],
    /// Views and their users after the step.
    views: &'static [(&'static str, &'static [&'static str])],
    /// What the mounter is asked when, the failure gone, every container
    /// is removed and a new one, C3, is prepared and removed.
    after: &'static [&'static str],
    /// Views left after that.
    left: &'static [(&'static str, &'static [&'static str])],
}

const CASES: &[Case] = &[
    Case {
        step: Step::PrepareFirst,
        failing: &[Op::Mount],
        error: Some((
            Code::Internal,
            "view for sha256:c2: mounting FUSE failed: No such device",
        )),
        calls: &["failed mount sha256-c2"],
        active: &[],
        views: &[],
        after: &[MOUNT, UNMOUNT],
        left: &[],
    },
    Case {
        step: Step::PrepareSecond,
        failing: &[Op::IsServing],
        error: None,
        calls: &[UNMOUNT, MOUNT],
        active: &[C1, C2],
        views: &[("sha256:c2", &[C2])],
        after: &[UNMOUNT, MOUNT, UNMOUNT],
        left: &[],
    },
    Case {
        step: Step::PrepareSecond,
        failing: &[Op::IsServing, Op::Stop],
        error: None,
        calls: &["failed unmount sha256-c2", MOUNT],
        active: &[C1, C2],
        views: &[("sha256:c2", &[C2])],
        after: &[UNMOUNT, MOUNT, UNMOUNT],
        left: &[],
    },
    Case {
        step: Step::PrepareSecond,
        failing: &[Op::IsServing, Op::Mount],
        error: Some((Code::Internal, "view for sha256:c2: mounting FUSE failed")),
        calls: &[UNMOUNT, "failed mount sha256-c2"],
        active: &[C1],
        views: &[],
        after: &[MOUNT, UNMOUNT],
        left: &[],
    },
    Case {
        step: Step::Remove,
        failing: &[Op::Stop],
        error: Some((
            Code::Internal,
            "view for sha256:c2: cannot stop the view: cannot detach the view mounted at",
        )),
        calls: &["failed unmount sha256-c2"],
        active: &[C1],
        views: &[("sha256:c2", &[C1])],
        after: &[UNMOUNT, MOUNT, UNMOUNT],
        left: &[],
    },
    Case {
        step: Step::Commit,
        failing: &[Op::Stop],
        error: None,
        calls: &["failed unmount sha256-c2"],
        active: &[],
        // The commit stands; the view stays known until a restart.
        views: &[("sha256:c2", &[C1])],
        after: &[],
        left: &[("sha256:c2", &[C1])],
    },
    Case {
        step: Step::Restart,
        failing: &[Op::Adopt],
        error: None,
        calls: &["failed adopt sha256-c2", MOUNT],
        active: &[C1],
        views: &[("sha256:c2", &[C1])],
        after: &[UNMOUNT, MOUNT, UNMOUNT],
        left: &[],
    },
    Case {
        step: Step::Restart,
        failing: &[Op::Adopt, Op::Mount],
        error: None,
        calls: &["failed adopt sha256-c2", "failed mount sha256-c2"],
        active: &[C1],
        views: &[],
        after: &[MOUNT, UNMOUNT],
        left: &[],
    },
];

fn views_of(cases: &[(&str, &[&str])]) -> Vec<(ChainId, Vec<String>)> {
    cases
        .iter()
        .map(|(c, users)| (chain(c), users.iter().map(|u| u.to_string()).collect()))
        .collect()
}

fn active(snaps: &Snapshots<FakeMounter>) -> Vec<String> {
    let mut keys: Vec<String> = snaps
        .list(&["kind==active".to_string()])
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    keys.sort();
    keys
}

#[test]
fn every_failure_of_the_view_mounter_leaves_a_consistent_daemon() {
    for case in CASES {
        let what = format!("{:?} failing {:?}", case.step, case.failing);
        let e = env();
        let mut snaps = e.snaps;
        let top = unpack_image(&snaps, "default");
        if !matches!(case.step, Step::PrepareFirst) {
            snaps.create(C1, &top, no_labels(), false).unwrap();
        }
        let before = e.mounter.calls().len();
        e.mounter.fail(case.failing);
        let result = match case.step {
            Step::PrepareFirst => snaps.create(C1, &top, no_labels(), false).map(|_| ()),
            Step::PrepareSecond => snaps.create(C2, &top, no_labels(), false).map(|_| ()),
            Step::Remove => snaps.remove(C1),
            Step::Commit => snaps.commit("default/13/committed", C1, no_labels()),
            Step::Restart => {
                drop(snaps);
                snaps = open(&e.root, &e.mounter);
                Ok(())
            }
        };
        match (&result, case.error) {
            (Ok(()), None) => {}
            (Err(err), Some((code, says))) => {
                assert_eq!(err.code(), code, "{what}: {err}");
                assert!(err.to_string().contains(says), "{what}: {err}");
                assert!(std::error::Error::source(err).is_some(), "{what}: {err}");
            }
            _ => panic!("{what}: {result:?}"),
        }
        assert_eq!(e.mounter.calls()[before..], *case.calls, "{what}");
        assert_eq!(active(&snaps), case.active, "{what}");
        assert_eq!(snaps.view_status(), views_of(case.views), "{what}");
        assert_eq!(snaps.cleanup().unwrap(), 0, "{what}: no directory leaked");

        e.mounter.fail(&[]);
        let before = e.mounter.calls().len();
        for key in active(&snaps) {
            snaps.remove(&key).unwrap();
        }
        snaps.create(C3, &top, no_labels(), false).unwrap();
        snaps.remove(C3).unwrap();
        assert_eq!(e.mounter.calls()[before..], *case.after, "{what}");
        assert_eq!(snaps.view_status(), views_of(case.left), "{what}");
        assert_eq!(active(&snaps), Vec::<String>::new(), "{what}");
        assert_eq!(snaps.cleanup().unwrap(), 0, "{what}: no directory leaked");
    }
}

#[test]
fn a_failed_mount_leaves_no_mountpoint_and_the_next_prepare_mounts() {
    let e = env();
    let top = unpack_image(&e.snaps, "default");
    e.mounter.fail(&[Op::Mount]);
    let err = e.snaps.create(C1, &top, no_labels(), false).unwrap_err();
    let Error::View {
        chain: failed,
        source,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*failed, chain("sha256:c2"));
    assert!(
        matches!(source, ViewError::Start(MountError::Refused(why)) if why == "mounting FUSE failed: No such device"),
        "{source:?}"
    );
    assert_eq!(code(e.snaps.stat(C1)), Code::NotFound);
    assert!(!e.root.join("views/sha256-c2").exists());
    e.mounter.fail(&[]);
    let mounts = e.snaps.create(C1, &top, no_labels(), false).unwrap();
    let lower = format!("lowerdir={}", e.root.join("views/sha256-c2").display());
    assert!(
        mounts[0].options.contains(&lower),
        "{:?}",
        mounts[0].options
    );
    assert_eq!(e.mounter.calls(), ["failed mount sha256-c2", MOUNT]);
}

#[test]
fn a_view_that_cannot_be_stopped_keeps_the_layers_it_reads() {
    let e = env();
    let top = unpack_image(&e.snaps, "default");
    e.snaps.create(C1, &top, no_labels(), false).unwrap();
    e.mounter.fail(&[Op::Stop]);
    e.snaps
        .commit("default/13/committed", C1, no_labels())
        .unwrap();
    // Every record goes; the directories the view still reads stay.
    for key in ["default/13/committed", top.as_str(), "default/1/sha256:c1"] {
        e.snaps.remove(key).unwrap();
    }
    assert_eq!(e.snaps.list(&[]).unwrap(), vec![]);
    assert_eq!(e.snaps.cleanup().unwrap(), 0);
    let snapshots = e.root.join("snapshots");
    for id in ["1", "2"] {
        assert!(snapshots.join(id).join("fs").is_dir(), "layer {id} kept");
    }
    assert!(
        !snapshots.join("3").exists(),
        "the container's own dir goes"
    );
    assert_eq!(e.mounter.calls(), [MOUNT, "failed unmount sha256-c2"]);
}
