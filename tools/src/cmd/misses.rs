//! `pare misses`: an image's accesses outside its allowed set.

use std::path::Path;

use anyhow::Context;
use clap::Args;
use pare_fs::policy::{self, Miss, MissesFile, Mode};

/// List IMAGE's misses (accesses outside its allowed set in audit and
/// enforce), in first-seen order.
#[derive(Debug, Args)]
pub struct MissesArgs {
    #[command(flatten)]
    node: super::NodeArgs,
    /// Print JSON: {"image", "mode", "misses": [{"path", "kind", "first_seen_ns", "count", "processes"}]}.
    #[arg(long)]
    json: bool,
    /// The image.
    image: String,
}

pub fn run(args: MissesArgs) -> anyhow::Result<()> {
    let (chain, profile) = args.node.profile_path_of(&args.image)?;
    let files = read_all(&profile)?;
    let mode = policy::modes::read(&args.node.root, &chain)
        .ok()
        .flatten()
        .map(|e| e.mode)
        .or_else(|| files.last().map(|f| f.mode))
        .unwrap_or(Mode::Learn);
    let out = MissesFile {
        image: Some(args.image.clone()),
        mode,
        misses: merged(files),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for m in &out.misses {
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
    println!("{} misses ({mode})", out.misses.len());
    Ok(())
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
