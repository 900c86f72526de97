//! The read-only mounts under comparison, as guards that always unmount:
//! kernel overlayfs, fuse-overlayfs, and the pare view.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pare_fs::mountinfo;

use crate::run;

/// Which file system serves the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Kernel overlayfs, read-only with lowerdirs only: the baseline.
    Overlayfs,
    /// fuse-overlayfs, the usual FUSE overlay.
    FuseOverlayfs,
    /// `pare mount`, profiling every first access, requests over io_uring.
    Pare,
    /// The same over `/dev/fuse`.
    PareDevFuse,
}

impl Kind {
    /// All kinds, in the order runs are interleaved and printed.
    pub const ALL: [Kind; 4] = [
        Kind::Overlayfs,
        Kind::FuseOverlayfs,
        Kind::Pare,
        Kind::PareDevFuse,
    ];

    /// The two pare kinds.
    pub const PARE: [Kind; 2] = [Kind::Pare, Kind::PareDevFuse];

    /// The name in tables and JSON (and of the mount point).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Overlayfs => "overlayfs",
            Kind::FuseOverlayfs => "fuse-overlayfs",
            Kind::Pare => "pare",
            Kind::PareDevFuse => "pare-dev-fuse",
        }
    }

    /// The `pare mount --transport` of a pare kind.
    pub fn transport(self) -> Option<&'static str> {
        match self {
            Kind::Pare => Some("io-uring"),
            Kind::PareDevFuse => Some("dev-fuse"),
            Kind::Overlayfs | Kind::FuseOverlayfs => None,
        }
    }
}

/// How to start the pare view.
#[derive(Debug, Clone)]
pub struct PareCommand {
    /// The `pare` binary.
    pub binary: PathBuf,
    /// Extra arguments after `mount` (e.g. `--no-passthrough`, `--threads 4`).
    pub args: Vec<String>,
}

/// A mounted view of the layers; unmounted on drop.
pub struct Mount {
    dir: PathBuf,
    /// The serving `pare mount` process, with its log and profile files.
    pare: Option<(Child, PathBuf, PathBuf)>,
}

impl Mount {
    /// Mounts `lowerdirs` (topmost first) read-only on the empty directory `dir`.
    /// `scratch` holds pare's log and profile.
    pub fn new(
        kind: Kind,
        lowerdirs: &str,
        dir: &Path,
        scratch: &Path,
        pare: &PareCommand,
    ) -> anyhow::Result<Self> {
        let mut mount = Mount {
            dir: dir.to_path_buf(),
            pare: None,
        };
        match kind {
            Kind::Overlayfs => run(Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o"])
                .arg(format!("ro,lowerdir={lowerdirs}"))
                .arg(dir))?,
            // Without an upperdir fuse-overlayfs is read-only; it daemonizes once mounted.
            Kind::FuseOverlayfs => run(Command::new("fuse-overlayfs")
                .arg("-o")
                .arg(format!("ro,lowerdir={lowerdirs}"))
                .arg(dir))?,
            Kind::Pare | Kind::PareDevFuse => {
                let name = kind.name();
                let log = scratch.join(format!("{name}.log"));
                let profile = scratch.join(format!("{name}.profile"));
                let _ = fs::remove_file(&profile);
                let child = Command::new(&pare.binary)
                    .env("NO_COLOR", "1")
                    .arg("mount")
                    .arg("--profile")
                    .arg(&profile)
                    .arg("--transport")
                    .args(kind.transport())
                    .args(&pare.args)
                    .arg(lowerdirs)
                    .arg(dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(fs::File::create(&log)?)
                    .spawn()
                    .with_context(|| format!("cannot start {}", pare.binary.display()))?;
                mount.pare = Some((child, log, profile));
                mount.wait_mounted()?;
            }
        }
        Ok(mount)
    }

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unmounts, waits for a FUSE daemon to exit, and returns pare's log ("" for others).
    pub fn unmount(mut self) -> anyhow::Result<String> {
        self.teardown()
    }

    fn wait_mounted(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_mounted(&self.dir)? {
            if let Some((child, log, _)) = &mut self.pare {
                if let Some(status) = child.try_wait()? {
                    let log = fs::read_to_string(log).unwrap_or_default();
                    bail!(
                        "pare mount exited ({status}) before mounting: {}",
                        log.trim()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!("{} was not mounted within 10 s", self.dir.display());
            }
            sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn teardown(&mut self) -> anyhow::Result<String> {
        let mut result = Ok(());
        if is_mounted(&self.dir)? {
            result = unmount_dir(&self.dir);
        }
        let Some((mut child, log, profile)) = self.pare.take() else {
            return result.map(|()| String::new());
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("pare mount did not exit within 10 s of the unmount; killed it");
            }
            sleep(Duration::from_millis(5));
        }
        let text = fs::read_to_string(&log).unwrap_or_default();
        let _ = fs::remove_file(&log);
        let _ = fs::remove_file(&profile);
        result.map(|()| text)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Whether `dir` is a mount point in this mount namespace.
pub fn is_mounted(dir: &Path) -> anyhow::Result<bool> {
    let table = mountinfo::read().context("cannot read /proc/self/mountinfo")?;
    Ok(table.iter().any(|m| m.mount_point == dir))
}

/// Unmounts `dir`, retrying while it is busy, lazily as a last resort.
fn unmount_dir(dir: &Path) -> anyhow::Result<()> {
    for _ in 0..50 {
        if Command::new("umount")
            .arg(dir)
            .stderr(Stdio::null())
            .status()?
            .success()
        {
            return Ok(());
        }
        sleep(Duration::from_millis(100));
    }
    run(Command::new("umount").arg("-l").arg(dir))
        .with_context(|| format!("cannot unmount {}", dir.display()))?;
    bail!("{} stayed busy; detached it with umount -l", dir.display())
}
