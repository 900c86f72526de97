//! View servers: each image view is served by a process of its own
//! (`pare-snapshotter serve-view`), started by the snapshotter in its own
//! process group, so that containers keep their root file system when the
//! snapshotter is killed, restarted or upgraded. A server records its identity
//! in a state file beside the mountpoint; a restarted snapshotter adopts every
//! server that still serves its mount.
//!
//! Waits are bounded: a server has `start_timeout` to report its mount ready,
//! and `stop_timeout` to unmount and exit after SIGTERM. A server that misses
//! the stop deadline while its mount is still here is hung: its FUSE
//! connection is aborted, the mount detached and the process killed. A server
//! whose mount is still used outside this mount namespace detaches it and
//! serves those users until they go; the snapshotter does not wait for that.

mod process;
pub mod serve;

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use process::ProcessId;

use crate::views::{MountError, StopOutcome, ViewMounter, ViewSpec};

/// What a running server writes beside its mountpoint (`<mountpoint>.server`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerState {
    /// The serving process.
    pub process: ProcessId,
    /// FUSE connection number of its mount.
    pub connection: u32,
    /// The image chain it serves.
    pub chain: String,
    /// The mountpoint.
    pub mountpoint: PathBuf,
}

/// The state file of the view mounted at `mountpoint`.
pub fn state_path(mountpoint: &Path) -> PathBuf {
    let mut name = mountpoint.as_os_str().to_owned();
    name.push(".server");
    PathBuf::from(name)
}

impl ServerState {
    /// Reads the state file of `mountpoint`.
    pub fn read(mountpoint: &Path) -> Option<ServerState> {
        let bytes = std::fs::read(state_path(mountpoint)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes the state file atomically.
    pub fn write(&self) -> std::io::Result<()> {
        let path = state_path(&self.mountpoint);
        let tmp = path.with_extension(format!("server.tmp-{}", self.process.pid));
        std::fs::write(
            &tmp,
            serde_json::to_vec(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &path)
    }

    /// Removes the state file if it is still this server's.
    pub fn remove_if_mine(&self) {
        if ServerState::read(&self.mountpoint).is_some_and(|s| s.process == self.process) {
            let _ = std::fs::remove_file(state_path(&self.mountpoint));
        }
    }

    /// True while the server runs and its mount is the one mounted here. An
    /// unreadable mount table counts as mounted: a healthy view must never
    /// be replaced because of a failed read.
    pub fn is_serving(&self) -> bool {
        self.process.is_alive()
            && match pare_fs::mountinfo::read() {
                Ok(mounts) => mounts
                    .iter()
                    .rev()
                    .find(|m| m.mount_point == self.mountpoint)
                    .is_some_and(|m| m.major == 0 && m.minor == self.connection),
                Err(_) => true,
            }
    }

    /// True when this server's connection is what is mounted at the mountpoint.
    pub fn mounted_here(&self) -> bool {
        pare_fs::mountinfo::mount_at(&self.mountpoint)
            .is_some_and(|m| m.major == 0 && m.minor == self.connection)
    }
}

/// How view servers are run.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The program to run (`/proc/self/exe`: this very binary, also after an
    /// upgrade replaced the file).
    pub program: PathBuf,
    /// Serving threads per view.
    pub threads: usize,
    /// FUSE passthrough when the kernel has it.
    pub passthrough: bool,
    /// Profile flush interval.
    pub flush: Duration,
    /// Log filter handed to servers.
    pub log_level: String,
    /// `json` for JSON logs.
    pub log_json: bool,
    /// How long a server may take to report its mount ready.
    pub start_timeout: Duration,
    /// How long a server may take to unmount and exit.
    pub stop_timeout: Duration,
}

/// The real mounter: one `serve-view` process per view.
pub struct ProcessMounter {
    config: ServerConfig,
}

impl ProcessMounter {
    /// A mounter running servers as `config` says.
    pub fn new(config: ServerConfig) -> ProcessMounter {
        ProcessMounter { config }
    }

    fn command(&self, spec: &ViewSpec) -> Command {
        let c = &self.config;
        let mut cmd = Command::new(&c.program);
        cmd.arg0("pare-snapshotter")
            .arg("serve-view")
            .arg("--mountpoint")
            .arg(&spec.mountpoint)
            .arg("--image")
            .arg(&spec.chain)
            .arg("--threads")
            .arg(c.threads.to_string())
            .arg("--flush-ms")
            .arg(c.flush.as_millis().to_string())
            .arg("--log-level")
            .arg(&c.log_level);
        if c.log_json {
            cmd.arg("--log-json");
        }
        if !c.passthrough {
            cmd.arg("--no-passthrough");
        }
        if let Some(profile) = &spec.profile {
            cmd.arg("--profile").arg(profile);
        }
        for layer in &spec.layers {
            cmd.arg("--layer").arg(layer);
        }
        // Its own process group: signals meant for the snapshotter (a
        // terminal's ^C, systemd's KillMode=process) do not reach it.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        cmd
    }
}

impl ViewMounter for ProcessMounter {
    type Handle = ServerState;

    fn mount(&self, spec: &ViewSpec) -> Result<ServerState, MountError> {
        // Whatever is left at the mountpoint is stale: this view is not adopted.
        detach_if_mounted(&spec.mountpoint);
        let mut child = self
            .command(spec)
            .spawn()
            .map_err(|e| MountError::Spawn(e.to_string()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let answer = read_line(stdout, self.config.start_timeout);
        let reap = move |mut child: std::process::Child| {
            // Reaps the server whenever it exits, so it never lingers as a zombie.
            let _ = std::thread::Builder::new()
                .name("pare-view-reaper".into())
                .spawn(move || {
                    let _ = child.wait();
                });
        };
        match answer {
            Ok(line) if line == "ready" => {
                reap(child);
                ServerState::read(&spec.mountpoint)
                    .filter(|s| s.process.is_alive())
                    .ok_or_else(|| MountError::Refused("the view server left no state file".into()))
            }
            Ok(line) => {
                let why = line.strip_prefix("error ").unwrap_or(&line).to_string();
                let _ = child.kill();
                reap(child);
                Err(MountError::Refused(if why.is_empty() {
                    "the view server exited before serving".into()
                } else {
                    why
                }))
            }
            Err(timeout) => {
                let _ = child.kill();
                reap(child);
                detach_if_mounted(&spec.mountpoint);
                Err(timeout)
            }
        }
    }

    fn adopt(&self, spec: &ViewSpec) -> Option<ServerState> {
        let state = ServerState::read(&spec.mountpoint)?;
        (state.chain == spec.chain && state.is_serving()).then_some(state)
    }

    fn is_serving(&self, handle: &ServerState) -> bool {
        handle.is_serving()
    }

    fn stop(&self, handle: ServerState) -> StopOutcome {
        stop_server(&handle, self.config.stop_timeout)
    }
}

/// SIGTERM, a bounded wait, then the connection aborted if the server hung.
pub fn stop_server(state: &ServerState, limit: Duration) -> StopOutcome {
    state.process.signal(rustix::process::Signal::TERM);
    let deadline = Instant::now() + limit;
    while state.process.is_alive() {
        if !state.mounted_here()
            && !ServerState::read(&state.mountpoint).is_some_and(|s| s.process == state.process)
        {
            // The server detached its busy view and gave up its state file:
            // it serves the view's users elsewhere until they go.
            tracing::info!(
                chain = state.chain,
                pid = state.process.pid,
                "view detached; its server keeps serving users outside this mount namespace until they go"
            );
            return StopOutcome::Detached;
        }
        if Instant::now() >= deadline {
            if state.mounted_here() {
                tracing::error!(
                    chain = state.chain,
                    pid = state.process.pid,
                    "view server did not stop in time; aborting its FUSE connection"
                );
                abort_connection(state.connection);
                detach_if_mounted(&state.mountpoint);
                state.process.signal(rustix::process::Signal::KILL);
                state.remove_if_mine();
                return StopOutcome::Aborted;
            }
            tracing::info!(
                chain = state.chain,
                pid = state.process.pid,
                "view detached; its server keeps serving users outside this mount namespace until they go"
            );
            return StopOutcome::Detached;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if state.mounted_here() {
        // The server died without unmounting: nothing serves this mount.
        detach_if_mounted(&state.mountpoint);
    }
    state.remove_if_mine();
    StopOutcome::Stopped
}

/// Aborts FUSE connection `n`: every request on it fails at once.
pub fn abort_connection(n: u32) {
    let dir = Path::new("/sys/fs/fuse/connections");
    if !dir.join(n.to_string()).exists() {
        // fusectl may not be mounted yet.
        let _ = rustix::mount::mount(
            "fusectl",
            dir,
            "fusectl",
            rustix::mount::MountFlags::empty(),
            None,
        );
    }
    let abort = dir.join(n.to_string()).join("abort");
    if let Err(e) = std::fs::write(&abort, b"1") {
        tracing::warn!(path = %abort.display(), error = %e, "cannot abort FUSE connection");
    }
}

/// Lazily unmounts whatever is mounted at `path`.
pub fn detach_if_mounted(path: &Path) {
    while pare_fs::mountinfo::mount_at(path).is_some() {
        if let Err(e) = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH) {
            tracing::warn!(mountpoint = %path.display(), error = %e, "cannot detach mount");
            return;
        }
    }
}

/// Reads one line (without its newline) from a server's stdout within `limit`.
fn read_line(mut out: std::process::ChildStdout, limit: Duration) -> Result<String, MountError> {
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(MountError::Timeout(limit));
        }
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let polled = {
            let fd = out.as_fd();
            let mut fds = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            rustix::event::poll(&mut fds, Some(&ts))
        };
        match polled {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(MountError::Spawn(e.to_string())),
        }
        let mut chunk = [0u8; 512];
        match out.read(&mut chunk) {
            Ok(0) => return Ok(String::from_utf8_lossy(&buf).trim().to_string()),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.iter().position(|b| *b == b'\n') {
                    return Ok(String::from_utf8_lossy(&buf[..end]).to_string());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(MountError::Spawn(e.to_string())),
        }
    }
}
