//! A private containerd for tests (its own root, state and socket under one
//! directory) and `ctr` bound to it. Dropping it stops containerd, kills the
//! shims and containers it started and unmounts everything beneath its
//! directory, so a failing test leaves nothing behind.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pare_fs::mountinfo;
use rustix::mount::UnmountFlags;
use rustix::process::{Pid, Signal};

use crate::mounts::wait_timeout;
use crate::poll::POLL_INTERVAL;

/// How long containerd may take to answer on its socket, or to stop.
pub const CONTAINERD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `ctr` command may take.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(120);
/// The containerd namespace the tests use.
pub const NAMESPACE: &str = "pare-tests";

/// A containerd child process serving `dir/containerd.sock`.
#[derive(Debug)]
pub struct Containerd {
    child: Option<Child>,
    dir: PathBuf,
    address: PathBuf,
    log: PathBuf,
}

impl Containerd {
    /// Writes `dir/config.toml` (version 2, root `dir/root`, state
    /// `dir/state`, socket `dir/containerd.sock`, CRI disabled, debug log
    /// level) with `config_extra` appended (tables only, e.g. a
    /// `[proxy_plugins.pare]` section), starts containerd with its log in
    /// `dir/containerd.log` and waits until `ctr version` answers.
    pub fn start(dir: &Path, config_extra: &str) -> Result<Containerd> {
        std::fs::create_dir_all(dir)?;
        let dir = std::fs::canonicalize(dir)?;
        let address = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(&dir, &address, config_extra))?;
        let log = dir.join("containerd.log");
        let log_file = File::create(&log)?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("cannot spawn containerd")?;
        let mut containerd = Containerd {
            child: Some(child),
            dir,
            address,
            log,
        };
        containerd.wait_ready()?;
        Ok(containerd)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + CONTAINERD_TIMEOUT;
        loop {
            if self.address.exists() && self.ctr().ctr(&["version"]).is_ok() {
                return Ok(());
            }
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait()? {
                bail!(
                    "containerd exited with {status} before serving: {}",
                    self.log_tail(30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not answer within {CONTAINERD_TIMEOUT:?}: {}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The socket (`--address` of `ctr`).
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The directory holding config, root, state, socket and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's root (`dir/root`), e.g. `root/io.containerd.snapshotter.v1.overlayfs`.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// The whole containerd log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the containerd log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// containerd's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `ctr` bound to this containerd, in namespace [`NAMESPACE`], with runc
    /// state in `dir/runc`.
    pub fn ctr(&self) -> Ctr {
        Ctr {
            address: self.address.clone(),
            namespace: NAMESPACE.to_string(),
            runc_root: self.dir.join("runc"),
            timeout: CTR_TIMEOUT,
        }
    }

    /// Stops everything (as on drop) and reports whether cleanup left
    /// anything: a shim or a mount beneath the directory.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown();
        let shims = shims_of(&self.address);
        let mounts = mounts_under(&self.dir);
        if !shims.is_empty() || !mounts.is_empty() {
            bail!("containerd left shims {shims:?} and mounts {mounts:?}");
        }
        Ok(())
    }

    /// Kills the containers (children of this containerd's shims), stops
    /// containerd (SIGTERM, then SIGKILL), kills the shims and detaches every
    /// mount beneath the directory.
    fn shutdown(&mut self) {
        let shims = shims_of(&self.address);
        for shim in &shims {
            for child in children_of(*shim) {
                signal(child, Signal::KILL);
            }
        }
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, Signal::TERM);
            if !matches!(wait_timeout(&mut child, CONTAINERD_TIMEOUT), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for shim in shims_of(&self.address) {
            signal(shim, Signal::KILL);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !shims_of(&self.address).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..10 {
            let mounts = mounts_under(&self.dir);
            if mounts.is_empty() {
                break;
            }
            for mount in &mounts {
                let _ = rustix::mount::unmount(mount, UnmountFlags::DETACH);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn config_toml(dir: &Path, address: &Path, extra: &str) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{address}"

[debug]
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

{extra}
"#,
        address = address.display(),
    )
}

fn signal(pid: i32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Pids of the processes in `/proc` whose command line satisfies `keep`.
fn processes(keep: impl Fn(i32, &[String]) -> bool) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            keep(*pid, &args)
        })
        .collect()
}

/// The containerd shims serving `address` (found by their `-address` argument).
pub fn shims_of(address: &Path) -> Vec<i32> {
    let address = address.to_string_lossy();
    processes(|_, args| {
        args.first().is_some_and(|a| a.contains("containerd-shim"))
            && args
                .windows(2)
                .any(|w| w[0] == "-address" && w[1] == address)
    })
}

fn children_of(parent: i32) -> Vec<i32> {
    processes(|pid, _| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
            == Some(parent)
    })
}

/// Mount points at or beneath `dir`, deepest first (the order to detach
/// them in), from [`mountinfo::mounts_under`].
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    mountinfo::mounts_under(dir)
        .into_iter()
        .map(|m| m.mount_point)
        .collect()
}

/// `ctr` with `--address` and `--namespace` preset.
#[derive(Clone, Debug)]
pub struct Ctr {
    address: PathBuf,
    namespace: String,
    runc_root: PathBuf,
    timeout: Duration,
}

impl Ctr {
    /// Runs `ctr --address A --namespace NS ARGS...` and returns its output;
    /// an error (with stderr) when it fails or outlives [`CTR_TIMEOUT`].
    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args);
        let shown = format!("ctr {}", args.join(" "));
        let out = run_with_timeout(&mut cmd, self.timeout).with_context(|| shown.clone())?;
        if !out.status.success() {
            bail!(
                "{shown} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim(),
            );
        }
        Ok(out)
    }

    /// This `ctr` in another namespace.
    pub fn namespace(mut self, namespace: &str) -> Ctr {
        self.namespace = namespace.to_string();
        self
    }

    /// `ctr images import --snapshotter S TARBALL` (unpacks the layers too).
    pub fn import(&self, tarball: &Path, snapshotter: &str) -> Result<()> {
        let path = tarball.to_str().context("non-UTF-8 tarball path")?;
        self.ctr(&["images", "import", "--snapshotter", snapshotter, path])?;
        Ok(())
    }

    /// `ctr run --rm --snapshotter S IMAGE ID CMD...` (the image's entrypoint
    /// and cmd when `cmd` is empty); returns the container's stdout.
    pub fn run(&self, image: &str, id: &str, snapshotter: &str, cmd: &[&str]) -> Result<String> {
        self.run_with(&["--rm"], image, id, snapshotter, cmd)
    }

    /// `ctr run --detach ...`: starts container `id` and returns once its task
    /// runs. Remove it with [`Ctr::remove`] (or let [`Containerd`] drop).
    pub fn run_detached(
        &self,
        image: &str,
        id: &str,
        snapshotter: &str,
        cmd: &[&str],
    ) -> Result<()> {
        self.run_with(&["--detach"], image, id, snapshotter, cmd)?;
        Ok(())
    }

    /// Like [`Ctr::run_detached`], in the host's network namespace (a
    /// service listening on 127.0.0.1 is reachable from the test).
    pub fn run_detached_host_net(
        &self,
        image: &str,
        id: &str,
        snapshotter: &str,
        cmd: &[&str],
    ) -> Result<()> {
        self.run_with(&["--detach", "--net-host"], image, id, snapshotter, cmd)?;
        Ok(())
    }

    /// `ctr run FLAGS --runc-root R --snapshotter S IMAGE ID CMD...`: `flags`
    /// say how (`--rm` to wait for the container and remove it, `--detach` to
    /// return once its task runs) and with what (`--allow-new-privs`,
    /// `--mount ...`). Returns the container's stdout (empty when detached).
    pub fn run_with(
        &self,
        flags: &[&str],
        image: &str,
        id: &str,
        snapshotter: &str,
        cmd: &[&str],
    ) -> Result<String> {
        let runc_root = self.runc_root.to_str().context("non-UTF-8 runc root")?;
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[
            "--runc-root",
            runc_root,
            "--snapshotter",
            snapshotter,
            image,
            id,
        ]);
        args.extend_from_slice(cmd);
        String::from_utf8(self.ctr(&args)?.stdout).context("container stdout is not UTF-8")
    }

    /// Kills the task of container `id` (SIGKILL), deletes it and the
    /// container with its snapshot.
    pub fn remove(&self, id: &str) -> Result<()> {
        // The task may have exited already; delete below reports real trouble.
        let _ = self.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]);
        let deadline = Instant::now() + CONTAINERD_TIMEOUT;
        while self.ctr(&["tasks", "delete", id]).is_err() {
            if self
                .ctr(&["tasks", "ls", "-q"])?
                .stdout
                .split(|b| *b == b'\n')
                .all(|t| t != id.as_bytes())
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("task {id} did not stop within {CONTAINERD_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.ctr(&["containers", "delete", id])?;
        Ok(())
    }
}

/// Everything written to `file` so far (a command's captured output).
pub fn read_back(file: &mut File) -> Result<Vec<u8>> {
    file.rewind()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Runs `cmd` with stdin closed and stdout and stderr in temporary files (no
/// pipe to fill up), killing it after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    Ok(run_watched(cmd, timeout, |_| {})?.0)
}

/// Like [`run_with_timeout`], calling `watch` with the child's pid every
/// [`POLL_INTERVAL`] while it runs (e.g. to sample its memory); returns its
/// output and how long it ran.
pub fn run_watched(
    cmd: &mut Command,
    timeout: Duration,
    mut watch: impl FnMut(u32),
) -> Result<(Output, Duration)> {
    let mut stdout = tempfile::tempfile()?;
    let mut stderr = tempfile::tempfile()?;
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(stdout.try_clone()?)
        .stderr(stderr.try_clone()?)
        .spawn()
        .context("cannot spawn")?;
    let status = loop {
        watch(child.id());
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let text = String::from_utf8_lossy(&read_back(&mut stderr)?).into_owned();
            bail!("timed out after {timeout:?}: {}", text.trim());
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let elapsed = started.elapsed();
    let output = Output {
        status,
        stdout: read_back(&mut stdout)?,
        stderr: read_back(&mut stderr)?,
    };
    Ok((output, elapsed))
}
