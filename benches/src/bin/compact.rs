//! `pare compact` at scale: peak resident memory and time on a large image
//! of incompressible files that the profile touches entirely, and time
//! against the size of one hardlink group (which must grow linearly).
//!
//! Each image gets a private containerd (stock overlayfs snapshotter) in a
//! scratch directory on the real disk; `pare compact --profile` reads it
//! there. Peak memory is the highest `VmHWM` of the `pare compact` process,
//! polled every 10 ms.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::Parser;
use pare_benches::scratch::Scratch;
use pare_benches::workspace_root;
use pare_tests::containerd::{Containerd, NAMESPACE};
use pare_tests::large::{Measured, run_measured, write_large_image, write_profile};
use serde_json::{Value, json};

/// Peak memory and time of `pare compact` on a large image and on hardlink groups (run as root).
#[derive(Debug, Parser)]
struct Args {
    /// Content of the large image, in MiB (0 skips it).
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Size of each of its files, in MiB.
    #[arg(long, default_value_t = 4)]
    file_mib: u64,
    /// `--compression` of the compaction.
    #[arg(long, default_value = "gzip")]
    compression: String,
    /// Names of the hardlink groups to time (repeatable; 0 skips them).
    #[arg(long, default_values_t = [10_000, 20_000])]
    hardlinks: Vec<usize>,
    /// The directory of the `pare` binary [default: target/release of this workspace].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Print the results as JSON on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// How long one compaction may take.
const TIMEOUT: Duration = Duration::from_secs(1800);

fn main() -> ExitCode {
    match bench(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compact bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: Args) -> anyhow::Result<()> {
    ensure!(
        rustix::process::geteuid().is_root(),
        "run as root (containerd)"
    );
    let pare = args
        .bin_dir
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/release"))
        .join("pare");
    ensure!(
        pare.exists(),
        "{} is missing: cargo build --release -p pare",
        pare.display()
    );
    let mut results = json!({});
    if args.size_mib > 0 {
        let large = large_image(&args, &pare)?;
        if !args.json {
            println!(
                "large image: {} MiB in {} files, {} compressed: pare compact peak RSS {} MiB, {:.1} s ({:.0} MiB/s)",
                large["content_mib"],
                large["files"],
                large["compression"].as_str().unwrap_or(""),
                large["peak_rss_mib"],
                large["seconds"].as_f64().unwrap_or(0.0),
                large["mib_per_second"].as_f64().unwrap_or(0.0),
            );
        }
        results["large"] = large;
    }
    let mut groups = Vec::new();
    for &names in args.hardlinks.iter().filter(|&&n| n > 0) {
        let group = hardlink_group(&pare, names)?;
        if !args.json {
            println!(
                "hardlink group of {names} names: pare compact {:.2} s, peak RSS {} MiB",
                group["seconds"].as_f64().unwrap_or(0.0),
                group["peak_rss_mib"]
            );
        }
        groups.push(group);
    }
    if let [first, .., last] = &groups[..] {
        let ratio =
            |key: &str| last[key].as_f64().unwrap_or(0.0) / first[key].as_f64().unwrap_or(1.0);
        let names = ratio("names");
        let time = ratio("seconds");
        if !args.json {
            println!("{names:.1}x the names: {time:.2}x the time (linear: {names:.1}x)");
        }
    }
    results["hardlinks"] = Value::Array(groups);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(())
}

/// A private containerd in `scratch`.
fn containerd(scratch: &Scratch) -> anyhow::Result<Containerd> {
    Containerd::start(&scratch.path().join("containerd"), "")
}

/// `pare compact --snapshotter overlayfs --profile PROFILE --tag TAG IMAGE`, measured.
fn compact(
    pare: &Path,
    containerd: &Containerd,
    profile: &Path,
    image: &str,
    compression: &str,
    tmp: &Path,
) -> anyhow::Result<Measured> {
    let measured = run_measured(
        Command::new(pare)
            .args(["compact", "--json"])
            .arg("--address")
            .arg(containerd.address())
            .args(["--namespace", NAMESPACE, "--snapshotter", "overlayfs"])
            .args(["--compression", compression])
            .arg("--profile")
            .arg(profile)
            .args(["--tag", &format!("{image}-pare"), image])
            .env("TMPDIR", tmp),
        TIMEOUT,
    )?;
    ensure!(
        measured.output.status.success(),
        "pare compact failed: {}",
        String::from_utf8_lossy(&measured.output.stderr)
    );
    Ok(measured)
}

fn large_image(args: &Args, pare: &Path) -> anyhow::Result<Value> {
    const IMAGE: &str = "docker.io/pare-bench/large:v1";
    let scratch = Scratch::create("compact-large")?;
    let containerd = containerd(&scratch)?;
    let files = usize::try_from(args.size_mib / args.file_mib.max(1))?;
    let image = write_large_image(scratch.path(), IMAGE, files, args.file_mib << 20)?;
    containerd.ctr().import(&image.archive, "overlayfs")?;
    std::fs::remove_file(&image.archive)?;
    let profile = scratch.path().join("profile");
    write_profile(
        &profile,
        &image.diff_id,
        image.files.iter().map(|f| &f.path),
    )?;
    let measured = compact(
        pare,
        &containerd,
        &profile,
        IMAGE,
        &args.compression,
        scratch.path(),
    )?;
    let compressed =
        pare_tests::story::compact_summary(&String::from_utf8_lossy(&measured.output.stdout))?
            .layer_compressed_bytes;
    let seconds = measured.elapsed.as_secs_f64();
    let content_mib = image.content_bytes >> 20;
    Ok(json!({
        "content_mib": content_mib,
        "files": files,
        "compression": args.compression,
        "compressed_bytes": compressed,
        "peak_rss_mib": measured.peak_rss_kib / 1024,
        "seconds": seconds,
        "mib_per_second": content_mib as f64 / seconds,
    }))
}

fn hardlink_group(pare: &Path, names: usize) -> anyhow::Result<Value> {
    const IMAGE: &str = "docker.io/pare-bench/hardlinks:v1";
    let scratch = Scratch::create(&format!("compact-hardlinks-{names}"))?;
    let containerd = containerd(&scratch)?;
    let name = |i: usize| format!("links/d{}/n{i:06}", i % 4);
    let mut layer = pare_tests::oci::Layer::new(1_700_000_000);
    layer.dir("links", 0o755);
    for d in 0..4 {
        layer.dir(&format!("links/d{d}"), 0o755);
    }
    layer.file(&name(0), vec![7u8; 4000], 0o644);
    for i in 1..names {
        layer.hardlink(&name(i), &name(0));
    }
    let archive = scratch.path().join("image.tar");
    let built = pare_tests::oci::Image::new()
        .layer(&layer)?
        .write_oci_archive(IMAGE, &archive)?;
    containerd.ctr().import(&archive, "overlayfs")?;
    let chain = built.top_chain_id().context("one layer")?.to_string();
    let profile = scratch.path().join("profile");
    write_profile(&profile, &chain, [format!("/{}", name(names / 2))].iter())?;
    let measured = compact(pare, &containerd, &profile, IMAGE, "gzip", scratch.path())?;
    Ok(json!({
        "names": names,
        "seconds": measured.elapsed.as_secs_f64(),
        "peak_rss_mib": measured.peak_rss_kib / 1024,
    }))
}
