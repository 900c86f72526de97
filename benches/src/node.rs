//! A private node for the container bench: `pare-snapshotter` and a containerd
//! that has it plugged in, with all state on the real disk in one scratch
//! directory, torn down on drop (containers, shims, mounts, daemons, files).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use pare_tests::containerd::{Containerd, Ctr, NAMESPACE, mounts_under};
use pare_tests::mounts::wait_timeout;
use rustix::mount::UnmountFlags;
use rustix::process::{Pid, Signal};

/// The snapshotters under comparison, by their containerd names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Snapshotter {
    /// containerd's built-in overlayfs snapshotter: the baseline.
    Overlayfs,
    /// pare-snapshotter, every container on the profiling view.
    Pare,
}

impl Snapshotter {
    /// Both, in the order runs are interleaved and printed.
    pub const ALL: [Snapshotter; 2] = [Snapshotter::Overlayfs, Snapshotter::Pare];

    /// The name containerd knows it by (`--snapshotter`).
    pub fn name(self) -> &'static str {
        match self {
            Snapshotter::Overlayfs => "overlayfs",
            Snapshotter::Pare => "pare",
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
}

/// pare-snapshotter and containerd, stopped in that reverse order on drop.
pub struct Node {
    // Fields drop in this order: containers first, then their views, then files.
    containerd: Containerd,
    pare: Daemon,
    _scratch: Scratch,
}

impl Node {
    /// Starts `pare_bin` (pare-snapshotter) and a containerd using it, with
    /// state under a fresh `/var/tmp/pare-bench-containers-<pid>`.
    pub fn start(pare_bin: &Path) -> anyhow::Result<Node> {
        let scratch = Scratch::create()?;
        let pare = Daemon::start(pare_bin, &scratch.0.join("pare"))?;
        let containerd = Containerd::start(&scratch.0.join("containerd"), &pare.config())?;
        Ok(Node {
            containerd,
            pare,
            _scratch: scratch,
        })
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

    /// pare-snapshotter's log so far.
    pub fn pare_log(&self) -> String {
        fs::read_to_string(&self.pare.log).unwrap_or_default()
    }

    /// Copies the logs of pare-snapshotter and containerd into `dir`.
    pub fn save_logs(&self, dir: &Path) -> anyhow::Result<()> {
        fs::create_dir_all(dir)?;
        fs::copy(&self.pare.log, dir.join("pare-snapshotter.log"))?;
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
            pare: entries(self.pare.root.join("snapshots")),
            views: self.pare.mounted_views().len(),
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

/// A `pare-snapshotter` child on a private root and socket; SIGTERM on drop,
/// and any view it left is detached.
struct Daemon {
    child: Child,
    root: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(bin: &Path, dir: &Path) -> anyhow::Result<Daemon> {
        fs::create_dir_all(dir)?;
        let log = dir.join("pare-snapshotter.log");
        let (root, socket) = (dir.join("root"), dir.join("pare.sock"));
        let child = Command::new(bin)
            .arg("--root")
            .arg(&root)
            .arg("--address")
            .arg(&socket)
            .args(["--log-level", "info,pare_snapshotter=debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot spawn {}", bin.display()))?;
        let mut daemon = Daemon {
            child,
            root,
            socket,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&daemon.socket).is_err() {
            let log = || fs::read_to_string(&daemon.log).unwrap_or_default();
            if let Some(status) = daemon.child.try_wait()? {
                bail!("pare-snapshotter exited with {status}: {}", log());
            }
            ensure!(
                Instant::now() < deadline,
                "pare-snapshotter did not serve: {}",
                log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }

    /// The `[proxy_plugins.pare]` table for containerd's config.
    fn config(&self) -> String {
        format!(
            "[proxy_plugins]\n  [proxy_plugins.pare]\n    type = \"snapshot\"\n    address = \"{}\"\n",
            self.socket.display()
        )
    }

    fn mounted_views(&self) -> Vec<PathBuf> {
        let views = self.root.join("views");
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        info.lines()
            .filter(|l| l.contains(" - fuse.pare "))
            .filter_map(|l| l.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|p| p.starts_with(&views))
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, Signal::TERM);
        }
        if !matches!(
            wait_timeout(&mut self.child, Duration::from_secs(10)),
            Ok(Some(_))
        ) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for view in self.mounted_views() {
            let _ = rustix::mount::unmount(&view, UnmountFlags::DETACH);
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
