//! The view gives inodes back when the kernel forgets them: a view of a layer
//! with tens of thousands of files holds a node per stat'ed file, then far
//! fewer once the kernel drops its inode cache, and every name keeps its inode
//! number (stat and readdir agree, before and after).

use std::collections::BTreeMap;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use pare_fs::layers::LayerStack;
use pare_fs::view::{self, MountedView, View, ViewOptions};
use pare_tests::mounts::{Mount, Scratch};
use pare_tests::prereq::{Need, privileged};

const NEEDS: &[Need] = &[Need::Root, Need::Fuse];

/// Files in the layer, spread over directories of [`PER_DIR`].
const FILES: usize = 40_000;
const PER_DIR: usize = 1_000;
/// Every this many files is also opened and read (a passthrough backing file
/// or a pread handle that the forget must let go of).
const READ_EVERY: usize = 97;

/// Longest wait for the kernel's FORGETs to reach the view.
const FORGET_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the view to unmount and stop serving.
const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// A view served by this process, unmounted on drop (the mount point
/// detached when that does not finish in time).
struct Served {
    view: Option<MountedView>,
    mountpoint: PathBuf,
}

impl Served {
    fn mount(layers: Vec<PathBuf>, mountpoint: &Path) -> Result<Served> {
        std::fs::create_dir_all(mountpoint)?;
        let stack = LayerStack::open(layers)?;
        let view = view::mount(View::new(stack, None), mountpoint, &ViewOptions::default())?;
        let mountpoint = view.mountpoint().to_path_buf();
        Ok(Served {
            view: Some(view),
            mountpoint,
        })
    }

    fn view(&self) -> &MountedView {
        self.view.as_ref().expect("mounted")
    }

    fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts and waits (at most [`UNMOUNT_TIMEOUT`]) for serving to end.
    fn finish(mut self) -> Result<()> {
        let view = self.view.take().expect("mounted");
        unmount_within(view, &self.mountpoint)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(view) = self.view.take() {
            if let Err(e) = unmount_within(view, &self.mountpoint) {
                eprintln!("{e:#}");
            }
        }
    }
}

fn unmount_within(view: MountedView, mountpoint: &Path) -> Result<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(view.unmount());
    });
    match rx.recv_timeout(UNMOUNT_TIMEOUT) {
        Ok(result) => result.with_context(|| format!("unmounting {}", mountpoint.display())),
        Err(_) => {
            let _ = rustix::mount::unmount(mountpoint, rustix::mount::UnmountFlags::DETACH);
            bail!(
                "the view on {} did not stop within {UNMOUNT_TIMEOUT:?}; detached",
                mountpoint.display()
            )
        }
    }
}

/// Writes `d000/f00000` ... (each file holding its own name) and one
/// hardlink pair `hl/a`, `hl/b`.
fn write_layer(layer: &Path) -> Result<()> {
    for i in 0..FILES {
        let dir = layer.join(format!("d{:03}", i / PER_DIR));
        if i % PER_DIR == 0 {
            std::fs::create_dir(&dir)?;
        }
        let name = format!("f{i:05}");
        std::fs::write(dir.join(&name), name.as_bytes())?;
    }
    std::fs::create_dir(layer.join("hl"))?;
    std::fs::write(layer.join("hl/a"), b"one inode, two names")?;
    std::fs::hard_link(layer.join("hl/a"), layer.join("hl/b"))?;
    Ok(())
}

/// Inode numbers of every path under `root` as stat reports them; checks
/// that readdir reports the same numbers (d_ino), and reads every
/// [`READ_EVERY`]th file.
fn stat_all(root: &Path) -> Result<BTreeMap<PathBuf, u64>> {
    let mut inos = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    let mut files = 0usize;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path)?;
            ensure!(
                entry.ino() == meta.ino(),
                "{}: readdir says inode {}, stat says {}",
                path.display(),
                entry.ino(),
                meta.ino()
            );
            if meta.is_dir() {
                dirs.push(path.clone());
            } else {
                if files % READ_EVERY == 0 {
                    let content = std::fs::read(&path)?;
                    ensure!(!content.is_empty(), "{} read empty", path.display());
                }
                files += 1;
            }
            inos.insert(path.strip_prefix(root)?.to_path_buf(), meta.ino());
        }
    }
    Ok(inos)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn privileged_forgotten_inodes_leave_the_view_and_keep_their_numbers() -> Result<()> {
    let test = "privileged_forgotten_inodes_leave_the_view_and_keep_their_numbers";
    if !privileged(test, NEEDS) {
        return Ok(());
    }
    let scratch = Scratch::new()?;
    let tmpfs = Mount::tmpfs(&scratch.path().join("layers"))?;
    let layer = tmpfs.path().join("layer");
    std::fs::create_dir(&layer)?;
    write_layer(&layer)?;

    let rss_before = rss_kib();
    let served = Served::mount(vec![layer], &scratch.path().join("view"))?;
    let first = stat_all(served.path())?;
    let dirs = FILES.div_ceil(PER_DIR) + 1;
    assert_eq!(first.len(), FILES + 2 + dirs, "paths under the view");
    assert_eq!(
        first[Path::new("hl/a")],
        first[Path::new("hl/b")],
        "hardlinks"
    );
    let held = served.view().live_nodes();
    let rss_held = rss_kib();
    assert!(
        held > FILES,
        "{held} live nodes after stat'ing {FILES} files"
    );

    // The kernel forgets inodes it evicts; FORGETs reach the view a little later.
    let started = Instant::now();
    let mut rounds = 0;
    let after = loop {
        std::fs::write("/proc/sys/vm/drop_caches", "2").context("drop_caches")?;
        rounds += 1;
        std::thread::sleep(Duration::from_millis(100));
        let live = served.view().live_nodes();
        if live < FILES / 100 {
            break live;
        }
        ensure!(
            started.elapsed() < FORGET_TIMEOUT,
            "{live} nodes still live {FORGET_TIMEOUT:?} after dropping the inode cache \
             ({held} before, {rounds} rounds of drop_caches)"
        );
    };
    let rss_after = rss_kib();
    eprintln!(
        "live nodes: {held} after stat'ing {FILES} files, {after} after drop_caches \
         ({rounds} rounds, {:?}); VmRSS of the serving process: {rss_before} KiB before \
         mounting, {rss_held} KiB holding them, {rss_after} KiB after the forgets",
        started.elapsed()
    );

    let second = stat_all(served.path())?;
    let changed: Vec<String> = first
        .iter()
        .filter(|(path, ino)| second.get(*path) != Some(ino))
        .take(10)
        .map(|(path, ino)| format!("{}: {ino} then {:?}", path.display(), second.get(path)))
        .collect();
    assert!(
        changed.is_empty() && first.len() == second.len(),
        "inode numbers changed after the forgets ({} paths, then {}):\n{}",
        first.len(),
        second.len(),
        changed.join("\n")
    );
    let again = served.view().live_nodes();
    eprintln!(
        "live nodes: {again} after stat'ing again; VmRSS {} KiB",
        rss_kib()
    );
    assert!(again > FILES, "{again} live nodes after stat'ing again");
    served.finish()?;
    tmpfs.unmount()
}
