//! `pare compact`: the minimized image of IMAGE, from its layers and profile.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use pare_fs::id::{Digest, profile_path};
use pare_fs::layers::LayerStack;
use pare_fs::profile::{self, ImagePath};
use pare_tools::compact::closure::Index;
use pare_tools::compact::layer::{self, Compression};
use pare_tools::compact::plan::{self, Rules};
use pare_tools::compact::tree::ImageTree;
use pare_tools::containerd::Client;
use pare_tools::oci::{self, ANNOTATION_PROFILE, ANNOTATION_SOURCE_IMAGE, Content, Spool};

/// Build a minimized image holding only what IMAGE's workload used.
///
/// Reads IMAGE from containerd, its profile (recorded by pare-snapshotter, or
/// --profile), its layers, and writes a one-layer image: into containerd as
/// --tag (default: IMAGE's tag with the suffix -pare), or as an OCI image
/// layout with --oci-layout.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// containerd socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    address: PathBuf,
    /// containerd namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// pare-snapshotter's state directory (where profiles/ is).
    #[arg(long, default_value = "/var/lib/pare")]
    root: PathBuf,
    /// The profile journal to use instead of the one recorded for IMAGE.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Name of the new image in containerd.
    #[arg(long)]
    tag: Option<String>,
    /// Write an OCI image layout to this directory instead of into containerd.
    #[arg(long)]
    oci_layout: Option<PathBuf>,
    /// Also keep image paths matching this glob (repeatable).
    #[arg(long)]
    include: Vec<String>,
    /// Drop image paths matching this glob (repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// Keep this program with its ELF closure (repeatable).
    #[arg(long)]
    include_exec: Vec<String>,
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
    /// The image to minimize.
    image: String,
}

/// Refuses an incomplete profile (its image could miss files the workload
/// uses) unless `allow` (--allow-incomplete), which only warns.
fn refuse_incomplete(profile: &profile::Profile, path: &Path, allow: bool) -> anyhow::Result<()> {
    if !profile.incomplete {
        return Ok(());
    }
    if !allow {
        bail!(
            "profile {} is incomplete (records were lost while it was written); pass --allow-incomplete to compact it anyway",
            path.display()
        );
    }
    tracing::warn!(profile = %path.display(), "compacting an incomplete profile (--allow-incomplete): the image may miss files the workload uses");
    Ok(())
}

/// The default name of the minimized image: IMAGE's tag with `-pare`.
pub fn default_tag(image: &str) -> anyhow::Result<String> {
    if image.contains('@') {
        bail!("{image} is a digest reference; give the new image a name with --tag");
    }
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    Ok(if image[name_start..].contains(':') {
        format!("{image}-pare")
    } else {
        format!("{image}:latest-pare")
    })
}

pub fn run(args: CompactArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(compact(args))
}

async fn compact(args: CompactArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let tag = match &args.tag {
        Some(tag) => tag.clone(),
        None => default_tag(&args.image)?,
    };
    let client = Client::connect(&args.address, &args.namespace).await?;
    let source = client.image(&args.image).await?;

    let profile_path = match &args.profile {
        Some(path) => path.clone(),
        None => profile_path(&args.root, &source.top_chain_id),
    };
    let profile_bytes = read_settled(&profile_path).with_context(|| {
        format!(
            "no profile for {} (chain {}) at {}: run the image under pare-snapshotter first, or pass --profile",
            args.image,
            source.top_chain_id,
            profile_path.display()
        )
    })?;
    let profile = profile::read_bytes(&profile_path, &profile_bytes)?;
    refuse_incomplete(&profile, &profile_path, args.allow_incomplete)?;
    match &profile.header.image {
        Some(chain) if chain != source.top_chain_id.as_str() => bail!(
            "{} is a profile of image chain {chain}, not of {} ({})",
            profile_path.display(),
            args.image,
            source.top_chain_id
        ),
        None => {
            tracing::warn!(profile = %profile_path.display(), "the profile does not name its image; using it as given")
        }
        _ => {}
    }

    let dirs = client
        .layer_dirs(&args.snapshotter, &source.top_chain_id)
        .await?;
    let stack = LayerStack::open(dirs)?;
    let tree = ImageTree::new(stack);
    let index = Index::build(&tree).context("cannot read the image's layers")?;
    let paths: Vec<ImagePath> = profile.entries.iter().map(|e| e.path.clone()).collect();
    let rules = Rules {
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        include_exec: args.include_exec.clone(),
    };
    let plan = plan::plan(&tree, &index, &paths, &rules)?;
    if !plan.missing.is_empty() {
        tracing::warn!(count = plan.missing.len(), first = %plan.missing[0], "profiled paths not in the image");
    }
    for name in &plan.unresolved {
        tracing::warn!(library = %name, "an --include-exec dependency is not in the image");
    }

    let bar = progress_bar(plan.after.bytes);
    let spool_dir = spool_dir(args.oci_layout.as_deref());
    let spool = Spool::new_in(&spool_dir)
        .with_context(|| format!("cannot create a temporary file in {}", spool_dir.display()))?;
    let (out, spool) = layer::write(
        &tree,
        &plan.kept,
        &plan.contents,
        args.compression,
        spool,
        &|done| {
            if let Some(bar) = &bar {
                bar.set_position(done);
            }
        },
    )?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let layer_blob = spool
        .finish(args.compression.media_type())
        .with_context(|| format!("cannot write the layer in {}", spool_dir.display()))?;
    let mut annotations = BTreeMap::new();
    annotations.insert(
        ANNOTATION_SOURCE_IMAGE.to_string(),
        source.manifest_digest.to_string(),
    );
    annotations.insert(
        ANNOTATION_PROFILE.to_string(),
        Digest::sha256(&profile_bytes).to_string(),
    );
    let layer_size = layer_blob.size();
    let image = oci::build_image(
        &source.config,
        layer_blob,
        &Digest::parse(&out.diff_id)?,
        &annotations,
        &format!(
            "pare compact {} (profile {})",
            args.image, source.top_chain_id
        ),
    )?;
    let destination = match &args.oci_layout {
        Some(dir) => {
            oci::write_layout(dir, &image, &tag)?;
            format!("OCI layout {} ({tag})", dir.display())
        }
        None => {
            client.store_image(&tag, &image).await?;
            tag.clone()
        }
    };
    let (b, a) = (plan.before, plan.after);
    println!(
        "{destination}: {} of {} files, {} of {} bytes ({:.1}%), {} of {} packages; layer {} ({} bytes compressed); manifest {}; {:.1} s",
        a.files,
        b.files,
        a.bytes,
        b.bytes,
        100.0 * a.bytes as f64 / b.bytes.max(1) as f64,
        a.packages,
        b.packages,
        out.diff_id,
        layer_size,
        image.manifest.digest,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Where the layer is spooled while it is written: beside the OCI layout
/// (so that it is linked into `blobs/`, not copied), else `$TMPDIR`.
fn spool_dir(oci_layout: Option<&Path>) -> PathBuf {
    oci_layout
        .and_then(Path::parent)
        .map(|parent| {
            if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            }
        })
        .filter(|parent| parent.is_dir())
        .map_or_else(std::env::temp_dir, Path::to_path_buf)
}

/// Reads a profile once it has stopped growing for a moment: a workload that
/// just ended may still have accesses on their way to the journal (the
/// snapshotter writes them within its flush interval, 10 ms by default).
fn read_settled(path: &Path) -> std::io::Result<Vec<u8>> {
    const QUIET: std::time::Duration = std::time::Duration::from_millis(200);
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let mut bytes = std::fs::read(path)?;
    loop {
        std::thread::sleep(QUIET);
        let again = std::fs::read(path)?;
        if again.len() == bytes.len() || Instant::now() > deadline {
            return Ok(again);
        }
        bytes = again;
    }
}

fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} writing layer {bytes}/{total_bytes} [{bar:30}] {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

/// Where `image`'s profile is on this node.
pub async fn profile_of(
    address: &Path,
    namespace: &str,
    root: &Path,
    image: &str,
) -> anyhow::Result<PathBuf> {
    let client = Client::connect(address, namespace).await?;
    let source = client.image(image).await?;
    let path = profile_path(root, &source.top_chain_id);
    anyhow::ensure!(
        path.exists(),
        "no profile for {image} (chain {}) in {}",
        source.top_chain_id,
        root.join("profiles").display()
    );
    Ok(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_incomplete_profile_is_refused_unless_allowed() {
        use pare_fs::profile::journal::{self, FLAG_INCOMPLETE, Header};
        let profile = |flags| {
            let bytes = journal::encode_header(
                &Header {
                    image: None,
                    created_unix_ns: 0,
                    writer: "t".into(),
                },
                flags,
            );
            pare_fs::profile::read_bytes(std::path::Path::new("p"), &bytes).unwrap()
        };
        let path = std::path::Path::new("/var/lib/pare/profiles/sha256-x");
        let cases = [
            (0, false, None),
            (0, true, None),
            (
                FLAG_INCOMPLETE,
                false,
                Some(
                    "profile /var/lib/pare/profiles/sha256-x is incomplete (records were lost while it was written); pass --allow-incomplete to compact it anyway",
                ),
            ),
            (FLAG_INCOMPLETE, true, None),
        ];
        for (flags, allow, want) in cases {
            let got = super::refuse_incomplete(&profile(flags), path, allow)
                .err()
                .map(|e| e.to_string());
            assert_eq!(got.as_deref(), want, "flags {flags}, allow {allow}");
        }
    }

    #[test]
    fn default_tags_add_a_suffix() {
        let cases = [
            (
                "docker.io/library/python:3.11",
                "docker.io/library/python:3.11-pare",
            ),
            ("localhost:5000/app", "localhost:5000/app:latest-pare"),
            ("app", "app:latest-pare"),
        ];
        for (image, want) in cases {
            assert_eq!(super::default_tag(image).unwrap(), want);
        }
        assert!(super::default_tag("app@sha256:00").is_err());
    }
}
