//! A private node for the container bench: `pare-snapshotter` and a containerd
//! that has it plugged in, with all state on the real disk in one scratch
//! directory, torn down on drop (containers, shims, mounts, daemons, files).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pare_tests::containerd::{Containerd, Ctr, NAMESPACE, mounts_under};
use pare_tests::snapshotter::PareSnapshotter;

/// The snapshotters under comparison, by their containerd names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Snapshotter {
    /// containerd's built-in overlayfs snapshotter: the baseline.
    Overlayfs,
    /// pare-snapshotter, every container on the profiling view.
    Pare,
    /// A second pare-snapshotter whose images settle after one container
    /// without growth and are never sampled (`--settle-after 1
    /// --sample-rate 0`): once an image has run there, its containers get a
    /// plain overlay of its layers.
    PareSettled,
}

impl Snapshotter {
    /// All, in the order runs are interleaved and printed.
    pub const ALL: [Snapshotter; 3] = [
        Snapshotter::Overlayfs,
        Snapshotter::Pare,
        Snapshotter::PareSettled,
    ];

    /// The name containerd knows it by (`--snapshotter`).
    pub fn name(self) -> &'static str {
        match self {
            Snapshotter::Overlayfs => "overlayfs",
            Snapshotter::Pare => "pare",
            Snapshotter::PareSettled => "pare-settled",
        }
    }
}

/// Counts of backend state that containerd's garbage collection brings back
/// after a container is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// Snapshot directories of the overlayfs snapshotter.
    pub overlayfs: usize,
    /// Snapshot directories of pare-snapshotter.
    pub pare: usize,
    /// Mounted pare views.
    pub views: usize,
    /// Snapshot directories of the settling pare-snapshotter.
    pub settled: usize,
    /// Its mounted views.
    pub settled_views: usize,
}

/// pare-snapshotter and containerd, stopped in that reverse order on drop.
pub struct Node {
    // Fields drop in this order: containers first, then their views, then files.
    containerd: Containerd,
    pare: PareSnapshotter,
    settled: PareSnapshotter,
    _scratch: Scratch,
}

impl Node {
    /// Starts `pare_bin` (pare-snapshotter) and a containerd using it, with
    /// state under a fresh `/var/tmp/pare-bench-containers-<pid>`.
    pub fn start(pare_bin: &Path) -> anyhow::Result<Node> {
        let scratch = Scratch::create()?;
        let pare = PareSnapshotter::start_with(&scratch.0.join("pare"), pare_bin)?;
        let settled = PareSnapshotter::start_with_args(
            &scratch.0.join("pare-settled"),
            pare_bin,
            &["--settle-after", "1", "--sample-rate", "0"],
        )?;
        let config = format!(
            "[proxy_plugins]\n{}{}",
            pare.proxy_plugin(Snapshotter::Pare.name()),
            settled.proxy_plugin(Snapshotter::PareSettled.name())
        );
        let containerd = Containerd::start(&scratch.0.join("containerd"), &config)?;
        Ok(Node {
            containerd,
            pare,
            settled,
            _scratch: scratch,
        })
    }

    /// containerd's socket.
    pub fn address(&self) -> &Path {
        self.containerd.address()
    }

    /// pare-snapshotter's state directory.
    pub fn pare_root(&self) -> &Path {
        self.pare.root()
    }

    /// `ctr` bound to the containerd.
    pub fn ctr(&self) -> Ctr {
        self.containerd.ctr()
    }

    /// `ctr --address A --namespace NS ARGS...` for this containerd, with
    /// `--runc-root` added after `run`: to be timed precisely (the waits of
    /// [`Ctr`] poll every 20 ms).
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.containerd.address())
            .arg("--namespace")
            .arg(NAMESPACE);
        match args.split_first() {
            Some((&"run", rest)) => {
                cmd.arg("run")
                    .arg("--runc-root")
                    .arg(self.containerd.dir().join("runc"))
                    .args(rest);
            }
            _ => {
                cmd.args(args);
            }
        }
        cmd
    }

    /// `pare ARGS... --address A --namespace NS --root R` (the pare CLI at
    /// `pare`) on this node; returns its stdout.
    pub fn pare(&self, pare: &Path, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(pare)
            .args(args)
            .arg("--address")
            .arg(self.address())
            .args(["--namespace", NAMESPACE])
            .arg("--root")
            .arg(self.pare_root())
            .output()
            .with_context(|| format!("cannot start {}", pare.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "pare {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// pare-snapshotter's log so far.
    pub fn pare_log(&self) -> String {
        self.pare.log_text()
    }

    /// The settling pare-snapshotter's state directory.
    pub fn settled_root(&self) -> &Path {
        self.settled.root()
    }

    /// The settling pare-snapshotter's log so far.
    pub fn settled_log(&self) -> String {
        self.settled.log_text()
    }

    /// Copies the logs of pare-snapshotter and containerd into `dir`.
    pub fn save_logs(&self, dir: &Path) -> anyhow::Result<()> {
        fs::create_dir_all(dir)?;
        fs::copy(self.pare.log_path(), dir.join("pare-snapshotter.log"))?;
        fs::copy(
            self.settled.log_path(),
            dir.join("pare-snapshotter-settled.log"),
        )?;
        fs::write(dir.join("containerd.log"), self.containerd.log_text())?;
        Ok(())
    }

    /// The current backend counts.
    pub fn backend(&self) -> Backend {
        let entries = |dir: PathBuf| fs::read_dir(dir).map_or(0, Iterator::count);
        Backend {
            overlayfs: entries(
                self.containerd
                    .root()
                    .join("io.containerd.snapshotter.v1.overlayfs/snapshots"),
            ),
            pare: entries(self.pare.root().join("snapshots")),
            views: self.pare.mounted_views().len(),
            settled: entries(self.settled.root().join("snapshots")),
            settled_views: self.settled.mounted_views().len(),
        }
    }

    /// Waits until the backend counts are `baseline` again: containerd has
    /// garbage-collected the snapshots of removed containers (and pare has
    /// unmounted views nobody uses), so nothing runs behind the next timed run.
    pub fn settle(&self, baseline: Backend, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.backend();
            if now == baseline {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("backend still at {now:?}, not {baseline:?}, after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The node's directory on the real disk (so cold runs read from the disk);
/// removed on drop only when nothing is mounted beneath it, and never across
/// a file system boundary.
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> anyhow::Result<Scratch> {
        let dir = PathBuf::from(format!(
            "/var/tmp/pare-bench-containers-{}",
            std::process::id()
        ));
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mounts = mounts_under(&self.0);
        if !mounts.is_empty() {
            eprintln!(
                "warning: {} kept, mounts remain beneath it: {mounts:?}",
                self.0.display()
            );
            return;
        }
        let _ = Command::new("rm")
            .arg("-rf")
            .arg("--one-file-system")
            .arg(&self.0)
            .status();
    }
}
