//! Nothing hangs when a view cannot be served, under a real containerd: a
//! view that fails to mount fails that one container's Prepare with a clear
//! error while every other call is answered, and a corrupt profile is set
//! aside (kept byte for byte) and replaced, so the image still runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use pare_tests::images::MTIME;
use pare_tests::mounts::Scratch;
use pare_tests::node::{PareNode, import_tools_image};
use pare_tests::oci::{BuiltImage, Layer};
use pare_tests::poll::eventually;
use pare_tests::prereq::{PARE_NODE, privileged};

/// An image whose app layer holds `app/marker` with `marker` in it.
fn marker_image(node: &PareNode, name: &str, marker: &str) -> Result<BuiltImage> {
    let mut app = Layer::new(MTIME);
    app.dir("app", 0o755);
    app.file("app/marker", format!("{marker}\n"), 0o644);
    import_tools_image(node, name, &[], &app)
}

/// The layer directory holding `app/marker` with `marker` in it.
fn layer_with(root: &Path, marker: &str) -> Result<PathBuf> {
    std::fs::read_dir(root.join("snapshots"))?
        .flatten()
        .map(|e| e.path().join("fs"))
        .find(|fs| std::fs::read_to_string(fs.join("app/marker")).is_ok_and(|m| m.trim() == marker))
        .context("the image's top layer directory")
}

#[test]
fn privileged_a_view_that_cannot_mount_fails_only_its_prepare() -> Result<()> {
    if !privileged(
        "privileged_a_view_that_cannot_mount_fails_only_its_prepare",
        PARE_NODE,
    ) {
        return Ok(());
    }
    let mut node = PareNode::start()?;
    node.checked(|node| {
        let (broken, fine) = (
            "docker.io/pare-tests/broken:v1",
            "docker.io/pare-tests/fine:v1",
        );
        marker_image(node, broken, "broken")?;
        marker_image(node, fine, "fine")?;
        let ctr = node.ctr();
        // The broken image's top layer goes missing: its view cannot start.
        let layer = layer_with(node.pare.root(), "broken")?;
        let away = layer.with_file_name("fs.away");
        std::fs::rename(&layer, &away)?;
        let err = ctr
            .run(broken, "broken-1", "pare", &["cat", "/app/marker"])
            .expect_err("a container whose view cannot mount must not start");
        let text = format!("{err:#}");
        ensure!(
            text.contains("cannot read the layers"),
            "the error says why: {text}"
        );
        // Everything else is answered at once.
        let out = ctr.run(fine, "fine-1", "pare", &["cat", "/app/marker"])?;
        ensure!(out == "fine\n", "{out:?}");
        let listed = ctr.ctr(&["snapshots", "--snapshotter", "pare", "ls"])?;
        ensure!(listed.status.success());
        // Repaired, the image runs again: the failed Prepare left nothing behind.
        std::fs::rename(&away, &layer)?;
        let out = ctr.run(broken, "broken-2", "pare", &["cat", "/app/marker"])?;
        ensure!(out == "broken\n", "{out:?}");
        Ok(())
    })?;
    node.stop()
}

#[test]
fn privileged_a_corrupt_profile_is_set_aside_and_the_image_still_runs() -> Result<()> {
    if !privileged(
        "privileged_a_corrupt_profile_is_set_aside_and_the_image_still_runs",
        PARE_NODE,
    ) {
        return Ok(());
    }
    let mut node = PareNode::start()?;
    node.checked(|node| {
        let name = "docker.io/pare-tests/corrupt:v1";
        let built = marker_image(node, name, "corrupt")?;
        let chain = built.top_chain_id().context("layers")?.to_string();
        let profiles = node.pare.root().join("profiles");
        let garbage = b"PAREPROF\x07\x00 this header is damaged".to_vec();
        std::fs::write(profiles.join(&chain), &garbage)?;
        let out = node
            .ctr()
            .run(name, "c1", "pare", &["cat", "/app/marker"])?;
        ensure!(out == "corrupt\n", "{out:?}");
        let aside: Vec<PathBuf> = std::fs::read_dir(&profiles)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    n.to_string_lossy()
                        .starts_with(&format!("{chain}.corrupt-"))
                })
            })
            .collect();
        ensure!(
            aside.len() == 1,
            "the damaged profile is kept aside: {aside:?}"
        );
        ensure!(std::fs::read(&aside[0])? == garbage, "kept byte for byte");
        let profile = pare_fs::profile::read(&profiles.join(&chain))?;
        ensure!(
            profile
                .entries
                .iter()
                .any(|e| e.path.to_string() == "/app/marker"),
            "the new profile records the run"
        );
        ensure!(
            node.pare.log_text().contains("set aside"),
            "the daemon logged it"
        );
        Ok(())
    })?;
    node.stop()
}

/// Unmounts a test's own mount when dropped.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn privileged_a_full_profile_disk_keeps_containers_running_and_marks_the_profile_incomplete()
-> Result<()> {
    if !privileged(
        "privileged_a_full_profile_disk_keeps_containers_running_and_marks_the_profile_incomplete",
        PARE_NODE,
    ) {
        return Ok(());
    }
    let scratch = Scratch::new()?;
    // The profiles live on a small file system of their own.
    let profiles = scratch.path().join("pare/root/profiles");
    std::fs::create_dir_all(&profiles)?;
    rustix::mount::mount(
        "tmpfs",
        &profiles,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        Some(c"size=1m"),
    )?;
    let _tmpfs = Unmount(profiles.clone());
    let mut node = PareNode::start_in(scratch)?;
    node.checked(|node| {
        let name = "docker.io/pare-tests/diskfull:v1";
        let mut app = Layer::new(MTIME);
        app.dir("app", 0o755);
        app.file("app/marker", "diskfull\n", 0o644);
        // Long names: every first access is a big record.
        let long = "n".repeat(200);
        for i in 0..3000 {
            app.file(&format!("app/{long}{i:05}"), format!("{i}\n"), 0o644);
        }
        let built = import_tools_image(node, name, &[], &app)?;
        let chain = built.top_chain_id().context("layers")?.to_string();
        let ctr = node.ctr();
        let out = ctr.run(name, "first", "pare", &["cat", "/app/marker"])?;
        ensure!(out == "diskfull\n");
        // The first run's view stops with its container: its profile is
        // whole on disk, and owns the pages it was written to.
        let views_gone = || -> Result<bool> {
            Ok(node.pare.mounted_views().is_empty() && node.pare.view_servers().is_empty())
        };
        eventually(
            Duration::from_secs(60),
            "the first run's view to stop",
            views_gone,
        )?;
        let profile_path = profiles.join(&chain);
        let first_size = std::fs::metadata(&profile_path)?.len();
        // Fill the profiles' file system.
        {
            use std::io::Write;
            let mut filler = std::fs::File::create(profiles.join("filler"))?;
            let chunk = vec![0u8; 16 * 1024];
            while filler.write_all(&chunk).is_ok() {}
        }
        // The workload reads every file: it succeeds although nothing of it
        // can be journaled.
        let out = ctr.run(name, "second", "pare", &["sh", "-c", "cat /app/n* | wc -l"])?;
        ensure!(
            out.trim() == "3000",
            "the container read everything: {out:?}"
        );
        ensure!(
            node.pare.log_text().contains("write_errors"),
            "the write errors are counted in the log"
        );
        // containerd's garbage collection removes the container's snapshot
        // soon after; the view stops with it and gives up on the records it
        // still holds.
        eventually(
            Duration::from_secs(60),
            "the view to stop with its containers",
            views_gone,
        )?;
        let profile = pare_fs::profile::read(&profile_path)?;
        ensure!(profile.incomplete, "the profile is marked incomplete");
        // tmpfs allocates whole pages: the only room left is the rest of the
        // profile's last page, so the journal grew at most into it and holds
        // at most the few records that fit there, never the 3000 read.
        let page = rustix::param::page_size() as u64;
        let size = std::fs::metadata(&profile_path)?.len();
        ensure!(
            size <= first_size.div_ceil(page) * page,
            "the journal grew from {first_size} to {size} bytes on a full file system"
        );
        let second = profile
            .entries
            .iter()
            .filter(|e| e.path.to_string().contains("nnnn"))
            .count() as u64;
        ensure!(
            second * 200 <= page,
            "{second} records of the second run reached the full disk"
        );
        // Compaction refuses it, unless told otherwise.
        let compact = |extra: &[&str]| -> Result<std::process::Output> {
            Ok(std::process::Command::new(pare_tests::prereq::pare_bin())
                .arg("compact")
                .arg("--address")
                .arg(node.containerd.address())
                .args(["--namespace", "pare-tests", "--root"])
                .arg(node.pare.root())
                .args(["--oci-layout"])
                .arg(node.scratch.path().join("layout"))
                .args(extra)
                .arg(name)
                .output()?)
        };
        let refused = compact(&[])?;
        let stderr = String::from_utf8_lossy(&refused.stderr);
        ensure!(
            !refused.status.success()
                && stderr.contains("incomplete")
                && stderr.contains("--allow-incomplete"),
            "compaction refuses an incomplete profile: {stderr}"
        );
        let allowed = compact(&["--allow-incomplete"])?;
        ensure!(
            allowed.status.success(),
            "with --allow-incomplete it compacts: {}",
            String::from_utf8_lossy(&allowed.stderr)
        );
        Ok(())
    })?;
    node.stop()
}
