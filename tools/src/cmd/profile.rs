//! `pare profile`: inspect profile journals.

use std::path::PathBuf;

use clap::Subcommand;
use pare_fs::profile;
use serde::Serialize;

/// The JSON shape of `pare profile show --json` (DESIGN.md contract).
#[derive(Serialize)]
struct ShowJson<'a> {
    image: Option<&'a str>,
    entries: &'a [profile::Entry],
}

/// Inspect profiles.
#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Print a profile's entries in first-access order.
    Show {
        /// Print JSON: {"image": ..., "entries": [{"path", "first_access_ns", "accesses"}]}.
        #[arg(long)]
        json: bool,
        /// The profile journal file.
        file: PathBuf,
    },
}

pub fn run(cmd: ProfileCommand) -> anyhow::Result<()> {
    match cmd {
        ProfileCommand::Show { json, file } => show(json, &file),
    }
}

fn show(json: bool, file: &std::path::Path) -> anyhow::Result<()> {
    let profile = profile::read(file)?;
    if profile.torn_tail_bytes > 0 {
        tracing::warn!(
            profile = %file.display(),
            bytes = profile.torn_tail_bytes,
            "ignored a torn last record (the writer was killed mid-write)"
        );
    }
    if json {
        let out = ShowJson {
            image: profile.header.image.as_deref(),
            entries: &profile.entries,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "image: {}",
        profile.header.image.as_deref().unwrap_or("(unknown)")
    );
    for entry in &profile.entries {
        let kinds: Vec<&str> = entry.accesses.iter().map(|k| k.name()).collect();
        println!(
            "{:>12.3} ms  {:<22} {}",
            entry.first_access_ns as f64 / 1e6,
            kinds.join(","),
            entry.path
        );
    }
    println!("{} paths", profile.entries.len());
    Ok(())
}
