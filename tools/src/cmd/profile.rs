//! `pare profile`: inspect, list and merge profile journals.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use pare_fs::profile::{self, merge};
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
        /// The snapshotter's state directory (where profiles/ is).
        #[arg(long, default_value = "/var/lib/pare")]
        root: PathBuf,
        /// containerd socket (to find an image's profile).
        #[arg(long, default_value = "/run/containerd/containerd.sock")]
        address: PathBuf,
        /// containerd namespace.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// A profile journal file, or an image name known to containerd.
        target: String,
    },
    /// List the profiles recorded on this node.
    List {
        /// The snapshotter's state directory.
        #[arg(long, default_value = "/var/lib/pare")]
        root: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Merge profiles of one image (runs, nodes): earliest first access, union of kinds.
    Merge {
        /// Output journal.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Input journals.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
}

pub fn run(cmd: ProfileCommand) -> anyhow::Result<()> {
    match cmd {
        ProfileCommand::Show {
            json,
            root,
            address,
            namespace,
            target,
        } => {
            let file = if Path::new(&target).exists() {
                PathBuf::from(&target)
            } else {
                super::image_profile(&address, &namespace, &root, &target)?
            };
            show(json, &file)
        }
        ProfileCommand::List { root, json } => list(&root, json),
        ProfileCommand::Merge { output, inputs } => {
            let mut profiles = Vec::new();
            for input in inputs {
                let p = read_warn(&input)?;
                profiles.push((input, p));
            }
            let merged = merge::merge(&profiles)?;
            merge::write(&merged, &output)?;
            eprintln!(
                "merged {} profiles into {}: {} paths",
                profiles.len(),
                output.display(),
                merged.entries.len()
            );
            Ok(())
        }
    }
}

fn read_warn(file: &Path) -> anyhow::Result<profile::Profile> {
    let profile = profile::read(file)?;
    if profile.torn_tail_bytes > 0 {
        tracing::warn!(
            profile = %file.display(),
            bytes = profile.torn_tail_bytes,
            "ignored a torn last record (the writer was killed mid-write)"
        );
    }
    Ok(profile)
}

fn show(json: bool, file: &Path) -> anyhow::Result<()> {
    let profile = read_warn(file)?;
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

#[derive(Serialize)]
struct Listed {
    chain: String,
    file: PathBuf,
    entries: usize,
    last_access_unix_ns: u64,
}

fn list(root: &Path, json: bool) -> anyhow::Result<()> {
    let dir = root.join("profiles");
    let mut rows = Vec::new();
    let read = std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in read {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "pare-tmp") {
            continue;
        }
        match profile::read(&path) {
            Ok(p) => rows.push(Listed {
                chain: p.header.image.clone().unwrap_or_else(|| "(unknown)".into()),
                entries: p.entries.len(),
                last_access_unix_ns: p.header.created_unix_ns
                    + p.entries
                        .iter()
                        .map(|e| e.first_access_ns)
                        .max()
                        .unwrap_or(0),
                file: path,
            }),
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable profile"),
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.last_access_unix_ns));
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{:<73} {:>8}  LAST FIRST-ACCESS (UTC)", "CHAIN", "PATHS");
    for r in &rows {
        println!(
            "{:<73} {:>8}  {}",
            r.chain,
            r.entries,
            utc(r.last_access_unix_ns)
        );
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS` of a Unix time in ns.
fn utc(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(1_700_000_000_000_000_000), "2023-11-14 22:13:20");
    }
}
