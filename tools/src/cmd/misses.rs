//! `pare misses`: an image's accesses outside its allowed set.

use std::path::Path;

use anyhow::Context;
use clap::Args;
use pare_fs::id;
use pare_fs::policy::{self, Miss, MissesFile, Mode};
use pare_fs::profile::{self, Profile};
use pare_tools::compact::lacking;
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
    let (chain, profile, lacking) = args.node.with_client(async |client| {
        let image = client.image(&args.image).await?;
        let profile = id::profile_path(&args.node.root, &image.top_chain_id);
        let lacking = match lacking::source_of(&image)? {
            None => None,
            Some(source) => Some(match read_profile(&profile)? {
                Some(recorded) => {
                    lacking::lacking(client, &args.snapshotter, source, &recorded).await?
                }
                None => lacking::Lacking {
                    source,
                    misses: Vec::new(),
                },
            }),
        };
        Ok((image.top_chain_id, profile, lacking))
    })?;
    let mut files = read_all(&profile)?;
    let mode = policy::modes::read(&args.node.root, &chain)
        .ok()
        .flatten()
        .map(|e| e.mode)
        .or_else(|| files.last().map(|f| f.mode))
        .unwrap_or(Mode::Learn);
    let source_image = lacking.as_ref().map(|l| l.source.to_string());
    let lacks = lacking.as_ref().map_or(0, |l| l.misses.len());
    if let Some(lacking) = lacking {
        files.push(MissesFile {
            image: None,
            mode,
            misses: lacking.misses,
        });
    }
    let out = Listed {
        file: MissesFile {
            image: Some(args.image.clone()),
            mode,
            misses: merged(files),
        },
        source_image,
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

/// The profile at `path`, or `None` when none was recorded.
fn read_profile(path: &Path) -> anyhow::Result<Option<Profile>> {
    match profile::read(path) {
        Ok(p) => Ok(Some(p)),
        Err(profile::ReadError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Every misses file of the profile at `profile`.
pub(super) fn read_all(profile: &Path) -> anyhow::Result<Vec<MissesFile>> {
    let mut out = Vec::new();
    for file in policy::misses_files(profile)? {
        out.push(
            policy::read_misses(&file)
                .with_context(|| format!("cannot read misses {}", file.display()))?,
        );
    }
    Ok(out)
}

/// The misses of several files as one list in first-seen order: one entry
/// per path and kind, counts added, processes joined.
pub(super) fn merged(files: Vec<MissesFile>) -> Vec<Miss> {
    let mut out: Vec<Miss> = Vec::new();
    for miss in files.into_iter().flat_map(|f| f.misses) {
        match out
            .iter_mut()
            .find(|m| m.path == miss.path && m.kind == miss.kind)
        {
            Some(m) => {
                m.count += miss.count;
                m.first_seen_ns = m.first_seen_ns.min(miss.first_seen_ns);
                for p in miss.processes {
                    if m.processes.len() < policy::MAX_PROCESSES
                        && !m.processes.iter().any(|q| q.pid == p.pid)
                    {
                        m.processes.push(p);
                    }
                }
            }
            None => out.push(miss),
        }
    }
    out.sort_by_key(|m| m.first_seen_ns);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pare_fs::policy::MissProcess;
    use pare_fs::profile::{AccessKind, ImagePath};

    fn miss(path: &str, kind: AccessKind, first: u64, pid: u32) -> Miss {
        Miss {
            path: ImagePath::new(path.as_bytes().to_vec()).unwrap(),
            kind,
            first_seen_ns: first,
            count: 1,
            processes: vec![MissProcess {
                pid,
                command: "sh".into(),
                container: Some(format!("c{pid}")),
            }],
        }
    }

    #[test]
    fn misses_of_several_views_merge_in_first_seen_order() {
        let file = |mode, misses| MissesFile {
            image: None,
            mode,
            misses,
        };
        let merged = merged(vec![
            file(
                Mode::Audit,
                vec![
                    miss("/app/b", AccessKind::Read, 5, 1),
                    miss("/app/c", AccessKind::Lookup, 9, 1),
                ],
            ),
            file(
                Mode::Enforce,
                vec![
                    miss("/app/a", AccessKind::Lookup, 3, 2),
                    miss("/app/b", AccessKind::Read, 7, 2),
                ],
            ),
        ]);
        let shown: Vec<(String, u64, u64, usize)> = merged
            .iter()
            .map(|m| {
                (
                    m.path.to_string(),
                    m.first_seen_ns,
                    m.count,
                    m.processes.len(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("/app/a".to_string(), 3, 1, 1),
                ("/app/b".to_string(), 5, 2, 2),
                ("/app/c".to_string(), 9, 1, 1),
            ]
        );
    }
}
