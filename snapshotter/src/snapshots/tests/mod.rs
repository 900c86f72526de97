//! Unit tests of the snapshot state machine, with a fake view mounter (no
//! root): snapshot semantics, views shared by containers, every failure of
//! the mounter, and a full disk.

mod disk;
mod failures;
mod fake;
mod lifecycle;
mod linger;
mod modes;
mod settle;
mod views;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::views::{Lingering, Views};
use fake::FakeMounter;

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    mounter: FakeMounter,
    snaps: Snapshots<FakeMounter>,
}

fn env() -> Env {
    env_with(Lingering::NONE, Settling::NEVER)
}

/// An [`env`] whose views linger by `lingering` and images settle by `settling`.
fn env_with(lingering: Lingering, settling: Settling) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let mounter = FakeMounter::default();
    let views =
        Views::new(mounter.clone(), root.clone(), Duration::from_secs(5)).with_lingering(lingering);
    let snaps = Snapshots::open(&root, views, Box::new(modes))
        .unwrap()
        .with_settling(settling);
    Env {
        _dir: dir,
        root,
        mounter,
        snaps,
    }
}

/// The namespace `quiet` is off; the others learn.
fn modes(ns: &str) -> Mode {
    match ns {
        "quiet" => Mode::Off,
        _ => Mode::Learn,
    }
}

fn open(root: &Path, mounter: &FakeMounter) -> Snapshots<FakeMounter> {
    let views = Views::new(mounter.clone(), root.to_path_buf(), Duration::from_secs(5));
    Snapshots::open(root, views, Box::new(modes)).unwrap()
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

/// The `lowerdir=` option of a container's rootfs mount.
fn lower(mounts: &[MountSpec]) -> String {
    mounts[0]
        .options
        .iter()
        .find(|o| o.starts_with("lowerdir="))
        .unwrap()
        .clone()
}

fn chain(name: &str) -> ChainId {
    ChainId::from_snapshot_name(name)
}

/// Runs `f` on its own thread and fails the test if it does not return
/// within five seconds (a call stuck behind a lock).
fn returns_soon<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{what} is stuck: {e}"))
}
