//! Prerequisites of privileged tests. A privileged test calls [`privileged`]
//! first: when something is missing it fails under `CI=true` (a green CI never
//! hides a skipped privileged test) and otherwise prints why and skips.

use std::path::{Path, PathBuf};

/// What a privileged test needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Effective uid 0.
    Root,
    /// `/dev/fuse`.
    Fuse,
    /// The overlay file system.
    Overlay,
    /// A command on `PATH` (e.g. `fuse-overlayfs`, `containerd`).
    Command(&'static str),
    /// FUSE over io_uring offered by the kernel (`make setup` switches the
    /// fuse module's `enable_uring` on).
    FuseUring,
}

fn missing(need: Need) -> Option<String> {
    match need {
        Need::Root if !rustix::process::geteuid().is_root() => Some("not running as root".into()),
        Need::Fuse if !Path::new("/dev/fuse").exists() => Some("/dev/fuse is missing".into()),
        Need::Overlay => {
            let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
            (!fs.lines().any(|l| l.trim_end().ends_with("overlay")))
                .then(|| "the kernel has no overlay file system".into())
        }
        Need::Command(cmd) if which(cmd).is_none() => Some(format!("{cmd} is not installed")),
        Need::FuseUring => pare_fs::view::uring_offered().err(),
        _ => None,
    }
}

/// What a test running containers needs: root, overlayfs, containerd, ctr, runc.
pub const CONTAINERD: &[Need] = &[
    Need::Root,
    Need::Overlay,
    Need::Command("containerd"),
    Need::Command("ctr"),
    Need::Command("runc"),
];

/// What a test running containers on pare needs: [`CONTAINERD`], `/dev/fuse`
/// and `getfattr` (the fixture checks read xattrs).
pub const PARE_NODE: &[Need] = &[
    Need::Root,
    Need::Fuse,
    Need::Overlay,
    Need::Command("containerd"),
    Need::Command("ctr"),
    Need::Command("runc"),
    Need::Command("getfattr"),
];

/// What a test of the Debian images needs beside [`PARE_NODE`]: debootstrap
/// (the cached rootfs is built on first use).
pub const DEBIAN: &[Need] = &[Need::Command("debootstrap")];

/// Full path of `cmd` on `PATH`.
pub fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(cmd))
        .find(|p| p.is_file())
}

/// Returns true when the test may run. When a need is missing: panics under
/// `CI=true`, otherwise prints the reason and returns false (the test skips).
pub fn privileged(test: &str, needs: &[Need]) -> bool {
    let reasons: Vec<String> = needs.iter().filter_map(|n| missing(*n)).collect();
    if reasons.is_empty() {
        return true;
    }
    let msg = format!("{test}: {}", reasons.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("privileged test cannot run under CI=true: {msg}");
    }
    eprintln!("SKIPPED {msg}");
    false
}

/// Path of the `pare` binary built for these tests (`target/<profile>/pare`).
pub fn pare_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("PARE_BIN") {
        return PathBuf::from(path);
    }
    // tests run from target/<profile>/deps/<test>-<hash>; benches and the
    // demo from target/<profile>/<bin>.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("the executable is in a directory");
    let bin = [dir.join("pare"), dir.parent().unwrap_or(dir).join("pare")]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| dir.join("pare"));
    assert!(
        bin.exists(),
        "{} is missing: build it first (make test does: cargo build --workspace)",
        bin.display()
    );
    bin
}
