//! `pare report`: what minimization removed, comparing two images in containerd.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use pare_tools::{misses, report};

/// Compare ORIGINAL and MINIMIZED (typically an image and the one `pare
/// compact` made from it): files, bytes, layers and packages before and
/// after, the largest directories and packages removed, the hardening, and
/// the misses recorded on this node for each image (under --root) beside
/// what was removed.
///
/// Images are read from their layer blobs in containerd's content store, so
/// they need not be unpacked. Prints a table, or JSON with --json; --html
/// also writes a self-contained page with charts.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    node: super::NodeArgs,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write the report as a self-contained HTML page to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// The snapshotter a minimized image's source image is unpacked with
    /// (its layers are searched for the names the minimized image lacks).
    #[arg(long, default_value = "pare")]
    snapshotter: String,
    /// The image before minimization.
    original: String,
    /// The minimized image.
    minimized: String,
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let (original, minimized, of_original, of_minimized) =
        args.node.with_client(async |client| {
            let original = report::load(client, &args.original).await?;
            let minimized = report::load(client, &args.minimized).await?;
            let gather = async |image: &str| {
                misses::gather(client, &args.node.root, &args.snapshotter, image).await
            };
            let of_original = gather(&args.original).await?;
            let of_minimized = gather(&args.minimized).await?;
            Ok((original, minimized, of_original, of_minimized))
        })?;
    let report = report::compare(&original, &minimized, &of_original, &of_minimized);
    if let Some(path) = &args.html {
        std::fs::write(path, report::html(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report::text(&report));
    }
    Ok(())
}
