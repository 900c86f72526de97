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
mod state;

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use process::ProcessId;
pub use state::{ServerState, StateFileError, state_path};

use crate::views::{MountError, StopOutcome, ViewMounter, ViewSpec};

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
    /// How requests travel between the kernel and a view.
    pub transport: pare_fs::view::Transport,
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
    /// Servers write their stats file for the metrics endpoint (only when
    /// it is on: otherwise nothing reads it).
    pub stats: bool,
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
            .arg(spec.key.chain.as_str())
            .arg("--mode")
            .arg(spec.key.mode.name())
            .arg("--threads")
            .arg(c.threads.to_string())
            .arg("--transport")
            .arg(c.transport.to_string())
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
        if c.stats {
            cmd.arg("--stats");
        }
        if let Some(profile) = &spec.profile {
            cmd.arg("--profile").arg(profile);
        }
        if let (Some(allowed), Some(digest), Some(misses)) =
            (&spec.allowed, &spec.key.allowed, &spec.misses)
        {
            cmd.arg("--allowed")
                .arg(allowed)
                .arg("--allowed-digest")
                .arg(digest.as_str())
                .arg("--misses")
                .arg(misses);
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
        if let Err(e) = detach_if_mounted(&spec.mountpoint) {
            tracing::warn!(error = %e, "cannot detach a stale view mount");
        }
        let mut child = self
            .command(spec)
            .spawn()
            .map_err(|source| MountError::Spawn {
                program: self.config.program.clone(),
                source,
            })?;
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
                ServerState::load(&spec.mountpoint)?
                    .filter(|s| s.process.is_alive())
                    .ok_or_else(|| MountError::NoState(spec.mountpoint.clone()))
            }
            Ok(line) => {
                let _ = child.kill();
                reap(child);
                let why = line.strip_prefix("error ").unwrap_or(&line);
                Err(if why.is_empty() {
                    MountError::Exited
                } else {
                    MountError::Refused(why.to_string())
                })
            }
            Err(e) => {
                let _ = child.kill();
                reap(child);
                if let Err(detach) = detach_if_mounted(&spec.mountpoint) {
                    tracing::warn!(error = %detach, "cannot detach the mount of a server that did not start");
                }
                Err(e)
            }
        }
    }

    fn adopt(&self, spec: &ViewSpec) -> Result<Option<ServerState>, MountError> {
        let Some(state) = ServerState::load(&spec.mountpoint)? else {
            return Ok(None);
        };
        Ok((state.key() == spec.key && state.is_serving()).then_some(state))
    }

    fn is_serving(&self, handle: &ServerState) -> bool {
        handle.is_serving()
    }

    fn stop(&self, handle: &ServerState) -> Result<StopOutcome, MountError> {
        stop_server(handle, self.config.stop_timeout)
    }
}

/// SIGTERM, a bounded wait, then the connection aborted if the server hung.
/// Fails when the view's mount stays at its mountpoint.
pub fn stop_server(state: &ServerState, limit: Duration) -> Result<StopOutcome, MountError> {
    state.process.signal(rustix::process::Signal::TERM);
    let deadline = Instant::now() + limit;
    while state.process.is_alive() {
        if !state.mounted_here()
            && !ServerState::read(&state.mountpoint).is_some_and(|s| s.process == state.process)
        {
            // The server detached its busy view and gave up its state file:
            // it serves the view's users elsewhere until they go.
            tracing::info!(
                chain = %state.chain,
                pid = state.process.pid,
                "view detached; its server keeps serving users outside this mount namespace until they go"
            );
            return Ok(StopOutcome::Detached);
        }
        if Instant::now() >= deadline {
            if state.mounted_here() {
                tracing::error!(
                    chain = %state.chain,
                    pid = state.process.pid,
                    "view server did not stop in time; aborting its FUSE connection"
                );
                abort_connection(state.connection);
                let detached = detach_if_mounted(&state.mountpoint);
                state.process.signal(rustix::process::Signal::KILL);
                detached?;
                state.remove_if_mine();
                return Ok(StopOutcome::Aborted);
            }
            tracing::info!(
                chain = %state.chain,
                pid = state.process.pid,
                "view detached; its server keeps serving users outside this mount namespace until they go"
            );
            return Ok(StopOutcome::Detached);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if state.mounted_here() {
        // The server died without unmounting: nothing serves this mount.
        detach_if_mounted(&state.mountpoint)?;
    }
    state.remove_if_mine();
    Ok(StopOutcome::Stopped)
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
pub fn detach_if_mounted(path: &Path) -> Result<(), MountError> {
    while pare_fs::mountinfo::mount_at(path).is_some() {
        rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH).map_err(|e| {
            MountError::Detach {
                path: path.to_path_buf(),
                source: e.into(),
            }
        })?;
    }
    Ok(())
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
            Err(e) => return Err(MountError::Answer(e.into())),
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
            Err(e) => return Err(MountError::Answer(e)),
        }
    }
}
