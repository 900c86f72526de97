//! The view server's lifecycle with real processes and mounts, every wait
//! bounded: a server that hangs has its FUSE connection aborted and is
//! killed; a view still used by an overlay is detached at once and keeps
//! serving that overlay until it goes; a server that cannot mount, or never
//! answers, fails its start with the reason within the start timeout.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use pare_snapshotter::viewproc::{ProcessMounter, ServerConfig, ServerState, stop_server};
use pare_snapshotter::views::{MountError, StopOutcome, ViewMounter, ViewSpec};
use pare_tests::mounts::Scratch;
use pare_tests::poll::eventually;
use pare_tests::prereq::{Need, privileged};
use pare_tests::snapshotter::snapshotter_bin;
use rustix::process::{Pid, Signal};

const NEEDS: &[Need] = &[Need::Root, Need::Fuse, Need::Overlay];

fn mounter(program: &Path, start_timeout: Duration) -> ProcessMounter {
    ProcessMounter::new(ServerConfig {
        program: program.to_path_buf(),
        threads: 2,
        passthrough: true,
        transport: pare_fs::view::Transport::Auto,
        flush: Duration::from_millis(5),
        log_level: "info".into(),
        log_json: false,
        start_timeout,
        stop_timeout: Duration::from_secs(2),
        stats: false,
    })
}

/// A one-layer view of a file `hello` under `dir`.
fn spec(dir: &Path) -> Result<ViewSpec> {
    let layer = dir.join("layer");
    std::fs::create_dir_all(&layer)?;
    std::fs::write(layer.join("hello"), "hello\n")?;
    let mountpoint = dir.join("view");
    std::fs::create_dir_all(&mountpoint)?;
    Ok(ViewSpec {
        key: pare_snapshotter::views::ViewKey::learn(pare_fs::id::ChainId::from_snapshot_name(
            "sha256:test",
        )),
        layers: vec![layer],
        mountpoint: std::fs::canonicalize(&mountpoint)?,
        profile: Some(dir.join("profile")),
        allowed: None,
        misses: None,
    })
}

/// The state letter of process `pid` (`R`, `S`, `T`, ...).
fn process_state(pid: i32) -> Result<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses.
    let (_, rest) = stat.rsplit_once(") ").context("a /proc stat line")?;
    rest.chars().next().context("a process state")
}

fn gone(state: &ServerState) -> bool {
    !state.process.is_alive() && pare_fs::mountinfo::mount_at(&state.mountpoint).is_none()
}

/// A view served by a real `serve-view` process in a scratch directory,
/// detached when dropped.
struct Served {
    scratch: Scratch,
    spec: ViewSpec,
    mounter: ProcessMounter,
    state: ServerState,
    _cleanup: Detach,
}

impl Served {
    fn start() -> Result<Served> {
        let scratch = Scratch::new()?;
        let spec = spec(scratch.path())?;
        let cleanup = Detach(spec.mountpoint.clone());
        let mounter = mounter(&snapshotter_bin(), Duration::from_secs(10));
        let state = mounter.mount(&spec)?;
        Ok(Served {
            scratch,
            spec,
            mounter,
            state,
            _cleanup: cleanup,
        })
    }
}

/// Detaches a test's own mount when dropped.
struct Detach(PathBuf);

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn privileged_a_hung_view_server_is_aborted_within_the_stop_timeout() -> Result<()> {
    if !privileged(
        "privileged_a_hung_view_server_is_aborted_within_the_stop_timeout",
        NEEDS,
    ) {
        return Ok(());
    }
    let served = Served::start()?;
    let (spec, m, state) = (&served.spec, &served.mounter, served.state.clone());
    ensure!(m.is_serving(&state), "the view serves");
    ensure!(std::fs::read_to_string(spec.mountpoint.join("hello"))? == "hello\n");
    // The server stops answering anything, SIGTERM included.
    let pid = Pid::from_raw(state.process.pid).context("pid")?;
    rustix::process::kill_process(pid, Signal::STOP)?;
    // SIGSTOP takes effect when the server next runs; a SIGTERM queued before
    // that would be taken first (lower number) and let it stop cleanly.
    eventually(Duration::from_secs(10), "the server to be stopped", || {
        Ok(process_state(state.process.pid)? == 'T')
    })?;
    let started = Instant::now();
    let outcome = stop_server(&state, Duration::from_millis(500))?;
    ensure!(outcome == StopOutcome::Aborted, "{outcome:?}");
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(&state) {
        ensure!(
            Instant::now() < deadline,
            "the hung server or its mount stayed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure!(
        ServerState::read(&spec.mountpoint).is_none(),
        "state file removed"
    );
    Ok(())
}

#[test]
fn privileged_a_view_in_use_detaches_at_once_and_serves_until_its_user_goes() -> Result<()> {
    if !privileged(
        "privileged_a_view_in_use_detaches_at_once_and_serves_until_its_user_goes",
        NEEDS,
    ) {
        return Ok(());
    }
    let served = Served::start()?;
    let (spec, m, state) = (&served.spec, &served.mounter, served.state.clone());
    // A container's overlay on the view.
    let (upper, work, merged) = (
        served.scratch.path().join("upper"),
        served.scratch.path().join("work"),
        served.scratch.path().join("merged"),
    );
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d)?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        spec.mountpoint.display(),
        upper.display(),
        work.display()
    );
    rustix::mount::mount(
        "overlay",
        &merged,
        "overlay",
        rustix::mount::MountFlags::empty(),
        Some(std::ffi::CString::new(options)?.as_c_str()),
    )?;
    let overlay = Detach(merged.clone());
    ensure!(std::fs::read_to_string(merged.join("hello"))? == "hello\n");
    let started = Instant::now();
    let outcome = m.stop(&state)?;
    ensure!(outcome == StopOutcome::Detached, "{outcome:?}");
    ensure!(
        started.elapsed() < Duration::from_secs(1),
        "the stop returned at once, not after a timeout: {:?}",
        started.elapsed()
    );
    ensure!(
        state.process.is_alive(),
        "the server keeps serving the overlay"
    );
    // Uncached now: the read goes down to the detached view, which answers
    // (without recording: the image's profile was handed back at the stop).
    std::fs::write("/proc/sys/vm/drop_caches", "3")?;
    ensure!(
        std::fs::read_to_string(merged.join("hello"))? == "hello\n",
        "the overlay still reads through the detached view"
    );
    // A new view of the same image can start meanwhile: the mountpoint and
    // the profile are free.
    let next = m.mount(spec)?;
    ensure!(next.process != state.process);
    // The overlay goes: the old server exits by itself.
    drop(overlay);
    let deadline = Instant::now() + Duration::from_secs(10);
    while state.process.is_alive() {
        ensure!(
            Instant::now() < deadline,
            "the detached server outlived its last user"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure!(m.stop(&next)? == StopOutcome::Stopped);
    let profile = pare_fs::profile::read(spec.profile.as_ref().context("profile")?)?;
    ensure!(
        profile
            .entries
            .iter()
            .any(|e| e.path.to_string() == "/hello"),
        "the profile holds the read made while the view was in use"
    );
    Ok(())
}

#[test]
fn privileged_a_view_server_that_cannot_start_fails_within_the_start_timeout() -> Result<()> {
    if !privileged(
        "privileged_a_view_server_that_cannot_start_fails_within_the_start_timeout",
        NEEDS,
    ) {
        return Ok(());
    }
    let scratch = Scratch::new()?;
    let mut spec = spec(scratch.path())?;
    // The layer is missing: the server says why.
    spec.layers = vec![scratch.path().join("no-such-layer")];
    let m = mounter(&snapshotter_bin(), Duration::from_secs(10));
    match m.mount(&spec) {
        Err(MountError::Refused(why)) => {
            ensure!(why.contains("cannot read the layers"), "{why}")
        }
        other => anyhow::bail!("expected a refusal, got {other:?}"),
    }
    // A server that never answers is killed after the start timeout.
    let silent = scratch.path().join("silent");
    std::fs::write(&silent, "#!/bin/sh\nsleep 60\n")?;
    std::fs::set_permissions(&silent, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let spec = self::spec(&scratch.path().join("second"))?;
    let started = Instant::now();
    let m = mounter(&silent, Duration::from_millis(300));
    let err = m.mount(&spec).expect_err("a silent server cannot start");
    ensure!(matches!(err, MountError::Timeout(_)), "{err:?}");
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}
