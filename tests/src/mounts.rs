//! Mounts made by the tests, each an RAII guard that unmounts on drop: a
//! `noatime` tmpfs for fixture layers, kernel overlayfs (the oracle) and a
//! `pare mount` child process.
//!
//! A guard that is dropped while its mount is still live detaches it
//! (`umount -l`), so a failing test never leaves a mount behind and never
//! deletes the contents of a live mountpoint.

use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use pare_fs::mountinfo;
use rustix::mount::{MountFlags, UnmountFlags};

use crate::poll::wait_for;

/// How long a `pare mount` may take to appear or to exit.
pub const PARE_TIMEOUT: Duration = Duration::from_secs(10);

/// True when something is mounted on `path` (canonical).
pub fn is_mounted(path: &Path) -> bool {
    mountinfo::mount_at(path).is_some()
}

/// True when the mount on `path` is a `pare` view: FUSE (`fuse.pare` as
/// intended; plain `fuse` when the subtype got lost) with source `pare`.
fn is_pare_view(path: &Path) -> bool {
    mountinfo::mount_at(path)
        .is_some_and(|m| m.fs_type == "fuse.pare" || (m.fs_type == "fuse" && m.source == "pare"))
}

/// Detaches whatever is mounted on `path`, if anything.
fn detach(path: &Path) {
    while is_mounted(path) {
        if rustix::mount::unmount(path, UnmountFlags::DETACH).is_err() {
            break;
        }
    }
}

/// A kernel mount (tmpfs or overlay), detached on drop if still mounted.
#[derive(Debug)]
pub struct Mount {
    path: PathBuf,
}

impl Mount {
    /// Mounts a fresh tmpfs with `noatime` on the directory `path`.
    pub fn tmpfs(path: &Path) -> Result<Mount> {
        let data = CString::new("size=4g,mode=0755")?;
        Self::new("tmpfs", path, "tmpfs", MountFlags::NOATIME, &data)
    }

    /// Mounts kernel overlayfs read-only on `path` with `lowerdirs` (topmost first).
    pub fn overlay(lowerdirs: &[PathBuf], path: &Path) -> Result<Mount> {
        let joined: Vec<String> = lowerdirs.iter().map(|d| d.display().to_string()).collect();
        let data = CString::new(format!("lowerdir={}", joined.join(":")))?;
        Self::new("overlay", path, "overlay", MountFlags::RDONLY, &data)
    }

    fn new(
        source: &str,
        path: &Path,
        fstype: &str,
        flags: MountFlags,
        data: &CString,
    ) -> Result<Mount> {
        std::fs::create_dir_all(path)?;
        let path = std::fs::canonicalize(path)?;
        rustix::mount::mount(source, &path, fstype, flags, data.as_c_str())
            .with_context(|| format!("mount -t {fstype} -o {data:?} {}", path.display()))?;
        Ok(Mount { path })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts now (not lazily), reporting failure.
    pub fn unmount(self) -> Result<()> {
        rustix::mount::unmount(&self.path, UnmountFlags::empty())
            .with_context(|| format!("umount {}", self.path.display()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        detach(&self.path);
    }
}

/// A `pare mount` child process serving a view.
#[derive(Debug)]
pub struct PareMount {
    child: Child,
    path: PathBuf,
    log: PathBuf,
}

impl PareMount {
    /// Runs `pare mount [args] LOWERDIRS MOUNTPOINT` and waits until the
    /// mountpoint shows its FUSE mount. The child's stderr goes to `log`.
    pub fn start(
        lowerdirs: &[PathBuf],
        mountpoint: &Path,
        args: &[&str],
        log: &Path,
    ) -> Result<PareMount> {
        std::fs::create_dir_all(mountpoint)?;
        let path = std::fs::canonicalize(mountpoint)?;
        let joined: Vec<String> = lowerdirs.iter().map(|d| d.display().to_string()).collect();
        let child = Command::new(crate::prereq::pare_bin())
            .arg("mount")
            .args(args)
            .arg(joined.join(":"))
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log)?)
            .spawn()
            .context("cannot spawn pare mount")?;
        let mut mount = PareMount {
            child,
            path,
            log: log.to_path_buf(),
        };
        let what = format!("pare mount to mount {}", mount.path.display());
        let mounted = wait_for(PARE_TIMEOUT, &what, || {
            if is_pare_view(&mount.path) {
                return Ok(Some(()));
            }
            if let Some(status) = mount.child.try_wait()? {
                bail!("pare mount exited with {status} before mounting");
            }
            Ok(None)
        });
        if let Err(e) = mounted {
            bail!("{e:#}: {}", mount.log_text());
        }
        Ok(mount)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the child wrote to stderr.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts with `umount` and checks that the child exits with status 0.
    pub fn finish(mut self) -> Result<()> {
        let status = Command::new("umount").arg(&self.path).status()?;
        ensure!(
            status.success(),
            "umount {} failed: {status}",
            self.path.display()
        );
        let status = wait_timeout(&mut self.child, PARE_TIMEOUT)?.with_context(|| {
            format!("pare mount did not exit after umount: {}", self.log_text())
        })?;
        ensure!(
            status.success(),
            "pare mount exited with {status}: {}",
            self.log_text()
        );
        Ok(())
    }
}

impl PareMount {
    /// Kills the daemon with SIGKILL, reaps it and detaches the dead mount.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill().context("cannot SIGKILL pare mount")?;
        self.child.wait()?;
        detach(&self.path);
        Ok(())
    }
}

impl Drop for PareMount {
    fn drop(&mut self) {
        detach(&self.path);
        if matches!(
            wait_timeout(&mut self.child, Duration::from_secs(5)),
            Ok(None)
        ) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for `child` up to `timeout`; `None` when it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Scratch space of one test: a temporary directory that is kept (not
/// deleted) when something is still mounted beneath it. Declare it after the
/// mount guards so that it drops last.
#[derive(Debug)]
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
}

impl Scratch {
    /// A fresh scratch directory.
    pub fn new() -> Result<Scratch> {
        let dir = tempfile::Builder::new().prefix("pare-test-").tempdir()?;
        Ok(Scratch { dir: Some(dir) })
    }

    /// Its path (canonical).
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("scratch dir").path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let live = !mountinfo::mounts_under(dir.path()).is_empty();
        if live {
            eprintln!(
                "keeping {}: something is still mounted beneath it",
                dir.path().display()
            );
            let _ = dir.keep();
        }
    }
}
