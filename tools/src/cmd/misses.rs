//! `pare misses`: an image's accesses outside its allowed set.

use clap::Args;
use pare_fs::policy::MissesFile;
use pare_tools::misses;
use serde::Serialize;

/// List IMAGE's misses (accesses outside its allowed set in audit and
/// enforce), in first-seen order. For an image `pare compact` made, also the
/// names its workload looked up under pare that it lacks and its source
/// image has (kind `absent`).
#[derive(Debug, Args)]
pub struct MissesArgs {
    #[command(flatten)]
    node: super::NodeArgs,
    /// Print JSON: {"image", "mode", "misses": [{"path", "kind", "first_seen_ns", "count", "processes"}]},
    /// and "source_image" for a minimized image.
    #[arg(long)]
    json: bool,
    /// The snapshotter a minimized image's source image is unpacked with
    /// (its layers are searched for the names the minimized image lacks).
    #[arg(long, default_value = "pare")]
    snapshotter: String,
    /// The image.
    image: String,
}

/// What `pare misses --json` prints.
#[derive(Serialize)]
struct Listed {
    #[serde(flatten)]
    file: MissesFile,
    /// The source image's manifest digest, for an image pare compacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    source_image: Option<String>,
}

pub fn run(args: MissesArgs) -> anyhow::Result<()> {
    let gathered = args.node.with_client(async |client| {
        Ok(misses::gather(client, &args.node.root, &args.snapshotter, &args.image).await?)
    })?;
    let mode = gathered.mode;
    let lacks = gathered.lacking;
    let out = Listed {
        file: MissesFile {
            image: Some(args.image.clone()),
            mode,
            misses: gathered.misses,
        },
        source_image: gathered.source_image.map(|s| s.to_string()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for m in &out.file.misses {
        let containers: Vec<&str> = m
            .processes
            .iter()
            .filter_map(|p| p.container.as_deref())
            .collect();
        println!(
            "{:<8} {:>6}x  {}  {}",
            m.kind.name(),
            m.count,
            m.path,
            containers.join(",")
        );
    }
    println!("{} misses ({mode})", out.file.misses.len());
    if let Some(source) = &out.source_image {
        println!(
            "{lacks} of them names this minimized image lacks and its source image {source} has"
        );
    }
    Ok(())
}
