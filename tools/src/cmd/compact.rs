//! `pare compact`: the minimized image of IMAGE, from its layers and profile.

use std::cell::OnceCell;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use pare_tools::compact::layer::Compression;
use pare_tools::compact::{self, CompactRequest, Progress};

/// Build a minimized image holding only what IMAGE's workload used.
///
/// Reads IMAGE from containerd, its profile (recorded by pare-snapshotter, or
/// --profile), its layers, and writes a one-layer image: into containerd as
/// --tag (default: IMAGE's tag with the suffix -pare), or as an OCI image
/// layout with --oci-layout.
#[derive(Debug, Args)]
pub struct CompactArgs {
    #[command(flatten)]
    node: super::NodeArgs,
    /// The profile journal to use instead of the one recorded for IMAGE.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Name of the new image in containerd.
    #[arg(long)]
    tag: Option<String>,
    /// Write an OCI image layout to this directory instead of into containerd.
    #[arg(long)]
    oci_layout: Option<PathBuf>,
    #[command(flatten)]
    rules: super::RulesArgs,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    compression: Compression,
    /// The snapshotter IMAGE is unpacked with (its layer directories are read).
    #[arg(long, default_value = "pare")]
    snapshotter: String,
    /// Compact even when the profile is incomplete (records were lost while
    /// it was written: the minimized image may miss files the workload uses).
    #[arg(long)]
    allow_incomplete: bool,
    /// Print one JSON object (image, digests, sizes, what was kept) instead
    /// of the summary line.
    #[arg(long)]
    json: bool,
    /// The image to minimize.
    image: String,
}

pub fn run(args: CompactArgs) -> anyhow::Result<()> {
    let request = CompactRequest {
        address: args.node.address,
        namespace: args.node.namespace,
        root: args.node.root,
        profile: args.profile,
        image: args.image,
        tag: args.tag,
        oci_layout: args.oci_layout,
        rules: args.rules.rules(),
        compression: args.compression,
        snapshotter: args.snapshotter,
        allow_incomplete: args.allow_incomplete,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let summary = runtime.block_on(compact::compact(&request, &Bar::default()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{summary}");
    }
    Ok(())
}

/// The layer's progress bar on a terminal's stderr.
#[derive(Default)]
struct Bar(OnceCell<indicatif::ProgressBar>);

impl Progress for Bar {
    fn layer_started(&self, total: u64) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} writing layer {bytes}/{total_bytes} [{bar:30}] {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let _ = self.0.set(bar);
    }

    fn layer_progress(&self, done: u64) {
        if let Some(bar) = self.0.get() {
            bar.set_position(done);
        }
    }

    fn layer_finished(&self) {
        if let Some(bar) = self.0.get() {
            bar.finish_and_clear();
        }
    }
}
