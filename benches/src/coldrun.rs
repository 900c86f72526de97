//! One cold start of the web service image from a registry: a fresh private
//! containerd (new root, stock overlayfs snapshotter, empty content store),
//! kernel caches dropped, then `ctr images pull` and `ctr run --detach
//! --net-host` timed until the service first answers `GET /health`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use pare_tests::containerd::{Containerd, NAMESPACE};
use pare_tests::story::get;

use crate::registry::free_port;
use crate::scratch::remove_tree;
use crate::{Interrupt, drop_caches};

/// How long the service may take from `ctr run` to its first answer.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The timings of one cold start.
#[derive(Debug, Clone)]
pub struct ColdStart {
    /// `ctr images pull`, spawn to exit: fetch plus unpack.
    pub pull: Duration,
    /// The fetch part of the pull: until ctr prints `unpacking` (ctr 1.6
    /// fetches every blob first, then unpacks).
    pub fetch: Duration,
    /// `ctr run --detach` spawned until `GET /health` first answered `ok`.
    pub ready: Duration,
    /// What `GET /items` answered afterwards (untimed), to check the image works.
    pub items: String,
}

impl ColdStart {
    /// The unpack part of the pull.
    pub fn unpack(&self) -> Duration {
        self.pull.saturating_sub(self.fetch)
    }

    /// Pull plus start to ready.
    pub fn total(&self) -> Duration {
        self.pull + self.ready
    }
}

/// Runs one cold start of `reference` (a plain-HTTP registry reference) with
/// containerd's state in `dir`, which is removed afterwards.
pub fn cold_start(dir: &Path, reference: &str, interrupt: &Interrupt) -> anyhow::Result<ColdStart> {
    let containerd = Containerd::start(dir, "")?;
    let result = (|| {
        interrupt.check()?;
        drop_caches()?;
        let (pull, fetch) = pull(&containerd, reference)?;
        interrupt.check()?;
        let port = free_port()?;
        let ready = run_until_ready(&containerd, reference, port)?;
        let (status, items) = get(port, "/items")?;
        ensure!(status == 200, "GET /items answered {status}");
        Ok(ColdStart {
            pull,
            fetch,
            ready,
            items,
        })
    })();
    let result = result.with_context(|| {
        format!(
            "cold start of {reference}; containerd's log ends:\n{}",
            containerd.log_tail(10)
        )
    });
    let stopped = containerd.stop();
    let result = result?;
    stopped?;
    remove_tree(dir)?;
    Ok(result)
}

/// `ctr --address A --namespace NS ARGS...` for `containerd`.
fn ctr(containerd: &Containerd, args: &[&str]) -> Command {
    let mut cmd = Command::new("ctr");
    cmd.arg("--address")
        .arg(containerd.address())
        .arg("--namespace")
        .arg(NAMESPACE)
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// Times `ctr images pull --plain-http` of `reference` onto overlayfs:
/// (whole pull, until ctr's `unpacking` line).
fn pull(containerd: &Containerd, reference: &str) -> anyhow::Result<(Duration, Duration)> {
    let errors = containerd.dir().join("pull.stderr");
    let mut cmd = ctr(
        containerd,
        &[
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            "overlayfs",
            reference,
        ],
    );
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(File::create(&errors)?)
        .spawn()
        .context("cannot spawn ctr images pull")?;
    let mut fetched = None;
    let stdout = child.stdout.take().context("ctr's stdout")?;
    for line in BufReader::new(stdout).lines() {
        if fetched.is_none() && line?.starts_with("unpacking ") {
            fetched = Some(start.elapsed());
        }
    }
    let status = child.wait()?;
    let pull = start.elapsed();
    if !status.success() {
        let stderr = std::fs::read_to_string(&errors).unwrap_or_default();
        bail!(
            "ctr images pull {reference} failed ({status}): {}",
            stderr.trim()
        );
    }
    let fetch = fetched.context("ctr images pull printed no `unpacking` line")?;
    Ok((pull, fetch))
}

/// Spawns `ctr run --detach --net-host` of the web service on `port` and
/// returns the time from the spawn to the first `ok` of `GET /health`.
fn run_until_ready(
    containerd: &Containerd,
    reference: &str,
    port: u16,
) -> anyhow::Result<Duration> {
    let runc_root = containerd.dir().join("runc");
    let runc_root = runc_root.to_str().context("non-UTF-8 runc root")?;
    let port = port.to_string();
    let args = [
        "run",
        "--detach",
        "--net-host",
        "--runc-root",
        runc_root,
        "--snapshotter",
        "overlayfs",
        reference,
        "web",
        "python3",
        "/app/server.py",
        &port,
    ];
    let errors = containerd.dir().join("run.stderr");
    let start = Instant::now();
    let mut child = ctr(containerd, &args)
        .stdout(Stdio::null())
        .stderr(File::create(&errors)?)
        .spawn()
        .context("cannot spawn ctr run")?;
    let port: u16 = port.parse()?;
    let ready = loop {
        if let Ok((200, body)) = get(port, "/health") {
            if body == "ok" {
                break start.elapsed();
            }
        }
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                let stderr = std::fs::read_to_string(&errors).unwrap_or_default();
                bail!("ctr run {reference} failed ({status}): {}", stderr.trim());
            }
        }
        if start.elapsed() > READY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{reference} did not answer GET /health within {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let status = child.wait()?;
    ensure!(status.success(), "ctr run {reference} exited with {status}");
    Ok(ready)
}
