//! Nothing hangs when a view cannot be served, under a real containerd: a
//! view that fails to mount fails that one container's Prepare with a clear
//! error while every other call is answered, and a corrupt profile is set
//! aside (kept byte for byte) and replaced, so the image still runs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use pare_tests::containerd::Containerd;
use pare_tests::images::MTIME;
use pare_tests::mounts::Scratch;
use pare_tests::oci::{BuiltImage, DEFAULT_TOOLS, Image, Layer, host_tools_layer};
use pare_tests::prereq::{PARE_NODE, privileged};
use pare_tests::snapshotter::PareSnapshotter;

fn image(name: &str, marker: &str, tarball: &Path) -> Result<BuiltImage> {
    let mut app = Layer::new(MTIME);
    app.dir("app", 0o755);
    app.file("app/marker", format!("{marker}\n"), 0o644);
    Image::new()
        .layer(&host_tools_layer(MTIME, DEFAULT_TOOLS)?)?
        .layer(&app)?
        .write_oci_archive(name, tarball)
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
    let scratch = Scratch::new()?;
    let pare = PareSnapshotter::start(&scratch.path().join("pare"))?;
    let containerd = Containerd::start(
        &scratch.path().join("containerd"),
        &pare.containerd_config(),
    )?;
    let result = (|| -> Result<()> {
        let ctr = containerd.ctr();
        for (name, marker) in [
            ("docker.io/pare-tests/broken:v1", "broken"),
            ("docker.io/pare-tests/fine:v1", "fine"),
        ] {
            let tarball = scratch.path().join(format!("{marker}.tar"));
            image(name, marker, &tarball)?;
            ctr.import(&tarball, "pare")?;
        }
        // The broken image's top layer goes missing: its view cannot start.
        let layer = layer_with(pare.root(), "broken")?;
        let away = layer.with_file_name("fs.away");
        std::fs::rename(&layer, &away)?;
        let err = ctr
            .run(
                "docker.io/pare-tests/broken:v1",
                "broken-1",
                "pare",
                &["cat", "/app/marker"],
            )
            .expect_err("a container whose view cannot mount must not start");
        let text = format!("{err:#}");
        ensure!(
            text.contains("cannot read the layers"),
            "the error says why: {text}"
        );
        // Everything else is answered at once.
        let out = ctr.run(
            "docker.io/pare-tests/fine:v1",
            "fine-1",
            "pare",
            &["cat", "/app/marker"],
        )?;
        ensure!(out == "fine\n", "{out:?}");
        let listed = ctr.ctr(&["snapshots", "--snapshotter", "pare", "ls"])?;
        ensure!(listed.status.success());
        // Repaired, the image runs again: the failed Prepare left nothing behind.
        std::fs::rename(&away, &layer)?;
        let out = ctr.run(
            "docker.io/pare-tests/broken:v1",
            "broken-2",
            "pare",
            &["cat", "/app/marker"],
        )?;
        ensure!(out == "broken\n", "{out:?}");
        Ok(())
    })();
    if let Err(e) = result {
        return Err(e.context(format!("--- pare-snapshotter ---\n{}", pare.log_text())));
    }
    containerd.stop()?;
    pare.stop()
}

#[test]
fn privileged_a_corrupt_profile_is_set_aside_and_the_image_still_runs() -> Result<()> {
    if !privileged(
        "privileged_a_corrupt_profile_is_set_aside_and_the_image_still_runs",
        PARE_NODE,
    ) {
        return Ok(());
    }
    let scratch = Scratch::new()?;
    let pare = PareSnapshotter::start(&scratch.path().join("pare"))?;
    let containerd = Containerd::start(
        &scratch.path().join("containerd"),
        &pare.containerd_config(),
    )?;
    let result = (|| -> Result<()> {
        let ctr = containerd.ctr();
        let name = "docker.io/pare-tests/corrupt:v1";
        let tarball = scratch.path().join("image.tar");
        let built = image(name, "corrupt", &tarball)?;
        let chain = built.top_chain_id().context("layers")?.to_string();
        ctr.import(&tarball, "pare")?;
        let profiles = pare.root().join("profiles");
        let garbage = b"PAREPROF\x07\x00 this header is damaged".to_vec();
        std::fs::write(profiles.join(&chain), &garbage)?;
        let out = ctr.run(name, "c1", "pare", &["cat", "/app/marker"])?;
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
            pare.log_text().contains("set aside"),
            "the daemon logged it"
        );
        Ok(())
    })();
    if let Err(e) = result {
        return Err(e.context(format!("--- pare-snapshotter ---\n{}", pare.log_text())));
    }
    containerd.stop()?;
    pare.stop()
}
