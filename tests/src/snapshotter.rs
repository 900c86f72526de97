//! `pare-snapshotter` run by tests: started on a private root and socket,
//! waited for, killed or stopped on demand, and always cleaned up.

use std::fs::File;
use std::os::unix::process::CommandExt;
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
    envs: Vec<(String, String)>,
    args: Vec<String>,
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
        PareSnapshotter::start_with_args(dir, bin, &[])
    }

    /// Like [`PareSnapshotter::start_with`], with more daemon arguments
    /// (`--metrics-address ADDR`). Images never settle (`--settle-after 0`)
    /// and views do not linger (`--linger-seconds 0`) unless `args` say otherwise.
    pub fn start_with_args(dir: &Path, bin: &Path, args: &[&str]) -> Result<PareSnapshotter> {
        std::fs::create_dir_all(dir)?;
        let mut s = PareSnapshotter {
            bin: bin.to_path_buf(),
            child: None,
            root: dir.join("root"),
            socket: dir.join("pare.sock"),
            log: dir.join("pare-snapshotter.log"),
            envs: Vec::new(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        // Test and bench nodes keep learning however many containers of an
        // image they run, and their views go with their last container,
        // unless a test asks otherwise.
        for (flag, off) in [("--settle-after", "0"), ("--linger-seconds", "0")] {
            if !args.contains(&flag) {
                s.args.extend([flag.to_string(), off.to_string()]);
            }
        }
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = File::options().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.bin)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            // Its own process group, as under systemd.
            .process_group(0)
            .arg("--root")
            .arg(&self.root)
            .arg("--address")
            .arg(&self.socket)
            .args(["--log-level", "info,pare_snapshotter=debug"])
            .args(&self.args)
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
            std::thread::sleep(Duration::from_millis(2));
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
        format!("[proxy_plugins]\n{}", self.proxy_plugin("pare"))
    }

    /// This snapshotter as containerd's proxy plugin `name`: the table that
    /// goes under `[proxy_plugins]`.
    pub fn proxy_plugin(&self, name: &str) -> String {
        format!(
            "  [proxy_plugins.{name}]\n    type = \"snapshot\"\n    address = \"{}\"\n",
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

    /// Starts the daemon again with another binary (an upgrade).
    pub fn restart_with(&mut self, bin: &Path) -> Result<()> {
        ensure!(self.child.is_none(), "pare-snapshotter is still running");
        self.bin = bin.to_path_buf();
        self.spawn()
    }

    /// Sets an environment variable for the next (re)start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.envs.push((key.to_string(), value.to_string()));
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM and a clean exit, keeping the guard for a restart. Views keep
    /// serving their containers.
    pub fn terminate(&mut self) -> Result<()> {
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

    /// Pids of the view servers running for this root (from their state files).
    pub fn view_servers(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir(self.root.join("views"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "server") {
                let state: Option<serde_json::Value> = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                if let Some(pid) = state.and_then(|s| s["process"]["pid"].as_i64()) {
                    if Path::new(&format!("/proc/{pid}")).exists() {
                        pids.push(pid as i32);
                    }
                }
            }
        }
        pids
    }

    /// SIGTERM and a clean exit.
    pub fn stop(mut self) -> Result<()> {
        self.terminate()
    }

    /// Mountpoints of views under the root, from mountinfo.
    pub fn mounted_views(&self) -> Vec<PathBuf> {
        let views = std::fs::canonicalize(self.root.join("views"))
            .unwrap_or_else(|_| self.root.join("views"));
        pare_fs::mountinfo::mounts_under(&views)
            .into_iter()
            .filter(|m| m.fs_type == "fuse.pare")
            .map(|m| m.mount_point)
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
        // Views outlive the daemon by design; a test's end takes them down.
        let servers = self.view_servers();
        for view in self.mounted_views() {
            let _ = rustix::mount::unmount(&view, rustix::mount::UnmountFlags::DETACH);
        }
        for pid in servers {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}
