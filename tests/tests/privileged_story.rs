//! The demo's story, shortened (no timing): the Debian web service and batch
//! job run under pare, are compacted and run minimized with the same results;
//! and the realistic Python image meets the size targets.

use anyhow::{Context, Result, ensure};
use pare_tests::containerd::Containerd;
use pare_tests::debian;
use pare_tests::mounts::Scratch;
use pare_tests::oci::{Image, ImageConfig};
use pare_tests::prereq::{Need, pare_bin, privileged};
use pare_tests::snapshotter::PareSnapshotter;
use pare_tests::story::{self, Options};

const NEEDS: &[Need] = &[
    Need::Root,
    Need::Fuse,
    Need::Overlay,
    Need::Command("containerd"),
    Need::Command("ctr"),
    Need::Command("runc"),
    Need::Command("debootstrap"),
];

#[test]
fn privileged_demo_story_runs_shortened() -> Result<()> {
    if !privileged("privileged_demo_story_runs_shortened", NEEDS) {
        return Ok(());
    }
    let scratch = Scratch::new()?;
    let opts = Options {
        workdir: scratch.path().join("demo"),
        requests: 3,
        cold_runs: 0,
        html: None,
    };
    let apps = story::run(&opts)?;
    ensure!(apps.len() == 2);
    for app in &apps {
        let s = &app.summary;
        ensure!(
            s.source == app.image
                && s.image == format!("{}-pare", app.image)
                && s.files.kept < s.files.total
                && s.packages.is_some_and(|p| p.kept < p.total),
            "pare compact of {}: {s:?}",
            app.image
        );
    }
    ensure!(
        apps[0].output.contains("\"items\""),
        "web answers: {}",
        apps[0].output
    );
    ensure!(
        apps[1].output.contains("lines: 5000"),
        "batch output: {}",
        apps[1].output
    );
    Ok(())
}

const IMPORT: &str = "import json,sqlite3,hashlib,email,http.client,decimal,asyncio";

#[test]
fn privileged_debian_python_image_shrinks_to_its_workload() -> Result<()> {
    if !privileged(
        "privileged_debian_python_image_shrinks_to_its_workload",
        NEEDS,
    ) {
        return Ok(());
    }
    let scratch = Scratch::new()?;
    let base = debian::dir_layer(&debian::rootfs()?)?;
    let image = "docker.io/pare-tests/python:bookworm";
    let tar = scratch.path().join("python.tar");
    Image::new()
        .built_layer(base)
        .config(ImageConfig {
            cmd: vec!["python3".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            ..ImageConfig::default()
        })
        .write_oci_archive(image, &tar)?;
    let pare = PareSnapshotter::start(&scratch.path().join("pare"))?;
    let containerd = Containerd::start(
        &scratch.path().join("containerd"),
        &pare.containerd_config(),
    )?;
    let ctr = containerd.ctr();
    ctr.import(&tar, "pare")?;
    let cmd = ["python3", "-c", &format!("{IMPORT}; print('imported')")];
    let out = ctr.run(image, "profile", "pare", &cmd)?;
    ensure!(out == "imported\n", "under pare: {out:?}");

    let compact = std::process::Command::new(pare_bin())
        .args(["compact", "--json"])
        .arg("--address")
        .arg(containerd.address())
        .args(["--namespace", "pare-tests", "--root"])
        .arg(pare.root())
        .arg(image)
        .output()?;
    ensure!(
        compact.status.success(),
        "pare compact: {}",
        String::from_utf8_lossy(&compact.stderr)
    );
    let summary = story::compact_summary(&String::from_utf8(compact.stdout)?)?;
    eprintln!("{summary}");
    ensure!(summary.image == format!("{image}-pare"));
    let out = ctr.run(&summary.image, "minimized", "overlayfs", &cmd)?;
    ensure!(out == "imported\n", "minimized: {out:?}");

    let packages = summary
        .packages
        .context("a Debian image has a dpkg database: the summary counts its packages")?;
    let (kept_bytes, all_bytes) = (
        summary.file_bytes.kept as f64,
        summary.file_bytes.total as f64,
    );
    let (kept_pkgs, all_pkgs) = (packages.kept as f64, packages.total as f64);
    eprintln!(
        "minimized: {:.1}% of the bytes, {:.1}% of the packages",
        summary.file_bytes.percent(),
        packages.percent()
    );
    ensure!(
        kept_bytes <= 0.15 * all_bytes,
        "bytes: {kept_bytes} of {all_bytes} (target <= 15%)"
    );
    ensure!(
        kept_pkgs <= 0.20 * all_pkgs,
        "packages: {kept_pkgs} of {all_pkgs} (target <= 20%)"
    );
    drop(containerd);
    pare.stop()
}
