//! Proves the containerd harness and the OCI builder with containerd's stock
//! overlayfs snapshotter (no pare involved): a 3-layer image built by the
//! tests imports, unpacks and runs, and containers see exactly what the
//! layers say.

use anyhow::{Context, Result, ensure};
use std::path::Path;
use std::time::{Duration, Instant};

use pare_tests::containerd::{Containerd, mounts_under, shims_of};
use pare_tests::images::{MTIME, harness_image, run_checks};
use pare_tests::mounts::Scratch;
use pare_tests::oci::{DEFAULT_TOOLS, Image, host_tools_layer};
use pare_tests::prereq::{Need, privileged};

const IMAGE: &str = "docker.io/pare-tests/harness:v1";
/// The same layers, with `User` set in the config.
const IMAGE_AS_USER: &str = "docker.io/pare-tests/harness:user";
const SNAPSHOTTER: &str = "overlayfs";

#[test]
fn privileged_containerd_harness_runs_a_built_image_on_overlayfs() -> Result<()> {
    if !privileged(
        "privileged_containerd_harness_runs_a_built_image_on_overlayfs",
        NEEDS,
    ) {
        return Ok(());
    }
    let scratch = Scratch::new()?;
    let containerd = Containerd::start(&scratch.path().join("containerd"), "")?;
    let result = check(&containerd, &scratch);
    if result.is_err() {
        eprintln!("containerd log (tail):\n{}", containerd.log_tail(60));
    }
    containerd.stop()?;
    result
}

/// Needs of every test here.
const NEEDS: &[Need] = &[
    Need::Root,
    Need::Overlay,
    Need::Command("containerd"),
    Need::Command("ctr"),
    Need::Command("runc"),
    Need::Command("getfattr"),
];

fn check(containerd: &Containerd, scratch: &Scratch) -> Result<()> {
    let ctr = containerd.ctr();
    let tarball = scratch.path().join("image.tar");
    let image = harness_image(None)?.write_oci_archive(IMAGE, &tarball)?;
    ctr.import(&tarball, SNAPSHOTTER)?;
    let as_user = harness_image(Some("1000:1001"))?.write_oci_archive(IMAGE_AS_USER, &tarball)?;
    ctr.import(&tarball, SNAPSHOTTER)?;
    ensure!(as_user.chain_ids() == image.chain_ids());
    let stdout = ctr.run(IMAGE_AS_USER, "harness-user", SNAPSHOTTER, &[])?;
    ensure!(
        stdout == "hello from /data as 1000:1001\n",
        "the image config gives cmd, env, workdir and user: printed {stdout:?}"
    );

    // The unpacker names committed layers by the chain IDs we compute.
    let snapshots = ctr.ctr(&["snapshots", "--snapshotter", SNAPSHOTTER, "ls"])?;
    let snapshots = String::from_utf8(snapshots.stdout)?;
    for chain_id in image.chain_ids() {
        ensure!(
            snapshots.contains(&format!("{chain_id} ")),
            "no committed snapshot {chain_id} in:\n{snapshots}"
        );
    }
    let images = String::from_utf8(ctr.ctr(&["images", "ls"])?.stdout)?;
    ensure!(
        images.contains(IMAGE) && images.contains(image.manifest_digest.as_str()),
        "{IMAGE} with {} not listed:\n{images}",
        image.manifest_digest
    );

    run_checks(&ctr, IMAGE, SNAPSHOTTER, "harness")?;
    Ok(())
}

#[test]
fn privileged_containerd_harness_drop_leaves_no_container_shim_or_mount() -> Result<()> {
    if !privileged(
        "privileged_containerd_harness_drop_leaves_no_container_shim_or_mount",
        NEEDS,
    ) {
        return Ok(());
    }
    let scratch = Scratch::new()?;
    let containerd = Containerd::start(&scratch.path().join("containerd"), "")?;
    let ctr = containerd.ctr();
    let tarball = scratch.path().join("image.tar");
    Image::new()
        .layer(&host_tools_layer(MTIME, DEFAULT_TOOLS)?)?
        .write_oci_archive(IMAGE, &tarball)?;
    ctr.import(&tarball, SNAPSHOTTER)?;
    ctr.run_detached(IMAGE, "removed", SNAPSHOTTER, &["sleep", "1000"])?;
    ctr.remove("removed")?;
    let containers = String::from_utf8(ctr.ctr(&["containers", "ls", "-q"])?.stdout)?;
    ensure!(containers.is_empty(), "Ctr::remove left {containers:?}");
    ctr.run_detached(IMAGE, "sleeper", SNAPSHOTTER, &["sleep", "1000"])?;

    let tasks = String::from_utf8(ctr.ctr(&["tasks", "ls"])?.stdout)?;
    let pid: i32 = tasks
        .lines()
        .find_map(|l| l.strip_prefix("sleeper "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no running sleeper task in:\n{tasks}"))?;
    let address = containerd.address().to_path_buf();
    let dir = containerd.dir().to_path_buf();
    let containerd_pid = containerd.pid().context("containerd runs")?;
    ensure!(!shims_of(&address).is_empty(), "no shim serves the sleeper");
    ensure!(
        !mounts_under(&dir).is_empty(),
        "the sleeper's rootfs is not mounted under {}",
        dir.display()
    );

    drop(containerd);
    ensure!(shims_of(&address).is_empty(), "shims survived the drop");
    ensure!(
        mounts_under(&dir).is_empty(),
        "mounts survived: {:?}",
        mounts_under(&dir)
    );
    for pid in [pid, containerd_pid as i32] {
        ensure!(gone(pid), "process {pid} survived the drop");
    }
    Ok(())
}

/// True once process `pid` has exited (zombies are reaped by init soon after).
fn gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if !Path::new(&format!("/proc/{pid}")).exists() || state == Some("Z") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
