//! `pare mount` refuses bad layer directories and mountpoints with a non-zero
//! exit and exactly one clear line on stderr (`pare: ...`, naming the path at
//! fault), never a panic and never a mount.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Result;
use pare_tests::mounts::{Mount, PARE_TIMEOUT, Scratch, is_mounted, wait_timeout};
use pare_tests::prereq::{Need, pare_bin, privileged};

/// What LOWERDIRS names.
#[derive(Clone, Copy, Debug)]
enum Lower {
    /// An existing directory.
    Dir,
    /// A path that does not exist.
    Missing,
    /// A regular file.
    RegularFile,
    /// An existing directory, then a missing one.
    SecondMissing,
}

/// What MOUNTPOINT is.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// An empty directory.
    Dir,
    /// A path that does not exist.
    Missing,
    /// A regular file.
    RegularFile,
    /// A directory with a tmpfs already mounted on it.
    Mounted,
}

/// (case, lowerdirs, mountpoint, the path the error must name).
const CASES: &[(&str, Lower, Target, Fault)] = &[
    (
        "missing lowerdir",
        Lower::Missing,
        Target::Dir,
        Fault::Lower,
    ),
    (
        "lowerdir is a regular file",
        Lower::RegularFile,
        Target::Dir,
        Fault::Lower,
    ),
    (
        "second lowerdir missing",
        Lower::SecondMissing,
        Target::Dir,
        Fault::Lower,
    ),
    (
        "missing mountpoint",
        Lower::Dir,
        Target::Missing,
        Fault::Mountpoint,
    ),
    (
        "mountpoint is a regular file",
        Lower::Dir,
        Target::RegularFile,
        Fault::Mountpoint,
    ),
    (
        "mountpoint already mounted",
        Lower::Dir,
        Target::Mounted,
        Fault::Mountpoint,
    ),
];

/// Which path the error message must name.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Lower,
    Mountpoint,
}

#[test]
fn privileged_mount_errors_are_one_clear_line() -> Result<()> {
    if !privileged(
        "privileged_mount_errors_are_one_clear_line",
        &[Need::Root, Need::Fuse],
    ) {
        return Ok(());
    }
    let mut failures = Vec::new();
    for &(case, lower, target, fault) in CASES {
        let scratch = Scratch::new()?;
        let (lowerdirs, bad_lower, _lower_dir) = lowerdirs(scratch.path(), lower)?;
        let mountpoint = scratch.path().join("mnt");
        let _tmpfs = mountpoint_of(&mountpoint, target)?;
        let named = match fault {
            Fault::Lower => bad_lower,
            Fault::Mountpoint => mountpoint.clone(),
        };
        if let Err(problem) = run(&lowerdirs, &mountpoint, &named) {
            failures.push(format!("{case}: {problem}"));
        }
    }
    assert!(
        failures.is_empty(),
        "pare mount errors:\n{}",
        failures.join("\n")
    );
    Ok(())
}

/// LOWERDIRS for `lower`, the layer path an error must name, and the good layer dir.
fn lowerdirs(dir: &Path, lower: Lower) -> Result<(String, PathBuf, PathBuf)> {
    let good = dir.join("layer");
    std::fs::create_dir(&good)?;
    let missing = dir.join("no-such-layer");
    Ok(match lower {
        Lower::Dir => (good.display().to_string(), good.clone(), good),
        Lower::Missing => (missing.display().to_string(), missing, good),
        Lower::RegularFile => {
            let file = dir.join("layer-file");
            std::fs::write(&file, "not a directory")?;
            (file.display().to_string(), file, good)
        }
        Lower::SecondMissing => (
            format!("{}:{}", good.display(), missing.display()),
            missing,
            good,
        ),
    })
}

/// Makes `path` what `target` says; a tmpfs mounted there is returned as a guard.
fn mountpoint_of(path: &Path, target: Target) -> Result<Option<Mount>> {
    match target {
        Target::Missing => {}
        Target::Dir => std::fs::create_dir(path)?,
        Target::RegularFile => std::fs::write(path, "not a directory")?,
        Target::Mounted => return Ok(Some(Mount::tmpfs(path)?)),
    }
    Ok(None)
}

/// Runs `pare mount LOWERDIRS MOUNTPOINT` and checks how it fails.
fn run(lowerdirs: &str, mountpoint: &Path, named: &Path) -> Result<(), String> {
    let mounted_before = is_mounted(mountpoint);
    let mut child = Command::new(pare_bin())
        .args(["mount", lowerdirs])
        .arg(mountpoint)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot spawn pare: {e}"))?;
    let exited = wait_timeout(&mut child, PARE_TIMEOUT).map_err(|e| e.to_string())?;
    if exited.is_none() {
        // It mounted instead of failing: take the mount down and report.
        let _ = Command::new("umount").arg("-l").arg(mountpoint).status();
        let _ = child.kill();
        let _ = child.wait();
        return Err("pare mount kept running (it mounted) instead of failing".into());
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().collect();
    let mut problems = Vec::new();
    if output.status.success() || output.status.code().is_none() {
        problems.push(format!(
            "exit status {}, expected a non-zero exit code",
            output.status
        ));
    }
    if lines.len() != 1 || !lines[0].starts_with("pare: ") {
        problems.push("stderr is not exactly one line starting with \"pare: \"".into());
    }
    if stderr.contains("panicked") {
        problems.push("stderr reports a panic".into());
    }
    if !stderr.contains(&named.display().to_string()) {
        problems.push(format!("the message does not name {}", named.display()));
    }
    if is_mounted(mountpoint) != mounted_before {
        problems.push("a mount was left on the mountpoint".into());
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(format!("{}; stderr was {stderr:?}", problems.join("; "))),
    }
}
