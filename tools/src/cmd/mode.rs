//! `pare mode`: set the mode an image runs in on this node, or list modes.

use anyhow::Context;
use clap::Args;
use pare_fs::policy::{self, Mode, ModeEntry, Rules};
use pare_tools::compact::allowed;
use pare_tools::containerd::Client;

/// Set how IMAGE's containers see its files on this node, or list every image's mode.
///
/// learn: the view serves everything and the profile grows. audit: the view
/// serves everything and journals accesses outside the allowed set as misses
/// (`pare misses`). enforce: names outside the allowed set do not exist.
/// off: plain overlayfs, no view. Audit and enforce freeze the allowed set
/// now, from IMAGE's profile and the options (the closure `pare compact`
/// keeps). A mode applies to containers started after it is set.
#[derive(Debug, Args)]
pub struct ModeArgs {
    #[command(flatten)]
    node: super::NodeArgs,
    /// The snapshotter IMAGE is unpacked with (its layer directories are read).
    #[arg(long, default_value = "pare")]
    snapshotter: String,
    /// The closure's options, as for `pare compact`: the allowed set is
    /// what a compaction with them keeps.
    #[command(flatten)]
    rules: super::RulesArgs,
    /// Freeze the set even from an incomplete profile.
    #[arg(long)]
    allow_incomplete: bool,
    /// List as a JSON array.
    #[arg(long)]
    json: bool,
    /// The image; none: list every image's mode.
    image: Option<String>,
    /// learn, audit, enforce or off.
    mode: Option<Mode>,
}

pub fn run(args: ModeArgs) -> anyhow::Result<()> {
    let (Some(image), Some(mode)) = (&args.image, args.mode) else {
        anyhow::ensure!(
            args.image.is_none(),
            "give the mode to set: pare mode IMAGE learn|audit|enforce|off"
        );
        return list(&args);
    };
    let rules = args.rules.rules();
    anyhow::ensure!(
        mode.has_policy() || rules == Rules::default(),
        "--include, --exclude and --include-exec go with audit or enforce"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (chain, frozen) = runtime.block_on(async {
        let client = Client::connect(&args.node.address, &args.node.namespace).await?;
        if !mode.has_policy() {
            let source = client.image(image).await?;
            return anyhow::Ok((source.top_chain_id, None));
        }
        let frozen = allowed::freeze(
            &client,
            &args.node.root,
            image,
            &args.snapshotter,
            &rules,
            args.allow_incomplete,
        )
        .await?;
        Ok((frozen.chain.clone(), Some(frozen)))
    })?;
    let path = ModeEntry::now(image, chain.clone(), mode, rules)
        .write(&args.node.root)
        .context("cannot set the mode")?;
    tracing::debug!(entry = %path.display(), "mode set");
    match frozen {
        Some(frozen) => println!(
            "{image}: {mode} (allowed set of {} paths frozen in {}); containers started from now on use it",
            frozen.set.len() + 1,
            frozen.path.display()
        ),
        None => println!("{image}: {mode}; containers started from now on use it"),
    }
    Ok(())
}

fn list(args: &ModeArgs) -> anyhow::Result<()> {
    let (entries, errors) = policy::modes::list(&args.node.root)?;
    for e in &errors {
        tracing::warn!(error = %e, "skipping an unreadable mode entry");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    println!("{:<50} {:<8} CHAIN", "IMAGE", "MODE");
    for e in &entries {
        println!("{:<50} {:<8} {}", e.image, e.mode, e.chain);
    }
    Ok(())
}
