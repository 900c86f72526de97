//! Unit tests of the snapshot state machine, with a fake view mounter (no root).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::*;
use crate::views::{MountError, StopOutcome, ViewMounter, ViewSpec, Views};

/// Records mount and stop calls instead of mounting; can be told to fail,
/// to hold mounts until released, and which views an earlier run left serving.
#[derive(Clone, Default)]
struct FakeMounter {
    calls: Arc<Mutex<Vec<String>>>,
    fail: Arc<Mutex<Option<MountError>>>,
    serving: Arc<Mutex<HashSet<PathBuf>>>,
    hold: Arc<(Mutex<bool>, Condvar)>,
}

impl FakeMounter {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn set_hold(&self, on: bool) {
        *self.hold.0.lock().unwrap() = on;
        self.hold.1.notify_all();
    }
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

impl ViewMounter for FakeMounter {
    type Handle = PathBuf;

    fn mount(&self, spec: &ViewSpec) -> std::result::Result<PathBuf, MountError> {
        let (held, cv) = &*self.hold;
        let guard = held.lock().unwrap();
        let (_guard, timeout) = cv
            .wait_timeout_while(guard, Duration::from_secs(10), |held| *held)
            .unwrap();
        assert!(!timeout.timed_out(), "a held mount was never released");
        if let Some(e) = self.fail.lock().unwrap().clone() {
            self.calls
                .lock()
                .unwrap()
                .push(format!("failed {}", name(&spec.mountpoint)));
            return Err(e);
        }
        let ids: Vec<String> = spec
            .layers
            .iter()
            .map(|l| name(l.parent().unwrap()))
            .collect();
        self.calls.lock().unwrap().push(format!(
            "mount {} [{}] profiled={}",
            name(&spec.mountpoint),
            ids.join(","),
            spec.profile.is_some()
        ));
        self.serving.lock().unwrap().insert(spec.mountpoint.clone());
        Ok(spec.mountpoint.clone())
    }

    fn adopt(&self, spec: &ViewSpec) -> Option<PathBuf> {
        let serving = self.serving.lock().unwrap().contains(&spec.mountpoint);
        serving.then(|| {
            self.calls
                .lock()
                .unwrap()
                .push(format!("adopt {}", name(&spec.mountpoint)));
            spec.mountpoint.clone()
        })
    }

    fn is_serving(&self, handle: &PathBuf) -> bool {
        self.serving.lock().unwrap().contains(handle)
    }

    fn stop(&self, handle: PathBuf) -> StopOutcome {
        self.serving.lock().unwrap().remove(&handle);
        self.calls
            .lock()
            .unwrap()
            .push(format!("unmount {}", name(&handle)));
        StopOutcome::Stopped
    }
}

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    mounter: FakeMounter,
    snaps: Snapshots<FakeMounter>,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let mounter = FakeMounter::default();
    let snaps = open(&root, &mounter);
    Env {
        _dir: dir,
        root,
        mounter,
        snaps,
    }
}

fn open(root: &Path, mounter: &FakeMounter) -> Snapshots<FakeMounter> {
    let views = Views::new(
        mounter.clone(),
        root.join("views"),
        root.join("profiles"),
        Duration::from_secs(5),
    );
    Snapshots::open(root, views, Box::new(|ns: &str| ns != "quiet")).unwrap()
}

fn no_labels() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn unpack_labels(chain: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_SNAPSHOT_REF.to_string(), chain.to_string())])
}

/// Unpacks two layers the way containerd's unpacker does; returns the top key.
fn unpack_image(s: &Snapshots<FakeMounter>, ns: &str) -> String {
    let l1 = format!("{ns}/1/sha256:c1");
    let l2 = format!("{ns}/3/sha256:c2");
    s.create(
        &format!("{ns}/0/extract-1 sha256:c1"),
        "",
        unpack_labels("sha256:c1"),
        false,
    )
    .unwrap();
    s.commit(&l1, &format!("{ns}/0/extract-1 sha256:c1"), no_labels())
        .unwrap();
    let mounts = s
        .create(
            &format!("{ns}/2/extract-2 sha256:c2"),
            &l1,
            unpack_labels("sha256:c2"),
            false,
        )
        .unwrap();
    assert_eq!(
        mounts[0].kind, "overlay",
        "a layer on a parent unpacks into an overlay upper"
    );
    s.commit(&l2, &format!("{ns}/2/extract-2 sha256:c2"), no_labels())
        .unwrap();
    l2
}

fn code(r: Result<impl std::fmt::Debug>) -> tonic::Code {
    r.unwrap_err().code()
}

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
    assert!(
        e.mounter.calls.lock().unwrap().is_empty(),
        "unpacking mounts no view"
    );
}

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
    let calls = e.mounter.calls.lock().unwrap().clone();
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
    assert!(
        e.mounter.calls.lock().unwrap().is_empty(),
        "no view mounted"
    );
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
    assert_eq!(
        mounter.calls.lock().unwrap().clone(),
        vec!["mount sha256-c2 [2,1] profiled=true"]
    );
    assert_eq!(
        snaps.view_status(),
        vec![("sha256:c2".to_string(), vec!["default/10/c1".to_string()])]
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
fn a_view_that_fails_to_mount_fails_only_that_prepare() {
    let e = env();
    let top = unpack_image(&e.snaps, "default");
    *e.mounter.fail.lock().unwrap() = Some(MountError::Refused(
        "mounting FUSE on /x failed: No such device".into(),
    ));
    let err = e
        .snaps
        .create("default/10/c1", &top, no_labels(), false)
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal);
    assert!(
        err.to_string()
            .contains("view for sha256:c2: mounting FUSE on /x failed: No such device"),
        "{err}"
    );
    // Nothing of the failed Prepare is left, and the next calls are answered.
    assert_eq!(code(e.snaps.stat("default/10/c1")), tonic::Code::NotFound);
    assert_eq!(e.snaps.list(&[]).unwrap().len(), 2);
    assert!(e.snaps.view_status().is_empty());
    *e.mounter.fail.lock().unwrap() = None;
    e.snaps
        .create("default/10/c1", &top, no_labels(), false)
        .unwrap();
    assert_eq!(
        e.mounter.calls(),
        ["failed sha256-c2", "mount sha256-c2 [2,1] profiled=true"]
    );
    assert_eq!(e.snaps.cleanup().unwrap(), 0, "no directory leaked");
}

#[test]
fn a_slow_view_mount_holds_up_no_other_rpc() {
    let e = env();
    let top = unpack_image(&e.snaps, "default");
    let quiet = unpack_image(&e.snaps, "quiet");
    e.mounter.set_hold(true);
    let snaps = Arc::new(e.snaps);
    let slow = {
        let snaps = snaps.clone();
        let top = top.clone();
        std::thread::spawn(move || snaps.create("default/10/c1", &top, no_labels(), false))
    };
    // While that Prepare waits for its view, everything else is answered.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while snaps.view_status().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow Prepare never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(snaps.stat(&top).unwrap().kind, Kind::Committed);
    snaps
        .create("quiet/11/c2", &quiet, no_labels(), false)
        .unwrap();
    snaps.remove("quiet/11/c2").unwrap();
    assert!(!slow.is_finished());
    e.mounter.set_hold(false);
    slow.join().unwrap().unwrap();
    assert_eq!(e.mounter.calls(), ["mount sha256-c2 [2,1] profiled=true"]);
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

/// Root and a tmpfs: a privileged test (fails under CI=true without them).
fn small_tmpfs(dir: &Path, size: &str) -> bool {
    let why = if !rustix::process::geteuid().is_root() {
        Some("not running as root".to_string())
    } else {
        rustix::mount::mount(
            "tmpfs",
            dir,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            Some(
                std::ffi::CString::new(format!("size={size}"))
                    .unwrap()
                    .as_c_str(),
            ),
        )
        .err()
        .map(|e| format!("cannot mount a tmpfs: {e}"))
    };
    match why {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("privileged test cannot run under CI=true: {why}")
        }
        Some(why) => {
            eprintln!("SKIPPED privileged_metadata_store_recovers_from_a_full_disk: {why}");
            false
        }
    }
}

#[test]
fn privileged_metadata_store_recovers_from_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    if !small_tmpfs(dir.path(), "4m") {
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _guard = Unmount(dir.path());
    let root = dir.path().join("root");
    let mounter = FakeMounter::default();
    let snaps = open(&root, &mounter);
    let top = unpack_image(&snaps, "default");
    // Fill the disk.
    let filler = dir.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
    }
    let mut failed = 0;
    for i in 0..20 {
        if snaps
            .create(
                &format!("default/{}/c{i}", 100 + i),
                &top,
                no_labels(),
                false,
            )
            .is_err()
        {
            failed += 1;
        }
    }
    assert!(failed > 0, "a full disk makes Prepare fail");
    // Space again: the same daemon works without a restart.
    std::fs::remove_file(&filler).unwrap();
    snaps
        .create("default/200/after", &top, no_labels(), false)
        .expect("the store recovered");
    assert_eq!(snaps.stat("default/200/after").unwrap().kind, Kind::Active);
    snaps.remove("default/200/after").unwrap();
    assert_eq!(snaps.stat(&top).unwrap().kind, Kind::Committed);
}
