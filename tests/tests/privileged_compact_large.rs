//! `pare compact` streams a large layer: compacting a generated image of
//! 256 MiB of incompressible files, every one of them profiled, keeps the
//! process's peak resident memory far below the image's size, and the
//! minimized image unpacks (containerd checks its diff ID) to every file with
//! the same content. zstd keeps a debug build's run short; gzip takes the
//! same streaming path (docs/BENCHMARKS.md measures it on 1 GiB).

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use pare_tests::containerd::{Containerd, NAMESPACE};
use pare_tests::large::{check_files, run_measured, write_large_image, write_profile};
use pare_tests::mounts::Scratch;
use pare_tests::prereq::{CONTAINERD, pare_bin, privileged};

const IMAGE: &str = "docker.io/pare-tests/large:v1";
const MINIMIZED: &str = "docker.io/pare-tests/large:v1-pare";
/// 256 files of 1 MiB: 256 MiB of content.
const FILES: usize = 256;
const FILE_SIZE: u64 = 1 << 20;
/// The bound on `pare compact`'s peak resident set: far below the image
/// (holding the layer, compressed or not, would take 256 MiB).
const PEAK_RSS_LIMIT_MIB: u64 = 96;
/// How long `pare compact` may take (a debug build compresses slowly).
const COMPACT_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn privileged_compacting_a_large_image_streams_the_layer_with_bounded_memory() -> Result<()> {
    if !privileged(
        "privileged_compacting_a_large_image_streams_the_layer_with_bounded_memory",
        CONTAINERD,
    ) {
        return Ok(());
    }
    let scratch = Scratch::new()?;
    let containerd = Containerd::start(&scratch.path().join("containerd"), "")?;
    let result = check(&containerd, &scratch);
    if result.is_err() {
        eprintln!("containerd log:\n{}", containerd.log_tail(40));
    }
    result
}

fn check(containerd: &Containerd, scratch: &Scratch) -> Result<()> {
    let ctr = containerd.ctr();
    let image = write_large_image(scratch.path(), IMAGE, FILES, FILE_SIZE)?;
    ctr.import(&image.archive, "overlayfs")?;
    std::fs::remove_file(&image.archive)?;
    let profile = scratch.path().join("large.profile");
    write_profile(
        &profile,
        &image.diff_id,
        image.files.iter().map(|f| &f.path),
    )?;

    let spool = scratch.path().join("tmp");
    std::fs::create_dir(&spool)?;
    let measured = run_measured(
        Command::new(pare_bin())
            .arg("compact")
            .arg("--address")
            .arg(containerd.address())
            .args(["--namespace", NAMESPACE, "--snapshotter", "overlayfs"])
            .args(["--compression", "zstd"])
            .arg("--profile")
            .arg(&profile)
            .args(["--tag", MINIMIZED, IMAGE])
            .env("TMPDIR", &spool),
        COMPACT_TIMEOUT,
    )?;
    let out = &measured.output;
    ensure!(
        out.status.success(),
        "pare compact failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak_mib = measured.peak_rss_kib / 1024;
    eprintln!(
        "pare compact of {} MiB in {} files: peak RSS {peak_mib} MiB, {:.1} s\n{}",
        image.content_bytes >> 20,
        FILES,
        measured.elapsed.as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    ensure!(
        measured.peak_rss_kib > 0,
        "no resident set size was read from /proc"
    );
    ensure!(
        peak_mib < PEAK_RSS_LIMIT_MIB,
        "pare compact peaked at {peak_mib} MiB resident for a {} MiB image (limit {PEAK_RSS_LIMIT_MIB} MiB)",
        image.content_bytes >> 20
    );
    ensure!(
        std::fs::read_dir(&spool)?.next().is_none(),
        "the spooled layer is left in $TMPDIR"
    );

    // The minimized image unpacks (containerd checks the layer's digest and
    // diff ID) to the same files.
    let target = containerd.dir().join("minimized");
    std::fs::create_dir(&target)?;
    let target_arg = target.to_str().expect("UTF-8 scratch path");
    ctr.ctr(&[
        "images",
        "mount",
        "--snapshotter",
        "overlayfs",
        MINIMIZED,
        target_arg,
    ])?;
    let checked = check_files(&target, &image.files);
    ctr.ctr(&["images", "unmount", target_arg])?;
    checked
}
