//! Shared helpers of the benchmarks: the layered test image, the mounts under
//! comparison, timing and statistics.

pub mod coldrun;
pub mod images;
pub mod imagesize;
pub mod layers;
pub mod machine;
pub mod minimize;
pub mod mounts;
pub mod node;
pub mod registry;
pub mod scratch;
pub mod stats;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The workspace root (benches are run from a checkout).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the benches crate lives in the workspace")
        .to_path_buf()
}

/// Runs a command to completion, quietly; a failure is an error naming the
/// command and quoting its stderr.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs a command with stdout captured, and returns its wall time and stdout.
pub fn time(cmd: &mut Command) -> anyhow::Result<(Duration, String)> {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok((
        elapsed,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

/// Writes dirty pages back and drops the page, dentry and inode caches.
pub fn drop_caches() -> anyhow::Result<()> {
    rustix::fs::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("cannot drop the kernel caches")
}

/// Set by SIGINT/SIGTERM, so a bench stops between runs and its guards unmount.
#[derive(Clone)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Catches SIGINT and SIGTERM from now on.
    pub fn install() -> anyhow::Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&flag))
                .context("cannot install signal handlers")?;
        }
        Ok(Self(flag))
    }

    /// An error once a signal arrived.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.0.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }
}
