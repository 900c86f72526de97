//! Audit and enforce through `pare mount`: an enforced view shows only the
//! allowed set and counts every attempt at a hidden name as a miss; an audited
//! view serves everything and counts what lies outside the set.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::Result;
use pare_fs::id::Digest;
use pare_fs::policy::{self, AllowedSet, MissProcess, Mode, Rules};
use pare_fs::profile::{self, AccessKind, ImagePath};
use pare_tests::mounts::{PareMount, Scratch};
use pare_tests::prereq::{Need, privileged};

const NEEDS: &[Need] = &[Need::Root, Need::Fuse, Need::Command("umount")];

/// One layer: `/etc/allowed`, `/etc/hidden`, `/data/x`.
fn layer(root: &Path) -> Result<PathBuf> {
    let layer = root.join("layer");
    std::fs::create_dir_all(layer.join("etc"))?;
    std::fs::create_dir_all(layer.join("data"))?;
    std::fs::write(layer.join("etc/allowed"), "ok\n")?;
    std::fs::write(layer.join("etc/hidden"), "secret\n")?;
    std::fs::write(layer.join("data/x"), "x\n")?;
    Ok(layer)
}

/// An allowed set of `/etc/allowed` (and so `/etc` and `/`) written to `file`.
fn allow_etc_allowed(file: &Path) -> Result<()> {
    let path = ImagePath::new(b"/etc/allowed".to_vec())?;
    AllowedSet::from_paths(Digest::sha256(b"a profile"), Rules::default(), [path]).write(file)?;
    Ok(())
}

/// This process as a miss shows it (the FUSE request carries the asking
/// thread's id; it resolves to the process).
fn me() -> MissProcess {
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
    let command =
        String::from_utf8_lossy(cmdline.strip_suffix(b"\0").unwrap_or(&cmdline)).replace('\0', " ");
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    MissProcess {
        pid: std::process::id(),
        command,
        container: policy::container_of_cgroup(&cgroup),
    }
}

/// (path, kind, count, processes) of every miss in `file`, in first-seen order.
fn misses(file: &Path) -> Vec<(String, AccessKind, u64, Vec<MissProcess>)> {
    let read = policy::read_misses(file).unwrap();
    read.misses
        .into_iter()
        .map(|m| (m.path.to_string(), m.kind, m.count, m.processes))
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn privileged_enforce_hides_names_outside_the_allowed_set_and_counts_every_attempt() {
    if !privileged(
        "privileged_enforce_hides_names_outside_the_allowed_set_and_counts_every_attempt",
        NEEDS,
    ) {
        return;
    }
    let scratch = Scratch::new().unwrap();
    let layer = layer(scratch.path()).unwrap();
    let journal = scratch.path().join("profile");
    // Beside the profile: where --mode finds the set and puts misses by default.
    allow_etc_allowed(&policy::allowed_path(&journal)).unwrap();
    let mnt = scratch.path().join("mnt");
    let view = PareMount::start(
        &[layer],
        &mnt,
        &["--profile", journal.to_str().unwrap(), "--mode", "enforce"],
        &scratch.path().join("pare.log"),
    )
    .unwrap();

    assert_eq!(names(&mnt), ["etc"]);
    assert_eq!(names(&mnt.join("etc")), ["allowed"]);
    assert_eq!(std::fs::read(mnt.join("etc/allowed")).unwrap(), b"ok\n");
    for _ in 0..2 {
        let err = std::fs::metadata(mnt.join("etc/hidden")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }
    let err = std::fs::metadata(mnt.join("data/x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "hidden at /data");
    // A name the image does not have is no miss.
    let err = std::fs::metadata(mnt.join("etc/nonexistent")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    view.finish().unwrap();

    let file = policy::misses_path(&journal);
    assert_eq!(
        misses(&file),
        vec![
            ("/etc/hidden".into(), AccessKind::Lookup, 2, vec![me()]),
            ("/data".into(), AccessKind::Lookup, 1, vec![me()]),
        ]
    );
    assert_eq!(policy::read_misses(&file).unwrap().mode, Mode::Enforce);
    // The profile is recorded as in learn mode, of what could be reached.
    let recorded: Vec<(String, Vec<AccessKind>)> = profile::read(&journal)
        .unwrap()
        .entries
        .into_iter()
        .map(|e| (e.path.to_string(), e.accesses))
        .collect();
    assert!(
        recorded.contains(&(
            "/etc/allowed".into(),
            vec![AccessKind::Lookup, AccessKind::Read]
        )),
        "{recorded:?}"
    );
    assert!(
        recorded
            .iter()
            .all(|(p, _)| !p.starts_with("/etc/hidden") && !p.starts_with("/data")),
        "{recorded:?}"
    );
}

#[test]
fn privileged_audit_serves_everything_and_counts_accesses_outside_the_allowed_set() {
    if !privileged(
        "privileged_audit_serves_everything_and_counts_accesses_outside_the_allowed_set",
        NEEDS,
    ) {
        return;
    }
    let scratch = Scratch::new().unwrap();
    let layer = layer(scratch.path()).unwrap();
    let allowed = scratch.path().join("set.allowed");
    allow_etc_allowed(&allowed).unwrap();
    let misses_file = scratch.path().join("seen.misses");
    let mnt = scratch.path().join("mnt");
    let view = PareMount::start(
        &[layer],
        &mnt,
        &[
            "--mode",
            "audit",
            "--allowed",
            allowed.to_str().unwrap(),
            "--misses",
            misses_file.to_str().unwrap(),
        ],
        &scratch.path().join("pare.log"),
    )
    .unwrap();

    // Inside the set: no misses.
    assert_eq!(names(&mnt), ["data", "etc"]);
    assert_eq!(names(&mnt.join("etc")), ["allowed", "hidden"]);
    std::fs::metadata(mnt.join("etc/allowed")).unwrap();
    assert_eq!(std::fs::read(mnt.join("etc/allowed")).unwrap(), b"ok\n");
    // Outside: served, and counted per access the view sees (the lookup is
    // cached by the kernel after the first, every open reaches the view).
    std::fs::metadata(mnt.join("etc/hidden")).unwrap();
    for _ in 0..2 {
        assert_eq!(std::fs::read(mnt.join("etc/hidden")).unwrap(), b"secret\n");
    }
    view.finish().unwrap();

    assert_eq!(
        misses(&misses_file),
        vec![
            ("/etc/hidden".into(), AccessKind::Lookup, 1, vec![me()]),
            ("/etc/hidden".into(), AccessKind::Read, 2, vec![me()]),
        ]
    );
    assert_eq!(policy::read_misses(&misses_file).unwrap().mode, Mode::Audit);
}

#[test]
fn privileged_mount_refuses_a_damaged_allowed_set() {
    if !privileged("privileged_mount_refuses_a_damaged_allowed_set", NEEDS) {
        return;
    }
    let scratch = Scratch::new().unwrap();
    let layer = layer(scratch.path()).unwrap();
    let allowed = scratch.path().join("set.allowed");
    std::fs::write(&allowed, "{\"format\": \"pare-allowed-set\", \"vers").unwrap();
    let out = std::process::Command::new(pare_tests::prereq::pare_bin())
        .args(["mount", "--mode", "enforce", "--allowed"])
        .arg(&allowed)
        .arg("--misses")
        .arg(scratch.path().join("m"))
        .arg(&layer)
        .arg(scratch.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} is not a usable allowed set",
            allowed.display()
        )),
        "{stderr}"
    );
}
