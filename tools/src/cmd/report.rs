//! `pare report`: what minimization removed, comparing two images in containerd.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use pare_tools::containerd::Client;
use pare_tools::report;

/// Compare ORIGINAL and MINIMIZED (typically an image and the one `pare
/// compact` made from it): files, bytes, layers and packages before and
/// after, and the largest directories and packages removed.
///
/// Images are read from their layer blobs in containerd's content store, so
/// they need not be unpacked. Prints a table, or JSON with --json; --html
/// also writes a self-contained page with charts.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write the report as a self-contained HTML page to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// containerd socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    address: PathBuf,
    /// containerd namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The image before minimization.
    original: String,
    /// The minimized image.
    minimized: String,
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (original, minimized) = runtime.block_on(async {
        let client = Client::connect(&args.address, &args.namespace).await?;
        let original = report::load(&client, &args.original).await?;
        let minimized = report::load(&client, &args.minimized).await?;
        anyhow::Ok((original, minimized))
    })?;
    let report = report::compare(&original, &minimized);
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
