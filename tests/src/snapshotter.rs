//! `pare-snapshotter` run by tests: started on a private root and socket,
//! waited for, killed or stopped on demand, and always cleaned up.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::mounts::wait_timeout;

/// A running `pare-snapshotter`.
pub struct PareSnapshotter {
    bin: PathBuf,
    child: Option<Child>,
    root: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

/// Path of the `pare-snapshotter` binary next to the `pare` binary.
pub fn snapshotter_bin() -> PathBuf {
    crate::prereq::pare_bin().with_file_name("pare-snapshotter")
}

impl PareSnapshotter {
    /// Starts the daemon with state under `dir` and waits until it serves.
    pub fn start(dir: &Path) -> Result<PareSnapshotter> {
        PareSnapshotter::start_with(dir, &snapshotter_bin())
    }

    /// Like [`PareSnapshotter::start`], with the daemon binary `bin`.
    pub fn start_with(dir: &Path, bin: &Path) -> Result<PareSnapshotter> {
        std::fs::create_dir_all(dir)?;
        let mut s = PareSnapshotter {
            bin: bin.to_path_buf(),
            child: None,
            root: dir.join("root"),
            socket: dir.join("pare.sock"),
            log: dir.join("pare-snapshotter.log"),
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = File::options().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.bin)
            .arg("--root")
            .arg(&self.root)
            .arg("--address")
            .arg(&self.socket)
            .args(["--log-level", "info,pare_snapshotter=debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot spawn pare-snapshotter")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().expect("child").try_wait()? {
                bail!("pare-snapshotter exited with {status}: {}", self.log_text());
            }
            ensure!(
                Instant::now() < deadline,
                "pare-snapshotter did not serve: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The socket containerd connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `[proxy_plugins.pare]` table for containerd's config.
    pub fn containerd_config(&self) -> String {
        format!(
            "[proxy_plugins]\n  [proxy_plugins.pare]\n    type = \"snapshot\"\n    address = \"{}\"\n",
            self.socket.display()
        )
    }

    /// The daemon's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What the daemon logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the daemon again on the same root and socket.
    pub fn restart(&mut self) -> Result<()> {
        ensure!(self.child.is_none(), "pare-snapshotter is still running");
        self.spawn()
    }

    /// SIGTERM and a clean exit (views unmounted, profiles flushed).
    pub fn stop(mut self) -> Result<()> {
        let mut child = self.child.take().context("not running")?;
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::TERM,
        )?;
        let status = wait_timeout(&mut child, Duration::from_secs(30))?
            .with_context(|| format!("pare-snapshotter ignored SIGTERM: {}", self.log_text()))?;
        ensure!(
            status.success(),
            "pare-snapshotter exited with {status}: {}",
            self.log_text()
        );
        Ok(())
    }

    /// Mountpoints of views under the root, from mountinfo.
    pub fn mounted_views(&self) -> Vec<PathBuf> {
        let views = self.root.join("views");
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        info.lines()
            .filter(|l| l.contains(" - fuse.pare "))
            .filter_map(|l| l.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|p| p.starts_with(&views))
            .collect()
    }
}

impl Drop for PareSnapshotter {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&child),
                rustix::process::Signal::TERM,
            );
            if !matches!(
                wait_timeout(&mut child, Duration::from_secs(10)),
                Ok(Some(_))
            ) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for view in self.mounted_views() {
            let _ = rustix::mount::unmount(&view, rustix::mount::UnmountFlags::DETACH);
        }
    }
}
